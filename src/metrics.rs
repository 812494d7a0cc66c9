//! Prometheus helpers shared by every service.
//!
//! Each service instance owns its own `prometheus::Registry` (never the global
//! default), so several nodes can run in one test process without their
//! counters colliding. Names follow Prometheus conventions: base units
//! (`_seconds`, `_watts`, `_joules`, `_bytes`), `_total` for counters, `_ratio`
//! for 0–1 values, and only bounded labels (node, peer, substation, route).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::error::{Error, Result};

/// Latency buckets in seconds, from 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Registers a collector, turning a registration clash into an `Error`.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C> {
    registry
        .register(Box::new(collector.clone()))
        .map_err(|e| Error::internal(format!("metric registration failed: {e}")))?;
    Ok(collector)
}

/// Renders a registry in the Prometheus text exposition format.
pub fn encode(registry: &Registry) -> Result<String> {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .map_err(|e| Error::internal(format!("metrics encoding failed: {e}")))?;
    String::from_utf8(buf).map_err(|e| Error::internal(format!("metrics not UTF-8: {e}")))
}

/// Per-service HTTP request metrics, recorded by `http::RecordHttp`.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
}

impl HttpMetrics {
    /// `prefix` is the service (`kv`, `substation`, …), giving for example
    /// `kv_http_requests_total{route,status}`.
    pub fn new(registry: &Registry, prefix: &str) -> Result<Self> {
        let requests = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    format!("{prefix}_http_requests_total"),
                    "HTTP requests served, by route pattern and status code",
                ),
                &["route", "status"],
            )
            .map_err(Error::internal)?,
        )?;
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    format!("{prefix}_http_request_duration_seconds"),
                    "HTTP request latency, by route pattern",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .map_err(Error::internal)?,
        )?;
        Ok(HttpMetrics { requests, duration })
    }
}
