//! A two-agent testbed: a STUN server (optionally a TURN server too) and two
//! ICE agents, each on the internet or behind a NAT of the simulator, driven
//! in virtual time. Used by the unit tests and by `benches/ice_connect.rs`;
//! never by the product.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{
    Candidate, CandidateType, ConnectionState, IceAgent, IceConfig, IceEvent, IceTransport,
    Received,
};
use crate::sim::{Filtering, LinkConfig, Mapping, NatConfig, NatId, Network};
use crate::stun::{AddressFamily, BindingServer};
use crate::turn::{
    ClientLink, ClientTransport, RelayAllocError, RelayAllocator, ServerOutput, TurnClientConfig,
    TurnServer, TurnServerConfig,
};

pub const STUN_SERVER: &str = "203.0.113.10:3478";
pub const STUN_SERVER_V6: &str = "[2001:db8::10]:3478";
/// The relay lives on its own host, as in most deployments.
pub const TURN_SERVER: &str = "203.0.113.11:3478";
pub const TURN_SERVER_V6: &str = "[2001:db8::11]:3478";
pub const TURN_USER: &str = "sim";
pub const TURN_PASSWORD: &str = "sim-password";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    None,
    FullCone,
    PortRestricted,
    Symmetric,
}

impl Nat {
    fn config(self, public_ip: IpAddr) -> Option<NatConfig> {
        let (mapping, filtering) = match self {
            Nat::None => return None,
            Nat::FullCone => (Mapping::EndpointIndependent, Filtering::EndpointIndependent),
            Nat::PortRestricted => (
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent,
            ),
            Nat::Symmetric => (
                Mapping::AddressAndPortDependent,
                Filtering::AddressAndPortDependent,
            ),
        };
        Some(NatConfig {
            public_ip,
            mapping,
            filtering,
            hairpinning: false,
            port_preservation: true,
            mapping_timeout: Duration::from_secs(120),
        })
    }
}

pub fn link(one_way_ms: u64) -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(one_way_ms),
        jitter: Duration::ZERO,
        loss: 0.0,
    }
}

/// One side of a call: an agent on one host socket.
pub struct Side {
    pub agent: IceTransport,
    pub addr: SocketAddr,
    pub host: crate::sim::HostId,
    pub nat: Option<NatId>,
    pub events: Vec<(Duration, IceEvent)>,
    /// Non-STUN datagrams received, in order.
    pub media: Vec<Vec<u8>>,
}

pub struct World {
    pub net: Network,
    pub start: Instant,
    pub now: Instant,
    pub stun: BindingServer,
    pub turn: Option<SimTurn>,
    pub sides: [Side; 2],
    /// Virtual time at which both agents held each other's candidates.
    pub signalled_at: Option<Instant>,
    pub steps: u64,
}

pub struct WorldBuilder {
    pub nats: [Nat; 2],
    pub same_nat: bool,
    pub hairpinning: bool,
    pub access_ms: u64,
    pub internet_ms: u64,
    pub seed: u64,
    pub config: IceConfig,
    pub components: u16,
    /// Everything on IPv6: 2001:db8::/64 as the internet, fd00:N::/64 LANs
    /// behind NAT66 boxes.
    pub ipv6: bool,
    /// Run a TURN server and give both agents an allocation on it.
    pub relay: bool,
}

impl Default for WorldBuilder {
    fn default() -> Self {
        WorldBuilder {
            nats: [Nat::None, Nat::None],
            same_nat: false,
            hairpinning: false,
            access_ms: 1,
            internet_ms: 10,
            seed: 7,
            config: IceConfig::default(),
            components: 1,
            ipv6: false,
            relay: false,
        }
    }
}

impl WorldBuilder {
    pub fn nats(mut self, a: Nat, b: Nat) -> Self {
        self.nats = [a, b];
        self
    }

