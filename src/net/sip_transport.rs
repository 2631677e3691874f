//! SIP transports (RFC 3261 §18, RFC 5630 for TLS): one UDP socket and one
//! TCP listener on the same port, optionally a TLS listener on a port of its
//! own, and TCP or TLS connections both ways, framed by `sip::framing`.
//! Everything that arrives comes out of one channel as [`Incoming`]; the
//! caller sends with [`SipSockets::send`], which reuses an open connection to
//! the peer or opens one.
//!
//! RFC 5626 keep-alives are handled here: a CRLF CRLF ping on a stream is
//! answered with a CRLF pong, and bare CRLFs never reach the SIP core.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::sip::framing::{is_keepalive, Frame, StreamDecoder, PONG};
use crate::sip::Transport;

/// How long an outgoing connection (with its TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued towards one connection before sends fail.
const CONNECTION_QUEUE: usize = 64;
/// Open connections (both directions) before new ones are refused.
const MAX_CONNECTIONS: usize = 256;

/// A message (or what claims to be one) from the network.
#[derive(Debug)]
pub struct Incoming {
    pub transport: Transport,
    /// Our address it arrived on.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub bytes: Vec<u8>,
    /// Not a message: the connection with `remote` ended, for this reason
    /// (`bytes` is empty).
    pub closed: Option<String>,
}

/// TLS for SIP: a listener (a server's certificate) and/or what outgoing
/// connections trust.
#[derive(Clone, Default)]
pub struct SipTls {
    /// Accept TLS on this port (0: a free one) with this configuration.
    pub server: Option<(Arc<rustls::ServerConfig>, u16)>,
    pub client: Option<Arc<rustls::ClientConfig>>,
}

type Connections = Arc<Mutex<HashMap<(Transport, SocketAddr), Connection>>>;

/// An open connection: its send queue, and its task (to close it).
struct Connection {
    queue: mpsc::Sender<Vec<u8>>,
    task: Option<tokio::task::AbortHandle>,
}

/// What every connection task needs.
#[derive(Clone)]
struct Shared {
    connections: Connections,
    incoming: mpsc::Sender<Incoming>,
}

pub struct SipSockets {
    udp: Arc<UdpSocket>,
    tcp_local: SocketAddr,
    tls_local: Option<SocketAddr>,
    tls_client: Option<TlsConnector>,
    /// The name a TLS peer's certificate must carry, by address (its IP
    /// address when none was given).
    tls_names: Mutex<HashMap<SocketAddr, ServerName<'static>>>,
    shared: Shared,
    tasks: Vec<JoinHandle<()>>,
}

impl SipSockets {
    /// UDP and TCP on `ip:port` (0: a free port, the same one for both).
    pub async fn bind(ip: IpAddr, port: u16) -> io::Result<(Self, mpsc::Receiver<Incoming>)> {
        Self::bind_with_tls(ip, port, SipTls::default()).await
    }

    /// As [`Self::bind`], with TLS as `tls` says.
    pub async fn bind_with_tls(
        ip: IpAddr,
        port: u16,
        tls: SipTls,
    ) -> io::Result<(Self, mpsc::Receiver<Incoming>)> {
        let (udp, listener) = bind_pair(ip, port).await?;
        let udp = Arc::new(udp);
        let tcp_local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(256);
        let shared = Shared {
            connections: Arc::default(),
            incoming: tx,
        };
        let mut tasks = vec![
            tokio::spawn(udp_reader(udp.clone(), shared.incoming.clone())),
            tokio::spawn(acceptor(listener, shared.clone(), None)),
        ];
        let mut tls_local = None;
        if let Some((config, tls_port)) = tls.server {
            let l = TcpListener::bind(SocketAddr::new(ip, tls_port)).await?;
            tls_local = Some(l.local_addr()?);
            let acceptor_tls = TlsAcceptor::from(config);
            tasks.push(tokio::spawn(acceptor(
                l,
                shared.clone(),
                Some(acceptor_tls),
            )));
        }
        Ok((
            SipSockets {
                udp,
                tcp_local,
                tls_local,
                tls_client: tls.client.map(TlsConnector::from),
                tls_names: Mutex::default(),
                shared,
                tasks,
            },
            rx,
        ))
    }

