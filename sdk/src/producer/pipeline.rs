//! Each partition's sender: its batches in flight on one ordered pipeline (at most
//! [`IN_FLIGHT_MAX`]), sequence numbers, retries (backoff, retry budget, reconnecting), the
//! breaker's outcomes, and what follows a batch that failed for good.
//!
//! At most once per send. A batch that went out may be stored even though its answer never
//! came (the answer was lost, not the request), so it is only ever resent as the same bytes,
//! under the same producer id and sequence: the broker acknowledges such a copy with the
//! original offsets. When the oldest batch in flight fails for good, the broker's sequence
//! for the producer id is unknown from then on, so nothing more goes out under it:
//! - the failed batch reports why it failed;
//! - every batch behind it that went out at least once reports
//!   [`ProduceError::Indeterminate`]: it may or may not be stored, and it is not resent,
//!   because a copy re-stamped under a fresh producer id would be stored a second time
//!   wherever the broker already holds it under the old one;
//! - only the batches never sent are re-sequenced under a fresh producer id (asked for just
//!   before the next batch goes out, and retried like a send) and sent.
//!
//! One exception, where nothing behind the failed batch can be stored: the broker refused it
//! (a non-retryable code, which it only answers before appending) the one time it was sent.
//! The batches sent behind it went out after it on the same ordered stream, with later
//! sequences under the same id, and the broker refuses a gap; so they are re-sequenced and
//! sent too (one refused record does not take the window down with it).
//!
//! A caller retries an indeterminate send safely by sending it again with the same
//! idempotency key (the `idempotency-key` header) to a topic with a dedup window: the broker
//! drops the copy if the first one was stored.
//!
//! A batch's delivery timeout (`ProducerConfig::retry.deadline`, Kafka's
//! `delivery.timeout.ms`) also bounds the wait for its answer, so a send whose answers are
//! lost resolves by then rather than after [`REQUEST_TIMEOUT`] or the connection's idle
//! timeout.
//!
//! Every failed try counts towards the oldest batch's backoff: a write whose answer failed or
//! did not come, and also a fresh producer id not obtained or a pipeline not opened before it
//! could be written. Otherwise a sender whose broker is down retries at the first backoff
//! step (and reconnects) for the whole delivery timeout. A connection lost is replaced once
//! for all the partitions' senders (see `Shared::reconnect`).
//!
//! A batch behind the failed one whose acknowledgement already came is stored where it says:
//! it completes with its offsets, not as indeterminate.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_broker_client::{Pipeline, RequestError, Route, REQUEST_TIMEOUT};
use herald_wire::batch::{restamp_producer, ProducerStamp};
use herald_wire::messages::{Request, Response};
use herald_wire::{Api, ErrorCode};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::metrics::ProducerMetrics;
use crate::policy::backoff::RetryDecision;
use crate::policy::budget::RetryKind;

use super::accumulator::Queued;
use super::delivery::{Completer, Landed};
use super::{ProduceError, Shared};

/// Longest wait before a retry after a cluster node's connection was lost (or could not be
/// made): the partition's new leader is elected within the election timeout, and the
/// exponential backoff meant for an overloaded broker would wait out the failover many
/// times over.
pub(super) const FAILOVER_RETRY_DELAY_MAX: Duration = Duration::from_millis(250);

/// Batches of one partition in flight at once (Kafka's limit for idempotent producers: the
/// broker remembers the last five batches per producer, so any of them can be resent).
pub const IN_FLIGHT_MAX: usize = 5;

