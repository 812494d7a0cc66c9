//! Offered load: its shape over time, Poisson arrivals that follow it, and the
//! charger classes each request is drawn from.
//!
//! A [`Profile`] is a piecewise-linear function of real time, given by knots;
//! two knots at the same time make a step (the profile is right-continuous).
//! [`Profile::rush`] is the default evening: in fractions of the grid's
//! capacity it ramps from 0 to the hold level (0.95) over the first 20% of
//! the run, holds it for 25%, bursts to `burst × hold` (1.3 × 0.95 = 1.235)
//! for 20%, falls back to the hold level for 10% and ramps down to 0 over the
//! last 25%. Multiplying by the capacity gives offered kW, and
//! [`rate_for_power`] turns that into arrivals per real second.
//!
//! [`Arrivals`] draws a non-homogeneous Poisson process by thinning: candidate
//! arrivals at the profile's peak rate, each kept with probability
//! `rate(t) / peak`. Seeded, so a run can be repeated.
//!
//! [`RUSH_CLASSES`] is the default mix of requests, by requested power:
//!
//! | class | share | mean energy | what it stands for |
//! |---|---|---|---|
//! | 7 kW | 30% | 8 kWh | single-phase AC, a top-up at the kerb |
//! | 11 kW | 25% | 12 kWh | three-phase AC at work or a car park |
//! | 22 kW | 20% | 20 kWh | fast AC at a supermarket |
//! | 50 kW | 15% | 30 kWh | DC fast charging |
//! | 150 kW | 10% | 40 kWh | DC high-power charging on a trip |
//!
//! Each request's energy is drawn uniformly within ±50% of its class's mean,
//! so the mean is kept (17.9 kWh over the mix). At its requested power every
//! class charges for 16 to 70 simulated minutes, i.e. 8 to 35 real seconds at
//! the default time scale of 120: short enough that a two-minute run reaches
//! a steady state, long enough that the burst overloads the grid.
//!
//! A share of requests ([`Flex`], default half) accept being curtailed: they
//! carry `min_power_kw = min_fraction × power_kw` (default 0.5), the others
//! no minimum (the substation then never curtails them).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// A piecewise-linear, right-continuous function of time (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    knots: Vec<(f64, f64)>,
}

impl Profile {
    /// A profile through `knots` (time, value): times non-decreasing, values
    /// finite and non-negative, at least one knot. Constant before the first
    /// and after the last knot.
    pub fn new(knots: Vec<(f64, f64)>) -> Result<Profile> {
        if knots.is_empty() {
            return Err(Error::invalid("a profile needs at least one knot"));
        }
        if let Some(&(t, v)) = knots
            .iter()
            .find(|(t, v)| !t.is_finite() || !v.is_finite() || *v < 0.0)
        {
            return Err(Error::invalid(format!("bad profile knot ({t}, {v})")));
        }
        for w in knots.windows(2) {
            if w[1].0 < w[0].0 {
                return Err(Error::invalid(format!(
                    "profile knots out of order: {} after {}",
                    w[1].0, w[0].0
                )));
            }
        }
        Ok(Profile { knots })
    }

    /// A constant value.
    pub fn constant(value: f64) -> Result<Profile> {
        Profile::new(vec![(0.0, value)])
    }

    /// The default evening rush over `duration` seconds, in fractions of
    /// capacity: ramp to `hold`, hold, burst to `burst × hold`, back to
    /// `hold`, ramp down to 0 (see the module documentation for the phases).
    pub fn rush(duration: f64, hold: f64, burst: f64) -> Result<Profile> {
        if !(duration > 0.0 && duration.is_finite()) {
            return Err(Error::invalid(format!(
                "duration must be positive, got {duration}"
            )));
        }
        if !(hold > 0.0 && burst > 0.0) {
            return Err(Error::invalid(format!(
                "hold level and burst factor must be positive, got {hold} and {burst}"
            )));
        }
        let d = duration;
        let peak = hold * burst;
        Profile::new(vec![
            (0.0, 0.0),
            (0.20 * d, hold),
            (0.45 * d, hold),
            (0.45 * d, peak),
            (0.65 * d, peak),
            (0.65 * d, hold),
            (0.75 * d, hold),
            (d, 0.0),
        ])
    }

