//! The typed entry point: [`Client::connect`] once per process, then
//! [`Client::producer`] and [`Client::consumer`] per topic for any [`Message`] type.

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use herald_broker_client::{BrokerClient, ConnectError, Credentials, Router, Trust};
use herald_registry_client::RegistryClient;
use herald_wire::batch::Header;
use herald_wire::headers;
use herald_wire::lru::Lru;

use crate::codec::{self, WriterSchema};
use crate::consumer::{
    ConsumeError, ConsumedRecord, ConsumerConfig, HandlerError, RawConsumer, RunSummary,
};
use crate::message::Message;
use crate::producer::{Connector, DeliveryFuture, ProduceError, ProducerConfig, RawProducer};
use crate::schemas::{Registration, SchemaError, Schemas, SubjectStrategy, SCHEMA_CACHE_MAX};

/// Where the broker and registry are, and how typed producers pick their schema.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The broker, or a bootstrap list of brokers of one cluster: all are tried at once, at
    /// connection and at every reconnection, and the first that answers is used. Brokers that
    /// do not share their logs (separate single brokers) do not belong in one list: a
    /// reconnection may land on any of them.
    pub brokers: Vec<SocketAddr>,
    pub trust: Trust,
    /// How the client proves who it is to the broker, at connection and at every
    /// reconnection (`Credentials::None`).
    pub credentials: Credentials,
    pub registry_url: String,
    /// Basic-auth user and password for the registry.
    pub registry_auth: Option<(String, String)>,
    /// PEM file of certificates to trust for an `https://` registry (its self-signed
    /// certificate or its CA), besides the platform's root certificates.
    pub registry_ca: Option<PathBuf>,
    /// Default registration policy of typed producers (`AutoRegister`).
    pub registration: Registration,
    /// Default subject strategy (`<topic>-value`).
    pub subject_strategy: SubjectStrategy,
}

impl ClientConfig {
    pub fn new(broker: SocketAddr, trust: Trust, registry_url: impl Into<String>) -> Self {
        Self {
            brokers: vec![broker],
            trust,
            credentials: Credentials::None,
            registry_url: registry_url.into(),
            registry_auth: None,
            registry_ca: None,
            registration: Registration::default(),
            subject_strategy: SubjectStrategy::default(),
        }
    }

    /// The same configuration, with `brokers` as its bootstrap list (see
    /// [`ClientConfig::brokers`]).
    pub fn with_bootstrap(mut self, brokers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.brokers = brokers.into_iter().collect();
        self
    }

    /// The same configuration, connecting to the broker with `credentials`.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The same configuration, trusting the certificates of the PEM file at `path` for an
    /// `https://` registry (read by [`Client::connect`]).
    pub fn with_registry_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.registry_ca = Some(path.into());
        self
    }
}

