//! Each partition's sender: its batches in flight on one ordered pipeline (at most
//! [`IN_FLIGHT_MAX`]), sequence numbers, retries (backoff, retry budget, reconnecting), the
//! breaker's outcomes, and re-sequencing under a fresh producer id after a failed batch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_broker_client::{Pipeline, RequestError, REQUEST_TIMEOUT};
use herald_wire::batch::{restamp_producer, ProducerStamp};
use herald_wire::messages::{Request, Response};
use herald_wire::{Api, ErrorCode};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

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
    attempts: u32,
    /// The broker's answer, once sent on the current pipeline.
    answer: Option<oneshot::Receiver<Result<Response, RequestError>>>,
}

/// Sends one partition's batches in order on one pipeline (an ordered stream), up to
/// [`IN_FLIGHT_MAX`] at once. Sequences are assigned when a batch is encoded; a retry resends
/// the same bytes, and after a transient failure every batch in flight is resent in order,
/// so the broker stores each exactly once (it acknowledges a resent duplicate with its
/// original offsets).
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
    loop {
        if window.is_empty() {
            match batches.recv().await {
                Some(records) => admit(&mut window, records, producer, &mut next_sequence),
                None => return,
            }
        }
        let outcome = match send_unsent(&shared, partition, &mut pipeline, &mut window).await {
            Err(error) => Err(error),
            Ok(()) => {
                let Some(mut answer) = window.front_mut().and_then(|f| f.answer.take()) else {
                    continue;
                };
                tokio::select! {
                    biased;
                    answer = tokio::time::timeout(REQUEST_TIMEOUT, &mut answer) => produced(answer),
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
                    // Room in the buffer first, then the news: a sender woken by the
                    // acknowledgement finds the space freed.
                    let InFlight {
                        outcome, _permit, ..
                    } = done;
                    drop(_permit);
                    outcome.complete(Ok(landed));
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
        // Whatever happens next, the batches behind the failed one are sent again.
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
                if let Some(failed) = window.pop_front() {
                    shared.metrics.failed.increment(u64::from(failed.records));
                    let InFlight {
                        outcome, _permit, ..
                    } = failed;
                    drop(_permit);
                    outcome.complete(Err(failure));
                }
                // The failed batch may or may not be stored: reusing its sequence could make
                // the next batch look like its duplicate, skipping it could leave a gap. A
                // fresh producer id starts a clean sequence for the batches behind it.
                if let Ok(fresh) = shared.client().init_producer("").await {
                    producer = fresh;
                    next_sequence = 0;
                    for entry in &mut window {
                        restamp_producer(&mut entry.batch, producer.0, producer.1, next_sequence);
                        next_sequence = next_sequence.wrapping_add(entry.records as i32);
                    }
                }
            }
        }
    }
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

/// The base offset of an acknowledged batch, or why it was not.
fn produced(
    answer: Result<
        Result<Result<Response, RequestError>, oneshot::error::RecvError>,
        tokio::time::error::Elapsed,
    >,
) -> Result<Landed, RequestError> {
    match answer {
        Err(_) => Err(RequestError::Timeout(REQUEST_TIMEOUT)),
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
