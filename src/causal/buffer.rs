//! The causal delivery buffer.
//!
//! A write `w` from origin `j` with clock `V` is *deliverable* at a node with
//! delivered clock `D` when `V[j] == D[j] + 1` (it is the next write of `j`)
//! and `V[k] <= D[k]` for every `k != j` (everything it depends on is here).
//! Writes that arrive early wait here, in one queue per origin ordered by
//! sequence number.
//!
//! ## Why draining is O(1) amortized
//! Each origin's queue is a ring of slots indexed by sequence number, the
//! front slot being that origin's next write (`delivered[j] + 1`), so an
//! arrival is stored in O(1) and only a queue's front can ever be
//! deliverable. A drain inspects at most one write per origin per round, and
//! each round that finds nothing ends the drain. A
//! drain runs only when an arrival fills the head slot of its origin or when
//! the delivered clock advances (`advance`, for writes delivered elsewhere
//! such as the node's own). Every message is inserted once and removed once;
//! the per-delivery cost is O(n) for a cluster of n nodes, a constant. No
//! timer, no scan of the whole buffer.
//!
//! Duplicates (already delivered, or already waiting) are recognised and
//! dropped, which makes at-least-once replication safe.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::vclock::VClock;
use super::write::{NodeId, Op, Write};
use crate::error::{Error, Result};

/// What happened to an offered write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Already delivered or already waiting: dropped.
    Duplicate,
    /// Waiting for its dependencies.
    Buffered,
    /// Delivered (with possibly others that it unblocked, see `out`).
    Delivered,
}

/// One write, named by its origin and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteId {
    pub origin: NodeId,
    pub seq: u64,
}

/// Why one origin's writes wait (for `/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The origin whose writes wait.
    pub origin: NodeId,
    /// How many of its writes wait.
    pub count: usize,
    /// The first waiting write.
    pub first_seq: u64,
    /// Its key, and the start of its value (for people reading `/status`).
    pub key: String,
    pub value: String,
    /// The write it waits for: a dependency on another node, or its own
    /// predecessor when one of its origin's writes is missing.
    pub blocked_on: WriteId,
    /// How long it has waited, in the caller's milliseconds.
    pub waited_ms: u64,
}

/// Per-origin queues of early writes plus the delivered frontier.
#[derive(Debug, Clone)]
pub struct DeliveryBuffer {
    delivered: VClock,
    /// Per origin `j`, slot `i` holds write `delivered[j] + 1 + i` if it has
    /// arrived, with its arrival time. A full front slot is blocked on
    /// another origin; the last slot is always full.
    pending: Vec<VecDeque<Option<(Write, u64)>>>,
    len: usize,
    capacity: usize,
}

impl DeliveryBuffer {
    /// A buffer for `n` nodes that holds at most `capacity` waiting writes.
    pub fn new(n: usize, capacity: usize) -> Self {
        Self::with_delivered(VClock::zero(n), capacity)
    }

    /// A buffer that starts from an already delivered clock (recovery).
    pub fn with_delivered(delivered: VClock, capacity: usize) -> Self {
        let n = delivered.len();
        DeliveryBuffer {
            delivered,
            pending: (0..n).map(|_| VecDeque::new()).collect(),
            len: 0,
            capacity,
        }
    }

    pub fn delivered(&self) -> &VClock {
        &self.delivered
    }

    /// Number of writes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Per origin, the highest sequence number such that every write up to
    /// it is delivered or waiting here: what a sender need not send again.
    pub fn received(&self) -> VClock {
        let mut received = self.delivered.clone();
        for (j, queue) in self.pending.iter().enumerate() {
            let contiguous = queue.iter().take_while(|slot| slot.is_some()).count();
            received.set(j, received.get(j) + contiguous as u64);
        }
        received
    }

    /// Offers a write. Deliverable writes (this one and any it unblocks) are
    /// appended to `out` in a causal order.
    ///
    /// Fails with `Unavailable` when the buffer is full (the sender retries
    /// later) and `InvalidInput` when the write is malformed.
    pub fn offer(&mut self, write: Write, out: &mut Vec<Write>) -> Result<Offered> {
        self.offer_at(write, 0, out)
    }

