//! The connection from a TURN client to its server: a UDP socket, or a TCP
//! stream carrying STUN and ChannelData framed by their own lengths
//! (RFC 8656 §12.5), plain or inside TLS (`turns:`, RFC 7065).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::tls::TlsClient;
use crate::turn::{StreamDecoder, TurnTransport};

pub enum TurnLink {
    Udp {
        socket: UdpSocket,
        server: SocketAddr,
    },
    Tcp {
        stream: TcpStream,
        decoder: StreamDecoder,
    },
    Tls {
        stream: Box<TlsStream<TcpStream>>,
        decoder: StreamDecoder,
    },
}

impl TurnLink {
    /// Opens a UDP socket on the local address that routes to `server`,
    /// connects over TCP, or over TLS verified against `tls` (which `turns:`
    /// requires).
    pub async fn connect(
        server: SocketAddr,
        transport: TurnTransport,
        tls: Option<&TlsClient>,
    ) -> io::Result<Self> {
        match transport {
            TurnTransport::Udp => {
                let socket = UdpSocket::bind(unspecified_for(server)).await?;
                socket.connect(server).await?;
                let local = socket.local_addr()?;
                // Rebind on the routed address: a socket bound to 0.0.0.0
                // would make our local address (and ICE base) unknown.
                let socket = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
                Ok(TurnLink::Udp { socket, server })
            }
            TurnTransport::Tcp => {
                let stream = TcpStream::connect(server).await?;
                stream.set_nodelay(true)?;
                Ok(TurnLink::Tcp {
                    stream,
                    decoder: StreamDecoder::new(),
                })
            }
            TurnTransport::Tls => {
                let tls = tls.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "turns: needs a TLS configuration",
                    )
                })?;
                let tcp = TcpStream::connect(server).await?;
                tcp.set_nodelay(true)?;
                let stream = TlsConnector::from(tls.config.clone())
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
                Ok(TurnLink::Tls {
                    stream: Box::new(stream),
                    decoder: StreamDecoder::new(),
                })
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TurnLink::Udp { socket, .. } => socket.local_addr(),
            TurnLink::Tcp { stream, .. } => stream.local_addr(),
            TurnLink::Tls { stream, .. } => stream.get_ref().0.local_addr(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            TurnLink::Udp { socket, server } => socket.send_to(bytes, *server).await.map(|_| ()),
            TurnLink::Tcp { stream, .. } => stream.write_all(bytes).await,
            TurnLink::Tls { stream, .. } => {
                stream.write_all(bytes).await?;
                // rustls buffers records; without a flush a request can sit
                // in the buffer until the next write.
                stream.flush().await
            }
        }
    }

    /// The next message from the server. Over UDP, datagrams from anyone
    /// else are skipped. Cancel-safe: a partial TCP read stays buffered.
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        match self {
            TurnLink::Udp { socket, server } => loop {
                buf.resize(65_536, 0);
                let (n, from) = socket.recv_from(buf).await?;
                if from == *server {
                    buf.truncate(n);
                    return Ok(());
                }
            },
            TurnLink::Tcp { stream, decoder } => read_frame(stream, decoder, buf).await,
            TurnLink::Tls { stream, decoder } => read_frame(stream.as_mut(), decoder, buf).await,
        }
    }
}

/// The next STUN or ChannelData frame of a stream. Cancel-safe: bytes read
/// stay in `decoder` until a whole frame is there.
async fn read_frame<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    decoder: &mut StreamDecoder,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        match decoder.next_message() {
            Ok(Some(m)) => {
                buf.clear();
                buf.extend_from_slice(m);
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the TURN server closed the connection",
            ));
        }
        decoder.push(&chunk[..n]);
    }
}

pub fn unspecified_for(peer: SocketAddr) -> SocketAddr {
    if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}
