//! The HTTP layer: thin handlers, wire types, clients and error mapping.
//!
//! Handlers extract, send one message to an actor, await, and map the result;
//! they make no decisions. This module holds what every service shares:
//! `/health`, `/metrics`, request metrics, JSON error handling and a small
//! server wrapper that binds ephemeral ports for tests.

pub mod auth;
pub mod error;
pub mod grid;
pub mod kv;

use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{web, HttpResponse};
use futures_util::future::LocalBoxFuture;
use prometheus::Registry;

use crate::error::{Error, Result};
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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                log::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A running HTTP server: where it listens and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: actix_web::dev::ServerHandle,
    task: actix_rt::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Base URL for clients on this machine, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: stop accepting, finish in-flight requests.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    /// Waits until the server has stopped (after a signal or `stop`).
    pub async fn wait(self) -> Result<()> {
        match self.task.await {
            Ok(result) => result.map_err(|e| Error::internal(format!("server failed: {e}"))),
            Err(e) => Err(Error::internal(format!("server task failed: {e}"))),
        }
    }
}

/// Binds `server` and spawns it on the current actix system.
///
/// `signals` is false when several services share a process (tests, the
/// local `cluster`), which then handles Ctrl-C itself.
pub fn spawn_server<F, I, S, B>(
    server: actix_web::HttpServer<F, I, S, B>,
    listen: &str,
    signals: bool,
) -> Result<Running>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_web::dev::ServiceFactory<actix_http::Request, Config = actix_web::dev::AppConfig>
        + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>> + 'static,
    S::Future: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| Error::config(format!("cannot listen on {listen}: {e}")))?;
    spawn_server_on(server, listener, signals)
}

/// Like `spawn_server`, on a listener bound beforehand (tests bind
/// `127.0.0.1:0` first so that every node knows every port before any
/// starts).
pub fn spawn_server_on<F, I, S, B>(
    server: actix_web::HttpServer<F, I, S, B>,
    listener: std::net::TcpListener,
    signals: bool,
) -> Result<Running>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_web::dev::ServiceFactory<actix_http::Request, Config = actix_web::dev::AppConfig>
        + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>> + 'static,
    S::Future: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let mut server = server.shutdown_timeout(10);
    if !signals {
        server = server.disable_signals();
    }
    let addr = listener
        .local_addr()
        .map_err(|e| Error::config(format!("listener has no address: {e}")))?;
    let server = server
        .listen(listener)
        .map_err(|e| Error::config(format!("cannot listen on {addr}: {e}")))?;
    let server = server.run();
    let handle = server.handle();
    let task = actix_rt::spawn(server);
    Ok(Running { addr, handle, task })
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
        }))
    }
}

pub struct RecordHttpService<S> {
    service: S,
    metrics: HttpMetrics,
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
        // The matched pattern keeps the label bounded (never a raw path).
        let route = req
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        let metrics = self.metrics.clone();
        let fut = self.service.call(req);
        Box::pin(async move {
            let res = fut.await;
            let status = match &res {
                Ok(r) => r.status().as_u16(),
                Err(e) => e.as_response_error().status_code().as_u16(),
            };
            metrics
                .requests
                .with_label_values(&[&route, &status.to_string()])
                .inc();
            metrics
                .duration
                .with_label_values(&[&route])
                .observe(start.elapsed().as_secs_f64());
            res
        })
    }
}

/// Handles a binary's `--health-check` flag: if present, probes `/health` on
/// `LISTEN_ADDR`'s port (or `default_listen`) and exits 0 or 1. Only
/// `LISTEN_ADDR` is read, so the check works with the rest unset.
pub fn handle_health_check_flag(service: &str, default_listen: &str) {
    if !std::env::args().any(|a| a == "--health-check") {
        return;
    }
    let listen = crate::config::var("LISTEN_ADDR").unwrap_or_else(|| default_listen.to_string());
    match probe_health(&listen) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{service} unhealthy: {e}");
            std::process::exit(1);
        }
    }
}

/// The value, or exit 2 with the error (a bad configuration at start-up).
pub fn or_exit<T>(service: &str, result: Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{service}: {e}");
            std::process::exit(2);
        }
    }
}

/// `--health-check`: exits 0 if the service on `listen_addr` answers
/// `GET /health` with 200. Used by container health checks (the runtime
/// image has no curl), so it needs nothing but the standard library.
pub fn probe_health(listen_addr: &str) -> Result<()> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    let port = listen_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| Error::config(format!("cannot find a port in {listen_addr:?}")))?;
    let target = ("127.0.0.1", port)
        .to_socket_addrs()
        .map_err(Error::unavailable)?
        .next()
        .ok_or_else(|| Error::unavailable("no address"))?;
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(Error::unavailable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(Error::unavailable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(Error::unavailable)?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(Error::unavailable)?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(Error::unavailable)?;
    if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200" {
        Ok(())
    } else {
        Err(Error::unavailable(format!(
            "unhealthy: {}",
            String::from_utf8_lossy(&head)
        )))
    }
}
