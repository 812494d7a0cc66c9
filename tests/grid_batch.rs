//! Batches between the grid's services (`wire::batch`): every request of a
//! batch is answered as its single request would be, in order; malformed
//! batches get 4xx JSON and change nothing; and requests through the entry
//! service travel in batches end to end.

mod grid_support;

use grid_support::*;
use serde_json::{json, Value};

/// Sum of the `{prefix}_http_requests_total` samples of `route` at `url`.
async fn served(client: &awc::Client, url: &str, prefix: &str, route: &str) -> u64 {
    let text = get_text(client, &format!("{url}/metrics"))
        .await
        .expect("metrics");
    let name = format!("{prefix}_http_requests_total{{");
    let label = format!("route=\"{route}\"");
    text.lines()
        .filter(|l| l.starts_with(&name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn statuses(answers: &Value) -> Vec<u64> {
    answers
        .as_array()
        .expect("an array of answers")
        .iter()
        .map(|a| a["status"].as_u64().expect("a status"))
        .collect()
}

#[actix_rt::test]
async fn a_substation_answers_a_batch_item_by_item_in_order() {
    let s = start_substation("a", 100.0, "127.0.0.1:0");
    let client = client();
    let batch = json!([
        charge(50.0, 100.0),
        {"power_kw": -1.0},
        charge(40.0, 100.0),
        charge(30.0, 100.0),
    ]);
    let (status, _, answers) = post(&client, &format!("{}/charge/batch", s.url()), &batch).await;
    assert_eq!(status, 200, "{answers}");
    assert_eq!(statuses(&answers), vec![200, 400, 200, 503], "{answers}");
    assert_eq!(answers[0]["grant"]["power_kw"], json!(50.0));
    assert_eq!(answers[2]["grant"]["power_kw"], json!(40.0));
    assert!(answers[1]["error"].is_string() && answers[3]["error"].is_string());
    assert!(answers[1].get("grant").is_none());
    // The two grants are sessions of the substation, and the only ones.
    let (power, _) = power_of(&client, &s.url()).await;
    assert_eq!(power, 90_000.0);
    let id = answers[2]["grant"]["session_id"].as_str().expect("an id");
    let session = get_json(&client, &format!("{}/sessions/{id}", s.url()))
        .await
        .expect("the session is known");
    assert_eq!(session["power_kw"], json!(40.0));
}

#[actix_rt::test]
async fn a_balancer_routes_every_item_of_a_batch() {
    let a = start_substation("a", 100.0, "127.0.0.1:0");
    let b = start_substation("b", 50.0, "127.0.0.1:0");
    let lb = start_balancer(&[a.url(), b.url()], 100);
    let client = client();
    await_all_healthy(&client, &lb.url(), 2).await;
    // Ten 20 kW requests at once: five fit on `a` and two on `b` (140 kW
    // of the 150), the other three fit nowhere.
    let items: Vec<Value> = (0..10).map(|_| charge(20.0, 100.0)).collect();
    let (status, _, answers) =
        post(&client, &format!("{}/route/batch", lb.url()), &json!(items)).await;
    assert_eq!(status, 200, "{answers}");
    let st = statuses(&answers);
    assert_eq!(st.iter().filter(|&&s| s == 200).count(), 7, "{answers}");
    assert_eq!(st.iter().filter(|&&s| s == 503).count(), 3, "{answers}");
    let (pa, _) = power_of(&client, &a.url()).await;
    let (pb, _) = power_of(&client, &b.url()).await;
    assert_eq!((pa, pb), (100_000.0, 40_000.0));
}

#[actix_rt::test]
async fn malformed_batches_get_4xx_json_and_change_nothing() {
    let s = start_substation("a", 100.0, "127.0.0.1:0");
    let lb = start_balancer(&[s.url()], 100);
    let client = client();
    let too_many: Vec<Value> = (0..=causal_grid::wire::batch::MAX_BATCH_ITEMS)
        .map(|_| charge(0.01, 0.01))
        .collect();
    for url in [
        format!("{}/charge/batch", s.url()),
        format!("{}/route/batch", lb.url()),
    ] {
        for (body, want) in [
            (json!([]), 400),
            (json!({"power_kw": 1}), 400),
            (json!([{"power_kw": "fast"}]), 400),
            (json!(too_many), 413),
        ] {
            let (status, _, answer) = post(&client, &url, &body).await;
            assert_eq!(status, want, "{url}: {answer}");
            assert!(answer["error"].is_string(), "{url}: {answer}");
        }
    }
    assert_eq!(power_of(&client, &s.url()).await.0, 0.0);
}

#[actix_rt::test]
async fn requests_through_the_entry_travel_in_batches() {
    let a = start_substation("a", 1000.0, "127.0.0.1:0");
    let b = start_substation("b", 1000.0, "127.0.0.1:0");
    let lb = start_balancer(&[a.url(), b.url()], 100);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    let client = client();
    await_all_healthy(&client, &lb.url(), 2).await;
    let target = format!("{}/request_charge", entry.url());
    let answers = burst(&client, &target, charge(1.0, 100.0), 100, 16).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    // Every hop went through the batch routes, never the single ones.
    assert!(served(&client, &lb.url(), "lb", "/route/batch").await >= 1);
    assert_eq!(served(&client, &lb.url(), "lb", "/route").await, 0);
    let mut batches = 0;
    for s in [&a, &b] {
        batches += served(&client, &s.url(), "substation", "/charge/batch").await;
        assert_eq!(served(&client, &s.url(), "substation", "/charge").await, 0);
    }
    assert!((1..=100).contains(&batches), "{batches} batches");
    let total = power_of(&client, &a.url()).await.0 + power_of(&client, &b.url()).await.0;
    assert_eq!(total, 100_000.0);
}
