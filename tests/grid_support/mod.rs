//! Helpers for the grid integration tests: start services in-process on
//! ephemeral loopback ports, wait for conditions with a deadline, and talk
//! to them over HTTP.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use causal_grid::grid::ChargeRequest;
use causal_grid::net::batch::BatchConfig;
use causal_grid::service::balancer::{self, BalancerConfig};
use causal_grid::service::entry::{self, EntryConfig};
use causal_grid::service::substation::{self, SubstationConfig};
use causal_grid::service::Running;
use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A substation with long sessions (time scale 1: hours of real time).
pub fn start_substation(id: &str, capacity_kw: f64, listen: &str) -> Running {
    start_substation_with(id, capacity_kw, listen, 1.0, None)
}

/// A substation with a time scale and an optional `GRID_ADMIN_TOKEN`.
pub fn start_substation_with(
    id: &str,
    capacity_kw: f64,
    listen: &str,
    time_scale: f64,
    admin_token: Option<&str>,
) -> Running {
    substation::start(
        SubstationConfig {
            id: id.to_string(),
            listen_addr: listen.to_string(),
            capacity_kw,
            time_scale,
            admin_token: admin_token.map(str::to_string),
        },
        false,
    )
    .expect("substation starts")
}

/// A balancer that moves no session (it has no token).
pub fn start_balancer(urls: &[String], poll_ms: u64) -> Running {
    balancer_with(urls, poll_ms, None, 0)
}

/// A balancer that moves up to `max_moves` sessions to make room,
/// authorising hand-overs with `admin_token`.
pub fn start_balancer_with(
    urls: &[String],
    poll_ms: u64,
    admin_token: &str,
    max_moves: usize,
) -> Running {
    balancer_with(urls, poll_ms, Some(admin_token), max_moves)
}

fn balancer_with(
    urls: &[String],
    poll_ms: u64,
    admin_token: Option<&str>,
    max_moves: usize,
) -> Running {
    balancer::start(
        BalancerConfig {
            listen_addr: "127.0.0.1:0".into(),
            substations: urls.to_vec(),
            poll_interval: Duration::from_millis(poll_ms),
            seed: Some(42),
            batch: BatchConfig::DEFAULT,
            admin_token: admin_token.map(str::to_string),
            max_moves,
        },
        false,
    )
    .expect("balancer starts")
}

pub fn start_entry(balancer_url: &str, listen: &str) -> Running {
    entry::start(
        EntryConfig {
            listen_addr: listen.to_string(),
            load_balancer_url: balancer_url.to_string(),
            batch: BatchConfig::DEFAULT,
        },
        false,
    )
    .expect("entry starts")
}

/// Polls `check` until it returns true or the deadline passes.
pub async fn await_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish()
}

/// Status, `Retry-After` present, and JSON body of a POST.
pub async fn post(client: &awc::Client, url: &str, body: &Value) -> (u16, bool, Value) {
    let mut resp = client
        .post(url)
        .send_json(body)
        .await
        .expect("request sent");
    let retry_after = resp.headers().contains_key("retry-after");
    let bytes = resp.body().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (resp.status().as_u16(), retry_after, json)
}

