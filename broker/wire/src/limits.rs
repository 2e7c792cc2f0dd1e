//! Named limits, with units and reasons. Relations between them are checked at compile time.

/// Largest frame, in bytes (after the length prefix). Bounds per-request memory on both ends.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest record batch, in bytes. A batch travels in one produce frame with its envelope.
pub const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most records in one batch (1,000-record batches are the benchmark shape; 64 Ki is generous).
pub const BATCH_RECORDS_MAX: u32 = 65_536;
/// Largest key, in bytes.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// Largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most headers on one record.
pub const HEADERS_PER_RECORD_MAX: u16 = 64;
/// Largest header key, in bytes.
pub const HEADER_KEY_BYTES_MAX: usize = 256;
/// Largest header value, in bytes.
pub const HEADER_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Longest topic name, in bytes (Kafka's limit is 249).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Longest idempotent-producer name, in bytes.
pub const PRODUCER_NAME_BYTES_MAX: usize = 249;
/// Longest group, member or instance id, in bytes.
pub const GROUP_NAME_BYTES_MAX: usize = 249;
/// Most items (topics, partitions, members, offsets) in one group request or response.
pub const GROUP_ITEMS_MAX: usize = 100_000;
/// Most partitions in one topic.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 1024;
/// Longest error message carried in a response, in bytes.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4096;
/// Most topics described in one ListTopics response.
pub const TOPICS_LISTED_MAX: usize = 100_000;
/// Largest fetch response payload a client may ask for, in bytes.
pub const FETCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest message of one authentication step, in bytes (SCRAM messages are far smaller).
pub const AUTH_MESSAGE_BYTES_MAX: usize = 4096;
/// Longest authentication mechanism name, in bytes (`SCRAM-SHA-256` is 13).
pub const MECHANISM_BYTES_MAX: usize = 32;
/// Most ACL entries one CreateAcls request adds.
pub const ACLS_PER_REQUEST_MAX: usize = 1000;
/// Most ACL entries one DescribeAcls or DeleteAcls response lists: an entry takes at most
/// about 520 bytes, so a full listing stays well inside one frame.
pub const ACLS_LISTED_MAX: usize = 20_000;
/// Longest long-poll wait a fetch may ask for, in milliseconds.
pub const FETCH_WAIT_MS_MAX: u32 = 60_000;

const _: () = assert!(BATCH_BYTES_MAX + 1024 <= FRAME_BYTES_MAX);
const _: () = assert!(ACLS_LISTED_MAX * 600 < FRAME_BYTES_MAX);
const _: () = assert!(FETCH_BYTES_MAX + 1024 <= FRAME_BYTES_MAX);
const _: () = assert!(VALUE_BYTES_MAX + KEY_BYTES_MAX < BATCH_BYTES_MAX);
/// Longest SCRAM credential text an `AlterUser` request carries.
pub const CREDENTIAL_TEXT_BYTES_MAX: usize = 1024;
/// Most user names a `ListUsers` answer names.
pub const USERS_LISTED_MAX: usize = 10_000;
