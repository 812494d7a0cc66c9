//! The routing policy: least estimated utilisation, with local accounting.
//!
//! A router that sends every request to the argmin of a polled snapshot
//! herds: until the next poll, every request lands on the same substation.
//! This router keeps, per substation, the last polled sample and corrects it
//! with what it has done itself since then:
//!
//! ```text
//! estimate = sampled power
//!          + power of sessions it dispatched after the sample was taken
//!          - power of its sessions that have ended since the sample
//!          + power of requests in flight (reserved, not yet answered)
//! ```
//!
//! Substations answer a grant with `ends_in_s`, so the router knows when each
//! of its sessions frees its power. It routes to the lowest estimated
//! utilisation after admitting the request ((estimate + request) / capacity,
//! so unequal substations fill in proportion and a large session goes where
//! it raises utilisation least) among healthy substations whose estimate leaves room for the request,
//! breaking near-ties (within `tie_epsilon`) uniformly at random.
//!
//! Protocol with the caller (the `RouterActor`): `reserve` picks a substation
//! and books the power as in flight; then exactly one of `confirm` (it was
//! admitted), `refused` (the substation said it is full: its estimate is
//! raised to its capacity until sessions end or a poll corrects it) or
//! `unreachable` (marked unhealthy until a poll sent after the failure
//! succeeds) releases the
//! reservation. `observe` applies a successful poll, `poll_failed` a failed one.
//!
//! Time is logical (`now`, seconds from any origin, non-decreasing); the
//! router never reads a clock, so it can be driven by the discrete-event
//! simulation in `grid::sim` and by tests deterministically.
//!
//! Caveats: sessions admitted by someone else appear only at the next poll;
//! a request in flight while a poll is taken may be counted twice until the
//! following poll (the estimate errs high, never low, for the router's own
//! traffic).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::exposition::LoadSample;

/// Tunables of the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterConfig {
    /// Utilisations within this of the minimum count as tied.
    pub tie_epsilon: f64,
    /// Subtract the power of dispatched sessions when they end (on by default;
    /// off only to show in `grid_sim` why it matters).
    pub track_ends: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            tie_epsilon: 0.02,
            track_ends: true,
        }
    }
}

/// A booked dispatch: which substation, how much power, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    /// Index of the substation in the router's list.
    pub index: usize,
    /// Reserved power, watts.
    pub power_w: f64,
    /// Logical time of the reservation.
    pub at: f64,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    end: f64,
    power_w: f64,
    dispatched_at: f64,
    seq: Option<u64>,
}

impl PartialEq for Tracked {
    fn eq(&self, other: &Self) -> bool {
        self.end == other.end
    }
}
impl Eq for Tracked {}
impl PartialOrd for Tracked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Tracked {
    // Reversed: BinaryHeap is a max-heap and we want the earliest end on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.end.total_cmp(&self.end)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Observed {
    power_w: f64,
    capacity_w: f64,
    at: f64,
    started: Option<u64>,
}

impl Observed {
    /// Whether a session dispatched at `dispatched_at` with admission number
    /// `seq` is already counted in this sample. Exact when both sides report
    /// sequence numbers; otherwise by time (ambiguous only for requests in
    /// flight while the scrape was taken).
    fn counts(&self, dispatched_at: f64, seq: Option<u64>) -> bool {
        match (seq, self.started) {
            (Some(q), Some(s)) => q <= s,
            _ => dispatched_at < self.at,
        }
    }
}

#[derive(Debug, Clone)]
struct View {
    name: String,
    sample: Option<Observed>,
    healthy: bool,
    live: BinaryHeap<Tracked>,
    // Ended sessions that may still be inside the last sample; pruned at each poll.
    ended: Vec<Tracked>,
    delta_w: f64,
    reserved_w: f64,
    inflight: u32,
    // When a forward last failed to connect: a poll sent before then says
    // nothing about whether the substation is back.
    down_at: f64,
    // Its address left (DNS): no traffic, nothing tracked, until it rejoins.
    retired: bool,
}

