//! A discrete-event simulation of routing policies in a loss model.
//!
//! `substations` identical substations of `bays` equal sessions each; Poisson
//! arrivals; exponential session durations with mean 1; a request that lands
//! on a full substation is lost. The offered load is arrivals × mean duration
//! over total bays. The balancer polls every substation at once every
//! `staleness` mean durations; snapshot policies see only the last poll.
//!
//! With `balancers` = k > 1 there are k independent balancers, as when
//! several `load_balancer` replicas sit behind the entry: arrivals go to
//! them round-robin (as `charge_request` spreads requests), each polls on
//! its own with the same interval (balancer 0 at time 0, the others at a
//! random phase, as if started independently), and each keeps its own
//! router, which accounts only for its own dispatches. What one balancer
//! sends between its polls is invisible to the others until their next poll.
//!
//! Policies:
//! * `Random`, `RoundRobin`: ignore load.
//! * `StaleArgmin`: least utilised in the snapshot (herds between polls).
//! * `PowerOfTwo`: two random choices, the less utilised in the snapshot.
//! * `OursNoEnds`: the real [`Router`] counting dispatches but not their ends.
//! * `Ours`: the real [`Router`] as the balancer runs it: local accounting of
//!   dispatches and ends, and a refused request retried on the next best.
//!
//! The floor is Erlang-B for one pooled group of all bays: no router that
//! sends each request to one substation can lose less. Arrivals and
//! durations come from their own seeded generator, identical for every
//! policy, so the policies are compared on the same traffic.

use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::exposition::LoadSample;
use super::router::{Router, RouterConfig};

/// A routing policy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Uniformly random substation.
    Random,
    /// Next substation in turn.
    RoundRobin,
    /// Least utilised in the last snapshot.
    StaleArgmin,
    /// Less utilised of two random ones, by the last snapshot.
    PowerOfTwo,
    /// Our router without accounting for session ends.
    OursNoEnds,
    /// Our router as deployed.
    Ours,
}

impl Policy {
    /// Every policy, in table order.
    pub const ALL: [Policy; 6] = [
        Policy::Random,
        Policy::RoundRobin,
        Policy::StaleArgmin,
        Policy::PowerOfTwo,
        Policy::OursNoEnds,
        Policy::Ours,
    ];

    /// Short column name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Random => "random",
            Policy::RoundRobin => "round-robin",
            Policy::StaleArgmin => "stale-argmin",
            Policy::PowerOfTwo => "p2c",
            Policy::OursNoEnds => "ours-no-ends",
            Policy::Ours => "ours",
        }
    }
}

/// One simulation run's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Number of substations.
    pub substations: usize,
    /// Sessions each substation can carry.
    pub bays: u32,
    /// Offered load as a fraction of total bays.
    pub load: f64,
    /// Poll interval as a fraction of the mean session duration (0: fresh).
    pub staleness: f64,
    /// Arrivals to simulate (the first tenth is warm-up, not counted).
    pub arrivals: u64,
    /// Seed for traffic and for randomised policies.
    pub seed: u64,
    /// Independent balancers sharing the traffic (0 counts as 1).
    pub balancers: usize,
}

/// One simulation run's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    /// Fraction of counted arrivals lost.
    pub rejection: f64,
    /// Mean over arrivals of (most utilised / mean utilisation).
    pub peak_to_mean: f64,
    /// Mean utilisation over arrivals.
    pub mean_utilization: f64,
    /// Arrivals each balancer handled, warm-up included.
    pub handled: Vec<u64>,
    /// Arrivals admitted, warm-up included.
    pub admitted: u64,
    /// Arrivals lost, warm-up included.
    pub lost: u64,
    /// Most sessions ever running on one substation at once.
    pub max_sessions: u32,
}

/// Erlang-B blocking probability for `traffic` erlangs on `servers` servers.
pub fn erlang_b(traffic: f64, servers: u32) -> f64 {
    let mut b = 1.0;
    for k in 1..=servers {
        b = traffic * b / (k as f64 + traffic * b);
    }
    b
}

