//! Handing a fetch's records to the handler: in order on one lane, or on concurrent lanes by
//! key (records of one key share a lane, so their order is kept). Each record handed out and
//! each record handled is reported to the core, which keeps the committable offset.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use herald_wire::groups::TopicPartition;

use super::core::ConsumerCore;
use super::fetched::FetchedRecords;
use super::run::Progress;
use super::{
    ConsumeError, ConsumedRecord, FetchedBuffer, HandlerError, RawConsumer, CONCURRENCY_MAX,
};

impl RawConsumer {
    /// Hands the records of `source` (fetched from `partition` at the core's position) to
    /// the handler, on one lane or on up to `concurrency` lanes by key, reporting them to the
    /// core: handed out, then handled. A record the breaker refused stays unhandled, so the
    /// committable offset stops before it; so do the records left when the member lost its
    /// partitions meanwhile (expired, fenced, or left for slow handling: they are the new
    /// owner's now), or when the run is ending (the heartbeat task failed: the record in hand
    /// is finished, none after it started).
    pub(super) async fn process_fetch<H, F>(
        &self,
        source: &Arc<FetchedBuffer>,
        partition: &TopicPartition,
        core: &mut ConsumerCore,
        fetched_at: Instant,
        progress: &Progress,
        handler: &H,
    ) -> Result<(), ConsumeError>
    where
        H: Fn(ConsumedRecord) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        let Some(position) = core.position(partition) else {
            return Ok(());
        };
        let lanes_max = self.config.concurrency.clamp(1, CONCURRENCY_MAX);
        // `FetchedRecords` is a named iterator, not an adapter chain: a closure-built
        // iterator held across the handler's await made the run future fail the `Send` check
        // (a higher-ranked closure lifetime), so it could not be spawned
        // (`run_futures_can_be_spawned` guards it).
        if lanes_max == 1 {
            // One lane: records in order as they are read; the first one refused ends it.
            // Each record is reported as it goes (a run stopped between two records has
            // reported all it handled), through the partition's borrowed progress: no map
            // lookup per record (two per record cost 5 % of consume throughput).
            let Some(mut cursor) = core.partition_progress(partition) else {
                return Ok(());
            };
            let mut records = FetchedRecords::new(source, position);
            loop {
                let record = records.next();
                // Control batches read on the way (before this record, or at the end) hold
                // nothing for the handler: their offsets are passed.
                if let Some(next_offset) = records.take_passed_control() {
                    cursor.skipped(next_offset);
                }
                let Some(record) = record else { break };
                if progress.should_stop() {
                    break;
                }
                let offset = record.offset();
                cursor.fetched(offset, 1);
                if !self.process(record, fetched_at, progress, handler).await? {
                    break;
                }
                cursor.handled(offset);
            }
        } else {
            // Records go to lanes by key, as the partitioner spreads keys over partitions
            // (records of one key share a lane, so their order is kept); keyless records by
            // offset. Lanes run concurrently, each record by record.
            let mut lanes: Vec<Vec<ConsumedRecord>> = vec![Vec::new(); lanes_max];
            // The offsets of each lane's records, to report what each lane handled.
            let mut lane_offsets: Vec<Vec<i64>> = vec![Vec::new(); lanes_max];
            // One lookup of the partition's progress for the whole fetch.
            let Some(mut cursor) = core.partition_progress(partition) else {
                return Ok(());
            };
            let mut records = FetchedRecords::new(source, position);
            loop {
                let record = records.next();
                if let Some(next_offset) = records.take_passed_control() {
                    cursor.skipped(next_offset);
                }
                let Some(record) = record else { break };
                let offset = record.offset();
                let lane = match record.key() {
                    // `lanes_max` is at most `CONCURRENCY_MAX`: the cast is exact.
                    Some(key) => {
                        crate::partitioner::partition_for_key(key, lanes_max as u32) as usize
                    }
                    None => offset.unsigned_abs() as usize % lanes_max,
                };
                if let (Some(records), Some(offsets)) =
                    (lanes.get_mut(lane), lane_offsets.get_mut(lane))
                {
                    cursor.fetched(offset, 1);
                    records.push(record);
                    offsets.push(offset);
                }
            }
            let outcomes = futures::future::join_all(lanes.into_iter().map(|lane| async move {
                // The first offset of this lane left unprocessed (the breaker opened, the
                // member lost the partition, or the run is ending).
                for record in lane {
                    let offset = record.offset;
                    if progress.should_stop() {
                        return Ok(Some(offset));
                    }
                    if !self.process(record, fetched_at, progress, handler).await? {
                        return Ok(Some(offset));
                    }
                }
                Ok::<_, ConsumeError>(None)
            }))
            .await;
            // Each lane handled its records before the one it stopped at (at-least-once: the
            // committable offset stops at the first record some lane left, and records after
            // it that other lanes processed are delivered again).
            for (outcome, offsets) in outcomes.into_iter().zip(lane_offsets) {
                let stopped_at = outcome?;
                for offset in offsets {
                    if stopped_at.is_some_and(|stopped_at| offset >= stopped_at) {
                        break;
                    }
                    cursor.handled(offset);
                }
            }
        }
        Ok(())
    }
}
