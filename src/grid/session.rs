//! The substation's session model: power shared under a transformer limit.
//!
//! A `Charger` holds the sessions of one substation. Each session asks for a
//! power `r` and accepts no less than its minimum `m <= r`; it ends when its
//! energy has been delivered, not at a fixed time.
//!
//! * **Admission.** A request is admitted iff its minimum fits beside the
//!   minimums of every session already there: `Σ m + m_new <= limit`. It is
//!   then charged at its fair share (below), which is the highest power in
//!   `[m, r]` the others' minimums leave room for under max-min fairness.
//! * **Sharing.** Power is shared max-min fairly with bounds: session `i`
//!   draws `clamp(level, m_i, r_i)`, with one water level chosen so the sum
//!   is the limit (or every session draws `r_i` if that fits). When a session
//!   ends, the level rises and curtailed sessions rise back toward `r_i`.
//! * **Limits.** `set_capacity` changes the limit (the grid operator's
//!   signal) and re-shares at once. If the minimums no longer fit, the
//!   newest sessions are paused (power 0) until the oldest ones fit; paused
//!   sessions resume, oldest first, when room returns, and no new session is
//!   admitted while one is paused.
//!
//! `time_scale` simulated seconds pass per real second: a session of `e` kWh
//! at `p` kW lasts `e / p` simulated hours, `e / p * 3600 / time_scale` real
//! seconds if its power never changes.
//!
//! Time is logical: every call takes `now`, real seconds since an arbitrary
//! origin, and the model never reads a clock. `advance(now)` ends the
//! sessions whose energy is delivered by `now` (re-sharing after each end,
//! so the survivors speed up from that instant) and accrues energy; callers
//! advance before they admit, so an ended session never holds power.
//!
//! Invariants (property-tested): `power_w() <= capacity_w()` after every
//! call; every unpaused session draws within `[m, r]`; a session is admitted
//! only if its minimum fits.

use std::collections::{BTreeMap, VecDeque};

use super::request::ValidRequest;

/// Relative slack on comparisons with the limit, so that e.g. ten 10 kW
/// sessions fill 100 kW exactly despite rounding.
const SLACK: f64 = 1e-9;
/// Ended sessions remembered for `session()`, oldest forgotten first.
const ENDED_KEPT: usize = 1024;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its minimum power does not fit beside the other sessions' minimums.
    Capacity,
}

impl Refusal {
    /// The `reason` label of `substation_sessions_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Capacity => "capacity",
        }
    }
}

/// A newly admitted session.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// Sequence number within this charger (starts at 1).
    pub seq: u64,
    /// Power granted now, watts, in `[min, requested]`.
    pub power_w: f64,
    /// Estimated real seconds until it ends, at the power granted now.
    pub ends_in_s: f64,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Drawing its requested power.
    Charging,
    /// Drawing less than requested (but at least its minimum).
    Curtailed,
    /// Drawing nothing: the limit is below the older sessions' minimums.
    Paused,
    /// Its energy has been delivered.
    Done,
    /// Handed over to another substation before its energy was delivered
    /// (a load transfer; see [`Charger::hand_over`]).
    Moved,
}

impl SessionState {
    /// Lower-case name, as in `GET /sessions/{id}`.
    pub fn name(self) -> &'static str {
        match self {
            SessionState::Charging => "charging",
            SessionState::Curtailed => "curtailed",
            SessionState::Paused => "paused",
            SessionState::Done => "done",
            SessionState::Moved => "moved",
        }
    }
}

/// A session as `GET /sessions/{id}` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// Admission sequence number.
    pub seq: u64,
    /// Charging, curtailed, paused or done.
    pub state: SessionState,
    /// Power drawn now, watts.
    pub power_w: f64,
    /// Power requested, watts.
    pub requested_w: f64,
    /// Minimum power, watts.
    pub min_w: f64,
    /// Energy asked for, simulated joules.
    pub energy_j: f64,
    /// Energy delivered so far, simulated joules.
    pub delivered_j: f64,
    /// Estimated real seconds until it ends at the current power; `None`
    /// while paused, 0 once done.
    pub ends_in_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Session {
    seq: u64,
    requested_w: f64,
    min_w: f64,
    energy_j: f64,
    remaining_j: f64,
    power_w: f64,
    paused: bool,
}

