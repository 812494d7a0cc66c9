//! Prometheus metrics of one KV node. Every metric carries the registry's
//! constant label `node`.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::causal::node::Counters;
use crate::causal::{NodeId, Write};
use crate::error::{Error, Result};
use crate::metrics::{register, HttpMetrics};

#[derive(Clone)]
pub struct KvMetrics {
    pub writes: IntCounter,
    pub deliveries: IntCounterVec,
    pub duplicates: IntCounter,
    pub buffered: IntGauge,
    pub delivery_delay: Histogram,
    pub backlog: IntGaugeVec,
    pub batches: IntCounterVec,
    pub sent: IntCounterVec,
    pub log_entries: IntGauge,
    pub context_waits: IntCounterVec,
    pub http: HttpMetrics,
}

impl KvMetrics {
    pub fn new(registry: &Registry) -> Result<Self> {
        let e = Error::internal;
        Ok(KvMetrics {
            writes: register(
                registry,
                IntCounter::new("kv_writes_total", "Client writes accepted by this node")
                    .map_err(e)?,
            )?,
            deliveries: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "kv_deliveries_total",
                        "Replicated writes of other origins delivered here, by origin",
                    ),
                    &["origin"],
                )
                .map_err(e)?,
            )?,
            duplicates: register(
                registry,
                IntCounter::new(
                    "kv_duplicates_total",
                    "Replicated writes received again and dropped",
                )
                .map_err(e)?,
            )?,
            buffered: register(
                registry,
                IntGauge::new(
                    "kv_buffered_messages",
                    "Replicated writes waiting for their causal dependencies",
                )
                .map_err(e)?,
            )?,
            delivery_delay: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "kv_delivery_delay_seconds",
                        "Time from a write at its origin to its delivery here",
                    )
                    .buckets(vec![
                        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5, 5.0, 10.0, 30.0, 60.0,
                    ]),
                )
                .map_err(e)?,
            )?,
            backlog: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "kv_replication_backlog",
                        "Own writes not yet acknowledged by each peer",
                    ),
                    &["peer"],
                )
                .map_err(e)?,
            )?,
            batches: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "kv_replication_batches_total",
                        "Replication requests to each peer, by result (ok, error, dropped)",
                    ),
                    &["peer", "result"],
                )
                .map_err(e)?,
            )?,
            sent: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "kv_replicated_writes_sent_total",
                        "Writes sent to each peer, including resends and relays",
                    ),
                    &["peer"],
                )
                .map_err(e)?,
            )?,
            log_entries: register(
                registry,
                IntGauge::new(
                    "kv_log_entries",
                    "Writes held in the replication log (not yet causally stable)",
                )
                .map_err(e)?,
            )?,
            context_waits: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "kv_context_waits_total",
                        "Requests that waited for their causal context, by result (ok, timeout)",
                    ),
                    &["result"],
                )
                .map_err(e)?,
            )?,
            http: HttpMetrics::new(registry, "kv")?,
        })
    }

    /// Counts the replicated writes of a durable group, and their delay
    /// since their origin stamped them (wall clock, `now_ms`).
    pub fn observe_applied(&self, me: NodeId, writes: &[Write], now_ms: u64) {
        for w in writes.iter().filter(|w| w.origin != me) {
            let origin = w.origin.to_string();
            self.deliveries.with_label_values(&[&origin]).inc();
            let delay = now_ms.saturating_sub(w.ts_ms) as f64 / 1000.0;
            self.delivery_delay.observe(delay);
        }
    }

    /// Exports the node core's cumulative counters (what moved since
    /// `exported`, which is updated) and its log size.
    pub fn export_node(&self, exported: &mut Counters, now: &Counters, log_entries: usize) {
        let was = std::mem::replace(exported, now.clone());
        self.writes.inc_by(now.writes - was.writes);
        self.context_waits
            .with_label_values(&["ok"])
            .inc_by(now.context_waits_ok - was.context_waits_ok);
        self.context_waits
            .with_label_values(&["timeout"])
            .inc_by(now.context_waits_timeout - was.context_waits_timeout);
        self.duplicates.inc_by(now.covered - was.covered);
        self.log_entries.set(log_entries as i64);
    }

    /// Counts one replication request to `peer`: `ok` (with the writes it
    /// carried), `error` or `dropped` (an injected fault).
    pub fn record_batch(&self, peer: &str, outcome: &str, sent: usize) {
        self.batches.with_label_values(&[peer, outcome]).inc();
        self.sent.with_label_values(&[peer]).inc_by(sent as u64);
    }
}
