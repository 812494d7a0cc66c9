//! `cluster`: the whole stack in one process, without Docker.
//!
//! Starts 3 KV nodes, 4 substations of unequal capacity, the load balancer
//! and the entry service on the same localhost ports as the compose file
//! (substations, which compose does not publish, on 8001-8004), prints where
//! each listens, and stops everything cleanly on Ctrl-C or SIGTERM.
//! `causal_demo` and `rush_hour` work against it unchanged.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use causal_grid::grid::router::DEFAULT_MAX_MOVES;
use causal_grid::service::balancer::BalancerConfig;
use causal_grid::service::entry::EntryConfig;
use causal_grid::service::env::init_logging;
use causal_grid::service::kv::KvConfig;
use causal_grid::service::substation::SubstationConfig;
use causal_grid::service::{self, Running};

#[derive(Parser, Debug)]
#[command(about = "Runs the whole causal-grid stack in one process on localhost")]
struct Args {
    /// Address to bind every service on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Shared secret of the KV nodes (the same default as the compose file;
    /// override it anywhere but on your own machine).
    #[arg(
        long,
        env = "CLUSTER_SECRET",
        default_value = "dev-secret-change-me",
        hide_env_values = true
    )]
    secret: String,
    /// Where the KV nodes keep their state (one folder per node).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Simulated seconds per real second in the substations.
    #[arg(long, env = "TIME_SCALE", default_value_t = 120.0)]
    time_scale: f64,
    /// Bearer token of the substations' `PUT /limit` and of the hand-overs
    /// the balancer sends them when it moves sessions (the same posture as
    /// `--secret`: override it anywhere but on your own machine).
    #[arg(
        long,
        env = "GRID_ADMIN_TOKEN",
        default_value = "dev-grid-token-change-me",
        hide_env_values = true
    )]
    grid_admin_token: String,
    /// How often the balancer polls the substations, in ms.
    #[arg(long, env = "POLL_INTERVAL_MS", default_value_t = 1000)]
    poll_interval_ms: u64,
}

/// Capacities of substation1..4 in kW, as in the compose file.
const CAPACITIES_KW: [f64; 4] = [300.0, 500.0, 800.0, 1200.0];

fn main() {
    init_logging();
    let args = Args::parse();
    let result = actix_rt::System::new().block_on(run(args));
    if let Err(e) = result {
        eprintln!("cluster: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> causal_grid::Result<()> {
    let host = &args.host;
    let admin_token = args.grid_admin_token.clone();
    let mut running: Vec<(String, Running)> = Vec::new();
    let mut kv_nodes = Vec::new();

    let peers: Vec<String> = (1..=3).map(|i| format!("http://{host}:500{i}")).collect();
    for id in 0..3 {
        let cfg = KvConfig {
            listen_addr: format!("{host}:500{}", id + 1),
            data_dir: args.data_dir.join(format!("node{}", id + 1)),
            ..KvConfig::new(id, peers.clone(), args.secret.clone())
        };
        let (r, node) = service::kv::start(&cfg, false)?;
        running.push((format!("kv node{} (NODE_ID {id})", id + 1), r));
        kv_nodes.push(node);
    }
    let mut substations = Vec::new();
    for (i, capacity_kw) in CAPACITIES_KW.iter().enumerate() {
        let cfg = SubstationConfig {
            id: format!("substation{}", i + 1),
            listen_addr: format!("{host}:800{}", i + 1),
            capacity_kw: *capacity_kw,
            time_scale: args.time_scale,
            admin_token: Some(admin_token.clone()),
        };
        cfg.check()?;
        let r = service::substation::start(cfg, false)?;
        substations.push(r.url());
        running.push((format!("substation{} ({capacity_kw} kW)", i + 1), r));
    }
    let balancer = BalancerConfig {
        listen_addr: format!("{host}:7000"),
        substations,
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        seed: None,
        batch: service::env::batch_config()?,
        admin_token: Some(admin_token.clone()),
        max_moves: service::env::parse_or("BALANCER_MAX_MOVES", DEFAULT_MAX_MOVES)?,
    }
    .checked()?;
    let r = service::balancer::start(balancer, false)?;
    let balancer_url = r.url();
    running.push(("load_balancer".into(), r));
    let entry = EntryConfig {
        listen_addr: format!("{host}:6000"),
        load_balancer_url: balancer_url,
        batch: service::env::batch_config()?,
    };
    running.push((
        "charge_request".into(),
        service::entry::start(entry, false)?,
    ));

    println!("causal-grid local stack is up:");
    for (name, r) in &running {
        println!("  {name:<28} {}", r.url());
    }
    println!(
        "try: cargo run --release --bin causal_demo   |   cargo run --release --bin rush_hour"
    );
    println!("Ctrl-C to stop");

    service::shutdown_signal().await;
    log::info!("stopping");
    for (_, r) in &running {
        r.stop().await;
    }
    for node in &kv_nodes {
        if let Err(e) = node.flush().await {
            log::warn!("flushing a KV node failed: {e}");
        }
        node.shutdown();
    }
    Ok(())
}
