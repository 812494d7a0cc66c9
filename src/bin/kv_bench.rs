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
//! * `kv_bench txn`: 3 `kv_node` processes, node 0 driven with 64
//!   connections through rounds of three phases: single `/put`s, 4-key
//!   `/txn`s (2 reads, 2 writes), and `/incr`s on 100 hot counters. Reports
//!   transactions/s and increments/s against puts/s of the same run, then
//!   checks that every replica's counter totals equal the sums of the
//!   acknowledged increments.

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use causal_grid::causal::{
    Boot, DeliveryBuffer, Effect, Group, Input, Node, NodeConfig, Op as WriteOp, Store, VClock,
    Write,
};
use causal_grid::net::kv::KvClient;
use causal_grid::wire::inspect;

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
    /// The store alone: a put's key-kind check and apply, keys as in
    /// `cluster` (`key` and eight digits), no network, one thread.
    Store {
        /// Puts timed per store size.
        #[arg(long, default_value_t = 1_000_000)]
        puts: usize,
        /// Keys in the store before the timed puts, one run each.
        #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
        sizes: Vec<u64>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// The node's protocol core and its store alone, as the actors drive
    /// them for node 0 of a 3-node cluster: puts stamped into groups,
    /// groups reported durable and applied, the peers' acknowledgements
    /// trimming the log. No I/O, one thread.
    Core {
        /// Puts timed.
        #[arg(long, default_value_t = 1_000_000)]
        puts: usize,
        /// Puts per group commit.
        #[arg(long, default_value_t = 16)]
        group: usize,
        /// Distinct keys.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
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
        /// First of three consecutive ports for the nodes (the next cluster
        /// starts 10 ports higher).
        #[arg(long, default_value_t = 25001)]
        base_port: u16,
        /// Durability policies to compare, one cluster each.
        #[arg(long, value_delimiter = ',', default_value = "memory,fsync")]
        durability: Vec<String>,
    },
    /// Group commits straight into storage, no network: time per commit.
    Storage {
        #[arg(long, default_value_t = 64)]
        group: usize,
        #[arg(long, default_value_t = 3000)]
        groups: usize,
    },
    /// Transactions and counter increments against single puts.
    Txn {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per phase and round.
        #[arg(long, default_value_t = 4)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Distinct keys written and read.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// Hot counters the increments hit.
        #[arg(long, default_value_t = 100)]
        counters: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 25201)]
        base_port: u16,
        #[arg(long, default_value = "fsync")]
        durability: String,
    },
    /// Memory and disk of nodes holding many keys.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Client threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Keys per request: 1 loads with `/put`, more with `/txn` writes
        /// of that many keys (at most 64, the nodes' default
        /// `TXN_MAX_KEYS`).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        batch: u16,
        #[arg(long, default_value_t = 25101)]
        base_port: u16,
        #[arg(long, default_value = "fsync")]
        durability: String,
    },
}

fn main() -> ExitCode {
    match Args::parse().what {
        What::Buffer { origins, seed } => {
            bench_buffer(origins, seed);
            ExitCode::SUCCESS
        }
        What::Store { puts, sizes, seed } => {
            bench_store(puts, &sizes, seed);
            ExitCode::SUCCESS
        }
        What::Core {
            puts,
            group,
            keys,
            seed,
        } => match bench_core(puts, group.max(1), keys.max(1), seed) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kv_bench core: {e}");
                ExitCode::FAILURE
            }
        },
        What::Cluster {
            connections,
            seconds,
            threads,
            keys,
            rounds,
            base_port,
            durability,
        } => report(bench_cluster(
            connections,
            seconds,
            threads,
            keys,
            rounds,
            base_port,
            &durability,
        )),
        What::Storage { group, groups } => report(bench_storage(group, groups)),
        What::Txn {
            connections,
            seconds,
            threads,
            keys,
            counters,
            rounds,
            base_port,
            durability,
        } => report(bench_txn(
            Load {
                connections,
                threads,
                seconds,
                keys,
                counters,
            },
            rounds,
            base_port,
            &durability,
        )),
        What::Memory {
            keys,
            connections,
            threads,
            batch,
            base_port,
            durability,
        } => report(bench_memory(
            keys,
            connections,
            threads,
            usize::from(batch),
            base_port,
            &durability,
        )),
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv_bench: {e}");
            ExitCode::FAILURE
        }
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
            ops: vec![WriteOp::Put {
                key: "k".to_string(),
                value: String::new(),
            }],
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

