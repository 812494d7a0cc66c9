//! Clients of a KV node: signed peer and admin requests (`PeerClient`) and
//! the client API (`KvClient`).
//!
//! `awc::Client` is not `Send`: create one `PeerClient` per actor or task
//! and reuse it; never one per request.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{self, Signer};
use crate::causal::VClock;
use crate::error::{Error, Result};
use crate::wire::kv::{IncrRequest, PutRequest, StatusResponse, TxnRequest, CAUSAL_CONTEXT};
use crate::wire::ErrorBody;

/// Idle pooled connections are dropped after this, before the server's 5 s
/// keep-alive closes them: reusing a connection the server has just closed
/// fails the request ("connector has been disconnected").
const POOL_KEEP_ALIVE: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct PeerClient {
    client: awc::Client,
    signer: Signer,
    /// Who we say we are in `X-Cluster-Node` (a node id, or `admin`).
    identity: String,
}

impl PeerClient {
    pub fn new(signer: Signer, identity: impl Into<String>, timeout: Duration) -> Self {
        let client = awc::Client::builder()
            .timeout(timeout)
            .disable_redirects()
            .connector(awc::Connector::new().conn_keep_alive(POOL_KEEP_ALIVE))
            .finish();
        PeerClient {
            client,
            signer,
            identity: identity.into(),
        }
    }

    /// POSTs `body` as JSON to `base_url` + `path`, signed, and decodes the
    /// JSON answer. Non-2xx answers become the matching `Error`.
    pub async fn post<T: Serialize, R: DeserializeOwned>(
        &self,
        base_url: &str,
        path: &str,
        body: &T,
    ) -> Result<R> {
        let bytes = serde_json::to_vec(body).map_err(Error::internal)?;
        self.call("POST", base_url, path, bytes).await
    }

