//! Routes of the `charge_request` service: the public `POST /request_charge`.
//!
//! Validates, forwards to the balancer with bounded timeouts (a
//! `net::grid::BalancerClient` per worker, started by `service::entry`), and
//! returns its answer. When the balancer cannot be reached the caller gets a
//! 503 with `Retry-After` at once, never a hang.

use std::time::Instant;

use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};

use crate::actors::grid::metrics::EntryMetrics;
use crate::error::Result;
use crate::grid::ChargeRequest;
use crate::http::{health, metrics_endpoint};
use crate::net::grid::BalancerClient;

/// `POST /request_charge`. The outcome is recorded here, where the request
/// ends: the client in `net` knows nothing of metrics.
async fn request_charge(
    balancer: web::Data<BalancerClient>,
    metrics: web::Data<EntryMetrics>,
    body: web::Json<ChargeRequest>,
) -> Result<HttpResponse> {
    let start = Instant::now();
    let (outcome, result) = balancer.request_charge(&body).await;
    metrics.record(outcome, start.elapsed().as_secs_f64());
    // The balancer's grant, passed on as it came (JSON).
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(result?))
}

/// Routes of the entry service; needs `BalancerClient`, `EntryMetrics` and
/// `Registry` data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/request_charge", web::post().to(request_charge))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics_endpoint));
}
