//! Faults on an in-process cluster: a dead origin, a wiped node.

mod kv_support;

use std::time::Duration;

use causal_grid::causal::FaultKind;
use kv_support::{eventually, Cluster};

/// Node 0's writes reach node 1 but not node 2, then node 0 dies for good:
/// node 2 still gets them, relayed by node 1.
#[actix_rt::test]
async fn writes_of_a_dead_origin_reach_the_third_node_through_a_survivor() {
    let mut cluster = Cluster::start(3, |c| c.relay_after_ms = 300);
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
    assert_eq!(cluster.status(2).await.vc.get(0), 0, "the fault held");
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
