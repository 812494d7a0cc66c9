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
//! | [`causal`] | pure core of the store: vector clocks, delivery buffer, versioned store, replication log, causal contexts | no |
//! | [`grid`] | pure core of the grid: charging sessions, routing policy, load view | no |
//! | [`actors`] | thin actors wrapping the cores, and their typed messages | yes |
//! | [`http`] | handlers that translate HTTP to messages, wire types, peer clients | yes |
//! | [`config`], [`error`], [`metrics`] | shared plumbing | no |
//!
//! The cores are plain synchronous state machines, tested without a network;
//! actors own one core object each; HTTP handlers only translate.

pub mod actors;
pub mod auth;
pub mod causal;
pub mod config;
pub mod error;
pub mod grid;
pub mod http;
pub mod metrics;
pub mod storage;

pub use error::{Error, Result};
