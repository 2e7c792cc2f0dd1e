//! The produce path: batch checks, schema-ID checks through the schema cache, append, then
//! a group-commit fsync (`Durability::Fsync`) or flush-behind (`Durability::Memory`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use herald_broker_core::log::{AppendError, PartitionLog};
use herald_broker_core::validation::{validate_batch, BatchVerdict};
use herald_wire::batch::BatchView;
use herald_wire::messages::{Durability, SchemaValidation};
use herald_wire::{ErrorCode, Response};

use super::{error, throttled, Broker, Partition, Topic};
use crate::clock::now_ms;
use crate::fs::FileStorage;
use crate::group_commit::SyncError;
use crate::metrics::Reject;

/// Flush-behind: once a partition has this many bytes appended with `Memory` durability and
/// not synced, the background writeback of its active segment starts (the produce does not
/// wait for it). Sealing a segment syncs it under the partition lock (recovery verifies only
/// the active segment); without flush-behind a segment written without fsync reaches that
/// point with up to a whole segment (1 GiB by default) dirty, and every produce waits for its
/// writeback (~0.8 s at 1M records/s in the fixed-rate bench).
///
/// Small and only a start, not a sync: an fdatasync of 16 MiB (the first design) stalled the
/// appends running beside it for milliseconds (the journal commit it forces), which made the
/// slowest 1 % of acknowledgements at one request in flight 1.5× the rest; starting the
/// writeback of each MiB spreads the same disk work evenly (bench/RESULTS.md, issue 18).
pub const FLUSH_BEHIND_BYTES: u64 = 1024 * 1024;

/// Why a batch's schema IDs were not accepted.
pub(super) enum SchemaRefusal {
    /// An ID is refused: the batch is invalid (counted as a schema rejection).
    Refused(Response),
    /// The registry could not be asked (busy, failing): retry.
    Unavailable(Response),
}

impl Broker {
    pub(super) async fn produce(
        &self,
        topic_name: &str,
        partition_id: u32,
        durability: Durability,
        batch: Bytes,
    ) -> Result<Response, Response> {
        let started = Instant::now();
        let (topic, partition) = self.partition(topic_name, partition_id)?;
        let record_count;
        {
            let view = BatchView::parse(&batch).map_err(|e| {
                reject(
                    &topic,
                    Reject::Corrupt,
                    error(ErrorCode::CorruptBatch, e.to_string()),
                )
            })?;
            if view.size() != batch.len() {
                return Err(reject(
                    &topic,
                    Reject::Corrupt,
                    error(ErrorCode::CorruptBatch, "bytes after the batch"),
                ));
            }
            view.validate_records().map_err(|e| {
                reject(
                    &topic,
                    Reject::Corrupt,
                    error(ErrorCode::CorruptBatch, e.to_string()),
                )
            })?;
            record_count = view.record_count();
            self.check_schemas(&topic.name, &topic.config.validation, &view)
                .await
                .map_err(|refusal| match refusal {
                    SchemaRefusal::Refused(response) => reject(&topic, Reject::Schema, response),
                    SchemaRefusal::Unavailable(response) => response,
                })?;
        }
        let fenced = |reason: &str| {
            error(
                ErrorCode::Storage,
                format!("partition {topic_name}/{partition_id} is fenced and acknowledges nothing until the broker restarts and recovers it from its log: {reason}"),
            )
        };
        let (appended, handle) = {
            let mut log = partition.log();
            let appended = log.append(&batch, now_ms()).map_err(|e| match e {
                AppendError::OutOfOrderSequence { .. } => reject(
                    &topic,
                    Reject::Sequence,
                    error(ErrorCode::OutOfOrderSequence, e.to_string()),
                ),
                AppendError::ProducerFenced { .. } => reject(
                    &topic,
                    Reject::Fenced,
                    error(ErrorCode::ProducerFenced, e.to_string()),
                ),
                AppendError::Batch(_) => reject(
                    &topic,
                    Reject::Corrupt,
                    error(ErrorCode::CorruptBatch, e.to_string()),
                ),
                AppendError::Storage(_) => error(ErrorCode::Storage, e.to_string()),
                AppendError::Fenced { reason } => fenced(&reason),
            })?;
            if appended.duplicate {
                topic.metrics.duplicate_batches.increment(1);
            }
            let handle = match durability {
                Durability::Fsync => {
                    partition.unflushed_bytes.store(0, Ordering::Relaxed);
                    Some(
                        partition
                            .sync_handle(&log)
                            .map_err(|e| error(ErrorCode::Storage, e.to_string()))?,
                    )
                }
                Durability::Memory => {
                    if !appended.duplicate {
                        self.flush_behind(&partition, &log, &topic, batch.len() as u64);
                    }
                    None
                }
            };
            (appended, handle)
        };
        partition.appended.notify_waiters();
        if let Some(handle) = handle {
            self.group_commit.sync(handle).await.map_err(|e| match e {
                SyncError::QueueFull => throttled(e.to_string()),
                SyncError::Storage(failure) => {
                    let reason = format!("a sync failed: {failure}");
                    partition.fence.set(reason.as_str());
                    fenced(&reason)
                }
                other => error(ErrorCode::Storage, other.to_string()),
            })?;
        }
        topic.metrics.records_in.increment(u64::from(record_count));
        topic.metrics.bytes_in.increment(batch.len() as u64);
        self.metrics
            .produce_duration(durability)
            .record(started.elapsed());
        Ok(Response::Produced {
            base_offset: appended.base_offset,
            append_time_ms: appended.append_time_ms,
            record_offsets: appended.record_offsets,
        })
    }

