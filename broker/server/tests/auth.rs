//! Authentication and authorization over real QUIC connections to a broker served in this
//! process: SCRAM-SHA-256 against the users file, failures delayed, counted and closed,
//! ACLs checked on every request (lists filtered, named producers bound to their principal,
//! a deleted topic's grants gone with it), and client certificates mapped to principals.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use herald_auth::acl::{
    AclEntry, AclFilter, Operation, PatternType, Permission, Principal, ResourceType, CLUSTER_NAME,
};
use herald_auth::users::Users;
use herald_broker_client::{BrokerClient, ConnectError, Credentials, RequestError, Trust};
use herald_wire::batch::{BatchBuilder, Record};
use herald_wire::groups::GroupRequest;
use herald_wire::messages::{Durability, OffsetSpec, TopicConfig};
use herald_wire::ErrorCode;
use support::{scrape, RunningBroker};

const ALICE_PASSWORD: &str = "alice's long password";
const BOB_PASSWORD: &str = "bob's long password";

async fn start(dir: &Path) -> RunningBroker {
    let mut config = support::config(dir);
    config.retention_check_interval = Duration::from_secs(3600);
    RunningBroker::start_with(config).await
}

/// Adds `name` to the running broker's users file (as `herald user add` does).
fn add_user(dir: &Path, name: &str, password: &str) {
    Users::open(dir)
        .expect("users")
        .add(name, password, None)
        .expect("add user");
}

async fn connect_as(broker: &RunningBroker, user: &str, password: &str) -> BrokerClient {
    BrokerClient::connect_with(
        broker.bound.addr,
        Trust::Fingerprint(broker.bound.fingerprint.clone()),
        &Credentials::scram(user, password),
    )
    .await
    .expect("authenticates")
}

async fn anonymous(broker: &RunningBroker) -> BrokerClient {
    BrokerClient::connect(
        broker.bound.addr,
        Trust::Fingerprint(broker.bound.fingerprint.clone()),
    )
    .await
    .expect("connects")
}

fn allow(user: &str, resource_type: ResourceType, name: &str, operation: Operation) -> AclEntry {
    AclEntry::allow_literal(user, resource_type, name, operation).expect("entry")
}

fn batch(producer: Option<(i64, i16, i32)>) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    if let Some((id, epoch, sequence)) = producer {
        builder = builder.idempotent(id, epoch, sequence);
    }
    builder.push(Record {
        timestamp_ms: 1,
        key: None,
        value: Some(b"v".to_vec()),
        headers: Vec::new(),
    });
    builder.encode().expect("batch")
}

