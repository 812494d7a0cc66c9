//! Four substations of unequal capacity fill in proportion to their size.

mod grid_support;

use grid_support::*;

#[actix_rt::test]
async fn unequal_substations_fill_in_proportion() {
    let caps = [100.0, 200.0, 300.0, 400.0];
    let subs: Vec<_> = caps
        .iter()
        .enumerate()
        .map(|(i, c)| start_substation(&format!("sub{i}"), *c, "127.0.0.1:0"))
        .collect();
    let urls: Vec<String> = subs.iter().map(|s| s.url()).collect();
    let lb = start_balancer(&urls, 200);
    let entry = start_entry(&lb.url(), "127.0.0.1:0");
    let client = client();
    await_all_healthy(&client, &lb.url(), 4).await;

    // 70 sessions of 10 kW (hours long) on 1000 kW: 70% busy, in bursts of
    // 8 concurrent requests so several decisions share each poll.
    let target = format!("{}/request_charge", entry.url());
    let answers = burst(&client, &target, charge(10.0, 50.0), 70, 8).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");

    let mut utils = Vec::new();
    for u in &urls {
        let (p, c) = power_of(&client, u).await;
        utils.push(p / c);
    }
    let mean = utils.iter().sum::<f64>() / 4.0;
    let peak = utils.iter().cloned().fold(0.0, f64::max);
    assert!((mean - 0.7).abs() < 0.05, "{utils:?}");
    // Within one 10 kW session of even on the smallest (10% of 100 kW).
    assert!(
        peak / mean <= 1.15,
        "peak/mean {} for {utils:?}",
        peak / mean
    );
    for u in &utils {
        assert!((u - 0.7).abs() <= 0.1 + 1e-9, "{utils:?}");
    }
}
