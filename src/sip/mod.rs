//! SIP (RFC 3261): the message layer, transactions, digest authentication,
//! registration and the user agent core, all sans-IO.
//!
//! Owns: SIP syntax and SIP state. Must not touch: sockets, tokio or the
//! clock (the driver in `net` feeds bytes and instants in), nor anything of
//! media — an SDP body is opaque bytes here.
//!
//! The message layer is our own rather than `rsip`: rsip 0.4 rejects IPv6
//! hosts, `tel:` URIs, `+sip.instance` Contacts, several Contacts on a line,
//! compact header names, LF-only lines and `qop` lists, and ignores
//! Content-Length (shared/notes/dependencies.md); each of those has a test
//! in `message`/`headers`/`uri`/`framing`.

pub mod authenticator;
pub mod calls;
pub mod dialog;
pub mod digest;
pub mod framing;
pub mod headers;
pub mod layer;
pub mod message;
pub mod proxy;
pub mod registrar;
pub mod registration;
pub mod transaction;
pub mod ua;
pub mod uri;

use std::net::SocketAddr;

use rand::RngCore;

/// The methods a UA of ours takes part in (the `Allow` header).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Streams need no retransmissions (timers A, E, G are off).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// From a URI's `transport` parameter or a Via token.
    pub fn parse(token: &str) -> Option<Self> {
        match token.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }
}

/// Where a message goes: a transport and the peer's address (over TCP, the
/// driver maps it to the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub target: Target,
    pub bytes: Vec<u8>,
}

/// `bytes` random bytes as lowercase hex: branches, tags, Call-IDs.
pub fn random_hex(rng: &mut impl RngCore, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rng.fill_bytes(&mut buf);
    digest::hex(&buf)
}
#[cfg(test)]
mod calls_tests;
#[cfg(test)]
mod ua_tests;
