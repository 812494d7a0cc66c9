//! The routing policy: admission as the substations do it, with local
//! accounting, and placement that keeps room for large requests.
//!
//! A substation admits a request iff its *minimum* power fits beside the
//! minimums of the sessions it already has (`committed + min <= limit`; see
//! `grid::session`). The router applies the same rule to an estimate of each
//! substation's committed power. A router that sends every request to the
//! argmin of a polled snapshot herds: until the next poll, every request
//! lands on the same substation. This router keeps, per substation, the last
//! polled sample and corrects it with what it has done itself since then:
//!
//! ```text
//! committed ≈ sampled committed
//!           + minimums of sessions it dispatched after the sample was taken
//!           - minimums of its sessions that have ended since the sample
//!           + minimums of requests in flight (reserved, not yet answered)
//! ```
//!
//! and the same sum over requested power, which estimates the power drawn
//! (`min(limit, requested)`, as max-min sharing gives). A request fits iff
//! estimated committed + its minimum <= capacity. Substations that do not
//! export `substation_committed_watts` are read as if every session were
//! non-curtailable (committed = requested = power drawn).
//!
//! **Ends.** A grant's `ends_in_s` is an estimate at the power granted then;
//! the session really ends earlier if others end and its power rises, later
//! if newcomers curtail it. The router books the end at the estimate anyway:
//! an early end makes it overestimate committed power (it may skip a
//! substation that has room, never overfill one) and a late end makes it
//! underestimate (the substation then answers 503 and the router retries
//! elsewhere). Either error lasts at most until the first poll taken after
//! the true or estimated end, whichever is later, because the sample counts
//! each session exactly by admission number (`seq`) and an ended session is
//! forgotten once a poll taken after its booked end arrives. With minimum =
//! requested (the default request) nothing is ever curtailed and the
//! estimate is exact.
//!
//! **Placement** ([`Placement`]) chooses among the healthy substations that
//! fit. The default, [`Placement::Headroom`], balances (lowest utilisation
//! after admission) while there is room to spare for the largest minimum
//! recently requested; when that room runs short it places where it costs
//! the least of it, and once none is left it packs: a large request takes
//! the tightest fit, a small one the tightest fit elsewhere than the roomiest
//! substation, so free capacity collects in one place instead of being
//! scattered in pieces no large request fits in. `grid_sim --power` compares
//! it with plain least utilisation, best fit and others.
//!
//! **Moves.** When a request fits nowhere but the pooled room could take
//! its minimum, [`Router::plan_moves`] plans a few sessions to hand over
//! from one substation to others (load transfer) so that it fits there; the
//! balancer carries the plan out over HTTP and `grid_sim` on its model.
//!
//! Protocol with the caller (the `RouterActor`): `reserve` picks a substation
//! and books the request as in flight; then exactly one of `confirm` (it was
//! admitted), `refused` (the substation said it is full: its estimate is
//! raised to its capacity until sessions end or a poll corrects it),
//! `unreachable` (marked unhealthy until a poll sent after the failure
//! succeeds) or `abandoned` releases the reservation. `observe` applies a
//! successful poll, `poll_failed` a failed one.
//!
//! Time is logical (`now`, seconds from any origin, non-decreasing); the
//! router never reads a clock, so it can be driven by the discrete-event
//! simulation in `grid::sim` and by tests deterministically.
//!
//! Caveats: sessions admitted by someone else appear only at the next poll;
//! a request in flight while a poll is taken may be counted twice until the
//! following poll when the substation reports no `seq` (the estimate errs
//! high, never low, for the router's own traffic). A poll sent before a
//! session is handed over ([`Router::moved_out`]) but answered after it no
//! longer counts that session, yet the router subtracts it again: until the
//! next poll it underestimates that substation by the session's power (a
//! request sent there meanwhile may get a 503 and be retried elsewhere), as
//! for a session ending between a poll's sending and its answer.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::{Add, AddAssign, Sub, SubAssign};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::exposition::LoadSample;

/// Requests remembered for [`Placement::Headroom`]'s learned reserve.
const HEADROOM_WINDOW: u64 = 1024;
/// [`Placement::Headroom`] balances freely while every placement leaves at
/// least this many slots (room for a reserve-sized request) over all
/// substations. At 1 it fragments more; above 2 it balances worse at
/// moderate load (`grid_sim --power`, loads 0.8 and 0.95).
const SPARE_SLOTS: f64 = 2.0;

/// Default [`RouterConfig::max_moves`].
pub const DEFAULT_MAX_MOVES: usize = 16;

/// How the router chooses among the substations a request fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Placement {
    /// Lowest utilisation after admission (requested power over capacity),
    /// near-ties broken at random: balances, but near saturation leaves a
    /// little room everywhere and enough nowhere for a large request.
    LeastUtilization,
    /// Smallest room left after admission (committed power): packs, keeping
    /// free capacity together, at the price of uneven utilisation.
    BestFit,
    /// Best fit for requests whose minimum is at least `large_w`, least
    /// utilisation for the rest.
    BestFitLarge {
        /// Threshold minimum power, watts.
        large_w: f64,
    },
    /// Keeps room for large requests. The reserve is the largest minimum
    /// among the last 1024 requests (or `reserve_w` if given); a *slot* is
    /// room for one reserve-sized request on one substation. While every
    /// placement leaves at least two slots, least utilisation. Else, among
    /// the placements that cost the fewest slots, least utilisation, as long
    /// as one slot survives. Once none would, pack: a request whose minimum
    /// is at least half the reserve takes the tightest fit, a smaller one the
    /// tightest fit among the substations other than the roomiest (the
    /// roomiest only if it fits nowhere else), so freed room collects there.
    Headroom {
        /// Fixed reserve, watts; `None` learns it from the requests.
        reserve_w: Option<f64>,
    },
}

impl Placement {
    /// The default: [`Placement::Headroom`] with a learned reserve.
    pub const DEFAULT: Placement = Placement::Headroom { reserve_w: None };
}

/// Tunables of the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterConfig {
    /// Utilisations within this of the minimum count as tied.
    pub tie_epsilon: f64,
    /// Subtract the power of dispatched sessions when they end (on by default;
    /// off only to show in `grid_sim` why it matters).
    pub track_ends: bool,
    /// How to choose among the substations that fit.
    pub placement: Placement,
    /// At most this many sessions handed over to make room for one request
    /// that fits nowhere as things stand ([`Router::plan_moves`]); 0 never
    /// moves a session.
    pub max_moves: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            tie_epsilon: 0.02,
            track_ends: true,
            placement: Placement::DEFAULT,
            max_moves: DEFAULT_MAX_MOVES,
        }
    }
}

/// Power booked for one session: what it asks for and the least it accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Demand {
    /// Requested power, watts.
    pub power_w: f64,
    /// Minimum power, watts (`<= power_w`): what admission counts.
    pub min_w: f64,
}

impl Demand {
    /// A request for `power_w` and no less.
    pub fn fixed(power_w: f64) -> Self {
        Demand {
            power_w,
            min_w: power_w,
        }
    }
}

impl Add for Demand {
    type Output = Demand;
    fn add(self, o: Demand) -> Demand {
        Demand {
            power_w: self.power_w + o.power_w,
            min_w: self.min_w + o.min_w,
        }
    }
}
impl Sub for Demand {
    type Output = Demand;
    fn sub(self, o: Demand) -> Demand {
        Demand {
            power_w: self.power_w - o.power_w,
            min_w: self.min_w - o.min_w,
        }
    }
}
impl AddAssign for Demand {
    fn add_assign(&mut self, o: Demand) {
        *self = *self + o;
    }
}
impl SubAssign for Demand {
    fn sub_assign(&mut self, o: Demand) {
        *self = *self - o;
    }
}

/// A booked dispatch: which substation, how much power, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    /// Index of the substation in the router's list.
    pub index: usize,
    /// Reserved requested power, watts.
    pub power_w: f64,
    /// Reserved minimum power, watts.
    pub min_w: f64,
    /// Logical time of the reservation.
    pub at: f64,
}

impl Ticket {
    fn demand(&self) -> Demand {
        Demand {
            power_w: self.power_w,
            min_w: self.min_w,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    end: f64,
    demand: Demand,
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
    // Committed (minimums) and requested power, as sampled.
    load: Demand,
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
    delta: Demand,
    reserved: Demand,
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
            delta: Demand::default(),
            reserved: Demand::default(),
            inflight: 0,
            down_at: f64::NEG_INFINITY,
            retired: false,
        }
    }

