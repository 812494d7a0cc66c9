//! HTTP side of the smart grid: the routes of its three services.
//!
//! Each service module holds its handlers and its `configure` function, used
//! by its start-up code in `service` and by tests alike. Configuration and
//! start-up (actors, registry, server) are in `service::{substation,
//! balancer, entry}`; the client that forwards a request one hop is in
//! `net::grid`.
//!
//! * [`substation`]: `POST /charge` and `POST /charge/batch` (the `ChargerActor`).
//! * [`balancer`]: `POST /route`, `POST /route/batch`, `GET /status`
//!   (`LoadPollerActor`, `RouterActor`).
//! * [`entry`]: `POST /request_charge`, the public entry point (`charge_request`).
//!
//! All three serve `GET /health` and `GET /metrics`, and answer every error
//! as `{"error": ...}` (503 with `Retry-After`).

pub mod balancer;
pub mod entry;
pub mod substation;

use actix_web::{web, ResponseError};

use crate::error::{Error, Result};
use crate::grid::{ChargeGranted, ChargeRequest};
use crate::wire::batch::{BatchAnswer, MAX_BATCH_ITEMS};

/// Largest request body a grid service accepts.
pub const MAX_BODY_BYTES: usize = 4096;

/// Largest batch body (`wire::batch`): a full batch of the largest requests.
pub const MAX_BATCH_BODY_BYTES: usize = MAX_BATCH_ITEMS * MAX_BODY_BYTES;

/// The requests of a batch body: 400 when empty, 413 when over
/// `MAX_BATCH_ITEMS`.
fn batch_items(body: web::Json<Vec<ChargeRequest>>) -> Result<Vec<ChargeRequest>> {
    let items = body.into_inner();
    match items.len() {
        0 => Err(Error::invalid("empty batch")),
        n if n > MAX_BATCH_ITEMS => Err(Error::TooLarge(format!(
            "batch of {n} requests, at most {MAX_BATCH_ITEMS}"
        ))),
        _ => Ok(items),
    }
}

/// One request's answer in a batch: the status and error its single
/// request would have been answered with.
fn batch_answer(result: Result<ChargeGranted>) -> BatchAnswer<ChargeGranted> {
    match result {
        Ok(g) => BatchAnswer {
            status: 200,
            grant: Some(g),
            error: None,
        },
        Err(e) => BatchAnswer {
            status: e.status_code().as_u16(),
            grant: None,
            error: Some(e.to_string()),
        },
    }
}
