//! The `kv_node` service: its configuration from the environment, and
//! start-up (the node's actors behind the routes of `http::kv`).
//!
//! `start` binds `LISTEN_ADDR`; `start_on` takes a listener bound beforehand,
//! so that a test can bind every node's `127.0.0.1:0` first and give each
//! node the ports of all the others before any starts.

use actix_web::{web, HttpServer};

use super::server::{spawn_server_on, Running};
use crate::actors::kv::KvNode;
use crate::auth::Signer;
use crate::error::{Error, Result};
use crate::http::auth::PeerAuth;
use crate::http::kv::configure;
use crate::http::RecordHttp;
use crate::wire::kv::Limits;

pub mod config;
pub mod node;

pub use config::{parse_peers, KvConfig};
pub use node::start_node;

/// Starts a node: its actors and its HTTP server on `config.listen_addr`
/// (the routes of `http::kv::configure`).
/// Must run inside an actix system. `signals`: let the server handle
/// SIGINT/SIGTERM itself (false when several services share a process).
pub fn start(config: &KvConfig, signals: bool) -> Result<(Running, KvNode)> {
    let listener = std::net::TcpListener::bind(&config.listen_addr).map_err(|e| {
        Error::config(format!(
            "cannot listen on LISTEN_ADDR={}: {e}",
            config.listen_addr
        ))
    })?;
    start_on(config, listener, signals)
}

/// Like `start`, on a listener bound beforehand.
pub fn start_on(
    config: &KvConfig,
    listener: std::net::TcpListener,
    signals: bool,
) -> Result<(Running, KvNode)> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        Error::config(format!(
            "DATA_DIR {} cannot be created: {e}",
            config.data_dir.display()
        ))
    })?;
    let node = start_node(config)?;
    let auth = web::Data::new(PeerAuth::new(Signer::new(&config.cluster_secret)?));
    let limits = Limits {
        max_key_bytes: config.max_key_bytes,
        max_value_bytes: config.max_value_bytes,
        max_txn_keys: config.txn_max_keys,
        max_txn_bytes: config.txn_max_bytes,
    };
    let data = web::Data::new(node.clone());
    let registry = web::Data::new(node.registry.clone());
    let record = RecordHttp(node.metrics.http.clone());
    let server = HttpServer::new(move || {
        actix_web::App::new()
            .wrap(record.clone())
            .app_data(data.clone())
            .app_data(auth.clone())
            .app_data(registry.clone())
            .app_data(web::Data::new(limits))
            .configure(|cfg| configure(cfg, limits))
    });
    let running = spawn_server_on(server, listener, signals)?;
    Ok((running, node))
}