    fn advance(&mut self, now: f64) {
        while let Some(top) = self.live.peek().copied() {
            if top.end > now {
                break;
            }
            self.live.pop();
            self.delta -= top.demand;
            self.ended.push(top);
        }
    }

    /// Estimated committed and requested power, watts.
    fn estimate(&self) -> Option<Demand> {
        self.sample.map(|s| {
            let e = s.load + self.delta + self.reserved;
            Demand {
                power_w: e.power_w.max(0.0),
                min_w: e.min_w.max(0.0),
            }
        })
    }

    /// Estimated power drawn: max-min sharing draws `min(limit, requested)`.
    fn power_w(&self) -> Option<f64> {
        let s = self.sample?;
        Some(self.estimate()?.power_w.min(s.capacity_w))
    }

    fn utilization(&self) -> Option<f64> {
        let s = self.sample?;
        let p = self.power_w()?;
        Some(if s.capacity_w > 0.0 {
            p / s.capacity_w
        } else {
            f64::INFINITY
        })
    }

    /// Room left for minimums, watts.
    fn room_w(&self) -> Option<f64> {
        Some(self.sample?.capacity_w - self.estimate()?.min_w)
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
    /// Last polled committed power (sum of minimums), watts.
    pub sampled_committed_w: Option<f64>,
    /// Last polled capacity, watts.
    pub capacity_w: Option<f64>,
    /// Seconds since the last successful poll was taken.
    pub sample_age_s: Option<f64>,
    /// Estimated power drawn now, watts.
    pub estimated_power_w: Option<f64>,
    /// Estimated committed power now, watts: what admission counts.
    pub estimated_committed_w: Option<f64>,
    /// Estimated utilisation (power drawn over capacity) now, 0–1.
    pub estimated_utilization: Option<f64>,
    /// Requests forwarded and not yet answered.
    pub inflight: u32,
    /// Sessions the router dispatched that have not ended yet.
    pub tracked_sessions: usize,
}

/// The largest minimum among the last `HEADROOM_WINDOW` requests, kept as a
/// monotonic queue (amortised O(1) per request).
#[derive(Debug, Clone, Default)]
struct WindowMax {
    count: u64,
    // (request number, minimum), minimums strictly decreasing.
    queue: VecDeque<(u64, f64)>,
}

impl WindowMax {
    fn push(&mut self, x: f64) {
        while self.queue.back().is_some_and(|&(_, y)| y <= x) {
            self.queue.pop_back();
        }
        self.queue.push_back((self.count, x));
        self.count += 1;
        while self
            .queue
            .front()
            .is_some_and(|&(k, _)| k + HEADROOM_WINDOW < self.count)
        {
            self.queue.pop_front();
        }
    }

