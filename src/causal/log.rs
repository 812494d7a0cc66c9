//! The replication log: every write this node has delivered, by origin,
//! until it is causally stable.
//!
//! The log keeps not only the node's own writes but every write it delivered,
//! so any node can bring a lagging peer up to date on any origin ("catch-up
//! from any peer"): a dead origin does not block delivery elsewhere.
//!
//! Writes are appended in delivery order, which for a single origin is
//! sequence order, so each origin's log is a contiguous run
//! `first_seq ..= last_seq` held in a `VecDeque` and indexed by arithmetic.
//! A write is trimmed once every node has delivered it (`trim` with the
//! pointwise minimum of the peers' delivered clocks): nobody can ask for it
//! again, so memory stays bounded by the replication lag, not the history.

use std::collections::VecDeque;

use super::vclock::VClock;
use super::write::{NodeId, Write};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
struct OriginLog {
    /// Sequence number of `entries[0]` (or of the next write when empty).
    first_seq: u64,
    entries: VecDeque<Write>,
}

/// Delivered writes per origin, trimmed at causal stability.
#[derive(Debug, Clone)]
pub struct ReplicationLog {
    origins: Vec<OriginLog>,
    len: usize,
}

impl ReplicationLog {
    pub fn new(n: usize) -> Self {
        Self::starting_after(&VClock::zero(n))
    }

    /// An empty log whose next expected write of origin `k` is
    /// `after[k] + 1` (used after recovery, when older writes are stable).
    pub fn starting_after(after: &VClock) -> Self {
        ReplicationLog {
            origins: (0..after.len())
                .map(|k| OriginLog {
                    first_seq: after.get(k) + 1,
                    entries: VecDeque::new(),
                })
                .collect(),
            len: 0,
        }
    }

    /// The log a node recovers from disk: per origin, the run of `writes`
    /// (in sequence order) that ends at `delivered`. Older entries cut off
    /// from it by a snapshot, which jumped the clock past them, are dropped:
    /// the snapshot's peer has them. An entry beyond `delivered` is an error.
    pub fn recover(delivered: &VClock, writes: Vec<Write>) -> Result<ReplicationLog> {
        let n = delivered.len();
        let mut runs: Vec<Vec<Write>> = (0..n).map(|_| Vec::new()).collect();
        for w in writes {
            if w.origin >= n || w.seq > delivered.get(w.origin) {
                return Err(Error::internal(format!(
                    "log entry {}:{} is beyond the delivered clock [{delivered}]",
                    w.origin, w.seq
                )));
            }
            runs[w.origin].push(w);
        }
        let mut start = delivered.clone();
        for (k, run) in runs.iter_mut().enumerate() {
            let mut expect = delivered.get(k);
            let mut first = run.len();
            while first > 0 && run[first - 1].seq == expect {
                first -= 1;
                expect -= 1;
            }
            run.drain(..first);
            start.set(k, expect);
        }
        let mut log = ReplicationLog::starting_after(&start);
        for w in runs.into_iter().flatten() {
            if !log.append(w) {
                return Err(Error::internal("replication log has a gap"));
            }
        }
        Ok(log)
    }

    /// Appends a delivered write. Writes of one origin must arrive in
    /// sequence order; an out-of-order append is a bug and is ignored with a
    /// `false` return so the caller can report it.
    pub fn append(&mut self, write: Write) -> bool {
        let Some(log) = self.origins.get_mut(write.origin) else {
            return false;
        };
        let next = log.first_seq + log.entries.len() as u64;
        if write.seq != next {
            return false;
        }
        log.entries.push_back(write);
        self.len += 1;
        true
    }

    /// Up to `max` writes of `origin` with sequence numbers in
    /// `(after, upto]`, appended to `out`. Returns how many were appended.
    /// Writes already trimmed are skipped: the caller learns it from
    /// `first_available`.
    pub fn read(
        &self,
        origin: NodeId,
        after: u64,
        upto: u64,
        max: usize,
        out: &mut Vec<Write>,
    ) -> usize {
        let Some(log) = self.origins.get(origin) else {
            return 0;
        };
        let start = (after + 1).max(log.first_seq);
        if start > upto {
            return 0;
        }
        let skip = (start - log.first_seq) as usize;
        let want = ((upto - start + 1) as usize).min(max);
        let before = out.len();
        out.extend(log.entries.iter().skip(skip).take(want).cloned());
        out.len() - before
    }

