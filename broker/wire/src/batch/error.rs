//! Why a batch is refused, by the writer or the reader.

use crate::codec::DecodeError;

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("batch checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unsupported batch format {0}")]
    UnsupportedMagic(u8),
    #[error("batch says {declared} records but holds {actual}")]
    RecordCountMismatch { declared: u32, actual: u32 },
    #[error("batch holds no records")]
    Empty,
    #[error(
        "batch attributes {0:#04x} are reserved for batches the broker writes: producers send 0"
    )]
    ReservedAttributes(u8),
}