impl Session {
    fn info(&self, time_scale: f64) -> SessionInfo {
        let state = if self.paused {
            SessionState::Paused
        } else if self.power_w < self.requested_w * (1.0 - SLACK) {
            SessionState::Curtailed
        } else {
            SessionState::Charging
        };
        SessionInfo {
            seq: self.seq,
            state,
            power_w: self.power_w,
            requested_w: self.requested_w,
            min_w: self.min_w,
            energy_j: self.energy_j,
            delivered_j: self.energy_j - self.remaining_j,
            ends_in_s: self.real_secs_left(time_scale),
        }
    }

    fn real_secs_left(&self, time_scale: f64) -> Option<f64> {
        (self.power_w > 0.0).then(|| self.remaining_j / self.power_w / time_scale)
    }
}

/// Sessions of one substation under a power limit.
#[derive(Debug, Clone)]
pub struct Charger {
    capacity_w: f64,
    time_scale: f64,
    // Admission order (ascending seq): the pausing order is by age.
    sessions: Vec<Session>,
    ended: BTreeMap<u64, SessionInfo>,
    ended_order: VecDeque<u64>,
    power_w: f64,
    clock: f64,
    started: u64,
    completed: u64,
    moved: u64,
    energy_j: f64,
}

impl Charger {
    /// A charger with `capacity_w` watts; `time_scale` simulated seconds per real second.
    pub fn new(capacity_w: f64, time_scale: f64) -> Self {
        Charger {
            capacity_w,
            time_scale,
            sessions: Vec::new(),
            ended: BTreeMap::new(),
            ended_order: VecDeque::new(),
            power_w: 0.0,
            clock: 0.0,
            started: 0,
            completed: 0,
            moved: 0,
            energy_j: 0.0,
        }
    }

    /// Ends the sessions whose energy is delivered by `now`, re-sharing power
    /// after each end, and accrues energy up to `now`. Returns how many
    /// sessions ended. Time never goes backwards.
    pub fn advance(&mut self, now: f64) -> u64 {
        let mut ended = 0;
        while let Some(at) = self.next_end().filter(|&at| at <= now) {
            self.accrue(at);
            let before = self.sessions.len();
            let (done, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sessions)
                .into_iter()
                // A session whose remaining energy is within rounding of zero
                // is done; without the tolerance it could linger forever.
                .partition(|s| s.power_w > 0.0 && s.remaining_j <= s.energy_j * 1e-9);
            self.sessions = live;
            if self.sessions.len() == before {
                // Rounding left the earliest session a hair short; finish it.
                if let Some(i) = self.earliest_ending() {
                    let s = self.sessions.remove(i);
                    self.remember(s);
                    ended += 1;
                }
            } else {
                ended += done.len() as u64;
                for s in done {
                    self.remember(s);
                }
            }
            self.share();
        }
        self.accrue(now);
        self.completed += ended;
        ended
    }

