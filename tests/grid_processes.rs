//! The grid as real processes on loopback: the `substation`,
//! `load_balancer` and `charge_request` binaries, killed with SIGKILL.
//!
//! * A substation killed during a burst costs no request: with the others'
//!   capacity sufficient for the whole burst, every answer is a 200.
//! * The balancer killed and restarted on its port: the entry service
//!   answers every request in between with a clean 503 (`Retry-After`, JSON
//!   error), then succeeds again by itself once the new balancer has polled.

mod grid_support;

use std::cell::Cell;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use futures_util::stream::{self, StreamExt};
use grid_support::{await_until, burst, by_substation, charge, client, get_json, get_text, post};
use serde_json::Value;

/// A child process, killed and reaped when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(bin: &str, env: &[(&str, String)]) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: cmd.spawn().expect("spawn service binary"),
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback address (bound, then released for the child to take).
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("address").to_string()
}

fn substation(id: &str, addr: &str, capacity_kw: u32) -> Proc {
    Proc::spawn(
        env!("CARGO_BIN_EXE_substation"),
        &[
            ("SUBSTATION_ID", id.to_string()),
            ("LISTEN_ADDR", addr.to_string()),
            ("CAPACITY_KW", capacity_kw.to_string()),
            // Sessions of hours: nothing ends during the test.
            ("TIME_SCALE", "1".to_string()),
        ],
    )
}

fn balancer(addr: &str, substations: &[String]) -> Proc {
    Proc::spawn(
        env!("CARGO_BIN_EXE_load_balancer"),
        &[
            ("LISTEN_ADDR", addr.to_string()),
            ("SUBSTATIONS", substations.join(",")),
            ("POLL_INTERVAL_MS", "100".to_string()),
        ],
    )
}

async fn await_health(client: &awc::Client, url: &str) {
    await_until(&format!("{url} healthy"), || async {
        get_text(client, &format!("{url}/health")).await.is_some()
    })
    .await;
}

async fn healthy_count(client: &awc::Client, lb: &str) -> Option<usize> {
    let s = get_json(client, &format!("{lb}/status")).await?;
    let subs = s["substations"].as_array()?.clone();
    Some(
        subs.iter()
            .filter(|x| x["healthy"] == Value::Bool(true))
            .count(),
    )
}

fn assert_clean_503(answer: &(u16, bool, Value)) {
    let (status, retry_after, body) = answer;
    assert_eq!(*status, 503, "{body}");
    assert!(*retry_after, "503 without Retry-After: {body}");
    assert!(
        body["error"].is_string(),
        "503 without a JSON error: {body}"
    );
}

#[actix_rt::test]
async fn killed_substation_and_restarted_balancer_with_real_processes() {
    let sub_addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let sub_urls: Vec<String> = sub_addrs.iter().map(|a| format!("http://{a}")).collect();
    // 400 kW each; the whole test asks for at most about 500 kW in 5 kW
    // sessions, so the two survivors can take everything.
    let mut subs: Vec<Proc> = sub_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| substation(&format!("sub{i}"), a, 400))
        .collect();
    let lb_addr = free_addr();
    let lb_url = format!("http://{lb_addr}");
    let mut lb = balancer(&lb_addr, &sub_urls);
    let entry_addr = free_addr();
    let entry_url = format!("http://{entry_addr}");
    let _entry = Proc::spawn(
        env!("CARGO_BIN_EXE_charge_request"),
        &[
            ("LISTEN_ADDR", entry_addr.clone()),
            ("LOAD_BALANCER_URL", lb_url.clone()),
        ],
    );
    let client = client();
    for u in sub_urls.iter().chain([&lb_url, &entry_url]) {
        await_health(&client, u).await;
    }
    await_until("all substations healthy", || async {
        healthy_count(&client, &lb_url).await == Some(3)
    })
    .await;
    let target = format!("{entry_url}/request_charge");

    // A burst of 60; sub0 is killed once 20 have been answered.
    let answered = Cell::new(0usize);
    let requests = stream::iter(0..60)
        .map(|_| async {
            let a = post(&client, &target, &charge(5.0, 50.0)).await;
            answered.set(answered.get() + 1);
            a
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let victim = &mut subs[0];
    let killer = async {
        await_until("20 answers before the kill", || async {
            answered.get() >= 20
        })
        .await;
        victim.kill();
    };
    let (answers, ()) = tokio::join!(requests, killer);
    let failed: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    assert!(
        by_substation(&answers).contains_key("sub0"),
        "sub0 got no traffic before it was killed: {answers:?}"
    );

    // After the kill nothing goes to sub0.
    await_until("sub0 ejected", || async {
        healthy_count(&client, &lb_url).await == Some(2)
    })
    .await;
    for _ in 0..10 {
        let a = post(&client, &target, &charge(5.0, 50.0)).await;
        assert_eq!(a.0, 200, "{a:?}");
        assert_ne!(a.2["substation"], "sub0", "{a:?}");
    }

    // The balancer dies: every request gets a clean 503 from the entry.
    lb.kill();
    for _ in 0..5 {
        assert_clean_503(&post(&client, &target, &charge(5.0, 50.0)).await);
    }

    // Restarted on its port, it has no memory; until its first poll the
    // answers are still clean 503s, then requests succeed again.
    let _lb = balancer(&lb_addr, &sub_urls);
    await_until("entry recovers", || async {
        let a = post(&client, &target, &charge(5.0, 50.0)).await;
        if a.0 == 200 {
            return true;
        }
        assert_clean_503(&a);
        false
    })
    .await;
    let after = burst(&client, &target, charge(5.0, 50.0), 20, 4).await;
    assert!(after.iter().all(|a| a.0 == 200), "{after:?}");
    assert!(
        after.iter().all(|a| a.2["substation"] != "sub0"),
        "{after:?}"
    );
}