    /// Linear ramp from 0 to `peak` over `ramp_up` seconds, `peak` until
    /// `end - ramp_down`, then down to 0 at `end` (`None`: no end, no ramp
    /// down). The shape of `rush_hour --rate`.
    pub fn ramps(peak: f64, ramp_up: f64, ramp_down: f64, end: Option<f64>) -> Result<Profile> {
        let mut knots = Vec::new();
        if ramp_up > 0.0 {
            knots.push((0.0, 0.0));
        }
        knots.push((ramp_up.max(0.0), peak));
        if let Some(end) = end {
            if ramp_down > 0.0 {
                knots.push(((end - ramp_down).max(ramp_up.max(0.0)), peak));
                knots.push((end, 0.0));
            }
        }
        Profile::new(knots)
    }

    /// The value at time `t`.
    pub fn at(&self, t: f64) -> f64 {
        // The last knot at or before t; right-continuity at steps follows.
        let i = self.knots.partition_point(|&(kt, _)| kt <= t);
        if i == 0 {
            return self.knots[0].1;
        }
        if i == self.knots.len() {
            return self.knots[i - 1].1;
        }
        let (t0, v0) = self.knots[i - 1];
        let (t1, v1) = self.knots[i];
        v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    }

    /// The largest value.
    pub fn peak(&self) -> f64 {
        self.knots.iter().map(|k| k.1).fold(0.0, f64::max)
    }

    /// The time of the last knot.
    pub fn end(&self) -> f64 {
        self.knots.last().map_or(0.0, |k| k.0)
    }

    /// Every value multiplied by `k` (e.g. fractions of capacity to kW).
    pub fn scaled(&self, k: f64) -> Result<Profile> {
        Profile::new(self.knots.iter().map(|&(t, v)| (t, v * k)).collect())
    }

    /// The integral from `a` to `b` (exact: trapezoids between knots).
    pub fn integral(&self, a: f64, b: f64) -> f64 {
        let mut points = vec![a];
        points.extend(self.knots.iter().map(|k| k.0).filter(|&t| t > a && t < b));
        points.push(b);
        points
            .windows(2)
            .map(|w| {
                // The segment is linear; at a step, `at(l)` is already the
                // value after it, and just short of `r` the value before.
                let (l, r) = (w[0], w[1]);
                0.5 * (self.at(l) + self.at(r - (r - l) * 1e-12)) * (r - l)
            })
            .sum()
    }
}

/// Arrivals per real second that offer `power_kw` with requests of mean
/// energy `mean_energy_kwh` when substations run `time_scale` simulated
/// seconds per real second.
pub fn rate_for_power(power_kw: f64, mean_energy_kwh: f64, time_scale: f64) -> f64 {
    power_kw * time_scale / (mean_energy_kwh * 3600.0)
}

/// The power (kW) offered by `rate` arrivals per real second of mean energy
/// `mean_energy_kwh`: the inverse of [`rate_for_power`].
pub fn power_for_rate(rate: f64, mean_energy_kwh: f64, time_scale: f64) -> f64 {
    rate * mean_energy_kwh * 3600.0 / time_scale
}

/// Arrival times (real seconds) of a Poisson process whose rate follows a
/// profile, up to an optional end. An iterator; unbounded without an end.
#[derive(Debug, Clone)]
pub struct Arrivals {
    rate: Profile,
    peak: f64,
    end: Option<f64>,
    t: f64,
    rng: SmallRng,
}