    /// Checks the batch's schema IDs, learning what the cache lacks a bounded round at a
    /// time (see `herald_broker_core::validation`): each round's IDs are looked up in record
    /// order, and the first refused one ends the lookups, so the next round refuses the batch
    /// there without asking the registry about the IDs after it.
    pub(super) async fn check_schemas(
        &self,
        topic: &str,
        validation: &SchemaValidation,
        view: &BatchView<'_>,
    ) -> Result<(), SchemaRefusal> {
        use std::collections::BTreeMap;

        use herald_broker_core::validation::{Part, Verdict, VALIDATION_ROUNDS_MAX};

        use crate::schema_cache::LookupError;

        // What this produce learned, consulted before the cache: an entry evicted or expired
        // between rounds does not send us back to the registry. At most
        // SCHEMA_IDS_PER_BATCH_MAX entries (validate_batch refuses a batch with more).
        let mut learned: BTreeMap<(Part, u32), Verdict> = BTreeMap::new();
        for _ in 0..VALIDATION_ROUNDS_MAX {
            let verdict = validate_batch(view, validation, |part, id| {
                match learned.get(&(part, id)) {
                    Some(verdict) => verdict.clone(),
                    None => self.schemas.cached(topic, validation.strategy, part, id),
                }
            });
            match verdict {
                BatchVerdict::Accepted => return Ok(()),
                BatchVerdict::Refused(failure) => {
                    let message = format!("batch refused: {failure}");
                    return Err(SchemaRefusal::Refused(error(
                        ErrorCode::SchemaValidationFailed,
                        message,
                    )));
                }
                BatchVerdict::NeedLookups(missing) => {
                    for (part, id) in missing {
                        let verdict = self
                            .schemas
                            .learn(topic, validation.strategy, part, id)
                            .await
                            .map_err(|e| {
                                SchemaRefusal::Unavailable(
                                    if matches!(e, LookupError::Busy { .. }) {
                                        throttled(e.to_string())
                                    } else {
                                        error(ErrorCode::RegistryUnavailable, e.to_string())
                                    },
                                )
                            })?;
                        let refused = matches!(verdict, Verdict::Refused { .. });
                        learned.insert((part, id), verdict);
                        if refused {
                            break;
                        }
                    }
                }
            }
        }
        // Only if cached verdicts of the IDs this produce did not learn itself expired
        // between rounds: ask the caller to retry.
        Err(SchemaRefusal::Unavailable(throttled(
            "schema cache is churning; retry",
        )))
    }

    /// Starts the background writeback of `partition`'s active segment once
    /// `FLUSH_BEHIND_BYTES` were appended without one (see the constant). Called with the log
    /// locked. A failure to start it fences the partition, as a failed sync does.
    fn flush_behind(
        &self,
        partition: &Partition,
        log: &PartitionLog<FileStorage>,
        topic: &Topic,
        appended: u64,
    ) {
        let pending = partition
            .unflushed_bytes
            .fetch_add(appended, Ordering::Relaxed)
            + appended;
        if pending < FLUSH_BEHIND_BYTES || partition.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        partition.unflushed_bytes.store(0, Ordering::Relaxed);
        let handle = match partition.sync_handle(log) {
            Ok(handle) => handle,
            Err(error) => {
                partition.flushing.store(false, Ordering::Release);
                tracing::warn!(topic = %topic.name, %error, "flush-behind: no sync handle");
                return;
            }
        };
        topic.metrics.flush_behind_syncs.increment(1);
        let flushing = partition.flushing.clone();
        let fence = partition.fence.clone();
        let errors = topic.metrics.flush_behind_errors.clone();
        let topic = topic.name.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = handle.start_writeback() {
                tracing::error!(topic, %error, "flush-behind writeback failed: the partition is fenced");
                errors.increment(1);
                fence.set(format!("a flush-behind writeback failed: {error}"));
            }
            flushing.store(false, Ordering::Release);
        });
    }
}

