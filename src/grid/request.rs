//! Charge requests and grants: the wire types every grid service shares.
//!
//! One definition serves the entry service, the balancer and the substation,
//! so the three cannot drift apart. `ChargeRequest` is what a client sends
//! (every field optional, with documented defaults); `validate` turns it into
//! a `ValidRequest` whose numbers are known to be in range, which is the only
//! form the session model and the router accept.

use serde::{Deserialize, Serialize};

use super::session::SessionInfo;
use crate::error::{Error, Result};

/// Power used when a request omits `power_kw` (a fast DC charger).
pub const DEFAULT_POWER_KW: f64 = 50.0;
/// Energy used when a request omits `energy_kwh` (36 simulated minutes at the default power).
pub const DEFAULT_ENERGY_KWH: f64 = 30.0;
/// Upper bound for `power_kw` (the fastest public chargers).
pub const MAX_POWER_KW: f64 = 350.0;
/// Upper bound for `energy_kwh` (a large battery from empty).
pub const MAX_ENERGY_KWH: f64 = 200.0;
/// Longest accepted `vehicle_id`, so logs and bodies stay small.
pub const MAX_VEHICLE_ID_LEN: usize = 128;

/// `POST /request_charge`, `/route` and `/charge` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    /// Free-form vehicle identifier, echoed in logs only (never a metric label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vehicle_id: Option<String>,
    /// Requested charging power in kW, in (0, 350]; default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_kw: Option<f64>,
    /// Energy to deliver in kWh, in (0, 200]; default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_kwh: Option<f64>,
    /// The least power the vehicle accepts while others share the
    /// substation, kW, in (0, power_kw]; default `power_kw` (never curtailed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_power_kw: Option<f64>,
}

/// A request whose fields are present and in range.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    /// Vehicle identifier, if the client gave one.
    pub vehicle_id: Option<String>,
    /// Charging power in kW.
    pub power_kw: f64,
    /// Energy to deliver in kWh.
    pub energy_kwh: f64,
    /// The least power the session accepts, kW (`<= power_kw`).
    pub min_power_kw: f64,
}

impl ValidRequest {
    /// Power in watts, the unit of every metric and of the router.
    pub fn power_w(&self) -> f64 {
        self.power_kw * 1000.0
    }

    /// Minimum power in watts.
    pub fn min_power_w(&self) -> f64 {
        self.min_power_kw * 1000.0
    }

    /// A request for `power_kw` and `energy_kwh` that is never curtailed.
    pub fn fixed(power_kw: f64, energy_kwh: f64) -> Self {
        ValidRequest {
            vehicle_id: None,
            power_kw,
            energy_kwh,
            min_power_kw: power_kw,
        }
    }

    /// Back to the wire form with every field filled in.
    pub fn to_request(&self) -> ChargeRequest {
        ChargeRequest {
            vehicle_id: self.vehicle_id.clone(),
            power_kw: Some(self.power_kw),
            energy_kwh: Some(self.energy_kwh),
            min_power_kw: Some(self.min_power_kw),
        }
    }
}

impl ChargeRequest {
    /// Applies defaults and checks ranges; `InvalidInput` names the field.
    pub fn validate(&self) -> Result<ValidRequest> {
        let power_kw = self.power_kw.unwrap_or(DEFAULT_POWER_KW);
        let energy_kwh = self.energy_kwh.unwrap_or(DEFAULT_ENERGY_KWH);
        // `!(x > 0)` also rejects NaN, which serde_json never produces but a
        // caller constructing the struct might.
        if !(power_kw > 0.0 && power_kw <= MAX_POWER_KW) {
            return Err(Error::invalid(format!(
                "power_kw must be in (0, {MAX_POWER_KW}], got {power_kw}"
            )));
        }
        if !(energy_kwh > 0.0 && energy_kwh <= MAX_ENERGY_KWH) {
            return Err(Error::invalid(format!(
                "energy_kwh must be in (0, {MAX_ENERGY_KWH}], got {energy_kwh}"
            )));
        }
        let min_power_kw = self.min_power_kw.unwrap_or(power_kw);
        if !(min_power_kw > 0.0 && min_power_kw <= power_kw) {
            return Err(Error::invalid(format!(
                "min_power_kw must be in (0, power_kw = {power_kw}], got {min_power_kw}"
            )));
        }
        if let Some(id) = &self.vehicle_id {
            if id.len() > MAX_VEHICLE_ID_LEN {
                return Err(Error::invalid(format!(
                    "vehicle_id longer than {MAX_VEHICLE_ID_LEN} bytes"
                )));
            }
        }
        Ok(ValidRequest {
            vehicle_id: self.vehicle_id.clone(),
            power_kw,
            energy_kwh,
            min_power_kw,
        })
    }
}

