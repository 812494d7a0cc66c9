//! Load transfer over HTTP: when a request fits on no substation but the
//! pooled room could take it, the balancer hands sessions over
//! (`POST /sessions/{id}/handover`, behind `GRID_ADMIN_TOKEN`) so that it
//! fits; the moved session goes on elsewhere with the energy it still needs.
//! Before it refuses a request, the balancer polls afresh.

mod grid_support;

use grid_support::*;
use serde_json::{json, Value};

const TOKEN: &str = "grid-test-token";

const MOVED: &str = "lb_session_moves_total{result=\"moved\"}";

async fn post_with_token(client: &awc::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client.post(url);
    if let Some(t) = token {
        req = req.insert_header(("authorization", format!("Bearer {t}")));
    }
    let mut resp = req.send().await.expect("request sent");
    let bytes = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[actix_rt::test]
async fn a_request_that_fits_nowhere_gets_room_by_moving_a_session() {
    let a = start_substation_with("a", 100.0, "127.0.0.1:0", 1.0, Some(TOKEN));
    let b = start_substation_with("b", 100.0, "127.0.0.1:0", 1.0, Some(TOKEN));
    let urls = vec![a.url(), b.url()];
    let lb = start_balancer_with(&urls, 100, TOKEN, 8);
    let client = client();
    await_all_healthy(&client, &lb.url(), 2).await;
    let route = format!("{}/route", lb.url());

    // Six 20 kW sessions lasting hours, one at a time: the balancer spreads
    // them three and three, 40 kW free on each substation.
    let mut grants = Vec::new();
    for _ in 0..6 {
        let (status, _, g) = post(&client, &route, &charge(20.0, 50.0)).await;
        assert_eq!(status, 200, "{g}");
        grants.push(g);
    }
    let before = (
        load_sample(&client, &a.url()).await,
        load_sample(&client, &b.url()).await,
    );
    assert_eq!(before.0.committed_w, Some(60_000.0));
    assert_eq!(before.1.committed_w, Some(60_000.0));

    // 60 kW fits on neither, but 80 kW is free in all: one 20 kW session
    // moves, and the request is admitted where it left.
    let (status, _, g) = post(&client, &route, &charge(60.0, 50.0)).await;
    assert_eq!(status, 200, "{g}");
    let (sa, sb) = (
        load_sample(&client, &a.url()).await,
        load_sample(&client, &b.url()).await,
    );
    let mut committed = [sa.committed_w.unwrap(), sb.committed_w.unwrap()];
    committed.sort_by(f64::total_cmp);
    assert_eq!(committed, [80_000.0, 100_000.0], "{sa:?} {sb:?}");
    assert!(sa.power_w <= sa.capacity_w && sb.power_w <= sb.capacity_w);

    // The moved session says so where it was, and its rest runs where it
    // went, with the energy it had left.
    let (into, other) = if g["substation"] == "a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let mut moved = None;
    for old in &grants {
        let id = old["session_id"].as_str().unwrap();
        if old["substation"] != g["substation"] {
            continue;
        }
        let s = get_json(&client, &format!("{}/sessions/{id}", into.url()))
            .await
            .expect("session");
        if s["state"] == "moved" {
            assert!(moved.is_none(), "one move is enough: {s}");
            moved = Some(s);
        }
    }
    let moved = moved.expect("a session moved out of the substation that took the request");
    assert_eq!(moved["power_kw"], 0.0);
    assert_eq!(moved["ends_in_s"], Value::Null);
    let delivered = moved["delivered_kwh"].as_f64().unwrap();
    assert!(delivered > 0.0 && delivered < 50.0, "{moved}");
    let other_sample = load_sample(&client, &other.url()).await;
    let newest = other_sample.started.expect("started");
    let other_id = if g["substation"] == "a" { "b" } else { "a" };
    let rest = get_json(
        &client,
        &format!("{}/sessions/{other_id}-{newest}", other.url()),
    )
    .await
    .expect("the continuation");
    assert_eq!(rest["requested_power_kw"], 20.0, "{rest}");
    assert_eq!(rest["state"], "charging", "{rest}");
    let total = delivered + rest["energy_kwh"].as_f64().unwrap();
    assert!((total - 50.0).abs() < 1e-6, "{moved} {rest}");

    assert_eq!(series(&client, &lb.url(), MOVED).await, 1.0);
    let rebalanced = series(&client, &lb.url(), "lb_rebalanced_requests_total").await;
    assert_eq!(rebalanced, 1.0);
    let handed_over = format!(
        "substation_sessions_moved_total{{substation={}}}",
        g["substation"]
    );
    assert_eq!(series(&client, &into.url(), &handed_over).await, 1.0);

    // 30 kW is more than the 20 kW left in all: refused, nothing moves.
    let (status, _, body) = post(&client, &route, &charge(30.0, 50.0)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(series(&client, &lb.url(), MOVED).await, 1.0);
}

#[actix_rt::test]
async fn without_moves_the_same_request_is_refused() {
    let a = start_substation_with("a", 100.0, "127.0.0.1:0", 1.0, Some(TOKEN));
    let b = start_substation_with("b", 100.0, "127.0.0.1:0", 1.0, Some(TOKEN));
    let lb = start_balancer_with(&[a.url(), b.url()], 100, TOKEN, 0);
    let client = client();
    await_all_healthy(&client, &lb.url(), 2).await;
    let route = format!("{}/route", lb.url());
    for _ in 0..6 {
        assert_eq!(post(&client, &route, &charge(20.0, 50.0)).await.0, 200);
    }
    let (status, _, body) = post(&client, &route, &charge(60.0, 50.0)).await;
    assert_eq!(status, 503, "{body}");
}

#[actix_rt::test]
async fn the_handover_route_needs_the_token() {
    let s = start_substation_with("a", 100.0, "127.0.0.1:0", 1.0, Some(TOKEN));
    let open = start_substation("b", 100.0, "127.0.0.1:0");
    let client = client();
    let (status, g) = {
        let (st, _, g) = post(&client, &format!("{}/charge", s.url()), &charge(10.0, 50.0)).await;
        (st, g)
    };
    assert_eq!(status, 200, "{g}");
    let id = g["session_id"].as_str().unwrap();
    let url = format!("{}/sessions/{id}/handover", s.url());
    for bad in [None, Some("wrong")] {
        let (status, body) = post_with_token(&client, &url, bad).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["error"].is_string());
    }
    // Still charging: nothing happened.
    let live = get_json(&client, &format!("{}/sessions/{id}", s.url()))
        .await
        .unwrap();
    assert_eq!(live["state"], "charging");
    let (status, body) = post_with_token(&client, &url, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "moved");
    assert_eq!(load_sample(&client, &s.url()).await.power_w, 0.0);
    // Twice, or a session that is not live: 404.
    assert_eq!(post_with_token(&client, &url, Some(TOKEN)).await.0, 404);
    let unknown = format!("{}/sessions/a-99/handover", s.url());
    assert_eq!(post_with_token(&client, &unknown, Some(TOKEN)).await.0, 404);
    // Without GRID_ADMIN_TOKEN the route is disabled.
    let (status, body) = post_with_token(
        &client,
        &format!("{}/sessions/b-1/handover", open.url()),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("GRID_ADMIN_TOKEN"),
        "{body}"
    );
}

#[actix_rt::test]
async fn a_refusal_rests_on_a_fresh_poll() {
    // A balancer that polls once a minute: after a limit is raised, its
    // estimate still says full, but it polls again before refusing.
    let s = start_substation_with("a", 100.0, "127.0.0.1:0", 1.0, Some(TOKEN));
    let lb = start_balancer_with(&[s.url()], 60_000, TOKEN, 8);
    let client = client();
    await_all_healthy(&client, &lb.url(), 1).await;
    let route = format!("{}/route", lb.url());
    assert_eq!(post(&client, &route, &charge(100.0, 50.0)).await.0, 200);
    let resp = client
        .put(format!("{}/limit", s.url()))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .send_json(&json!({"capacity_kw": 200.0}))
        .await
        .expect("limit");
    assert_eq!(resp.status().as_u16(), 200);
    let (status, _, g) = post(&client, &route, &charge(50.0, 50.0)).await;
    assert_eq!(status, 200, "{g}");
    assert!(series(&client, &lb.url(), "lb_refusal_polls_total").await >= 1.0);
    // Full for real now: refused, on figures just taken.
    let (status, _, body) = post(&client, &route, &charge(60.0, 50.0)).await;
    assert_eq!(status, 503, "{body}");
}