impl View {
    fn new(name: String) -> View {
        View {
            name,
            sample: None,
            healthy: false,
            live: BinaryHeap::new(),
            ended: Vec::new(),
            delta_w: 0.0,
            reserved_w: 0.0,
            inflight: 0,
            down_at: f64::NEG_INFINITY,
            retired: false,
        }
    }
}

impl View {
    fn advance(&mut self, now: f64) {
        while let Some(top) = self.live.peek().copied() {
            if top.end > now {
                break;
            }
            self.live.pop();
            self.delta_w -= top.power_w;
            self.ended.push(top);
        }
    }

    fn estimate_w(&self) -> Option<f64> {
        self.sample
            .map(|s| (s.power_w + self.delta_w + self.reserved_w).max(0.0))
    }

    fn utilization(&self) -> Option<f64> {
        let s = self.sample?;
        let est = self.estimate_w()?;
        Some(if s.capacity_w > 0.0 {
            est / s.capacity_w
        } else {
            f64::INFINITY
        })
    }

    fn fits(&self, power_w: f64) -> bool {
        match (self.sample, self.estimate_w()) {
            (Some(s), Some(est)) => est + power_w <= s.capacity_w * (1.0 + 1e-9),
            _ => false,
        }
    }
}

/// What the router believes about one substation (for `/status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubstationView {
    /// Substation id (learned from its metrics) or its address until then.
    pub name: String,
    /// Whether it may receive traffic.
    pub healthy: bool,
    /// Last polled power, watts.
    pub sampled_power_w: Option<f64>,
    /// Last polled capacity, watts.
    pub capacity_w: Option<f64>,
    /// Seconds since the last successful poll was taken.
    pub sample_age_s: Option<f64>,
    /// Estimated power now, watts.
    pub estimated_power_w: Option<f64>,
    /// Estimated utilisation now, 0–1.
    pub estimated_utilization: Option<f64>,
    /// Requests forwarded and not yet answered.
    pub inflight: u32,
    /// Sessions the router dispatched that have not ended yet.
    pub tracked_sessions: usize,
}

/// The routing state over a fixed list of substations.
#[derive(Debug, Clone)]
pub struct Router {
    views: Vec<View>,
    cfg: RouterConfig,
    rng: SmallRng,
    // Scratch buffer reused by `reserve` so a decision does not allocate.
    scratch: Vec<(usize, f64)>,
}

impl Router {
    /// A router over `names` (initial display names; index = position).
    /// Nothing is routable until its first successful `observe`.
    pub fn new(names: Vec<String>, cfg: RouterConfig, seed: u64) -> Self {
        let views = names.into_iter().map(View::new).collect();
        Router {
            views,
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            scratch: Vec::new(),
        }
    }

