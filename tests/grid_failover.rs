//! A substation that stops during a burst costs no request, and gets traffic
//! again once it is back.

mod grid_support;

use grid_support::*;

#[actix_rt::test]
async fn stopped_substation_costs_no_request_and_returns() {
    let subs: Vec<_> = (0..3)
        .map(|i| start_substation(&format!("sub{i}"), 1000.0, "127.0.0.1:0"))
        .collect();
    let urls: Vec<String> = subs.iter().map(|s| s.url()).collect();
    let victim_addr = subs[0].addr.to_string();
    let lb = start_balancer(&urls, 200);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    let client = client();
    await_all_healthy(&client, &lb.url(), 3).await;
    let target = format!("{}/request_charge", entry.url());

    let first = burst(&client, &target, charge(5.0, 50.0), 30, 6).await;
    assert!(first.iter().all(|a| a.0 == 200), "{first:?}");
    assert!(first.iter().any(|a| a.2["substation"] == "sub0"));

    // Stop it while the second half of the burst is in flight.
    let (second, ()) = tokio::join!(burst(&client, &target, charge(5.0, 50.0), 60, 6), async {
        subs[0].stop().await
    });
    assert!(second.iter().all(|a| a.0 == 200), "{second:?}");
    let after_stop = burst(&client, &target, charge(5.0, 50.0), 20, 4).await;
    assert!(after_stop.iter().all(|a| a.0 == 200), "{after_stop:?}");
    assert!(
        after_stop.iter().all(|a| a.2["substation"] != "sub0"),
        "stopped substation still chosen"
    );

    // Back on the same port, empty: it is polled healthy and gets traffic.
    let _back = start_substation("sub0", 1000.0, &victim_addr);
    await_all_healthy(&client, &lb.url(), 3).await;
    let again = burst(&client, &target, charge(5.0, 50.0), 10, 2).await;
    assert!(again.iter().all(|a| a.0 == 200), "{again:?}");
    let to_victim = again.iter().filter(|a| a.2["substation"] == "sub0").count();
    assert!(to_victim > 0, "{again:?}");
}
