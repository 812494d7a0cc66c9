//! The versioned key-value store and its convergence rules.
//!
//! A key holds a *register* (a string value, last writer wins) or a
//! *counter* (a PN-counter, every increment counts). Both merge as a
//! join: applying writes or merging versions in any order, any number of
//! times, gives the same state, so replicas that delivered the same writes
//! hold the same values.
//!
//! ## Registers (causal+ convergence)
//! Each register holds the single put with the highest *rank*, where
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
//!   same whatever the delivery order and however often a write is applied.
//!
//! Losing concurrent writes are dropped (last-writer-wins in a causally
//! consistent sense, as in COPS); they are still counted in the clocks.
//!
//! ## Counters (PN-counters)
//! A counter keeps, per origin node, the sum of that node's increments, the
//! sum of its decrements, and the sequence number of the last of its writes
//! that touched the counter. Its total is all increments minus all
//! decrements. An increment of origin `o` with sequence number `s` is added
//! only if `s` is beyond the counter's entry for `o`: a node's writes are
//! applied in sequence order, so the entry is always a prefix of that node's
//! increments, and applying the same write twice (a replayed log, a
//! snapshot that already covers it) changes nothing. Two counter states
//! merge by taking, per origin, the entry with the higher sequence number.
//! Concurrent increments at different nodes land in different entries, so
//! none is lost. A counter's clock is the join of its increments' clocks.
//!
//! ## Registers against counters
//! The origin refuses a put on a counter key and an increment on a register
//! key (409), but two nodes may still create the same key concurrently with
//! different types. The counter then wins, whatever the order: a put never
//! replaces a counter, and an increment turns a register into a counter.
//! That keeps the merge a join (the counter sits above every register).
//!
//! ## Atomic writes
//! [`Store::apply`] applies all the operations of one write at once. A
//! transaction is one write, so a reader of the store sees either none of
//! its operations or all of them (or versions that have since won over
//! them): never some of its keys and not others.
//!
//! The store also tracks `applied`, the clock of everything applied so far.
//! Writes reach the store in a causal order, so `applied` is downward closed
//! and equals the node's delivered clock as readers see it.

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;
use std::collections::BTreeMap;

use ref_cast::RefCast;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::vclock::VClock;
use super::write::{NodeId, Op, Write};
use crate::error::{Error, Result};

/// A PN-counter: per origin, `(increments, decrements, last seq)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PnCounter {
    /// Indexed by origin; missing entries are zero.
    slots: Vec<(u64, u64, u64)>,
}

impl PnCounter {
    /// Adds the increment `by` of write `origin:seq`, unless the counter
    /// already holds that write. Returns whether it changed.
    pub fn apply(&mut self, origin: NodeId, seq: u64, by: i64) -> bool {
        if self.slots.len() <= origin {
            self.slots.resize(origin + 1, (0, 0, 0));
        }
        let slot = &mut self.slots[origin];
        if seq <= slot.2 {
            return false;
        }
        if by >= 0 {
            slot.0 = slot.0.saturating_add(by.unsigned_abs());
        } else {
            slot.1 = slot.1.saturating_add(by.unsigned_abs());
        }
        slot.2 = seq;
        true
    }

    /// Joins another state of the same counter: per origin, the entry of
    /// the later write. Returns whether anything changed.
    pub fn merge(&mut self, other: &PnCounter) -> bool {
        if self.slots.len() < other.slots.len() {
            self.slots.resize(other.slots.len(), (0, 0, 0));
        }
        let mut changed = false;
        for (mine, theirs) in self.slots.iter_mut().zip(&other.slots) {
            if theirs.2 > mine.2 {
                *mine = *theirs;
                changed = true;
            }
        }
        changed
    }

    /// All increments minus all decrements.
    pub fn total(&self) -> i128 {
        self.slots
            .iter()
            .map(|&(p, n, _)| i128::from(p) - i128::from(n))
            .sum()
    }

    /// The lowest origin with an increment here (what a counter version
    /// names as its origin: the same at every replica).
    pub fn first_origin(&self) -> NodeId {
        self.slots.iter().position(|s| s.2 > 0).unwrap_or(0)
    }

    /// The per-origin entries `(increments, decrements, last seq)`.
    pub fn slots(&self) -> &[(u64, u64, u64)] {
        &self.slots
    }
}

