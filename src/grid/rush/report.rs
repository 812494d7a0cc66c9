//! What a run of `rush_hour` saw, and the arithmetic on it.
//!
//! * [`Outcome`]: one request and its answer. Accepted is a 200; refused a
//!   503 (the grid had no room, or the balancer was unreachable); curtailed
//!   an accepted request granted less power than it asked for; anything else
//!   is an error.
//! * [`series`]: those counts per second of the run, by when each request was
//!   sent, and the power each second offered (energy × 3600 / time scale).
//! * [`GridSample`]: one poll of the balancer's `GET /status`: per
//!   substation its last sampled power and limit, and the router's estimate.
//! * [`Summary`]: the totals: energy requested, accepted (the energy of the
//!   accepted requests) and delivered; refusal rate, curtailed share, both
//!   per class; latency percentiles; utilisation.
//!
//! Delivered energy is measured when the substations' `/metrics` can be read
//! (the growth of `substation_energy_delivered_joules_total`, in simulated
//! joules, over the run; it counts every session the substations ran in that
//! time, this run's or not). Otherwise it is estimated from the grants: each
//! session delivers at its granted power from its admission until it has its
//! energy or the run ends. Curtailment after admission makes that estimate
//! high, a rise back to the requested power low; the summary says which
//! figure it shows.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::profile::{class_of, ChargerClass};
use crate::grid::exposition;

/// Joules in a kilowatt-hour.
const J_PER_KWH: f64 = 3.6e6;

/// One request and what came back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// When it was sent, real seconds since the start of the run.
    pub start_s: f64,
    /// Until the answer was read, milliseconds.
    pub latency_ms: f64,
    /// HTTP status; 0 when no answer came.
    pub status: u16,
    /// The substation that admitted it.
    pub substation: Option<String>,
    /// Requested power, kW.
    pub power_kw: f64,
    /// Requested energy, kWh.
    pub energy_kwh: f64,
    /// What went wrong, for anything but a 200.
    pub error: Option<String>,
    /// The minimum power it carried, kW (`None`: the requested power).
    pub min_power_kw: Option<f64>,
    /// Power granted at admission, kW.
    pub granted_power_kw: Option<f64>,
    /// The grant's estimate of the session's length, real seconds.
    pub ends_in_s: Option<f64>,
}

impl Outcome {
    /// Admitted (200).
    pub fn accepted(&self) -> bool {
        self.status == 200
    }

    /// Refused for lack of room (503).
    pub fn refused(&self) -> bool {
        self.status == 503
    }

    /// Neither accepted nor refused.
    pub fn failed(&self) -> bool {
        !self.accepted() && !self.refused()
    }

    /// Admitted with less power than requested.
    pub fn curtailed(&self) -> bool {
        self.accepted()
            && self
                .granted_power_kw
                .is_some_and(|g| g < self.power_kw * (1.0 - 1e-6))
    }

    /// The header of [`Outcome::csv_row`]: the original seven columns first,
    /// so readers of older files keep working.
    pub const CSV_HEADER: &'static str = "start_s,latency_ms,status,substation,power_kw,energy_kwh,error,min_power_kw,granted_power_kw,ends_in_s,curtailed";

    /// One CSV row (no newline).
    pub fn csv_row(&self) -> String {
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        format!(
            "{:.6},{:.3},{},{},{},{},\"{}\",{},{},{},{}",
            self.start_s,
            self.latency_ms,
            self.status,
            self.substation.as_deref().unwrap_or(""),
            self.power_kw,
            self.energy_kwh,
            self.error.as_deref().unwrap_or("").replace('"', "\"\""),
            opt(self.min_power_kw),
            opt(self.granted_power_kw),
            self.ends_in_s
                .map(|x| format!("{x:.3}"))
                .unwrap_or_default(),
            u8::from(self.curtailed()),
        )
    }
}

