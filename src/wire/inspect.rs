//! Checks on `/status` snapshots, shared by `causal_demo`, the benchmarks
//! and the tests.

use super::kv::StatusResponse;

/// Causal violations visible in one node's snapshot: a visible value whose
/// clock is not covered by the node's delivered clock would mean the node
/// shows a write before something it depends on.
pub fn causal_violations(status: &StatusResponse) -> Vec<String> {
    status
        .store
        .iter()
        .filter(|(_, v)| !v.vc.le(&status.vc))
        .map(|(k, v)| {
            format!(
                "node {} shows {k}={:?} with clock {} but has delivered only {}",
                status.node, v.value, v.vc, status.vc
            )
        })
        .collect()
}

/// True when every snapshot has the same delivered clock and the same store,
/// and nothing is waiting in any buffer.
pub fn converged(statuses: &[StatusResponse]) -> bool {
    let Some(first) = statuses.first() else {
        return true;
    };
    statuses
        .iter()
        .all(|s| s.buffered_msgs == 0 && s.vc == first.vc && s.store == first.store)
}

/// True when every snapshot has the same delivered clock and key count and
/// nothing is buffered: the cheap pre-check on `?store=false` snapshots.
pub fn clocks_agree(statuses: &[StatusResponse]) -> bool {
    let Some(first) = statuses.first() else {
        return true;
    };
    statuses
        .iter()
        .all(|s| s.buffered_msgs == 0 && s.vc == first.vc && s.keys == first.keys)
}

/// A one-line summary of where the snapshots differ (for logs).
pub fn describe(statuses: &[StatusResponse]) -> String {
    statuses
        .iter()
        .map(|s| {
            format!(
                "node {}: vc={} keys={} buffered={}",
                s.node, s.vc, s.keys, s.buffered_msgs
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
