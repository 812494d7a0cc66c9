//! The `load_balancer` service: configuration from the environment, and
//! start-up (a `LoadPollerActor` and a `RouterActor` behind the routes of
//! `http::grid::balancer`, both on the first HTTP worker's thread).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::{web, App, HttpServer};
use prometheus::Registry;

use super::env;
use super::server::{spawn_server, Running};
use crate::actors::grid::messages::{AttachPoller, PollTiming};
use crate::actors::grid::metrics::BalancerMetrics;
use crate::actors::grid::poller::Discovery;
use crate::actors::grid::{LoadPollerActor, RouterActor};
use crate::auth::BearerToken;
use crate::error::{Error, Result};
use crate::grid::router::DEFAULT_MAX_MOVES;
use crate::http::error::{json_config, not_found};
use crate::http::grid::balancer::configure;
use crate::http::grid::MAX_BODY_BYTES;
use crate::http::RecordHttp;
use crate::metrics::HttpMetrics;
use crate::net::batch::BatchConfig;
use crate::net::dns::{parse_target, parse_targets, system_resolver, DnsSource, Resolver, Target};
use crate::net::grid::build_client;

/// Largest `BALANCER_MAX_MOVES`.
pub const MAX_MOVES_LIMIT: usize = 64;

/// Connect timeout towards a substation.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Deadline of one forwarded request to a substation.
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(1000);

/// Configuration of the balancer.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerConfig {
    /// `LISTEN_ADDR`, default `0.0.0.0:7000`.
    pub listen_addr: String,
    /// `SUBSTATIONS`, required: comma-separated base URLs
    /// (`http://host:port`) or DNS names (`dns+http://name:port`: every
    /// address of the name is a substation on that port, resolved again at
    /// every poll).
    pub substations: Vec<String>,
    /// `POLL_INTERVAL_MS`, default 1000.
    pub poll_interval: Duration,
    /// Seed of the tie-breaking generator (random unless set by a test).
    pub seed: Option<u64>,
    /// `FORWARD_BATCH_MAX`, `FORWARD_BATCHES_IN_FLIGHT`: requests to a
    /// substation that queue behind those in flight go on as one batch.
    pub batch: BatchConfig,
    /// `GRID_ADMIN_TOKEN` (or `GRID_ADMIN_TOKEN_FILE`), the substations'
    /// token: it authorises hand-overs; unset, no session is moved.
    pub admin_token: Option<String>,
    /// `BALANCER_MAX_MOVES`, default 16 (0 to 64): most sessions moved to
    /// make room for one request; 0 never moves one.
    pub max_moves: usize,
}

