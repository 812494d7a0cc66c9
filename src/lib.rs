//! # causal-grid
//!
//! Two actix actor systems that run as containers side by side:
//!
//! * a **causally consistent, replicated key-value store** (`kv_node`): every
//!   node keeps a vector clock, replicates its writes to every peer as a
//!   reliable ordered stream, and delivers a replicated write only once its
//!   causal dependencies have been delivered. Concurrent writes to one key are
//!   arbitrated by a deterministic total order that extends causality, so
//!   replicas converge (causal+ consistency, as in COPS).
//! * a **smart-grid EV-charging load balancer**: substations simulate charging
//!   sessions under a transformer limit, a balancer polls their Prometheus
//!   metrics and routes each request to the least-utilised one while
//!   accounting for its own dispatches between polls, so it does not herd.
//!
//! ## Module map
//!
//! | module | what it holds | depends on actix? |
//! |---|---|---|
//! | [`causal`] | pure core of the store: vector clocks, delivery buffer, versioned store, replication log, causal contexts, and the node's protocol as one state machine (`causal::node`) | no |
//! | [`grid`] | pure core of the grid: charging sessions, routing policy, load view, its request and grant types, and the load tester's planning and report (`grid::rush`) | no |
//! | [`storage`] | durable state of a KV node: the write log and an embedded database | no |
//! | [`wire`] | serde types that cross the network (KV bodies, `{"error"}` bodies) and checks on `/status` snapshots | no |
//! | [`net`] | HTTP clients (awc): signed peer requests, the KV client API, forwarding a charge request | awc |
//! | [`actors`] | thin actors wrapping the cores, and their typed messages | yes |
//! | [`http`] | handlers and `configure` functions, error mapping, peer authentication, request metrics | yes |
//! | [`service`] | composition roots: each service's `Config::from_env`, start-up of its actors and server | yes |
//! | [`auth`], [`error`], [`metrics`] | shared plumbing: request signing, the error type, Prometheus helpers | no |
//!
//! Dependencies point one way:
//!
//! ```text
//! causal, grid  <-  wire  <-  net  <-  actors  <-  http  <-  service  <-  bin
//! ```
//!
//! and everything may use the shared plumbing. The cores are plain
//! synchronous state machines, tested without a network; actors own one core
//! object each and reach peers through `net`; HTTP handlers only translate;
//! `service` wires actors, routes and server together for the thin binaries
//! in `src/bin/` and for the tests.

pub mod actors;
pub mod auth;
pub mod causal;
pub mod error;
pub mod grid;
pub mod http;
pub mod metrics;
pub mod net;
pub mod service;
pub mod storage;
pub mod wire;

pub use error::{Error, Result};
