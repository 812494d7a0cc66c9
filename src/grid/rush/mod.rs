//! The pure half of `rush_hour`: what load to offer, and what to make of the
//! answers.
//!
//! `rush_hour` (in `src/bin/`) only moves bytes: it sends the requests this
//! module plans, at the times it plans them, and hands back what the entry
//! service and the balancer answered. Everything that decides or computes
//! lives here, without a network or a clock, so it is unit-tested:
//!
//! * [`profile`]: offered load over time (the default evening rush scaled to
//!   the grid's capacity, or a constant rate with ramps), the conversion
//!   between offered power and arrival rate, Poisson arrivals that follow a
//!   profile, and the mix of charger classes a request is drawn from.
//! * [`trace`]: parsing a CSV trace of real sessions into planned requests.
//! * [`report`]: per-request outcomes, the per-second series of offered,
//!   accepted, refused and curtailed requests, the balancer's samples, and
//!   the summary (energy, refusal and curtailment, per class, latency).
//! * [`svg`]: the chart of both, with a layout that keeps legends and axis
//!   labels outside the plots.
//!
//! Units: arrival times and the series are in real seconds since the start of
//! the run; power in kW, energy in kWh, as on the wire. Substations run
//! `TIME_SCALE` simulated seconds per real second, so a stream of requests
//! of mean energy `E` kWh arriving at `λ` per real second offers
//! `λ · E · 3600 / time_scale` kW on average. `rush_hour --time-scale` must
//! match the substations' `TIME_SCALE` for that figure to mean anything.

pub mod profile;
pub mod report;
pub mod svg;
pub mod trace;

pub use profile::{Arrivals, ChargerClass, Flex, Mix, Planned, Profile, RUSH_CLASSES};
pub use report::{GridSample, Outcome, Summary};
