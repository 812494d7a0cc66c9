//! `kv_bench`: benchmarks of the causal KV store, run by hand.
//!
//! * `kv_bench buffer`: the pure delivery buffer. Writes from 8 origins with
//!   random causal dependencies arrive in a random order; reports ns per
//!   message for 10k, 100k and 1M writes (the buffer holds most of them at its
//!   peak, so this shows whether draining stays O(1) per message).
//! * `kv_bench cluster`: starts 3 `kv_node` processes on loopback (the binary
//!   next to this one) and drives node 0 with 64 connections: `/health`,
//!   then `/put`, then `/get`, in one run, and reports throughput, latency and
//!   the put/health and get/health ratios, then how long the replicas take to
//!   converge after the put load stops.

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use causal_grid::causal::{DeliveryBuffer, VClock, Write};
use causal_grid::http::kv::client::KvClient;
use causal_grid::http::kv::inspect;

#[derive(Parser)]
#[command(about = "Benchmarks of the causal KV store")]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Delivery buffer throughput with random arrival order.
    Buffer {
        #[arg(long, default_value_t = 8)]
        origins: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// 3 nodes on loopback, load on node 0.
    Cluster {
        /// Concurrent connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per phase and round.
        #[arg(long, default_value_t = 4)]
        seconds: u64,
        /// Client threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Distinct keys written.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// Rounds of (health, put, get) phases, summed.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// First of three consecutive ports for the nodes.
        #[arg(long, default_value_t = 25001)]
        base_port: u16,
    },
}