pub async fn post_raw(client: &awc::Client, url: &str, body: &'static str) -> (u16, Value) {
    let mut resp = client
        .post(url)
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .expect("request sent");
    let bytes = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub async fn get_text(client: &awc::Client, url: &str) -> Option<String> {
    let mut resp = client.get(url).send().await.ok()?;
    let bytes = resp.body().limit(8 << 20).await.ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

pub async fn get_json(client: &awc::Client, url: &str) -> Option<Value> {
    serde_json::from_str(&get_text(client, url).await?).ok()
}

/// Waits until the balancer sees every substation healthy.
pub async fn await_all_healthy(client: &awc::Client, lb: &str, n: usize) {
    await_until("all substations healthy", || async {
        let Some(s) = get_json(client, &format!("{lb}/status")).await else {
            return false;
        };
        let subs = s["substations"].as_array().cloned().unwrap_or_default();
        subs.len() == n && subs.iter().all(|x| x["healthy"] == Value::Bool(true))
    })
    .await;
}

/// A substation's load as the balancer reads it from its `/metrics`.
pub async fn load_sample(client: &awc::Client, url: &str) -> causal_grid::grid::LoadSample {
    let body = get_text(client, &format!("{url}/metrics"))
        .await
        .expect("metrics");
    causal_grid::grid::LoadSample::from_exposition(&body).expect("parse")
}

/// A substation's (power, capacity) in watts, read from its `/metrics`.
pub async fn power_of(client: &awc::Client, url: &str) -> (f64, f64) {
    let s = load_sample(client, url).await;
    (s.power_w, s.capacity_w)
}

/// The value of one series (`name` with its labels, as exported) in the
/// `/metrics` of the service at `url`; 0 if absent.
pub async fn series(client: &awc::Client, url: &str, series: &str) -> f64 {
    let body = get_text(client, &format!("{url}/metrics"))
        .await
        .expect("metrics");
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

pub fn charge(power_kw: f64, energy_kwh: f64) -> Value {
    serde_json::to_value(ChargeRequest {
        vehicle_id: Some("ev".into()),
        power_kw: Some(power_kw),
        energy_kwh: Some(energy_kwh),
        min_power_kw: None,
    })
    .expect("json")
}

/// Sends `n` requests with `concurrency` in flight; returns each answer.
pub async fn burst(
    client: &awc::Client,
    url: &str,
    body: Value,
    n: usize,
    concurrency: usize,
) -> Vec<(u16, bool, Value)> {
    use futures_util::stream::{self, StreamExt};
    stream::iter(0..n)
        .map(|_| {
            let body = body.clone();
            async move { post(client, url, &body).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// A TCP relay in front of a service that can be frozen: while frozen it
/// accepts connections and reads requests but forwards nothing, like a
/// process that has stopped (SIGSTOP, a stuck disk, a full run queue)
/// without closing its sockets. Thawing forwards what was held.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    /// A relay on an ephemeral loopback port towards `target` (`host:port`).
    pub fn start(target: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&frozen);
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                let Ok(outbound) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let (a, b) = (inbound.try_clone(), outbound.try_clone());
                let (Ok(a), Ok(b)) = (a, b) else { continue };
                let (f1, f2) = (Arc::clone(&flag), Arc::clone(&flag));
                std::thread::spawn(move || pump(inbound, b, &f1));
                std::thread::spawn(move || pump(outbound, a, &f2));
            }
        });
        Relay { addr, frozen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop forwarding (connections stay open, nothing is answered).
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forward again, starting with whatever was held.
    pub fn thaw(&self) {
        self.frozen
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, holding data while `frozen` is set.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    frozen: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A helper thread outside the actix runtime: waiting here blocks
        // nothing but this one connection.
        while frozen.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A listener that completes TCP handshakes (the kernel does that for the
/// backlog) but never reads or answers: a hung service.
pub fn black_hole() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind black hole")
}

/// The `substation` of each answer, counted.
pub fn by_substation(answers: &[(u16, bool, Value)]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for (_, _, body) in answers {
        if let Some(s) = body["substation"].as_str() {
            *counts.entry(s.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Whether the balancer's `/status` shows substation `index` healthy.
pub async fn is_healthy(client: &awc::Client, lb: &str, index: usize) -> Option<bool> {
    let s = get_json(client, &format!("{lb}/status")).await?;
    s["substations"][index]["healthy"].as_bool()
}

/// Asserts every answer of a burst was a 200, naming the others.
pub fn assert_all_granted(answers: &[(u16, bool, Value)]) {
    let refused: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(refused.is_empty(), "not granted: {refused:?}");
}
