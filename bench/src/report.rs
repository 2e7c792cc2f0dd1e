//! The result lines every bench phase prints: `system=… phase=… records=… p50_ms=…`, with
//! percentiles of the phase's latencies.

use std::time::Duration;

pub(crate) fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at = |fraction: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        samples[((samples.len() as f64 - 1.0) * fraction).round() as usize].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99), at(0.999))
}

pub(crate) fn report(
    system: &str,
    phase: &str,
    records: usize,
    record_bytes: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
) {
    let per_second = records as f64 / elapsed.as_secs_f64();
    let (p50, p99, p999) = percentiles(latencies);
    println!(
        "system={system} phase={phase} records={records} records_per_s={per_second:.0} mb_per_s={:.1} p50_ms={p50:.3} p99_ms={p99:.3} p999_ms={p999:.3}",
        per_second * record_bytes as f64 / 1e6
    );
}
