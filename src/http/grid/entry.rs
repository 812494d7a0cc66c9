//! The `charge_request` service: the public `POST /request_charge`.
//!
//! Validates, forwards to the balancer with bounded timeouts, and returns its
//! answer. When the balancer cannot be reached the caller gets a 503 with
//! `Retry-After` at once, never a hang.

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use prometheus::Registry;

use super::client::{build_client, post_charge, Forwarded};
use crate::actors::grid::metrics::EntryMetrics;
use crate::config;
use crate::error::{Error, Result};
use crate::grid::{ChargeGranted, ChargeRequest};
use crate::http::error::{json_config, not_found};
use crate::http::{health, metrics_endpoint, spawn_server, RecordHttp, Running};
use crate::metrics::HttpMetrics;

/// Connect timeout towards the balancer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Deadline of one request to the balancer (it may retry a few substations).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Configuration of the entry service.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryConfig {
    /// `LISTEN_ADDR`, default `0.0.0.0:6000`.
    pub listen_addr: String,
    /// `LOAD_BALANCER_URL`, default `http://localhost:7000`.
    pub load_balancer_url: String,
}

impl EntryConfig {
    /// Reads and checks the environment.
    pub fn from_env() -> Result<Self> {
        let url = config::parse_or("LOAD_BALANCER_URL", "http://localhost:7000".to_string())?;
        if !url.starts_with("http://") {
            return Err(Error::config(format!(
                "LOAD_BALANCER_URL={url:?} must start with http://"
            )));
        }
        Ok(EntryConfig {
            listen_addr: config::parse_or("LISTEN_ADDR", "0.0.0.0:6000".to_string())?,
            load_balancer_url: url.trim_end_matches('/').to_string(),
        })
    }
}

/// The balancer as seen from one worker: its own client, created once.
pub struct BalancerClient {
    client: awc::Client,
    route_url: String,
    metrics: EntryMetrics,
}

impl BalancerClient {
    /// A client for the balancer at `base_url`.
    pub fn new(base_url: &str, metrics: EntryMetrics) -> Self {
        BalancerClient {
            client: build_client(CONNECT_TIMEOUT, REQUEST_TIMEOUT),
            route_url: format!("{base_url}/route"),
            metrics,
        }
    }

    /// Validates and forwards one request, recording its outcome.
    pub async fn request_charge(&self, req: &ChargeRequest) -> Result<ChargeGranted> {
        let start = Instant::now();
        let (outcome, result) = match req.validate() {
            Err(e) => ("invalid", Err(e)),
            Ok(valid) => {
                match post_charge(&self.client, &self.route_url, &valid.to_request()).await {
                    Forwarded::Granted(g) => ("accepted", Ok(g)),
                    Forwarded::Refused(m) => ("rejected", Err(Error::unavailable(m))),
                    Forwarded::Invalid(m) => ("invalid", Err(Error::invalid(m))),
                    Forwarded::Unreachable(m) => (
                        "error",
                        Err(Error::unavailable(format!(
                            "load balancer unreachable: {m}"
                        ))),
                    ),
                    Forwarded::Timeout => (
                        "error",
                        Err(Error::unavailable("load balancer did not answer in time")),
                    ),
                    Forwarded::Failed(m) => ("error", Err(Error::unavailable(m))),
                }
            }
        };
        self.metrics.requests.with_label_values(&[outcome]).inc();
        self.metrics
            .duration
            .with_label_values(&[])
            .observe(start.elapsed().as_secs_f64());
        result
    }
}

/// `POST /request_charge`.
async fn request_charge(
    balancer: web::Data<BalancerClient>,
    body: web::Json<ChargeRequest>,
) -> Result<HttpResponse> {
    let granted = balancer.request_charge(&body).await?;
    Ok(HttpResponse::Ok().json(granted))
}

/// Routes of the entry service; needs `BalancerClient` and `Registry` data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/request_charge", web::post().to(request_charge))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics_endpoint));
}

/// Starts the entry service (inside a running actix System).
pub fn start(cfg: EntryConfig, signals: bool) -> Result<Running> {
    let registry = Registry::new();
    let metrics = EntryMetrics::new(&registry)?;
    let http_metrics = HttpMetrics::new(&registry, "charge")?;
    let registry = web::Data::new(registry);
    let url = cfg.load_balancer_url.clone();
    let server = HttpServer::new(move || {
        App::new()
            // One client per worker, created with the worker's App.
            .app_data(web::Data::new(BalancerClient::new(&url, metrics.clone())))
            .app_data(registry.clone())
            .app_data(json_config(super::MAX_BODY_BYTES))
            .wrap(RecordHttp(http_metrics.clone()))
            .configure(configure)
            .default_service(web::to(not_found))
    });
    let running = spawn_server(server, &cfg.listen_addr, signals)?;
    log::info!(
        "charge_request listening on {}, balancer {}",
        running.addr,
        cfg.load_balancer_url
    );
    Ok(running)
}
