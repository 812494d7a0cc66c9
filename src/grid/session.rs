//! The substation's session model: admission under a transformer limit.
//!
//! A `Charger` holds the sessions of one substation. A request is admitted
//! at its full requested power if that power fits under the remaining
//! capacity, otherwise refused (no curtailment in this version). A session
//! lasts `energy / power` simulated hours; `time_scale` simulated seconds pass
//! per real second, so its real duration is that divided by `time_scale`.
//!
//! Time is logical: every call takes `now`, real seconds since an arbitrary
//! origin, and the model never reads a clock. `advance(now)` ends the sessions
//! due by `now` and accrues delivered energy; callers advance before they
//! admit, so a session that ended is never counted against capacity.
//!
//! Invariant: `power_w() <= capacity_w()` after every call (property-tested).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::request::ValidRequest;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The requested power does not fit under the remaining capacity.
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
    /// Power drawn, watts.
    pub power_w: f64,
    /// Real seconds until it ends.
    pub ends_in_s: f64,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    end: f64,
    power_w: f64,
}

// Min-heap on end time.
impl PartialEq for Active {
    fn eq(&self, other: &Self) -> bool {
        self.end == other.end
    }
}
impl Eq for Active {}
impl PartialOrd for Active {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Active {
    fn cmp(&self, other: &Self) -> Ordering {
        other.end.total_cmp(&self.end)
    }
}

/// Sessions of one substation under a power limit.
#[derive(Debug, Clone)]
pub struct Charger {
    capacity_w: f64,
    time_scale: f64,
    active: BinaryHeap<Active>,
    power_w: f64,
    clock: f64,
    started: u64,
    completed: u64,
    energy_j: f64,
}

impl Charger {
    /// A charger with `capacity_w` watts; `time_scale` simulated seconds per real second.
    pub fn new(capacity_w: f64, time_scale: f64) -> Self {
        Charger {
            capacity_w,
            time_scale,
            active: BinaryHeap::new(),
            power_w: 0.0,
            clock: 0.0,
            started: 0,
            completed: 0,
            energy_j: 0.0,
        }
    }

    /// Ends the sessions due by `now` and accrues energy up to `now`.
    /// Returns how many sessions ended. Time never goes backwards.
    pub fn advance(&mut self, now: f64) -> u64 {
        let mut ended = 0;
        while let Some(top) = self.active.peek().copied() {
            if top.end > now {
                break;
            }
            self.accrue(top.end);
            self.active.pop();
            self.power_w -= top.power_w;
            ended += 1;
        }
        if self.active.is_empty() {
            // Sums of floats drift; an idle substation draws exactly nothing.
            self.power_w = 0.0;
        }
        self.accrue(now);
        self.completed += ended;
        ended
    }

    fn accrue(&mut self, to: f64) {
        if to > self.clock {
            self.energy_j += self.power_w * (to - self.clock) * self.time_scale;
            self.clock = to;
        }
    }

    /// Admits `req` at `now` if its power fits, else refuses it.
    pub fn admit(&mut self, req: &ValidRequest, now: f64) -> Result<Admitted, Refusal> {
        self.advance(now);
        let power_w = req.power_w();
        // A small tolerance so that, e.g., ten 10 kW sessions fill 100 kW
        // exactly despite rounding.
        if self.power_w + power_w > self.capacity_w * (1.0 + 1e-9) {
            return Err(Refusal::Capacity);
        }
        let ends_in_s = req.energy_kwh / req.power_kw * 3600.0 / self.time_scale;
        self.active.push(Active {
            end: self.clock + ends_in_s,
            power_w,
        });
        self.power_w += power_w;
        self.started += 1;
        Ok(Admitted {
            seq: self.started,
            power_w,
            ends_in_s,
        })
    }

    /// Power drawn by active sessions, watts.
    pub fn power_w(&self) -> f64 {
        self.power_w
    }
    /// The transformer limit, watts.
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
    /// Sessions currently charging.
    pub fn active(&self) -> usize {
        self.active.len()
    }
    /// Sessions admitted since start.
    pub fn started(&self) -> u64 {
        self.started
    }
    /// Sessions ended since start.
    pub fn completed(&self) -> u64 {
        self.completed
    }
    /// Energy delivered since start, joules (simulated).
    pub fn energy_j(&self) -> f64 {
        self.energy_j
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(power_kw: f64, energy_kwh: f64) -> ValidRequest {
        ValidRequest {
            vehicle_id: None,
            power_kw,
            energy_kwh,
        }
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

    proptest! {
        #[test]
        fn admission_never_exceeds_capacity(
            cap_kw in 1.0f64..2000.0,
            ops in proptest::collection::vec((0.1f64..350.0, 0.1f64..200.0, 0.0f64..5.0), 1..200),
        ) {
            let mut c = Charger::new(cap_kw * 1000.0, 3600.0);
            let mut now = 0.0;
            let mut admitted_w = 0.0;
            for (p, e, dt) in ops {
                now += dt;
                let before = {
                    c.advance(now);
                    c.power_w()
                };
                match c.admit(&req(p, e), now) {
                    Ok(a) => {
                        admitted_w += a.power_w;
                        prop_assert!(before + p * 1000.0 <= c.capacity_w() * (1.0 + 1e-9));
                    }
                    Err(_) => prop_assert!(before + p * 1000.0 > c.capacity_w()),
                }
                prop_assert!(c.power_w() <= c.capacity_w() * (1.0 + 1e-9));
                prop_assert!(c.power_w() >= -1e-6);
                prop_assert!(admitted_w >= c.power_w() - 1e-6);
            }
        }
    }
}