    fn earliest_ending(&self) -> Option<usize> {
        self.sessions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.real_secs_left(self.time_scale).map(|t| (i, t)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    fn remember(&mut self, mut s: Session) {
        s.remaining_j = 0.0;
        s.power_w = 0.0;
        let mut info = s.info(self.time_scale);
        info.state = SessionState::Done;
        info.ends_in_s = Some(0.0);
        self.keep_ended(info);
    }

    fn keep_ended(&mut self, info: SessionInfo) {
        let seq = info.seq;
        self.ended.insert(seq, info);
        self.ended_order.push_back(seq);
        if self.ended_order.len() > ENDED_KEPT {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    /// The logical time at which the next session ends at current powers.
    pub fn next_end(&self) -> Option<f64> {
        self.sessions
            .iter()
            .filter_map(|s| s.real_secs_left(self.time_scale))
            .min_by(f64::total_cmp)
            .map(|left| self.clock + left)
    }

    fn accrue(&mut self, to: f64) {
        if to > self.clock {
            let dt = (to - self.clock) * self.time_scale;
            for s in &mut self.sessions {
                s.remaining_j = (s.remaining_j - s.power_w * dt).max(0.0);
            }
            self.energy_j += self.power_w * dt;
            self.clock = to;
        }
    }

    /// Pauses the newest sessions whose minimums do not fit, then shares the
    /// limit max-min fairly among the rest.
    fn share(&mut self) {
        let limit = self.capacity_w * (1.0 + SLACK);
        let mut mins = 0.0;
        let mut room = true;
        for s in &mut self.sessions {
            // Strict seniority: once one session is paused, every newer one
            // is too, so a paused session is never overtaken.
            room = room && mins + s.min_w <= limit;
            s.paused = !room;
            if room {
                mins += s.min_w;
            }
        }
        let level = water_level(
            self.sessions
                .iter()
                .filter(|s| !s.paused)
                .map(|s| (s.min_w, s.requested_w)),
            self.capacity_w,
        );
        let mut total = 0.0;
        for s in &mut self.sessions {
            s.power_w = if s.paused {
                0.0
            } else {
                level.clamp(s.min_w, s.requested_w)
            };
            total += s.power_w;
        }
        // Sums of floats drift; an idle substation draws exactly nothing.
        self.power_w = if self.sessions.is_empty() { 0.0 } else { total };
    }

    /// Admits `req` at `now` if its minimum fits beside the others' minimums
    /// (and nothing is paused), else refuses it.
    pub fn admit(&mut self, req: &ValidRequest, now: f64) -> Result<Admitted, Refusal> {
        self.advance(now);
        let min_w = req.min_power_w();
        let paused = self.sessions.iter().any(|s| s.paused);
        if paused || self.committed_w() + min_w > self.capacity_w * (1.0 + SLACK) {
            return Err(Refusal::Capacity);
        }
        self.started += 1;
        let energy_j = req.energy_kwh * 3.6e6;
        self.sessions.push(Session {
            seq: self.started,
            requested_w: req.power_w(),
            min_w,
            energy_j,
            remaining_j: energy_j,
            power_w: 0.0,
            paused: false,
        });
        self.share();
        let s = &self.sessions[self.sessions.len() - 1];
        Ok(Admitted {
            seq: s.seq,
            power_w: s.power_w,
            ends_in_s: s.real_secs_left(self.time_scale).unwrap_or(f64::INFINITY),
        })
    }

    /// Sets the limit at `now` (a grid operator's signal): re-shares at once,
    /// pausing the newest sessions if the minimums no longer fit.
    pub fn set_capacity(&mut self, capacity_w: f64, now: f64) {
        self.advance(now);
        self.capacity_w = capacity_w.max(0.0);
        self.share();
    }

    /// Hands session `seq` over at `now`: it leaves this substation with the
    /// energy it still needs, its power is shared among the rest at once, and
    /// it is remembered as `Moved`. Returns it as it stood when it left
    /// (`energy_j - delivered_j` is what the substation that takes it over
    /// must deliver), or `None` if no live session has that number (it
    /// ended, was moved already, or never existed).
    pub fn hand_over(&mut self, seq: u64, now: f64) -> Option<SessionInfo> {
        self.advance(now);
        let i = self.sessions.iter().position(|s| s.seq == seq)?;
        let s = self.sessions.remove(i);
        let live = s.info(self.time_scale);
        self.share();
        self.moved += 1;
        let mut info = live.clone();
        info.state = SessionState::Moved;
        info.power_w = 0.0;
        info.ends_in_s = None;
        self.keep_ended(info);
        Some(live)
    }

    /// A session by admission number: live, or among the last 1024 ended.
    pub fn session(&self, seq: u64) -> Option<SessionInfo> {
        self.sessions
            .iter()
            .find(|s| s.seq == seq)
            .map(|s| s.info(self.time_scale))
            .or_else(|| self.ended.get(&seq).cloned())
    }

    /// Power drawn by active sessions, watts.
    pub fn power_w(&self) -> f64 {
        self.power_w
    }
    /// Power the active sessions ask for, watts.
    pub fn requested_w(&self) -> f64 {
        self.sessions.iter().map(|s| s.requested_w).sum()
    }
    /// Sum of the active sessions' minimums, watts: what a new session's
    /// minimum must fit beside.
    pub fn committed_w(&self) -> f64 {
        self.sessions.iter().map(|s| s.min_w).sum()
    }
    /// The current limit, watts.
    pub fn capacity_w(&self) -> f64 {
        self.capacity_w
    }
    /// `power / capacity`, 0 for a zero-capacity substation.
    pub fn utilization(&self) -> f64 {
        if self.capacity_w > 0.0 {
            self.power_w / self.capacity_w
        } else {
            0.0
        }
    }
    /// Sessions not yet done (charging, curtailed or paused).
    pub fn active(&self) -> usize {
        self.sessions.len()
    }
    /// Sessions drawing less than they asked for, paused ones included.
    pub fn curtailed(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.power_w < s.requested_w * (1.0 - SLACK))
            .count()
    }
    /// Sessions paused by a limit below their minimums.
    pub fn paused(&self) -> usize {
        self.sessions.iter().filter(|s| s.paused).count()
    }
    /// Sessions admitted since start.
    pub fn started(&self) -> u64 {
        self.started
    }
    /// Sessions ended since start.
    pub fn completed(&self) -> u64 {
        self.completed
    }
    /// Sessions handed over to another substation since start.
    pub fn moved(&self) -> u64 {
        self.moved
    }
    /// Energy delivered since start, joules (simulated).
    pub fn energy_j(&self) -> f64 {
        self.energy_j
    }
}

/// The max-min fair water level for sessions with bounds `(min, max)` under
/// `limit`: the `level` with `Σ clamp(level, min, max) = limit`, or the
/// largest `max` if even that fits. Assumes `Σ min <= limit`.
fn water_level(bounds: impl Iterator<Item = (f64, f64)>, limit: f64) -> f64 {
    let bounds: Vec<(f64, f64)> = bounds.collect();
    let top = bounds.iter().map(|b| b.1).fold(0.0, f64::max);
    let at = |level: f64| -> f64 { bounds.iter().map(|&(lo, hi)| level.clamp(lo, hi)).sum() };
    if at(top) <= limit {
        return top;
    }
    // `at` is continuous and non-decreasing, piecewise linear between the
    // bounds: find the segment that crosses `limit`, then interpolate.
    let mut points: Vec<f64> = bounds.iter().flat_map(|&(lo, hi)| [lo, hi]).collect();
    points.sort_by(f64::total_cmp);
    points.dedup();
    let mut lo = 0.0;
    let mut lo_sum = at(0.0);
    for p in points {
        let sum = at(p);
        if sum >= limit {
            if sum <= lo_sum {
                return p;
            }
            return lo + (p - lo) * (limit - lo_sum) / (sum - lo_sum);
        }
        lo = p;
        lo_sum = sum;
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(power_kw: f64, energy_kwh: f64) -> ValidRequest {
        ValidRequest::fixed(power_kw, energy_kwh)
    }

    fn flex(power_kw: f64, min_kw: f64, energy_kwh: f64) -> ValidRequest {
        ValidRequest {
            min_power_kw: min_kw,
            ..ValidRequest::fixed(power_kw, energy_kwh)
        }
    }

    fn kw(x: f64) -> f64 {
        (x / 1000.0 * 1e6).round() / 1e6
    }

    #[test]
    fn sessions_end_after_scaled_duration_and_free_power() {
        // 50 kW for 30 kWh is 36 simulated minutes; at 120x that is 18 s.
        let mut c = Charger::new(100_000.0, 120.0);
        let a = c.admit(&req(50.0, 30.0), 0.0).unwrap();
        assert!((a.ends_in_s - 18.0).abs() < 1e-9);
        assert_eq!(c.power_w(), 50_000.0);
        assert_eq!(c.advance(17.9), 0);
        assert_eq!(c.advance(18.0), 1);
        assert_eq!(c.power_w(), 0.0);
        assert_eq!(c.completed(), 1);
        // 30 kWh delivered, in joules.
        assert!(
            (c.energy_j() - 30.0 * 3.6e6).abs() < 1.0,
            "{}",
            c.energy_j()
        );
        assert_eq!(c.session(1).unwrap().state, SessionState::Done);
    }

    #[test]
    fn refuses_what_does_not_fit_and_fills_exactly() {
        let mut c = Charger::new(100_000.0, 1.0);
        for _ in 0..10 {
            c.admit(&req(10.0, 10.0), 0.0).unwrap();
        }
        assert_eq!(c.admit(&req(0.5, 1.0), 0.0), Err(Refusal::Capacity));
        assert_eq!(c.active(), 10);
    }

    #[test]
    fn a_flexible_request_is_admitted_at_its_fair_share_and_rises_when_room_returns() {
        let mut c = Charger::new(100_000.0, 3600.0);
        // 60 kW of fixed sessions, then a 150 kW request that accepts 20 kW.
        c.admit(&req(60.0, 60.0), 0.0).unwrap();
        let a = c.admit(&flex(150.0, 20.0, 40.0), 0.0).unwrap();
        assert_eq!(kw(a.power_w), 40.0, "the 40 kW left");
        assert_eq!(c.session(2).unwrap().state, SessionState::Curtailed);
        // Estimated end at 40 kW: 1 h simulated, 1 s real.
        assert!((a.ends_in_s - 1.0).abs() < 1e-9);
        // Half-way, the flexible session has delivered half its energy.
        c.advance(0.5);
        let s = c.session(2).unwrap();
        assert!((s.delivered_j - 20.0 * 3.6e6).abs() < 1.0);
        // A second flexible session splits the room max-min fairly.
        let b = c.admit(&flex(30.0, 10.0, 100.0), 0.5).unwrap();
        // 40 kW shared by (20..150) and (10..30): level 20 gives 20 + 20.
        assert_eq!(kw(b.power_w), 20.0);
        assert_eq!(kw(c.session(2).unwrap().power_w), 20.0);
        assert_eq!(kw(c.power_w()), 100.0);
        // When the 60 kW session ends the others rise: 30 kW (its request)
        // and 70 kW.
        c.advance(1.0);
        assert_eq!(c.session(1).unwrap().state, SessionState::Done);
        assert_eq!(kw(c.session(3).unwrap().power_w), 30.0);
        assert_eq!(kw(c.session(2).unwrap().power_w), 70.0);
        assert_eq!(c.session(3).unwrap().state, SessionState::Charging);
    }

    #[test]
    fn admission_is_refused_only_when_the_minimums_do_not_fit() {
        let mut c = Charger::new(100_000.0, 1.0);
        c.admit(&flex(100.0, 40.0, 50.0), 0.0).unwrap();
        c.admit(&flex(100.0, 40.0, 50.0), 0.0).unwrap();
        assert_eq!(kw(c.power_w()), 100.0);
        assert_eq!(
            c.admit(&flex(50.0, 21.0, 10.0), 0.0),
            Err(Refusal::Capacity)
        );
        let a = c.admit(&flex(50.0, 20.0, 10.0), 0.0).unwrap();
        // Level 40: everyone at its minimum.
        assert_eq!(kw(a.power_w), 20.0);
        assert_eq!(c.curtailed(), 3);
        assert_eq!(kw(c.committed_w()), 100.0);
    }

    #[test]
    fn a_lower_limit_curtails_at_once_then_pauses_the_newest_and_resumes_them() {
        let mut c = Charger::new(100_000.0, 1.0);
        for _ in 0..3 {
            c.admit(&flex(30.0, 20.0, 100.0), 0.0).unwrap();
        }
        assert_eq!(kw(c.power_w()), 90.0);
        c.set_capacity(60_000.0, 1.0);
        assert_eq!(kw(c.power_w()), 60.0);
        assert_eq!(c.curtailed(), 3);
        assert_eq!(c.paused(), 0);
        c.set_capacity(45_000.0, 2.0);
        // Two minimums fit (40 kW); the newest pauses, the others share 45.
        assert_eq!(c.paused(), 1);
        assert_eq!(c.session(3).unwrap().state, SessionState::Paused);
        assert_eq!(c.session(3).unwrap().ends_in_s, None);
        assert_eq!(kw(c.session(1).unwrap().power_w), 22.5);
        assert!(c.power_w() <= c.capacity_w());
        // Nothing new while a session is paused, even a small one.
        assert_eq!(c.admit(&req(1.0, 1.0), 2.0), Err(Refusal::Capacity));
        c.set_capacity(100_000.0, 3.0);
        assert_eq!(c.paused(), 0);
        assert_eq!(kw(c.power_w()), 90.0);
    }

    #[test]
    fn a_handed_over_session_leaves_with_exactly_the_energy_it_still_needs() {
        // At 3600x a real second is a simulated hour: after 0.125 s a 50 kW
        // session has delivered 6.25 of its 10 kWh (22.5 MJ of 36 MJ).
        let mut c = Charger::new(100_000.0, 3600.0);
        assert_eq!(c.admit(&req(50.0, 10.0), 0.0).unwrap().seq, 1);
        assert_eq!(c.admit(&req(20.0, 100.0), 0.0).unwrap().seq, 2);
        let info = c.hand_over(1, 0.125).unwrap();
        assert_eq!(info.seq, 1);
        assert_eq!(info.state, SessionState::Charging);
        assert_eq!(info.power_w, 50_000.0);
        assert_eq!((info.requested_w, info.min_w), (50_000.0, 50_000.0));
        assert_eq!(info.energy_j, 36e6);
        assert_eq!(info.delivered_j, 22.5e6);
        assert_eq!(info.energy_j - info.delivered_j, 13.5e6);
        // 3.75 kWh at 50 kW: 4.5 simulated minutes, 0.075 real seconds.
        assert!((info.ends_in_s.unwrap() - 0.075).abs() < 1e-12, "{info:?}");
        // Only the other session is left; the substation counted the energy
        // both drew until the hand-over (20 kW for 0.125 h is 9 MJ).
        assert_eq!(c.active(), 1);
        assert_eq!(c.power_w(), 20_000.0);
        assert_eq!(c.energy_j(), 22.5e6 + 9e6);
        // The moved session delivers nothing more here.
        c.advance(0.5);
        assert_eq!(c.session(1).unwrap().delivered_j, 22.5e6);
        assert_eq!(c.energy_j(), 22.5e6 + 36e6);
    }

    #[test]
    fn a_handed_over_session_is_remembered_as_moved_and_counted_apart() {
        let mut c = Charger::new(100_000.0, 3600.0);
        c.admit(&req(50.0, 10.0), 0.0).unwrap();
        c.admit(&flex(60.0, 30.0, 100.0), 0.0).unwrap();
        assert_eq!(kw(c.committed_w()), 80.0);
        c.hand_over(1, 0.125).unwrap();
        let s = c.session(1).unwrap();
        assert_eq!(s.state, SessionState::Moved);
        assert_eq!(s.power_w, 0.0);
        assert_eq!(s.ends_in_s, None);
        assert_eq!(s.delivered_j, 22.5e6);
        // Its minimum no longer counts for admission.
        assert_eq!(kw(c.committed_w()), 30.0);
        assert_eq!((c.started(), c.completed(), c.moved()), (2, 0, 1));
        // Admission numbers are not reused: the next one is the 3rd.
        assert_eq!(c.admit(&req(70.0, 10.0), 0.125).unwrap().seq, 3);
        assert!(c.power_w() <= c.capacity_w());
    }

    #[test]
    fn a_session_is_handed_over_only_once_and_only_while_it_runs() {
        let mut c = Charger::new(100_000.0, 3600.0);
        // 50 kW for 10 kWh ends at 0.2 s; 20 kW for 100 kWh runs on.
        c.admit(&req(50.0, 10.0), 0.0).unwrap();
        c.admit(&req(20.0, 100.0), 0.0).unwrap();
        assert!(c.hand_over(2, 0.1).is_some());
        assert_eq!(c.hand_over(2, 0.1), None, "moved already");
        assert_eq!(c.hand_over(2, 0.2), None, "moved already");
        assert_eq!(c.hand_over(7, 0.1), None, "never admitted");
        assert_eq!(c.moved(), 1);
        assert_eq!(c.session(2).unwrap().state, SessionState::Moved);
        // The first session's energy is delivered by 0.2: it has ended, so
        // there is nothing left to hand over.
        assert_eq!(c.hand_over(1, 0.25), None);
        assert_eq!(c.session(1).unwrap().state, SessionState::Done);
        assert_eq!((c.started(), c.completed(), c.moved()), (2, 1, 1));
        assert_eq!(c.active(), 0);
        assert_eq!(c.power_w(), 0.0);
    }

    #[test]
    fn handing_over_re_shares_at_once_so_curtailed_sessions_rise() {
        let mut c = Charger::new(100_000.0, 3600.0);
        // 60 kW fixed, then 80 kW that accepts 20: it gets the 40 left.
        c.admit(&req(60.0, 60.0), 0.0).unwrap();
        c.admit(&flex(80.0, 20.0, 80.0), 0.0).unwrap();
        assert_eq!(kw(c.session(2).unwrap().power_w), 40.0);
        assert_eq!(c.session(2).unwrap().state, SessionState::Curtailed);
        let moved = c.hand_over(1, 0.5).unwrap();
        assert_eq!(moved.delivered_j, 30.0 * 3.6e6);
        // The 60 kW are free at once: the curtailed session draws its 80.
        let s = c.session(2).unwrap();
        assert_eq!(kw(s.power_w), 80.0);
        assert_eq!(s.state, SessionState::Charging);
        assert_eq!(kw(c.power_w()), 80.0);
        assert!(c.power_w() <= c.capacity_w());
        // 20 of its 80 kWh went at 40 kW; the other 60 at 80 kW take 0.75 h.
        assert!((c.next_end().unwrap() - 1.25).abs() < 1e-9);
        assert!((s.ends_in_s.unwrap() - 0.75).abs() < 1e-9);
        assert_eq!(c.advance(1.25), 1);
        assert_eq!(c.session(2).unwrap().state, SessionState::Done);
    }

    #[test]
    fn max_min_sharing_spreads_the_freed_power_and_stays_under_the_limit() {
        let mut c = Charger::new(100_000.0, 1.0);
        // 40 kW fixed, then two 50 kW sessions that accept 10: level 30.
        c.admit(&req(40.0, 100.0), 0.0).unwrap();
        c.admit(&flex(50.0, 10.0, 100.0), 0.0).unwrap();
        c.admit(&flex(25.0, 10.0, 100.0), 0.0).unwrap();
        assert_eq!(kw(c.session(2).unwrap().power_w), 35.0);
        assert_eq!(kw(c.session(3).unwrap().power_w), 25.0);
        c.admit(&flex(50.0, 10.0, 100.0), 0.0).unwrap();
        // 60 kW for (10..50), (10..25), (10..50): level 20.
        assert_eq!(kw(c.session(2).unwrap().power_w), 20.0);
        assert_eq!(kw(c.power_w()), 100.0);
        c.hand_over(1, 1.0).unwrap();
        // 100 kW for (10..50), (10..25), (10..50): 25 + 2 x 37.5.
        assert_eq!(kw(c.session(2).unwrap().power_w), 37.5);
        assert_eq!(kw(c.session(3).unwrap().power_w), 25.0);
        assert_eq!(kw(c.session(4).unwrap().power_w), 37.5);
        assert_eq!(c.curtailed(), 2);
        assert_eq!(kw(c.power_w()), 100.0);
        assert!(c.power_w() <= c.capacity_w() * (1.0 + 1e-12));
    }

    #[test]
    fn a_paused_session_can_be_handed_over_and_an_old_ones_departure_resumes_it() {
        let mut c = Charger::new(100_000.0, 1.0);
        for _ in 0..4 {
            c.admit(&flex(30.0, 20.0, 100.0), 0.0).unwrap();
        }
        // Two minimums fit under 45 kW: the 3rd and 4th pause.
        c.set_capacity(45_000.0, 1.0);
        assert_eq!(c.paused(), 2);
        let paused = c.hand_over(4, 2.0).unwrap();
        assert_eq!(paused.state, SessionState::Paused);
        assert_eq!(paused.power_w, 0.0);
        assert_eq!(paused.ends_in_s, None);
        assert_eq!(c.paused(), 1);
        // The oldest leaves: the paused 3rd resumes, 22.5 kW each.
        c.hand_over(1, 3.0).unwrap();
        assert_eq!(c.paused(), 0);
        assert_eq!(c.session(3).unwrap().state, SessionState::Curtailed);
        assert_eq!(kw(c.session(3).unwrap().power_w), 22.5);
        assert_eq!(kw(c.power_w()), 45.0);
        assert!(c.power_w() <= c.capacity_w() * (1.0 + 1e-12));
        assert_eq!(c.moved(), 2);
    }

    #[test]
    fn water_level_meets_the_limit() {
        let b = [(10.0, 30.0), (20.0, 150.0), (5.0, 5.0)];
        assert_eq!(water_level(b.into_iter(), 1000.0), 150.0);
        let l = water_level(b.into_iter(), 100.0);
        let sum: f64 = b.iter().map(|&(lo, hi)| l.clamp(lo, hi)).sum();
        assert!((sum - 100.0).abs() < 1e-9, "{l} {sum}");
        assert_eq!(water_level(std::iter::empty(), 10.0), 0.0);
    }

    proptest! {
        #[test]
        fn power_stays_under_the_limit_and_within_each_sessions_bounds(
            cap_kw in 1.0f64..2000.0,
            ops in proptest::collection::vec(
                (0.1f64..350.0, 0.05f64..1.0, 0.1f64..200.0, 0.0f64..5.0, 0u8..10),
                1..200,
            ),
        ) {
            let mut c = Charger::new(cap_kw * 1000.0, 3600.0);
            let mut now = 0.0;
            let mut delivered = c.energy_j();
            for (p, min_frac, e, dt, kind) in ops {
                now += dt;
                if kind == 0 {
                    // A limit change between 20% and 120% of the original.
                    c.set_capacity(cap_kw * 1000.0 * (0.2 + min_frac), now);
                } else {
                    let committed = {
                        c.advance(now);
                        c.committed_w()
                    };
                    let paused = c.paused() > 0;
                    let r = flex(p, p * min_frac, e);
                    match c.admit(&r, now) {
                        Ok(a) => {
                            prop_assert!(!paused);
                            prop_assert!(committed + r.min_power_w() <= c.capacity_w() * (1.0 + 1e-9));
                            prop_assert!(a.power_w >= r.min_power_w() * (1.0 - 1e-9));
                            prop_assert!(a.power_w <= r.power_w() * (1.0 + 1e-9));
                        }
                        Err(_) => prop_assert!(
                            paused || committed + r.min_power_w() > c.capacity_w()
                        ),
                    }
                }
                prop_assert!(c.power_w() <= c.capacity_w() * (1.0 + 1e-9) + 1e-6);
                prop_assert!(c.power_w() >= -1e-6);
                for s in c.sessions.iter() {
                    if s.paused {
                        prop_assert_eq!(s.power_w, 0.0);
                    } else {
                        prop_assert!(s.power_w >= s.min_w * (1.0 - 1e-9));
                        prop_assert!(s.power_w <= s.requested_w * (1.0 + 1e-9));
                    }
                }
                prop_assert!(c.energy_j() >= delivered);
                delivered = c.energy_j();
            }
            // Every session ends once the limit has room for all of them
            // (one admitted under a raised limit may need more than the
            // original) and time runs on.
            c.set_capacity(1e12, now);
            c.advance(now + 1e9);
            prop_assert_eq!(c.active(), 0);
            prop_assert_eq!(c.completed(), c.started());
        }

        #[test]
        fn sharing_is_max_min_fair(
            cap_kw in 10.0f64..500.0,
            sessions in proptest::collection::vec((1.0f64..150.0, 0.05f64..1.0), 1..30),
        ) {
            let mut c = Charger::new(cap_kw * 1000.0, 1.0);
            for (p, f) in sessions {
                let _ = c.admit(&flex(p, p * f, 50.0), 0.0);
            }
            let total = c.power_w();
            let demand = c.requested_w();
            // Either everyone gets what it asked for, or the limit is used up.
            prop_assert!(
                (demand - total).abs() < 1e-6 * demand.max(1.0)
                    || (c.capacity_w() - total).abs() < 1e-6 * c.capacity_w()
            );
            // Max-min: a session below its request draws at least as much as
            // any session above its own minimum.
            for a in &c.sessions {
                for b in &c.sessions {
                    if a.power_w < a.requested_w * (1.0 - 1e-9) && b.power_w > b.min_w * (1.0 + 1e-9) {
                        prop_assert!(a.power_w >= b.power_w * (1.0 - 1e-9));
                    }
                }
            }
        }
    }
}