/// The broker's code and message, or a panic naming what came back instead.
fn refusal<T: std::fmt::Debug>(result: Result<T, RequestError>) -> (ErrorCode, String) {
    match result {
        Err(RequestError::Broker { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_connection_may_only_authenticate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let admin = broker.client().await;
    admin
        .create_topic("orders", TopicConfig::default())
        .await
        .expect("create");

    let stranger = anonymous(&broker).await;
    let refusals = [
        refusal(stranger.list_topics().await),
        refusal(stranger.describe_topic("orders").await),
        refusal(stranger.create_topic("other", TopicConfig::default()).await),
        refusal(stranger.delete_topic("orders").await),
        refusal(
            stranger
                .produce("orders", 0, Durability::Memory, batch(None))
                .await,
        ),
        refusal(
            stranger
                .fetch("orders", 0, 0, 1024, Duration::ZERO, 0)
                .await,
        ),
        refusal(stranger.list_offsets("orders", 0, OffsetSpec::Latest).await),
        refusal(stranger.init_producer("p").await),
        refusal(stranger.group(GroupRequest::List).await),
        refusal(stranger.describe_acls(AclFilter::any()).await),
        refusal(
            stranger
                .create_acls(vec![allow(
                    "x",
                    ResourceType::Topic,
                    "orders",
                    Operation::Read,
                )])
                .await,
        ),
    ];
    for (code, message) in refusals {
        assert_eq!(code, ErrorCode::NotAuthenticated, "{message}");
        assert!(message.contains("authenticate"), "{message}");
    }
    // Nothing changed.
    let topics = admin.list_topics().await.expect("list");
    assert_eq!(topics.len(), 1);
    assert_eq!(
        admin
            .list_offsets("orders", 0, OffsetSpec::Latest)
            .await
            .expect("offsets")
            .0,
        0
    );
    assert!(admin
        .describe_acls(AclFilter::any())
        .await
        .expect("acls")
        .is_empty());

    // The same connection may authenticate and then go on.
    let Credentials::Scram { user, password } = &broker.credentials else {
        panic!("the broker generated a SCRAM credential");
    };
    let principal = stranger
        .authenticate(user, password)
        .await
        .expect("authenticates");
    assert_eq!(principal.to_string(), "User:admin");
    assert_eq!(stranger.principal(), Some(principal));
    assert_eq!(stranger.list_topics().await.expect("list").len(), 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_may_send_no_large_frame_and_is_closed_if_it_does_not_authenticate_in_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let stranger = anonymous(&broker).await;
    let big = herald_wire::Request::Produce {
        topic: "orders".to_owned(),
        partition: 0,
        durability: Durability::Memory,
        batch: vec![0; 1 << 20].into(),
    };
    // Refused from its length prefix, before its body is buffered: the answer is the
    // stream's frame error (header api 0), which the client reports as unexpected.
    match stranger.request(&big).await {
        Err(RequestError::Unexpected { answer, .. }) => {
            assert!(answer.contains("api: 0"), "{answer}")
        }
        other => panic!("a 1 MiB frame before authenticating: {other:?}"),
    }
    // The connection itself is still there to authenticate on.
    let (code, _) = refusal(stranger.list_topics().await);
    assert_eq!(code, ErrorCode::NotAuthenticated);
    // Idle and unauthenticated: closed after the authentication timeout.
    tokio::time::sleep(herald_broker::security::AUTHENTICATION_TIMEOUT + Duration::from_secs(1))
        .await;
    let after = stranger.list_topics().await;
    assert!(
        matches!(
            after,
            Err(RequestError::Connection(_) | RequestError::Stream(_))
        ),
        "closed: {after:?}"
    );
    // An authenticated connection stays.
    let admin = broker.client().await;
    assert!(admin.list_topics().await.is_ok());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_delayed_counted_and_close_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    add_user(dir.path(), "alice", ALICE_PASSWORD);

    let wrong = BrokerClient::connect_with(
        broker.bound.addr,
        Trust::Fingerprint(broker.bound.fingerprint.clone()),
        &Credentials::scram("alice", "not her password"),
    )
    .await;
    match wrong {
        Err(ConnectError::Authentication(message)) => {
            assert!(
                message.contains("unknown user or bad password"),
                "{message}"
            )
        }
        Err(other) => panic!("expected an authentication failure, got {other}"),
        Ok(_) => panic!("a wrong password authenticated"),
    }
    // An unknown user fails the same way.
    let client = anonymous(&broker).await;
    let started = Instant::now();
    let (code, message) = refusal(client.authenticate("nobody", "whatever it is").await);
    assert_eq!(code, ErrorCode::AuthenticationFailed);
    assert!(
        message.contains("unknown user or bad password"),
        "{message}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "a failure is answered after a delay ({:?})",
        started.elapsed()
    );
    // Third failure on this connection (one above, two here): closed.
    let _ = client.authenticate("alice", "wrong again!").await;
    let _ = client.authenticate("alice", "wrong again!").await;
    let after = client.list_topics().await;
    assert!(
        matches!(
            after,
            Err(RequestError::Connection(_) | RequestError::Stream(_))
        ),
        "the connection is closed: {after:?}"
    );
    let metrics = scrape(broker.metrics_addr()).await;
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("herald_broker_authentications_total{result=\"failure\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(failures >= 4.0, "{metrics}");
    // No password in the users file, and the right one still works.
    let users = std::fs::read_to_string(Users::path(dir.path())).expect("users file");
    assert!(!users.contains(ALICE_PASSWORD));
    let alice = connect_as(&broker, "alice", ALICE_PASSWORD).await;
    assert_eq!(
        alice.principal().map(|p| p.to_string()).as_deref(),
        Some("User:alice")
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_gate_every_request_and_lists_show_only_what_may_be_described() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let admin = broker.client().await;
    for topic in ["orders", "secret"] {
        admin
            .create_topic(topic, TopicConfig::default())
            .await
            .expect("create");
    }
    add_user(dir.path(), "alice", ALICE_PASSWORD);
    let alice = connect_as(&broker, "alice", ALICE_PASSWORD).await;

    assert!(
        alice.list_topics().await.expect("list").is_empty(),
        "nothing granted, nothing listed"
    );
    let (code, message) = refusal(
        alice
            .produce("orders", 0, Durability::Memory, batch(None))
            .await,
    );
    assert_eq!(code, ErrorCode::NotAuthorized);
    assert!(
        message.contains("User:alice") && message.contains("WRITE") && message.contains("orders"),
        "{message}"
    );
    assert_eq!(
        admin
            .list_offsets("orders", 0, OffsetSpec::Latest)
            .await
            .expect("offsets")
            .0,
        0,
        "nothing stored"
    );

    admin
        .create_acls(vec![
            allow("alice", ResourceType::Topic, "orders", Operation::Write),
            allow("alice", ResourceType::Topic, "orders", Operation::Read),
        ])
        .await
        .expect("grant");
    // The grant applies to the open connection at once (its cached decisions are dropped).
    alice
        .produce("orders", 0, Durability::Memory, batch(None))
        .await
        .expect("may write now");
    let fetched = alice
        .fetch("orders", 0, 0, 1 << 20, Duration::ZERO, 0)
        .await
        .expect("may read");
    assert!(!fetched.batches.is_empty());
    let listed: Vec<String> = alice
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        listed,
        ["orders"],
        "WRITE and READ imply DESCRIBE; secret stays hidden"
    );
    let (code, message) = refusal(alice.fetch("secret", 0, 0, 1024, Duration::ZERO, 0).await);
    assert_eq!(code, ErrorCode::NotAuthorized, "{message}");
    assert!(
        message.contains("READ") && message.contains("secret"),
        "{message}"
    );
    let (code, _) = refusal(alice.delete_topic("orders").await);
    assert_eq!(code, ErrorCode::NotAuthorized);
    assert_eq!(
        admin.list_topics().await.expect("list").len(),
        2,
        "nothing deleted"
    );

    // ACL administration needs ALTER on the cluster.
    let (code, message) = refusal(
        alice
            .create_acls(vec![allow(
                "alice",
                ResourceType::Topic,
                "secret",
                Operation::Read,
            )])
            .await,
    );
    assert_eq!(code, ErrorCode::NotAuthorized);
    assert!(
        message.contains("ALTER") && message.contains(CLUSTER_NAME),
        "{message}"
    );
    // A DENY wins over the ALLOW.
    admin
        .create_acls(vec![AclEntry::new(
            Principal::user("alice").expect("principal"),
            ResourceType::Topic,
            PatternType::Prefixed,
            "ord",
            Operation::Write,
            Permission::Deny,
        )
        .expect("entry")])
        .await
        .expect("deny");
    let (code, _) = refusal(
        alice
            .produce("orders", 0, Durability::Memory, batch(None))
            .await,
    );
    assert_eq!(code, ErrorCode::NotAuthorized);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_producer_and_its_id_belong_to_the_principal_that_first_used_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let admin = broker.client().await;
    admin
        .create_topic("payments", TopicConfig::default())
        .await
        .expect("create");
    add_user(dir.path(), "alice", ALICE_PASSWORD);
    add_user(dir.path(), "bob", BOB_PASSWORD);
    admin
        .create_acls(vec![
            allow("alice", ResourceType::Topic, "payments", Operation::Write),
            allow("bob", ResourceType::Topic, "payments", Operation::Write),
        ])
        .await
        .expect("grant");
    let alice = connect_as(&broker, "alice", ALICE_PASSWORD).await;
    let bob = connect_as(&broker, "bob", BOB_PASSWORD).await;

    let (id, epoch) = alice.init_producer("checkout").await.expect("init");
    alice
        .produce(
            "payments",
            0,
            Durability::Memory,
            batch(Some((id, epoch, 0))),
        )
        .await
        .expect("alice writes as her producer");
    // Bob can neither fence alice's named producer nor write under its id.
    let (code, message) = refusal(bob.init_producer("checkout").await);
    assert_eq!(code, ErrorCode::NotAuthorized);
    assert!(message.contains("User:alice"), "{message}");
    let (code, message) = refusal(
        bob.produce(
            "payments",
            0,
            Durability::Memory,
            batch(Some((id, epoch + 1, 0))),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::NotAuthorized);
    assert!(message.contains(&id.to_string()), "{message}");
    // Nor write under an id nobody was handed (fencing whoever gets it later).
    let (code, message) = refusal(
        bob.produce(
            "payments",
            0,
            Durability::Memory,
            batch(Some((id + 1000, 0, 0))),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::NotAuthorized);
    assert!(message.contains("no such id"), "{message}");
    // Alice's producer goes on, unfenced.
    alice
        .produce(
            "payments",
            0,
            Durability::Memory,
            batch(Some((id, epoch, 1))),
        )
        .await
        .expect("alice is not fenced");
    assert_eq!(
        admin
            .list_offsets("payments", 0, OffsetSpec::Latest)
            .await
            .expect("offsets")
            .0,
        2
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_takes_its_grants_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let admin = broker.client().await;
    admin
        .create_topic("orders", TopicConfig::default())
        .await
        .expect("create");
    add_user(dir.path(), "alice", ALICE_PASSWORD);
    admin
        .create_acls(vec![
            allow("alice", ResourceType::Topic, "orders", Operation::Write),
            allow(
                "alice",
                ResourceType::Group,
                "orders-readers",
                Operation::Read,
            ),
        ])
        .await
        .expect("grant");
    admin.delete_topic("orders").await.expect("delete");
    admin
        .create_topic("orders", TopicConfig::default())
        .await
        .expect("create again");
    let alice = connect_as(&broker, "alice", ALICE_PASSWORD).await;
    let (code, _) = refusal(
        alice
            .produce("orders", 0, Durability::Memory, batch(None))
            .await,
    );
    assert_eq!(
        code,
        ErrorCode::NotAuthorized,
        "the new topic is not alice's"
    );
    let left = admin.describe_acls(AclFilter::any()).await.expect("acls");
    assert_eq!(
        left,
        vec![allow(
            "alice",
            ResourceType::Group,
            "orders-readers",
            Operation::Read
        )],
        "only the topic's own entries went"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_authenticates_as_the_principal_its_subject_maps_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A CA, and a client certificate it signs for CN=orders-service,OU=payments,O=Acme.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Herald test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let client_key = rcgen::KeyPair::generate().expect("key");
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    // Encoded O, OU, CN: RFC 2253 prints the last first.
    client_params.distinguished_name = rcgen::DistinguishedName::new();
    client_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Acme");
    client_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "payments");
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "orders-service");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .expect("client certificate");
    assert_eq!(
        herald_broker::tls::subject_of(client_cert.der()).as_deref(),
        Some("CN=orders-service,OU=payments,O=Acme")
    );
    let files = dir.path().join("pki");
    std::fs::create_dir(&files).expect("mkdir");
    std::fs::write(files.join("ca.pem"), ca.pem()).expect("ca");
    std::fs::write(files.join("client.pem"), client_cert.pem()).expect("cert");
    std::fs::write(files.join("client.key"), client_key.serialize_pem()).expect("key");
    // A certificate from a CA the broker does not trust.
    let stranger_key = rcgen::KeyPair::generate().expect("key");
    let stranger = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .self_signed(&stranger_key)
        .expect("self-signed");
    std::fs::write(files.join("stranger.pem"), stranger.pem()).expect("cert");
    std::fs::write(files.join("stranger.key"), stranger_key.serialize_pem()).expect("key");

    let mut config = support::config(&dir.path().join("data"));
    config.security.client_ca = Some(files.join("ca.pem"));
    config.security.principal_rules =
        herald_broker::security::PrincipalRules::parse(&["RULE:^CN=([^,]+),OU=payments,.*$/$1/L"])
            .expect("rules");
    let broker = RunningBroker::start_with(config).await;
    let admin = broker.client().await;
    admin
        .create_topic("orders", TopicConfig::default())
        .await
        .expect("create");
    admin
        .create_acls(vec![allow(
            "orders-service",
            ResourceType::Topic,
            "orders",
            Operation::Write,
        )])
        .await
        .expect("grant");
    let trust = Trust::Fingerprint(broker.bound.fingerprint.clone());
    let service = BrokerClient::connect_with(
        broker.bound.addr,
        trust.clone(),
        &Credentials::Certificate {
            cert: files.join("client.pem"),
            key: files.join("client.key"),
        },
    )
    .await
    .expect("connects with its certificate");
    service
        .produce("orders", 0, Durability::Memory, batch(None))
        .await
        .expect("authenticated as User:orders-service, which may write");
    let (code, message) = refusal(service.delete_topic("orders").await);
    assert_eq!(code, ErrorCode::NotAuthorized);
    assert!(message.contains("User:orders-service"), "{message}");

    // An untrusted certificate does not get through the handshake.
    let untrusted = BrokerClient::connect_with(
        broker.bound.addr,
        trust,
        &Credentials::Certificate {
            cert: files.join("stranger.pem"),
            key: files.join("stranger.key"),
        },
    )
    .await;
    let refused = match untrusted {
        Err(_) => true,
        Ok(client) => client.list_topics().await.is_err(),
    };
    assert!(refused, "a certificate from an unknown CA is refused");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_description_shows_only_the_topics_the_reader_may_describe() {
    use herald_wire::groups::GroupResponse;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let admin = broker.client().await;
    for topic in ["orders", "secret"] {
        admin
            .create_topic(topic, TopicConfig::default())
            .await
            .expect("create");
    }
    admin
        .group(GroupRequest::Heartbeat {
            group: "mixed".to_owned(),
            member_id: None,
            member_epoch: 0,
            instance_id: None,
            topics: vec!["orders".to_owned(), "secret".to_owned()],
            owned: Vec::new(),
        })
        .await
        .expect("join");
    add_user(dir.path(), "alice", ALICE_PASSWORD);
    admin
        .create_acls(vec![
            allow("alice", ResourceType::Group, "mixed", Operation::Describe),
            allow("alice", ResourceType::Topic, "orders", Operation::Describe),
        ])
        .await
        .expect("grant");
    let alice = connect_as(&broker, "alice", ALICE_PASSWORD).await;
    let describe = |client: BrokerClient| async move {
        match client
            .group(GroupRequest::Describe {
                group: "mixed".to_owned(),
            })
            .await
            .expect("describe")
        {
            GroupResponse::Description(description) => description,
            other => panic!("{other:?}"),
        }
    };
    let everything = describe(admin).await;
    let topics = |d: &herald_wire::groups::GroupDescription| {
        let mut topics: Vec<String> = d
            .partitions
            .iter()
            .map(|p| p.partition.topic.clone())
            .chain(
                d.members
                    .iter()
                    .flat_map(|m| m.partitions.iter().map(|p| p.topic.clone())),
            )
            .collect();
        topics.sort();
        topics.dedup();
        topics
    };
    assert_eq!(topics(&everything), ["orders", "secret"]);
    let seen = describe(alice).await;
    assert_eq!(topics(&seen), ["orders"], "{seen:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_revoked_during_a_long_poll_lets_no_data_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let admin = broker.client().await;
    admin
        .create_topic("orders", TopicConfig::default())
        .await
        .expect("create");
    add_user(dir.path(), "alice", ALICE_PASSWORD);
    let grant = allow("alice", ResourceType::Topic, "orders", Operation::Read);
    admin.create_acls(vec![grant.clone()]).await.expect("grant");
    let alice = connect_as(&broker, "alice", ALICE_PASSWORD).await;
    // Waits at the end of the partition for a record.
    let poll = tokio::spawn(async move {
        alice
            .fetch("orders", 0, 0, 1 << 20, Duration::from_secs(10), 1)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin
        .delete_acls(AclFilter {
            principal: Some(Principal::user("alice").expect("principal")),
            ..AclFilter::any()
        })
        .await
        .expect("revoke");
    admin
        .produce("orders", 0, Durability::Memory, batch(None))
        .await
        .expect("produce");
    let (code, message) = refusal(poll.await.expect("task"));
    assert_eq!(code, ErrorCode::NotAuthorized, "{message}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holds_a_bounded_number_of_connections() {
    use herald_broker::server::CONNECTIONS_PER_SOURCE_MAX;
    let dir = tempfile::tempdir().expect("tempdir");
    // Without authentication: the limit is per source either way, and opening 128
    // connections in a debug build under a loaded CI machine can take longer than
    // AUTHENTICATION_TIMEOUT, which would close the first ones and free their slots.
    let mut config = support::config(dir.path());
    config.retention_check_interval = Duration::from_secs(3600);
    config.security.authentication = false;
    let broker = RunningBroker::start_with(config).await;
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS_PER_SOURCE_MAX {
        held.push(anonymous(&broker).await);
    }
    let refused = BrokerClient::connect(
        broker.bound.addr,
        Trust::Fingerprint(broker.bound.fingerprint.clone()),
    )
    .await;
    assert!(refused.is_err(), "one connection past the limit is refused");
    let first = held.remove(0);
    first.close();
    // The slot comes back once the broker has seen the connection go.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = BrokerClient::connect(
            broker.bound.addr,
            Trust::Fingerprint(broker.bound.fingerprint.clone()),
        )
        .await;
        if again.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot came back: {:?}",
            again.err()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    broker.stop().await;
}

/// A fault on the way: when the topic's grants cannot be removed (the ACL file cannot be
/// rewritten), the topic is not deleted — never a deleted topic whose grants survive for the
/// next topic of the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_whose_grants_cannot_be_removed_is_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let admin = broker.client().await;
    admin
        .create_topic("orders", TopicConfig::default())
        .await
        .expect("create");
    admin
        .create_acls(vec![allow(
            "alice",
            ResourceType::Topic,
            "orders",
            Operation::Write,
        )])
        .await
        .expect("grant");
    // The ACL file can no longer be replaced: a directory stands where it goes.
    let file = dir.path().join("acls.meta");
    std::fs::remove_file(&file).expect("remove");
    std::fs::create_dir(&file).expect("a directory in its place");
    let (code, message) = refusal(admin.delete_topic("orders").await);
    assert_eq!(code, ErrorCode::Storage, "{message}");
    assert!(message.contains("not deleted"), "{message}");
    assert!(
        admin.describe_topic("orders").await.is_ok(),
        "the topic is still there"
    );
    assert_eq!(
        admin
            .describe_acls(AclFilter::any())
            .await
            .expect("acls")
            .len(),
        1,
        "and so is its grant"
    );
    broker.stop().await;
}
