//! Routes of the `load_balancer` service: `POST /route`, `GET /status`.
//!
//! `service::balancer` starts the `LoadPollerActor` and the `RouterActor`
//! these handlers talk to.

use actix::Addr;
use actix_web::{web, HttpResponse};

use crate::actors::grid::messages::{GetStatus, Route};
use crate::actors::grid::RouterActor;
use crate::error::Result;
use crate::grid::ChargeRequest;
use crate::http::{health, metrics_endpoint};

/// `POST /route`.
async fn route(
    router: web::Data<Addr<RouterActor>>,
    body: web::Json<ChargeRequest>,
) -> Result<HttpResponse> {
    let req = body.validate()?;
    let granted = router.send(Route(req)).await??;
    Ok(HttpResponse::Ok().json(granted))
}

/// `GET /status`.
async fn status(router: web::Data<Addr<RouterActor>>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(router.send(GetStatus).await?))
}

/// Routes of the balancer; needs `Addr<RouterActor>` and `Registry` data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/route", web::post().to(route))
        .route("/status", web::get().to(status))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics_endpoint));
}
