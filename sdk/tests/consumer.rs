//! RawConsumer against a real in-process broker: at-least-once processing with commits,
//! in-handler retries, dead-lettering with failure headers, resuming from commits.

mod support;

use support::{broker, produce_numbers};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::consumer::{ConsumedRecord, ConsumerConfig, HandlerError, RawConsumer};
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::messages::{Durability, TopicConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_retries_dead_letters_and_resumes_from_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _stop) = broker(dir.path()).await;
    client
        .create_topic(
            "events",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .await
        .expect("create");
    for partition in 0..2u32 {
        let mut builder = BatchBuilder::new();
        for n in (0..100u32).filter(|n| n % 2 == partition) {
            builder.push(Record {
                timestamp_ms: 1,
                key: Some(n.to_string().into_bytes()),
                value: Some(n.to_string().into_bytes()),
                headers: Vec::new(),
            });
        }
        client
            .produce(
                "events",
                partition,
                Durability::Memory,
                builder.encode().expect("batch"),
            )
            .await
            .expect("produce");
    }
    let processed: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let attempts: Arc<Mutex<BTreeMap<u32, u32>>> = Arc::default();
    let handler = {
        let processed = processed.clone();
        let attempts = attempts.clone();
        move |record: ConsumedRecord| {
            let processed = processed.clone();
            let attempts = attempts.clone();
            async move {
                let n: u32 = String::from_utf8_lossy(record.value().unwrap_or_default())
                    .parse()
                    .map_err(|_| HandlerError::Fatal("not a number".into()))?;
                let attempt = {
                    let mut attempts = attempts.lock().expect("lock");
                    let entry = attempts.entry(n).or_default();
                    *entry += 1;
                    *entry
                };
                if n.is_multiple_of(10) {
                    return Err(HandlerError::Fatal(format!("record {n} is poison")));
                }
                if n.is_multiple_of(7) && attempt == 1 {
                    return Err(HandlerError::Retryable(format!("downstream hiccup on {n}")));
                }
                processed.lock().expect("lock").insert(n);
                Ok(())
            }
        }
    };
    let consumer = RawConsumer::new(client.clone(), ConsumerConfig::new("billing", "events"));
    let done = {
        let attempts = attempts.clone();
        async move {
            while attempts.lock().expect("lock").len() < 100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let summary =
        tokio::time::timeout(Duration::from_secs(60), consumer.run(handler.clone(), done))
            .await
            .expect("in time")
            .expect("runs");
    assert_eq!(summary.dead_lettered, 10);
    assert_eq!(summary.processed, 90);
    let expected_retries = (0..100u32)
        .filter(|n| n.is_multiple_of(7) && !n.is_multiple_of(10))
        .count() as u64;
    assert_eq!(summary.retried, expected_retries);
    assert_eq!(processed.lock().expect("lock").len(), 90);

    let fetched = client
        .fetch("events.dlq", 0, 0, 1024 * 1024, Duration::ZERO, 1)
        .await
        .expect("dlq created on demand");
    let mut dead = Vec::new();
    for view in batches(&fetched.batches) {
        for record in view.expect("valid").records() {
            let record = record.expect("record");
            assert_eq!(record.header("herald.dlq.error-kind"), Some(&b"fatal"[..]));
            assert_eq!(record.header("herald.dlq.group"), Some(&b"billing"[..]));
            assert_eq!(record.header("herald.dlq.topic"), Some(&b"events"[..]));
            assert!(
                record.header("herald.dlq.offset").is_some()
                    && record.header("herald.dlq.attempts") == Some(&b"1"[..])
            );
            assert!(String::from_utf8_lossy(
                record
                    .header("herald.dlq.error-message")
                    .unwrap_or_default()
            )
            .contains("poison"));
            dead.push(String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned());
        }
    }
    dead.sort();
    assert_eq!(dead.len(), 10);

    // A new member of the same group resumes from the commits: one record produced after the
    // first run is processed (evidence that the member ran), and nothing before it again.
    let handled_before = attempts.lock().expect("lock").clone();
    let mut builder = BatchBuilder::new();
    builder.push(Record {
        timestamp_ms: 1,
        key: Some(b"101".to_vec()),
        value: Some(b"101".to_vec()),
        headers: Vec::new(),
    });
    client
        .produce(
            "events",
            1,
            Durability::Memory,
            builder.encode().expect("batch"),
        )
        .await
        .expect("produce");
    let again = RawConsumer::new(client, ConsumerConfig::new("billing", "events"));
    let new_record_seen = {
        let processed = processed.clone();
        async move {
            while !processed.lock().expect("lock").contains(&101) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Time for anything wrongly redelivered to show up too.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let summary =
        tokio::time::timeout(Duration::from_secs(30), again.run(handler, new_record_seen))
            .await
            .expect("the new record is processed in time")
            .expect("runs");
    assert_eq!(
        (summary.processed, summary.dead_lettered),
        (1, 0),
        "resumed from committed offsets: only the new record"
    );
    let mut handled_after = attempts.lock().expect("lock").clone();
    assert_eq!(handled_after.remove(&101), Some(1));
    assert_eq!(
        handled_after, handled_before,
        "no earlier record handled again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lanes_keep_per_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _stop) = broker(dir.path()).await;
    client
        .create_topic("keyed", TopicConfig::default())
        .await
        .expect("create");
    let mut builder = BatchBuilder::new();
    for n in 0..200u32 {
        builder.push(Record {
            timestamp_ms: 1,
            key: Some(format!("key-{}", n % 8).into_bytes()),
            value: Some(n.to_string().into_bytes()),
            headers: Vec::new(),
        });
    }
    client
        .produce(
            "keyed",
            0,
            Durability::Memory,
            builder.encode().expect("batch"),
        )
        .await
        .expect("produce");
    let order: Arc<Mutex<BTreeMap<Vec<u8>, Vec<i64>>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = {
        let (order, running, peak) = (order.clone(), running.clone(), peak.clone());
        move |record: ConsumedRecord| {
            let (order, running, peak) = (order.clone(), running.clone(), peak.clone());
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = running.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(u64::from(record.offset() as u8 % 3)))
                    .await;
                order
                    .lock()
                    .expect("lock")
                    .entry(record.key().unwrap_or_default().to_vec())
                    .or_default()
                    .push(record.offset());
                running.fetch_sub(1, SeqCst);
                Ok(())
            }
        }
    };
    let mut config = ConsumerConfig::new("lanes", "keyed");
    config.concurrency = 4;
    let consumer = RawConsumer::new(client.clone(), config);
    let done = {
        let order = order.clone();
        async move {
            while order
                .lock()
                .expect("lock")
                .values()
                .map(Vec::len)
                .sum::<usize>()
                < 200
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let summary = tokio::time::timeout(Duration::from_secs(30), consumer.run(handler, done))
        .await
        .expect("in time")
        .expect("run");
    assert_eq!(summary.processed, 200);
    let order = order.lock().expect("lock");
    assert_eq!(order.len(), 8);
    for offsets in order.values() {
        assert_eq!(offsets.len(), 25);
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "per-key order: {offsets:?}"
        );
    }
    assert!(
        peak.load(std::sync::atomic::Ordering::SeqCst) > 1,
        "lanes ran concurrently"
    );
}

/// Compiles only if a consumer's run future can be spawned (is `Send`): an earlier change
/// that iterated fetched records lazily broke exactly this.
#[allow(dead_code)]
fn run_futures_can_be_spawned(consumer: RawConsumer) {
    fn spawnable<T: Send>(_: T) {}
    spawnable(async move {
        consumer
            .run(
                |_record: ConsumedRecord| std::future::ready(Ok(())),
                std::future::pending(),
            )
            .await
    });
}

/// A run stopped while a fetch is being handled (as `herald consume --count` stops) commits
/// what it handled before leaving, and a commit the broker fails is the run's error, not a
/// silent success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_commits_what_it_handled_and_reports_a_failed_commit() {
    use herald_wire::groups::{GroupRequest, GroupResponse, TopicPartition};

    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _stop) = broker(dir.path()).await;
    client
        .create_topic("stops", TopicConfig::default())
        .await
        .expect("create");
    produce_numbers(&client, "stops", 0, Durability::Memory, 0..10).await;
    // Handles the first `limit` records, then waits forever (the stop ends the run).
    let run = |limit: usize| {
        let consumer =
            RawConsumer::new(client.clone(), ConsumerConfig::new("stops-group", "stops"));
        let handled = Arc::new(Mutex::new(0usize));
        let handler = {
            let handled = handled.clone();
            move |_record: ConsumedRecord| {
                let handled = handled.clone();
                async move {
                    if *handled.lock().expect("lock") >= limit {
                        std::future::pending::<()>().await;
                    }
                    *handled.lock().expect("lock") += 1;
                    Ok(())
                }
            }
        };
        let stop = async move {
            while *handled.lock().expect("lock") < limit {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        async move { consumer.run(handler, stop).await }
    };
    let committed = || async {
        match client
            .group(GroupRequest::FetchOffsets {
                group: "stops-group".into(),
                partitions: vec![TopicPartition::new("stops", 0)],
            })
            .await
            .expect("fetch offsets")
        {
            GroupResponse::Offsets(offsets) => offsets[0].offset,
            other => panic!("{other:?}"),
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run(4))
        .await
        .expect("in time")
        .expect("the run ends cleanly");
    assert_eq!(
        committed().await,
        Some(4),
        "the 4 handled records are committed"
    );

    // The broker cannot persist offsets any more (its groups directory is now a file): the
    // commit at the stop fails, and the run says so.
    let groups = dir.path().join("groups");
    std::fs::remove_dir_all(&groups).expect("remove groups dir");
    std::fs::write(&groups, b"not a directory").expect("block it");
    let outcome = tokio::time::timeout(Duration::from_secs(30), run(3))
        .await
        .expect("in time");
    assert!(
        outcome
            .as_ref()
            .is_err_and(|e| e.to_string().contains("offsets")),
        "a failed commit is the run's error: {:?}",
        outcome.map(|_| ())
    );
}

/// A committed offset past the end of the log (the topic was deleted and created again) is
/// out of range: the reset policy decides where to start, instead of the consumer fetching
/// the same out-of-range offset forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_past_the_end_applies_the_reset_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _stop) = broker(dir.path()).await;
    let drain = |count: usize| {
        let consumer = RawConsumer::new(client.clone(), ConsumerConfig::new("short", "short"));
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let handler = {
            let seen = seen.clone();
            move |record: ConsumedRecord| {
                let seen = seen.clone();
                async move {
                    seen.lock().expect("lock").push(
                        String::from_utf8_lossy(record.value().unwrap_or_default()).into_owned(),
                    );
                    Ok(())
                }
            }
        };
        let stop = {
            let seen = seen.clone();
            async move {
                while seen.lock().expect("lock").len() < count {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        async move {
            tokio::time::timeout(Duration::from_secs(20), consumer.run(handler, stop))
                .await
                .expect("the consumer handles what is there, in time")
                .expect("runs");
            let seen = seen.lock().expect("lock").clone();
            seen
        }
    };
    client
        .create_topic("short", TopicConfig::default())
        .await
        .expect("create");
    produce_numbers(&client, "short", 0, Durability::Memory, 0..6).await;
    assert_eq!(drain(6).await.len(), 6, "offset 6 committed");
    client.delete_topic("short").await.expect("delete");
    client
        .create_topic("short", TopicConfig::default())
        .await
        .expect("create again");
    produce_numbers(&client, "short", 0, Durability::Memory, 0..3).await;
    assert_eq!(
        drain(3).await,
        ["0", "1", "2"],
        "started over from the earliest"
    );
}
