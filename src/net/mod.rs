//! The tokio driver: sockets and timers around the sans-IO cores.
//!
//! Owns: UDP sockets (one per media component and local address), the real
//! clock, and the loop that feeds datagrams and timeouts to a core and sends
//! what it returns. Demultiplexes by first byte (RFC 7983) so one socket
//! carries STUN, and later TURN ChannelData, RTP and RTCP.
//! Must not touch: protocol decisions — those live in the cores.

pub mod interfaces;
pub mod sip_transport;
pub mod sip_ua;
pub mod tls;
pub mod turn_link;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use rand::SeedableRng;

use crate::ice::{Candidate, IceAgent, IceCredentials, IceEvent};
use crate::ice::{IceTransport, Received as IceReceived};
use crate::turn::{TurnClientConfig, TurnTransport};
use tls::TlsClient;
use turn_link::TurnLink;

/// A TURN server a call allocates on: over UDP from the media socket
/// itself, or over a TCP or TLS connection of its own per component
/// (RFC 8656 §3.1: what gets a call out of a network that lets only TCP
/// out).
#[derive(Clone, Debug)]
pub struct RelayServer {
    pub config: TurnClientConfig,
    /// For `turns:`: the name the certificate must carry, and the trust.
    pub tls: Option<TlsClient>,
}

/// Where a transmit leaves from: a media socket, or a TURN connection's
/// writer (whose local address stands for it as the relay's base).
#[derive(Clone)]
enum Outlet {
    Udp(Arc<UdpSocket>),
    Stream(mpsc::UnboundedSender<Vec<u8>>),
}

/// What a datagram's first byte says it is (RFC 7983 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    Stun,
    Dtls,
    ChannelData,
    Rtp,
    Unknown,
}

pub fn classify(first_byte: u8) -> PacketKind {
    match first_byte {
        0..=3 => PacketKind::Stun,
        20..=63 => PacketKind::Dtls,
        64..=79 => PacketKind::ChannelData,
        128..=191 => PacketKind::Rtp,
        _ => PacketKind::Unknown,
    }
}

/// Commands from the call layer to a running ICE session.
#[derive(Debug)]
pub enum IceCommand {
    SetRemoteCredentials(IceCredentials),
    AddRemoteCandidate(Candidate),
    EndOfRemoteCandidates,
    SetControlling(bool),
    /// Ta, the pacing of new checks, as negotiated (RFC 8839 §5.5).
    SetPacing(std::time::Duration),
    /// A peer without ICE: media for the component goes to this address,
    /// latching onto where the peer's media really comes from.
    SetPlainPeer {
        component: u16,
        remote: SocketAddr,
    },
    Restart(tokio::sync::oneshot::Sender<IceCredentials>),
    /// As `Restart`, with fresh TURN allocations first: the path to the
    /// servers changed (consent was lost).
    RestartWithNewRelays(tokio::sync::oneshot::Sender<IceCredentials>),
    /// An RTP or RTCP packet for the component's media pair (dropped when
    /// ICE has validated no pair: media goes nowhere unchecked).
    SendMedia {
        component: u16,
        data: Vec<u8>,
    },
    Shutdown,
}

/// RTP or RTCP that arrived from the peer's validated address.
#[derive(Debug)]
pub struct MediaPacket {
    pub component: u16,
    pub source: SocketAddr,
    pub data: Vec<u8>,
}

/// Media queued towards the call before it is dropped (a second of
/// 20 ms packets, RTP and RTCP).
const MEDIA_QUEUE: usize = 128;

/// A relayed candidate and the TURN server (and how we reach it) behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayInfo {
    pub relayed: SocketAddr,
    pub server: SocketAddr,
    pub transport: TurnTransport,
}

/// A handle on an ICE session running on its own task.
pub struct IceSession {
    /// The allocations made so far, for reports and the phone's display.
    pub relays: Arc<std::sync::Mutex<Vec<RelayInfo>>>,
    pub commands: mpsc::UnboundedSender<IceCommand>,
    pub events: mpsc::UnboundedReceiver<IceEvent>,
    /// Media from the peer, RFC 7983-demultiplexed from the ICE socket.
    pub media: mpsc::Receiver<MediaPacket>,
    pub local_credentials: IceCredentials,
    pub task: tokio::task::JoinHandle<IceAgent>,
}

