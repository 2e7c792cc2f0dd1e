//! The inbox's claims: records with one idempotency key handled at once (keyless records on
//! different lanes, or consumers sharing an inbox) are handled once: a second claimer waits
//! while the first is handled, is skipped once the first is recorded, and handles its record
//! when the first failed. Each test runs the claimers as concurrent tokio tasks, as lanes
//! run; none depends on which lane a record was sent to.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::consumer::{
    ConsumedRecord, ConsumerConfig, HandlerError, RawConsumer, IDEMPOTENCY_KEY_HEADER,
};
use herald::inbox::{Admission, Inbox};
use herald_wire::batch::{BatchBuilder, Header, Record};
use herald_wire::messages::{Durability, TopicConfig};
use tokio::sync::Barrier;

/// Within the window of every test (a minute): times are fixed, not read from a clock.
const NOW_MS: i64 = 1_000;

fn open(dir: &std::path::Path) -> Arc<Inbox> {
    Arc::new(Inbox::open(dir, 60_000, 1_000).expect("open"))
}

/// What processing one record came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Handled,
    Failed,
    Skipped,
}

/// The consumer's use of the inbox for one record: claim its key, run the handler (`hold`
/// long; it fails while fewer than `failures` attempts were made before it, counted in
/// `attempts`), record the key on success and drop the claim on failure.
async fn process(
    inbox: &Inbox,
    key: &[u8],
    hold: Duration,
    attempts: &AtomicUsize,
    failures: usize,
) -> Outcome {
    match inbox.claim(key, NOW_MS).await.expect("claim") {
        Admission::Processed => Outcome::Skipped,
        Admission::Claimed(claim) => {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(hold).await;
            if attempt < failures {
                drop(claim);
                Outcome::Failed
            } else {
                claim.record(NOW_MS).expect("record");
                Outcome::Handled
            }
        }
    }
}

/// `count` tasks process a record with `key` at once (released together by a barrier).
async fn process_concurrently(
    inbox: &Arc<Inbox>,
    key: &'static [u8],
    count: usize,
    attempts: &Arc<AtomicUsize>,
    failures: usize,
) -> Vec<Outcome> {
    let start = Arc::new(Barrier::new(count));
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (inbox, attempts, start) = (inbox.clone(), attempts.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                process(&inbox, key, Duration::from_millis(30), &attempts, failures).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("join"));
    }
    outcomes
}

fn count(outcomes: &[Outcome], outcome: Outcome) -> usize {
    outcomes.iter().filter(|o| **o == outcome).count()
}

/// Catches: two records with one idempotency key both handled. With "seen?" then "handle"
/// then "record" (the consumer's use of the inbox before claims), all eight tasks pass the
/// check before the first records its key, and the handler runs eight times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_with_one_key_are_handled_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = open(dir.path());
    let attempts = Arc::new(AtomicUsize::new(0));
    let outcomes = process_concurrently(&inbox, b"order-7", 8, &attempts, 0).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(count(&outcomes, Outcome::Handled), 1, "{outcomes:?}");
    assert_eq!(count(&outcomes, Outcome::Skipped), 7, "{outcomes:?}");
}

