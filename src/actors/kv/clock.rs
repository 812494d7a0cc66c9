//! `ClockActor`: the node's vector clock, its sequence numbers, and the
//! single point through which every write is delivered.
//!
//! Local writes are stamped here (own entry incremented, the write carries
//! the whole delivered clock), and replicated writes released by the
//! `DeliveryBufferActor` are merged here. Because this one actor forwards
//! both kinds to `StoreActor` with `do_send`, the store sees them in an order
//! consistent with causality, and because concurrent `/put`s are serialized
//! by this actor's mailbox, each gets a distinct sequence number.
//!
//! The actor also holds the replication log (every delivered write until it
//! is causally stable), which the per-peer replicators read from.
//!
//! ## Group commit
//! A delivered write (stamped local write or released replicated write) goes
//! first into `pending`. If no commit is running, the pending group is handed
//! to a blocking thread that writes it to storage in one transaction (one
//! fsync); writes delivered meanwhile wait for the next group. Only when a
//! group is durable is it applied to the store, answered to its clients,
//! appended to the replication log (so peers never see a write that could be
//! lost), and reported to the buffer (so acknowledgements cover only durable
//! writes). Groups commit one at a time, in delivery order.
//!
//! ## Never reusing a sequence number
//! Sequence numbers come from the durable delivered clock, so a restarted
//! node continues after its last durable write, and no peer can hold a later
//! one (writes leave the node only once durable). A node whose `DATA_DIR`
//! was empty cannot tell a new cluster from a wiped disk, so it refuses
//! writes (503) until every peer has answered and it has delivered all of its
//! own earlier writes that any peer reports (peers relay them back).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::buffer::DeliveryBufferActor;
use super::messages::{
    Apply, Batch, ClockView, Deliver, Durable, FetchSnapshot, GetClockView, InstallSnapshot,
    PeerProgress, Put, PutDone, ReadBatch, Restore, Wake,
};
use super::metrics::KvMetrics;
use super::replicator::ReplicatorActor;
use super::store::{await_context, StoreActor};
use crate::auth::now_ms;
use crate::causal::session::Waiters;
use crate::causal::{NodeId, ReplicationLog, VClock, Write};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Upper bound on the bytes of one replication batch (a single larger write
/// is still sent on its own).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

pub struct ClockActor {
    me: NodeId,
    delivered: VClock,
    log: ReplicationLog,
    max_log: usize,
    storage: Option<Arc<Storage>>,
    /// Delivered, not yet durable, in delivery order.
    pending: Vec<Write>,
    pending_replies: Vec<oneshot::Sender<VClock>>,
    committing: bool,
    /// Causally stable clock not yet trimmed from storage.
    trim: Option<VClock>,
    /// See "Never reusing a sequence number".
    recovering: bool,
    peers_heard: Vec<bool>,
    own_floor: u64,
    recovery_waiters: Vec<oneshot::Sender<()>>,
    snapshot_requested: bool,
    /// Versions from a peer's snapshot, committed with the next group.
    snapshot: Vec<(String, crate::causal::Versioned)>,
    /// Graceful shutdown: callers waiting for a final synced commit.
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// Each node's last acknowledged delivered clock (our own entry unused).
    peer_delivered: Vec<VClock>,
    waiters: Waiters<oneshot::Sender<()>>,
    wait_timeout: Duration,
    store: Addr<StoreActor>,
    buffer: Addr<DeliveryBufferActor>,
    /// Indexed by node id; `None` at our own index.
    replicators: Vec<Option<Addr<ReplicatorActor>>>,
    metrics: KvMetrics,
}

pub struct ClockParts {
    pub me: NodeId,
    pub n: usize,
    pub delivered: VClock,
    pub log: ReplicationLog,
    pub storage: Option<Arc<Storage>>,
    pub fresh: bool,
    pub max_log: usize,
    pub wait_timeout: Duration,
    pub max_waiters: usize,
    pub store: Addr<StoreActor>,
    pub buffer: Addr<DeliveryBufferActor>,
    pub replicators: Vec<Option<Addr<ReplicatorActor>>>,
    pub metrics: KvMetrics,
}

impl ClockActor {
    pub fn new(p: ClockParts) -> Self {
        let mut peers_heard = vec![false; p.n];
        peers_heard[p.me] = true;
        ClockActor {
            me: p.me,
            delivered: p.delivered,
            log: p.log,
            max_log: p.max_log,
            storage: p.storage,
            pending: Vec::new(),
            pending_replies: Vec::new(),
            committing: false,
            trim: None,
            recovering: p.fresh && p.n > 1,
            peers_heard,
            own_floor: 0,
            recovery_waiters: Vec::new(),
            snapshot_requested: false,
            snapshot: Vec::new(),
            flush_waiters: Vec::new(),
            peer_delivered: vec![VClock::zero(p.n); p.n],
            waiters: Waiters::new(p.max_waiters),
            wait_timeout: p.wait_timeout,
            store: p.store,
            buffer: p.buffer,
            replicators: p.replicators,
            metrics: p.metrics,
        }
    }

    /// Stamps a local write and queues it for the next group commit; the
    /// receiver yields the store's applied clock once the write is durable
    /// and visible to reads.
    fn local_write(
        &mut self,
        key: String,
        value: String,
        ctx: &mut Context<Self>,
    ) -> Result<(Write, oneshot::Receiver<VClock>)> {
        if self.recovering {
            return Err(Error::unavailable(
                "node started with an empty DATA_DIR and has not yet heard from every peer",
            ));
        }
        if self.log.len() + self.pending.len() >= self.max_log {
            return Err(Error::unavailable(format!(
                "replication log full ({} writes not yet delivered everywhere); a peer is down or slow",
                self.log.len()
            )));
        }
        let seq = self.delivered.increment(self.me);
        let write = Write {
            origin: self.me,
            seq,
            vc: self.delivered.clone(),
            key,
            value,
            ts_ms: now_ms(),
        };
        let (tx, rx) = oneshot::channel();
        self.pending.push(write.clone());
        self.pending_replies.push(tx);
        self.metrics.writes.inc();
        self.after_delivery();
        self.commit(ctx);
        Ok((write, rx))
    }

    /// Starts a group commit of everything pending, unless one is running.
    fn commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing
            || (self.pending.is_empty()
                && self.trim.is_none()
                && self.snapshot.is_empty()
                && self.flush_waiters.is_empty())
        {
            return;
        }
        let flushing = std::mem::take(&mut self.flush_waiters);
        let writes = std::mem::take(&mut self.pending);
        let replies = std::mem::take(&mut self.pending_replies);
        let snapshot = std::mem::take(&mut self.snapshot);
        let clock = self.delivered.clone();
        let Some(storage) = self.storage.clone() else {
            self.trim = None;
            self.durable(snapshot, writes, replies, clock);
            for waiter in flushing {
                let _ = waiter.send(());
            }
            return;
        };
        let sync = !flushing.is_empty();
        self.committing = true;
        let trim = self.trim.take();
        let job = tokio::task::spawn_blocking(move || {
            let mut result = storage.commit_with(&snapshot, &writes, &clock, trim.as_ref());
            if sync && result.is_ok() {
                result = storage.sync();
            }
            (result, snapshot, writes, clock)
        });
        let done = job.into_actor(self).map(move |joined, act, ctx| {
            act.committing = false;
            match joined {
                Ok((Ok(()), snapshot, writes, clock)) => {
                    act.durable(snapshot, writes, replies, clock);
                    for waiter in flushing {
                        let _ = waiter.send(());
                    }
                    act.commit(ctx);
                }
                Ok((Err(e), ..)) => act.storage_failed(&e.to_string()),
                Err(e) => act.storage_failed(&e.to_string()),
            }
        });
        ctx.spawn(done);
    }

    /// A group is durable: make it visible and replicable.
    fn durable(
        &mut self,
        snapshot: Vec<(String, crate::causal::Versioned)>,
        writes: Vec<Write>,
        replies: Vec<oneshot::Sender<VClock>>,
        clock: VClock,
    ) {
        if !snapshot.is_empty() {
            self.store.do_send(Restore {
                entries: snapshot,
                delivered: clock.clone(),
            });
        }
        for write in &writes {
            if !self.log.append(write.clone()) {
                log::error!(
                    "write {}:{} delivered out of sequence; not logged",
                    write.origin,
                    write.seq
                );
            }
        }
        self.store.do_send(Apply { writes, replies });
        self.buffer.do_send(Durable {
            delivered: clock.clone(),
        });
        self.metrics.log_entries.set(self.log.len() as i64);
        for r in self.replicators.iter().flatten() {
            r.do_send(Wake {
                delivered: clock.clone(),
            });
        }
    }

    /// The disk failed under us: a write may have been acknowledged to
    /// nobody but is stamped, so the only safe move is to stop (fail-stop)
    /// and let the supervisor restart the node from its durable state.
    fn storage_failed(&mut self, e: &str) {
        log::error!("storage failure, stopping the node: {e}");
        actix::System::current().stop_with_code(70);
    }

    fn after_delivery(&mut self) {
        for waiter in self.waiters.release(&self.delivered) {
            let _ = waiter.send(());
        }
    }

    /// While recovering: a receiver that resolves when writes are accepted.
    fn wait_recovered(&mut self) -> Option<oneshot::Receiver<()>> {
        if !self.recovering {
            return None;
        }
        self.recovery_waiters.retain(|tx| !tx.is_closed());
        let (tx, rx) = oneshot::channel();
        self.recovery_waiters.push(tx);
        Some(rx)
    }

    fn check_recovered(&mut self) {
        if self.recovering
            && self.peers_heard.iter().all(|h| *h)
            && self.delivered.get(self.me) >= self.own_floor
        {
            self.recovering = false;
            for waiter in self.recovery_waiters.drain(..) {
                let _ = waiter.send(());
            }
            log::info!(
                "node {}: heard from every peer; continuing own writes after seq {}",
                self.me,
                self.delivered.get(self.me)
            );
        }
    }

    fn wait_for(&mut self, ctx: Option<VClock>) -> Result<Option<oneshot::Receiver<()>>> {
        let Some(ctx) = ctx else { return Ok(None) };
        if ctx.le(&self.delivered) {
            return Ok(None);
        }
        self.waiters.retain(|tx| !tx.is_closed());
        let (tx, rx) = oneshot::channel();
        self.waiters.wait(ctx, tx)?;
        Ok(Some(rx))
    }
}

