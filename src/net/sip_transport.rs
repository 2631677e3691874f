//! SIP transports (RFC 3261 §18): one UDP socket and one TCP listener on the
//! same port, and TCP connections both ways, framed by `sip::framing`.
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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sip::framing::{is_keepalive, Frame, StreamDecoder, PONG};
use crate::sip::Transport;

/// How long an outgoing TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued towards one connection before sends fail.
const CONNECTION_QUEUE: usize = 64;
/// Open TCP connections (both directions) before new ones are refused.
const MAX_CONNECTIONS: usize = 256;

/// A message (or what claims to be one) from the network.
#[derive(Debug)]
pub struct Incoming {
    pub transport: Transport,
    /// Our address it arrived on.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub bytes: Vec<u8>,
}

type Connections = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

pub struct SipSockets {
    udp: Arc<UdpSocket>,
    tcp_local: SocketAddr,
    connections: Connections,
    incoming: mpsc::Sender<Incoming>,
    tasks: Vec<JoinHandle<()>>,
}

impl SipSockets {
    /// UDP and TCP on `ip:port` (0: a free port, the same one for both).
    pub async fn bind(ip: IpAddr, port: u16) -> io::Result<(Self, mpsc::Receiver<Incoming>)> {
        let (udp, listener) = bind_pair(ip, port).await?;
        let udp = Arc::new(udp);
        let tcp_local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(256);
        let connections: Connections = Arc::default();
        let tasks = vec![
            tokio::spawn(udp_reader(udp.clone(), tx.clone())),
            tokio::spawn(tcp_acceptor(listener, connections.clone(), tx.clone())),
        ];
        Ok((
            SipSockets {
                udp,
                tcp_local,
                connections,
                incoming: tx,
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

    /// Sends one message. Over TCP an open connection to `to` is reused,
    /// else one is opened (and kept for what comes back).
    pub async fn send(
        &self,
        transport: Transport,
        to: SocketAddr,
        bytes: Vec<u8>,
    ) -> io::Result<()> {
        match transport {
            Transport::Udp => self.udp.send_to(&bytes, to).await.map(|_| ()),
            Transport::Tcp => {
                let existing = self.connections.lock().unwrap().get(&to).cloned();
                let queue = match existing {
                    Some(q) => q,
                    None => self.connect(to).await?,
                };
                queue.try_send(bytes).map_err(|_| {
                    io::Error::new(io::ErrorKind::BrokenPipe, "TCP connection closed or full")
                })
            }
            Transport::Tls => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SIP over TLS is not supported yet",
            )),
        }
    }

    async fn connect(&self, to: SocketAddr) -> io::Result<mpsc::Sender<Vec<u8>>> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TCP connect to {to} timed out"),
                )
            })??;
        Ok(start_connection(
            stream,
            to,
            self.connections.clone(),
            self.incoming.clone(),
        ))
    }
}

impl Drop for SipSockets {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Dropping the queues ends each connection's writer, then its reader.
        self.connections.lock().unwrap().clear();
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

async fn tcp_acceptor(listener: TcpListener, connections: Connections, tx: mpsc::Sender<Incoming>) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                if connections.lock().unwrap().len() >= MAX_CONNECTIONS {
                    tracing::warn!(%remote, "SIP TCP connection refused: too many open");
                    continue;
                }
                start_connection(stream, remote, connections.clone(), tx.clone());
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIP TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn start_connection(
    stream: TcpStream,
    remote: SocketAddr,
    connections: Connections,
    tx: mpsc::Sender<Incoming>,
) -> mpsc::Sender<Vec<u8>> {
    let _ = stream.set_nodelay(true);
    let (queue, rx) = mpsc::channel(CONNECTION_QUEUE);
    connections.lock().unwrap().insert(remote, queue.clone());
    tokio::spawn(connection(
        stream,
        remote,
        queue.clone(),
        rx,
        connections,
        tx,
    ));
    queue
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    queue: mpsc::Sender<Vec<u8>>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    connections: Connections,
    tx: mpsc::Sender<Incoming>,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
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
        if let Err(e) = decoder.push(&chunk[..n]) {
            tracing::debug!(%remote, error = %e, "closing a SIP TCP connection that sent too much");
            break;
        }
        loop {
            match decoder.next() {
                Ok(Some(Frame::Message(bytes))) => {
                    let msg = Incoming {
                        transport: Transport::Tcp,
                        local,
                        remote,
                        bytes,
                    };
                    if tx.send(msg).await.is_err() {
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
                    tracing::debug!(%remote, error = %e, "closing a SIP TCP connection that sent garbage");
                    break 'read;
                }
            }
        }
    }
    {
        let mut map = connections.lock().unwrap();
        if map.get(&remote).is_some_and(|q| q.same_channel(&queue)) {
            map.remove(&remote);
        }
    }
    writer_task.abort();
}
