//! Pure core of the smart grid: sessions, routing policy, load view.
//!
//! Nothing here imports actix or awc or reads a clock; every function that
//! depends on time takes it as an argument (`now`, seconds from an arbitrary
//! origin). That keeps the policy testable without a network and lets
//! `grid_sim` drive exactly the code the balancer runs.
//!
//! * [`request`]: the wire types shared by the three services, and validation.
//! * [`session`]: a substation's sessions sharing power under its limit.
//! * [`exposition`]: a parser for the Prometheus text format, which is how
//!   the balancer learns each substation's load.
//! * [`router`]: admission by estimated committed power (the substations'
//!   rule) with local accounting between polls, so it does not herd, and a
//!   placement that keeps room for large requests.
//! * [`sim`]: discrete-event simulations comparing routing policies: equal
//!   bays against the Erlang-B bound, and mixed power on unequal substations
//!   (the real session model) against the Kaufman–Roberts bound.
//! * [`rush`]: the pure half of the `rush_hour` load tester: load profiles,
//!   the charger mix, trace parsing, the bookkeeping of a run, its chart.

pub mod exposition;
pub mod request;
pub mod router;
pub mod rush;
pub mod session;
pub mod sim;

pub use exposition::LoadSample;
pub use request::{ChargeGranted, ChargeRequest, SessionStatus, ValidRequest};
pub use router::{
    Demand, Move, Placement, Rebalance, Router, RouterConfig, SubstationView, Ticket,
};
pub use session::{Admitted, Charger, Refusal, SessionInfo, SessionState};
