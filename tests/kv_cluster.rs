//! Three real nodes on loopback: causal delivery, convergence, partitions,
//! sessions, input validation and peer authentication.

mod kv_support;

use std::collections::HashMap;
use std::time::Duration;

use causal_grid::auth::Signer;
use causal_grid::causal::{FaultKind, VClock, Write};
use causal_grid::net::kv::PeerClient;
use causal_grid::wire::inspect;
use causal_grid::wire::kv::{ReplicateAck, ReplicateRequest};
use kv_support::{eventually, Cluster};

const CONVERGE: Duration = Duration::from_secs(20);

/// The textbook scenario: node 1's write depends on node 0's, and the link
/// 0 → 2 is slow, so node 2 receives the dependent write first. It must buffer
/// it, never show it before its dependency, and deliver both in order.
#[actix_rt::test]
async fn delayed_link_reorders_delivery_but_never_causal_order() {
    // No relaying during the test window: node 2 must wait for node 0.
    let cluster = Cluster::start(3, |c| c.relay_after_ms = 60_000).await;
    cluster.fault(0, 2, Some(FaultKind::Delay), 60_000).await;

    let first = cluster
        .client
        .put(cluster.url(0), "x", "15", None)
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    let ctx = first.context.clone().unwrap();
    let second = cluster
        .client
        .put(cluster.url(1), "x", "30", Some(&ctx))
        .await
        .unwrap();
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.body["vc"], serde_json::json!([1, 1, 0]));
    let third = cluster
        .client
        .put(cluster.url(2), "y", "90", None)
        .await
        .unwrap();
    assert_eq!(third.status, 200);

    // Node 2 holds x=30 in its buffer and shows neither x value.
    let held = eventually(Duration::from_secs(10), "node 2 to buffer x=30", || async {
        let s = cluster.status(2).await;
        (s.buffered_msgs == 1).then_some(s)
    })
    .await;
    assert!(
        !held.store.contains_key("x"),
        "x visible too early: {:?}",
        held.store
    );
    assert_eq!(held.store["y"].value, "90");
    assert!(inspect::causal_violations(&held).is_empty());

    // Heal: both writes arrive, in causal order, and everyone converges.
    cluster.fault(0, 2, None, 0).await;
    let all = cluster.wait_converged(CONVERGE).await;
    for s in &all {
        assert_eq!(s.store["x"].value, "30");
        assert_eq!(s.vc, VClock::from_vec(vec![1, 1, 1]));
    }
}

