//! Real `kv_node` processes on loopback, killed with SIGKILL and restarted on
//! the same `DATA_DIR`: every acknowledged write survives and the replicas
//! converge.

mod kv_support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use causal_grid::auth::Signer;
use causal_grid::causal::{FaultKind, VClock};
use causal_grid::net::kv::{KvClient, PeerClient};
use causal_grid::wire::kv::{FaultRequest, StatusResponse};

struct Procs {
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    root: PathBuf,
}

impl Procs {
    fn start(n: usize) -> Procs {
        // Find free ports; the nodes bind them a moment later.
        let ports: Vec<u16> = (0..n)
            .map(|_| {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let root = std::env::temp_dir().join(format!(
            "causal-grid-durability-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut p = Procs {
            ports,
            children: (0..n).map(|_| None).collect(),
            root,
        };
        for i in 0..n {
            p.spawn(i);
        }
        p
    }

    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    fn spawn(&mut self, i: usize) {
        let peers = (0..self.ports.len())
            .map(|j| format!("{j}={}", self.url(j)))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(env!("CARGO_BIN_EXE_kv_node"))
            .env("NODE_ID", i.to_string())
            .env("PEERS", peers)
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.ports[i]))
            .env("DATA_DIR", self.root.join(format!("node{i}")))
            .env("CLUSTER_SECRET", kv_support::SECRET)
            .env("RELAY_AFTER_MS", "300")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("kv_node starts");
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill(); // SIGKILL: no flush, no goodbye
            let _ = child.wait();
        }
    }

    /// Waits until node `i` answers `/ready` with 200.
    async fn wait_serving(&self, client: &KvClient, i: usize) {
        client
            .await_ready(&self.url(i), Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("node {i} did not become ready: {e}"));
    }

    /// Runs `kv_node <flag>` (a container health check) against node `i`:
    /// true when it exits 0.
    fn probe(&self, i: usize, flag: &str) -> bool {
        Command::new(env!("CARGO_BIN_EXE_kv_node"))
            .arg(flag)
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.ports[i]))
            .stderr(Stdio::null())
            .status()
            .expect("kv_node runs")
            .success()
    }

    /// Waits until node `i` answers at all (`/status`), ready or not.
    async fn wait_up(&self, client: &KvClient, i: usize) -> StatusResponse {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = client.status_of(&self.url(i), false).await {
                return s;
            }
            assert!(Instant::now() < deadline, "node {i} did not come up");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drops replication from node `from` to node `to` until `heal`ed or
    /// `from` restarts.
    async fn cut(&self, from: usize, to: usize) {
        let admin = PeerClient::new(
            Signer::new(kv_support::SECRET).unwrap(),
            "admin",
            Duration::from_secs(5),
        );
        let req = FaultRequest {
            peer: to,
            kind: Some(FaultKind::Drop),
            duration_ms: 600_000,
        };
        let _: FaultRequest = admin
            .post(&self.url(from), "/admin/fault", &req)
            .await
            .expect("fault injected");
    }

    async fn statuses(&self, client: &KvClient) -> Vec<StatusResponse> {
        let mut all = Vec::new();
        for i in 0..self.ports.len() {
            all.push(client.status(&self.url(i)).await.expect("status"));
        }
        all
    }

    async fn wait_converged(&self, client: &KvClient) -> Vec<StatusResponse> {
        kv_support::until_converged(Duration::from_secs(30), || self.statuses(client)).await
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Writers on every node; node 2 is killed with SIGKILL mid-load and
/// restarted on the same data directory. Every write any node acknowledged
/// is on every node afterwards, and the clocks agree.
#[actix_rt::test]
async fn kill_9_under_write_load_loses_no_acknowledged_write() {
    let mut procs = Procs::start(3);
    let client = KvClient::new(Duration::from_secs(10));
    for i in 0..3 {
        procs.wait_serving(&client, i).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let url = procs.url(w % 3);
        let stop = stop.clone();
        let client = client.clone();
        writers.push(actix_rt::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{i}");
                i += 1;
                // Failures (the node is down) are simply not acknowledged.
                if let Ok(a) = client.put(&url, &key, "v", None).await {
                    if a.status == 200 {
                        acked.push(key);
                    }
                } else {
                    actix_rt::time::sleep(Duration::from_millis(20)).await;
                }
            }
            acked
        }));
    }
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    procs.kill(2);
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    procs.spawn(2);
    procs.wait_serving(&client, 2).await;
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 50, "the load ran ({} writes)", acked.len());
    let all = procs.wait_converged(&client).await;
    for key in &acked {
        for s in &all {
            assert!(
                s.store.contains_key(key),
                "node {} lost acknowledged {key}",
                s.node
            );
        }
    }
}

