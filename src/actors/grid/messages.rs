//! Messages of the grid actors.
//!
//! Handlers send these to `ChargerActor` (substation) and `RouterActor`
//! (balancer); `LoadPollerActor` reports polls to `RouterActor`. Actors depend
//! on this module, not on each other.

use std::time::{Duration, Instant};

use actix::Message;
use serde::Serialize;

use crate::error::Result;
use crate::grid::{ChargeGranted, LoadSample, SubstationView, ValidRequest};

/// Admit a charging session. Sent by the substation's `POST /charge` handler
/// to `ChargerActor`; answered with the grant or `Unavailable` when full.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<ChargeGranted>")]
pub struct StartCharge(pub ValidRequest);

/// Admit several sessions, in order, as `StartCharge` would one by one. Sent
/// by the substation's `POST /charge/batch` handler (a batch from the
/// balancer) to `ChargerActor`, so a batch crosses to the actor's thread
/// once; answered with one result per request.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Vec<Result<ChargeGranted>>")]
pub struct StartCharges(pub Vec<ValidRequest>);

/// Change the substation's limit (the grid operator's signal), watts. Sent
/// by the substation's `PUT /limit` handler to `ChargerActor`; sessions are
/// curtailed, or the newest paused, at once. Answers the limit before.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "f64")]
pub struct SetLimit(pub f64);

/// Look up session `seq` of this substation. Sent by the substation's
/// `GET /sessions/{id}` handler to `ChargerActor`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<crate::grid::SessionInfo>")]
pub struct GetSession(pub u64);

/// Hand session `seq` over to another substation (load transfer): it stops
/// here at once and its power is shared among the rest. Sent by the
/// substation's `POST /sessions/{id}/handover` handler to `ChargerActor`;
/// answers the session as it now stands (`moved`, with the energy delivered
/// here), or `None` if no live session has that number.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<crate::grid::SessionInfo>")]
pub struct HandOver(pub u64);

/// End due sessions and bring the gauges up to date. Sent by the substation's
/// `GET /metrics` handler just before it encodes the registry, so a scrape
/// never sees sessions that have already ended.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct RefreshMetrics;

/// A substation found by DNS answered its first poll: it joins as `index`
/// (a new index, or the one it had before it left). Sent by
/// `LoadPollerActor` to `RouterActor`, just before that poll's `LoadSampled`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Joined {
    pub index: usize,
    /// Its base URL, e.g. `http://10.0.1.7:8000`.
    pub url: String,
}

/// Substation `index`'s address is no longer in DNS: it leaves. Sent by
/// `LoadPollerActor` to `RouterActor`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Left {
    pub index: usize,
}

/// A poll of substation `index` succeeded. Sent by `LoadPollerActor` to
/// `RouterActor`; `at` is when the scrape was sent.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct LoadSampled {
    /// Position of the substation in `SUBSTATIONS`.
    pub index: usize,
    /// What the scrape said.
    pub sample: LoadSample,
    /// When the scrape was sent.
    pub at: Instant,
}

/// A poll of substation `index` failed (error or timeout). Sent by
/// `LoadPollerActor` to `RouterActor`, which stops routing to it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PollFailed {
    /// Position of the substation in `SUBSTATIONS`.
    pub index: usize,
    /// Why, for the log.
    pub reason: String,
}

/// Route a request: choose, forward, retry on the next best. Sent by the
/// balancer's `POST /route` handler to `RouterActor`, which answers once a
/// substation admitted it or none can.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<ChargeGranted>")]
pub struct Route(pub ValidRequest);

/// Poll every substation now, and answer with the samples that came back.
/// Sent by `RouterActor` to `LoadPollerActor` when a request is about to be
/// refused, so that a refusal rests on fresh figures; failures are reported
/// as `PollFailed`, as in a regular poll.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<LoadSampled>")]
pub struct PollNow;

/// Where `RouterActor` sends `PollNow`. Sent once at start-up, by whoever
/// started both actors (the poller is made after the router, which it
/// reports to).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct AttachPoller(pub actix::Recipient<PollNow>);

/// The router's view, for `GET /status`. Sent by the balancer's handler.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Status")]
pub struct GetStatus;

/// One substation in `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct SubstationStatus {
    /// Its base URL, as configured.
    pub url: String,
    /// The router's view of it.
    #[serde(flatten)]
    pub view: SubstationView,
}

/// Body of `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Which balancer answered (its host name): with several replicas
    /// behind one address, says whose view this is.
    pub instance: String,
    /// Poll interval, milliseconds.
    pub poll_interval_ms: u64,
    /// One entry per configured substation, in configuration order.
    pub substations: Vec<SubstationStatus>,
}

/// Poll interval and timeout of `LoadPollerActor`.
#[derive(Debug, Clone, Copy)]
pub struct PollTiming {
    /// Time between polls.
    pub interval: Duration,
    /// Deadline of one scrape.
    pub timeout: Duration,
}
