//! The `charge_request` service: configuration from the environment, and
//! start-up (a `BalancerClient` per worker behind the routes of
//! `http::grid::entry`; this service has no actors).

use std::time::Duration;

use actix_web::{web, App, HttpServer};
use prometheus::Registry;

use super::env;
use super::server::{spawn_server, Running};
use crate::actors::grid::metrics::EntryMetrics;
use crate::error::Result;
use crate::http::error::{json_config, not_found};
use crate::http::grid::entry::configure;
use crate::http::grid::MAX_BODY_BYTES;
use crate::http::RecordHttp;
use crate::metrics::HttpMetrics;
use crate::net::batch::BatchConfig;
use crate::net::dns::{parse_targets, system_resolver, Resolver};
use crate::net::grid::BalancerClient;

/// Connect timeout towards the balancer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Deadline of one request to the balancer (it may retry a few substations).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Configuration of the entry service.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryConfig {
    /// `LISTEN_ADDR`, default `0.0.0.0:6000`.
    pub listen_addr: String,
    /// `LOAD_BALANCER_URL`, default `http://localhost:7000`: one or more
    /// balancers, comma-separated, as base URLs and/or DNS names
    /// (`dns+http://tasks.load_balancer:7000`); requests go round-robin and
    /// fail over to the next when one cannot be reached.
    pub load_balancer_url: String,
    /// `FORWARD_BATCH_MAX`, `FORWARD_BATCHES_IN_FLIGHT`: requests to a
    /// balancer that queue behind those in flight go on as one batch.
    pub batch: BatchConfig,
}

impl EntryConfig {
    /// Reads and checks the environment.
    pub fn from_env() -> Result<Self> {
        let url = env::parse_or("LOAD_BALANCER_URL", "http://localhost:7000".to_string())?;
        parse_targets("LOAD_BALANCER_URL", &url)?;
        Ok(EntryConfig {
            listen_addr: env::parse_or("LISTEN_ADDR", "0.0.0.0:6000".to_string())?,
            load_balancer_url: url,
            batch: env::batch_config()?,
        })
    }
}

/// Starts the entry service (inside a running actix System).
pub fn start(cfg: EntryConfig, signals: bool) -> Result<Running> {
    start_with_resolver(cfg, signals, system_resolver())
}

/// Like `start`, resolving `dns+http://` balancers with `resolver`.
pub fn start_with_resolver(cfg: EntryConfig, signals: bool, resolver: Resolver) -> Result<Running> {
    let targets = parse_targets("LOAD_BALANCER_URL", &cfg.load_balancer_url)?;
    let batch = cfg.batch;
    let registry = Registry::new();
    let metrics = web::Data::new(EntryMetrics::new(&registry)?);
    let http_metrics = HttpMetrics::new(&registry, "charge")?;
    let registry = web::Data::new(registry);
    let server = HttpServer::new(move || {
        App::new()
            // One client per worker, created with the worker's App.
            .app_data(web::Data::new(BalancerClient::new(
                targets.clone(),
                resolver.clone(),
                CONNECT_TIMEOUT,
                REQUEST_TIMEOUT,
                batch,
            )))
            .app_data(metrics.clone())
            .app_data(registry.clone())
            .app_data(json_config(MAX_BODY_BYTES))
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
