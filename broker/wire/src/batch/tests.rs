//! Batch tests: round trips, limits, and forged record sections that validation refuses.

use super::header::CRC_START;
use super::*;
use crate::codec::DecodeError;
use crate::limits::{
    BATCH_RECORDS_MAX, HEADERS_PER_RECORD_MAX, HEADER_KEY_BYTES_MAX, HEADER_VALUE_BYTES_MAX,
    KEY_BYTES_MAX, VALUE_BYTES_MAX,
};
use proptest::prelude::*;

fn record(i: u8) -> Record {
    Record {
        timestamp_ms: 1_700_000_000_000 + i64::from(i),
        key: Some(vec![i; 3]),
        value: if i.is_multiple_of(5) {
            None
        } else {
            Some(vec![i; 10])
        },
        headers: vec![Header {
            key: "idempotency-key".into(),
            value: vec![i],
        }],
    }
}

#[test]
fn encode_parse_and_stamp() {
    let mut builder = BatchBuilder::new().idempotent(7, 1, 42);
    for i in 0..10 {
        builder.push(record(i));
    }
    let mut bytes = builder.encode().expect("encodes");
    stamp(&mut bytes, 1000, 123);
    assert_eq!(count_records(&[bytes.clone(), bytes.clone()].concat()), 20);
    assert_eq!(count_records(&bytes[..bytes.len() - 1]), 0);
    let view = BatchView::parse(&bytes).expect("valid after stamping");
    view.validate_records().expect("records valid");
    assert_eq!(
        (view.base_offset(), view.last_offset(), view.next_offset()),
        (1000, 1009, 1010)
    );
    assert_eq!(
        (
            view.producer_id(),
            view.producer_epoch(),
            view.base_sequence()
        ),
        (7, 1, 42)
    );
    assert_eq!(
        view.producer(),
        Some(ProducerStamp {
            id: 7,
            epoch: 1,
            base_sequence: 42
        })
    );
    let mut plain = BatchBuilder::new();
    plain.push(record(0));
    let plain = plain.encode().expect("encodes");
    let plain = BatchView::parse(&plain).expect("valid");
    assert_eq!(
        plain.producer(),
        None,
        "a non-idempotent batch has no producer"
    );
    assert_eq!(view.append_time_ms(), 123);
    let decoded: Vec<Record> = view
        .records()
        .map(|r| r.expect("record").to_owned_record())
        .collect();
    assert_eq!(decoded, (0..10).map(record).collect::<Vec<_>>());
}

#[test]
fn a_flipped_bit_is_caught_by_the_crc() {
    let mut builder = BatchBuilder::new();
    builder.push(record(1));
    let mut bytes = builder.encode().expect("encodes");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        BatchView::parse(&bytes),
        Err(BatchError::CrcMismatch { .. })
    ));
}

#[test]
fn limits_are_enforced_when_building() {
    let mut builder = BatchBuilder::new();
    builder.push(Record {
        key: Some(vec![0; KEY_BYTES_MAX + 1]),
        ..Record::default()
    });
    assert!(matches!(
        builder.encode(),
        Err(BatchError::Decode(DecodeError::TooLarge {
            what: "key",
            ..
        }))
    ));
    assert!(matches!(
        BatchBuilder::new().encode(),
        Err(BatchError::Empty)
    ));
}

#[test]
fn the_offset_after_a_fetch_comes_from_its_last_whole_batch() {
    let mut bytes = Vec::new();
    for (base, count) in [(10i64, 2usize), (12, 3)] {
        let mut builder = BatchBuilder::new();
        for _ in 0..count {
            builder.push(Record::default());
        }
        let mut batch = builder.encode().expect("encodes");
        stamp(&mut batch, base, 0);
        bytes.extend_from_slice(&batch);
    }
    assert_eq!(next_offset_after(&bytes), Some(15));
    assert_eq!(count_records(&bytes), 5);
    // A torn last batch does not count.
    assert_eq!(next_offset_after(&bytes[..bytes.len() - 1]), Some(12));
    assert_eq!(next_offset_after(&[]), None);
}