/// A put of `key{key:08}` by node 0, stamped on `clock` (the keys of
/// `cluster`).
fn put_write(clock: &mut VClock, key: u64, value: &str) -> Write {
    let seq = clock.increment(0);
    Write {
        origin: 0,
        seq,
        vc: clock.clone(),
        ops: vec![WriteOp::Put {
            key: format!("key{key:08}"),
            value: value.to_string(),
        }],
        ts_ms: 0,
    }
}

/// What a put costs the store on each node: the origin checks the key's
/// kind, then every node applies the write (a B-tree lookup each). The
/// writes are built before the clock starts.
fn bench_store(puts: usize, sizes: &[u64], seed: u64) {
    println!("store: check and apply of one-key puts into a store of n keys, one thread");
    println!("{:>10} {:>12} {:>14}", "keys", "ns/put", "puts/s");
    for &n in sizes.iter().filter(|&&n| n > 0) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut vc = VClock::zero(1);
        let mut write = |key: u64| put_write(&mut vc, key, "0123456789abcdef");
        let mut store = Store::new(1);
        for key in 0..n {
            store.apply(&write(key));
        }
        let writes: Vec<Write> = (0..puts).map(|_| write(rng.gen_range(0..n))).collect();
        let start = Instant::now();
        let mut applied = 0usize;
        for w in &writes {
            if store.check_kinds(&w.ops).is_ok() && store.apply(w) {
                applied += 1;
            }
        }
        let elapsed = start.elapsed();
        if applied != puts {
            eprintln!("{} of {puts} puts did not change the store", puts - applied);
        }
        let ns = elapsed.as_nanos() as f64 / puts as f64;
        println!("{:>10} {:>12.1} {:>14.0}", n, ns, 1e9 / ns);
    }
}

/// Node 0's protocol work per put, without the actors: `Input::Write`
/// for each put, `Input::Persisted` for each group the core hands out,
/// the store applying what comes back, and every ten groups both peers
/// acknowledging everything durable (so the log is trimmed as it would
/// be).
fn bench_core(puts: usize, group: usize, keys: u64, seed: u64) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let config = NodeConfig {
        me: 0,
        n: 3,
        max_log: 1_000_000,
        max_waiters: 1_000,
        wait_timeout_ms: 5_000,
    };
    let boot = Boot {
        fresh: false,
        ..Boot::empty(3)
    };
    let (mut node, _) = Node::<u64>::new(config, boot);
    let mut store = Store::new(3);
    let ops: Vec<Vec<WriteOp>> = (0..puts)
        .map(|_| {
            vec![WriteOp::Put {
                key: format!("key{:08}", rng.gen_range(0..keys)),
                value: "0123456789abcdef".to_string(),
            }]
        })
        .collect();
    let mut in_flight: Option<Group> = None;
    let (mut answered, mut groups) = (0usize, 0usize);
    let mut execute =
        |effects: Vec<Effect<u64>>, store: &mut Store, in_flight: &mut Option<Group>| {
            for effect in effects {
                match effect {
                    Effect::Persist(g) => *in_flight = Some(g),
                    Effect::Apply {
                        writes, replies, ..
                    } => {
                        for w in &writes {
                            store.apply(w);
                        }
                        answered += replies.len();
                    }
                    _ => {}
                }
            }
        };
    let start = Instant::now();
    for (i, ops) in ops.into_iter().enumerate() {
        let effects = node.step(Input::Write {
            id: i as u64,
            ops,
            context: None,
            ts_ms: 0,
        });
        execute(effects, &mut store, &mut in_flight);
        if (i + 1) % group == 0 {
            if let Some(g) = in_flight.take() {
                let effects = node.step(Input::Persisted(g));
                execute(effects, &mut store, &mut in_flight);
                groups += 1;
                if groups % 10 == 0 {
                    for peer in [1, 2] {
                        let durable = node.durable().clone();
                        let effects = node.step(Input::PeerAcked {
                            peer,
                            received: durable.clone(),
                            delivered: durable,
                        });
                        execute(effects, &mut store, &mut in_flight);
                    }
                }
            }
        }
    }
    while let Some(g) = in_flight.take() {
        let effects = node.step(Input::Persisted(g));
        execute(effects, &mut store, &mut in_flight);
    }
    let elapsed = start.elapsed();
    if answered != puts {
        return Err(format!("{answered} of {puts} puts answered"));
    }
    let ns = elapsed.as_nanos() as f64 / puts as f64;
    println!(
        "core: {puts} puts in groups of {group} over {keys} keys, one thread: {ns:.1} ns/put, {:.0} puts/s, log {} writes at the end",
        1e9 / ns,
        node.log_entries()
    );
    Ok(())
}

