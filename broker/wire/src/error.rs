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
    /// The group still has live members (stop its consumers before deleting it).
    GroupNotEmpty,
    /// The connection has not authenticated: it may only authenticate.
    NotAuthenticated,
    /// The credentials were wrong, or the exchange was malformed.
    AuthenticationFailed,
    /// The principal may not perform the operation on the resource (the message names both).
    NotAuthorized,
    /// This broker does not lead the partition (in a cluster): the message names the leader's
    /// node and address when known. Send it there.
    NotLeader,
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
            ErrorCode::GroupNotEmpty => 21,
            ErrorCode::NotAuthenticated => 22,
            ErrorCode::AuthenticationFailed => 23,
            ErrorCode::NotAuthorized => 24,
            ErrorCode::NotLeader => 25,
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
            21 => ErrorCode::GroupNotEmpty,
            22 => ErrorCode::NotAuthenticated,
            23 => ErrorCode::AuthenticationFailed,
            24 => ErrorCode::NotAuthorized,
            25 => ErrorCode::NotLeader,
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
                | ErrorCode::NotLeader
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code on the wire, as literals: a released number never moves.
    const TABLE: [(ErrorCode, u16); 25] = [
        (ErrorCode::UnknownTopic, 1),
        (ErrorCode::UnknownPartition, 2),
        (ErrorCode::TopicAlreadyExists, 3),
        (ErrorCode::InvalidRequest, 4),
        (ErrorCode::OffsetOutOfRange, 5),
        (ErrorCode::CorruptBatch, 6),
        (ErrorCode::SchemaValidationFailed, 7),
        (ErrorCode::Throttled, 8),
        (ErrorCode::TooLarge, 9),
        (ErrorCode::UnsupportedVersion, 10),
        (ErrorCode::Internal, 11),
        (ErrorCode::Storage, 12),
        (ErrorCode::RegistryUnavailable, 13),
        (ErrorCode::InvalidTopicConfig, 14),
        (ErrorCode::OutOfOrderSequence, 15),
        (ErrorCode::ProducerFenced, 16),
        (ErrorCode::UnknownMember, 17),
        (ErrorCode::FencedMemberEpoch, 18),
        (ErrorCode::NotPartitionOwner, 19),
        (ErrorCode::GroupFull, 20),
        (ErrorCode::GroupNotEmpty, 21),
        (ErrorCode::NotAuthenticated, 22),
        (ErrorCode::AuthenticationFailed, 23),
        (ErrorCode::NotAuthorized, 24),
        (ErrorCode::NotLeader, 25),
    ];

    /// The row of `code` in `TABLE`. Exhaustive on purpose (no `_` arm): a new variant
    /// does not compile until it is given a row here, and its row must be in `TABLE`.
    fn row_of(code: ErrorCode) -> Option<usize> {
        Some(match code {
            ErrorCode::UnknownTopic => 0,
            ErrorCode::UnknownPartition => 1,
            ErrorCode::TopicAlreadyExists => 2,
            ErrorCode::InvalidRequest => 3,
            ErrorCode::OffsetOutOfRange => 4,
            ErrorCode::CorruptBatch => 5,
            ErrorCode::SchemaValidationFailed => 6,
            ErrorCode::Throttled => 7,
            ErrorCode::TooLarge => 8,
            ErrorCode::UnsupportedVersion => 9,
            ErrorCode::Internal => 10,
            ErrorCode::Storage => 11,
            ErrorCode::RegistryUnavailable => 12,
            ErrorCode::InvalidTopicConfig => 13,
            ErrorCode::OutOfOrderSequence => 14,
            ErrorCode::ProducerFenced => 15,
            ErrorCode::UnknownMember => 16,
            ErrorCode::FencedMemberEpoch => 17,
            ErrorCode::NotPartitionOwner => 18,
            ErrorCode::GroupFull => 19,
            ErrorCode::GroupNotEmpty => 20,
            ErrorCode::NotAuthenticated => 21,
            ErrorCode::AuthenticationFailed => 22,
            ErrorCode::NotAuthorized => 23,
            ErrorCode::NotLeader => 24,
            ErrorCode::Unknown(_) => return None,
        })
    }

    /// Fails if two numbers in `ErrorCode::code`/`from_code` are swapped (say Throttled and
    /// TooLarge), a number moves, a variant is missing from the table, or an unknown
    /// number is not kept as `Unknown`.
    #[test]
    fn codes_round_trip_and_never_move() {
        for (row, (variant, number)) in TABLE.into_iter().enumerate() {
            assert_eq!(variant.code(), number, "{variant:?} encodes to {number}");
            assert_eq!(
                ErrorCode::from_code(number),
                variant,
                "{number} decodes to {variant:?}"
            );
            assert_eq!(
                row_of(variant),
                Some(row),
                "{variant:?} has one row in TABLE"
            );
        }
        // `row_of` is exhaustive, so a new variant must be given a row; the loop above
        // checks each TABLE row maps back to itself. No number is used twice.
        let mut numbers: Vec<u16> = TABLE.iter().map(|(_, number)| *number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), TABLE.len(), "distinct numbers");

        // Every number decodes either to the variant TABLE gives it (so a variant that
        // `from_code` can produce but TABLE lacks is caught: `row_of` must name its row)
        // or to `Unknown` carrying it (a newer broker's code), encoded back unchanged.
        for number in 0..=u16::MAX {
            let decoded = ErrorCode::from_code(number);
            match row_of(decoded) {
                Some(row) => assert_eq!(
                    TABLE.get(row).copied(),
                    Some((decoded, number)),
                    "{number} decodes to {decoded:?}, which TABLE must list with it"
                ),
                None => {
                    assert_eq!(decoded, ErrorCode::Unknown(number), "{number} is unknown");
                    assert_eq!(decoded.code(), number);
                }
            }
        }
        assert_eq!(ErrorCode::from_code(0), ErrorCode::Unknown(0));
        assert_eq!(ErrorCode::from_code(26), ErrorCode::Unknown(26));
        assert_eq!(ErrorCode::from_code(u16::MAX), ErrorCode::Unknown(u16::MAX));
        assert_eq!(row_of(ErrorCode::Unknown(7)), None);
    }
}