    /// GETs `base_url` + `path`, signed, and decodes the JSON answer.
    pub async fn get<R: DeserializeOwned>(&self, base_url: &str, path: &str) -> Result<R> {
        self.call("GET", base_url, path, Vec::new()).await
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        base_url: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<R> {
        let signed = self
            .signer
            .sign(method, path, &self.identity, auth::now_ms(), &bytes);
        let url = format!("{}{}", base_url.trim_end_matches('/'), path);
        let request = match method {
            "GET" => self.client.get(&url),
            _ => self.client.post(&url),
        };
        let mut resp = request
            .insert_header(("content-type", "application/json"))
            .insert_header((auth::HEADER_NODE, signed.node))
            .insert_header((auth::HEADER_TIMESTAMP, signed.timestamp_ms.to_string()))
            .insert_header((auth::HEADER_NONCE, signed.nonce))
            .insert_header((auth::HEADER_SIGNATURE, signed.signature))
            .send_body(bytes)
            .await
            .map_err(|e| Error::unavailable(format!("{url}: {e}")))?;
        let status = resp.status();
        let body = resp
            .body()
            .limit(1024 * 1024 * 1024)
            .await
            .map_err(|e| Error::unavailable(format!("{url}: reading answer: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| Error::internal(format!("{url}: bad answer: {e}")));
        }
        let msg = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(match status.as_u16() {
            400 => Error::InvalidInput(msg),
            401 => Error::Unauthorized(msg),
            404 => Error::NotFound(msg),
            409 => Error::Conflict(msg),
            413 => Error::TooLarge(msg),
            503 => Error::Unavailable(msg),
            _ => Error::Internal(format!("{url}: {status}: {msg}")),
        })
    }
}

/// Client of the KV client API (`/put`, `/get`, `/status`), used by
/// `causal_demo`, the benchmarks and the tests.
#[derive(Clone)]
pub struct KvClient {
    client: awc::Client,
}

/// An answer from the client API: status, JSON body, causal context.
#[derive(Debug, Clone)]
pub struct KvAnswer {
    pub status: u16,
    pub body: serde_json::Value,
    pub context: Option<VClock>,
}

impl KvClient {
    pub fn new(timeout: Duration) -> Self {
        KvClient {
            client: awc::Client::builder()
                .timeout(timeout)
                .disable_redirects()
                .connector(awc::Connector::new().conn_keep_alive(POOL_KEEP_ALIVE))
                .finish(),
        }
    }

    async fn answer<S>(
        url: &str,
        resp: std::result::Result<awc::ClientResponse<S>, awc::error::SendRequestError>,
    ) -> Result<KvAnswer>
    where
        S: futures_util::Stream<
                Item = std::result::Result<actix_web::web::Bytes, actix_http::error::PayloadError>,
            > + Unpin,
    {
        let mut resp = resp.map_err(|e| Error::unavailable(format!("{url}: {e}")))?;
        let context = resp
            .headers()
            .get(CAUSAL_CONTEXT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = resp
            .body()
            .limit(256 * 1024 * 1024)
            .await
            .map_err(|e| Error::unavailable(format!("{url}: reading answer: {e}")))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(KvAnswer {
            status: resp.status().as_u16(),
            body,
            context,
        })
    }

    /// `POST /put`, optionally with a causal context.
    pub async fn put(
        &self,
        base: &str,
        key: &str,
        value: &str,
        context: Option<&VClock>,
    ) -> Result<KvAnswer> {
        let url = format!("{}/put", base.trim_end_matches('/'));
        let mut req = self.client.post(&url);
        if let Some(ctx) = context {
            req = req.insert_header((CAUSAL_CONTEXT, ctx.to_string()));
        }
        let resp = req.send_json(&PutRequest {
            key: key.to_string(),
            value: value.to_string(),
        });
        Self::answer(&url, resp.await).await
    }

    /// `POST /incr`, optionally with a causal context.
    pub async fn incr(
        &self,
        base: &str,
        key: &str,
        by: i64,
        context: Option<&VClock>,
    ) -> Result<KvAnswer> {
        let body = IncrRequest {
            key: key.to_string(),
            by,
        };
        self.post_json(base, "/incr", &body, context).await
    }

    /// `POST /txn`, optionally with a causal context.
    pub async fn txn(
        &self,
        base: &str,
        txn: &TxnRequest,
        context: Option<&VClock>,
    ) -> Result<KvAnswer> {
        self.post_json(base, "/txn", txn, context).await
    }

    /// `POST` of a JSON body to a client route, with the causal context.
    pub async fn post_json<T: Serialize>(
        &self,
        base: &str,
        path: &str,
        body: &T,
        context: Option<&VClock>,
    ) -> Result<KvAnswer> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let mut req = self.client.post(&url);
        if let Some(ctx) = context {
            req = req.insert_header((CAUSAL_CONTEXT, ctx.to_string()));
        }
        Self::answer(&url, req.send_json(body).await).await
    }

    /// `GET /get?key=`, optionally with a causal context.
    pub async fn get(&self, base: &str, key: &str, context: Option<&VClock>) -> Result<KvAnswer> {
        let url = format!("{}/get", base.trim_end_matches('/'));
        let mut req = self
            .client
            .get(&url)
            .query(&[("key", key)])
            .map_err(|e| Error::invalid(format!("bad key for a query string: {e}")))?;
        if let Some(ctx) = context {
            req = req.insert_header((CAUSAL_CONTEXT, ctx.to_string()));
        }
        Self::answer(&url, req.send().await).await
    }

    /// `GET /ready`: the answer's status (200 once the node serves) and body.
    pub async fn ready(&self, base: &str) -> Result<KvAnswer> {
        let url = format!("{}/ready", base.trim_end_matches('/'));
        Self::answer(&url, self.client.get(&url).send().await).await
    }

    /// Polls `/ready` until it answers 200, failing after `timeout`.
    pub async fn await_ready(&self, base: &str, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let last = match self.ready(base).await {
                Ok(a) if a.status == 200 => return Ok(()),
                Ok(a) => a.body.to_string(),
                Err(e) => e.to_string(),
            };
            if std::time::Instant::now() >= deadline {
                return Err(Error::unavailable(format!(
                    "{base} not ready after {timeout:?}: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /status`, decoded.
    pub async fn status(&self, base: &str) -> Result<StatusResponse> {
        self.status_of(base, true).await
    }

    /// `GET /status`, with or without the key map.
    pub async fn status_of(&self, base: &str, with_store: bool) -> Result<StatusResponse> {
        let url = format!(
            "{}/status{}",
            base.trim_end_matches('/'),
            if with_store { "" } else { "?store=false" }
        );
        let answer = Self::answer(&url, self.client.get(&url).send().await).await?;
        if answer.status != 200 {
            return Err(Error::unavailable(format!(
                "{url}: status {}",
                answer.status
            )));
        }
        serde_json::from_value(answer.body).map_err(|e| Error::internal(format!("{url}: {e}")))
    }
}
