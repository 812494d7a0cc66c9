//! `causal_demo`: the causal scenario against a running 3-node cluster.
//!
//! 1. Replication from node 1 to node 3 is delayed through the admin route.
//! 2. Node 1 writes x=15.
//! 3. Node 2, with node 1's causal context, writes x=30 (it waits until it
//!    has x=15, so x=30 causally follows x=15).
//! 4. Node 3 writes y=90.
//!
//! Node 3 receives x=30 before x=15 and must buffer it. The demo prints what
//! node 3 shows meanwhile, then the final state everywhere. It exits non-zero
//! if any node ever shows a causal violation or the nodes do not converge.
//!
//! Node numbers in the output are 1-based like the container names; node
//! ids in clocks are 0-based like `NODE_ID`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use causal_grid::auth::Signer;
use causal_grid::causal::FaultKind;
use causal_grid::net::kv::{KvClient, PeerClient};
use causal_grid::wire::inspect;
use causal_grid::wire::kv::{FaultRequest, StatusResponse};

#[derive(Parser, Debug)]
#[command(about = "Demonstrates causal delivery on a running 3-node causal-grid cluster")]
struct Args {
    /// Base URL of node 1 (NODE_ID 0).
    #[arg(long, default_value = "http://localhost:5001")]
    node1: String,
    /// Base URL of node 2 (NODE_ID 1).
    #[arg(long, default_value = "http://localhost:5002")]
    node2: String,
    /// Base URL of node 3 (NODE_ID 2).
    #[arg(long, default_value = "http://localhost:5003")]
    node3: String,
    /// The cluster's secret, needed for the admin route.
    #[arg(
        long,
        env = "CLUSTER_SECRET",
        default_value = "dev-secret-change-me",
        hide_env_values = true
    )]
    secret: String,
    /// How long replication node 1 → node 3 is delayed, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    delay_ms: u64,
    /// How long to wait for convergence, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match actix_rt::System::new().block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("causal_demo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn show(label: &str, s: &StatusResponse) {
    let values: Vec<String> = s
        .store
        .iter()
        .map(|(k, v)| format!("{k}={} (vc {})", v.value, v.vc))
        .collect();
    println!(
        "  {label}: delivered vc [{}], buffered {}, store {{{}}}",
        s.vc,
        s.buffered_msgs,
        values.join(", ")
    );
    for w in &s.waiting {
        let (from, dep) = (w.origin + 1, w.blocked_on.origin + 1);
        let also = match w.count {
            1 => String::new(),
            n => format!(", with {} more from node {from}", n - 1),
        };
        println!(
            "    {}={} from node {from} waits for node {dep}'s write {} ({} ms{also})",
            w.key, w.value, w.blocked_on.seq, w.waited_ms
        );
    }
}

fn check(s: &StatusResponse) -> Result<(), String> {
    let v = inspect::causal_violations(s);
    if v.is_empty() {
        Ok(())
    } else {
        Err(format!("causal violation: {}", v.join("; ")))
    }
}

async fn run(args: Args) -> Result<(), String> {
    let nodes = [args.node1.clone(), args.node2.clone(), args.node3.clone()];
    let kv = KvClient::new(Duration::from_secs(10));
    let signer = Signer::new(&args.secret).map_err(|e| e.to_string())?;
    let admin = PeerClient::new(signer, "admin", Duration::from_secs(5));
    let e = |e: causal_grid::Error| e.to_string();

    println!("causal_demo against {}", nodes.join(", "));
    for url in &nodes {
        kv.await_ready(url, Duration::from_secs(args.timeout_s))
            .await
            .map_err(e)?;
    }
    for (i, url) in nodes.iter().enumerate() {
        let s = kv.status(url).await.map_err(e)?;
        if s.cluster_size != 3 {
            return Err(format!(
                "node {} reports a cluster of {}",
                i + 1,
                s.cluster_size
            ));
        }
    }

    println!(
        "step 0: delay replication node 1 -> node 3 for {} ms",
        args.delay_ms
    );
    let _: FaultRequest = admin
        .post(
            &nodes[0],
            "/admin/fault",
            &FaultRequest {
                peer: 2,
                kind: Some(FaultKind::Delay),
                duration_ms: args.delay_ms,
            },
        )
        .await
        .map_err(|err| format!("admin route refused (is CLUSTER_SECRET right?): {err}"))?;

    let a = kv.put(&nodes[0], "x", "15", None).await.map_err(e)?;
    if a.status != 200 {
        return Err(format!("put x=15 on node 1: {} {}", a.status, a.body));
    }
    let ctx = a.context.ok_or("node 1 sent no Causal-Context")?;
    println!(
        "step 1: node 1 wrote x=15, vc {} -> context [{ctx}]",
        a.body["vc"]
    );

    let b = kv.put(&nodes[1], "x", "30", Some(&ctx)).await.map_err(e)?;
    if b.status != 200 {
        return Err(format!("put x=30 on node 2: {} {}", b.status, b.body));
    }
    println!(
        "step 2: node 2 wrote x=30 with node 1's context, vc {} (depends on x=15)",
        b.body["vc"]
    );

    let c = kv.put(&nodes[2], "y", "90", None).await.map_err(e)?;
    if c.status != 200 {
        return Err(format!("put y=90 on node 3: {} {}", c.status, c.body));
    }
    println!("step 3: node 3 wrote y=90, vc {}", c.body["vc"]);

    println!("meanwhile on node 3 (x=30 arrives before x=15):");
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut saw_buffered = false;
    let mut last = String::new();
    let mut shown = Instant::now();
    let all = loop {
        let mut all = Vec::new();
        for url in &nodes {
            let s = kv.status(url).await.map_err(e)?;
            check(&s)?;
            all.push(s);
        }
        let n3 = &all[2];
        if n3.buffered_msgs > 0 {
            saw_buffered = true;
        }
        // Print on every change, and every second while writes wait.
        let line = format!("{:?}{}", n3.vc, n3.buffered_msgs);
        if line != last || (n3.buffered_msgs > 0 && shown.elapsed() >= Duration::from_secs(1)) {
            show("node 3", n3);
            last = line;
            shown = Instant::now();
        }
        if inspect::converged(&all) && all[0].vc.entries() >= &[1, 1, 1][..] {
            break all;
        }
        if Instant::now() > deadline {
            return Err(format!("no convergence: {}", inspect::describe(&all)));
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };

    println!("final state:");
    for (i, s) in all.iter().enumerate() {
        show(&format!("node {}", i + 1), s);
    }
    if !saw_buffered {
        println!(
            "note: node 3 never had to buffer (x=15 reached it before x=30; another node may have relayed it)"
        );
    }
    let x = all[0].store.get("x").map(|v| v.value.as_str());
    if x != Some("30") {
        return Err(format!("x should end as 30 everywhere, got {x:?}"));
    }
    println!("OK: causal order held on every node and all nodes converged");
    Ok(())
}
