//! Handing a fetch's records to the handler: in order on one lane, or on concurrent lanes by
//! key (records of one key share a lane, so their order is kept).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::fetched::FetchedRecords;
use super::run::Progress;
use super::{
    ConsumeError, ConsumedRecord, FetchedBuffer, HandlerError, RawConsumer, CONCURRENCY_MAX,
};

impl RawConsumer {
    /// Hands the records of `source` from `position` on to the handler, on one lane or on up
    /// to `concurrency` lanes by key, and returns the offset to commit up to: after the last
    /// record processed, or the first record the breaker left for later.
    pub(super) async fn process_fetch<H, F>(
        &self,
        source: &Arc<FetchedBuffer>,
        position: i64,
        fetched_at: Instant,
        progress: &Progress,
        handler: &H,
    ) -> Result<i64, ConsumeError>
    where
        H: Fn(ConsumedRecord) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        let lanes_max = self.config.concurrency.clamp(1, CONCURRENCY_MAX);
        // `FetchedRecords` is a named iterator, not an adapter chain: a closure-built
        // iterator held across the handler's await made the run future fail the `Send` check
        // (a higher-ranked closure lifetime), so it could not be spawned
        // (`run_futures_can_be_spawned` guards it).
        let next = if lanes_max == 1 {
            // One lane: records in order as they are read, no lane bookkeeping.
            let mut next = position;
            for record in FetchedRecords::new(source, position) {
                let offset = record.offset();
                if !self.process(record, fetched_at, progress, handler).await? {
                    break;
                }
                next = offset + 1;
            }
            next
        } else {
            // Records go to lanes by key, as the partitioner spreads keys over partitions
            // (records of one key share a lane, so their order is kept); keyless records by
            // offset. Lanes run concurrently, each record by record.
            let mut lanes: Vec<Vec<ConsumedRecord>> = vec![Vec::new(); lanes_max];
            let mut end = position;
            for record in FetchedRecords::new(source, position) {
                let offset = record.offset();
                let lane = match record.key() {
                    // `lanes_max` is at most `CONCURRENCY_MAX`: the cast is exact.
                    Some(key) => {
                        crate::partitioner::partition_for_key(key, lanes_max as u32) as usize
                    }
                    None => offset.unsigned_abs() as usize % lanes_max,
                };
                end = offset + 1;
                if let Some(lane) = lanes.get_mut(lane) {
                    lane.push(record);
                }
            }
            let outcomes = futures::future::join_all(lanes.into_iter().map(|lane| async move {
                // The first offset of this lane left unprocessed (the breaker opened).
                for record in lane {
                    let offset = record.offset;
                    if !self.process(record, fetched_at, progress, handler).await? {
                        return Ok(Some(offset));
                    }
                }
                Ok::<_, ConsumeError>(None)
            }))
            .await;
            // Commit up to the first record some lane left (at-least-once: records after it
            // that other lanes processed are delivered again).
            let mut next = end;
            for outcome in outcomes {
                if let Some(stopped_at) = outcome? {
                    next = next.min(stopped_at);
                }
            }
            next
        };
        Ok(next)
    }
}
