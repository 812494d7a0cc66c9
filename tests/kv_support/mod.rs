//! A real KV cluster on ephemeral loopback ports, inside the test's actix
//! system, plus polling helpers (never sleep-and-hope: poll with a deadline).
#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use causal_grid::actors::kv::KvNode;
use causal_grid::auth::Signer;
use causal_grid::causal::FaultKind;
use causal_grid::net::kv::{KvClient, PeerClient};
use causal_grid::service::kv::KvConfig;
use causal_grid::service::Running;
use causal_grid::wire::inspect;
use causal_grid::wire::kv::{FaultRequest, StatusResponse};

pub const SECRET: &str = "test-secret";

pub struct Cluster {
    pub urls: Vec<String>,
    pub configs: Vec<KvConfig>,
    nodes: Vec<Option<(Running, KvNode)>>,
    pub client: KvClient,
    pub admin: PeerClient,
    root: PathBuf,
}

impl Cluster {
    /// Starts `n` nodes and waits until every one is ready (a new cluster's
    /// nodes start empty and first hear from each other); `tweak` adjusts
    /// each node's configuration.
    pub async fn start(n: usize, tweak: impl Fn(&mut KvConfig)) -> Cluster {
        let cluster = Cluster::spawn(n, tweak);
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// Polls node `i`'s `/ready` until it answers 200.
    pub async fn wait_ready(&self, i: usize) {
        self.client
            .await_ready(self.url(i), Duration::from_secs(20))
            .await
            .expect("node ready");
    }

    /// Starts `n` nodes without waiting for them to be ready.
    pub fn spawn(n: usize, tweak: impl Fn(&mut KvConfig)) -> Cluster {
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
            .collect();
        let urls: Vec<String> = listeners
            .iter()
            .map(|l| format!("http://{}", l.local_addr().unwrap()))
            .collect();
        let root = std::env::temp_dir().join(format!(
            "causal-grid-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let configs: Vec<KvConfig> = (0..n)
            .map(|i| {
                let mut c = KvConfig {
                    listen_addr: listeners[i].local_addr().unwrap().to_string(),
                    data_dir: root.join(format!("node{i}")),
                    max_value_bytes: 64 * 1024,
                    peer_timeout_ms: 1_000,
                    ..KvConfig::new(i, urls.clone(), SECRET.into())
                };
                tweak(&mut c);
                c
            })
            .collect();
        let nodes = configs
            .iter()
            .zip(listeners)
            .map(|(c, l)| {
                Some(causal_grid::service::kv::start_on(c, l, false).expect("node starts"))
            })
            .collect();
        Cluster {
            urls,
            configs,
            nodes,
            client: KvClient::new(Duration::from_secs(30)),
            admin: PeerClient::new(
                Signer::new(SECRET).unwrap(),
                "admin",
                Duration::from_secs(5),
            ),
            root,
        }
    }

    pub fn url(&self, i: usize) -> &str {
        &self.urls[i]
    }

    pub fn node(&self, i: usize) -> &KvNode {
        &self.nodes[i].as_ref().expect("node is running").1
    }

    /// Stops node `i`: its server and all its actors.
    pub async fn stop(&mut self, i: usize) {
        if let Some((running, node)) = self.nodes[i].take() {
            running.handle.stop(false).await;
            node.shutdown();
        }
    }

    /// Deletes node `i`'s data directory (the node must be stopped).
    pub fn wipe(&self, i: usize) {
        assert!(self.nodes[i].is_none(), "stop node {i} first");
        let _ = std::fs::remove_dir_all(&self.configs[i].data_dir);
    }

    /// Starts node `i` again on the same address and data directory.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpListener::bind(&self.configs[i].listen_addr) {
                Ok(l) => {
                    // Pooled connections to the old incarnation are dead.
                    self.client = KvClient::new(Duration::from_secs(30));
                    self.nodes[i] = Some(
                        causal_grid::service::kv::start_on(&self.configs[i], l, false)
                            .expect("node restarts"),
                    );
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind node {i}: {e}"),
            }
        }
    }

    /// Injects a replication fault on the link `from` → `to`.
    pub async fn fault(&self, from: usize, to: usize, kind: Option<FaultKind>, ms: u64) {
        let req = FaultRequest {
            peer: to,
            kind,
            duration_ms: ms,
        };
        let _: FaultRequest = self
            .admin
            .post(self.url(from), "/admin/fault", &req)
            .await
            .expect("fault injected");
    }

    /// Cuts node `i` off from every other node in both directions.
    pub async fn partition(&self, i: usize, ms: u64) {
        for j in 0..self.urls.len() {
            if j != i {
                self.fault(i, j, Some(FaultKind::Drop), ms).await;
                self.fault(j, i, Some(FaultKind::Drop), ms).await;
            }
        }
    }

    pub async fn heal(&self) {
        let n = self.urls.len();
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    self.fault(i, j, None, 0).await;
                }
            }
        }
    }

    pub async fn status(&self, i: usize) -> StatusResponse {
        self.client.status(self.url(i)).await.expect("status")
    }

    pub async fn statuses(&self) -> Vec<StatusResponse> {
        let mut all = Vec::new();
        for i in 0..self.urls.len() {
            if self.nodes[i].is_some() {
                all.push(self.status(i).await);
            }
        }
        all
    }

    /// Polls until every running node has the same clock and store and
    /// nothing is buffered; checks causal consistency of every snapshot seen.
    pub async fn wait_converged(&self, timeout: Duration) -> Vec<StatusResponse> {
        until_converged(timeout, || self.statuses()).await
    }
}

/// Polls `fetch` until the snapshots have the same clock and store and
/// nothing is buffered; checks causal consistency of every snapshot seen.
pub async fn until_converged<F, Fut>(timeout: Duration, mut fetch: F) -> Vec<StatusResponse>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Vec<StatusResponse>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let all = fetch().await;
        for s in &all {
            let v = inspect::causal_violations(s);
            assert!(v.is_empty(), "causal violation: {v:?}");
        }
        if inspect::converged(&all) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence within {timeout:?}: {}",
            inspect::describe(&all)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (running, node) in self.nodes.iter().flatten() {
            // Stop without waiting: the test's system is going away.
            drop(running.handle.stop(false));
            node.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Polls `check` until it yields `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
