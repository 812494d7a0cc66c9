//! `causal_demo` run as a user runs it, against a real 3-node cluster on
//! ephemeral loopback ports: its exit status and the story it prints.

mod kv_support;

use std::process::{Command, Output};
use std::time::Duration;

use causal_grid::causal::FaultKind;
use kv_support::{Cluster, SECRET};

/// No relaying during these tests: only the end of a delay (or the demo's
/// heal) releases a held write, so what the demo prints does not depend on
/// timing.
const NO_RELAY_MS: u64 = 600_000;

/// Runs `causal_demo` with `args` against `cluster`. The process runs on a
/// blocking thread: the cluster's nodes serve on the test's own thread.
async fn demo(cluster: &Cluster, args: &[&str]) -> (Output, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_causal_demo"));
    cmd.args(["--node1", cluster.url(0)])
        .args(["--node2", cluster.url(1)])
        .args(["--node3", cluster.url(2)])
        .args(["--secret", SECRET])
        .args(args)
        .env_remove("CLUSTER_SECRET");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("the demo's thread")
        .expect("causal_demo runs");
    let text = format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// The position of `needle` in `haystack`, failing with the whole output.
fn at(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} missing from the demo's output:\n{haystack}"))
}

#[actix_rt::test]
async fn the_demo_shows_x30_buffered_behind_x15() {
    let cluster = Cluster::start(3, |c| c.relay_after_ms = NO_RELAY_MS).await;
    let (out, text) = demo(&cluster, &["--delay-ms", "1000", "--timeout-s", "20"]).await;
    assert!(out.status.success(), "{text}");
    let waits = at(&text, "x=30 from node 2 waits for node 1's write 1");
    assert!(waits < at(&text, "final state:"), "{text}");
    assert!(text.contains("OK: causal order held"), "{text}");
}

#[actix_rt::test]
async fn the_txn_demo_shows_a_transaction_held_whole_then_applied_whole() {
    let cluster = Cluster::start(3, |c| c.relay_after_ms = NO_RELAY_MS).await;
    // A timeout well under the hold's own expiry (--delay-ms plus 10 s):
    // only the demo's heal can release the transaction in time.
    let (out, text) = demo(
        &cluster,
        &["--txn", "--delay-ms", "1500", "--timeout-s", "5"],
    )
    .await;
    assert!(out.status.success(), "{text}");
    // Held: node 3 has the transaction in its buffer and shows neither key,
    // whether read together or one by one.
    let held = at(&text, "/txn read: neither key; /get: neither key");
    let buffered = at(&text, "from node 1 waits for node 2's write 1");
    let heal = at(&text, "step 4: heal replication node 2 -> node 3");
    // Healed: both keys at once, with the transaction's clock.
    let whole = at(
        &text,
        "/txn read: both keys, vc [1,1,0]; /get: both keys, vc [1,1,0]",
    );
    assert!(held < heal && buffered < heal && heal < whole, "{text}");
    assert!(!text.contains("note:"), "the heal released it: {text}");
    assert!(text.contains("OK: node 3 never showed"), "{text}");

    // The cluster agrees with the story: every node holds both keys of
    // the transaction with one clock.
    let all = cluster.wait_converged(Duration::from_secs(20)).await;
    for s in &all {
        let of = |prefix: &str| {
            s.store
                .iter()
                .find(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| (v.value.clone(), v.vc.to_string()))
        };
        assert_eq!(of("balance."), Some(("100".into(), "1,1,0".into())));
        assert_eq!(of("history."), Some(("deposit 100".into(), "1,1,0".into())));
    }
}

#[actix_rt::test]
async fn the_txn_demo_fails_when_the_transaction_never_reaches_node_3() {
    let cluster = Cluster::start(3, |c| c.relay_after_ms = NO_RELAY_MS).await;
    // Node 1's writes never reach node 3, and nobody relays them.
    cluster
        .fault(0, 2, Some(FaultKind::Drop), NO_RELAY_MS)
        .await;
    let (out, text) = demo(
        &cluster,
        &["--txn", "--delay-ms", "300", "--timeout-s", "2"],
    )
    .await;
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("the transaction did not reach node 3 within 2 s"),
        "{text}"
    );
}
