//! The grid's HTTP client side: forwarding a charge request one hop.
//!
//! The balancer forwards to a substation's `/charge` and the entry service to
//! the balancer's `/route`; both need the same classification of what came
//! back, so it lives here once. Every request has a bounded timeout, and a
//! connection failure is reported as such (the balancer marks the substation
//! unhealthy; the entry answers 503 at once).
//!
//! `BalancerClient` reports how each request ended as an [`Outcome`] and
//! records nothing itself: the entry service's metrics belong to the caller.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use awc::error::SendRequestError;
use awc::http::header::{AUTHORIZATION, CONTENT_TYPE};
use awc::http::Uri;
use bytes::Bytes;

use super::batch::{BatchConfig, Batcher};
use super::dns::{Resolver, Target};
use crate::error::{Error, Result};
use crate::grid::{ChargeGranted, ChargeRequest, SessionStatus};
use crate::wire::ErrorBody;

/// Largest response body read from a peer.
const MAX_BODY: usize = 64 * 1024;
const APPLICATION_JSON: &str = "application/json";

/// What one forwarding attempt produced: `T` is the grant, parsed
/// (`ChargeGranted`, for the balancer, which books it) or as the bytes that
/// came back (for the entry service, which only passes them on).
#[derive(Debug, Clone, PartialEq)]
pub enum Forwarded<T = ChargeGranted> {
    /// 200 with a grant.
    Granted(T),
    /// 503: the peer has no capacity (or is overloaded).
    Refused(String),
    /// 4xx: the request itself is bad; retrying elsewhere will not help.
    Invalid(String),
    /// Could not connect, or the connection broke.
    Unreachable(String),
    /// No answer within the timeout.
    Timeout,
    /// Any other answer (5xx other than 503, unreadable body).
    Failed(String),
}

/// An `awc::Client` with bounded connect and request timeouts.
/// Create one per actor or worker (it is not `Send`), never per request.
pub fn build_client(connect_timeout: Duration, request_timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().timeout(connect_timeout).limit(512))
        .timeout(request_timeout)
        .finish()
}

/// `base` (`http://host:port`) joined with `path`, parsed once so that
/// forwarding does not format and parse a URL per request.
pub fn join_uri(base: &str, path: &str) -> Result<Uri> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    url.parse()
        .map_err(|e| Error::config(format!("bad URL {url}: {e}")))
}

/// A substation's `/charge` URI from its base URL.
pub fn charge_uri(base: &str) -> Result<Uri> {
    join_uri(base, "/charge")
}

/// POSTs `body` (JSON) to `uri` and classifies the answer; a grant is
/// returned as the bytes that came back.
pub async fn post_json(client: &awc::Client, uri: Uri, body: Bytes) -> Forwarded<Bytes> {
    let mut resp = match client
        .post(uri.clone())
        .insert_header((CONTENT_TYPE, APPLICATION_JSON))
        .send_body(body)
        .await
    {
        Ok(r) => r,
        Err(SendRequestError::Timeout) => return Forwarded::Timeout,
        Err(e) => return Forwarded::Unreachable(e.to_string()),
    };
    let status = resp.status();
    let body = match resp.body().limit(MAX_BODY).await {
        Ok(b) => b,
        // The connection broke mid-answer: as good as unreachable (a
        // substation killed while answering lands here).
        Err(e) => return Forwarded::Unreachable(format!("reading response: {e}")),
    };
    if status.is_success() {
        return Forwarded::Granted(body);
    }
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    match status.as_u16() {
        503 => Forwarded::Refused(message),
        400..=499 => Forwarded::Invalid(message),
        code => Forwarded::Failed(format!("{uri} answered {code}: {message}")),
    }
}

/// POSTs an encoded charge request to `uri` and parses the grant.
pub async fn post_charge_body(client: &awc::Client, uri: Uri, body: Bytes) -> Forwarded {
    let shown = uri.clone();
    parse_grant(&shown, post_json(client, uri, body).await)
}

/// Parses the grant of an answer from `from`, keeping any other outcome.
pub fn parse_grant(from: &Uri, forwarded: Forwarded<Bytes>) -> Forwarded {
    match forwarded {
        Forwarded::Granted(b) => match serde_json::from_slice::<ChargeGranted>(&b) {
            Ok(g) => Forwarded::Granted(g),
            Err(e) => Forwarded::Failed(format!("bad grant from {from}: {e}")),
        },
        Forwarded::Refused(m) => Forwarded::Refused(m),
        Forwarded::Invalid(m) => Forwarded::Invalid(m),
        Forwarded::Unreachable(m) => Forwarded::Unreachable(m),
        Forwarded::Timeout => Forwarded::Timeout,
        Forwarded::Failed(m) => Forwarded::Failed(m),
    }
}

