//! `icephone serve`: the tokio driver around the sans-IO STUN/TURN server
//! core (`turn::TurnServer`), and (`sip`) the registrar and proxy.
//!
//! Owns: the listening UDP sockets and TCP (and TLS) listeners, one UDP socket per
//! relayed address, the clock and the shutdown signal; one log line per
//! allocation. Must not touch: protocol decisions (all in the core) or
//! anything of calls and media.
//!
//! Shape: the core sits behind one mutex. Each socket has a reader task
//! that takes the lock once per wake-up and then handles every datagram
//! already queued on the socket (up to a batch) before letting go, so under
//! load a lock and a wake-up are paid per batch, not per packet. Sends are
//! non-blocking (`try_send_to`): a full socket buffer drops the datagram and
//! counts it, as a router would.

pub mod sip;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::stun::AddressFamily;
use crate::turn::{
    ClientLink, ClientTransport, RelayAllocError, RelayAllocator, ServerEvent, ServerOutput,
    StreamDecoder, TurnServer, TurnServerConfig, TurnServerStats,
};

/// Datagrams handled per lock acquisition.
const BATCH: usize = 64;
/// Open TCP connections at most; more are refused (closed at once).
const MAX_TCP_CONNECTIONS: usize = 1024;
/// Frames queued towards one TCP client before further ones are dropped.
const TCP_QUEUE: usize = 256;
/// A TLS client that has not finished its handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Addresses to listen on. Two addresses of one family turn on RFC 5780
    /// (the second one, with port + 1, is the alternate).
    pub listen: Vec<IpAddr>,
    /// 0 picks a free port (the same one for UDP and TCP).
    pub port: u16,
    /// Answer RFC 5780 behaviour-discovery requests; needs two addresses of
    /// one family in `listen`.
    pub rfc5780: bool,
    pub turn: TurnServerConfig,
    /// TURN over TLS (`turns:`) on a port of its own.
    pub tls: Option<ServeTls>,
    /// The SIP registrar and proxy, for the same users and realm.
    pub sip: Option<SipSettings>,
}

#[derive(Clone, Debug)]
pub struct SipSettings {
    /// UDP and TCP; 0 picks a free one.
    pub port: u16,
    /// Shortest registration accepted (423 below).
    pub min_expires: u32,
    /// Port of SIP over TLS, served when `ServeConfig::tls` has a
    /// certificate; 0 picks a free one.
    pub tls_port: u16,
    /// Digest algorithms challenged with, preferred first.
    pub digest: Vec<crate::sip::digest::DigestAlgorithm>,
}

#[derive(Clone)]
pub struct ServeTls {
    pub config: Arc<rustls::ServerConfig>,
    /// 0 picks a free port.
    pub port: u16,
}

impl std::fmt::Debug for ServeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration holds the private key: never printed.
        f.debug_struct("ServeTls")
            .field("port", &self.port)
            .finish()
    }
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("no address to listen on (give --listen IP)")]
    NoListenAddress,
    #[error("{0} is not a concrete address: relayed addresses are handed to clients, give a specific IP")]
    Unspecified(IpAddr),
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: io::Error,
    },
}

/// A running server: the addresses it ended up on, and how to stop it.
pub struct Server {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    ctx: Arc<Ctx>,
    tasks: Vec<JoinHandle<()>>,
}

struct Ctx {
    shared: Mutex<Shared>,
}

