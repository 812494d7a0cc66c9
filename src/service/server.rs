//! Running an HTTP server: binding, spawning, stopping on a signal.
//!
//! `spawn_server` binds an address (which may be `127.0.0.1:0`), spawns the
//! server on the current actix system and returns a [`Running`] that knows
//! where it listens and how to stop it. `signals` is false when several
//! services share one process (tests, the local `cluster`), which then
//! handles Ctrl-C itself; a binary passes true and waits with
//! [`wait_for_shutdown`].
//!
//! `HTTP_WORKERS` sets the number of worker threads of every server.
//!
//! Shutdown is graceful: the server stops accepting, finishes the requests
//! in flight (up to 10 s), then the caller flushes what it must.

use std::net::SocketAddr;

use super::env;
use crate::error::{Error, Result};

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

/// `HTTP_WORKERS`: HTTP worker threads of every server in the process;
/// unset, one per core (actix's default). Each worker serves its own
/// connections with its own copy of the app (and of per-worker clients).
/// On a small machine shared with other processes, fewer workers than cores
/// costs less CPU per request (docs/grid-performance.md).
pub fn http_workers() -> Result<Option<usize>> {
    match env::parse_or::<usize>("HTTP_WORKERS", 0)? {
        0 if env::var("HTTP_WORKERS").is_some() => {
            Err(Error::config("HTTP_WORKERS must be at least 1"))
        }
        0 => Ok(None),
        n => Ok(Some(n)),
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
    // EXPERIMENT
    if let Some(n) = std::env::var("HTTP_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        server = server.workers(n);
    }
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

/// Waits for Ctrl-C or SIGTERM, then stops `running` gracefully.
/// Binaries call this after `start(cfg, true)`; the server also reacts to
/// the signal itself, and a second stop is harmless.
pub async fn wait_for_shutdown(running: Running) {
    shutdown_signal().await;
    log::info!("shutting down");
    running.stop().await;
}
