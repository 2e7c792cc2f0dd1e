//! The registry's metric handles, recorded into its own [`Metrics`] recorder (names and help
//! texts are `herald_metrics::registry`): the schema and subject gauges, set when `/metrics`
//! is scraped, and per route the latency histogram and per method and status the request
//! counter, each registered on the route's first request and kept.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use herald_metrics::registry::{REQUESTS, REQUEST_DURATION, SCHEMAS, SUBJECTS};
use herald_metrics::{Counter, Gauge, Histogram, Metrics};

/// The `route` label of requests no route matched.
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

struct RouteMetrics {
    duration: Histogram,
    /// By (method, status).
    requests: HashMap<(&'static str, u16), Counter>,
}

pub(crate) struct RegistryMetrics {
    metrics: Metrics,
    pub(crate) schemas: Gauge,
    pub(crate) subjects: Gauge,
    /// By route template (bounded by the router, plus [`UNMATCHED_ROUTE`]).
    routes: RwLock<HashMap<String, RouteMetrics>>,
}

impl RegistryMetrics {
    pub(crate) fn new() -> Self {
        let metrics = Metrics::new();
        Self {
            schemas: metrics.gauge(SCHEMAS, &[]),
            subjects: metrics.gauge(SUBJECTS, &[]),
            routes: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    /// Counts one request and records its latency.
    pub(crate) fn record(&self, route: &str, method: &Method, status: StatusCode, took: Duration) {
        let method = method_label(method);
        let status = status.as_u16();
        {
            let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
            if let Some(found) = routes.get(route) {
                if let Some(requests) = found.requests.get(&(method, status)) {
                    requests.increment(1);
                    found.duration.record(took);
                    return;
                }
            }
        }
        // First request of this route, method and status: register its handles.
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let found = routes
            .entry(route.to_owned())
            .or_insert_with(|| RouteMetrics {
                duration: self
                    .metrics
                    .histogram(REQUEST_DURATION, &[("route", route)]),
                requests: HashMap::new(),
            });
        found
            .requests
            .entry((method, status))
            .or_insert_with(|| {
                let status = status.to_string();
                self.metrics.counter(
                    REQUESTS,
                    &[
                        ("route", route),
                        ("method", method),
                        ("status", status.as_str()),
                    ],
                )
            })
            .increment(1);
        found.duration.record(took);
    }

    /// Every series in Prometheus' text format.
    pub(crate) fn render(&self) -> String {
        self.metrics.render()
    }
}

/// The `method` label: the standard methods by name, any other as `OTHER` (a client picks
/// the method, and labels must stay bounded).
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_status_with_bounded_methods() {
        let metrics = RegistryMetrics::new();
        let took = Duration::from_millis(2);
        metrics.record("/subjects", &Method::GET, StatusCode::OK, took);
        metrics.record("/subjects", &Method::GET, StatusCode::OK, took);
        metrics.record("/subjects", &Method::POST, StatusCode::OK, took);
        let odd = Method::from_bytes(b"BREW").expect("an extension method");
        metrics.record(UNMATCHED_ROUTE, &odd, StatusCode::NOT_FOUND, took);
        let text = metrics.render();
        for line in [
            "herald_registry_requests_total{route=\"/subjects\",method=\"GET\",status=\"200\"} 2\n",
            "herald_registry_requests_total{route=\"/subjects\",method=\"POST\",status=\"200\"} 1\n",
            "herald_registry_requests_total{route=\"unmatched\",method=\"OTHER\",status=\"404\"} 1\n",
            "herald_registry_request_duration_seconds_count{route=\"/subjects\"} 3\n",
            "herald_registry_request_duration_seconds_bucket{route=\"/subjects\",le=\"0.0025\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
