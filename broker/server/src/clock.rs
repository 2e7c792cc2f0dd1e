//! The broker's wall clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// The broker's wall clock: milliseconds since the Unix epoch (0 for a clock set before it).
/// Only the edges read it; core logic (logs, groups, the coordinator) takes `now` as a
/// parameter.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