    fn max(&self) -> f64 {
        self.queue.front().map_or(0.0, |&(_, x)| x)
    }
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    index: usize,
    // Requested power over capacity after admission.
    utilization: f64,
    // Room for minimums after admission, watts.
    room_w: f64,
}

/// The routing state over a fixed list of substations.
#[derive(Debug, Clone)]
pub struct Router {
    views: Vec<View>,
    cfg: RouterConfig,
    rng: SmallRng,
    largest_min: WindowMax,
    // Scratch buffer reused by `reserve` so a decision does not allocate.
    scratch: Vec<Candidate>,
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
            largest_min: WindowMax::default(),
            scratch: Vec::new(),
        }
    }

    /// Sets [`RouterConfig::max_moves`] (0: never move a session).
    pub fn set_max_moves(&mut self, max_moves: usize) {
        self.cfg.max_moves = max_moves;
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
        // An old substation exports power only: its sessions all draw
        // their request and their minimum is their request.
        let committed_w = sample.committed_w.unwrap_or(sample.power_w);
        let obs = Observed {
            power_w: sample.power_w,
            load: Demand {
                power_w: sample.requested_w.unwrap_or(sample.power_w),
                min_w: committed_w,
            },
            capacity_w: sample.capacity_w,
            at,
            started: sample.started,
        };
        let mut delta = Demand::default();
        // Live but not in the sample: add.
        for t in v
            .live
            .iter()
            .filter(|t| !obs.counts(t.dispatched_at, t.seq))
        {
            delta += t.demand;
        }
        // In the sample but ended since: subtract.
        for t in v
            .ended
            .iter()
            .filter(|t| obs.counts(t.dispatched_at, t.seq))
        {
            delta -= t.demand;
        }
        v.delta = delta;
        v.sample = Some(obs);
        if at >= v.down_at {
            v.healthy = true;
        }
    }

    /// A poll failed: no traffic until one succeeds.
    pub fn poll_failed(&mut self, index: usize) {
        self.views[index].healthy = false;
    }

    /// Chooses a substation for a request of `power_w` that accepts no less
    /// than `min_w` at `now`, skipping `exclude`, and books it as in flight.
    /// `None` when no healthy substation's estimated committed power leaves
    /// room for `min_w`.
    pub fn reserve(
        &mut self,
        power_w: f64,
        min_w: f64,
        exclude: &[usize],
        now: f64,
    ) -> Option<Ticket> {
        let min_w = min_w.min(power_w);
        self.largest_min.push(min_w);
        self.scratch.clear();
        let reserve = match self.cfg.placement {
            Placement::Headroom { reserve_w } => {
                reserve_w.unwrap_or_else(|| self.largest_min.max())
            }
            _ => 0.0,
        };
        // For `Headroom`: the roomiest healthy substation, and how many
        // requests of the reserve's size fit on all of them together.
        let (mut top, mut top_room, mut total_slots) = (None, f64::NEG_INFINITY, 0.0);
        for (i, v) in self.views.iter_mut().enumerate() {
            v.advance(now);
            if !v.healthy || v.retired {
                continue;
            }
            let (Some(s), Some(est), Some(room)) = (v.sample, v.estimate(), v.room_w()) else {
                continue;
            };
            if room > top_room {
                top_room = room;
                top = Some(i);
            }
            if reserve > 0.0 {
                total_slots += (room / reserve).floor().max(0.0);
            }
            if exclude.contains(&i) || room - min_w < -s.capacity_w * 1e-9 {
                continue;
            }
            self.scratch.push(Candidate {
                index: i,
                utilization: if s.capacity_w > 0.0 {
                    (est.power_w + power_w) / s.capacity_w
                } else {
                    f64::INFINITY
                },
                room_w: room - min_w,
            });
        }
        if self.scratch.is_empty() {
            return None;
        }
        let pack = match self.cfg.placement {
            Placement::LeastUtilization => Pack::No,
            Placement::BestFit => Pack::All,
            Placement::BestFitLarge { large_w } => {
                if min_w >= large_w {
                    Pack::All
                } else {
                    Pack::No
                }
            }
            Placement::Headroom { .. } => {
                // Slots: how many requests of the reserve's size fit, summed
                // over the healthy substations. Placing a request costs the
                // substation it lands on 0 or 1 (or more) of them.
                let slots = |room: f64| {
                    if reserve > 0.0 {
                        (room / reserve).floor().max(0.0)
                    } else {
                        0.0
                    }
                };
                let cost = |c: &Candidate| slots(c.room_w + min_w) - slots(c.room_w);
                let least = self.scratch.iter().map(cost).fold(f64::INFINITY, f64::min);
                let most = self.scratch.iter().map(cost).fold(0.0, f64::max);
                if total_slots - most >= SPARE_SLOTS {
                    // Room for large requests to spare wherever this goes:
                    // balance.
                    Pack::No
                } else if total_slots - least >= 1.0 {
                    // Room for the reserve survives: balance among the
                    // placements that keep the most of it.
                    self.scratch.retain(|c| cost(c) <= least);
                    Pack::No
                } else if min_w >= reserve / 2.0 {
                    Pack::All
                } else {
                    Pack::Except(top)
                }
            }
        };
        let pick = match pack {
            Pack::No => {
                let best = self
                    .scratch
                    .iter()
                    .map(|c| c.utilization)
                    .fold(f64::INFINITY, f64::min);
                let limit = best + self.cfg.tie_epsilon;
                self.scratch.retain(|c| c.utilization <= limit);
                self.scratch[self.rng.gen_range(0..self.scratch.len())].index
            }
            Pack::All | Pack::Except(_) => {
                let spare = match pack {
                    Pack::Except(Some(t)) if self.scratch.iter().any(|c| c.index != t) => Some(t),
                    _ => None,
                };
                self.scratch
                    .iter()
                    .filter(|c| Some(c.index) != spare)
                    .min_by(|a, b| {
                        a.room_w
                            .total_cmp(&b.room_w)
                            .then(a.utilization.total_cmp(&b.utilization))
                    })
                    .map(|c| c.index)?
            }
        };
        let v = &mut self.views[pick];
        let demand = Demand { power_w, min_w };
        v.reserved += demand;
        v.inflight += 1;
        Some(Ticket {
            index: pick,
            power_w,
            min_w,
            at: now,
        })
    }

    fn release(&mut self, ticket: &Ticket) -> &mut View {
        let v = &mut self.views[ticket.index];
        v.reserved -= ticket.demand();
        v.reserved.power_w = v.reserved.power_w.max(0.0);
        v.reserved.min_w = v.reserved.min_w.max(0.0);
        v.inflight = v.inflight.saturating_sub(1);
        if v.inflight == 0 {
            v.reserved = Demand::default();
        }
        v
    }

    /// The substation admitted the session (admission number `seq`, if it
    /// reports one); it is estimated to end `ends_in_s` after `now` (see the
    /// module docs for why an estimate is enough).
    pub fn confirm(&mut self, ticket: &Ticket, ends_in_s: f64, seq: Option<u64>, now: f64) {
        let track = self.cfg.track_ends && !self.views[ticket.index].retired;
        let v = self.release(ticket);
        // A poll that raced with this request may already include it.
        let in_sample = v.sample.is_some_and(|s| s.counts(ticket.at, seq));
        if !in_sample {
            v.delta += ticket.demand();
        }
        if track {
            v.live.push(Tracked {
                end: now + ends_in_s.max(0.0),
                demand: ticket.demand(),
                dispatched_at: ticket.at,
                seq,
            });
        }
    }

    /// The substation refused (full): treat it as full until sessions end or
    /// a poll says otherwise.
    pub fn refused(&mut self, ticket: &Ticket) {
        let v = self.release(ticket);
        if let (Some(s), Some(est)) = (v.sample, v.estimate()) {
            if est.min_w < s.capacity_w {
                v.delta.min_w += s.capacity_w - est.min_w;
            }
            if est.power_w < s.capacity_w {
                v.delta.power_w += s.capacity_w - est.power_w;
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

    /// Makes room for a request that fits nowhere as things stand (call it
    /// when [`Router::reserve`] returned `None`) by handing sessions over: if
    /// the healthy substations' pooled room could take `min_w`, finds the
    /// substation (other than `exclude`) that needs the fewest of the
    /// sessions this router placed there (at most
    /// [`RouterConfig::max_moves`], then the least power moved) moved to the
    /// others' room for the request's minimum to fit, and books it all: each
    /// moved session's continuation as in flight on its new substation (a
    /// [`Move`]'s ticket) and the request itself as in flight where room is
    /// made. The moved sessions keep counting on their old substation until
    /// [`Router::moved_out`], so nothing else is placed into the room being
    /// made. `None` if it finds no plan (nothing is booked): the search is
    /// greedy, one exchange at a time without backtracking, so it can miss
    /// a plan a full search would find (`grid_sim --power` counts what it
    /// leaves).
    ///
    /// A plan may swap: a session leaves the substation being emptied for
    /// one with a little room, and a smaller one comes back from there. So
    /// the caller first hands every session over (its old substation stops
    /// it and says how much energy it still needs) and calls `moved_out` for
    /// each, then admits every continuation on its new substation and
    /// settles its ticket, then forwards the request and settles the
    /// request's ticket. Room is checked for the state after all moves.
    pub fn plan_moves(
        &mut self,
        power_w: f64,
        min_w: f64,
        exclude: &[usize],
        now: f64,
    ) -> Option<Rebalance> {
        if self.cfg.max_moves == 0 {
            return None;
        }
        let min_w = min_w.min(power_w);
        let bins: Vec<Option<Bin>> = self
            .views
            .iter_mut()
            .map(|v| {
                v.advance(now);
                if !v.healthy || v.retired {
                    return None;
                }
                let room_w = v.room_w()?;
                // The largest first: the fewest moves.
                let mut movable: Vec<Tracked> = v
                    .live
                    .iter()
                    .filter(|t| t.seq.is_some() && t.end > now)
                    .copied()
                    .collect();
                movable.sort_by(|a, b| {
                    b.demand
                        .min_w
                        .total_cmp(&a.demand.min_w)
                        .then(b.end.total_cmp(&a.end))
                });
                Some(Bin { room_w, movable })
            })
            .collect();
        let pooled: f64 = bins.iter().flatten().map(|b| b.room_w.max(0.0)).sum();
        if pooled + EPS_W < min_w {
            return None;
        }
        // The roomiest substations need the least moved: plan for a few of
        // them, so that a plan costs the same over 4 substations or 100.
        let mut candidates: Vec<(usize, f64)> = bins
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((i, b.as_ref()?.room_w)))
            .filter(|&(i, room)| !exclude.contains(&i) && room < min_w)
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        candidates.truncate(PLAN_CANDIDATES);
        let mut best: Option<(f64, usize, Vec<Shift>)> = None;
        for (into, _) in candidates {
            let Some(plan) = plan_into(&bins, into, min_w, self.cfg.max_moves) else {
                continue;
            };
            let moved: f64 = plan.iter().map(|m| m.session.demand.min_w).sum();
            let better = best
                .as_ref()
                .is_none_or(|(w, _, b)| (plan.len(), moved) < (b.len(), *w));
            if better {
                best = Some((moved, into, plan));
            }
        }
        let (_, into, plan) = best?;
        let mut book = |index: usize, demand: Demand| {
            let v = &mut self.views[index];
            v.reserved += demand;
            v.inflight += 1;
            Ticket {
                index,
                power_w: demand.power_w,
                min_w: demand.min_w,
                at: now,
            }
        };
        let moves = plan
            .into_iter()
            .map(|m| Move {
                from: m.from,
                seq: m.session.seq.unwrap_or_default(),
                ticket: book(m.to, m.session.demand),
            })
            .collect();
        let ticket = book(into, Demand { power_w, min_w });
        Some(Rebalance { moves, ticket })
    }

    /// Substation `from` handed session `seq` over at `now` (or it had
    /// already ended): it no longer counts there.
    pub fn moved_out(&mut self, from: usize, seq: u64, now: f64) {
        let v = &mut self.views[from];
        let Some(t) = v.live.iter().find(|t| t.seq == Some(seq)).copied() else {
            return;
        };
        v.live.retain(|t| t.seq != Some(seq));
        // As if it had ended now: a poll taken before counts it, a later one not.
        v.delta -= t.demand;
        v.ended.push(Tracked { end: now, ..t });
    }

    /// Estimated utilisation (power drawn over capacity) of `index` at the
    /// last advance, if sampled.
    pub fn estimated_utilization(&self, index: usize) -> Option<f64> {
        self.views[index].utilization()
    }

    /// Estimated committed power (sum of minimums) of `index` at the last
    /// advance, watts, if sampled.
    pub fn estimated_committed_w(&self, index: usize) -> Option<f64> {
        self.views[index].estimate().map(|e| e.min_w)
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
                    sampled_committed_w: v.sample.map(|s| s.load.min_w),
                    capacity_w: v.sample.map(|s| s.capacity_w),
                    sample_age_s: v.sample.map(|s| (now - s.at).max(0.0)),
                    estimated_power_w: v.power_w(),
                    estimated_committed_w: v.estimate().map(|e| e.min_w),
                    estimated_utilization: v.utilization(),
                    inflight: v.inflight,
                    tracked_sessions: v.live.len(),
                }
            })
            .collect()
    }
}

/// A session to hand over from one substation to another (see
/// [`Router::plan_moves`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The substation it runs on now.
    pub from: usize,
    /// Its admission number there.
    pub seq: u64,
    /// Its continuation, booked as in flight on the substation taking it over.
    pub ticket: Ticket,
}

/// Room made for one request by moving sessions away.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebalance {
    /// The sessions to hand over, in order.
    pub moves: Vec<Move>,
    /// The request, booked as in flight where the moves make room.
    pub ticket: Ticket,
}

/// Substations [`Router::plan_moves`] tries to make room on: the roomiest.
const PLAN_CANDIDATES: usize = 4;
/// Substations a plan exchanges sessions with: those with the most room.
const PLAN_PARTNERS: usize = 8;

