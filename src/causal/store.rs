//! The versioned key-value store and its convergence rule.
//!
//! ## Arbitration (causal+ convergence)
//! Each key holds the single write with the highest *rank*, where
//! `rank(w) = (sum of w's vector clock, w's origin node id)`.
//!
//! * It extends causal order: if `a` happened before `b`, every entry of
//!   `a.vc` is `<=` the matching entry of `b.vc` and at least one is smaller,
//!   so `a.vc.sum() < b.vc.sum()`, and `b` wins. A causally later write always
//!   overwrites.
//! * It is total on distinct writes: two writes with equal sums are
//!   concurrent, and two writes of the same origin are never concurrent, so
//!   equal ranks mean the same write.
//! * Applying a write is `max` under a total order, so the final state is the
//!   same whatever the delivery order and however often a write is applied:
//!   replicas that delivered the same set of writes hold the same values.
//!
//! Losing concurrent writes are dropped (last-writer-wins in a causally
//! consistent sense, as in COPS); they are still counted in the clocks.
//!
//! The store also tracks `applied`, the clock of everything applied so far.
//! Writes reach the store in a causal order, so `applied` is downward closed
//! and equals the node's delivered clock as readers see it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::vclock::VClock;
use super::write::{NodeId, Write};

/// The stored version of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    // Boxed: a million stored versions are 8 bytes each smaller than with a
    // `String` (no spare capacity is kept).
    pub value: Box<str>,
    pub vc: VClock,
    pub origin: NodeId,
}

/// A write's place in the arbitration order: the sum of its vector clock,
/// then its origin. See the module documentation for why it converges.
pub type Rank = (u64, NodeId);

/// The convergence rule, the one place it is written: does a version of
/// rank `challenger` replace the `current` one? The store, the merge of a
/// snapshot and the checkpoint on disk all decide with it.
pub fn beats(challenger: Rank, current: Option<Rank>) -> bool {
    current.is_none_or(|c| challenger > c)
}

impl Versioned {
    pub fn rank(&self) -> Rank {
        (self.vc.sum(), self.origin)
    }

    /// Does this version replace `current` under the convergence rule?
    pub fn beats(&self, current: Option<&Versioned>) -> bool {
        beats(self.rank(), current.map(Versioned::rank))
    }
}

impl From<&Write> for Versioned {
    fn from(w: &Write) -> Self {
        Versioned {
            value: w.value.as_str().into(),
            vc: w.vc.clone(),
            origin: w.origin,
        }
    }
}

impl Write {
    /// Does this write replace `current` under the convergence rule?
    pub fn beats(&self, current: Option<&Versioned>) -> bool {
        beats(self.rank(), current.map(Versioned::rank))
    }
}

/// Keys, their winning versions, and the applied clock.
#[derive(Debug, Clone)]
pub struct Store {
    // A B-tree rather than a hash map: no empty buckets, so about half the
    // memory per key at a million keys, and `/status` comes out sorted.
    map: BTreeMap<Box<str>, Versioned>,
    applied: VClock,
}

impl Store {
    pub fn new(n: usize) -> Self {
        Store {
            map: BTreeMap::new(),
            applied: VClock::zero(n),
        }
    }

    /// Applies a delivered write. Returns true if it became the key's value.
    pub fn apply(&mut self, write: &Write) -> bool {
        if write.seq > self.applied.get(write.origin) {
            self.applied.set(write.origin, write.seq);
        }
        let wins = write.beats(self.map.get(write.key.as_str()));
        if wins {
            self.map
                .insert(write.key.as_str().into(), Versioned::from(write));
        }
        wins
    }

    /// Puts back a version read from storage (recovery).
    pub fn restore(&mut self, key: &str, version: Versioned) {
        self.map.insert(key.into(), version);
    }

    /// Merges a version from a peer's snapshot under the convergence rule.
    pub fn merge_version(&mut self, key: &str, version: Versioned) {
        if version.beats(self.map.get(key)) {
            self.map.insert(key.into(), version);
        }
    }

