//! Charge requests: the JSON body every grid service takes from clients
//! (`POST /request_charge`, `/route`, `/charge`), decoded with serde_json
//! into a `ChargeRequest` and checked by `validate`. The entry service and
//! the balancer forward the validated request (`to_request`) as JSON to the
//! next hop, which decodes and validates it again. Checked:
//!
//! * an accepted request has a finite power in (0, 350] kW, a finite energy
//!   in (0, 200] kWh and a vehicle id of at most 128 bytes, and the defaults
//!   apply to missing fields;
//! * what one hop accepts, the next hop accepts: `to_request`, encoded and
//!   decoded again, validates, to the same request up to a few ULP per
//!   number (see `MAX_DRIFT_ULPS`: bit-exact forwarding does not hold with
//!   serde_json's default float parsing);
//! * whatever decodes re-encodes and decodes to the same request (same
//!   tolerance).

#![no_main]

use causal_grid::grid::request::{
    ChargeRequest, ValidRequest, DEFAULT_ENERGY_KWH, DEFAULT_POWER_KW, MAX_ENERGY_KWH,
    MAX_POWER_KW, MAX_VEHICLE_ID_LEN,
};
use libfuzzer_sys::fuzz_target;

/// How far apart, in units in the last place, a number may come back.
/// serde_json's default float parser (without its `float_roundtrip`
/// feature) is not correctly rounded, so the shortest representation it
/// writes can read back a little off: 2 ULP is the most seen (e.g.
/// `9.999999999999999e-244` comes back as `1.0000000000000001e-243`).
const MAX_DRIFT_ULPS: u64 = 4;

fn close(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
        || (a.is_finite()
            && b.is_finite()
            && a.is_sign_positive() == b.is_sign_positive()
            && a.to_bits().abs_diff(b.to_bits()) <= MAX_DRIFT_ULPS)
}

fn close_opt(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => close(a, b),
        _ => false,
    }
}

fn close_valid(a: &ValidRequest, b: &ValidRequest) -> bool {
    a.vehicle_id == b.vehicle_id
        && close(a.power_kw, b.power_kw)
        && close(a.energy_kwh, b.energy_kwh)
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<ChargeRequest>(data) else {
        return;
    };

    let encoded = serde_json::to_vec(&req).expect("a decoded request encodes");
    let again: ChargeRequest = serde_json::from_slice(&encoded).unwrap_or_else(|e| {
        panic!(
            "{:?} does not decode: {e}",
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(again.vehicle_id, req.vehicle_id);
    assert!(
        close_opt(again.power_kw, req.power_kw) && close_opt(again.energy_kwh, req.energy_kwh),
        "{req:?} -> {} -> {again:?}",
        String::from_utf8_lossy(&encoded)
    );

    let Ok(valid) = req.validate() else {
        return;
    };
    assert!(valid.power_kw.is_finite() && valid.power_kw > 0.0 && valid.power_kw <= MAX_POWER_KW);
    assert!(
        valid.energy_kwh.is_finite()
            && valid.energy_kwh > 0.0
            && valid.energy_kwh <= MAX_ENERGY_KWH
    );
    assert!(valid
        .vehicle_id
        .as_ref()
        .is_none_or(|id| id.len() <= MAX_VEHICLE_ID_LEN));
    assert_eq!(valid.vehicle_id, req.vehicle_id);
    assert_eq!(
        valid.power_kw.to_bits(),
        req.power_kw.unwrap_or(DEFAULT_POWER_KW).to_bits()
    );
    assert_eq!(
        valid.energy_kwh.to_bits(),
        req.energy_kwh.unwrap_or(DEFAULT_ENERGY_KWH).to_bits()
    );
    assert!(valid.power_w().is_finite() && valid.power_w() > 0.0);

    let forwarded = serde_json::to_vec(&valid.to_request()).expect("encodes");
    let next: ChargeRequest = serde_json::from_slice(&forwarded).expect("the next hop decodes");
    let revalidated = next.validate().unwrap_or_else(|e| {
        panic!(
            "{valid:?} forwarded as {} is refused by the next hop: {e}",
            String::from_utf8_lossy(&forwarded)
        )
    });
    assert!(
        close_valid(&revalidated, &valid),
        "{valid:?} forwarded as {} became {revalidated:?}",
        String::from_utf8_lossy(&forwarded)
    );
});
