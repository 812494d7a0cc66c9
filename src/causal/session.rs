//! Client causal sessions.
//!
//! Every `/put` and `/get` answer carries the node's delivered clock in a
//! `Causal-Context: 3,0,1` header. A client that sends it back, to any node,
//! asks that node not to serve the request before it has delivered
//! everything in that context. Because a node's delivered clock is downward
//! closed, "delivered the context" is a single comparison `ctx <= applied`,
//! and it gives the session guarantees across nodes:
//!
//! * read-your-writes: a put's context covers the put;
//! * monotonic reads: a read's context covers what the read saw;
//! * writes-follow-reads: a put served after waiting is stamped with a clock
//!   that covers the context, so everywhere it is delivered after what the
//!   client had read.
//!
//! `Waiters` holds requests whose context is ahead of the node until the
//! applied clock catches up; the actor wrapping it bounds the wait.

use super::vclock::VClock;
use crate::error::{Error, Result};

/// Parses a `Causal-Context` header for a cluster of `n` nodes.
pub fn parse_context(raw: &str, n: usize) -> Result<VClock> {
    let ctx: VClock = raw
        .parse()
        .map_err(|e| Error::invalid(format!("invalid Causal-Context header: {e}")))?;
    if ctx.len() != n {
        return Err(Error::invalid(format!(
            "invalid Causal-Context header: {} entries, cluster has {n} nodes",
            ctx.len()
        )));
    }
    Ok(ctx)
}

/// Requests waiting for the applied clock to cover their context.
#[derive(Debug)]
pub struct Waiters<T> {
    waiting: Vec<(VClock, T)>,
    limit: usize,
}

impl<T> Waiters<T> {
    pub fn new(limit: usize) -> Self {
        Waiters {
            waiting: Vec::new(),
            limit,
        }
    }

    /// Registers a waiter; fails when too many are already waiting.
    pub fn wait(&mut self, ctx: VClock, token: T) -> Result<()> {
        if self.waiting.len() >= self.limit {
            return Err(Error::unavailable(format!(
                "too many requests waiting for their causal context ({})",
                self.waiting.len()
            )));
        }
        self.waiting.push((ctx, token));
        Ok(())
    }

    /// True when no more waiters are accepted.
    pub fn is_full(&self) -> bool {
        self.waiting.len() >= self.limit
    }

    /// Registers a waiter; the caller checks `is_full` first.
    pub fn park(&mut self, ctx: VClock, token: T) {
        self.waiting.push((ctx, token));
    }

    /// Removes and returns the waiters whose context `applied` now covers.
    pub fn release(&mut self, applied: &VClock) -> Vec<T> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let mut ready = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].0.le(applied) {
                ready.push(self.waiting.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        ready
    }

    /// Removes and returns the waiters for which `expired` holds.
    pub fn take_where(&mut self, mut expired: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut taken = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            if expired(&self.waiting[i].1) {
                taken.push(self.waiting.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        taken
    }

    /// Drops waiters whose requester has gone (e.g. timed out).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.waiting.retain(|(_, t)| keep(t));
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_must_match_cluster_size() {
        assert!(parse_context("1,2,3", 3).is_ok());
        assert!(parse_context("1,2", 3).is_err());
        assert!(parse_context("x", 3).is_err());
    }

    #[test]
    fn waiters_are_released_when_covered() {
        let mut w = Waiters::new(10);
        w.wait(VClock::from_vec(vec![1, 0]), "a").unwrap();
        w.wait(VClock::from_vec(vec![2, 1]), "b").unwrap();
        assert!(w.release(&VClock::from_vec(vec![0, 5])).is_empty());
        assert_eq!(w.release(&VClock::from_vec(vec![1, 0])), vec!["a"]);
        assert_eq!(w.release(&VClock::from_vec(vec![2, 1])), vec!["b"]);
        assert!(w.is_empty());
    }

    #[test]
    fn waiters_are_bounded() {
        let mut w = Waiters::new(1);
        w.wait(VClock::zero(1), 1).unwrap();
        assert!(w.wait(VClock::zero(1), 2).is_err());
    }
}
