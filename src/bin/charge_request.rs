//! `charge_request`: the public entry point, forwarding to the load balancer.
//!
//! Environment: `LISTEN_ADDR` (0.0.0.0:6000), `LOAD_BALANCER_URL` (http://localhost:7000).
//! `--health-check` probes `GET /health` on `LISTEN_ADDR` and exits 0 or 1.

use causal_grid::config::{init_logging, var};
use causal_grid::http::grid::entry::{start, EntryConfig};
use causal_grid::http::grid::wait_for_shutdown;
use causal_grid::http::probe_health;

#[actix_web::main]
async fn main() {
    init_logging();
    if std::env::args().any(|a| a == "--health-check") {
        // Only LISTEN_ADDR matters here; the rest need not be set.
        let listen_addr = var("LISTEN_ADDR").unwrap_or_else(|| "0.0.0.0:6000".to_string());
        match probe_health(&listen_addr) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("charge_request unhealthy: {e}");
                std::process::exit(1);
            }
        }
    }
    let cfg = match EntryConfig::from_env() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("charge_request: {e}");
            std::process::exit(2);
        }
    };
    log::info!("configuration: {cfg:?}");
    match start(cfg, true) {
        Ok(running) => wait_for_shutdown(running).await,
        Err(e) => {
            eprintln!("charge_request: {e}");
            std::process::exit(1);
        }
    }
}