fn main() -> ExitCode {
    match Args::parse().what {
        What::Buffer { origins, seed } => {
            bench_buffer(origins, seed);
            ExitCode::SUCCESS
        }
        What::Cluster {
            connections,
            seconds,
            threads,
            keys,
            rounds,
            base_port,
        } => match bench_cluster(connections, seconds, threads, keys, rounds, base_port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kv_bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A causal history: each write's origin has seen a random earlier write of
/// another origin (plus, transitively, everything that one had seen).
fn history(n: usize, origins: usize, rng: &mut SmallRng) -> Vec<Write> {
    let mut clocks: Vec<VClock> = (0..origins).map(|_| VClock::zero(origins)).collect();
    let mut all: Vec<Write> = Vec::with_capacity(n);
    for _ in 0..n {
        let node = rng.gen_range(0..origins);
        if !all.is_empty() && rng.gen_bool(0.5) {
            // Depend on a recent write, as replicas that keep up would.
            let back = rng.gen_range(1..=all.len().min(64));
            let seen = all[all.len() - back].vc.clone();
            clocks[node].merge(&seen);
        }
        let seq = clocks[node].increment(node);
        all.push(Write {
            origin: node,
            seq,
            vc: clocks[node].clone(),
            key: "k".to_string(),
            value: String::new(),
            ts_ms: 0,
        });
    }
    all
}

fn bench_buffer(origins: usize, seed: u64) {
    println!("delivery buffer, {origins} origins, random arrival order");
    println!(
        "{:>10} {:>12} {:>14} {:>14}",
        "writes", "ns/message", "messages/s", "peak buffered"
    );
    for n in [10_000usize, 100_000, 1_000_000] {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut writes = history(n, origins, &mut rng);
        writes.shuffle(&mut rng);
        let mut buffer = DeliveryBuffer::new(origins, n);
        let mut out = Vec::with_capacity(n);
        let mut peak = 0usize;
        let mut refused = 0usize;
        let start = Instant::now();
        for w in writes {
            if buffer.offer(w, &mut out).is_err() {
                refused += 1;
            }
            peak = peak.max(buffer.len());
            out.clear();
        }
        let elapsed = start.elapsed();
        if refused > 0 || !buffer.is_empty() {
            eprintln!(
                "{refused} writes refused, {} left in the buffer",
                buffer.len()
            );
        }
        let ns = elapsed.as_nanos() as f64 / n as f64;
        println!("{:>10} {:>12.1} {:>14.0} {:>14}", n, ns, 1e9 / ns, peak);
    }
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_nodes(base_port: u16) -> Result<(Nodes, Vec<String>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let kv_node = exe.with_file_name("kv_node");
    if !kv_node.exists() {
        return Err(format!(
            "{} not found: build it first (cargo build --release --bins)",
            kv_node.display()
        ));
    }
    let urls: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", base_port + i))
        .collect();
    let peers = urls
        .iter()
        .enumerate()
        .map(|(i, u)| format!("{i}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let data = std::env::temp_dir().join(format!("kv-bench-{}", std::process::id()));
    let mut children = Vec::new();
    for i in 0..3u16 {
        let child = Command::new(&kv_node)
            .env("NODE_ID", i.to_string())
            .env("PEERS", &peers)
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", base_port + i))
            .env("DATA_DIR", data.join(format!("node{i}")))
            .env("CLUSTER_SECRET", "bench-secret")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting kv_node: {e}"))?;
        children.push(child);
    }
    Ok((Nodes(children), urls))
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Health,
    Put,
    Get,
}

struct PhaseResult {
    ops: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

fn run_phase(
    url: &str,
    op: Op,
    connections: usize,
    threads: usize,
    seconds: u64,
    keys: usize,
) -> PhaseResult {
    let stop = Arc::new(AtomicBool::new(false));
    let merged = Arc::new(Mutex::new((
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        0u64,
        0u64,
    )));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..threads {
        let per_thread = connections / threads + usize::from(t < connections % threads);
        let url = url.to_string();
        let stop = stop.clone();
        let merged = merged.clone();
        handles.push(std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let client = awc::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .connector(awc::Connector::new().limit(per_thread * 2))
                    .finish();
                let mut tasks = Vec::new();
                for c in 0..per_thread {
                    let client = client.clone();
                    let url = url.clone();
                    let stop = stop.clone();
                    tasks.push(actix_rt::spawn(async move {
                        let mut rng = SmallRng::seed_from_u64((t * 1000 + c) as u64);
                        let mut hist =
                            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                        let (mut ok, mut err) = (0u64, 0u64);
                        while !stop.load(Ordering::Relaxed) {
                            let key = format!("key{:08}", rng.gen_range(0..keys));
                            let began = Instant::now();
                            let result = match op {
                                Op::Health => client.get(format!("{url}/health")).send().await,
                                Op::Put => {
                                    let value: String = (0..16)
                                        .map(|_| rng.gen_range(b'a'..=b'z') as char)
                                        .collect();
                                    client
                                        .post(format!("{url}/put"))
                                        .send_json(&serde_json::json!({"key": key, "value": value}))
                                        .await
                                }
                                Op::Get => client.get(format!("{url}/get?key={key}")).send().await,
                            };
                            match result {
                                Ok(mut resp) => {
                                    let status = resp.status().as_u16();
                                    let _ = resp.body().await;
                                    // A get of a key never written is a valid 404.
                                    if status == 200 || (op == Op::Get && status == 404) {
                                        ok += 1;
                                        let _ = hist.record(began.elapsed().as_micros() as u64);
                                    } else {
                                        err += 1;
                                    }
                                }
                                Err(_) => err += 1,
                            }
                        }
                        (hist, ok, err)
                    }));
                }
                for task in tasks {
                    if let Ok((hist, ok, err)) = task.await {
                        let mut m = merged.lock().expect("merge lock");
                        let _ = m.0.add(&hist);
                        m.1 += ok;
                        m.2 += err;
                    }
                }
            });
        }));
    }
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let m = merged.lock().expect("merge lock");
    PhaseResult {
        ops: m.1,
        errors: m.2,
        secs,
        hist: m.0.clone(),
    }
}

fn bench_cluster(
    connections: usize,
    seconds: u64,
    threads: usize,
    keys: usize,
    rounds: usize,
    base_port: u16,
) -> Result<(), String> {
    let (_nodes, urls) = start_nodes(base_port)?;
    let sys = actix_rt::System::new();
    let client = KvClient::new(Duration::from_secs(30));
    // Wait for the nodes to serve.
    let deadline = Instant::now() + Duration::from_secs(20);
    for url in &urls {
        while sys.block_on(client.status(url)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{url} did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!(
        "3 nodes on loopback, load on node 0: {connections} connections on {threads} client threads, {rounds} rounds of {seconds} s per phase, {keys} keys, 16-byte values"
    );
    println!(
        "{:>8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "phase", "ops/s", "errors", "p50 ms", "p99 ms", "max ms", "ratio"
    );
    // Phases are interleaved over several rounds and summed, so that drift
    // in the machine's background load hits every phase alike.
    let ops = [("health", Op::Health), ("put", Op::Put), ("get", Op::Get)];
    let mut totals: Vec<Option<PhaseResult>> = vec![None, None, None];
    let mut converge: Option<(Duration, VClock, usize)> = None;
    for _ in 0..rounds {
        for (i, (_, op)) in ops.iter().enumerate() {
            let r = run_phase(&urls[0], *op, connections, threads, seconds, keys);
            match &mut totals[i] {
                Some(t) => {
                    t.ops += r.ops;
                    t.errors += r.errors;
                    t.secs += r.secs;
                    let _ = t.hist.add(&r.hist);
                }
                slot => *slot = Some(r),
            }
            if *op == Op::Put {
                let c = sys.block_on(wait_converged(&urls))?;
                if converge.as_ref().is_none_or(|old| c.0 > old.0) {
                    converge = Some(c);
                }
            }
        }
    }
    let mut health_rate = 0.0;
    for ((name, op), total) in ops.iter().zip(totals) {
        let Some(r) = total else { continue };
        let rate = r.ops as f64 / r.secs;
        if *op == Op::Health {
            health_rate = rate;
        }
        println!(
            "{:>8} {:>10.0} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name,
            rate,
            r.errors,
            r.hist.value_at_quantile(0.5) as f64 / 1000.0,
            r.hist.value_at_quantile(0.99) as f64 / 1000.0,
            r.hist.max() as f64 / 1000.0,
            rate / health_rate
        );
    }
    // Replication counters of node 0, for the record.
    let metrics = sys.block_on(async {
        let mut resp = awc::Client::default()
            .get(format!("{}/metrics", urls[0]))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body = resp
            .body()
            .limit(16 << 20)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&body).into_owned())
    })?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("kv_replication_batches_total")
            || l.starts_with("kv_replicated_writes_sent_total")
    }) {
        println!("node 0: {line}");
    }
    if let Some((t, vc, keys)) = converge {
        println!(
            "replicas converged at most {:.0} ms after a put phase stopped (vc [{vc}], {keys} keys on every node)",
            t.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

/// Time from the end of the load until all replicas agree: polls the clocks
/// (cheap), then checks the stores themselves once the clocks agree.
async fn wait_converged(urls: &[String]) -> Result<(Duration, VClock, usize), String> {
    let stopped = Instant::now();
    // A client of this system run (a pooled one would hold connections the
    // nodes closed while the load phases ran on other threads).
    let client = KvClient::new(Duration::from_secs(30));
    let deadline = stopped + Duration::from_secs(60);
    loop {
        let mut all = Vec::new();
        for url in urls {
            all.push(
                client
                    .status_of(url, false)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        if inspect::clocks_agree(&all) {
            let elapsed = stopped.elapsed();
            let mut full = Vec::new();
            for url in urls {
                full.push(client.status(url).await.map_err(|e| e.to_string())?);
            }
            if !inspect::converged(&full) {
                return Err(format!(
                    "same clocks, different stores: {}",
                    inspect::describe(&full)
                ));
            }
            return Ok((elapsed, all[0].vc.clone(), all[0].keys));
        }
        if Instant::now() > deadline {
            return Err(format!("no convergence: {}", inspect::describe(&all)));
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}
