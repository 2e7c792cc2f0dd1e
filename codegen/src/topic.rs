//! The per-topic producer and consumer of the generated file.

use std::collections::BTreeMap;

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use quote::quote;

use crate::tree::{ident, relative_path};
use crate::{GenerateError, MessageInfo, SchemaKind, Topic};

fn known_messages(messages: &BTreeMap<String, MessageInfo>) -> String {
    let names: Vec<&str> = messages
        .iter()
        .filter(|(_, m)| m.kind != SchemaKind::AvroNested)
        .map(|(n, _)| n.as_str())
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

pub(crate) fn topic_items(
    topic: &Topic,
    messages: &BTreeMap<String, MessageInfo>,
    pinned_ids: &BTreeMap<String, u32>,
) -> Result<TokenStream, GenerateError> {
    let info = messages
        .get(&topic.message)
        .filter(|m| m.kind != SchemaKind::AvroNested)
        .ok_or_else(|| GenerateError::UnknownMessage {
            topic: topic.name.clone(),
            message: topic.message.clone(),
            known: known_messages(messages),
        })?;
    let field = |name: &str| {
        info.fields
            .get(name)
            .map(|rust| ident(rust))
            .ok_or_else(|| GenerateError::UnknownField {
                topic: topic.name.clone(),
                message: topic.message.clone(),
                field: name.to_owned(),
                known: info.fields.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    };
    let message_type = relative_path(&[], &info.module, &info.rust_type);
    let base = topic.name.to_upper_camel_case();
    let producer = ident(&format!("{base}Producer"));
    let consumer = ident(&format!("{base}Consumer"));
    let name = &topic.name;
    let strategy = ident(&format!("{:?}", topic.subject_strategy.wire()));
    let (registration, registration_doc) = match pinned_ids.get(&topic.subject()) {
        Some(id) => (
            quote! { options.registration.get_or_insert(::herald::Registration::Pinned(#id)); },
            format!(" A producer with default settings (writes with the pinned schema ID {id})."),
        ),
        None => (
            quote! {},
            " A producer with default settings (registers the schema if needed).".to_owned(),
        ),
    };
    let key = match &topic.key {
        Some(key) => {
            let key = field(key)?;
            quote! { ::core::option::Option::Some(::herald::codegen::KeyPart::key_part(&message.#key).into_bytes()) }
        }
        None => quote! { ::core::option::Option::None },
    };
    let idempotency_key = if topic.idempotency_key.is_empty() {
        quote! { ::core::option::Option::None }
    } else {
        let parts = topic
            .idempotency_key
            .iter()
            .map(|f| field(f))
            .collect::<Result<Vec<_>, _>>()?;
        quote! {
            ::core::option::Option::Some(::herald::codegen::idempotency_key(&[
                #(&message.#parts as &dyn ::herald::codegen::KeyPart),*
            ]))
        }
    };
    let producer_doc = format!(
        " Produces `{}` records to topic `{}`.",
        topic.message, topic.name
    );
    let consumer_doc = format!(
        " Consumes `{}` records of topic `{}` in a consumer group.",
        topic.message, topic.name
    );
    let key_doc = match &topic.key {
        Some(key) => format!(" Partitioned by `{key}`."),
        None => " Spread over partitions (no key field).".to_owned(),
    };
    Ok(quote! {
        #[doc = #producer_doc]
        #[doc = #key_doc]
        pub struct #producer {
            inner: ::herald::Producer<#message_type>,
        }

        impl #producer {
            pub const TOPIC: &'static str = #name;

            #[doc = #registration_doc]
            pub async fn new(client: &::herald::Client) -> ::core::result::Result<Self, ::herald::producer::ProduceError> {
                Self::with_options(client, ::herald::ProducerOptions::default()).await
            }

            /// A producer with explicit batching, retry, breaker and registration settings.
            pub async fn with_options(
                client: &::herald::Client,
                mut options: ::herald::ProducerOptions,
            ) -> ::core::result::Result<Self, ::herald::producer::ProduceError> {
                options.subject_strategy.get_or_insert(::herald::SubjectStrategy::#strategy);
                #registration
                ::core::result::Result::Ok(Self {
                    inner: client.producer_with(Self::TOPIC, options).await?,
                })
            }

            /// Queues `message` (partition key and idempotency key from its fields as the
            /// manifest declares); the returned future resolves to where it landed.
            pub async fn send(
                &self,
                message: &#message_type,
            ) -> ::core::result::Result<::herald::producer::DeliveryFuture, ::herald::producer::ProduceError> {
                let options = ::herald::SendOptions {
                    key: #key,
                    idempotency_key: #idempotency_key,
                    headers: ::std::vec::Vec::new(),
                };
                self.inner.send_with(message, options).await
            }

            /// Sends every pending batch now.
            pub async fn flush(&self) {
                self.inner.flush().await;
            }

            /// The underlying typed producer.
            pub fn inner(&self) -> &::herald::Producer<#message_type> {
                &self.inner
            }
        }

        #[doc = #consumer_doc]
        pub struct #consumer {
            inner: ::herald::Consumer<#message_type>,
        }

        impl #consumer {
            pub const TOPIC: &'static str = #name;

            /// A consumer in `group` with default settings: retries with backoff, the
            /// dead-letter topic `<topic>.dlq`, a circuit breaker.
            pub fn new(client: &::herald::Client, group: &str) -> Self {
                Self::with_config(client, ::herald::consumer::ConsumerConfig::new(group, Self::TOPIC))
            }

            /// A consumer with explicit settings (its topic is always this one).
            pub fn with_config(client: &::herald::Client, mut config: ::herald::consumer::ConsumerConfig) -> Self {
                config.topic = ::std::string::String::from(Self::TOPIC);
                Self { inner: client.consumer_with(config) }
            }

            /// Runs `handler` on every record until `stop` completes.
            pub async fn run<H, F>(
                &self,
                handler: H,
                stop: impl ::core::future::Future<Output = ()>,
            ) -> ::core::result::Result<::herald::consumer::RunSummary, ::herald::consumer::ConsumeError>
            where
                H: Fn(::herald::Event<#message_type>) -> F,
                F: ::core::future::Future<Output = ::core::result::Result<(), ::herald::HandlerError>>,
            {
                self.inner.run(handler, stop).await
            }
        }
    })
}
