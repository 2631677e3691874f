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

use crate::ice::{Candidate, IceAgent, IceCredentials, IceEvent};

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
    Restart(tokio::sync::oneshot::Sender<IceCredentials>),
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

/// A handle on an ICE session running on its own task.
pub struct IceSession {
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
    mut agent: IceAgent,
    sockets: Vec<(u16, Arc<UdpSocket>)>,
) -> io::Result<IceSession> {
    let mut bound = Vec::new();
    for (component, socket) in &sockets {
        let local = socket.local_addr()?;
        agent.add_host_candidate(*component, local);
        bound.push((local, socket.clone()));
    }
    let (rx_tx, rx) = mpsc::channel::<Received>(1024);
    let readers: Vec<_> = bound
        .iter()
        .map(|(local, socket)| tokio::spawn(read_socket(*local, socket.clone(), rx_tx.clone())))
        .collect();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
    let local_credentials = agent.local_credentials().clone();
    let task = tokio::spawn(async move {
        let channels = Channels {
            events: ev_tx,
            media: media_tx,
        };
        let agent = run_agent(agent, bound, rx, cmd_rx, channels).await;
        // Readers would otherwise wait on their sockets until the next datagram.
        for r in readers {
            r.abort();
        }
        agent
    });
    Ok(IceSession {
        commands: cmd_tx,
        events: ev_rx,
        media: media_rx,
        local_credentials,
        task,
    })
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
}

async fn run_agent(
    mut agent: IceAgent,
    sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    mut received: mpsc::Receiver<Received>,
    mut commands: mpsc::UnboundedReceiver<IceCommand>,
    channels: Channels,
) -> IceAgent {
    let events = &channels.events;
    agent.handle_timeout(Instant::now());
    loop {
        flush(&mut agent, &sockets, events).await;
        let next = agent.poll_timeout();
        tracing::trace!(in_ms = ?next.map(|t| t.saturating_duration_since(Instant::now())), "driver waits");
        let sleep = match next {
            Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)),
            None => tokio::time::sleep(std::time::Duration::from_secs(3600)),
        };
        tokio::select! {
            Some(p) = received.recv() => {
                match p.data.first().map(|b| classify(*b)) {
                    Some(PacketKind::Stun) => {
                        agent.handle_packet(Instant::now(), p.source, p.destination, &p.data);
                    }
                    Some(PacketKind::Rtp) => deliver_media(&agent, p, &channels.media),
                    _ => tracing::trace!(source = %p.source, "datagram of no known kind dropped"),
                }
            }
            () = sleep => agent.handle_timeout(Instant::now()),
            cmd = commands.recv() => match cmd {
                None | Some(IceCommand::Shutdown) => return agent,
                Some(IceCommand::SendMedia { component, data }) => {
                    if let Some((socket, to)) = media_route(&agent, &sockets, component) {
                        if let Err(e) = socket.send_to(&data, to).await {
                            tracing::debug!(%to, error = %e, "media send failed");
                        }
                    }
                }
                Some(cmd) => apply(&mut agent, cmd),
            },
        }
    }
}

/// RTP/RTCP from the remote address of a component's media pair goes to
/// the call; from anywhere else it is dropped (RFC 8445 §12.1: media flows
/// between validated addresses only).
fn deliver_media(agent: &IceAgent, p: Received, out: &mpsc::Sender<MediaPacket>) {
    let component = (1..=2).find(|c| {
        agent.media_pair(*c).is_some_and(|(local, remote)| {
            remote.address == p.source && local.base == p.destination
        })
    });
    let Some(component) = component else {
        tracing::trace!(source = %p.source, "media from an unvalidated address dropped");
        return;
    };
    let packet = MediaPacket {
        component,
        source: p.source,
        data: p.data,
    };
    if out.try_send(packet).is_err() {
        tracing::debug!("media queue full: packet dropped");
    }
}

/// The socket and address a component's media goes through now.
fn media_route(
    agent: &IceAgent,
    sockets: &[(SocketAddr, Arc<UdpSocket>)],
    component: u16,
) -> Option<(Arc<UdpSocket>, SocketAddr)> {
    let (local, remote) = agent.media_pair(component)?;
    // A relayed base needs its TURN allocation, which this driver does not
    // run yet: such pairs get no media here.
    let (_, socket) = sockets.iter().find(|(addr, _)| *addr == local.base)?;
    Some((socket.clone(), remote.address))
}

fn apply(agent: &mut IceAgent, cmd: IceCommand) {
    match cmd {
        IceCommand::SetRemoteCredentials(c) => agent.set_remote_credentials(c),
        IceCommand::AddRemoteCandidate(c) => agent.add_remote_candidate(c),
        IceCommand::EndOfRemoteCandidates => agent.end_of_remote_candidates(),
        IceCommand::SetControlling(c) => agent.set_controlling(c),
        IceCommand::Restart(reply) => {
            let _ = reply.send(agent.restart());
        }
        IceCommand::SendMedia { .. } | IceCommand::Shutdown => {}
    }
    agent.handle_timeout(Instant::now());
}

async fn flush(
    agent: &mut IceAgent,
    sockets: &[(SocketAddr, Arc<UdpSocket>)],
    events: &mpsc::UnboundedSender<IceEvent>,
) {
    while let Some(t) = agent.poll_transmit() {
        match sockets.iter().find(|(local, _)| *local == t.source) {
            Some((_, socket)) => {
                if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                    tracing::debug!(destination = %t.destination, error = %e, "send failed");
                }
            }
            None => tracing::debug!(source = %t.source, "no socket for transmit source"),
        }
    }
    while let Some(e) = agent.poll_event() {
        let _ = events.send(e);
    }
}

/// Resolves on Ctrl-C or SIGTERM: how every long-running command ends.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
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