/// The prefix below an offset holds whole batches only, found by their headers: a batch
/// reaching past the offset ends it, and so does a torn one; a damaged CRC is not looked at
/// (consumers check it).
#[test]
fn the_prefix_before_an_offset_is_whole_batches_by_their_headers() {
    let mut bytes = Vec::new();
    let mut sizes = Vec::new();
    for (base, count) in [(10i64, 2usize), (12, 3), (15, 1)] {
        let mut builder = BatchBuilder::new();
        for _ in 0..count {
            builder.push(Record::default());
        }
        let mut batch = builder.encode().expect("encodes");
        stamp(&mut batch, base, 0);
        sizes.push(batch.len());
        bytes.extend_from_slice(&batch);
    }
    assert_eq!(prefix_before(&bytes, 16), bytes.len());
    assert_eq!(prefix_before(&bytes, 15), sizes[0] + sizes[1]);
    assert_eq!(prefix_before(&bytes, 14), sizes[0]);
    assert_eq!(prefix_before(&bytes, 11), 0);
    assert_eq!(
        prefix_before(&bytes[..bytes.len() - 1], 16),
        sizes[0] + sizes[1]
    );
    let mut damaged = bytes.clone();
    damaged[sizes[0] - 1] ^= 0xff;
    assert!(
        batches(&damaged).any(|batch| batch.is_err()),
        "the damage is real"
    );
    assert_eq!(prefix_before(&damaged, 16), bytes.len());
    assert_eq!(prefix_before(&[], 16), 0);
}

#[test]
fn a_refused_push_leaves_the_batch_as_it_was() {
    let mut writer = BatchWriter::new();
    writer
        .push(5, Some(b"k"), Some(b"v"), std::iter::empty())
        .expect("first record");
    let before = writer.encoded_len();
    let huge = vec![0; VALUE_BYTES_MAX + 1];
    assert!(writer
        .push(6, None, Some(&huge), std::iter::empty())
        .is_err());
    let long_key = "k".repeat(HEADER_KEY_BYTES_MAX + 1);
    assert!(writer
        .push(6, None, None, [(long_key.as_str(), &b""[..])].into_iter())
        .is_err());
    assert_eq!((writer.len(), writer.encoded_len()), (1, before));
    let bytes = writer
        .finish(Some(ProducerStamp {
            id: 1,
            epoch: 0,
            base_sequence: 0,
        }))
        .expect("finishes");
    let view = BatchView::parse(&bytes).expect("parses");
    view.validate_records().expect("valid");
    assert_eq!(view.record_count(), 1);
    assert!(matches!(
        BatchWriter::new().finish(Some(ProducerStamp {
            id: 1,
            epoch: 0,
            base_sequence: 0
        })),
        Err(BatchError::Empty)
    ));
}

fn arbitrary_record() -> impl Strategy<Value = Record> {
    (
        any::<i32>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
        proptest::collection::vec(
            ("[a-z-]{0,12}", proptest::collection::vec(any::<u8>(), 0..8)),
            0..3,
        ),
    )
        .prop_map(|(t, key, value, headers)| Record {
            timestamp_ms: 1_700_000_000_000 + i64::from(t),
            key,
            value,
            headers: headers
                .into_iter()
                .map(|(key, value)| Header { key, value })
                .collect(),
        })
}

proptest! {
    #[test]
    fn batches_round_trip(records in proptest::collection::vec(arbitrary_record(), 1..20), base in 0i64..1_000_000) {
        let mut builder = BatchBuilder::new();
        for record in &records {
            builder.push(record.clone());
        }
        let mut bytes = builder.encode().expect("encodes");
        stamp(&mut bytes, base, 5);
        let view = BatchView::parse(&bytes).expect("parses");
        view.validate_records().expect("valid");
        let decoded: Vec<Record> = view.records().map(|r| r.expect("record").to_owned_record()).collect();
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn a_restamped_batch_is_the_batch_encoded_with_those_fields(records in proptest::collection::vec(arbitrary_record(), 1..10), producer in 0..i64::MAX, epoch in any::<i16>(), sequence in any::<i32>()) {
        let mut builder = BatchBuilder::new();
        for record in &records {
            builder.push(record.clone());
        }
        let mut restamped = builder.encode().expect("encodes");
        restamp_producer(&mut restamped, producer, epoch, sequence);
        let direct = builder.clone().idempotent(producer, epoch, sequence).encode().expect("encodes");
        prop_assert_eq!(&restamped, &direct);
        let view = BatchView::parse(&restamped).expect("CRC still right");
        prop_assert_eq!((view.producer_id(), view.producer_epoch(), view.base_sequence()), (producer, epoch, sequence));
    }

    #[test]
    fn random_and_truncated_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), cut in 0usize..400) {
        if let Ok(view) = BatchView::parse(&bytes) {
            let _ = view.validate_records();
        }
        let _ = batches(&bytes).count();
        let mut builder = BatchBuilder::new();
        builder.push(Record { value: Some(bytes.clone()), ..Record::default() });
        let encoded = builder.encode().expect("encodes");
        let cut = cut.min(encoded.len());
        if let Ok(view) = BatchView::parse(&encoded[..cut]) {
            prop_assert_eq!(cut, encoded.len());
            view.validate_records().expect("complete batch is valid");
        }
    }

    /// Random record sections sealed with a correct length and CRC: whatever the bytes,
    /// validation returns (never panics), and it only accepts a section that really
    /// holds the declared number of records.
    #[test]
    fn garbage_record_sections_never_panic(garbage in proptest::collection::vec(any::<u8>(), 0..100), count in 1u32..5) {
        let mut builder = BatchBuilder::new();
        builder.push(Record::default());
        let mut bytes = builder.encode().expect("encodes");
        bytes.truncate(BATCH_HEADER_BYTES);
        bytes.extend_from_slice(&garbage);
        bytes[26..30].copy_from_slice(&count.to_be_bytes());
        reseal(&mut bytes);
        let view = BatchView::parse(&bytes).expect("length and CRC are right, so the header parses");
        if view.validate_records().is_ok() {
            prop_assert_eq!(view.records().filter(Result::is_ok).count(), count as usize);
        }
    }
}

