//! The `kv_node` service: its configuration from the environment, and
//! start-up (the node's actors behind the routes of `http::kv`).
//!
//! `start` binds `LISTEN_ADDR`; `start_on` takes a listener bound beforehand,
//! so that a test can bind every node's `127.0.0.1:0` first and give each
//! node the ports of all the others before any starts.

use actix_web::{web, HttpServer};

use super::env::{parse_or, required, var};
use super::server::{spawn_server_on, Running};
use crate::actors::kv::KvNode;
use crate::auth::Signer;
use crate::error::{Error, Result};
use crate::http::auth::PeerAuth;
use crate::http::kv::configure;
use crate::http::RecordHttp;
use crate::wire::kv::Limits;

pub use crate::config::KvConfig;

impl KvConfig {
    /// Reads and checks the environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `NODE_ID` | this node's index, 0-based | required |
    /// | `PEERS` | `ID=URL` for every node, this one included | required |
    /// | `LISTEN_ADDR` | address to listen on | `0.0.0.0:5000` |
    /// | `DATA_DIR` | where the node keeps its state | `data/node<NODE_ID>` |
    /// | `CLUSTER_SECRET` | shared secret for peer and admin traffic | required |
    /// | `MAX_KEY_BYTES` | longest key | 1024 |
    /// | `MAX_VALUE_BYTES` | longest value (413 past it) | 1048576 |
    /// | `CAUSAL_WAIT_TIMEOUT_MS` | how long a request waits for its `Causal-Context` | 5000 |
    /// | `BUFFER_CAPACITY` | replicated writes that may wait for dependencies | 100000 |
    /// | `MAX_LOG_ENTRIES` | writes kept for peers before puts get 503 | 1000000 |
    /// | `REPLICATION_BATCH` | most writes per replication request | 512 |
    /// | `PEER_TIMEOUT_MS` | timeout of each replication request | 2000 |
    /// | `RELAY_AFTER_MS` | how long a peer may lag on an origin before others relay it | 1000 |
    /// | `DURABILITY` | `fsync` (group commit, fsync before ack), `eventual` (no fsync before ack), `memory` (nothing on disk) | `fsync` |
    pub fn from_env() -> Result<Self> {
        let node_id: usize = required("NODE_ID")?;
        let peers = parse_peers(&required::<String>("PEERS")?)?;
        let cluster_secret = var("CLUSTER_SECRET").ok_or_else(|| {
            Error::config(
                "CLUSTER_SECRET is required: set the same secret on every node (it authenticates node-to-node traffic)",
            )
        })?;
        let d = KvConfig::new(node_id, peers, cluster_secret);
        let config = KvConfig {
            listen_addr: parse_or("LISTEN_ADDR", d.listen_addr.clone())?,
            data_dir: parse_or("DATA_DIR", d.data_dir.clone())?,
            max_key_bytes: parse_or("MAX_KEY_BYTES", d.max_key_bytes)?,
            max_value_bytes: parse_or("MAX_VALUE_BYTES", d.max_value_bytes)?,
            causal_wait_timeout_ms: parse_or("CAUSAL_WAIT_TIMEOUT_MS", d.causal_wait_timeout_ms)?,
            buffer_capacity: parse_or("BUFFER_CAPACITY", d.buffer_capacity)?,
            max_log_entries: parse_or("MAX_LOG_ENTRIES", d.max_log_entries)?,
            replication_batch: parse_or("REPLICATION_BATCH", d.replication_batch)?,
            peer_timeout_ms: parse_or("PEER_TIMEOUT_MS", d.peer_timeout_ms)?,
            relay_after_ms: parse_or("RELAY_AFTER_MS", d.relay_after_ms)?,
            durability: parse_or("DURABILITY", d.durability)?,
            ..d
        };
        config.validate()?;
        Ok(config)
    }
}

/// Parses `PEERS`: `0=http://node1:5000,1=http://node2:5000,...`. Every id
/// from 0 to n-1 must appear exactly once; the order of the list is free.
pub fn parse_peers(raw: &str) -> Result<Vec<String>> {
    let mut slots: Vec<Option<String>> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, url) = item
            .split_once('=')
            .ok_or_else(|| Error::config(format!("PEERS entry {item:?} is not ID=URL")))?;
        let id: usize = id
            .trim()
            .parse()
            .map_err(|_| Error::config(format!("PEERS entry {item:?}: {id:?} is not a node id")))?;
        let url = url.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::config(format!(
                "PEERS entry {item:?}: URL must start with http:// or https://"
            )));
        }
        if id > 1024 {
            return Err(Error::config(format!("PEERS entry {item:?}: id too large")));
        }
        if slots.len() <= id {
            slots.resize(id + 1, None);
        }
        if slots[id].replace(url).is_some() {
            return Err(Error::config(format!("PEERS lists node {id} twice")));
        }
    }
    if slots.is_empty() {
        return Err(Error::config("PEERS is empty"));
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(id, url)| {
            url.ok_or_else(|| Error::config(format!("PEERS has no entry for node {id}")))
        })
        .collect()
}

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
    let node = KvNode::start(config)?;
    let auth = web::Data::new(PeerAuth::new(Signer::new(&config.cluster_secret)?));
    let limits = Limits {
        max_key_bytes: config.max_key_bytes,
        max_value_bytes: config.max_value_bytes,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_parsed_by_id() {
        let peers = parse_peers("1=http://b:5000, 0=http://a:5000/,2=http://c:5000").unwrap();
        assert_eq!(
            peers,
            vec!["http://a:5000", "http://b:5000", "http://c:5000"]
        );
        for bad in [
            "",
            "0=http://a,0=http://b",
            "0=http://a,2=http://c",
            "x=http://a",
            "0=a:5000",
            "0",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
