//! Types that cross the network, shared by the servers and their clients.
//!
//! One definition per message, used by the handler that decodes it and the
//! client that encodes it (and the other way round for answers), so the two
//! sides cannot drift apart. This module holds serde types and pure checks
//! on them only: no actix, no awc, nothing that does I/O, so the clients in
//! `net`, the actors and the handlers in `http` can all depend on it.
//!
//! * [`kv`]: the KV store's client, peer and admin bodies, and the
//!   `Causal-Context` header.
//! * [`inspect`]: checks on `/status` snapshots (causal violations,
//!   convergence), shared by `causal_demo`, the benchmarks and the tests.
//! * [`batch`]: the grid services' batches of charge requests and their
//!   per-request answers.
//! * [`ErrorBody`]: the `{"error": "..."}` body of every 4xx and 5xx answer.
//!
//! The grid's messages (`ChargeRequest`, `ChargeGranted`) live with its core
//! in `grid::request`, which is free of actix as well.

pub mod batch;
pub mod inspect;
pub mod kv;

use serde::{Deserialize, Serialize};

/// The body of every error response: `{"error": "..."}`. Rendered by
/// `http::error`, decoded by the clients in `net`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
