//! Reliable replication to one peer, as a pure state machine.
//!
//! Every node pushes to every peer an ordered stream of the writes the peer
//! has not acknowledged. One request is in flight per peer at a time; writes
//! that arrive meanwhile are batched into the next request. Under load a
//! batch smaller than `max_batch` also waits until `linger_ms` after the
//! previous request started: each request costs both nodes a round of HTTP,
//! decoding and (on the peer) a group commit, whatever it carries, so fewer,
//! fuller requests leave the cores to the clients. It delays what a peer
//! sees by at most `linger_ms`, never a client's answer. The peer answers
//! with its `received` clock (delivered, plus writes waiting contiguously in
//! its buffer) and its `delivered` clock; the stream resumes after `received`,
//! so a lost request or response only causes a resend, which the receiver
//! drops as a duplicate.
//!
//! ## What is sent
//! * The node's **own** writes, always, as soon as they exist.
//! * **Relayed** writes of other origins (including the peer's own old
//!   writes, for a peer that lost its state) only when the peer has fallen
//!   behind on that origin: it has not received, within `relay_after` of us
//!   noticing, writes we had already delivered. In a healthy cluster each
//!   origin's stream reaches each peer directly and nothing is relayed; when
//!   an origin is down or cut off from a peer, the survivors fill the gap.
//!
//! ## Failures and faults
//! A failed request backs off exponentially (`base_backoff_ms` doubling up
//! to `max_backoff_ms`). An injected fault (admin route) either holds the
//! stream back (`Delay`) or discards batches as a lossy link would (`Drop`)
//! until it expires; reliable delivery then resends everything.
//!
//! Time is logical: callers pass `now_ms` (milliseconds on a monotonic clock)
//! so tests are deterministic.

use serde::{Deserialize, Serialize};

use super::vclock::VClock;
use super::write::NodeId;

/// An injected replication fault on one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Hold writes back; send them when the fault expires.
    Delay,
    /// Discard batches as a lossy link would; they are resent afterwards.
    Drop,
}

/// Tuning of a stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub max_batch: usize,
    pub relay_after_ms: u64,
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// An idle stream still contacts the peer this often (an empty batch),
    /// to learn its clocks for log trimming and relay decisions.
    pub heartbeat_ms: u64,
    /// A batch smaller than `max_batch` waits until this long after the
    /// previous request started, so that under load each request (and the
    /// peer's group commit of it) carries more writes. 0 sends at once.
    pub linger_ms: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_batch: 512,
            relay_after_ms: 1_000,
            base_backoff_ms: 50,
            max_backoff_ms: 2_000,
            heartbeat_ms: 1_000,
            linger_ms: 10,
        }
    }
}

/// What to send next: for each origin, writes with seq in `(after, upto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ranges: Vec<(NodeId, u64, u64)>,
    pub max: usize,
    /// The batch must be discarded instead of sent (a `Drop` fault).
    pub drop: bool,
}

/// Replication state towards one peer.
#[derive(Debug, Clone)]
pub struct PeerStream {
    me: NodeId,
    config: StreamConfig,
    /// The peer's last reported `received` clock.
    acked: VClock,
    /// The peer's last reported `delivered` clock (for stability).
    peer_delivered: VClock,
    in_flight: bool,
    failures: u32,
    next_attempt_ms: u64,
    /// Per origin: when we noticed the peer lagging and how far we had got.
    lag_marks: Vec<Option<(u64, u64)>>,
    /// Per origin: relaying is on until the peer catches up with the mark.
    relaying: Vec<bool>,
    fault: Option<(FaultKind, u64)>,
    acked_once: bool,
    last_attempt_ms: Option<u64>,
}

impl PeerStream {
    pub fn new(me: NodeId, n: usize, config: StreamConfig) -> Self {
        PeerStream {
            me,
            config,
            acked: VClock::zero(n),
            peer_delivered: VClock::zero(n),
            in_flight: false,
            failures: 0,
            next_attempt_ms: 0,
            lag_marks: vec![None; n],
            relaying: vec![false; n],
            fault: None,
            acked_once: false,
            last_attempt_ms: None,
        }
    }

    pub fn acked(&self) -> &VClock {
        &self.acked
    }

    pub fn peer_delivered(&self) -> &VClock {
        &self.peer_delivered
    }

