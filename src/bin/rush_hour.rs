//! `rush_hour`: a load generator that plays an evening rush of EVs against
//! the entry service and tells what the grid made of it.
//!
//! Modes (see docs/grid.md for every flag):
//!
//! * default: the evening rush scaled to the grid's capacity, read from the
//!   balancer's `/status` (`--capacity-kw` if it cannot be read): ramp to 95%
//!   of capacity, hold, burst to 1.3 times that, ramp down, with a mix of
//!   7/11/22/50/150 kW requests, half of them accepting curtailment;
//! * `--trace FILE.csv`: replays the sessions of a trace;
//! * `--rate R`: open loop at up to R requests/s with linear ramps, power
//!   and energy uniform in the given ranges (the older mode);
//! * `--requests N` without `--rate`: closed loop, `--concurrency` in flight.
//!
//! Meanwhile it polls the balancer's `/status` for each substation's power
//! and limit. At the end it prints a summary table, optionally writes CSV,
//! JSON and an SVG chart, and exits 1 if any request failed other than with
//! a 503. Planning and arithmetic live in `causal_grid::grid::rush`; this
//! file only sends, waits and writes.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::Value;

use causal_grid::grid::rush::profile::{plan, rate_for_power};
use causal_grid::grid::rush::report::{
    delivered_joules, series, substation_urls, Bucket, Delivered, RunFacts,
};
use causal_grid::grid::rush::{svg, trace};
use causal_grid::grid::rush::{
    Arrivals, Flex, GridSample, Mix, Outcome, Planned, Profile, Summary, RUSH_CLASSES,
};
use causal_grid::grid::{ChargeGranted, ChargeRequest};

#[derive(Parser, Debug, Clone)]
#[command(about = "Play an evening rush of EV charge requests against the grid")]
struct Args {
    /// Entry service base URL.
    #[arg(long, default_value = "http://localhost:6000")]
    target: String,
    /// Balancer base URL: its /status gives the capacity and, every
    /// --sample-ms, each substation's power and limit.
    #[arg(long, default_value = "http://localhost:7000")]
    balancer: String,
    /// Simulated seconds per real second; must match the substations'
    /// TIME_SCALE, or offered loads and delivered energy are off by the ratio.
    #[arg(long, env = "TIME_SCALE", default_value_t = 120.0)]
    time_scale: f64,
    /// Length of the run, seconds (default 120 for the rush; --rate: until
    /// --requests are sent; --requests: no limit).
    #[arg(long)]
    duration: Option<f64>,
    /// Grid capacity, kW, when the balancer's /status cannot be read.
    #[arg(long)]
    capacity_kw: Option<f64>,
    /// Rush: the level held, as a fraction of capacity.
    #[arg(long, default_value_t = 0.95)]
    hold: f64,
    /// Rush: the burst, as a multiple of the hold level.
    #[arg(long, default_value_t = 1.3)]
    burst: f64,
    /// Share of requests that accept curtailment (default 0.5 for the rush,
    /// 0 with --rate or --requests; a trace carries its own minimums).
    #[arg(long)]
    flexible_share: Option<f64>,
    /// Their minimum power as a fraction of the requested power.
    #[arg(long, default_value_t = 0.5)]
    min_fraction: f64,
    /// Replay the sessions of this CSV trace (format in docs/grid.md).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Open loop: peak arrival rate (requests/s), power and energy uniform.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: seconds of linear ramp from 0 to the peak rate.
    #[arg(long, default_value_t = 0.0)]
    ramp_up: f64,
    /// Open loop: seconds of linear ramp from the peak rate to 0 at the end.
    #[arg(long, default_value_t = 0.0)]
    ramp_down: f64,
    /// Total requests: closed loop without --rate, a cap with it (default
    /// 1000 with --rate and no --duration).
    #[arg(long)]
    requests: Option<u64>,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// --rate/--requests: smallest requested power, kW.
    #[arg(long, default_value_t = 11.0)]
    power_min: f64,
    /// --rate/--requests: largest requested power, kW.
    #[arg(long, default_value_t = 50.0)]
    power_max: f64,
    /// --rate/--requests: smallest requested energy, kWh.
    #[arg(long, default_value_t = 10.0)]
    energy_min: f64,
    /// --rate/--requests: largest requested energy, kWh.
    #[arg(long, default_value_t = 40.0)]
    energy_max: f64,
    /// Interval of /status samples, ms.
    #[arg(long, default_value_t = 1000)]
    sample_ms: u64,
    /// After the last answer, keep sampling until the grid draws no power,
    /// at most this many seconds.
    #[arg(long, default_value_t = 0.0)]
    drain: f64,
    /// Substation base URLs whose /metrics give the energy delivered
    /// (comma-separated; default: the URLs in the balancer's /status).
    #[arg(long, value_delimiter = ',')]
    substations: Option<Vec<String>>,
    /// Write one row per request to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write requests, samples, the per-second series and the summary to
    /// this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the chart of requests and utilisation over time to this SVG file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Seed for arrivals and request sizes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// How requests are issued.
enum Load {
    /// At planned times, each its own task.
    Open(Vec<Planned>),
    /// `n` requests (or until the deadline), `concurrency` always in flight.
    Closed(Option<u64>),
}

/// The legacy `utilization` entry of the JSON report.
#[derive(Serialize)]
struct UtilSample {
    t_s: f64,
    utilization: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct Report<'a> {
    requests: &'a [Outcome],
    utilization: Vec<UtilSample>,
    samples: &'a [GridSample],
    series: &'a [Bucket],
    summary: &'a Summary,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("rush_hour: {msg}");
    std::process::exit(2);
}

async fn get_text(client: &awc::Client, url: &str) -> Result<String, String> {
    let mut resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{url}: status {}", resp.status()));
    }
    let body = resp
        .body()
        .limit(1 << 22)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn get_status(client: &awc::Client, url: &str) -> Result<Value, String> {
    let text = get_text(client, url).await?;
    serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))
}

