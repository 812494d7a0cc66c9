//! `kv_node`: one node of the causally consistent replicated KV store.
//!
//! Configured by environment variables (see `KvConfig` and the README):
//! `NODE_ID`, `PEERS`, `LISTEN_ADDR`, `DATA_DIR`, `CLUSTER_SECRET`, ...
//!
//! `kv_node --health-check` asks the node on `LISTEN_ADDR`'s port for
//! `/health` and exits 0 if it answers 200 (for container health checks).

use causal_grid::service::env::init_logging;
use causal_grid::service::{self, kv::KvConfig};

fn main() {
    init_logging();
    service::handle_health_check_flag("kv_node", "0.0.0.0:5000");
    let config = service::or_exit("kv_node", KvConfig::from_env());
    log::info!("kv_node starting with {config:?}");
    let result = actix_rt::System::new().block_on(async move {
        let (running, node) = service::kv::start(&config, true)?;
        log::info!(
            "node {} listening on {} ({} nodes)",
            config.node_id,
            running.addr,
            config.cluster_size()
        );
        // On SIGTERM/SIGINT the server stops accepting, finishes in-flight
        // requests, then returns here; the log is flushed before exiting.
        running.wait().await?;
        node.flush().await?;
        log::info!("node {}: log flushed", config.node_id);
        node.shutdown();
        Ok::<(), causal_grid::Error>(())
    });
    if let Err(e) = result {
        log::error!("kv_node stopped: {e}");
        std::process::exit(1);
    }
    log::info!("kv_node stopped");
}
