//! Reading: fetch with long polling (answer once `min_bytes` are there or `max_wait_ms`
//! passed, woken early by appends) and list offsets.

use std::time::{Duration, Instant};

use herald_broker_core::log::ReadError;
use herald_wire::limits::{FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX};
use herald_wire::messages::OffsetSpec;
use herald_wire::{ErrorCode, Response};

use super::{error, Broker};

impl Broker {
    pub(super) async fn fetch(
        &self,
        topic_name: &str,
        partition_id: u32,
        offset: i64,
        max_bytes: u32,
        max_wait_ms: u32,
        min_bytes: u32,
    ) -> Result<Response, Response> {
        let started = Instant::now();
        let (topic, partition) = self.partition(topic_name, partition_id)?;
        let max_bytes = (max_bytes as usize).clamp(1, FETCH_BYTES_MAX);
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(max_wait_ms.min(FETCH_WAIT_MS_MAX)));
        let wanted = (min_bytes as usize).max(1);
        loop {
            let notified = partition.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let read = partition
                .log()
                .read(offset, max_bytes)
                .map_err(|e| match e {
                    ReadError::OffsetOutOfRange { .. } => {
                        error(ErrorCode::OffsetOutOfRange, e.to_string())
                    }
                    // Quarantined: a Storage error, not out of range, so that no consumer
                    // applies its reset policy and skips the damage silently.
                    other => error(ErrorCode::Storage, other.to_string()),
                })?;
            let now = Instant::now();
            if read.bytes.len() >= wanted || now >= deadline {
                topic
                    .metrics
                    .records_out
                    .increment(herald_wire::batch::count_records(&read.bytes));
                topic.metrics.bytes_out.increment(read.bytes.len() as u64);
                self.metrics.fetch_duration.record(started.elapsed());
                return Ok(Response::Fetched {
                    high_watermark: read.high_watermark,
                    log_start_offset: read.log_start_offset,
                    batches: read.bytes.into(),
                });
            }
            let _ = tokio::time::timeout(deadline - now, notified).await;
        }
    }

    pub(super) fn list_offsets(
        &self,
        topic_name: &str,
        partition_id: u32,
        spec: OffsetSpec,
    ) -> Result<Response, Response> {
        let (_, partition) = self.partition(topic_name, partition_id)?;
        let log = partition.log();
        let (offset, timestamp_ms) = match spec {
            OffsetSpec::Earliest => (log.log_start_offset(), -1),
            OffsetSpec::Latest => (log.high_watermark(), -1),
            OffsetSpec::Timestamp(ts) => log
                .offset_for_timestamp(ts)
                .map_err(|e| error(ErrorCode::Storage, e.to_string()))?
                .unwrap_or((log.high_watermark(), -1)),
        };
        Ok(Response::Offset {
            offset,
            timestamp_ms,
        })
    }
}