struct Shared {
    core: TurnServer,
    udp: HashMap<SocketAddr, Arc<UdpSocket>>,
    relays: HashMap<SocketAddr, Relay>,
    tcp: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>,
    /// Relay sockets bound during the current call, awaiting a reader task.
    fresh: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Ports held for a RESERVATION-TOKEN (EVEN-PORT with R): bound, so no
    /// one else gets them, but not read until an allocation claims them.
    reserved: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// Relays claimed from `reserved` that still need a reader task.
    unread: Vec<SocketAddr>,
    send_drops: u64,
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds every socket, then serves in background tasks until
    /// [`shutdown`](Self::shutdown).
    pub async fn start(config: ServeConfig) -> Result<Server, ServeError> {
        if config.listen.is_empty() {
            return Err(ServeError::NoListenAddress);
        }
        if let Some(ip) = config.listen.iter().find(|ip| ip.is_unspecified()) {
            return Err(ServeError::Unspecified(*ip));
        }
        let (udp_sockets, port) = bind_udp(&config.listen, config.port).await?;
        let mut turn = config.turn.clone();
        turn.primary = SocketAddr::new(config.listen[0], port);
        turn.alternate = if config.rfc5780 {
            alternate_of(&config.listen, port)
        } else {
            None
        };
        let mut extra = Vec::new();
        if let Some(alt) = turn.alternate {
            // RFC 5780 answers from A1:P2 and A2:P1 too.
            for addr in [
                SocketAddr::new(config.listen[0], alt.port()),
                SocketAddr::new(alt.ip(), port),
                alt,
            ] {
                if !udp_sockets.iter().any(|(a, _)| *a == addr) {
                    extra.push(bind_one_udp(addr).await?);
                }
            }
        }
        let listeners = bind_tcp(&config.listen, port).await?;
        let tls_listeners = match &config.tls {
            Some(tls) => bind_tcp(&config.listen, tls.port).await?,
            None => Vec::new(),
        };
        let core = TurnServer::new(turn, Box::new(StdRng::from_os_rng()));
        let mut udp = HashMap::new();
        for (addr, s) in udp_sockets.into_iter().chain(extra) {
            udp.insert(addr, Arc::new(s));
        }
        let ctx = Arc::new(Ctx {
            shared: Mutex::new(Shared {
                core,
                udp: udp.clone(),
                relays: HashMap::new(),
                tcp: HashMap::new(),
                fresh: Vec::new(),
                reserved: HashMap::new(),
                unread: Vec::new(),
                send_drops: 0,
            }),
        });
        let mut tasks = Vec::new();
        let mut udp_addrs: Vec<SocketAddr> = udp.keys().copied().collect();
        udp_addrs.sort();
        for (addr, socket) in udp {
            tasks.push(tokio::spawn(client_udp_reader(ctx.clone(), socket, addr)));
        }
        let mut tcp_addrs = Vec::new();
        for (addr, l) in listeners {
            tcp_addrs.push(addr);
            tasks.push(tokio::spawn(tcp_acceptor(ctx.clone(), l, None)));
        }
        let mut tls_addrs = Vec::new();
        if let Some(tls) = &config.tls {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
            for (addr, l) in tls_listeners {
                tls_addrs.push(addr);
                tasks.push(tokio::spawn(tcp_acceptor(
                    ctx.clone(),
                    l,
                    Some(acceptor.clone()),
                )));
            }
        }
        tasks.push(tokio::spawn(timer(ctx.clone())));
        Ok(Server {
            udp: udp_addrs,
            tcp: tcp_addrs,
            tls: tls_addrs,
            ctx,
            tasks,
        })
    }

    pub fn stats(&self) -> TurnServerStats {
        self.ctx.lock().core.stats()
    }

    /// Ends every allocation (logged), closes every socket.
    pub fn shutdown(self) {
        {
            let mut shared = self.ctx.lock();
            shared.core.shutdown();
            drain_events(&mut shared);
            for (_, r) in shared.relays.drain() {
                if let Some(t) = r.reader {
                    t.abort();
                }
            }
            shared.tcp.clear();
            shared.reserved.clear();
            let stats = shared.core.stats();
            tracing::info!(
                relayed_to_peer = stats.relayed_to_peer_packets,
                relayed_to_client = stats.relayed_to_client_packets,
                malformed = stats.malformed,
                auth_failures = stats.auth_failures,
                send_drops = shared.send_drops,
                "server stopped"
            );
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

impl Ctx {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock is a bug; the state is still the
        // best there is, so keep serving rather than poison every task.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn alternate_of(listen: &[IpAddr], port: u16) -> Option<SocketAddr> {
    let first = listen.first()?;
    let second = listen
        .iter()
        .skip(1)
        .find(|ip| ip.is_ipv4() == first.is_ipv4())?;
    Some(SocketAddr::new(*second, port.checked_add(1)?))
}

async fn bind_one_udp(addr: SocketAddr) -> Result<(SocketAddr, UdpSocket), ServeError> {
    let s = UdpSocket::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
    let local = s.local_addr().map_err(|source| ServeError::Bind {
        addr,
        proto: "udp",
        source,
    })?;
    Ok((local, s))
}

/// Binds UDP on every listen address with one port; port 0 takes the
/// kernel's pick for the first address and reuses it for the rest.
async fn bind_udp(
    listen: &[IpAddr],
    port: u16,
) -> Result<(Vec<(SocketAddr, UdpSocket)>, u16), ServeError> {
    let mut out = Vec::new();
    let mut port = port;
    for ip in listen {
        let (addr, s) = bind_one_udp(SocketAddr::new(*ip, port)).await?;
        port = addr.port();
        out.push((addr, s));
    }
    Ok((out, port))
}

/// Binds a TCP listener on every listen address with one port, as
/// [`bind_udp`] does.
async fn bind_tcp(
    listen: &[IpAddr],
    port: u16,
) -> Result<Vec<(SocketAddr, TcpListener)>, ServeError> {
    let mut out = Vec::new();
    let mut port = port;
    for ip in listen {
        let addr = SocketAddr::new(*ip, port);
        let bind_error = |source| ServeError::Bind {
            addr,
            proto: "tcp",
            source,
        };
        let l = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = l.local_addr().map_err(bind_error)?;
        port = local.port();
        out.push((local, l));
    }
    Ok(out)
}

/// Binds relay sockets for the core, on the address the client reached us at.
struct SocketAllocator<'a> {
    fresh: &'a mut Vec<(SocketAddr, Arc<UdpSocket>)>,
    reserved: &'a mut HashMap<SocketAddr, Arc<UdpSocket>>,
}

/// Kernel-chosen ports are random, so an even port (with its odd neighbour
/// free) may take a few tries.
const EVEN_PORT_TRIES: usize = 32;

fn bind_relay(ip: IpAddr, port: u16) -> Result<(SocketAddr, std::net::UdpSocket), RelayAllocError> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port))
        .map_err(|e| RelayAllocError::Bind(e.to_string()))?;
    let addr = socket
        .local_addr()
        .map_err(|e| RelayAllocError::Bind(e.to_string()))?;
    Ok((addr, socket))
}

