//! Authentication of node-to-node and admin traffic with `CLUSTER_SECRET`.
//!
//! Every peer or admin request carries four headers:
//!
//! | header | content |
//! |---|---|
//! | `X-Cluster-Node` | the sender's node id (or `admin`) |
//! | `X-Cluster-Timestamp` | sender's wall clock, ms since the Unix epoch |
//! | `X-Cluster-Nonce` | 16 random bytes, hex |
//! | `X-Cluster-Signature` | hex HMAC-SHA256 over method, path and query, node, timestamp, nonce and body |
//!
//! The receiver recomputes the MAC and compares in constant time, so a
//! tampered method, path, body or header fails. A request whose timestamp is
//! more than `window` away from the receiver's clock is refused, and every
//! signature accepted within the window is remembered, so a captured request
//! replayed later (or twice) is refused as well. The secret never travels.
//!
//! Replication itself is idempotent (duplicates are dropped), so even a replay
//! that slipped through would change nothing; the replay guard matters for
//! admin commands such as fault injection.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

pub const HEADER_NODE: &str = "x-cluster-node";
pub const HEADER_TIMESTAMP: &str = "x-cluster-timestamp";
pub const HEADER_NONCE: &str = "x-cluster-nonce";
pub const HEADER_SIGNATURE: &str = "x-cluster-signature";

/// Default acceptance window for timestamps, in milliseconds.
pub const DEFAULT_WINDOW_MS: u64 = 30_000;

type HmacSha256 = Hmac<Sha256>;

/// The signed headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub node: String,
    pub timestamp_ms: u64,
    pub nonce: String,
    pub signature: String,
}

/// Signs and verifies requests with the shared secret.
#[derive(Clone)]
pub struct Signer {
    /// The MAC keyed with the secret, cloned for each request.
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

impl Signer {
    pub fn new(secret: &str) -> Result<Self> {
        if secret.is_empty() {
            return Err(Error::config("CLUSTER_SECRET must not be empty"));
        }
        let keyed = HmacSha256::new_from_slice(secret.as_bytes())
            .map_err(|e| Error::config(format!("CLUSTER_SECRET unusable as a MAC key: {e}")))?;
        Ok(Signer { keyed })
    }

    fn mac(
        &self,
        method: &str,
        path: &str,
        node: &str,
        ts: u64,
        nonce: &str,
        body: &[u8],
    ) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        for part in [method.as_bytes(), path.as_bytes(), node.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(&ts.to_be_bytes());
        mac.update(&(nonce.len() as u64).to_be_bytes());
        mac.update(nonce.as_bytes());
        mac.update(body);
        mac
    }

    /// Signs a request. `path` includes the query string, if any.
    pub fn sign(&self, method: &str, path: &str, node: &str, now_ms: u64, body: &[u8]) -> Signed {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let tag = self
            .mac(method, path, node, now_ms, &nonce, body)
            .finalize();
        Signed {
            node: node.to_string(),
            timestamp_ms: now_ms,
            nonce,
            signature: hex::encode(tag.into_bytes()),
        }
    }

    /// Checks a request's MAC, its freshness, and that it is not a replay.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        signed: &Signed,
        body: &[u8],
        now_ms: u64,
        guard: &mut ReplayGuard,
    ) -> Result<()> {
        let given = hex::decode(&signed.signature)
            .map_err(|_| Error::Unauthorized("malformed signature".into()))?;
        let expected = self
            .mac(
                method,
                path,
                &signed.node,
                signed.timestamp_ms,
                &signed.nonce,
                body,
            )
            .finalize()
            .into_bytes();
        if given.len() != expected.len() || !bool::from(expected.as_slice().ct_eq(&given)) {
            return Err(Error::Unauthorized("bad signature".into()));
        }
        if now_ms.abs_diff(signed.timestamp_ms) > guard.window_ms {
            return Err(Error::Unauthorized(
                "stale or future timestamp (check the clocks of the nodes)".into(),
            ));
        }
        guard.check_and_remember(&signed.signature, signed.timestamp_ms, now_ms)
    }
}

/// Remembers the signatures accepted within the time window.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    seen: HashSet<String>,
    order: VecDeque<(u64, String)>,
    capacity: usize,
}

