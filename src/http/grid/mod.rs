//! HTTP side of the smart grid: three services and their shared client.
//!
//! Each service module holds its `Config` (read from the environment), its
//! `configure` function (routes, used by `start` and by tests alike) and a
//! `start(cfg, signals)` that must run inside an actix `System`: it starts the
//! service's actors, binds `cfg.listen_addr` (which may be `127.0.0.1:0`) and
//! returns the running server. Each instance has its own Prometheus registry,
//! so several can share a process.
//!
//! * [`substation`]: `POST /charge` (the `ChargerActor`).
//! * [`balancer`]: `POST /route`, `GET /status` (`LoadPollerActor`, `RouterActor`).
//! * [`entry`]: `POST /request_charge`, the public entry point (`charge_request`).
//!
//! All three serve `GET /health` and `GET /metrics`, and answer every error
//! as `{"error": ...}` (503 with `Retry-After`).

pub mod balancer;
pub mod client;
pub mod entry;
pub mod substation;

use super::Running;

/// Largest request body a grid service accepts.
pub const MAX_BODY_BYTES: usize = 4096;

/// Waits for Ctrl-C or SIGTERM, then stops `running` gracefully.
/// Binaries call this after `start(cfg, true)`; the server also reacts to
/// the signal itself, and a second stop is harmless.
pub async fn wait_for_shutdown(running: Running) {
    crate::http::shutdown_signal().await;
    log::info!("shutting down");
    running.stop().await;
}