fn into_tokio(socket: std::net::UdpSocket) -> Result<Arc<UdpSocket>, RelayAllocError> {
    socket
        .set_nonblocking(true)
        .map_err(|e| RelayAllocError::Bind(e.to_string()))?;
    UdpSocket::from_std(socket)
        .map(Arc::new)
        .map_err(|e| RelayAllocError::Bind(e.to_string()))
}

fn relay_ip(family: AddressFamily, client: &ClientLink) -> Result<IpAddr, RelayAllocError> {
    let ip = client.local.ip();
    if matches!(family, AddressFamily::V6) != ip.is_ipv6() {
        return Err(RelayAllocError::FamilyUnsupported(family));
    }
    Ok(ip)
}

impl RelayAllocator for SocketAllocator<'_> {
    fn allocate(
        &mut self,
        family: AddressFamily,
        even_port: bool,
        client: &ClientLink,
    ) -> Result<SocketAddr, RelayAllocError> {
        let ip = relay_ip(family, client)?;
        for _ in 0..if even_port { EVEN_PORT_TRIES } else { 1 } {
            let (addr, socket) = bind_relay(ip, 0)?;
            if even_port && addr.port() % 2 == 1 {
                continue;
            }
            self.fresh.push((addr, into_tokio(socket)?));
            return Ok(addr);
        }
        Err(RelayAllocError::Exhausted)
    }

    fn allocate_even_pair(
        &mut self,
        family: AddressFamily,
        client: &ClientLink,
    ) -> Result<(SocketAddr, SocketAddr), RelayAllocError> {
        let ip = relay_ip(family, client)?;
        for _ in 0..EVEN_PORT_TRIES {
            let (addr, socket) = bind_relay(ip, 0)?;
            if addr.port() % 2 == 1 || addr.port() == u16::MAX {
                continue;
            }
            // The neighbour may be taken; then try another pair.
            let Ok((next, next_socket)) = bind_relay(ip, addr.port() + 1) else {
                continue;
            };
            self.fresh.push((addr, into_tokio(socket)?));
            self.reserved.insert(next, into_tokio(next_socket)?);
            return Ok((addr, next));
        }
        Err(RelayAllocError::Exhausted)
    }
}

impl Shared {
    fn on_client(&mut self, now: Instant, link: ClientLink, data: &[u8]) {
        let mut alloc = SocketAllocator {
            fresh: &mut self.fresh,
            reserved: &mut self.reserved,
        };
        let out = self.core.handle_client(now, link, data, &mut alloc);
        send(
            &self.udp,
            &self.relays,
            &self.tcp,
            &mut self.send_drops,
            out,
        );
    }

    fn on_peer(&mut self, now: Instant, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let out = self.core.handle_peer(now, relay, peer, data);
        send(
            &self.udp,
            &self.relays,
            &self.tcp,
            &mut self.send_drops,
            out,
        );
    }
}