// Forged record sections. `forgeable_batch` is two records; the forgeries below write at
// fixed positions of the first one (record 0), then `reseal` recomputes the batch length
// and the CRC, so header and CRC checks pass and only record validation can refuse.
/// Record 0's u32 record length (the record starts right after the batch header).
const R0: usize = BATCH_HEADER_BYTES;
/// Record 0's i32 key length (after the length and the i64 timestamp delta); key "key".
const R0_KEY_LEN: usize = R0 + 4 + 8;
/// Record 0's i32 value length; value "value".
const R0_VALUE_LEN: usize = R0_KEY_LEN + 4 + 3;
/// Record 0's u16 header count; one header "h" = "v".
const R0_HEADER_COUNT: usize = R0_VALUE_LEN + 4 + 5;
/// Record 0's first header: u16 key length, then the key byte "h".
const R0_HEADER_KEY_LEN: usize = R0_HEADER_COUNT + 2;
/// Record 0's first header value's u32 length, then the value byte "v".
const R0_HEADER_VALUE_LEN: usize = R0_HEADER_KEY_LEN + 2 + 1;
/// Where record 1 starts.
const R1: usize = R0_HEADER_VALUE_LEN + 4 + 1;
/// Record 0's bytes after its length field.
const R0_BODY_LEN: u32 = (R1 - R0 - 4) as u32;

fn forgeable_batch() -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for (i, key) in [&b"key"[..], &b"k2"[..]].into_iter().enumerate() {
        builder.push(Record {
            timestamp_ms: 1_000 + i as i64,
            key: Some(key.to_vec()),
            value: Some(b"value".to_vec()),
            headers: vec![Header {
                key: "h".into(),
                value: b"v".to_vec(),
            }],
        });
    }
    let bytes = builder.encode().expect("encodes");
    // Pin the layout the forgeries assume, so a forgery never lands somewhere else.
    assert_eq!(&bytes[R0..R0 + 4], &R0_BODY_LEN.to_be_bytes());
    assert_eq!(R0_BODY_LEN, 34);
    assert_eq!(&bytes[R0_KEY_LEN..R0_KEY_LEN + 7], b"\0\0\0\x03key");
    assert_eq!(&bytes[R0_VALUE_LEN..R0_VALUE_LEN + 9], b"\0\0\0\x05value");
    assert_eq!(
        &bytes[R0_HEADER_COUNT..R0_HEADER_COUNT + 2],
        &1u16.to_be_bytes()
    );
    assert_eq!(&bytes[R0_HEADER_KEY_LEN..R0_HEADER_KEY_LEN + 3], b"\0\x01h");
    assert_eq!(
        &bytes[R0_HEADER_VALUE_LEN..R0_HEADER_VALUE_LEN + 5],
        b"\0\0\0\x01v"
    );
    assert_eq!(&bytes[R1..R1 + 4], &33u32.to_be_bytes());
    assert_eq!(bytes.len(), R1 + 4 + 33);
    bytes
}

/// Writes `field` at `at`.
fn put(bytes: &mut [u8], at: usize, field: &[u8]) {
    bytes[at..at + field.len()].copy_from_slice(field);
}

