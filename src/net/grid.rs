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

use super::dns::{Resolver, Target};
use crate::error::{Error, Result};
use crate::grid::{ChargeGranted, ChargeRequest};
use crate::wire::ErrorBody;

/// Largest response body read from a peer.
const MAX_BODY: usize = 64 * 1024;

/// What one forwarding attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Forwarded {
    /// 200 with a grant.
    Granted(ChargeGranted),
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

/// POSTs `req` as JSON to `url` and classifies the answer.
pub async fn post_charge(client: &awc::Client, url: &str, req: &ChargeRequest) -> Forwarded {
    let mut resp = match client.post(url).send_json(req).await {
        Ok(r) => r,
        Err(SendRequestError::Timeout) => return Forwarded::Timeout,
        Err(e @ SendRequestError::Connect(_)) | Err(e @ SendRequestError::Send(_)) => {
            return Forwarded::Unreachable(e.to_string())
        }
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
        return match serde_json::from_slice::<ChargeGranted>(&body) {
            Ok(g) => Forwarded::Granted(g),
            Err(e) => Forwarded::Failed(format!("bad grant from {url}: {e}")),
        };
    }
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    match status.as_u16() {
        503 => Forwarded::Refused(message),
        400..=499 => Forwarded::Invalid(message),
        code => Forwarded::Failed(format!("{url} answered {code}: {message}")),
    }
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
#[derive(Debug, Clone)]
struct Route {
    url: String,
    down_until: Option<Instant>,
}

/// The balancers as seen from one worker of the entry service: its own
/// client, created once. Requests go round-robin over the balancers (listed
/// or found by DNS). The request goes on to the next balancer when one
/// cannot be reached (skipped for a second then: a refused connection was
/// never delivered, so resending cannot book a session twice) or finds no
/// room (a 503 books nothing; another balancer's view may differ, and
/// `grid_sim --balancers` shows that this keeps rejection at one
/// balancer's). A timeout after sending is not retried: it may have booked.
pub struct BalancerClient {
    client: awc::Client,
    targets: Vec<Target>,
    resolver: Resolver,
    routes: RefCell<Vec<Route>>,
    resolved_at: Cell<Option<Instant>>,
    next: Cell<usize>,
}

impl BalancerClient {
    /// A client for the balancers `targets`, with bounded connect and
    /// request timeouts; DNS names are resolved with `resolver`.
    pub fn new(
        targets: Vec<Target>,
        resolver: Resolver,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        let routes = targets
            .iter()
            .filter_map(|t| match t {
                Target::Url(url) => Some(Route {
                    url: format!("{url}/route"),
                    down_until: None,
                }),
                Target::Dns(_) => None,
            })
            .collect();
        BalancerClient {
            client: build_client(connect_timeout, request_timeout),
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
        let mut urls = Vec::new();
        for t in &self.targets {
            match t {
                Target::Url(url) => urls.push(format!("{url}/route")),
                Target::Dns(src) => match (self.resolver)(src.host.clone()).await {
                    Ok(ips) => {
                        urls.extend(ips.into_iter().map(|ip| format!("{}/route", src.url(ip))))
                    }
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
        *routes = urls
            .into_iter()
            .map(|url| {
                let down_until = old.iter().find(|r| r.url == url).and_then(|r| r.down_until);
                Route { url, down_until }
            })
            .collect();
    }

    /// The route URLs in the order to try them: round-robin from the next
    /// one, those marked down last.
    fn order(&self) -> Vec<String> {
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
        up.into_iter().chain(down).map(|r| r.url.clone()).collect()
    }

    fn mark_down(&self, url: &str) {
        if let Some(r) = self.routes.borrow_mut().iter_mut().find(|r| r.url == url) {
            r.down_until = Some(Instant::now() + DOWN_FOR);
        }
    }

    /// Validates and forwards one request; returns how it ended (for the
    /// caller's metrics) with the result.
    pub async fn request_charge(&self, req: &ChargeRequest) -> (Outcome, Result<ChargeGranted>) {
        let valid = match req.validate() {
            Err(e) => return (Outcome::Invalid, Err(e)),
            Ok(valid) => valid.to_request(),
        };
        self.refresh().await;
        let mut unreachable = Vec::new();
        let mut refused = None;
        for url in self.order() {
            return match post_charge(&self.client, &url, &valid).await {
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
                    self.mark_down(&url);
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