    pub fn build(self) -> World {
        let start = Instant::now();
        let mut net = Network::new(self.seed);
        let v6 = self.ipv6;
        let stun_addr: SocketAddr = if v6 { STUN_SERVER_V6 } else { STUN_SERVER }
            .parse()
            .unwrap();
        net.add_host(stun_addr.ip(), None, link(self.internet_ms));
        let turn_addr: SocketAddr = if v6 { TURN_SERVER_V6 } else { TURN_SERVER }
            .parse()
            .unwrap();
        let turn = self.relay.then(|| {
            net.add_host(turn_addr.ip(), None, link(self.internet_ms));
            SimTurn::new(turn_addr, self.seed)
        });
        let mut nat_ids: [Option<NatId>; 2] = [None, None];
        let public = |i: usize| -> IpAddr { internet_ip(v6, i + 1) };
        if self.same_nat {
            let mut cfg = self.nats[0]
                .config(public(0))
                .expect("same NAT needs a NAT");
            cfg.hairpinning = self.hairpinning;
            let id = net.add_nat(cfg, link(self.internet_ms));
            nat_ids = [Some(id), Some(id)];
        } else {
            for (i, slot) in nat_ids.iter_mut().enumerate() {
                if let Some(mut cfg) = self.nats[i].config(public(i)) {
                    cfg.hairpinning = self.hairpinning;
                    *slot = Some(net.add_nat(cfg, link(self.internet_ms)));
                }
            }
        }
        let sides = [0usize, 1].map(|i| {
            let nat = nat_ids[i];
            let ip: IpAddr = match (nat, self.same_nat) {
                (Some(_), true) => lan_ip(v6, 1, i + 2),
                (Some(_), false) => lan_ip(v6, i + 1, 2),
                (None, _) => internet_ip(v6, i + 21),
            };
            let delay = if nat.is_some() {
                self.access_ms
            } else {
                self.access_ms + self.internet_ms
            };
            let host = net.add_host(ip, nat, link(delay));
            let addr = SocketAddr::new(ip, 40000 + i as u16);
            let mut config = self.config.clone();
            config.components = self.components;
            let rng = Box::new(StdRng::seed_from_u64(self.seed * 31 + i as u64));
            let mut agent = IceTransport::new(IceAgent::new(config, start, rng), start);
            for component in 1..=self.components {
                let a = SocketAddr::new(ip, addr.port() + (component - 1) * 2);
                agent
                    .add_host_candidate(component, a)
                    .expect("host candidate");
            }
            agent.add_stun_server(stun_addr);
            agent.set_controlling(i == 0);
            if self.relay {
                for component in 1..=self.components {
                    let base = SocketAddr::new(ip, addr.port() + (component - 1) * 2);
                    let cfg = TurnClientConfig::new(turn_addr, TURN_USER, TURN_PASSWORD);
                    let rng = Box::new(StdRng::seed_from_u64(self.seed * 77 + i as u64));
                    agent.add_turn_server(start, component, base, cfg, rng);
                }
            }
            Side {
                agent,
                addr,
                host,
                nat,
                events: Vec::new(),
                media: Vec::new(),
            }
        });
        World {
            net,
            start,
            now: start,
            stun: BindingServer::new(stun_addr, None, None),
            turn,
            sides,
            signalled_at: None,
            steps: 0,
        }
    }
}

fn internet_ip(v6: bool, host: usize) -> IpAddr {
    let text = if v6 {
        format!("2001:db8::{host}")
    } else {
        format!("203.0.113.{host}")
    };
    text.parse().unwrap()
}

fn lan_ip(v6: bool, lan: usize, host: usize) -> IpAddr {
    let text = if v6 {
        format!("fd00:{lan}::{host}")
    } else {
        format!("10.{lan}.0.{host}")
    };
    text.parse().unwrap()
}