/// Recomputes the batch length and the CRC of a forged batch.
fn reseal(bytes: &mut [u8]) {
    let length = (bytes.len() - LOG_OVERHEAD_BYTES) as u32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[20..24].copy_from_slice(&crc.to_be_bytes());
}

/// The error validating `forgeable_batch()` forged by `forge` (and resealed) gives. The
/// forged batch must still parse (header and CRC consistent), must be refused by
/// `validate_records`, and walking its records must stop at that same error.
fn refusal(forge: impl FnOnce(&mut Vec<u8>)) -> BatchError {
    let mut bytes = forgeable_batch();
    forge(&mut bytes);
    reseal(&mut bytes);
    let view = BatchView::parse(&bytes)
        .expect("header and CRC are consistent, so only the records are judged");
    let error = view
        .validate_records()
        .expect_err("a forged record section is refused");
    let walked: Vec<Result<RecordView<'_>, BatchError>> = view.records().collect();
    let walk_errors: Vec<&BatchError> = walked.iter().filter_map(|r| r.as_ref().err()).collect();
    if matches!(error, BatchError::RecordCountMismatch { .. }) {
        assert!(
            walk_errors.is_empty(),
            "every record decodes: {walk_errors:?}"
        );
    } else {
        assert_eq!(
            walk_errors,
            vec![&error],
            "the walk meets the same error once"
        );
        assert!(
            walked.last().is_some_and(Result::is_err),
            "the walk ends at the error"
        );
    }
    error
}

