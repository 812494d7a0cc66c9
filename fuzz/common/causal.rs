//! Checks shared by the fuzz targets that deliver writes.

use causal_grid::causal::{VClock, Write};

/// Asserts that `w` may be delivered after everything `shadow` has delivered
/// (next in its origin's sequence, dependencies met), then records it.
pub fn deliver_in_causal_order(n: usize, shadow: &mut VClock, w: &Write) {
    assert_eq!(
        w.seq,
        shadow.get(w.origin) + 1,
        "delivered {w:?} out of order at {shadow}"
    );
    for k in (0..n).filter(|&k| k != w.origin) {
        assert!(
            w.vc.get(k) <= shadow.get(k),
            "delivered {w:?} before its dependencies at {shadow}"
        );
    }
    shadow.set(w.origin, w.seq);
}
