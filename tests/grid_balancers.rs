//! More than one balancer: the entry service spreads requests over every
//! balancer in `LOAD_BALANCER_URL` (listed or found by DNS) and fails over
//! when one is down, so a balancer restart does not stop charging.

mod grid_support;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use causal_grid::net::batch::BatchConfig;
use causal_grid::net::dns::Resolver;
use causal_grid::service::balancer::{self, BalancerConfig};
use causal_grid::service::entry::{self, EntryConfig};
use causal_grid::service::Running;
use grid_support::*;

/// Routing decisions a balancer made, from its `/metrics`.
async fn decisions(client: &awc::Client, lb: &str) -> f64 {
    let body = get_text(client, &format!("{lb}/metrics"))
        .await
        .unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("lb_decisions_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn balancer_on(subs: &[String], listen: &str) -> std::io::Result<Running> {
    balancer::start(
        BalancerConfig {
            listen_addr: listen.into(),
            substations: subs.to_vec(),
            poll_interval: Duration::from_millis(100),
            seed: Some(3),
            batch: BatchConfig::DEFAULT,
            admin_token: None,
            max_moves: 0,
        },
        false,
    )
    .map_err(|e| std::io::Error::other(e.to_string()))
}

#[actix_rt::test]
async fn requests_spread_over_listed_balancers_and_fail_over() {
    let subs: Vec<Running> = (0..2)
        .map(|i| start_substation(&format!("s{i}"), 1000.0, "127.0.0.1:0"))
        .collect();
    let urls: Vec<String> = subs.iter().map(|s| s.url()).collect();
    let a = balancer_on(&urls, "127.0.0.1:0").unwrap();
    let b = balancer_on(&urls, "127.0.0.1:0").unwrap();
    let client = client();
    await_all_healthy(&client, &a.url(), 2).await;
    await_all_healthy(&client, &b.url(), 2).await;
    let entry = start_entry(&format!("{},{}", a.url(), b.url()), "127.0.0.1:0");
    let target = format!("{}/request_charge", entry.url());

    let mut answers = burst(&client, &target, charge(5.0, 50.0), 20, 2).await;
    let (da, db) = (
        decisions(&client, &a.url()).await,
        decisions(&client, &b.url()).await,
    );
    assert!(da > 0.0 && db > 0.0, "both balancers route: {da} and {db}");
    assert_eq!(da + db, 20.0);

    // Balancer a goes away: every request still gets through b.
    a.stop().await;
    answers.extend(burst(&client, &target, charge(5.0, 50.0), 20, 2).await);
    assert_eq!(decisions(&client, &b.url()).await, db + 20.0);
    assert_all_granted(&answers);
}

#[actix_rt::test]
async fn balancers_found_by_dns_are_spread_over_and_a_dead_one_is_skipped() {
    let sub = start_substation("s0", 1000.0, "127.0.0.1:0");
    let subs = vec![sub.url()];
    // Two balancers on one port of two loopback addresses.
    let (a, b, port) = loop {
        let port = std::net::TcpListener::bind("127.0.0.5:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let Ok(a) = balancer_on(&subs, &format!("127.0.0.5:{port}")) else {
            continue;
        };
        let Ok(b) = balancer_on(&subs, &format!("127.0.0.6:{port}")) else {
            continue;
        };
        break (a, b, port);
    };
    let client = client();
    await_all_healthy(&client, &a.url(), 1).await;
    await_all_healthy(&client, &b.url(), 1).await;
    let ips: Vec<IpAddr> = vec!["127.0.0.5".parse().unwrap(), "127.0.0.6".parse().unwrap()];
    let answer = Arc::new(Mutex::new(ips));
    let resolver: Resolver = {
        let answer = answer.clone();
        Arc::new(move |_host: String| {
            let ips = answer.lock().unwrap().clone();
            Box::pin(async move { Ok(ips) })
        })
    };
    let entry = entry::start_with_resolver(
        EntryConfig {
            listen_addr: "127.0.0.1:0".into(),
            load_balancer_url: format!("dns+http://balancers.test:{port}"),
            batch: BatchConfig::DEFAULT,
        },
        false,
        resolver,
    )
    .expect("entry starts");
    let target = format!("{}/request_charge", entry.url());
    let mut answers = burst(&client, &target, charge(5.0, 50.0), 20, 2).await;
    let (da, db) = (
        decisions(&client, &a.url()).await,
        decisions(&client, &b.url()).await,
    );
    assert!(da > 0.0 && db > 0.0, "both balancers route: {da} and {db}");

    // a dies but is still in DNS: skipped after its first refusal.
    a.stop().await;
    answers.extend(burst(&client, &target, charge(5.0, 50.0), 20, 2).await);
    assert_eq!(decisions(&client, &b.url()).await, db + 20.0);
    assert_all_granted(&answers);
}

/// A balancer that finds no room answers 503, and the entry service tries
/// the next balancer, whose view may differ: the request is refused only
/// when every balancer finds no room.
#[actix_rt::test]
async fn a_request_one_balancer_cannot_place_goes_to_the_next() {
    // Balancer a only knows a full substation; b knows one with room.
    let full = start_substation("full", 10.0, "127.0.0.1:0");
    let roomy = start_substation("roomy", 500.0, "127.0.0.1:0");
    let a = balancer_on(&[full.url()], "127.0.0.1:0").unwrap();
    let b = balancer_on(&[roomy.url()], "127.0.0.1:0").unwrap();
    let client = client();
    await_all_healthy(&client, &a.url(), 1).await;
    await_all_healthy(&client, &b.url(), 1).await;
    let entry = start_entry(&format!("{},{}", a.url(), b.url()), "127.0.0.1:0");
    let target = format!("{}/request_charge", entry.url());
    let answers = burst(&client, &target, charge(20.0, 50.0), 20, 2).await;
    assert_all_granted(&answers);
    assert_eq!(decisions(&client, &b.url()).await, 20.0, "all placed by b");
    // When no balancer has room the answer is a 503, not an error.
    let (status, _, body) = post(&client, &target, &charge(300.0, 50.0)).await;
    assert_eq!(status, 503, "{body}");
}
