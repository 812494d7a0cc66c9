//! The KV node's protocol as one synchronous state machine.
//!
//! [`Node`] decides everything a node of the store decides, and nothing
//! else: it owns no socket, no file, no thread and no clock. Its driver (the
//! `ClockActor`, or the scenario runner in the tests) feeds it [`Input`]s with
//! [`Node::step`] and executes the [`Effect`]s that come back: persist a
//! group, apply writes to the store, answer a request, wake the replicators,
//! fetch a snapshot, stop the node. Time is logical: the driver reports it
//! with [`Input::Tick`]. So every decision can be replayed in a test, without
//! a network, in microseconds.
//!
//! It sits beside the pure [`DeliveryBuffer`](super::DeliveryBuffer), which
//! turns peers' batches into causally ready writes ([`Input::Deliver`]) and
//! learns back which writes are durable ([`Effect::Durable`]).
//!
//! ## One delivery order
//! Local writes (a put, an increment, or all the puts and increments of a
//! transaction: one write either way, with one sequence number) are stamped
//! here (own clock entry incremented, the write
//! carries the whole delivered clock) and replicated writes arrive here in
//! a causal order. Both are appended to the open *group*, so the group's
//! order is the node's single delivery order and is causal.
//!
//! ## Group commit
//! At most one group is being persisted. When none is, the open group (with
//! any snapshot, log trim, flush request or recovery mark) is handed out as
//! [`Effect::Persist`]; everything delivered meanwhile forms the next group.
//! Only when a group comes back as [`Input::Persisted`] is it applied to the
//! store, answered to its clients, appended to the replication log (so peers
//! never see a write that could be lost) and reported to the buffer (so
//! acknowledgements cover only durable writes). Groups become durable one at
//! a time, in delivery order.
//!
//! ## Never reusing a sequence number
//! Sequence numbers continue from the delivered clock, so a restarted node
//! continues after its last durable write, and no peer can hold a later one
//! (writes leave the node only once durable). A node whose disk is empty
//! cannot tell a new cluster from a wiped disk, so it *rebuilds*: it refuses
//! client requests until every peer has answered, it has delivered every
//! write of its own that any peer reports (peers relay them back), and the
//! commit that ends the rebuild is durable. A peer ahead of it sends a
//! snapshot of its store, which the node installs.
//!
//! The rebuild is itself durable: every group persisted while rebuilding
//! carries the mark, starting with the first thing the node ever commits,
//! and only the group that ends the rebuild clears it. A node restarted at
//! any point of a rebuild (before or after its snapshot is committed)
//! resumes rebuilding, rather than mistaking the snapshot's clock for its
//! own history.
//!
//! ## Causal stability
//! Each peer's acknowledgements report its durable delivered clock. The
//! pointwise minimum of those and our own is causally stable: every node has
//! it, nobody can ask for it again, and it is trimmed from the replication
//! log (in memory at once, on disk with the next group).
//!
//! ## Transactions
//! A transaction's operations travel as one [`Write`] through everything
//! below: one stamp, one place in the group, one log entry, one replicated
//! unit that the delivery buffer holds back or delivers whole, one
//! application to the store. No replica can therefore show part of it. The
//! node does not read: the driver reads the transaction's keys (and checks
//! their kinds) from the store first, then hands the write in with the
//! store's clock as its context, so the write is stamped after everything
//! the reads saw.
//!
//! ## Refusals (503)
//! A write is refused while the node rebuilds, when the replication log is full
//! (`max_log` writes not yet delivered everywhere: a peer is down or slow),
//! when too many requests already wait for their causal context, and when its
//! context is not delivered within `wait_timeout_ms`.
//!
//! ## Broken invariants
//! A write delivered out of sequence or before its dependencies, or a
//! persisted group that is not the one in flight, means a bug elsewhere. The
//! node answers with [`Effect::Halt`] and stops deciding: a hole in the
//! history must stop the node, never be logged and passed over.

use serde::{Deserialize, Serialize};

use super::log::ReplicationLog;
use super::session::Waiters;
use super::store::Versioned;
use super::stream::Plan;
use super::vclock::VClock;
use super::write::{NodeId, Op, Write};
use crate::error::{Error, Result};

/// The default token of a request (a client put or a flush): whatever the
/// driver needs to answer it travels through the core untouched. The actor
/// passes its reply channels; tests pass numbers.
pub type RequestId = u64;

/// Upper bound on the bytes of one replication batch (a single larger write
/// is still sent on its own).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Limits and identity of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub me: NodeId,
    pub n: usize,
    /// Most writes held for peers (durable, not yet causally stable) plus
    /// writes being committed; past it, puts answer 503.
    pub max_log: usize,
    /// Most puts that may wait for their causal context at once.
    pub max_waiters: usize,
    /// How long a put waits for its causal context (logical milliseconds).
    pub wait_timeout_ms: u64,
}

/// What the node finds on disk at start-up.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The durable delivered clock.
    pub delivered: VClock,
    /// Durable writes not yet causally stable, per origin up to `delivered`.
    pub log: ReplicationLog,
    /// The disk held no state: a new node, or one whose data was wiped.
    pub fresh: bool,
    /// The last durable group was persisted while rebuilding.
    pub rebuilding: bool,
}