/// Most sessions one exchange moves each way.
const ARITY: usize = 3;

/// Slack on the planner's room comparisons, watts.
const EPS_W: f64 = 1e-3;

/// A substation as [`Router::plan_moves`] sees it.
struct Bin {
    /// Estimated room for minimums, watts.
    room_w: f64,
    /// The sessions this router placed there and may move, largest first.
    movable: Vec<Tracked>,
}

/// One session to move in a plan.
#[derive(Debug, Clone, Copy)]
struct Shift {
    from: usize,
    to: usize,
    session: Tracked,
}

/// Moves (at most `max_moves`) after which `min_w` fits on `into`, or
/// `None`. Built step by step; each step is an *exchange* with one other
/// substation `t`: one to three sessions leave `into` for `t` and up to
/// three others (smaller in all) come back, for a net gain on `into` that
/// `t` has room for. (A step with nothing coming back is a plain move; one with something
/// coming back lets room below the smallest session's size be used.) A step
/// that finishes the job is preferred, with the fewest moves, then the
/// smallest gain, then the tightest fit on `t`; otherwise, in three
/// searches, the largest gain per move, the smallest gain, or the largest
/// gain; the shortest of the plans found wins.
fn plan_into(
    bins: &[Option<Bin>],
    into: usize,
    min_w: f64,
    max_moves: usize,
) -> Option<Vec<Shift>> {
    // Greedy searches miss plans a different order of steps finds: try a
    // few orders and keep the shortest plan.
    [Greed::Rate, Greed::Fine, Greed::Coarse]
        .into_iter()
        .filter_map(|greed| plan_greedily(bins, into, min_w, max_moves, greed))
        .min_by_key(Vec::len)
}

/// How [`plan_into`] ranks steps that do not finish the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Greed {
    /// The largest gain per move, then the tightest fit.
    Rate,
    /// The smallest gain, then the tightest fit: room gathered in fine steps.
    Fine,
    /// The largest gain, then the fewest moves.
    Coarse,
}

/// One greedy search of [`plan_into`], ranking unfinished steps by `greed`.
fn plan_greedily(
    bins: &[Option<Bin>],
    into: usize,
    min_w: f64,
    max_moves: usize,
    greed: Greed,
) -> Option<Vec<Shift>> {
    let mut need = min_w - bins[into].as_ref()?.room_w;
    let mut free: Vec<f64> = bins
        .iter()
        .map(|b| b.as_ref().map_or(0.0, |b| b.room_w))
        .collect();
    let mut used: Vec<Vec<bool>> = bins
        .iter()
        .map(|b| {
            b.as_ref()
                .map_or(Vec::new(), |b| vec![false; b.movable.len()])
        })
        .collect();
    let mut plan = Vec::new();
    while need > EPS_W {
        let budget = max_moves - plan.len();
        let outs = combos(bins[into].as_ref()?, &used[into], 1, budget.min(ARITY));
        let mut best: Option<(Step, usize, Vec<usize>, Vec<usize>)> = None;
        let mut partners: Vec<usize> = (0..bins.len())
            .filter(|&t| t != into && bins[t].is_some() && free[t] > EPS_W)
            .collect();
        partners.sort_by(|&a, &b| free[b].total_cmp(&free[a]));
        partners.truncate(PLAN_PARTNERS);
        for t in partners {
            let Some(bin) = &bins[t] else { continue };
            let backs = combos(bin, &used[t], 0, budget.saturating_sub(1).min(ARITY));
            for (out_w, out) in &outs {
                for (back_w, back) in &backs {
                    let moves = out.len() + back.len();
                    let gain = out_w - back_w;
                    if moves > budget || gain <= EPS_W || gain > free[t] + EPS_W {
                        continue;
                    }
                    let step = Step {
                        done: gain + EPS_W >= need,
                        moves,
                        gain,
                        left_w: free[t] - gain,
                    };
                    if best
                        .as_ref()
                        .is_none_or(|(b, ..)| step.better_than(b, greed))
                    {
                        best = Some((step, t, out.clone(), back.clone()));
                    }
                }
            }
        }
        let (step, t, out, back) = best?;
        for (from, to, picked) in [(into, t, out), (t, into, back)] {
            for i in picked {
                used[from][i] = true;
                let session = bins[from].as_ref()?.movable[i];
                plan.push(Shift { from, to, session });
            }
        }
        free[t] -= step.gain;
        need -= step.gain;
    }
    Some(plan)
}

/// A candidate step of [`plan_into`].
#[derive(Debug, Clone, Copy)]
struct Step {
    done: bool,
    moves: usize,
    gain: f64,
    left_w: f64,
}

impl Step {
    fn better_than(&self, o: &Step, greed: Greed) -> bool {
        match (self.done, o.done) {
            (true, false) => true,
            (false, true) => false,
            (true, true) => (self.moves, self.gain, self.left_w) < (o.moves, o.gain, o.left_w),
            (false, false) => match greed {
                Greed::Rate => {
                    let (mine, theirs) = (self.gain / self.moves as f64, o.gain / o.moves as f64);
                    // Equal rates: the tightest fit, so that larger holes
                    // stay whole for later steps.
                    mine > theirs + EPS_W || (mine >= theirs - EPS_W && self.left_w < o.left_w)
                }
                Greed::Fine => (self.gain, self.left_w) < (o.gain, o.left_w),
                Greed::Coarse => {
                    self.gain > o.gain + EPS_W
                        || (self.gain >= o.gain - EPS_W && self.moves < o.moves)
                }
            },
        }
    }
}

/// Sets of `lo..=hi` unused sessions of `bin`, one per multiset of sizes
/// (sessions of one size are interchangeable here), as (total minimum,
/// indices).
fn combos(bin: &Bin, used: &[bool], lo: usize, hi: usize) -> Vec<(f64, Vec<usize>)> {
    // Unused sessions by size, at most `hi` of each.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, t) in bin.movable.iter().enumerate() {
        if used[i] {
            continue;
        }
        let w = t.demand.min_w;
        match groups
            .iter()
            .position(|g| (bin.movable[g[0]].demand.min_w - w).abs() <= EPS_W)
        {
            Some(k) => {
                if groups[k].len() < hi {
                    groups[k].push(i);
                }
            }
            None => groups.push(vec![i]),
        }
    }
    let mut out = Vec::new();
    let mut pick = Vec::new();
    fn walk(
        bin: &Bin,
        groups: &[Vec<usize>],
        lo: usize,
        left: usize,
        pick: &mut Vec<usize>,
        out: &mut Vec<(f64, Vec<usize>)>,
    ) {
        let Some((first, rest)) = groups.split_first() else {
            if pick.len() >= lo {
                let w = pick.iter().map(|&i| bin.movable[i].demand.min_w).sum();
                out.push((w, pick.clone()));
            }
            return;
        };
        for take in 0..=left.min(first.len()) {
            pick.extend_from_slice(&first[..take]);
            walk(bin, rest, lo, left - take, pick, out);
            pick.truncate(pick.len() - take);
        }
    }
    walk(bin, &groups, lo, hi, &mut pick, &mut out);
    out
}

