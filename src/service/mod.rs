//! Composition roots: each service's configuration, actors, routes and
//! server, put together.
//!
//! A service module holds its `Config` (read from the environment by
//! `from_env()`, which documents every variable and its default) and a
//! `start` that must run inside an actix `System`: it creates the service's
//! Prometheus registry and actors, builds the `App` around the `configure`
//! function of `http`, binds `listen_addr` (which may be `127.0.0.1:0`) and
//! returns the running server. Each instance has its own registry, so
//! several services can share a process (tests, the local `cluster`).
//!
//! | module | service | actors started | routes |
//! |---|---|---|---|
//! | [`kv`] | `kv_node` | `KvNode` (clock, store, buffer, replicators) | `http::kv` |
//! | [`substation`] | `substation` | `ChargerActor` | `http::grid::substation` |
//! | [`balancer`] | `load_balancer` | `LoadPollerActor`, `RouterActor` | `http::grid::balancer` |
//! | [`entry`] | `charge_request` | none (a `BalancerClient` per worker) | `http::grid::entry` |
//!
//! Also here: the environment helpers ([`env`](mod@env)), the server wrapper
//! ([`server`]) and what every binary does first (`--health-check`, exiting
//! on a bad configuration). This is the top of the dependency order: it may
//! use every other module, and only the binaries and tests use it.

pub mod balancer;
pub mod entry;
pub mod env;
pub mod kv;
pub mod server;
pub mod substation;

pub use server::{shutdown_signal, spawn_server, spawn_server_on, wait_for_shutdown, Running};

use crate::error::{Error, Result};

/// Handles a binary's probe flags: `--health-check` probes `/health`
/// (liveness: the process serves HTTP) and `--ready-check` probes `/ready`
/// (readiness: a KV node serves `/get` and `/put`), on `LISTEN_ADDR`'s port
/// (or `default_listen`), then exits 0 or 1. Only `LISTEN_ADDR` is read, so
/// the checks work with the rest unset.
pub fn handle_health_check_flag(service: &str, default_listen: &str) {
    let path = match std::env::args().find(|a| a == "--health-check" || a == "--ready-check") {
        Some(flag) if flag == "--ready-check" => "/ready",
        Some(_) => "/health",
        None => return,
    };
    let listen = env::var("LISTEN_ADDR").unwrap_or_else(|| default_listen.to_string());
    match probe(&listen, path) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{service}: {path}: {e}");
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

/// `--health-check` and `--ready-check`: Ok if the service on `listen_addr`
/// answers `GET path` with 200. Used by container health checks (the runtime
/// image has no curl), so it needs nothing but the standard library.
pub fn probe(listen_addr: &str, path: &str) -> Result<()> {
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
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(Error::unavailable)?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(Error::unavailable)?;
    if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200" {
        Ok(())
    } else {
        Err(Error::unavailable(format!(
            "not 200: {}",
            String::from_utf8_lossy(&head)
        )))
    }
}