impl Boot {
    /// An empty disk for a cluster of `n` nodes.
    pub fn empty(n: usize) -> Self {
        Boot {
            delivered: VClock::zero(n),
            log: ReplicationLog::new(n),
            fresh: true,
            rebuilding: false,
        }
    }
}

/// A peer's consistent snapshot: its durable delivered clock and every key's
/// winning version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub delivered: VClock,
    pub entries: Vec<(String, Versioned)>,
}

impl Snapshot {
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

/// One group commit: what must be durable, in this order, before any of it
/// is visible or sent to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Sequence number of the group (the node checks it comes back).
    pub id: u64,
    /// A peer's snapshot installed in this group, before its writes.
    pub snapshot: Option<Snapshot>,
    /// Delivered writes, in delivery order.
    pub writes: Vec<Write>,
    /// The delivered clock once the group is durable.
    pub delivered: VClock,
    /// Log entries at or below this clock are causally stable: drop them.
    pub trim: Option<VClock>,
    /// Force the data to disk whatever the sync policy (a flush).
    pub sync: bool,
    /// The node is rebuilding; false in the group that ends the rebuild.
    pub rebuilding: bool,
}

/// What the driver feeds the node.
#[derive(Debug, Clone)]
pub enum Input<R = RequestId> {
    /// A client's write: a `/put` (one put), an `/incr` (one increment) or
    /// the writes and increments of a `/txn`, stamped as one write once
    /// `context` (if any) is delivered. The driver has validated `ops` (see
    /// [`validate_ops`](super::write::validate_ops)) and checked their keys'
    /// kinds. `ts_ms` is the wall clock, carried in the write only to
    /// measure replication delay.
    Write {
        id: R,
        ops: Vec<Op>,
        context: Option<VClock>,
        ts_ms: u64,
    },
    /// Replicated writes the delivery buffer found causally ready, in
    /// delivery order.
    Deliver { writes: Vec<Write> },
    /// A peer answered a replication request: what it has received
    /// (delivered or buffered) and what it has durably delivered.
    PeerAcked {
        peer: NodeId,
        received: VClock,
        delivered: VClock,
    },
    /// A peer's snapshot, fetched after [`Effect::FetchSnapshot`].
    Snapshot { from: NodeId, snapshot: Snapshot },
    /// The group handed out by [`Effect::Persist`] is durable.
    Persisted(Group),
    /// Make everything delivered so far durable, with a sync (shutdown).
    Flush { id: R },
    /// Logical time has advanced to `now_ms` (monotonic milliseconds).
    Tick { now_ms: u64 },
}

/// What the node asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<R = RequestId> {
    /// Write this group to disk (on a blocking thread), then feed it back
    /// as [`Input::Persisted`].
    Persist(Group),
    /// A durable group, to make visible: first the snapshot's versions, then
    /// the writes in order. `replies` pair a waiting put with its write
    /// (index into `writes`); answer each once the store has applied them.
    Apply {
        snapshot: Option<Snapshot>,
        writes: Vec<Write>,
        replies: Vec<(R, usize)>,
        applied: VClock,
    },
    /// Tell the delivery buffer what is durable: its acknowledgements report
    /// it, and peers' writes that depend on our own may now be delivered.
    Durable { delivered: VClock },
    /// New durable writes exist: wake the replicators.
    Wake { delivered: VClock },
    /// A write is refused (503 or 400); nothing was stamped.
    Refused { id: R, error: Error },
    /// A flush is done.
    Flushed { id: R },
    /// Fetch a snapshot from `peer` and feed it back as [`Input::Snapshot`].
    FetchSnapshot { peer: NodeId },
    /// The node has recovered and may serve clients (`/ready` answers 200).
    Ready,
    /// A broken invariant: stop the node with this message.
    Halt { reason: String },
}

/// A write waiting for its causal context.
#[derive(Debug, Clone)]
struct Parked<R> {
    id: R,
    ops: Vec<Op>,
    ts_ms: u64,
    deadline_ms: u64,
}

/// Where a node stands between start-up and serving.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Serving clients.
    Ready,
    /// Started empty (or restarted mid-rebuild): waiting for peers.
    Rebuilding {
        heard: Vec<bool>,
        /// The highest sequence number of ours that any peer reports.
        own_floor: u64,
        snapshot: SnapshotWait,
    },
    /// Rebuilt in memory; the commit that clears the mark is pending.
    Ending,
}

/// A rebuilding node's snapshot: needed once a peer is found ahead of it,
/// and then a condition of the end of the rebuild (or the node would serve
/// an empty store, and miss whatever its peers have trimmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotWait {
    /// No peer has shown writes the node lacks.
    NotNeeded,
    /// Asked from this peer, not installed yet.
    Asked(NodeId),
    Installed,
}

/// The group being persisted.
#[derive(Debug)]
struct InFlight<R> {
    id: u64,
    writes: usize,
    flushes: Vec<R>,
    ends_rebuild: bool,
    replies: Vec<(R, usize)>,
}

/// The group being built.
#[derive(Debug)]
struct Open<R> {
    writes: Vec<Write>,
    replies: Vec<(R, usize)>,
    snapshot: Option<Snapshot>,
    flushes: Vec<R>,
}

impl<R> Default for Open<R> {
    fn default() -> Self {
        Open {
            writes: Vec::new(),
            replies: Vec::new(),
            snapshot: None,
            flushes: Vec::new(),
        }
    }
}

