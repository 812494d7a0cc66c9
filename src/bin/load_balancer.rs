//! `load_balancer`: polls substations and routes each request to the least estimated utilisation (`LoadPollerActor`, `RouterActor`).
//!
//! Environment: `SUBSTATIONS` (required, comma-separated base URLs), `LISTEN_ADDR` (0.0.0.0:7000), `POLL_INTERVAL_MS` (1000).
//! `--health-check` probes `GET /health` on `LISTEN_ADDR` and exits 0 or 1.

use causal_grid::service::balancer::{start, BalancerConfig};
use causal_grid::service::env::init_logging;
use causal_grid::service::wait_for_shutdown;

// A request allocates and frees many small buffers on its worker thread; a
// fifth of the CPU went to the system allocator. mimalloc's thread-local
// free lists cost about 6% less CPU per request (docs/grid-performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() {
    init_logging();
    causal_grid::service::handle_health_check_flag("load_balancer", "0.0.0.0:7000");
    let cfg = causal_grid::service::or_exit("load_balancer", BalancerConfig::from_env());
    log::info!("configuration: {cfg:?}");
    match start(cfg, true) {
        Ok(running) => wait_for_shutdown(running).await,
        Err(e) => {
            eprintln!("load_balancer: {e}");
            std::process::exit(1);
        }
    }
}
