//! Verifying signed peer and admin requests in handlers.

use std::sync::Mutex;

use actix_web::HttpRequest;

use crate::auth::{self, ReplayGuard, Signed, Signer};
use crate::error::{Error, Result};

/// Shared by every worker of a node's server.
pub struct PeerAuth {
    signer: Signer,
    // A std mutex: the critical section is a hash lookup, never held across
    // an await, so an async mutex would only add cost.
    guard: Mutex<ReplayGuard>,
}

impl PeerAuth {
    pub fn new(signer: Signer) -> Self {
        PeerAuth {
            signer,
            guard: Mutex::new(ReplayGuard::default()),
        }
    }

    /// Checks the request's signature headers against its body; returns the
    /// sender's identity (`X-Cluster-Node`).
    pub fn verify(&self, req: &HttpRequest, body: &[u8]) -> Result<String> {
        let header = |name: &str| -> Result<String> {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| Error::Unauthorized(format!("missing or invalid {name} header")))
        };
        let signed = Signed {
            node: header(auth::HEADER_NODE)?,
            timestamp_ms: header(auth::HEADER_TIMESTAMP)?
                .parse()
                .map_err(|_| Error::Unauthorized("invalid timestamp header".into()))?,
            nonce: header(auth::HEADER_NONCE)?,
            signature: header(auth::HEADER_SIGNATURE)?,
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| req.path());
        let mut guard = self
            .guard
            .lock()
            .map_err(|_| Error::internal("replay guard poisoned"))?;
        self.signer.verify(
            req.method().as_str(),
            path,
            &signed,
            body,
            auth::now_ms(),
            &mut guard,
        )?;
        Ok(signed.node)
    }
}