/// What a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    // Boxed: a million stored versions are 8 bytes each smaller than with a
    // `String` (no spare capacity is kept); the enum is no larger than the
    // box of the register's text.
    Register(Box<str>),
    Counter(Box<PnCounter>),
}

impl Value {
    /// A register's text, or a counter's total in decimal.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Value::Register(v) => Cow::Borrowed(v),
            Value::Counter(c) => Cow::Owned(c.total().to_string()),
        }
    }

    pub fn is_counter(&self) -> bool {
        matches!(self, Value::Counter(_))
    }
}

/// The kind of a key, for type checks and for clients (`"type"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register,
    Counter,
}

impl Kind {
    pub fn of(op: &Op) -> Kind {
        if op.is_incr() {
            Kind::Counter
        } else {
            Kind::Register
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Counter => "counter",
        }
    }
}

/// The stored version of one key.
///
/// For a register, `vc` and `origin` are those of the put that holds it.
/// For a counter, `vc` is the join of its increments' clocks and `origin`
/// the lowest node with an increment in it (kept only so that every version
/// names a node; nothing orders counters by it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Value,
    pub vc: VClock,
    pub origin: NodeId,
}

/// The stored encoding of a version: a register keeps the shape of earlier
/// versions (`value`), a counter stores its entries (`counter`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionedRepr {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    counter: Option<PnCounter>,
    vc: VClock,
    origin: NodeId,
}

impl Serialize for Versioned {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Register<'a> {
            value: &'a str,
            vc: &'a VClock,
            origin: NodeId,
        }
        #[derive(Serialize)]
        struct Counter<'a> {
            counter: &'a PnCounter,
            vc: &'a VClock,
            origin: NodeId,
        }
        match &self.value {
            Value::Register(value) => Register {
                value,
                vc: &self.vc,
                origin: self.origin,
            }
            .serialize(s),
            Value::Counter(counter) => Counter {
                counter,
                vc: &self.vc,
                origin: self.origin,
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Versioned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = VersionedRepr::deserialize(d)?;
        let value = match (r.value, r.counter) {
            (Some(v), None) => Value::Register(v.into()),
            (None, Some(c)) => Value::Counter(Box::new(c)),
            _ => {
                return Err(serde::de::Error::custom(
                    "a version has either \"value\" or \"counter\"",
                ))
            }
        };
        Ok(Versioned {
            value,
            vc: r.vc,
            origin: r.origin,
        })
    }
}

/// A write's place in the arbitration order: the sum of its vector clock,
/// then its origin. See the module documentation for why it converges.
pub type Rank = (u64, NodeId);

/// The register rule, the one place it is written: does a version of rank
/// `challenger` replace the `current` one?
pub fn beats(challenger: Rank, current: Option<Rank>) -> bool {
    current.is_none_or(|c| challenger > c)
}

impl Versioned {
    /// A register version.
    pub fn register(value: &str, vc: VClock, origin: NodeId) -> Self {
        Versioned {
            value: Value::Register(value.into()),
            vc,
            origin,
        }
    }

    pub fn rank(&self) -> Rank {
        (self.vc.sum(), self.origin)
    }

    pub fn kind(&self) -> Kind {
        match self.value {
            Value::Register(_) => Kind::Register,
            Value::Counter(_) => Kind::Counter,
        }
    }

    /// Joins `other` into `current` under the convergence rules (see the
    /// module documentation). Returns whether `current` changed.
    pub fn join(current: &mut Option<Versioned>, other: &Versioned) -> bool {
        match current {
            Some(mine) => mine.join_with(other),
            None => {
                *current = Some(other.clone());
                true
            }
        }
    }

    /// Joins `other` into this version. Returns whether it changed.
    pub fn join_with(&mut self, other: &Versioned) -> bool {
        match (&mut self.value, &other.value) {
            (Value::Counter(a), Value::Counter(b)) => {
                let changed = a.merge(b);
                self.origin = a.first_origin();
                let covered = other.vc.le(&self.vc);
                self.vc.merge(&other.vc);
                changed || !covered
            }
            (Value::Counter(_), Value::Register(_)) => false,
            (Value::Register(_), Value::Counter(_)) => {
                *self = other.clone();
                true
            }
            (Value::Register(_), Value::Register(_)) => {
                let wins = beats(other.rank(), Some(self.rank()));
                if wins {
                    *self = other.clone();
                }
                wins
            }
        }
    }