/// Whether a decision balances or packs (and which substation it spares).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pack {
    No,
    All,
    Except(Option<usize>),
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
            ..LoadSample::default()
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
        assert!(r.reserve(1.0, 1.0, &[], 0.0).is_none());
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
            let t = r.reserve(10_000.0, 10_000.0, &[], now).unwrap();
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
        let t = r.reserve(50_000.0, 50_000.0, &[], 1.0).unwrap();
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
        let t = r.reserve(40_000.0, 40_000.0, &[], 2.0).unwrap();
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
        let t = r.reserve(10_000.0, 10_000.0, &[], 0.0).unwrap();
        r.refused(&t);
        assert_eq!(r.estimated_utilization(t.index), Some(1.0));
        let other = 1 - t.index;
        let t2 = r.reserve(10_000.0, 10_000.0, &[], 0.0).unwrap();
        assert_eq!(t2.index, other);
        r.unreachable(&t2, 0.5);
        assert!(!r.is_healthy(other));
        assert!(r.reserve(10_000.0, 10_000.0, &[], 0.5).is_none());
        r.observe(other, &sample(0.0, 100_000.0), 1.0, 1.0);
        assert_eq!(
            r.reserve(10_000.0, 10_000.0, &[], 1.0).unwrap().index,
            other
        );
    }

    #[test]
    fn a_late_answer_to_an_older_poll_does_not_readmit() {
        let mut r = router(&[100_000.0]);
        let t = r.reserve(10_000.0, 10_000.0, &[], 2.0).unwrap();
        r.unreachable(&t, 2.5);
        // Scraped at 2.4, before the failure, answered after it.
        r.observe(0, &sample(0.0, 100_000.0), 2.4, 2.6);
        assert!(!r.is_healthy(0));
        assert!(r.reserve(10_000.0, 10_000.0, &[], 2.6).is_none());
        // The next poll, sent after the failure, re-admits it.
        r.observe(0, &sample(0.0, 100_000.0), 3.0, 3.0);
        assert!(r.is_healthy(0));
        assert!(r.reserve(10_000.0, 10_000.0, &[], 3.0).is_some());
    }

    #[test]
    fn a_failed_poll_ejects_and_the_next_success_readmits() {
        let mut r = router(&[100_000.0, 100_000.0]);
        r.poll_failed(0);
        for k in 0..20 {
            let t = r.reserve(1_000.0, 1_000.0, &[], 1.0 + k as f64).unwrap();
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
                RouterConfig {
                    placement: Placement::LeastUtilization,
                    ..RouterConfig::default()
                },
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
            match r.reserve(power, power, &[], 0.0) {
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
        fn every_placement_admits_iff_a_minimum_fits_and_never_beyond(
            caps in proptest::collection::vec(10_000.0f64..500_000.0, 1..8),
            committed in proptest::collection::vec(0.0f64..1.0, 8),
            healthy in proptest::collection::vec(proptest::bool::ANY, 8),
            history in proptest::collection::vec(1_000.0f64..150_000.0, 0..20),
            power in 1_000.0f64..150_000.0,
            min_frac in 0.1f64..1.0,
            placement in 0usize..4,
            seed in 0u64..1000,
        ) {
            let placement = [
                Placement::LeastUtilization,
                Placement::BestFit,
                Placement::BestFitLarge { large_w: 40_000.0 },
                Placement::DEFAULT,
            ][placement];
            let mut r = Router::new(
                (0..caps.len()).map(|i| format!("s{i}")).collect(),
                RouterConfig { placement, ..RouterConfig::default() },
                seed,
            );
            // Earlier requests, released again, only teach the reserve.
            r.observe(0, &sample(0.0, caps[0]), 0.0, 0.0);
            for &h in &history {
                if let Some(t) = r.reserve(h, h, &[], 0.0) {
                    r.abandoned(&t);
                }
            }
            for (i, c) in caps.iter().enumerate() {
                let s = LoadSample {
                    committed_w: Some(committed[i] * c),
                    requested_w: Some(2.0 * committed[i] * c),
                    ..sample(committed[i] * c, *c)
                };
                r.observe(i, &s, 1.0, 1.0);
                if !healthy[i] {
                    r.poll_failed(i);
                }
            }
            let min = power * min_frac;
            let fits = |i: usize| healthy[i] && committed[i] * caps[i] + min <= caps[i];
            match r.reserve(power, min, &[], 1.0) {
                Some(t) => {
                    prop_assert!(healthy[t.index]);
                    prop_assert!(committed[t.index] * caps[t.index] + min <= caps[t.index] * (1.0 + 1e-9));
                    prop_assert_eq!(t.min_w, min);
                }
                None => prop_assert!(!(0..caps.len()).any(fits)),
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
                if let Some(t) = r.reserve(p, p, &[], now) {
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
    fn admission_counts_minimums_and_old_substations_fall_back_to_power() {
        let mut r = router(&[100_000.0]);
        // 100 kW drawn (curtailed: 150 kW asked for), but minimums only 60 kW.
        let s = LoadSample {
            committed_w: Some(60_000.0),
            requested_w: Some(150_000.0),
            ..sample(100_000.0, 100_000.0)
        };
        r.observe(0, &s, 1.0, 1.0);
        assert!(r.reserve(50_000.0, 41_000.0, &[], 1.0).is_none());
        let t = r.reserve(50_000.0, 40_000.0, &[], 1.0).unwrap();
        assert_eq!((t.power_w, t.min_w), (50_000.0, 40_000.0));
        assert_eq!(r.estimated_committed_w(0), Some(100_000.0));
        r.confirm(&t, 10.0, Some(5), 1.0);
        assert_eq!(r.estimated_committed_w(0), Some(100_000.0));
        assert!(r.reserve(1_000.0, 1_000.0, &[], 2.0).is_none());
        // At its estimated end its minimum is freed.
        r.status(11.0);
        assert_eq!(r.estimated_committed_w(0), Some(60_000.0));
        // A substation without the committed metric: power is the committed.
        r.observe(0, &sample(100_000.0, 100_000.0), 12.0, 12.0);
        assert!(r.reserve(1_000.0, 1_000.0, &[], 12.0).is_none());
    }

    #[test]
    fn a_session_ending_later_than_estimated_is_recounted_at_the_next_poll() {
        let mut r = router(&[100_000.0]);
        let t = r.reserve(60_000.0, 30_000.0, &[], 0.0).unwrap();
        r.confirm(&t, 5.0, Some(1), 0.0);
        // Its booked end passes, but it was curtailed and still runs.
        r.status(6.0);
        assert_eq!(r.estimated_committed_w(0), Some(0.0));
        let running = LoadSample {
            committed_w: Some(30_000.0),
            requested_w: Some(60_000.0),
            started: Some(1),
            ..sample(60_000.0, 100_000.0)
        };
        r.observe(0, &running, 7.0, 7.0);
        assert_eq!(r.estimated_committed_w(0), Some(30_000.0));
        // And one that ends early is dropped by the next poll.
        let t = r.reserve(40_000.0, 40_000.0, &[], 8.0).unwrap();
        r.confirm(&t, 100.0, Some(2), 8.0);
        assert_eq!(r.estimated_committed_w(0), Some(70_000.0));
        let ended = LoadSample {
            committed_w: Some(30_000.0),
            requested_w: Some(60_000.0),
            started: Some(2),
            ..sample(60_000.0, 100_000.0)
        };
        r.observe(0, &ended, 9.0, 9.0);
        assert_eq!(r.estimated_committed_w(0), Some(30_000.0));
    }

    #[test]
    fn headroom_keeps_the_roomiest_substation_for_large_requests() {
        // Rooms 20, 30, 60 and 160 kW; a 150 kW request has been seen.
        let caps = [300_000.0, 500_000.0, 800_000.0, 1_200_000.0];
        let rooms = [20_000.0, 30_000.0, 60_000.0, 160_000.0];
        let fill = |r: &mut Router| {
            for i in 0..4 {
                r.observe(i, &sample(caps[i] - rooms[i], caps[i]), 1.0, 1.0);
            }
        };
        let mut least = Router::new(
            (0..4).map(|i| format!("s{i}")).collect(),
            RouterConfig {
                placement: Placement::LeastUtilization,
                ..RouterConfig::default()
            },
            1,
        );
        fill(&mut least);
        let mut ours = router(&caps);
        fill(&mut ours);
        let t = ours.reserve(150_000.0, 150_000.0, &[], 1.0).unwrap();
        ours.abandoned(&t);
        assert_eq!(t.index, 3);
        // Least utilisation puts a 22 kW session on the big one (86.5% after)
        // and no 150 kW request fits anywhere any more.
        let t = least.reserve(22_000.0, 22_000.0, &[], 1.0).unwrap();
        assert_eq!(t.index, 3);
        // Headroom keeps the 160 kW room and puts small sessions elsewhere
        // while they fit there (30 + 60 kW of room: three 22 kW sessions).
        for _ in 0..3 {
            let t = ours.reserve(22_000.0, 22_000.0, &[], 1.0).unwrap();
            assert!(t.index == 1 || t.index == 2, "{t:?}");
            ours.confirm(&t, 100.0, None, 1.0);
        }
        let t = ours.reserve(150_000.0, 150_000.0, &[], 1.0).unwrap();
        assert_eq!(t.index, 3, "the reserve is still there");
        ours.abandoned(&t);
        // Only the big one is left: a small one may take it then.
        let t = ours.reserve(22_000.0, 22_000.0, &[], 1.0).unwrap();
        assert_eq!(t.index, 3);
        ours.confirm(&t, 100.0, None, 1.0);
        assert!(ours.reserve(150_000.0, 150_000.0, &[], 1.0).is_none());
    }

    #[test]
    fn headroom_packs_once_no_reserve_is_left() {
        // Rooms 40, 30, 100 and 120 kW: no 150 kW slot anywhere. A small
        // request takes the tightest fit other than the roomiest (so room
        // collects there), a large one the tightest fit overall.
        let caps = [300_000.0, 500_000.0, 800_000.0, 1_200_000.0];
        let rooms = [40_000.0, 30_000.0, 100_000.0, 120_000.0];
        let mut r = router(&caps);
        let t = r.reserve(150_000.0, 150_000.0, &[], 0.5).unwrap();
        r.abandoned(&t);
        for i in 0..4 {
            r.observe(i, &sample(caps[i] - rooms[i], caps[i]), 1.0, 1.0);
        }
        assert_eq!(r.reserve(22_000.0, 22_000.0, &[], 1.0).unwrap().index, 1);
        assert_eq!(r.reserve(35_000.0, 35_000.0, &[], 1.0).unwrap().index, 0);
        assert_eq!(r.reserve(90_000.0, 90_000.0, &[], 1.0).unwrap().index, 2);
    }

    #[test]
    fn headroom_balances_while_there_is_room() {
        // Same as least utilisation when every substation has room to spare.
        let caps = [300_000.0, 500_000.0, 800_000.0, 1_200_000.0];
        let mut r = router(&caps);
        let mut counts = [0usize; 4];
        for k in 0..100 {
            let p = if k % 10 == 0 { 150_000.0 } else { 11_000.0 };
            let t = r.reserve(p, p, &[], 1.0).unwrap();
            counts[t.index] += 1;
            r.confirm(&t, 1000.0, None, 1.0);
        }
        let u: Vec<f64> = (0..4)
            .map(|i| r.estimated_utilization(i).unwrap())
            .collect();
        let (lo, hi) = u
            .iter()
            .fold((1.0f64, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(hi - lo < 0.2, "{u:?} {counts:?}");
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
            ..LoadSample::default()
        };
        r.observe(0, &sample(90.0), 0.0, 0.0);
        assert!(
            r.reserve(20.0, 20.0, &[], 0.0).is_none(),
            "b is not routable before a poll"
        );
        r.observe(b, &sample(0.0), 0.0, 0.0);
        let t = r.reserve(20.0, 20.0, &[], 0.0).unwrap();
        assert_eq!(t.index, b);
        r.confirm(&t, 100.0, None, 0.0);
        r.retire(b);
        assert!(r.is_retired(b) && !r.is_healthy(b));
        assert!(r.reserve(5.0, 5.0, &[], 1.0).is_some_and(|t| t.index == 0));
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

    fn router_with(caps: &[f64], cfg: RouterConfig, seed: u64) -> Router {
        let mut r = Router::new(
            (0..caps.len()).map(|i| format!("s{i}")).collect(),
            cfg,
            seed,
        );
        for (i, c) in caps.iter().enumerate() {
            r.observe(i, &sample(0.0, *c), 0.0, 0.0);
        }
        r
    }

    /// Places a fixed-power session on substation `at` (all the others
    /// excluded) and confirms it with admission number `seq`.
    fn place(r: &mut Router, at: usize, power_w: f64, seq: Option<u64>, ends_in_s: f64, now: f64) {
        let others: Vec<usize> = (0..r.len()).filter(|&i| i != at).collect();
        let t = r.reserve(power_w, power_w, &others, now).unwrap();
        assert_eq!(t.index, at);
        r.confirm(&t, ends_in_s, seq, now);
    }

    /// Two 100 kW substations, each with three 20 kW sessions booked to end
    /// 100, 200 and 300 s after `now` (numbered 1 to 3 where `seqs` says
    /// so): 40 kW free on each.
    fn three_by_twenty_on_each(cfg: RouterConfig, seqs: [bool; 2], now: f64) -> Router {
        let mut r = router_with(&[100_000.0, 100_000.0], cfg, 7);
        for (i, with_seq) in seqs.into_iter().enumerate() {
            for k in 1..=3u64 {
                place(
                    &mut r,
                    i,
                    20_000.0,
                    with_seq.then_some(k),
                    100.0 * k as f64,
                    now,
                );
            }
        }
        r
    }

    fn inflight(r: &mut Router, now: f64) -> Vec<u32> {
        r.status(now).iter().map(|v| v.inflight).collect()
    }

    fn committed(r: &Router) -> Vec<f64> {
        (0..r.len())
            .map(|i| r.estimated_committed_w(i).unwrap())
            .collect()
    }

    #[test]
    fn one_session_moves_to_the_other_substation_to_make_room() {
        let now = 1.0;
        let mut r = three_by_twenty_on_each(RouterConfig::default(), [true, true], now);
        // 60 kW fits nowhere (40 + 40 free), but the pooled 80 could take it.
        assert!(r.reserve(60_000.0, 60_000.0, &[], now).is_none());
        let plan = r.plan_moves(60_000.0, 60_000.0, &[], now).unwrap();
        let (a, b) = (plan.ticket.index, 1 - plan.ticket.index);
        assert_eq!(
            (plan.ticket.power_w, plan.ticket.min_w, plan.ticket.at),
            (60_000.0, 60_000.0, now)
        );
        // 20 kW more are needed on `a`: one 20 kW session to `b`'s 40 free.
        // Among equal sizes the one booked to run longest goes.
        assert_eq!(plan.moves.len(), 1, "{plan:?}");
        let m = &plan.moves[0];
        assert_eq!((m.from, m.seq, m.ticket.index), (a, 3, b));
        assert_eq!((m.ticket.power_w, m.ticket.min_w), (20_000.0, 20_000.0));
        // Everything is booked; the moved session still counts on `a`, so
        // nothing else is placed into the room being made.
        assert_eq!(inflight(&mut r, now), [1, 1]);
        assert_eq!(r.estimated_committed_w(a), Some(120_000.0));
        assert_eq!(r.estimated_committed_w(b), Some(80_000.0));
        assert!(r.reserve(1_000.0, 1_000.0, &[b], now).is_none());

        // The caller's protocol: hand over, admit the rest, then the request.
        r.moved_out(m.from, m.seq, now);
        assert_eq!(r.estimated_committed_w(a), Some(100_000.0));
        r.confirm(&m.ticket, 299.0, Some(4), now);
        assert_eq!(r.estimated_committed_w(b), Some(80_000.0));
        r.confirm(&plan.ticket, 50.0, Some(4), now);
        // a: 2 x 20 + 60 = 100 kW; b: 3 x 20 + 20 = 80 kW.
        assert_eq!(r.estimated_committed_w(a), Some(100_000.0));
        assert_eq!(r.estimated_committed_w(b), Some(80_000.0));
        assert_eq!(inflight(&mut r, now), [0, 0]);
        let tracked: Vec<usize> = r.status(now).iter().map(|v| v.tracked_sessions).collect();
        assert_eq!((tracked[a], tracked[b]), (3, 4));

        // Another 60 kW request: 20 kW of pooled room is not enough.
        assert!(r.reserve(60_000.0, 60_000.0, &[], now).is_none());
        assert!(r.plan_moves(60_000.0, 60_000.0, &[], now).is_none());
        assert_eq!(inflight(&mut r, now), [0, 0]);
        assert_eq!(r.estimated_committed_w(a), Some(100_000.0));
        assert_eq!(r.estimated_committed_w(b), Some(80_000.0));
    }

    #[test]
    fn pooled_room_that_is_just_enough_is_gathered_in_one_place() {
        // 80 kW: both of one side's holes must go, two sessions moved.
        let now = 1.0;
        let mut r = three_by_twenty_on_each(RouterConfig::default(), [true, true], now);
        let plan = r.plan_moves(80_000.0, 80_000.0, &[], now).unwrap();
        let (a, b) = (plan.ticket.index, 1 - plan.ticket.index);
        assert_eq!(plan.moves.len(), 2, "{plan:?}");
        let mut seqs: Vec<u64> = plan.moves.iter().map(|m| m.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, [2, 3], "the two booked to run longest");
        for m in &plan.moves {
            assert_eq!((m.from, m.ticket.index), (a, b));
            r.moved_out(m.from, m.seq, now);
        }
        for (k, m) in plan.moves.iter().enumerate() {
            r.confirm(&m.ticket, 200.0, Some(4 + k as u64), now);
        }
        r.confirm(&plan.ticket, 50.0, Some(4), now);
        assert_eq!(r.estimated_committed_w(a), Some(100_000.0));
        assert_eq!(r.estimated_committed_w(b), Some(100_000.0));
        assert_eq!(inflight(&mut r, now), [0, 0]);
    }

    #[test]
    fn an_exchange_uses_holes_smaller_than_any_session() {
        // 6 kW free beside an 11 kW session, 5 kW free beside a 7 kW one: a
        // 7 kW request fits nowhere, and no session fits in the other hole.
        // Swapping them does: 11 kW into 7 + 5, 7 kW back into 11 + 6.
        let now = 1.0;
        let caps = [17_000.0, 12_000.0];
        let mut r = router_with(&caps, RouterConfig::default(), 7);
        place(&mut r, 0, 11_000.0, Some(1), 100.0, now);
        place(&mut r, 1, 7_000.0, Some(1), 100.0, now);
        assert!(r.reserve(7_000.0, 7_000.0, &[], now).is_none());
        let plan = r.plan_moves(7_000.0, 7_000.0, &[], now).unwrap();
        assert_eq!(plan.ticket.index, 0);
        let moves: Vec<(usize, usize, u64, f64)> = plan
            .moves
            .iter()
            .map(|m| (m.from, m.ticket.index, m.seq, m.ticket.min_w))
            .collect();
        assert_eq!(moves, [(0, 1, 1, 11_000.0), (1, 0, 1, 7_000.0)]);
        for m in &plan.moves {
            r.moved_out(m.from, m.seq, now);
        }
        assert!(committed(&r).iter().zip(caps).all(|(c, cap)| *c <= cap));
        for m in &plan.moves {
            r.confirm(&m.ticket, 99.0, Some(2), now);
            assert!(committed(&r).iter().zip(caps).all(|(c, cap)| *c <= cap));
        }
        r.confirm(&plan.ticket, 50.0, Some(3), now);
        // 7 + 7 of 17 kW, and 11 of 12 kW.
        assert_eq!(committed(&r), [14_000.0, 11_000.0]);
        assert_eq!(inflight(&mut r, now), [0, 0]);

        // One move at most: a swap is two, so there is no plan.
        let mut r = router_with(
            &caps,
            RouterConfig {
                max_moves: 1,
                ..RouterConfig::default()
            },
            7,
        );
        place(&mut r, 0, 11_000.0, Some(1), 100.0, now);
        place(&mut r, 1, 7_000.0, Some(1), 100.0, now);
        assert!(r.plan_moves(7_000.0, 7_000.0, &[], now).is_none());
        assert_eq!(inflight(&mut r, now), [0, 0]);
    }

    #[test]
    fn a_plan_of_a_move_then_an_exchange_is_found() {
        // Y (30 kW) holds 13 + 7, X (68 kW) holds 7 + 11, Z (9 kW) is empty.
        // A 58 kW request needs 8 kW more on X. No one step frees it; moving
        // X's 7 kW session first into Y's 10 kW hole would leave no room for
        // the exchange that must follow (11 kW to Y, 7 kW back), so it must
        // go into Z's 9 kW hole, the tighter one. (A search that took the
        // first of equal steps, Y, found no plan.)
        let now = 1.0;
        let caps = [30_000.0, 68_000.0, 9_000.0];
        let mut r = router_with(&caps, RouterConfig::default(), 7);
        place(&mut r, 0, 13_000.0, Some(1), 100.0, now);
        place(&mut r, 0, 7_000.0, Some(2), 100.0, now);
        place(&mut r, 1, 7_000.0, Some(1), 100.0, now);
        place(&mut r, 1, 11_000.0, Some(2), 100.0, now);
        assert!(r.reserve(58_000.0, 58_000.0, &[], now).is_none());
        let plan = r.plan_moves(58_000.0, 58_000.0, &[], now).unwrap();
        assert_eq!(plan.ticket.index, 1);
        let moves: Vec<(usize, usize, f64)> = plan
            .moves
            .iter()
            .map(|m| (m.from, m.ticket.index, m.ticket.min_w))
            .collect();
        assert_eq!(
            moves,
            [(1, 2, 7_000.0), (1, 0, 11_000.0), (0, 1, 7_000.0)],
            "{plan:?}"
        );
        for m in &plan.moves {
            r.moved_out(m.from, m.seq, now);
        }
        for (k, m) in plan.moves.iter().enumerate() {
            r.confirm(&m.ticket, 99.0, Some(10 + k as u64), now);
        }
        r.confirm(&plan.ticket, 50.0, Some(20), now);
        assert_eq!(committed(&r), [24_000.0, 65_000.0, 7_000.0]);
    }

    #[test]
    fn no_moves_when_max_moves_is_zero() {
        let now = 1.0;
        let cfg = RouterConfig {
            max_moves: 0,
            ..RouterConfig::default()
        };
        let mut r = three_by_twenty_on_each(cfg, [true, true], now);
        assert!(r.plan_moves(60_000.0, 60_000.0, &[], now).is_none());
        assert_eq!(inflight(&mut r, now), [0, 0]);
        assert_eq!(committed(&r), [60_000.0, 60_000.0]);
    }

    #[test]
    fn no_plan_and_nothing_booked_when_the_pooled_room_is_short() {
        let now = 1.0;
        let mut r = three_by_twenty_on_each(RouterConfig::default(), [true, true], now);
        // 80 kW of room in all: 81 kW cannot be gathered by any moves.
        assert!(r.plan_moves(81_000.0, 81_000.0, &[], now).is_none());
        assert!(r.plan_moves(150_000.0, 150_000.0, &[], now).is_none());
        assert_eq!(inflight(&mut r, now), [0, 0]);
        assert_eq!(committed(&r), [60_000.0, 60_000.0]);
        // A flexible request is planned for by its minimum.
        let plan = r.plan_moves(150_000.0, 60_000.0, &[], now).unwrap();
        assert_eq!(
            (plan.ticket.power_w, plan.ticket.min_w),
            (150_000.0, 60_000.0)
        );
        assert_eq!(plan.moves.len(), 1);
    }

    #[test]
    fn excluded_substations_are_not_emptied() {
        let now = 1.0;
        let mut r = three_by_twenty_on_each(RouterConfig::default(), [true, true], now);
        assert!(r.plan_moves(60_000.0, 60_000.0, &[0, 1], now).is_none());
        assert_eq!(inflight(&mut r, now), [0, 0]);
        for into in [0, 1] {
            let mut r = three_by_twenty_on_each(RouterConfig::default(), [true, true], now);
            let plan = r.plan_moves(60_000.0, 60_000.0, &[1 - into], now).unwrap();
            assert_eq!(plan.ticket.index, into);
            assert_eq!(plan.moves.len(), 1);
            assert_eq!(
                (plan.moves[0].from, plan.moves[0].ticket.index),
                (into, 1 - into)
            );
        }
    }

    #[test]
    fn sessions_past_their_booked_end_are_not_moved() {
        // Substation 0's sessions were booked to end at 11, 21 and 31 but
        // were curtailed and still run: a poll at 40 counts them. Only
        // substation 1's sessions (booked to 1001..) may move.
        let mut r = router_with(&[100_000.0, 100_000.0], RouterConfig::default(), 7);
        for k in 1..=3u64 {
            place(&mut r, 0, 20_000.0, Some(k), 10.0 * k as f64, 1.0);
            place(&mut r, 1, 20_000.0, Some(k), 1000.0 * k as f64, 1.0);
        }
        let still_running = LoadSample {
            committed_w: Some(60_000.0),
            requested_w: Some(60_000.0),
            started: Some(3),
            ..sample(60_000.0, 100_000.0)
        };
        r.observe(0, &still_running, 40.0, 40.0);
        assert_eq!(committed(&r), [60_000.0, 60_000.0]);
        assert!(r.reserve(60_000.0, 60_000.0, &[], 40.0).is_none());
        let plan = r.plan_moves(60_000.0, 60_000.0, &[], 40.0).unwrap();
        assert_eq!(plan.ticket.index, 1);
        assert_eq!(plan.moves.len(), 1);
        assert_eq!((plan.moves[0].from, plan.moves[0].ticket.index), (1, 0));
        // With substation 1 excluded only 0 could be emptied: no plan.
        r.abandoned(&plan.moves[0].ticket);
        r.abandoned(&plan.ticket);
        assert!(r.plan_moves(60_000.0, 60_000.0, &[1], 40.0).is_none());
        assert_eq!(inflight(&mut r, 40.0), [0, 0]);
    }

    #[test]
    fn sessions_confirmed_without_a_sequence_number_are_not_moved() {
        // The substation cannot be told which session to hand over.
        let now = 1.0;
        let mut r = three_by_twenty_on_each(RouterConfig::default(), [false, true], now);
        let plan = r.plan_moves(60_000.0, 60_000.0, &[], now).unwrap();
        assert_eq!(plan.ticket.index, 1);
        assert_eq!((plan.moves[0].from, plan.moves[0].ticket.index), (1, 0));
        r.abandoned(&plan.moves[0].ticket);
        r.abandoned(&plan.ticket);
        assert!(r.plan_moves(60_000.0, 60_000.0, &[1], now).is_none());
        let mut r = three_by_twenty_on_each(RouterConfig::default(), [false, false], now);
        assert!(r.plan_moves(60_000.0, 60_000.0, &[], now).is_none());
        assert_eq!(inflight(&mut r, now), [0, 0]);
    }

    #[test]
    fn a_moved_session_is_subtracted_once_whatever_the_polls_say() {
        let mut r = router(&[100_000.0]);
        // Sessions 1 and 2 booked to end at 101, session 3 at 51.
        place(&mut r, 0, 20_000.0, Some(1), 100.0, 1.0);
        place(&mut r, 0, 20_000.0, Some(2), 100.0, 1.0);
        place(&mut r, 0, 20_000.0, Some(3), 50.0, 1.0);
        let polled = |committed_w: f64| LoadSample {
            committed_w: Some(committed_w),
            requested_w: Some(committed_w),
            started: Some(3),
            ..sample(committed_w, 100_000.0)
        };
        r.observe(0, &polled(60_000.0), 1.5, 1.5);
        assert_eq!(r.estimated_committed_w(0), Some(60_000.0));
        r.moved_out(0, 3, 2.0);
        assert_eq!(r.estimated_committed_w(0), Some(40_000.0));
        // Unknown or already moved: nothing changes.
        r.moved_out(0, 3, 2.0);
        r.moved_out(0, 9, 2.0);
        assert_eq!(r.estimated_committed_w(0), Some(40_000.0));
        // A poll taken before the hand-over still counts it.
        r.observe(0, &polled(60_000.0), 1.8, 2.1);
        assert_eq!(r.estimated_committed_w(0), Some(40_000.0));
        // One taken after it does not: no second subtraction.
        r.observe(0, &polled(40_000.0), 3.0, 3.0);
        assert_eq!(r.estimated_committed_w(0), Some(40_000.0));
        assert_eq!(r.status(3.0)[0].tracked_sessions, 2);
        // Nor at its old booked end.
        r.status(60.0);
        assert_eq!(r.estimated_committed_w(0), Some(40_000.0));
        r.status(102.0);
        assert_eq!(r.estimated_committed_w(0), Some(0.0));
    }

    /// A session as the property test's model of the substations sees it.
    #[derive(Debug, Clone, Copy)]
    struct Running {
        seq: Option<u64>,
        power_w: f64,
        end: f64,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_plan_moves_each_session_once_and_leaves_every_substation_within_capacity(
            caps_kw in proptest::collection::vec(30u32..=300, 2..=4),
            arrivals in proptest::collection::vec((0usize..5, 1u32..=2000, proptest::bool::ANY), 0..60),
            request in 0.0f64..1.2,
            max_moves in 1usize..=DEFAULT_MAX_MOVES,
            excluded in proptest::option::of(0usize..4),
            fill in 0.5f64..0.95,
            seed in 0u64..1000,
        ) {
            const CLASSES_W: [f64; 5] = [7_000.0, 11_000.0, 22_000.0, 50_000.0, 150_000.0];
            let caps: Vec<f64> = caps_kw.iter().map(|&c| f64::from(c) * 1000.0).collect();
            let n = caps.len();
            let total: f64 = caps.iter().sum();
            let cfg = RouterConfig { max_moves, ..RouterConfig::default() };
            let mut r = router_with(&caps, cfg, seed);
            // What runs on each substation, and its admission counter.
            let mut model: Vec<Vec<Running>> = vec![Vec::new(); n];
            let mut started = vec![0u64; n];
            let sum = |m: &[Running]| m.iter().map(|s| s.power_w).sum::<f64>();
            let mut now = 1.0;
            for (class, ticks, poll) in arrivals {
                now += 0.01;
                for m in model.iter_mut() {
                    m.retain(|s| s.end > now);
                }
                if poll {
                    for (i, m) in model.iter().enumerate() {
                        let s = LoadSample {
                            committed_w: Some(sum(m)),
                            requested_w: Some(sum(m)),
                            started: Some(started[i]),
                            ..sample(sum(m).min(caps[i]), caps[i])
                        };
                        r.observe(i, &s, now, now);
                    }
                }
                let p = CLASSES_W[class];
                // Up to `fill` of the total, so that room is left in pieces.
                if model.iter().map(|m| sum(m)).sum::<f64>() + p > fill * total {
                    continue;
                }
                if let Some(t) = r.reserve(p, p, &[], now) {
                    prop_assert!(sum(&model[t.index]) + p <= caps[t.index]);
                    started[t.index] += 1;
                    let end = now + f64::from(ticks) * 0.05;
                    model[t.index].push(Running { seq: Some(started[t.index]), power_w: p, end });
                    r.confirm(&t, end - now, Some(started[t.index]), now);
                }
            }
            now += 0.01;
            for m in model.iter_mut() {
                m.retain(|s| s.end > now);
            }
            // A request larger than every hole (so it fits nowhere as things
            // stand), up to a little more than the pooled room or the largest
            // capacity, whole kW.
            let rooms: Vec<f64> = (0..n).map(|i| caps[i] - sum(&model[i])).collect();
            let largest = rooms.iter().copied().fold(0.0, f64::max);
            let pooled: f64 = rooms.iter().map(|r| r.max(0.0)).sum();
            let top = caps.iter().copied().fold(0.0, f64::max);
            let q = ((largest + request * (pooled.min(top) - largest)) / 1000.0).ceil() * 1000.0;
            let q = q.max(largest + 1000.0);
            prop_assert!(r.reserve(q, q, &[], now).is_none());
            let exclude: Vec<usize> = excluded.into_iter().filter(|&i| i < n).collect();
            let before = committed(&r);
            let Some(plan) = r.plan_moves(q, q, &exclude, now) else {
                // Nothing booked.
                prop_assert!(inflight(&mut r, now).iter().all(|&k| k == 0));
                prop_assert_eq!(committed(&r), before);
                return Ok(());
            };
            let into = plan.ticket.index;
            prop_assert!(!exclude.contains(&into));
            prop_assert_eq!((plan.ticket.power_w, plan.ticket.min_w), (q, q));
            prop_assert!(plan.moves.len() <= max_moves);
            // Carry the moves out on the model: each takes a session that
            // runs on `from` and was not moved before (a continuation has no
            // number until it is admitted, so it cannot be taken again).
            for m in &plan.moves {
                prop_assert!(m.ticket.index != m.from, "{:?}", plan);
                let k = model[m.from].iter().position(|s| s.seq == Some(m.seq));
                prop_assert!(k.is_some(), "{:?} not on {}: {:?}", m, m.from, plan);
                let s = model[m.from].remove(k.unwrap_or_default());
                prop_assert_eq!((m.ticket.power_w, m.ticket.min_w), (s.power_w, s.power_w));
                model[m.ticket.index].push(Running { seq: None, ..s });
            }
            for (i, m) in model.iter().enumerate() {
                prop_assert!(sum(m) <= caps[i] + 1e-6, "{} over capacity: {:?}", i, plan);
            }
            prop_assert!(sum(&model[into]) + q <= caps[into] + 1e-6, "{:?}", plan);
            // And on the router, which must then agree with the model.
            for m in &plan.moves {
                r.moved_out(m.from, m.seq, now);
            }
            for m in &plan.moves {
                started[m.ticket.index] += 1;
                r.confirm(&m.ticket, 10.0, Some(started[m.ticket.index]), now);
            }
            started[into] += 1;
            r.confirm(&plan.ticket, 10.0, Some(started[into]), now);
            model[into].push(Running { seq: Some(started[into]), power_w: q, end: now + 10.0 });
            prop_assert!(inflight(&mut r, now).iter().all(|&k| k == 0));
            for (i, c) in committed(&r).into_iter().enumerate() {
                prop_assert!((c - sum(&model[i])).abs() < 1e-6, "{} {} {:?}", i, c, model);
                prop_assert!(c <= caps[i] + 1e-6);
            }
        }
    }
}
