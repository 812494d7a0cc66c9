//! Routes of the `substation` service: `POST /charge` under a limit that
//! sessions share (and `POST /charge/batch`, the balancer's batches,
//! `wire::batch`), `GET /sessions/{id}`, the balancer's
//! `POST /sessions/{id}/handover` (load transfer) and the operator's
//! `PUT /limit`, the last two behind `GRID_ADMIN_TOKEN`.
//!
//! `service::substation` starts the `ChargerActor` these handlers talk to.

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::Registry;
use serde::{Deserialize, Serialize};

use super::{batch_answer, batch_items, MAX_BATCH_BODY_BYTES};
use crate::actors::grid::messages::{
    GetSession, HandOver, RefreshMetrics, SetLimit, StartCharge, StartCharges,
};
use crate::actors::grid::ChargerActor;
use crate::auth::BearerToken;
use crate::error::{Error, Result};
use crate::grid::{ChargeRequest, SessionStatus};
use crate::http::error::json_config;
use crate::http::{health, metrics_endpoint};

/// Largest limit `PUT /limit` accepts, kW (a large primary substation).
pub const MAX_LIMIT_KW: f64 = 1_000_000.0;

/// The substation's id, as app data (session ids are `<id>-<seq>`).
#[derive(Debug, Clone)]
pub struct SubstationId(pub String);

/// The token of `PUT /limit` and `POST /sessions/{id}/handover`, as app data: `None` when `GRID_ADMIN_TOKEN` is
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

/// The admission number of session `<substation id>-<seq>` of this substation.
fn session_seq(id: &SubstationId, session: &str) -> Result<u64> {
    session
        .strip_prefix(id.0.as_str())
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| Error::NotFound(format!("no session {session} here")))
}

/// `GET /sessions/{id}`: a live session, or one of the last 1024 ended.
async fn session(
    charger: web::Data<Addr<ChargerActor>>,
    id: web::Data<SubstationId>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let seq = session_seq(&id, &path)?;
    let info = charger
        .send(GetSession(seq))
        .await?
        .ok_or_else(|| Error::NotFound(format!("no session {} here", path.as_str())))?;
    Ok(HttpResponse::Ok().json(SessionStatus::new(&id.0, &info)))
}

/// Checks `Authorization: Bearer` against `GRID_ADMIN_TOKEN`; the route
/// `what` is disabled (404) when the variable is unset.
fn authorize(token: &AdminToken, req: &HttpRequest, what: &str) -> Result<()> {
    let token = token.0.as_ref().ok_or_else(|| {
        Error::NotFound(format!("{what} is disabled: GRID_ADMIN_TOKEN is not set"))
    })?;
    token.check(
        req.headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// `POST /sessions/{id}/handover` (load transfer, sent by the balancer):
/// the live session stops here and the answer says how much of its energy
/// was delivered, so another substation can admit the rest. 404 if it is
/// not live here (ended, moved already, unknown) or the route is disabled;
/// 401 without the token.
async fn handover(
    charger: web::Data<Addr<ChargerActor>>,
    id: web::Data<SubstationId>,
    token: web::Data<AdminToken>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    authorize(&token, &req, "POST /sessions/{id}/handover")?;
    let seq = session_seq(&id, &path)?;
    let info = charger
        .send(HandOver(seq))
        .await?
        .ok_or_else(|| Error::NotFound(format!("no live session {} here", path.as_str())))?;
    Ok(HttpResponse::Ok().json(SessionStatus::new(&id.0, &info)))
}

/// `PUT /limit`: 404 unless `GRID_ADMIN_TOKEN` is set, 401 without it.
async fn limit(
    charger: web::Data<Addr<ChargerActor>>,
    token: web::Data<AdminToken>,
    req: HttpRequest,
    body: web::Json<LimitRequest>,
) -> Result<HttpResponse> {
    authorize(&token, &req, "PUT /limit")?;
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
        .route("/sessions/{id}/handover", web::post().to(handover))
        .route("/limit", web::put().to(limit))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics));
}
