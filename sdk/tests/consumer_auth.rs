//! Dead letters are written as the consumer's own user: a consumer whose user may not write
//! (or create) the dead-letter topic stops with the broker's refusal and commits nothing past
//! the record it could not dead-letter; granted the permission, the same run dead-letters it.

mod support;

use std::time::Duration;

use herald::consumer::{ConsumedRecord, ConsumerConfig, HandlerError, RawConsumer};
use herald_auth::acl::{AclEntry, Operation, ResourceType};
use herald_auth::users::Users;
use herald_broker_client::{BrokerClient, Credentials};
use herald_wire::batch::{BatchBuilder, Record};
use herald_wire::groups::{GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::{Durability, TopicConfig};
use support::RunningBroker;

const PASSWORD: &str = "billing service password";

fn allow(resource_type: ResourceType, name: &str, operation: Operation) -> AclEntry {
    AclEntry::allow_literal("billing-svc", resource_type, name, operation).expect("entry")
}

/// Fails every record fatally: each must be dead-lettered.
async fn poison(_record: ConsumedRecord) -> Result<(), HandlerError> {
    Err(HandlerError::Fatal("poison".to_owned()))
}

async fn committed(admin: &BrokerClient) -> Option<i64> {
    match admin
        .group(GroupRequest::FetchOffsets {
            group: "billing".to_owned(),
            partitions: vec![TopicPartition::new("events", 0)],
        })
        .await
        .expect("offsets")
    {
        GroupResponse::Offsets(offsets) => offsets.first().and_then(|o| o.offset),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_written_as_the_consumers_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = RunningBroker::start(dir.path()).await;
    let admin = broker.client().await;
    admin
        .create_topic("events", TopicConfig::default())
        .await
        .expect("create");
    let mut builder = BatchBuilder::new();
    builder.push(Record {
        timestamp_ms: 1,
        key: None,
        value: Some(b"bad".to_vec()),
        headers: Vec::new(),
    });
    admin
        .produce(
            "events",
            0,
            Durability::Memory,
            builder.encode().expect("batch"),
        )
        .await
        .expect("produce");
    Users::open(dir.path())
        .expect("users")
        .add("billing-svc", PASSWORD, None)
        .expect("add");
    admin
        .create_acls(vec![
            allow(ResourceType::Topic, "events", Operation::Read),
            allow(ResourceType::Group, "billing", Operation::Read),
        ])
        .await
        .expect("grant");
    let service = || async {
        BrokerClient::connect_with(
            broker.bound.addr,
            broker.trust(),
            &Credentials::scram("billing-svc", PASSWORD),
        )
        .await
        .expect("authenticates")
    };

    // May read, may not create or write the dead-letter topic.
    let consumer = RawConsumer::new(service().await, ConsumerConfig::new("billing", "events"));
    let run = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.run(poison, tokio::time::sleep(Duration::from_secs(5))),
    )
    .await
    .expect("in time");
    let error = run.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("NotAuthorized") || error.contains("may not"),
        "the run stops with the refusal: {error:?}"
    );
    assert!(
        committed(&admin).await.unwrap_or(0) == 0,
        "nothing committed past the record that was not dead-lettered"
    );
    assert!(
        admin.describe_topic("events.dlq").await.is_err(),
        "no dead-letter topic made"
    );

    admin
        .create_acls(vec![
            allow(ResourceType::Topic, "events.dlq", Operation::Create),
            allow(ResourceType::Topic, "events.dlq", Operation::Write),
        ])
        .await
        .expect("grant");
    let consumer = RawConsumer::new(service().await, ConsumerConfig::new("billing", "events"));
    let summary = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.run(poison, tokio::time::sleep(Duration::from_secs(3))),
    )
    .await
    .expect("in time")
    .expect("runs");
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(committed(&admin).await, Some(1));
    let fetched = admin
        .fetch("events.dlq", 0, 0, 1 << 20, Duration::ZERO, 1)
        .await
        .expect("the dead-letter topic");
    assert!(!fetched.batches.is_empty());
    broker.stop().await;
}
