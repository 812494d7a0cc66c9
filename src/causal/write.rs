//! The replicated unit: one write, stamped with its vector clock, carrying
//! one or more operations.
//!
//! A client's `/put` is a write of one [`Op::Put`]; a transaction's writes
//! and increments are one write of several operations. Everything the
//! protocol does (stamping, delivery, group commit, logging, replication)
//! handles a write as a whole, and the store applies all of a write's
//! operations in one step: that is why a transaction is never seen half
//! applied, at any replica.
//!
//! ## Encoding
//! A write of a single put keeps the flat shape every earlier version
//! wrote to the log and sent to peers (`"key"` and `"value"` beside the
//! clock); any other write lists its `"ops"`. Both shapes decode, so
//! existing logs replay unchanged, and single puts stay as compact as they
//! were.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize, Serializer};

use super::vclock::VClock;
use crate::error::{Error, Result};

/// A node's index in the cluster (`NODE_ID`), 0-based.
pub type NodeId = usize;

/// One operation of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    /// Set a register key (last writer wins, in causal+ order).
    Put { key: String, value: String },
    /// Add `by` (possibly negative) to a counter key (a PN-counter: every
    /// increment counts, whatever the delivery order).
    Incr { key: String, by: i64 },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Incr { key, .. } => key,
        }
    }

    /// Whether the operation works on a counter.
    pub fn is_incr(&self) -> bool {
        matches!(self, Op::Incr { .. })
    }

    /// Bytes of its key and value (an increment counts 8), for limits and
    /// batch sizes.
    pub fn size(&self) -> usize {
        match self {
            Op::Put { key, value } => key.len() + value.len(),
            Op::Incr { key, .. } => key.len() + 8,
        }
    }
}

/// A write as it is stored, logged and replicated.
///
/// `origin` wrote it as its `seq`-th write; `vc` is the origin's delivered
/// clock right after the write, so `vc[origin] == seq` and `vc[k]` for
/// `k != origin` lists the writes of `k` this one causally depends on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WriteRepr")]
pub struct Write {
    pub origin: NodeId,
    pub seq: u64,
    pub vc: VClock,
    /// At least one, each on a different key.
    pub ops: Vec<Op>,
    /// Origin's wall clock at write time, milliseconds since the Unix epoch.
    /// Used only to measure delivery delay; never for ordering.
    pub ts_ms: u64,
}

/// Both encodings of a write (see the module documentation).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteRepr {
    origin: NodeId,
    seq: u64,
    vc: VClock,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    ops: Option<Vec<Op>>,
    ts_ms: u64,
}

impl TryFrom<WriteRepr> for Write {
    type Error = String;

    fn try_from(r: WriteRepr) -> std::result::Result<Self, String> {
        let ops = match (r.key, r.value, r.ops) {
            (Some(key), Some(value), None) => vec![Op::Put { key, value }],
            (None, None, Some(ops)) => ops,
            _ => return Err("a write has either \"key\" and \"value\", or \"ops\"".into()),
        };
        Ok(Write {
            origin: r.origin,
            seq: r.seq,
            vc: r.vc,
            ops,
            ts_ms: r.ts_ms,
        })
    }
}

impl Serialize for Write {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            origin: NodeId,
            seq: u64,
            vc: &'a VClock,
            key: &'a str,
            value: &'a str,
            ts_ms: u64,
        }
        #[derive(Serialize)]
        struct Multi<'a> {
            origin: NodeId,
            seq: u64,
            vc: &'a VClock,
            ops: &'a [Op],
            ts_ms: u64,
        }
        match self.ops.as_slice() {
            [Op::Put { key, value }] => Flat {
                origin: self.origin,
                seq: self.seq,
                vc: &self.vc,
                key,
                value,
                ts_ms: self.ts_ms,
            }
            .serialize(s),
            ops => Multi {
                origin: self.origin,
                seq: self.seq,
                vc: &self.vc,
                ops,
                ts_ms: self.ts_ms,
            }
            .serialize(s),
        }
    }
}

/// Checks the operations of one write: at least one, no empty key, no key
/// twice (a write's operations are applied together, so two on one key
/// would have no meaning).
pub fn validate_ops(ops: &[Op]) -> Result<()> {
    if ops.is_empty() {
        return Err(Error::invalid("a write needs at least one operation"));
    }
    let mut seen = BTreeSet::new();
    for op in ops {
        if op.key().is_empty() {
            return Err(Error::invalid("write with empty key"));
        }
        if !seen.insert(op.key()) {
            return Err(Error::invalid(format!(
                "key {:?} appears twice in one write",
                op.key()
            )));
        }
    }
    Ok(())
}

