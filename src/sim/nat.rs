//! One NAT box: its mapping table, port allocation and inbound filter, after
//! RFC 4787 (§4.1 mapping, §4.2 port assignment, §4.3 refresh, §5 filtering).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::link::LinkConfig;
use super::rng::SimRng;
use super::stats::DropReason;

/// Which outbound packets from one internal endpoint share a public port
/// (RFC 4787 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// One mapping for every destination (REQ-1).
    EndpointIndependent,
    /// One mapping per destination IP.
    AddressDependent,
    /// One mapping per destination ip:port: a "symmetric" NAT.
    AddressAndPortDependent,
}

/// Which inbound sources a mapping admits (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Anyone.
    EndpointIndependent,
    /// Sources whose IP the internal endpoint has sent to through the mapping.
    AddressDependent,
    /// Exactly the ip:port pairs the internal endpoint has sent to.
    AddressAndPortDependent,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NatConfig {
    pub public_ip: IpAddr,
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// Loop LAN-to-own-public-address packets back in (RFC 4787 REQ-9).
    pub hairpinning: bool,
    /// Reuse the internal port as the public port when it is free.
    pub port_preservation: bool,
    /// Lifetime of a mapping after its last outbound packet.
    pub mapping_timeout: Duration,
}

impl NatConfig {
    /// RFC 4787 REQ-5 forbids less than 2 minutes; it is also what many home
    /// routers and Linux conntrack use, so tests see realistic expiry.
    pub const DEFAULT_MAPPING_TIMEOUT: Duration = Duration::from_secs(120);

    /// A NAT with hairpinning, port preservation and the default timeout.
    pub fn new(public_ip: IpAddr, mapping: Mapping, filtering: Filtering) -> Self {
        NatConfig {
            public_ip,
            mapping,
            filtering,
            hairpinning: true,
            port_preservation: true,
            mapping_timeout: Self::DEFAULT_MAPPING_TIMEOUT,
        }
    }

    /// Endpoint-independent mapping and filtering.
    pub fn full_cone(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            Mapping::EndpointIndependent,
            Filtering::EndpointIndependent,
        )
    }

    /// Endpoint-independent mapping, address-dependent filtering.
    pub fn restricted_cone(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            Mapping::EndpointIndependent,
            Filtering::AddressDependent,
        )
    }

    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    pub fn port_restricted_cone(public_ip: IpAddr) -> Self {
        let filtering = Filtering::AddressAndPortDependent;
        Self::new(public_ip, Mapping::EndpointIndependent, filtering)
    }

    /// Address-and-port-dependent mapping and filtering with random ports:
    /// the NAT that defeats server-reflexive candidates.
    pub fn symmetric(public_ip: IpAddr) -> Self {
        let dependent = Mapping::AddressAndPortDependent;
        NatConfig {
            port_preservation: false,
            ..Self::new(public_ip, dependent, Filtering::AddressAndPortDependent)
        }
    }
}

/// Public ports are drawn from the unprivileged range (RFC 4787 REQ-3).
const FIRST_PORT: u16 = 1024;
const PORT_COUNT: u32 = 65536 - FIRST_PORT as u32;
/// Random picks a symmetric NAT tries before scanning for a free port.
const RANDOM_PORT_TRIES: usize = 16;

/// The part of a destination that must match for a mapping to be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reuse {
    AnyDestination,
    SameIp(IpAddr),
    SameEndpoint(SocketAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MappingKey {
    internal: SocketAddr,
    reuse: Reuse,
}

#[derive(Debug)]
struct NatMapping {
    /// Tells a mapping from a later one on the same port, for packets that
    /// were routed to the first and reach the NAT after it was replaced.
    id: u64,
    key: MappingKey,
    last_outbound: Instant,
    /// Destinations the internal endpoint sent to: the inbound filter's
    /// permissions, which live as long as the mapping.
    sent_to: BTreeSet<SocketAddr>,
}

/// A mapping an inbound packet would use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Inbound {
    pub mapping_id: u64,
    pub internal: SocketAddr,
}

#[derive(Debug)]
pub(super) struct NatBox {
    pub cfg: NatConfig,
    pub uplink: LinkConfig,
    /// Expired mappings stay until their port is reused, so late packets can
    /// be told "mapping expired" rather than "no mapping".
    by_port: BTreeMap<u16, NatMapping>,
    by_key: BTreeMap<MappingKey, u16>,
    /// Where the next sequential port search starts.
    port_cursor: u16,
    next_mapping_id: u64,
}

impl NatBox {
    pub fn new(cfg: NatConfig, uplink: LinkConfig, rng: &mut SimRng) -> Self {
        NatBox {
            cfg,
            uplink,
            by_port: BTreeMap::new(),
            by_key: BTreeMap::new(),
            port_cursor: random_port(rng),
            next_mapping_id: 0,
        }
    }

    /// The public source of an outbound packet; creates or refreshes its
    /// mapping and records the destination for the filter.
    pub fn translate_outbound(
        &mut self,
        now: Instant,
        internal: SocketAddr,
        remote: SocketAddr,
        rng: &mut SimRng,
    ) -> Result<SocketAddr, DropReason> {
        if internal.is_ipv4() != self.cfg.public_ip.is_ipv4() {
            return Err(DropReason::NoRoute);
        }
        let key = MappingKey {
            internal,
            reuse: self.reuse_for(remote),
        };
        let port = match self.live_port_for(&key, now) {
            Some(port) => port,
            None => self.create_mapping(key, now, rng)?,
        };
        let mapping = self
            .by_port
            .get_mut(&port)
            .expect("mapping just found or made");
        // REQ-6: only outbound traffic keeps a mapping alive.
        mapping.last_outbound = now;
        mapping.sent_to.insert(remote);
        Ok(SocketAddr::new(self.cfg.public_ip, port))
    }

