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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_broker_client::{Pipeline, RequestError, REQUEST_TIMEOUT};
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

/// Batches of one partition in flight at once (Kafka's limit for idempotent producers: the
/// broker remembers the last five batches per producer, so any of them can be resent).
pub const IN_FLIGHT_MAX: usize = 5;

struct InFlight {
    /// Records in the batch.
    records: u32,
    outcome: Completer,
    _permit: Option<OwnedSemaphorePermit>,
    batch: Vec<u8>,
    started: Instant,
    /// Writes of the batch under its current stamp.
    attempts: u32,
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
/// went out behind it end indeterminate and the others go out under a fresh producer id.
pub(super) async fn partition_sender(
    shared: Arc<Shared>,
    partition: u32,
    mut batches: mpsc::Receiver<Queued>,
) {
    let mut producer = shared.producer;
    let mut next_sequence: i32 = 0;
    let mut window: VecDeque<InFlight> = VecDeque::new();
    let mut pipeline: Option<Pipeline> = None;
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
            // A failure here counts as a failed attempt of the front batch (never sent):
            // backoff, reconnecting, and in the end its delivery timeout.
            match shared.client().init_producer("").await {
                Ok(fresh) => {
                    producer = fresh;
                    next_sequence = restamp_unsent(&mut window, producer);
                    fresh_producer_needed = false;
                    Ok(())
                }
                Err(error) => Err(error),
            }
        } else {
            Ok(())
        };
        let sent = match ready {
            Ok(()) => send_unsent(&shared, partition, &mut pipeline, &mut window).await,
            Err(error) => Err(error),
        };
        let outcome = match sent {
            Err(error) => Err(error),
            Ok(()) => {
                let deadline = shared.config.retry.deadline;
                let Some((wait, mut answer)) = window.front_mut().and_then(|front| {
                    let wait = answer_wait(deadline, front.started.elapsed());
                    front.answer.take().map(|answer| (wait, answer))
                }) else {
                    continue;
                };
                tokio::select! {
                    biased;
                    answer = tokio::time::timeout(wait, &mut answer) => produced(answer, wait),
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
        shared.on_outcome(now, false);
        let (attempts, started) = window
            .front()
            .map_or((1, now), |front| (front.attempts.max(1), front.started));
        let verdict = if !error.retryable() {
            let (code, message) = match &error {
                RequestError::Broker { code, message, .. } => (*code, message.clone()),
                other => (ErrorCode::Internal, other.to_string()),
            };
            Err(ProduceError::Refused { code, message })
        } else if !shared
            .budget()
            .try_retry(if matches!(error, RequestError::Timeout(_)) {
                RetryKind::Timeout
            } else {
                RetryKind::Error
            })
        {
            Err(ProduceError::BudgetExhausted {
                last: error.to_string(),
            })
        } else {
            match &error {
                RequestError::Broker { retry_after_ms, .. } if *retry_after_ms > 0 => {
                    Ok(Duration::from_millis(u64::from(*retry_after_ms)))
                }
                _ => match shared.config.retry.decide(
                    attempts,
                    started.elapsed(),
                    rand::random::<f64>(),
                ) {
                    RetryDecision::RetryAfter(delay) => Ok(delay),
                    RetryDecision::GiveUp(_) => Err(ProduceError::Timeout {
                        attempts,
                        last: error.to_string(),
                    }),
                },
            }
        };
        // Whatever happens next, no answer is awaited on this pipeline any more: a retry
        // resends the window as it is, a final failure settles it first.
        pipeline = None;
        for entry in &mut window {
            entry.answer = None;
        }
        match verdict {
            Ok(delay) => {
                shared.metrics.retried.increment(1);
                tokio::time::sleep(delay).await;
                let connection_lost = matches!(
                    error,
                    RequestError::Connection(_)
                        | RequestError::Stream(_)
                        | RequestError::Timeout(_)
                );
                if let (true, Some(connector)) = (connection_lost, &shared.connector) {
                    // Best effort: if the broker is still down, the next attempt fails again.
                    if let Ok(fresh) = connector().await {
                        *shared.client.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
                    }
                }
            }
            Err(failure) => {
                // The failed batch may or may not be stored: reusing its sequence could make
                // the next batch look like its duplicate, skipping it could leave a gap. So
                // the batches that went out behind it end indeterminate (unless the broker
                // refused it outright), and the others get a fresh producer id (a clean
                // sequence) before anything more is sent.
                let front_unstored = window.front().is_some_and(|front| {
                    !front.sent || (front.attempts == 1 && refused_unstored(&error))
                });
                settle_failed_front(&mut window, failure, front_unstored, &shared.metrics);
                fresh_producer_needed = true;
            }
        }
    }
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
/// the batches behind it that may go out under a fresh producer id; completes the others with
/// [`ProduceError::Indeterminate`].
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
    if front_unstored {
        for entry in window.iter_mut() {
            // Not stored under its current stamp: it goes out again as a new batch.
            entry.sent = false;
            entry.attempts = 0;
        }
        return;
    }
    for entry in std::mem::take(window) {
        if entry.sent {
            metrics.indeterminate.increment(u64::from(entry.records));
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
            window.push_back(InFlight {
                records,
                outcome,
                _permit: permit,
                batch,
                started: Instant::now(),
                attempts: 0,
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

/// Sends, in order, every batch of the window not yet sent on the current pipeline.
async fn send_unsent(
    shared: &Shared,
    partition: u32,
    pipeline: &mut Option<Pipeline>,
    window: &mut VecDeque<InFlight>,
) -> Result<(), RequestError> {
    if window.iter().all(|entry| entry.answer.is_some()) {
        return Ok(());
    }
    if pipeline.is_none() {
        *pipeline = Some(shared.client().pipeline().await?);
    }
    let Some(open) = pipeline.as_ref() else {
        return Ok(());
    };
    for entry in window.iter_mut().filter(|entry| entry.answer.is_none()) {
        entry.attempts += 1;
        // From here the broker may get the batch, even if the write fails part way.
        entry.sent = true;
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

/// The base offset of an acknowledged batch, or why it was not (`waited`: how long its
/// answer was awaited).
fn produced(
    answer: Result<
        Result<Result<Response, RequestError>, oneshot::error::RecvError>,
        tokio::time::error::Elapsed,
    >,
    waited: Duration,
) -> Result<Landed, RequestError> {
    match answer {
        Err(_) => Err(RequestError::Timeout(waited)),
        Ok(Err(_)) => Err(RequestError::Stream("pipeline closed".to_owned())),
        Ok(Ok(answer)) => match answer.and_then(herald_broker_client::refused)? {
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
        },
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
        let entry = InFlight {
            records,
            outcome,
            _permit: None,
            batch,
            started: Instant::now(),
            attempts: u32::from(sent),
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
            .all(|entry| !entry.sent && entry.attempts == 0));
        assert_eq!(restamp_unsent(&mut window, (6, 0)), 2);
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
