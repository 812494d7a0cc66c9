//! `ClockActor`: the loop around the node's protocol core, [`Node`].
//!
//! Every decision (stamping, the group commit and its order, rebuilding,
//! causal stability, refusals) is the core's: see `causal::node`. The actor
//! turns messages into [`Input`]s and executes the [`Effect`]s: a group to
//! storage on a blocking thread (the core hands out one at a time, so groups
//! become durable in delivery order), `do_send`s to the store, the buffer and
//! the replicators, answers, metrics. A 50 ms timer gives the core its time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::{
    Apply, Batch, Deliver, Durable, FetchSnapshot, Flush, GetClockView, InstallSnapshot, NodeReady,
    PeerProgress, Put, PutDone, ReadBatch, Wake,
};
use super::metrics::KvMetrics;
use crate::auth::now_ms;
use crate::causal::node::Counters;
use crate::causal::{Effect, Group, Input, Node};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// How often the core is told the time (it times out context waits).
const TICK: Duration = Duration::from_millis(50);
/// How often the storage is asked to checkpoint closed log segments that no
/// commit has picked up (`Storage::maintain`): checkpoints wait for a quiet
/// log, and only this notices that the log has gone quiet.
const MAINTAIN_EVERY: Duration = Duration::from_millis(100);

/// Where the core's effects go (replicators by node id; `None` for us).
pub struct ClockPeers {
    pub store: Recipient<Apply>,
    pub ready: Recipient<NodeReady>,
    pub buffer: Recipient<Durable>,
    pub wake: Vec<Option<Recipient<Wake>>>,
    pub fetch: Vec<Option<Recipient<FetchSnapshot>>>,
}

/// How a request is answered: the token the core carries for it.
#[derive(Debug)]
pub enum Reply {
    /// A put, and when it arrived.
    Put(oneshot::Sender<Result<PutDone>>, Instant),
    Flush(oneshot::Sender<()>),
}

pub struct ClockActor {
    node: Node<Reply>,
    /// Effects of the core's boot, executed once the actor runs.
    boot: Vec<Effect<Reply>>,
    storage: Option<Arc<Storage>>,
    peers: ClockPeers,
    epoch: Instant,
    /// When the latest group commit started (puts queue until then).
    group_started: Instant,
    metrics: KvMetrics,
    /// The counters as last exported.
    exported: Counters,
}

impl ClockActor {
    pub fn new(
        (node, boot): (Node<Reply>, Vec<Effect<Reply>>),
        storage: Option<Arc<Storage>>,
        peers: ClockPeers,
        metrics: KvMetrics,
    ) -> Self {
        ClockActor {
            node,
            boot,
            storage,
            peers,
            epoch: Instant::now(),
            group_started: Instant::now(),
            metrics,
            exported: Counters::default(),
        }
    }

    /// Feeds one input and executes what comes back.
    fn step(&mut self, input: Input<Reply>, ctx: &mut Context<Self>) {
        let effects = self.node.step(input);
        self.execute(effects, ctx);
    }