/// 200 body of `/charge`, `/route` and `/request_charge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeGranted {
    /// Unique within the substation, prefixed with its id.
    pub session_id: String,
    /// The substation that admitted the session.
    pub substation: String,
    /// Power granted at admission, kW: in [min_power_kw, requested_power_kw].
    /// It changes as other sessions come and go (`GET /sessions/{id}`).
    pub power_kw: f64,
    /// Power the request asked for, kW.
    #[serde(default)]
    pub requested_power_kw: f64,
    /// The least power the session accepts, kW.
    #[serde(default)]
    pub min_power_kw: f64,
    /// Energy the session will deliver, kWh.
    pub energy_kwh: f64,
    /// Estimated real seconds until the session ends and frees its power,
    /// at the power granted now (it ends when its energy is delivered).
    pub ends_in_s: f64,
    /// The substation's admission sequence number (its
    /// `substation_sessions_started_total` right after this admission), so
    /// the balancer can tell exactly whether a poll already counted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `GET /sessions/{id}` and `POST /sessions/{id}/handover` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub session_id: String,
    pub substation: String,
    /// `charging`, `curtailed`, `paused`, `done` or `moved`.
    pub state: String,
    pub power_kw: f64,
    pub requested_power_kw: f64,
    pub min_power_kw: f64,
    pub energy_kwh: f64,
    pub delivered_kwh: f64,
    /// Estimated real seconds to the end at the current power; `null` while paused.
    pub ends_in_s: Option<f64>,
}

impl SessionStatus {
    /// Session `s` of `substation`, in the units of the wire.
    pub fn new(substation: &str, s: &SessionInfo) -> Self {
        SessionStatus {
            session_id: format!("{substation}-{}", s.seq),
            substation: substation.to_string(),
            state: s.state.name().to_string(),
            power_kw: s.power_w / 1000.0,
            requested_power_kw: s.requested_w / 1000.0,
            min_power_kw: s.min_w / 1000.0,
            energy_kwh: s.energy_j / 3.6e6,
            delivered_kwh: s.delivered_j / 3.6e6,
            ends_in_s: s.ends_in_s,
        }
    }
    /// The rest of a session handed over (`POST /sessions/{id}/handover`),
    /// as the request that continues it on another substation: the same
    /// power and minimum, and the energy still to deliver. `None` if nothing
    /// is left to deliver.
    pub fn continuation(&self) -> Option<ChargeRequest> {
        let left = self.energy_kwh - self.delivered_kwh;
        (left > 1e-9).then(|| ChargeRequest {
            vehicle_id: None,
            power_kw: Some(self.requested_power_kw),
            energy_kwh: Some(left.min(MAX_ENERGY_KWH)),
            min_power_kw: Some(self.min_power_kw),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_ranges_are_enforced() {
        let ok = ChargeRequest::default().validate().unwrap();
        assert_eq!(ok.power_kw, DEFAULT_POWER_KW);
        assert_eq!(ok.energy_kwh, DEFAULT_ENERGY_KWH);
        assert_eq!(
            ok.min_power_kw, DEFAULT_POWER_KW,
            "the minimum defaults to the request"
        );
        for (p, e) in [
            (0.0, 1.0),
            (-1.0, 1.0),
            (351.0, 1.0),
            (10.0, 0.0),
            (10.0, 201.0),
        ] {
            let req = ChargeRequest {
                vehicle_id: None,
                power_kw: Some(p),
                energy_kwh: Some(e),
                min_power_kw: None,
            };
            assert!(req.validate().is_err(), "{p} {e} accepted");
        }
        let edge = ChargeRequest {
            vehicle_id: Some("ev".into()),
            power_kw: Some(350.0),
            energy_kwh: Some(200.0),
            min_power_kw: Some(0.001),
        };
        assert!(edge.validate().is_ok());
        for min in [0.0, -1.0, 50.5, f64::NAN] {
            let req = ChargeRequest {
                power_kw: Some(50.0),
                min_power_kw: Some(min),
                ..ChargeRequest::default()
            };
            assert!(req.validate().is_err(), "min {min} accepted");
        }
        let curtailable = ChargeRequest {
            power_kw: Some(150.0),
            min_power_kw: Some(50.0),
            ..ChargeRequest::default()
        };
        assert_eq!(curtailable.validate().unwrap().min_power_w(), 50_000.0);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: std::result::Result<ChargeRequest, _> = serde_json::from_str(r#"{"power_kW": 10}"#);
        assert!(r.is_err());
    }
}