struct Nodes {
    children: Vec<Child>,
    data: std::path::PathBuf,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// CPU time (user and system, all threads, ended ones included) a process
/// has used so far, from `/proc` (Linux), in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(cpu_ticks(&stat)? as f64 / 100.0)
}

/// utime + stime of a `/proc/<pid>/stat` line, in USER_HZ (100 on Linux):
/// fields 14 and 15, counted after the command name, which may hold spaces
/// and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds used so far by this process (the load) and by each node.
fn cpu_snapshot(nodes: &Nodes) -> Vec<f64> {
    std::iter::once(std::process::id())
        .chain(nodes.children.iter().map(Child::id))
        .map(|pid| cpu_seconds(pid).unwrap_or(0.0))
        .collect()
}

/// Resident memory of a process, from `/proc` (Linux), in bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    dir_files(dir).iter().map(|(_, len)| len).sum()
}

/// Every file under `dir` (any depth): its name and size.
fn dir_files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => files.extend(dir_files(&e.path())),
            Ok(m) => files.push((e.file_name().to_string_lossy().into_owned(), m.len())),
            Err(_) => {}
        }
    }
    files
}

/// Waits until every node answers `/ready` (a new cluster's nodes first
/// hear from each other).
async fn wait_serving(urls: &[String]) -> Result<(), String> {
    let client = KvClient::new(Duration::from_secs(5));
    for url in urls {
        client
            .await_ready(url, Duration::from_secs(20))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn start_nodes(base_port: u16, durability: &str) -> Result<(Nodes, Vec<String>), String> {
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
    let data = std::env::temp_dir().join(format!("kv-bench-{}-{base_port}", std::process::id()));
    let mut children = Vec::new();
    for i in 0..3u16 {
        let child = Command::new(&kv_node)
            .env("NODE_ID", i.to_string())
            .env("PEERS", &peers)
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", base_port + i))
            .env("DATA_DIR", data.join(format!("node{i}")))
            .env("CLUSTER_SECRET", "bench-secret")
            .env("DURABILITY", durability)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting kv_node: {e}"))?;
        children.push(child);
    }
    Ok((Nodes { children, data }, urls))
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Health,
    Put,
    Get,
    /// A `/txn` of 2 reads and 2 writes on distinct random keys.
    Txn,
    /// An `/incr` of a random hot counter by a random amount.
    Incr,
}

struct PhaseResult {
    ops: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
    /// Per hot counter, the sum of the acknowledged increments.
    acked: Vec<i64>,
}

/// The shape of a load phase.
#[derive(Clone, Copy)]
struct Load {
    connections: usize,
    threads: usize,
    seconds: u64,
    keys: usize,
    counters: usize,
}

fn run_phase(
    url: &str,
    op: Op,
    connections: usize,
    threads: usize,
    seconds: u64,
    keys: usize,
) -> PhaseResult {
    run_load(
        url,
        op,
        Load {
            connections,
            threads,
            seconds,
            keys,
            counters: 1,
        },
    )
}

fn run_load(url: &str, op: Op, load: Load) -> PhaseResult {
    let Load {
        connections,
        threads,
        seconds,
        keys,
        counters,
    } = load;
    let stop = Arc::new(AtomicBool::new(false));
    let merged = Arc::new(Mutex::new((
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        0u64,
        0u64,
        vec![0i64; counters],
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
                        let mut acked = vec![0i64; counters];
                        while !stop.load(Ordering::Relaxed) {
                            let key = format!("key{:08}", rng.gen_range(0..keys));
                            let hot = rng.gen_range(0..counters);
                            let by = rng.gen_range(-2i64..=5);
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
                                Op::Txn => {
                                    let mut four = Vec::with_capacity(4);
                                    while four.len() < 4 {
                                        let k = format!("key{:08}", rng.gen_range(0..keys));
                                        if !four.contains(&k) {
                                            four.push(k);
                                        }
                                    }
                                    let value: String = (0..16)
                                        .map(|_| rng.gen_range(b'a'..=b'z') as char)
                                        .collect();
                                    let body = serde_json::json!({
                                        "reads": [four[0], four[1]],
                                        "writes": {four[2].as_str(): value, four[3].as_str(): value},
                                    });
                                    client.post(format!("{url}/txn")).send_json(&body).await
                                }
                                Op::Incr => {
                                    let body = serde_json::json!({"key": format!("hot{hot:03}"), "by": by});
                                    client.post(format!("{url}/incr")).send_json(&body).await
                                }
                            };
                            match result {
                                Ok(mut resp) => {
                                    let status = resp.status().as_u16();
                                    let _ = resp.body().await;
                                    // A get of a key never written is a valid 404.
                                    if status == 200 || (op == Op::Get && status == 404) {
                                        ok += 1;
                                        if op == Op::Incr {
                                            acked[hot] += by;
                                        }
                                        let _ = hist.record(began.elapsed().as_micros() as u64);
                                    } else {
                                        err += 1;
                                    }
                                }
                                Err(_) => err += 1,
                            }
                        }
                        (hist, ok, err, acked)
                    }));
                }
                for task in tasks {
                    if let Ok((hist, ok, err, acked)) = task.await {
                        let mut m = merged.lock().expect("merge lock");
                        let _ = m.0.add(&hist);
                        m.1 += ok;
                        m.2 += err;
                        for (total, a) in m.3.iter_mut().zip(acked) {
                            *total += a;
                        }
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
        acked: m.3.clone(),
    }
}

fn bench_txn(load: Load, rounds: usize, base_port: u16, durability: &str) -> Result<(), String> {
    let (_nodes, urls) = start_nodes(base_port, durability)?;
    let sys = actix_rt::System::new();
    sys.block_on(wait_serving(&urls))?;
    println!(
        "3 nodes on loopback ({durability}), load on node 0: {} connections on {} client threads, {rounds} rounds of {} s per phase; puts and 4-key transactions (2 reads, 2 writes) over {} keys, increments over {} hot counters",
        load.connections, load.threads, load.seconds, load.keys, load.counters
    );
    let phases = [("put", Op::Put), ("txn", Op::Txn), ("incr", Op::Incr)];
    let mut totals: Vec<Option<PhaseResult>> = vec![None, None, None];
    for _ in 0..rounds {
        for (i, (_, op)) in phases.iter().enumerate() {
            let r = run_load(&urls[0], *op, load);
            match &mut totals[i] {
                Some(t) => {
                    t.ops += r.ops;
                    t.errors += r.errors;
                    t.secs += r.secs;
                    let _ = t.hist.add(&r.hist);
                    for (a, b) in t.acked.iter_mut().zip(&r.acked) {
                        *a += b;
                    }
                }
                slot => *slot = Some(r),
            }
        }
    }
    println!(
        "\n{:>6} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "phase", "ops/s", "errors", "p50 ms", "p99 ms", "max ms", "vs put"
    );
    let mut put_rate = 0.0;
    let mut rates = Vec::new();
    for ((name, op), total) in phases.iter().zip(&totals) {
        let Some(r) = total else { continue };
        let rate = r.ops as f64 / r.secs;
        if *op == Op::Put {
            put_rate = rate;
        }
        rates.push(rate / put_rate);
        println!(
            "{:>6} {:>10.0} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name,
            rate,
            r.errors,
            r.hist.value_at_quantile(0.5) as f64 / 1000.0,
            r.hist.value_at_quantile(0.99) as f64 / 1000.0,
            r.hist.max() as f64 / 1000.0,
            rate / put_rate
        );
    }
    if let [_, txn, incr] = rates.as_slice() {
        println!(
            "targets: transactions >= 0.5x puts: {} ({txn:.2}); increments >= 0.8x puts: {} ({incr:.2})",
            if *txn >= 0.5 { "met" } else { "MISSED" },
            if *incr >= 0.8 { "met" } else { "MISSED" },
        );
    }
    let (took, _, _) = sys.block_on(wait_converged(&urls))?;
    println!(
        "replicas converged {:.0} ms after the load stopped",
        took.as_secs_f64() * 1000.0
    );
    let Some(incr) = &totals[2] else {
        return Ok(());
    };
    if incr.errors > 0 {
        println!(
            "counter check skipped: {} increments failed, and a failed request may still have been applied",
            incr.errors
        );
        return Ok(());
    }
    let wrong = sys.block_on(check_counters(&urls, &incr.acked))?;
    if wrong.is_empty() {
        println!(
            "every replica's {} counter totals equal the sums of the acknowledged increments",
            incr.acked.len()
        );
        Ok(())
    } else {
        Err(format!("counter totals differ: {}", wrong.join("; ")))
    }
}

/// Reads every hot counter at every node; returns the ones whose total is
/// not the expected sum.
async fn check_counters(urls: &[String], expected: &[i64]) -> Result<Vec<String>, String> {
    let client = KvClient::new(Duration::from_secs(30));
    let mut wrong = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        for (k, want) in expected.iter().enumerate() {
            let key = format!("hot{k:03}");
            let a = client
                .get(url, &key, None)
                .await
                .map_err(|e| e.to_string())?;
            let got = match a.status {
                200 => a.body["value"].as_str().unwrap_or("?").to_string(),
                404 => "0".to_string(),
                other => format!("status {other}"),
            };
            if got != want.to_string() {
                wrong.push(format!("node {n} {key}: {got}, expected {want}"));
            }
        }
    }
    Ok(wrong)
}

