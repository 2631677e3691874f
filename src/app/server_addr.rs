//! Parsing the server arguments users type: `stun:host[:port]`, `host`,
//! `host:port`, `[v6]:port`, `1.2.3.4`.

use std::net::SocketAddr;

use thiserror::Error;

pub const DEFAULT_STUN_PORT: u16 = 3478;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ServerAddrError {
    #[error("empty server address")]
    Empty,
    #[error("unsupported scheme {0:?} (expected stun:)")]
    Scheme(String),
    #[error("invalid port in {0:?}")]
    Port(String),
    #[error("could not resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{0} has no address")]
    NoAddress(String),
}

/// Host and port of a STUN server, not yet resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerName {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

pub fn parse_stun_server(input: &str) -> Result<ServerName, ServerAddrError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(ServerAddrError::Empty);
    }
    let rest = match input.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("stun") => rest,
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("turn")
                || scheme.eq_ignore_ascii_case("turns")
                || scheme.eq_ignore_ascii_case("stuns") =>
        {
            return Err(ServerAddrError::Scheme(scheme.to_string()))
        }
        _ => input,
    };
    let rest = rest.trim_start_matches("//");
    if rest.is_empty() {
        return Err(ServerAddrError::Empty);
    }
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| ServerAddrError::Port(input.to_string()))?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p, input)?,
            None if after.is_empty() => DEFAULT_STUN_PORT,
            None => return Err(ServerAddrError::Port(input.to_string())),
        };
        return Ok(ServerName {
            host: host.to_string(),
            port,
        });
    }
    // A bare IPv6 address has several colons and no port.
    if rest.matches(':').count() > 1 {
        return Ok(ServerName {
            host: rest.to_string(),
            port: DEFAULT_STUN_PORT,
        });
    }
    match rest.split_once(':') {
        Some((host, port)) if !host.is_empty() => Ok(ServerName {
            host: host.to_string(),
            port: parse_port(port, input)?,
        }),
        Some(_) => Err(ServerAddrError::Empty),
        None => Ok(ServerName {
            host: rest.to_string(),
            port: DEFAULT_STUN_PORT,
        }),
    }
}

fn parse_port(p: &str, input: &str) -> Result<u16, ServerAddrError> {
    match p.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ServerAddrError::Port(input.to_string())),
    }
}

/// Resolves with the system resolver; the first address wins.
pub async fn resolve(name: &ServerName) -> Result<SocketAddr, ServerAddrError> {
    let mut addrs = tokio::net::lookup_host((name.host.as_str(), name.port))
        .await
        .map_err(|e| ServerAddrError::Resolve {
            host: name.host.clone(),
            reason: e.to_string(),
        })?;
    addrs
        .next()
        .ok_or_else(|| ServerAddrError::NoAddress(name.host.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str, host: &str, port: u16) {
        assert_eq!(
            parse_stun_server(s),
            Ok(ServerName {
                host: host.into(),
                port
            }),
            "{s}"
        );
    }

    #[test]
    fn accepts_the_forms_users_type() {
        ok("stun:stun.example.org", "stun.example.org", 3478);
        ok("stun:stun.example.org:19302", "stun.example.org", 19302);
        ok("203.0.113.10", "203.0.113.10", 3478);
        ok("203.0.113.10:3479", "203.0.113.10", 3479);
        ok("[2001:db8::1]:3478", "2001:db8::1", 3478);
        ok("[2001:db8::1]", "2001:db8::1", 3478);
        ok("2001:db8::1", "2001:db8::1", 3478);
        ok("STUN:host", "host", 3478);
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        assert_eq!(parse_stun_server(""), Err(ServerAddrError::Empty));
        assert_eq!(parse_stun_server("stun:"), Err(ServerAddrError::Empty));
        assert!(matches!(
            parse_stun_server("host:0"),
            Err(ServerAddrError::Port(_))
        ));
        assert!(matches!(
            parse_stun_server("host:99999"),
            Err(ServerAddrError::Port(_))
        ));
        assert!(matches!(
            parse_stun_server("host:abc"),
            Err(ServerAddrError::Port(_))
        ));
        assert!(matches!(
            parse_stun_server("turn:host"),
            Err(ServerAddrError::Scheme(_))
        ));
        assert!(matches!(
            parse_stun_server("[::1"),
            Err(ServerAddrError::Port(_))
        ));
    }
}
