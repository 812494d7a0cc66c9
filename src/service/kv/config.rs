//! The settings of a KV node (`kv_node`): the struct, its defaults and
//! checks, and how it is read from the environment (`KvConfig::from_env`,
//! which documents every variable). A bad value fails at start-up with a
//! message naming the variable.

use crate::error::{Error, Result};
use crate::service::env::{parse_or, required, secret};

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
    /// Most keys one `/txn` may name (`TXN_MAX_KEYS`).
    pub txn_max_keys: usize,
    /// Most bytes of keys and values one `/txn` may carry (`TXN_MAX_BYTES`).
    pub txn_max_bytes: usize,
    pub causal_wait_timeout_ms: u64,
    pub buffer_capacity: usize,
    pub max_log_entries: usize,
    pub replication_batch: usize,
    pub peer_timeout_ms: u64,
    pub relay_after_ms: u64,
    /// How long a replication request waits to fill up (see `StreamConfig`).
    pub replication_linger_ms: u64,
    pub durability: crate::storage::SyncPolicy,
    /// Write-ahead log segment size: the log rolls and checkpoints past it.
    pub wal_segment_bytes: u64,
    /// Zero-fill log segments ahead of use (see `storage::wal`).
    pub wal_preallocate: bool,
    /// How long the log must be quiet before a checkpoint starts.
    pub checkpoint_quiet_ms: u64,
    /// Closed segments past which a checkpoint starts regardless.
    pub checkpoint_backlog: usize,
    /// Zero-filled log segments kept ready, refilled while the log is quiet.
    pub wal_spare_segments: usize,
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
            .field("txn_max_keys", &self.txn_max_keys)
            .field("txn_max_bytes", &self.txn_max_bytes)
            .field("causal_wait_timeout_ms", &self.causal_wait_timeout_ms)
            .field("buffer_capacity", &self.buffer_capacity)
            .field("max_log_entries", &self.max_log_entries)
            .field("replication_batch", &self.replication_batch)
            .field("peer_timeout_ms", &self.peer_timeout_ms)
            .field("relay_after_ms", &self.relay_after_ms)
            .field("replication_linger_ms", &self.replication_linger_ms)
            .field("durability", &self.durability)
            .field("wal_segment_bytes", &self.wal_segment_bytes)
            .field("wal_preallocate", &self.wal_preallocate)
            .field("checkpoint_quiet_ms", &self.checkpoint_quiet_ms)
            .field("checkpoint_backlog", &self.checkpoint_backlog)
            .field("wal_spare_segments", &self.wal_spare_segments)
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
            txn_max_keys: 64,
            txn_max_bytes: 1024 * 1024,
            causal_wait_timeout_ms: 5_000,
            buffer_capacity: 100_000,
            max_log_entries: 1_000_000,
            replication_batch: 512,
            peer_timeout_ms: 2_000,
            relay_after_ms: 1_000,
            replication_linger_ms: 10,
            durability: crate::storage::SyncPolicy::Fsync,
            wal_segment_bytes: crate::storage::SEGMENT_BYTES,
            wal_preallocate: true,
            checkpoint_quiet_ms: crate::storage::CHECKPOINT_QUIET.as_millis() as u64,
            checkpoint_backlog: crate::storage::CHECKPOINT_BACKLOG,
            wal_spare_segments: crate::storage::SPARE_SEGMENTS,
        }
    }

    /// Checks the relations between values.
    pub fn validate(&self) -> Result<()> {
        if !(4096..=1 << 30).contains(&self.wal_segment_bytes) {
            return Err(Error::config(format!(
                "WAL_SEGMENT_BYTES must be from 4096 to 1073741824, got {}",
                self.wal_segment_bytes
            )));
        }
        if self.checkpoint_backlog == 0 {
            return Err(Error::config("CHECKPOINT_BACKLOG must be at least 1"));
        }
        if self.wal_spare_segments == 0 {
            return Err(Error::config("WAL_SPARE_SEGMENTS must be at least 1"));
        }
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
            ("TXN_MAX_KEYS", self.txn_max_keys),
            ("TXN_MAX_BYTES", self.txn_max_bytes),
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

impl KvConfig {
    /// Reads and checks the environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `NODE_ID` | this node's index, 0-based | required |
    /// | `PEERS` | `ID=URL` for every node, this one included | required |
    /// | `LISTEN_ADDR` | address to listen on | `0.0.0.0:5000` |
    /// | `DATA_DIR` | where the node keeps its state | `data/node<NODE_ID>` |
    /// | `CLUSTER_SECRET` | shared secret for peer and admin traffic | required, or: |
    /// | `CLUSTER_SECRET_FILE` | a file holding it (a Docker or Kubernetes secret) | |
    /// | `MAX_KEY_BYTES` | longest key | 1024 |
    /// | `MAX_VALUE_BYTES` | longest value (413 past it) | 1048576 |
    /// | `TXN_MAX_KEYS` | most keys one `/txn` names: reads, writes and increments (413 past it) | 64 |
    /// | `TXN_MAX_BYTES` | most bytes of keys and values in one `/txn` (413 past it) | 1048576 |
    /// | `CAUSAL_WAIT_TIMEOUT_MS` | how long a request waits for its `Causal-Context` | 5000 |
    /// | `BUFFER_CAPACITY` | replicated writes that may wait for dependencies | 100000 |
    /// | `MAX_LOG_ENTRIES` | writes kept for peers before puts get 503 | 1000000 |
    /// | `REPLICATION_BATCH` | most writes per replication request | 512 |
    /// | `PEER_TIMEOUT_MS` | timeout of each replication request | 2000 |
    /// | `RELAY_AFTER_MS` | how long a peer may lag on an origin before others relay it | 1000 |
    /// | `REPLICATION_LINGER_MS` | how long a replication request smaller than `REPLICATION_BATCH` waits after the previous one started, to carry more writes | 10 |
    /// | `DURABILITY` | `fsync` (group commit, fsync before ack), `eventual` (no fsync before ack), `memory` (nothing on disk) | `fsync` |
    /// | `WAL_SEGMENT_BYTES` | log segment size; past it the log rolls and checkpoints in the background | 8388608 |
    /// | `WAL_PREALLOCATE` | zero-fill each segment ahead of use, so a commit's `fdatasync` needs no journal commit | `true` |
    /// | `CHECKPOINT_QUIET_MS` | how long the log must have taken no write before closed segments are checkpointed (0: at once) | 250 |
    /// | `CHECKPOINT_BACKLOG` | closed segments past which a checkpoint starts even while writes keep coming | 8 |
    /// | `WAL_SPARE_SEGMENTS` | zero-filled segments kept ready (with `WAL_PREALLOCATE`), refilled while the log is quiet | 4 |
    pub fn from_env() -> Result<Self> {
        let node_id: usize = required("NODE_ID")?;
        let peers = parse_peers(&required::<String>("PEERS")?)?;
        let cluster_secret = secret("CLUSTER_SECRET")?.ok_or_else(|| {
            Error::config(
                "CLUSTER_SECRET (or CLUSTER_SECRET_FILE) is required: set the same secret on every node (it authenticates node-to-node traffic)",
            )
        })?;
        let d = KvConfig::new(node_id, peers, cluster_secret);
        let config = KvConfig {
            listen_addr: parse_or("LISTEN_ADDR", d.listen_addr.clone())?,
            data_dir: parse_or("DATA_DIR", d.data_dir.clone())?,
            max_key_bytes: parse_or("MAX_KEY_BYTES", d.max_key_bytes)?,
            max_value_bytes: parse_or("MAX_VALUE_BYTES", d.max_value_bytes)?,
            txn_max_keys: parse_or("TXN_MAX_KEYS", d.txn_max_keys)?,
            txn_max_bytes: parse_or("TXN_MAX_BYTES", d.txn_max_bytes)?,
            causal_wait_timeout_ms: parse_or("CAUSAL_WAIT_TIMEOUT_MS", d.causal_wait_timeout_ms)?,
            buffer_capacity: parse_or("BUFFER_CAPACITY", d.buffer_capacity)?,
            max_log_entries: parse_or("MAX_LOG_ENTRIES", d.max_log_entries)?,
            replication_batch: parse_or("REPLICATION_BATCH", d.replication_batch)?,
            peer_timeout_ms: parse_or("PEER_TIMEOUT_MS", d.peer_timeout_ms)?,
            relay_after_ms: parse_or("RELAY_AFTER_MS", d.relay_after_ms)?,
            replication_linger_ms: parse_or("REPLICATION_LINGER_MS", d.replication_linger_ms)?,
            durability: parse_or("DURABILITY", d.durability)?,
            wal_segment_bytes: parse_or("WAL_SEGMENT_BYTES", d.wal_segment_bytes)?,
            wal_preallocate: parse_or("WAL_PREALLOCATE", d.wal_preallocate)?,
            checkpoint_quiet_ms: parse_or("CHECKPOINT_QUIET_MS", d.checkpoint_quiet_ms)?,
            checkpoint_backlog: parse_or("CHECKPOINT_BACKLOG", d.checkpoint_backlog)?,
            wal_spare_segments: parse_or("WAL_SPARE_SEGMENTS", d.wal_spare_segments)?,
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

    #[test]
    fn the_log_settings_are_checked() {
        let peers = vec!["http://a:5000".to_string(), "http://b:5000".to_string()];
        let ok = KvConfig::new(0, peers, "secret".into());
        assert!(ok.validate().is_ok());
        for bad in [
            KvConfig {
                checkpoint_backlog: 0,
                ..ok.clone()
            },
            KvConfig {
                wal_spare_segments: 0,
                ..ok.clone()
            },
            KvConfig {
                wal_segment_bytes: 100,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
