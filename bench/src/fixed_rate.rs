//! Fixed-rate phases of the broker benchmark, shared by Herald and the NATS peer.
//!
//! Each phase is an open-loop schedule: batch `i` is due at `start + i * batch_records / rate`
//! whatever happened to the batches before it. A dedicated OS thread (not the tokio timer, whose
//! 1 ms granularity is too coarse at 2,000 batches per second) sleeps until each due instant and
//! hands the batch to the runtime with that instant. A batch's latency runs from its *intended*
//! instant to its acknowledgement, so a send that starts late counts its lateness: the figures
//! are corrected for coordinated omission.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot, Semaphore, TryAcquireError};

/// Batches sent and not yet acknowledged, at most. When the pacing thread would exceed it, it
/// waits for an acknowledgement (later batches go out late, and their lateness counts), and the
/// phase is reported not sustained.
pub(crate) const PHASE_IN_FLIGHT_MAX: usize = 4096;

/// A phase is sustained only if its achieved rate (acknowledged records over the time from the
/// phase's start to its last acknowledgement) is at least this fraction of its target rate.
const SUSTAINED_RATE_FRACTION: f64 = 0.95;

/// A phase is sustained only if its last batch started no later than this after its intended
/// instant: a send that keeps slipping behind the schedule is not keeping up, whatever the
/// average rate says.
const SUSTAINED_LAST_BATCH_LATE_MAX: Duration = Duration::from_millis(50);

/// The largest latency the histogram tells apart, in microseconds (60 s); a longer one is
/// recorded as this.
const HISTOGRAM_MAX_US: u64 = 60_000_000;

/// Significant decimal digits the histogram keeps of each latency.
const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;

/// The fixed-rate phases of one run, the same for every system in it.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    /// Target rates in records per second, ascending, without zeros or repeats; empty runs no
    /// phase.
    pub(crate) rates: Vec<u64>,
    /// Each phase's schedule spans at least this many seconds.
    pub(crate) seconds: u64,
    /// Records per batch; one batch is due per `batch_records / rate` seconds.
    pub(crate) batch_records: usize,
}

