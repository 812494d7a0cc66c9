//! The replicated unit: one write, stamped with its vector clock.

use serde::{Deserialize, Serialize};

use super::vclock::VClock;
use crate::error::{Error, Result};

/// A node's index in the cluster (`NODE_ID`), 0-based.
pub type NodeId = usize;

/// A write as it is stored, logged and replicated.
///
/// `origin` wrote it as its `seq`-th write; `vc` is the origin's delivered
/// clock right after the write, so `vc[origin] == seq` and `vc[k]` for
/// `k != origin` lists the writes of `k` this one causally depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    pub origin: NodeId,
    pub seq: u64,
    pub vc: VClock,
    pub key: String,
    pub value: String,
    /// Origin's wall clock at write time, milliseconds since the Unix epoch.
    /// Used only to measure delivery delay; never for ordering.
    pub ts_ms: u64,
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
        if self.key.is_empty() {
            return Err(Error::invalid("write with empty key"));
        }
        Ok(())
    }

    /// The arbitration rank: a total order on writes that extends causal
    /// order. If `a` happened before `b` then `a.vc.sum() < b.vc.sum()`;
    /// concurrent writes with equal sums are ordered by origin id. Two
    /// distinct writes never share a rank (same origin implies causally
    /// ordered, hence different sums).
    pub fn rank(&self) -> super::store::Rank {
        (self.vc.sum(), self.origin)
    }
}

/// A write of `origin` stamped with clock `vc` (so `seq = vc[origin]`), for
/// tests.
#[cfg(test)]
pub(crate) fn test_write(origin: NodeId, vc: &[u64], key: &str, value: &str) -> Write {
    Write {
        origin,
        seq: vc[origin],
        vc: VClock::from_vec(vc.to_vec()),
        key: key.into(),
        value: value.into(),
        ts_ms: 0,
    }
}
