//! `rush_hour` end to end: the binary against an in-process grid on loopback.
//!
//! * The default rush is scaled to the capacity the balancer reports, runs
//!   without errors, measures the energy delivered from the substations'
//!   counters, and writes CSV, JSON and SVG.
//! * `--trace` replays exactly the trace's sessions, with the minimum power
//!   derived from a departure; a bad trace fails naming its line.

mod grid_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use grid_support::*;
use serde_json::Value;

/// Simulated seconds per real second, in the substations and in rush_hour.
const TIME_SCALE: f64 = 600.0;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("grid-rush-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs rush_hour to completion without blocking the test's actix system,
/// which serves the balancer.
async fn rush_hour(args: &[String]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rush_hour"))
        .args(args)
        .env_remove("TIME_SCALE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rush_hour");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("poll rush_hour").is_some() {
            return child.wait_with_output().expect("rush_hour output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rush_hour did not finish");
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("JSON written")).expect("JSON")
}

#[actix_rt::test]
async fn the_default_rush_is_scaled_to_the_grid_and_reports_delivered_energy() {
    let a = start_substation_with("a", 200.0, "127.0.0.1:0", TIME_SCALE, None);
    let b = start_substation_with("b", 300.0, "127.0.0.1:0", TIME_SCALE, None);
    let lb = start_balancer(&[a.url(), b.url()], 200);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    await_all_healthy(&client(), &lb.url(), 2).await;

    let dir = scratch("default");
    let (json, csv, svg) = (dir.join("r.json"), dir.join("r.csv"), dir.join("r.svg"));
    let out = rush_hour(&[
        "--target".into(),
        entry.url(),
        "--balancer".into(),
        lb.url(),
        "--time-scale".into(),
        TIME_SCALE.to_string(),
        "--duration".into(),
        "8".into(),
        "--drain".into(),
        "10".into(),
        "--sample-ms".into(),
        "250".into(),
        "--json".into(),
        json.display().to_string(),
        "--csv".into(),
        csv.display().to_string(),
        "--svg".into(),
        svg.display().to_string(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("against 500 kW at time scale 600"),
        "{stdout}"
    );
    assert!(stdout.contains("| grid capacity | 500 kW |"), "{stdout}");

    let report = read_json(&json);
    let s = &report["summary"];
    let requests = s["requests"].as_u64().unwrap();
    // Hold 475 kW of 17.9 kWh requests at 600x is 4.4/s: about 25 in 8 s.
    assert!((8..=60).contains(&requests), "{s}");
    assert!(s["accepted"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["errors"], 0);
    assert_eq!(s["capacity_kw"], 500.0);
    assert_eq!(s["delivered"]["source"], "measured", "{s}");
    let delivered = s["delivered"]["kwh"].as_f64().unwrap();
    let accepted = s["energy_accepted_kwh"].as_f64().unwrap();
    assert!(
        delivered > 0.0 && delivered <= accepted * 1.001,
        "{delivered} of {accepted}"
    );
    assert_eq!(
        report["requests"].as_array().unwrap().len() as u64,
        requests
    );
    assert!(!report["samples"].as_array().unwrap().is_empty());
    assert!(report["utilization"].is_array(), "the older key is kept");
    let classes = s["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 5);

    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(csv.starts_with("start_s,latency_ms,status,substation,power_kw,energy_kwh,error,"));
    assert_eq!(csv.lines().count() as u64, requests + 1);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(svg.matches("<g class=\"legend\">").count(), 2);
    assert!(svg.contains(">a</text>") && svg.contains(">b</text>"));
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_rt::test]
async fn a_trace_is_replayed_exactly_and_a_bad_one_names_its_line() {
    let a = start_substation_with("a", 500.0, "127.0.0.1:0", TIME_SCALE, None);
    let lb = start_balancer(&[a.url()], 200);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    await_all_healthy(&client(), &lb.url(), 1).await;

    let dir = scratch("trace");
    let trace = dir.join("t.csv");
    // Twelve 10 kWh sessions, one every 5 simulated minutes (0.5 s real);
    // the first leaves after an hour, so it needs 10 kW of its 22 kW.
    let mut text =
        String::from("# test\narrival_s,energy_kwh,max_power_kw,min_power_kw,departure_s\n");
    text.push_str("0,10,22,,3600\n");
    for i in 1..12 {
        text.push_str(&format!("{},10,11\n", i * 300));
    }
    std::fs::write(&trace, text).unwrap();
    let json = dir.join("t.json");
    let base = [
        "--target".to_string(),
        entry.url(),
        "--balancer".into(),
        lb.url(),
        "--time-scale".into(),
        TIME_SCALE.to_string(),
        "--json".into(),
        json.display().to_string(),
        "--trace".into(),
    ];
    let mut args = base.to_vec();
    args.push(trace.display().to_string());
    let out = rush_hour(&args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("12 sessions"), "{stdout}");
    let report = read_json(&json);
    let s = &report["summary"];
    assert_eq!(
        (s["requests"].as_u64(), s["accepted"].as_u64()),
        (Some(12), Some(12)),
        "{s}"
    );
    let reqs = report["requests"].as_array().unwrap();
    let first = reqs
        .iter()
        .find(|r| r["power_kw"] == 22.0)
        .expect("the 22 kW session");
    assert_eq!(first["min_power_kw"], 10.0, "derived from its departure");
    assert!(reqs
        .iter()
        .filter(|r| r["power_kw"] == 11.0)
        .all(|r| r["min_power_kw"].is_null()));
    // Sent at arrival / time scale: the last one 5.5 s into the run.
    let last = reqs
        .iter()
        .map(|r| r["start_s"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!((5.4..7.5).contains(&last), "last sent at {last}");

    std::fs::write(
        &trace,
        "arrival_s,energy_kwh,max_power_kw\n0,10,11\n# fine\n60,ten,11\n",
    )
    .unwrap();
    let out = rush_hour(&args).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("trace line 4") && stderr.contains("energy_kwh is not a number"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