    /// Skips ahead to a clock learnt from a snapshot: an origin whose log
    /// ends before `clock[origin]` restarts empty after it (the snapshot's
    /// writes are not individually known, and every peer already has them).
    pub fn advance_to(&mut self, clock: &VClock) {
        for (k, log) in self.origins.iter_mut().enumerate() {
            let last = log.first_seq + log.entries.len() as u64 - 1;
            if clock.get(k) > last {
                self.len -= log.entries.len();
                log.entries.clear();
                log.first_seq = clock.get(k) + 1;
            }
        }
    }

    /// The oldest sequence number of `origin` still held.
    pub fn first_available(&self, origin: NodeId) -> u64 {
        self.origins.get(origin).map(|l| l.first_seq).unwrap_or(1)
    }

    /// Drops every write with `seq <= stable[origin]`.
    pub fn trim(&mut self, stable: &VClock) {
        for (k, log) in self.origins.iter_mut().enumerate() {
            while log.first_seq <= stable.get(k) && !log.entries.is_empty() {
                log.entries.pop_front();
                log.first_seq += 1;
                self.len -= 1;
            }
            // A backlog that has drained gives its memory back.
            if log.entries.capacity() > 1024 && log.entries.len() < log.entries.capacity() / 4 {
                log.entries.shrink_to(log.entries.len() * 2);
            }
        }
    }

    /// Number of writes held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(origin: NodeId, seq: u64) -> Write {
        let mut vc = [0; 2];
        vc[origin] = seq;
        super::super::write::test_write(origin, &vc, "k", &seq.to_string())
    }

    #[test]
    fn read_returns_the_requested_range() {
        let mut log = ReplicationLog::new(2);
        for seq in 1..=10 {
            assert!(log.append(w(0, seq)));
        }
        assert!(!log.append(w(0, 12)), "gaps are refused");
        let mut out = Vec::new();
        assert_eq!(log.read(0, 3, 10, 4, &mut out), 4);
        let seqs: Vec<u64> = out.iter().map(|w| w.seq).collect();
        assert_eq!(seqs, vec![4, 5, 6, 7]);
        out.clear();
        assert_eq!(log.read(0, 8, 20, 100, &mut out), 2);
        assert_eq!(log.read(1, 0, 5, 100, &mut out), 0);
    }

    #[test]
    fn trim_drops_only_stable_writes() {
        let mut log = ReplicationLog::new(2);
        for seq in 1..=5 {
            log.append(w(0, seq));
            log.append(w(1, seq));
        }
        log.trim(&VClock::from_vec(vec![3, 5]));
        assert_eq!(log.len(), 2);
        assert_eq!(log.first_available(0), 4);
        let mut out = Vec::new();
        assert_eq!(log.read(0, 0, 5, 100, &mut out), 2);
        assert_eq!(out[0].seq, 4);
        // Appending continues after the trimmed prefix.
        assert!(log.append(w(1, 6)));
    }

    #[test]
    fn advance_to_skips_origins_behind_a_snapshot() {
        let mut log = ReplicationLog::new(2);
        for seq in 1..=3 {
            log.append(w(0, seq));
            log.append(w(1, seq));
        }
        log.advance_to(&VClock::from_vec(vec![2, 10]));
        assert_eq!(log.len(), 3, "origin 0 kept, origin 1 skipped");
        assert!(log.append(w(1, 11)));
        assert!(log.append(w(0, 4)));
    }

    #[test]
    fn a_recovered_log_is_the_run_ending_at_the_clock() {
        // Origin 0: 1, 2, then a snapshot jumped to 5, then 6 and 7.
        let writes = [1, 2, 6, 7].map(|seq| w(0, seq)).to_vec();
        let log = ReplicationLog::recover(&VClock::from_vec(vec![7, 0]), writes).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log.first_available(0), 6);
        let beyond = vec![w(1, 3)];
        assert!(ReplicationLog::recover(&VClock::from_vec(vec![0, 2]), beyond).is_err());
    }
}