    fn execute(&mut self, effects: Vec<Effect<Reply>>, ctx: &mut Context<Self>) {
        let mut queue = VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Persist(group) => {
                    self.group_started = Instant::now();
                    match self.storage.clone() {
                        // In memory, a group is durable at once.
                        None => queue.extend(self.node.step(Input::Persisted(group))),
                        Some(storage) => self.persist(storage, group, ctx),
                    }
                }
                Effect::Apply {
                    snapshot,
                    writes,
                    replies,
                    applied,
                } => {
                    self.metrics
                        .observe_applied(self.node.me(), &writes, now_ms());
                    let replies = replies
                        .into_iter()
                        .filter_map(|(reply, i)| match reply {
                            Reply::Put(tx, arrived) => {
                                let queued = self.group_started.saturating_duration_since(arrived);
                                self.metrics.commit.put_queue.observe(queued.as_secs_f64());
                                Some((tx, writes[i].vc.clone()))
                            }
                            Reply::Flush(_) => None,
                        })
                        .collect();
                    self.peers.store.do_send(Apply {
                        snapshot,
                        writes,
                        replies,
                        applied,
                    });
                }
                Effect::Durable { delivered } => self.peers.buffer.do_send(Durable { delivered }),
                Effect::Wake { delivered } => self.peers.wake.iter().flatten().for_each(|r| {
                    r.do_send(Wake {
                        delivered: delivered.clone(),
                    })
                }),
                // The requester may have gone; that is not an error here.
                Effect::Refused {
                    id: Reply::Put(tx, _),
                    error,
                } => drop(tx.send(Err(error))),
                Effect::Flushed {
                    id: Reply::Flush(tx),
                } => drop(tx.send(())),
                Effect::Refused { .. } | Effect::Flushed { .. } => {}
                Effect::FetchSnapshot { peer } => {
                    log::info!("rebuilding: fetching a snapshot from peer {peer}");
                    if let Some(Some(r)) = self.peers.fetch.get(peer) {
                        r.do_send(FetchSnapshot);
                    }
                }
                Effect::Ready => {
                    let own = self.node.delivered().get(self.node.me());
                    log::info!("ready: own writes continue after seq {own}");
                    self.peers.ready.do_send(NodeReady);
                }
                Effect::Halt { reason } => fail_stop(&reason),
            }
        }
        let (counters, log) = (self.node.counters(), self.node.log_entries());
        self.metrics.export_node(&mut self.exported, counters, log);
    }

    /// Checkpoints closed log segments on a blocking thread, as commits do;
    /// for the time after the last commit (a bulk load that just ended).
    fn maintain(&mut self, ctx: &mut Context<Self>) {
        let Some(storage) = self.storage.clone() else {
            return;
        };
        let job = tokio::task::spawn_blocking(move || storage.maintain());
        ctx.spawn(job.into_actor(self).map(|joined, act, _| match joined {
            Ok(Ok(Some(checkpoint))) => act.metrics.commit.observe_checkpoint(&checkpoint),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => fail_stop(&format!("storage failure: {e}")),
            Err(e) => fail_stop(&format!("storage thread failed: {e}")),
        }));
    }

    /// Writes a group on a blocking thread; the core learns when it is done.
    fn persist(&mut self, storage: Arc<Storage>, group: Group, ctx: &mut Context<Self>) {
        let job = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let result = storage.commit(&group);
            (result.map(|stats| (stats, start.elapsed())), group)
        });
        ctx.spawn(job.into_actor(self).map(|joined, act, ctx| match joined {
            Ok((Ok((stats, took)), group)) => {
                act.metrics.commit.observe(&stats, took);
                act.step(Input::Persisted(group), ctx)
            }
            Ok((Err(e), _)) => fail_stop(&format!("storage failure: {e}")),
            Err(e) => fail_stop(&format!("storage thread failed: {e}")),
        }));
    }
}

/// A write may be stamped but not durable, or the history has a hole: stop,
/// and let the supervisor restart the node from its durable state.
fn fail_stop(reason: &str) {
    log::error!("stopping the node: {reason}");
    System::current().stop_with_code(70);
}

impl Actor for ClockActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        let boot = std::mem::take(&mut self.boot);
        self.execute(boot, ctx);
        ctx.run_interval(TICK, |act, ctx| {
            let now_ms = act.epoch.elapsed().as_millis() as u64;
            act.step(Input::Tick { now_ms }, ctx);
        });
        ctx.run_interval(MAINTAIN_EVERY, |act, ctx| act.maintain(ctx));
    }
}

impl Handler<Put> for ClockActor {
    type Result = ResponseFuture<Result<PutDone>>;

    fn handle(&mut self, msg: Put, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let input = Input::Write {
            id: Reply::Put(tx, Instant::now()),
            ops: msg.ops,
            context: msg.context,
            ts_ms: now_ms(),
        };
        self.step(input, ctx);
        Box::pin(async move {
            rx.await
                .map_err(|_| Error::unavailable("node is shutting down"))?
        })
    }
}

/// Messages that are inputs of the core as they are.
macro_rules! feed_core {
    ($($msg:ty),*) => {$(
        impl Handler<$msg> for ClockActor {
            type Result = ();

            fn handle(&mut self, msg: $msg, ctx: &mut Self::Context) {
                self.step(msg.into(), ctx);
            }
        }
    )*};
}

feed_core!(Deliver, PeerProgress, InstallSnapshot);

impl Handler<ReadBatch> for ClockActor {
    type Result = MessageResult<ReadBatch>;

    fn handle(&mut self, msg: ReadBatch, _: &mut Self::Context) -> Self::Result {
        let (writes, delivered) = self.node.read_batch(&msg.plan);
        MessageResult(Batch { writes, delivered })
    }
}

impl Handler<Flush> for ClockActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let id = Reply::Flush(tx);
        self.step(Input::Flush { id }, ctx);
        Box::pin(async move {
            rx.await
                .map_err(|_| Error::internal("the final commit did not complete"))
        })
    }
}

impl Handler<GetClockView> for ClockActor {
    type Result = MessageResult<GetClockView>;

    fn handle(&mut self, _: GetClockView, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.node.view())
    }
}