/// Every node stopped (SIGKILL) and started again: the data is unchanged.
#[actix_rt::test]
async fn whole_cluster_restart_keeps_the_data() {
    let mut procs = Procs::start(3);
    let client = KvClient::new(Duration::from_secs(10));
    for i in 0..3 {
        procs.wait_serving(&client, i).await;
    }
    for i in 0..60 {
        let a = client
            .put(&procs.url(i % 3), &format!("k{i}"), &i.to_string(), None)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    }
    let before = procs.wait_converged(&client).await;
    for i in 0..3 {
        procs.kill(i);
    }
    for i in 0..3 {
        procs.spawn(i);
    }
    for i in 0..3 {
        procs.wait_serving(&client, i).await;
    }
    let after = procs.statuses(&client).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.vc, a.vc, "node {} clock", a.node);
        assert_eq!(b.store, a.store, "node {} store", a.node);
    }
    // And the restarted cluster keeps working, continuing the sequences.
    let a = client.put(&procs.url(0), "after", "1", None).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body["vc"][0].as_u64(), Some(before[0].vc.get(0) + 1));
    procs.wait_converged(&client).await;
}

/// SIGTERM: the node stops accepting, finishes, flushes its log and exits
/// 0; started again it has every write it acknowledged.
#[actix_rt::test]
async fn sigterm_is_a_clean_shutdown() {
    let mut procs = Procs::start(3);
    let client = KvClient::new(Duration::from_secs(10));
    for i in 0..3 {
        procs.wait_serving(&client, i).await;
    }
    for i in 0..20 {
        let a = client
            .put(&procs.url(0), &format!("t{i}"), "v", None)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    }
    let mut child = procs.children[0].take().unwrap();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "node 0 did not stop on SIGTERM");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    procs.spawn(0);
    procs.wait_serving(&client, 0).await;
    let s = client.status(&procs.url(0)).await.unwrap();
    for i in 0..20 {
        assert!(s.store.contains_key(&format!("t{i}")));
    }
}

