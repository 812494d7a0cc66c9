//! The `substation` service: configuration from the environment, and
//! start-up (a `ChargerActor` behind the routes of `http::grid::substation`).

use std::collections::HashMap;

use actix::Actor;
use actix_web::{web, App, HttpServer};
use prometheus::Registry;

use super::env;
use super::server::{spawn_server, Running};
use crate::actors::grid::metrics::SubstationMetrics;
use crate::actors::grid::ChargerActor;
use crate::auth::BearerToken;
use crate::error::{Error, Result};
use crate::http::error::{json_config, not_found};
use crate::http::grid::substation::{configure, AdminToken, SubstationId};
use crate::http::grid::MAX_BODY_BYTES;
use crate::http::RecordHttp;
use crate::metrics::HttpMetrics;

/// Configuration of one substation.
#[derive(Debug, Clone, PartialEq)]
pub struct SubstationConfig {
    /// `SUBSTATION_ID`, default the host name (so the replicas of one
    /// service are told apart), else `substation1`: the `substation` label.
    pub id: String,
    /// `LISTEN_ADDR`, default `0.0.0.0:8000`.
    pub listen_addr: String,
    /// `CAPACITY_KW`, default 500: the transformer limit.
    pub capacity_kw: f64,
    /// `TIME_SCALE`, default 120: simulated seconds per real second.
    pub time_scale: f64,
    /// `GRID_ADMIN_TOKEN` (or a file named by `GRID_ADMIN_TOKEN_FILE`): the
    /// bearer token of `PUT /limit`; unset disables the route.
    pub admin_token: Option<String>,
}

impl SubstationConfig {
    /// Reads and checks the environment.
    pub fn from_env() -> Result<Self> {
        let cfg = SubstationConfig {
            id: env::var("SUBSTATION_ID")
                .or_else(env::host_name)
                .unwrap_or_else(|| "substation1".into()),
            listen_addr: env::parse_or("LISTEN_ADDR", "0.0.0.0:8000".to_string())?,
            capacity_kw: env::parse_or("CAPACITY_KW", 500.0)?,
            time_scale: env::parse_or("TIME_SCALE", 120.0)?,
            admin_token: env::secret("GRID_ADMIN_TOKEN")?,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Range checks, naming the variable at fault.
    pub fn check(&self) -> Result<()> {
        if !(self.capacity_kw > 0.0 && self.capacity_kw.is_finite()) {
            return Err(Error::config(format!(
                "CAPACITY_KW must be positive, got {}",
                self.capacity_kw
            )));
        }
        if !(self.time_scale > 0.0 && self.time_scale.is_finite()) {
            return Err(Error::config(format!(
                "TIME_SCALE must be positive, got {}",
                self.time_scale
            )));
        }
        if self.admin_token.as_deref() == Some("") {
            return Err(Error::config("GRID_ADMIN_TOKEN must not be empty"));
        }
        if self.id.is_empty() || self.id.len() > 64 {
            return Err(Error::config("SUBSTATION_ID must be 1 to 64 characters"));
        }
        Ok(())
    }
}

/// Starts a substation (inside a running actix System).
pub fn start(cfg: SubstationConfig, signals: bool) -> Result<Running> {
    cfg.check()?;
    let labels = HashMap::from([("substation".to_string(), cfg.id.clone())]);
    let registry = Registry::new_custom(None, Some(labels)).map_err(Error::internal)?;
    let metrics = SubstationMetrics::new(&registry)?;
    let http_metrics = HttpMetrics::new(&registry, "substation")?;
    let charger = ChargerActor::new(
        cfg.id.clone(),
        cfg.capacity_kw * 1000.0,
        cfg.time_scale,
        metrics,
    )
    .start();
    let charger = web::Data::new(charger);
    let registry = web::Data::new(registry);
    let id = web::Data::new(SubstationId(cfg.id.clone()));
    let token = cfg.admin_token.clone().map(BearerToken::new).transpose()?;
    let token = web::Data::new(AdminToken(token));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(charger.clone())
            .app_data(id.clone())
            .app_data(token.clone())
            .app_data(registry.clone())
            .app_data(json_config(MAX_BODY_BYTES))
            .wrap(RecordHttp(http_metrics.clone()))
            .configure(configure)
            .default_service(web::to(not_found))
    });
    let running = spawn_server(server, &cfg.listen_addr, signals)?;
    log::info!("substation {} listening on {}", cfg.id, running.addr);
    Ok(running)
}
