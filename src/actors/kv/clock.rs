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

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::buffer::DeliveryBufferActor;
use super::messages::{
    Apply, Batch, ClockView, Deliver, GetClockView, LocalDelivered, PeerProgress, Put, PutDone,
    ReadBatch, Wake,
};
use super::metrics::KvMetrics;
use super::replicator::ReplicatorActor;
use super::store::{await_context, StoreActor};
use crate::auth::now_ms;
use crate::causal::session::Waiters;
use crate::causal::{NodeId, ReplicationLog, VClock, Write};
use crate::error::{Error, Result};

/// Upper bound on the bytes of one replication batch (a single larger write
/// is still sent on its own).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

pub struct ClockActor {
    me: NodeId,
    delivered: VClock,
    log: ReplicationLog,
    max_log: usize,
    /// Each node's last acknowledged delivered clock (our own entry unused).
    peer_delivered: Vec<VClock>,
    waiters: Waiters<oneshot::Sender<()>>,
    wait_timeout: Duration,
    store: Addr<StoreActor>,
    buffer: Addr<DeliveryBufferActor>,
    replicators: Vec<Addr<ReplicatorActor>>,
    metrics: KvMetrics,
}

pub struct ClockParts {
    pub me: NodeId,
    pub n: usize,
    pub max_log: usize,
    pub wait_timeout: Duration,
    pub max_waiters: usize,
    pub store: Addr<StoreActor>,
    pub buffer: Addr<DeliveryBufferActor>,
    pub replicators: Vec<Addr<ReplicatorActor>>,
    pub metrics: KvMetrics,
}

impl ClockActor {
    pub fn new(p: ClockParts) -> Self {
        ClockActor {
            me: p.me,
            delivered: VClock::zero(p.n),
            log: ReplicationLog::new(p.n),
            max_log: p.max_log,
            peer_delivered: vec![VClock::zero(p.n); p.n],
            waiters: Waiters::new(p.max_waiters),
            wait_timeout: p.wait_timeout,
            store: p.store,
            buffer: p.buffer,
            replicators: p.replicators,
            metrics: p.metrics,
        }
    }

    /// Stamps and delivers a local write; the receiver yields the store's
    /// applied clock once the write is visible to reads.
    fn local_write(
        &mut self,
        key: String,
        value: String,
    ) -> Result<(Write, oneshot::Receiver<VClock>)> {
        if self.log.len() >= self.max_log {
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
        self.log.append(write.clone());
        let (tx, rx) = oneshot::channel();
        self.store.do_send(Apply {
            writes: vec![write.clone()],
            reply: Some(tx),
        });
        self.buffer.do_send(LocalDelivered { seq });
        self.metrics.writes.inc();
        self.after_delivery();
        Ok((write, rx))
    }

    fn after_delivery(&mut self) {
        self.metrics.log_entries.set(self.log.len() as i64);
        for waiter in self.waiters.release(&self.delivered) {
            let _ = waiter.send(());
        }
        for r in &self.replicators {
            r.do_send(Wake {
                delivered: self.delivered.clone(),
            });
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
        let timeout = self.wait_timeout;
        let metrics = self.metrics.clone();
        let wait = async move { await_context(rx?, timeout, &metrics).await };
        // Stamp only after the wait, with the clock as it is then, so the
        // write covers the client's context (writes-follow-reads).
        Box::pin(wait.into_actor(self).then(move |res, act, _| {
            let stamped = res.and_then(|_| act.local_write(msg.key, msg.value));
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

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
        let now = now_ms();
        for write in &msg.writes {
            self.delivered.merge(&write.vc);
            if !self.log.append(write.clone()) {
                log::error!(
                    "write {}:{} delivered out of sequence; not logged",
                    write.origin,
                    write.seq
                );
            }
            self.metrics
                .deliveries
                .with_label_values(&[&write.origin.to_string()])
                .inc();
            self.metrics
                .delivery_delay
                .observe(now.saturating_sub(write.ts_ms) as f64 / 1000.0);
        }
        self.store.do_send(Apply {
            writes: msg.writes,
            reply: None,
        });
        self.after_delivery();
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

    fn handle(&mut self, msg: PeerProgress, _: &mut Self::Context) {
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
        self.log.trim(&stable);
        self.metrics.log_entries.set(self.log.len() as i64);
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