/// Catches: a claim that does not wait (the second record passing while the first is still
/// handled), and a waiter that is not woken, or woken before the key is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_claim_waits_for_the_first_and_is_skipped_once_it_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = open(dir.path());
    let Admission::Claimed(first) = inbox.claim(b"pay-1", NOW_MS).await.expect("claim") else {
        panic!("a fresh key is claimed");
    };
    let second = tokio::spawn({
        let inbox = inbox.clone();
        async move {
            matches!(
                inbox.claim(b"pay-1", NOW_MS).await.expect("claim"),
                Admission::Processed
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the second waits while the first is handled"
    );
    first.record(NOW_MS).expect("record");
    let skipped = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("let go once the first is recorded")
        .expect("join");
    assert!(skipped, "the second finds the key recorded");
}

/// Catches: a failed first handling that still makes the second record skipped (the key
/// marked at claim time rather than at record time), or that leaves the key held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_record_is_handled_when_the_first_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = open(dir.path());
    let Admission::Claimed(first) = inbox.claim(b"pay-2", NOW_MS).await.expect("claim") else {
        panic!("a fresh key is claimed");
    };
    let second = tokio::spawn({
        let inbox = inbox.clone();
        async move {
            match inbox.claim(b"pay-2", NOW_MS).await.expect("claim") {
                Admission::Processed => false,
                Admission::Claimed(claim) => {
                    claim.record(NOW_MS).expect("record");
                    true
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second waits");
    // The first handler failed (dead-lettered, or the breaker refused the record).
    drop(first);
    let handled = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("let go once the first failed")
        .expect("join");
    assert!(handled, "the second handles its record");
    assert!(
        matches!(
            inbox.claim(b"pay-2", NOW_MS).await.expect("claim"),
            Admission::Processed
        ),
        "and it is recorded"
    );
}

/// Catches: claims that do not pass the key on one failure at a time: of four concurrent
/// records, the first two attempts fail, the third succeeds, the fourth is skipped. Without
/// claims all four run at once and two succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_attempts_pass_the_key_on_until_one_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = open(dir.path());
    let attempts = Arc::new(AtomicUsize::new(0));
    let outcomes = process_concurrently(&inbox, b"refund-3", 4, &attempts, 2).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "{outcomes:?}");
    assert_eq!(count(&outcomes, Outcome::Failed), 2, "{outcomes:?}");
    assert_eq!(count(&outcomes, Outcome::Handled), 1, "{outcomes:?}");
    assert_eq!(count(&outcomes, Outcome::Skipped), 1, "{outcomes:?}");
}

/// Catches: claims serialised across keys (one lock for the inbox), which would make
/// concurrency > 1 pointless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_other_keys_do_not_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = open(dir.path());
    let Admission::Claimed(_held) = inbox.claim(b"a", NOW_MS).await.expect("claim") else {
        panic!("a fresh key is claimed");
    };
    let other = tokio::time::timeout(Duration::from_secs(1), inbox.claim(b"b", NOW_MS))
        .await
        .expect("not held up by another key")
        .expect("claim");
    assert!(matches!(other, Admission::Claimed(_)));
}

/// Catches: a claim future dropped while waiting (a run stopped mid-fetch) that leaves
/// anything behind: once the holder releases, the key is claimable at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_leaves_the_key_claimable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = open(dir.path());
    let Admission::Claimed(first) = inbox.claim(b"k", NOW_MS).await.expect("claim") else {
        panic!("a fresh key is claimed");
    };
    let waited = tokio::time::timeout(Duration::from_millis(100), inbox.claim(b"k", NOW_MS)).await;
    assert!(waited.is_err(), "held: the wait was cut short");
    drop(first);
    let again = tokio::time::timeout(Duration::from_secs(1), inbox.claim(b"k", NOW_MS))
        .await
        .expect("free again")
        .expect("claim");
    assert!(matches!(again, Admission::Claimed(_)));
}

/// Catches: a claim's record that is not the durable one: after a restart the key is still
/// processed.
#[tokio::test]
async fn a_recorded_claim_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let inbox = open(dir.path());
        let Admission::Claimed(claim) = inbox.claim(b"k", NOW_MS).await.expect("claim") else {
            panic!("a fresh key is claimed");
        };
        claim.record(NOW_MS).expect("record");
    }
    let inbox = open(dir.path());
    assert!(matches!(
        inbox.claim(b"k", NOW_MS + 10).await.expect("claim"),
        Admission::Processed
    ));
    assert_eq!(inbox.len(), 1);
}

/// Catches, end to end: two keyless records with one idempotency key at offsets 0 and 1 go
/// to lanes 0 and 1 under concurrency 2 and are handled at once; the inbox must let one
/// through. The consumer claims the key through the inbox before handling
/// (`sdk/src/consumer/run.rs`); with the earlier "`seen`, handle, `record`" both lanes pass
/// the check before either records the key, both are handled, and this fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_duplicates_on_two_lanes_are_handled_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _stop) = support::broker(dir.path()).await;
    client
        .create_topic("events", TopicConfig::default())
        .await
        .expect("create");
    let mut builder = BatchBuilder::new();
    for _ in 0..2 {
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(b"charge".to_vec()),
            headers: vec![Header {
                key: IDEMPOTENCY_KEY_HEADER.to_owned(),
                value: b"charge-1".to_vec(),
            }],
        });
    }
    client
        .produce(
            "events",
            0,
            Durability::Memory,
            builder.encode().expect("batch"),
        )
        .await
        .expect("produce");
    let inbox = open(&dir.path().join("inbox"));
    let config = ConsumerConfig {
        concurrency: 2,
        inbox: Some(inbox),
        ..ConsumerConfig::new("billing", "events")
    };
    let handled: Arc<Mutex<Vec<i64>>> = Arc::default();
    let handler = {
        let handled = handled.clone();
        move |record: ConsumedRecord| {
            let handled = handled.clone();
            async move {
                // Long enough for the other lane to reach the same key meanwhile.
                tokio::time::sleep(Duration::from_millis(200)).await;
                handled
                    .lock()
                    .map_err(|_| HandlerError::Fatal("lock".into()))?
                    .push(record.offset());
                Ok(())
            }
        }
    };
    let stop = {
        let handled = handled.clone();
        async move {
            while handled.lock().map_or(0, |h| h.len()) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Time for a second handling to show up.
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        }
    };
    let consumer = RawConsumer::new(client, config);
    let summary = tokio::time::timeout(Duration::from_secs(30), consumer.run(handler, stop))
        .await
        .expect("in time")
        .expect("runs");
    assert_eq!(
        handled.lock().expect("lock").len(),
        1,
        "handled once: {summary:?}"
    );
    assert_eq!((summary.processed, summary.deduplicated), (1, 1));
}
