//! herald-metrics: counters, gauges and histograms rendered in Prometheus' text format.
//!
//! Shared by the registry and the broker so both expose `/metrics` the same way. Families are
//! created on first use; label sets are bounded by what the servers name (routes, topics,
//! reasons), never by request content.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Latency buckets, in seconds: 100 µs to 5 s.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Most label sets one family may hold; further ones are folded into `overflow="true"`.
pub const SERIES_PER_FAMILY_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, Default)]
struct Series {
    value: f64,
    buckets: Vec<u64>,
    count: u64,
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<String, Series>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn label_text(labels: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let escaped = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(text, "{name}=\"{escaped}\"");
    }
    text
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_series(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        update: impl FnOnce(&mut Series),
    ) {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        let mut key = label_text(labels);
        if !family.series.contains_key(&key) && family.series.len() >= SERIES_PER_FAMILY_MAX {
            key = "overflow=\"true\"".to_owned();
        }
        let series = family.series.entry(key).or_default();
        if kind == Kind::Histogram && series.buckets.is_empty() {
            series.buckets = vec![0; LATENCY_BUCKETS_SECONDS.len()];
        }
        update(series);
    }

    pub fn counter_add(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        self.with_series(name, help, Kind::Counter, labels, |series| {
            series.value += value as f64
        });
    }

    pub fn gauge_set(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.with_series(name, help, Kind::Gauge, labels, |series| {
            series.value = value
        });
    }

    pub fn observe_seconds(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        seconds: f64,
    ) {
        self.with_series(name, help, Kind::Histogram, labels, |series| {
            for (bucket, bound) in series.buckets.iter_mut().zip(LATENCY_BUCKETS_SECONDS) {
                if seconds <= bound {
                    *bucket += 1;
                }
            }
            series.count += 1;
            series.value += seconds;
        });
    }

    /// Every family in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", family.help);
            for (labels, series) in &family.series {
                if family.kind != Kind::Histogram {
                    let braces = if labels.is_empty() {
                        String::new()
                    } else {
                        format!("{{{labels}}}")
                    };
                    let _ = writeln!(out, "{name}{braces} {}", series.value);
                    continue;
                }
                let sep = if labels.is_empty() { "" } else { "," };
                for (count, bound) in series.buckets.iter().zip(LATENCY_BUCKETS_SECONDS) {
                    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
                    series.count
                );
                let braces = if labels.is_empty() {
                    String::new()
                } else {
                    format!("{{{labels}}}")
                };
                let _ = writeln!(out, "{name}_sum{braces} {}", series.value);
                let _ = writeln!(out, "{name}_count{braces} {}", series.count);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_kind() {
        let metrics = Metrics::new();
        metrics.counter_add(
            "requests_total",
            "Requests.",
            &[("route", "/a"), ("status", "200")],
            2,
        );
        metrics.gauge_set("schemas", "Schemas.", &[], 3.0);
        metrics.observe_seconds("latency_seconds", "Latency.", &[("route", "/a")], 0.002);
        metrics.observe_seconds("latency_seconds", "Latency.", &[("route", "/a")], 0.2);
        let text = metrics.render();
        assert!(
            text.contains(
                "# TYPE requests_total counter\nrequests_total{route=\"/a\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("schemas 3"), "{text}");
        assert!(
            text.contains("latency_seconds_bucket{route=\"/a\",le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{route=\"/a\",le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_count{route=\"/a\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped_and_series_bounded() {
        let metrics = Metrics::new();
        metrics.counter_add("c", "C.", &[("topic", "a\"b")], 1);
        assert!(metrics.render().contains("c{topic=\"a\\\"b\"} 1"));
        for n in 0..SERIES_PER_FAMILY_MAX + 5 {
            metrics.counter_add("many", "Many.", &[("n", &n.to_string())], 1);
        }
        assert!(metrics.render().contains("many{overflow=\"true\"} 5"));
    }
}