    /// Sets the applied clock after a recovery.
    pub fn set_applied(&mut self, applied: VClock) {
        self.applied = applied;
    }

    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.map.get(key)
    }

    pub fn applied(&self) -> &VClock {
        &self.applied
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Versioned)> {
        self.map.iter().map(|(k, v)| (&**k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::super::buffer::DeliveryBuffer;
    use super::super::write::test_write as w;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn causally_later_write_wins() {
        let mut store = Store::new(3);
        store.apply(&w(0, &[1, 0, 0], "x", "15"));
        store.apply(&w(1, &[1, 1, 0], "x", "30"));
        assert_eq!(store.get("x").unwrap().value.as_ref(), "30");
        // Re-applying the older one changes nothing.
        assert!(!store.apply(&w(0, &[1, 0, 0], "x", "15")));
        assert_eq!(store.get("x").unwrap().value.as_ref(), "30");
        assert_eq!(store.applied().entries(), &[1, 1, 0]);
    }

    #[test]
    fn concurrent_writes_tie_break_by_sum_then_origin() {
        let a = w(0, &[1, 0, 0], "x", "a");
        let b = w(2, &[0, 0, 1], "x", "b");
        let c = w(1, &[0, 2, 0], "x", "c");
        for order in [[&a, &b, &c], [&c, &b, &a], [&b, &a, &c]] {
            let mut store = Store::new(3);
            for write in order {
                store.apply(write);
            }
            // c has the higher sum (2); between a and b, origin 2 wins.
            assert_eq!(store.get("x").unwrap().value.as_ref(), "c");
        }
        let mut store = Store::new(3);
        store.apply(&a);
        store.apply(&b);
        assert_eq!(store.get("x").unwrap().value.as_ref(), "b");
    }

    proptest! {
        /// Any causal delivery order of the same writes yields the same state,
        /// and the state is exactly the per-key maximum by rank.
        #[test]
        fn any_delivery_order_converges(seed in any::<u64>(), o1 in any::<u64>(), o2 in any::<u64>()) {
            use rand::{rngs::SmallRng, seq::SliceRandom, SeedableRng};
            let writes = super::super::buffer::tests::history(3, 80, seed);
            let run = |order_seed: u64| {
                let mut arrivals = writes.clone();
                arrivals.shuffle(&mut SmallRng::seed_from_u64(order_seed));
                let mut buf = DeliveryBuffer::new(3, 10_000);
                let mut store = Store::new(3);
                let mut out = Vec::new();
                for write in arrivals {
                    buf.offer(write, &mut out).unwrap();
                    for d in out.drain(..) {
                        store.apply(&d);
                    }
                }
                let mut state: Vec<(String, Versioned)> =
                    store.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                state.sort_by(|a, b| a.0.cmp(&b.0));
                (state, store.applied().clone())
            };
            let first = run(o1);
            prop_assert_eq!(&first, &run(o2));
            for (key, version) in &first.0 {
                let best = writes.iter().filter(|w| &w.key == key).max_by_key(|w| w.rank()).unwrap();
                prop_assert_eq!(&*version.value, best.value.as_str());
            }
        }

        /// Arbitration is deterministic and antisymmetric: distinct writes
        /// never tie, and the winner does not depend on application order.
        #[test]
        fn arbitration_is_deterministic(seed in any::<u64>()) {
            let writes = super::super::buffer::tests::history(3, 30, seed);
            for a in &writes {
                for b in &writes {
                    if a != b {
                        prop_assert_ne!(a.rank(), b.rank());
                    }
                    let mut s1 = Store::new(3);
                    let mut s2 = Store::new(3);
                    let (mut x, mut y) = (a.clone(), b.clone());
                    x.key = "k".into();
                    y.key = "k".into();
                    s1.apply(&x); s1.apply(&y);
                    s2.apply(&y); s2.apply(&x);
                    prop_assert_eq!(s1.get("k"), s2.get("k"));
                }
            }
        }
    }
}