/// Requests sent in one interval of the run, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the interval, real seconds.
    pub t_s: f64,
    /// Requests sent.
    pub offered: u32,
    /// Of those, accepted.
    pub accepted: u32,
    /// Of those, refused.
    pub refused: u32,
    /// Of the accepted, curtailed.
    pub curtailed: u32,
    /// Of those, failed otherwise.
    pub errors: u32,
    /// Power offered, kW: the energy sent in the interval per simulated hour.
    pub offered_kw: f64,
}

/// The outcomes in intervals of `bucket_s` real seconds, from 0 to at least
/// `end_s`, with offered power at `time_scale`.
pub fn series(outcomes: &[Outcome], bucket_s: f64, end_s: f64, time_scale: f64) -> Vec<Bucket> {
    let last = outcomes.iter().map(|o| o.start_s).fold(end_s, f64::max);
    let n = ((last / bucket_s).floor() as usize + 1).max(1);
    let mut out: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            t_s: i as f64 * bucket_s,
            ..Bucket::default()
        })
        .collect();
    for o in outcomes {
        let i = ((o.start_s.max(0.0) / bucket_s).floor() as usize).min(n - 1);
        let b = &mut out[i];
        b.offered += 1;
        b.accepted += u32::from(o.accepted());
        b.refused += u32::from(o.refused());
        b.curtailed += u32::from(o.curtailed());
        b.errors += u32::from(o.failed());
        b.offered_kw += o.energy_kwh * 3600.0 / time_scale / bucket_s;
    }
    out
}

/// A centred moving average over `window` points (shorter at the edges).
pub fn moving_average(values: &[f64], window: usize) -> Vec<f64> {
    let half = window / 2;
    (0..values.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(values.len());
            values[lo..hi].iter().sum::<f64>() / (hi - lo) as f64
        })
        .collect()
}

/// One substation in a poll of `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubstationSample {
    /// Whether the balancer routes to it.
    pub healthy: bool,
    /// Power it drew at the balancer's last poll, watts.
    pub power_w: Option<f64>,
    /// Its limit at that poll, watts.
    pub capacity_w: Option<f64>,
    /// The router's estimate of its utilisation now (with its own bookings).
    pub estimated_utilization: Option<f64>,
}

impl SubstationSample {
    /// Sampled power over limit.
    pub fn utilization(&self) -> Option<f64> {
        match (self.power_w, self.capacity_w) {
            (Some(p), Some(c)) if c > 0.0 => Some(p / c),
            _ => None,
        }
    }
}

/// One poll of the balancer's `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridSample {
    /// When it was taken, real seconds since the start of the run.
    pub t_s: f64,
    /// By substation name.
    pub substations: BTreeMap<String, SubstationSample>,
}

impl GridSample {
    /// Reads a `/status` body; `None` if it does not have that shape.
    pub fn from_status(t_s: f64, status: &Value) -> Option<GridSample> {
        let mut substations = BTreeMap::new();
        for s in status["substations"].as_array()? {
            substations.insert(
                s["name"].as_str()?.to_string(),
                SubstationSample {
                    healthy: s["healthy"].as_bool().unwrap_or(false),
                    power_w: s["sampled_power_w"].as_f64(),
                    capacity_w: s["capacity_w"].as_f64(),
                    estimated_utilization: s["estimated_utilization"].as_f64(),
                },
            );
        }
        Some(GridSample { t_s, substations })
    }

    /// The sum of the known limits, watts; `None` if none is known yet.
    pub fn capacity_w(&self) -> Option<f64> {
        let known: Vec<f64> = self
            .substations
            .values()
            .filter_map(|s| s.capacity_w)
            .collect();
        (!known.is_empty()).then(|| known.iter().sum())
    }

    /// The sum of the sampled powers, watts.
    pub fn power_w(&self) -> f64 {
        self.substations.values().filter_map(|s| s.power_w).sum()
    }
}