    /// The version operation `op` of write `w` creates on an absent key.
    pub fn from_op(w: &Write, op: &Op) -> Versioned {
        match op {
            Op::Put { value, .. } => Versioned::register(value, w.vc.clone(), w.origin),
            Op::Incr { by, .. } => {
                let mut counter = PnCounter::default();
                counter.apply(w.origin, w.seq, *by);
                Versioned {
                    value: Value::Counter(Box::new(counter)),
                    vc: w.vc.clone(),
                    origin: w.origin,
                }
            }
        }
    }

    /// Applies operation `op` of write `w` to this version. Returns whether
    /// it changed.
    pub fn apply_op(&mut self, w: &Write, op: &Op) -> bool {
        match (op, &mut self.value) {
            (Op::Put { value, .. }, Value::Register(_)) => {
                let wins = beats(w.rank(), Some(self.rank()));
                if wins {
                    *self = Versioned::register(value, w.vc.clone(), w.origin);
                }
                wins
            }
            // A counter wins over a register (see above).
            (Op::Put { .. }, Value::Counter(_)) => false,
            (Op::Incr { .. }, Value::Register(_)) => {
                *self = Versioned::from_op(w, op);
                true
            }
            (Op::Incr { by, .. }, Value::Counter(counter)) => {
                let changed = counter.apply(w.origin, w.seq, *by);
                if changed {
                    self.origin = counter.first_origin();
                    self.vc.merge(&w.vc);
                }
                changed
            }
        }
    }

    /// Applies operation `op` of write `w` to `current` (the key's version,
    /// if any). Returns whether it changed.
    pub fn apply_to(current: &mut Option<Versioned>, w: &Write, op: &Op) -> bool {
        match current {
            Some(mine) => mine.apply_op(w, op),
            None => {
                *current = Some(Versioned::from_op(w, op));
                true
            }
        }
    }
}

/// A key as the store's B-tree compares it: in the order of `str` (byte by
/// byte), eight bytes at a time. Keys often share a long prefix (`user:`,
/// `key0000`), and the B-tree compares a looked-up key with a dozen or
/// more stored ones; a `memcmp` call for each of them was a tenth of a
/// replica's CPU under puts.
#[derive(Debug, PartialEq, Eq, RefCast)]
#[repr(transparent)]
struct KeyStr(str);

impl KeyStr {
    fn of(key: &str) -> &KeyStr {
        KeyStr::ref_cast(key)
    }
}

