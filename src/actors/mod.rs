//! Actors: thin wrappers around the pure cores in `causal` and `grid`.
//!
//! Each actor owns one core object and turns typed messages into calls on it.
//! Messages of a subsystem live together (`kv::messages`, `grid::messages`) so
//! actors depend on messages rather than on each other.

pub mod grid;
pub mod kv;

use crate::error::Error;

impl From<actix::MailboxError> for Error {
    fn from(e: actix::MailboxError) -> Self {
        match e {
            actix::MailboxError::Closed => Error::Unavailable("service is shutting down".into()),
            actix::MailboxError::Timeout => Error::Unavailable("service is overloaded".into()),
        }
    }
}