struct InFlight {
    /// Records in the batch.
    records: u32,
    outcome: Completer,
    _permit: Option<OwnedSemaphorePermit>,
    batch: Vec<u8>,
    /// When it was queued: its delivery timeout counts from here.
    started: Instant,
    /// Tries at delivering it under its current stamp, what its backoff grows with: each
    /// write, and each failure to get it ready for one while it was the oldest in the window
    /// (no fresh producer id, no pipeline).
    attempts: u32,
    /// Writes of the batch under its current stamp (a subset of `attempts`).
    writes: u32,
    /// When it was last written (its answer has been awaited since).
    written: Instant,
    /// Whether the batch went out at least once under its current stamp (set before the
    /// write, so a write that failed part way counts): the broker may hold it, so it is only
    /// ever resent as these bytes, never re-stamped under another producer id.
    sent: bool,
    /// The broker's answer, once sent on the current pipeline.
    answer: Option<oneshot::Receiver<Result<Response, RequestError>>>,
}

/// Sends one partition's batches in order on one pipeline (an ordered stream), up to
/// [`IN_FLIGHT_MAX`] at once. Sequences are assigned when a batch is encoded; a retry resends
/// the same bytes, and after a transient failure every batch in flight is resent in order,
/// so the broker stores each exactly once (it acknowledges a resent duplicate with its
/// original offsets). After a batch fails for good (see the module docs), the batches that
/// went out behind it end indeterminate (or acknowledged, when their answer came) and the
/// others go out under a fresh producer id.
pub(super) async fn partition_sender(
    shared: Arc<Shared>,
    partition: u32,
    mut batches: mpsc::Receiver<Queued>,
) {
    let mut producer = shared.producer;
    let mut next_sequence: i32 = 0;
    let mut window: VecDeque<InFlight> = VecDeque::new();
    let mut pipeline: Option<Pipeline> = None;
    // The connection the last request went over (the pipeline's, or the fresh producer
    // id's): a failure is reported on it to the router, which replaces it (once, however
    // many senders saw it fail) or forgets the partition's leader.
    let mut route: Option<Route> = None;
    let mut closed = false;
    // Set when a batch failed for good: the broker's sequence for `producer` is unknown, so
    // nothing more goes out under it. The window's batches (none of them sent by then) are
    // re-stamped under a fresh producer id first.
    let mut fresh_producer_needed = false;
    loop {
        if window.is_empty() {
            match batches.recv().await {
                Some(records) => admit(&mut window, records, producer, &mut next_sequence),
                None => return,
            }
        }
        let ready = if fresh_producer_needed {
            let fresh = match shared.router.any().await {
                Ok(any) => {
                    let client = any.client.clone();
                    route = Some(any);
                    client.init_producer("").await
                }
                Err(error) => Err(error),
            };
            match fresh {
                Ok(fresh) => {
                    producer = fresh;
                    next_sequence = restamp_unsent(&mut window, producer);
                    fresh_producer_needed = false;
                    Ok(())
                }
                Err(error) => {
                    // A failed attempt of the front batch (never sent): its backoff grows,
                    // and in the end its delivery timeout ends it.
                    if let Some(front) = window.front_mut() {
                        front.attempts += 1;
                    }
                    Err(error)
                }
            }
        } else {
            Ok(())
        };
        let sent = match ready {
            Ok(()) => send_unsent(&shared, partition, &mut pipeline, &mut route, &mut window).await,
            Err(error) => Err(error),
        };
        let outcome = match sent {
            Err(error) => Err(error),
            Ok(()) => {
                let deadline = shared.config.retry.deadline;
                let Some((wait, written, mut answer)) = window.front_mut().and_then(|front| {
                    let wait = answer_wait(deadline, front.started.elapsed());
                    let written = front.written;
                    front.answer.take().map(|answer| (wait, written, answer))
                }) else {
                    continue;
                };
                tokio::select! {
                    biased;
                    answer = tokio::time::timeout(wait, &mut answer) => produced(answer, written),
                    more = batches.recv(), if !closed && window.len() < IN_FLIGHT_MAX => {
                        match more {
                            Some(records) => {
                                admit(&mut window, records, producer, &mut next_sequence);
                            }
                            None => closed = true,
                        }
                        if let Some(front) = window.front_mut() {
                            front.answer = Some(answer);
                        }
                        continue;
                    }
                }
            }
        };
        let now = Instant::now();
        let error = match outcome {
            Ok(landed) => {
                shared.on_outcome(now, true);
                shared.budget().on_success();
                if let Some(done) = window.pop_front() {
                    shared.metrics.acked.increment(u64::from(done.records));
                    finish(done, Ok(landed));
                }
                continue;
            }
            Err(error) => error,
        };
        let moved = !counts_as_failure(&error);
        if !moved {
            shared.on_outcome(now, false);
        }
        let (attempts, started, front_sent) = window.front().map_or((1, now, false), |front| {
            (front.attempts.max(1), front.started, front.sent)
        });
        let verdict = if !error.retryable() {
            let (code, message) = match &error {
                RequestError::Broker { code, message, .. } => (*code, message.clone()),
                other => (ErrorCode::Internal, other.to_string()),
            };
            Err(ProduceError::Refused { code, message })
        } else if !moved
            && !shared
                .budget()
                .try_retry(if matches!(error, RequestError::Timeout(_)) {
                    RetryKind::Timeout
                } else {
                    RetryKind::Error
                })
        {
            Err(ProduceError::BudgetExhausted {
                sent: front_sent,
                last: error.to_string(),
            })
        } else {
            // The broker's own retry delay, when it gave one (throttled, or a leader moved),
            // replaces the backoff step; the delivery timeout bounds both.
            let decision =
                shared
                    .config
                    .retry
                    .decide(attempts, started.elapsed(), rand::random::<f64>());
            retry_delay(decision, &error, shared.router.is_cluster()).ok_or_else(|| {
                ProduceError::Timeout {
                    attempts,
                    sent: front_sent,
                    last: error.to_string(),
                }
            })
        };
        match verdict {
            Ok(delay) => {
                // No answer is awaited on this pipeline any more: the window is resent as it
                // is, on a new one.
                pipeline = None;
                for entry in &mut window {
                    entry.answer = None;
                }
                shared.metrics.retried.increment(1);
                // A lost connection is replaced and a moved leader looked up again before
                // the next attempt (best effort: if the broker is still down, it fails again).
                if let Some(route) = &route {
                    shared.router.failed(&shared.topic, route, &error);
                }
                tokio::time::sleep(delay).await;
            }
            Err(failure) => {
                // The failed batch may or may not be stored: reusing its sequence could make
                // the next batch look like its duplicate, skipping it could leave a gap. So
                // the batches that went out behind it end indeterminate (unless the broker
                // refused it outright, or acknowledged them already), and the others get a
                // fresh producer id (a clean sequence) before anything more is sent.
                let front_unstored = window.front().is_some_and(|front| {
                    !front.sent || (front.writes == 1 && refused_unstored(&error))
                });
                // The answers already received are read first, then nothing more is awaited
                // on this pipeline.
                settle_failed_front(&mut window, failure, front_unstored, &shared.metrics);
                pipeline = None;
                for entry in &mut window {
                    entry.answer = None;
                }
                fresh_producer_needed = true;
            }
        }
    }
}