/// The substations' base URLs in a `/status` body.
pub fn substation_urls(status: &Value) -> Vec<String> {
    status["substations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["url"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `substation_energy_delivered_joules_total` in a substation's `/metrics`
/// (summed if there are several), simulated joules.
pub fn delivered_joules(metrics: &str) -> crate::Result<f64> {
    let samples = exposition::parse(metrics)?;
    let found: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == "substation_energy_delivered_joules_total")
        .map(|s| s.value)
        .collect();
    if found.is_empty() {
        return Err(crate::Error::invalid(
            "no substation_energy_delivered_joules_total in metrics",
        ));
    }
    Ok(found.iter().sum())
}

/// Energy delivered, and how it was found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Delivered {
    /// From the substations' counters.
    Measured {
        /// kWh.
        kwh: f64,
    },
    /// From the grants (see the module documentation).
    Estimated {
        /// kWh.
        kwh: f64,
    },
}

impl Delivered {
    /// Measured from the counters before and after (simulated joules, one
    /// per substation, in the same order), if both are complete and no
    /// counter went backwards (a restarted substation).
    pub fn measured(before: &[f64], after: &[f64]) -> Option<Delivered> {
        if before.is_empty() || before.len() != after.len() {
            return None;
        }
        let mut j = 0.0;
        for (b, a) in before.iter().zip(after) {
            if a < b {
                return None;
            }
            j += a - b;
        }
        Some(Delivered::Measured { kwh: j / J_PER_KWH })
    }

    /// Estimated from the grants at `end_s` real seconds.
    pub fn estimated(outcomes: &[Outcome], end_s: f64, time_scale: f64) -> Delivered {
        let kwh = outcomes
            .iter()
            .filter(|o| o.accepted())
            .map(|o| {
                let since = (end_s - o.start_s - o.latency_ms / 1000.0).max(0.0);
                let at = o.granted_power_kw.unwrap_or(o.power_kw);
                (at * since * time_scale / 3600.0).min(o.energy_kwh)
            })
            .sum();
        Delivered::Estimated { kwh }
    }

    /// kWh, however found.
    pub fn kwh(&self) -> f64 {
        match *self {
            Delivered::Measured { kwh } | Delivered::Estimated { kwh } => kwh,
        }
    }
}

/// Requests of one class and what became of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClassSummary {
    /// The class's label.
    pub name: String,
    /// Requests sent.
    pub requests: u64,
    /// Accepted.
    pub accepted: u64,
    /// Refused.
    pub refused: u64,
    /// Accepted with less power than requested.
    pub curtailed: u64,
    /// Energy requested, kWh.
    pub energy_requested_kwh: f64,
}

impl ClassSummary {
    /// Refused over sent (0 when none was sent).
    pub fn refusal_rate(&self) -> f64 {
        ratio(self.refused, self.requests)
    }
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `ms`.
    pub fn of(ms: &[f64]) -> Latency {
        let mut v = ms.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |q: f64| {
            if v.is_empty() {
                0.0
            } else {
                v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
            }
        };
        Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: q(1.0),
        }
    }
}

/// What the summary is computed from.
#[derive(Debug, Clone, Copy)]
pub struct RunFacts<'a> {
    /// Every request.
    pub outcomes: &'a [Outcome],
    /// Every poll of `/status`.
    pub samples: &'a [GridSample],
    /// Classes to report refusals by.
    pub classes: &'a [ChargerClass],
    /// Real seconds from the start of the run to the last answer.
    pub elapsed_s: f64,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// The grid's capacity, kW, if known.
    pub capacity_kw: Option<f64>,
    /// Energy delivered, if found.
    pub delivered: Option<Delivered>,
}

