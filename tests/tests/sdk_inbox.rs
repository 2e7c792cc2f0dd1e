//! The consumer inbox against real registry and broker processes: a record redelivered after
//! a consumer stopped without committing (and a repeat the producer sent under the same
//! idempotency key) is processed once, across the consumer's restart. The run's metrics,
//! read through a recorder installed for this test binary, tell the same story.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::consumer::{ConsumerConfig, HandlerError, RunSummary};
use herald::inbox::{Inbox, INBOX_KEYS_MAX_DEFAULT, INBOX_WINDOW_MS_DEFAULT};
use herald::{Event, SendOptions};
use herald_tests::servers;
use herald_wire::messages::TopicConfig;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use serde::{Deserialize, Serialize};

const PAYMENT: &str = r#"{"type":"record","name":"Payment","namespace":"shop","fields":[
  {"name":"id","type":"string"},
  {"name":"amount_cents","type":"long"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payment {
    id: String,
    amount_cents: i64,
}
herald::avro_message!(Payment, "shop.Payment", PAYMENT);

/// Counters and gauges by `name{label=value,...}`, as a Prometheus exporter would key them.
#[derive(Default, Clone)]
struct Recording(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

impl Recording {
    fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0
            .lock()
            .map(|mut cells| cells.entry(name).or_default().clone())
            .unwrap_or_default()
    }

    fn counter(&self, name: &str) -> u64 {
        self.0
            .lock()
            .ok()
            .and_then(|cells| cells.get(name).map(|c| c.load(Ordering::SeqCst)))
            .unwrap_or(0)
    }

    fn gauge(&self, name: &str) -> Option<f64> {
        let cells = self.0.lock().ok()?;
        cells
            .get(name)
            .map(|g| f64::from_bits(g.load(Ordering::SeqCst)))
    }
}

impl metrics::Recorder for Recording {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// One consumer run with the inbox at `inbox`: hands every event's id to `handled` and
/// stops once `stop_after` events were handled in this run (the next one is never handled)
/// or after a quiet spell. With `crash`, the run is dropped there, as a killed process stops:
/// nothing committed, the group not left (a static instance id lets the next run take the
/// member's place at once); without it, the run stops cleanly. `None` for a crashed run.
async fn consume_once(
    client: &herald::Client,
    inbox: &std::path::Path,
    handled: &Arc<Mutex<Vec<String>>>,
    stop_after: usize,
    crash: bool,
) -> anyhow::Result<Option<RunSummary>> {
    let inbox = Arc::new(Inbox::open(
        inbox,
        INBOX_WINDOW_MS_DEFAULT,
        INBOX_KEYS_MAX_DEFAULT,
    )?);
    let config = ConsumerConfig {
        inbox: Some(inbox),
        instance_id: Some("settlement-1".to_owned()),
        ..ConsumerConfig::new("settlement", "payments")
    };
    let consumer = client.consumer_with::<Payment>(config);
    let this_run = Arc::new(AtomicUsize::new(0));
    let stop = {
        let (this_run, handled) = (this_run.clone(), handled.clone());
        async move {
            let mut last = 0;
            let mut quiet = 0;
            while this_run.load(Ordering::SeqCst) < stop_after && quiet < 40 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = handled.lock().map_or(0, |h| h.len());
                quiet = if now == last { quiet + 1 } else { 0 };
                last = now;
            }
            // Let the handler reach the record it will never finish.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let handler = {
        let handled = handled.clone();
        move |event: Event<Payment>| {
            let (handled, this_run) = (handled.clone(), this_run.clone());
            async move {
                if this_run.load(Ordering::SeqCst) >= stop_after {
                    // "Crash" here: never handled, never committed.
                    std::future::pending::<()>().await;
                }
                handled
                    .lock()
                    .map_err(|_| HandlerError::Fatal("lock".into()))?
                    .push(event.message.id.clone());
                this_run.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    };
    if crash {
        tokio::select! {
            summary = consumer.run(handler, std::future::pending()) => Ok(Some(summary?)),
            () = stop => Ok(None),
        }
    } else {
        Ok(Some(consumer.run(handler, stop).await?))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_records_are_processed_once_across_a_consumer_restart() -> anyhow::Result<()> {
    let recording = Recording::default();
    metrics::set_global_recorder(recording.clone())?;
    let dir = tempfile::tempdir()?;
    let servers = servers(dir.path(), &[]).await?;
    let client = &servers.client;
    client
        .broker()
        .create_topic("payments", TopicConfig::default())
        .await?;
    // Twenty payments, then ten of them again under the same idempotency keys (a producer
    // that resent after losing its acknowledgements).
    let producer = client.producer::<Payment>("payments").await?;
    let mut deliveries = Vec::new();
    for n in (0..20).chain(0..10) {
        let payment = Payment {
            id: format!("pay-{n}"),
            amount_cents: 100 + n,
        };
        let options = SendOptions {
            idempotency_key: Some(payment.id.clone()),
            ..SendOptions::default()
        };
        deliveries.push(producer.send_with(&payment, options).await?);
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }

    let inbox = dir.path().join("inbox");
    let handled = Arc::new(Mutex::new(Vec::new()));
    let first = consume_once(client, &inbox, &handled, 12, true).await?;
    assert!(first.is_none(), "the first run crashed");
    assert_eq!(handled.lock().map_or(0, |h| h.len()), 12);
    // Same group, nothing committed: everything is delivered again; the inbox lets only the
    // eight payments never handled through.
    let second = consume_once(client, &inbox, &handled, usize::MAX, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the second run ends cleanly"))?;
    assert_eq!(
        (second.processed, second.deduplicated),
        (8, 22),
        "{second:?}"
    );
    let handled = handled.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let expected: Vec<String> = (0..20).map(|n| format!("pay-{n}")).collect();
    assert_eq!(handled, expected, "each payment handled once, in order");

    let topic = "topic=payments";
    let consumer = "group=settlement,topic=payments";
    assert_eq!(
        recording.counter(&format!("herald_producer_sent_total{{{topic}}}")),
        30
    );
    assert_eq!(
        recording.counter(&format!("herald_producer_acked_total{{{topic}}}")),
        30
    );
    assert_eq!(
        recording.counter(&format!("herald_consumer_processed_total{{{consumer}}}")),
        20
    );
    assert_eq!(
        recording.counter(&format!("herald_consumer_deduplicated_total{{{consumer}}}")),
        22
    );
    assert_eq!(
        recording.gauge(&format!("herald_consumer_breaker_state{{{consumer}}}")),
        Some(0.0),
        "closed"
    );
    assert_eq!(
        recording.gauge("herald_consumer_lag_records{group=settlement,partition=0,topic=payments}"),
        Some(0.0),
        "caught up"
    );
    Ok(())
}
