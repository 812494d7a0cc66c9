//! Wiring of a KV node's actors: recovery from disk, then the actors,
//! each given the others as `Recipient`s of the messages it sends.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use prometheus::Registry;

use super::config::KvConfig;
use crate::actors::kv::clock::ClockPeers;
use crate::actors::kv::replicator::{ClockLink, ReplicatorParts};
use crate::actors::kv::{
    ClockActor, DeliveryBufferActor, KvMetrics, KvNode, ReplicatorActor, StoreActor,
};
use crate::auth::Signer;
use crate::causal::{Node, NodeConfig, StreamConfig};
use crate::error::{Error, Result};
use crate::storage::{Recovered, Storage, SyncPolicy, WalOptions};

/// Most requests that may wait for a causal context at once.
const MAX_WAITERS: usize = 10_000;

/// Starts the node's actors on the current arbiter (after recovering its
/// durable state: blocking I/O, before anything serves).
pub fn start_node(config: &KvConfig) -> Result<KvNode> {
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
            let options = WalOptions {
                segment_bytes: config.wal_segment_bytes,
                preallocate: config.wal_preallocate,
                checkpoint_quiet: Duration::from_millis(config.checkpoint_quiet_ms),
                checkpoint_backlog: config.checkpoint_backlog,
                spare_segments: config.wal_spare_segments,
                ..WalOptions::default()
            };
            let (s, r) = Storage::open_with(&config.data_dir, me, n, policy, options)?;
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
    let store = StoreActor::new(
        store,
        clock.clone().recipient(),
        wait_timeout,
        MAX_WAITERS,
        metrics.clone(),
    )
    .start();
    let buffer = DeliveryBufferActor::new(
        me,
        delivered,
        config.buffer_capacity,
        clock.clone().recipient(),
        metrics.clone(),
    )
    .start();
    // A stream judges a peer's lag by its last ack, which an idle stream
    // refreshes once per heartbeat: a heartbeat at least as long as the
    // relay delay would relay writes the peer already has (see the
    // `relay_on_stale_acks` scenario).
    let defaults = StreamConfig::default();
    let stream_config = StreamConfig {
        max_batch: config.replication_batch,
        relay_after_ms: config.relay_after_ms,
        linger_ms: config.replication_linger_ms,
        heartbeat_ms: defaults.heartbeat_ms.min(config.relay_after_ms / 2).max(10),
        ..defaults
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