impl World {
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Runs until `until` (virtual) or `stop` holds. Bounded in steps.
    pub fn run_until(&mut self, until: Duration, mut stop: impl FnMut(&World) -> bool) {
        let until = self.start + until;
        loop {
            self.steps += 1;
            assert!(self.steps < 2_000_000, "simulation did not settle");
            // Wake an agent only when it asked to be woken: the driver's
            // contract, so a missing timeout shows up here as a slow test.
            for s in &mut self.sides {
                if s.agent.poll_timeout().is_some_and(|t| t <= self.now) {
                    s.agent.handle_timeout(self.now);
                }
            }
            self.flush();
            while let Some(dg) = self.net.poll_delivery(self.now) {
                self.deliver(dg);
                self.flush();
            }
            self.check_invariants();
            if stop(self) {
                return;
            }
            if let Some(turn) = &mut self.turn {
                if turn.server.poll_timeout().is_some_and(|t| t <= self.now) {
                    turn.server.handle_timeout(self.now);
                }
            }
            let next = self
                .sides
                .iter()
                .filter_map(|s| s.agent.poll_timeout())
                .chain(self.net.poll_timeout())
                .chain(self.turn.as_ref().and_then(|t| t.server.poll_timeout()))
                .min();
            match next {
                Some(t) if t <= until => self.now = self.now.max(t),
                _ => {
                    self.now = until;
                    for s in &mut self.sides {
                        s.agent.handle_timeout(self.now);
                    }
                    self.flush();
                    return;
                }
            }
        }
    }

    /// Holds after every step, whatever the scenario.
    fn check_invariants(&self) {
        for (i, s) in self.sides.iter().enumerate() {
            for p in s.agent.pairs() {
                assert!(
                    !(p.state == super::PairState::Failed && (p.valid || p.nominated)),
                    "side {i}: a failed pair is still valid or nominated: {p:?}"
                );
            }
        }
    }

    fn deliver(&mut self, dg: crate::sim::Datagram) {
        let now = self.now;
        if dg.to == self.stun.local_addresses()[0] {
            if let Some(t) = self.stun.handle(dg.to, dg.from, &dg.data) {
                let _ = self.net.send(now, t.from, t.to, t.data);
            }
            return;
        }
        if let Some(turn) = self.turn.as_mut().filter(|t| t.address.ip() == dg.to.ip()) {
            if let Some((from, to, data)) = turn.deliver(now, &dg) {
                let _ = self.net.send(now, from, to, data);
            }
            return;
        }
        for s in &mut self.sides {
            if s.addr.ip() == dg.to.ip() {
                if let Received::Media { data, .. } =
                    s.agent.handle_packet(now, dg.from, dg.to, &dg.data)
                {
                    s.media.push(data.to_vec());
                }
            }
        }
    }

    fn flush(&mut self) {
        let now = self.now;
        for i in 0..2 {
            while let Some(t) = self.sides[i].agent.poll_transmit() {
                let _ = self.net.send(now, t.source, t.destination, t.contents);
            }
            while let Some(e) = self.sides[i].agent.poll_event() {
                let at = now - self.start;
                self.sides[i].events.push((at, e));
            }
        }
    }

    pub fn gathered(&self, i: usize) -> bool {
        self.sides[i]
            .events
            .iter()
            .any(|(_, e)| *e == IceEvent::GatheringComplete)
    }

    /// Non-trickle signalling, as in a SIP offer/answer: each side's full
    /// candidate list and credentials reach the other side at once.
    pub fn exchange_candidates(&mut self) {
        for (from, to) in [(0, 1), (1, 0)] {
            let creds = self.sides[from].agent.local_credentials().clone();
            let cands: Vec<Candidate> = self.sides[from]
                .agent
                .local_candidates()
                .iter()
                .filter(|c| c.kind != CandidateType::PeerReflexive)
                .cloned()
                .collect();
            let agent = &mut self.sides[to].agent;
            agent.set_remote_credentials(creds);
            for c in cands {
                agent.add_remote_candidate(Candidate::remote(
                    c.address,
                    c.kind,
                    c.priority,
                    c.foundation,
                    c.component,
                    c.related,
                ));
            }
            agent.end_of_remote_candidates();
        }
        self.signalled_at = Some(self.now);
    }

