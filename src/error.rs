//! The crate's one error type.
//!
//! Variants are grouped by what the caller should do about them, not by where
//! they came from: fix the request (`InvalidInput`, `TooLarge`), use the
//! key as what it is (`Conflict`), look elsewhere (`NotFound`), authenticate (`Unauthorized`), come back later
//! (`Unavailable`), or report a bug (`Internal`). The HTTP layer maps each
//! group to one status code (see `http::error`); the pure cores return these
//! without knowing about HTTP.

use std::fmt;

/// Everything that can go wrong in causal-grid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed or violates a documented limit (HTTP 400).
    #[error("{0}")]
    InvalidInput(String),
    /// The requested item does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// Missing or bad credentials on peer or admin traffic (HTTP 401).
    #[error("{0}")]
    Unauthorized(String),
    /// The request does not fit the state of what it names: a put on a
    /// counter key, an increment on a register key (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// A body, key or value is over its size limit (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// Overloaded, out of capacity, or a dependency is unreachable; retry
    /// later (HTTP 503, with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
    /// A bad configuration value; binaries exit with it at start-up.
    #[error("configuration: {0}")]
    Config(String),
    /// A bug or an unexpected failure of our own (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::InvalidInput(msg.to_string())
    }
    pub fn unavailable(msg: impl fmt::Display) -> Self {
        Error::Unavailable(msg.to_string())
    }
    pub fn internal(msg: impl fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }
    pub fn config(msg: impl fmt::Display) -> Self {
        Error::Config(msg.to_string())
    }
}
