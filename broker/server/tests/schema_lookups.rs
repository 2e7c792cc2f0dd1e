//! Registry lookups of the produce path's schema-ID checks are bounded, coalesced and cached
//! by LRU (issue 14): against a fake registry on 127.0.0.1:0 that counts the calls it gets.
//!
//! The fake answers `GET /schemas/ids/{id}/versions` (the one call TopicNameStrategy needs):
//! registered IDs are used by `orders-value`, IDs from `FAILING_FROM` on fail with HTTP 500,
//! other IDs are unknown (404, error code 40403). It also answers `GET /schemas/ids/{id}`
//! (the first call of the record-name strategies): a registered ID is the Avro record
//! `shop.Order`. Any other call is counted and answered 500.
//!
//! Concurrent lookups are made deterministic without sleeps: each future is polled exactly
//! once (`poll_once`) so that it is registered as the lookup's lead or as a waiter before
//! any lookup can end.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path as FsPath;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use axum::{Json, Router};
use herald_broker::broker::Broker;
use herald_broker::schema_cache::SchemaCache;
use herald_broker_core::validation::{Part, Verdict, SCHEMA_IDS_PER_BATCH_MAX};
use herald_metrics::Metrics;
use herald_registry_client::RegistryClient;
use herald_wire::batch::{BatchBuilder, Record};
use herald_wire::messages::{Durability, SchemaValidation, SubjectStrategy, TopicConfig};
use herald_wire::schema_id::write_schema_id;
use herald_wire::{ErrorCode, Request, Response};

const TOPIC: &str = "orders";
const SUBJECT: &str = "orders-value";
/// IDs from here on make the fake registry fail (HTTP 500).
const FAILING_FROM: u32 = 1_000_000;

#[derive(Clone)]
struct Fake {
    requests: Arc<AtomicUsize>,
    delay: Duration,
    registered: Arc<BTreeSet<u32>>,
}

async fn versions_for_id(State(fake): State<Fake>, Path(id): Path<u32>) -> HttpResponse {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(fake.delay).await;
    if fake.registered.contains(&id) {
        Json(serde_json::json!([{ "subject": SUBJECT, "version": 1 }])).into_response()
    } else if id >= FAILING_FROM {
        let body = serde_json::json!({ "error_code": 50001, "message": "store unavailable" });
        (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
    } else {
        let body =
            serde_json::json!({ "error_code": 40403, "message": format!("Schema {id} not found") });
        (StatusCode::NOT_FOUND, Json(body)).into_response()
    }
}

/// An Avro record whose full name, `shop.Order`, is the subject RecordNameStrategy demands.
const ORDER_SCHEMA: &str =
    r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"}]}"#;

async fn schema_by_id(State(fake): State<Fake>, Path(id): Path<u32>) -> HttpResponse {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(fake.delay).await;
    if fake.registered.contains(&id) {
        Json(serde_json::json!({ "schema": ORDER_SCHEMA })).into_response()
    } else {
        let body =
            serde_json::json!({ "error_code": 40403, "message": format!("Schema {id} not found") });
        (StatusCode::NOT_FOUND, Json(body)).into_response()
    }
}

async fn unexpected(State(fake): State<Fake>) -> HttpResponse {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    (StatusCode::INTERNAL_SERVER_ERROR, "unexpected call").into_response()
}

struct FakeRegistry {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl FakeRegistry {
    /// A fake registry whose answers take `delay`, where `registered` are the IDs used by
    /// `orders-value`.
    async fn start(delay: Duration, registered: impl IntoIterator<Item = u32>) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let fake = Fake {
            requests: requests.clone(),
            delay,
            registered: Arc::new(registered.into_iter().collect()),
        };
        let app = Router::new()
            .route("/schemas/ids/{id}/versions", get(versions_for_id))
            .route("/schemas/ids/{id}", get(schema_by_id))
            .fallback(unexpected)
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            requests,
        }
    }

    /// Calls received so far.
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn client(&self) -> RegistryClient {
        RegistryClient::new(&self.url).expect("registry client")
    }
}

fn framed(id: u32) -> Vec<u8> {
    let mut value = Vec::new();
    write_schema_id(&mut value, id);
    value.extend_from_slice(b"payload");
    value
}