struct Received {
    source: SocketAddr,
    destination: SocketAddr,
    data: Vec<u8>,
}

/// Binds one UDP socket per (address, component) on an ephemeral port.
pub async fn bind_sockets(
    addresses: &[IpAddr],
    components: u16,
) -> io::Result<Vec<(u16, Arc<UdpSocket>)>> {
    let mut sockets = Vec::new();
    for ip in addresses {
        for component in 1..=components {
            let socket = UdpSocket::bind(SocketAddr::new(*ip, 0)).await?;
            sockets.push((component, Arc::new(socket)));
        }
    }
    Ok(sockets)
}

/// Starts an agent on the given sockets: registers them as host candidates
/// and runs the loop until `Shutdown` or the handle is dropped.
pub fn spawn_session(
    agent: IceAgent,
    sockets: Vec<(u16, Arc<UdpSocket>)>,
) -> io::Result<IceSession> {
    Ok(start_session(agent, sockets, Vec::new(), false))
}

/// As [`spawn_session`], with a TURN relay for every component per server
/// in `turn` — over UDP from the same socket as the media (RFC 8656 §3),
/// or over a TCP/TLS connection made here; their relayed candidates join
/// the agent's. With `relay_only` the sockets are not host candidates (so
/// not server-reflexive ones either): the relayed candidates are all the
/// peer learns and all the checks use. A TCP server that cannot be reached
/// is an error naming it.
pub async fn spawn_session_with_relays(
    agent: IceAgent,
    sockets: Vec<(u16, Arc<UdpSocket>)>,
    turn: Vec<RelayServer>,
    relay_only: bool,
) -> io::Result<IceSession> {
    let mut relays = Vec::new();
    let components: Vec<u16> = sockets.iter().map(|(c, _)| *c).collect();
    for server in turn {
        if server.config.transport == TurnTransport::Udp {
            relays.push((server, None));
            continue;
        }
        for component in &components {
            let link = connect_stream(&server, &sockets).await?;
            relays.push((server.clone(), Some((*component, link))));
        }
    }
    Ok(start_session(agent, sockets, relays, relay_only))
}

/// A TCP or TLS connection to a TURN server whose local address is no
/// media socket's (the driver routes by local address).
async fn connect_stream(
    server: &RelayServer,
    sockets: &[(u16, Arc<UdpSocket>)],
) -> io::Result<TurnLink> {
    let addr = server.config.server;
    let transport = server.config.transport;
    for _ in 0..3 {
        let link = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            TurnLink::connect(addr, transport, server.tls.as_ref()),
        )
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "TURN server {addr} over {}: no connection within 5 s",
                    transport.as_str()
                ),
            )
        })?
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("TURN server {addr} over {}: {e}", transport.as_str()),
            )
        })?;
        let local = link.local_addr()?;
        if sockets
            .iter()
            .all(|(_, s)| s.local_addr().ok() != Some(local))
        {
            return Ok(link);
        }
    }
    Err(io::Error::other(
        "no TCP port distinct from the media sockets",
    ))
}

type StreamRelay = (RelayServer, Option<(u16, TurnLink)>);

