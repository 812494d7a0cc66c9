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
//! * [`router`]: least estimated utilisation with local accounting between
//!   polls, so it does not herd.
//! * [`sim`]: a discrete-event simulation comparing routing policies against
//!   the Erlang-B bound.

pub mod exposition;
pub mod request;
pub mod router;
pub mod session;
pub mod sim;

pub use exposition::LoadSample;
pub use request::{ChargeGranted, ChargeRequest, ValidRequest};
pub use router::{Demand, Placement, Router, RouterConfig, SubstationView, Ticket};
pub use session::{Admitted, Charger, Refusal, SessionInfo, SessionState};
