//! Routes of the `substation` service: `POST /charge` under a transformer
//! limit.
//!
//! `service::substation` starts the `ChargerActor` these handlers talk to.

use actix::Addr;
use actix_web::{web, HttpResponse};
use prometheus::Registry;

use crate::actors::grid::messages::{RefreshMetrics, StartCharge};
use crate::actors::grid::ChargerActor;
use crate::error::Result;
use crate::grid::ChargeRequest;
use crate::http::{health, metrics_endpoint};

/// `POST /charge`.
async fn charge(
    charger: web::Data<Addr<ChargerActor>>,
    body: web::Json<ChargeRequest>,
) -> Result<HttpResponse> {
    let req = body.validate()?;
    let granted = charger.send(StartCharge(req)).await??;
    Ok(HttpResponse::Ok().json(granted))
}

/// `GET /metrics`, refreshed first so ended sessions are not reported.
async fn metrics(
    charger: web::Data<Addr<ChargerActor>>,
    registry: web::Data<Registry>,
) -> Result<HttpResponse> {
    charger.send(RefreshMetrics).await?;
    metrics_endpoint(registry).await
}

/// Routes of the substation; needs `Addr<ChargerActor>` and `Registry` data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/charge", web::post().to(charge))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics));
}
