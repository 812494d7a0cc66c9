//! Actors of the causal KV store.
//!
//! | actor | wraps | role |
//! |---|---|---|
//! | [`ClockActor`] | `Node` | the node's protocol core: stamps, delivers, group-commits, rebuilds |
//! | [`StoreActor`] | `Store`, `Waiters` | versioned values, reads, causal-context waits |
//! | [`DeliveryBufferActor`] | `DeliveryBuffer` | holds early replicated writes until causally ready |
//! | [`ReplicatorActor`] | `PeerStream` | one per peer: batches, sends, retries, relays |
//!
//! [`KvNode::start`] starts them and wires them together (each holds the
//! others as `Recipient`s of the messages it sends); the handle it returns
//! is what the HTTP layer talks to.

pub mod buffer;
pub mod clock;
pub mod messages;
pub mod metrics;
pub mod replicator;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use prometheus::Registry;

pub use buffer::DeliveryBufferActor;
pub use clock::ClockActor;
pub use metrics::KvMetrics;
pub use replicator::ReplicatorActor;
pub use store::StoreActor;

use self::clock::ClockPeers;
use self::messages::{GetBufferView, GetClockView, GetPeerView, GetStoreSnapshot, SetFault};
use self::replicator::{ClockLink, ReplicatorParts};
use crate::auth::Signer;
use crate::causal::{Node, NodeConfig, Snapshot, StreamConfig};
use crate::config::KvConfig;
use crate::error::{Error, Result};
use crate::storage::{Recovered, Storage, SyncPolicy};
use crate::wire::kv::{FaultRequest, StatusResponse, StoredValue};

/// Most requests that may wait for a causal context at once.
const MAX_WAITERS: usize = 10_000;

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
    replication: actix::ArbiterHandle,
}

impl KvNode {
    /// Starts the node's actors on the current arbiter.
    pub fn start(config: &KvConfig) -> Result<KvNode> {
        config.validate()?;
        let me = config.node_id;
        let n = config.cluster_size();
        let signer = Signer::new(&config.cluster_secret)?;
        let labels = std::iter::once(("node".to_string(), me.to_string())).collect();
        let registry = Registry::new_custom(None, Some(labels)).map_err(Error::internal)?;
        let metrics = KvMetrics::new(&registry)?;
        let wait_timeout = Duration::from_millis(config.causal_wait_timeout_ms);

        // Recover durable state first (blocking I/O, before anything serves).
        let (storage, recovered) = match config.durability {
            SyncPolicy::Memory => (None, Recovered::empty(n)),
            policy => {
                let (s, r) = Storage::open(&config.data_dir, me, n, policy)?;
                (Some(Arc::new(s)), r)
            }
        };
        let Recovered { store, boot } = recovered;
        if !boot.fresh {
            log::info!(
                "node {me}: recovered delivered clock [{}], {} keys, {} unstable writes{}",
                boot.delivered,
                store.len(),
                boot.log.len(),
                if boot.rebuilding {
                    "; its rebuild from its peers resumes"
                } else {
                    ""
                }
            );
        }
        let delivered = boot.delivered.clone();
        let core = Node::new(
            NodeConfig {
                me,
                n,
                max_log: config.max_log_entries,
                max_waiters: MAX_WAITERS,
                wait_timeout_ms: config.causal_wait_timeout_ms,
            },
            boot,
        );

        // The actors hold each other's addresses: create the clock's context
        // first so its address exists before it starts.
        let clock_ctx: Context<ClockActor> = Context::new();
        let clock = clock_ctx.address();
        let store = StoreActor::new(store, wait_timeout, MAX_WAITERS, metrics.clone()).start();
        let buffer = DeliveryBufferActor::new(
            me,
            delivered,
            config.buffer_capacity,
            clock.clone().recipient(),
            metrics.clone(),
        )
        .start();
        let stream_config = StreamConfig {
            max_batch: config.replication_batch,
            relay_after_ms: config.relay_after_ms,
            ..StreamConfig::default()
        };
        let link = ClockLink {
            read: clock.clone().recipient(),
            progress: clock.clone().recipient(),
            install: clock.clone().recipient(),
        };
        let replication = actix::Arbiter::new();
        let replicators: Vec<Option<Addr<ReplicatorActor>>> = config
            .peers
            .iter()
            .enumerate()
            .map(|(peer, url)| {
                (peer != me).then(|| {
                    let parts = ReplicatorParts {
                        me,
                        peer,
                        n,
                        url: url.clone(),
                        config: stream_config.clone(),
                        clock: link.clone(),
                        signer: signer.clone(),
                        timeout: Duration::from_millis(config.peer_timeout_ms),
                        metrics: metrics.clone(),
                    };
                    // Replication (batch encoding, HTTP to peers) runs on its
                    // own thread, so it never delays the client path on the
                    // arbiter of the clock and the store. The actor (and its
                    // non-Send HTTP client) is built on that thread.
                    ReplicatorActor::start_in_arbiter(&replication.handle(), move |_| {
                        ReplicatorActor::new(parts)
                    })
                })
            })
            .collect();
        let peers = ClockPeers {
            store: store.clone().recipient(),
            ready: store.clone().recipient(),
            buffer: buffer.clone().recipient(),
            wake: replicators
                .iter()
                .map(|r| r.clone().map(Addr::recipient))
                .collect(),
            fetch: replicators
                .iter()
                .map(|r| r.clone().map(Addr::recipient))
                .collect(),
        };
        clock_ctx.run(ClockActor::new(core, storage, peers, metrics.clone()));
        Ok(KvNode {
            id: me,
            cluster_size: n,
            clock,
            store,
            buffer,
            replicators,
            metrics,
            registry,
            replication: replication.handle(),
        })
    }

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
                            value: v.value.into(),
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