    pub fn local_udp(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    pub fn local_tcp(&self) -> SocketAddr {
        self.tcp_local
    }

    pub fn local_tls(&self) -> Option<SocketAddr> {
        self.tls_local
    }

    /// The certificate of the TLS peer at `addr` must name `name` (the
    /// host the user typed), not its address.
    pub fn set_tls_name(&self, addr: SocketAddr, name: ServerName<'static>) {
        self.tls_names.lock().unwrap().insert(addr, name);
    }

    /// Sends one message. Over a stream an open connection to `to` is
    /// reused, else one is opened (and kept for what comes back).
    pub async fn send(
        &self,
        transport: Transport,
        to: SocketAddr,
        bytes: Vec<u8>,
    ) -> io::Result<()> {
        if transport == Transport::Udp {
            return self.udp.send_to(&bytes, to).await.map(|_| ());
        }
        let existing = self
            .shared
            .connections
            .lock()
            .unwrap()
            .get(&(transport, to))
            .map(|c| c.queue.clone());
        let queue = match existing {
            Some(q) => q,
            None => self.connect(transport, to).await?,
        };
        queue
            .try_send(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "connection closed or full"))
    }

    async fn connect(
        &self,
        transport: Transport,
        to: SocketAddr,
    ) -> io::Result<mpsc::Sender<Vec<u8>>> {
        let timed_out = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {to} timed out"),
            )
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
            .await
            .map_err(|_| timed_out())??;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr()?;
        if transport == Transport::Tcp {
            return Ok(start_connection(
                stream,
                local,
                to,
                Transport::Tcp,
                self.shared.clone(),
            ));
        }
        let connector = self.tls_client.clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "no TLS configuration for SIP over TLS",
            )
        })?;
        let name = self
            .tls_names
            .lock()
            .unwrap()
            .get(&to)
            .cloned()
            .unwrap_or(ServerName::IpAddress(to.ip().into()));
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| {
                io::Error::new(e.kind(), format!("TLS handshake with {to} failed: {e}"))
            })?;
        Ok(start_connection(
            tls,
            local,
            to,
            Transport::Tls,
            self.shared.clone(),
        ))
    }
}

impl SipSockets {
    /// Closes every TCP and TLS connection: after a NAT forgot its
    /// mappings they are dead, and a request sent on one would only come
    /// back as a reset. The next request opens a new one. Their
    /// transactions are not failed (nothing waits on them but what the
    /// caller is about to replace).
    pub fn close_streams(&self) {
        let closed: Vec<Connection> = self
            .shared
            .connections
            .lock()
            .unwrap()
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in closed {
            if let Some(task) = c.task {
                task.abort();
            }
        }
    }
}

impl Drop for SipSockets {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Dropping the queues ends each connection's writer, then its reader.
        self.shared.connections.lock().unwrap().clear();
    }
}

/// A UDP socket and a TCP listener on one port; with port 0, a port that
/// is free for both (a few tries, as the UDP port may be taken on TCP).
async fn bind_pair(ip: IpAddr, port: u16) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(SocketAddr::new(ip, port)).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(l) => return Ok((udp, l)),
            Err(e) if port == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

async fn udp_reader(socket: Arc<UdpSocket>, tx: mpsc::Sender<Incoming>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 65_535];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, remote)) => {
                let bytes = &buf[..n];
                if is_keepalive(bytes) {
                    continue;
                }
                let msg = Incoming {
                    transport: Transport::Udp,
                    local,
                    remote,
                    bytes: bytes.to_vec(),
                    closed: None,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            // ICMP errors (port unreachable) surface here on Linux; the
            // transaction's timer reports the silence.
            Err(e) => tracing::debug!(error = %e, "SIP UDP receive error"),
        }
    }
}