/// The sequence that once lost acknowledged writes for good. Nodes 0..2;
/// node 2 writes `a` three times while nodes 2 and 1 cannot reach node 0,
/// then loses its disk and crashes again right after installing node 0's
/// (older) snapshot. Restarted on that disk, it must go on rebuilding: wait
/// for node 1, take back its own writes a1..a3, and only then number new
/// writes after them. Nothing acknowledged is lost, and all converge.
#[actix_rt::test]
async fn a_wiped_node_that_crashes_after_its_snapshot_never_reuses_a_sequence_number() {
    let mut procs = Procs::start(3);
    let client = KvClient::new(Duration::from_secs(10));
    for i in 0..3 {
        procs.wait_serving(&client, i).await;
    }
    for i in 0..3 {
        let a = client
            .put(&procs.url(i), &format!("k{i}"), "v", None)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    }
    procs.wait_converged(&client).await;

    // Node 0 falls behind on node 2's writes.
    procs.cut(2, 0).await;
    procs.cut(1, 0).await;
    let mut ctx: Option<VClock> = None;
    for v in ["a1", "a2", "a3"] {
        let a = client
            .put(&procs.url(2), "a", v, ctx.as_ref())
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{:?}", a.body);
        ctx = a.context;
    }
    let a3 = ctx.expect("a causal context");
    assert_eq!(a3.get(2), 4);
    let at1 = client.get(&procs.url(1), "a", Some(&a3)).await.unwrap();
    assert_eq!(at1.body["value"], "a3", "node 1 delivered node 2's writes");

    // Node 2 loses its disk. Node 1 is down meanwhile, so node 2 can only
    // take node 0's snapshot, which lacks a1..a3.
    procs.kill(1);
    procs.kill(2);
    let _ = std::fs::remove_dir_all(procs.root.join("node2"));
    procs.spawn(2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = procs.wait_up(&client, 2).await;
        if s.vc.entries() == [1, 1, 1] {
            assert!(!s.ready, "rebuilding, not ready: {:?}", s.not_ready);
            break;
        }
        assert!(Instant::now() < deadline, "node 2 installed no snapshot");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = client.put(&procs.url(2), "b", "b0", None).await.unwrap();
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    // The container probes say the same: alive, not ready.
    assert!(procs.probe(2, "--health-check"), "/health is liveness");
    assert!(
        !procs.probe(2, "--ready-check"),
        "/ready waits for the rebuild"
    );

    // It crashes again with the snapshot committed, and restarts on that
    // disk; node 1 comes back.
    procs.kill(2);
    procs.spawn(2);
    let s = procs.wait_up(&client, 2).await;
    assert!(!s.ready, "the rebuild resumes after a restart");
    procs.spawn(1);
    procs.wait_serving(&client, 2).await;
    assert!(procs.probe(2, "--ready-check"));
    let mut ctx = None;
    for (i, v) in ["b1", "b2", "b3"].into_iter().enumerate() {
        let b = client
            .put(&procs.url(2), "b", v, ctx.as_ref())
            .await
            .unwrap();
        assert_eq!(b.status, 200, "{:?}", b.body);
        assert_eq!(
            b.body["vc"][2].as_u64(),
            Some(5 + i as u64),
            "{v} continues after a3, never reusing 2..4"
        );
        ctx = b.context;
    }
    let all = procs.wait_converged(&client).await;
    for s in &all {
        assert_eq!(s.store["a"].value, "a3", "node {}", s.node);
        assert_eq!(s.store["b"].value, "b3", "node {}", s.node);
    }
    let read = client.get(&procs.url(0), "a", Some(&a3)).await.unwrap();
    assert_eq!(read.status, 200);
    assert_eq!(
        read.body["value"], "a3",
        "the session that wrote a3 reads it"
    );
}

/// `CLUSTER_SECRET_FILE`: the secret is read from a file (as Docker and
/// Kubernetes mount secrets), works for peer traffic, and never reaches the
/// log, even at `debug`.
#[actix_rt::test]
async fn the_cluster_secret_can_come_from_a_file_and_is_never_logged() {
    let mut procs = Procs::start(2);
    let client = KvClient::new(Duration::from_secs(10));
    procs.kill(1);
    let secret_file = procs.root.join("secret");
    std::fs::create_dir_all(&procs.root).unwrap();
    std::fs::write(&secret_file, format!("{}\n", kv_support::SECRET)).unwrap();
    let peers = format!("0={},1={}", procs.url(0), procs.url(1));
    let log = procs.root.join("node1.log");
    let child = Command::new(env!("CARGO_BIN_EXE_kv_node"))
        .env("NODE_ID", "1")
        .env("PEERS", peers)
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", procs.ports[1]))
        .env("DATA_DIR", procs.root.join("node1"))
        .env("CLUSTER_SECRET_FILE", &secret_file)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("kv_node starts");
    procs.children[1] = Some(child);
    // Replication in both directions needs the same secret on both nodes.
    procs.wait_serving(&client, 1).await;
    let a = client.put(&procs.url(1), "k", "v", None).await.unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    procs.wait_converged(&client).await;
    procs.kill(1);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("kv_node starting"), "the log was captured");
    assert!(
        !logged.contains(kv_support::SECRET),
        "the secret was logged"
    );
}
