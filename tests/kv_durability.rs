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

use causal_grid::net::kv::KvClient;
use causal_grid::wire::kv::StatusResponse;

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

    async fn wait_serving(&self, client: &KvClient, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.status_of(&self.url(i), false).await.is_err() {
            assert!(Instant::now() < deadline, "node {i} did not come up");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
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
