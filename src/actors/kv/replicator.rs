//! `ReplicatorActor`: one per peer; wraps a `PeerStream` and moves its
//! batches over HTTP.
//!
//! It wakes when `ClockActor` delivers something (`Wake`) and on a short
//! timer (for backoff, heartbeats, relays and fault expiry). Each round it
//! asks the stream for a plan, reads the planned writes from the
//! `ClockActor`'s log, POSTs them to the peer's `/peer/replicate`, and feeds
//! the peer's acknowledgement back into the stream. At most one request is in
//! flight, so writes that arrive meanwhile form the next batch; a batch the
//! stream holds back to grow (`linger_ms`) is sent by a timer when its
//! linger ends.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::messages::{
    FetchSnapshot, GetPeerView, InstallSnapshot, PeerProgress, ReadBatch, SetFault, Wake,
};
use super::metrics::KvMetrics;
use crate::auth::Signer;
use crate::causal::{NodeId, PeerStream, Snapshot, StreamConfig, VClock};
use crate::error::{Error, Result};
use crate::net::kv::PeerClient;
use crate::wire::kv::{PeerStatus, ReplicateAck, ReplicateRequest};

/// How often the stream is re-examined without a wake-up.
const TICK: Duration = Duration::from_millis(50);

/// The replicator's way into its node's `ClockActor`.
#[derive(Clone)]
pub struct ClockLink {
    pub read: Recipient<ReadBatch>,
    pub progress: Recipient<PeerProgress>,
    pub install: Recipient<InstallSnapshot>,
}

pub struct ReplicatorActor {
    me: NodeId,
    peer: NodeId,
    url: String,
    stream: PeerStream,
    delivered: VClock,
    clock: ClockLink,
    client: PeerClient,
    epoch: Instant,
    metrics: KvMetrics,
    peer_label: String,
    reachable: bool,
    /// A timer is set for the end of the stream's linger.
    linger_armed: bool,
}

pub struct ReplicatorParts {
    pub me: NodeId,
    pub peer: NodeId,
    pub n: usize,
    pub url: String,
    pub config: StreamConfig,
    pub clock: ClockLink,
    pub signer: Signer,
    pub timeout: Duration,
    pub metrics: KvMetrics,
}

impl ReplicatorActor {
    pub fn new(p: ReplicatorParts) -> Self {
        ReplicatorActor {
            me: p.me,
            peer: p.peer,
            url: p.url,
            stream: PeerStream::new(p.me, p.n, p.config),
            delivered: VClock::zero(p.n),
            clock: p.clock,
            client: PeerClient::new(p.signer, p.me.to_string(), p.timeout),
            epoch: Instant::now(),
            metrics: p.metrics,
            peer_label: p.peer.to_string(),
            reachable: false,
            linger_armed: false,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn update_backlog(&self) {
        self.metrics
            .backlog
            .with_label_values(&[&self.peer_label])
            .set(self.stream.backlog(&self.delivered) as i64);
    }

    /// One round: plan, read, send; `finish` records the outcome.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        let Some(plan) = self.stream.plan(now, &self.delivered) else {
            self.arm_linger(now, ctx);
            return;
        };
        if plan.drop {
            self.metrics.record_batch(&self.peer_label, "dropped", 0);
            self.stream.on_failure(now);
            return;
        }
        let read = self.clock.read.send(ReadBatch { plan });
        let client = self.client.clone();
        let url = self.url.clone();
        let me = self.me;
        let n = self.delivered.len();
        let work = async move {
            let batch = read.await?;
            let request = ReplicateRequest {
                from: me,
                writes: batch.writes,
            };
            let ack: ReplicateAck = client.post(&url, "/peer/replicate", &request).await?;
            ack.validate(n)?;
            Ok::<_, Error>((ack, request.writes.len(), batch.delivered))
        };
        ctx.spawn(
            work.into_actor(self)
                .map(|res, act, ctx| act.finish(res, ctx)),
        );
    }

    /// A batch held back to grow is sent when its linger ends, not at the
    /// next tick.
    fn arm_linger(&mut self, now: u64, ctx: &mut Context<Self>) {
        if self.linger_armed || self.stream.in_flight() {
            return;
        }
        if let Some(until) = self.stream.linger_until().filter(|&t| t > now) {
            self.linger_armed = true;
            ctx.run_later(Duration::from_millis(until - now), |act, ctx| {
                act.linger_armed = false;
                act.pump(ctx);
            });
        }
    }

