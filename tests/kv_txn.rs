//! Transactions and counters on in-process clusters: the HTTP API, bad
//! input, atomic visibility under delayed links, and concurrent increments
//! across a partition.

mod kv_support;

use std::time::Duration;

use causal_grid::causal::FaultKind;
use causal_grid::net::kv::{KvAnswer, KvClient};
use causal_grid::wire::kv::{Pairs, TxnRequest};
use kv_support::{eventually, Cluster};
use serde_json::json;

fn txn(reads: &[&str], writes: &[(&str, &str)], incr: &[(&str, i64)]) -> TxnRequest {
    TxnRequest {
        reads: (!reads.is_empty()).then(|| reads.iter().map(|k| k.to_string()).collect()),
        writes: (!writes.is_empty()).then(|| {
            Pairs(
                writes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        }),
        incr: (!incr.is_empty())
            .then(|| Pairs(incr.iter().map(|(k, by)| (k.to_string(), *by)).collect())),
    }
}

fn ok(answer: &KvAnswer) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.context.is_some(), "a Causal-Context header");
}

#[actix_rt::test]
async fn a_transaction_writes_increments_and_reads_from_one_snapshot() {
    let cluster = Cluster::start(3, |_| {}).await;
    let c = &cluster.client;
    let first = c
        .txn(
            cluster.url(0),
            &txn(&[], &[("c", "1"), ("d", "2")], &[("visits", 3)]),
            None,
        )
        .await
        .unwrap();
    ok(&first);
    assert_eq!(first.body["vc"], json!([1, 0, 0]), "one write, one stamp");
    // Reads see the state before the transaction's own writes.
    let second = c
        .txn(
            cluster.url(0),
            &txn(&["c", "d", "visits", "none"], &[("e", "5")], &[]),
            first.context.as_ref(),
        )
        .await
        .unwrap();
    ok(&second);
    let values = &second.body["values"];
    assert_eq!(values["c"]["value"], "1");
    assert_eq!(values["d"]["value"], "2");
    assert_eq!(values["visits"]["value"], "3");
    assert_eq!(values["visits"]["type"], "counter");
    assert!(values["c"].get("type").is_none(), "registers show no type");
    assert!(values["none"].is_null());
    // Another node, with the context: waits for it, then sees both writes.
    let decrement = c
        .incr(cluster.url(1), "visits", -5, second.context.as_ref())
        .await
        .unwrap();
    ok(&decrement);
    let read = c
        .txn(
            cluster.url(2),
            &txn(&["e", "visits"], &[], &[]),
            decrement.context.as_ref(),
        )
        .await
        .unwrap();
    ok(&read);
    assert_eq!(read.body["values"]["e"]["value"], "5");
    assert_eq!(read.body["values"]["visits"]["value"], "-2");
    let get = c
        .get(cluster.url(2), "visits", read.context.as_ref())
        .await
        .unwrap();
    assert_eq!(get.status, 200);
    assert_eq!(get.body["value"], "-2");
    assert_eq!(get.body["type"], "counter");
    let all = cluster.wait_converged(Duration::from_secs(20)).await;
    for s in &all {
        assert_eq!(s.store["visits"].value, "-2");
        assert_eq!(
            serde_json::to_value(&s.store["visits"]).unwrap()["type"],
            "counter"
        );
    }
}