struct Truth {
    ends: Vec<BinaryHeap<std::cmp::Reverse<u64>>>,
}

impl Truth {
    // Times are stored as integer nanoseconds of model time so the heap can
    // use a total order without float wrappers.
    fn advance(&mut self, now: u64) {
        for h in &mut self.ends {
            while h.peek().is_some_and(|e| e.0 <= now) {
                h.pop();
            }
        }
    }
    fn used(&self, i: usize) -> u32 {
        self.ends[i].len() as u32
    }
}

const NS: f64 = 1e9;
// Power of one session in the router's units; the value is arbitrary.
const SESSION_W: f64 = 10_000.0;

fn exp_sample(rng: &mut SmallRng, mean: f64) -> f64 {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    -u.ln() * mean
}

/// What one balancer knows: its own router (or snapshot, for the baseline
/// policies) and when it polls next.
struct Balancer {
    router: Router,
    snapshot: Vec<u32>,
    rr: usize,
    next_poll: f64,
}

impl Balancer {
    /// Polls every substation at `at`, seeing the truth at that time.
    fn poll(&mut self, truth: &Truth, capacity_w: f64, at: f64) {
        for (i, s) in self.snapshot.iter_mut().enumerate() {
            *s = truth.used(i);
            let sample = LoadSample {
                substation: String::new(),
                power_w: *s as f64 * SESSION_W,
                capacity_w,
                ..LoadSample::default()
            };
            self.router.observe(i, &sample, at, at);
        }
    }
}

