//! Peers found by DNS: `dns+http://name:port` means "every A/AAAA record of
//! `name` is a peer on `port`", resolved again whenever the caller asks (the
//! balancer at every poll round, the entry service about once a second).
//! This is how replicas of one Swarm or Kubernetes service are found
//! (`tasks.<service>`, a headless Service) without listing them.
//!
//! The resolver is a value, so tests inject one that makes peers join and
//! leave; [`system_resolver`] asks the system (`getaddrinfo`, on tokio's
//! blocking pool, never on an actor's thread).

use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::LocalBoxFuture;

/// Resolves a host name to its addresses.
pub type Resolver =
    Arc<dyn Fn(String) -> LocalBoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

/// The system's resolver.
pub fn system_resolver() -> Resolver {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

/// A `dns+http://name:port` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSource {
    pub host: String,
    pub port: u16,
}

impl DnsSource {
    /// The base URL of the peer at `ip`, e.g. `http://10.0.1.7:8000`.
    pub fn url(&self, ip: IpAddr) -> String {
        match ip {
            IpAddr::V4(v4) => format!("http://{v4}:{}", self.port),
            IpAddr::V6(v6) => format!("http://[{v6}]:{}", self.port),
        }
    }
}

/// One entry of a list of peers: a base URL, or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Url(String),
    Dns(DnsSource),
}

/// Parses `http://host:port` or `dns+http://name:port`.
pub fn parse_target(entry: &str) -> std::result::Result<Target, String> {
    let entry = entry.trim().trim_end_matches('/');
    if let Some(rest) = entry.strip_prefix("dns+http://") {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or("a DNS name needs a port, e.g. dns+http://tasks.substation:8000")?;
        let port = port
            .parse::<u16>()
            .map_err(|e| format!("bad port {port:?}: {e}"))?;
        if host.is_empty() || host.contains('/') {
            return Err(format!("bad host name {host:?}"));
        }
        Ok(Target::Dns(DnsSource {
            host: host.to_string(),
            port,
        }))
    } else if entry.starts_with("http://") {
        Ok(Target::Url(entry.to_string()))
    } else {
        Err("must start with http:// or dns+http://".into())
    }
}

/// Parses a comma-separated list of targets; `name` is the variable, for
/// messages.
pub fn parse_targets(name: &str, raw: &str) -> crate::Result<Vec<Target>> {
    let targets = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|e| {
            parse_target(e)
                .map_err(|why| crate::Error::config(format!("{name} entry {e:?}: {why}")))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    if targets.is_empty() {
        return Err(crate::Error::config(format!("{name} lists nothing")));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_urls_or_dns_names_with_a_port() {
        let t = parse_targets("X", " http://a:1/, dns+http://tasks.s:8000 ,").unwrap();
        assert_eq!(
            t,
            vec![
                Target::Url("http://a:1".into()),
                Target::Dns(DnsSource {
                    host: "tasks.s".into(),
                    port: 8000
                })
            ]
        );
        for bad in [
            "",
            " , ",
            "a:1",
            "dns+http://name",
            "dns+http://:80",
            "dns+http://n:port",
            "dns+http://a/b:1",
        ] {
            assert!(parse_targets("X", bad).is_err(), "{bad:?}");
        }
        let src = DnsSource {
            host: "h".into(),
            port: 8,
        };
        assert_eq!(src.url("10.0.0.1".parse().unwrap()), "http://10.0.0.1:8");
        assert_eq!(src.url("::1".parse().unwrap()), "http://[::1]:8");
    }
}
