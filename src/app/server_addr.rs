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
    #[error("unsupported transport {0:?} (expected transport=udp or transport=tcp)")]
    Transport(String),
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

/// A TURN server as users write it (RFC 7065):
/// `turn:HOST[:PORT][?transport=udp|tcp]` or `turns:HOST[:PORT]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnServerName {
    pub name: ServerName,
    pub transport: crate::turn::TurnTransport,
}

pub const DEFAULT_TURNS_PORT: u16 = 5349;

pub fn parse_turn_server(input: &str) -> Result<TurnServerName, ServerAddrError> {
    use crate::turn::TurnTransport;
    let input = input.trim();
    let (scheme, rest) = input
        .split_once(':')
        .ok_or_else(|| ServerAddrError::Scheme(input.to_string()))?;
    let secure = if scheme.eq_ignore_ascii_case("turn") {
        false
    } else if scheme.eq_ignore_ascii_case("turns") {
        true
    } else {
        return Err(ServerAddrError::Scheme(scheme.to_string()));
    };
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let transport = match query {
        None => {
            if secure {
                TurnTransport::Tls
            } else {
                TurnTransport::Udp
            }
        }
        Some(q) => match q.strip_prefix("transport=").map(str::to_ascii_lowercase) {
            Some(t) if t == "udp" && !secure => TurnTransport::Udp,
            Some(t) if t == "tcp" && !secure => TurnTransport::Tcp,
            Some(t) if t == "tcp" => TurnTransport::Tls,
            _ => return Err(ServerAddrError::Transport(q.to_string())),
        },
    };
    let mut name = parse_stun_server(hostport)?;
    if secure && !has_port(hostport) {
        name.port = DEFAULT_TURNS_PORT;
    }
    Ok(TurnServerName { name, transport })
}

/// Whether `host[:port]` (or `[v6]:port`) names a port.
fn has_port(hostport: &str) -> bool {
    let h = hostport.trim().trim_start_matches("//");
    if let Some(rest) = h.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(_, p)| p.starts_with(':'));
    }
    h.matches(':').count() == 1
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
    fn turn_urls() {
        use crate::turn::TurnTransport::*;
        let t = |s: &str| parse_turn_server(s).map(|t| (t.name.to_string(), t.transport));
        assert_eq!(
            t("turn:relay.example.org"),
            Ok(("relay.example.org:3478".into(), Udp))
        );
        assert_eq!(
            t("turn:10.0.0.1:3479?transport=tcp"),
            Ok(("10.0.0.1:3479".into(), Tcp))
        );
        assert_eq!(
            t("TURN:[2001:db8::1]:80?transport=udp"),
            Ok(("[2001:db8::1]:80".into(), Udp))
        );
        assert_eq!(
            t("turns:relay.example.org"),
            Ok(("relay.example.org:5349".into(), Tls))
        );
        assert_eq!(
            t("turns:relay.example.org:443"),
            Ok(("relay.example.org:443".into(), Tls))
        );
        assert!(matches!(
            t("turn:h?transport=sctp"),
            Err(ServerAddrError::Transport(_))
        ));
        assert!(matches!(t("stun:h"), Err(ServerAddrError::Scheme(_))));
        assert!(matches!(
            t("relay.example.org"),
            Err(ServerAddrError::Scheme(_))
        ));
        assert!(matches!(t("turn:h:0"), Err(ServerAddrError::Port(_))));
        assert!(matches!(t("turn:"), Err(ServerAddrError::Empty)));
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