/// Counts a refused batch on `topic`, by `reason`, and passes the response on.
fn reject(topic: &Topic, reason: Reject, response: Response) -> Response {
    topic.metrics.rejected(reason).increment(1);
    response
}

#[cfg(test)]
mod tests {
    //! A failed sync fences its partition: after one, no produce on it is acknowledged (the
    //! kernel reports a failed writeback once, so a later sync that succeeds says nothing
    //! about the pages the failed one lost — the "fsyncgate" lesson).

    use std::sync::Arc;

    use herald_broker_core::storage::{StorageError, SyncHandle};
    use herald_wire::messages::{Durability, TopicConfig};
    use herald_wire::{ErrorCode, Request, Response};

    use crate::broker::{test_support, Broker, Partition};

    struct FailingSync;

    impl SyncHandle for FailingSync {
        fn sync(&self) -> Result<(), StorageError> {
            Err(StorageError {
                operation: "fdatasync",
                path: "segment".to_owned(),
                reason: "EIO".to_owned(),
            })
        }
    }

    /// Syncs, but cannot start a background writeback.
    struct FailingWriteback;

    impl SyncHandle for FailingWriteback {
        fn sync(&self) -> Result<(), StorageError> {
            Ok(())
        }

        fn start_writeback(&self) -> Result<(), StorageError> {
            Err(StorageError {
                operation: "sync_file_range",
                path: "segment".to_owned(),
                reason: "EIO".to_owned(),
            })
        }
    }

    fn batch() -> Vec<u8> {
        test_support::one_record(b"v")
    }

    /// A broker over `dir` with topic `t` (the default configuration).
    async fn broker_with_topic_t(dir: &std::path::Path) -> Broker {
        let broker = test_support::broker(dir);
        let created = broker
            .handle(Request::CreateTopic {
                name: "t".into(),
                config: TopicConfig::default(),
            })
            .await;
        assert!(matches!(created, Response::TopicCreated), "{created:?}");
        broker
    }

    /// Makes `handle` the partition's cached sync handle for its active segment (`None`:
    /// the log's own again).
    fn use_sync_handle(partition: &Partition, handle: Option<Arc<dyn SyncHandle>>) {
        let active = partition.log().active_segment();
        *partition
            .sync_handle
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = handle.map(|handle| (active, handle));
    }

    fn code(response: &Response) -> Option<ErrorCode> {
        match response {
            Response::Error(body) => Some(body.code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn after_a_failed_sync_the_partition_acknowledges_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker_with_topic_t(dir.path()).await;
        let produce = |durability| {
            broker.handle(Request::Produce {
                topic: "t".into(),
                partition: 0,
                durability,
                batch: batch().into(),
            })
        };
        assert!(code(&produce(Durability::Fsync).await).is_none());
        // The next sync of the segment fails.
        let (_, partition) = broker.partition("t", 0).expect("partition");
        use_sync_handle(&partition, Some(Arc::new(FailingSync)));
        assert_eq!(
            code(&produce(Durability::Fsync).await),
            Some(ErrorCode::Storage)
        );
        // A working handle again: the partition still acknowledges nothing.
        use_sync_handle(&partition, None);
        for durability in [Durability::Fsync, Durability::Memory] {
            let answer = produce(durability).await;
            assert_eq!(code(&answer), Some(ErrorCode::Storage), "{answer:?}");
        }
    }

    /// Memory appends past `FLUSH_BEHIND_BYTES` start a background writeback; one that cannot
    /// be started fences the partition as a failed sync does (the kernel may have dropped the
    /// pages it could not write), so nothing more is acknowledged on it.
    #[tokio::test]
    async fn a_flush_behind_writeback_that_fails_fences_the_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker_with_topic_t(dir.path()).await;
        let (_, partition) = broker.partition("t", 0).expect("partition");
        use_sync_handle(&partition, Some(Arc::new(FailingWriteback)));
        let large = test_support::one_record(&vec![7u8; 300 * 1024]);
        let produce = |batch: &Vec<u8>| {
            broker.handle(Request::Produce {
                topic: "t".into(),
                partition: 0,
                durability: Durability::Memory,
                batch: batch.clone().into(),
            })
        };
        // Up to 1 MiB: acknowledged; the append past it starts the writeback that fails.
        let mut appended = 0;
        while appended < super::FLUSH_BEHIND_BYTES {
            let answer = produce(&large).await;
            assert!(code(&answer).is_none(), "{answer:?}");
            appended += large.len() as u64;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let answer = produce(&batch()).await;
            if code(&answer) == Some(ErrorCode::Storage) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still acknowledged after the failed writeback: {answer:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(partition.fence.reason().is_some());
    }
}
