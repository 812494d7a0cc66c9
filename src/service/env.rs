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

/// How the grid's services batch forwarded requests: `FORWARD_BATCH_MAX`
/// (requests per batch, default 64, 1 turns batching off, at most
/// `wire::batch::MAX_BATCH_ITEMS`) and `FORWARD_BATCHES_IN_FLIGHT` (batches
/// outstanding towards one target before requests queue, default 2).
pub fn batch_config() -> Result<crate::net::batch::BatchConfig> {
    batch_config_from(var)
}

fn batch_config_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<crate::net::batch::BatchConfig> {
    use crate::net::batch::BatchConfig;
    use crate::wire::batch::MAX_BATCH_ITEMS;
    let number = |name: &str, default: usize, max: usize| -> Result<usize> {
        let n = match lookup(name) {
            None => default,
            Some(raw) => parse_value(name, &raw)?,
        };
        if !(1..=max).contains(&n) {
            return Err(Error::config(format!(
                "{name} must be in [1, {max}], got {n}"
            )));
        }
        Ok(n)
    };
    let d = BatchConfig::DEFAULT;
    Ok(BatchConfig {
        max_items: number("FORWARD_BATCH_MAX", d.max_items, MAX_BATCH_ITEMS)?,
        in_flight: number("FORWARD_BATCHES_IN_FLIGHT", d.in_flight, 64)?,
    })
}

/// A secret from `NAME` or, for orchestrators that mount secrets as files
/// (Docker and Kubernetes secrets), from the file `NAME_FILE` names (one
/// trailing newline dropped). Setting both is an error; so is an empty or
/// unreadable file. The value itself never appears in a message.
pub fn secret(name: &str) -> Result<Option<String>> {
    secret_from(name, var)
}

fn secret_from(name: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<String>> {
    let file_var = format!("{name}_FILE");
    match (lookup(name), lookup(&file_var)) {
        (Some(_), Some(_)) => Err(Error::config(format!("set {name} or {file_var}, not both"))),
        (Some(value), None) => Ok(Some(value)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(&path)
                .map_err(|e| Error::config(format!("{file_var}={path:?} cannot be read: {e}")))?;
            let value = raw.strip_suffix('\n').unwrap_or(&raw);
            let value = value.strip_suffix('\r').unwrap_or(value);
            if value.is_empty() {
                return Err(Error::config(format!("{file_var}={path:?} is empty")));
            }
            Ok(Some(value.to_string()))
        }
    }
}

/// This machine's host name (in a container: the container's, which tells
/// the replicas of one service apart), if it can be read.
pub fn host_name() -> Option<String> {
    var("HOSTNAME").or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    })
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
    fn batching_is_read_and_bounded() {
        use crate::net::batch::BatchConfig;
        let with = |pairs: &'static [(&'static str, &'static str)]| {
            batch_config_from(move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
        };
        assert_eq!(with(&[]).unwrap(), BatchConfig::DEFAULT);
        let off = with(&[("FORWARD_BATCH_MAX", "1")]).unwrap();
        assert!(!off.enabled());
        let set = with(&[
            ("FORWARD_BATCH_MAX", "256"),
            ("FORWARD_BATCHES_IN_FLIGHT", "4"),
        ]);
        assert_eq!(
            set.unwrap(),
            BatchConfig {
                max_items: 256,
                in_flight: 4
            }
        );
        for bad in [
            &[("FORWARD_BATCH_MAX", "0")][..],
            &[("FORWARD_BATCH_MAX", "257")],
            &[("FORWARD_BATCH_MAX", "many")],
            &[("FORWARD_BATCHES_IN_FLIGHT", "0")],
            &[("FORWARD_BATCHES_IN_FLIGHT", "65")],
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains(bad[0].0), "{err}");
        }
    }

    #[test]
    fn parse_errors_name_the_variable() {
        let err = parse_value::<u32>("POLL_INTERVAL_MS", "soon").unwrap_err();
        assert!(err.to_string().contains("POLL_INTERVAL_MS"), "{err}");
    }

    #[test]
    fn a_secret_comes_from_the_variable_or_its_file_never_both() {
        let path =
            std::env::temp_dir().join(format!("causal-grid-secret-{}", rand::random::<u64>()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let file = path.to_string_lossy().into_owned();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let from_file = secret_from("S", env(vec![("S_FILE", file.clone())])).unwrap();
        assert_eq!(
            from_file.as_deref(),
            Some("s3cret"),
            "trailing newline dropped"
        );
        let direct = secret_from("S", env(vec![("S", "x".into())])).unwrap();
        assert_eq!(direct.as_deref(), Some("x"));
        assert_eq!(secret_from("S", env(vec![])).unwrap(), None);
        let both = secret_from("S", env(vec![("S", "x".into()), ("S_FILE", file.clone())]));
        let err = both.unwrap_err().to_string();
        assert!(err.contains("not both") && !err.contains("s3cret"), "{err}");
        let missing = secret_from("S", env(vec![("S_FILE", "/nonexistent/secret".into())]));
        assert!(missing.unwrap_err().to_string().contains("S_FILE"));
        std::fs::write(&path, "\n").unwrap();
        assert!(
            secret_from("S", env(vec![("S_FILE", file)])).is_err(),
            "empty"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn parse_accepts_valid_values() {
        assert_eq!(parse_value::<u64>("X", "42").unwrap(), 42);
    }
}