impl Actor for ClockActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Put> for ClockActor {
    type Result = ResponseActFuture<Self, Result<PutDone>>;

    fn handle(&mut self, msg: Put, _: &mut Self::Context) -> Self::Result {
        let rx = self.wait_for(msg.context);
        let recovered = self.wait_recovered();
        let timeout = self.wait_timeout;
        let metrics = self.metrics.clone();
        let wait = async move {
            if let Some(recovered) = recovered {
                // A fresh node's first writes wait (briefly, in a new
                // cluster) until it knows its own sequence numbers are free.
                match tokio::time::timeout(timeout, recovered).await {
                    Ok(Ok(())) => {}
                    _ => {
                        return Err(Error::unavailable(
                            "node started with an empty DATA_DIR and has not yet heard from every peer; it accepts writes once it has",
                        ))
                    }
                }
            }
            await_context(rx?, timeout, &metrics).await
        };
        // Stamp only after the wait, with the clock as it is then, so the
        // write covers the client's context (writes-follow-reads).
        Box::pin(wait.into_actor(self).then(move |res, act, ctx| {
            let stamped = res.and_then(|_| act.local_write(msg.key, msg.value, ctx));
            async move {
                let (write, applied) = stamped?;
                let context = applied
                    .await
                    .map_err(|_| Error::unavailable("node is shutting down"))?;
                Ok(PutDone { write, context })
            }
            .into_actor(act)
        }))
    }
}

