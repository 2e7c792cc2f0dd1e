//! Per-partition batching: the batch each partition is filling (`Accumulated`), and
//! flushing it (when full, or when its linger timer fires) to the partition's sender as a
//! `Queued` batch.

use herald_wire::batch::BatchWriter;
use tokio::sync::OwnedSemaphorePermit;

use super::delivery::Completer;
use super::RawProducer;

/// A batch's records (encoded as they were sent), its outcome and its buffer bytes (one
/// permit: released once).
pub(super) struct Queued {
    pub(super) batch: BatchWriter,
    pub(super) outcome: Completer,
    pub(super) permit: Option<OwnedSemaphorePermit>,
}

/// A partition's batch being filled.
pub(super) struct Accumulated {
    pub(super) batch: BatchWriter,
    pub(super) outcome: Completer,
    pub(super) permit: Option<OwnedSemaphorePermit>,
    /// Size estimates of its records (at least their encoded size).
    pub(super) bytes: usize,
}

impl Accumulated {
    /// An empty batch with room for `record_bytes` (the previous batch's size: batches of a
    /// steady stream are alike, so the buffer rarely grows).
    pub(super) fn new(record_bytes: usize) -> Self {
        Self {
            batch: BatchWriter::with_capacity(record_bytes),
            outcome: Completer::new(),
            permit: None,
            bytes: 0,
        }
    }
}

impl RawProducer {
    pub(super) async fn flush_partition(&self, partition: u32) {
        let Some(flush_lock) = self.flush_locks.get(partition as usize) else {
            return;
        };
        let _ordered = flush_lock.lock().await;
        let batch = {
            let mut accumulators = self.accumulators.lock().unwrap_or_else(|p| p.into_inner());
            accumulators
                .get_mut(partition as usize)
                .filter(|batch| !batch.batch.is_empty())
                .map(|batch| {
                    let size = batch.batch.encoded_len();
                    std::mem::replace(batch, Accumulated::new(size))
                })
        };
        if let Some(batch) = batch {
            if let Some(sender) = self.senders.get(partition as usize) {
                let queued = Queued {
                    batch: batch.batch,
                    outcome: batch.outcome,
                    permit: batch.permit,
                };
                // A closed channel drops the batch: its outcome reports `Closed`.
                let _ = sender.send(queued).await;
            }
        }
    }
}