/// Why a client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("broker: {0}")]
    Broker(#[from] ConnectError),
    #[error("registry: {0}")]
    Registry(#[from] herald_registry_client::ClientError),
}

/// A connection to one broker and one registry.
#[derive(Clone)]
pub struct Client {
    config: ClientConfig,
    broker: BrokerClient,
    /// Each partition's leader for the producers, shared by all of them.
    router: Arc<Router>,
    schemas: Arc<Schemas>,
}

impl Client {
    /// Connects to the broker (QUIC, pinned certificate, authenticated with the configured
    /// credentials) and prepares the registry client.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let broker =
            BrokerClient::connect_any(&config.brokers, config.trust.clone(), &config.credentials)
                .await?;
        let mut registry = RegistryClient::new(config.registry_url.clone())?;
        if let Some(ca) = &config.registry_ca {
            registry = registry.with_ca_file(ca)?;
        }
        if let Some((user, password)) = &config.registry_auth {
            registry = registry.with_basic_auth(user.clone(), password.clone());
        }
        let router = Arc::new(Router::new(
            herald_broker_client::dialer(
                config.brokers.clone(),
                config.trust.clone(),
                config.credentials.clone(),
            ),
            Some(broker.clone()),
        ));
        Ok(Self {
            config,
            broker,
            router,
            schemas: Arc::new(Schemas::new(registry)),
        })
    }

    /// The broker connection (for admin calls and raw producers and consumers).
    pub fn broker(&self) -> &BrokerClient {
        &self.broker
    }

    /// The registry access shared by this client's producers and consumers.
    pub fn schemas(&self) -> &Arc<Schemas> {
        &self.schemas
    }

    /// Makes fresh broker connections for producers and consumers that must survive a broker
    /// restart or follow a cluster's leaders; each one authenticates again with the
    /// configured credentials.
    pub fn connector(&self) -> Connector {
        herald_broker_client::dialer(
            self.config.brokers.clone(),
            self.config.trust.clone(),
            self.config.credentials.clone(),
        )
    }

    /// A typed producer for `topic` with default settings.
    pub async fn producer<T: Message>(&self, topic: &str) -> Result<Producer<T>, ProduceError> {
        self.producer_with(topic, ProducerOptions::default()).await
    }

    /// A typed producer with explicit settings; unset policies take the client's.
    pub async fn producer_with<T: Message>(
        &self,
        topic: &str,
        options: ProducerOptions,
    ) -> Result<Producer<T>, ProduceError> {
        let writer = self
            .schemas
            .writer_for_produce(
                topic,
                &T::SCHEMA,
                options.registration.unwrap_or(self.config.registration),
                options
                    .subject_strategy
                    .unwrap_or(self.config.subject_strategy),
            )
            .await
            .map_err(|e| ProduceError::Schema(e.to_string()))?;
        let raw = RawProducer::with_router(self.router.clone(), topic, options.config).await?;
        Ok(Producer {
            raw,
            writer: Arc::new(writer),
            value_bytes_hint: AtomicUsize::new(64),
            _type: PhantomData,
        })
    }

    /// A typed consumer of `topic` in `group` with default settings.
    pub fn consumer<T: Message>(&self, topic: &str, group: &str) -> Consumer<T> {
        self.consumer_with(ConsumerConfig::new(group, topic))
    }

    /// A typed consumer with explicit settings.
    pub fn consumer_with<T: Message>(&self, config: ConsumerConfig) -> Consumer<T> {
        Consumer {
            raw: RawConsumer::with_reconnect(self.broker.clone(), self.connector(), config),
            schemas: self.schemas.clone(),
            writers: Mutex::new(Lru::new(SCHEMA_CACHE_MAX)),
            first_writer: std::sync::OnceLock::new(),
            _type: PhantomData,
        }
    }
}

/// How a typed producer batches, retries and picks its schema.
#[derive(Debug, Clone, Default)]
pub struct ProducerOptions {
    pub config: ProducerConfig,
    /// `None`: the client's registration policy.
    pub registration: Option<Registration>,
    /// `None`: the client's subject strategy.
    pub subject_strategy: Option<SubjectStrategy>,
}

/// What to set on one record besides the message.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Partition key; `None` uses the message's own ([`Message::partition_key`]).
    pub key: Option<Vec<u8>>,
    /// Idempotency key; `None` uses the message's own, else a fresh UUIDv7.
    pub idempotency_key: Option<String>,
    pub headers: Vec<Header>,
}

/// The most a typed producer preallocates for one value.
pub const VALUE_BYTES_HINT_MAX: usize = 16 * 1024;

/// Produces `T` records to one topic.
pub struct Producer<T> {
    raw: Arc<RawProducer>,
    writer: Arc<WriterSchema>,
    /// The largest value encoded so far (up to [`VALUE_BYTES_HINT_MAX`]): each value buffer
    /// starts this big, so encoding rarely grows it.
    value_bytes_hint: AtomicUsize,
    _type: PhantomData<fn(T)>,
}