    fn finish(&mut self, res: Result<(ReplicateAck, usize, VClock)>, ctx: &mut Context<Self>) {
        match res {
            Ok((ack, sent, delivered)) => {
                self.metrics.record_batch(&self.peer_label, "ok", sent);
                self.delivered.merge(&delivered);
                self.stream
                    .on_ack(ack.received.clone(), ack.delivered.clone());
                self.clock.progress.do_send(PeerProgress {
                    peer: self.peer,
                    received: ack.received,
                    delivered: ack.delivered,
                });
                if !self.reachable {
                    log::info!("peer {} at {} is reachable", self.peer, self.url);
                    self.reachable = true;
                }
                self.update_backlog();
                // More may have accumulated while the request was in flight.
                // An empty batch (a heartbeat, or writes the log no longer
                // holds) waits for the timer instead, or it would spin.
                if sent > 0 {
                    self.pump(ctx);
                }
            }
            Err(e) => {
                self.metrics.record_batch(&self.peer_label, "error", 0);
                self.stream.on_failure(self.now_ms());
                if self.reachable || self.stream.failures() == 1 {
                    let (peer, url) = (self.peer, &self.url);
                    log::warn!("replication to peer {peer} at {url} failed, retrying: {e}");
                }
                self.reachable = false;
            }
        }
    }
}

impl Actor for ReplicatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(TICK, |act, ctx| act.pump(ctx));
    }
}

impl Handler<Wake> for ReplicatorActor {
    type Result = ();

    fn handle(&mut self, msg: Wake, ctx: &mut Self::Context) {
        self.delivered.merge(&msg.delivered);
        self.update_backlog();
        self.pump(ctx);
    }
}

impl Handler<SetFault> for ReplicatorActor {
    type Result = ();

    fn handle(&mut self, msg: SetFault, _: &mut Self::Context) {
        let (peer, ms) = (self.peer, msg.duration_ms);
        match msg.kind {
            Some(kind) => {
                log::info!("injecting fault {kind:?} towards peer {peer} for {ms} ms");
                self.stream.set_fault(kind, self.now_ms() + ms);
            }
            None => {
                log::info!("clearing the fault towards peer {peer}");
                self.stream.clear_fault();
            }
        }
    }
}

impl Handler<FetchSnapshot> for ReplicatorActor {
    type Result = ();

    fn handle(&mut self, _: FetchSnapshot, ctx: &mut Self::Context) {
        let client = self.client.clone();
        let url = self.url.clone();
        let n = self.delivered.len();
        let fetch = async move {
            let snapshot = client.get::<Snapshot>(&url, "/peer/snapshot").await?;
            snapshot.validate(n)?;
            Ok::<_, Error>(snapshot)
        };
        ctx.spawn(fetch.into_actor(self).map(|res, act, ctx| match res {
            Ok(snapshot) => {
                let (keys, clock) = (snapshot.entries.len(), &snapshot.delivered);
                log::info!(
                    "snapshot of {keys} keys at [{clock}] from peer {}",
                    act.peer
                );
                let from = act.peer;
                act.clock
                    .install
                    .do_send(InstallSnapshot { from, snapshot });
            }
            Err(e) => {
                log::warn!("snapshot from peer {} failed, retrying: {e}", act.peer);
                ctx.notify_later(FetchSnapshot, Duration::from_secs(1));
            }
        }));
    }
}

impl Handler<GetPeerView> for ReplicatorActor {
    type Result = MessageResult<GetPeerView>;

    fn handle(&mut self, _: GetPeerView, _: &mut Self::Context) -> Self::Result {
        MessageResult(PeerStatus {
            id: self.peer,
            url: self.url.clone(),
            acked: self.stream.acked().clone(),
            delivered: self.stream.peer_delivered().clone(),
            backlog: self.stream.backlog(&self.delivered),
            reachable: self.reachable,
            failures: self.stream.failures(),
            fault: self.stream.fault(self.now_ms()),
        })
    }
}