/// Whether `error` counts against the path: it opens the breaker and its retry spends the
/// retry budget. A node answering that another leads the partition is healthy (a leader
/// moved: an election, a failover), so `NotLeader` does neither; the delivery timeout still
/// bounds its retries.
fn counts_as_failure(error: &RequestError) -> bool {
    error.code() != Some(ErrorCode::NotLeader)
}

/// How long to wait before retrying after `error`, given the backoff's `decision` (`None`:
/// give up, the delivery timeout has passed). The broker's own retry delay, when it gave one
/// (throttled, or a leader moved), replaces the backoff step, and the delivery timeout bounds
/// it too; in a cluster (`cluster`) a lost connection is retried within
/// [`FAILOVER_RETRY_DELAY_MAX`]: another node takes the partition over within an election
/// timeout.
fn retry_delay(decision: RetryDecision, error: &RequestError, cluster: bool) -> Option<Duration> {
    let RetryDecision::RetryAfter(delay) = decision else {
        return None;
    };
    Some(match error {
        RequestError::Broker { retry_after_ms, .. } if *retry_after_ms > 0 => {
            Duration::from_millis(u64::from(*retry_after_ms))
        }
        error if cluster && error.connection_lost() => delay.min(FAILOVER_RETRY_DELAY_MAX),
        _ => delay,
    })
}

