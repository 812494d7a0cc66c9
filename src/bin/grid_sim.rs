//! `grid_sim`: compares routing policies in seeded loss-model simulations.
//!
//! Bay mode (the default) runs `causal_grid::grid::sim::run` over a sweep of
//! poll staleness (as a fraction of the mean session duration) and offered
//! load, prints a Markdown table of rejection rates next to the pooled
//! Erlang-B floor, and exits 1 if our policy fails to beat stale argmin and
//! random at any staleness, or exceeds 1.5x Erlang-B at staleness <= 0.1.
//!
//! With `--balancers 1,2,4` it instead runs our policy with k independent
//! balancers (arrivals round-robin over them, each polling on its own and
//! accounting only for its own dispatches), over `--seeds` seeds from
//! `--seed`, and prints the median rejection and peak/mean utilisation for
//! each k next to their ratio to the single balancer's; it exits 1 if any
//! k > 1 exceeds 1.1x the single balancer on either figure at staleness <= 0.1.
//!
//! With `--power` it runs the power mode (`sim::run_power`): substations of
//! `--capacities` kW, requests of the `--mix` classes, minimums set by
//! `--min-fractions` (or per class), the real session model at each
//! substation and the balancer's router with each placement. It prints
//! rejection overall and per class, rejection over the Kaufman-Roberts
//! floor, fragmentation refusals (refused while the pooled free capacity
//! could have taken the request's minimum) and peak/mean utilisation
//! (`--class-fragmentation` adds each class's fragmentation refusals), and
//! how many sessions the router moved to make room: each router policy runs
//! once per `--max-moves` value (default 0 and 8). For the default
//! substations and mix at load <= 0.95 and staleness <= 0.1 it exits 1 if
//! the default router (`headroom` with up to 16 moves) leaves more
//! fragmentation refusals than 0.5% of requests or 0.65x plain least
//! utilisation's without moves with minimum = requested, rejects more than
//! 1.1x the Kaufman-Roberts floor there, or leaves any with curtailable
//! minimums.

use clap::Parser;

use causal_grid::grid::router::{Placement, DEFAULT_MAX_MOVES};
use causal_grid::grid::sim::{
    default_mix, erlang_b, kr_floor, run, run_power, Policy, PowerClass, PowerConfig, PowerPolicy,
    SimConfig, DEFAULT_CAPACITIES_KW,
};