fn bench_cluster(
    connections: usize,
    seconds: u64,
    threads: usize,
    keys: usize,
    rounds: usize,
    base_port: u16,
    policies: &[String],
) -> Result<(), String> {
    // One 3-node cluster per durability policy, all running side by side;
    // their phases are interleaved over several rounds and summed, so that
    // drift in the machine's background load hits every figure alike.
    let mut clusters = Vec::new();
    for (i, policy) in policies.iter().enumerate() {
        clusters.push((
            policy.clone(),
            start_nodes(base_port + 10 * i as u16, policy)?,
        ));
    }
    let sys = actix_rt::System::new();
    for (_, (_, urls)) in &clusters {
        sys.block_on(wait_serving(urls))?;
    }
    println!(
        "3 nodes on loopback per cluster, load on node 0: {connections} connections on {threads} client threads, {rounds} rounds of {seconds} s per phase, {keys} keys, 16-byte values"
    );
    let ops = [("health", Op::Health), ("put", Op::Put), ("get", Op::Get)];
    let mut totals: Vec<Vec<Option<PhaseResult>>> =
        clusters.iter().map(|_| vec![None, None, None]).collect();
    let mut converge: Vec<Option<Duration>> = clusters.iter().map(|_| None).collect();
    // Per cluster and phase: CPU seconds of the load and of each node.
    let mut cpu: Vec<Vec<Vec<f64>>> = clusters
        .iter()
        .map(|(_, (nodes, _))| vec![vec![0.0; 1 + nodes.children.len()]; ops.len()])
        .collect();
    let mut per_round = Vec::new();
    for round in 1..=rounds {
        for (c, (policy, (nodes, urls))) in clusters.iter().enumerate() {
            for (i, (_, op)) in ops.iter().enumerate() {
                let before = (*op == Op::Put).then(|| sys.block_on(commit_path(&urls[0])));
                let cpu_before = cpu_snapshot(nodes);
                let r = run_phase(&urls[0], *op, connections, threads, seconds, keys);
                for (sum, (after, before)) in cpu[c][i]
                    .iter_mut()
                    .zip(cpu_snapshot(nodes).iter().zip(&cpu_before))
                {
                    *sum += after - before;
                }
                if let Some(before) = before {
                    let after = sys.block_on(commit_path(&urls[0]));
                    per_round.push(format!(
                        "{:>10} {:>5} {:>10.0} {:>9.2} {:>9.2}   {}",
                        policy,
                        round,
                        r.ops as f64 / r.secs,
                        r.hist.value_at_quantile(0.99) as f64 / 1000.0,
                        r.hist.max() as f64 / 1000.0,
                        commit_summary(before, after),
                    ));
                }
                match &mut totals[c][i] {
                    Some(t) => {
                        t.ops += r.ops;
                        t.errors += r.errors;
                        t.secs += r.secs;
                        let _ = t.hist.add(&r.hist);
                    }
                    slot => *slot = Some(r),
                }
                if *op == Op::Put {
                    let (t, _, _) = sys.block_on(wait_converged(urls))?;
                    if converge[c].is_none_or(|old| t > old) {
                        converge[c] = Some(t);
                    }
                }
            }
        }
    }
    println!("\nput phases, round by round (commit path of node 0 during the phase):");
    println!(
        "{:>10} {:>5} {:>10} {:>9} {:>9}   commit path",
        "durability", "round", "puts/s", "p99 ms", "max ms"
    );
    for line in &per_round {
        println!("{line}");
    }
    println!("\nall rounds:");
    println!(
        "{:>10} {:>8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>12}",
        "durability", "phase", "ops/s", "errors", "p50 ms", "p99 ms", "max ms", "vs health"
    );
    let mut put_rates = Vec::new();
    for (c, (policy, _)) in clusters.iter().enumerate() {
        let mut health_rate = 0.0;
        for ((name, op), total) in ops.iter().zip(&totals[c]) {
            let Some(r) = total else { continue };
            let rate = r.ops as f64 / r.secs;
            if *op == Op::Health {
                health_rate = rate;
            }
            if *op == Op::Put {
                put_rates.push((policy.clone(), rate, r.hist.value_at_quantile(0.99)));
            }
            println!(
                "{:>10} {:>8} {:>10.0} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>12.2}",
                policy,
                name,
                rate,
                r.errors,
                r.hist.value_at_quantile(0.5) as f64 / 1000.0,
                r.hist.value_at_quantile(0.99) as f64 / 1000.0,
                r.hist.max() as f64 / 1000.0,
                rate / health_rate
            );
        }
        if let Some(t) = converge[c] {
            println!(
                "{:>10} replicas converged at most {:.0} ms after a put phase stopped",
                policy,
                t.as_secs_f64() * 1000.0
            );
        }
    }
    println!("\nCPU time per operation, µs (user + system, all threads, all rounds):");
    println!(
        "{:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "durability", "phase", "load", "node 0", "node 1", "node 2", "total"
    );
    for (c, (policy, _)) in clusters.iter().enumerate() {
        for (((name, _), total), used) in ops.iter().zip(&totals[c]).zip(&cpu[c]) {
            let Some(r) = total else { continue };
            let per_op = |s: f64| s * 1e6 / r.ops.max(1) as f64;
            let all: f64 = used.iter().sum();
            println!(
                "{:>10} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                policy,
                name,
                per_op(used[0]),
                per_op(used[1]),
                per_op(used[2]),
                per_op(used[3]),
                per_op(all)
            );
        }
    }
    if let (Some(base), true) = (put_rates.first(), put_rates.len() > 1) {
        for (policy, rate, p99) in &put_rates[1..] {
            println!(
                "put throughput {policy}/{}: {:.2}; p99 {:.2} ms vs {:.2} ms",
                base.0,
                rate / base.1,
                *p99 as f64 / 1000.0,
                base.2 as f64 / 1000.0
            );
        }
    }
    Ok(())
}