fn send(
    udp: &HashMap<SocketAddr, Arc<UdpSocket>>,
    relays: &HashMap<SocketAddr, Relay>,
    tcp: &HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>,
    drops: &mut u64,
    out: ServerOutput<'_>,
) {
    let ok = match out {
        ServerOutput::None => true,
        ServerOutput::ToPeer { from, to, data } => relays
            .get(&from)
            .is_some_and(|r| r.socket.try_send_to(data, to).is_ok()),
        ServerOutput::ToClient { link, data } => match link.transport {
            ClientTransport::Udp => udp
                .get(&link.local)
                .is_some_and(|s| s.try_send_to(data, link.remote).is_ok()),
            ClientTransport::Tcp | ClientTransport::Tls => tcp
                .get(&(link.local, link.remote))
                .is_some_and(|tx| tx.try_send(data.to_vec()).is_ok()),
        },
    };
    if !ok {
        *drops += 1;
    }
}

/// After a batch: reader tasks for new relay sockets, and the log lines and
/// socket closing the core's events ask for.
fn after_batch(ctx: &Arc<Ctx>, shared: &mut Shared) {
    for (addr, socket) in shared.fresh.drain(..) {
        let reader = tokio::spawn(relay_reader(ctx.clone(), socket.clone(), addr));
        shared.relays.insert(
            addr,
            Relay {
                socket,
                reader: Some(reader),
            },
        );
    }
    drain_events(shared);
    for addr in std::mem::take(&mut shared.unread) {
        // Gone already if the allocation ended within the same batch.
        if let Some(relay) = shared.relays.get_mut(&addr) {
            if relay.reader.is_none() {
                let socket = relay.socket.clone();
                relay.reader = Some(tokio::spawn(relay_reader(ctx.clone(), socket, addr)));
            }
        }
    }
}

fn drain_events(shared: &mut Shared) {
    while let Some(event) = shared.core.poll_event() {
        match event {
            ServerEvent::AllocationCreated {
                user,
                client,
                relay,
                lifetime,
            } => {
                tracing::info!(
                    %user,
                    client = %client.remote,
                    transport = ?client.transport,
                    %relay,
                    lifetime_s = lifetime.as_secs(),
                    "allocation created"
                );
                // A claimed reservation: its socket becomes a relay, read
                // from the end of this batch (`after_batch`).
                if let Some(socket) = shared.reserved.remove(&relay) {
                    shared.relays.insert(
                        relay,
                        Relay {
                            socket,
                            reader: None,
                        },
                    );
                    shared.unread.push(relay);
                }
            }
            ServerEvent::ReservationEnded { relay } => {
                tracing::debug!(%relay, "port reservation ended");
                shared.reserved.remove(&relay);
            }
            ServerEvent::AllocationEnded {
                user,
                client,
                relay,
                reason,
            } => {
                tracing::info!(%user, client = %client.remote, %relay, ?reason, "allocation ended");
                if let Some(r) = shared.relays.remove(&relay) {
                    if let Some(t) = r.reader {
                        t.abort();
                    }
                }
            }
        }
    }
}

fn transient(e: &io::Error) -> bool {
    // ICMP port unreachable from an earlier send surfaces on Linux as a
    // receive error; it says nothing about this socket.
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn client_udp_reader(ctx: Arc<Ctx>, socket: Arc<UdpSocket>, local: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let mut shared = ctx.lock();
                let now = Instant::now();
                let link = |remote| ClientLink {
                    transport: ClientTransport::Udp,
                    local,
                    remote,
                };
                shared.on_client(now, link(from), &buf[..n]);
                for _ in 1..BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => shared.on_client(now, link(from), &buf[..n]),
                        Err(_) => break,
                    }
                }
                after_batch(&ctx, &mut shared);
            }
            Err(e) if transient(&e) => {}
            Err(e) => {
                tracing::error!(%local, error = %e, "UDP socket failed; its reader stops");
                return;
            }
        }
    }
}

async fn relay_reader(ctx: Arc<Ctx>, socket: Arc<UdpSocket>, relay: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let mut shared = ctx.lock();
                let now = Instant::now();
                shared.on_peer(now, relay, from, &buf[..n]);
                for _ in 1..BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => shared.on_peer(now, relay, from, &buf[..n]),
                        Err(_) => break,
                    }
                }
                drain_events(&mut shared);
            }
            Err(e) if transient(&e) => {}
            Err(e) => {
                tracing::warn!(%relay, error = %e, "relay socket failed; its reader stops");
                return;
            }
        }
    }
}

async fn timer(ctx: Arc<Ctx>) {
    loop {
        let wake = {
            let shared = ctx.lock();
            shared.core.poll_timeout()
        };
        let cap = Instant::now() + Duration::from_secs(1);
        let at = wake.map_or(cap, |w| w.min(cap));
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let mut shared = ctx.lock();
        shared.core.handle_timeout(Instant::now());
        drain_events(&mut shared);
    }
}

