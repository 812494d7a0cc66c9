//! Substations found by DNS (`SUBSTATIONS=dns+http://name:port`): with an
//! injected resolver, substations join, leave and come back while requests
//! flow, and no request is lost.
//!
//! Every substation listens on the same port of its own loopback address
//! (127.0.0.2, 127.0.0.3, ...), as replicas of one service do on their own
//! hosts; the resolver answers with the addresses the test chooses.

mod grid_support;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use causal_grid::net::dns::Resolver;
use causal_grid::service::balancer::{self, BalancerConfig};
use causal_grid::service::substation::{self, SubstationConfig};
use causal_grid::service::Running;
use grid_support::*;
use serde_json::Value;

/// Substations on 127.0.0.2..=127.0.0.(n+1), all on one port.
fn substations(n: usize) -> (Vec<Running>, u16) {
    'attempt: for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.2:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port")
            .port();
        let mut running = Vec::new();
        for i in 0..n {
            let cfg = SubstationConfig {
                id: format!("replica{i}"),
                listen_addr: format!("127.0.0.{}:{port}", i + 2),
                capacity_kw: 1000.0,
                time_scale: 1.0,
                admin_token: None,
            };
            match substation::start(cfg, false) {
                Ok(r) => running.push(r),
                // The port is taken on one of the addresses: try another.
                Err(_) => continue 'attempt,
            }
        }
        return (running, port);
    }
    panic!("no port free on every loopback address");
}

/// A balancer over `dns+http://substation.test:<port>`, resolved by
/// `resolver`, polling every 100 ms.
fn dns_balancer(port: u16, resolver: Resolver) -> Running {
    balancer::start_with_resolver(
        BalancerConfig {
            listen_addr: "127.0.0.1:0".into(),
            substations: vec![format!("dns+http://substation.test:{port}")],
            poll_interval: Duration::from_millis(100),
            seed: Some(7),
            batch: causal_grid::net::batch::BatchConfig::DEFAULT,
            admin_token: None,
            max_moves: 0,
        },
        false,
        resolver,
    )
    .expect("balancer starts")
}

fn ip(i: usize) -> IpAddr {
    format!("127.0.0.{}", i + 2).parse().unwrap()
}

async fn listed(client: &awc::Client, lb: &str) -> Vec<(String, bool)> {
    let Some(s) = get_json(client, &format!("{lb}/status")).await else {
        return Vec::new();
    };
    s["substations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|x| {
            (
                x["url"].as_str().unwrap_or_default().to_string(),
                x["healthy"] == Value::Bool(true),
            )
        })
        .collect()
}

#[actix_rt::test]
async fn substations_found_by_dns_join_leave_and_return_while_requests_flow() {
    let (_subs, port) = substations(3);
    let answer: Arc<Mutex<Vec<IpAddr>>> = Arc::new(Mutex::new(vec![ip(0), ip(1)]));
    let lookups = Arc::new(Mutex::new(Vec::<String>::new()));
    let resolver: Resolver = {
        let answer = answer.clone();
        let lookups = lookups.clone();
        Arc::new(move |host: String| {
            lookups.lock().unwrap().push(host);
            let ips = answer.lock().unwrap().clone();
            Box::pin(async move { Ok(ips) })
        })
    };
    let lb = dns_balancer(port, resolver);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    let client = client();
    let lb_url = lb.url();
    let url = |i: usize| format!("http://127.0.0.{}:{port}", i + 2);

    await_until("the two resolved substations", || async {
        let l = listed(&client, &lb_url).await;
        l.len() == 2 && l.iter().all(|(_, h)| *h)
    })
    .await;
    assert!(lookups
        .lock()
        .unwrap()
        .iter()
        .all(|h| h == "substation.test"));

    // Requests flow throughout; every one must be granted.
    let target = format!("{}/request_charge", entry.url());
    let mut answers = burst(&client, &target, charge(5.0, 50.0), 20, 4).await;

    // A third replica appears.
    answer.lock().unwrap().push(ip(2));
    await_until("the third substation to join", || async {
        let l = listed(&client, &lb_url).await;
        l.len() == 3 && l.iter().all(|(_, h)| *h)
    })
    .await;
    answers.extend(burst(&client, &target, charge(5.0, 50.0), 30, 4).await);
    let (p, _) = power_of(&client, &url(2)).await;
    assert!(p > 0.0, "the new substation takes sessions");

    // The first one leaves: it is no longer listed or routed to.
    answer.lock().unwrap().retain(|a| *a != ip(0));
    await_until("the first substation to leave", || async {
        let l = listed(&client, &lb_url).await;
        l.len() == 2 && !l.iter().any(|(u, _)| *u == url(0))
    })
    .await;
    let (before, _) = power_of(&client, &url(0)).await;
    answers.extend(burst(&client, &target, charge(5.0, 50.0), 30, 4).await);
    let (after, _) = power_of(&client, &url(0)).await;
    assert_eq!(before, after, "no session goes to a substation that left");

    // It comes back, under its old index, and takes sessions again.
    answer.lock().unwrap().push(ip(0));
    await_until("the first substation to return", || async {
        let l = listed(&client, &lb_url).await;
        l.len() == 3 && l.iter().all(|(_, h)| *h)
    })
    .await;
    answers.extend(burst(&client, &target, charge(10.0, 50.0), 30, 4).await);
    let (back, _) = power_of(&client, &url(0)).await;
    assert!(
        back > after,
        "the returned substation takes sessions: {after} W then {back} W; {:?}",
        get_json(&client, &format!("{lb_url}/status")).await
    );

    assert_eq!(answers.len(), 110);
    assert_all_granted(&answers);
}

/// A failed resolution keeps the substations of the last answer.
#[actix_rt::test]
async fn a_failed_resolution_keeps_the_last_answer() {
    let (_subs, port) = substations(1);
    let fail = Arc::new(Mutex::new(false));
    let resolver: Resolver = {
        let fail = fail.clone();
        Arc::new(move |_host: String| {
            let failing = *fail.lock().unwrap();
            Box::pin(async move {
                if failing {
                    Err(std::io::Error::other("resolver unreachable"))
                } else {
                    Ok(vec![ip(0)])
                }
            })
        })
    };
    let lb = dns_balancer(port, resolver);
    let client = client();
    let lb_url = lb.url();
    await_all_healthy(&client, &lb_url, 1).await;
    *fail.lock().unwrap() = true;
    for _ in 0..5 {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(listed(&client, &lb_url).await.len(), 1);
    }
}