fn start_session(
    mut agent: IceAgent,
    sockets: Vec<(u16, Arc<UdpSocket>)>,
    relays: Vec<StreamRelay>,
    relay_only: bool,
) -> IceSession {
    let mut outlets: Vec<(SocketAddr, Outlet)> = Vec::new();
    let mut udp = Vec::new();
    for (component, socket) in &sockets {
        let Ok(local) = socket.local_addr() else {
            continue;
        };
        if !relay_only {
            agent.add_host_candidate(*component, local);
        }
        outlets.push((local, Outlet::Udp(socket.clone())));
        udp.push((*component, local));
    }
    let (rx_tx, rx) = mpsc::channel::<Received>(1024);
    let mut readers: Vec<_> = outlets
        .iter()
        .filter_map(|(local, o)| match o {
            Outlet::Udp(socket) => Some(tokio::spawn(read_socket(
                *local,
                socket.clone(),
                rx_tx.clone(),
            ))),
            Outlet::Stream(_) => None,
        })
        .collect();
    let now = Instant::now();
    let mut transport = IceTransport::new(agent, now);
    for (server, stream) in relays {
        let config = server.config;
        let rng = || Box::new(rand::rngs::StdRng::from_os_rng());
        match stream {
            None => {
                for (component, base) in &udp {
                    if base.is_ipv4() == config.server.is_ipv4() {
                        transport.add_turn_server(now, *component, *base, config.clone(), rng());
                    }
                }
            }
            Some((component, link)) => {
                let Ok(local) = link.local_addr() else {
                    continue;
                };
                let (tx, outgoing) = mpsc::unbounded_channel();
                outlets.push((local, Outlet::Stream(tx)));
                readers.push(tokio::spawn(run_stream(
                    link,
                    local,
                    config.server,
                    outgoing,
                    rx_tx.clone(),
                )));
                transport.add_turn_server(now, component, local, config, rng());
            }
        }
    }
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
    let local_credentials = transport.local_credentials().clone();
    let relays = Arc::new(std::sync::Mutex::new(Vec::new()));
    let channels = Channels {
        events: ev_tx,
        media: media_tx,
        relays: relays.clone(),
    };
    let task = tokio::spawn(async move {
        let agent = run_agent(transport, outlets, rx, cmd_rx, channels).await;
        // Readers would otherwise wait on their sockets until the next datagram.
        for r in readers {
            r.abort();
        }
        agent
    });
    IceSession {
        relays,
        commands: cmd_tx,
        events: ev_rx,
        media: media_rx,
        local_credentials,
        task,
    }
}

/// One TURN connection: framed messages from the server go to the driver
/// as if they were datagrams to `local`; the driver's bytes go out.
async fn run_stream(
    mut link: TurnLink,
    local: SocketAddr,
    server: SocketAddr,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    incoming: mpsc::Sender<Received>,
) {
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            r = link.recv(&mut buf) => match r {
                Ok(()) => {
                    let packet = Received { source: server, destination: local, data: std::mem::take(&mut buf) };
                    if incoming.send(packet).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(%server, error = %e, "TURN connection lost");
                    return;
                }
            },
            bytes = outgoing.recv() => {
                let Some(bytes) = bytes else { return };
                if let Err(e) = link.send(&bytes).await {
                    tracing::warn!(%server, error = %e, "TURN connection lost");
                    return;
                }
            }
        }
    }
}

async fn read_socket(local: SocketAddr, socket: Arc<UdpSocket>, out: mpsc::Sender<Received>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, source)) => {
                let data = buf[..n].to_vec();
                let packet = Received {
                    source,
                    destination: local,
                    data,
                };
                if out.send(packet).await.is_err() {
                    return;
                }
            }
            // ICMP errors surface as recv errors on some platforms; keep going.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
            Err(e) => {
                tracing::warn!(%local, error = %e, "socket read failed");
                return;
            }
        }
    }
}

/// Where the driver hands what it learns to the call.
struct Channels {
    events: mpsc::UnboundedSender<IceEvent>,
    media: mpsc::Sender<MediaPacket>,
    relays: Arc<std::sync::Mutex<Vec<RelayInfo>>>,
}

async fn run_agent(
    mut ice: IceTransport,
    sockets: Vec<(SocketAddr, Outlet)>,
    mut received: mpsc::Receiver<Received>,
    mut commands: mpsc::UnboundedReceiver<IceCommand>,
    channels: Channels,
) -> IceAgent {
    kick(&mut ice);
    loop {
        flush(&mut ice, &sockets, &channels).await;
        let next = ice.poll_timeout();
        tracing::trace!(in_ms = ?next.map(|t| t.saturating_duration_since(Instant::now())), "driver waits");
        let sleep = match next {
            Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)),
            None => tokio::time::sleep(std::time::Duration::from_secs(3600)),
        };
        tokio::select! {
            Some(p) = received.recv() => on_datagram(&mut ice, p, &channels.media),
            () = sleep => ice.handle_timeout(Instant::now()),
            cmd = commands.recv() => match cmd {
                None | Some(IceCommand::Shutdown) => return release(ice, &sockets, &mut received, &channels).await,
                Some(IceCommand::SendMedia { component, data }) => {
                    if let Err(e) = ice.send_media(Instant::now(), component, &data) {
                        tracing::trace!(error = %e, "media not sent");
                    }
                }
                Some(cmd) => apply(&mut ice, cmd),
            },
        }
    }
}

