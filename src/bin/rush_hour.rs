//! `rush_hour`: a load generator that simulates an evening rush of EVs.
//!
//! Sends `POST /request_charge` to the entry service, either closed-loop
//! (`--concurrency` requests always in flight) or open-loop at `--rate`
//! requests/s with a linear ramp-up, a plateau and a ramp-down. Power and
//! energy are drawn uniformly from the given ranges (fixed when min = max).
//! Meanwhile it samples the balancer's `/status` to record each substation's
//! estimated utilisation. At the end it prints a summary table, optionally
//! writes raw results as CSV/JSON and an SVG chart of utilisation over time,
//! and exits 1 if any request failed other than with a 503.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use causal_grid::grid::{ChargeGranted, ChargeRequest};

#[derive(Parser, Debug, Clone)]
#[command(about = "Simulate a rush hour of EV charge requests")]
struct Args {
    /// Entry service base URL.
    #[arg(long, default_value = "http://localhost:6000")]
    target: String,
    /// Balancer base URL, sampled on /status for utilisation.
    #[arg(long, default_value = "http://localhost:7000")]
    balancer: String,
    /// Total requests (closed loop default 1000 when no --duration).
    #[arg(long)]
    requests: Option<u64>,
    /// Run for this many seconds instead of a request count.
    #[arg(long)]
    duration: Option<f64>,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop: peak arrival rate (requests/s). Closed loop when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: seconds of linear ramp from 0 to the peak rate.
    #[arg(long, default_value_t = 0.0)]
    ramp_up: f64,
    /// Open loop: seconds of linear ramp from the peak rate to 0 at the end.
    #[arg(long, default_value_t = 0.0)]
    ramp_down: f64,
    /// Smallest requested power, kW.
    #[arg(long, default_value_t = 11.0)]
    power_min: f64,
    /// Largest requested power, kW.
    #[arg(long, default_value_t = 50.0)]
    power_max: f64,
    /// Smallest requested energy, kWh.
    #[arg(long, default_value_t = 10.0)]
    energy_min: f64,
    /// Largest requested energy, kWh.
    #[arg(long, default_value_t = 40.0)]
    energy_max: f64,
    /// Interval of /status samples, ms.
    #[arg(long, default_value_t = 250)]
    sample_ms: u64,
    /// Write one row per request to this CSV file.
    #[arg(long)]
    csv: Option<String>,
    /// Write requests and utilisation samples to this JSON file.
    #[arg(long)]
    json: Option<String>,
    /// Write a chart of per-substation utilisation over time to this SVG file.
    #[arg(long)]
    svg: Option<String>,
    /// Seed for arrivals and request sizes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Outcome {
    start_s: f64,
    latency_ms: f64,
    status: u16,
    substation: Option<String>,
    power_kw: f64,
    energy_kwh: f64,
    error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct UtilSample {
    t_s: f64,
    utilization: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct Report<'a> {
    requests: &'a [Outcome],
    utilization: &'a [UtilSample],
}

fn rate_at(args: &Args, t: f64, total: f64) -> f64 {
    let peak = args.rate.unwrap_or(0.0);
    if args.ramp_up > 0.0 && t < args.ramp_up {
        peak * t / args.ramp_up
    } else if args.ramp_down > 0.0 && t > total - args.ramp_down {
        peak * ((total - t) / args.ramp_down).max(0.0)
    } else {
        peak
    }
}

fn draw(rng: &mut SmallRng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.gen_range(lo..=hi)
    } else {
        lo
    }
}

async fn one(client: &awc::Client, url: &str, req: ChargeRequest, t0: Instant) -> Outcome {
    let start = Instant::now();
    let (power_kw, energy_kwh) = (req.power_kw.unwrap_or(0.0), req.energy_kwh.unwrap_or(0.0));
    let (status, substation, error) = match client.post(url).send_json(&req).await {
        Err(e) => (0, None, Some(e.to_string())),
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            match resp.body().await {
                Err(e) => (status, None, Some(e.to_string())),
                Ok(body) if status == 200 => match serde_json::from_slice::<ChargeGranted>(&body) {
                    Ok(g) => (status, Some(g.substation), None),
                    Err(e) => (status, None, Some(format!("bad body: {e}"))),
                },
                Ok(body) => (
                    status,
                    None,
                    Some(String::from_utf8_lossy(&body).into_owned()),
                ),
            }
        }
    };
    Outcome {
        start_s: start.duration_since(t0).as_secs_f64(),
        latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        status,
        substation,
        power_kw,
        energy_kwh,
        error,
    }
}

async fn sample_status(client: &awc::Client, url: &str, t_s: f64) -> Option<UtilSample> {
    let mut resp = client.get(url).send().await.ok()?;
    let body = resp.body().limit(1 << 20).await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let mut utilization = BTreeMap::new();
    for s in v["substations"].as_array()? {
        let name = s["name"].as_str()?.to_string();
        if let Some(u) = s["estimated_utilization"].as_f64() {
            utilization.insert(name, u);
        }
    }
    Some(UtilSample { t_s, utilization })
}

