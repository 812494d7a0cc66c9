//! `substation`: one substation: charging sessions under a transformer limit (`ChargerActor`).
//!
//! Environment: `SUBSTATION_ID` (substation1), `LISTEN_ADDR` (0.0.0.0:8000), `CAPACITY_KW` (500), `TIME_SCALE` (120).
//! `--health-check` probes `GET /health` on `LISTEN_ADDR` and exits 0 or 1.

use causal_grid::config::{init_logging, var};
use causal_grid::http::grid::substation::{start, SubstationConfig};
use causal_grid::http::grid::wait_for_shutdown;
use causal_grid::http::probe_health;

#[actix_web::main]
async fn main() {
    init_logging();
    if std::env::args().any(|a| a == "--health-check") {
        // Only LISTEN_ADDR matters here; the rest need not be set.
        let listen_addr = var("LISTEN_ADDR").unwrap_or_else(|| "0.0.0.0:8000".to_string());
        match probe_health(&listen_addr) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("substation unhealthy: {e}");
                std::process::exit(1);
            }
        }
    }
    let cfg = match SubstationConfig::from_env() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("substation: {e}");
            std::process::exit(2);
        }
    };
    log::info!("configuration: {cfg:?}");
    match start(cfg, true) {
        Ok(running) => wait_for_shutdown(running).await,
        Err(e) => {
            eprintln!("substation: {e}");
            std::process::exit(1);
        }
    }
}