    /// True once the peer has answered at least once since we started.
    pub fn has_acked(&self) -> bool {
        self.acked_once
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Writes of ours the peer has not yet received.
    pub fn backlog(&self, ours: &VClock) -> u64 {
        ours.get(self.me).saturating_sub(self.acked.get(self.me))
    }

    pub fn set_fault(&mut self, kind: FaultKind, until_ms: u64) {
        self.fault = Some((kind, until_ms));
    }

    pub fn clear_fault(&mut self) {
        self.fault = None;
    }

    pub fn fault(&self, now_ms: u64) -> Option<FaultKind> {
        match self.fault {
            Some((kind, until)) if now_ms < until => Some(kind),
            _ => None,
        }
    }

    /// Decides whether to send now and what. `ours` is this node's delivered
    /// clock. An idle stream yields an empty plan once per heartbeat. Marks the stream in flight when it returns a plan; the caller
    /// must then report `on_ack` or `on_failure`.
    pub fn plan(&mut self, now_ms: u64, ours: &VClock) -> Option<Plan> {
        if self.in_flight || now_ms < self.next_attempt_ms {
            return None;
        }
        let fault = self.fault(now_ms);
        if self.fault.is_some() && fault.is_none() {
            self.fault = None;
        }
        if fault == Some(FaultKind::Delay) {
            return None;
        }
        let mut ranges = Vec::new();
        for k in 0..ours.len() {
            let have = ours.get(k);
            let acked = self.acked.get(k);
            if have <= acked {
                self.lag_marks[k] = None;
                self.relaying[k] = false;
                continue;
            }
            if k == self.me || self.should_relay(k, now_ms, have, acked) {
                ranges.push((k, acked, have));
            }
        }
        let heartbeat_due = self
            .last_attempt_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.config.heartbeat_ms);
        if ranges.is_empty() && !heartbeat_due {
            return None;
        }
        if self.lingering(now_ms, &ranges) {
            return None;
        }
        self.in_flight = true;
        self.last_attempt_ms = Some(now_ms);
        Some(Plan {
            ranges,
            max: self.config.max_batch,
            drop: fault == Some(FaultKind::Drop),
        })
    }

    /// Whether a non-empty, less than full batch should wait for more.
    fn lingering(&self, now_ms: u64, ranges: &[(NodeId, u64, u64)]) -> bool {
        let pending: u64 = ranges.iter().map(|&(_, after, upto)| upto - after).sum();
        !ranges.is_empty()
            && pending < self.config.max_batch as u64
            && self.linger_until().is_some_and(|t| now_ms < t)
    }

    /// Until when a batch smaller than `max_batch` is held back (the
    /// previous request's start plus `linger_ms`), if lingering is on.
    pub fn linger_until(&self) -> Option<u64> {
        let t = self.last_attempt_ms?;
        (self.config.linger_ms > 0).then(|| t + self.config.linger_ms)
    }

    fn should_relay(&mut self, k: NodeId, now_ms: u64, have: u64, acked: u64) -> bool {
        if self.relaying[k] {
            return true;
        }
        match self.lag_marks[k] {
            // The peer received everything we had when we last looked.
            Some((_, mark)) if acked >= mark => {
                self.lag_marks[k] = Some((now_ms, have));
                false
            }
            Some((since, _)) if now_ms.saturating_sub(since) >= self.config.relay_after_ms => {
                self.relaying[k] = true;
                true
            }
            Some(_) => false,
            None => {
                self.lag_marks[k] = Some((now_ms, have));
                false
            }
        }
    }

    /// The peer answered: resume after what it reports.
    pub fn on_ack(&mut self, received: VClock, delivered: VClock) {
        self.in_flight = false;
        self.failures = 0;
        self.next_attempt_ms = 0;
        self.acked_once = true;
        // A peer that restarted with less state reports lower clocks; we
        // follow it down so that it is re-sent what it lost.
        self.acked = received;
        self.peer_delivered = delivered;
    }

    /// The request failed (or was dropped): back off, then resend.
    pub fn on_failure(&mut self, now_ms: u64) {
        self.in_flight = false;
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.min(16) - 1;
        let backoff = self
            .config
            .base_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.config.max_backoff_ms);
        self.next_attempt_ms = now_ms + backoff;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(v: &[u64]) -> VClock {
        VClock::from_vec(v.to_vec())
    }

    /// A stream that sends as soon as the previous request is answered.
    fn eager() -> StreamConfig {
        StreamConfig {
            linger_ms: 0,
            ..StreamConfig::default()
        }
    }

    #[test]
    fn sends_own_writes_and_resumes_after_ack() {
        let mut s = PeerStream::new(0, 3, eager());
        let plan = s.plan(0, &vc(&[3, 0, 0])).unwrap();
        assert_eq!(plan.ranges, vec![(0, 0, 3)]);
        assert!(
            s.plan(0, &vc(&[4, 0, 0])).is_none(),
            "one request in flight"
        );
        s.on_ack(vc(&[3, 0, 0]), vc(&[3, 0, 0]));
        let plan = s.plan(1, &vc(&[4, 0, 0])).unwrap();
        assert_eq!(plan.ranges, vec![(0, 3, 4)]);
    }