/// Completes a batch taken out of the window. Room in the buffer first, then the news: a
/// sender woken by the outcome finds the space freed.
fn finish(entry: InFlight, result: Result<Landed, ProduceError>) {
    let InFlight {
        outcome, _permit, ..
    } = entry;
    drop(_permit);
    outcome.complete(result);
}

/// After the front batch failed for good: completes it with `failure` and keeps, in order,
/// the batches behind it that may go out under a fresh producer id; completes the others,
/// with their offsets when their acknowledgement already came (they are stored, once), else
/// with [`ProduceError::Indeterminate`].
///
/// Kept: the batches never sent, and all of them when the front was certainly not stored
/// (`front_unstored`: never sent, or refused by the broker the only time it was sent). In
/// that case the broker stored none of those behind it either: they went out after it on the
/// same ordered stream with later sequences under the same id, and the broker refuses a gap.
/// Otherwise a batch that went out may be held by the broker under the current producer id,
/// so a copy under a fresh id could be stored a second time: it is not resent.
fn settle_failed_front(
    window: &mut VecDeque<InFlight>,
    failure: ProduceError,
    front_unstored: bool,
    metrics: &ProducerMetrics,
) {
    let Some(failed) = window.pop_front() else {
        return;
    };
    let reason = format!("a batch sent before it on its partition failed for good: {failure}");
    metrics.failed.increment(u64::from(failed.records));
    finish(failed, Err(failure));
    for mut entry in std::mem::take(window) {
        if let Some(landing) = acknowledged(&mut entry) {
            metrics.acked.increment(u64::from(entry.records));
            finish(entry, Ok(landing));
        } else if front_unstored {
            // Not stored under its current stamp: it goes out again as a new batch.
            entry.sent = false;
            entry.attempts = 0;
            entry.writes = 0;
            window.push_back(entry);
        } else if entry.sent {
            metrics.indeterminate.increment(u64::from(entry.records));
            tracing::warn!(
                records = entry.records,
                %reason,
                "a batch behind a failed one may or may not be stored: reported indeterminate, not resent"
            );
            finish(
                entry,
                Err(ProduceError::Indeterminate {
                    reason: reason.clone(),
                }),
            );
        } else {
            window.push_back(entry);
        }
    }
}

/// Where `entry` landed, if the broker's acknowledgement of it has already been received
/// (answers on a pipeline come in order, so behind a front whose answer never came there is
/// none; behind a front the broker answered with an error there may be).
fn acknowledged(entry: &mut InFlight) -> Option<Landed> {
    let answer = entry.answer.as_mut()?.try_recv().ok()?;
    landed(answer).ok()
}

/// Whether the broker answered a produce with `error` without storing its batch. It refuses a
/// produce with a non-retryable code (a corrupt batch, a schema, a sequence gap, a fenced
/// producer, an unknown topic) only before appending; a retryable one (storage, throttling)
/// may come after the append, and a code this client does not know may mean anything.
fn refused_unstored(error: &RequestError) -> bool {
    matches!(
        error,
        RequestError::Broker { code, .. }
            if !code.retryable() && !matches!(code, ErrorCode::Unknown(_))
    )
}

