//! `load_balancer`: polls substations and routes each request to the least estimated utilisation (`LoadPollerActor`, `RouterActor`).
//!
//! Environment: `SUBSTATIONS` (required, comma-separated base URLs), `LISTEN_ADDR` (0.0.0.0:7000), `POLL_INTERVAL_MS` (1000).
//! `--health-check` probes `GET /health` on `LISTEN_ADDR` and exits 0 or 1.

use causal_grid::config::{init_logging, var};
use causal_grid::http::grid::balancer::{start, BalancerConfig};
use causal_grid::http::grid::wait_for_shutdown;
use causal_grid::http::probe_health;

#[actix_web::main]
async fn main() {
    init_logging();
    if std::env::args().any(|a| a == "--health-check") {
        // Only LISTEN_ADDR matters here; the rest need not be set.
        let listen_addr = var("LISTEN_ADDR").unwrap_or_else(|| "0.0.0.0:7000".to_string());
        match probe_health(&listen_addr) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("load_balancer unhealthy: {e}");
                std::process::exit(1);
            }
        }
    }
    let cfg = match BalancerConfig::from_env() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("load_balancer: {e}");
            std::process::exit(2);
        }
    };
    log::info!("configuration: {cfg:?}");
    match start(cfg, true) {
        Ok(running) => wait_for_shutdown(running).await,
        Err(e) => {
            eprintln!("load_balancer: {e}");
            std::process::exit(1);
        }
    }
}