/// What `/status` shows of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Delivered, including writes not yet durable.
    pub delivered: VClock,
    /// Durable and applied.
    pub durable: VClock,
    pub log_entries: usize,
    /// Puts waiting for their causal context.
    pub waiting_puts: usize,
    /// Writes in the group being persisted plus the open group.
    pub uncommitted: usize,
    /// `None` when serving; otherwise what the node waits for.
    pub not_ready: Option<String>,
}

/// Counters a driver exports as metrics (cumulative).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Puts stamped.
    pub writes: u64,
    /// Puts that waited for their context and were then served.
    pub context_waits_ok: u64,
    /// Puts that gave up waiting for their context.
    pub context_waits_timeout: u64,
    /// Writes delivered twice (covered by a snapshot meanwhile): dropped.
    pub covered: u64,
}

/// The protocol state of one KV node. See the module documentation.
#[derive(Debug)]
pub struct Node<R = RequestId> {
    config: NodeConfig,
    /// Stamped and delivered writes, durable or not.
    delivered: VClock,
    /// What is durable (and applied once the driver executes `Apply`).
    durable: VClock,
    /// Durable writes not yet causally stable.
    log: ReplicationLog,
    open: Open<R>,
    committing: Option<InFlight<R>>,
    next_group: u64,
    /// Causally stable clock not yet trimmed on disk.
    trim: Option<VClock>,
    phase: Phase,
    /// Writes at or below this clock are covered by an installed snapshot.
    snapshot_floor: VClock,
    /// Each peer's last acknowledged durable clock (our own entry unused).
    peer_delivered: Vec<VClock>,
    parked: Waiters<Parked<R>>,
    now_ms: u64,
    halted: Option<String>,
    counters: Counters,
    effects: Vec<Effect<R>>,
}

impl<R> Node<R> {
    /// A node booting from `boot`. The returned effects say whether it is
    /// ready at once; a node with peers that starts empty rebuilds first.
    pub fn new(config: NodeConfig, boot: Boot) -> (Node<R>, Vec<Effect<R>>) {
        let n = config.n;
        let rebuilding = boot.rebuilding || (boot.fresh && n > 1);
        let phase = if rebuilding {
            let mut heard = vec![false; n];
            heard[config.me] = true;
            Phase::Rebuilding {
                heard,
                own_floor: 0,
                snapshot: SnapshotWait::NotNeeded,
            }
        } else {
            Phase::Ready
        };
        let mut node = Node {
            parked: Waiters::new(config.max_waiters),
            delivered: boot.delivered.clone(),
            durable: boot.delivered.clone(),
            log: boot.log,
            open: Open::default(),
            committing: None,
            next_group: 1,
            trim: None,
            phase,
            snapshot_floor: VClock::zero(n),
            peer_delivered: vec![VClock::zero(n); n],
            now_ms: 0,
            halted: None,
            counters: Counters::default(),
            effects: Vec::new(),
            config,
        };
        if node.phase == Phase::Ready {
            node.effects.push(Effect::Ready);
        }
        node.effects.push(Effect::Wake {
            delivered: node.durable.clone(),
        });
        let effects = std::mem::take(&mut node.effects);
        (node, effects)
    }

    /// Feeds one input; returns the effects to execute, in order.
    pub fn step(&mut self, input: Input<R>) -> Vec<Effect<R>> {
        if self.halted.is_none() {
            match input {
                Input::Write {
                    id,
                    ops,
                    context,
                    ts_ms,
                } => self.put(id, ops, context, ts_ms),
                Input::Deliver { writes } => self.deliver(writes),
                Input::PeerAcked {
                    peer,
                    received,
                    delivered,
                } => self.peer_acked(peer, &received, delivered),
                Input::Snapshot { from, snapshot } => self.install(from, snapshot),
                Input::Persisted(group) => self.persisted(group),
                Input::Flush { id } => {
                    self.open.flushes.push(id);
                    self.commit();
                }
                Input::Tick { now_ms } => self.tick(now_ms),
            }
        } else if let Input::Write { id, .. } = input {
            self.effects.push(Effect::Refused {
                id,
                error: Error::unavailable("node is stopping"),
            });
        }
        std::mem::take(&mut self.effects)
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.config.me
    }

    /// The delivered clock, durable or not.
    pub fn delivered(&self) -> &VClock {
        &self.delivered
    }

    /// The durable clock.
    pub fn durable(&self) -> &VClock {
        &self.durable
    }

    /// Writes held for peers (durable, not yet causally stable).
    pub fn log_entries(&self) -> usize {
        self.log.len()
    }