/// Splits and checks a `SUBSTATIONS` value (base URLs and DNS names).
pub fn parse_substations(raw: &str) -> Result<Vec<String>> {
    parse_targets("SUBSTATIONS", raw)?;
    Ok(raw
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Splits `SUBSTATIONS` entries into listed URLs and DNS sources.
fn split_substations(entries: &[String]) -> (Vec<String>, Vec<DnsSource>) {
    let mut listed = Vec::new();
    let mut dns = Vec::new();
    for e in entries {
        match parse_target(e) {
            Ok(Target::Url(url)) => listed.push(url),
            Ok(Target::Dns(src)) => dns.push(src),
            Err(_) => {} // refused by `parse_substations`
        }
    }
    (listed, dns)
}

impl BalancerConfig {
    /// Reads and checks the environment.
    pub fn from_env() -> Result<Self> {
        let raw: String = env::required("SUBSTATIONS")?;
        let interval_ms: u64 = env::parse_or("POLL_INTERVAL_MS", 1000)?;
        if interval_ms == 0 {
            return Err(Error::config("POLL_INTERVAL_MS must be positive"));
        }
        BalancerConfig {
            listen_addr: env::parse_or("LISTEN_ADDR", "0.0.0.0:7000".to_string())?,
            substations: parse_substations(&raw)?,
            poll_interval: Duration::from_millis(interval_ms),
            seed: None,
            batch: env::batch_config()?,
            admin_token: env::secret("GRID_ADMIN_TOKEN")?,
            max_moves: env::parse_or("BALANCER_MAX_MOVES", DEFAULT_MAX_MOVES)?,
        }
        .checked()
    }

    /// Range checks, naming the variable at fault.
    pub fn checked(self) -> Result<Self> {
        if self.max_moves > MAX_MOVES_LIMIT {
            return Err(Error::config(format!(
                "BALANCER_MAX_MOVES must be 0 to {MAX_MOVES_LIMIT}, got {}",
                self.max_moves
            )));
        }
        if self.admin_token.as_deref() == Some("") {
            return Err(Error::config("GRID_ADMIN_TOKEN must not be empty"));
        }
        Ok(self)
    }

    /// The deadline of one poll: 80% of an interval, within [100 ms, 800 ms],
    /// and never longer than the interval itself.
    ///
    /// That last bound is what ejects a substation that stops answering within
    /// two intervals: a poll is sent at most one interval after it stopped
    /// (or one was already in flight), and that poll fails within one more.
    pub fn poll_timeout(&self) -> Duration {
        self.poll_interval
            .mul_f64(0.8)
            .clamp(Duration::from_millis(100), Duration::from_millis(800))
            .min(self.poll_interval)
    }
}

/// What starting the router and its poller takes.
#[derive(Clone)]
struct RouterParts {
    listed: Vec<String>,
    sources: Vec<DnsSource>,
    resolver: Resolver,
    metrics: BalancerMetrics,
    poll_interval: Duration,
    timing: PollTiming,
    seed: u64,
    instance: String,
    batch: BatchConfig,
    admin_token: Option<BearerToken>,
    max_moves: usize,
}

impl RouterParts {
    /// Starts the `RouterActor` and the `LoadPollerActor` on this thread.
    fn start(&self) -> Addr<RouterActor> {
        let router = RouterActor::new(
            self.listed.clone(),
            build_client(CONNECT_TIMEOUT, FORWARD_TIMEOUT),
            self.metrics.clone(),
            self.poll_interval,
            self.seed,
        )
        .with_instance(self.instance.clone())
        .with_batching(self.batch)
        .with_moves(self.admin_token.as_ref(), self.max_moves)
        .start();
        let poller = LoadPollerActor::new(
            &self.listed,
            build_client(CONNECT_TIMEOUT, self.timing.timeout),
            router.clone().recipient(),
            router.clone().recipient(),
            self.timing,
            self.metrics.clone(),
        )
        .with_discovery(Discovery {
            sources: self.sources.clone(),
            resolver: self.resolver.clone(),
            joined: router.clone().recipient(),
            left: router.clone().recipient(),
        })
        .start();
        router.do_send(AttachPoller(poller.recipient()));
        router
    }
}

/// Starts the balancer (inside a running actix System).
pub fn start(cfg: BalancerConfig, signals: bool) -> Result<Running> {
    start_with_resolver(cfg, signals, system_resolver())
}

/// Like `start`, resolving `dns+http://` names with `resolver` (tests make
/// substations join and leave with it).
pub fn start_with_resolver(
    cfg: BalancerConfig,
    signals: bool,
    resolver: Resolver,
) -> Result<Running> {
    let (listed, sources) = split_substations(&cfg.substations);
    let registry = Registry::new();
    let metrics = BalancerMetrics::new(&registry)?;
    let http_metrics = HttpMetrics::new(&registry, "lb")?;
    let parts = RouterParts {
        listed,
        sources,
        resolver,
        metrics,
        poll_interval: cfg.poll_interval,
        timing: PollTiming {
            interval: cfg.poll_interval,
            timeout: cfg.poll_timeout(),
        },
        seed: cfg.seed.unwrap_or_else(rand::random),
        instance: env::host_name().unwrap_or_else(|| cfg.listen_addr.clone()),
        batch: cfg.batch,
        admin_token: cfg.admin_token.clone().map(BearerToken::new).transpose()?,
        max_moves: cfg.max_moves,
    };
    if parts.admin_token.is_none() && cfg.max_moves > 0 {
        log::info!("GRID_ADMIN_TOKEN is not set: no session will be moved to make room");
    }
    // The router and the poller start on the first HTTP worker's thread, the
    // first time the server builds an App: requests served by that worker
    // reach the router without crossing threads (with HTTP_WORKERS=1, none
    // do), which saves about a tenth of the balancer's CPU per request
    // (docs/grid-performance.md). Other workers share its address. A worker
    // that replaces a failed one starts them again if they stopped with it;
    // the new router learns the substations from its first polls.
    let slot: Arc<Mutex<Option<Addr<RouterActor>>>> = Arc::default();
    let registry = web::Data::new(registry);
    let server = HttpServer::new(move || {
        let router = {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref().filter(|r| r.connected()) {
                Some(router) => router.clone(),
                None => slot.insert(parts.start()).clone(),
            }
        };
        App::new()
            .app_data(web::Data::new(router))
            .app_data(registry.clone())
            .app_data(json_config(MAX_BODY_BYTES))
            .wrap(RecordHttp(http_metrics.clone()))
            .configure(configure)
            .default_service(web::to(not_found))
    });
    let running = spawn_server(server, &cfg.listen_addr, signals)?;
    log::info!(
        "load balancer listening on {} over {} SUBSTATIONS entries",
        running.addr,
        cfg.substations.len()
    );
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substation_list_is_checked() {
        assert_eq!(
            parse_substations(" http://a:1/, http://b:2 ,").unwrap(),
            vec!["http://a:1".to_string(), "http://b:2".to_string()]
        );
        assert!(parse_substations(" , ").is_err());
        assert!(parse_substations("a:1").is_err());
        let both = parse_substations("http://a:1,dns+http://tasks.substation:8000").unwrap();
        let (listed, dns) = split_substations(&both);
        assert_eq!(listed, vec!["http://a:1".to_string()]);
        assert_eq!(
            dns,
            vec![DnsSource {
                host: "tasks.substation".into(),
                port: 8000
            }]
        );
        for bad in [
            "dns+http://name",
            "dns+http://:80",
            "dns+http://n:port",
            "dns+http://a/b:1",
        ] {
            assert!(parse_substations(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_poll_never_outlives_its_interval() {
        for ms in [1, 10, 50, 99, 100, 125, 200, 1000, 5000, 60_000] {
            let cfg = BalancerConfig {
                listen_addr: "127.0.0.1:0".into(),
                substations: vec!["http://a:1".into()],
                poll_interval: Duration::from_millis(ms),
                seed: None,
                batch: BatchConfig::DEFAULT,
                admin_token: None,
                max_moves: DEFAULT_MAX_MOVES,
            };
            let t = cfg.poll_timeout();
            assert!(t <= cfg.poll_interval, "{ms} ms: timeout {t:?}");
            assert!(t <= Duration::from_millis(800), "{ms} ms: timeout {t:?}");
            assert!(t >= Duration::from_millis(ms.min(100)), "{ms} ms: {t:?}");
        }
    }
}