impl<T: Message> Producer<T> {
    /// Queues `message`; the returned future resolves to where it landed.
    pub async fn send(&self, message: &T) -> Result<DeliveryFuture, ProduceError> {
        self.send_with(message, SendOptions::default()).await
    }

    /// Queues `message` with an explicit key, idempotency key or headers.
    pub async fn send_with(
        &self,
        message: &T,
        options: SendOptions,
    ) -> Result<DeliveryFuture, ProduceError> {
        let hint = self.value_bytes_hint.load(Ordering::Relaxed);
        let mut value = Vec::with_capacity(hint);
        self.writer.write_prefix(&mut value);
        message
            .encode_body(&self.writer, &mut value)
            .map_err(ProduceError::Encode)?;
        if value.len() > hint {
            self.value_bytes_hint
                .store(value.len().min(VALUE_BYTES_HINT_MAX), Ordering::Relaxed);
        }
        let given = options
            .idempotency_key
            .or_else(|| message.idempotency_key());
        let mut generated = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let idempotency_key: &[u8] = match &given {
            Some(key) => key.as_bytes(),
            None => uuid::Uuid::now_v7()
                .hyphenated()
                .encode_lower(&mut generated)
                .as_bytes(),
        };
        let key = options.key.or_else(|| message.partition_key());
        let only_key;
        let all;
        // The usual record carries the idempotency key alone: no header list to allocate.
        let headers: &[(&str, &[u8])] = if options.headers.is_empty() {
            only_key = [(headers::IDEMPOTENCY_KEY, idempotency_key)];
            &only_key
        } else {
            all = options
                .headers
                .iter()
                .filter(|h| h.key != headers::IDEMPOTENCY_KEY)
                .map(|h| (h.key.as_str(), h.value.as_slice()))
                .chain([(headers::IDEMPOTENCY_KEY, idempotency_key)])
                .collect::<Vec<_>>();
            &all
        };
        self.raw
            .send_parts(key.as_deref(), Some(&value), headers)
            .await
    }

    /// Sends every pending batch now.
    pub async fn flush(&self) {
        self.raw.flush().await;
    }

    /// The schema ID records are framed with.
    pub fn schema_id(&self) -> u32 {
        self.writer.id()
    }
}

/// A decoded record handed to a typed handler: the message and the record it came from.
#[derive(Debug, Clone)]
pub struct Event<T> {
    pub message: T,
    /// The registry ID of the schema the record was written with.
    pub schema_id: u32,
    pub record: ConsumedRecord,
}

impl<T> Event<T> {
    pub fn topic(&self) -> &str {
        self.record.topic()
    }

    pub fn partition(&self) -> u32 {
        self.record.partition()
    }

    pub fn offset(&self) -> i64 {
        self.record.offset()
    }

    pub fn timestamp_ms(&self) -> i64 {
        self.record.timestamp_ms()
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.record.key()
    }

    pub fn headers(&self) -> crate::consumer::RecordHeaders<'_> {
        self.record.headers()
    }

    /// The record's idempotency key, if it carries one.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.record
            .header(headers::IDEMPOTENCY_KEY)
            .and_then(|value| std::str::from_utf8(value).ok())
    }
}

