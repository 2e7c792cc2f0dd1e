//! Property tests: arbitrary requests and responses survive encode and decode, and random or
//! truncated bodies never panic.

use std::time::Duration;

use super::*;
use crate::error::ErrorCode;
use crate::groups::{
    Commit, CommittedOffset, GroupDescription, GroupRequest, GroupResponse, MemberDescription,
    PartitionLag, TopicPartition,
};
use crate::security::{SecurityRequest, SecurityResponse};
use herald_auth::acl::{
    AclEntry, AclFilter, Operation, PatternType, Permission, Principal, ResourceType,
};
use proptest::prelude::*;

fn principal() -> impl Strategy<Value = Principal> {
    prop_oneof![
        "[a-z][a-z0-9._-]{0,12}".prop_map(|name| Principal::user(name).expect("valid name")),
        Just(Principal::wildcard()),
    ]
}

fn acl_entry() -> impl Strategy<Value = AclEntry> {
    (
        principal(),
        proptest::sample::select(ResourceType::VALUES.to_vec()),
        proptest::sample::select(PatternType::VALUES.to_vec()),
        "[a-z][a-z0-9.-]{0,12}",
        proptest::sample::select(Operation::VALUES.to_vec()),
        proptest::sample::select(Permission::VALUES.to_vec()),
    )
        .prop_map(
            |(principal, resource_type, pattern_type, name, operation, permission)| {
                // The cluster is one literal resource.
                let (pattern_type, name) = if resource_type == ResourceType::Cluster {
                    (PatternType::Literal, "herald".to_owned())
                } else {
                    (pattern_type, name)
                };
                AclEntry::new(
                    principal,
                    resource_type,
                    pattern_type,
                    name,
                    operation,
                    permission,
                )
                .expect("valid entry")
            },
        )
}

fn acl_filter() -> impl Strategy<Value = AclFilter> {
    (
        proptest::option::of(principal()),
        proptest::option::of(proptest::sample::select(ResourceType::VALUES.to_vec())),
        proptest::option::of(proptest::sample::select(PatternType::VALUES.to_vec())),
        proptest::option::of("[a-z.*-]{0,12}"),
        proptest::option::of(proptest::sample::select(Operation::VALUES.to_vec())),
        proptest::option::of(proptest::sample::select(Permission::VALUES.to_vec())),
    )
        .prop_map(
            |(principal, resource_type, pattern_type, name, operation, permission)| AclFilter {
                principal,
                resource_type,
                pattern_type,
                name,
                operation,
                permission,
            },
        )
}

fn security_request() -> impl Strategy<Value = SecurityRequest> {
    prop_oneof![
        (
            ".{0,8}", // at most 32 bytes (MECHANISM_BYTES_MAX) of UTF-8
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(mechanism, message)| SecurityRequest::Authenticate { mechanism, message }),
        proptest::collection::vec(acl_entry(), 0..4)
            .prop_map(|entries| SecurityRequest::CreateAcls { entries }),
        acl_filter().prop_map(|filter| SecurityRequest::DescribeAcls { filter }),
        acl_filter().prop_map(|filter| SecurityRequest::DeleteAcls { filter }),
        (
            "[a-z]{1,12}",
            ".{0,60}",
            0u8..3,
            proptest::collection::vec("[a-z.]{1,8}", 0..3),
            0u8..3
        )
            .prop_map(|(name, credential, role, subjects, change)| {
                use herald_auth::users::{RegistryAccess, RegistryChange, RegistryRole};
                let role = [RegistryRole::Read, RegistryRole::Write, RegistryRole::Admin]
                    [usize::from(role)];
                let registry = match change {
                    0 => RegistryChange::Keep,
                    1 => RegistryChange::Set(
                        RegistryAccess::new(role, subjects).expect("valid prefixes"),
                    ),
                    _ => RegistryChange::Clear,
                };
                SecurityRequest::AlterUser {
                    name,
                    credential,
                    registry,
                }
            }),
        "[a-z]{1,12}".prop_map(|name| SecurityRequest::DeleteUser { name }),
        Just(SecurityRequest::ListUsers),
    ]
}

