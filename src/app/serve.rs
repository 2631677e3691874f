//! `icephone serve`: its flags, the `[serve]` table of the configuration
//! file they override, and the server configuration both resolve to.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize;

use crate::server::{ServeConfig, ServeTls, SipSettings};
use crate::sip::digest::DigestAlgorithm;
use crate::turn::TurnServerConfig;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file whose [serve] table these flags override
    /// (default: ~/.config/icephone/icephone.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (repeatable). Two addresses of one family
    /// turn on RFC 5780 NAT behaviour discovery. Default: every
    /// non-loopback address of this host.
    #[arg(long = "listen", value_name = "IP")]
    pub listen: Vec<IpAddr>,
    /// Port for STUN/TURN on UDP and TCP; 0 picks a free one [default: 3478].
    #[arg(long)]
    pub port: Option<u16>,
    /// Realm of the long-term credentials [default: icephone].
    #[arg(long)]
    pub realm: Option<String>,
    /// A user as NAME:PASSWORD (repeatable), for TURN and SIP. Without any,
    /// only STUN works.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,
    /// Allocations one user may hold at once (486 beyond) [default: 10].
    #[arg(long)]
    pub user_quota: Option<usize>,
    /// Allocations the server holds at once (508 beyond) [default: 10000].
    #[arg(long)]
    pub max_allocations: Option<usize>,
    /// Relay to loopback peers too (local tests and demos only).
    #[arg(long)]
    pub allow_loopback_peers: bool,
    /// Serve TURN over TLS too (turns:), with this PEM certificate chain.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Port for TURN over TLS; 0 picks a free one [default: 5349].
    #[arg(long)]
    pub tls_port: Option<u16>,
    /// Port of the SIP registrar and proxy (UDP and TCP); 0 picks a free
    /// one [default: 5060].
    #[arg(long)]
    pub sip_port: Option<u16>,
    /// Port of SIP over TLS (with --tls-cert); 0 picks a free one [default: 5061].
    #[arg(long)]
    pub sip_tls_port: Option<u16>,
    /// Serve STUN/TURN only, no SIP.
    #[arg(long)]
    pub no_sip: bool,
    /// Shortest SIP registration accepted, in seconds (423 below) [default: 60].
    #[arg(long)]
    pub min_expires: Option<u32>,
    /// Digest algorithms the registrar and proxy challenge with, most
    /// preferred first: sha-256,md5 (default). `md5` alone for clients
    /// that only try the first challenge (baresip 1.0).
    #[arg(long, value_delimiter = ',', value_name = "ALGS")]
    pub sip_digest: Vec<String>,
}

/// `[serve]` in the configuration file; every key has the flag's name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    pub listen: Option<Vec<IpAddr>>,
    pub port: Option<u16>,
    pub realm: Option<String>,
    /// `[serve.users]`: name = "password".
    pub users: Option<BTreeMap<String, String>>,
    pub user_quota: Option<usize>,
    pub max_allocations: Option<usize>,
    pub allow_loopback_peers: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_port: Option<u16>,
    pub sip: Option<bool>,
    pub sip_port: Option<u16>,
    pub sip_tls_port: Option<u16>,
    pub min_expires: Option<u32>,
    pub sip_digest: Option<Vec<String>>,
}