impl Handler<Deliver> for ClockActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let now = now_ms();
        for write in &msg.writes {
            self.delivered.merge(&write.vc);
            self.metrics
                .deliveries
                .with_label_values(&[&write.origin.to_string()])
                .inc();
            self.metrics
                .delivery_delay
                .observe(now.saturating_sub(write.ts_ms) as f64 / 1000.0);
        }
        self.pending.extend(msg.writes);
        self.after_delivery();
        self.check_recovered();
        self.commit(ctx);
    }
}

impl Handler<ReadBatch> for ClockActor {
    type Result = MessageResult<ReadBatch>;

    fn handle(&mut self, msg: ReadBatch, _: &mut Self::Context) -> Self::Result {
        let mut writes = Vec::new();
        let mut bytes = 0usize;
        for &(origin, after, upto) in &msg.plan.ranges {
            let room = msg.plan.max.saturating_sub(writes.len());
            if room == 0 || bytes >= MAX_BATCH_BYTES {
                break;
            }
            let start = writes.len();
            self.log.read(origin, after, upto, room, &mut writes);
            for (i, w) in writes[start..].iter().enumerate() {
                bytes += w.key.len() + w.value.len() + 64;
                if bytes >= MAX_BATCH_BYTES {
                    writes.truncate(start + i + 1);
                    break;
                }
            }
        }
        MessageResult(Batch {
            writes,
            delivered: self.delivered.clone(),
        })
    }
}