impl Arrivals {
    /// Arrivals at `rate(t)` per second, for `t < end`.
    pub fn new(rate: Profile, end: Option<f64>, seed: u64) -> Arrivals {
        let peak = rate.peak();
        Arrivals {
            rate,
            peak,
            end,
            t: 0.0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl Iterator for Arrivals {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        if self.peak <= 0.0 {
            return None;
        }
        loop {
            let u: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
            self.t += -u.ln() / self.peak;
            if self.end.is_some_and(|end| self.t >= end) {
                return None;
            }
            if self.rng.gen::<f64>() * self.peak < self.rate.at(self.t) {
                return Some(self.t);
            }
        }
    }
}

/// One class of charger in a mix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargerClass {
    /// Label, e.g. `"22 kW"`.
    pub name: &'static str,
    /// Requested power, kW.
    pub power_kw: f64,
    /// Fraction of requests in this class (the shares of a mix sum to 1).
    pub share: f64,
    /// Mean energy per request, kWh.
    pub energy_kwh: f64,
}

/// The default mix (see the module documentation for the reasons).
pub const RUSH_CLASSES: [ChargerClass; 5] = [
    ChargerClass {
        name: "7 kW",
        power_kw: 7.0,
        share: 0.30,
        energy_kwh: 8.0,
    },
    ChargerClass {
        name: "11 kW",
        power_kw: 11.0,
        share: 0.25,
        energy_kwh: 12.0,
    },
    ChargerClass {
        name: "22 kW",
        power_kw: 22.0,
        share: 0.20,
        energy_kwh: 20.0,
    },
    ChargerClass {
        name: "50 kW",
        power_kw: 50.0,
        share: 0.15,
        energy_kwh: 30.0,
    },
    ChargerClass {
        name: "150 kW",
        power_kw: 150.0,
        share: 0.10,
        energy_kwh: 40.0,
    },
];

/// The class a request of `power_kw` is reported under: the nearest by
/// ratio (so 7.4 kW counts as 7 kW and 120 kW as 150 kW).
pub fn class_of(power_kw: f64, classes: &[ChargerClass]) -> usize {
    let distance = |c: &ChargerClass| (power_kw / c.power_kw).ln().abs();
    (0..classes.len())
        .min_by(|&a, &b| distance(&classes[a]).total_cmp(&distance(&classes[b])))
        .unwrap_or(0)
}

/// Which requests accept curtailment, and down to what.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flex {
    /// Fraction of requests that carry a minimum below their power, 0–1.
    pub share: f64,
    /// Their minimum as a fraction of their power, in (0, 1].
    pub min_fraction: f64,
}

impl Flex {
    /// No request accepts curtailment.
    pub const NONE: Flex = Flex {
        share: 0.0,
        min_fraction: 1.0,
    };

    /// Checks the ranges; the error names the flag.
    pub fn new(share: f64, min_fraction: f64) -> Result<Flex> {
        if !(0.0..=1.0).contains(&share) {
            return Err(Error::invalid(format!(
                "--flexible-share must be in [0, 1], got {share}"
            )));
        }
        if !(min_fraction > 0.0 && min_fraction <= 1.0) {
            return Err(Error::invalid(format!(
                "--min-fraction must be in (0, 1], got {min_fraction}"
            )));
        }
        Ok(Flex {
            share,
            min_fraction,
        })
    }
}

/// What requests are drawn from.
#[derive(Debug, Clone, PartialEq)]
pub enum Mix {
    /// Classes with shares; energy uniform within ±50% of the class mean.
    Classes(Vec<ChargerClass>),
    /// Power and energy uniform in the given ranges (kW, kWh), fixed where
    /// the bounds are equal.
    Uniform {
        /// Smallest and largest power, kW.
        power_kw: (f64, f64),
        /// Smallest and largest energy, kWh.
        energy_kwh: (f64, f64),
    },
}

impl Mix {
    /// The default mix, [`RUSH_CLASSES`].
    pub fn rush() -> Mix {
        Mix::Classes(RUSH_CLASSES.to_vec())
    }

    /// Mean energy of a request, kWh.
    pub fn mean_energy_kwh(&self) -> f64 {
        match self {
            Mix::Classes(cs) => {
                let total: f64 = cs.iter().map(|c| c.share).sum();
                cs.iter().map(|c| c.share * c.energy_kwh).sum::<f64>() / total
            }
            Mix::Uniform { energy_kwh, .. } => 0.5 * (energy_kwh.0 + energy_kwh.1),
        }
    }

    /// Draws one request (its `at_s` is 0; the caller sets it).
    pub fn draw(&self, rng: &mut impl Rng, flex: Flex) -> Planned {
        let (power_kw, energy_kwh) = match self {
            Mix::Classes(cs) => {
                let total: f64 = cs.iter().map(|c| c.share).sum();
                let mut u = rng.gen::<f64>() * total;
                let mut pick = cs.len() - 1;
                for (i, c) in cs.iter().enumerate() {
                    if u < c.share {
                        pick = i;
                        break;
                    }
                    u -= c.share;
                }
                let c = cs[pick];
                (c.power_kw, c.energy_kwh * rng.gen_range(0.5..=1.5))
            }
            Mix::Uniform {
                power_kw,
                energy_kwh,
            } => (uniform(rng, *power_kw), uniform(rng, *energy_kwh)),
        };
        let min_power_kw = (flex.share > 0.0 && rng.gen::<f64>() < flex.share)
            .then_some(power_kw * flex.min_fraction)
            .filter(|&m| m < power_kw);
        Planned {
            at_s: 0.0,
            power_kw,
            energy_kwh: round3(energy_kwh),
            min_power_kw: min_power_kw.map(round3),
        }
    }
}