    /// Number of substations.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// True when the router has no substations.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Display name of substation `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.views[index].name
    }

    /// Adds a substation (an address that joined); it is routable after its
    /// first successful `observe`. Returns its index.
    pub fn add(&mut self, name: String) -> usize {
        self.views.push(View::new(name));
        self.views.len() - 1
    }

    /// Substation `index` left (its address is gone): it gets no traffic,
    /// and its sample, reservations and booked sessions are forgotten, so
    /// nothing stale counts against it if it comes back.
    pub fn retire(&mut self, index: usize) {
        let name = std::mem::take(&mut self.views[index].name);
        self.views[index] = View::new(name);
        self.views[index].retired = true;
    }

    /// A retired substation's address is back: routable after its next
    /// successful `observe`.
    pub fn rejoin(&mut self, index: usize) {
        self.views[index].retired = false;
    }

    /// Sets the display name of `index` (until its metrics give one).
    pub fn set_name(&mut self, index: usize, name: String) {
        self.views[index].name = name;
    }

    /// Whether substation `index` has left.
    pub fn is_retired(&self, index: usize) -> bool {
        self.views[index].retired
    }

    /// Whether substation `index` may receive traffic.
    pub fn is_healthy(&self, index: usize) -> bool {
        self.views[index].healthy && self.views[index].sample.is_some()
    }

    /// Applies a successful poll taken at logical time `at` (when the scrape
    /// was sent); `now` is the current time. The substation becomes healthy
    /// again unless a forward to it failed after the scrape was sent (an old
    /// answer arriving late must not re-admit a substation that just died).
    pub fn observe(&mut self, index: usize, sample: &LoadSample, at: f64, now: f64) {
        let v = &mut self.views[index];
        if v.retired {
            // A late answer from an address that has left.
            return;
        }
        if let Some(prev) = v.sample {
            // A poll answered out of order must not roll the view back.
            if at < prev.at {
                return;
            }
        }
        if !sample.substation.is_empty() {
            v.name.clone_from(&sample.substation);
        }
        v.advance(now);
        v.ended.retain(|t| t.end > at);
        let obs = Observed {
            power_w: sample.power_w,
            capacity_w: sample.capacity_w,
            at,
            started: sample.started,
        };
        // Live but not in the sample: add.
        let added: f64 = v
            .live
            .iter()
            .filter(|t| !obs.counts(t.dispatched_at, t.seq))
            .map(|t| t.power_w)
            .sum();
        // In the sample but ended since: subtract.
        let gone: f64 = v
            .ended
            .iter()
            .filter(|t| obs.counts(t.dispatched_at, t.seq))
            .map(|t| t.power_w)
            .sum();
        v.delta_w = added - gone;
        v.sample = Some(obs);
        if at >= v.down_at {
            v.healthy = true;
        }
    }

    /// A poll failed: no traffic until one succeeds.
    pub fn poll_failed(&mut self, index: usize) {
        self.views[index].healthy = false;
    }

    /// Chooses a substation for `power_w` at `now`, skipping `exclude`, and
    /// books the power as in flight. `None` when no healthy substation's
    /// estimate leaves room.
    pub fn reserve(&mut self, power_w: f64, exclude: &[usize], now: f64) -> Option<Ticket> {
        self.scratch.clear();
        let mut best = f64::INFINITY;
        for (i, v) in self.views.iter_mut().enumerate() {
            v.advance(now);
            if !v.healthy || exclude.contains(&i) || !v.fits(power_w) {
                continue;
            }
            // Rank by utilisation after admitting this request: a large
            // session on a small substation raises it more than on a big one.
            if let (Some(est), Some(s)) = (v.estimate_w(), v.sample) {
                let u = (est + power_w) / s.capacity_w;
                best = best.min(u);
                self.scratch.push((i, u));
            }
        }
        if self.scratch.is_empty() {
            return None;
        }
        let limit = best + self.cfg.tie_epsilon;
        self.scratch.retain(|&(_, u)| u <= limit);
        let pick = self.scratch[self.rng.gen_range(0..self.scratch.len())].0;
        let v = &mut self.views[pick];
        v.reserved_w += power_w;
        v.inflight += 1;
        Some(Ticket {
            index: pick,
            power_w,
            at: now,
        })
    }

    fn release(&mut self, ticket: &Ticket) -> &mut View {
        let v = &mut self.views[ticket.index];
        v.reserved_w = (v.reserved_w - ticket.power_w).max(0.0);
        v.inflight = v.inflight.saturating_sub(1);
        if v.inflight == 0 {
            v.reserved_w = 0.0;
        }
        v
    }

    /// The substation admitted the session (admission number `seq`, if it
    /// reports one); it ends `ends_in_s` after `now`.
    pub fn confirm(&mut self, ticket: &Ticket, ends_in_s: f64, seq: Option<u64>, now: f64) {
        let track = self.cfg.track_ends && !self.views[ticket.index].retired;
        let v = self.release(ticket);
        // A poll that raced with this request may already include it.
        let in_sample = v.sample.is_some_and(|s| s.counts(ticket.at, seq));
        if !in_sample {
            v.delta_w += ticket.power_w;
        }
        if track {
            v.live.push(Tracked {
                end: now + ends_in_s.max(0.0),
                power_w: ticket.power_w,
                dispatched_at: ticket.at,
                seq,
            });
        }
    }

    /// The substation refused (full): treat it as full until sessions end or
    /// a poll says otherwise.
    pub fn refused(&mut self, ticket: &Ticket) {
        let v = self.release(ticket);
        if let (Some(s), Some(est)) = (v.sample, v.estimate_w()) {
            if est < s.capacity_w {
                v.delta_w += s.capacity_w - est;
            }
        }
    }

    /// The substation could not be reached at `now`: no traffic until a poll
    /// sent after `now` succeeds.
    pub fn unreachable(&mut self, ticket: &Ticket, now: f64) {
        let v = self.release(ticket);
        v.healthy = false;
        v.down_at = v.down_at.max(now);
    }

    /// The request failed for another reason (e.g. a 4xx): just release.
    pub fn abandoned(&mut self, ticket: &Ticket) {
        self.release(ticket);
    }

    /// Estimated utilisation of `index` at the last advance, if sampled.
    pub fn estimated_utilization(&self, index: usize) -> Option<f64> {
        self.views[index].utilization()
    }

    /// The router's view of every substation at `now`.
    pub fn status(&mut self, now: f64) -> Vec<SubstationView> {
        self.views
            .iter_mut()
            .map(|v| {
                v.advance(now);
                SubstationView {
                    name: v.name.clone(),
                    healthy: v.healthy && v.sample.is_some(),
                    sampled_power_w: v.sample.map(|s| s.power_w),
                    capacity_w: v.sample.map(|s| s.capacity_w),
                    sample_age_s: v.sample.map(|s| (now - s.at).max(0.0)),
                    estimated_power_w: v.estimate_w(),
                    estimated_utilization: v.utilization(),
                    inflight: v.inflight,
                    tracked_sessions: v.live.len(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(power_w: f64, capacity_w: f64) -> LoadSample {
        LoadSample {
            substation: String::new(),
            power_w,
            capacity_w,
            sessions: None,
            started: None,
        }
    }

    fn router(caps: &[f64]) -> Router {
        let mut r = Router::new(
            (0..caps.len()).map(|i| format!("s{i}")).collect(),
            RouterConfig::default(),
            7,
        );
        for (i, c) in caps.iter().enumerate() {
            r.observe(i, &sample(0.0, *c), 0.0, 0.0);
        }
        r
    }

    #[test]
    fn nothing_is_routable_before_a_poll() {
        let mut r = Router::new(vec!["a".into()], RouterConfig::default(), 1);
        assert!(r.reserve(1.0, &[], 0.0).is_none());
    }

    #[test]
    fn burst_between_polls_spreads_in_proportion_to_free_capacity() {
        // Free capacity 100, 200, 300, 400 kW (some already used), 10 kW each,
        // long sessions, no poll during the burst.
        let caps = [200_000.0, 300_000.0, 400_000.0, 500_000.0];
        let used = [100_000.0, 100_000.0, 100_000.0, 100_000.0];
        let mut r = router(&caps);
        for i in 0..4 {
            r.observe(i, &sample(used[i], caps[i]), 1.0, 1.0);
        }
        let mut counts = [0usize; 4];
        for k in 0..60 {
            let now = 1.0 + k as f64 * 0.001;
            let t = r.reserve(10_000.0, &[], now).unwrap();
            counts[t.index] += 1;
            r.confirm(&t, 1000.0, None, now);
        }
        // 60 sessions of 10 kW fill to a common utilisation u: free share is
        // proportional, 600 kW over 1400 total. Each within one request of it.
        let total: f64 = caps.iter().sum::<f64>();
        let u = (used.iter().sum::<f64>() + 600_000.0) / total;
        for i in 0..4 {
            let expect = (u * caps[i] - used[i]) / 10_000.0;
            assert!(
                (counts[i] as f64 - expect).abs() <= 2.0,
                "{counts:?} vs expected {expect} at {i}"
            );
        }
    }

    #[test]
    fn ends_free_estimated_power_and_polls_do_not_double_count() {
        let mut r = router(&[100_000.0]);
        let t = r.reserve(50_000.0, &[], 1.0).unwrap();
        r.confirm(&t, 10.0, None, 1.0);
        assert_eq!(r.estimated_utilization(0), Some(0.5));
        // A poll sent after the dispatch sees the session: no double count.
        r.observe(0, &sample(50_000.0, 100_000.0), 2.0, 2.0);
        r.status(2.0);
        assert_eq!(r.estimated_utilization(0), Some(0.5));
        // It ends at 11: the estimate drops before the next poll.
        r.status(11.5);
        assert_eq!(r.estimated_utilization(0), Some(0.0));
        // A late poll taken before the end still sees it, and it has ended since.
        r.observe(0, &sample(50_000.0, 100_000.0), 10.0, 11.6);
        r.status(11.6);
        assert_eq!(r.estimated_utilization(0), Some(0.0));
    }

    #[test]
    fn sequence_numbers_settle_races_with_a_poll() {
        let mut r = router(&[100_000.0]);
        // Reserved at 2.0, a poll sent at 1.9 answered after the substation
        // admitted it as its 1st session: the sample counts it already.
        let t = r.reserve(40_000.0, &[], 2.0).unwrap();
        let polled = LoadSample {
            started: Some(1),
            ..sample(40_000.0, 100_000.0)
        };
        r.observe(0, &polled, 1.9, 2.05);
        r.confirm(&t, 100.0, Some(1), 2.1);
        r.status(2.1);
        assert_eq!(r.estimated_utilization(0), Some(0.4));
        // The next poll counts it too; and when it ends it is subtracted once.
        r.observe(0, &polled, 3.0, 3.0);
        r.status(3.0);
        assert_eq!(r.estimated_utilization(0), Some(0.4));
        r.status(102.2);
        assert_eq!(r.estimated_utilization(0), Some(0.0));
    }

    #[test]
    fn refusal_marks_full_and_unreachable_marks_unhealthy_until_poll() {
        let mut r = router(&[100_000.0, 100_000.0]);
        let t = r.reserve(10_000.0, &[], 0.0).unwrap();
        r.refused(&t);
        assert_eq!(r.estimated_utilization(t.index), Some(1.0));
        let other = 1 - t.index;
        let t2 = r.reserve(10_000.0, &[], 0.0).unwrap();
        assert_eq!(t2.index, other);
        r.unreachable(&t2, 0.5);
        assert!(!r.is_healthy(other));
        assert!(r.reserve(10_000.0, &[], 0.5).is_none());
        r.observe(other, &sample(0.0, 100_000.0), 1.0, 1.0);
        assert_eq!(r.reserve(10_000.0, &[], 1.0).unwrap().index, other);
    }

    #[test]
    fn a_late_answer_to_an_older_poll_does_not_readmit() {
        let mut r = router(&[100_000.0]);
        let t = r.reserve(10_000.0, &[], 2.0).unwrap();
        r.unreachable(&t, 2.5);
        // Scraped at 2.4, before the failure, answered after it.
        r.observe(0, &sample(0.0, 100_000.0), 2.4, 2.6);
        assert!(!r.is_healthy(0));
        assert!(r.reserve(10_000.0, &[], 2.6).is_none());
        // The next poll, sent after the failure, re-admits it.
        r.observe(0, &sample(0.0, 100_000.0), 3.0, 3.0);
        assert!(r.is_healthy(0));
        assert!(r.reserve(10_000.0, &[], 3.0).is_some());
    }

    #[test]
    fn a_failed_poll_ejects_and_the_next_success_readmits() {
        let mut r = router(&[100_000.0, 100_000.0]);
        r.poll_failed(0);
        for k in 0..20 {
            let t = r.reserve(1_000.0, &[], 1.0 + k as f64).unwrap();
            assert_eq!(t.index, 1, "ejected substation chosen");
            r.abandoned(&t);
        }
        r.observe(0, &sample(0.0, 100_000.0), 30.0, 30.0);
        assert!(r.is_healthy(0));
    }

    proptest! {
        #[test]
        fn never_picks_unhealthy_while_a_healthy_one_can_admit(
            caps in proptest::collection::vec(10_000.0f64..500_000.0, 1..8),
            loads in proptest::collection::vec(0.0f64..1.0, 8),
            healthy in proptest::collection::vec(proptest::bool::ANY, 8),
            power in 1_000.0f64..50_000.0,
            seed in 0u64..1000,
        ) {
            let mut r = Router::new(
                (0..caps.len()).map(|i| format!("s{i}")).collect(),
                RouterConfig::default(),
                seed,
            );
            for (i, c) in caps.iter().enumerate() {
                r.observe(i, &sample(loads[i] * c, *c), 0.0, 0.0);
                if !healthy[i] {
                    r.poll_failed(i);
                }
            }
            let can_admit = (0..caps.len())
                .any(|i| healthy[i] && loads[i] * caps[i] + power <= caps[i]);
            match r.reserve(power, &[], 0.0) {
                Some(t) => {
                    prop_assert!(healthy[t.index]);
                    prop_assert!(loads[t.index] * caps[t.index] + power <= caps[t.index] * (1.0 + 1e-9));
                    // Lowest utilisation after admission, within the tie band.
                    let after = |i: usize| loads[i] + power / caps[i];
                    let best = (0..caps.len())
                        .filter(|&i| healthy[i] && loads[i] * caps[i] + power <= caps[i])
                        .map(after)
                        .fold(f64::INFINITY, f64::min);
                    prop_assert!(after(t.index) <= best + 0.02 + 1e-9);
                }
                None => prop_assert!(!can_admit),
            }
        }

        #[test]
        fn router_never_admits_beyond_estimated_capacity(
            caps in proptest::collection::vec(50_000.0f64..300_000.0, 1..5),
            reqs in proptest::collection::vec((1_000.0f64..60_000.0, 0.0f64..3.0, 0.1f64..20.0), 1..200),
        ) {
            // Drive the router alone (it is the only source of load, no polls
            // after the first): the estimate must track truth exactly and
            // never exceed capacity.
            let mut r = router(&caps);
            let mut truth: Vec<Vec<(f64, f64)>> = vec![Vec::new(); caps.len()];
            let mut now = 0.0;
            for (p, dt, dur) in reqs {
                now += dt;
                for t in truth.iter_mut() {
                    t.retain(|&(end, _)| end > now);
                }
                if let Some(t) = r.reserve(p, &[], now) {
                    let used: f64 = truth[t.index].iter().map(|x| x.1).sum();
                    prop_assert!(used + p <= caps[t.index] * (1.0 + 1e-6));
                    truth[t.index].push((now + dur, p));
                    r.confirm(&t, dur, None, now);
                } else {
                    for (i, c) in caps.iter().enumerate() {
                        let used: f64 = truth[i].iter().map(|x| x.1).sum();
                        prop_assert!(used + p > c * (1.0 - 1e-6));
                    }
                }
            }
        }
    }

    #[test]
    fn a_substation_that_leaves_gets_no_traffic_and_returns_afresh() {
        let mut r = Router::new(vec!["a".into()], RouterConfig::default(), 1);
        let b = r.add("b".into());
        assert_eq!(b, 1);
        let sample = |power_w| LoadSample {
            substation: String::new(),
            power_w,
            capacity_w: 100.0,
            sessions: None,
            started: None,
        };
        r.observe(0, &sample(90.0), 0.0, 0.0);
        assert!(
            r.reserve(20.0, &[], 0.0).is_none(),
            "b is not routable before a poll"
        );
        r.observe(b, &sample(0.0), 0.0, 0.0);
        let t = r.reserve(20.0, &[], 0.0).unwrap();
        assert_eq!(t.index, b);
        r.confirm(&t, 100.0, None, 0.0);
        r.retire(b);
        assert!(r.is_retired(b) && !r.is_healthy(b));
        assert!(r.reserve(5.0, &[], 1.0).is_some_and(|t| t.index == 0));
        r.observe(b, &sample(0.0), 2.0, 2.0);
        assert!(!r.is_healthy(b), "a late poll does not bring it back");
        r.rejoin(b);
        r.observe(b, &sample(0.0), 3.0, 3.0);
        assert_eq!(
            r.status(3.0)[b].tracked_sessions,
            0,
            "its old sessions are forgotten"
        );
        assert_eq!(r.estimated_utilization(b), Some(0.0));
    }
}