/// A batch with one record per ID, in order, each value framed with its ID.
fn batch(ids: impl IntoIterator<Item = u32>) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for id in ids {
        builder.push(Record {
            timestamp_ms: 1,
            key: None,
            value: Some(framed(id)),
            headers: Vec::new(),
        });
    }
    builder.encode().expect("batch")
}

/// A broker using `registry`, with the topic `orders` validating values by TopicName.
async fn broker_with(registry: &FakeRegistry, dir: &FsPath) -> Broker {
    let broker = Broker::open(
        dir,
        SchemaCache::new(Some(registry.client())),
        Metrics::new(),
        Default::default(),
        1_000_000,
    )
    .expect("open");
    let created = broker
        .handle(Request::CreateTopic {
            name: TOPIC.into(),
            config: TopicConfig {
                validation: SchemaValidation {
                    key: false,
                    value: true,
                    strategy: SubjectStrategy::TopicName,
                },
                ..TopicConfig::default()
            },
        })
        .await;
    assert!(matches!(created, Response::TopicCreated), "{created:?}");
    broker
}

async fn produce(broker: &Broker, batch: Vec<u8>) -> Response {
    broker
        .handle(Request::Produce {
            topic: TOPIC.into(),
            partition: 0,
            durability: Durability::Memory,
            batch: batch.into(),
        })
        .await
}