    /// Like `offer`, noting that the write arrived at `now_ms` (any
    /// monotonic milliseconds; only `waiting` reads it).
    pub fn offer_at(&mut self, write: Write, now_ms: u64, out: &mut Vec<Write>) -> Result<Offered> {
        write.validate(self.delivered.len())?;
        let origin = write.origin;
        let base = self.delivered.get(origin) + 1;
        if write.seq < base {
            return Ok(Offered::Duplicate);
        }
        let index = (write.seq - base) as usize;
        if matches!(self.pending[origin].get(index), Some(Some(_))) {
            return Ok(Offered::Duplicate);
        }
        if index == 0 && self.deps_satisfied(&write) {
            // The front slot stood for this write; the ring moves on by one.
            self.pending[origin].pop_front();
            self.deliver(write, out);
            self.drain(out);
            return Ok(Offered::Delivered);
        }
        // The slot ring spans from the next expected write to the newest one
        // waiting, so a write far ahead of its origin is refused as well.
        if self.len >= self.capacity || index > self.capacity {
            return Err(Error::unavailable(format!(
                "delivery buffer full ({} writes waiting)",
                self.len
            )));
        }
        let queue = &mut self.pending[origin];
        if queue.len() <= index {
            queue.resize(index + 1, None);
        }
        queue[index] = Some((write, now_ms));
        self.len += 1;
        Ok(Offered::Buffered)
    }

    /// Per origin with waiting writes: how many, the first one, what blocks
    /// it and since when (measured against `now_ms`).
    pub fn waiting(&self, now_ms: u64) -> Vec<Waiting> {
        let mut out = Vec::new();
        for (j, queue) in self.pending.iter().enumerate() {
            let Some((index, (first, arrived))) = queue
                .iter()
                .enumerate()
                .find_map(|(i, slot)| slot.as_ref().map(|s| (i, s)))
            else {
                continue;
            };
            let (origin, seq) = if index > 0 {
                (j, first.seq - index as u64)
            } else {
                (0..self.delivered.len())
                    .find(|&k| k != j && first.vc.get(k) > self.delivered.get(k))
                    .map_or((j, first.seq), |k| (k, first.vc.get(k)))
            };
            out.push(Waiting {
                origin: j,
                count: queue.iter().filter(|s| s.is_some()).count(),
                first_seq: first.seq,
                key: first.ops.first().map_or("", Op::key).to_string(),
                value: summary(&first.ops),
                blocked_on: WriteId { origin, seq },
                waited_ms: now_ms.saturating_sub(*arrived),
            });
        }
        out
    }

    /// Records that `origin`'s write `seq` was delivered by another path (the
    /// node's own writes), then delivers whatever that unblocks.
    pub fn advance(&mut self, origin: NodeId, seq: u64, out: &mut Vec<Write>) {
        if origin >= self.pending.len() {
            // Not a node of this cluster: nothing of it can be delivered.
            return;
        }
        let current = self.delivered.get(origin);
        if seq > current {
            self.delivered.set(origin, seq);
            // Slots at or below the new frontier now hold duplicates.
            if let Some(queue) = self.pending.get_mut(origin) {
                let skip = ((seq - current) as usize).min(queue.len());
                for slot in queue.drain(..skip) {
                    if slot.is_some() {
                        self.len -= 1;
                    }
                }
            }
            self.drain(out);
        }
    }

    fn deps_satisfied(&self, write: &Write) -> bool {
        write
            .vc
            .entries()
            .iter()
            .enumerate()
            .all(|(k, &v)| k == write.origin || v <= self.delivered.get(k))
    }

    fn deliver(&mut self, write: Write, out: &mut Vec<Write>) {
        self.delivered.set(write.origin, write.seq);
        out.push(write);
    }

    /// Delivers front writes until a full round over the origins finds none
    /// ready.
    fn drain(&mut self, out: &mut Vec<Write>) {
        if self.len == 0 {
            return;
        }
        loop {
            let mut progressed = false;
            for j in 0..self.pending.len() {
                while let Some(Some((front, _))) = self.pending[j].front() {
                    if !self.deps_satisfied(front) {
                        break;
                    }
                    if let Some(Some((write, _))) = self.pending[j].pop_front() {
                        self.len -= 1;
                        self.deliver(write, out);
                        progressed = true;
                    }
                }
            }
            if !progressed || self.len == 0 {
                return;
            }
        }
    }
}

