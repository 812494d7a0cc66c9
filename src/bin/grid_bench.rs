//! `grid_bench`: the grid's benchmarks, run by hand (not timed tests).
//!
//! * `grid_bench decision`: in-process routing decisions (reserve + confirm)
//!   over 100 substations; prints p50/p99/max.
//! * `grid_bench plan`: in-process move plans (`Router::plan_moves`) over
//!   `--substations` full substations of 300 to 1200 kW holding sessions
//!   of the 7/11/22/50/150 kW mix; prints p50/p99/max and how many found a
//!   plan.
//! * `grid_bench e2e --target URL`: closed loop with `--connections`
//!   requests in flight, first `GET /health` on the entry service, then
//!   `POST /request_charge` through balancer and substation, for `--secs`
//!   each; prints both throughputs, their ratio and latency percentiles.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;

use causal_grid::grid::{LoadSample, Router, RouterConfig};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// In-process routing decision latency.
    Decision {
        #[arg(long, default_value_t = 100)]
        substations: usize,
        #[arg(long, default_value_t = 1_000_000)]
        decisions: u64,
    },
    /// In-process move-plan latency on full substations.
    Plan {
        #[arg(long, default_value_t = 100)]
        substations: usize,
        #[arg(long, default_value_t = 10_000)]
        plans: u64,
    },
    /// End-to-end throughput against running services.
    E2e {
        /// Entry service base URL.
        #[arg(long, default_value = "http://localhost:6000")]
        target: String,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
    },
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|e| unreachable!("static histogram bounds: {e}"))
}