/// 16 concurrent writers spread over the nodes, then convergence with every
/// acknowledged write accounted for.
#[actix_rt::test]
async fn concurrent_writers_converge_with_every_write_present() {
    let cluster = Cluster::start(3, |_| {}).await;
    let writers = 16;
    let per_writer = 40;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = cluster.client.clone();
        let url = cluster.url(w % 3).to_string();
        tasks.push(actix_rt::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..per_writer {
                let key = format!("w{w}-k{i}");
                let a = client
                    .put(&url, &key, &format!("v{i}"), None)
                    .await
                    .unwrap();
                assert_eq!(a.status, 200, "{:?}", a.body);
                acked.push(key);
                // A shared hot key too, so arbitration is exercised.
                let a = client
                    .put(&url, "shared", &format!("w{w}-{i}"), None)
                    .await
                    .unwrap();
                assert_eq!(a.status, 200);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let all = cluster.wait_converged(CONVERGE).await;
    let total: u64 = all[0].vc.entries().iter().sum();
    assert_eq!(
        total as usize,
        writers * per_writer * 2,
        "every write delivered"
    );
    for key in &acked {
        assert!(
            all[0].store.contains_key(key),
            "acknowledged write {key} lost"
        );
    }
    // Each node's own entry counts exactly the writes it accepted.
    let mut per_node = [0u64; 3];
    for w in 0..writers {
        per_node[w % 3] += (per_writer * 2) as u64;
    }
    assert_eq!(all[0].vc.entries(), &per_node);
}

/// Every node writes one hot key concurrently; replicas end identical, and
/// the winner is the highest-ranked write.
#[actix_rt::test]
async fn hot_key_written_everywhere_converges_to_the_highest_rank() {
    let cluster = Cluster::start(3, |_| {}).await;
    let mut tasks = Vec::new();
    for node in 0..3 {
        let client = cluster.client.clone();
        let url = cluster.url(node).to_string();
        tasks.push(actix_rt::spawn(async move {
            let mut written = Vec::new();
            for i in 0..50 {
                let a = client
                    .put(&url, "hot", &format!("n{node}-{i}"), None)
                    .await
                    .unwrap();
                assert_eq!(a.status, 200);
                let vc: VClock = serde_json::from_value(a.body["vc"].clone()).unwrap();
                written.push((vc, node, a.body["value"].as_str().unwrap().to_string()));
            }
            written
        }));
    }
    let mut all_writes = Vec::new();
    for t in tasks {
        all_writes.extend(t.await.unwrap());
    }
    let all = cluster.wait_converged(CONVERGE).await;
    let winner = all_writes
        .iter()
        .max_by_key(|(vc, node, _)| (vc.sum(), *node))
        .unwrap();
    for s in &all {
        assert_eq!(s.store["hot"].value, winner.2);
    }
}

/// Node 2 is cut off while both sides keep writing; after healing everything
/// converges and no acknowledged write is lost.
#[actix_rt::test]
async fn partition_then_heal_converges_without_losing_writes() {
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.partition(2, 120_000).await;
    let mut expected = HashMap::new();
    for i in 0..30 {
        for node in 0..3 {
            let key = format!("p{node}-{i}");
            let a = cluster
                .client
                .put(cluster.url(node), &key, &i.to_string(), None)
                .await
                .unwrap();
            assert_eq!(a.status, 200);
            expected.insert(key, i.to_string());
        }
    }
    // While partitioned, node 2 sees none of the majority's writes and they
    // see none of its.
    let isolated = cluster.status(2).await;
    assert_eq!(isolated.vc.get(0), 0);
    assert_eq!(isolated.vc.get(1), 0);
    assert_eq!(cluster.status(0).await.vc.get(2), 0);

    cluster.heal().await;
    let all = cluster.wait_converged(CONVERGE).await;
    for (key, value) in &expected {
        assert_eq!(
            all[0].store.get(key).map(|v| v.value.as_str()),
            Some(value.as_str())
        );
    }
    assert_eq!(all[0].vc, VClock::from_vec(vec![30, 30, 30]));
}

/// Read-your-writes across nodes: with the context of a put on node 0, a
/// read on node 1 waits until node 1 has the write, even over a slow link.
/// Past the timeout the answer is 503 and a put is not applied anywhere.
#[actix_rt::test]
async fn causal_context_gives_read_your_writes_across_nodes() {
    let cluster = Cluster::start(3, |c| {
        c.relay_after_ms = 60_000;
        c.causal_wait_timeout_ms = 3_000;
    })
    .await;
    cluster.fault(0, 1, Some(FaultKind::Delay), 600).await;
    let put = cluster
        .client
        .put(cluster.url(0), "session", "mine", None)
        .await
        .unwrap();
    let ctx = put.context.unwrap();
    let read = cluster
        .client
        .get(cluster.url(1), "session", Some(&ctx))
        .await
        .unwrap();
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.body["value"], "mine");
    assert!(ctx.le(read.context.as_ref().unwrap()), "monotonic context");

    // Now a context node 1 cannot reach in time: 503, nothing applied.
    cluster.fault(0, 1, Some(FaultKind::Delay), 60_000).await;
    let put = cluster
        .client
        .put(cluster.url(0), "later", "1", None)
        .await
        .unwrap();
    let ctx = put.context.unwrap();
    let blocked = cluster
        .client
        .put(cluster.url(1), "dependent", "2", Some(&ctx))
        .await
        .unwrap();
    assert_eq!(blocked.status, 503);
    assert!(blocked.body["error"]
        .as_str()
        .unwrap()
        .contains("Causal-Context"));
    let s = cluster.status(1).await;
    assert!(!s.store.contains_key("dependent"));
    assert_eq!(s.vc.get(1), 0, "node 1 stamped nothing");
}

/// Malformed input gets a 4xx JSON error and changes nothing.
#[actix_rt::test]
async fn bad_inputs_get_json_errors_and_change_nothing() {
    let cluster = Cluster::start(3, |c| c.max_value_bytes = 1024).await;
    let before = cluster.status(0).await;
    let http = awc::Client::default();
    let url = cluster.url(0);
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, &'a str, u16);
    let cases: Vec<Case> = vec![
        ("POST", "/put", None, "not json", 400),
        ("POST", "/put", None, r#"{"value":"1"}"#, 400),
        ("POST", "/put", None, r#"{"key":"","value":"1"}"#, 400),
        ("POST", "/put", None, r#"{"key":7,"value":"1"}"#, 400),
        ("POST", "/put", None, r#"{"key":"k"}"#, 400),
        (
            "POST",
            "/put",
            None,
            r#"{"key":"k","value":"1","extra":1}"#,
            400,
        ),
        (
            "POST",
            "/put",
            Some(("Causal-Context", "1,2")),
            r#"{"key":"k","value":"1"}"#,
            400,
        ),
        (
            "POST",
            "/put",
            Some(("Causal-Context", "a,b,c")),
            r#"{"key":"k","value":"1"}"#,
            400,
        ),
        ("GET", "/get", None, "", 400),
        ("GET", "/get?key=", None, "", 400),
        ("GET", "/get?key=missing", None, "", 404),
        ("GET", "/put", None, "", 405),
        ("GET", "/nowhere", None, "", 404),
    ];
    for (method, path, header, body, status) in cases {
        let mut req = match method {
            "POST" => http.post(format!("{url}{path}")),
            _ => http.get(format!("{url}{path}")),
        };
        if let Some(h) = header {
            req = req.insert_header(h);
        }
        let mut resp = req.send_body(body.to_string()).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path} {body}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert!(json["error"].is_string(), "{method} {path}: {json}");
    }
    // A value over the limit: 413.
    let big = format!(r#"{{"key":"k","value":"{}"}}"#, "x".repeat(2000));
    let mut resp = http
        .post(format!("{url}/put"))
        .send_body(big)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert!(json["error"].is_string());
    let after = cluster.status(0).await;
    assert_eq!(before.vc, after.vc);
    assert!(after.store.is_empty());
}

/// Peer and admin routes refuse unsigned, forged, tampered and replayed
/// requests, and none of them changes state.
#[actix_rt::test]
async fn unauthenticated_peer_traffic_is_refused() {
    let cluster = Cluster::start(3, |_| {}).await;
    let url = cluster.url(0);
    let forged_write = Write {
        origin: 1,
        seq: 1,
        vc: VClock::from_vec(vec![0, 1, 0]),
        ops: vec![causal_grid::causal::Op::Put {
            key: "forged".into(),
            value: "evil".into(),
        }],
        ts_ms: 0,
    };
    let batch = ReplicateRequest {
        from: 1,
        writes: vec![forged_write],
    };
    let http = awc::Client::default();

    // No signature at all.
    let resp = http
        .post(format!("{url}/peer/replicate"))
        .send_json(&batch)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Signed with the wrong secret.
    let wrong = PeerClient::new(
        Signer::new("not-the-secret").unwrap(),
        "1",
        Duration::from_secs(5),
    );
    let err = wrong
        .post::<_, ReplicateAck>(url, "/peer/replicate", &batch)
        .await
        .unwrap_err();
    assert!(matches!(err, causal_grid::Error::Unauthorized(_)), "{err}");
    // Correct secret but claiming another node than it signed as.
    let liar = PeerClient::new(
        Signer::new(kv_support::SECRET).unwrap(),
        "2",
        Duration::from_secs(5),
    );
    let err = liar
        .post::<_, ReplicateAck>(url, "/peer/replicate", &batch)
        .await
        .unwrap_err();
    assert!(matches!(err, causal_grid::Error::Unauthorized(_)), "{err}");
    // Tampered body and replay: sign once, send altered, then twice.
    let signer = Signer::new(kv_support::SECRET).unwrap();
    let body = serde_json::to_vec(&ReplicateRequest {
        from: 1,
        writes: vec![],
    })
    .unwrap();
    let signed = signer.sign(
        "POST",
        "/peer/replicate",
        "1",
        causal_grid::auth::now_ms(),
        &body,
    );
    let send = |payload: Vec<u8>| {
        http.post(format!("{url}/peer/replicate"))
            .insert_header((causal_grid::auth::HEADER_NODE, signed.node.clone()))
            .insert_header((
                causal_grid::auth::HEADER_TIMESTAMP,
                signed.timestamp_ms.to_string(),
            ))
            .insert_header((causal_grid::auth::HEADER_NONCE, signed.nonce.clone()))
            .insert_header((
                causal_grid::auth::HEADER_SIGNATURE,
                signed.signature.clone(),
            ))
            .send_body(payload)
    };
    let tampered = serde_json::to_vec(&batch).unwrap();
    assert_eq!(send(tampered).await.unwrap().status().as_u16(), 401);
    assert_eq!(send(body.clone()).await.unwrap().status().as_u16(), 200);
    assert_eq!(send(body).await.unwrap().status().as_u16(), 401, "replay");
    // Admin route without a signature.
    let resp = http
        .post(format!("{url}/admin/fault"))
        .send_json(&serde_json::json!({"peer": 1, "kind": "drop", "duration_ms": 1000}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let s = cluster.status(0).await;
    assert!(s.store.is_empty(), "forged write applied: {:?}", s.store);
    assert_eq!(s.vc, VClock::zero(3));
    assert!(s.peers.iter().all(|p| p.fault.is_none()));
}

/// The value of an unlabelled-by-route series (`name` followed by its
/// labels) in a Prometheus text body.
fn series(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[actix_rt::test]
async fn the_commit_path_is_measured() {
    let cluster = Cluster::start(3, |c| c.wal_segment_bytes = 4096).await;
    let puts = 40;
    for i in 0..puts {
        let value = format!("value-{i}-{}", "x".repeat(200));
        cluster
            .client
            .put(cluster.url(0), &format!("k{i}"), &value, None)
            .await
            .expect("put");
    }
    let http = awc::Client::default();
    // Checkpoints run in the background: poll until one has been counted
    // with its keys (a scrape can fall between a checkpoint's histograms).
    let body = eventually(
        Duration::from_secs(20),
        "a checkpoint of the written keys is measured",
        || async {
            let mut resp = http
                .get(format!("{}/metrics", cluster.url(0)))
                .send()
                .await
                .ok()?;
            let body = String::from_utf8(resp.body().limit(1 << 22).await.ok()?.to_vec()).ok()?;
            let counted = series(&body, "kv_checkpoint_duration_seconds_count") >= 1.0;
            (counted && series(&body, "kv_checkpoint_keys_sum") >= 1.0).then_some(body)
        },
    )
    .await;
    let commits = series(&body, "kv_commit_duration_seconds_count");
    assert!(commits >= 1.0, "{commits} commits");
    assert!(series(&body, "kv_fsync_duration_seconds_count") >= 1.0);
    // Every put was in some group, and waited for one.
    assert!(series(&body, "kv_commit_group_writes_sum") >= puts as f64);
    assert!(series(&body, "kv_put_queue_seconds_count") >= puts as f64);
    assert!(series(&body, "kv_checkpoint_keys_sum") >= 1.0);
    assert!(series(&body, "kv_checkpoint_bytes_sum") >= 200.0);
}

/// With `REPLICATION_LINGER_MS`, writes that follow each other closely
/// travel to a peer together instead of one request each.
#[actix_rt::test]
async fn lingering_replication_carries_close_writes_in_few_requests() {
    let cluster = Cluster::start(3, |c| {
        // Long enough that even a slow machine's 20 puts fit in one or
        // two waits; heartbeats go only while nothing waits.
        c.replication_linger_ms = 2_000;
        c.relay_after_ms = 60_000;
    })
    .await;
    let batches = |node: usize| {
        let m = &cluster.node(node).metrics;
        m.batches.with_label_values(&["1", "ok"]).get()
    };
    let before = batches(0);
    let puts = 20;
    for i in 0..puts {
        let put = cluster
            .client
            .put(cluster.url(0), &format!("k{i}"), "v", None)
            .await
            .expect("put");
        assert_eq!(put.status, 200);
    }
    eventually(
        Duration::from_secs(10),
        "node 1 has every write",
        || async { (cluster.status(1).await.store.len() == puts).then_some(()) },
    )
    .await;
    // One request for the first write (or a heartbeat just before it), one
    // or two for the rest, and at most a heartbeat or two (one a second,
    // only while nothing waits). Without the linger: one request a put.
    let sent = batches(0) - before;
    assert!(
        sent <= 6,
        "{sent} requests carried {puts} sequential writes to node 1"
    );
}
