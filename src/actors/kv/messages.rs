//! Typed messages between the KV actors and from the HTTP layer.
//!
//! The flow of a write:
//!
//! ```text
//!  client ──Put──▶ ClockActor ──Apply──▶ StoreActor        (local write)
//!                      │ ├──LocalDelivered──▶ DeliveryBufferActor
//!                      │ └──Wake──▶ ReplicatorActor (one per peer)
//!  peer ──Replicate──▶ DeliveryBufferActor ──Deliver──▶ ClockActor ──Apply──▶ StoreActor
//!  ReplicatorActor ──ReadBatch──▶ ClockActor; ──PeerProgress──▶ ClockActor
//! ```
//!
//! Every arrow from one actor to another that must preserve order is a
//! `do_send` from a single sender, which actix delivers in FIFO order; that is
//! what keeps the store's application order causal.

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::causal::{FaultKind, Plan, VClock, Versioned, Write};
use crate::error::{Error, Result};
use crate::wire::kv::PeerStatus;

/// A client write. Sent by the `/put` handler to `ClockActor`, which waits
/// for `context` (if any) to be applied, stamps the write and delivers it.
#[derive(Message)]
#[rtype(result = "Result<PutDone>")]
pub struct Put {
    pub key: String,
    pub value: String,
    pub context: Option<VClock>,
}

/// The answer to `Put`: the stamped write and the node's applied clock
/// right after it (the client's new causal context).
#[derive(Debug, Clone)]
pub struct PutDone {
    pub write: Write,
    pub context: VClock,
}

/// A client read. Sent by the `/get` handler to `StoreActor`, which first
/// waits for `context` (bounded by its timeout).
#[derive(Message)]
#[rtype(result = "Result<GetDone>")]
pub struct Get {
    pub key: String,
    pub context: Option<VClock>,
}

/// The answer to `Get`: the version (if any) and the applied clock.
#[derive(Debug, Clone)]
pub struct GetDone {
    pub version: Option<Versioned>,
    pub context: VClock,
}

/// Durable writes to apply, in causal order. Sent by `ClockActor` only (one
/// sender, FIFO) after each group commit, with the reply channels of the
/// local writes in the group whose clients are waiting.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply {
    pub writes: Vec<Write>,
    pub replies: Vec<oneshot::Sender<VClock>>,
}

/// A batch of writes from a peer. Sent by the `/peer/replicate` handler to
/// `DeliveryBufferActor`; answered with what this node now holds.
#[derive(Message)]
#[rtype(result = "Result<Ack>")]
pub struct Replicate {
    pub from: usize,
    pub writes: Vec<Write>,
}

/// What a node tells a sender after `Replicate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Per origin, every write up to here is delivered or buffered.
    pub received: VClock,
    /// Per origin, every write up to here is delivered.
    pub delivered: VClock,
}

/// Writes the buffer found causally ready, in delivery order. Sent by
/// `DeliveryBufferActor` to `ClockActor` (one sender, FIFO).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub writes: Vec<Write>,
}

/// Everything up to `delivered` is durable. Sent by `ClockActor` to
/// `DeliveryBufferActor` after each group commit: the buffer learns of the
/// node's own writes (peers' writes may depend on them) and acknowledges to
/// senders only what is durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Durable {
    pub delivered: VClock,
}

/// New writes exist (or the clock moved). Sent by `ClockActor` to every
/// `ReplicatorActor`; carries the delivered clock so the replicator can plan.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake {
    pub delivered: VClock,
}

/// Read writes from the log for a replication plan. Sent by a
/// `ReplicatorActor` to `ClockActor`.
#[derive(Message)]
#[rtype(result = "Batch")]
pub struct ReadBatch {
    pub plan: Plan,
}

/// The answer to `ReadBatch`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub writes: Vec<Write>,
    pub delivered: VClock,
}

/// A peer acknowledged delivery up to `delivered`. Sent by a
/// `ReplicatorActor` to `ClockActor`, which trims causally stable writes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerProgress {
    pub peer: usize,
    pub delivered: VClock,
}

/// Inject a replication fault towards this replicator's peer. Sent by the
/// admin route handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetFault {
    pub kind: Option<FaultKind>,
    pub duration_ms: u64,
}