#[actix_rt::test]
async fn bad_transactions_and_kind_conflicts_answer_4xx_and_change_nothing() {
    let cluster = Cluster::start(1, |c| {
        c.txn_max_keys = 3;
        c.txn_max_bytes = 64;
    })
    .await;
    let c = &cluster.client;
    let url = cluster.url(0);
    ok(&c.put(url, "reg", "text", None).await.unwrap());
    ok(&c.incr(url, "cnt", 2, None).await.unwrap());
    let before = cluster.status(0).await;
    let raw = |body: serde_json::Value| async move {
        c.post_json(url, "/txn", &body, None).await.unwrap()
    };
    let cases: Vec<(u16, KvAnswer)> = vec![
        (400, raw(json!({})).await),
        (
            400,
            raw(json!({"reads": [], "writes": {}, "incr": {}})).await,
        ),
        (400, raw(json!({"writes": {"a": 1}})).await),
        (400, raw(json!({"incr": {"a": "1"}})).await),
        (400, raw(json!({"incr": {"a": 1.5}})).await),
        (400, raw(json!({"reads": "a"})).await),
        (
            400,
            raw(json!({"reads": ["a"], "writes": {"a": "1"}})).await,
        ),
        (
            400,
            raw(json!({"writes": {"a": "1"}, "incr": {"a": 1}})).await,
        ),
        (400, raw(json!({"reads": ["a", "a"]})).await),
        (400, raw(json!({"write": {"a": "1"}})).await),
        (
            400,
            c.post_json(url, "/incr", &json!({"key": "a", "by": "x"}), None)
                .await
                .unwrap(),
        ),
        (
            409,
            c.txn(url, &txn(&[], &[("a", "1"), ("cnt", "9")], &[]), None)
                .await
                .unwrap(),
        ),
        (
            409,
            c.txn(url, &txn(&[], &[("a", "1")], &[("reg", 1)]), None)
                .await
                .unwrap(),
        ),
        (409, c.put(url, "cnt", "9", None).await.unwrap()),
        (409, c.incr(url, "reg", 1, None).await.unwrap()),
        (
            413,
            c.txn(url, &txn(&["a", "b"], &[("c", "1"), ("d", "2")], &[]), None)
                .await
                .unwrap(),
        ),
        (
            413,
            c.txn(url, &txn(&[], &[("a", &"x".repeat(100))], &[]), None)
                .await
                .unwrap(),
        ),
    ];
    for (i, (status, answer)) in cases.iter().enumerate() {
        assert_eq!(answer.status, *status, "case {i}: {}", answer.body);
        assert!(
            answer.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "case {i}: a JSON error: {}",
            answer.body
        );
    }
    // A duplicate key inside one JSON object, which a map would hide.
    let dup = raw_txn(url, r#"{"writes": {"a": "1", "a": "2"}}"#).await;
    assert_eq!(dup.0, 400, "{}", dup.1);
    let after = cluster.status(0).await;
    assert_eq!(after.vc, before.vc, "nothing was written");
    assert_eq!(after.store, before.store);
}

/// Node 0 writes transactions that set `a` and `b` to the same number and
/// add one to counter `n`; its links are delayed, so node 2 receives them
/// in bursts, some relayed through node 1. An observer at node 2 reads the
/// three keys together, over and over: it must never see them disagree.
#[actix_rt::test]
async fn an_observer_never_sees_a_transaction_half_applied() {
    let cluster = Cluster::start(3, |c| c.relay_after_ms = 200).await;
    const N: i64 = 40;
    let writer = async {
        for i in 1..=N {
            if i % 10 == 1 {
                // Re-arm the delays: bursts of held-back writes.
                cluster.fault(0, 2, Some(FaultKind::Delay), 300).await;
                cluster.fault(1, 2, Some(FaultKind::Delay), 150).await;
            }
            let v = i.to_string();
            let a = cluster
                .client
                .txn(
                    cluster.url(0),
                    &txn(&[], &[("a", &v), ("b", &v)], &[("n", 1)]),
                    None,
                )
                .await
                .unwrap();
            ok(&a);
        }
    };
    let observer = async {
        let seen = std::cell::RefCell::new(Vec::new());
        let last = eventually(
            Duration::from_secs(30),
            "node 2 to show the last transaction",
            || async {
                let r = cluster
                    .client
                    .txn(cluster.url(2), &txn(&["a", "b", "n"], &[], &[]), None)
                    .await
                    .unwrap();
                ok(&r);
                let value = |k: &str| {
                    r.body["values"][k]["value"]
                        .as_str()
                        .map_or(0, |v| v.parse::<i64>().unwrap())
                };
                let (a, b, n) = (value("a"), value("b"), value("n"));
                assert!(
                    a == b && b == n,
                    "half-applied at node 2: a={a} b={b} n={n}"
                );
                seen.borrow_mut().push(a);
                (a == N).then_some(a)
            },
        )
        .await;
        (last, seen.into_inner())
    };
    let ((), (last, seen)) = futures_util::future::join(writer, observer).await;
    assert_eq!(last, N);
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "monotonic reads at one node"
    );
    assert!(distinct.len() > 1, "the observer saw the writes arrive");
}

/// Three nodes, eight clients each, incrementing ten counters while node 2
/// is cut off; after healing, every node's totals equal the sums of the
/// acknowledged increments.
#[actix_rt::test]
async fn concurrent_increments_during_a_partition_all_count() {
    let cluster = Cluster::start(3, |c| c.relay_after_ms = 300).await;
    cluster.partition(2, 600_000).await;
    let mut clients = Vec::new();
    for node in 0..3 {
        for client in 0..8i64 {
            let url = cluster.url(node).to_string();
            let kv = KvClient::new(Duration::from_secs(10));
            clients.push(async move {
                let mut acked = [0i64; 10];
                for i in 0..25i64 {
                    let counter = ((i + client) % 10) as usize;
                    let by = if i % 4 == 3 { -(client + 1) } else { i + 1 };
                    let a = kv
                        .incr(&url, &format!("hits{counter}"), by, None)
                        .await
                        .unwrap();
                    if a.status == 200 {
                        acked[counter] += by;
                    }
                }
                acked
            });
        }
    }
    let results = futures_util::future::join_all(clients).await;
    let mut expected = [0i64; 10];
    for acked in results {
        for (e, a) in expected.iter_mut().zip(acked) {
            *e += a;
        }
    }
    cluster.heal().await;
    let all = cluster.wait_converged(Duration::from_secs(30)).await;
    for s in &all {
        for (k, total) in expected.iter().enumerate() {
            assert_eq!(
                s.store[&format!("hits{k}")].value,
                total.to_string(),
                "node {} hits{k}",
                s.node
            );
        }
    }
}

/// Posts a raw body, for JSON a typed client cannot produce.
async fn raw_txn(url: &str, body: &'static str) -> (u16, serde_json::Value) {
    let mut resp = awc::Client::new()
        .post(format!("{url}/txn"))
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .unwrap();
    let bytes = resp.body().await.unwrap();
    (
        resp.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap(),
    )
}