async fn tcp_acceptor(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let full = ctx.lock().tcp.len() >= MAX_TCP_CONNECTIONS;
                if full {
                    tracing::warn!(%remote, "TCP connection refused: too many open");
                    continue;
                }
                let Ok(local) = stream.local_addr() else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                match tls.clone() {
                    None => {
                        let link = ClientLink {
                            transport: ClientTransport::Tcp,
                            local,
                            remote,
                        };
                        tokio::spawn(stream_connection(ctx, stream, link));
                    }
                    Some(acceptor) => {
                        let link = ClientLink {
                            transport: ClientTransport::Tls,
                            local,
                            remote,
                        };
                        // The handshake runs in the connection's task so a
                        // slow client cannot hold up the accept loop.
                        tokio::spawn(async move {
                            let handshake = acceptor.accept(stream);
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                                Ok(Ok(tls)) => stream_connection(ctx, tls, link).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%remote, error = %e, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One TCP or TLS client: frames in through the decoder, frames out through
/// a queue drained by a writer task.
async fn stream_connection<S>(ctx: Arc<Ctx>, stream: S, link: ClientLink)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (local, remote) = (link.local, link.remote);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    ctx.lock().tcp.insert((local, remote), tx);
    let write_task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
            // Flush only when the queue is empty: a burst goes out in as
            // few TLS records (and TCP segments) as it can.
            if rx.is_empty() && writer.flush().await.is_err() {
                return;
            }
        }
    });
    let mut decoder = StreamDecoder::new();
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.push(&chunk[..n]);
        let mut shared = ctx.lock();
        let now = Instant::now();
        loop {
            match decoder.next_message() {
                Ok(Some(frame)) => shared.on_client(now, link, frame),
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "closing a stream client that sent garbage");
                    after_batch(&ctx, &mut shared);
                    break 'read;
                }
            }
        }
        after_batch(&ctx, &mut shared);
    }
    let mut shared = ctx.lock();
    shared.tcp.remove(&(local, remote));
    // RFC 8656 §3.1: an allocation over TCP lives as long as its connection.
    shared.core.close_link(link);
    drain_events(&mut shared);
    drop(shared);
    write_task.abort();
}

/// `icephone serve`: runs until Ctrl-C or SIGTERM.
pub async fn run(config: ServeConfig) -> Result<(), ServeError> {
    let server = Server::start(config.clone()).await?;
    let sip = match config.sip {
        Some(settings) => Some(
            sip::SipServer::start(sip::SipServerConfig {
                listen: config.listen.clone(),
                port: settings.port,
                realm: config.turn.realm.clone(),
                users: config.turn.users.clone(),
                min_expires: settings.min_expires,
                digest: settings.digest.clone(),
                tls: config
                    .tls
                    .as_ref()
                    .map(|t| (t.config.clone(), settings.tls_port)),
            })
            .await
            .map_err(|source| ServeError::Bind {
                addr: SocketAddr::new(config.listen[0], settings.port),
                proto: "sip",
                source,
            })?,
        ),
        None => None,
    };
    let udp: Vec<String> = server.udp.iter().map(|a| a.to_string()).collect();
    let tcp: Vec<String> = server.tcp.iter().map(|a| a.to_string()).collect();
    let tls: Vec<String> = server.tls.iter().map(|a| a.to_string()).collect();
    // One parseable line for scripts and tests, then the human summary.
    let mut line = format!("listening udp={} tcp={}", udp.join(","), tcp.join(","));
    if !tls.is_empty() {
        line.push_str(&format!(" tls={}", tls.join(",")));
    }
    if let Some(sip) = &sip {
        let addrs: Vec<String> = sip.addrs.iter().map(|a| a.to_string()).collect();
        line.push_str(&format!(" sip={}", addrs.join(",")));
        if !sip.tls_addrs.is_empty() {
            let tls: Vec<String> = sip.tls_addrs.iter().map(|a| a.to_string()).collect();
            line.push_str(&format!(" sips={}", tls.join(",")));
        }
    }
    println!("{line}");
    println!(
        "icephone serve: STUN/TURN{}, realm {:?}, {} user(s){}; Ctrl-C to stop",
        if sip.is_some() {
            " and SIP registrar/proxy"
        } else {
            ""
        },
        config.turn.realm,
        config.turn.users.len(),
        if server.udp.len() >= 4 {
            ", RFC 5780 on"
        } else {
            ""
        }
    );
    crate::net::shutdown_signal().await;
    if let Some(sip) = sip {
        sip.shutdown().await;
    }
    server.shutdown();
    println!("icephone serve: stopped");
    Ok(())
}
