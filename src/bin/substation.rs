//! `substation`: one substation: charging sessions under a transformer limit (`ChargerActor`).
//!
//! Environment: `SUBSTATION_ID` (substation1), `LISTEN_ADDR` (0.0.0.0:8000), `CAPACITY_KW` (500), `TIME_SCALE` (120).
//! `--health-check` probes `GET /health` on `LISTEN_ADDR` and exits 0 or 1.

use causal_grid::service::env::init_logging;
use causal_grid::service::substation::{start, SubstationConfig};
use causal_grid::service::wait_for_shutdown;

#[actix_web::main]
async fn main() {
    init_logging();
    causal_grid::service::handle_health_check_flag("substation", "0.0.0.0:8000");
    let cfg = causal_grid::service::or_exit("substation", SubstationConfig::from_env());
    log::info!("configuration: {cfg:?}");
    match start(cfg, true) {
        Ok(running) => wait_for_shutdown(running).await,
        Err(e) => {
            eprintln!("substation: {e}");
            std::process::exit(1);
        }
    }
}