fn security_response() -> impl Strategy<Value = (Api, SecurityResponse)> {
    prop_oneof![
        (
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::option::of(principal().prop_filter("an identity", |p| !p.is_wildcard()))
        )
            .prop_map(|(message, principal)| (
                Api::Authenticate,
                SecurityResponse::Authenticated { message, principal }
            )),
        any::<u32>().prop_map(|added| (Api::CreateAcls, SecurityResponse::AclsCreated { added })),
        proptest::collection::vec(acl_entry(), 0..4)
            .prop_map(|entries| (Api::DescribeAcls, SecurityResponse::Acls(entries))),
        proptest::collection::vec(acl_entry(), 0..4)
            .prop_map(|entries| (Api::DeleteAcls, SecurityResponse::AclsDeleted(entries))),
        Just((Api::AlterUser, SecurityResponse::UserAltered)),
        Just((Api::DeleteUser, SecurityResponse::UserDeleted)),
        proptest::collection::vec("[a-z]{1,12}", 0..4)
            .prop_map(|names| (Api::ListUsers, SecurityResponse::Users(names))),
    ]
}

fn config() -> impl Strategy<Value = TopicConfig> {
    (
        1u32..100,
        proptest::option::of(0u64..1u64 << 40),
        proptest::option::of(any::<u32>()),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        proptest::option::of(1u64..1u64 << 40),
    )
        .prop_map(
            |(
                partitions,
                retention,
                retention_bytes,
                segment_bytes,
                segment_ms,
                key,
                value,
                strategy,
                dedup_ms,
            )| TopicConfig {
                partitions,
                retention: retention.map(Duration::from_millis),
                retention_bytes: retention_bytes.map(u64::from),
                segment_bytes: u64::from(segment_bytes),
                segment_age: Duration::from_millis(u64::from(segment_ms)),
                validation: SchemaValidation {
                    key,
                    value,
                    strategy: [
                        SubjectStrategy::TopicName,
                        SubjectStrategy::RecordName,
                        SubjectStrategy::TopicRecordName,
                    ][strategy as usize],
                },
                dedup_window: dedup_ms.map(Duration::from_millis),
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    let name = "[a-z.-]{1,20}";
    prop_oneof![
        (name, config()).prop_map(|(name, config)| Request::CreateTopic { name, config }),
        name.prop_map(|name| Request::DeleteTopic { name }),
        Just(Request::ListTopics),
        name.prop_map(|name| Request::DescribeTopic { name }),
        (
            name,
            any::<u32>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(topic, partition, fsync, batch)| Request::Produce {
                topic,
                partition,
                durability: if fsync {
                    Durability::Fsync
                } else {
                    Durability::Memory
                },
                batch: batch.into()
            }),
        (
            name,
            any::<u32>(),
            any::<i64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(topic, partition, offset, max_bytes, max_wait_ms, min_bytes)| {
                    Request::Fetch {
                        topic,
                        partition,
                        offset,
                        max_bytes,
                        max_wait_ms,
                        min_bytes,
                    }
                }
            ),
        (
            name,
            any::<u32>(),
            prop_oneof![
                Just(OffsetSpec::Earliest),
                Just(OffsetSpec::Latest),
                any::<i64>().prop_map(OffsetSpec::Timestamp)
            ]
        )
            .prop_map(|(topic, partition, spec)| Request::ListOffsets {
                topic,
                partition,
                spec
            }),
        ".{0,20}".prop_map(|name| Request::InitProducer { name }),
        "[a-z]{1,8}".prop_map(|topic| Request::Metadata { topic }),
        (
            "[a-z]{1,8}",
            any::<u32>(),
            proptest::collection::vec(any::<u64>(), 0..5)
        )
            .prop_map(|(topic, partition, replicas)| Request::MovePartition {
                topic,
                partition,
                replicas
            }),
        any::<u64>().prop_map(|node| Request::RemoveNode { node }),
        group_request().prop_map(Request::Group),
        security_request().prop_map(Request::Security),
    ]
}

fn response() -> impl Strategy<Value = (Api, Response)> {
    let description = || {
        (
            "[a-z]{1,10}",
            config(),
            proptest::collection::vec(
                (
                    any::<u32>(),
                    any::<i64>(),
                    any::<i64>(),
                    any::<u32>(),
                    any::<u64>(),
                ),
                0..4,
            ),
        )
            .prop_map(|(name, config, partitions)| TopicDescription {
                id: TopicId([name.len() as u8; 16]),
                name,
                config,
                partitions: partitions
                    .into_iter()
                    .map(
                        |(partition, log_start_offset, high_watermark, segments, size_bytes)| {
                            PartitionDescription {
                                partition,
                                log_start_offset,
                                high_watermark,
                                segments,
                                size_bytes,
                                problem: (segments % 3 == 0)
                                    .then(|| format!("quarantined at offset {high_watermark}")),
                                replication: (segments % 2 == 0).then(|| Replication {
                                    leader: (partition % 3 != 0)
                                        .then_some(u64::from(partition % 3)),
                                    term: u64::from(segments),
                                    replicas: vec![1, 2, 3],
                                    followers: vec![
                                        FollowerLag {
                                            node: 2,
                                            batches_behind: Some(size_bytes % 7),
                                        },
                                        FollowerLag {
                                            node: 3,
                                            batches_behind: None,
                                        },
                                    ],
                                }),
                            }
                        },
                    )
                    .collect(),
            })
    };
    prop_oneof![
        (0u16..20, any::<u32>(), ".{0,40}").prop_map(|(code, retry_after_ms, message)| (
            Api::Produce,
            Response::Error(ErrorBody {
                code: ErrorCode::from_code(code.max(1)),
                retry_after_ms,
                message
            })
        )),
        Just((Api::CreateTopic, Response::TopicCreated)),
        Just((Api::DeleteTopic, Response::TopicDeleted)),
        Just((Api::MovePartition, Response::PartitionMoving)),
        Just((Api::RemoveNode, Response::NodeRemoved)),
        proptest::collection::vec(description(), 0..3)
            .prop_map(|topics| (Api::ListTopics, Response::Topics(topics))),
        description().prop_map(|topic| (Api::DescribeTopic, Response::Topic(Box::new(topic)))),
        (
            any::<i64>(),
            any::<i64>(),
            proptest::collection::vec(any::<i64>(), 0..5)
        )
            .prop_map(|(base_offset, append_time_ms, record_offsets)| (
                Api::Produce,
                Response::Produced {
                    base_offset,
                    append_time_ms,
                    record_offsets
                }
            )),
        (
            any::<i64>(),
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(high_watermark, log_start_offset, batches)| (
                Api::Fetch,
                Response::Fetched {
                    high_watermark,
                    log_start_offset,
                    batches: batches.into()
                }
            )),
        (any::<i64>(), any::<i64>()).prop_map(|(offset, timestamp_ms)| (
            Api::ListOffsets,
            Response::Offset {
                offset,
                timestamp_ms
            }
        )),
        (any::<i64>(), any::<i16>()).prop_map(|(producer_id, epoch)| (
            Api::InitProducer,
            Response::ProducerInit { producer_id, epoch }
        )),
        (
            proptest::collection::vec((0u64..=i64::MAX as u64, "[0-9.:]{1,21}"), 0..4),
            proptest::collection::vec(
                (
                    any::<u32>(),
                    proptest::option::of(0u64..=i64::MAX as u64),
                    proptest::collection::vec(any::<u64>(), 0..4)
                ),
                0..4
            )
        )
            .prop_map(|(nodes, partitions)| (
                Api::Metadata,
                Response::Metadata(TopicMetadata {
                    nodes: nodes
                        .into_iter()
                        .map(|(id, addr)| NodeAddress { id, addr })
                        .collect(),
                    partitions: partitions
                        .into_iter()
                        .map(|(partition, leader, replicas)| PartitionPlacement {
                            partition,
                            leader,
                            replicas
                        })
                        .collect(),
                })
            )),
        group_response().prop_map(|(api, response)| (api, Response::Group(response))),
        security_response().prop_map(|(api, response)| (api, Response::Security(response))),
    ]
}

fn topic_partition() -> impl Strategy<Value = TopicPartition> {
    ("[a-z]{1,8}", any::<u32>())
        .prop_map(|(topic, partition)| TopicPartition::new(topic, partition))
}

fn partitions() -> impl Strategy<Value = Vec<TopicPartition>> {
    proptest::collection::vec(topic_partition(), 0..4)
}

/// An offset or lag the wire can carry: absent, or not negative.
fn optional_offset() -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(0..=i64::MAX)
}

fn group_request() -> impl Strategy<Value = GroupRequest> {
    prop_oneof![
        (
            "[a-z]{1,8}",
            proptest::option::of("[a-z0-9-]{1,12}"),
            any::<i32>(),
            proptest::option::of("[a-z0-9]{1,8}"),
            proptest::collection::vec("[a-z]{1,8}", 0..3),
            partitions()
        )
            .prop_map(
                |(group, member_id, member_epoch, instance_id, topics, owned)| {
                    GroupRequest::Heartbeat {
                        group,
                        member_id,
                        member_epoch,
                        instance_id,
                        topics,
                        owned,
                    }
                }
            ),
        ("[a-z]{1,8}", "[a-z0-9-]{1,12}")
            .prop_map(|(group, member_id)| GroupRequest::Leave { group, member_id }),
        (
            "[a-z]{1,8}",
            "[a-z0-9-]{1,12}",
            any::<i32>(),
            proptest::collection::vec(
                (topic_partition(), any::<i64>(), ".{0,10}").prop_map(
                    |(partition, offset, metadata)| Commit {
                        partition,
                        offset,
                        metadata
                    }
                ),
                0..4
            )
        )
            .prop_map(|(group, member_id, member_epoch, offsets)| {
                GroupRequest::Commit {
                    group,
                    member_id,
                    member_epoch,
                    offsets,
                }
            }),
        ("[a-z]{1,8}", partitions())
            .prop_map(|(group, partitions)| GroupRequest::FetchOffsets { group, partitions }),
        "[a-z]{1,8}".prop_map(|group| GroupRequest::Describe { group }),
        Just(GroupRequest::List),
        "[a-z]{1,8}".prop_map(|group| GroupRequest::Delete { group }),
    ]
}

fn group_response() -> impl Strategy<Value = (Api, GroupResponse)> {
    prop_oneof![
        ("[a-z0-9-]{1,12}", any::<i32>(), any::<u32>(), partitions()).prop_map(
            |(member_id, member_epoch, heartbeat_interval_ms, partitions)| (
                Api::GroupHeartbeat,
                GroupResponse::Assignment {
                    member_id,
                    member_epoch,
                    heartbeat_interval_ms,
                    partitions
                }
            )
        ),
        Just((Api::LeaveGroup, GroupResponse::Left)),
        Just((Api::CommitOffsets, GroupResponse::Committed)),
        Just((Api::DeleteGroup, GroupResponse::Deleted)),
        proptest::collection::vec(
            (topic_partition(), optional_offset(), ".{0,10}").prop_map(
                |(partition, offset, metadata)| CommittedOffset {
                    partition,
                    offset,
                    metadata
                }
            ),
            0..4
        )
        .prop_map(|offsets| (Api::FetchOffsets, GroupResponse::Offsets(offsets))),
        (
            "[a-z]{1,8}",
            any::<i32>(),
            proptest::collection::vec(
                (
                    "[a-z0-9-]{1,12}",
                    proptest::option::of("[a-z]{1,6}"),
                    partitions()
                ),
                0..3
            ),
            proptest::collection::vec(
                (
                    topic_partition(),
                    optional_offset(),
                    any::<[i64; 2]>(),
                    optional_offset()
                ),
                0..3
            )
        )
            .prop_map(|(group, generation, members, lags)| (
                Api::DescribeGroup,
                GroupResponse::Description(GroupDescription {
                    group,
                    generation,
                    members: members
                        .into_iter()
                        .map(|(member_id, instance_id, partitions)| MemberDescription {
                            member_id,
                            instance_id,
                            partitions
                        })
                        .collect(),
                    partitions: lags
                        .into_iter()
                        .map(
                            |(partition, committed, [end_offset, lag_records], lag_ms)| {
                                PartitionLag {
                                    partition,
                                    committed,
                                    end_offset,
                                    lag_records,
                                    lag_ms,
                                    problem: (lag_records % 2 == 1).then(|| {
                                        format!("committed offset past the end {end_offset}")
                                    }),
                                }
                            }
                        )
                        .collect(),
                })
            )),
        proptest::collection::vec("[a-z]{1,8}", 0..4)
            .prop_map(|groups| (Api::ListGroups, GroupResponse::Groups(groups))),
    ]
}

/// A produce decoded from an owned body keeps its batch in that body's buffer: no copy, and
/// the only view of it, so the broker takes it as mutable without copying either. A fetch
/// answer's batches are likewise a view into the frame body.
/// An `AlterUser` from a client before registry changes (name and credential only) keeps
/// the user's registry access; a bad change byte is refused.
#[test]
fn an_alter_user_without_a_registry_change_keeps_the_access() {
    let mut body = Vec::new();
    crate::put_string(&mut body, "alice");
    crate::put_string(&mut body, "credential text");
    assert_eq!(
        Request::decode(Api::AlterUser, &body).expect("older form"),
        Request::Security(SecurityRequest::AlterUser {
            name: "alice".to_owned(),
            credential: "credential text".to_owned(),
            registry: herald_auth::users::RegistryChange::Keep,
        })
    );
    // A Keep is sent as the older form, which an older broker reads.
    let mut sent = Vec::new();
    Request::Security(SecurityRequest::AlterUser {
        name: "alice".to_owned(),
        credential: "credential text".to_owned(),
        registry: herald_auth::users::RegistryChange::Keep,
    })
    .encode(&mut sent);
    assert!(sent.ends_with(&body), "{sent:?}");
    body.push(7);
    assert!(Request::decode(Api::AlterUser, &body).is_err());
}

#[test]
fn owned_decoding_takes_the_payload_without_copying_it() {
    let request = Request::Produce {
        topic: "t".into(),
        partition: 3,
        durability: Durability::Fsync,
        batch: vec![7u8; 4096].into(),
    };
    let mut body = Vec::new();
    request.encode(&mut body);
    let buffer = body.as_ptr() as usize;
    let Request::Produce { batch, .. } =
        Request::decode_owned(Api::Produce, body).expect("decodes")
    else {
        panic!("a produce");
    };
    assert_eq!(batch.as_ptr() as usize, buffer + body_head_len("t"));
    let writable = bytes::BytesMut::from(batch);
    assert_eq!(
        writable.as_ptr() as usize,
        buffer + body_head_len("t"),
        "taken as mutable without a copy"
    );

    let response = Response::Fetched {
        high_watermark: 9,
        log_start_offset: 0,
        batches: vec![1u8; 4096].into(),
    };
    let mut body = Vec::new();
    response.encode(&mut body);
    let buffer = body.as_ptr() as usize;
    let Response::Fetched { batches, .. } =
        Response::decode_owned(Api::Fetch, body).expect("decodes")
    else {
        panic!("fetched");
    };
    assert_eq!(batches.as_ptr() as usize, buffer + 2 + 8 + 8 + 4);
}

/// Bytes of a produce body before its batch: topic (u16 length + bytes), partition, durability,
/// batch length.
fn body_head_len(topic: &str) -> usize {
    2 + topic.len() + 4 + 1 + 4
}

proptest! {
    #[test]
    fn requests_round_trip(request in request()) {
        let mut body = Vec::new();
        request.encode(&mut body);
        prop_assert_eq!(&Request::decode(request.api(), &body).expect("decodes"), &request);
        prop_assert_eq!(&Request::decode_owned(request.api(), body.clone()).expect("decodes owned"), &request);
        let mut split = Vec::new();
        if let Some(tail) = request.encode_split(&mut split) {
            split.extend_from_slice(&tail);
        }
        prop_assert_eq!(split, body);
    }

    #[test]
    fn responses_round_trip((api, response) in response()) {
        let mut body = Vec::new();
        response.encode(&mut body);
        prop_assert_eq!(Response::decode(api, &body).expect("decodes"), response.clone());
        prop_assert_eq!(Response::decode_owned(api, body.clone()).expect("decodes owned"), response.clone());
        let mut split = Vec::new();
        if let Some(tail) = response.clone().encode_split(&mut split) {
            split.extend_from_slice(&tail);
        }
        prop_assert_eq!(split, body);
    }

    #[test]
    fn random_and_truncated_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128), api in 1u16..20, request in request(), cut in 0usize..200) {
        let api = Api::from_code(api).expect("known api");
        let _ = Request::decode(api, &bytes);
        let _ = Response::decode(api, &bytes);
        let _ = Response::decode_owned(api, bytes.clone());
        let _ = Request::decode_owned(api, bytes.clone());
        let mut body = Vec::new();
        request.encode(&mut body);
        let cut = cut.min(body.len());
        if cut < body.len() {
            prop_assert!(Request::decode(request.api(), &body[..cut]).is_err() || matches!(request, Request::ListTopics | Request::Group(GroupRequest::List)));
        }
    }
}

