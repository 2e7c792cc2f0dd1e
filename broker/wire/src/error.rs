//! Stable numeric error codes carried in responses. Never renumber a code.

/// What went wrong with a request, as the broker tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    UnknownTopic,
    UnknownPartition,
    TopicAlreadyExists,
    InvalidRequest,
    OffsetOutOfRange,
    CorruptBatch,
    SchemaValidationFailed,
    Throttled,
    TooLarge,
    UnsupportedVersion,
    Internal,
    Storage,
    RegistryUnavailable,
    InvalidTopicConfig,
    /// An idempotent producer skipped or repeated sequences: resend from the expected one.
    OutOfOrderSequence,
    /// An idempotent producer's epoch was superseded: this instance is a zombie.
    ProducerFenced,
    /// The group does not know this member (it left or expired): join again.
    UnknownMember,
    /// The member's epoch is stale: a newer incarnation exists, or it must rejoin.
    FencedMemberEpoch,
    /// The member committed for a partition it does not own.
    NotPartitionOwner,
    /// The group has as many members as it may.
    GroupFull,
    /// A code this client does not know (a newer broker); the number is kept.
    Unknown(u16),
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::UnknownTopic => 1,
            ErrorCode::UnknownPartition => 2,
            ErrorCode::TopicAlreadyExists => 3,
            ErrorCode::InvalidRequest => 4,
            ErrorCode::OffsetOutOfRange => 5,
            ErrorCode::CorruptBatch => 6,
            ErrorCode::SchemaValidationFailed => 7,
            ErrorCode::Throttled => 8,
            ErrorCode::TooLarge => 9,
            ErrorCode::UnsupportedVersion => 10,
            ErrorCode::Internal => 11,
            ErrorCode::Storage => 12,
            ErrorCode::RegistryUnavailable => 13,
            ErrorCode::InvalidTopicConfig => 14,
            ErrorCode::OutOfOrderSequence => 15,
            ErrorCode::ProducerFenced => 16,
            ErrorCode::UnknownMember => 17,
            ErrorCode::FencedMemberEpoch => 18,
            ErrorCode::NotPartitionOwner => 19,
            ErrorCode::GroupFull => 20,
            ErrorCode::Unknown(code) => code,
        }
    }

    pub fn from_code(code: u16) -> Self {
        match code {
            1 => ErrorCode::UnknownTopic,
            2 => ErrorCode::UnknownPartition,
            3 => ErrorCode::TopicAlreadyExists,
            4 => ErrorCode::InvalidRequest,
            5 => ErrorCode::OffsetOutOfRange,
            6 => ErrorCode::CorruptBatch,
            7 => ErrorCode::SchemaValidationFailed,
            8 => ErrorCode::Throttled,
            9 => ErrorCode::TooLarge,
            10 => ErrorCode::UnsupportedVersion,
            11 => ErrorCode::Internal,
            12 => ErrorCode::Storage,
            13 => ErrorCode::RegistryUnavailable,
            14 => ErrorCode::InvalidTopicConfig,
            15 => ErrorCode::OutOfOrderSequence,
            16 => ErrorCode::ProducerFenced,
            17 => ErrorCode::UnknownMember,
            18 => ErrorCode::FencedMemberEpoch,
            19 => ErrorCode::NotPartitionOwner,
            20 => ErrorCode::GroupFull,
            other => ErrorCode::Unknown(other),
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Throttled
                | ErrorCode::Storage
                | ErrorCode::RegistryUnavailable
                | ErrorCode::Internal
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_never_move() {
        for code in 0..=24u16 {
            assert_eq!(ErrorCode::from_code(code).code(), code);
        }
        assert_eq!(ErrorCode::SchemaValidationFailed.code(), 7);
        assert_eq!(ErrorCode::Throttled.code(), 8);
    }
}