/// How a hand-over (`POST /sessions/{id}/handover`) ended.
#[derive(Debug, Clone, PartialEq)]
pub enum HandedOver {
    /// The session stopped there; this is what it had left.
    Moved(SessionStatus),
    /// Anything else: unreachable, timeout, 401, 404 (no such live session,
    /// or the route is disabled), 5xx, a bad body. The session may still be
    /// charging there; the next poll says.
    Failed(String),
}

/// Asks the substation at `uri` (its `/sessions/{id}/handover`) to hand a
/// session over, with `authorization` (`Bearer <GRID_ADMIN_TOKEN>`).
pub async fn post_handover(client: &awc::Client, uri: Uri, authorization: &str) -> HandedOver {
    let mut resp = match client
        .post(uri.clone())
        .insert_header((AUTHORIZATION, authorization))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return HandedOver::Failed(format!("{uri}: {e}")),
    };
    let status = resp.status();
    let body = match resp.body().limit(MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return HandedOver::Failed(format!("{uri}: reading response: {e}")),
    };
    if status.is_success() {
        return match serde_json::from_slice::<SessionStatus>(&body) {
            Ok(s) => HandedOver::Moved(s),
            Err(e) => HandedOver::Failed(format!("bad answer from {uri}: {e}")),
        };
    }
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    HandedOver::Failed(format!("{uri} answered {}: {message}", status.as_u16()))
}

/// How one request to the entry service ended: the `outcome` label of
/// `charge_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The balancer granted a session.
    Accepted,
    /// No substation had room (or the balancer was overloaded).
    Rejected,
    /// The request was invalid, here or as judged by the balancer.
    Invalid,
    /// The balancer could not be reached, did not answer in time, or failed.
    Error,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

/// How long a balancer that could not be reached is tried last.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// How often DNS names of balancers are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// One balancer address and, if it failed to connect, until when it is
/// tried last.
#[derive(Clone)]
struct Route {
    url: String,
    /// `url`, parsed once.
    uri: Uri,
    /// Coalesces requests to its `/route/batch`, unless batching is off.
    batcher: Option<Batcher>,
    down_until: Option<Instant>,
}

impl Route {
    /// A route to the balancer at base URL `base`; `None` (and a warning)
    /// if it does not parse, which `parse_targets` already rules out for
    /// listed URLs.
    fn new(base: &str, client: &awc::Client, batch: BatchConfig) -> Option<Route> {
        let uris = join_uri(base, "/route").and_then(|u| Ok((u, join_uri(base, "/route/batch")?)));
        match uris {
            Ok((uri, batch_uri)) => Some(Route {
                url: uri.to_string(),
                uri,
                batcher: batch
                    .enabled()
                    .then(|| Batcher::new(client.clone(), batch_uri, batch)),
                down_until: None,
            }),
            Err(e) => {
                log::warn!("skipping balancer {base}: {e}");
                None
            }
        }
    }
}

/// The balancers as seen from one worker of the entry service: its own
/// client, created once. Requests go round-robin over the balancers (listed
/// or found by DNS). The request goes on to the next balancer when one
/// cannot be reached (skipped for a second then: a refused connection was
/// never delivered, so resending cannot book a session twice) or finds no
/// room (a 503 books nothing; another balancer's view may differ, and
/// `grid_sim --balancers` shows that this keeps rejection at one
/// balancer's). A timeout after sending is not retried: it may have booked.
///
/// Unless batching is off, requests to a balancer that queue behind those
/// in flight go on together to its `/route/batch` (`net::batch`).
pub struct BalancerClient {
    client: awc::Client,
    batch: BatchConfig,
    targets: Vec<Target>,
    resolver: Resolver,
    routes: RefCell<Vec<Route>>,
    resolved_at: Cell<Option<Instant>>,
    next: Cell<usize>,
}

impl BalancerClient {
    /// A client for the balancers `targets`, with bounded connect and
    /// request timeouts, batching as `batch` says; DNS names are resolved
    /// with `resolver`.
    pub fn new(
        targets: Vec<Target>,
        resolver: Resolver,
        connect_timeout: Duration,
        request_timeout: Duration,
        batch: BatchConfig,
    ) -> Self {
        let client = build_client(connect_timeout, request_timeout);
        let routes = targets
            .iter()
            .filter_map(|t| match t {
                Target::Url(url) => Route::new(url, &client, batch),
                Target::Dns(_) => None,
            })
            .collect();
        BalancerClient {
            client,
            batch,
            targets,
            resolver,
            routes: RefCell::new(routes),
            resolved_at: Cell::new(None),
            next: Cell::new(0),
        }
    }