fn decision(n: usize, decisions: u64) {
    let mut router = Router::new(
        (0..n).map(|i| format!("s{i}")).collect(),
        RouterConfig::default(),
        1,
    );
    let sample = |i: usize| LoadSample {
        substation: String::new(),
        power_w: 0.0,
        capacity_w: 1e6 * (1.0 + (i % 4) as f64),
        ..LoadSample::default()
    };
    for i in 0..n {
        router.observe(i, &sample(i), 0.0, 0.0);
    }
    let mut hist = histogram();
    let mut now = 0.0;
    for k in 0..decisions {
        now += 1e-4;
        // Polls every 10k decisions, as a 1 s poll at 10k decisions/s would.
        if k % 10_000 == 0 {
            for i in 0..n {
                router.observe(i, &sample(i), now, now);
            }
        }
        let start = Instant::now();
        if let Some(t) = router.reserve(20_000.0, 20_000.0, &[], now) {
            router.confirm(&t, 5.0, None, now);
        }
        let _ = hist.record((start.elapsed().as_nanos() as u64).max(1));
    }
    println!(
        "routing decision over {n} substations, {decisions} decisions: p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us, max {:.2} us",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
}

fn plan(n: usize, plans: u64) {
    use rand::{Rng, SeedableRng};
    let mix = [7_000.0, 11_000.0, 22_000.0, 50_000.0, 150_000.0];
    let caps: Vec<f64> = (0..n)
        .map(|i| [300e3, 500e3, 800e3, 1200e3][i % 4])
        .collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let mut hist = histogram();
    let (mut found, mut tried) = (0u64, 0u64);
    let now = 1.0;
    let mut k = 0;
    while tried < plans {
        // A fresh grid, filled by the router until a 7 kW session fits
        // nowhere, then plans for requests that fit nowhere.
        let mut router = Router::new(
            (0..n).map(|i| format!("s{i}")).collect(),
            RouterConfig::default(),
            k,
        );
        k += 1;
        let mut seqs = vec![0u64; n];
        let mut committed = vec![0.0; n];
        let observe = |router: &mut Router, committed: &[f64], seqs: &[u64]| {
            for i in 0..n {
                let sample = LoadSample {
                    power_w: committed[i],
                    committed_w: Some(committed[i]),
                    requested_w: Some(committed[i]),
                    capacity_w: caps[i],
                    started: Some(seqs[i]),
                    ..LoadSample::default()
                };
                router.observe(i, &sample, now, now);
            }
        };
        observe(&mut router, &committed, &seqs);
        let mut misses = 0;
        while misses < 50 {
            let w = mix[rng.gen_range(0..mix.len())];
            match router.reserve(w, w, &[], now) {
                Some(t) => {
                    seqs[t.index] += 1;
                    committed[t.index] += w;
                    router.confirm(&t, 1e6, Some(seqs[t.index]), now);
                }
                None => misses += 1,
            }
        }
        observe(&mut router, &committed, &seqs);
        for _ in 0..100 {
            let w = mix[rng.gen_range(0..mix.len())];
            if tried >= plans {
                break;
            }
            if router
                .reserve(w, w, &[], now)
                .map(|t| router.abandoned(&t))
                .is_some()
            {
                continue;
            }
            tried += 1;
            let start = Instant::now();
            let plan = router.plan_moves(w, w, &[], now);
            let _ = hist.record((start.elapsed().as_nanos() as u64).max(1));
            if let Some(p) = plan {
                found += 1;
                for m in &p.moves {
                    router.abandoned(&m.ticket);
                }
                router.abandoned(&p.ticket);
            }
        }
    }
    println!(
        "move plans over {n} full substations, {tried} requests that fit nowhere: {found} planned; p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
}

async fn closed_loop(
    client: &awc::Client,
    url: &str,
    post: bool,
    connections: usize,
    secs: f64,
) -> (f64, Histogram<u64>, u64, u64) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let hist = Rc::new(std::cell::RefCell::new(histogram()));
    let (ok, other) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, hist, ok, other) = (
            client.clone(),
            url.to_string(),
            hist.clone(),
            ok.clone(),
            other.clone(),
        );
        tasks.push(actix_rt::spawn(async move {
            let body = serde_json::json!({"power_kw": 22.0, "energy_kwh": 1.0});
            while Instant::now() < end {
                let t = Instant::now();
                let res = if post {
                    client.post(&url).send_json(&body).await
                } else {
                    client.get(&url).send().await
                };
                let good = match res {
                    Ok(mut r) => {
                        let _ = r.body().await;
                        r.status().as_u16() == 200 || r.status().as_u16() == 503
                    }
                    Err(_) => false,
                };
                let _ = hist
                    .borrow_mut()
                    .record((t.elapsed().as_nanos() as u64).max(1));
                if good {
                    ok.set(ok.get() + 1);
                } else {
                    other.set(other.get() + 1);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let h = hist.borrow().clone();
    (
        (ok.get() + other.get()) as f64 / elapsed,
        h,
        ok.get(),
        other.get(),
    )
}

fn report(name: &str, rps: f64, h: &Histogram<u64>, ok: u64, other: u64) {
    println!(
        "{name}: {rps:.0} req/s ({ok} answered 200/503, {other} other), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        h.value_at_quantile(0.5) as f64 / 1e6,
        h.value_at_quantile(0.99) as f64 / 1e6,
        h.max() as f64 / 1e6
    );
}

#[actix_rt::main]
async fn main() {
    match Args::parse().cmd {
        Cmd::Decision {
            substations,
            decisions,
        } => decision(substations, decisions),
        Cmd::Plan { substations, plans } => plan(substations, plans),
        Cmd::E2e {
            target,
            connections,
            secs,
        } => {
            let client = awc::Client::builder()
                .connector(awc::Connector::new().limit(connections * 2))
                .timeout(Duration::from_secs(10))
                .finish();
            let base = target.trim_end_matches('/');
            let (h_rps, h_hist, h_ok, h_other) =
                closed_loop(&client, &format!("{base}/health"), false, connections, secs).await;
            report("entry GET /health", h_rps, &h_hist, h_ok, h_other);
            let (c_rps, c_hist, c_ok, c_other) = closed_loop(
                &client,
                &format!("{base}/request_charge"),
                true,
                connections,
                secs,
            )
            .await;
            report(
                "POST /request_charge (entry -> balancer -> substation)",
                c_rps,
                &c_hist,
                c_ok,
                c_other,
            );
            println!("ratio {:.3}", c_rps / h_rps);
            if c_other > 0 || h_other > 0 {
                std::process::exit(1);
            }
        }
    }
}