/// The Rust API says "none" with `Option`; the wire still says it with an empty string or -1,
/// byte for byte as before.
#[test]
fn absent_values_keep_their_wire_sentinels() {
    let orders = |partition| TopicPartition::new("orders", partition);
    let join = Request::Group(GroupRequest::Heartbeat {
        group: "g".into(),
        member_id: None,
        member_epoch: 0,
        instance_id: None,
        topics: vec!["orders".into()],
        owned: vec![orders(3)],
    });
    let mut expected = Vec::new();
    for text in ["g", ""] {
        expected.extend_from_slice(&(text.len() as u16).to_be_bytes());
        expected.extend_from_slice(text.as_bytes());
    }
    expected.extend_from_slice(&0i32.to_be_bytes());
    expected.extend_from_slice(&0u16.to_be_bytes());
    expected.extend_from_slice(&1u32.to_be_bytes());
    expected.extend_from_slice(&6u16.to_be_bytes());
    expected.extend_from_slice(b"orders");
    expected.extend_from_slice(&1u32.to_be_bytes());
    expected.extend_from_slice(&6u16.to_be_bytes());
    expected.extend_from_slice(b"orders");
    expected.extend_from_slice(&3u32.to_be_bytes());
    let mut body = Vec::new();
    join.encode(&mut body);
    assert_eq!(body, expected);
    assert_eq!(Request::decode(join.api(), &body).expect("decodes"), join);

    let offsets = Response::Group(GroupResponse::Offsets(vec![CommittedOffset {
        partition: orders(1),
        offset: None,
        metadata: String::new(),
    }]));
    // A response body starts with its status (0: not an error).
    let mut expected = 0u16.to_be_bytes().to_vec();
    expected.extend_from_slice(&1u32.to_be_bytes());
    expected.extend_from_slice(&6u16.to_be_bytes());
    expected.extend_from_slice(b"orders");
    expected.extend_from_slice(&1u32.to_be_bytes());
    expected.extend_from_slice(&(-1i64).to_be_bytes());
    expected.extend_from_slice(&0u16.to_be_bytes());
    let mut body = Vec::new();
    offsets.encode(&mut body);
    assert_eq!(body, expected);
    assert_eq!(
        Response::decode(Api::FetchOffsets, &body).expect("decodes"),
        offsets
    );

    let lag = PartitionLag {
        partition: orders(0),
        committed: None,
        end_offset: 5,
        lag_records: 5,
        lag_ms: None,
        problem: None,
    };
    let description = Response::Group(GroupResponse::Description(GroupDescription {
        group: "g".into(),
        generation: 2,
        members: vec![MemberDescription {
            member_id: "member-1".into(),
            instance_id: None,
            partitions: Vec::new(),
        }],
        partitions: vec![lag],
    }));
    let mut body = Vec::new();
    description.encode(&mut body);
    let mut tail: Vec<u8> = [-1i64, 5, 5, -1]
        .iter()
        .flat_map(|value| value.to_be_bytes())
        .collect();
    // No problem: an empty string.
    tail.extend_from_slice(&0u16.to_be_bytes());
    assert!(
        body.ends_with(&tail),
        "committed and lag_ms are -1 when absent, the problem empty"
    );
    assert_eq!(
        Response::decode(Api::DescribeGroup, &body).expect("decodes"),
        description
    );
}

#[test]
fn topic_ids_print_as_uuids_and_parse_back() {
    let id = TopicId([
        0x01, 0x8f, 0x2a, 0x3b, 0x4c, 0x5d, 0x7e, 0x6f, 0x80, 0x91, 0xa2, 0xb3, 0xc4, 0xd5, 0xe6,
        0xf7,
    ]);
    assert_eq!(id.to_string(), "018f2a3b-4c5d-7e6f-8091-a2b3c4d5e6f7");
    assert_eq!(TopicId::parse(&id.to_string()), Some(id));
    assert_eq!(TopicId::parse("018f2a3b"), None);
    assert_eq!(TopicId::parse("zz8f2a3b-4c5d-7e6f-8091-a2b3c4d5e6f7"), None);
}
