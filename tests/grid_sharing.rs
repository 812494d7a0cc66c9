//! Substations share power: a flexible request is admitted at what is left,
//! rises when another session ends, and sessions end when their energy is
//! delivered; `PUT /limit` (behind `GRID_ADMIN_TOKEN`) curtails at once,
//! pauses the newest sessions below their minimums, and the balancer sees the
//! new limit at its next poll; the power drawn never exceeds the limit.

mod grid_support;

use grid_support::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const TOKEN: &str = "operator-token";

fn flex(power_kw: f64, min_kw: f64, energy_kwh: f64) -> Value {
    json!({"power_kw": power_kw, "min_power_kw": min_kw, "energy_kwh": energy_kwh})
}

async fn put_limit(
    client: &awc::Client,
    url: &str,
    auth: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = client.put(format!("{url}/limit"));
    if let Some(a) = auth {
        req = req.insert_header(("authorization", a));
    }
    let mut resp = req.send_json(&body).await.expect("request sent");
    let bytes = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn session(client: &awc::Client, url: &str, id: &str) -> Value {
    get_json(client, &format!("{url}/sessions/{id}"))
        .await
        .expect("session answers")
}

/// One gauge of a substation's `/metrics`.
async fn gauge(client: &awc::Client, url: &str, name: &str) -> f64 {
    let body = get_text(client, &format!("{url}/metrics"))
        .await
        .expect("metrics");
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-6)
}

#[actix_rt::test]
async fn power_is_shared_and_rises_back_when_a_session_ends() {
    // At 1200x, 60 kWh at 60 kW lasts 3 s.
    let s = start_substation_with("s", 100.0, "127.0.0.1:0", 1200.0, None);
    let client = client();
    let url = s.url();
    let (code, _, fixed) = post(&client, &format!("{url}/charge"), &charge(60.0, 60.0)).await;
    assert_eq!(code, 200, "{fixed}");
    let (code, _, g) = post(&client, &format!("{url}/charge"), &flex(150.0, 20.0, 200.0)).await;
    assert_eq!(code, 200, "{g}");
    assert!(close(&g["power_kw"], 40.0), "granted what is left: {g}");
    assert!(close(&g["requested_power_kw"], 150.0), "{g}");
    assert!(close(&g["min_power_kw"], 20.0), "{g}");
    let id = g["session_id"].as_str().expect("id").to_string();
    let now = session(&client, &url, &id).await;
    assert_eq!(now["state"], "curtailed", "{now}");
    assert_eq!(
        gauge(&client, &url, "substation_sessions_curtailed").await,
        1.0
    );
    assert_eq!(
        gauge(&client, &url, "substation_requested_watts").await,
        210_000.0
    );
    assert_eq!(
        gauge(&client, &url, "substation_committed_watts").await,
        80_000.0
    );

    // A minimum that does not fit beside the others' is refused.
    let (code, retry, err) = post(&client, &format!("{url}/charge"), &flex(50.0, 21.0, 10.0)).await;
    assert_eq!(code, 503, "{err}");
    assert!(retry && err["error"].is_string(), "{err}");

    // When the fixed session has delivered its 60 kWh it ends, and the
    // flexible one rises to the whole 100 kW.
    let fixed_id = fixed["session_id"].as_str().expect("id").to_string();
    await_until("the fixed session ends", || async {
        session(&client, &url, &fixed_id).await["state"] == "done"
    })
    .await;
    let done = session(&client, &url, &fixed_id).await;
    assert!(close(&done["delivered_kwh"], 60.0), "{done}");
    let risen = session(&client, &url, &id).await;
    assert!(close(&risen["power_kw"], 100.0), "{risen}");
    assert!(risen["delivered_kwh"].as_f64().expect("delivered") > 0.0);
    assert!(risen["ends_in_s"].as_f64().expect("estimate") > 0.0);

    // Unknown ids are 404 with a JSON error.
    for bad in ["s-999", "other-1", "s-x", "s1"] {
        let mut resp = client
            .get(format!("{url}/sessions/{bad}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status().as_u16(), 404, "{bad}");
        let body: Value = serde_json::from_slice(&resp.body().await.expect("body")).expect("json");
        assert!(body["error"].is_string());
    }
}

#[actix_rt::test]
async fn a_limit_needs_the_token_curtails_pauses_and_reaches_the_balancer() {
    let s = start_substation_with("s", 100.0, "127.0.0.1:0", 1.0, Some(TOKEN));
    let lb = start_balancer(&[s.url()], 100);
    let client = client();
    let url = s.url();
    await_all_healthy(&client, &lb.url(), 1).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, _, g) = post(&client, &format!("{url}/charge"), &flex(30.0, 20.0, 100.0)).await;
        assert_eq!(code, 200, "{g}");
        ids.push(g["session_id"].as_str().expect("id").to_string());
    }

    let body = json!({"capacity_kw": 60.0});
    let bearer = format!("Bearer {TOKEN}");
    for auth in [None, Some("Bearer nope"), Some(TOKEN)] {
        let (code, err) = put_limit(&client, &url, auth, body.clone()).await;
        assert_eq!(code, 401, "{auth:?}");
        assert!(err["error"].is_string(), "{err}");
    }
    assert_eq!(
        gauge(&client, &url, "substation_capacity_watts").await,
        100_000.0
    );
    for bad in [
        json!({"capacity_kw": -1.0}),
        json!({"capacity_kw": "x"}),
        json!({}),
    ] {
        let (code, err) = put_limit(&client, &url, Some(&bearer), bad.clone()).await;
        assert_eq!(code, 400, "{bad} -> {err}");
        assert!(err["error"].is_string(), "{err}");
    }

    let (code, ok) = put_limit(&client, &url, Some(&bearer), body).await;
    assert_eq!(code, 200, "{ok}");
    assert!(
        close(&ok["previous_kw"], 100.0) && close(&ok["capacity_kw"], 60.0),
        "{ok}"
    );
    assert_eq!(
        gauge(&client, &url, "substation_power_watts").await,
        60_000.0
    );
    assert_eq!(
        gauge(&client, &url, "substation_sessions_curtailed").await,
        3.0
    );
    assert_eq!(
        gauge(&client, &url, "substation_limit_changes_total").await,
        1.0
    );

    // Below the three minimums (60 kW): the newest pauses.
    let (code, _) = put_limit(&client, &url, Some(&bearer), json!({"capacity_kw": 45.0})).await;
    assert_eq!(code, 200);
    assert_eq!(
        gauge(&client, &url, "substation_sessions_paused").await,
        1.0
    );
    let newest = session(&client, &url, &ids[2]).await;
    assert_eq!(newest["state"], "paused", "{newest}");
    assert!(newest["ends_in_s"].is_null(), "{newest}");
    assert!(close(
        &session(&client, &url, &ids[0]).await["power_kw"],
        22.5
    ));
    let (power, capacity) = power_of(&client, &url).await;
    assert!(power <= capacity, "{power} > {capacity}");
    // Nothing new is admitted while a session is paused.
    let (code, _, _) = post(&client, &format!("{url}/charge"), &charge(1.0, 1.0)).await;
    assert_eq!(code, 503);

    // The balancer sees the new limit at its next poll.
    await_until("the balancer sees 45 kW", || async {
        let status = get_json(&client, &format!("{}/status", lb.url())).await;
        status.is_some_and(|s| s["substations"][0]["capacity_w"] == json!(45_000.0))
    })
    .await;

    let (code, _) = put_limit(&client, &url, Some(&bearer), json!({"capacity_kw": 100.0})).await;
    assert_eq!(code, 200);
    assert_eq!(session(&client, &url, &ids[2]).await["state"], "charging");
    assert_eq!(
        gauge(&client, &url, "substation_power_watts").await,
        90_000.0
    );
}