impl ServeArgs {
    /// The flags over the file's `[serve]` table over the defaults.
    pub fn resolve(self) -> Result<ServeConfig, String> {
        let file = super::config::Config::find(self.config.as_deref())
            .map_err(|e| e.to_string())?
            .serve;
        let mut digest = Vec::new();
        let names = if self.sip_digest.is_empty() {
            file.sip_digest.clone().unwrap_or_default()
        } else {
            self.sip_digest.clone()
        };
        for name in &names {
            match DigestAlgorithm::parse(Some(name.trim())) {
                Some(a @ (DigestAlgorithm::Md5 | DigestAlgorithm::Sha256)) => digest.push(a),
                _ => return Err(format!("--sip-digest: {name:?} is not md5 or sha-256")),
            }
        }
        let listen = if self.listen.is_empty() {
            file.listen.clone().unwrap_or_default()
        } else {
            self.listen.clone()
        };
        let rfc5780 = listen.len() >= 2;
        let listen = if listen.is_empty() {
            crate::net::interfaces::host_addresses(Default::default()).unwrap_or_default()
        } else {
            listen
        };
        let mut turn = TurnServerConfig {
            realm: self
                .realm
                .or(file.realm)
                .unwrap_or_else(|| "icephone".into()),
            user_quota: self.user_quota.or(file.user_quota).unwrap_or(10),
            total_allocations: self
                .max_allocations
                .or(file.max_allocations)
                .unwrap_or(10_000),
            allow_loopback_peers: self.allow_loopback_peers
                || file.allow_loopback_peers.unwrap_or(false),
            software: Some(concat!("icephone ", env!("CARGO_PKG_VERSION")).into()),
            ..Default::default()
        };
        turn.users.extend(file.users.unwrap_or_default());
        for u in &self.users {
            match u.split_once(':') {
                Some((name, password)) if !name.is_empty() => {
                    turn.users.insert(name.to_owned(), password.to_owned());
                }
                // Not echoed: whatever was typed may be a password.
                _ => return Err("--user expects NAME:PASSWORD with a non-empty NAME".into()),
            }
        }
        let cert = self.tls_cert.or(file.tls_cert);
        let key = self.tls_key.or(file.tls_key);
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(ServeTls {
                config: crate::net::tls::server_config(&cert, &key).map_err(|e| e.to_string())?,
                port: self.tls_port.or(file.tls_port).unwrap_or(5349),
            }),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        let sip = !self.no_sip && file.sip.unwrap_or(true);
        Ok(ServeConfig {
            listen,
            port: self.port.or(file.port).unwrap_or(3478),
            rfc5780,
            turn,
            tls,
            sip: sip.then(|| SipSettings {
                port: self.sip_port.or(file.sip_port).unwrap_or(5060),
                min_expires: self.min_expires.or(file.min_expires).unwrap_or(60),
                tls_port: self.sip_tls_port.or(file.sip_tls_port).unwrap_or(5061),
                digest,
            }),
        })
    }
}

pub async fn run(args: ServeArgs) -> ExitCode {
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match crate::server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn resolve(file: &str, flags: &[&str]) -> Result<ServeConfig, String> {
        let dir = std::env::temp_dir().join(format!("icephone-serve-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", flags.len()));
        std::fs::write(&path, file).unwrap();
        let mut argv = vec!["serve", "--config", path.to_str().unwrap()];
        argv.extend(flags);
        let r = Cli::parse_from(argv).serve.resolve();
        let _ = std::fs::remove_file(path);
        r
    }

    #[test]
    fn the_serve_table_fills_what_flags_leave_and_flags_win() {
        let file =
            "[serve]\nlisten = [\"127.0.0.1\"]\nport = 4000\nrealm = \"lab\"\nmin_expires = 30\n\
                    sip_digest = [\"md5\"]\n[serve.users]\nalice = \"pw1\"\n";
        let c = resolve(file, &[]).unwrap();
        assert_eq!((c.port, c.turn.realm.as_str()), (4000, "lab"));
        assert_eq!(c.turn.users.get("alice").map(String::as_str), Some("pw1"));
        let sip = c.sip.unwrap();
        assert_eq!(
            (sip.min_expires, sip.digest),
            (30, vec![DigestAlgorithm::Md5])
        );
        let c = resolve(file, &["--port", "5000", "--user", "bob:pw2", "--no-sip"]).unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.turn.users.len(), 2);
        assert!(c.sip.is_none());
        // Defaults where neither says.
        let c = resolve("", &["--listen", "127.0.0.1"]).unwrap();
        assert_eq!((c.port, c.turn.realm.as_str()), (3478, "icephone"));
        // A bad key names its line; a half TLS setup is refused.
        let err = resolve("[serve]\nport = 1\nrelay = true\n", &[]).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        let err = resolve("", &["--listen", "127.0.0.1", "--tls-cert", "/x.pem"]).unwrap_err();
        assert!(err.contains("--tls-key"), "{err}");
    }
}
