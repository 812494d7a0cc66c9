//! The HTTP layer: handlers and the `configure` functions that route to them.
//!
//! Handlers extract, send one message to an actor, await, and map the result;
//! they make no decisions. Each service's routes are registered by one
//! `configure(cfg: &mut web::ServiceConfig)` function, used both by the
//! service's start-up code (`service`) and by tests through
//! `actix_web::test::init_service`. Wire types live in `wire`, clients in
//! `net`, and building the actors and the server in `service`.
//!
//! This module holds what every service shares: `/health`, `/metrics`, the
//! request-metrics middleware ([`RecordHttp`]), the mapping of `Error` to
//! JSON error answers ([`error`]) and the verification of signed peer
//! requests ([`auth`]).

pub mod auth;
pub mod error;
pub mod grid;
pub mod kv;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{web, HttpResponse};
use futures_util::future::LocalBoxFuture;
use prometheus::{Histogram, IntCounter, Registry};

use crate::error::Result;
use crate::metrics::{self, HttpMetrics};

/// `GET /health`: 200 while the server is serving.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /metrics`: the service's registry in Prometheus text format.
pub async fn metrics_endpoint(registry: web::Data<Registry>) -> Result<HttpResponse> {
    let body = metrics::encode(&registry)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}

/// Middleware that records `*_http_requests_total` and latency per route.
#[derive(Clone)]
pub struct RecordHttp(pub HttpMetrics);

impl<S, B> Transform<S, ServiceRequest> for RecordHttp
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RecordHttpService<S>;
    type InitError = ();
    type Future = Ready<std::result::Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RecordHttpService {
            service,
            metrics: self.0.clone(),
            routes: Rc::default(),
        }))
    }
}

pub struct RecordHttpService<S> {
    service: S,
    metrics: HttpMetrics,
    /// Series of the routes whose pattern is their path (no parameters), by
    /// path: a request to one is counted without matching its path against
    /// the routes a second time and without hashing its labels. Holds at
    /// most one entry per such route (other paths are never stored).
    routes: Rc<RefCell<HashMap<String, Rc<RouteSeries>>>>,
}

/// One route's series: its latency and its request counts by status.
struct RouteSeries {
    route: String,
    duration: Histogram,
    by_status: RefCell<Vec<(u16, IntCounter)>>,
}

impl RouteSeries {
    fn new(metrics: &HttpMetrics, route: String) -> Self {
        RouteSeries {
            duration: metrics.duration.with_label_values(&[&route]),
            route,
            by_status: RefCell::new(Vec::new()),
        }
    }

    fn count(&self, metrics: &HttpMetrics, status: u16) {
        let mut by_status = self.by_status.borrow_mut();
        match by_status.iter().find(|(s, _)| *s == status) {
            Some((_, c)) => c.inc(),
            None => {
                let c = metrics
                    .requests
                    .with_label_values(&[&self.route, &status.to_string()]);
                c.inc();
                by_status.push((status, c));
            }
        }
    }
}

impl<S> RecordHttpService<S> {
    fn series(&self, req: &ServiceRequest) -> Rc<RouteSeries> {
        if let Some(s) = self.routes.borrow().get(req.path()) {
            return s.clone();
        }
        // The matched pattern keeps the label bounded (never a raw path).
        let route = req
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        let series = Rc::new(RouteSeries::new(&self.metrics, route));
        if series.route == req.path() {
            self.routes
                .borrow_mut()
                .insert(series.route.clone(), series.clone());
        }
        series
    }
}

impl<S, B> Service<ServiceRequest> for RecordHttpService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, std::result::Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let start = Instant::now();
        let series = self.series(&req);
        let metrics = self.metrics.clone();
        let fut = self.service.call(req);
        Box::pin(async move {
            let res = fut.await;
            let status = match &res {
                Ok(r) => r.status().as_u16(),
                Err(e) => e.as_response_error().status_code().as_u16(),
            };
            series.count(&metrics, status);
            series.duration.observe(start.elapsed().as_secs_f64());
            res
        })
    }
}