    /// The mapping on `port` if it is alive `at` that time, filter aside.
    pub fn live_mapping(&self, at: Instant, port: u16) -> Option<Inbound> {
        let mapping = self.by_port.get(&port)?;
        self.is_live(mapping, at).then(|| inbound(mapping))
    }

    /// Where an inbound packet from `source` to `port` goes, if anywhere.
    pub fn admit_inbound(
        &self,
        at: Instant,
        port: u16,
        source: SocketAddr,
    ) -> Result<Inbound, DropReason> {
        let mapping = self.by_port.get(&port).ok_or(DropReason::NoMapping)?;
        if !self.is_live(mapping, at) {
            return Err(DropReason::MappingExpired);
        }
        if !self.filter_admits(mapping, source) {
            return Err(DropReason::Filtered);
        }
        Ok(inbound(mapping))
    }

    /// `(internal, public)` for every mapping alive at `now`, by public port.
    pub fn live_mappings(&self, now: Instant) -> Vec<(SocketAddr, SocketAddr)> {
        self.by_port
            .iter()
            .filter(|(_, mapping)| self.is_live(mapping, now))
            .map(|(&port, mapping)| {
                let public = SocketAddr::new(self.cfg.public_ip, port);
                (mapping.key.internal, public)
            })
            .collect()
    }

    pub fn flush(&mut self) {
        self.by_port.clear();
        self.by_key.clear();
    }

    fn reuse_for(&self, remote: SocketAddr) -> Reuse {
        match self.cfg.mapping {
            Mapping::EndpointIndependent => Reuse::AnyDestination,
            Mapping::AddressDependent => Reuse::SameIp(remote.ip()),
            Mapping::AddressAndPortDependent => Reuse::SameEndpoint(remote),
        }
    }

    fn is_live(&self, mapping: &NatMapping, at: Instant) -> bool {
        at.saturating_duration_since(mapping.last_outbound) < self.cfg.mapping_timeout
    }

    fn live_port_for(&self, key: &MappingKey, now: Instant) -> Option<u16> {
        let port = *self.by_key.get(key)?;
        let mapping = self.by_port.get(&port)?;
        self.is_live(mapping, now).then_some(port)
    }

    fn filter_admits(&self, mapping: &NatMapping, source: SocketAddr) -> bool {
        match self.cfg.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => {
                // Destinations sort by IP first, so the first one at or after
                // port 0 of the source's IP has that IP if any does.
                let lowest_of_source_ip = SocketAddr::new(source.ip(), 0);
                let next = mapping.sent_to.range(lowest_of_source_ip..).next();
                next.is_some_and(|sent_to| sent_to.ip() == source.ip())
            }
            Filtering::AddressAndPortDependent => mapping.sent_to.contains(&source),
        }
    }

    fn create_mapping(
        &mut self,
        key: MappingKey,
        now: Instant,
        rng: &mut SimRng,
    ) -> Result<u16, DropReason> {
        let port = self
            .allocate_port(key.internal.port(), now, rng)
            .ok_or(DropReason::PortsExhausted)?;
        self.evict(port);
        let id = self.next_mapping_id;
        self.next_mapping_id += 1;
        let mapping = NatMapping {
            id,
            key,
            last_outbound: now,
            sent_to: BTreeSet::new(),
        };
        self.by_port.insert(port, mapping);
        self.by_key.insert(key, port);
        Ok(port)
    }

    /// Removes the expired mapping that may still hold `port`.
    fn evict(&mut self, port: u16) {
        if let Some(old) = self.by_port.remove(&port) {
            if self.by_key.get(&old.key) == Some(&port) {
                self.by_key.remove(&old.key);
            }
        }
    }

    fn allocate_port(&mut self, internal_port: u16, now: Instant, rng: &mut SimRng) -> Option<u16> {
        if self.cfg.port_preservation && internal_port != 0 && self.port_is_free(internal_port, now)
        {
            return Some(internal_port);
        }
        match self.cfg.mapping {
            // Like Linux `masquerade random`: a symmetric NAT's next port
            // must not be guessable from the last one.
            Mapping::AddressAndPortDependent => self.random_free_port(now, rng),
            _ => self.sequential_free_port(now),
        }
    }

    fn port_is_free(&self, port: u16, now: Instant) -> bool {
        self.by_port
            .get(&port)
            .is_none_or(|mapping| !self.is_live(mapping, now))
    }

    fn random_free_port(&mut self, now: Instant, rng: &mut SimRng) -> Option<u16> {
        for _ in 0..RANDOM_PORT_TRIES {
            let port = random_port(rng);
            if self.port_is_free(port, now) {
                return Some(port);
            }
        }
        self.port_cursor = random_port(rng);
        self.sequential_free_port(now)
    }

    fn sequential_free_port(&mut self, now: Instant) -> Option<u16> {
        let port = (0..PORT_COUNT)
            .map(|offset| port_after(self.port_cursor, offset))
            .find(|&port| self.port_is_free(port, now))?;
        self.port_cursor = port_after(port, 1);
        Some(port)
    }
}

fn inbound(mapping: &NatMapping) -> Inbound {
    Inbound {
        mapping_id: mapping.id,
        internal: mapping.key.internal,
    }
}

fn random_port(rng: &mut SimRng) -> u16 {
    rng.range(u64::from(FIRST_PORT), 65536) as u16
}

/// The port `offset` places after `port`, wrapping within the dynamic range.
fn port_after(port: u16, offset: u32) -> u16 {
    let index = (u32::from(port.max(FIRST_PORT) - FIRST_PORT) + offset) % PORT_COUNT;
    (u32::from(FIRST_PORT) + index) as u16
}
