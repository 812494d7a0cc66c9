//! `ChargerActor`: one substation's sessions.
//!
//! Wraps the pure `grid::Charger`. Logical time is seconds since the actor
//! started. A 50 ms tick ends due sessions and refreshes the gauges; `/metrics`
//! also refreshes just before encoding, so a scrape is exact.

use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler};

use super::messages::{RefreshMetrics, StartCharge};
use super::metrics::SubstationMetrics;
use crate::error::{Error, Result};
use crate::grid::{ChargeGranted, Charger, Refusal};

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
        m.utilization.set(self.charger.utilization());
        m.sessions_active.set(self.charger.active() as i64);
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
        let now = self.now();
        let outcome = self.charger.admit(&msg.0, now);
        let result = match outcome {
            Ok(a) => {
                self.metrics.started.inc();
                log::debug!("{}: admitted {:?} for {:.1}s", self.id, msg.0, a.ends_in_s);
                Ok(ChargeGranted {
                    session_id: format!("{}-{}", self.id, a.seq),
                    substation: self.id.clone(),
                    power_kw: msg.0.power_kw,
                    energy_kwh: msg.0.energy_kwh,
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
                    "{}: {} kW does not fit ({:.0} of {:.0} kW in use)",
                    self.id,
                    msg.0.power_kw,
                    self.charger.power_w() / 1000.0,
                    self.charger.capacity_w() / 1000.0
                )))
            }
        };
        self.refresh();
        result
    }
}

impl Handler<RefreshMetrics> for ChargerActor {
    type Result = ();

    fn handle(&mut self, _: RefreshMetrics, _: &mut Self::Context) {
        self.refresh();
    }
}
