//! Prometheus metrics of one KV node. Every metric carries the registry's
//! constant label `node`.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use std::time::Duration;

use crate::causal::node::Counters;
use crate::causal::{NodeId, Write};
use crate::error::{Error, Result};
use crate::metrics::{register, HttpMetrics};
use crate::storage::{CheckpointStats, CommitStats};

#[derive(Clone)]
pub struct KvMetrics {
    pub writes: IntCounter,
    pub transactions: IntCounter,
    pub increments: IntCounter,
    pub deliveries: IntCounterVec,
    pub duplicates: IntCounter,
    pub buffered: IntGauge,
    pub delivery_delay: Histogram,
    pub backlog: IntGaugeVec,
    pub batches: IntCounterVec,
    pub sent: IntCounterVec,
    pub log_entries: IntGauge,
    pub context_waits: IntCounterVec,
    pub commit: CommitMetrics,
    pub http: HttpMetrics,
}

/// The commit path: group commits, their `fdatasync`, checkpoints, and how
/// long puts queue before their group starts.
#[derive(Clone)]
pub struct CommitMetrics {
    pub duration: Histogram,
    pub group_writes: Histogram,
    pub fsync: Histogram,
    pub checkpoint: Histogram,
    pub checkpoint_bytes: Histogram,
    pub checkpoint_keys: Histogram,
    pub put_queue: Histogram,
}

/// 50 µs to 2.5 s: an `fdatasync` on a fast disk up to a stall.
const COMMIT_BUCKETS: &[f64] = &[
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Result<Histogram> {
    register(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .map_err(Error::internal)?,
    )
}

impl CommitMetrics {
    fn new(r: &Registry) -> Result<Self> {
        let powers = |from: f64, n: i32, base: f64| (0..n).map(|i| from * base.powi(i)).collect();
        Ok(CommitMetrics {
            duration: histogram(
                r,
                "kv_commit_duration_seconds",
                "Group commits: log append, fdatasync and any checkpoint join",
                COMMIT_BUCKETS.to_vec(),
            )?,
            group_writes: histogram(
                r,
                "kv_commit_group_writes",
                "Writes per group commit",
                powers(1.0, 14, 2.0),
            )?,
            fsync: histogram(
                r,
                "kv_fsync_duration_seconds",
                "The write-ahead log's fdatasync per synced commit",
                COMMIT_BUCKETS.to_vec(),
            )?,
            checkpoint: histogram(
                r,
                "kv_checkpoint_duration_seconds",
                "Background checkpoints of closed log segments into the database",
                COMMIT_BUCKETS
                    .iter()
                    .copied()
                    .chain([5.0, 10.0, 30.0])
                    .collect(),
            )?,
            checkpoint_bytes: histogram(
                r,
                "kv_checkpoint_bytes",
                "Bytes of values and log entries each checkpoint wrote",
                powers(4096.0, 14, 4.0),
            )?,
            checkpoint_keys: histogram(
                r,
                "kv_checkpoint_keys",
                "Keys each checkpoint wrote",
                powers(1.0, 12, 4.0),
            )?,
            put_queue: histogram(
                r,
                "kv_put_queue_seconds",
                "Time a put waited from its arrival to the start of its group commit",
                COMMIT_BUCKETS.to_vec(),
            )?,
        })
    }

    /// Records one group commit that took `elapsed`.
    pub fn observe(&self, stats: &CommitStats, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        self.group_writes.observe(stats.writes as f64);
        if let Some(f) = stats.fsync {
            self.fsync.observe(f.as_secs_f64());
        }
        if let Some(c) = &stats.checkpoint {
            self.observe_checkpoint(c);
        }
    }

    /// Records a finished background checkpoint. The duration goes last: a
    /// scrape on another thread can fall between the three, and one that
    /// counts the checkpoint should find its size counted too.
    pub fn observe_checkpoint(&self, c: &CheckpointStats) {
        self.checkpoint_bytes.observe(c.bytes as f64);
        self.checkpoint_keys.observe(c.keys as f64);
        self.checkpoint.observe(c.duration.as_secs_f64());
    }
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
            transactions: register(
                registry,
                IntCounter::new(
                    "kv_transactions_total",
                    "Transactions (POST /txn) answered by this node",
                )
                .map_err(e)?,
            )?,
            increments: register(
                registry,
                IntCounter::new(
                    "kv_increments_total",
                    "Counter increments accepted by this node (POST /incr and the incr part of /txn)",
                )
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
            commit: CommitMetrics::new(registry)?,
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
