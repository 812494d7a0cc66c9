//! Reading configuration from environment variables.
//!
//! Each service has its own `Config` struct with a `from_env()` that uses
//! these helpers, so every variable is parsed the same way and a bad value
//! fails at start-up with a message that names the variable.

use std::str::FromStr;

use crate::error::{Error, Result};

/// The variable's value, or `None` if it is unset or empty.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Parses the variable, falling back to `default` when unset.
pub fn parse_or<T: FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(raw) => parse_value(name, &raw),
    }
}

/// Parses the variable, failing when it is unset.
pub fn required<T: FromStr>(name: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Err(Error::config(format!("{name} is required but not set"))),
        Some(raw) => parse_value(name, &raw),
    }
}

fn parse_value<T: FromStr>(name: &str, raw: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    raw.parse::<T>()
        .map_err(|e| Error::config(format!("{name}={raw:?} is invalid: {e}")))
}

/// Initialises `env_logger` with a default filter of `info`.
pub fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    // A second initialisation (several services in one process) is harmless.
    let _ = env_logger::Builder::from_env(env).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_variable() {
        let err = parse_value::<u32>("POLL_INTERVAL_MS", "soon").unwrap_err();
        assert!(err.to_string().contains("POLL_INTERVAL_MS"), "{err}");
    }

    #[test]
    fn parse_accepts_valid_values() {
        assert_eq!(parse_value::<u64>("X", "42").unwrap(), 42);
    }
}