    /// Cumulative counters, for metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Why the node does not serve clients yet, or `None` when it does.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(reason) = &self.halted {
            return Some(format!("node stopped: {reason}"));
        }
        match &self.phase {
            Phase::Ready => None,
            Phase::Ending => Some("recording the end of its rebuild on disk".into()),
            Phase::Rebuilding {
                heard,
                own_floor,
                snapshot,
            } => {
                let silent: Vec<String> = heard
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| !**h)
                    .map(|(k, _)| k.to_string())
                    .collect();
                let mine = self.delivered.get(self.config.me);
                Some(if !silent.is_empty() {
                    format!(
                        "rebuilding (it started without its data): waiting to hear from peer(s) {}",
                        silent.join(", ")
                    )
                } else if let SnapshotWait::Asked(peer) = snapshot {
                    format!(
                        "rebuilding (it started without its data): waiting for the snapshot of peer {peer}"
                    )
                } else {
                    format!(
                        "rebuilding (it started without its data): waiting for its own writes up to {own_floor} to come back from its peers (has {mine})"
                    )
                })
            }
        }
    }

    /// What `/status` shows.
    pub fn view(&self) -> NodeView {
        NodeView {
            delivered: self.delivered.clone(),
            durable: self.durable.clone(),
            log_entries: self.log.len(),
            waiting_puts: self.parked.len(),
            uncommitted: self.uncommitted(),
            not_ready: self.not_ready(),
        }
    }

    /// Writes for a replication plan, read from the log of durable writes,
    /// at most `plan.max` of them and about `MAX_BATCH_BYTES`; with the
    /// durable clock they come from.
    pub fn read_batch(&self, plan: &Plan) -> (Vec<Write>, VClock) {
        let mut writes = Vec::new();
        let mut bytes = 0usize;
        for &(origin, after, upto) in &plan.ranges {
            let room = plan.max.saturating_sub(writes.len());
            if room == 0 || bytes >= MAX_BATCH_BYTES {
                break;
            }
            let start = writes.len();
            self.log.read(origin, after, upto, room, &mut writes);
            for (i, w) in writes[start..].iter().enumerate() {
                bytes += w.size() + 64;
                if bytes >= MAX_BATCH_BYTES {
                    writes.truncate(start + i + 1);
                    break;
                }
            }
        }
        (writes, self.durable.clone())
    }

    fn uncommitted(&self) -> usize {
        self.open.writes.len() + self.committing.as_ref().map_or(0, |c| c.writes)
    }

    fn halt(&mut self, reason: String) {
        self.halted = Some(reason.clone());
        self.effects.push(Effect::Halt { reason });
    }

    fn put(&mut self, id: R, ops: Vec<Op>, context: Option<VClock>, ts_ms: u64) {
        if let Some(reason) = self.not_ready() {
            self.refuse(id, Error::unavailable(reason));
            return;
        }
        match context {
            Some(_) if self.parked.is_full() => {
                let waiting = self.parked.len();
                self.refuse(
                    id,
                    Error::unavailable(format!(
                        "too many requests waiting for their causal context ({waiting})"
                    )),
                );
            }
            Some(ctx) if !ctx.le(&self.delivered) => {
                let parked = Parked {
                    id,
                    ops,
                    ts_ms,
                    deadline_ms: self.now_ms + self.config.wait_timeout_ms,
                };
                self.parked.park(ctx, parked);
            }
            // Stamped now, with the clock as it is, so the write covers the
            // client's context (writes-follow-reads).
            _ => self.stamp(id, ops, ts_ms),
        }
    }

    fn refuse(&mut self, id: R, error: Error) {
        self.effects.push(Effect::Refused { id, error });
    }

    fn stamp(&mut self, id: R, ops: Vec<Op>, ts_ms: u64) {
        let held = self.log.len() + self.uncommitted();
        if held >= self.config.max_log {
            self.refuse(
                id,
                Error::unavailable(format!(
                    "replication log full ({held} writes not yet delivered everywhere); a peer is down or slow"
                )),
            );
            return;
        }
        let me = self.config.me;
        let seq = self.delivered.increment(me);
        self.open.replies.push((id, self.open.writes.len()));
        self.open.writes.push(Write {
            origin: me,
            seq,
            vc: self.delivered.clone(),
            ops,
            ts_ms,
        });
        self.counters.writes += 1;
        self.after_delivery();
    }

    /// The delivered clock moved: serve the puts whose context it now
    /// covers, then start a commit if none is running.
    fn after_delivery(&mut self) {
        loop {
            let ready = self.parked.release(&self.delivered);
            if ready.is_empty() {
                break;
            }
            for p in ready {
                self.counters.context_waits_ok += 1;
                self.stamp(p.id, p.ops, p.ts_ms);
            }
        }
        self.commit();
    }

    fn deliver(&mut self, writes: Vec<Write>) {
        for w in writes {
            let next = self.delivered.get(w.origin) + 1;
            if w.origin >= self.config.n || w.vc.len() != self.config.n {
                self.halt(format!(
                    "write {}:{} does not belong to this {}-node cluster",
                    w.origin, w.seq, self.config.n
                ));
                return;
            }
            if w.seq < next && w.seq <= self.snapshot_floor.get(w.origin) {
                // Delivered by the buffer before it learnt of the snapshot
                // that covers it.
                self.counters.covered += 1;
                continue;
            }
            if w.seq != next {
                self.halt(format!(
                    "write {}:{} delivered out of sequence: the next write of node {} is {next}",
                    w.origin, w.seq, w.origin
                ));
                return;
            }
            if let Some(k) =
                (0..self.config.n).find(|&k| k != w.origin && w.vc.get(k) > self.delivered.get(k))
            {
                self.halt(format!(
                    "write {}:{} delivered before its dependency {k}:{} (delivered [{}])",
                    w.origin,
                    w.seq,
                    w.vc.get(k),
                    self.delivered
                ));
                return;
            }
            self.delivered.set(w.origin, w.seq);
            self.open.writes.push(w);
        }
        self.check_rebuilt();
        self.after_delivery();
    }

    fn peer_acked(&mut self, peer: NodeId, received: &VClock, delivered: VClock) {
        let me = self.config.me;
        if peer == me || peer >= self.config.n || delivered.len() != self.config.n {
            return;
        }
        if let Phase::Rebuilding {
            heard,
            own_floor,
            snapshot,
        } = &mut self.phase
        {
            heard[peer] = true;
            *own_floor = (*own_floor).max(received.get(me)).max(delivered.get(me));
            if *snapshot == SnapshotWait::NotNeeded && !delivered.le(&self.delivered) {
                // This peer has history we lack: take its snapshot rather
                // than wait for writes it may already have trimmed.
                *snapshot = SnapshotWait::Asked(peer);
                self.effects.push(Effect::FetchSnapshot { peer });
            }
        }
        self.peer_delivered[peer] = delivered;
        // Causally stable: durably delivered by every node, ourselves
        // included (the log holds only durable writes).
        let mut stable = self.durable.clone();
        for (k, clock) in self.peer_delivered.iter().enumerate() {
            if k != me {
                for i in 0..stable.len() {
                    stable.set(i, stable.get(i).min(clock.get(i)));
                }
            }
        }
        let before = self.log.len();
        self.log.trim(&stable);
        if self.log.len() < before {
            self.trim = Some(stable);
        }
        self.check_rebuilt();
        self.commit();
    }

    fn install(&mut self, from: NodeId, snapshot: Snapshot) {
        let Phase::Rebuilding { snapshot: wait, .. } = &mut self.phase else {
            return;
        };
        if *wait != SnapshotWait::Asked(from) || snapshot.validate(self.config.n).is_err() {
            // Unasked, already installed, or not of this cluster.
            return;
        }
        *wait = SnapshotWait::Installed;
        self.delivered.merge(&snapshot.delivered);
        self.snapshot_floor.merge(&snapshot.delivered);
        match &mut self.open.snapshot {
            Some(existing) => {
                existing.delivered.merge(&snapshot.delivered);
                existing.entries.extend(snapshot.entries);
            }
            None => self.open.snapshot = Some(snapshot),
        }
        self.check_rebuilt();
        self.after_delivery();
    }

    fn check_rebuilt(&mut self) {
        if let Phase::Rebuilding {
            heard,
            own_floor,
            snapshot,
        } = &self.phase
        {
            if heard.iter().all(|h| *h)
                && self.delivered.get(self.config.me) >= *own_floor
                && !matches!(snapshot, SnapshotWait::Asked(_))
            {
                self.phase = Phase::Ending;
            }
        }
    }

    fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        let expired = self.parked.take_where(|p| p.deadline_ms <= now);
        for p in expired {
            self.counters.context_waits_timeout += 1;
            self.refuse(
                p.id,
                Error::unavailable(format!(
                    "timed out after {} ms waiting for this node to deliver the writes in the Causal-Context; retry, or ask another node",
                    self.config.wait_timeout_ms
                )),
            );
        }
    }

    /// Hands out the open group, unless a commit is running or there is
    /// nothing to persist.
    fn commit(&mut self) {
        if self.committing.is_some() || self.halted.is_some() {
            return;
        }
        let ends_rebuild = self.phase == Phase::Ending;
        if self.open.writes.is_empty()
            && self.open.snapshot.is_none()
            && self.open.flushes.is_empty()
            && self.trim.is_none()
            && !ends_rebuild
        {
            return;
        }
        let open = std::mem::take(&mut self.open);
        let id = self.next_group;
        self.next_group += 1;
        let sync = !open.flushes.is_empty();
        self.committing = Some(InFlight {
            id,
            writes: open.writes.len(),
            flushes: open.flushes,
            ends_rebuild,
            replies: open.replies,
        });
        self.effects.push(Effect::Persist(Group {
            id,
            snapshot: open.snapshot,
            writes: open.writes,
            delivered: self.delivered.clone(),
            trim: self.trim.take(),
            sync,
            rebuilding: matches!(self.phase, Phase::Rebuilding { .. }),
        }));
    }

    fn persisted(&mut self, group: Group) {
        let Some(flight) = self.committing.take_if(|f| f.id == group.id) else {
            self.halt(format!(
                "group {} reported durable but it is not the one being persisted",
                group.id
            ));
            return;
        };
        if let Some(snapshot) = &group.snapshot {
            self.log.advance_to(&snapshot.delivered);
        }
        for w in &group.writes {
            if !self.log.append(w.clone()) && w.seq > self.snapshot_floor.get(w.origin) {
                self.halt(format!(
                    "write {}:{} does not follow the replication log of node {}",
                    w.origin, w.seq, w.origin
                ));
                return;
            }
        }
        self.durable.merge(&group.delivered);
        let durable = self.durable.clone();
        self.effects.push(Effect::Apply {
            snapshot: group.snapshot,
            writes: group.writes,
            replies: flight.replies,
            applied: durable.clone(),
        });
        self.effects.push(Effect::Durable {
            delivered: durable.clone(),
        });
        self.effects.push(Effect::Wake { delivered: durable });
        for id in flight.flushes {
            self.effects.push(Effect::Flushed { id });
        }
        if flight.ends_rebuild && !group.rebuilding {
            self.phase = Phase::Ready;
            self.effects.push(Effect::Ready);
        }
        self.commit();
    }
}