/// Accepts TCP connections, or TLS ones when `tls` is given (the handshake
/// runs in the connection's own task, so a slow client holds up no one).
async fn acceptor(listener: TcpListener, shared: Shared, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "SIP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if shared.connections.lock().unwrap().len() >= MAX_CONNECTIONS {
            tracing::warn!(%remote, "SIP connection refused: too many open");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        match tls.clone() {
            None => {
                start_connection(stream, local, remote, Transport::Tcp, shared.clone());
            }
            Some(acceptor) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            start_connection(tls, local, remote, Transport::Tls, shared);
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "SIP TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%remote, "SIP TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

fn start_connection<S>(
    stream: S,
    local: SocketAddr,
    remote: SocketAddr,
    transport: Transport,
    shared: Shared,
) -> mpsc::Sender<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (queue, rx) = mpsc::channel(CONNECTION_QUEUE);
    let link = Link {
        local,
        remote,
        transport,
    };
    let key = (transport, remote);
    // Registered before the task runs (its end removes the entry), and
    // given the task's handle under the same lock.
    let mut map = shared.connections.lock().unwrap();
    map.insert(
        key,
        Connection {
            queue: queue.clone(),
            task: None,
        },
    );
    let task = tokio::spawn(connection(stream, link, queue.clone(), rx, shared.clone()));
    if let Some(c) = map.get_mut(&key) {
        c.task = Some(task.abort_handle());
    }
    queue
}

#[derive(Clone, Copy)]
struct Link {
    local: SocketAddr,
    remote: SocketAddr,
    transport: Transport,
}

async fn connection<S>(
    stream: S,
    link: Link,
    queue: mpsc::Sender<Vec<u8>>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    shared: Shared,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
            // TLS buffers records: flush once the queue is drained.
            if rx.is_empty() && writer.flush().await.is_err() {
                return;
            }
        }
    });
    let remote = link.remote;
    let mut decoder = StreamDecoder::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut ended = "closed by the other side".to_owned();
    'read: loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) => break,
            Err(e) => {
                ended = e.to_string();
                break;
            }
            Ok(n) => n,
        };
        if let Err(e) = decoder.push(&chunk[..n]) {
            tracing::debug!(%remote, error = %e, "closing a SIP connection that sent too much");
            break;
        }
        loop {
            match decoder.next() {
                Ok(Some(Frame::Message(bytes))) => {
                    let msg = Incoming {
                        transport: link.transport,
                        local: link.local,
                        remote,
                        bytes,
                        closed: None,
                    };
                    if shared.incoming.send(msg).await.is_err() {
                        break 'read;
                    }
                }
                Ok(Some(Frame::KeepAlive { ping: true })) => {
                    let _ = queue.try_send(PONG.to_vec());
                }
                Ok(Some(Frame::KeepAlive { ping: false })) => {}
                Ok(None) => break,
                Err(e) => {
                    // A stream that lost its framing cannot be resynchronised.
                    tracing::debug!(%remote, error = %e, "closing a SIP connection that sent garbage");
                    break 'read;
                }
            }
        }
    }
    let current = {
        let mut map = shared.connections.lock().unwrap();
        let key = (link.transport, remote);
        let current = map.get(&key).is_some_and(|c| c.queue.same_channel(&queue));
        if current {
            map.remove(&key);
        }
        current
    };
    writer_task.abort();
    if !current {
        // A newer connection to the same address took over: its
        // transactions are not this one's to fail.
        return;
    }
    let _ = shared
        .incoming
        .send(Incoming {
            transport: link.transport,
            local: link.local,
            remote,
            bytes: Vec::new(),
            closed: Some(format!(
                "the {} connection to {remote} ended: {ended}",
                link.transport.via_token()
            )),
        })
        .await;
}
