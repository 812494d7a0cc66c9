//! The single-threaded benchmarks of `kv_bench` still run and check what
//! they measure: every put answered (`core`), every put applied (`store`).
//! Figures are not judged here (README, "Benchmarks").

use std::process::Command;

fn kv_bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kv_bench"))
        .args(args)
        .output()
        .expect("run kv_bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn core_answers_every_put_and_trims_the_log() {
    let (ok, stdout, stderr) =
        kv_bench(&["core", "--puts", "20000", "--group", "16", "--keys", "500"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("20000 puts in groups of 16 over 500 keys"),
        "{stdout}"
    );
    assert!(stdout.contains(" ns/put"), "{stdout}");
    // Acknowledged every ten groups, the log never holds more than that.
    let log: usize = stdout
        .rsplit("log ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the log size at the end");
    assert!(log <= 160, "{stdout}");
}

#[test]
fn store_applies_every_put_at_each_size() {
    let (ok, stdout, stderr) = kv_bench(&["store", "--puts", "5000", "--sizes", "100,2000"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stderr.is_empty(),
        "some puts did not change the store: {stderr}"
    );
    let sizes: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(sizes, ["100", "2000"], "{stdout}");
}
