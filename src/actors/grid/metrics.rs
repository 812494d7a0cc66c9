//! The grid services' Prometheus metrics (names are a contract: dashboards
//! are written against them).

use std::sync::{Arc, OnceLock};

use prometheus::{
    Counter, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

use crate::error::{Error, Result};
use crate::metrics::{register, LATENCY_BUCKETS};
use crate::net::grid::Outcome;

/// A substation's metrics. The registry carries the `substation` label.
#[derive(Clone)]
pub struct SubstationMetrics {
    pub power: Gauge,
    pub requested: Gauge,
    pub committed: Gauge,
    pub capacity: Gauge,
    pub limit_changes: IntCounter,
    pub sessions_curtailed: IntGauge,
    pub sessions_paused: IntGauge,
    pub utilization: Gauge,
    pub sessions_active: IntGauge,
    pub started: IntCounter,
    pub completed: IntCounter,
    pub moved: IntCounter,
    pub rejected: IntCounterVec,
    pub energy: Counter,
}

impl SubstationMetrics {
    /// Registers every substation metric in `r`.
    pub fn new(r: &Registry) -> Result<Self> {
        let e = Error::internal;
        Ok(SubstationMetrics {
            power: register(
                r,
                Gauge::new("substation_power_watts", "Power drawn by active sessions")
                    .map_err(e)?,
            )?,
            requested: register(
                r,
                Gauge::new(
                    "substation_requested_watts",
                    "Power the active sessions ask for (granted is substation_power_watts)",
                )
                .map_err(e)?,
            )?,
            committed: register(
                r,
                Gauge::new(
                    "substation_committed_watts",
                    "Sum of the active sessions' minimum powers: a new session's minimum must fit beside it",
                )
                .map_err(e)?,
            )?,
            capacity: register(
                r,
                Gauge::new(
                    "substation_capacity_watts",
                    "Current limit (CAPACITY_KW, or the last PUT /limit)",
                )
                .map_err(e)?,
            )?,
            limit_changes: register(
                r,
                IntCounter::new("substation_limit_changes_total", "Limits set by PUT /limit")
                    .map_err(e)?,
            )?,
            sessions_curtailed: register(
                r,
                IntGauge::new(
                    "substation_sessions_curtailed",
                    "Sessions drawing less than they asked for (paused ones included)",
                )
                .map_err(e)?,
            )?,
            sessions_paused: register(
                r,
                IntGauge::new(
                    "substation_sessions_paused",
                    "Sessions paused because the limit is below the older sessions' minimums",
                )
                .map_err(e)?,
            )?,
            utilization: register(
                r,
                Gauge::new("substation_utilization_ratio", "Power over capacity").map_err(e)?,
            )?,
            sessions_active: register(
                r,
                IntGauge::new("substation_sessions_active", "Sessions charging now").map_err(e)?,
            )?,
            started: register(
                r,
                IntCounter::new("substation_sessions_started_total", "Sessions admitted")
                    .map_err(e)?,
            )?,
            completed: register(
                r,
                IntCounter::new("substation_sessions_completed_total", "Sessions ended")
                    .map_err(e)?,
            )?,
            moved: register(
                r,
                IntCounter::new(
                    "substation_sessions_moved_total",
                    "Sessions handed over to another substation (load transfer)",
                )
                .map_err(e)?,
            )?,
            rejected: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "substation_sessions_rejected_total",
                        "Requests refused, by reason",
                    ),
                    &["reason"],
                )
                .map_err(e)?,
            )?,
            energy: register(
                r,
                Counter::new(
                    "substation_energy_delivered_joules_total",
                    "Simulated energy delivered",
                )
                .map_err(e)?,
            )?,
        })
    }
}

/// The load balancer's metrics.
#[derive(Clone)]
pub struct BalancerMetrics {
    pub decisions: IntCounterVec,
    pub retries: IntCounter,
    pub no_capacity: IntCounter,
    pub moves: IntCounterVec,
    pub rebalanced: IntCounter,
    pub refusal_polls: IntCounter,
    pub polls: IntCounterVec,
    pub poll_duration: Histogram,
    pub decision_duration: Histogram,
    pub snapshot_age: GaugeVec,
    pub healthy: GaugeVec,
    pub estimated_utilization: GaugeVec,
}