/// Re-sequences the window's batches (none of them sent) under `producer` from sequence 0;
/// returns the sequence after them.
fn restamp_unsent(window: &mut VecDeque<InFlight>, producer: (i64, i16)) -> i32 {
    let mut next_sequence: i32 = 0;
    for entry in window.iter_mut() {
        // `settle_failed_front` kept none marked sent, and nothing is sent before this.
        debug_assert!(!entry.sent, "a batch that went out is never re-stamped");
        if entry.sent {
            continue;
        }
        restamp_producer(&mut entry.batch, producer.0, producer.1, next_sequence);
        next_sequence = next_sequence.wrapping_add(entry.records as i32);
    }
    next_sequence
}

/// How long to wait for the front batch's answer: [`REQUEST_TIMEOUT`], or what is left of
/// the batch's delivery timeout (`deadline`, counted from when it was queued, `elapsed` ago)
/// when that is shorter. Without this bound a batch whose answers are lost outlives its
/// delivery timeout by up to the request timeout.
fn answer_wait(deadline: Option<Duration>, elapsed: Duration) -> Duration {
    deadline.map_or(REQUEST_TIMEOUT, |deadline| {
        deadline.saturating_sub(elapsed).min(REQUEST_TIMEOUT)
    })
}

/// Finishes a queued batch with the next sequence and puts it in the window (or fails it).
fn admit(
    window: &mut VecDeque<InFlight>,
    queued: Queued,
    producer: (i64, i16),
    next_sequence: &mut i32,
) {
    let Queued {
        batch,
        outcome,
        permit,
    } = queued;
    let records = batch.len();
    match batch.finish(Some(ProducerStamp {
        id: producer.0,
        epoch: producer.1,
        base_sequence: *next_sequence,
    })) {
        Ok(batch) => {
            *next_sequence = next_sequence.wrapping_add(records as i32);
            let now = Instant::now();
            window.push_back(InFlight {
                records,
                outcome,
                _permit: permit,
                batch,
                started: now,
                attempts: 0,
                writes: 0,
                written: now,
                sent: false,
                answer: None,
            });
        }
        Err(error) => {
            outcome.complete(Err(ProduceError::Refused {
                code: ErrorCode::CorruptBatch,
                message: error.to_string(),
            }));
        }
    }
}

