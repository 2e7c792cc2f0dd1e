//! How a partition group runs: openraft's configuration from Herald's few knobs.

use openraft::{Config, ConfigError, SnapshotPolicy};

/// A group's timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often a leader heartbeats its followers when it sends nothing else.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_min_ms, election_max_ms)` stands for election.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Default for Timing {
    /// Heartbeats every 150 ms, elections after 0.5-1 s (a busy group's appends count as
    /// heartbeats). openraft adds its leader lease, the longest election timeout, to the
    /// follower's timeout: a follower stands only after 1.5-2 s without a leader, so a dead
    /// leader is replaced 1.5-2 s after its last heartbeat (0.8-1.6 s elections took 2.4-3.2 s;
    /// failover is meant to take at most 3 s at the median, the client's part included). A
    /// live leader is deposed only by 1.5 s of silence; openraft requires the heartbeat, the
    /// heartbeat suppression interval and its tick to fit in the shortest timeout.
    fn default() -> Self {
        Self {
            heartbeat_ms: 150,
            election_min_ms: 500,
            election_max_ms: 1_000,
        }
    }
}

/// openraft's configuration for a partition group: snapshots and purges never start on their
/// own (retention drives them: the log is the partition's data, not a cache of a state), and
/// a group that replicates entries skips heartbeats it does not need.
pub fn group_config(name: &str, timing: Timing) -> Result<Config, ConfigError> {
    Config {
        cluster_name: name.to_owned(),
        heartbeat_interval: timing.heartbeat_ms,
        heartbeat_min_interval: Some(timing.heartbeat_ms),
        election_timeout_min: timing.election_min_ms,
        election_timeout_max: timing.election_max_ms,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        ..Config::default()
    }
    .validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timing_is_a_valid_config_and_bad_timing_is_refused() {
        let config = group_config("orders-0", Timing::default()).expect("valid");
        assert_eq!(config.snapshot_policy, SnapshotPolicy::Never);
        assert_eq!(config.max_in_snapshot_log_to_keep, u64::MAX);
        let inverted = Timing {
            heartbeat_ms: 300,
            election_min_ms: 3_000,
            election_max_ms: 1_500,
        };
        assert!(group_config("orders-0", inverted).is_err());
    }
}