/// Node 0's commit-path histograms: (name, le) bucket counts plus sums and
/// counts, keyed by series.
type CommitPath = std::collections::BTreeMap<(String, String), f64>;

async fn commit_path(url: &str) -> CommitPath {
    let client = awc::Client::default();
    let mut out = CommitPath::new();
    let Ok(mut resp) = client.get(format!("{url}/metrics")).send().await else {
        return out;
    };
    let Ok(body) = resp.body().limit(1 << 24).await else {
        return out;
    };
    let text = String::from_utf8_lossy(&body);
    for s in causal_grid::grid::exposition::parse(&text).unwrap_or_default() {
        if s.name.starts_with("kv_commit_")
            || s.name.starts_with("kv_fsync_")
            || s.name.starts_with("kv_checkpoint_")
            || s.name.starts_with("kv_put_queue_")
        {
            let le = s.label("le").unwrap_or("").to_string();
            out.insert((s.name, le), s.value);
        }
    }
    out
}

/// What moved between two scrapes: commits, mean writes per group, the
/// fdatasync's mean and the bucket its slowest fell in, checkpoints and the
/// bucket of the slowest, and the bucket of the slowest put's queueing.
fn commit_summary(before: CommitPath, after: CommitPath) -> String {
    let delta = |name: &str, le: &str| {
        let key = (name.to_string(), le.to_string());
        after.get(&key).copied().unwrap_or(0.0) - before.get(&key).copied().unwrap_or(0.0)
    };
    // The upper bound of the highest bucket that gained an observation.
    let worst = |name: &str| -> String {
        let bucket = format!("{name}_bucket");
        let mut bounds: Vec<(f64, f64)> = after
            .keys()
            .filter(|(n, _)| *n == bucket)
            .filter_map(|(_, le)| Some((le.parse::<f64>().ok()?, delta(&bucket, le))))
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = delta(&format!("{name}_count"), "");
        match bounds.iter().find(|(_, c)| *c >= total) {
            _ if total == 0.0 => "-".into(),
            Some((le, _)) if le.is_finite() => format!("<={:.1}ms", le * 1000.0),
            _ => "beyond the buckets".into(),
        }
    };
    let mean = |name: &str| {
        let n = delta(&format!("{name}_count"), "");
        if n > 0.0 {
            delta(&format!("{name}_sum"), "") / n
        } else {
            0.0
        }
    };
    let commits = delta("kv_commit_duration_seconds_count", "");
    if commits == 0.0 {
        return "(no commit metrics: memory mode)".into();
    }
    format!(
        "{commits:.0} commits of {:.0} writes, commit mean {:.2}ms worst {}; fsync mean {:.2}ms worst {}; {:.0} checkpoints worst {} ({:.1} MB); put queue worst {}",
        mean("kv_commit_group_writes"),
        mean("kv_commit_duration_seconds") * 1000.0,
        worst("kv_commit_duration_seconds"),
        mean("kv_fsync_duration_seconds") * 1000.0,
        worst("kv_fsync_duration_seconds"),
        delta("kv_checkpoint_duration_seconds_count", ""),
        worst("kv_checkpoint_duration_seconds"),
        delta("kv_checkpoint_bytes_sum", "") / 1e6,
        worst("kv_put_queue_seconds"),
    )
}

