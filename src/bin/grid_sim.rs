//! `grid_sim`: compares routing policies in a seeded loss-model simulation.
//!
//! Runs `causal_grid::grid::sim` over a sweep of poll staleness (as a
//! fraction of the mean session duration) and offered load, prints a
//! Markdown table of rejection rates next to the pooled Erlang-B floor, and
//! exits 1 if our policy fails to beat stale argmin and random at any
//! staleness, or exceeds 1.5x Erlang-B at staleness <= 0.1.
//!
//! With `--balancers 1,2,4` it instead runs our policy with k independent
//! balancers (arrivals round-robin over them, each polling on its own and
//! accounting only for its own dispatches), over `--seeds` seeds from
//! `--seed`, and prints the median rejection and peak/mean utilisation for
//! each k next to their ratio to the single balancer's; it exits 1 if any
//! k > 1 exceeds 1.1x the single balancer on either figure at staleness <= 0.1.

use clap::Parser;

use causal_grid::grid::sim::{erlang_b, run, Policy, SimConfig};

#[derive(Parser, Debug)]
#[command(about = "Simulate routing policies against the Erlang-B bound")]
struct Args {
    /// Number of substations.
    #[arg(long, default_value_t = 5)]
    substations: usize,
    /// Sessions per substation.
    #[arg(long, default_value_t = 20)]
    bays: u32,
    /// Offered loads (fraction of all bays), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.8, 0.9, 1.0])]
    loads: Vec<f64>,
    /// Poll staleness values (fraction of mean session duration), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0])]
    staleness: Vec<f64>,
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

fn main() {
    let args = Args::parse();
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