/// Ask a replicator for its view of its peer (for `/status`).
#[derive(Message)]
#[rtype(result = "PeerStatus")]
pub struct GetPeerView;

/// Ask `StoreActor` for a snapshot of the store (for `/status`); without
/// `entries`, only the clock and the key count (cheap on a large store).
#[derive(Message)]
#[rtype(result = "StoreSnapshot")]
pub struct GetStoreSnapshot {
    pub entries: bool,
}

#[derive(Debug, Clone)]
pub struct StoreSnapshot {
    pub applied: VClock,
    pub keys: usize,
    pub entries: Vec<(String, Versioned)>,
}

/// Ask `DeliveryBufferActor` how many writes wait.
#[derive(Message)]
#[rtype(result = "BufferView")]
pub struct GetBufferView;

#[derive(Debug, Clone)]
pub struct BufferView {
    pub buffered: usize,
    pub delivered: VClock,
}

/// Ask `ClockActor` for its clock and log size.
#[derive(Message)]
#[rtype(result = "ClockView")]
pub struct GetClockView;

#[derive(Debug, Clone)]
pub struct ClockView {
    pub delivered: VClock,
    pub log_entries: usize,
}

/// Stop the actor. Sent by `KvNode::shutdown` to every actor of a node when
/// the node stops (so replicators stop retrying towards their peers).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// A peer's consistent snapshot: its delivered clock and every key's
/// winning version. Fetched by a `ReplicatorActor` when `ClockActor` asks
/// (`FetchSnapshot`) and sent to `ClockActor` to install.
#[derive(Message, Debug, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct InstallSnapshot {
    pub delivered: VClock,
    pub entries: Vec<(String, Versioned)>,
}

impl InstallSnapshot {
    /// A peer's snapshot must fit a cluster of `n` nodes: its clock and every
    /// version's clock have `n` entries, every origin is a node, and no
    /// version is beyond the clock the snapshot claims.
    pub fn validate(&self, n: usize) -> Result<()> {
        if self.delivered.len() != n {
            return Err(Error::invalid(format!(
                "snapshot clock has {} entries, the cluster has {n}",
                self.delivered.len()
            )));
        }
        for (key, v) in &self.entries {
            if v.vc.len() != n || v.origin >= n || !v.vc.le(&self.delivered) {
                return Err(Error::invalid(format!(
                    "snapshot version of {key:?} (origin {}, clock [{}]) does not fit the snapshot clock [{}]",
                    v.origin, v.vc, self.delivered
                )));
            }
        }
        Ok(())
    }
}

/// Fetch the peer's snapshot. Sent by `ClockActor` to one replicator when the
/// node started empty and that peer has delivered writes it lacks.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FetchSnapshot;

/// Merge snapshot versions into the store. Sent by `ClockActor` after the
/// snapshot is durable, before the `Apply` of the same group.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore {
    pub entries: Vec<(String, Versioned)>,
    pub delivered: VClock,
}

/// Make everything delivered so far durable, with an fsync whatever the
/// policy. Sent by `KvNode::flush` on graceful shutdown.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Flush;

#[cfg(test)]
mod tests {
    use super::*;

    fn version(origin: usize, vc: &[u64]) -> Versioned {
        Versioned {
            value: "v".into(),
            vc: VClock::from_vec(vc.to_vec()),
            origin,
        }
    }

    #[test]
    fn a_snapshot_must_fit_the_cluster() {
        let ok = InstallSnapshot {
            delivered: VClock::from_vec(vec![2, 1, 0]),
            entries: vec![("x".into(), version(0, &[2, 1, 0]))],
        };
        assert!(ok.validate(3).is_ok());
        assert!(ok.validate(2).is_err(), "clock of another cluster size");
        let mut beyond = ok.clone();
        beyond.entries.push(("y".into(), version(1, &[0, 2, 0])));
        assert!(
            beyond.validate(3).is_err(),
            "version beyond the snapshot clock"
        );
        let mut short = ok.clone();
        short.entries.push(("y".into(), version(0, &[1, 0])));
        assert!(short.validate(3).is_err(), "version clock too short");
        let mut stranger = ok;
        stranger.entries.push(("y".into(), version(7, &[1, 0, 0])));
        assert!(stranger.validate(3).is_err(), "origin outside the cluster");
    }
}
