//! In-memory network simulator: a deterministic model of UDP over NATs
//! (RFC 4787 mapping, filtering, refresh and hairpinning) plus link delay,
//! jitter and loss, for the unit tests and benchmarks of the sans-IO protocol
//! cores, in virtual time.
//!
//! It owns addressing, routing, NAT state and a seeded PRNG: the same seed
//! and the same calls give the same deliveries, forever. It must know no
//! protocol (payloads are opaque bytes), open no socket and read no clock:
//! every call takes `now`, which tests derive from one `Instant` epoch.
//!
//! The internet is one flat address space. Each NAT fronts one LAN whose
//! addresses mean nothing elsewhere, so two LANs may use the same private
//! range. A packet's path, delay, loss and outbound translation are fixed
//! when it is sent; a receiving NAT's filter judges it when it arrives there,
//! so pinholes opened while it travels count, as they do for real.
//! Drive it by hand (`send`, `poll_timeout`, `poll_delivery`) or with
//! [`Network::run`] over a set of [`Endpoint`]s.

mod link;
mod nat;
mod network;
mod rng;
mod runner;
mod stats;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;

pub use link::LinkConfig;
pub use nat::{Filtering, Mapping, NatConfig};
pub use network::Network;
pub use rng::SimRng;
pub use runner::{Bound, Endpoint, LocalAddr, RunOutcome};
pub use stats::{DropCounts, DropReason, NetStats};

/// A NAT box of one [`Network`]; ids of another network make its methods panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatId(usize);

/// A host of one [`Network`]; ids of another network make its methods panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(usize);

/// A UDP datagram as a host sends or receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Misuse of the simulator; what the network does to packets is never an
/// error, only a count in [`NetStats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// No host has this source IP.
    UnknownSource(SocketAddr),
    /// Hosts on several LANs have this IP: name the host instead
    /// ([`Network::send_from_host`], or a `(HostId, port)` binding).
    AmbiguousSource(SocketAddr),
    /// An endpoint transmitted from an address it is not bound to.
    NotBound(SocketAddr),
    /// Two endpoints bound the same address of the same host.
    AddressInUse(SocketAddr),
    /// A run took more steps than [`Network::set_max_run_steps`] allows.
    StepLimit { steps: u64 },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::UnknownSource(addr) => write!(f, "no host has the address of {addr}"),
            SimError::AmbiguousSource(addr) => {
                write!(f, "several hosts have the address of {addr}; name the host")
            }
            SimError::NotBound(addr) => {
                write!(f, "endpoint sent from {addr}, which it is not bound to")
            }
            SimError::AddressInUse(addr) => write!(f, "{addr} is bound by two endpoints"),
            SimError::StepLimit { steps } => write!(f, "run gave up after {steps} steps"),
        }
    }
}

impl std::error::Error for SimError {}