/// Sends, in order, every batch of the window not yet sent on the current pipeline, opening
/// one first if there is none, to the partition's leader (`route`: set to its connection).
async fn send_unsent(
    shared: &Shared,
    partition: u32,
    pipeline: &mut Option<Pipeline>,
    route: &mut Option<Route>,
    window: &mut VecDeque<InFlight>,
) -> Result<(), RequestError> {
    if window.iter().all(|entry| entry.answer.is_some()) {
        return Ok(());
    }
    if pipeline.is_none() {
        let opened = match shared.router.leader(&shared.topic, partition).await {
            Ok(leader) => {
                let client = leader.client.clone();
                *route = Some(leader);
                client.pipeline().await
            }
            Err(error) => Err(error),
        };
        match opened {
            Ok(open) => *pipeline = Some(open),
            Err(error) => {
                // Without a pipeline, no answer is awaited: the front is among the batches
                // to write, and this is a failed attempt of it (its backoff grows).
                if let Some(front) = window.front_mut() {
                    front.attempts += 1;
                }
                return Err(error);
            }
        }
    }
    let Some(open) = pipeline.as_ref() else {
        return Ok(());
    };
    for entry in window.iter_mut().filter(|entry| entry.answer.is_none()) {
        entry.attempts += 1;
        entry.writes += 1;
        // From here the broker may get the batch, even if the write fails part way.
        entry.sent = true;
        entry.written = Instant::now();
        let batch = &entry.batch;
        let body_bytes = shared.topic.len() + batch.len() + 16;
        let sent = open
            .send_encoded(Api::Produce, body_bytes, |out| {
                Request::encode_produce(
                    out,
                    &shared.topic,
                    partition,
                    shared.config.durability,
                    batch,
                )
            })
            .await;
        match sent {
            Ok(answer) => entry.answer = Some(answer),
            Err(error) => {
                *pipeline = None;
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The base offset of an acknowledged batch, or why it was not (`written`: when the batch was
/// written, so a missing answer reports how long it was really awaited, not the last wait's
/// remainder of the delivery timeout, which is zero once that has passed).
fn produced(
    answer: Result<
        Result<Result<Response, RequestError>, oneshot::error::RecvError>,
        tokio::time::error::Elapsed,
    >,
    written: Instant,
) -> Result<Landed, RequestError> {
    match answer {
        Err(_) => Err(RequestError::Timeout(written.elapsed())),
        Ok(Err(_)) => Err(RequestError::Stream("pipeline closed".to_owned())),
        Ok(Ok(answer)) => landed(answer),
    }
}

/// The landing an answer to a produce reports, or the error it is.
fn landed(answer: Result<Response, RequestError>) -> Result<Landed, RequestError> {
    match answer.and_then(herald_broker_client::refused)? {
        Response::Produced {
            base_offset,
            record_offsets,
            ..
        } => Ok(Landed {
            base_offset,
            record_offsets,
        }),
        other => Err(RequestError::Unexpected {
            api: "produce",
            answer: format!("{other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use herald_wire::batch::{BatchView, BatchWriter};

    use super::super::delivery::DeliveryFuture;
    use super::*;

    /// A window entry of `records` records under `producer` from `sequence`, sent or not,
    /// and the delivery future of its first record.
    fn in_flight(
        records: u32,
        producer: (i64, i16),
        sequence: i32,
        sent: bool,
    ) -> (InFlight, DeliveryFuture) {
        let mut writer = BatchWriter::with_capacity(64);
        for n in 0..records {
            writer
                .push(
                    0,
                    None,
                    Some(n.to_be_bytes().as_slice()),
                    std::iter::empty::<(&str, &[u8])>(),
                )
                .expect("push");
        }
        let batch = writer
            .finish(Some(ProducerStamp {
                id: producer.0,
                epoch: producer.1,
                base_sequence: sequence,
            }))
            .expect("finish");
        let outcome = Completer::new();
        let future = DeliveryFuture {
            outcome: outcome.0.clone(),
            partition: 0,
            index: 0,
            slot: None,
        };
        let now = Instant::now();
        let entry = InFlight {
            records,
            outcome,
            _permit: None,
            batch,
            started: now,
            attempts: u32::from(sent),
            writes: u32::from(sent),
            written: now,
            sent,
            answer: None,
        };
        (entry, future)
    }

    /// The future's outcome if it has one.
    fn resolved(
        future: &mut DeliveryFuture,
    ) -> Option<Result<super::super::Delivery, ProduceError>> {
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        match std::pin::Pin::new(future).poll(&mut cx) {
            std::task::Poll::Ready(result) => Some(result),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn after_a_final_failure_only_batches_never_sent_go_out_again_under_a_fresh_id() {
        let old = (7, 0);
        let mut window = VecDeque::new();
        let mut deliveries = Vec::new();
        let mut sequence = 0;
        // Three batches went out (the front failed for good), two were never sent.
        for (records, sent) in [(2, true), (3, true), (1, true), (4, false), (2, false)] {
            let (entry, future) = in_flight(records, old, sequence, sent);
            sequence += records as i32;
            window.push_back(entry);
            deliveries.push(future);
        }
        settle_failed_front(
            &mut window,
            ProduceError::Timeout {
                attempts: 1,
                sent: true,
                last: "no answer within 1s".to_owned(),
            },
            false,
            &ProducerMetrics::new("settle"),
        );
        assert!(matches!(
            resolved(&mut deliveries[0]),
            Some(Err(ProduceError::Timeout { .. }))
        ));
        for future in &mut deliveries[1..3] {
            match resolved(future) {
                Some(Err(ProduceError::Indeterminate { reason })) => {
                    assert!(reason.contains("no answer within 1s"), "{reason}");
                }
                other => panic!("a batch that went out is indeterminate, not {other:?}"),
            }
        }
        for future in &mut deliveries[3..] {
            assert!(resolved(future).is_none(), "a batch never sent is kept");
        }
        assert_eq!(window.len(), 2);
        assert!(window.iter().all(|entry| !entry.sent));

        let fresh = (8, 0);
        assert_eq!(restamp_unsent(&mut window, fresh), 6);
        let stamps: Vec<(i64, i16, i32)> = window
            .iter()
            .map(|entry| {
                let view = BatchView::parse(&entry.batch).expect("a valid batch (CRC included)");
                (
                    view.producer_id(),
                    view.producer_epoch(),
                    view.base_sequence(),
                )
            })
            .collect();
        assert_eq!(
            stamps,
            [(8_i64, 0_i16, 0_i32), (8, 0, 4)],
            "a clean sequence under the fresh id"
        );
    }

    #[test]
    fn a_front_never_sent_fails_alone() {
        let mut window = VecDeque::new();
        let (front, mut front_future) = in_flight(1, (3, 0), 0, false);
        let (behind, mut behind_future) = in_flight(1, (3, 0), 1, false);
        window.push_back(front);
        window.push_back(behind);
        settle_failed_front(
            &mut window,
            ProduceError::BudgetExhausted {
                sent: false,
                last: "connection lost".to_owned(),
            },
            true,
            &ProducerMetrics::new("settle"),
        );
        assert!(matches!(
            resolved(&mut front_future),
            Some(Err(ProduceError::BudgetExhausted { .. }))
        ));
        assert!(resolved(&mut behind_future).is_none());
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn behind_a_batch_the_broker_refused_nothing_is_stored_so_everything_goes_out_again() {
        let mut window = VecDeque::new();
        let mut deliveries = Vec::new();
        for sequence in 0..3 {
            let (entry, future) = in_flight(1, (5, 0), sequence, true);
            window.push_back(entry);
            deliveries.push(future);
        }
        settle_failed_front(
            &mut window,
            ProduceError::Refused {
                code: ErrorCode::SchemaValidationFailed,
                message: "unknown schema id".to_owned(),
            },
            true,
            &ProducerMetrics::new("settle"),
        );
        assert!(matches!(
            resolved(&mut deliveries[0]),
            Some(Err(ProduceError::Refused { .. }))
        ));
        for future in &mut deliveries[1..] {
            assert!(resolved(future).is_none(), "kept, to go out again");
        }
        assert_eq!(window.len(), 2);
        assert!(window
            .iter()
            .all(|entry| !entry.sent && entry.attempts == 0 && entry.writes == 0));
        assert_eq!(restamp_unsent(&mut window, (6, 0)), 2);
    }

    /// Catches: an acknowledgement already received behind the failed front reported as
    /// indeterminate (the batch is stored, at the offsets it says).
    #[test]
    fn a_batch_acknowledged_behind_the_failed_front_completes_with_its_offsets() {
        let mut window = VecDeque::new();
        let mut deliveries = Vec::new();
        for sequence in 0..3 {
            let (entry, future) = in_flight(1, (9, 0), sequence, true);
            window.push_back(entry);
            deliveries.push(future);
        }
        // The broker answered the second batch (the answer came in, unread); the third's
        // answer never came.
        let (acked, acked_answer) = oneshot::channel();
        acked
            .send(Ok(Response::Produced {
                base_offset: 41,
                append_time_ms: 0,
                record_offsets: Vec::new(),
            }))
            .expect("receiver alive");
        let (_unanswered, unanswered_answer) = oneshot::channel();
        window[1].answer = Some(acked_answer);
        window[2].answer = Some(unanswered_answer);
        settle_failed_front(
            &mut window,
            ProduceError::BudgetExhausted {
                sent: true,
                last: "broker error Storage".to_owned(),
            },
            false,
            &ProducerMetrics::new("settle"),
        );
        assert!(matches!(
            resolved(&mut deliveries[0]),
            Some(Err(ProduceError::BudgetExhausted { .. }))
        ));
        match resolved(&mut deliveries[1]) {
            Some(Ok(delivery)) => assert_eq!(delivery.offset, 41),
            other => panic!("acknowledged before the front failed: {other:?}"),
        }
        assert!(matches!(
            resolved(&mut deliveries[2]),
            Some(Err(ProduceError::Indeterminate { .. }))
        ));
        assert!(window.is_empty());
    }

    #[test]
    fn only_a_non_retryable_broker_refusal_proves_a_batch_unstored() {
        let broker = |code| RequestError::Broker {
            code,
            message: String::new(),
            retry_after_ms: 0,
        };
        assert!(refused_unstored(&broker(ErrorCode::SchemaValidationFailed)));
        assert!(refused_unstored(&broker(ErrorCode::OutOfOrderSequence)));
        assert!(
            !refused_unstored(&broker(ErrorCode::Storage)),
            "may follow the append"
        );
        assert!(!refused_unstored(&broker(ErrorCode::Unknown(99))));
        assert!(!refused_unstored(&RequestError::Timeout(
            Duration::from_secs(1)
        )));
        assert!(!refused_unstored(&RequestError::Stream("reset".to_owned())));
    }

    /// Catches: a broker's retry delay obeyed past the delivery timeout (a partition that
    /// answered `NotLeader` forever was retried forever), and a cluster failover waiting out
    /// the exponential backoff.
    #[test]
    fn a_moved_leader_is_no_failure_of_the_path_and_everything_else_is() {
        let broker = |code| RequestError::Broker {
            code,
            retry_after_ms: 20,
            message: String::new(),
        };
        assert!(!counts_as_failure(&broker(ErrorCode::NotLeader)));
        for error in [
            broker(ErrorCode::Throttled),
            broker(ErrorCode::Storage),
            broker(ErrorCode::CorruptBatch),
            RequestError::Timeout(Duration::from_millis(5)),
        ] {
            assert!(counts_as_failure(&error), "{error}");
        }
    }

    #[test]
    fn retry_delays_follow_the_broker_within_the_delivery_timeout() {
        use crate::policy::backoff::GiveUp;
        let not_leader = RequestError::Broker {
            code: ErrorCode::NotLeader,
            message: String::new(),
            retry_after_ms: 20,
        };
        let lost = RequestError::Timeout(Duration::from_secs(3));
        let backoff = RetryDecision::RetryAfter(Duration::from_secs(6));
        let passed = || {
            RetryDecision::GiveUp(GiveUp::DeadlinePassed {
                elapsed: Duration::from_secs(121),
            })
        };
        assert_eq!(
            retry_delay(backoff, &not_leader, true),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            retry_delay(passed(), &not_leader, true),
            None,
            "the deadline bounds it"
        );
        assert_eq!(
            retry_delay(backoff, &lost, true),
            Some(FAILOVER_RETRY_DELAY_MAX)
        );
        assert_eq!(
            retry_delay(backoff, &lost, false),
            Some(Duration::from_secs(6)),
            "a single broker that went away is backed off from"
        );
        assert_eq!(retry_delay(passed(), &lost, true), None);
    }

    #[test]
    fn an_answer_is_awaited_no_longer_than_the_delivery_timeout_allows() {
        assert_eq!(answer_wait(None, Duration::from_secs(500)), REQUEST_TIMEOUT);
        assert_eq!(
            answer_wait(Some(Duration::from_secs(120)), Duration::ZERO),
            REQUEST_TIMEOUT
        );
        assert_eq!(
            answer_wait(Some(Duration::from_secs(2)), Duration::from_millis(500)),
            Duration::from_millis(1_500)
        );
        assert_eq!(
            answer_wait(Some(Duration::from_secs(2)), Duration::from_secs(3)),
            Duration::ZERO,
            "past the deadline: no wait"
        );
    }
}
