//! The router's Prometheus metrics, under `cutover_router_`: the golden signals per backend
//! (`namespace/service:port`) — requests by status class, latency — plus retries, mirrored
//! copies, requests no route took, and table swaps.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    backend: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnroutedLabels {
    port: u16,
    reason: &'static str,
}

/// The router's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<BackendLabels, Histogram>,
    upstream_errors: Family<BackendLabels, Counter>,
    retries: Family<BackendLabels, Counter>,
    mirrored: Family<BackendLabels, Counter>,
    unrouted: Family<UnroutedLabels, Counter>,
    swaps: Counter,
    /// Each backend's series, looked up once: the hot path then only reads a map.
    handles: Arc<RwLock<HashMap<String, Arc<BackendHandles>>>>,
}

/// One backend's request counters (by status class) and latency histogram.
#[derive(Debug)]
struct BackendHandles {
    by_class: [Counter; 5],
    duration: Histogram,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`CLASSES`] of `status`'s class (anything out of range counts as 5xx).
fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

impl Metrics {
    /// Register every metric in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 0.25 ms to about 16 s.
                Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
            }),
            upstream_errors: Family::default(),
            retries: Family::default(),
            mirrored: Family::default(),
            unrouted: Family::default(),
            swaps: Counter::default(),
            handles: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix("cutover_router");
        r.register(
            "requests",
            "Requests answered per backend and status class (5xx includes the router's own 502/503 for the backend)",
            m.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from receiving a request to the backend's response headers, per backend",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register(
            "upstream_errors",
            "Connections to a backend endpoint that failed or closed without a response",
            m.upstream_errors.clone(),
        );
        r.register(
            "retries",
            "Requests sent again to another endpoint after a connection to one failed",
            m.retries.clone(),
        );
        r.register(
            "mirrored_requests",
            "Copies sent by RequestMirror filters, per mirror backend",
            m.mirrored.clone(),
        );
        r.register(
            "unrouted_requests",
            "Requests no route took (no_route: 404) or whose rule has no valid backend (invalid_backend: 500)",
            m.unrouted.clone(),
        );
        r.register(
            "table_swaps",
            "Routing tables built and swapped in",
            m.swaps.clone(),
        );
        m
    }

    fn handles(&self, backend: &str) -> Arc<BackendHandles> {
        if let Some(h) = self
            .handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(backend)
        {
            return h.clone();
        }
        let h = Arc::new(BackendHandles {
            by_class: CLASSES.map(|code| {
                self.requests
                    .get_or_create(&RequestLabels {
                        backend: backend.to_string(),
                        code,
                    })
                    .clone()
            }),
            duration: self
                .duration
                .get_or_create(&BackendLabels {
                    backend: backend.to_string(),
                })
                .clone(),
        });
        self.handles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(backend.to_string(), h.clone());
        h
    }

    /// A request to `backend` answered with `status` after `elapsed`.
    pub fn request(&self, backend: &str, status: u16, elapsed: Duration) {
        let h = self.handles(backend);
        h.by_class[class_index(status)].inc();
        h.duration.observe(elapsed.as_secs_f64());
    }

    /// A connection to `backend` failed.
    pub fn upstream_error(&self, backend: &str) {
        self.upstream_errors
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .inc();
    }

    /// A request to `backend` is retried.
    pub fn retry(&self, backend: &str) {
        self.retries
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .inc();
    }

    /// A copy went to `backend`.
    pub fn mirrored(&self, backend: &str) {
        self.mirrored
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .inc();
    }

    /// A request on `port` took no route.
    pub fn unrouted(&self, port: u16, reason: &'static str) {
        self.unrouted
            .get_or_create(&UnroutedLabels { port, reason })
            .inc();
    }

    /// A new table is in use.
    pub fn swapped(&self) {
        self.swaps.inc();
    }
}
