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

/// A substation that stops answering without closing its sockets (frozen
/// behind a relay) is ejected by the failed poll or forward, every request
/// meanwhile is retried on the other one, and it is re-admitted once its
/// polls succeed again.
#[actix_rt::test]
async fn hung_substation_is_ejected_costs_no_request_and_is_readmitted() {
    let hung = start_substation("hung", 1000.0, "127.0.0.1:0");
    let relay = Relay::start(hung.addr);
    let other = start_substation("other", 1000.0, "127.0.0.1:0");
    let lb = start_balancer(&[relay.url(), other.url()], 100);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    let client = client();
    await_all_healthy(&client, &lb.url(), 2).await;
    let target = format!("{}/request_charge", entry.url());

    let before = burst(&client, &target, charge(5.0, 50.0), 10, 2).await;
    assert!(before.iter().all(|a| a.0 == 200), "{before:?}");
    assert!(by_substation(&before).contains_key("hung"), "{before:?}");

    relay.freeze();
    // Requests sent to it wait out the forward timeout and are retried on
    // the other substation; none may fail.
    let during = burst(&client, &target, charge(5.0, 50.0), 12, 4).await;
    assert!(during.iter().all(|a| a.0 == 200), "{during:?}");
    assert!(
        during.iter().all(|a| a.2["substation"] == "other"),
        "{during:?}"
    );
    await_until("hung substation ejected", || async {
        is_healthy(&client, &lb.url(), 0).await == Some(false)
    })
    .await;
    let ejected = burst(&client, &target, charge(5.0, 50.0), 10, 2).await;
    assert!(ejected.iter().all(|a| a.0 == 200), "{ejected:?}");
    assert!(
        ejected.iter().all(|a| a.2["substation"] == "other"),
        "ejected substation still chosen: {ejected:?}"
    );

    relay.thaw();
    await_all_healthy(&client, &lb.url(), 2).await;
    // It is far less loaded than the other, so it is chosen again.
    await_until("traffic reaches the re-admitted substation", || async {
        let (status, _, body) = post(&client, &target, &charge(5.0, 50.0)).await;
        assert_eq!(status, 200, "{body}");
        body["substation"] == "hung"
    })
    .await;
}

/// A balancer that starts while substations are already loaded (as after a
/// restart: it remembers nothing) routes by what its first poll reports, so
/// it sends nothing to a substation without room and needs no retry.
#[actix_rt::test]
async fn fresh_balancer_routes_by_its_first_poll() {
    let busy = start_substation("busy", 100.0, "127.0.0.1:0");
    let idle = start_substation("idle", 100.0, "127.0.0.1:0");
    let client = client();
    // 90 of 100 kW in use at `busy`, admitted behind any balancer's back.
    let direct = burst(
        &client,
        &format!("{}/charge", busy.url()),
        charge(10.0, 50.0),
        9,
        3,
    )
    .await;
    assert!(direct.iter().all(|a| a.0 == 200), "{direct:?}");

    let lb = start_balancer(&[busy.url(), idle.url()], 100);
    await_all_healthy(&client, &lb.url(), 2).await;
    let route = format!("{}/route", lb.url());
    // Up to 90 kW at `idle` the utilisation after admission stays below
    // `busy`'s 1.0: every one of these must go to `idle`.
    let first = burst(&client, &route, charge(10.0, 50.0), 9, 3).await;
    assert!(first.iter().all(|a| a.0 == 200), "{first:?}");
    assert_eq!(by_substation(&first).get("idle"), Some(&9), "{first:?}");
    // Then exactly the 20 kW left fit, one at each, and the next is refused.
    let rest = burst(&client, &route, charge(10.0, 50.0), 3, 1).await;
    assert_eq!(rest.iter().filter(|a| a.0 == 200).count(), 2, "{rest:?}");
    assert_eq!(rest.iter().filter(|a| a.0 == 503).count(), 1, "{rest:?}");
    let metrics = get_text(&client, &format!("{}/metrics", lb.url()))
        .await
        .expect("balancer metrics");
    assert!(
        metrics.contains("lb_retries_total 0"),
        "the balancer had to retry: it routed without knowing the load\n{metrics}"
    );
}