/// Each lie in a CRC-valid record section is refused with its own error (and never a
/// panic or an out-of-bounds read). Fails if, e.g., `record.finish("record")?` is
/// dropped from `decode_record` (bytes left inside a record would be accepted), the
/// `len > limit` check is dropped from `optional`, or the count comparison is dropped
/// from `validate_records`.
#[test]
fn forged_record_sections_are_refused() {
    let pristine = forgeable_batch();
    BatchView::parse(&pristine)
        .expect("parses")
        .validate_records()
        .expect("the unforged batch is valid, so each refusal is the forgery's doing");
    let truncated = |what, needed| BatchError::Decode(DecodeError::Truncated { what, needed });
    let too_large =
        |what, size, limit| BatchError::Decode(DecodeError::TooLarge { what, size, limit });

    // A record length pointing 10 bytes past the end of the batch.
    assert_eq!(
        refusal(|b| put(b, R0, &(R0_BODY_LEN + 4 + 33 + 10).to_be_bytes())),
        truncated("record", 10)
    );
    // A record length of u32::MAX (-1 read unsigned): refused, nothing allocated.
    assert_eq!(
        refusal(|b| put(b, R0, &u32::MAX.to_be_bytes())),
        truncated(
            "record",
            u32::MAX as usize - (R0_BODY_LEN as usize + 4 + 33)
        )
    );
    // A record length one short: the header value's byte falls outside the record.
    assert_eq!(
        refusal(|b| put(b, R0, &(R0_BODY_LEN - 1).to_be_bytes())),
        truncated("header value", 1)
    );
    // A record length 3 longer, with 3 bytes added inside the last record: leftovers
    // inside a record.
    assert_eq!(
        refusal(|b| {
            put(b, R1, &36u32.to_be_bytes());
            b.extend_from_slice(&[1, 2, 3]);
        }),
        BatchError::Decode(DecodeError::Trailing {
            what: "record",
            trailing: 3
        })
    );
    // Garbage after the last record (too short to be a record length).
    assert_eq!(
        refusal(|b| b.extend_from_slice(&[0xde, 0xad, 0xbe])),
        truncated("record length", 1)
    );
    // Garbage after the last record that reads as an empty record.
    assert_eq!(
        refusal(|b| b.extend_from_slice(&[0, 0, 0, 0])),
        truncated("timestamp delta", 8)
    );
    // A record count larger, and smaller, than the records present.
    assert_eq!(
        refusal(|b| put(b, 26, &3u32.to_be_bytes())),
        BatchError::RecordCountMismatch {
            declared: 3,
            actual: 2
        }
    );
    assert_eq!(
        refusal(|b| put(b, 26, &1u32.to_be_bytes())),
        BatchError::RecordCountMismatch {
            declared: 1,
            actual: 2
        }
    );
    // A key length past the limit, and one within the batch but beyond its record
    // (record 0 has 22 bytes left after the key length; record 1 follows it).
    assert_eq!(
        refusal(|b| put(b, R0_KEY_LEN, &(KEY_BYTES_MAX as i32 + 1).to_be_bytes())),
        too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX)
    );
    assert_eq!(
        refusal(|b| put(b, R0_KEY_LEN, &40i32.to_be_bytes())),
        truncated("key", 18)
    );
    // A negative key length other than -1 reads as no key (as Kafka reads it), so the
    // key's bytes are read as the value length: refused, whatever the detail.
    assert!(matches!(
        refusal(|b| put(b, R0_KEY_LEN, &(-2i32).to_be_bytes())),
        BatchError::Decode(_)
    ));
    // A value length past the limit, and one beyond its record (15 bytes left).
    assert_eq!(
        refusal(|b| put(b, R0_VALUE_LEN, &(VALUE_BYTES_MAX as i32 + 1).to_be_bytes())),
        too_large("value", VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX)
    );
    assert_eq!(
        refusal(|b| put(b, R0_VALUE_LEN, &30i32.to_be_bytes())),
        truncated("value", 15)
    );
    // A header count past the limit, one more than the headers present, and one fewer
    // (the unread header is left over in the record).
    assert_eq!(
        refusal(|b| put(
            b,
            R0_HEADER_COUNT,
            &(HEADERS_PER_RECORD_MAX + 1).to_be_bytes()
        )),
        too_large(
            "headers",
            usize::from(HEADERS_PER_RECORD_MAX) + 1,
            usize::from(HEADERS_PER_RECORD_MAX)
        )
    );
    assert_eq!(
        refusal(|b| put(b, R0_HEADER_COUNT, &2u16.to_be_bytes())),
        truncated("header key length", 2)
    );
    assert_eq!(
        refusal(|b| put(b, R0_HEADER_COUNT, &0u16.to_be_bytes())),
        BatchError::Decode(DecodeError::Trailing {
            what: "record",
            trailing: 8
        })
    );
    // A header key length past the limit, one beyond the record (6 bytes left), and a
    // key that is not UTF-8.
    assert_eq!(
        refusal(|b| put(
            b,
            R0_HEADER_KEY_LEN,
            &(HEADER_KEY_BYTES_MAX as u16 + 1).to_be_bytes()
        )),
        too_large("header key", HEADER_KEY_BYTES_MAX + 1, HEADER_KEY_BYTES_MAX)
    );
    assert_eq!(
        refusal(|b| put(b, R0_HEADER_KEY_LEN, &20u16.to_be_bytes())),
        truncated("header key", 14)
    );
    assert_eq!(
        refusal(|b| put(b, R0_HEADER_KEY_LEN + 2, &[0xff])),
        BatchError::Decode(DecodeError::InvalidUtf8 { what: "header key" })
    );
    // A header value length of u32::MAX, and one beyond the record (1 byte left).
    assert_eq!(
        refusal(|b| put(b, R0_HEADER_VALUE_LEN, &u32::MAX.to_be_bytes())),
        too_large("header value", u32::MAX as usize, HEADER_VALUE_BYTES_MAX)
    );
    assert_eq!(
        refusal(|b| put(b, R0_HEADER_VALUE_LEN, &5u32.to_be_bytes())),
        truncated("header value", 4)
    );

    // Record counts the header itself refuses (checked when parsing, after the CRC).
    let sealed = |count: u32| {
        let mut bytes = forgeable_batch();
        put(&mut bytes, 26, &count.to_be_bytes());
        reseal(&mut bytes);
        BatchView::parse(&bytes).err()
    };
    assert_eq!(sealed(0), Some(BatchError::Empty));
    assert_eq!(
        sealed(BATCH_RECORDS_MAX + 1),
        Some(too_large(
            "batch records",
            BATCH_RECORDS_MAX as usize + 1,
            BATCH_RECORDS_MAX as usize
        ))
    );
}

/// A control batch carries the control bit under its CRC (a flipped bit is caught like any
/// other), reads back as control, and an ordinary batch does not.
#[test]
fn control_batches_are_flagged_under_the_crc() {
    let mut writer = BatchWriter::new();
    writer
        .push(7, Some(b"blank"), None, std::iter::empty())
        .expect("record");
    let mut control = writer.finish_control().expect("control batch");
    let view = BatchView::parse(&control).expect("valid");
    assert!(view.is_control());
    assert_eq!(view.header().attributes, ATTRIBUTE_CONTROL);
    assert_eq!(view.producer(), None);
    let mut data = BatchBuilder::new();
    data.push(record(1));
    assert!(!BatchView::parse(&data.encode().expect("batch"))
        .expect("valid")
        .is_control());
    control[25] = 0;
    assert!(
        BatchView::parse(&control).is_err(),
        "the attributes are checked"
    );
}