/// Deallocates the relays (RFC 8656 §7: a Refresh with lifetime 0),
/// waiting at most 2 s for the servers, then hands back the agent.
async fn release(
    mut ice: IceTransport,
    sockets: &[(SocketAddr, Outlet)],
    received: &mut mpsc::Receiver<Received>,
    channels: &Channels,
) -> IceAgent {
    ice.release(Instant::now());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while !ice.released() {
        flush(&mut ice, sockets, channels).await;
        let wake = ice
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or(deadline)
            .min(deadline);
        tokio::select! {
            Some(p) = received.recv() => {
                ice.handle_packet(Instant::now(), p.source, p.destination, &p.data);
            }
            () = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                ice.handle_timeout(Instant::now());
            }
        }
    }
    flush(&mut ice, sockets, channels).await;
    ice.into_agent()
}

/// One datagram from a socket: ICE and TURN signalling stay in the
/// transport; media (RFC 7983: RTP and RTCP) goes to the call when it came
/// from the peer's validated address of a component's media pair — over a
/// relay too (RFC 8445 §12.1: media flows between validated addresses only).
fn on_datagram(ice: &mut IceTransport, p: Received, out: &mpsc::Sender<MediaPacket>) {
    let now = Instant::now();
    let (from, data) = match ice.handle_packet(now, p.source, p.destination, &p.data) {
        IceReceived::Media { from, data, .. } => (from, data.to_vec()),
        _ => return,
    };
    if !matches!(data.first().map(|b| classify(*b)), Some(PacketKind::Rtp)) {
        return;
    }
    let Some(component) = ice.accept_media(from) else {
        tracing::trace!(%from, "media from an unvalidated address dropped");
        return;
    };
    let packet = MediaPacket {
        component,
        source: from,
        data,
    };
    if out.try_send(packet).is_err() {
        tracing::debug!("media queue full: packet dropped");
    }
}

fn apply(ice: &mut IceTransport, cmd: IceCommand) {
    match cmd {
        IceCommand::SetRemoteCredentials(c) => ice.agent_mut().set_remote_credentials(c),
        IceCommand::AddRemoteCandidate(c) => ice.agent_mut().add_remote_candidate(c),
        IceCommand::EndOfRemoteCandidates => ice.agent_mut().end_of_remote_candidates(),
        IceCommand::SetControlling(c) => ice.agent_mut().set_controlling(c),
        IceCommand::SetPacing(ta) => ice.agent_mut().set_pacing(ta),
        IceCommand::Restart(reply) => {
            let _ = reply.send(ice.agent_mut().restart());
        }
        IceCommand::RestartWithNewRelays(reply) => {
            ice.reallocate(Instant::now(), &mut || {
                Box::new(rand::rngs::StdRng::from_os_rng())
            });
            let _ = reply.send(ice.agent_mut().restart());
        }
        IceCommand::SetPlainPeer { component, remote } => {
            if ice.set_plain_peer(component, remote).is_none() {
                tracing::warn!(%remote, "no host address to reach a peer without ICE from");
            }
            return;
        }
        IceCommand::SendMedia { .. } | IceCommand::Shutdown => {}
    }
    kick(ice);
}

/// Lets the agent act on what just changed (new candidates, credentials, a
/// started session): the agent wants a `handle_timeout` then, whether or
/// not its last deadline is due — gathering with no server to ask, for
/// one, completes there.
fn kick(ice: &mut IceTransport) {
    let now = Instant::now();
    ice.agent_mut().handle_timeout(now);
    ice.handle_timeout(now);
}

