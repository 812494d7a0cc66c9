//! Routes of the `load_balancer` service: `POST /route`, `POST /route/batch`
//! (the entry service's batches, `wire::batch`), `GET /status`.
//!
//! `service::balancer` starts the `LoadPollerActor` and the `RouterActor`
//! these handlers talk to.

use actix::Addr;
use actix_web::{web, HttpResponse};

use crate::actors::grid::messages::{GetStatus, Route};
use crate::actors::grid::RouterActor;
use futures_util::future::join_all;

use super::{batch_answer, batch_items, MAX_BATCH_BODY_BYTES};
use crate::error::Result;
use crate::grid::ChargeRequest;
use crate::http::error::json_config;
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

/// `POST /route/batch`: every request routed as `POST /route` would, all at
/// once (the router interleaves them), answered in order.
async fn route_batch(
    router: web::Data<Addr<RouterActor>>,
    body: web::Json<Vec<ChargeRequest>>,
) -> Result<HttpResponse> {
    let routed = batch_items(body)?.into_iter().map(|req| {
        let router = router.clone();
        async move { router.send(Route(req.validate()?)).await? }
    });
    let answers: Vec<_> = join_all(routed)
        .await
        .into_iter()
        .map(batch_answer)
        .collect();
    Ok(HttpResponse::Ok().json(answers))
}

/// `GET /status`.
async fn status(router: web::Data<Addr<RouterActor>>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(router.send(GetStatus).await?))
}

/// Routes of the balancer; needs `Addr<RouterActor>` and `Registry` data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/route", web::post().to(route))
        .service(
            web::resource("/route/batch")
                .app_data(json_config(MAX_BATCH_BODY_BYTES))
                .route(web::post().to(route_batch)),
        )
        .route("/status", web::get().to(status))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics_endpoint));
}
