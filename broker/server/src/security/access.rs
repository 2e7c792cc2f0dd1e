//! What each request needs, as pure data: the (resource, operation) pairs a principal must be
//! allowed, or "only what it may describe" for the list APIs. The table, in Kafka's shape:
//!
//! | request                         | needs                                               |
//! |---------------------------------|-----------------------------------------------------|
//! | CreateTopic                     | CREATE on the topic                                 |
//! | DeleteTopic                     | DELETE on the topic                                 |
//! | DescribeTopic, ListOffsets,     | DESCRIBE on the topic                               |
//! | Metadata                        |                                                     |
//! | ListTopics                      | answers only the topics the principal may DESCRIBE  |
//! | Produce                         | WRITE on the topic                                  |
//! | Fetch                           | READ on the topic                                   |
//! | InitProducer                    | an authenticated principal (a named producer is     |
//! |                                 | bound to the first principal that uses its name)    |
//! | GroupHeartbeat (join)           | READ on the group, DESCRIBE on each subscribed topic|
//! | LeaveGroup                      | READ on the group                                   |
//! | CommitOffsets                   | READ on the group and on each committed topic       |
//! | FetchOffsets                    | DESCRIBE on the group and on each topic asked for   |
//! | DescribeGroup                   | DESCRIBE on the group                               |
//! | ListGroups                      | answers only the groups the principal may DESCRIBE  |
//! | DeleteGroup                     | DELETE on the group                                 |
//! | CreateAcls, DeleteAcls          | ALTER on the cluster                                |
//! | DescribeAcls                    | DESCRIBE on the cluster                             |
//! | Authenticate                    | nothing (it is how a principal is established)      |
//!
//! READ, WRITE, DELETE and ALTER imply DESCRIBE (see `herald_auth::acl`).

use std::collections::BTreeSet;

use herald_auth::acl::{Operation, ResourceType, CLUSTER_NAME};
use herald_wire::groups::GroupRequest;
use herald_wire::security::SecurityRequest;
use herald_wire::Request;

/// One permission a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Check<'a> {
    pub resource_type: ResourceType,
    pub name: &'a str,
    pub operation: Operation,
}

impl<'a> Check<'a> {
    fn new(resource_type: ResourceType, name: &'a str, operation: Operation) -> Self {
        Self {
            resource_type,
            name,
            operation,
        }
    }
}

/// Which list a list API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Topics,
    Groups,
}

/// What a request needs before the broker handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<'a> {
    /// Nothing: the authentication exchange itself.
    Open,
    /// Any authenticated principal.
    Authenticated,
    /// Every check, in order (the first refused one is reported); no check repeats.
    All(Vec<Check<'a>>),
    /// The answer keeps only what the principal may DESCRIBE.
    Filtered(Listing),
}

/// Which list `request` asks for, if it is a list API: what [`required`] answers
/// [`Access::Filtered`] with, without building the rest (the server asks this of every
/// request it hands the broker).
pub fn listing(request: &Request) -> Option<Listing> {
    match request {
        Request::ListTopics => Some(Listing::Topics),
        Request::Group(GroupRequest::List) => Some(Listing::Groups),
        _ => None,
    }
}

/// What `request` needs.
pub fn required(request: &Request) -> Access<'_> {
    use Operation::{Alter, Create, Delete, Describe, Read, Write};
    use ResourceType::{Cluster, Group, Topic};
    let one = |resource_type, name, operation| {
        Access::All(vec![Check::new(resource_type, name, operation)])
    };
    match request {
        Request::CreateTopic { name, .. } => one(Topic, name, Create),
        Request::DeleteTopic { name } => one(Topic, name, Delete),
        Request::DescribeTopic { name } => one(Topic, name, Describe),
        Request::ListTopics => Access::Filtered(Listing::Topics),
        Request::Produce { topic, .. } => one(Topic, topic, Write),
        Request::Fetch { topic, .. } => one(Topic, topic, Read),
        Request::ListOffsets { topic, .. } | Request::Metadata { topic } => {
            one(Topic, topic, Describe)
        }
        Request::InitProducer { .. } => Access::Authenticated,
        // As Kafka's partition reassignment and broker unregistration: an operator's.
        Request::MovePartition { .. } | Request::RemoveNode { .. } => {
            one(Cluster, CLUSTER_NAME, Alter)
        }
        Request::Group(group) => match group {
            GroupRequest::Heartbeat { group, topics, .. } => Access::All(with_topics(
                Check::new(Group, group, Read),
                topics.iter().map(String::as_str),
                Describe,
            )),
            GroupRequest::Leave { group, .. } => one(Group, group, Read),
            GroupRequest::Commit { group, offsets, .. } => Access::All(with_topics(
                Check::new(Group, group, Read),
                offsets.iter().map(|c| c.partition.topic.as_str()),
                Read,
            )),
            GroupRequest::FetchOffsets { group, partitions } => Access::All(with_topics(
                Check::new(Group, group, Describe),
                partitions.iter().map(|p| p.topic.as_str()),
                Describe,
            )),
            GroupRequest::Describe { group } => one(Group, group, Describe),
            GroupRequest::List => Access::Filtered(Listing::Groups),
            GroupRequest::Delete { group } => one(Group, group, Delete),
        },
        Request::Security(security) => match security {
            SecurityRequest::Authenticate { .. } => Access::Open,
            SecurityRequest::CreateAcls { .. } | SecurityRequest::DeleteAcls { .. } => {
                one(Cluster, CLUSTER_NAME, Alter)
            }
            SecurityRequest::DescribeAcls { .. } | SecurityRequest::ListUsers => {
                one(Cluster, CLUSTER_NAME, Describe)
            }
            // As Kafka's AlterUserScramCredentials: an operator's.
            SecurityRequest::AlterUser { .. } | SecurityRequest::DeleteUser { .. } => {
                one(Cluster, CLUSTER_NAME, Alter)
            }
        },
    }
}

