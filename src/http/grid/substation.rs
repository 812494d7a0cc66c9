//! Routes of the `substation` service: `POST /charge` under a limit that
//! sessions share (and `POST /charge/batch`, the balancer's batches,
//! `wire::batch`), `GET /sessions/{id}`, and the operator's `PUT /limit`.
//!
//! `service::substation` starts the `ChargerActor` these handlers talk to.

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::Registry;
use serde::{Deserialize, Serialize};

use super::{batch_answer, batch_items, MAX_BATCH_BODY_BYTES};
use crate::actors::grid::messages::{
    GetSession, RefreshMetrics, SetLimit, StartCharge, StartCharges,
};
use crate::actors::grid::ChargerActor;
use crate::auth::BearerToken;
use crate::error::{Error, Result};
use crate::grid::{ChargeRequest, SessionInfo};
use crate::http::error::json_config;
use crate::http::{health, metrics_endpoint};

/// Largest limit `PUT /limit` accepts, kW (a large primary substation).
pub const MAX_LIMIT_KW: f64 = 1_000_000.0;

/// The substation's id, as app data (session ids are `<id>-<seq>`).
#[derive(Debug, Clone)]
pub struct SubstationId(pub String);

/// `PUT /limit`'s token, as app data: `None` when `GRID_ADMIN_TOKEN` is
/// unset, which disables the route.
#[derive(Debug, Clone)]
pub struct AdminToken(pub Option<BearerToken>);

/// `PUT /limit` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// The new limit, kW, in [0, 1e6].
    pub capacity_kw: f64,
}

/// `PUT /limit` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LimitChanged {
    pub capacity_kw: f64,
    pub previous_kw: f64,
}

/// `GET /sessions/{id}` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub session_id: String,
    pub substation: String,
    /// `charging`, `curtailed`, `paused` or `done`.
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
    fn new(substation: &str, s: SessionInfo) -> Self {
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
}

/// `POST /charge`.
async fn charge(
    charger: web::Data<Addr<ChargerActor>>,
    body: web::Json<ChargeRequest>,
) -> Result<HttpResponse> {
    let req = body.validate()?;
    let granted = charger.send(StartCharge(req)).await??;
    Ok(HttpResponse::Ok().json(granted))
}

/// `POST /charge/batch`: the valid requests admitted in order in one actor
/// message, each answered as `POST /charge` would.
async fn charge_batch(
    charger: web::Data<Addr<ChargerActor>>,
    body: web::Json<Vec<ChargeRequest>>,
) -> Result<HttpResponse> {
    let checked: Vec<_> = batch_items(body)?.iter().map(|r| r.validate()).collect();
    let valid = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let mut admitted = charger.send(StartCharges(valid)).await?.into_iter();
    let answers: Vec<_> = checked
        .into_iter()
        .map(|c| match c {
            Ok(_) => admitted
                .next()
                .unwrap_or_else(|| Err(Error::internal("a batch answer is missing"))),
            Err(e) => Err(e),
        })
        .map(batch_answer)
        .collect();
    Ok(HttpResponse::Ok().json(answers))
}

/// `GET /sessions/{id}`: a live session, or one of the last 1024 ended.
async fn session(
    charger: web::Data<Addr<ChargerActor>>,
    id: web::Data<SubstationId>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let unknown = || Error::NotFound(format!("no session {} here", path.as_str()));
    let seq = path
        .strip_prefix(id.0.as_str())
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(unknown)?;
    let info = charger.send(GetSession(seq)).await?.ok_or_else(unknown)?;
    Ok(HttpResponse::Ok().json(SessionStatus::new(&id.0, info)))
}

/// `PUT /limit`: 404 unless `GRID_ADMIN_TOKEN` is set, 401 without it.
async fn limit(
    charger: web::Data<Addr<ChargerActor>>,
    token: web::Data<AdminToken>,
    req: HttpRequest,
    body: web::Json<LimitRequest>,
) -> Result<HttpResponse> {
    let token = token.0.as_ref().ok_or_else(|| {
        Error::NotFound("PUT /limit is disabled: GRID_ADMIN_TOKEN is not set".into())
    })?;
    token.check(
        req.headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )?;
    let kw = body.capacity_kw;
    if !(0.0..=MAX_LIMIT_KW).contains(&kw) {
        return Err(Error::invalid(format!(
            "capacity_kw must be in [0, {MAX_LIMIT_KW}], got {kw}"
        )));
    }
    let previous_w = charger.send(SetLimit(kw * 1000.0)).await?;
    Ok(HttpResponse::Ok().json(LimitChanged {
        capacity_kw: kw,
        previous_kw: previous_w / 1000.0,
    }))
}

/// `GET /metrics`, refreshed first so ended sessions are not reported.
async fn metrics(
    charger: web::Data<Addr<ChargerActor>>,
    registry: web::Data<Registry>,
) -> Result<HttpResponse> {
    charger.send(RefreshMetrics).await?;
    metrics_endpoint(registry).await
}

/// Routes of the substation; needs `Addr<ChargerActor>`, `SubstationId`,
/// `AdminToken` and `Registry` data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/charge", web::post().to(charge))
        .service(
            web::resource("/charge/batch")
                .app_data(json_config(MAX_BATCH_BODY_BYTES))
                .route(web::post().to(charge_batch)),
        )
        .route("/sessions/{id}", web::get().to(session))
        .route("/limit", web::put().to(limit))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics));
}
