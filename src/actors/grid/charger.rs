//! `ChargerActor`: one substation's sessions.
//!
//! Wraps the pure `grid::Charger`. Logical time is seconds since the actor
//! started. A 50 ms tick ends sessions whose energy is delivered and
//! refreshes the gauges; `/metrics` also refreshes just before encoding, so a
//! scrape is exact.

use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler};

use super::messages::{GetSession, HandOver, RefreshMetrics, SetLimit, StartCharge, StartCharges};
use super::metrics::SubstationMetrics;
use crate::error::{Error, Result};
use crate::grid::{ChargeGranted, Charger, Refusal, SessionInfo, ValidRequest};

const TICK: Duration = Duration::from_millis(50);

/// The substation actor.
pub struct ChargerActor {
    id: String,
    charger: Charger,
    origin: Instant,
    metrics: SubstationMetrics,
    // Last values pushed to the monotonic counters.
    completed_seen: u64,
    energy_seen: f64,
}

impl ChargerActor {
    /// A substation `id` with `capacity_w` watts and `time_scale`.
    pub fn new(id: String, capacity_w: f64, time_scale: f64, metrics: SubstationMetrics) -> Self {
        metrics.capacity.set(capacity_w);
        // Export the refusal series at zero from the start, so dashboards and
        // rate() see it before the first refusal.
        metrics
            .rejected
            .with_label_values(&[Refusal::Capacity.label()]);
        ChargerActor {
            id,
            charger: Charger::new(capacity_w, time_scale),
            origin: Instant::now(),
            metrics,
            completed_seen: 0,
            energy_seen: 0.0,
        }
    }

    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn refresh(&mut self) {
        self.charger.advance(self.now());
        let m = &self.metrics;
        m.power.set(self.charger.power_w());
        m.requested.set(self.charger.requested_w());
        m.committed.set(self.charger.committed_w());
        m.capacity.set(self.charger.capacity_w());
        m.utilization.set(self.charger.utilization());
        m.sessions_active.set(self.charger.active() as i64);
        m.sessions_curtailed.set(self.charger.curtailed() as i64);
        m.sessions_paused.set(self.charger.paused() as i64);
        let completed = self.charger.completed();
        m.completed.inc_by(completed - self.completed_seen);
        self.completed_seen = completed;
        let energy = self.charger.energy_j();
        if energy > self.energy_seen {
            m.energy.inc_by(energy - self.energy_seen);
            self.energy_seen = energy;
        }
    }
}

impl Actor for ChargerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, _| act.refresh());
    }
}

impl Handler<StartCharge> for ChargerActor {
    type Result = Result<ChargeGranted>;

    fn handle(&mut self, msg: StartCharge, _: &mut Self::Context) -> Self::Result {
        let result = self.start_charge(&msg.0);
        self.refresh();
        result
    }
}

impl Handler<StartCharges> for ChargerActor {
    type Result = Vec<Result<ChargeGranted>>;

    fn handle(&mut self, msg: StartCharges, _: &mut Self::Context) -> Self::Result {
        let results = msg.0.iter().map(|req| self.start_charge(req)).collect();
        self.refresh();
        results
    }
}

impl ChargerActor {
    /// Admits one session (or refuses it) and counts the outcome.
    fn start_charge(&mut self, req: &ValidRequest) -> Result<ChargeGranted> {
        let now = self.now();
        match self.charger.admit(req, now) {
            Ok(a) => {
                self.metrics.started.inc();
                log::debug!(
                    "{}: admitted {:?} at {:.1} kW, about {:.1}s",
                    self.id,
                    req,
                    a.power_w / 1000.0,
                    a.ends_in_s
                );
                Ok(ChargeGranted {
                    session_id: format!("{}-{}", self.id, a.seq),
                    substation: self.id.clone(),
                    power_kw: a.power_w / 1000.0,
                    requested_power_kw: req.power_kw,
                    min_power_kw: req.min_power_kw,
                    energy_kwh: req.energy_kwh,
                    ends_in_s: a.ends_in_s,
                    seq: Some(a.seq),
                })
            }
            Err(refusal) => {
                self.metrics
                    .rejected
                    .with_label_values(&[refusal.label()])
                    .inc();
                Err(Error::unavailable(format!(
                    "{}: a minimum of {} kW does not fit ({:.0} of {:.0} kW committed to the minimums of {} sessions)",
                    self.id,
                    req.min_power_kw,
                    self.charger.committed_w() / 1000.0,
                    self.charger.capacity_w() / 1000.0,
                    self.charger.active()
                )))
            }
        }
    }
}

impl Handler<SetLimit> for ChargerActor {
    type Result = f64;

    fn handle(&mut self, msg: SetLimit, _: &mut Self::Context) -> f64 {
        let before = self.charger.capacity_w();
        self.charger.set_capacity(msg.0, self.now());
        self.metrics.limit_changes.inc();
        log::info!(
            "{}: limit {:.0} -> {:.0} kW; {} sessions curtailed, {} paused",
            self.id,
            before / 1000.0,
            msg.0 / 1000.0,
            self.charger.curtailed(),
            self.charger.paused()
        );
        self.refresh();
        before
    }
}

impl Handler<GetSession> for ChargerActor {
    type Result = Option<SessionInfo>;

    fn handle(&mut self, msg: GetSession, _: &mut Self::Context) -> Self::Result {
        self.refresh();
        self.charger.session(msg.0)
    }
}

impl Handler<HandOver> for ChargerActor {
    type Result = Option<SessionInfo>;

    fn handle(&mut self, msg: HandOver, _: &mut Self::Context) -> Self::Result {
        let left = self.charger.hand_over(msg.0, self.now())?;
        self.metrics.moved.inc();
        log::debug!(
            "{}: session {} handed over with {:.2} of {:.2} kWh to go",
            self.id,
            msg.0,
            (left.energy_j - left.delivered_j) / 3.6e6,
            left.energy_j / 3.6e6
        );
        self.refresh();
        self.charger.session(msg.0)
    }
}

impl Handler<RefreshMetrics> for ChargerActor {
    type Result = ();

    fn handle(&mut self, _: RefreshMetrics, _: &mut Self::Context) {
        self.refresh();
    }
}
