//! The account flags every subcommand that uses a SIP account shares, and
//! turning them into a registration: URIs checked, the next hop resolved,
//! our local address found.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;
use thiserror::Error;

use crate::sip::digest::DigestCredentials;
use crate::sip::registration::RegistrationConfig;
use crate::sip::ua::UaConfig;
use crate::sip::uri::{Scheme, Uri};
use crate::sip::{Target, Transport};

#[derive(Args, Clone, Debug)]
pub struct AccountArgs {
    /// Configuration file (default: ~/.config/icephone/icephone.toml when
    /// it exists); the flags below override its account.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Address of record: sip:USER@DOMAIN (default: the config's first account).
    #[arg(long)]
    pub aor: Option<String>,
    /// Password for digest authentication.
    #[arg(long, env = "ICEPHONE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Authentication user name, when it differs from the AOR's user.
    #[arg(long)]
    pub auth_user: Option<String>,
    /// Registrar: sip:HOST[:PORT][;transport=udp|tcp]; the AOR's domain by default.
    #[arg(long)]
    pub registrar: Option<String>,
    /// Send every request through this proxy: sip:HOST[:PORT][;transport=udp|tcp].
    #[arg(long)]
    pub outbound_proxy: Option<String>,
    /// Registration lifetime to ask for, in seconds [default: 3600].
    #[arg(long)]
    pub expires: Option<u32>,
    /// Local SIP port (UDP and TCP); 0 picks a free one [default: 0].
    #[arg(long)]
    pub sip_port: Option<u16>,
    /// For SIP over TLS and turns: servers: trust the CA certificates in
    /// this PEM file besides the system's.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Error)]
pub enum AccountError {
    #[error("--{flag}: {reason}")]
    BadUri { flag: &'static str, reason: String },
    #[error("--aor must name a user: sip:USER@DOMAIN")]
    NoUser,
    #[error("--{flag}: transport {0:?} is not supported (udp, tcp or tls)", .transport)]
    Transport {
        flag: &'static str,
        transport: String,
    },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("--expires must be at least 1 second")]
    Expires,
    #[error("no account: give --aor, or an [[account]] in the config file")]
    NoAccount,
    #[error("no password for {0}: give --password (or ICEPHONE_PASSWORD), or password or password_command in the config file")]
    NoPassword(String),
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
}

/// The next hop of an account: the URI's host resolved (A/AAAA records;
/// no NAPTR/SRV lookups), its port (5060, or 5061 over TLS), its transport
/// (TLS for a `sips:` URI).
pub async fn resolve_hop(uri: &Uri, flag: &'static str) -> Result<Target, AccountError> {
    let transport = match (uri.transport(), &uri.scheme) {
        (None, Scheme::Sips) => Transport::Tls,
        (None, _) => Transport::Udp,
        (Some(t), scheme) => match Transport::parse(t) {
            Some(Transport::Tls) => Transport::Tls,
            Some(t) if *scheme != Scheme::Sips => t,
            _ => {
                return Err(AccountError::Transport {
                    flag,
                    transport: t.to_owned(),
                })
            }
        },
    };
    let default_port = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    let port = uri.port.unwrap_or(default_port);
    let host = uri.host.to_string();
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let resolved = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| AccountError::Resolve {
            host: host.clone(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| AccountError::Resolve {
            host: host.clone(),
            reason: "no address".into(),
        })?;
    Ok(Target {
        transport,
        addr: resolved,
    })
}

/// A `sip:` URI, or `sips:` where `secure` allows it (a registrar or
/// proxy reached over TLS).
pub fn parse_sip_uri(input: &str, flag: &'static str) -> Result<Uri, AccountError> {
    parse_uri(input, flag, false)
}

fn parse_uri(input: &str, flag: &'static str, secure: bool) -> Result<Uri, AccountError> {
    let uri: Uri = input.trim().parse().map_err(|e| AccountError::BadUri {
        flag,
        reason: format!("{e} (expected sip:…)"),
    })?;
    match uri.scheme {
        Scheme::Sip => Ok(uri),
        Scheme::Sips if secure => Ok(uri),
        _ => Err(AccountError::BadUri {
            flag,
            reason: format!("{input:?} is not a sip: URI"),
        }),
    }
}

/// The local address that routes to `to` (no packet is sent).
pub fn local_ip_towards(to: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(to)?;
    Ok(probe.local_addr()?.ip())
}

/// Everything the UA needs, but the local port (known once bound).
pub struct Account {
    /// The local SIP port to bind (0: a free one).
    pub sip_port: u16,
    /// Extra CA certificates for a TLS next hop.
    pub ca: Option<std::path::PathBuf>,
    pub aor: Uri,
    pub registrar: Uri,
    pub route: Option<Uri>,
    pub next_hop: Target,
    /// The host the next hop was named by (what its TLS certificate names).
    pub next_hop_host: String,
    pub credentials: DigestCredentials,
    pub expires: u32,
}

impl AccountArgs {
    /// The flags over the configuration file's account.
    pub fn merged(&self) -> Result<AccountArgs, AccountError> {
        let config = super::config::Config::find(self.config.as_deref())?;
        let Some(file) = config.account(self.aor.as_deref()) else {
            return Ok(self.clone());
        };
        let password = match &self.password {
            Some(p) => Some(p.clone()),
            None => file.password()?,
        };
        Ok(AccountArgs {
            config: self.config.clone(),
            aor: Some(self.aor.clone().unwrap_or_else(|| file.aor.clone())),
            password,
            auth_user: self.auth_user.clone().or(file.auth_user.clone()),
            registrar: self.registrar.clone().or(file.registrar.clone()),
            outbound_proxy: self.outbound_proxy.clone().or(file.outbound_proxy.clone()),
            expires: self.expires.or(file.expires),
            sip_port: self.sip_port.or(file.sip_port),
            ca: self.ca.clone().or(file.ca.clone()),
        })
    }

    pub async fn resolve(&self) -> Result<Account, AccountError> {
        let args = self.merged()?;
        let aor_text = args.aor.as_deref().ok_or(AccountError::NoAccount)?;
        let aor = parse_sip_uri(aor_text, "aor")?;
        let user = aor.user.clone().ok_or(AccountError::NoUser)?;
        let password = args
            .password
            .clone()
            .ok_or_else(|| AccountError::NoPassword(aor_text.to_owned()))?;
        let expires = args.expires.unwrap_or(3600);
        if expires == 0 {
            return Err(AccountError::Expires);
        }
        let registrar = match &args.registrar {
            Some(r) => parse_uri(r, "registrar", true)?,
            None => {
                let mut r = aor.clone();
                r.user = None;
                r.password = None;
                r.params.clear();
                r.headers.clear();
                r
            }
        };
        let (route, next_hop, next_hop_host) = match &args.outbound_proxy {
            Some(p) => {
                let mut proxy = parse_uri(p, "outbound-proxy", true)?;
                let hop = resolve_hop(&proxy, "outbound-proxy").await?;
                let host = proxy.host.to_string();
                proxy.set_param("lr", None);
                (Some(proxy), hop, host)
            }
            None => (
                None,
                resolve_hop(&registrar, "registrar").await?,
                registrar.host.to_string(),
            ),
        };
        Ok(Account {
            credentials: DigestCredentials {
                username: args.auth_user.clone().unwrap_or(user),
                password,
            },
            sip_port: args.sip_port.unwrap_or(0),
            ca: args.ca.clone(),
            aor,
            registrar,
            route,
            next_hop,
            next_hop_host,
            expires,
        })
    }
}

impl Account {
    /// The UA configuration for a UA whose sockets are at `local`.
    pub fn ua_config(&self, local: SocketAddr) -> UaConfig {
        UaConfig {
            registration: RegistrationConfig {
                aor: self.aor.clone(),
                registrar: self.registrar.clone(),
                route: self.route.clone(),
                credentials: self.credentials.clone(),
                expires: self.expires,
                transport: self.next_hop.transport,
                local,
                fix_contact: true,
                gruu: true,
                user_agent: concat!("icephone/", env!("CARGO_PKG_VERSION")).to_owned(),
            },
            next_hop: self.next_hop,
            keepalive: Some(Duration::from_secs(
                if self.next_hop.transport.is_reliable() {
                    30
                } else {
                    25
                },
            )),
            timers: Default::default(),
        }
    }
}