    #[test]
    fn a_small_batch_lingers_after_the_previous_request_and_a_full_one_does_not() {
        let cfg = StreamConfig {
            linger_ms: 10,
            max_batch: 4,
            ..StreamConfig::default()
        };
        let mut s = PeerStream::new(0, 2, cfg);
        assert_eq!(s.linger_until(), None, "nothing sent yet");
        // The first request goes at once.
        assert_eq!(s.plan(100, &vc(&[1, 0])).unwrap().ranges, vec![(0, 0, 1)]);
        s.on_ack(vc(&[1, 0]), vc(&[1, 0]));
        assert_eq!(s.linger_until(), Some(110));
        // Three new writes wait until 10 ms after that request started ...
        assert!(s.plan(101, &vc(&[4, 0])).is_none());
        assert!(s.plan(109, &vc(&[4, 0])).is_none());
        assert!(!s.in_flight(), "a held batch is not in flight");
        // ... unless they fill a batch.
        let full = s.plan(105, &vc(&[5, 0])).unwrap();
        assert_eq!(full.ranges, vec![(0, 1, 5)]);
        s.on_ack(vc(&[5, 0]), vc(&[5, 0]));
        assert!(s.plan(114, &vc(&[6, 0])).is_none());
        assert_eq!(s.plan(115, &vc(&[7, 0])).unwrap().ranges, vec![(0, 5, 7)]);
        // Off, the stream sends as soon as the previous request is answered.
        let mut eager = PeerStream::new(0, 2, eager());
        eager.plan(0, &vc(&[1, 0])).unwrap();
        eager.on_ack(vc(&[1, 0]), vc(&[1, 0]));
        assert_eq!(eager.linger_until(), None);
        assert!(eager.plan(0, &vc(&[2, 0])).is_some());
    }

    #[test]
    fn failures_back_off_exponentially() {
        let cfg = StreamConfig {
            base_backoff_ms: 10,
            max_backoff_ms: 35,
            ..StreamConfig::default()
        };
        let mut s = PeerStream::new(0, 2, cfg);
        let ours = vc(&[1, 0]);
        s.plan(0, &ours).unwrap();
        s.on_failure(0);
        assert!(s.plan(9, &ours).is_none());
        s.plan(10, &ours).unwrap();
        s.on_failure(10);
        assert!(s.plan(29, &ours).is_none());
        s.plan(30, &ours).unwrap();
        s.on_failure(30);
        assert!(s.plan(64, &ours).is_none(), "capped at 35 ms");
        assert!(s.plan(65, &ours).is_some());
    }

    #[test]
    fn relays_other_origins_only_when_the_peer_stays_behind() {
        let cfg = StreamConfig {
            relay_after_ms: 100,
            ..StreamConfig::default()
        };
        // We are node 0, talking to node 2; node 1's writes are ours to relay.
        let mut s = PeerStream::new(0, 3, cfg);
        let ours = vc(&[0, 5, 0]);
        // The first contact is a heartbeat, with nothing relayed yet.
        let first = s.plan(0, &ours).unwrap();
        assert!(first.ranges.is_empty(), "not yet: node 1 may send itself");
        s.on_ack(vc(&[0, 0, 0]), vc(&[0, 0, 0]));
        assert!(s.plan(50, &ours).is_none());
        let plan = s.plan(100, &ours).unwrap();
        assert_eq!(plan.ranges, vec![(1, 0, 5)]);
        s.on_ack(vc(&[0, 5, 0]), vc(&[0, 5, 0]));
        assert!(s.plan(101, &ours).is_none(), "caught up: relaying stops");
        assert!(s.plan(1_100, &ours).unwrap().ranges.is_empty(), "heartbeat");
    }

    #[test]
    fn a_peer_that_keeps_up_is_never_relayed_to() {
        let cfg = StreamConfig {
            relay_after_ms: 100,
            ..StreamConfig::default()
        };
        let mut s = PeerStream::new(0, 3, cfg);
        s.plan(0, &vc(&[0, 0, 0])).unwrap();
        s.on_ack(vc(&[0, 0, 0]), vc(&[0, 0, 0]));
        // Node 1 keeps writing and the peer keeps receiving it directly,
        // always a little behind us.
        for step in 0..15u64 {
            let ours = vc(&[0, step + 2, 0]);
            assert!(s.plan(step * 60, &ours).is_none(), "step {step}");
            s.on_ack(vc(&[0, step + 1, 0]), vc(&[0, step + 1, 0]));
        }
    }

    #[test]
    fn faults_delay_or_drop_until_they_expire() {
        let mut s = PeerStream::new(0, 2, StreamConfig::default());
        let ours = vc(&[2, 0]);
        s.set_fault(FaultKind::Delay, 100);
        assert!(s.plan(50, &ours).is_none(), "held back, even the heartbeat");
        assert!(!s.plan(100, &ours).unwrap().drop);
        s.on_failure(100);
        s.set_fault(FaultKind::Drop, 1_000);
        let plan = s.plan(500, &ours).unwrap();
        assert!(plan.drop);
    }

    #[test]
    fn restarted_peer_is_resent_what_it_lost() {
        let mut s = PeerStream::new(0, 2, eager());
        s.plan(0, &vc(&[5, 0])).unwrap();
        s.on_ack(vc(&[5, 0]), vc(&[5, 0]));
        // The peer came back empty.
        s.plan(1, &vc(&[6, 0])).unwrap();
        s.on_ack(vc(&[0, 0]), vc(&[0, 0]));
        assert_eq!(s.plan(2, &vc(&[6, 0])).unwrap().ranges, vec![(0, 0, 6)]);
    }
}