/// The message of a refusal with `code`.
fn refusal(answer: &Response, code: ErrorCode) -> &str {
    match answer {
        Response::Error(body) => {
            assert_eq!(body.code, code, "{}", body.message);
            &body.message
        }
        other => panic!("a refusal expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_of_1000_distinct_unknown_ids_costs_one_lookup_and_names_the_first() {
    let registry = FakeRegistry::start(Duration::ZERO, [7]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker_with(&registry, dir.path()).await;
    let unknown = || (0..1000).map(|n| 5000 + n);
    let answer = produce(&broker, batch(unknown())).await;
    let message = refusal(&answer, ErrorCode::SchemaValidationFailed);
    assert!(
        message.contains("record 0 value")
            && message.contains("schema ID 5000 is not registered")
            && message.contains(SUBJECT),
        "{message}"
    );
    assert_eq!(registry.requests(), 1, "one lookup: the first unknown ID");
    // The same batch again: the negative entry answers, the registry is not asked.
    let answer = produce(&broker, batch(unknown())).await;
    refusal(&answer, ErrorCode::SchemaValidationFailed);
    assert_eq!(registry.requests(), 1);
    // A registered ID first, then 1,000 fresh unknown ones: two lookups, refused at record 1.
    let answer = produce(
        &broker,
        batch([7].into_iter().chain((0..1000).map(|n| 9000 + n))),
    )
    .await;
    let message = refusal(&answer, ErrorCode::SchemaValidationFailed);
    assert!(
        message.contains("record 1 value") && message.contains("schema ID 9000 is not registered"),
        "{message}"
    );
    assert_eq!(registry.requests(), 3);
    // The registry failing is not a refusal of the batch.
    let answer = produce(&broker, batch([7, FAILING_FROM])).await;
    refusal(&answer, ErrorCode::RegistryUnavailable);
    assert_eq!(registry.requests(), 4);
}

#[tokio::test]
async fn many_valid_uncached_ids_are_learned_and_more_than_the_bound_are_refused() {
    let bound = SCHEMA_IDS_PER_BATCH_MAX as u32;
    let registry = FakeRegistry::start(Duration::ZERO, 1..=bound + 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker_with(&registry, dir.path()).await;
    // The bound of distinct valid IDs, each in two records: learned over a few rounds, one
    // lookup each.
    let answer = produce(&broker, batch((0..2 * bound).map(|n| 1 + n % bound))).await;
    assert!(matches!(answer, Response::Produced { .. }), "{answer:?}");
    assert_eq!(registry.requests(), bound as usize);
    // Cached now.
    let answer = produce(&broker, batch(1..=bound)).await;
    assert!(matches!(answer, Response::Produced { .. }), "{answer:?}");
    assert_eq!(registry.requests(), bound as usize);
    // One distinct ID more than the bound: refused where it appears, without a lookup.
    let answer = produce(&broker, batch(1..=bound + 1)).await;
    let message = refusal(&answer, ErrorCode::SchemaValidationFailed);
    assert!(
        message.contains(&format!("record {bound} value"))
            && message.contains("distinct schema IDs"),
        "{message}"
    );
    assert_eq!(registry.requests(), bound as usize);
}

/// Polls `future` exactly once (as `futures::poll!`, which this crate does not depend on);
/// its output if that poll finished it.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

/// `count` concurrent `learn`s of `id` under TopicNameStrategy; their outcomes.
///
/// Each is polled once, in order, before any is awaited: the first becomes the lookup's lead
/// (its registry call under way, its in-flight entry made) and every other one finds that
/// entry and waits for it. None can find the lookup already over and lead another (a failed
/// lookup is not cached), however late a loaded runner would have started it in a task of
/// its own.
async fn learn_concurrently(
    cache: &SchemaCache,
    id: u32,
    count: usize,
) -> Vec<Result<Verdict, String>> {
    let mut learners: Vec<_> = (0..count)
        .map(|_| Box::pin(cache.learn(TOPIC, SubjectStrategy::TopicName, Part::Value, id)))
        .collect();
    let mut first_polls = Vec::new();
    for learner in &mut learners {
        first_polls.push(poll_once(learner).await);
    }
    assert_eq!(
        cache.lookups_in_flight(),
        1,
        "one lead, every other learner waiting for it"
    );
    let mut outcomes = Vec::new();
    for (learner, first_poll) in learners.iter_mut().zip(first_polls) {
        let outcome = match first_poll {
            Some(outcome) => outcome,
            None => learner.await,
        };
        outcomes.push(outcome.map_err(|error| error.to_string()));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_lookups_of_one_id_make_one_registry_call() {
    let registry = FakeRegistry::start(Duration::from_millis(200), [7]).await;
    let cache = SchemaCache::new(Some(registry.client()));
    let outcomes = learn_concurrently(&cache, 7, 20).await;
    assert_eq!(registry.requests(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|outcome| *outcome == Ok(Verdict::Allowed)),
        "{outcomes:?}"
    );
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::TopicName, Part::Value, 7),
        Verdict::Allowed
    );
    assert_eq!(cache.lookups_in_flight(), 0);
    // An unknown ID: one call, every learner gets the refusal.
    let outcomes = learn_concurrently(&cache, 8, 20).await;
    assert_eq!(registry.requests(), 2, "{outcomes:?}");
    let refused = Ok(Verdict::Refused {
        subject: SUBJECT.to_owned(),
    });
    assert!(
        outcomes.iter().all(|outcome| *outcome == refused),
        "{outcomes:?}"
    );
    // A failing registry: one call, every learner gets the failure (and it is not cached).
    let outcomes = learn_concurrently(&cache, FAILING_FROM, 20).await;
    assert_eq!(registry.requests(), 3, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, Err(error) if error.contains("store unavailable"))),
        "{outcomes:?}"
    );
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::TopicName, Part::Value, FAILING_FROM),
        Verdict::Unknown
    );
    assert_eq!(cache.lookups_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_lookup_leaves_nothing_that_blocks_the_next() {
    let registry = FakeRegistry::start(Duration::from_millis(300), [7]).await;
    let cache = SchemaCache::new(Some(registry.client()));
    // The first lookup leads (its call is under way) ...
    let mut first = Box::pin(cache.learn(TOPIC, SubjectStrategy::TopicName, Part::Value, 7));
    assert!(
        poll_once(&mut first).await.is_none(),
        "the registry answers after 300 ms"
    );
    assert_eq!(cache.lookups_in_flight(), 1);
    // ... a second waits for it (its first poll found the lookup in flight), then the first
    // is dropped (its produce cancelled), which takes its entry away.
    let mut second = Box::pin(cache.learn(TOPIC, SubjectStrategy::TopicName, Part::Value, 7));
    assert!(
        poll_once(&mut second).await.is_none(),
        "waits for the first"
    );
    assert_eq!(cache.lookups_in_flight(), 1);
    drop(first);
    assert_eq!(cache.lookups_in_flight(), 0);
    let verdict = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("not blocked by the dropped lookup")
        .expect("learns");
    assert_eq!(verdict, Verdict::Allowed);
    assert_eq!(cache.lookups_in_flight(), 0);
    // A lookup dropped with nobody waiting leaves no entry either.
    let mut third = Box::pin(cache.learn(TOPIC, SubjectStrategy::TopicName, Part::Value, 8));
    assert!(poll_once(&mut third).await.is_none());
    assert_eq!(cache.lookups_in_flight(), 1);
    drop(third);
    assert_eq!(cache.lookups_in_flight(), 0);
}

#[tokio::test]
async fn verdicts_and_lookups_are_kept_apart_per_subject_strategy() {
    // A topic deleted and created again with another strategy must not be served the
    // verdicts made under the old one: ID 7 is used by `orders-value` (TopicName allows it)
    // but is the record `shop.Order`, not registered under `shop.Order` (RecordName
    // refuses it).
    let registry = FakeRegistry::start(Duration::ZERO, [7]).await;
    let cache = SchemaCache::new(Some(registry.client()));
    let verdict = cache
        .learn(TOPIC, SubjectStrategy::TopicName, Part::Value, 7)
        .await
        .expect("learns");
    assert_eq!(verdict, Verdict::Allowed);
    assert_eq!(registry.requests(), 1);
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::RecordName, Part::Value, 7),
        Verdict::Unknown
    );
    let verdict = cache
        .learn(TOPIC, SubjectStrategy::RecordName, Part::Value, 7)
        .await
        .expect("learns");
    let refused = Verdict::Refused {
        subject: "shop.Order".to_owned(),
    };
    assert_eq!(verdict, refused);
    assert_eq!(registry.requests(), 3, "the schema, then its subjects");
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::TopicName, Part::Value, 7),
        Verdict::Allowed
    );
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::RecordName, Part::Value, 7),
        refused
    );
    // Lookups of one ID under two strategies at once are not coalesced: each asks its own
    // question (8 is unknown: refused under both, for different subjects).
    let mut by_topic = Box::pin(cache.learn(TOPIC, SubjectStrategy::TopicName, Part::Value, 8));
    let mut by_record =
        Box::pin(cache.learn(TOPIC, SubjectStrategy::TopicRecordName, Part::Value, 8));
    assert!(poll_once(&mut by_topic).await.is_none());
    assert!(poll_once(&mut by_record).await.is_none());
    assert_eq!(cache.lookups_in_flight(), 2);
    let by_topic = by_topic.await.expect("learns");
    let by_record = by_record.await.expect("learns");
    assert_eq!(
        by_topic,
        Verdict::Refused {
            subject: SUBJECT.to_owned()
        }
    );
    assert_ne!(by_record, by_topic);
    assert!(
        matches!(by_record, Verdict::Refused { .. }),
        "{by_record:?}"
    );
    assert_eq!(registry.requests(), 5);
    assert_eq!(cache.lookups_in_flight(), 0);
}