/// Commits `groups` groups of `group` writes (random keys among 1M, 16-byte
/// values, the previous group's clock as the stable trim, as in a healthy
/// cluster) per durability policy, back to back, and reports the time per
/// commit, split by whether a background checkpoint was running.
fn bench_storage(group: usize, groups: usize) -> Result<(), String> {
    use causal_grid::storage::{Storage, SyncPolicy};
    println!("storage group commits: {groups} groups of {group} writes");
    println!(
        "{:>17} {:>10} {:>12} {:>8} {:>9} {:>9} {:>9} {:>12}",
        "policy/log",
        "writes/s",
        "checkpoint",
        "commits",
        "p50 ms",
        "p99 ms",
        "max ms",
        "checkpoints"
    );
    let new_hist =
        || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string());
    // Fsync with a preallocated log and with plain appends alternate, so
    // the machine's drift hits both alike.
    let runs = [
        (SyncPolicy::Eventual, true),
        (SyncPolicy::Fsync, true),
        (SyncPolicy::Fsync, false),
        (SyncPolicy::Fsync, true),
        (SyncPolicy::Fsync, false),
    ];
    for (policy, preallocate) in runs {
        let dir = std::env::temp_dir().join(format!("kv-bench-storage-{}", std::process::id()));
        let options = causal_grid::storage::WalOptions {
            preallocate,
            ..Default::default()
        };
        let (storage, _) =
            Storage::open_with(&dir, 0, 3, policy, options).map_err(|e| e.to_string())?;
        let policy = format!(
            "{policy:?}/{}",
            if preallocate { "prealloc" } else { "append" }
        );
        let mut rng = SmallRng::seed_from_u64(7);
        let mut clock = VClock::zero(3);
        // [without a checkpoint running, with one]
        let mut hists = [new_hist()?, new_hist()?];
        let mut checkpoints = Vec::new();
        let start = Instant::now();
        for _ in 0..groups {
            let stable = clock.clone();
            let writes: Vec<Write> = (0..group)
                .map(|_| {
                    let value = format!("{:016}", clock.get(0) + 1);
                    put_write(&mut clock, rng.gen_range(0..1_000_000), &value)
                })
                .collect();
            let group = causal_grid::causal::Group {
                id: 0,
                snapshot: None,
                writes,
                delivered: clock.clone(),
                trim: Some(stable),
                sync: false,
                rebuilding: false,
            };
            let during = storage.checkpointing();
            let began = Instant::now();
            let stats = storage.commit(&group).map_err(|e| e.to_string())?;
            let _ = hists[usize::from(during)].record(began.elapsed().as_micros() as u64);
            checkpoints.extend(stats.checkpoint);
        }
        let secs = start.elapsed().as_secs_f64();
        for (during, hist) in hists.iter().enumerate() {
            let ckpt = if during == 1 {
                let longest = checkpoints
                    .iter()
                    .map(|c| c.duration)
                    .max()
                    .unwrap_or_default();
                format!(
                    "{} <= {:.0} ms",
                    checkpoints.len(),
                    longest.as_secs_f64() * 1000.0
                )
            } else {
                String::new()
            };
            println!(
                "{:>17} {:>10.0} {:>12} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>12}",
                policy,
                (groups * group) as f64 / secs,
                if during == 1 { "running" } else { "none" },
                hist.len(),
                hist.value_at_quantile(0.5) as f64 / 1000.0,
                hist.value_at_quantile(0.99) as f64 / 1000.0,
                hist.max() as f64 / 1000.0,
                ckpt
            );
        }
        drop(storage);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Loads `keys` distinct keys into node 0 of a 3-node cluster, then reports
/// each node's resident memory and data directory size once the replicas
/// agree and the replication logs are trimmed.
fn bench_memory(
    keys: usize,
    connections: usize,
    threads: usize,
    batch: usize,
    base_port: u16,
    durability: &str,
) -> Result<(), String> {
    let (nodes, urls) = start_nodes(base_port, durability)?;
    let sys = actix_rt::System::new();
    sys.block_on(wait_serving(&urls))?;
    let started = Instant::now();
    // Client threads share one counter of keys, each with its share of the
    // connections: one client thread alone cannot keep a node busy.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for t in 0..threads {
        let per_thread = connections / threads + usize::from(t < connections % threads);
        let (url, next) = (urls[0].clone(), next.clone());
        handles.push(std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let client = awc::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .connector(awc::Connector::new().limit(per_thread * 2))
                    .finish();
                let mut tasks = Vec::new();
                for _ in 0..per_thread {
                    let (client, url, next) = (client.clone(), url.clone(), next.clone());
                    tasks.push(actix_rt::spawn(async move {
                        loop {
                            let i = next.fetch_add(batch, Ordering::Relaxed);
                            if i >= keys {
                                return Ok::<(), String>(());
                            }
                            let (path, body) = if batch == 1 {
                                ("put", serde_json::json!({"key": format!("key{i:08}"), "value": format!("{i:016}")}))
                            } else {
                                let writes: serde_json::Map<String, serde_json::Value> = (i..(i + batch).min(keys))
                                    .map(|j| (format!("key{j:08}"), format!("{j:016}").into()))
                                    .collect();
                                ("txn", serde_json::json!({ "writes": writes }))
                            };
                            let mut resp = client
                                .post(format!("{url}/{path}"))
                                .send_json(&body)
                                .await
                                .map_err(|e| e.to_string())?;
                            // Read to the end, or the connection is closed
                            // instead of reused, and the load measures
                            // TCP handshakes.
                            let _ = resp.body().await;
                            if resp.status() != 200 {
                                return Err(format!("{path} answered {}", resp.status()));
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.map_err(|e| e.to_string())??;
                }
                Ok::<(), String>(())
            })
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| "a client thread panicked".to_string())??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    // Wait for the replicas and the log trimming with the cheap form of
    // `/status` only: a full one would copy the million keys into a
    // response and leave that memory to the allocator, inflating the RSS.
    let (t, n) = sys.block_on(async {
        let client = KvClient::new(Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut agreed: Option<(Duration, usize)> = None;
        loop {
            let mut all = Vec::new();
            for url in &urls {
                all.push(
                    client
                        .status_of(url, false)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            if agreed.is_none() && inspect::clocks_agree(&all) {
                agreed = Some((started.elapsed(), all[0].keys));
            }
            if agreed.is_some() && all.iter().all(|s| s.log_entries == 0) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("no convergence: {}", inspect::describe(&all)));
            }
            actix_rt::time::sleep(Duration::from_millis(200)).await;
        }
        agreed.ok_or_else(|| "no convergence".to_string())
    })?;
    // Then until the background checkpoints have taken every closed log
    // segment (what is left: the open one and, preallocated, the spare
    // ones), so that memory and disk are measured at rest, not
    // mid-checkpoint.
    let settle = Instant::now();
    let dirs: Vec<_> = (0..urls.len())
        .map(|i| nodes.data.join(format!("node{i}")))
        .collect();
    loop {
        let mut closed = 0;
        for d in &dirs {
            closed += causal_grid::storage::closed_log_segments(d).map_err(|e| e.to_string())?;
        }
        if closed == 0 {
            break;
        }
        if settle.elapsed() > Duration::from_secs(120) {
            return Err("checkpoints did not catch up within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled_ms = settle.elapsed().as_secs_f64() * 1000.0;
    let t = t.saturating_sub(Duration::from_secs_f64(load_secs));
    let how = match batch {
        1 => "one /put per key".to_string(),
        b => format!("/txn writes of {b} keys"),
    };
    println!(
        "{keys} keys of 16-byte values loaded into node 0 in {load_secs:.1} s ({:.0} puts/s, {how}), durability {durability}; replicas agreed {:.0} ms after the load ({n} keys each); checkpoints caught up {settled_ms:.0} ms later",
        keys as f64 / load_secs,
        t.as_secs_f64() * 1000.0
    );
    for (i, child) in nodes.children.iter().enumerate() {
        let rss = rss_bytes(child.id()).unwrap_or(0);
        let disk = dir_bytes(&nodes.data.join(format!("node{i}")));
        println!(
            "node {i}: RSS {:.1} MB, data directory {:.1} MB",
            rss as f64 / 1e6,
            disk as f64 / 1e6
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    731 208 0 0 20 0 7 0 1234 0 0";
        assert_eq!(cpu_ticks(stat), Some(731 + 208));
        assert_eq!(cpu_ticks("4242 (cut short) S 1 2"), None);
    }

    #[test]
    fn this_process_cpu_time_grows_while_it_computes() {
        let me = std::process::id();
        let start = cpu_seconds(me).expect("/proc/self/stat is readable");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        while cpu_seconds(me).expect("readable") <= start {
            assert!(Instant::now() < deadline, "no CPU time was counted");
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
    }
}
