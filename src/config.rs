//! The settings of a KV node, as plain data.
//!
//! `KvConfig` is what `actors::kv::KvNode::start` consumes, so it sits below
//! the actors rather than in `service` with the grid services' configurations:
//! there it would make `actors` depend on the composition root. Reading it
//! from the environment is the composition root's job: `KvConfig::from_env`
//! and the `PEERS` parser are in `service::kv`, the generic helpers in
//! `service::env`. Nothing here reads the environment.

use crate::error::{Error, Result};

/// Configuration of a `kv_node`.
///
/// Read from the environment by [`KvConfig::from_env`] (in `service::kv`),
/// whose doc lists every variable and its default; tests and the local
/// `cluster` start from [`KvConfig::new`] and override fields.
#[derive(Clone)]
pub struct KvConfig {
    pub node_id: usize,
    /// Base URL of every node, indexed by node id.
    pub peers: Vec<String>,
    pub listen_addr: String,
    pub data_dir: std::path::PathBuf,
    pub cluster_secret: String,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub causal_wait_timeout_ms: u64,
    pub buffer_capacity: usize,
    pub max_log_entries: usize,
    pub replication_batch: usize,
    pub peer_timeout_ms: u64,
    pub relay_after_ms: u64,
    pub durability: crate::storage::SyncPolicy,
}

impl std::fmt::Debug for KvConfig {
    // Written by hand so the secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvConfig")
            .field("node_id", &self.node_id)
            .field("peers", &self.peers)
            .field("listen_addr", &self.listen_addr)
            .field("data_dir", &self.data_dir)
            .field("cluster_secret", &"<set>")
            .field("max_key_bytes", &self.max_key_bytes)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("causal_wait_timeout_ms", &self.causal_wait_timeout_ms)
            .field("buffer_capacity", &self.buffer_capacity)
            .field("max_log_entries", &self.max_log_entries)
            .field("replication_batch", &self.replication_batch)
            .field("peer_timeout_ms", &self.peer_timeout_ms)
            .field("relay_after_ms", &self.relay_after_ms)
            .field("durability", &self.durability)
            .finish()
    }
}

impl KvConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(node_id: usize, peers: Vec<String>, cluster_secret: String) -> Self {
        KvConfig {
            node_id,
            peers,
            listen_addr: "0.0.0.0:5000".into(),
            data_dir: std::path::PathBuf::from(format!("data/node{node_id}")),
            cluster_secret,
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            causal_wait_timeout_ms: 5_000,
            buffer_capacity: 100_000,
            max_log_entries: 1_000_000,
            replication_batch: 512,
            peer_timeout_ms: 2_000,
            relay_after_ms: 1_000,
            durability: crate::storage::SyncPolicy::Fsync,
        }
    }

    /// Checks the relations between values.
    pub fn validate(&self) -> Result<()> {
        if self.node_id >= self.peers.len() {
            return Err(Error::config(format!(
                "NODE_ID={} but PEERS lists {} nodes (ids 0..{})",
                self.node_id,
                self.peers.len(),
                self.peers.len()
            )));
        }
        if self.cluster_secret.is_empty() {
            return Err(Error::config("CLUSTER_SECRET must not be empty"));
        }
        for (name, value) in [
            ("MAX_KEY_BYTES", self.max_key_bytes),
            ("MAX_VALUE_BYTES", self.max_value_bytes),
            ("BUFFER_CAPACITY", self.buffer_capacity),
            ("MAX_LOG_ENTRIES", self.max_log_entries),
            ("REPLICATION_BATCH", self.replication_batch),
        ] {
            if value == 0 {
                return Err(Error::config(format!("{name} must be at least 1")));
            }
        }
        if self.peer_timeout_ms == 0 {
            return Err(Error::config("PEER_TIMEOUT_MS must be at least 1"));
        }
        Ok(())
    }

    pub fn cluster_size(&self) -> usize {
        self.peers.len()
    }
}