#[tokio::test]
async fn a_full_cache_evicts_the_least_recently_used_entry() {
    let registry = FakeRegistry::start(Duration::ZERO, 1..=4).await;
    let cache = SchemaCache::with_capacity(Some(registry.client()), 3);
    for id in 1..=3 {
        cache
            .learn(TOPIC, SubjectStrategy::TopicName, Part::Value, id)
            .await
            .expect("learns");
    }
    // Touch the oldest entry: 2 becomes the least recently used.
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::TopicName, Part::Value, 1),
        Verdict::Allowed
    );
    cache
        .learn(TOPIC, SubjectStrategy::TopicName, Part::Value, 4)
        .await
        .expect("learns");
    assert_eq!(cache.cached_entries(), 3);
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::TopicName, Part::Value, 1),
        Verdict::Allowed
    );
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::TopicName, Part::Value, 2),
        Verdict::Unknown
    );
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::TopicName, Part::Value, 3),
        Verdict::Allowed
    );
    assert_eq!(
        cache.cached(TOPIC, SubjectStrategy::TopicName, Part::Value, 4),
        Verdict::Allowed
    );
    assert_eq!(registry.requests(), 4);
    // Learning a cached ID answers from the cache.
    cache
        .learn(TOPIC, SubjectStrategy::TopicName, Part::Value, 1)
        .await
        .expect("learns");
    assert_eq!(registry.requests(), 4);
}
