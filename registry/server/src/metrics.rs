//! Prometheus text metrics: requests by route, method and status, latency histograms by
//! route, and the registry's size. Hand-rolled because the set is small and fixed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
    count: u64,
    sum_seconds: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latencies: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        drop(requests);
        let seconds = elapsed.as_secs_f64();
        let mut latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        let histogram = latencies.entry(route.to_owned()).or_default();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(LATENCY_BUCKETS_SECONDS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum_seconds += seconds;
    }

    /// Renders every metric; `gauges` are extra `(name, help, value)` lines.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP herald_registry_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE herald_registry_requests_total counter\n");
        for ((route, method, status), count) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "herald_registry_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}");
        }
        out.push_str("# HELP herald_registry_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE herald_registry_request_duration_seconds histogram\n");
        for (route, histogram) in self
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            for (count, bound) in histogram.buckets.iter().zip(LATENCY_BUCKETS_SECONDS) {
                let _ = writeln!(out, "herald_registry_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "herald_registry_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", histogram.count);
            let _ = writeln!(
                out,
                "herald_registry_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                histogram.sum_seconds
            );
            let _ = writeln!(
                out,
                "herald_registry_request_duration_seconds_count{{route=\"{route}\"}} {}",
                histogram.count
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::default();
        metrics.record("/subjects", "GET", 200, Duration::from_millis(2));
        metrics.record("/subjects", "GET", 200, Duration::from_millis(200));
        let text = metrics.render(&[("herald_registry_schemas", "Schemas stored.", 3)]);
        assert!(text.contains(
            "herald_registry_requests_total{route=\"/subjects\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "herald_registry_request_duration_seconds_bucket{route=\"/subjects\",le=\"0.0025\"} 1"
        ));
        assert!(
            text.contains("herald_registry_request_duration_seconds_count{route=\"/subjects\"} 2")
        );
        assert!(text.contains("herald_registry_schemas 3"));
    }
}