impl ReplayGuard {
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        ReplayGuard {
            window_ms,
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn check_and_remember(&mut self, signature: &str, ts: u64, now_ms: u64) -> Result<()> {
        // Forget what has aged out: such requests fail the window check.
        while let Some((first_ts, _)) = self.order.front() {
            if now_ms.saturating_sub(*first_ts) <= self.window_ms
                && self.order.len() < self.capacity
            {
                break;
            }
            if let Some((_, sig)) = self.order.pop_front() {
                self.seen.remove(&sig);
            }
        }
        if !self.seen.insert(signature.to_string()) {
            return Err(Error::Unauthorized("replayed request".into()));
        }
        self.order
            .push_back((ts.max(now_ms), signature.to_string()));
        Ok(())
    }
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_WINDOW_MS, 1_000_000)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A static bearer token for operator routes (`Authorization: Bearer <token>`),
/// such as a substation's `PUT /limit`. Compared in constant time.
#[derive(Clone)]
pub struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<secret>)")
    }
}

impl BearerToken {
    /// A token; empty tokens are refused (they would let anyone in).
    pub fn new(token: String) -> Result<Self> {
        if token.is_empty() {
            return Err(Error::config("an admin token must not be empty"));
        }
        Ok(BearerToken(token))
    }

    /// The `Authorization` header value that carries this token.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, header: Option<&str>) -> Result<()> {
        let presented = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Error::Unauthorized("missing Authorization: Bearer <token>".into()))?;
        if bool::from(presented.as_bytes().ct_eq(self.0.as_bytes())) {
            Ok(())
        } else {
            Err(Error::Unauthorized("wrong token".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_signature_is_accepted_once() {
        let s = Signer::new("secret").unwrap();
        let mut guard = ReplayGuard::default();
        let signed = s.sign("POST", "/peer/replicate", "1", 1_000_000, b"{}");
        s.verify(
            "POST",
            "/peer/replicate",
            &signed,
            b"{}",
            1_000_500,
            &mut guard,
        )
        .unwrap();
        let replay = s.verify(
            "POST",
            "/peer/replicate",
            &signed,
            b"{}",
            1_000_600,
            &mut guard,
        );
        assert!(matches!(replay, Err(Error::Unauthorized(_))));
    }

    #[test]
    fn tampering_is_detected() {
        let s = Signer::new("secret").unwrap();
        let mut guard = ReplayGuard::default();
        let signed = s.sign("POST", "/peer/replicate", "1", 1_000, b"{\"a\":1}");
        assert!(s
            .verify(
                "POST",
                "/peer/replicate",
                &signed,
                b"{\"a\":2}",
                1_000,
                &mut guard
            )
            .is_err());
        assert!(s
            .verify(
                "POST",
                "/admin/fault",
                &signed,
                b"{\"a\":1}",
                1_000,
                &mut guard
            )
            .is_err());
        let mut other_node = signed.clone();
        other_node.node = "2".into();
        assert!(s
            .verify(
                "POST",
                "/peer/replicate",
                &other_node,
                b"{\"a\":1}",
                1_000,
                &mut guard
            )
            .is_err());
        let wrong_key = Signer::new("other").unwrap();
        assert!(wrong_key
            .verify(
                "POST",
                "/peer/replicate",
                &signed,
                b"{\"a\":1}",
                1_000,
                &mut guard
            )
            .is_err());
    }

    #[test]
    fn stale_timestamps_are_refused() {
        let s = Signer::new("secret").unwrap();
        let mut guard = ReplayGuard::new(1_000, 100);
        let signed = s.sign("GET", "/x", "0", 10_000, b"");
        assert!(s
            .verify("GET", "/x", &signed, b"", 11_001, &mut guard)
            .is_err());
        assert!(s
            .verify("GET", "/x", &signed, b"", 8_999, &mut guard)
            .is_err());
    }

    #[test]
    fn empty_secret_is_a_config_error() {
        assert!(matches!(Signer::new(""), Err(Error::Config(_))));
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let t = BearerToken::new("s3cret".into()).unwrap();
        assert!(t.check(Some("Bearer s3cret")).is_ok());
        for bad in [
            None,
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret "),
            Some("Basic s3cret"),
        ] {
            assert!(
                matches!(t.check(bad), Err(Error::Unauthorized(_))),
                "{bad:?}"
            );
        }
        assert!(BearerToken::new(String::new()).is_err());
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