/// Runs one policy on one configuration.
pub fn run(policy: Policy, cfg: &SimConfig) -> SimResult {
    let n = cfg.substations;
    let bays = cfg.bays;
    let k = cfg.balancers.max(1);
    let rate = cfg.load * (n as f64) * (bays as f64);
    let mut traffic = SmallRng::seed_from_u64(cfg.seed);
    let mut choice = SmallRng::seed_from_u64(cfg.seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut phases = SmallRng::seed_from_u64(cfg.seed ^ 0x5851_f42d_4c95_7f2d);
    let mut truth = Truth {
        ends: vec![BinaryHeap::new(); n],
    };
    let router_cfg = RouterConfig {
        track_ends: policy != Policy::OursNoEnds,
        ..RouterConfig::default()
    };
    let interval = cfg.staleness;
    let fresh = interval <= 0.0;
    let mut balancers: Vec<Balancer> = (0..k)
        .map(|b| Balancer {
            // Balancer 0 is seeded and phased as a lone balancer, so k = 1
            // reproduces the single-balancer runs exactly.
            router: Router::new(
                (0..n).map(|i| format!("s{i}")).collect(),
                router_cfg,
                cfg.seed
                    .wrapping_add((b as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
            ),
            snapshot: vec![0u32; n],
            rr: 0,
            next_poll: if b == 0 || fresh {
                0.0
            } else {
                phases.gen_range(0.0..interval)
            },
        })
        .collect();
    let capacity_w = bays as f64 * SESSION_W;
    let mut t = 0.0;
    let warmup = cfg.arrivals / 10;
    let (mut counted, mut lost) = (0u64, 0u64);
    let (mut ptm_sum, mut util_sum, mut samples) = (0.0, 0.0, 0u64);
    let mut handled = vec![0u64; k];
    let (mut admitted_all, mut lost_all, mut max_sessions) = (0u64, 0u64, 0u32);
    let mut exclude = Vec::with_capacity(n);

    for arrival in 0..cfg.arrivals {
        t += exp_sample(&mut traffic, 1.0 / rate);
        let duration = exp_sample(&mut traffic, 1.0);
        // Round-robin over balancers, as the entry service spreads requests.
        let b = (arrival % k as u64) as usize;
        handled[b] += 1;
        if fresh {
            truth.advance((t * NS) as u64);
            balancers[b].poll(&truth, capacity_w, t);
        } else {
            // Every balancer's polls due before this arrival, in time order,
            // each seeing the truth at its time.
            loop {
                let (due, at) = balancers
                    .iter()
                    .enumerate()
                    .map(|(j, x)| (j, x.next_poll))
                    .min_by(|x, y| x.1.total_cmp(&y.1))
                    .unwrap_or((0, f64::INFINITY));
                if at > t {
                    break;
                }
                truth.advance((at * NS) as u64);
                balancers[due].poll(&truth, capacity_w, at);
                balancers[due].next_poll += interval;
            }
        }
        truth.advance((t * NS) as u64);
        let end = ((t + duration) * NS) as u64;
        let admitted = match policy {
            Policy::Random | Policy::RoundRobin | Policy::StaleArgmin | Policy::PowerOfTwo => {
                let bal = &mut balancers[b];
                let snapshot = &bal.snapshot;
                let i = match policy {
                    Policy::Random => choice.gen_range(0..n),
                    Policy::RoundRobin => {
                        bal.rr = (bal.rr + 1) % n;
                        bal.rr
                    }
                    Policy::StaleArgmin => {
                        let min = snapshot.iter().copied().min().unwrap_or(0);
                        let tied: Vec<usize> = (0..n).filter(|&i| snapshot[i] == min).collect();
                        tied[choice.gen_range(0..tied.len())]
                    }
                    _ => {
                        let a = choice.gen_range(0..n);
                        let b = (a + choice.gen_range(1..n.max(2))) % n;
                        if snapshot[b] < snapshot[a] {
                            b
                        } else {
                            a
                        }
                    }
                };
                if truth.used(i) < bays {
                    truth.ends[i].push(std::cmp::Reverse(end));
                    true
                } else {
                    false
                }
            }
            Policy::Ours | Policy::OursNoEnds => {
                // As the entry service does: a balancer that finds no room
                // answers 503, and the request goes to the next balancer,
                // whose view (its own dispatches, its own poll phase) may
                // differ; it is lost only when every balancer finds none.
                let mut ok = false;
                for step in 0..k {
                    let router = &mut balancers[(b + step) % k].router;
                    exclude.clear();
                    while let Some(ticket) = router.reserve(SESSION_W, SESSION_W, &exclude, t) {
                        if truth.used(ticket.index) < bays {
                            truth.ends[ticket.index].push(std::cmp::Reverse(end));
                            router.confirm(&ticket, duration, None, t);
                            ok = true;
                            break;
                        }
                        router.refused(&ticket);
                        exclude.push(ticket.index);
                    }
                    if ok {
                        break;
                    }
                }
                ok
            }
        };
        if admitted {
            admitted_all += 1;
        } else {
            lost_all += 1;
        }
        let max = (0..n).map(|i| truth.used(i)).max().unwrap_or(0);
        max_sessions = max_sessions.max(max);
        if arrival >= warmup {
            counted += 1;
            if !admitted {
                lost += 1;
            }
            let total: u32 = (0..n).map(|i| truth.used(i)).sum();
            if total > 0 {
                let mean = total as f64 / n as f64;
                ptm_sum += max as f64 / mean;
                util_sum += mean / bays as f64;
                samples += 1;
            }
        }
    }
    SimResult {
        rejection: lost as f64 / counted.max(1) as f64,
        peak_to_mean: ptm_sum / samples.max(1) as f64,
        mean_utilization: util_sum / samples.max(1) as f64,
        handled,
        admitted: admitted_all,
        lost: lost_all,
        max_sessions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_b_matches_known_values() {
        // Classic table values.
        assert!((erlang_b(1.0, 1) - 0.5).abs() < 1e-12);
        assert!((erlang_b(10.0, 10) - 0.2146).abs() < 1e-3);
        assert!((erlang_b(90.0, 100) - 0.0269).abs() < 1e-3);
    }

    #[test]
    fn ours_beats_stale_argmin_and_random_and_nears_erlang_b() {
        for staleness in [0.1, 0.5] {
            let cfg = SimConfig {
                substations: 5,
                bays: 20,
                load: 0.9,
                staleness,
                arrivals: 60_000,
                seed: 11,
                balancers: 1,
            };
            let ours = run(Policy::Ours, &cfg).rejection;
            let argmin = run(Policy::StaleArgmin, &cfg).rejection;
            let random = run(Policy::Random, &cfg).rejection;
            assert!(
                ours < argmin && ours < random,
                "{staleness}: {ours} {argmin} {random}"
            );
            if staleness <= 0.1 {
                let floor = erlang_b(0.9 * 100.0, 100);
                assert!(ours <= 1.5 * floor, "{ours} vs Erlang-B {floor}");
            }
        }
    }

    #[test]
    fn stale_argmin_herds() {
        let cfg = SimConfig {
            substations: 5,
            bays: 20,
            load: 0.9,
            staleness: 0.1,
            arrivals: 60_000,
            seed: 3,
            balancers: 1,
        };
        let fresh = run(
            Policy::StaleArgmin,
            &SimConfig {
                staleness: 0.0,
                ..cfg
            },
        );
        let stale = run(Policy::StaleArgmin, &cfg);
        assert!(
            stale.rejection > 2.0 * fresh.rejection,
            "{stale:?} {fresh:?}"
        );
    }

    fn k_cfg(balancers: usize) -> SimConfig {
        SimConfig {
            substations: 5,
            bays: 20,
            load: 0.9,
            staleness: 0.1,
            arrivals: 30_001,
            seed: 5,
            balancers,
        }
    }

    #[test]
    fn k_balancers_split_traffic_and_handle_each_request_once() {
        for policy in Policy::ALL {
            for k in [1, 2, 3, 4] {
                let cfg = k_cfg(k);
                let r = run(policy, &cfg);
                // Round-robin: each balancer gets its share, to within one.
                assert_eq!(r.handled.len(), k);
                assert_eq!(r.handled.iter().sum::<u64>(), cfg.arrivals);
                let (lo, hi) = (cfg.arrivals / k as u64, cfg.arrivals.div_ceil(k as u64));
                assert!(
                    r.handled.iter().all(|&h| h == lo || h == hi),
                    "{policy:?} k={k}: {:?}",
                    r.handled
                );
                // Each request is admitted or lost, never both nor neither.
                assert_eq!(r.admitted + r.lost, cfg.arrivals, "{policy:?} k={k}");
                assert!(r.max_sessions <= cfg.bays, "{policy:?} k={k}: {r:?}");
                assert!(r.rejection > 0.0 && r.rejection < 1.0, "{r:?}");
            }
        }
    }

    #[test]
    fn one_balancer_is_the_single_balancer_model_and_runs_are_deterministic() {
        let one = run(Policy::Ours, &k_cfg(1));
        let zero = run(Policy::Ours, &k_cfg(0));
        assert_eq!(one, zero, "0 balancers counts as 1");
        let four = run(Policy::Ours, &k_cfg(4));
        assert_eq!(four, run(Policy::Ours, &k_cfg(4)), "same seed, same run");
        assert_ne!(one, four);
        // Same traffic and the same admission rule: totals differ only by
        // where the sessions went, and which were lost.
        assert_eq!(
            one.admitted + one.lost,
            four.admitted + four.lost,
            "same arrivals"
        );
    }

    #[test]
    fn k_balancers_with_our_router_stay_near_one_balancer() {
        // Peak/mean stays within 1.1x, and with the entry trying the next
        // balancer when one finds no room, a request is lost only when
        // every balancer finds none: rejection stays within 1.1x too.
        let one = run(Policy::Ours, &k_cfg(1));
        for k in [2, 4] {
            let r = run(Policy::Ours, &k_cfg(k));
            assert!(
                r.rejection <= 1.1 * one.rejection,
                "k={k}: {r:?} vs {one:?}"
            );
            assert!(
                r.peak_to_mean <= 1.1 * one.peak_to_mean,
                "k={k}: {r:?} vs {one:?}"
            );
        }
    }
}
