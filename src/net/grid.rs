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

use std::time::Duration;

use awc::error::SendRequestError;

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

/// The balancer as seen from one worker of the entry service: its own
/// client, created once.
pub struct BalancerClient {
    client: awc::Client,
    route_url: String,
}

impl BalancerClient {
    /// A client for the balancer at `base_url`, with bounded connect and
    /// request timeouts.
    pub fn new(base_url: &str, connect_timeout: Duration, request_timeout: Duration) -> Self {
        BalancerClient {
            client: build_client(connect_timeout, request_timeout),
            route_url: format!("{base_url}/route"),
        }
    }

    /// Validates and forwards one request; returns how it ended (for the
    /// caller's metrics) with the result.
    pub async fn request_charge(&self, req: &ChargeRequest) -> (Outcome, Result<ChargeGranted>) {
        match req.validate() {
            Err(e) => (Outcome::Invalid, Err(e)),
            Ok(valid) => {
                match post_charge(&self.client, &self.route_url, &valid.to_request()).await {
                    Forwarded::Granted(g) => (Outcome::Accepted, Ok(g)),
                    Forwarded::Refused(m) => (Outcome::Rejected, Err(Error::unavailable(m))),
                    Forwarded::Invalid(m) => (Outcome::Invalid, Err(Error::invalid(m))),
                    Forwarded::Unreachable(m) => (
                        Outcome::Error,
                        Err(Error::unavailable(format!(
                            "load balancer unreachable: {m}"
                        ))),
                    ),
                    Forwarded::Timeout => (
                        Outcome::Error,
                        Err(Error::unavailable("load balancer did not answer in time")),
                    ),
                    Forwarded::Failed(m) => (Outcome::Error, Err(Error::unavailable(m))),
                }
            }
        }
    }
}