async fn flush(ice: &mut IceTransport, sockets: &[(SocketAddr, Outlet)], channels: &Channels) {
    while let Some(t) = ice.poll_transmit() {
        match sockets.iter().find(|(local, _)| *local == t.source) {
            Some((_, Outlet::Udp(socket))) => {
                if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                    tracing::debug!(destination = %t.destination, error = %e, "send failed");
                }
            }
            Some((_, Outlet::Stream(writer))) => {
                if writer.send(t.contents).is_err() {
                    tracing::debug!(destination = %t.destination, "TURN connection closed");
                }
            }
            None => tracing::debug!(source = %t.source, "no socket for transmit source"),
        }
    }
    while let Some(e) = ice.poll_event() {
        let _ = channels.events.send(e);
    }
    while let Some(r) = ice.poll_relay_event() {
        tracing::info!(relay = r.relay, server = %r.server, event = ?r.event, "TURN");
        if let crate::turn::TurnEvent::Allocated { relayed, .. } = r.event {
            let transport = ice
                .relay(r.relay)
                .map_or(TurnTransport::Udp, |c| c.config().transport);
            if let Ok(mut list) = channels.relays.lock() {
                list.push(RelayInfo {
                    relayed,
                    server: r.server,
                    transport,
                });
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM: how every long-running command ends.
/// The handlers are installed when this is called, not when the future is
/// first polled: a signal in between would otherwise kill the process
/// without its clean-up (unregistering, releasing relays). Call it first.
#[cfg(unix)]
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    async fn next(s: Option<&mut Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = next(interrupt.as_mut()) => {}
            _ = next(terminate.as_mut()) => {}
        }
    }
}

#[cfg(not(unix))]
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::IceConfig;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn first_byte_demultiplexing_follows_rfc7983() {
        assert_eq!(classify(0x00), PacketKind::Stun);
        assert_eq!(classify(0x01), PacketKind::Stun);
        assert_eq!(classify(22), PacketKind::Dtls);
        assert_eq!(classify(0x40), PacketKind::ChannelData);
        assert_eq!(classify(0x80), PacketKind::Rtp);
        assert_eq!(classify(0xbf), PacketKind::Rtp);
        assert_eq!(classify(0xff), PacketKind::Unknown);
    }

    /// With no STUN or TURN server there is nothing to wait for: the host
    /// candidates, then GatheringComplete, at once (an offer waits on it).
    #[tokio::test]
    async fn gathering_with_no_server_completes_at_once() {
        let sockets = bind_sockets(&["127.0.0.1".parse().unwrap()], 1)
            .await
            .unwrap();
        let agent = IceAgent::new(
            IceConfig::default(),
            Instant::now(),
            Box::new(StdRng::seed_from_u64(2)),
        );
        let mut session = spawn_session(agent, sockets).unwrap();
        let done = tokio::time::timeout(std::time::Duration::from_millis(500), async {
            while let Some(e) = session.events.recv().await {
                if e == IceEvent::GatheringComplete {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(done, Ok(true), "no GatheringComplete within 500 ms");
    }

    #[tokio::test]
    async fn shutdown_returns_the_agent_and_releases_the_socket() {
        let sockets = bind_sockets(&["127.0.0.1".parse().unwrap()], 1)
            .await
            .unwrap();
        let socket = sockets[0].1.clone();
        let agent = IceAgent::new(
            IceConfig::default(),
            Instant::now(),
            Box::new(StdRng::seed_from_u64(1)),
        );
        let mut session = spawn_session(agent, sockets).unwrap();
        let first = session.events.recv().await.expect("an event");
        assert!(matches!(first, IceEvent::LocalCandidate(_)), "{first:?}");
        session.commands.send(IceCommand::Shutdown).unwrap();
        let agent = tokio::time::timeout(std::time::Duration::from_secs(5), session.task)
            .await
            .expect("the loop ends")
            .expect("no panic");
        assert_eq!(agent.local_candidates().len(), 1);
        // Give the aborted readers a moment to drop their handles.
        for _ in 0..100 {
            if Arc::strong_count(&socket) == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("reader tasks still hold the socket");
    }
}
