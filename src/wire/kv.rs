//! Wire types of the KV store, shared by servers (`http::kv`), clients
//! (`net::kv`) and the actors that produce `/status`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::causal::{FaultKind, VClock, Waiting, Write};
use crate::error::{Error, Result};

/// Header carrying a client's causal context: the node's delivered clock,
/// one integer per node in `NODE_ID` order, e.g. `3,0,1`.
pub const CAUSAL_CONTEXT: &str = "Causal-Context";

/// `POST /put` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    pub key: String,
    pub value: String,
}

/// Size limits on client input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Limits {
    pub fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid("key must be a non-empty string"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::TooLarge(format!(
                "key is {} bytes, the limit is {}",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    pub fn check_put(&self, req: &PutRequest) -> Result<()> {
        self.check_key(&req.key)?;
        if req.value.len() > self.max_value_bytes {
            return Err(Error::TooLarge(format!(
                "value is {} bytes, the limit is {}",
                req.value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    /// The JSON body limit for `/put`: room for the largest key and value,
    /// even fully escaped.
    pub fn put_body_limit(&self) -> usize {
        2 * (self.max_key_bytes + self.max_value_bytes) + 1024
    }
}

/// `POST /put` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutResponse {
    pub key: String,
    pub value: String,
    pub vc: VClock,
    pub node: usize,
}

/// `GET /get` query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetQuery {
    pub key: String,
}

/// `GET /get` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetResponse {
    pub key: String,
    pub value: String,
    pub vc: VClock,
}

/// `GET /status` query: `store=false` omits the key map (for polling a
/// large store).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    pub store: Option<bool>,
}

/// One key in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    pub value: String,
    pub vc: VClock,
}

/// One peer in `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: usize,
    pub url: String,
    /// The peer's last reported received clock.
    pub acked: VClock,
    /// The peer's last reported delivered clock.
    pub delivered: VClock,
    /// Our writes it has not acknowledged.
    pub backlog: u64,
    pub reachable: bool,
    pub failures: u32,
    pub fault: Option<FaultKind>,
}

/// `GET /status` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub node: usize,
    pub cluster_size: usize,
    /// The delivered clock as reads see it.
    pub vc: VClock,
    pub store: BTreeMap<String, StoredValue>,
    pub keys: usize,
    pub buffered_msgs: usize,
    /// Per origin with writes in the delivery buffer: how many, the first,
    /// the write it waits for and for how long.
    #[serde(default)]
    pub waiting: Vec<Waiting>,
    pub log_entries: usize,
    /// True once the node serves `/get` and `/put` (as `/ready`).
    #[serde(default)]
    pub ready: bool,
    /// While not ready: what the node waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
    pub peers: Vec<PeerStatus>,
}

/// `POST /peer/replicate` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateRequest {
    pub from: usize,
    pub writes: Vec<Write>,
}

/// `POST /peer/replicate` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateAck {
    pub received: VClock,
    pub delivered: VClock,
}

impl ReplicateAck {
    /// A peer's answer must carry clocks of this cluster's size `n`; a peer
    /// configured with another `PEERS` list is refused, not merged.
    pub fn validate(&self, n: usize) -> Result<()> {
        if self.received.len() != n || self.delivered.len() != n {
            return Err(Error::invalid(format!(
                "peer answered with clocks of {} and {} entries, the cluster has {n}",
                self.received.len(),
                self.delivered.len()
            )));
        }
        Ok(())
    }
}

/// `POST /admin/fault` body: delay or drop replication from this node to
/// `peer` for `duration_ms`; `kind: null` clears a fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub peer: usize,
    pub kind: Option<FaultKind>,
    #[serde(default)]
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_must_carry_clocks_of_the_cluster_size() {
        let ack = ReplicateAck {
            received: VClock::zero(3),
            delivered: VClock::zero(3),
        };
        assert!(ack.validate(3).is_ok());
        assert!(ack.validate(2).is_err());
        let ack = ReplicateAck {
            received: VClock::zero(3),
            delivered: VClock::zero(4),
        };
        assert!(ack.validate(3).is_err());
    }
}
