//! The authorization matrix against a real `herald broker serve` process (authentication on,
//! as by default): for every broker API, a user without the permission gets a "not
//! authorized" error naming the operation and the resource and nothing changes; granted the
//! permission (by the generated admin, over the ACL API), the same call works. The user is
//! added with the real `herald user add` while the broker runs.

use std::process::Command;
use std::time::Duration;

use herald_auth::acl::{
    AclEntry, AclFilter, Operation, PatternType, Permission, Principal, ResourceType, CLUSTER_NAME,
};
use herald_broker_client::{BrokerClient, Credentials, RequestError};
use herald_tests::{herald_binary, BrokerProcess};
use herald_wire::groups::{Commit, GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::{Durability, OffsetSpec, TopicConfig};
use herald_wire::ErrorCode;

const USER: &str = "alice";
const PASSWORD: &str = "a long enough password";

/// Every API whose access is checked (Authenticate is how access starts; ListTopics and
/// ListGroups filter instead of refusing: see the last test).
#[derive(Debug, Clone, Copy)]
enum Api {
    CreateTopic,
    DeleteTopic,
    DescribeTopic,
    Produce,
    Fetch,
    ListOffsets,
    JoinGroup,
    LeaveGroup,
    CommitOffsets,
    FetchOffsets,
    DescribeGroup,
    DeleteGroup,
    CreateAcls,
    DescribeAcls,
    DeleteAcls,
    AlterUser,
    DeleteUser,
    ListUsers,
}

const APIS: [Api; 18] = [
    Api::CreateTopic,
    Api::DeleteTopic,
    Api::DescribeTopic,
    Api::Produce,
    Api::Fetch,
    Api::ListOffsets,
    Api::JoinGroup,
    Api::LeaveGroup,
    Api::CommitOffsets,
    Api::FetchOffsets,
    Api::DescribeGroup,
    Api::DeleteGroup,
    Api::CreateAcls,
    Api::DescribeAcls,
    Api::DeleteAcls,
    Api::AlterUser,
    Api::DeleteUser,
    Api::ListUsers,
];

fn entry(resource_type: ResourceType, name: &str, operation: Operation) -> AclEntry {
    AclEntry::allow_literal(USER, resource_type, name, operation).expect("entry")
}

impl Api {
    /// What the API needs here; the refusal names the first (operation, resource).
    fn grants(self) -> Vec<AclEntry> {
        use Operation::*;
        use ResourceType::{Cluster, Group, Topic};
        match self {
            Api::CreateTopic => vec![entry(Topic, "created", Create)],
            Api::DeleteTopic => vec![entry(Topic, "doomed", Delete)],
            Api::DescribeTopic | Api::ListOffsets => vec![entry(Topic, "events", Describe)],
            Api::Produce => vec![entry(Topic, "events", Write)],
            Api::Fetch => vec![entry(Topic, "events", Read)],
            Api::JoinGroup | Api::LeaveGroup => vec![
                entry(Group, "readers", Read),
                entry(Topic, "events", Describe),
            ],
            Api::CommitOffsets => vec![entry(Group, "readers", Read), entry(Topic, "events", Read)],
            Api::FetchOffsets => vec![
                entry(Group, "readers", Describe),
                entry(Topic, "events", Describe),
            ],
            Api::DescribeGroup => vec![entry(Group, "readers", Describe)],
            Api::DeleteGroup => vec![entry(Group, "finished", Delete)],
            Api::CreateAcls | Api::DeleteAcls | Api::AlterUser | Api::DeleteUser => {
                vec![entry(Cluster, CLUSTER_NAME, Alter)]
            }
            Api::DescribeAcls | Api::ListUsers => vec![entry(Cluster, CLUSTER_NAME, Describe)],
        }
    }

    async fn call(self, client: &BrokerClient) -> Result<(), RequestError> {
        let join = || {
            client.group(GroupRequest::Heartbeat {
                group: "readers".to_owned(),
                member_id: None,
                member_epoch: 0,
                instance_id: None,
                topics: vec!["events".to_owned()],
                owned: Vec::new(),
            })
        };
        match self {
            Api::CreateTopic => client.create_topic("created", TopicConfig::default()).await,
            Api::DeleteTopic => client.delete_topic("doomed").await,
            Api::DescribeTopic => client.describe_topic("events").await.map(drop),
            Api::Produce => client
                .produce("events", 0, Durability::Fsync, one_record())
                .await
                .map(drop),
            Api::Fetch => client
                .fetch("events", 0, 0, 1 << 20, Duration::ZERO, 0)
                .await
                .map(drop),
            Api::ListOffsets => client
                .list_offsets("events", 0, OffsetSpec::Latest)
                .await
                .map(drop),
            // Joins, and leaves again (or leaves it to the broker): the rows after it start
            // from an empty group.
            Api::JoinGroup | Api::LeaveGroup => {
                let (member_id, _) = member(join().await?);
                client
                    .group(GroupRequest::Leave {
                        group: "readers".to_owned(),
                        member_id,
                    })
                    .await
                    .map(drop)
            }
            Api::CommitOffsets => {
                let (member_id, member_epoch) = member(join().await?);
                let committed = client
                    .group(GroupRequest::Commit {
                        group: "readers".to_owned(),
                        member_id: member_id.clone(),
                        member_epoch,
                        offsets: vec![Commit {
                            partition: TopicPartition::new("events", 0),
                            offset: 1,
                            metadata: String::new(),
                        }],
                    })
                    .await
                    .map(drop);
                client
                    .group(GroupRequest::Leave {
                        group: "readers".to_owned(),
                        member_id,
                    })
                    .await?;
                committed
            }
            Api::FetchOffsets => client
                .group(GroupRequest::FetchOffsets {
                    group: "readers".to_owned(),
                    partitions: vec![TopicPartition::new("events", 0)],
                })
                .await
                .map(drop),
            Api::DescribeGroup => client
                .group(GroupRequest::Describe {
                    group: "readers".to_owned(),
                })
                .await
                .map(drop),
            Api::DeleteGroup => client
                .group(GroupRequest::Delete {
                    group: "finished".to_owned(),
                })
                .await
                .map(drop),
            Api::CreateAcls => client
                .create_acls(vec![entry(
                    ResourceType::Topic,
                    "granted-by-alice",
                    Operation::Read,
                )])
                .await
                .map(drop),
            Api::DescribeAcls => client.describe_acls(AclFilter::any()).await.map(drop),
            Api::AlterUser => {
                let credential = herald_auth::users::Users::credential_for("carol's password")
                    .expect("credential")
                    .to_text();
                client.alter_user("carol", &credential).await
            }
            Api::DeleteUser => client.delete_user("doomed-user").await,
            Api::ListUsers => client.list_users().await.map(drop),
            Api::DeleteAcls => client
                .delete_acls(AclFilter {
                    name: Some("granted-by-alice".to_owned()),
                    ..AclFilter::any()
                })
                .await
                .map(drop),
        }
    }
}

fn member(response: GroupResponse) -> (String, i32) {
    match response {
        GroupResponse::Assignment {
            member_id,
            member_epoch,
            ..
        } => (member_id, member_epoch),
        other => panic!("a join answers an assignment, not {other:?}"),
    }
}

fn one_record() -> Vec<u8> {
    herald_tests::one_record("v").expect("batch")
}

/// Everything a refused call could have changed, as the admin sees it.
async fn state(admin: &BrokerClient) -> String {
    let topics: Vec<String> = admin
        .list_topics()
        .await
        .expect("topics")
        .into_iter()
        .map(|t| t.name)
        .collect();
    let end = admin
        .list_offsets("events", 0, OffsetSpec::Latest)
        .await
        .expect("offsets")
        .0;
    let groups = match admin.group(GroupRequest::List).await.expect("groups") {
        GroupResponse::Groups(groups) => groups,
        other => panic!("{other:?}"),
    };
    let committed = admin
        .group(GroupRequest::FetchOffsets {
            group: "readers".to_owned(),
            partitions: vec![TopicPartition::new("events", 0)],
        })
        .await
        .expect("offsets");
    let members = admin
        .group(GroupRequest::Describe {
            group: "readers".to_owned(),
        })
        .await
        .map(|d| match d {
            GroupResponse::Description(d) => d.members.len(),
            _ => usize::MAX,
        })
        .unwrap_or_default();
    let acls = admin.describe_acls(AclFilter::any()).await.expect("acls");
    let users = admin.list_users().await.expect("users");
    format!("topics {topics:?} end {end} groups {groups:?} committed {committed:?} members {members} acls {acls:?} users {users:?}")
}

/// `herald user add USER --data-dir DIR`, the password on stdin.
fn add_user(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let added = herald_tests::run_with_input(
        Command::new(herald_binary()?)
            .args(["user", "add", USER, "--data-dir"])
            .arg(data_dir),
        &format!("{PASSWORD}\n"),
    )?;
    anyhow::ensure!(
        added.status.success(),
        "herald user add failed: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_api_is_refused_without_its_permission_and_works_with_it() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let broker = BrokerProcess::start(dir.path())?;
    let admin = broker.client().await?;
    admin.create_topic("events", TopicConfig::default()).await?;
    admin
        .produce("events", 0, Durability::Fsync, one_record())
        .await?;
    admin.create_topic("doomed", TopicConfig::default()).await?;
    // A group with a committed offset and no members, to delete.
    let joined = admin
        .group(GroupRequest::Heartbeat {
            group: "finished".to_owned(),
            member_id: None,
            member_epoch: 0,
            instance_id: None,
            topics: vec!["events".to_owned()],
            owned: Vec::new(),
        })
        .await?;
    let (member_id, member_epoch) = member(joined);
    admin
        .group(GroupRequest::Commit {
            group: "finished".to_owned(),
            member_id: member_id.clone(),
            member_epoch,
            offsets: vec![Commit {
                partition: TopicPartition::new("events", 0),
                offset: 1,
                metadata: String::new(),
            }],
        })
        .await?;
    admin
        .group(GroupRequest::Leave {
            group: "finished".to_owned(),
            member_id,
        })
        .await?;
    add_user(dir.path())?;
    admin
        .alter_user(
            "doomed-user",
            &herald_auth::users::Users::credential_for("doomed password")?.to_text(),
        )
        .await?;
    let alice = BrokerClient::connect_with(
        broker.addr,
        broker.trust(),
        &Credentials::scram(USER, PASSWORD),
    )
    .await?;

    for api in APIS {
        admin
            .delete_acls(AclFilter {
                principal: Some(Principal::user(USER)?),
                ..AclFilter::any()
            })
            .await?;
        let before = state(&admin).await;
        let refused = api.call(&alice).await;
        let Err(RequestError::Broker { code, message, .. }) = refused else {
            panic!("{api:?} without its permission: {refused:?}");
        };
        assert_eq!(code, ErrorCode::NotAuthorized, "{api:?}: {message}");
        let needed = &api.grants()[0];
        assert!(
            message.contains("User:alice")
                && message.contains(&needed.operation.to_string())
                && message.contains(&needed.name),
            "{api:?}: the refusal names the operation and the resource: {message}"
        );
        assert_eq!(
            state(&admin).await,
            before,
            "{api:?}: a refused call changes nothing"
        );

        admin.create_acls(api.grants()).await?;
        api.call(&alice)
            .await
            .unwrap_or_else(|e| panic!("{api:?} with {:?}: {e}", api.grants()));
    }
    broker.kill()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_apis_show_only_what_the_user_may_describe() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = BrokerProcess::start(dir.path())?;
    let admin = broker.client().await?;
    for topic in ["team-a.orders", "team-a.audit", "team-b.orders"] {
        admin.create_topic(topic, TopicConfig::default()).await?;
    }
    add_user(dir.path())?;
    admin
        .alter_user(
            "doomed-user",
            &herald_auth::users::Users::credential_for("doomed password")?.to_text(),
        )
        .await?;
    let alice = BrokerClient::connect_with(
        broker.addr,
        broker.trust(),
        &Credentials::scram(USER, PASSWORD),
    )
    .await?;
    assert!(alice.list_topics().await?.is_empty());
    admin
        .create_acls(vec![AclEntry::new(
            Principal::user(USER)?,
            ResourceType::Topic,
            PatternType::Prefixed,
            "team-a.",
            Operation::Read,
            Permission::Allow,
        )?])
        .await?;
    let mut names: Vec<String> = alice
        .list_topics()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    names.sort();
    assert_eq!(names, ["team-a.audit", "team-a.orders"]);
    let groups = match alice.group(GroupRequest::List).await? {
        GroupResponse::Groups(groups) => groups,
        other => anyhow::bail!("{other:?}"),
    };
    assert!(groups.is_empty());
    broker.kill()
}