/// `/status` once every substation has been polled (up to 5 s).
async fn first_status(client: &awc::Client, url: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = get_status(client, url).await;
        if let Ok(v) = &status {
            let polled = GridSample::from_status(0.0, v).is_some_and(|s| {
                !s.substations.is_empty() && s.substations.values().all(|x| x.capacity_w.is_some())
            });
            if polled || Instant::now() >= deadline {
                return status;
            }
        } else if Instant::now() >= deadline {
            return status;
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every substation's delivered-energy counter, or `None` if any is missing.
async fn delivered_counters(client: &awc::Client, urls: &[String]) -> Option<Vec<f64>> {
    let mut out = Vec::new();
    for url in urls {
        let text = get_text(client, &format!("{}/metrics", url.trim_end_matches('/')))
            .await
            .ok()?;
        out.push(delivered_joules(&text).ok()?);
    }
    (!out.is_empty()).then_some(out)
}

async fn one(client: &awc::Client, url: &str, p: Planned, t0: Instant) -> Outcome {
    let req = ChargeRequest {
        vehicle_id: None,
        power_kw: Some(p.power_kw),
        energy_kwh: Some(p.energy_kwh),
        min_power_kw: p.min_power_kw,
    };
    let start = Instant::now();
    let mut o = Outcome {
        start_s: start.duration_since(t0).as_secs_f64(),
        latency_ms: 0.0,
        status: 0,
        substation: None,
        power_kw: p.power_kw,
        energy_kwh: p.energy_kwh,
        error: None,
        min_power_kw: p.min_power_kw,
        granted_power_kw: None,
        ends_in_s: None,
    };
    match client.post(url).send_json(&req).await {
        Err(e) => o.error = Some(e.to_string()),
        Ok(mut resp) => {
            o.status = resp.status().as_u16();
            match resp.body().await {
                Err(e) => o.error = Some(e.to_string()),
                Ok(body) if o.status == 200 => {
                    match serde_json::from_slice::<ChargeGranted>(&body) {
                        Ok(g) => {
                            o.substation = Some(g.substation);
                            o.granted_power_kw = Some(g.power_kw);
                            o.ends_in_s = Some(g.ends_in_s);
                        }
                        Err(e) => o.error = Some(format!("bad body: {e}")),
                    }
                }
                Ok(body) => o.error = Some(String::from_utf8_lossy(&body).into_owned()),
            }
        }
    }
    o.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    o
}

fn write_file(path: &PathBuf, body: &str) {
    if let Err(e) = std::fs::write(path, body) {
        fail(format_args!("cannot write {}: {e}", path.display()));
    }
}

/// Decides what to send; prints how the load was sized.
fn plan_load(args: &Args, capacity_kw: Option<f64>) -> causal_grid::Result<Load> {
    let uniform = Mix::Uniform {
        power_kw: (args.power_min, args.power_max),
        energy_kwh: (args.energy_min, args.energy_max),
    };
    if let Some(path) = &args.trace {
        if args.rate.is_some() || args.requests.is_some() {
            return Err(causal_grid::Error::invalid(
                "--trace replays its own arrivals: drop --rate and --requests",
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            causal_grid::Error::invalid(format!("cannot read {}: {e}", path.display()))
        })?;
        let rows = trace::parse(&text)?;
        let planned: Vec<Planned> = rows
            .iter()
            .map(|r| r.planned(args.time_scale))
            .take_while(|p| args.duration.is_none_or(|d| p.at_s < d))
            .collect();
        let last = planned.last().map_or(0.0, |p| p.at_s);
        let flexible = planned.iter().filter(|p| p.min_power_kw.is_some()).count();
        println!(
            "trace {}: {} sessions over {last:.0} s ({:.0} simulated min at time scale {}), {flexible} with a minimum below their maximum",
            path.display(),
            planned.len(),
            last * args.time_scale / 60.0,
            args.time_scale
        );
        return Ok(Load::Open(planned));
    }
    if let Some(rate) = args.rate {
        let flex = Flex::new(args.flexible_share.unwrap_or(0.0), args.min_fraction)?;
        let count = args
            .requests
            .or(args.duration.is_none().then_some(1000))
            .unwrap_or(u64::MAX);
        let shape = Profile::ramps(rate, args.ramp_up, args.ramp_down, args.duration)?;
        let arrivals = Arrivals::new(shape, args.duration, args.seed ^ 0x5eed);
        let planned: Vec<Planned> = plan(arrivals, uniform, flex, args.seed)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .collect();
        return Ok(Load::Open(planned));
    }
    if args.requests.is_some() {
        return Ok(Load::Closed(args.requests));
    }
    let capacity_kw = capacity_kw.ok_or_else(|| {
        causal_grid::Error::invalid(
            "the rush is scaled to the grid's capacity: pass --capacity-kw when the balancer cannot be read",
        )
    })?;
    let duration = args.duration.unwrap_or(120.0);
    let flex = Flex::new(args.flexible_share.unwrap_or(0.5), args.min_fraction)?;
    let mix = Mix::rush();
    let mean = mix.mean_energy_kwh();
    let per_kw = rate_for_power(1.0, mean, args.time_scale);
    let rates = Profile::rush(duration, args.hold, args.burst)?.scaled(capacity_kw * per_kw)?;
    let planned: Vec<Planned> = plan(
        Arrivals::new(rates, Some(duration), args.seed ^ 0x5eed),
        mix,
        flex,
        args.seed,
    )
    .collect();
    let hold_kw = args.hold * capacity_kw;
    println!(
        "rush over {duration:.0} s against {capacity_kw:.0} kW at time scale {}: hold {:.0}% ({hold_kw:.0} kW, {:.2} req/s), burst {:.0}% ({:.0} kW, {:.2} req/s); mean energy {mean:.1} kWh; {} requests planned, {:.0}% accepting curtailment to {:.0}% of their power",
        args.time_scale,
        100.0 * args.hold,
        hold_kw * per_kw,
        100.0 * args.hold * args.burst,
        hold_kw * args.burst,
        hold_kw * args.burst * per_kw,
        planned.len(),
        100.0 * flex.share,
        100.0 * flex.min_fraction,
    );
    Ok(Load::Open(planned))
}

#[actix_rt::main]
async fn main() {
    let args = Args::parse();
    if !(args.time_scale > 0.0 && args.time_scale.is_finite()) {
        fail("--time-scale must be positive");
    }
    let url = format!("{}/request_charge", args.target.trim_end_matches('/'));
    let status_url = format!("{}/status", args.balancer.trim_end_matches('/'));
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(args.concurrency.max(1) * 2 + 4))
        .timeout(Duration::from_secs(10))
        .finish();

    let status = first_status(&client, &status_url).await;
    let from_status = status
        .as_ref()
        .ok()
        .and_then(|v| GridSample::from_status(0.0, v))
        .and_then(|s| s.capacity_w())
        .map(|w| w / 1000.0);
    let capacity_kw = match (from_status, args.capacity_kw) {
        (Some(c), _) => Some(c),
        (None, Some(c)) => {
            eprintln!(
                "cannot read the capacity from {status_url} ({}): using --capacity-kw {c}",
                status
                    .as_ref()
                    .err()
                    .map_or("no substation polled yet", |e| e)
            );
            Some(c)
        }
        (None, None) => None,
    };
    let load = match plan_load(&args, capacity_kw) {
        Ok(l) => l,
        Err(e) => match (&status, capacity_kw) {
            (Err(s), None) => fail(format_args!("{e} ({status_url}: {s})")),
            _ => fail(e),
        },
    };
    let meter_urls = args
        .substations
        .clone()
        .unwrap_or_else(|| status.as_ref().map(substation_urls).unwrap_or_default());
    let before = delivered_counters(&client, &meter_urls).await;

    let t0 = Instant::now();
    let bar = ProgressBar::new(match &load {
        Load::Open(p) => p.len() as u64,
        Load::Closed(n) => n.unwrap_or(0),
    });
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let outcomes: Rc<RefCell<Vec<Outcome>>> = Rc::default();
    let samples: Rc<RefCell<Vec<GridSample>>> = Rc::default();
    let done = Rc::new(Cell::new(false));

    let sampler = {
        let (client, samples, done) = (client.clone(), samples.clone(), done.clone());
        let every = Duration::from_millis(args.sample_ms.max(10));
        actix_rt::spawn(async move {
            while !done.get() {
                let started = Instant::now();
                let t_s = started.duration_since(t0).as_secs_f64();
                if let Ok(v) = get_status(&client, &status_url).await {
                    if let Some(s) = GridSample::from_status(t_s, &v) {
                        samples.borrow_mut().push(s);
                    }
                }
                actix_rt::time::sleep(every.saturating_sub(started.elapsed())).await;
            }
        })
    };
    let progress = move |bar: &ProgressBar, outcomes: &RefCell<Vec<Outcome>>| {
        bar.inc(1);
        let o = outcomes.borrow();
        let ok = o.iter().filter(|x| x.accepted()).count();
        bar.set_message(format!("{ok} accepted of {}", o.len()));
    };
    let deadline = args.duration.unwrap_or(f64::INFINITY);

    match load {
        Load::Open(planned) => {
            // Each arrival its own task, at most `concurrency` in flight.
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
            let mut tasks = Vec::new();
            let mut late = 0u64;
            for p in planned {
                let wait = Duration::from_secs_f64(p.at_s).saturating_sub(t0.elapsed());
                actix_rt::time::sleep(wait).await;
                let permit = match sem.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        // Saturated: the arrival waits, so the load is no longer open.
                        late += 1;
                        match sem.clone().acquire_owned().await {
                            Ok(permit) => permit,
                            Err(_) => break,
                        }
                    }
                };
                let (client, url, outcomes, bar) =
                    (client.clone(), url.clone(), outcomes.clone(), bar.clone());
                tasks.push(actix_rt::spawn(async move {
                    let o = one(&client, &url, p, t0).await;
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
        }
        Load::Closed(total) => {
            let flex = match Flex::new(args.flexible_share.unwrap_or(0.0), args.min_fraction) {
                Ok(f) => f,
                Err(e) => fail(e),
            };
            let mix = Mix::Uniform {
                power_kw: (args.power_min, args.power_max),
                energy_kwh: (args.energy_min, args.energy_max),
            };
            let rng = Rc::new(RefCell::new(SmallRng::seed_from_u64(args.seed)));
            let issued = Rc::new(Cell::new(0u64));
            let mut workers = Vec::new();
            for _ in 0..args.concurrency.max(1) {
                let (client, url, outcomes, bar) =
                    (client.clone(), url.clone(), outcomes.clone(), bar.clone());
                let (issued, rng, mix) = (issued.clone(), rng.clone(), mix.clone());
                workers.push(actix_rt::spawn(async move {
                    while total.is_none_or(|n| issued.get() < n)
                        && t0.elapsed().as_secs_f64() < deadline
                    {
                        issued.set(issued.get() + 1);
                        let p = mix.draw(&mut *rng.borrow_mut(), flex);
                        let o = one(&client, &url, p, t0).await;
                        outcomes.borrow_mut().push(o);
                        progress(&bar, &outcomes);
                    }
                }));
            }
            for w in workers {
                let _ = w.await;
            }
        }
    }
    bar.finish();
    // The load's own span; a drain only lengthens the samples and the chart.
    let sent_s = t0.elapsed().as_secs_f64();
    if args.drain > 0.0 {
        let until = Instant::now() + Duration::from_secs_f64(args.drain);
        let mark = samples.borrow().len();
        while Instant::now() < until {
            actix_rt::time::sleep(Duration::from_millis(args.sample_ms.max(10))).await;
            let s = samples.borrow();
            if s.len() > mark && s.last().is_some_and(|x| x.power_w() <= 0.0) {
                break;
            }
        }
    }
    done.set(true);
    let _ = sampler.await;
    let elapsed = t0.elapsed().as_secs_f64();
    let after = delivered_counters(&client, &meter_urls).await;

    let outcomes = outcomes.borrow();
    let samples = samples.borrow();
    let delivered = before
        .as_deref()
        .zip(after.as_deref())
        .and_then(|(b, a)| Delivered::measured(b, a))
        .unwrap_or_else(|| {
            eprintln!(
                "cannot read substation_energy_delivered_joules_total from the substations{}: energy delivered is estimated from the grants",
                if meter_urls.is_empty() { "" } else { " (pass --substations URL,... if the balancer's URLs are not reachable from here)" }
            );
            Delivered::estimated(&outcomes, elapsed, args.time_scale)
        });
    let summary = Summary::compute(RunFacts {
        outcomes: &outcomes,
        samples: &samples,
        classes: &RUSH_CLASSES,
        elapsed_s: sent_s,
        time_scale: args.time_scale,
        capacity_kw,
        delivered: Some(delivered),
    });
    println!();
    print!("{}", summary.table());

    let per_second = series(&outcomes, 1.0, elapsed, args.time_scale);
    if let Some(path) = &args.csv {
        let mut csv = String::from(Outcome::CSV_HEADER);
        csv.push('\n');
        for o in outcomes.iter() {
            csv.push_str(&o.csv_row());
            csv.push('\n');
        }
        write_file(path, &csv);
    }
    if let Some(path) = &args.json {
        let report = Report {
            requests: &outcomes,
            utilization: samples
                .iter()
                .map(|s| UtilSample {
                    t_s: s.t_s,
                    utilization: s
                        .substations
                        .iter()
                        .filter_map(|(k, v)| v.estimated_utilization.map(|u| (k.clone(), u)))
                        .collect(),
                })
                .collect(),
            samples: &samples,
            series: &per_second,
            summary: &summary,
        };
        match serde_json::to_string_pretty(&report) {
            Ok(s) => write_file(path, &s),
            Err(e) => eprintln!("cannot encode JSON: {e}"),
        }
    }
    if let Some(path) = &args.svg {
        let title = match (&args.trace, capacity_kw) {
            (Some(t), _) => format!("rush_hour: trace {}", t.display()),
            (None, Some(c)) => format!("rush_hour against {c:.0} kW"),
            (None, None) => "rush_hour".to_string(),
        };
        let chart = svg::Chart {
            title: &title,
            series: &per_second,
            samples: &samples,
            capacity_kw,
            smooth: 5,
        };
        write_file(path, &svg::render(&chart));
    }
    if summary.errors > 0 {
        if let Some(o) = outcomes.iter().find(|o| o.failed()) {
            eprintln!("first error: status {} {:?}", o.status, o.error);
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let a = Args::try_parse_from(["rush_hour", "--trace", "t.csv", "--substations", "a,b"])
            .unwrap();
        assert_eq!(a.substations.unwrap(), ["a", "b"]);
        assert_eq!(a.sample_ms, 1000);
        assert!(plan_load(
            &Args::try_parse_from(["rush_hour", "--trace", "x.csv", "--rate", "1"]).unwrap(),
            None
        )
        .is_err());
    }
}
