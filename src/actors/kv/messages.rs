//! Typed messages between the KV actors and from the HTTP layer.
//!
//! The flow of a write:
//!
//! ```text
//!  client ──Read──▶ StoreActor ──(check)──▶ Put──▶ ClockActor (Node) ──Apply──▶ StoreActor   (local write)
//!  peer ──Replicate──▶ DeliveryBufferActor ──Deliver──▶ ClockActor ──Apply──▶ StoreActor
//!  ClockActor ──Durable──▶ DeliveryBufferActor; ──Wake──▶ ReplicatorActor (one per peer)
//!  ReplicatorActor ──ReadBatch──▶ ClockActor; ──PeerProgress──▶ ClockActor
//! ```
//!
//! Every arrow from one actor to another that must preserve order is a
//! `do_send` from a single sender, which actix delivers in FIFO order; that is
//! what keeps the store's application order causal. Actors hold each other
//! as `Recipient<Message>`, so they depend on these messages, not on each
//! other.

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::causal::{FaultKind, Input, Op, Plan, Snapshot, VClock, Versioned, Waiting, Write};
use crate::error::Result;
use crate::wire::kv::PeerStatus;

/// A client write: the operations of a `/put`, an `/incr` or a `/txn`.
/// Sent by `StoreActor` to `ClockActor` once it has checked the keys' kinds
/// (`Transact`), with the store's clock of that check as `context`;
/// the node waits for `context` (if any) to be delivered, stamps the
/// operations as one write and answers once it is durable and applied.
#[derive(Message)]
#[rtype(result = "Result<PutDone>")]
pub struct Put {
    pub ops: Vec<Op>,
    pub context: Option<VClock>,
}

/// The answer to `Put`: the write's clock and the store's applied clock
/// right after it (the client's new causal context).
#[derive(Debug, Clone)]
pub struct PutDone {
    pub vc: VClock,
    pub context: VClock,
}

/// Where a waiting put's answer goes, with its write's clock.
pub type PutReply = (oneshot::Sender<Result<PutDone>>, VClock);

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

/// A transaction, from `KvNode` to `StoreActor`, which waits for `context`
/// (bounded by its timeout), then, in one handler run (so from one causally
/// consistent state, with no write applied halfway), reads `keys` and
/// refuses with 409 if an operation of `ops` is on a key of the other kind;
/// then it hands `ops` to `ClockActor` as a `Put` itself and answers once
/// the write is durable and applied. One crossing from the HTTP worker's
/// thread to the actors' thread and one back, whatever the transaction.
#[derive(Message)]
#[rtype(result = "Result<TxnDone>")]
pub struct Transact {
    pub keys: Vec<String>,
    pub ops: Vec<Op>,
    pub context: Option<VClock>,
}

/// What a transaction (or a single put or increment) did.
#[derive(Debug, Clone)]
pub struct TxnDone {
    /// The versions of the keys read, in the order asked.
    pub versions: Vec<Option<Versioned>>,
    /// The clock of the write, if there were operations to write.
    pub written: Option<VClock>,
    /// The client's new causal context: the store's clock after the write
    /// (or at the reads, for a read-only transaction).
    pub context: VClock,
}

impl TxnDone {
    /// The clock to answer with: the write's, or for a read-only
    /// transaction the clock the reads saw.
    pub fn vc(&self) -> VClock {
        self.written.clone().unwrap_or_else(|| self.context.clone())
    }
}

/// A durable group to make visible, in causal order: first the snapshot's
/// versions (if any), then the writes. Sent by `ClockActor` only (one
/// sender, FIFO), with the answers of the local writes in the group.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply {
    pub snapshot: Option<Snapshot>,
    pub writes: Vec<Write>,
    pub replies: Vec<PutReply>,
    pub applied: VClock,
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

/// A peer acknowledged a batch: it has received (delivered or buffered)
/// `received` and durably delivered `delivered`. Sent by a `ReplicatorActor`
/// to `ClockActor`, whose node trims causally stable writes and, while
/// rebuilding, learns what the peer holds of ours.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerProgress {
    pub peer: usize,
    pub received: VClock,
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

/// Ask `DeliveryBufferActor` which writes wait, and why.
#[derive(Message)]
#[rtype(result = "BufferView")]
pub struct GetBufferView;

#[derive(Debug, Clone)]
pub struct BufferView {
    pub buffered: usize,
    pub waiting: Vec<Waiting>,
}

/// Ask `ClockActor` for its node's view (clocks, log, readiness).
#[derive(Message)]
#[rtype(result = "crate::causal::node::NodeView")]
pub struct GetClockView;

/// Stop the actor. Sent by `KvNode::shutdown` to every actor of a node when
/// the node stops (so replicators stop retrying towards their peers).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// A peer's snapshot to install. Fetched by a `ReplicatorActor` when
/// `ClockActor` asks (`FetchSnapshot`) and sent to `ClockActor`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct InstallSnapshot {
    pub from: usize,
    pub snapshot: Snapshot,
}

/// Fetch the peer's snapshot. Sent by `ClockActor` to one replicator when
/// its rebuilding node learns that the peer holds writes it lacks.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FetchSnapshot;

/// The node has recovered (and, if it started empty, rebuilt): reads may be
/// served. Sent by `ClockActor` to `StoreActor` once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeReady;

/// Make everything delivered so far durable, with an fsync whatever the
/// policy. Sent by `KvNode::flush` on graceful shutdown.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Flush;

impl<R> From<Deliver> for Input<R> {
    fn from(msg: Deliver) -> Input<R> {
        Input::Deliver { writes: msg.writes }
    }
}

impl<R> From<PeerProgress> for Input<R> {
    fn from(msg: PeerProgress) -> Input<R> {
        Input::PeerAcked {
            peer: msg.peer,
            received: msg.received,
            delivered: msg.delivered,
        }
    }
}

impl<R> From<InstallSnapshot> for Input<R> {
    fn from(msg: InstallSnapshot) -> Input<R> {
        Input::Snapshot {
            from: msg.from,
            snapshot: msg.snapshot,
        }
    }
}