fn uniform(rng: &mut impl Rng, (lo, hi): (f64, f64)) -> f64 {
    if hi > lo {
        rng.gen_range(lo..=hi)
    } else {
        lo
    }
}

/// Three decimals: enough for kW and kWh, and short on the wire and in CSV.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A request to send at a planned time.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// When to send it, real seconds since the start of the run.
    pub at_s: f64,
    /// Requested power, kW.
    pub power_kw: f64,
    /// Energy to deliver, kWh.
    pub energy_kwh: f64,
    /// The least power accepted, kW; `None`: the requested power.
    pub min_power_kw: Option<f64>,
}

/// Requests drawn from `mix` at the times of `arrivals`, with their own
/// seeded generator (so the sizes do not depend on how arrivals are drawn).
pub fn plan(
    arrivals: impl Iterator<Item = f64>,
    mix: Mix,
    flex: Flex,
    seed: u64,
) -> impl Iterator<Item = Planned> {
    let mut rng = SmallRng::seed_from_u64(seed);
    arrivals.map(move |at_s| Planned {
        at_s,
        ..mix.draw(&mut rng, flex)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn rush_ramps_holds_bursts_and_ramps_down() {
        let p = Profile::rush(120.0, 0.95, 1.3).unwrap();
        assert_eq!(p.at(0.0), 0.0);
        assert!(close(p.at(12.0), 0.475, 1e-9), "half way up the ramp");
        for t in [24.0, 40.0, 53.9] {
            assert!(close(p.at(t), 0.95, 1e-9), "hold at {t}: {}", p.at(t));
        }
        for t in [54.0, 60.0, 77.9] {
            assert!(close(p.at(t), 0.95 * 1.3, 1e-9), "burst at {t}");
        }
        assert!(close(p.peak(), 1.235, 1e-9), "peak = 1.3 x the hold level");
        assert!(close(p.at(80.0), 0.95, 1e-9), "back to the hold level");
        assert!(close(p.at(105.0), 0.475, 1e-9), "half way down");
        assert_eq!(p.at(120.0), 0.0);
        assert_eq!(p.at(500.0), 0.0, "nothing after the end");
        assert_eq!(p.end(), 120.0);
        // Area: ramps 0.95 * (24 + 30) / 2, holds 0.95 * (30 + 12), burst 1.235 * 24.
        let want = 0.95 * 27.0 + 0.95 * 42.0 + 1.235 * 24.0;
        assert!(close(p.integral(0.0, 120.0), want, 1e-6));
    }

    #[test]
    fn profiles_reject_bad_knots() {
        assert!(Profile::new(vec![]).is_err());
        assert!(Profile::new(vec![(1.0, 1.0), (0.0, 1.0)]).is_err());
        assert!(Profile::new(vec![(0.0, -1.0)]).is_err());
        assert!(Profile::new(vec![(0.0, f64::NAN)]).is_err());
        assert!(Profile::rush(0.0, 0.95, 1.3).is_err());
        assert!(Profile::rush(10.0, 0.0, 1.3).is_err());
    }

    #[test]
    fn ramps_match_the_old_rate_shape() {
        let p = Profile::ramps(10.0, 5.0, 5.0, Some(20.0)).unwrap();
        assert_eq!(p.at(0.0), 0.0);
        assert_eq!(p.at(2.5), 5.0);
        assert_eq!(p.at(10.0), 10.0);
        assert_eq!(p.at(17.5), 5.0);
        let flat = Profile::ramps(3.0, 0.0, 5.0, None).unwrap();
        assert_eq!(flat.at(0.0), 3.0);
        assert_eq!(flat.at(1e6), 3.0);
    }

    #[test]
    fn offered_power_and_rate_convert_both_ways() {
        // 95% of the local grid (2800 kW) with the default mix at 120x.
        let mean = Mix::rush().mean_energy_kwh();
        assert!(close(mean, 17.9, 1e-9));
        let rate = rate_for_power(0.95 * 2800.0, mean, 120.0);
        assert!(close(rate, 2660.0 * 120.0 / (17.9 * 3600.0), 1e-12));
        assert!(close(power_for_rate(rate, mean, 120.0), 2660.0, 1e-9));
    }

    #[test]
    fn arrivals_follow_the_profile() {
        // A constant 10/s for 100 s: about 1000 arrivals (sd ~32).
        let n = Arrivals::new(Profile::constant(10.0).unwrap(), Some(100.0), 3).count();
        assert!((870..=1130).contains(&n), "{n} arrivals");
        // The rush shape: arrivals split between phases as the integral says.
        let p = Profile::rush(120.0, 1.0, 1.3)
            .unwrap()
            .scaled(20.0)
            .unwrap();
        let ts: Vec<f64> = Arrivals::new(p.clone(), Some(120.0), 7).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert!(ts.iter().all(|&t| (0.0..120.0).contains(&t)));
        let count = |a: f64, b: f64| ts.iter().filter(|&&t| t >= a && t < b).count() as f64;
        let hold = count(24.0, 54.0);
        let burst = count(54.0, 78.0);
        assert!(close(hold, p.integral(24.0, 54.0), 4.0 * 600f64.sqrt()));
        // Per second, the burst carries 1.3x the hold's rate.
        let ratio = (burst / 24.0) / (hold / 30.0);
        assert!((1.1..1.5).contains(&ratio), "burst/hold rate {ratio}");
        assert_eq!(
            Arrivals::new(Profile::constant(0.0).unwrap(), None, 1).next(),
            None
        );
    }

    #[test]
    fn the_class_mix_has_its_shares_and_energies() {
        let mix = Mix::rush();
        let flex = Flex::new(0.5, 0.5).unwrap();
        let reqs: Vec<Planned> =
            plan(std::iter::repeat_n(0.0, 40_000), mix.clone(), flex, 9).collect();
        for (i, c) in RUSH_CLASSES.iter().enumerate() {
            let of: Vec<&Planned> = reqs
                .iter()
                .filter(|r| class_of(r.power_kw, &RUSH_CLASSES) == i)
                .collect();
            let share = of.len() as f64 / reqs.len() as f64;
            assert!(close(share, c.share, 0.01), "{}: share {share}", c.name);
            let mean = of.iter().map(|r| r.energy_kwh).sum::<f64>() / of.len() as f64;
            assert!(close(mean, c.energy_kwh, 0.03 * c.energy_kwh), "{}", c.name);
            assert!(of.iter().all(|r| r.energy_kwh >= 0.5 * c.energy_kwh - 1e-9
                && r.energy_kwh <= 1.5 * c.energy_kwh + 1e-9));
        }
        let flexible: Vec<&Planned> = reqs.iter().filter(|r| r.min_power_kw.is_some()).collect();
        let share = flexible.len() as f64 / reqs.len() as f64;
        assert!(close(share, 0.5, 0.01), "flexible share {share}");
        assert!(flexible.iter().all(|r| close(
            r.min_power_kw.unwrap_or(0.0),
            r.power_kw * 0.5,
            1e-3
        )));
        let none: Vec<Planned> = plan(std::iter::repeat_n(0.0, 100), mix, Flex::NONE, 9).collect();
        assert!(none.iter().all(|r| r.min_power_kw.is_none()));
        assert!(Flex::new(1.5, 0.5).is_err());
        assert!(Flex::new(0.5, 0.0).is_err());
    }

    #[test]
    fn classes_bin_by_power() {
        assert_eq!(class_of(6.6, &RUSH_CLASSES), 0);
        assert_eq!(class_of(7.0, &RUSH_CLASSES), 0);
        assert_eq!(class_of(7.4, &RUSH_CLASSES), 0);
        assert_eq!(class_of(9.0, &RUSH_CLASSES), 1);
        assert_eq!(class_of(30.0, &RUSH_CLASSES), 2);
        assert_eq!(class_of(50.0, &RUSH_CLASSES), 3);
        assert_eq!(class_of(120.0, &RUSH_CLASSES), 4);
        assert_eq!(class_of(350.0, &RUSH_CLASSES), 4);
    }

    #[test]
    fn uniform_mix_draws_within_its_ranges() {
        let mix = Mix::Uniform {
            power_kw: (11.0, 50.0),
            energy_kwh: (10.0, 10.0),
        };
        assert_eq!(mix.mean_energy_kwh(), 10.0);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..100 {
            let r = mix.draw(&mut rng, Flex::NONE);
            assert!((11.0..=50.0).contains(&r.power_kw));
            assert_eq!(r.energy_kwh, 10.0);
        }
    }
}
