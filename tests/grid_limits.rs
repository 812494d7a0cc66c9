//! A full grid admits exactly its capacity and refuses the rest with 503;
//! bad input gets 4xx JSON; an unreachable balancer gives a 503 at once and
//! the entry recovers when it returns.

mod grid_support;

use grid_support::*;
use serde_json::json;

#[actix_rt::test]
async fn full_grid_admits_exactly_capacity_then_503() {
    let a = start_substation("a", 100.0, "127.0.0.1:0");
    let b = start_substation("b", 50.0, "127.0.0.1:0");
    let urls = vec![a.url(), b.url()];
    let lb = start_balancer(&urls, 100);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    let client = client();
    await_all_healthy(&client, &lb.url(), 2).await;

    // 150 kW of 10 kW sessions lasting hours: 15 fit, 10 do not.
    let target = format!("{}/request_charge", entry.url());
    let answers = burst(&client, &target, charge(10.0, 50.0), 25, 5).await;
    let ok = answers.iter().filter(|x| x.0 == 200).count();
    let full: Vec<_> = answers.iter().filter(|x| x.0 == 503).collect();
    assert_eq!(ok, 15, "{answers:?}");
    assert_eq!(full.len(), 10, "{answers:?}");
    for (_, retry_after, body) in full {
        assert!(retry_after);
        assert!(body["error"].is_string(), "{body}");
    }
    let (pa, ca) = power_of(&client, &a.url()).await;
    let (pb, cb) = power_of(&client, &b.url()).await;
    assert_eq!((pa, pb), (ca, cb));
}

#[actix_rt::test]
async fn bad_inputs_get_4xx_json_everywhere() {
    let s = start_substation("a", 100.0, "127.0.0.1:0");
    let lb = start_balancer(&[s.url()], 100);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    let client = client();
    await_all_healthy(&client, &lb.url(), 1).await;
    let targets = [
        format!("{}/request_charge", entry.url()),
        format!("{}/route", lb.url()),
        format!("{}/charge", s.url()),
    ];
    for t in &targets {
        for body in [
            json!({"power_kw": 0}),
            json!({"power_kw": 351}),
            json!({"energy_kwh": -1}),
            json!({"energy_kwh": 500}),
            json!({"power_kw": "fast"}),
            json!({"powerkw": 10}),
        ] {
            let (status, _, json) = post(&client, t, &body).await;
            assert_eq!(status, 400, "{t} {body}");
            assert!(json["error"].is_string(), "{t} {body} {json}");
        }
        let (status, json) = post_raw(&client, t, "{not json").await;
        assert_eq!(status, 400);
        assert!(json["error"].is_string());
    }
    // Unknown route and wrong method are JSON too.
    let (status, json) = post_raw(&client, &format!("{}/nope", entry.url()), "{}").await;
    assert_eq!(status, 404);
    assert!(json["error"].is_string());
    // Nothing was admitted by any of that.
    assert_eq!(power_of(&client, &s.url()).await.0, 0.0);
}

#[actix_rt::test]
async fn balancer_down_gives_503_with_retry_after_and_recovers() {
    let s = start_substation("a", 1000.0, "127.0.0.1:0");
    let lb = start_balancer(&[s.url()], 100);
    let lb_addr = lb.addr.to_string();
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    let client = client();
    await_all_healthy(&client, &lb.url(), 1).await;
    let target = format!("{}/request_charge", entry.url());
    assert_eq!(post(&client, &target, &charge(10.0, 10.0)).await.0, 200);

    lb.stop().await;
    let (status, retry_after, body) = post(&client, &target, &charge(10.0, 10.0)).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after);
    assert!(body["error"].is_string());

    // Back on the same port, so the entry (configured once) finds it again.
    let lb3 = causal_grid::service::balancer::start(
        causal_grid::service::balancer::BalancerConfig {
            listen_addr: lb_addr.clone(),
            substations: vec![s.url()],
            poll_interval: std::time::Duration::from_millis(100),
            seed: Some(1),
            batch: causal_grid::net::batch::BatchConfig::DEFAULT,
            admin_token: None,
            max_moves: 0,
        },
        false,
    )
    .expect("balancer restarts on its port");
    await_all_healthy(&client, &lb3.url(), 1).await;
    await_until("entry recovers", || async {
        post(&client, &target, &charge(10.0, 10.0)).await.0 == 200
    })
    .await;
}

/// A balancer that accepts connections but never answers: the entry gives
/// up after its own request timeout with a clean 503, not a hang.
#[actix_rt::test]
async fn hung_balancer_gives_503_with_retry_after() {
    let hole = black_hole();
    let lb_url = format!("http://{}", hole.local_addr().unwrap());
    let entry = start_entry(&lb_url, "127.0.0.1:0");
    let client = client();
    let target = format!("{}/request_charge", entry.url());
    // The test client waits up to 10 s, the entry's timeout is 3 s.
    let (status, retry_after, body) = post(&client, &target, &charge(10.0, 10.0)).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after);
    assert!(body["error"].is_string(), "{body}");
}