/// Buckets for in-process decisions, 1 µs to 10 ms.
const DECISION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2,
];

impl BalancerMetrics {
    /// Registers every balancer metric in `r`.
    pub fn new(r: &Registry) -> Result<Self> {
        let e = Error::internal;
        let by_sub = &["substation"];
        Ok(BalancerMetrics {
            decisions: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "lb_decisions_total",
                        "Routing decisions, by chosen substation",
                    ),
                    by_sub,
                )
                .map_err(e)?,
            )?,
            retries: register(
                r,
                IntCounter::new("lb_retries_total", "Attempts after a refusal or failure")
                    .map_err(e)?,
            )?,
            no_capacity: register(
                r,
                IntCounter::new("lb_no_capacity_total", "Requests no substation could admit")
                    .map_err(e)?,
            )?,
            moves: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "lb_session_moves_total",
                        "Sessions moved to make room, by result: moved (admitted by the new substation), returned (refused there, taken back by the old one), dropped (admitted by neither), failed (the hand-over itself failed; the session stays where it was)",
                    ),
                    &["result"],
                )
                .map_err(e)?,
            )?,
            rebalanced: register(
                r,
                IntCounter::new(
                    "lb_rebalanced_requests_total",
                    "Requests admitted where sessions were moved to make room",
                )
                .map_err(e)?,
            )?,
            refusal_polls: register(
                r,
                IntCounter::new(
                    "lb_refusal_polls_total",
                    "Polls of every substation taken because a request was about to be refused",
                )
                    .map_err(e)?,
            )?,
            polls: register(
                r,
                IntCounterVec::new(
                    Opts::new("lb_polls_total", "Load polls, by substation and result"),
                    &["substation", "result"],
                )
                .map_err(e)?,
            )?,
            poll_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("lb_poll_duration_seconds", "Duration of one load poll")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .map_err(e)?,
            )?,
            decision_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "lb_decision_duration_seconds",
                        "Time to choose a substation, in process",
                    )
                    .buckets(DECISION_BUCKETS.to_vec()),
                )
                .map_err(e)?,
            )?,
            snapshot_age: register(
                r,
                GaugeVec::new(
                    Opts::new("lb_snapshot_age_seconds", "Age of the last successful poll"),
                    by_sub,
                )
                .map_err(e)?,
            )?,
            healthy: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "lb_substation_healthy",
                        "1 if the substation receives traffic",
                    ),
                    by_sub,
                )
                .map_err(e)?,
            )?,
            estimated_utilization: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "lb_estimated_utilization_ratio",
                        "The router's estimate of power over capacity",
                    ),
                    by_sub,
                )
                .map_err(e)?,
            )?,
        })
    }
}

/// The entry service's metrics.
#[derive(Clone)]
pub struct EntryMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    /// The series of `requests` per outcome and of `duration`, looked up
    /// once (on first use, so a series appears when it first counts) rather
    /// than hashed per request.
    cached: Arc<CachedEntrySeries>,
}

#[derive(Default)]
struct CachedEntrySeries {
    by_outcome: [OnceLock<IntCounter>; 4],
    duration: OnceLock<Histogram>,
}

impl EntryMetrics {
    /// Registers every entry metric in `r`.
    pub fn new(r: &Registry) -> Result<Self> {
        let e = Error::internal;
        Ok(EntryMetrics {
            requests: register(
                r,
                IntCounterVec::new(
                    Opts::new("charge_requests_total", "Charge requests, by outcome"),
                    &["outcome"],
                )
                .map_err(e)?,
            )?,
            duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "charge_request_duration_seconds",
                        "Charge request latency, end to end",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &[],
                )
                .map_err(e)?,
            )?,
            cached: Arc::default(),
        })
    }

    /// Counts one request that ended with `outcome` after `secs` seconds.
    pub fn record(&self, outcome: Outcome, secs: f64) {
        let slot = match outcome {
            Outcome::Accepted => 0,
            Outcome::Rejected => 1,
            Outcome::Invalid => 2,
            Outcome::Error => 3,
        };
        self.cached.by_outcome[slot]
            .get_or_init(|| self.requests.with_label_values(&[outcome.label()]))
            .inc();
        self.cached
            .duration
            .get_or_init(|| self.duration.with_label_values(&[]))
            .observe(secs);
    }
}