impl Write {
    /// Checks the invariants a peer-supplied write must satisfy before it may
    /// enter the delivery buffer of a cluster of `n` nodes.
    pub fn validate(&self, n: usize) -> Result<()> {
        if self.origin >= n {
            return Err(Error::invalid(format!(
                "write origin {} outside cluster of {n}",
                self.origin
            )));
        }
        if self.vc.len() != n {
            return Err(Error::invalid(format!(
                "write clock has {} entries, cluster has {n}",
                self.vc.len()
            )));
        }
        if self.seq == 0 || self.vc.get(self.origin) != self.seq {
            return Err(Error::invalid(format!(
                "write seq {} does not match its clock entry {}",
                self.seq,
                self.vc.get(self.origin)
            )));
        }
        validate_ops(&self.ops)
    }

    /// The arbitration rank: a total order on writes that extends causal
    /// order. If `a` happened before `b` then `a.vc.sum() < b.vc.sum()`;
    /// concurrent writes with equal sums are ordered by origin id. Two
    /// distinct writes never share a rank (same origin implies causally
    /// ordered, hence different sums).
    pub fn rank(&self) -> super::store::Rank {
        (self.vc.sum(), self.origin)
    }

    /// Bytes of its operations (see [`Op::size`]).
    pub fn size(&self) -> usize {
        self.ops.iter().map(Op::size).sum()
    }

    /// The key and value of a write of a single put (most writes), for
    /// displays and tests.
    pub fn single_put(&self) -> Option<(&str, &str)> {
        match self.ops.as_slice() {
            [Op::Put { key, value }] => Some((key, value)),
            _ => None,
        }
    }
}

/// A write of `origin` stamped with clock `vc` (so `seq = vc[origin]`), for
/// tests.
#[cfg(test)]
pub(crate) fn test_write(origin: NodeId, vc: &[u64], key: &str, value: &str) -> Write {
    test_ops(
        origin,
        vc,
        vec![Op::Put {
            key: key.into(),
            value: value.into(),
        }],
    )
}

/// A write of several operations, for tests.
#[cfg(test)]
pub(crate) fn test_ops(origin: NodeId, vc: &[u64], ops: Vec<Op>) -> Write {
    Write {
        origin,
        seq: vc[origin],
        vc: VClock::from_vec(vc.to_vec()),
        ops,
        ts_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_put_keeps_the_flat_encoding_and_others_list_their_ops() {
        let single = test_write(0, &[1, 0], "x", "1");
        let json = serde_json::to_value(&single).unwrap();
        assert_eq!(json["key"], "x");
        assert_eq!(json["value"], "1");
        assert!(json.get("ops").is_none());
        assert_eq!(serde_json::from_value::<Write>(json).unwrap(), single);
        let multi = test_ops(
            1,
            &[0, 2],
            vec![
                Op::Put {
                    key: "a".into(),
                    value: "1".into(),
                },
                Op::Incr {
                    key: "c".into(),
                    by: -3,
                },
            ],
        );
        let json = serde_json::to_value(&multi).unwrap();
        assert!(json.get("key").is_none());
        assert_eq!(json["ops"][1]["incr"]["by"], -3);
        assert_eq!(serde_json::from_value::<Write>(json).unwrap(), multi);
    }

    #[test]
    fn a_write_with_both_shapes_or_neither_is_refused() {
        let both = r#"{"origin":0,"seq":1,"vc":[1],"key":"x","value":"1","ops":[],"ts_ms":0}"#;
        assert!(serde_json::from_str::<Write>(both).is_err());
        let neither = r#"{"origin":0,"seq":1,"vc":[1],"ts_ms":0}"#;
        assert!(serde_json::from_str::<Write>(neither).is_err());
        let typo = r#"{"origin":0,"seq":1,"vc":[1],"key":"x","valeu":"1","ts_ms":0}"#;
        assert!(serde_json::from_str::<Write>(typo).is_err());
    }

    #[test]
    fn a_peer_write_needs_ops_on_distinct_non_empty_keys() {
        let mut w = test_write(0, &[1, 0], "x", "1");
        assert!(w.validate(2).is_ok());
        w.ops.push(Op::Incr {
            key: "x".into(),
            by: 1,
        });
        assert!(w.validate(2).is_err(), "key twice");
        w.ops.clear();
        assert!(w.validate(2).is_err(), "no operation");
        let empty = test_write(0, &[1, 0], "", "1");
        assert!(empty.validate(2).is_err());
    }
}
