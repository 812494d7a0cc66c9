//! `ClockActor`: runs the node's protocol core, [`Node`], and executes what
//! it decides.
//!
//! Every decision (stamping, the group commit and its order, rebuilding
//! after an empty start, causal stability, refusals) is the core's; see
//! `causal::node`. This actor is the loop around it: it turns messages into
//! [`Input`]s, and [`Effect`]s into actions: a group written to storage on
//! a blocking thread, `do_send`s to the store, the delivery buffer and the
//! replicators, answers to waiting requests, metrics. A 50 ms timer feeds
//! the core its logical time.
//!
//! Only one group is ever with storage, so `spawn_blocking` never runs two
//! commits at once and groups become durable in delivery order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::{
    Apply, Batch, Deliver, Durable, FetchSnapshot, Flush, GetClockView, InstallSnapshot, NodeReady,
    PeerProgress, Put, PutDone, ReadBatch, Stop, Wake,
};
use super::metrics::KvMetrics;
use crate::auth::now_ms;
use crate::causal::node::Counters;
use crate::causal::{Effect, Group, Input, Node, RequestId};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// How often the core is told the time (it times out context waits).
const TICK: Duration = Duration::from_millis(50);

/// Where the core's effects go.
pub struct ClockPeers {
    pub store: Recipient<Apply>,
    pub ready: Recipient<NodeReady>,
    pub buffer: Recipient<Durable>,
    /// Indexed by node id; `None` at our own index.
    pub wake: Vec<Option<Recipient<Wake>>>,
    pub fetch: Vec<Option<Recipient<FetchSnapshot>>>,
}

pub struct ClockActor {
    node: Node,
    /// Effects of the core's boot, executed once the actor runs.
    boot: Vec<Effect>,
    storage: Option<Arc<Storage>>,
    peers: ClockPeers,
    next_id: RequestId,
    puts: HashMap<RequestId, oneshot::Sender<Result<PutDone>>>,
    flushes: HashMap<RequestId, oneshot::Sender<()>>,
    epoch: Instant,
    metrics: KvMetrics,
    /// The counters as last exported.
    exported: Counters,
}

impl ClockActor {
    pub fn new(
        (node, boot): (Node, Vec<Effect>),
        storage: Option<Arc<Storage>>,
        peers: ClockPeers,
        metrics: KvMetrics,
    ) -> Self {
        ClockActor {
            node,
            boot,
            storage,
            peers,
            next_id: 1,
            puts: HashMap::new(),
            flushes: HashMap::new(),
            epoch: Instant::now(),
            metrics,
            exported: Counters::default(),
        }
    }

    fn id(&mut self) -> RequestId {
        self.next_id += 1;
        self.next_id
    }

    /// Feeds one input and executes what comes back.
    fn step(&mut self, input: Input, ctx: &mut Context<Self>) {
        let effects = self.node.step(input);
        self.execute(effects, ctx);
    }

