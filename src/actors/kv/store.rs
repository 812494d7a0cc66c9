//! `StoreActor`: wraps the versioned `Store` and the causal-context waiters.
//!
//! It receives writes only from `ClockActor`, in causal order, each group
//! in one `Apply`, so what a read sees here is always a causally consistent
//! cut, and a transaction (one write) is never seen half applied. A
//! transaction's reads are served by one `Transact`, in one handler run:
//! they all come from the same cut. The same run checks the kinds of the
//! keys a client is about to write (a put on a counter, an increment on a
//! register answer 409); then this actor hands the write to `ClockActor`
//! and answers once it is durable and applied, so a put crosses from the
//! HTTP worker's thread to the actors' thread once, and back once.
//! Transactions and reads that carry a causal context ahead of the store
//! wait here, bounded by a timeout. Until the
//! node is ready (recovered and, if it started empty, rebuilt) reads answer
//! 503: a rebuilding node must not serve its empty store as data.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::{
    Apply, Get, GetDone, GetStoreSnapshot, NodeReady, Put, PutDone, StoreSnapshot, Transact,
    TxnDone,
};
use super::metrics::KvMetrics;
use crate::causal::session::Waiters;
use crate::causal::{Store, VClock};
use crate::error::{Error, Result};

pub struct StoreActor {
    store: Store,
    /// Where a transaction's write goes once checked.
    clock: Recipient<Put>,
    waiters: Waiters<oneshot::Sender<()>>,
    wait_timeout: Duration,
    ready: bool,
    metrics: KvMetrics,
}

impl StoreActor {
    pub fn new(
        store: Store,
        clock: Recipient<Put>,
        wait_timeout: Duration,
        max_waiters: usize,
        metrics: KvMetrics,
    ) -> Self {
        StoreActor {
            store,
            clock,
            waiters: Waiters::new(max_waiters),
            wait_timeout,
            ready: false,
            metrics,
        }
    }

    /// A future that resolves once `ctx` is applied, or fails after the
    /// timeout with `Unavailable` (nothing is applied on that path).
    fn wait_for(&mut self, ctx: Option<VClock>) -> Result<Option<oneshot::Receiver<()>>> {
        let Some(ctx) = ctx else { return Ok(None) };
        if ctx.le(self.store.applied()) {
            return Ok(None);
        }
        // Forget waiters whose requests already gave up.
        self.waiters.retain(|tx| !tx.is_closed());
        let (tx, rx) = oneshot::channel();
        self.waiters.wait(ctx, tx)?;
        Ok(Some(rx))
    }

    /// What a read waits for before it may look at the store: refused while
    /// the node is not ready, else until `context` is applied (bounded by
    /// the wait timeout).
    fn after_context(
        &mut self,
        context: Option<VClock>,
    ) -> Result<impl std::future::Future<Output = Result<()>> + 'static> {
        if !self.ready {
            return Err(Error::unavailable(
                "node is not ready: it is rebuilding its data from its peers (GET /ready says what it waits for)",
            ));
        }
        let rx = self.wait_for(context)?;
        let (timeout, metrics) = (self.wait_timeout, self.metrics.clone());
        Ok(async move { await_context(rx, timeout, &metrics).await })
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Apply> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Apply, _: &mut Self::Context) {
        if let Some(snapshot) = msg.snapshot {
            for (key, version) in snapshot.entries {
                self.store.merge_version(&key, version);
            }
        }
        for write in &msg.writes {
            self.store.apply(write);
        }
        let mut applied = self.store.applied().clone();
        applied.merge(&msg.applied);
        self.store.set_applied(applied);
        for waiter in self.waiters.release(self.store.applied()) {
            let _ = waiter.send(());
        }
        for (reply, vc) in msg.replies {
            // The client may have gone; that is not an error here.
            let _ = reply.send(Ok(PutDone {
                vc,
                context: self.store.applied().clone(),
            }));
        }
    }
}

impl Handler<NodeReady> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: NodeReady, _: &mut Self::Context) {
        self.ready = true;
    }
}

/// Waits for a causal context to be applied, bounded by `timeout`.
async fn await_context(
    rx: Option<oneshot::Receiver<()>>,
    timeout: Duration,
    metrics: &KvMetrics,
) -> Result<()> {
    let Some(rx) = rx else { return Ok(()) };
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(())) => {
            metrics.context_waits.with_label_values(&["ok"]).inc();
            Ok(())
        }
        Ok(Err(_)) => Err(Error::unavailable("node is shutting down")),
        Err(_) => {
            metrics.context_waits.with_label_values(&["timeout"]).inc();
            Err(Error::unavailable(format!(
                "timed out after {} ms waiting for this node to deliver the writes in the Causal-Context; retry, or ask another node",
                timeout.as_millis()
            )))
        }
    }
}

impl Handler<Get> for StoreActor {
    type Result = ResponseActFuture<Self, Result<GetDone>>;

    fn handle(&mut self, msg: Get, _: &mut Self::Context) -> Self::Result {
        let wait = match self.after_context(msg.context) {
            Ok(wait) => wait,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let key = msg.key;
        // Read only after the wait, from the state as it is then.
        Box::pin(wait.into_actor(self).map(move |res, act, _| {
            res?;
            Ok(GetDone {
                version: act.store.get(&key).cloned(),
                context: act.store.applied().clone(),
            })
        }))
    }
}

impl Handler<Transact> for StoreActor {
    type Result = ResponseActFuture<Self, Result<TxnDone>>;

    fn handle(&mut self, msg: Transact, _: &mut Self::Context) -> Self::Result {
        let wait = match self.after_context(msg.context) {
            Ok(wait) => wait,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let Transact { keys, ops, .. } = msg;
        let clock = self.clock.clone();
        // The reads and the check run in one go once the wait is over: no
        // `Apply` can come between two of them.
        let read = wait.into_actor(self).map(move |res, act, _| {
            res?;
            act.store.check_kinds(&ops)?;
            let versions = keys.iter().map(|k| act.store.get(k).cloned()).collect();
            Ok((versions, act.store.applied().clone(), ops))
        });
        Box::pin(read.then(move |read: Result<(Vec<_>, VClock, _)>, act, _| {
            async move {
                let (versions, context, ops) = read?;
                if ops.is_empty() {
                    return Ok(TxnDone {
                        versions,
                        written: None,
                        context,
                    });
                }
                // Stamped after everything read.
                let put = Put {
                    ops,
                    context: Some(context),
                };
                let done = clock.send(put).await??;
                Ok(TxnDone {
                    versions,
                    written: Some(done.vc),
                    context: done.context,
                })
            }
            .into_actor(act)
        }))
    }
}

impl Handler<GetStoreSnapshot> for StoreActor {
    type Result = MessageResult<GetStoreSnapshot>;

    fn handle(&mut self, msg: GetStoreSnapshot, _: &mut Self::Context) -> Self::Result {
        let mut entries: Vec<_> = match msg.entries {
            true => self
                .store
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            false => Vec::new(),
        };
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        MessageResult(StoreSnapshot {
            applied: self.store.applied().clone(),
            keys: self.store.len(),
            entries,
        })
    }
}