impl Handler<PeerProgress> for ClockActor {
    type Result = ();

    fn handle(&mut self, msg: PeerProgress, ctx: &mut Self::Context) {
        if let Some(heard) = self.peers_heard.get_mut(msg.peer) {
            *heard = true;
        }
        self.own_floor = self.own_floor.max(msg.delivered.get(self.me));
        if self.recovering && !self.snapshot_requested && !msg.delivered.le(&self.delivered) {
            // We started empty but this peer has history: take its snapshot
            // rather than wait for writes it may already have trimmed.
            if let Some(Some(r)) = self.replicators.get(msg.peer) {
                log::info!(
                    "node {}: started empty; fetching a snapshot from peer {} (delivered [{}])",
                    self.me,
                    msg.peer,
                    msg.delivered
                );
                self.snapshot_requested = true;
                r.do_send(FetchSnapshot);
            }
        }
        self.check_recovered();
        if let Some(slot) = self.peer_delivered.get_mut(msg.peer) {
            *slot = msg.delivered;
        }
        // Causally stable: delivered by every node (ourselves included).
        let mut stable = self.delivered.clone();
        for (k, clock) in self.peer_delivered.iter().enumerate() {
            if k == self.me {
                continue;
            }
            for (i, entry) in clock.entries().iter().enumerate() {
                if *entry < stable.get(i) {
                    stable.set(i, *entry);
                }
            }
            for i in clock.len()..stable.len() {
                stable.set(i, 0);
            }
        }
        let before = self.log.len();
        self.log.trim(&stable);
        if self.log.len() < before {
            // Trimmed in storage with the next group commit.
            self.trim = Some(stable);
            self.commit(ctx);
        }
        self.metrics.log_entries.set(self.log.len() as i64);
    }
}

impl Handler<super::messages::Flush> for ClockActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, _: super::messages::Flush, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.flush_waiters.push(tx);
        self.commit(ctx);
        Box::pin(async move {
            rx.await
                .map_err(|_| Error::internal("the final commit did not complete"))
        })
    }
}

impl Handler<InstallSnapshot> for ClockActor {
    type Result = ();

    fn handle(&mut self, msg: InstallSnapshot, ctx: &mut Self::Context) {
        log::info!(
            "node {}: installing a snapshot of {} keys at [{}]",
            self.me,
            msg.entries.len(),
            msg.delivered
        );
        self.delivered.merge(&msg.delivered);
        self.log.advance_to(&msg.delivered);
        self.snapshot.extend(msg.entries);
        self.after_delivery();
        self.check_recovered();
        self.commit(ctx);
    }
}

impl Handler<GetClockView> for ClockActor {
    type Result = MessageResult<GetClockView>;

    fn handle(&mut self, _: GetClockView, _: &mut Self::Context) -> Self::Result {
        MessageResult(ClockView {
            delivered: self.delivered.clone(),
            log_entries: self.log.len(),
        })
    }
}

impl Handler<super::messages::Stop> for ClockActor {
    type Result = ();

    fn handle(&mut self, _: super::messages::Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
