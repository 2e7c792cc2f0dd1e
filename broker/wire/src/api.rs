//! Which request a frame carries: the api number in every frame header. Kept apart from
//! `messages` and `groups` so that both can name an api without importing each other.

use crate::codec::DecodeError;

/// Which request a frame carries. Never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    CreateTopic = 1,
    DeleteTopic = 2,
    ListTopics = 3,
    DescribeTopic = 4,
    Produce = 5,
    Fetch = 6,
    ListOffsets = 7,
    InitProducer = 8,
    GroupHeartbeat = 9,
    LeaveGroup = 10,
    CommitOffsets = 11,
    FetchOffsets = 12,
    DescribeGroup = 13,
    ListGroups = 14,
    DeleteGroup = 15,
    Authenticate = 16,
    CreateAcls = 17,
    DescribeAcls = 18,
    DeleteAcls = 19,
    /// Where a topic's partitions are led (a cluster's nodes and placement).
    Metadata = 20,
    /// Moves a cluster partition to other replicas.
    MovePartition = 21,
    /// Sets a user's SCRAM credential (adding the user if new).
    AlterUser = 22,
    DeleteUser = 23,
    ListUsers = 24,
    /// Removes a node from a cluster for good (it must hold no replica).
    RemoveNode = 25,
}

impl Api {
    pub fn from_code(code: u16) -> Result<Self, DecodeError> {
        Ok(match code {
            1 => Api::CreateTopic,
            2 => Api::DeleteTopic,
            3 => Api::ListTopics,
            4 => Api::DescribeTopic,
            5 => Api::Produce,
            6 => Api::Fetch,
            7 => Api::ListOffsets,
            8 => Api::InitProducer,
            9 => Api::GroupHeartbeat,
            10 => Api::LeaveGroup,
            11 => Api::CommitOffsets,
            12 => Api::FetchOffsets,
            13 => Api::DescribeGroup,
            14 => Api::ListGroups,
            15 => Api::DeleteGroup,
            16 => Api::Authenticate,
            17 => Api::CreateAcls,
            18 => Api::DescribeAcls,
            19 => Api::DeleteAcls,
            20 => Api::Metadata,
            21 => Api::MovePartition,
            22 => Api::AlterUser,
            23 => Api::DeleteUser,
            24 => Api::ListUsers,
            25 => Api::RemoveNode,
            other => return Err(DecodeError::UnknownApi(other)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Api::CreateTopic => "create_topic",
            Api::DeleteTopic => "delete_topic",
            Api::ListTopics => "list_topics",
            Api::DescribeTopic => "describe_topic",
            Api::Produce => "produce",
            Api::Fetch => "fetch",
            Api::ListOffsets => "list_offsets",
            Api::InitProducer => "init_producer",
            Api::GroupHeartbeat => "group_heartbeat",
            Api::LeaveGroup => "leave_group",
            Api::CommitOffsets => "commit_offsets",
            Api::FetchOffsets => "fetch_offsets",
            Api::DescribeGroup => "describe_group",
            Api::ListGroups => "list_groups",
            Api::DeleteGroup => "delete_group",
            Api::Authenticate => "authenticate",
            Api::CreateAcls => "create_acls",
            Api::DescribeAcls => "describe_acls",
            Api::DeleteAcls => "delete_acls",
            Api::Metadata => "metadata",
            Api::MovePartition => "move_partition",
            Api::AlterUser => "alter_user",
            Api::DeleteUser => "delete_user",
            Api::ListUsers => "list_users",
            Api::RemoveNode => "remove_node",
        }
    }
}