#[cfg(test)]
mod tests {
    use super::super::write::test_write as w;
    use super::*;

    fn config(me: NodeId, n: usize) -> NodeConfig {
        NodeConfig {
            me,
            n,
            max_log: 100,
            max_waiters: 10,
            wait_timeout_ms: 1_000,
        }
    }

    fn vc(v: &[u64]) -> VClock {
        VClock::from_vec(v.to_vec())
    }

    fn put(id: RequestId, key: &str, context: Option<VClock>) -> Input {
        Input::Write {
            id,
            ops: vec![Op::Put {
                key: key.into(),
                value: format!("v{id}"),
            }],
            context,
            ts_ms: 0,
        }
    }

    fn persist_of(effects: &[Effect]) -> Group {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Persist(g) => Some(g.clone()),
                _ => None,
            })
            .expect("a group to persist")
    }

    fn ready_node(me: NodeId, n: usize) -> Node {
        let mut boot = Boot::empty(n);
        boot.fresh = false;
        Node::new(config(me, n), boot).0
    }

    #[test]
    fn a_put_is_answered_only_once_its_group_is_durable() {
        let mut node = ready_node(0, 2);
        let first = node.step(put(1, "x", None));
        let group = persist_of(&first);
        assert_eq!(group.writes.len(), 1);
        assert_eq!(group.delivered, vc(&[1, 0]));
        // A second put joins the next group: one commit at a time.
        let second = node.step(put(2, "y", None));
        assert!(second.is_empty(), "{second:?}");
        let done = node.step(Input::Persisted(group));
        match &done[0] {
            Effect::Apply { replies, .. } => assert_eq!(replies, &vec![(1, 0)]),
            other => panic!("{other:?}"),
        }
        let next = persist_of(&done);
        assert_eq!(next.writes[0].seq, 2);
        assert_eq!(node.durable(), &vc(&[1, 0]));
    }

    #[test]
    fn a_transaction_is_one_write_with_one_sequence_number_and_one_answer() {
        let mut node = ready_node(1, 2);
        let ops = vec![
            Op::Put {
                key: "a".into(),
                value: "1".into(),
            },
            Op::Incr {
                key: "n".into(),
                by: -2,
            },
        ];
        let group = persist_of(&node.step(Input::Write {
            id: 7,
            ops: ops.clone(),
            context: None,
            ts_ms: 0,
        }));
        assert_eq!(group.writes.len(), 1);
        assert_eq!((group.writes[0].seq, &group.writes[0].ops), (1, &ops));
        let done = node.step(Input::Persisted(group));
        match &done[0] {
            Effect::Apply {
                writes, replies, ..
            } => {
                assert_eq!((writes.len(), replies.as_slice()), (1, &[(7, 0)][..]))
            }
            other => panic!("{other:?}"),
        }
        let (batch, _) = node.read_batch(&Plan {
            ranges: vec![(1, 0, 1)],
            max: 10,
            drop: false,
        });
        assert_eq!(batch[0].ops, ops, "replicated as one unit");
    }

    #[test]
    fn a_fresh_node_refuses_puts_until_it_has_heard_from_every_peer() {
        let (mut node, boot) = Node::new(config(0, 2), Boot::empty(2));
        assert!(!boot.contains(&Effect::Ready));
        let refused = node.step(put(1, "x", None));
        assert!(
            matches!(&refused[0], Effect::Refused { error: Error::Unavailable(m), .. } if m.contains("peer(s) 1"))
        );
        let effects = node.step(Input::PeerAcked {
            peer: 1,
            received: vc(&[0, 0]),
            delivered: vc(&[0, 0]),
        });
        let group = persist_of(&effects);
        assert!(!group.rebuilding, "the group that ends the rebuild");
        assert!(node
            .step(put(2, "x", None))
            .iter()
            .any(|e| matches!(e, Effect::Refused { .. })));
        let done = node.step(Input::Persisted(group));
        assert!(done.contains(&Effect::Ready));
        assert!(node.not_ready().is_none());
    }

    #[test]
    fn a_write_out_of_sequence_halts_the_node() {
        let mut node = ready_node(0, 2);
        let effects = node.step(Input::Deliver {
            writes: vec![w(1, &[0, 2], "x", "a")],
        });
        assert!(
            matches!(&effects[0], Effect::Halt { reason } if reason.contains("out of sequence"))
        );
        assert!(node.not_ready().is_some());
        let after = node.step(put(1, "x", None));
        assert!(matches!(after[0], Effect::Refused { .. }));
    }

    #[test]
    fn a_put_waits_for_its_context_then_times_out() {
        let mut node = ready_node(0, 2);
        node.step(Input::Tick { now_ms: 100 });
        assert!(node.step(put(1, "x", Some(vc(&[0, 1])))).is_empty());
        assert!(node.step(Input::Tick { now_ms: 1_099 }).is_empty());
        let out = node.step(Input::Tick { now_ms: 1_100 });
        assert!(matches!(&out[0], Effect::Refused { id: 1, .. }));
        assert_eq!(node.counters().context_waits_timeout, 1);
    }

    #[test]
    fn a_waiting_put_is_stamped_after_the_write_it_waited_for() {
        let mut node = ready_node(0, 2);
        node.step(put(1, "x", Some(vc(&[0, 1]))));
        let effects = node.step(Input::Deliver {
            writes: vec![w(1, &[0, 1], "y", "b")],
        });
        let group = persist_of(&effects);
        assert_eq!(group.writes.len(), 2);
        assert_eq!(group.writes[1].vc, vc(&[1, 1]), "covers the context");
    }

    fn acked(peer: NodeId, received: &[u64], delivered: &[u64]) -> Input {
        Input::PeerAcked {
            peer,
            received: vc(received),
            delivered: vc(delivered),
        }
    }

    /// Feeds `input`, then reports every group it hands out as durable
    /// (as the actor does in memory mode); returns all effects.
    fn settle(node: &mut Node, input: Input) -> Vec<Effect> {
        let mut all = Vec::new();
        let mut next = node.step(input);
        loop {
            let group = next.iter().find_map(|e| match e {
                Effect::Persist(g) => Some(g.clone()),
                _ => None,
            });
            all.append(&mut next);
            match group {
                Some(g) => next = node.step(Input::Persisted(g)),
                None => return all,
            }
        }
    }

    #[test]
    fn a_durable_group_is_applied_then_reported_then_replicated() {
        let mut node = ready_node(0, 2);
        let group = persist_of(&node.step(put(1, "x", None)));
        node.step(Input::Flush { id: 9 });
        let done = node.step(Input::Persisted(group));
        let kinds: Vec<&str> = done
            .iter()
            .map(|e| match e {
                Effect::Apply { .. } => "apply",
                Effect::Durable { .. } => "durable",
                Effect::Wake { .. } => "wake",
                Effect::Persist(_) => "persist",
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["apply", "durable", "wake", "persist"]);
        let flush = persist_of(&done);
        assert!(
            flush.sync && flush.writes.is_empty(),
            "a flush is a synced group"
        );
        let flushed = node.step(Input::Persisted(flush));
        assert!(flushed.contains(&Effect::Flushed { id: 9 }));
    }

    #[test]
    fn writes_stable_everywhere_are_trimmed_and_the_trim_reaches_the_disk() {
        let mut node = ready_node(0, 3);
        for id in 1..=3 {
            settle(&mut node, put(id, "x", None));
        }
        assert_eq!(node.log_entries(), 3);
        // One peer has all three, the other only the first: only write 1 is
        // stable.
        settle(&mut node, acked(1, &[3, 0, 0], &[3, 0, 0]));
        assert_eq!(node.log_entries(), 3, "node 2 has not acknowledged yet");
        let effects = node.step(acked(2, &[1, 0, 0], &[1, 0, 0]));
        assert_eq!(node.log_entries(), 2);
        let group = persist_of(&effects);
        assert_eq!(group.trim, Some(vc(&[1, 0, 0])));
        assert!(group.writes.is_empty());
    }

    #[test]
    fn a_batch_is_read_from_durable_writes_only_and_bounded() {
        let mut node = ready_node(0, 2);
        for id in 1..=5 {
            settle(&mut node, put(id, "x", None));
        }
        node.step(put(6, "x", None)); // stamped, not durable
        let plan = Plan {
            ranges: vec![(0, 1, 6)],
            max: 3,
            drop: false,
        };
        let (writes, from) = node.read_batch(&plan);
        let seqs: Vec<u64> = writes.iter().map(|w| w.seq).collect();
        assert_eq!(seqs, [2, 3, 4], "at most `max`, after `after`");
        assert_eq!(from, vc(&[5, 0]), "the durable clock");
        let (writes, _) = node.read_batch(&Plan {
            ranges: vec![(0, 0, 6)],
            max: 100,
            drop: false,
        });
        assert_eq!(writes.len(), 5, "write 6 is not durable yet");
    }

    #[test]
    fn a_full_log_and_too_many_waiting_puts_answer_503() {
        let mut node: Node = Node::new(
            NodeConfig {
                max_log: 2,
                max_waiters: 1,
                ..config(0, 2)
            },
            Boot {
                fresh: false,
                ..Boot::empty(2)
            },
        )
        .0;
        settle(&mut node, put(1, "x", None));
        node.step(put(2, "x", None));
        let full = node.step(put(3, "x", None));
        assert!(
            matches!(&full[0], Effect::Refused { id: 3, error: Error::Unavailable(m) } if m.contains("replication log full")),
            "{full:?}"
        );
        assert!(
            node.step(put(4, "y", Some(vc(&[0, 1])))).is_empty(),
            "parked"
        );
        let busy = node.step(put(5, "y", Some(vc(&[0, 1]))));
        assert!(
            matches!(&busy[0], Effect::Refused { id: 5, error: Error::Unavailable(m) } if m.contains("waiting"))
        );
    }

    #[test]
    fn a_fresh_node_takes_a_snapshot_from_a_peer_ahead_and_its_own_writes_back() {
        let (mut node, _) = Node::<RequestId>::new(config(2, 3), Boot::empty(3));
        let ask = node.step(acked(0, &[1, 1, 1], &[1, 1, 1]));
        assert!(ask.contains(&Effect::FetchSnapshot { peer: 0 }), "{ask:?}");
        // Peer 1 holds writes 2..4 of ours that peer 0 lacks.
        node.step(acked(1, &[1, 1, 4], &[1, 1, 4]));
        let snapshot = Snapshot {
            delivered: vc(&[1, 1, 1]),
            entries: vec![("a".into(), Versioned::register("a0", vc(&[1, 1, 1]), 2))],
        };
        // An unasked snapshot is ignored.
        let other = Input::Snapshot {
            from: 1,
            snapshot: snapshot.clone(),
        };
        assert!(node.step(other).is_empty());
        let group = persist_of(&node.step(Input::Snapshot { from: 0, snapshot }));
        assert!(group.rebuilding && group.snapshot.is_some());
        assert_eq!(group.delivered, vc(&[1, 1, 1]));
        let done = node.step(Input::Persisted(group));
        assert!(
            !done.contains(&Effect::Ready),
            "its writes 2..4 are still out there"
        );
        assert!(node.not_ready().unwrap().contains("up to 4"));
        let relayed = (2..=4)
            .map(|seq| w(2, &[1, 1, seq], "a", &format!("a{}", seq - 1)))
            .collect();
        let effects = settle(&mut node, Input::Deliver { writes: relayed });
        assert!(effects.contains(&Effect::Ready), "{effects:?}");
        let next = persist_of(&node.step(put(7, "b", None)));
        assert_eq!(next.writes[0].seq, 5, "continues after its old writes");
        assert!(!next.rebuilding);
    }

    #[test]
    fn a_restarted_node_with_the_mark_resumes_rebuilding() {
        let boot = Boot {
            delivered: vc(&[1, 1, 1]),
            log: ReplicationLog::starting_after(&vc(&[1, 1, 1])),
            fresh: false,
            rebuilding: true,
        };
        let (mut node, effects) = Node::<RequestId>::new(config(2, 3), boot);
        assert!(!effects.contains(&Effect::Ready));
        let refused = node.step(put(1, "b", None));
        assert!(
            matches!(refused[0], Effect::Refused { .. }),
            "never stamps 1:1:2"
        );
    }

    #[test]
    fn writes_a_snapshot_covers_are_dropped_and_the_log_continues_after_it() {
        let (mut node, _) = Node::<RequestId>::new(config(2, 3), Boot::empty(3));
        node.step(acked(0, &[0, 3, 0], &[0, 3, 0]));
        let snapshot = Snapshot {
            delivered: vc(&[0, 3, 0]),
            entries: vec![],
        };
        let group = persist_of(&node.step(Input::Snapshot { from: 0, snapshot }));
        // The buffer, not yet told of the snapshot, delivers writes 1:1..1:4.
        let writes = (1..=4).map(|s| w(1, &[0, s, 0], "k", "v")).collect();
        let effects = node.step(Input::Deliver { writes });
        assert!(
            effects.iter().all(|e| !matches!(e, Effect::Halt { .. })),
            "{effects:?}"
        );
        assert_eq!(node.counters().covered, 3);
        settle(&mut node, Input::Persisted(group));
        let next = settle(&mut node, acked(1, &[0, 4, 0], &[0, 4, 0]));
        assert!(
            next.iter().all(|e| !matches!(e, Effect::Halt { .. })),
            "{next:?}"
        );
        let (batch, _) = node.read_batch(&Plan {
            ranges: vec![(1, 0, 4)],
            max: 10,
            drop: false,
        });
        assert_eq!(batch.iter().map(|w| w.seq).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn a_dependency_missing_or_an_unknown_group_halts_the_node() {
        let mut node = ready_node(0, 3);
        let effects = node.step(Input::Deliver {
            writes: vec![w(1, &[0, 1, 2], "x", "a")],
        });
        assert!(matches!(&effects[0], Effect::Halt { reason } if reason.contains("dependency")));
        let mut node = ready_node(0, 3);
        let mut group = persist_of(&node.step(put(1, "x", None)));
        group.id += 1;
        let effects = node.step(Input::Persisted(group));
        assert!(matches!(&effects[0], Effect::Halt { reason } if reason.contains("not the one")));
    }

    fn version(origin: usize, vc: &[u64]) -> Versioned {
        Versioned::register("v", VClock::from_vec(vc.to_vec()), origin)
    }

    #[test]
    fn a_snapshot_must_fit_the_cluster() {
        let ok = Snapshot {
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

    #[test]
    fn a_rebuild_waits_for_the_snapshot_it_asked_for() {
        let (mut node, _) = Node::<RequestId>::new(config(2, 3), Boot::empty(3));
        // Peer 0 has history; none of it is ours.
        let ask = node.step(acked(0, &[5, 5, 0], &[5, 5, 0]));
        assert!(ask.contains(&Effect::FetchSnapshot { peer: 0 }));
        let heard = settle(&mut node, acked(1, &[5, 5, 0], &[5, 5, 0]));
        assert!(!heard.contains(&Effect::Ready), "{heard:?}");
        assert!(node.not_ready().unwrap().contains("snapshot of peer 0"));
        let snapshot = Snapshot {
            delivered: vc(&[5, 5, 0]),
            entries: vec![],
        };
        let done = settle(&mut node, Input::Snapshot { from: 0, snapshot });
        assert!(done.contains(&Effect::Ready), "{done:?}");
        assert_eq!(node.durable(), &vc(&[5, 5, 0]));
    }
}