impl Schedule {
    /// Zero entries are dropped; `seconds == 0` runs no phase.
    pub(crate) fn new(rates: &[u64], seconds: u64, batch_records: usize) -> Self {
        let mut rates: Vec<u64> = if seconds == 0 {
            Vec::new()
        } else {
            rates.iter().copied().filter(|&rate| rate > 0).collect()
        };
        rates.sort_unstable();
        rates.dedup();
        Self {
            rates,
            seconds,
            batch_records,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }
}

/// Runs one fixed-rate phase per rate of `schedule`, ascending, printing one
/// `phase=fixed_rate` line each for `label`. `send(i)` builds the future that sends batch `i`
/// (called on the pacing thread, so cloning the pre-encoded batch there keeps it off the
/// runtime); the future resolves once the batch is acknowledged.
///
/// With `stop_after_unsustained = Some(name)`, the rates above the first one not sustained are
/// skipped (printing `# {name}: skipping rates above ...`), to bound the run time.
pub(crate) async fn run_phases<F, Fut>(
    label: &str,
    schedule: &Schedule,
    stop_after_unsustained: Option<&str>,
    send: F,
) -> anyhow::Result<()>
where
    F: FnMut(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    if schedule.is_empty() {
        return Ok(());
    }
    anyhow::ensure!(
        schedule.batch_records > 0,
        "--batch-records must be at least 1"
    );
    let rates: Vec<String> = schedule.rates.iter().map(u64::to_string).collect();
    println!(
        "# {label}: fixed-rate phases at {} records/s, at least {} s each, batches of {} records on an open-loop schedule, at most {PHASE_IN_FLIGHT_MAX} batches in flight, latency from each batch's intended send time",
        rates.join(","),
        schedule.seconds,
        schedule.batch_records
    );
    for (n, &rate) in schedule.rates.iter().enumerate() {
        let sustained = run_phase(label, rate, schedule, send.clone())
            .await
            .with_context(|| format!("{label}: fixed-rate phase at {rate} records/s"))?;
        if sustained {
            continue;
        }
        if let Some(name) = stop_after_unsustained {
            if n + 1 < schedule.rates.len() {
                println!("# {name}: skipping rates above {rate} (not sustained)");
            }
            break;
        }
    }
    Ok(())
}

/// One batch's acknowledgement, as the task that sent it saw it.
struct Sample {
    index: u64,
    /// When the schedule meant the batch to be sent.
    due: Instant,
    /// When its send task started running.
    started: Instant,
    acked: Instant,
}

/// What the pacing thread reports once every batch is handed to the runtime.
struct Pacing {
    sent: u64,
    /// Batches that had to wait for the in-flight bound.
    bound_waits: u64,
}

async fn run_phase<F, Fut>(
    label: &str,
    rate: u64,
    schedule: &Schedule,
    send: F,
) -> anyhow::Result<bool>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let batch_records = schedule.batch_records as u64;
    // Enough batches that the schedule spans at least `seconds` (one interval per batch).
    let batches = schedule
        .seconds
        .saturating_mul(rate)
        .div_ceil(batch_records)
        .max(1);
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGNIFICANT_DIGITS)
            .context("latency histogram")?;
    // Bounded by the phase itself: one sample per scheduled batch (rate x seconds / batch
    // records, 20,000 at 2M/s for 10 s), drained as they come.
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel();
    let (pacing_tx, pacing_rx) = oneshot::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let pacer = Pacer {
        handle: tokio::runtime::Handle::current(),
        start,
        rate,
        batch_records,
        batches,
        stop: Arc::clone(&stop),
    };
    // Detached: it ends right after sending its report (or at the next batch once `stop` is
    // set), and joining it here would block the runtime thread its sends need.
    let _pacer = std::thread::Builder::new()
        .name("bench-pacer".to_owned())
        .spawn(move || {
            let pacing = pacer.run(send, samples_tx);
            let _ = pacing_tx.send(pacing);
        })
        .context("spawn the pacing thread")?;

    // Every send task holds a sender, as does the pacing thread until it is done: the channel
    // ends once every batch is handed out and acknowledged. At most one sample per batch.
    let mut acked = 0u64;
    let mut last_ack = start;
    let mut last_batch_late = None;
    while let Some(sample) = samples_rx.recv().await {
        let sample = match sample {
            Ok(sample) => sample,
            Err(error) => {
                stop.store(true, Ordering::Relaxed);
                return Err(error);
            }
        };
        let latency = sample.acked.saturating_duration_since(sample.due);
        histogram.saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        acked += 1;
        last_ack = last_ack.max(sample.acked);
        if sample.index + 1 == batches {
            last_batch_late = Some(sample.started.saturating_duration_since(sample.due));
        }
    }
    let pacing = pacing_rx
        .await
        .context("the pacing thread ended without a report")??;
    anyhow::ensure!(
        pacing.sent == batches && acked == batches,
        "{} of {batches} batches sent, {acked} acknowledged",
        pacing.sent
    );
    let last_batch_late = last_batch_late.context("no acknowledgement of the last batch")?;

    let records = acked * batch_records;
    let elapsed = last_ack.saturating_duration_since(start).as_secs_f64();
    let achieved = records as f64 / elapsed.max(1e-9);
    let rate_met = achieved >= SUSTAINED_RATE_FRACTION * rate as f64;
    let kept_up = last_batch_late <= SUSTAINED_LAST_BATCH_LATE_MAX;
    let sustained = rate_met && pacing.bound_waits == 0 && kept_up;
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "system={label} phase=fixed_rate target_per_s={rate} achieved_per_s={achieved:.0} sustained={sustained} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} records={records}",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
    if !sustained {
        let mut reasons = Vec::new();
        if !rate_met {
            reasons.push(format!(
                "achieved below {:.0} % of the target",
                SUSTAINED_RATE_FRACTION * 100.0
            ));
        }
        if pacing.bound_waits > 0 {
            reasons.push(format!(
                "{} batches waited for the in-flight bound of {PHASE_IN_FLIGHT_MAX}",
                pacing.bound_waits
            ));
        }
        if !kept_up {
            reasons.push(format!(
                "last batch started {:.1} ms after its intended instant (bound {} ms)",
                last_batch_late.as_secs_f64() * 1000.0,
                SUSTAINED_LAST_BATCH_LATE_MAX.as_millis()
            ));
        }
        println!(
            "# {label}: {rate} records/s not sustained: {}",
            reasons.join("; ")
        );
    }
    Ok(sustained)
}

/// The pacing thread of one phase.
struct Pacer {
    handle: tokio::runtime::Handle,
    start: Instant,
    rate: u64,
    batch_records: u64,
    batches: u64,
    /// Set when the phase failed: hand out no more batches.
    stop: Arc<AtomicBool>,
}

impl Pacer {
    /// Hands every batch to the runtime at its due instant; runs on its own OS thread (not a
    /// runtime thread, so blocking on the in-flight bound with `Handle::block_on` is fine).
    fn run<F, Fut>(
        self,
        mut send: F,
        samples: mpsc::UnboundedSender<anyhow::Result<Sample>>,
    ) -> anyhow::Result<Pacing>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let in_flight = Arc::new(Semaphore::new(PHASE_IN_FLIGHT_MAX));
        let mut pacing = Pacing {
            sent: 0,
            bound_waits: 0,
        };
        for index in 0..self.batches {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let due = self.due(index);
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let permit = match Arc::clone(&in_flight).try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::NoPermits) => {
                    pacing.bound_waits += 1;
                    self.handle
                        .block_on(Arc::clone(&in_flight).acquire_owned())
                        .context("in-flight bound")?
                }
                Err(TryAcquireError::Closed) => anyhow::bail!("in-flight bound closed"),
            };
            let request = send(index);
            let samples = samples.clone();
            self.handle.spawn(async move {
                let started = Instant::now();
                let result = request.await.map(|()| Sample {
                    index,
                    due,
                    started,
                    acked: Instant::now(),
                });
                drop(permit);
                // The receiver is gone only when the phase already failed.
                let _ = samples.send(result);
            });
            pacing.sent += 1;
        }
        Ok(pacing)
    }

    /// The intended send instant of batch `index`, computed from the start (no drift).
    fn due(&self, index: u64) -> Instant {
        let nanos = u128::from(index) * u128::from(self.batch_records) * 1_000_000_000
            / u128::from(self.rate);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}