    /// Resolves the DNS names again if the last answer is older than a
    /// second. A failed resolution keeps the last answer.
    async fn refresh(&self) {
        let stale = self
            .resolved_at
            .get()
            .is_none_or(|at| at.elapsed() >= RESOLVE_EVERY);
        if !stale || !self.targets.iter().any(|t| matches!(t, Target::Dns(_))) {
            return;
        }
        self.resolved_at.set(Some(Instant::now()));
        let mut found = Vec::new();
        for t in &self.targets {
            match t {
                Target::Url(url) => found.extend(Route::new(url, &self.client, self.batch)),
                Target::Dns(src) => match (self.resolver)(src.host.clone()).await {
                    Ok(ips) => found.extend(
                        ips.into_iter()
                            .filter_map(|ip| Route::new(&src.url(ip), &self.client, self.batch)),
                    ),
                    Err(e) => {
                        log::warn!(
                            "resolving {} failed, keeping the last answer: {e}",
                            src.host
                        );
                        return;
                    }
                },
            }
        }
        let mut routes = self.routes.borrow_mut();
        let old = std::mem::take(&mut *routes);
        *routes = found
            .into_iter()
            .map(|route| match old.iter().find(|r| r.url == route.url) {
                // Known already: keep its state and its batcher's queue.
                Some(known) => known.clone(),
                None => route,
            })
            .collect();
    }

    /// The routes in the order to try them: round-robin from the next one,
    /// those marked down last.
    fn order(&self) -> Vec<Route> {
        let routes = self.routes.borrow();
        let n = routes.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.get() % n;
        self.next.set(start + 1);
        let now = Instant::now();
        let rotated = (0..n).map(|i| &routes[(start + i) % n]);
        let (up, down): (Vec<_>, Vec<_>) =
            rotated.partition(|r| r.down_until.is_none_or(|t| t <= now));
        up.into_iter().chain(down).cloned().collect()
    }

    /// Sends one encoded request to a balancer, batched or on its own.
    async fn forward(&self, route: &Route, body: Bytes) -> Forwarded<Bytes> {
        match &route.batcher {
            Some(b) => b.submit(body).await,
            None => post_json(&self.client, route.uri.clone(), body).await,
        }
    }

    fn mark_down(&self, uri: &Uri) {
        if let Some(r) = self.routes.borrow_mut().iter_mut().find(|r| r.uri == *uri) {
            r.down_until = Some(Instant::now() + DOWN_FOR);
        }
    }

    /// Validates and forwards one request; returns how it ended (for the
    /// caller's metrics) with the result: the balancer's grant, as the JSON
    /// bytes it answered (the entry passes them on without decoding and
    /// encoding them again).
    pub async fn request_charge(&self, req: &ChargeRequest) -> (Outcome, Result<Bytes>) {
        let body = match req.validate() {
            Err(e) => return (Outcome::Invalid, Err(e)),
            Ok(valid) => match serde_json::to_vec(&valid.to_request()) {
                Ok(b) => Bytes::from(b),
                Err(e) => return (Outcome::Error, Err(Error::internal(e))),
            },
        };
        self.refresh().await;
        let mut unreachable = Vec::new();
        let mut refused = None;
        for route in self.order() {
            return match self.forward(&route, body.clone()).await {
                Forwarded::Granted(g) => (Outcome::Accepted, Ok(g)),
                Forwarded::Refused(m) => {
                    // No room in this balancer's view; nothing was booked.
                    // Another balancer's view (its own dispatches and ended
                    // sessions, its own poll phase) may differ.
                    refused = Some(m);
                    continue;
                }
                Forwarded::Invalid(m) => (Outcome::Invalid, Err(Error::invalid(m))),
                Forwarded::Unreachable(m) => {
                    // Never delivered: the next balancer may take it.
                    self.mark_down(&route.uri);
                    unreachable.push(m);
                    continue;
                }
                Forwarded::Timeout => (
                    Outcome::Error,
                    Err(Error::unavailable("load balancer did not answer in time")),
                ),
                Forwarded::Failed(m) => (Outcome::Error, Err(Error::unavailable(m))),
            };
        }
        if let Some(m) = refused {
            return (Outcome::Rejected, Err(Error::unavailable(m)));
        }
        let why = match unreachable.is_empty() {
            true => "no load balancer address is known".to_string(),
            false => unreachable.join("; "),
        };
        (
            Outcome::Error,
            Err(Error::unavailable(format!(
                "load balancer unreachable: {why}"
            ))),
        )
    }
}
