//! Vector clocks.
//!
//! A `VClock` has one entry per node of the cluster, in `NODE_ID` order.
//! Entry `k` counts the writes originated by node `k` that the clock covers.
//! Because delivery is causal, a node's *delivered* clock is always a
//! downward-closed set of writes: entry `k = n` means writes 1..=n of node
//! `k` have all been delivered.
//!
//! The partial order is the usual one: `a <= b` iff every entry of `a` is at
//! most the matching entry of `b`. `merge` is the pointwise maximum, which
//! makes clocks a join-semilattice (commutative, associative, idempotent;
//! property-tested below).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How two clocks relate in the causal partial order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Before,
    After,
    Equal,
    Concurrent,
}

/// A vector clock with one entry per node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VClock(Box<[u64]>);

impl VClock {
    /// The zero clock for a cluster of `n` nodes.
    pub fn zero(n: usize) -> Self {
        VClock(vec![0; n].into_boxed_slice())
    }

    pub fn from_vec(entries: Vec<u64>) -> Self {
        VClock(entries.into_boxed_slice())
    }

    /// Grows the clock to `n` entries (rare: clocks of one cluster have one
    /// length; the boxed slice keeps every stored version 8 bytes smaller).
    fn grow(&mut self, n: usize) {
        if n > self.0.len() {
            let mut entries = std::mem::take(&mut self.0).into_vec();
            entries.resize(n, 0);
            self.0 = entries.into_boxed_slice();
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn entries(&self) -> &[u64] {
        &self.0
    }

    /// Entry `k`, or 0 if the clock has no such entry.
    pub fn get(&self, k: usize) -> u64 {
        self.0.get(k).copied().unwrap_or(0)
    }

    /// Sets entry `k`, growing the clock if needed.
    pub fn set(&mut self, k: usize, value: u64) {
        self.grow(k + 1);
        self.0[k] = value;
    }

    /// Increments entry `k` and returns its new value.
    pub fn increment(&mut self, k: usize) -> u64 {
        let next = self.get(k) + 1;
        self.set(k, next);
        next
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VClock) {
        self.grow(other.0.len());
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// `self <= other` in the causal partial order.
    pub fn le(&self, other: &VClock) -> bool {
        let n = self.0.len().max(other.0.len());
        (0..n).all(|k| self.get(k) <= other.get(k))
    }

    /// The sum of all entries: a Lamport-style scalar that strictly grows
    /// along causal order (if `a < b` then `a.sum() < b.sum()`).
    ///
    /// Saturates rather than overflowing: no real cluster comes near
    /// `u64::MAX` writes, but a clock from a faulty peer must not panic.
    pub fn sum(&self) -> u64 {
        self.0.iter().fold(0u64, |acc, &v| acc.saturating_add(v))
    }

    pub fn compare(&self, other: &VClock) -> Causality {
        match (self.le(other), other.le(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (false, false) => Causality::Concurrent,
        }
    }
}

/// The `Causal-Context` header form: `3,0,1`.
impl fmt::Display for VClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl FromStr for VClock {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::invalid("empty vector clock"));
        }
        s.split(',')
            .map(|part| {
                part.trim().parse::<u64>().map_err(|_| {
                    Error::invalid(format!(
                        "invalid vector clock {s:?}: expected comma-separated integers"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(VClock::from_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clock(n: usize) -> impl Strategy<Value = VClock> {
        proptest::collection::vec(0u64..20, n).prop_map(VClock::from_vec)
    }

    #[test]
    fn sum_saturates_instead_of_overflowing() {
        let c = VClock::from_vec(vec![u64::MAX, 5, 1]);
        assert_eq!(c.sum(), u64::MAX);
    }

    #[test]
    fn compare_classifies_pairs() {
        let a = VClock::from_vec(vec![1, 0, 0]);
        let b = VClock::from_vec(vec![1, 1, 0]);
        let c = VClock::from_vec(vec![0, 0, 1]);
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(a.compare(&a.clone()), Causality::Equal);
        assert_eq!(b.compare(&c), Causality::Concurrent);
    }

    #[test]
    fn header_form_round_trips_and_rejects_garbage() {
        let v: VClock = "3,0,1".parse().unwrap();
        assert_eq!(v.entries(), &[3, 0, 1]);
        assert_eq!(v.to_string(), "3,0,1");
        for bad in ["", "1,,2", "a,b", "-1,0", "1.5"] {
            assert!(bad.parse::<VClock>().is_err(), "{bad:?} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in clock(4), b in clock(4)) {
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(ab, ba);
        }

        #[test]
        fn merge_is_associative(a in clock(4), b in clock(4), c in clock(4)) {
            let mut left = a.clone(); left.merge(&b); left.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut right = a.clone(); right.merge(&bc);
            prop_assert_eq!(left, right);
        }

        #[test]
        fn merge_is_idempotent_and_an_upper_bound(a in clock(4), b in clock(4)) {
            let mut aa = a.clone(); aa.merge(&a);
            prop_assert_eq!(&aa, &a);
            let mut ab = a.clone(); ab.merge(&b);
            prop_assert!(a.le(&ab) && b.le(&ab));
        }

        #[test]
        fn sum_is_strictly_monotone_in_causal_order(a in clock(4), b in clock(4)) {
            if a.compare(&b) == Causality::Before {
                prop_assert!(a.sum() < b.sum());
            }
        }
    }
}
