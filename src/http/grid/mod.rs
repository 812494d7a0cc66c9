//! HTTP side of the smart grid: the routes of its three services.
//!
//! Each service module holds its handlers and its `configure` function, used
//! by its start-up code in `service` and by tests alike. Configuration and
//! start-up (actors, registry, server) are in `service::{substation,
//! balancer, entry}`; the client that forwards a request one hop is in
//! `net::grid`.
//!
//! * [`substation`]: `POST /charge` (the `ChargerActor`).
//! * [`balancer`]: `POST /route`, `GET /status` (`LoadPollerActor`, `RouterActor`).
//! * [`entry`]: `POST /request_charge`, the public entry point (`charge_request`).
//!
//! All three serve `GET /health` and `GET /metrics`, and answer every error
//! as `{"error": ...}` (503 with `Retry-After`).

pub mod balancer;
pub mod entry;
pub mod substation;

/// Largest request body a grid service accepts.
pub const MAX_BODY_BYTES: usize = 4096;