#[actix_rt::test]
async fn without_a_token_the_limit_route_is_disabled() {
    let s = start_substation_with("s", 100.0, "127.0.0.1:0", 1.0, None);
    let client = client();
    let (code, err) = put_limit(
        &client,
        &s.url(),
        Some(&format!("Bearer {TOKEN}")),
        json!({"capacity_kw": 10.0}),
    )
    .await;
    assert_eq!(code, 404, "{err}");
    assert!(err["error"]
        .as_str()
        .expect("error")
        .contains("GRID_ADMIN_TOKEN"));
    assert_eq!(
        gauge(&client, &s.url(), "substation_capacity_watts").await,
        100_000.0
    );
}

#[actix_rt::test]
async fn power_never_exceeds_the_limit_through_admissions_ends_and_limit_changes() {
    let s = start_substation_with("s", 300.0, "127.0.0.1:0", 3600.0, Some(TOKEN));
    let client = client();
    let url = s.url();
    let bearer = format!("Bearer {TOKEN}");
    let mut rng = SmallRng::seed_from_u64(7);
    let classes = [7.0, 11.0, 22.0, 50.0, 150.0];
    let mut granted = Vec::new();
    for step in 0..120 {
        if step % 10 == 9 {
            let kw: f64 = rng.gen_range(30.0..400.0);
            let (code, _) =
                put_limit(&client, &url, Some(&bearer), json!({"capacity_kw": kw})).await;
            assert_eq!(code, 200);
        } else {
            let p = classes[rng.gen_range(0..classes.len())];
            let min = p * rng.gen_range(0.2..=1.0);
            // 0.1 to 2 kWh at 3600x: sessions end within a few seconds.
            let e: f64 = rng.gen_range(0.1..2.0);
            let (code, _, g) = post(&client, &format!("{url}/charge"), &flex(p, min, e)).await;
            assert!(code == 200 || code == 503, "{code} {g}");
            if code == 200 {
                let power = g["power_kw"].as_f64().expect("power");
                assert!(
                    power >= min * (1.0 - 1e-9) && power <= p * (1.0 + 1e-9),
                    "{g}"
                );
                granted.push(g["session_id"].as_str().expect("id").to_string());
            }
        }
        let (power, capacity) = power_of(&client, &url).await;
        assert!(
            power <= capacity * (1.0 + 1e-9),
            "step {step}: {power} W > {capacity} W"
        );
    }
    assert!(granted.len() > 20, "only {} granted", granted.len());
    // Every session is within its bounds or paused, or done.
    for id in granted.iter().rev().take(20) {
        let s = session(&client, &url, id).await;
        let power = s["power_kw"].as_f64().expect("power");
        match s["state"].as_str().expect("state") {
            "paused" | "done" => assert_eq!(power, 0.0, "{s}"),
            _ => assert!(
                power >= s["min_power_kw"].as_f64().expect("min") * (1.0 - 1e-9)
                    && power <= s["requested_power_kw"].as_f64().expect("req") * (1.0 + 1e-9),
                "{s}"
            ),
        }
    }
}