fn svg_chart(samples: &[UtilSample]) -> String {
    let (w, h, pad) = (900.0, 420.0, 50.0);
    let t_max = samples.last().map(|s| s.t_s).unwrap_or(1.0).max(1e-3);
    let mut names: Vec<&String> = samples.iter().flat_map(|s| s.utilization.keys()).collect();
    names.sort();
    names.dedup();
    let colors = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max;
    let y = |u: f64| h - pad - (h - 2.0 * pad) * u.clamp(0.0, 1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Estimated utilisation per substation</text>"#,
        w / 2.0
    );
    for k in 0..=4 {
        let u = k as f64 / 4.0;
        let _ = writeln!(
            out,
            "<line x1=\"{pad}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>",
            w - pad,
            pad - 5.0,
            y(u) + 4.0,
            u * 100.0,
            y0 = y(u)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time (s), 0 to {t_max:.1}</text>",
        w / 2.0,
        h - 15.0
    );
    for (i, name) in names.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<String> = samples
            .iter()
            .filter_map(|s| {
                s.utilization
                    .get(*name)
                    .map(|u| format!("{:.1},{:.1}", x(s.t_s), y(*u)))
            })
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
            w - pad + 5.0 - 40.0,
            pad + 15.0 * i as f64,
            xml_escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn write_file(path: &str, body: &str) {
    if let Err(e) = std::fs::write(path, body) {
        eprintln!("cannot write {path}: {e}");
        std::process::exit(2);
    }
}

#[actix_rt::main]
async fn main() {
    let args = Args::parse();
    let total_requests = match (args.requests, args.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(1000),
    };
    let duration = args.duration.unwrap_or(f64::INFINITY);
    if args.rate.is_some() && !duration.is_finite() && args.ramp_down > 0.0 {
        eprintln!("--ramp-down needs --duration");
        std::process::exit(2);
    }
    let url = format!("{}/request_charge", args.target.trim_end_matches('/'));
    let status_url = format!("{}/status", args.balancer.trim_end_matches('/'));
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(args.concurrency.max(1) * 2))
        .timeout(Duration::from_secs(10))
        .finish();
    let t0 = Instant::now();
    let bar = match total_requests {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new((duration * 1000.0) as u64),
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let outcomes: Rc<RefCell<Vec<Outcome>>> = Rc::default();
    let samples: Rc<RefCell<Vec<UtilSample>>> = Rc::default();
    let done = Rc::new(std::cell::Cell::new(false));

    // Sampler of the balancer's view.
    let sampler = {
        let (client, samples, done) = (client.clone(), samples.clone(), done.clone());
        let every = Duration::from_millis(args.sample_ms.max(10));
        actix_rt::spawn(async move {
            while !done.get() {
                if let Some(s) =
                    sample_status(&client, &status_url, t0.elapsed().as_secs_f64()).await
                {
                    samples.borrow_mut().push(s);
                }
                actix_rt::time::sleep(every).await;
            }
        })
    };

    let rng = Rc::new(RefCell::new(SmallRng::seed_from_u64(args.seed)));
    let issued = Rc::new(std::cell::Cell::new(0u64));
    let next_request = {
        let (rng, args) = (rng.clone(), args.clone());
        move || {
            let mut rng = rng.borrow_mut();
            let n: u64 = rng.gen();
            ChargeRequest {
                vehicle_id: Some(format!("ev-{n:x}")),
                power_kw: Some(draw(&mut rng, args.power_min, args.power_max)),
                energy_kwh: Some(draw(&mut rng, args.energy_min, args.energy_max)),
                min_power_kw: None,
            }
        }
    };
    let may_issue = {
        let issued = issued.clone();
        move || {
            let within_count = total_requests.is_none_or(|n| issued.get() < n);
            within_count && t0.elapsed().as_secs_f64() < duration
        }
    };
    let progress = move |bar: &ProgressBar, outcomes: &RefCell<Vec<Outcome>>| {
        if total_requests.is_some() {
            bar.inc(1);
        } else {
            bar.set_position(t0.elapsed().as_millis() as u64);
        }
        let o = outcomes.borrow();
        let ok = o.iter().filter(|x| x.status == 200).count();
        bar.set_message(format!("{ok} accepted of {}", o.len()));
    };

    if let Some(_peak) = args.rate {
        // Open loop: Poisson arrivals following the rate profile (thinning),
        // each request its own task, at most `concurrency` in flight.
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
        let mut tasks = Vec::new();
        let mut late = 0u64;
        let peak = args.rate.unwrap_or(1.0).max(1e-6);
        let mut t = 0.0f64;
        let mut arrivals = SmallRng::seed_from_u64(args.seed ^ 0x5eed);
        loop {
            let u: f64 = arrivals.gen_range(f64::MIN_POSITIVE..1.0);
            t += -u.ln() / peak;
            if t >= duration {
                break;
            }
            if arrivals.gen::<f64>() > rate_at(&args, t, duration) / peak {
                continue;
            }
            if !may_issue() {
                break;
            }
            let wait = Duration::from_secs_f64(t).saturating_sub(t0.elapsed());
            actix_rt::time::sleep(wait).await;
            let permit = match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Saturated: the arrival waits, so the load is no longer open.
                    late += 1;
                    match sem.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break,
                    }
                }
            };
            issued.set(issued.get() + 1);
            let (client, url, outcomes, bar) =
                (client.clone(), url.clone(), outcomes.clone(), bar.clone());
            let req = next_request();
            tasks.push(actix_rt::spawn(async move {
                let o = one(&client, &url, req, t0).await;
                drop(permit);
                outcomes.borrow_mut().push(o);
                progress(&bar, &outcomes);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        if late > 0 {
            eprintln!(
                "{late} arrivals delayed: --concurrency {} was saturated",
                args.concurrency
            );
        }
    } else {
        let mut workers = Vec::new();
        for _ in 0..args.concurrency.max(1) {
            let (client, url, outcomes, bar) =
                (client.clone(), url.clone(), outcomes.clone(), bar.clone());
            let (issued, may_issue, next_request) =
                (issued.clone(), may_issue.clone(), next_request.clone());
            workers.push(actix_rt::spawn(async move {
                while may_issue() {
                    issued.set(issued.get() + 1);
                    let o = one(&client, &url, next_request(), t0).await;
                    outcomes.borrow_mut().push(o);
                    progress(&bar, &outcomes);
                }
            }));
        }
        for w in workers {
            let _ = w.await;
        }
    }
    done.set(true);
    let _ = sampler.await;
    bar.finish();
    let elapsed = t0.elapsed().as_secs_f64();

    let outcomes = outcomes.borrow();
    let samples = samples.borrow();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|e| unreachable!("static histogram bounds: {e}"));
    let (mut ok, mut full, mut errors) = (0u64, 0u64, 0u64);
    let mut per_sub: BTreeMap<String, u64> = BTreeMap::new();
    for o in outcomes.iter() {
        let _ = hist.record(((o.latency_ms * 1000.0) as u64).max(1));
        match o.status {
            200 => {
                ok += 1;
                *per_sub
                    .entry(o.substation.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            503 => full += 1,
            _ => errors += 1,
        }
    }
    // Peak/mean utilisation over samples while the grid is 20-85% busy.
    let mut ratios = Vec::new();
    let (mut peak_util, mut mean_sum, mut mean_n) = (0.0f64, 0.0, 0u64);
    for s in samples.iter() {
        let n = s.utilization.len();
        if n == 0 {
            continue;
        }
        let mean = s.utilization.values().sum::<f64>() / n as f64;
        let max = s.utilization.values().cloned().fold(0.0, f64::max);
        peak_util = peak_util.max(max);
        mean_sum += mean;
        mean_n += 1;
        if (0.2..=0.85).contains(&mean) {
            ratios.push(max / mean);
        }
    }
    ratios.sort_by(f64::total_cmp);
    let median = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[v.len() / 2]
        }
    };
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!();
    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| requests | {} in {elapsed:.1} s ({:.0}/s) |",
        outcomes.len(),
        outcomes.len() as f64 / elapsed
    );
    println!("| accepted (200) | {ok} |");
    println!("| rejected (503) | {full} |");
    println!("| errors | {errors} |");
    println!(
        "| latency p50 / p90 / p99 / max | {:.2} / {:.2} / {:.2} / {:.2} ms |",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    for (sub, n) in &per_sub {
        println!("| sessions on {sub} | {n} |");
    }
    println!(
        "| utilisation samples | {} ({} while 20-85% busy) |",
        samples.len(),
        ratios.len()
    );
    println!("| peak utilisation | {:.1}% |", 100.0 * peak_util);
    println!(
        "| mean utilisation | {:.1}% |",
        100.0 * mean_sum / mean_n.max(1) as f64
    );
    println!(
        "| median peak/mean while 20-85% busy | {:.3} |",
        median(&ratios)
    );

    if let Some(path) = &args.csv {
        let mut csv =
            String::from("start_s,latency_ms,status,substation,power_kw,energy_kwh,error\n");
        for o in outcomes.iter() {
            let _ = writeln!(
                csv,
                "{:.6},{:.3},{},{},{},{},\"{}\"",
                o.start_s,
                o.latency_ms,
                o.status,
                o.substation.as_deref().unwrap_or(""),
                o.power_kw,
                o.energy_kwh,
                o.error.as_deref().unwrap_or("").replace('"', "\"\"")
            );
        }
        write_file(path, &csv);
    }
    if let Some(path) = &args.json {
        let report = Report {
            requests: &outcomes,
            utilization: &samples,
        };
        match serde_json::to_string_pretty(&report) {
            Ok(s) => write_file(path, &s),
            Err(e) => eprintln!("cannot encode JSON: {e}"),
        }
    }
    if let Some(path) = &args.svg {
        write_file(path, &svg_chart(&samples));
    }
    if errors > 0 {
        if let Some(o) = outcomes.iter().find(|o| o.status != 200 && o.status != 503) {
            eprintln!("first error: status {} {:?}", o.status, o.error);
        }
        std::process::exit(1);
    }
}