/// A short text of a write's operations for `/status`: a put's value (its
/// first 32 characters), an increment as `+3` or `-3`, and how many other
/// operations the write holds.
fn summary(ops: &[Op]) -> String {
    let first = match ops.first() {
        Some(Op::Put { value, .. }) => value.chars().take(32).collect(),
        Some(Op::Incr { by, .. }) => format!("{by:+}"),
        None => String::new(),
    };
    match ops.len() {
        0 | 1 => first,
        more => format!("{first} (and {} more operations)", more - 1),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn w(origin: NodeId, vc: &[u64]) -> Write {
        super::super::write::test_write(origin, vc, &format!("k{origin}"), &format!("{vc:?}"))
    }

    #[test]
    fn early_write_waits_for_its_dependency() {
        let mut buf = DeliveryBuffer::new(3, 100);
        let mut out = Vec::new();
        // Node 1's write depends on node 0's first write.
        let dependent = w(1, &[1, 1, 0]);
        assert_eq!(
            buf.offer(dependent.clone(), &mut out).unwrap(),
            Offered::Buffered
        );
        assert!(out.is_empty());
        assert_eq!(buf.len(), 1);
        let first = w(0, &[1, 0, 0]);
        assert_eq!(
            buf.offer(first.clone(), &mut out).unwrap(),
            Offered::Delivered
        );
        assert_eq!(out, vec![first, dependent]);
        assert!(buf.is_empty());
        assert_eq!(buf.delivered().entries(), &[1, 1, 0]);
    }

    #[test]
    fn gaps_in_one_origin_are_filled_in_order() {
        let mut buf = DeliveryBuffer::new(2, 100);
        let mut out = Vec::new();
        for seq in [3, 2] {
            buf.offer(w(0, &[seq, 0]), &mut out).unwrap();
        }
        assert!(out.is_empty());
        assert_eq!(buf.received().entries(), &[0, 0]);
        buf.offer(w(0, &[1, 0]), &mut out).unwrap();
        let seqs: Vec<u64> = out.iter().map(|w| w.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut buf = DeliveryBuffer::new(2, 100);
        let mut out = Vec::new();
        buf.offer(w(0, &[2, 0]), &mut out).unwrap();
        assert_eq!(
            buf.offer(w(0, &[2, 0]), &mut out).unwrap(),
            Offered::Duplicate
        );
        buf.offer(w(0, &[1, 0]), &mut out).unwrap();
        assert_eq!(
            buf.offer(w(0, &[1, 0]), &mut out).unwrap(),
            Offered::Duplicate
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn waiting_writes_say_what_blocks_them_and_for_how_long() {
        let mut buf = DeliveryBuffer::new(3, 100);
        let mut out = Vec::new();
        // Node 2's write depends on node 1's first write.
        buf.offer_at(w(2, &[0, 1, 1]), 100, &mut out).unwrap();
        // Node 0's third write arrives before its second.
        buf.offer_at(w(0, &[1, 0, 0]), 150, &mut out).unwrap();
        buf.offer_at(w(0, &[3, 0, 0]), 200, &mut out).unwrap();
        let waiting = buf.waiting(512);
        assert_eq!(waiting.len(), 2);
        assert_eq!((waiting[0].origin, waiting[0].first_seq), (0, 3));
        let id = |origin, seq| WriteId { origin, seq };
        assert_eq!(waiting[0].blocked_on, id(0, 2), "its own predecessor");
        assert_eq!(waiting[0].waited_ms, 312);
        assert_eq!((waiting[1].origin, waiting[1].count), (2, 1));
        assert_eq!(waiting[1].blocked_on, id(1, 1));
        assert_eq!(waiting[1].waited_ms, 412);
        assert_eq!(waiting[1].key, "k2");
    }

    #[test]
    fn advance_unblocks_writes_depending_on_own_writes() {
        let mut buf = DeliveryBuffer::new(2, 100);
        let mut out = Vec::new();
        // Peer 1 wrote after seeing our (node 0) first write.
        buf.offer(w(1, &[1, 1]), &mut out).unwrap();
        assert!(out.is_empty());
        buf.advance(0, 1, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn advancing_an_origin_outside_the_cluster_changes_nothing() {
        let mut buf = DeliveryBuffer::new(2, 100);
        let mut out = Vec::new();
        buf.advance(5, 3, &mut out);
        assert!(out.is_empty());
        // Writes of the cluster are still accepted and delivered.
        buf.offer(w(1, &[0, 1]), &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn full_buffer_refuses_but_still_delivers_ready_writes() {
        let mut buf = DeliveryBuffer::new(2, 1);
        let mut out = Vec::new();
        buf.offer(w(0, &[2, 0]), &mut out).unwrap();
        assert!(matches!(
            buf.offer(w(0, &[3, 0]), &mut out),
            Err(Error::Unavailable(_))
        ));
        assert_eq!(
            buf.offer(w(0, &[1, 0]), &mut out).unwrap(),
            Offered::Delivered
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn malformed_writes_are_rejected() {
        let mut buf = DeliveryBuffer::new(2, 10);
        let mut out = Vec::new();
        let mut bad = w(0, &[1, 0]);
        bad.seq = 2;
        assert!(buf.offer(bad, &mut out).is_err());
        assert!(buf.offer(w(0, &[1, 0, 0]), &mut out).is_err());
        assert!(buf.offer(w(0, &[0, 0]), &mut out).is_err());
    }

    /// A random causal history: each step, a random node writes after
    /// having received a random prefix of the others' writes.
    pub(crate) fn history(n: usize, steps: usize, seed: u64) -> Vec<Write> {
        random_history(n, steps, seed, false)
    }

    /// A random causal history of transactions: each write holds one to
    /// three puts and increments on distinct keys.
    pub(crate) fn mixed_history(n: usize, steps: usize, seed: u64) -> Vec<Write> {
        random_history(n, steps, seed, true)
    }

    fn random_history(n: usize, steps: usize, seed: u64, mixed: bool) -> Vec<Write> {
        use rand::{rngs::SmallRng, seq::SliceRandom, Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut clocks: Vec<VClock> = (0..n).map(|_| VClock::zero(n)).collect();
        let mut all: Vec<Write> = Vec::new();
        for i in 0..steps {
            let node = rng.gen_range(0..n);
            // Learn about some of the existing writes (a causally closed set:
            // merge the clocks of a few earlier writes).
            for _ in 0..rng.gen_range(0..3) {
                if !all.is_empty() {
                    let seen = all[rng.gen_range(0..all.len())].vc.clone();
                    clocks[node].merge(&seen);
                }
            }
            let seq = clocks[node].increment(node);
            let ops = if mixed {
                // One to three operations on distinct keys: puts on k0..k3,
                // increments on c0..c2.
                let mut keys: Vec<usize> = (0..7).collect();
                keys.shuffle(&mut rng);
                keys.truncate(rng.gen_range(1..=3));
                keys.into_iter()
                    .map(|k| match k {
                        0..=3 => Op::Put {
                            key: format!("k{k}"),
                            value: format!("v{i}"),
                        },
                        _ => Op::Incr {
                            key: format!("c{}", k - 4),
                            by: rng.gen_range(-5..=9),
                        },
                    })
                    .collect()
            } else {
                vec![Op::Put {
                    key: format!("k{}", rng.gen_range(0..4)),
                    value: format!("v{i}"),
                }]
            };
            all.push(Write {
                origin: node,
                seq,
                vc: clocks[node].clone(),
                ops,
                ts_ms: 0,
            });
        }
        all
    }

    proptest! {
        /// Any arrival order, with duplicates, delivers every write exactly
        /// once, each only after all its dependencies.
        #[test]
        fn delivers_exactly_the_causally_ready(seed in any::<u64>(), order in any::<u64>(), n in 2usize..5) {
            use rand::{rngs::SmallRng, seq::SliceRandom, SeedableRng};
            let writes = history(n, 60, seed);
            let mut arrivals = writes.clone();
            arrivals.extend(writes.iter().take(10).cloned()); // duplicates
            arrivals.shuffle(&mut SmallRng::seed_from_u64(order));

            let mut buf = DeliveryBuffer::new(n, 10_000);
            let mut delivered = Vec::new();
            for write in arrivals {
                buf.offer(write, &mut delivered).unwrap();
            }
            prop_assert_eq!(delivered.len(), writes.len());
            prop_assert!(buf.is_empty());
            let mut seen = VClock::zero(n);
            for write in &delivered {
                // Exactly the causal delivery condition, at the moment of delivery.
                prop_assert_eq!(write.seq, seen.get(write.origin) + 1);
                for k in 0..n {
                    if k != write.origin {
                        prop_assert!(write.vc.get(k) <= seen.get(k));
                    }
                }
                seen.set(write.origin, write.seq);
            }
        }
    }
}
