//! Signed HTTP client for peer and admin routes.
//!
//! `awc::Client` is not `Send`: create one `PeerClient` per actor or task
//! and reuse it; never one per request.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{self, Signer};
use crate::error::{Error, Result};
use crate::http::error::ErrorBody;

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
        let signed = self
            .signer
            .sign("POST", path, &self.identity, auth::now_ms(), &bytes);
        let url = format!("{}{}", base_url.trim_end_matches('/'), path);
        let mut resp = self
            .client
            .post(&url)
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
            .limit(16 * 1024 * 1024)
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
            413 => Error::TooLarge(msg),
            503 => Error::Unavailable(msg),
            _ => Error::Internal(format!("{url}: {status}: {msg}")),
        })
    }
}