impl Ord for KeyStr {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_bytes(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl PartialOrd for KeyStr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An owned key of the store (see [`KeyStr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key(Box<str>);

impl Borrow<KeyStr> for Key {
    fn borrow(&self) -> &KeyStr {
        KeyStr::of(&self.0)
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        KeyStr::of(&self.0).cmp(KeyStr::of(&other.0))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Lexicographic order of byte strings (as `[u8]`'s `Ord`), comparing
/// big-endian words of eight bytes, then the rest byte by byte, then the
/// lengths.
fn compare_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let (words_a, words_b) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let (rest_a, rest_b) = (words_a.remainder(), words_b.remainder());
    for (x, y) in words_a.zip(words_b) {
        let (x, y) = (word(x), word(y));
        if x != y {
            return x.cmp(&y);
        }
    }
    for (x, y) in rest_a.iter().zip(rest_b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Eight bytes as a big-endian word, so that words compare as the bytes do.
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    u64::from_be_bytes(w)
}

/// Keys, their winning versions, and the applied clock.
#[derive(Debug, Clone)]
pub struct Store {
    // A B-tree rather than a hash map: no empty buckets, so about half the
    // memory per key at a million keys, and `/status` comes out sorted.
    map: BTreeMap<Key, Versioned>,
    applied: VClock,
}

impl Store {
    pub fn new(n: usize) -> Self {
        Store {
            map: BTreeMap::new(),
            applied: VClock::zero(n),
        }
    }

    /// Applies a delivered write, all its operations at once. Returns
    /// whether any key changed.
    pub fn apply(&mut self, write: &Write) -> bool {
        if write.seq > self.applied.get(write.origin) {
            self.applied.set(write.origin, write.seq);
        }
        let mut changed = false;
        for op in &write.ops {
            changed |= match self.map.get_mut(KeyStr::of(op.key())) {
                Some(existing) => existing.apply_op(write, op),
                None => {
                    self.map
                        .insert(Key(op.key().into()), Versioned::from_op(write, op));
                    true
                }
            };
        }
        changed
    }

    /// Puts back a version read from storage (recovery).
    pub fn restore(&mut self, key: &str, version: Versioned) {
        self.map.insert(Key(key.into()), version);
    }

    /// Merges a version from a peer's snapshot under the convergence rules.
    pub fn merge_version(&mut self, key: &str, version: Versioned) {
        match self.map.get_mut(KeyStr::of(key)) {
            Some(existing) => {
                existing.join_with(&version);
            }
            None => {
                self.map.insert(Key(key.into()), version);
            }
        }
    }

    /// Refuses operations on keys of the other kind (409): a put on a
    /// counter, an increment on a register.
    pub fn check_kinds<'a>(&self, ops: impl IntoIterator<Item = &'a Op>) -> Result<()> {
        for op in ops {
            if let Some(v) = self.map.get(KeyStr::of(op.key())) {
                let (want, have) = (Kind::of(op), v.kind());
                if want != have {
                    return Err(Error::Conflict(format!(
                        "key {:?} is a {}; {} works only on a {}",
                        op.key(),
                        have.name(),
                        if op.is_incr() {
                            "an increment"
                        } else {
                            "a put"
                        },
                        want.name()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Sets the applied clock after a recovery.
    pub fn set_applied(&mut self, applied: VClock) {
        self.applied = applied;
    }

    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.map.get(KeyStr::of(key))
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
        self.map.iter().map(|(k, v)| (&*k.0, v))
    }
}

#[cfg(test)]
mod tests {
    use super::super::buffer::DeliveryBuffer;
    use super::super::write::{test_ops, test_write as w};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn causally_later_write_wins() {
        let mut store = Store::new(3);
        store.apply(&w(0, &[1, 0, 0], "x", "15"));
        store.apply(&w(1, &[1, 1, 0], "x", "30"));
        assert_eq!(store.get("x").unwrap().value.text(), "30");
        // Re-applying the older one changes nothing.
        assert!(!store.apply(&w(0, &[1, 0, 0], "x", "15")));
        assert_eq!(store.get("x").unwrap().value.text(), "30");
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
            assert_eq!(store.get("x").unwrap().value.text(), "c");
        }
        let mut store = Store::new(3);
        store.apply(&a);
        store.apply(&b);
        assert_eq!(store.get("x").unwrap().value.text(), "b");
    }

    proptest! {
        /// Any causal delivery order of the same writes yields the same state,
        /// and the state is exactly the per-key maximum by rank.
        #[test]
        fn any_delivery_order_converges(seed in any::<u64>(), o1 in any::<u64>(), o2 in any::<u64>()) {
            let writes = super::super::buffer::tests::history(3, 80, seed);
            let run = |order_seed| deliver_shuffled(&writes, order_seed, |_| Ok(())).map(|s| state(&s));
            let first = run(o1)?;
            prop_assert_eq!(&first, &run(o2)?);
            for (key, version) in &first.0 {
                let best = writes.iter().filter(|w| w.ops[0].key() == key).max_by_key(|w| w.rank()).unwrap();
                prop_assert_eq!(version.value.text(), best.single_put().unwrap().1);
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
                    for w in [&mut x, &mut y] {
                        if let Op::Put { key, .. } = &mut w.ops[0] {
                            *key = "k".into();
                        }
                    }
                    s1.apply(&x); s1.apply(&y);
                    s2.apply(&y); s2.apply(&x);
                    prop_assert_eq!(s1.get("k"), s2.get("k"));
                }
            }
        }
    }

    fn incr(key: &str, by: i64) -> Op {
        Op::Incr {
            key: key.into(),
            by,
        }
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn concurrent_increments_all_count_and_replays_change_nothing() {
        let a = test_ops(0, &[1, 0], vec![incr("c", 5)]);
        let b = test_ops(1, &[0, 1], vec![incr("c", -2)]);
        let a2 = test_ops(0, &[2, 1], vec![incr("c", 10)]);
        for order in [[&a, &b, &a2], [&b, &a, &a2]] {
            let mut store = Store::new(2);
            for write in order {
                assert!(store.apply(write));
            }
            // Replaying any of them (a log replayed over a checkpoint)
            // counts nothing twice.
            assert!(!store.apply(&a) && !store.apply(&b));
            let v = store.get("c").unwrap();
            assert_eq!(v.value.text(), "13");
            assert_eq!(v.kind(), Kind::Counter);
            assert_eq!(v.vc, VClock::from_vec(vec![2, 1]), "join of the clocks");
        }
    }

    #[test]
    fn a_counter_wins_over_a_concurrent_register_in_any_order() {
        let p = test_ops(0, &[1, 0], vec![put("x", "text")]);
        let i = test_ops(1, &[0, 1], vec![incr("x", 4)]);
        for order in [[&p, &i], [&i, &p]] {
            let mut store = Store::new(2);
            for write in order {
                store.apply(write);
            }
            assert_eq!(store.get("x").unwrap().value.text(), "4");
        }
    }

    #[test]
    fn kinds_are_checked_per_operation() {
        let mut store = Store::new(1);
        store.apply(&test_ops(0, &[1], vec![put("r", "1"), incr("c", 1)]));
        assert!(store
            .check_kinds(&[put("r", "2"), incr("c", 1), put("new", "x")])
            .is_ok());
        assert!(
            matches!(store.check_kinds(&[put("c", "2")]), Err(Error::Conflict(m)) if m.contains("counter"))
        );
        assert!(matches!(
            store.check_kinds(&[incr("r", 1)]),
            Err(Error::Conflict(_))
        ));
    }

    #[test]
    fn versions_keep_their_encoding_and_counters_round_trip() {
        let register: Versioned =
            serde_json::from_str(r#"{"value":"v","vc":[1,0],"origin":0}"#).unwrap();
        assert_eq!(register.value.text(), "v");
        let mut store = Store::new(2);
        store.apply(&test_ops(1, &[0, 3], vec![incr("c", -7)]));
        let counter = store.get("c").unwrap();
        let json = serde_json::to_string(counter).unwrap();
        assert_eq!(
            json,
            r#"{"counter":[[0,0,0],[0,7,3]],"vc":[0,3],"origin":1}"#
        );
        assert_eq!(&serde_json::from_str::<Versioned>(&json).unwrap(), counter);
        let both = r#"{"value":"v","counter":[],"vc":[1,0],"origin":0}"#;
        assert!(serde_json::from_str::<Versioned>(both).is_err());
    }

    /// The state of a store: every key's version, sorted, and the clock.
    fn state(store: &Store) -> (Vec<(String, Versioned)>, VClock) {
        let entries = store
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        (entries, store.applied().clone())
    }

    proptest! {
        /// Transactions of puts and increments: any arrival order gives the
        /// same registers and counters, every counter's total is the sum of
        /// all its increments, and merging the stores of two replicas (as a
        /// snapshot does) changes neither.
        #[test]
        fn any_delivery_order_gives_the_same_registers_and_counters(
            seed in any::<u64>(), o1 in any::<u64>(), o2 in any::<u64>()
        ) {
            let writes = super::super::buffer::tests::mixed_history(3, 80, seed);
            let run = |order_seed| deliver_shuffled(&writes, order_seed, |_| Ok(()));
            let (s1, s2) = (run(o1)?, run(o2)?);
            prop_assert_eq!(state(&s1), state(&s2));
            for c in 0..3 {
                let key = format!("c{c}");
                let sum: i128 = writes
                    .iter()
                    .flat_map(|w| &w.ops)
                    .filter_map(|op| match op {
                        Op::Incr { key: k, by } if *k == key => Some(i128::from(*by)),
                        _ => None,
                    })
                    .sum();
                let total = s1.get(&key).map_or(0, |v| match &v.value {
                    Value::Counter(c) => c.total(),
                    Value::Register(_) => i128::MAX,
                });
                prop_assert_eq!(total, sum);
            }
            let mut merged = s1.clone();
            for (k, v) in s2.iter() {
                merged.merge_version(k, v.clone());
            }
            prop_assert_eq!(state(&merged), state(&s1));
        }

        /// A transaction is never partly visible: after every delivery, in
        /// any arrival order, each transaction has either none of its puts
        /// and increments in the store or all of them (a key may hold a
        /// register that has since won over its put, never an older one).
        #[test]
        fn a_transaction_is_never_partly_visible(seed in any::<u64>(), order in any::<u64>()) {
            let writes = super::super::buffer::tests::mixed_history(3, 60, seed);
            deliver_shuffled(&writes, order, |store| {
                for w in &writes {
                    let applied = store.applied().get(w.origin) >= w.seq;
                    for op in &w.ops {
                        if applied {
                            prop_assert!(includes(store, w, op), "{}:{} applied without {:?}", w.origin, w.seq, op);
                        } else {
                            prop_assert!(!shows(store, w, op), "{}:{} not applied but {:?} shows", w.origin, w.seq, op);
                        }
                    }
                }
                Ok(())
            })?;
        }
    }

    /// `writes` offered to a delivery buffer in an order shuffled by
    /// `order_seed`, every delivered write applied to a new store; `each`
    /// sees the store after every arrival.
    fn deliver_shuffled(
        writes: &[Write],
        order_seed: u64,
        mut each: impl FnMut(&Store) -> Result<(), TestCaseError>,
    ) -> Result<Store, TestCaseError> {
        use rand::{rngs::SmallRng, seq::SliceRandom, SeedableRng};
        let mut arrivals = writes.to_vec();
        arrivals.shuffle(&mut SmallRng::seed_from_u64(order_seed));
        let mut buf = DeliveryBuffer::new(3, 10_000);
        let mut store = Store::new(3);
        let mut out = Vec::new();
        for write in arrivals {
            buf.offer(write, &mut out).unwrap();
            for d in out.drain(..) {
                store.apply(&d);
            }
            each(&store)?;
        }
        Ok(store)
    }

    /// Whether the store holds operation `op` of write `w` or something that
    /// has won over it: a counter entry at or past the write, a register at
    /// or past its rank, a counter where it put a register.
    fn includes(store: &Store, w: &Write, op: &Op) -> bool {
        match (op, store.get(op.key()).map(|v| (&v.value, v))) {
            (_, None) => false,
            (Op::Incr { .. }, Some((Value::Counter(c), _))) => {
                c.slots().get(w.origin).is_some_and(|s| s.2 >= w.seq)
            }
            (Op::Incr { .. }, Some((Value::Register(_), _))) => false,
            (Op::Put { .. }, Some((Value::Register(_), v))) => v.rank() >= w.rank(),
            (Op::Put { .. }, Some((Value::Counter(_), _))) => true,
        }
    }

    /// Whether the store shows operation `op` of write `w` itself.
    fn shows(store: &Store, w: &Write, op: &Op) -> bool {
        match (op, store.get(op.key()).map(|v| (&v.value, v))) {
            (_, None) => false,
            (Op::Incr { .. }, Some((Value::Counter(c), _))) => {
                c.slots().get(w.origin).is_some_and(|s| s.2 >= w.seq)
            }
            (Op::Put { .. }, Some((Value::Register(_), v))) => v.vc == w.vc && v.origin == w.origin,
            _ => false,
        }
    }

    proptest! {
        /// The store's key order is `str`'s: byte strings with long shared
        /// prefixes, every length around the eight-byte words, and bytes at
        /// both ends of the range (a zero byte against a shorter key).
        #[test]
        fn keys_compare_as_byte_strings(
            prefix in proptest::collection::vec(prop_oneof![Just(0u8), Just(255u8), any::<u8>()], 0..20),
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(255u8), any::<u8>()], 0..12),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(255u8), any::<u8>()], 0..12),
        ) {
            let a: Vec<u8> = prefix.iter().chain(&a).copied().collect();
            let b: Vec<u8> = prefix.iter().chain(&b).copied().collect();
            prop_assert_eq!(compare_bytes(&a, &b), a.cmp(&b));
            prop_assert_eq!(compare_bytes(&b, &a), b.cmp(&a));
            prop_assert_eq!(compare_bytes(&a, &a), Ordering::Equal);
        }

        /// A store's keys come out in `str` order, and every key is found.
        #[test]
        fn the_store_lists_keys_in_str_order(keys in proptest::collection::btree_set("[a-c\\x00]{0,18}", 0..60)) {
            let mut store = Store::new(1);
            for (i, key) in keys.iter().enumerate() {
                store.apply(&Write {
                    origin: 0,
                    seq: i as u64 + 1,
                    vc: VClock::from_vec(vec![i as u64 + 1]),
                    ops: vec![Op::Put { key: key.clone(), value: "v".into() }],
                    ts_ms: 0,
                });
            }
            let listed: Vec<&str> = store.iter().map(|(k, _)| k).collect();
            let sorted: Vec<&str> = keys.iter().map(String::as_str).collect();
            prop_assert_eq!(listed, sorted);
            for key in &keys {
                prop_assert!(store.get(key).is_some(), "{:?} not found", key);
            }
            prop_assert!(store.get("d").is_none());
        }
    }
}
