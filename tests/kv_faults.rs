//! Faults on an in-process cluster: a dead origin, a wiped node.

mod kv_support;

use std::time::Duration;

use causal_grid::causal::FaultKind;
use kv_support::{eventually, Cluster};

/// Node 0's writes reach node 1 but not node 2, then node 0 dies for good:
/// node 2 still gets them, relayed by node 1.
#[actix_rt::test]
async fn writes_of_a_dead_origin_reach_the_third_node_through_a_survivor() {
    let mut cluster = Cluster::start(3, |c| c.relay_after_ms = 300).await;
    cluster.fault(0, 2, Some(FaultKind::Drop), 600_000).await;
    for i in 0..20 {
        let a = cluster
            .client
            .put(cluster.url(0), &format!("d{i}"), "v", None)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    }
    eventually(
        Duration::from_secs(10),
        "node 1 to deliver node 0's writes",
        || async { (cluster.status(1).await.vc.get(0) == 20).then_some(()) },
    )
    .await;
    cluster.stop(0).await;
    let s = eventually(
        Duration::from_secs(20),
        "node 2 to get them from node 1",
        || async {
            let s = cluster.status(2).await;
            (s.vc.get(0) == 20).then_some(s)
        },
    )
    .await;
    for i in 0..20 {
        assert!(s.store.contains_key(&format!("d{i}")));
    }
}

/// A node loses its disk after its peers have trimmed their logs, so the old
/// writes exist only in the peers' stores. It rejoins with no manual step:
/// it takes a peer's snapshot, converges, and its next write continues its
/// old sequence instead of reusing a number.
#[actix_rt::test]
async fn a_wiped_node_rejoins_without_reusing_sequence_numbers() {
    let mut cluster = Cluster::start(3, |c| c.relay_after_ms = 300).await;
    for i in 0..30 {
        let a = cluster
            .client
            .put(cluster.url(i % 3), &format!("w{i}"), &i.to_string(), None)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    }
    let before = cluster.wait_converged(Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(20),
        "every log to be trimmed",
        || async {
            let all = cluster.statuses().await;
            all.iter().all(|s| s.log_entries == 0).then_some(())
        },
    )
    .await;

    cluster.stop(2).await;
    cluster.wipe(2);
    cluster.restart(2).await;
    cluster.wait_ready(2).await;
    let a = cluster
        .client
        .put(cluster.url(2), "after-wipe", "1", None)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        a.body["vc"][2].as_u64(),
        Some(before[0].vc.get(2) + 1),
        "the rejoined node continues its own sequence"
    );
    let all = cluster.wait_converged(Duration::from_secs(20)).await;
    for (key, value) in &before[0].store {
        assert_eq!(
            all[2].store.get(key),
            Some(value),
            "{key} on the rejoined node"
        );
    }
    assert_eq!(all[2].store["after-wipe"].value, "1");
}

/// A node that starts empty must not serve its empty store as data: while a
/// peer it needs is down, `/ready`, `/get` and `/put` answer 503 (with
/// `Retry-After` and a JSON reason); once the peer is back it rebuilds and
/// serves, with the data it had.
#[actix_rt::test]
async fn an_empty_node_answers_503_until_the_peer_it_needs_is_back() {
    let mut cluster = Cluster::start(3, |c| c.relay_after_ms = 300).await;
    for i in 0..10 {
        let a = cluster
            .client
            .put(cluster.url(i % 3), &format!("k{i}"), "v", None)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    }
    cluster.wait_converged(Duration::from_secs(20)).await;
    cluster.stop(1).await;
    cluster.stop(2).await;
    cluster.wipe(2);
    cluster.restart(2).await;
    // Node 0 answers at once; node 1 stays down: node 2 must keep refusing.
    let url = cluster.url(2).to_string();
    eventually(
        Duration::from_secs(10),
        "node 2 to hear from node 0",
        || async {
            let status = cluster.client.status_of(&url, false).await.ok()?;
            let reason = status.not_ready?;
            reason.contains("peer(s) 1").then_some(())
        },
    )
    .await;
    for _ in 0..5 {
        let ready = cluster.client.ready(&url).await.unwrap();
        assert_eq!(ready.status, 503, "{:?}", ready.body);
        assert!(ready.body["error"].as_str().unwrap().contains("peer(s) 1"));
        let get = cluster.client.get(&url, "k0", None).await.unwrap();
        assert_eq!(
            get.status, 503,
            "an empty store is not data: {:?}",
            get.body
        );
        assert!(get.body["error"].is_string());
        let put = cluster.client.put(&url, "during", "x", None).await.unwrap();
        assert_eq!(put.status, 503, "{:?}", put.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.restart(1).await;
    cluster.wait_ready(2).await;
    let get = cluster.client.get(&url, "k0", None).await.unwrap();
    assert_eq!(get.status, 200, "{:?}", get.body);
    let put = cluster.client.put(&url, "after", "y", None).await.unwrap();
    assert_eq!(put.status, 200, "{:?}", put.body);
    cluster.wait_converged(Duration::from_secs(20)).await;
}