#[derive(Parser, Debug)]
#[command(about = "Simulate routing policies against the Erlang-B bound")]
struct Args {
    /// Number of substations.
    #[arg(long, default_value_t = 5)]
    substations: usize,
    /// Sessions per substation.
    #[arg(long, default_value_t = 20)]
    bays: u32,
    /// Offered loads (fraction of all bays, or of all power with --power),
    /// comma-separated [default: 0.8,0.9,1.0; with --power 0.95].
    #[arg(long, value_delimiter = ',')]
    loads: Vec<f64>,
    /// Poll staleness values (fraction of mean session duration), comma-separated
    /// [default: 0.01,0.05,0.1,0.25,0.5,1.0; with --power 0.01,0.1,0.5].
    #[arg(long, value_delimiter = ',')]
    staleness: Vec<f64>,
    /// Power mode: unequal substations, mixed request power, the real
    /// session model, against the Kaufman–Roberts floor.
    #[arg(long)]
    power: bool,
    /// Substation limits in kW (power mode), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_CAPACITIES_KW.to_vec())]
    capacities: Vec<f64>,
    /// Request classes (power mode) as power_kw:share:energy_kwh[:min_kw],
    /// comma-separated [default: 7:0.30:20,11:0.25:25,22:0.20:30,50:0.15:30,150:0.10:40].
    #[arg(long, value_delimiter = ',')]
    mix: Vec<String>,
    /// Minimum power as a fraction of the requested power, for classes
    /// without an explicit minimum (power mode), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1.0, 0.5])]
    min_fractions: Vec<f64>,
    /// Policies to compare (power mode), comma-separated
    /// [default: random,p2c,least-util,best-fit,best-fit-large,headroom].
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    /// Arrivals per run (the first tenth is warm-up).
    #[arg(long, default_value_t = 200_000)]
    arrivals: u64,
    /// Seed (same traffic for every policy).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Compare numbers of independent balancers (our policy) instead of policies, comma-separated.
    #[arg(long, value_delimiter = ',')]
    balancers: Vec<usize>,
    /// Seeds per cell in the balancer comparison (medians are reported).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Power mode: after each class's rejection, its fragmentation refusals
    /// (as a share of that class's requests) in brackets.
    #[arg(long)]
    class_fragmentation: bool,
    /// Power mode: most sessions the router may hand over to make room for
    /// one request, comma-separated; each router policy runs once per value
    /// (0: never move).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0, DEFAULT_MAX_MOVES])]
    max_moves: Vec<usize>,
    /// Power mode: refuse on the router's estimates as they stand, without
    /// the fresh poll the balancer takes before it refuses a request.
    #[arg(long)]
    stale_refusals: bool,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.is_empty() {
        f64::NAN
    } else if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

/// Median rejection and peak/mean of our policy with `k` balancers.
fn balancer_cell(args: &Args, load: f64, staleness: f64, k: usize) -> (f64, f64) {
    let runs: Vec<_> = (0..args.seeds.max(1))
        .map(|i| {
            run(
                Policy::Ours,
                &SimConfig {
                    substations: args.substations,
                    bays: args.bays,
                    load,
                    staleness,
                    arrivals: args.arrivals,
                    seed: args.seed + i,
                    balancers: k,
                },
            )
        })
        .collect();
    (
        median(runs.iter().map(|r| r.rejection).collect()),
        median(runs.iter().map(|r| r.peak_to_mean).collect()),
    )
}

fn compare_balancers(args: &Args) {
    let mut failures = Vec::new();
    println!("| load | staleness | balancers | rejection | vs 1 | peak/mean | vs 1 |");
    println!("|---|---|---|---|---|---|---|");
    for &load in &args.loads {
        for &staleness in &args.staleness {
            let (rej1, ptm1) = balancer_cell(args, load, staleness, 1);
            for &k in &args.balancers {
                let (rej, ptm) = if k <= 1 {
                    (rej1, ptm1)
                } else {
                    balancer_cell(args, load, staleness, k)
                };
                let (rr, pr) = (rej / rej1, ptm / ptm1);
                println!(
                    "| {load:.2} | {staleness} | {k} | {:.2}% | {rr:.3} | {ptm:.3} | {pr:.3} |",
                    100.0 * rej
                );
                if k > 1 && staleness <= 0.1 && !(rr <= 1.1 && pr <= 1.1) {
                    failures.push(format!(
                        "load {load} staleness {staleness} balancers {k}: rejection x{rr:.3}, peak/mean x{pr:.3} (limit 1.1)"
                    ));
                }
            }
        }
    }
    if failures.is_empty() {
        println!("\nall checks passed: with several balancers, rejection and peak/mean stay within 1.1x of one balancer at staleness <= 0.1");
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        std::process::exit(1);
    }
}

/// Fragmentation refusals the default router may leave with minimum =
/// requested, as a fraction of requests...
const FIXED_FRAGMENTATION: f64 = 0.005;
/// ...and as a multiple of plain least utilisation's (without moves).
const FRAGMENTATION_VS_LEAST: f64 = 0.65;
/// Rejection over the Kaufman-Roberts floor allowed with minimum = requested.
const KR_RATIO: f64 = 1.1;
/// Fragmentation refusals allowed when every minimum is below the request:
/// none.
const CURTAILABLE_FRAGMENTATION: f64 = 0.0;

/// Parses `power_kw:share:energy_kwh[:min_kw]`.
fn parse_class(s: &str) -> Result<(PowerClass, bool), String> {
    let f: Vec<f64> = s
        .split(':')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--mix {s:?}: {e}"))?;
    let (power_kw, share, energy_kwh) = match f[..] {
        [p, sh, e] | [p, sh, e, _] => (p, sh, e),
        _ => {
            return Err(format!(
                "--mix {s:?}: want power_kw:share:energy_kwh[:min_kw]"
            ))
        }
    };
    let min_kw = f.get(3).copied().unwrap_or(power_kw);
    let ok =
        power_kw > 0.0 && share > 0.0 && energy_kwh > 0.0 && min_kw > 0.0 && min_kw <= power_kw;
    if !ok {
        return Err(format!(
            "--mix {s:?}: need positive values and 0 < min_kw <= power_kw"
        ));
    }
    Ok((
        PowerClass {
            power_kw,
            min_kw,
            share,
            energy_kwh,
        },
        f.len() == 4,
    ))
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// Power mode: every policy per minimum rule, load and staleness, next to
/// the Kaufman–Roberts floor; checks the default placement's targets.
fn power_mode(args: &Args) -> Result<(), String> {
    let parsed: Vec<(PowerClass, bool)> = if args.mix.is_empty() {
        default_mix().into_iter().map(|c| (c, false)).collect()
    } else {
        args.mix
            .iter()
            .map(|m| parse_class(m))
            .collect::<Result<_, _>>()?
    };
    let policies: Vec<PowerPolicy> = if args.policies.is_empty() {
        PowerPolicy::ALL.to_vec()
    } else {
        args.policies
            .iter()
            .map(|n| PowerPolicy::parse(n).ok_or_else(|| format!("unknown policy {n:?}")))
            .collect::<Result<_, _>>()?
    };
    if args.capacities.is_empty() || args.capacities.iter().any(|c| c.is_nan() || *c <= 0.0) {
        return Err("--capacities must be positive".into());
    }
    let loads = if args.loads.is_empty() {
        vec![0.95]
    } else {
        args.loads.clone()
    };
    let staleness = if args.staleness.is_empty() {
        vec![0.01, 0.1, 0.5]
    } else {
        args.staleness.clone()
    };
    let default = PowerPolicy::Router(Placement::DEFAULT);
    // The claims are about the default substations and mix.
    let checked = args.mix.is_empty() && args.capacities == DEFAULT_CAPACITIES_KW;
    let mut failures = Vec::new();
    let class_names: Vec<String> = parsed
        .iter()
        .map(|(c, _)| format!("{}", c.power_kw))
        .collect();
    print!("| minimums | load | staleness | policy | rejected | ÷ KR | fragmentation |");
    for n in &class_names {
        print!(" rej. {n} kW |");
    }
    println!(" peak/mean | mean util. | moves per request | admitted after moves |");
    print!("|---|---|---|---|---|---|---|");
    for _ in &class_names {
        print!("---|");
    }
    println!("---|---|---|---|");
    for &fraction in &args.min_fractions {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(format!("--min-fractions: {fraction} is not in (0, 1]"));
        }
        let mix: Vec<PowerClass> = parsed
            .iter()
            .map(|&(c, explicit)| PowerClass {
                min_kw: if explicit {
                    c.min_kw
                } else {
                    c.power_kw * fraction
                },
                ..c
            })
            .collect();
        let curtailable = mix.iter().all(|c| c.min_kw < c.power_kw);
        let label = if mix.iter().all(|c| c.min_kw >= c.power_kw) {
            "= requested".to_string()
        } else if parsed.iter().any(|p| p.1) {
            "per class".to_string()
        } else {
            format!("{:.0}% of requested", 100.0 * fraction)
        };
        for &load in &loads {
            for &stale in &staleness {
                let cfg = PowerConfig {
                    capacities_kw: args.capacities.clone(),
                    mix: mix.clone(),
                    load,
                    staleness: stale,
                    arrivals: args.arrivals,
                    seed: args.seed,
                    max_moves: DEFAULT_MAX_MOVES,
                    fresh_before_refusing: !args.stale_refusals,
                };
                let (kr, kr_class) = kr_floor(&cfg);
                // Curtailment admits more than fixed-power sessions could, so
                // with minimums below the request KR is a reference, not a floor.
                let kr_name = if mix.iter().any(|c| c.min_kw < c.power_kw) {
                    "KR, fixed power"
                } else {
                    "KR floor"
                };
                print!(
                    "| {label} | {load:.2} | {stale} | {kr_name} | {} | 1 | – |",
                    pct(kr)
                );
                for b in &kr_class {
                    print!(" {} |", pct(*b));
                }
                println!(" – | – | – | – |");
                let mut least_frag = None;
                let mut ours = None;
                for (policy, max_moves) in policies.iter().flat_map(|&p| {
                    let moves = match p {
                        PowerPolicy::Router(_) => args.max_moves.clone(),
                        _ => vec![0],
                    };
                    moves.into_iter().map(move |k| (p, k))
                }) {
                    let cfg = PowerConfig {
                        max_moves,
                        ..cfg.clone()
                    };
                    let r = run_power(policy, &cfg);
                    let is_default = policy == default && max_moves == DEFAULT_MAX_MOVES;
                    let base = if max_moves > 0 {
                        format!("{} + moves ≤ {max_moves}", policy.name())
                    } else {
                        policy.name().to_string()
                    };
                    let name = if is_default {
                        format!("**{base}**")
                    } else {
                        base
                    };
                    print!(
                        "| {label} | {load:.2} | {stale} | {name} | {} | {:.2} | {} |",
                        pct(r.rejection),
                        r.rejection / kr,
                        pct(r.fragmentation)
                    );
                    for (b, f) in r.class_rejection.iter().zip(&r.class_fragmentation) {
                        if args.class_fragmentation {
                            print!(" {} ({}) |", pct(*b), pct(*f));
                        } else {
                            print!(" {} |", pct(*b));
                        }
                    }
                    println!(
                        " {:.3} | {:.3} | {:.4} | {} |",
                        r.peak_to_mean,
                        r.mean_utilization,
                        r.moves_per_request,
                        pct(r.rebalanced)
                    );
                    if policy == PowerPolicy::Router(Placement::LeastUtilization) && max_moves == 0
                    {
                        least_frag = Some(r.fragmentation);
                    }
                    if is_default {
                        ours = Some(r);
                    }
                }
                // The claims hold for the default scenario at low staleness.
                if !(checked && stale <= 0.1 && load <= 0.95) {
                    continue;
                }
                let ours = ours.unwrap_or_else(|| run_power(default, &cfg));
                let cell = format!("minimums {label}, load {load}, staleness {stale}");
                if curtailable {
                    if ours.fragmentation > CURTAILABLE_FRAGMENTATION {
                        failures.push(format!(
                            "{cell}: fragmentation refusals {:.4}% > {:.4}%",
                            100.0 * ours.fragmentation,
                            100.0 * CURTAILABLE_FRAGMENTATION
                        ));
                    }
                    continue;
                }
                let least = least_frag.unwrap_or_else(|| {
                    let cfg = PowerConfig {
                        max_moves: 0,
                        ..cfg.clone()
                    };
                    run_power(PowerPolicy::Router(Placement::LeastUtilization), &cfg).fragmentation
                });
                if ours.fragmentation > FIXED_FRAGMENTATION
                    || ours.fragmentation > FRAGMENTATION_VS_LEAST * least
                {
                    failures.push(format!(
                        "{cell}: fragmentation refusals {} > min({}, {FRAGMENTATION_VS_LEAST} x least-util {})",
                        pct(ours.fragmentation),
                        pct(FIXED_FRAGMENTATION),
                        pct(least)
                    ));
                }
                if ours.rejection > KR_RATIO * kr {
                    failures.push(format!(
                        "{cell}: rejection {} > {KR_RATIO} x KR floor {}",
                        pct(ours.rejection),
                        pct(kr)
                    ));
                }
            }
        }
    }
    if failures.is_empty() {
        if checked {
            println!(
                "\nall checks passed: with the default placement ({}), at load <= 0.95 and staleness <= 0.1, fragmentation refusals are at most {} of requests and at most {FRAGMENTATION_VS_LEAST}x least utilisation's without moves with minimum = requested (rejection within {KR_RATIO}x Kaufman-Roberts), and none with curtailable minimums",
                format_args!("{} + moves <= {DEFAULT_MAX_MOVES}", default.name()),
                pct(FIXED_FRAGMENTATION),
            );
        }
        Ok(())
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        std::process::exit(1);
    }
}

fn main() {
    let mut args = Args::parse();
    if args.power {
        if let Err(e) = power_mode(&args) {
            eprintln!("grid_sim: {e}");
            std::process::exit(2);
        }
        return;
    }
    if args.loads.is_empty() {
        args.loads = vec![0.8, 0.9, 1.0];
    }
    if args.staleness.is_empty() {
        args.staleness = vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0];
    }
    if !args.balancers.is_empty() {
        compare_balancers(&args);
        return;
    }
    let mut failures = Vec::new();
    print!("| load | staleness |");
    for p in Policy::ALL {
        print!(" {} |", p.name());
    }
    println!(" Erlang-B | ours / EB | peak/mean ours | peak/mean argmin |");
    print!("|---|---|");
    for _ in Policy::ALL {
        print!("---|");
    }
    println!("---|---|---|---|");
    let servers = args.bays * args.substations as u32;
    for &load in &args.loads {
        let floor = erlang_b(load * servers as f64, servers);
        for &staleness in &args.staleness {
            let cfg = SimConfig {
                substations: args.substations,
                bays: args.bays,
                load,
                staleness,
                arrivals: args.arrivals,
                seed: args.seed,
                balancers: 1,
            };
            let results: Vec<_> = Policy::ALL.iter().map(|&p| (p, run(p, &cfg))).collect();
            let get = |want: Policy| {
                results
                    .iter()
                    .find(|(p, _)| *p == want)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| unreachable!("every policy ran"))
            };
            print!("| {load:.2} | {staleness:.2} |");
            for (_, r) in &results {
                print!(" {:.2}% |", 100.0 * r.rejection);
            }
            let ours = get(Policy::Ours);
            let argmin = get(Policy::StaleArgmin);
            let random = get(Policy::Random);
            let ratio = if floor > 0.0 {
                ours.rejection / floor
            } else {
                f64::NAN
            };
            println!(
                " {:.2}% | {:.2} | {:.3} | {:.3} |",
                100.0 * floor,
                ratio,
                ours.peak_to_mean,
                argmin.peak_to_mean
            );
            if !(ours.rejection < argmin.rejection && ours.rejection < random.rejection) {
                failures.push(format!(
                    "load {load} staleness {staleness}: ours {:.4} does not beat argmin {:.4} and random {:.4}",
                    ours.rejection, argmin.rejection, random.rejection
                ));
            }
            if staleness <= 0.1 && ours.rejection > 1.5 * floor {
                failures.push(format!(
                    "load {load} staleness {staleness}: ours {:.4} > 1.5 x Erlang-B {:.4}",
                    ours.rejection, floor
                ));
            }
        }
    }
    if failures.is_empty() {
        println!("\nall checks passed: ours beats stale argmin and random everywhere, and is within 1.5x Erlang-B at staleness <= 0.1");
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        std::process::exit(1);
    }
}
