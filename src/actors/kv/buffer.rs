//! `DeliveryBufferActor`: wraps the causal `DeliveryBuffer`.
//!
//! Peers' batches arrive here; writes that are causally ready go on to
//! `ClockActor` in delivery order (one `Deliver` per batch, FIFO), the rest
//! wait. The node's own writes never wait, but the buffer must learn of them
//! (`Durable`) because peers' writes may depend on them.
//!
//! Acknowledgements report two clocks: `received` (delivered or waiting
//! here), which tells the sender where to resume, and `delivered`, which is
//! only what is durable, because senders trim their logs by it.

use std::time::Instant;

use actix::prelude::*;

use super::messages::{Ack, BufferView, Deliver, Durable, GetBufferView, Replicate};
use super::metrics::KvMetrics;
use crate::causal::{DeliveryBuffer, NodeId, Offered, VClock, Write};
use crate::error::{Error, Result};

pub struct DeliveryBufferActor {
    me: NodeId,
    buffer: DeliveryBuffer,
    durable: VClock,
    clock: Recipient<Deliver>,
    epoch: Instant,
    metrics: KvMetrics,
}

impl DeliveryBufferActor {
    /// A buffer for a node that has durably delivered `delivered`.
    pub fn new(
        me: NodeId,
        delivered: VClock,
        capacity: usize,
        clock: Recipient<Deliver>,
        metrics: KvMetrics,
    ) -> Self {
        DeliveryBufferActor {
            me,
            buffer: DeliveryBuffer::with_delivered(delivered.clone(), capacity),
            durable: delivered,
            clock,
            epoch: Instant::now(),
            metrics,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn forward(&mut self, ready: Vec<Write>) {
        self.metrics.buffered.set(self.buffer.len() as i64);
        if !ready.is_empty() {
            self.clock.do_send(Deliver { writes: ready });
        }
    }
}

impl Actor for DeliveryBufferActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<Replicate> for DeliveryBufferActor {
    type Result = Result<Ack>;

    fn handle(&mut self, msg: Replicate, _: &mut Self::Context) -> Self::Result {
        let from = msg.from;
        let now = self.now_ms();
        let mut ready = Vec::new();
        let mut refused = None;
        for write in msg.writes {
            log::debug!(
                "node {}: offered {}:{} vc {} from {from}; delivered {}",
                self.me,
                write.origin,
                write.seq,
                write.vc,
                self.buffer.delivered()
            );
            match self.buffer.offer_at(write, now, &mut ready) {
                Ok(Offered::Duplicate) => self.metrics.duplicates.inc(),
                Ok(_) => {}
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        self.forward(ready);
        match refused {
            Some(Error::InvalidInput(reason)) => {
                log::warn!("peer {from} sent an invalid write: {reason}");
                Err(Error::InvalidInput(reason))
            }
            // A full buffer answers 503; the sender backs off and resends.
            Some(e) => Err(e),
            None => Ok(Ack {
                received: self.buffer.received(),
                delivered: self.durable.clone(),
            }),
        }
    }
}

impl Handler<Durable> for DeliveryBufferActor {
    type Result = ();

    fn handle(&mut self, msg: Durable, _: &mut Self::Context) {
        let mut ready = Vec::new();
        // Normally only our own entry moves here (others were delivered by
        // this buffer already); after a snapshot every entry may.
        for k in 0..msg.delivered.len() {
            self.buffer.advance(k, msg.delivered.get(k), &mut ready);
        }
        self.durable.merge(&msg.delivered);
        self.forward(ready);
    }
}

impl Handler<GetBufferView> for DeliveryBufferActor {
    type Result = MessageResult<GetBufferView>;

    fn handle(&mut self, _: GetBufferView, _: &mut Self::Context) -> Self::Result {
        MessageResult(BufferView {
            buffered: self.buffer.len(),
            waiting: self.buffer.waiting(self.now_ms()),
        })
    }
}
