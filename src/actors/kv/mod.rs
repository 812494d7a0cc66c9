//! Actors of the causal KV store.
//!
//! | actor | wraps | role |
//! |---|---|---|
//! | [`ClockActor`] | `Node` | the node's protocol core: stamps, delivers, group-commits, rebuilds |
//! | [`StoreActor`] | `Store`, `Waiters` | versioned values, reads, causal-context waits |
//! | [`DeliveryBufferActor`] | `DeliveryBuffer` | holds early replicated writes until causally ready |
//! | [`ReplicatorActor`] | `PeerStream` | one per peer: batches, sends, retries, relays |
//!
//! `service::kv` starts them and wires them together (each holds the others
//! as `Recipient`s of the messages it sends); [`KvNode`], the handle it
//! returns, is what the HTTP layer talks to.

pub mod buffer;
pub mod clock;
pub mod messages;
pub mod metrics;
pub mod replicator;
pub mod store;

use actix::prelude::*;
use prometheus::Registry;

pub use buffer::DeliveryBufferActor;
pub use clock::ClockActor;
pub use messages::TxnDone;
pub use metrics::KvMetrics;
pub use replicator::ReplicatorActor;
pub use store::StoreActor;

use self::messages::{
    GetBufferView, GetClockView, GetPeerView, GetStoreSnapshot, SetFault, Stop, Transact,
};
use crate::causal::{Op, Snapshot, VClock};
use crate::error::{Error, Result};
use crate::wire::kv::{FaultRequest, StatusResponse, StoredValue, ValueKind};

/// `Stop` ends each actor of a node (sent by `KvNode::shutdown`).
macro_rules! stop_on_request {
    ($($actor:ty),*) => {$(
        impl Handler<Stop> for $actor {
            type Result = ();

            fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
                ctx.stop();
            }
        }
    )*};
}

stop_on_request!(ClockActor, StoreActor, DeliveryBufferActor, ReplicatorActor);

/// The running actors of one node.
#[derive(Clone)]
pub struct KvNode {
    pub id: usize,
    pub cluster_size: usize,
    pub clock: Addr<ClockActor>,
    pub store: Addr<StoreActor>,
    pub buffer: Addr<DeliveryBufferActor>,
    /// Indexed by node id; `None` at our own index.
    pub replicators: Vec<Option<Addr<ReplicatorActor>>>,
    pub metrics: KvMetrics,
    pub registry: Registry,
    /// The thread the replicators run on.
    pub replication: actix::ArbiterHandle,
}

impl KvNode {
    /// Everything `/status` shows, gathered from the actors; `with_store`
    /// false leaves `store` empty (`keys` still counts them).
    pub async fn status(&self, with_store: bool) -> Result<StatusResponse> {
        let snapshot = self
            .store
            .send(GetStoreSnapshot {
                entries: with_store,
            })
            .await?;
        let buffer = self.buffer.send(GetBufferView).await?;
        let view = self.clock.send(GetClockView).await?;
        let mut peers = Vec::new();
        for r in self.replicators.iter().flatten() {
            peers.push(r.send(GetPeerView).await?);
        }
        Ok(StatusResponse {
            node: self.id,
            cluster_size: self.cluster_size,
            vc: snapshot.applied,
            keys: snapshot.keys,
            store: snapshot
                .entries
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        StoredValue {
                            value: v.value.text().into_owned(),
                            kind: v.value.is_counter().then_some(ValueKind::Counter),
                            vc: v.vc,
                        },
                    )
                })
                .collect(),
            buffered_msgs: buffer.buffered,
            waiting: buffer.waiting,
            log_entries: view.log_entries,
            ready: view.not_ready.is_none(),
            not_ready: view.not_ready,
            peers,
        })
    }

    /// Reads `keys` from one causally consistent state of the store that
    /// includes `context`, checks the kinds of the keys `ops` write, then
    /// writes `ops` as one write stamped after everything read (`/txn`;
    /// `/put` and `/incr` are transactions of one operation and no read).
    /// The caller has validated the request (`wire::kv::Limits`).
    pub async fn transact(
        &self,
        keys: Vec<String>,
        ops: Vec<Op>,
        context: Option<VClock>,
    ) -> Result<TxnDone> {
        let increments = ops.iter().filter(|op| op.is_incr()).count();
        let done = self.store.send(Transact { keys, ops, context }).await??;
        if done.written.is_some() {
            self.metrics.increments.inc_by(increments as u64);
        }
        Ok(done)
    }

    /// A consistent snapshot of the store (durable writes only), for a peer
    /// that lost its data.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let snapshot = self.store.send(GetStoreSnapshot { entries: true }).await?;
        Ok(Snapshot {
            delivered: snapshot.applied,
            entries: snapshot.entries,
        })
    }

    /// `None` once the node serves clients; otherwise what it waits for.
    pub async fn not_ready(&self) -> Result<Option<String>> {
        Ok(self.clock.send(GetClockView).await?.not_ready)
    }

    /// Graceful shutdown: waits for the running group commit and makes
    /// everything delivered so far durable (with an fsync, whatever the
    /// policy). Call after the HTTP server has stopped.
    pub async fn flush(&self) -> Result<()> {
        self.clock.send(messages::Flush).await?
    }

    /// Stops every actor of the node (after its HTTP server has stopped).
    pub fn shutdown(&self) {
        for r in self.replicators.iter().flatten() {
            r.do_send(messages::Stop);
        }
        self.buffer.do_send(messages::Stop);
        self.clock.do_send(messages::Stop);
        self.store.do_send(messages::Stop);
        self.replication.stop();
    }

    /// Injects (or clears) a replication fault towards one peer.
    pub async fn set_fault(&self, req: FaultRequest) -> Result<()> {
        let replicator = self
            .replicators
            .get(req.peer)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "peer {} is not another node of this {}-node cluster",
                    req.peer, self.cluster_size
                ))
            })?;
        if req.kind.is_some() && req.duration_ms == 0 {
            return Err(Error::invalid("duration_ms must be positive"));
        }
        replicator
            .send(SetFault {
                kind: req.kind,
                duration_ms: req.duration_ms.min(24 * 3600 * 1000),
            })
            .await?;
        Ok(())
    }
}