/// Consumes `T` records of one topic in a group.
pub struct Consumer<T> {
    raw: RawConsumer,
    schemas: Arc<Schemas>,
    /// Writer schemas by ID, at most [`SCHEMA_CACHE_MAX`], the least recently used evicted
    /// beyond. Only records not framed with `first_writer`'s ID look here.
    writers: Mutex<Lru<u32, Arc<WriterSchema>>>,
    /// The first writer schema fetched, read without a lock: a topic's records mostly carry
    /// one schema ID, and those skip the map.
    first_writer: std::sync::OnceLock<Arc<WriterSchema>>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Message> Consumer<T> {
    /// Runs `handler` on every record until `stop` completes (see [`RawConsumer::run`]):
    /// at-least-once, retries with backoff, dead letters, breaker and inbox as configured.
    /// A record that cannot be decoded or whose schema is unknown goes straight to the
    /// dead-letter topic (kinds `deserialization`, `unknown-schema`).
    pub async fn run<H, F>(
        &self,
        handler: H,
        stop: impl Future<Output = ()>,
    ) -> Result<RunSummary, ConsumeError>
    where
        H: Fn(Event<T>) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        let handler = &handler;
        self.raw
            .run(
                |record| {
                    // Decoded here, synchronously, when the writer schema is cached (nearly
                    // always); only a schema seen for the first time awaits the registry, in a
                    // boxed future, so the per-record future stays small.
                    let decoded = self.decode_cached(record);
                    async move {
                        let event = match decoded {
                            Ok(decoded) => decoded?,
                            Err((record, id)) => Box::pin(self.decode_fetching(record, id)).await?,
                        };
                        handler(event).await
                    }
                },
                stop,
            )
            .await
    }

    /// The record decoded with a cached writer schema; the record and its schema ID back when
    /// that schema is not cached.
    #[allow(clippy::result_large_err)]
    fn decode_cached(
        &self,
        record: ConsumedRecord,
    ) -> Result<Result<Event<T>, HandlerError>, (ConsumedRecord, u32)> {
        let id = match Self::schema_id(&record) {
            Ok(id) => id,
            Err(error) => return Ok(Err(error)),
        };
        if let Some(writer) = self.first_writer.get().filter(|w| w.id() == id) {
            return Ok(Self::decode_with(record, id, writer));
        }
        let Some(writer) = self.writers_cache().get(&id).cloned() else {
            return Err((record, id));
        };
        Ok(Self::decode_with(record, id, &writer))
    }

    /// The record, framed with schema `id`, decoded after fetching that writer schema from
    /// the registry.
    async fn decode_fetching(
        &self,
        record: ConsumedRecord,
        id: u32,
    ) -> Result<Event<T>, HandlerError> {
        let writer = self.writer(id).await?;
        Self::decode_with(record, id, &writer)
    }

    /// The schema ID the record's value is framed with.
    fn schema_id(record: &ConsumedRecord) -> Result<u32, HandlerError> {
        let payload = record
            .value()
            .ok_or_else(|| HandlerError::Deserialization("record has no value".to_owned()))?;
        codec::schema_id(payload).map_err(|e| HandlerError::Deserialization(e.to_string()))
    }

    fn decode_with(
        record: ConsumedRecord,
        id: u32,
        writer: &WriterSchema,
    ) -> Result<Event<T>, HandlerError> {
        let payload = record.value().unwrap_or_default();
        let message = writer
            .body(payload)
            .and_then(|body| T::decode_body(body, writer))
            .map_err(|e| HandlerError::Deserialization(e.to_string()))?;
        Ok(Event {
            message,
            schema_id: id,
            record,
        })
    }

    async fn writer(&self, id: u32) -> Result<Arc<WriterSchema>, HandlerError> {
        if let Some(found) = self.writers_cache().get(&id) {
            return Ok(found.clone());
        }
        let writer = match self.schemas.writer_for_id(id, &T::SCHEMA).await {
            Ok(writer) => Arc::new(writer),
            Err(error @ SchemaError::UnknownId { .. }) => {
                return Err(HandlerError::UnknownSchema(error.to_string()))
            }
            Err(error) if error.retryable() => {
                return Err(HandlerError::Retryable(error.to_string()))
            }
            Err(error) => return Err(HandlerError::Deserialization(error.to_string())),
        };
        let _ = self.first_writer.set(writer.clone());
        self.writers_cache().insert(id, writer.clone());
        Ok(writer)
    }

    fn writers_cache(&self) -> std::sync::MutexGuard<'_, Lru<u32, Arc<WriterSchema>>> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }
}