    fn execute(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        let mut queue = VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Persist(group) => match self.storage.clone() {
                    // In memory, a group is durable at once.
                    None => queue.extend(self.node.step(Input::Persisted(group))),
                    Some(storage) => self.persist(storage, group, ctx),
                },
                Effect::Apply {
                    snapshot,
                    writes,
                    replies,
                    applied,
                } => {
                    let now = now_ms();
                    for w in writes.iter().filter(|w| w.origin != self.node.me()) {
                        let origin = w.origin.to_string();
                        self.metrics.deliveries.with_label_values(&[&origin]).inc();
                        let delay = now.saturating_sub(w.ts_ms) as f64 / 1000.0;
                        self.metrics.delivery_delay.observe(delay);
                    }
                    let replies = replies
                        .into_iter()
                        .filter_map(|(id, i)| Some((self.puts.remove(&id)?, writes[i].vc.clone())))
                        .collect();
                    self.peers.store.do_send(Apply {
                        snapshot,
                        writes,
                        replies,
                        applied,
                    });
                }
                Effect::Durable { delivered } => self.peers.buffer.do_send(Durable { delivered }),
                Effect::Wake { delivered } => {
                    for r in self.peers.wake.iter().flatten() {
                        r.do_send(Wake {
                            delivered: delivered.clone(),
                        });
                    }
                }
                Effect::Refused { id, error } => {
                    if let Some(tx) = self.puts.remove(&id) {
                        let _ = tx.send(Err(error));
                    }
                }
                Effect::Flushed { id } => {
                    if let Some(tx) = self.flushes.remove(&id) {
                        let _ = tx.send(());
                    }
                }
                Effect::FetchSnapshot { peer } => {
                    log::info!(
                        "node {}: started without its data; fetching a snapshot from peer {peer}",
                        self.node.me()
                    );
                    if let Some(Some(r)) = self.peers.fetch.get(peer) {
                        r.do_send(FetchSnapshot);
                    }
                }
                Effect::Ready => {
                    log::info!(
                        "node {}: ready; own writes continue after seq {}",
                        self.node.me(),
                        self.node.delivered().get(self.node.me())
                    );
                    self.peers.ready.do_send(NodeReady);
                }
                Effect::Halt { reason } => fail_stop(&reason),
            }
        }
        self.export_metrics();
    }

    /// Writes a group on a blocking thread; the core learns when it is done.
    fn persist(&mut self, storage: Arc<Storage>, group: Group, ctx: &mut Context<Self>) {
        let job = tokio::task::spawn_blocking(move || {
            let result = storage.commit(&group);
            (result, group)
        });
        ctx.spawn(job.into_actor(self).map(|joined, act, ctx| match joined {
            Ok((Ok(()), group)) => act.step(Input::Persisted(group), ctx),
            Ok((Err(e), _)) => fail_stop(&format!("storage failure: {e}")),
            Err(e) => fail_stop(&format!("storage thread failed: {e}")),
        }));
    }

    fn export_metrics(&mut self) {
        let now = self.node.counters().clone();
        let was = std::mem::replace(&mut self.exported, now.clone());
        self.metrics.writes.inc_by(now.writes - was.writes);
        let waits = &self.metrics.context_waits;
        waits
            .with_label_values(&["ok"])
            .inc_by(now.context_waits_ok - was.context_waits_ok);
        waits
            .with_label_values(&["timeout"])
            .inc_by(now.context_waits_timeout - was.context_waits_timeout);
        self.metrics.duplicates.inc_by(now.covered - was.covered);
        self.metrics
            .log_entries
            .set(self.node.view().log_entries as i64);
    }
}

/// A write may be stamped and acknowledged to nobody, or the history has a
/// hole: the only safe move is to stop (fail-stop) and let the supervisor
/// restart the node from its durable state.
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
    }
}

impl Handler<Put> for ClockActor {
    type Result = ResponseFuture<Result<PutDone>>;

    fn handle(&mut self, msg: Put, ctx: &mut Self::Context) -> Self::Result {
        let id = self.id();
        let (tx, rx) = oneshot::channel();
        self.puts.insert(id, tx);
        let input = Input::Put {
            id,
            key: msg.key,
            value: msg.value,
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

impl Handler<Deliver> for ClockActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        self.step(Input::Deliver { writes: msg.writes }, ctx);
    }
}

impl Handler<PeerProgress> for ClockActor {
    type Result = ();

    fn handle(&mut self, msg: PeerProgress, ctx: &mut Self::Context) {
        let input = Input::PeerAcked {
            peer: msg.peer,
            received: msg.received,
            delivered: msg.delivered,
        };
        self.step(input, ctx);
    }
}

impl Handler<InstallSnapshot> for ClockActor {
    type Result = ();

    fn handle(&mut self, msg: InstallSnapshot, ctx: &mut Self::Context) {
        log::info!(
            "node {}: installing a snapshot of {} keys at [{}] from peer {}",
            self.node.me(),
            msg.snapshot.entries.len(),
            msg.snapshot.delivered,
            msg.from
        );
        let input = Input::Snapshot {
            from: msg.from,
            snapshot: msg.snapshot,
        };
        self.step(input, ctx);
    }
}

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
        let id = self.id();
        let (tx, rx) = oneshot::channel();
        self.flushes.insert(id, tx);
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

impl Handler<Stop> for ClockActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