/// `first`, then `operation` on each distinct topic (a commit names a topic once per
/// partition; each is checked once).
fn with_topics<'a>(
    first: Check<'a>,
    topics: impl Iterator<Item = &'a str>,
    operation: Operation,
) -> Vec<Check<'a>> {
    let distinct: BTreeSet<&str> = topics.collect();
    std::iter::once(first)
        .chain(
            distinct
                .into_iter()
                .map(|topic| Check::new(ResourceType::Topic, topic, operation)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use herald_wire::groups::{Commit, TopicPartition};
    use herald_wire::messages::{Durability, OffsetSpec, TopicConfig};

    use super::*;

    fn checks(request: &Request) -> Vec<(ResourceType, String, Operation)> {
        match required(request) {
            Access::All(checks) => checks
                .into_iter()
                .map(|c| (c.resource_type, c.name.to_owned(), c.operation))
                .collect(),
            other => panic!("{request:?} needs {other:?}"),
        }
    }

    #[test]
    fn each_topic_api_needs_its_operation_on_the_topic() {
        use Operation::*;
        let t = |op| vec![(ResourceType::Topic, "orders".to_owned(), op)];
        assert_eq!(
            checks(&Request::CreateTopic {
                name: "orders".into(),
                config: TopicConfig::default()
            }),
            t(Create)
        );
        assert_eq!(
            checks(&Request::DeleteTopic {
                name: "orders".into()
            }),
            t(Delete)
        );
        assert_eq!(
            checks(&Request::DescribeTopic {
                name: "orders".into()
            }),
            t(Describe)
        );
        assert_eq!(
            checks(&Request::Produce {
                topic: "orders".into(),
                partition: 0,
                durability: Durability::Memory,
                batch: bytes::Bytes::new()
            }),
            t(Write)
        );
        assert_eq!(
            checks(&Request::Fetch {
                topic: "orders".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1,
                max_wait_ms: 0,
                min_bytes: 0
            }),
            t(Read)
        );
        assert_eq!(
            checks(&Request::ListOffsets {
                topic: "orders".into(),
                partition: 0,
                spec: OffsetSpec::Latest
            }),
            t(Describe)
        );
        assert_eq!(
            required(&Request::ListTopics),
            Access::Filtered(Listing::Topics)
        );
        assert_eq!(
            required(&Request::InitProducer { name: "p".into() }),
            Access::Authenticated
        );
    }

    #[test]
    fn listing_agrees_with_the_table() {
        for request in [
            Request::ListTopics,
            Request::Group(GroupRequest::List),
            Request::DescribeTopic { name: "t".into() },
            Request::Group(GroupRequest::Describe { group: "g".into() }),
        ] {
            let from_table = match required(&request) {
                Access::Filtered(listing) => Some(listing),
                _ => None,
            };
            assert_eq!(listing(&request), from_table, "{request:?}");
        }
    }

    #[test]
    fn a_commit_needs_read_on_the_group_and_on_each_topic_once() {
        let commit = |topic: &str, partition| Commit {
            partition: TopicPartition::new(topic, partition),
            offset: 1,
            metadata: String::new(),
        };
        let request = Request::Group(GroupRequest::Commit {
            group: "billing".into(),
            member_id: "m".into(),
            member_epoch: 1,
            offsets: vec![commit("orders", 0), commit("orders", 1), commit("audit", 0)],
        });
        assert_eq!(
            checks(&request),
            vec![
                (ResourceType::Group, "billing".to_owned(), Operation::Read),
                (ResourceType::Topic, "audit".to_owned(), Operation::Read),
                (ResourceType::Topic, "orders".to_owned(), Operation::Read),
            ]
        );
    }

    #[test]
    fn group_and_acl_apis_need_their_operations() {
        let join = Request::Group(GroupRequest::Heartbeat {
            group: "g".into(),
            member_id: None,
            member_epoch: 0,
            instance_id: None,
            topics: vec!["orders".into()],
            owned: Vec::new(),
        });
        assert_eq!(
            checks(&join),
            vec![
                (ResourceType::Group, "g".to_owned(), Operation::Read),
                (
                    ResourceType::Topic,
                    "orders".to_owned(),
                    Operation::Describe
                ),
            ]
        );
        assert_eq!(
            checks(&Request::Group(GroupRequest::Delete { group: "g".into() })),
            vec![(ResourceType::Group, "g".to_owned(), Operation::Delete)]
        );
        assert_eq!(
            required(&Request::Group(GroupRequest::List)),
            Access::Filtered(Listing::Groups)
        );
        assert_eq!(
            checks(&Request::Security(SecurityRequest::CreateAcls {
                entries: Vec::new()
            })),
            vec![(
                ResourceType::Cluster,
                CLUSTER_NAME.to_owned(),
                Operation::Alter
            )]
        );
        assert_eq!(
            checks(&Request::Security(SecurityRequest::DescribeAcls {
                filter: Default::default()
            })),
            vec![(
                ResourceType::Cluster,
                CLUSTER_NAME.to_owned(),
                Operation::Describe
            )]
        );
        assert_eq!(
            required(&Request::Security(SecurityRequest::Authenticate {
                mechanism: "SCRAM-SHA-256".into(),
                message: Vec::new()
            })),
            Access::Open
        );
    }
}