    /// Gather on both sides, signal, and run until both are connected or
    /// `limit` passes. Returns the time from signalling to both connected.
    pub fn connect(&mut self, limit: Duration) -> Option<Duration> {
        self.run_until(limit, |w| w.gathered(0) && w.gathered(1));
        assert!(
            self.gathered(0) && self.gathered(1),
            "gathering never finished"
        );
        self.exchange_candidates();
        self.run_until(limit, |w| w.both_connected());
        self.both_connected()
            .then(|| self.now - self.signalled_at.unwrap())
    }

    pub fn both_connected(&self) -> bool {
        self.sides.iter().all(|s| is_connected(s.agent.state()))
    }

    pub fn selected_types(&self, i: usize) -> Option<(CandidateType, CandidateType)> {
        self.sides[i]
            .agent
            .selected_pair(1)
            .map(|(l, r)| (l.kind, r.kind))
    }
}

pub fn is_connected(s: ConnectionState) -> bool {
    matches!(s, ConnectionState::Connected | ConnectionState::Completed)
}

/// A TURN server on the simulated internet, relaying from ports 49152 up.
pub struct SimTurn {
    pub server: TurnServer,
    pub address: SocketAddr,
    ports: SimPorts,
}

struct SimPorts {
    ip: IpAddr,
    next: u16,
}

impl RelayAllocator for SimPorts {
    fn allocate(
        &mut self,
        family: AddressFamily,
        _even_port: bool,
        _client: &ClientLink,
    ) -> Result<SocketAddr, RelayAllocError> {
        if matches!(family, AddressFamily::V6) != self.ip.is_ipv6() {
            return Err(RelayAllocError::FamilyUnsupported(family));
        }
        let port = self.next;
        self.next = self.next.checked_add(1).ok_or(RelayAllocError::Exhausted)?;
        Ok(SocketAddr::new(self.ip, port))
    }

    fn allocate_even_pair(
        &mut self,
        family: AddressFamily,
        client: &ClientLink,
    ) -> Result<(SocketAddr, SocketAddr), RelayAllocError> {
        self.next = self
            .next
            .checked_add(self.next % 2)
            .ok_or(RelayAllocError::Exhausted)?;
        Ok((
            self.allocate(family, true, client)?,
            self.allocate(family, false, client)?,
        ))
    }
}

impl SimTurn {
    fn new(address: SocketAddr, seed: u64) -> Self {
        let mut config = TurnServerConfig {
            realm: "sim.example".into(),
            primary: address,
            ..Default::default()
        };
        config.users.insert(TURN_USER.into(), TURN_PASSWORD.into());
        SimTurn {
            server: TurnServer::new(config, Box::new(StdRng::seed_from_u64(seed ^ 0x7u64))),
            address,
            ports: SimPorts {
                ip: address.ip(),
                next: 49152,
            },
        }
    }

    /// Handles a datagram addressed to the TURN host (its listening address
    /// or a relayed one); returns what to send.
    fn deliver(
        &mut self,
        now: Instant,
        dg: &crate::sim::Datagram,
    ) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let out = if dg.to == self.address {
            let link = ClientLink {
                transport: ClientTransport::Udp,
                local: self.address,
                remote: dg.from,
            };
            self.server
                .handle_client(now, link, &dg.data, &mut self.ports)
        } else {
            self.server.handle_peer(now, dg.to, dg.from, &dg.data)
        };
        match out {
            ServerOutput::ToPeer { from, to, data } => Some((from, to, data.to_vec())),
            ServerOutput::ToClient { link, data } => Some((link.local, link.remote, data.to_vec())),
            ServerOutput::None => None,
        }
    }
}
