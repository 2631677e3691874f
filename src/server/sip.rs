//! The SIP side of `icephone serve`: the registrar and stateful proxy core
//! (`sip::proxy::Proxy`) behind UDP and TCP on one port per listen address.
//!
//! Owns: the SIP sockets and the proxy's clock. Must not touch: SIP
//! decisions (all in the core).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::net::sip_transport::{Incoming, SipSockets, SipTls};
use crate::sip::proxy::{Proxy, ProxyConfig, ProxyStats};
use crate::sip::registrar::RegistrarConfig;
use crate::sip::{Target, Transport};

pub struct SipServerConfig {
    pub listen: Vec<IpAddr>,
    /// 0 picks a free port (the same for every address, when it can).
    pub port: u16,
    pub realm: String,
    pub users: HashMap<String, String>,
    /// Shortest registration accepted (423 below).
    pub min_expires: u32,
    /// SIP over TLS on this port (0: a free one) with this certificate.
    pub tls: Option<(Arc<rustls::ServerConfig>, u16)>,
    /// Digest algorithms to challenge with, preferred first (empty: SHA-256
    /// then MD5).
    pub digest: Vec<crate::sip::digest::DigestAlgorithm>,
}

pub struct SipServer {
    /// One address per listen IP; UDP and TCP share it.
    pub addrs: Vec<SocketAddr>,
    /// The TLS listeners, one per listen IP.
    pub tls_addrs: Vec<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<ProxyStats>,
}

impl SipServer {
    pub async fn start(config: SipServerConfig) -> io::Result<SipServer> {
        let mut sockets = Vec::new();
        let (tx, rx) = mpsc::channel(1024);
        let mut port = config.port;
        let mut tls = config.tls.clone();
        let mut forwarders = Vec::new();
        for ip in &config.listen {
            let setup = SipTls {
                server: tls.clone(),
                client: None,
            };
            let (s, mut incoming) = SipSockets::bind_with_tls(*ip, port, setup).await?;
            // The first address's ports, again for the others.
            port = s.local_udp()?.port();
            if let (Some((_, tls_port)), Some(a)) = (tls.as_mut(), s.local_tls()) {
                *tls_port = a.port();
            }
            let tx = tx.clone();
            forwarders.push(tokio::spawn(async move {
                while let Some(m) = incoming.recv().await {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }));
            sockets.push(s);
        }
        let addrs: Vec<SocketAddr> = sockets
            .iter()
            .map(|s| s.local_udp())
            .collect::<io::Result<_>>()?;
        let tls_addrs: Vec<SocketAddr> = sockets.iter().filter_map(|s| s.local_tls()).collect();
        let mut local: Vec<Target> = addrs
            .iter()
            .flat_map(|a| {
                [Transport::Udp, Transport::Tcp].map(|transport| Target {
                    transport,
                    addr: *a,
                })
            })
            .collect();
        local.extend(tls_addrs.iter().map(|a| Target {
            transport: Transport::Tls,
            addr: *a,
        }));
        let mut registrar = RegistrarConfig::new(&config.realm, config.users);
        registrar.min_expires = config.min_expires;
        if !config.digest.is_empty() {
            registrar.digest = config.digest.clone();
        }
        let proxy = Proxy::new(ProxyConfig::new(registrar, local), StdRng::from_os_rng());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(proxy, sockets, rx, stopped, forwarders));
        Ok(SipServer {
            addrs,
            tls_addrs,
            stop,
            task,
        })
    }

    /// Stops serving; returns the proxy's counters.
    pub async fn shutdown(self) -> ProxyStats {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

async fn run(
    mut proxy: Proxy,
    sockets: Vec<SipSockets>,
    mut incoming: mpsc::Receiver<Incoming>,
    mut stopped: oneshot::Receiver<()>,
    forwarders: Vec<JoinHandle<()>>,
) -> ProxyStats {
    loop {
        while let Some(t) = proxy.poll_transmit() {
            let socket = sender_for(&sockets, t.target.addr);
            if let Err(e) = socket
                .send(t.target.transport, t.target.addr, t.bytes)
                .await
            {
                tracing::debug!(to = %t.target.addr, error = %e, "SIP send failed");
                proxy.transport_error(Instant::now(), t.target);
            }
        }
        let deadline = proxy
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            msg = incoming.recv() => match msg {
                // A closed connection's transactions end by their timers:
                // the proxy still owes answers it can send on a new one.
                Some(m) if m.closed.is_some() => {}
                Some(m) => {
                    let source = Target { transport: m.transport, addr: m.remote };
                    proxy.handle_message(Instant::now(), source, &m.bytes);
                }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => proxy.handle_timeout(Instant::now()),
            _ = &mut stopped => break,
        }
    }
    for f in forwarders {
        f.abort();
    }
    let stats = proxy.stats();
    tracing::info!(
        forwarded = stats.forwarded,
        relayed = stats.relayed,
        malformed = stats.malformed,
        bad_requests = stats.bad_requests,
        "SIP service stopped"
    );
    stats
}

/// The sockets to send to `to` from: same family, loopback for loopback.
fn sender_for(sockets: &[SipSockets], to: SocketAddr) -> &SipSockets {
    let fits = |s: &&SipSockets, loopback: bool| {
        s.local_udp().is_ok_and(|a| {
            a.is_ipv4() == to.is_ipv4()
                && (!loopback || a.ip().is_loopback() == to.ip().is_loopback())
        })
    };
    sockets
        .iter()
        .find(|s| fits(s, true))
        .or_else(|| sockets.iter().find(|s| fits(s, false)))
        .unwrap_or(&sockets[0])
}
