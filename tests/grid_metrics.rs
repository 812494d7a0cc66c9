//! Every grid service's `/metrics` passes `promtool check metrics` and
//! carries the metric names dashboards depend on.

mod grid_support;

use std::io::Write;
use std::process::{Command, Stdio};

use grid_support::*;

fn promtool_available() -> bool {
    Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn promtool_check(name: &str, body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "{name}: promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[actix_rt::test]
async fn every_metrics_endpoint_passes_promtool_and_has_contract_names() {
    let s = start_substation("sub1", 100.0, "127.0.0.1:0");
    let lb = start_balancer(&[s.url()], 100);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    let client = client();
    await_all_healthy(&client, &lb.url(), 1).await;
    let target = format!("{}/request_charge", entry.url());
    // Exercise every outcome so labelled series exist.
    burst(&client, &target, charge(40.0, 50.0), 3, 1).await;
    post(&client, &target, &charge(0.0, 1.0)).await;
    // Straight to the substation: more than its remaining capacity.
    let (status, _, _) = post(&client, &format!("{}/charge", s.url()), &charge(40.0, 1.0)).await;
    assert_eq!(status, 503);

    let expected: [(&str, &[&str]); 3] = [
        (
            "substation",
            &[
                "substation_power_watts{substation=\"sub1\"}",
                "substation_capacity_watts",
                "substation_utilization_ratio",
                "substation_sessions_active",
                "substation_sessions_started_total",
                "substation_sessions_completed_total",
                "substation_sessions_rejected_total{reason=\"capacity\",substation=\"sub1\"} 1",
                "substation_energy_delivered_joules_total",
                "substation_requested_watts",
                "substation_committed_watts",
                "substation_sessions_curtailed",
                "substation_sessions_paused",
                "substation_limit_changes_total",
                "substation_http_requests_total",
                "substation_http_request_duration_seconds",
            ],
        ),
        (
            "balancer",
            &[
                "lb_decisions_total{substation=\"sub1\"}",
                "lb_retries_total",
                "lb_no_capacity_total",
                "lb_polls_total{result=\"ok\",substation=\"sub1\"}",
                "lb_poll_duration_seconds",
                "lb_decision_duration_seconds",
                "lb_snapshot_age_seconds{substation=\"sub1\"}",
                "lb_substation_healthy{substation=\"sub1\"} 1",
                "lb_estimated_utilization_ratio{substation=\"sub1\"}",
                "lb_http_requests_total",
            ],
        ),
        (
            "entry",
            &[
                "charge_requests_total{outcome=\"accepted\"} 2",
                "charge_requests_total{outcome=\"rejected\"} 1",
                "charge_requests_total{outcome=\"invalid\"} 1",
                "charge_request_duration_seconds",
                "charge_http_requests_total",
            ],
        ),
    ];
    let urls = [s.url(), lb.url(), entry.url()];
    let have_promtool = promtool_available();
    if !have_promtool {
        println!("SKIPPED promtool check: promtool is not installed (apt-get install prometheus)");
    }
    for ((name, names), url) in expected.iter().zip(urls) {
        // Gauges refresh on a short tick: poll until every name is present.
        let deadline = std::time::Instant::now() + DEADLINE;
        let body = loop {
            let body = get_text(&client, &format!("{url}/metrics"))
                .await
                .unwrap_or_default();
            if names.iter().all(|n| body.contains(n)) {
                break body;
            }
            let missing: Vec<_> = names.iter().filter(|n| !body.contains(*n)).collect();
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: missing {missing:?} in\n{body}"
            );
            actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        if have_promtool {
            promtool_check(name, &body);
        }
    }
}
