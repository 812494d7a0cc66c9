//! Actors of the smart grid, each a thin wrapper around a pure core object.
//!
//! * [`ChargerActor`] (substation): the session model under a power limit.
//! * [`LoadPollerActor`] (balancer): scrapes every substation's `/metrics`
//!   concurrently on an interval and reports to the router.
//! * [`RouterActor`] (balancer): the routing policy, and forwarding with
//!   retries on the next best substation.
//!
//! They talk only through the messages in [`messages`].

pub mod charger;
pub mod messages;
pub mod metrics;
pub mod poller;
pub mod router;

pub use charger::ChargerActor;
pub use poller::LoadPollerActor;
pub use router::RouterActor;