/// The totals of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Real seconds of the run.
    pub elapsed_s: f64,
    /// Requests sent.
    pub requests: u64,
    /// Accepted (200).
    pub accepted: u64,
    /// Refused (503).
    pub refused: u64,
    /// Anything else.
    pub errors: u64,
    /// Accepted with less power than requested.
    pub curtailed: u64,
    /// Refused over sent.
    pub refusal_rate: f64,
    /// Curtailed over accepted.
    pub curtailed_share: f64,
    /// Energy of every request, kWh.
    pub energy_requested_kwh: f64,
    /// Energy of the accepted requests, kWh.
    pub energy_accepted_kwh: f64,
    /// Energy delivered while the run lasted, if found.
    pub delivered: Option<Delivered>,
    /// The grid's capacity, kW, if known.
    pub capacity_kw: Option<f64>,
    /// Mean power offered over the run, kW.
    pub offered_mean_kw: f64,
    /// Highest power offered over any 20 s, kW.
    pub offered_peak_kw: f64,
    /// Highest total power drawn at a poll, kW.
    pub drawn_peak_kw: f64,
    /// By class.
    pub classes: Vec<ClassSummary>,
    /// Latency of every answer.
    pub latency_ms: Latency,
    /// Accepted sessions per substation.
    pub per_substation: BTreeMap<String, u64>,
    /// Polls of `/status`.
    pub samples: usize,
    /// Polls while the grid was 20-85% busy (by the balancer's estimate).
    pub balanced_samples: usize,
    /// Highest estimated utilisation of any substation.
    pub peak_utilization: f64,
    /// Mean over polls of the substations' mean estimated utilisation.
    pub mean_utilization: f64,
    /// Median over the 20-85% busy polls of max / mean estimated utilisation.
    pub median_peak_over_mean: Option<f64>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Summary {
    /// Adds everything up.
    pub fn compute(f: RunFacts<'_>) -> Summary {
        let o = f.outcomes;
        let count = |p: fn(&Outcome) -> bool| o.iter().filter(|x| p(x)).count() as u64;
        let (accepted, refused, errors, curtailed) = (
            count(Outcome::accepted),
            count(Outcome::refused),
            count(Outcome::failed),
            count(Outcome::curtailed),
        );
        let mut classes: Vec<ClassSummary> = f
            .classes
            .iter()
            .map(|c| ClassSummary {
                name: c.name.to_string(),
                ..ClassSummary::default()
            })
            .collect();
        let mut per_substation = BTreeMap::new();
        for x in o {
            if let Some(c) = classes.get_mut(class_of(x.power_kw, f.classes)) {
                c.requests += 1;
                c.accepted += u64::from(x.accepted());
                c.refused += u64::from(x.refused());
                c.curtailed += u64::from(x.curtailed());
                c.energy_requested_kwh += x.energy_kwh;
            }
            if x.accepted() {
                *per_substation
                    .entry(x.substation.clone().unwrap_or_default())
                    .or_insert(0) += 1;
            }
        }
        let energy_requested_kwh = o.iter().map(|x| x.energy_kwh).sum::<f64>();
        let per_second = series(o, 1.0, f.elapsed_s, f.time_scale);
        let offered: Vec<f64> = per_second.iter().map(|b| b.offered_kw).collect();
        let offered_mean_kw = if f.elapsed_s > 0.0 {
            energy_requested_kwh * 3600.0 / f.time_scale / f.elapsed_s
        } else {
            0.0
        };
        let offered_peak_kw = moving_average(&offered, 20).into_iter().fold(0.0, f64::max);

        let mut ratios = Vec::new();
        let (mut peak, mut mean_sum, mut mean_n) = (0.0f64, 0.0, 0usize);
        for s in f.samples {
            let u: Vec<f64> = s
                .substations
                .values()
                .filter_map(|x| x.estimated_utilization)
                .collect();
            if u.is_empty() {
                continue;
            }
            let mean = u.iter().sum::<f64>() / u.len() as f64;
            let max = u.iter().copied().fold(0.0, f64::max);
            peak = peak.max(max);
            mean_sum += mean;
            mean_n += 1;
            if (0.2..=0.85).contains(&mean) {
                ratios.push(max / mean);
            }
        }
        ratios.sort_by(f64::total_cmp);
        Summary {
            elapsed_s: f.elapsed_s,
            requests: o.len() as u64,
            accepted,
            refused,
            errors,
            curtailed,
            refusal_rate: ratio(refused, o.len() as u64),
            curtailed_share: ratio(curtailed, accepted),
            energy_requested_kwh,
            energy_accepted_kwh: o
                .iter()
                .filter(|x| x.accepted())
                .map(|x| x.energy_kwh)
                .sum(),
            delivered: f.delivered,
            capacity_kw: f.capacity_kw,
            offered_mean_kw,
            offered_peak_kw,
            drawn_peak_kw: f
                .samples
                .iter()
                .map(|s| s.power_w() / 1000.0)
                .fold(0.0, f64::max),
            classes,
            latency_ms: Latency::of(&o.iter().map(|x| x.latency_ms).collect::<Vec<_>>()),
            per_substation,
            samples: f.samples.len(),
            balanced_samples: ratios.len(),
            peak_utilization: peak,
            mean_utilization: if mean_n == 0 {
                0.0
            } else {
                mean_sum / mean_n as f64
            },
            median_peak_over_mean: ratios.get(ratios.len() / 2).copied(),
        }
    }

    /// The summary as a Markdown table.
    pub fn table(&self) -> String {
        let mut t = String::from("| metric | value |\n|---|---|\n");
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let of_capacity = |kw: f64| match self.capacity_kw {
            Some(c) if c > 0.0 => format!("{kw:.0} kW ({} of capacity)", pct(kw / c)),
            _ => format!("{kw:.0} kW"),
        };
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "| {k} | {v} |");
        };
        row(
            "requests",
            format!(
                "{} in {:.1} s ({:.1}/s)",
                self.requests,
                self.elapsed_s,
                ratio(self.requests, 1) / self.elapsed_s.max(1e-9)
            ),
        );
        if let Some(c) = self.capacity_kw {
            row("grid capacity", format!("{c:.0} kW"));
        }
        row("offered load, mean", of_capacity(self.offered_mean_kw));
        row(
            "offered load, peak (20 s)",
            of_capacity(self.offered_peak_kw),
        );
        row("power drawn, peak", of_capacity(self.drawn_peak_kw));
        row(
            "accepted (200)",
            format!(
                "{} ({})",
                self.accepted,
                pct(ratio(self.accepted, self.requests))
            ),
        );
        row(
            "refused (503)",
            format!("{} ({})", self.refused, pct(self.refusal_rate)),
        );
        row(
            "curtailed (granted < requested)",
            format!(
                "{} ({} of accepted)",
                self.curtailed,
                pct(self.curtailed_share)
            ),
        );
        row("errors", self.errors.to_string());
        for c in &self.classes {
            if c.requests > 0 {
                row(
                    &format!("{} requests: refused / curtailed", c.name),
                    format!(
                        "{} of {} ({}) / {}",
                        c.refused,
                        c.requests,
                        pct(c.refusal_rate()),
                        c.curtailed
                    ),
                );
            }
        }
        row(
            "energy requested",
            format!("{:.0} kWh", self.energy_requested_kwh),
        );
        row(
            "energy accepted",
            format!(
                "{:.0} kWh ({} of requested)",
                self.energy_accepted_kwh,
                pct(self.energy_accepted_kwh / self.energy_requested_kwh.max(1e-9))
            ),
        );
        match self.delivered {
            Some(d) => row(
                match d {
                    Delivered::Measured { .. } => "energy delivered during the run",
                    Delivered::Estimated { .. } => {
                        "energy delivered during the run (estimated from the grants)"
                    }
                },
                format!(
                    "{:.0} kWh ({} of accepted)",
                    d.kwh(),
                    pct(d.kwh() / self.energy_accepted_kwh.max(1e-9))
                ),
            ),
            None => row("energy delivered", "unknown".into()),
        }
        let l = self.latency_ms;
        row(
            "latency p50 / p90 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2} ms",
                l.p50, l.p90, l.p99, l.max
            ),
        );
        for (sub, n) in &self.per_substation {
            row(&format!("sessions on {sub}"), n.to_string());
        }
        row(
            "status samples",
            format!(
                "{} ({} while 20-85% busy)",
                self.samples, self.balanced_samples
            ),
        );
        row(
            "peak / mean estimated utilisation",
            format!(
                "{} / {}",
                pct(self.peak_utilization),
                pct(self.mean_utilization)
            ),
        );
        row(
            "median peak/mean while 20-85% busy",
            self.median_peak_over_mean
                .map_or("n/a".into(), |r| format!("{r:.3}")),
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::rush::RUSH_CLASSES;

    fn outcome(start_s: f64, status: u16, power_kw: f64, granted: Option<f64>) -> Outcome {
        Outcome {
            start_s,
            latency_ms: 2.0,
            status,
            substation: (status == 200).then(|| "s1".to_string()),
            power_kw,
            energy_kwh: 10.0,
            error: None,
            min_power_kw: None,
            granted_power_kw: granted,
            ends_in_s: granted.map(|g| 10.0 / g * 3600.0 / 120.0),
        }
    }

    fn run() -> Vec<Outcome> {
        vec![
            outcome(0.1, 200, 11.0, Some(11.0)),
            outcome(0.5, 200, 50.0, Some(25.0)),
            outcome(1.2, 503, 150.0, None),
            outcome(1.9, 200, 7.0, Some(7.0)),
            outcome(2.5, 0, 22.0, None),
            outcome(2.6, 503, 150.0, None),
        ]
    }

    #[test]
    fn outcomes_classify() {
        let o = run();
        assert!(o[0].accepted() && !o[0].curtailed());
        assert!(o[1].accepted() && o[1].curtailed());
        assert!(o[2].refused() && !o[2].curtailed());
        assert!(o[4].failed());
        assert_eq!(
            o[1].csv_row(),
            "0.500000,2.000,200,s1,50,10,\"\",,25,12.000,1"
        );
    }

    #[test]
    fn series_counts_per_second() {
        let s = series(&run(), 1.0, 4.0, 120.0);
        assert_eq!(s.len(), 5, "0..=4 s");
        let counts: Vec<(u32, u32, u32, u32, u32)> = s
            .iter()
            .map(|b| (b.offered, b.accepted, b.refused, b.curtailed, b.errors))
            .collect();
        assert_eq!(
            counts,
            [
                (2, 2, 0, 1, 0),
                (2, 1, 1, 0, 0),
                (2, 0, 1, 0, 1),
                (0, 0, 0, 0, 0),
                (0, 0, 0, 0, 0)
            ]
        );
        // 20 kWh in one real second at 120x: 20 * 3600 / 120 = 600 kW.
        assert!((s[0].offered_kw - 600.0).abs() < 1e-9);
        let total: u32 = s.iter().map(|b| b.offered).sum();
        assert_eq!(total as usize, run().len());
    }

    #[test]
    fn moving_average_is_centred_and_shorter_at_the_edges() {
        let m = moving_average(&[0.0, 3.0, 6.0, 9.0], 2);
        assert_eq!(m, [1.5, 3.0, 6.0, 7.5]);
        assert!(moving_average(&[], 10).is_empty());
    }

    #[test]
    fn summary_adds_up() {
        let o = run();
        let s = Summary::compute(RunFacts {
            outcomes: &o,
            samples: &[],
            classes: &RUSH_CLASSES,
            elapsed_s: 4.0,
            time_scale: 120.0,
            capacity_kw: Some(1000.0),
            delivered: Some(Delivered::Measured { kwh: 12.0 }),
        });
        assert_eq!(
            (s.requests, s.accepted, s.refused, s.errors, s.curtailed),
            (6, 3, 2, 1, 1)
        );
        assert!((s.refusal_rate - 2.0 / 6.0).abs() < 1e-12);
        assert!((s.curtailed_share - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.energy_requested_kwh, 60.0);
        assert_eq!(s.energy_accepted_kwh, 30.0);
        // 60 kWh over 4 real s at 120x: 60 * 3600 / 120 / 4 = 450 kW.
        assert!((s.offered_mean_kw - 450.0).abs() < 1e-9);
        let by_name: BTreeMap<&str, (u64, u64, u64)> = s
            .classes
            .iter()
            .map(|c| (c.name.as_str(), (c.requests, c.refused, c.curtailed)))
            .collect();
        assert_eq!(by_name["150 kW"], (2, 2, 0));
        assert_eq!(by_name["50 kW"], (1, 0, 1));
        assert_eq!(by_name["22 kW"], (1, 0, 0));
        assert_eq!(s.classes[4].refusal_rate(), 1.0);
        assert_eq!(s.per_substation["s1"], 3);
        let table = s.table();
        assert!(table.contains("| refused (503) | 2 (33.3%) |"), "{table}");
        assert!(table.contains("| 150 kW requests: refused / curtailed | 2 of 2 (100.0%) / 0 |"));
        assert!(table.contains("| energy delivered during the run | 12 kWh (40.0% of accepted) |"));
    }

    #[test]
    fn latency_percentiles_are_nearest_rank() {
        let ms: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&ms);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Latency::of(&[]), Latency::default());
    }

    #[test]
    fn delivered_energy_is_measured_or_estimated() {
        let d = Delivered::measured(&[0.0, 3.6e6], &[7.2e6, 7.2e6]).unwrap();
        assert_eq!(d, Delivered::Measured { kwh: 3.0 });
        assert_eq!(Delivered::measured(&[5.0], &[4.0]), None, "a restart");
        assert_eq!(Delivered::measured(&[], &[]), None);
        // At 120x a real second is 1/30 of a simulated hour: each session
        // delivers its granted power for the time since its answer.
        let e = Delivered::estimated(&run(), 10.0, 120.0).kwh();
        let want =
            11.0 * (9.9 - 0.002) / 30.0 + 25.0 * (9.5 - 0.002) / 30.0 + 7.0 * (8.1 - 0.002) / 30.0;
        assert!((e - want).abs() < 1e-9, "{e} vs {want}");
        let long = Delivered::estimated(&run(), 1000.0, 120.0).kwh();
        assert_eq!(long, 30.0, "never more than the energy accepted");
    }

    #[test]
    fn status_bodies_become_samples() {
        let status: Value = serde_json::json!({
            "instance": "lb", "poll_interval_ms": 1000,
            "substations": [
                {"url": "http://127.0.0.1:8001", "name": "s1", "healthy": true,
                 "sampled_power_w": 150000.0, "capacity_w": 300000.0,
                 "estimated_utilization": 0.6},
                {"url": "http://127.0.0.1:8002", "name": "s2", "healthy": false,
                 "sampled_power_w": null, "capacity_w": null,
                 "estimated_utilization": null}
            ]
        });
        let s = GridSample::from_status(1.0, &status).unwrap();
        assert_eq!(s.substations["s1"].utilization(), Some(0.5));
        assert_eq!(s.substations["s2"].utilization(), None);
        assert_eq!(s.capacity_w(), Some(300000.0));
        assert_eq!(s.power_w(), 150000.0);
        assert_eq!(
            substation_urls(&status),
            ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
        );
        assert!(GridSample::from_status(0.0, &Value::Null).is_none());
        let none = GridSample::from_status(0.0, &serde_json::json!({"substations": []}));
        assert_eq!(none.and_then(|s| s.capacity_w()), None);
    }

    #[test]
    fn delivered_joules_are_read_from_metrics() {
        let text = "# TYPE substation_energy_delivered_joules_total counter\n\
                    substation_energy_delivered_joules_total{substation=\"s1\"} 7200000\n\
                    substation_power_watts{substation=\"s1\"} 0\n";
        assert_eq!(delivered_joules(text).unwrap(), 7.2e6);
        assert!(delivered_joules("substation_power_watts 1\n").is_err());
    }
}
