//! Hosts, NATs, routing and the in-flight queue.
//!
//! A packet's whole path is computed when it is sent: links crossed, delays,
//! losses and the sender-side NAT translation. The one thing that cannot be
//! decided then is whether a NAT on the receiving side lets it in: that
//! depends on what the NAT's LAN sends while the packet travels (two ICE
//! agents opening pinholes at once). So the packet gets a *gate*, evaluated
//! when it reaches the NAT, before any send made at or after that time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::link::LinkConfig;
use super::nat::{Inbound, NatBox, NatConfig};
use super::rng::SimRng;
use super::stats::{DropReason, NetStats};
use super::{Datagram, HostId, NatId, SimError};

/// Where an IP address means something: the LAN behind a NAT, or the
/// internet (`None`). LANs may reuse each other's private ranges.
type Scope = Option<NatId>;

/// Far more than any scenario needs (a 10-minute call at 50 packets/s each
/// way is 60 000 steps), yet a runaway endpoint fails a debug-build test in
/// about two seconds.
const DEFAULT_MAX_RUN_STEPS: u64 = 1_000_000;

/// Simulated UDP network in virtual time: hosts on the internet or on LANs
/// behind NATs, and the datagrams in flight between them.
#[derive(Debug)]
pub struct Network {
    rng: SimRng,
    hosts: Vec<Host>,
    nats: Vec<NatBox>,
    hosts_by_scope: BTreeMap<(Scope, IpAddr), HostId>,
    hosts_by_ip: BTreeMap<IpAddr, Vec<HostId>>,
    nats_by_ip: BTreeMap<IpAddr, NatId>,
    /// Packets due to a host, by (due time, send order).
    deliveries: BTreeMap<(Instant, u64), Delivery>,
    /// Packets yet to pass a receiving NAT, by (arrival at the NAT, send order).
    gates: BTreeMap<(Instant, u64), Gate>,
    /// The gates whose delivery time is still unknown, which `poll_timeout`
    /// must therefore report themselves.
    held_gates: BTreeSet<(Instant, u64)>,
    next_seq: u64,
    /// The latest `now` seen; the time `nat_mappings` reports at.
    clock: Option<Instant>,
    stats: NetStats,
    pub(super) max_run_steps: u64,
}

#[derive(Clone, Copy, Debug)]
struct Host {
    ip: IpAddr,
    lan: Scope,
    link: LinkConfig,
    udp_blocked: bool,
}

#[derive(Debug)]
struct Delivery {
    host: HostId,
    datagram: Datagram,
    /// Came through a NAT or the internet, so a UDP block on the host applies.
    from_outside: bool,
}

/// A datagram being routed, with the addresses it carries at this hop.
struct Packet {
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// The running arrival time of a packet along its path.
struct Trip {
    arrival: Instant,
}

impl Trip {
    fn cross(&mut self, link: &LinkConfig, rng: &mut SimRng) -> Result<(), DropReason> {
        self.arrival += link.sample(rng).ok_or(DropReason::Loss)?;
        Ok(())
    }
}

#[derive(Debug)]
struct Gate {
    nat: NatId,
    public_port: u16,
    source: SocketAddr,
    fate: GateFate,
}

/// What happens to a packet once its NAT lets it in.
#[derive(Debug)]
enum GateFate {
    /// Already scheduled for `due`, through the mapping live at send time.
    Scheduled { due: Instant, mapping_id: u64 },
    /// Lost on the NAT-to-host link.
    LostBeyond,
    /// No live mapping at send time; one may appear before the packet
    /// arrives, so the NAT-to-host leg is drawn at the gate.
    Held(Vec<u8>),
}

impl Network {
    pub fn new(seed: u64) -> Self {
        Network {
            rng: SimRng::new(seed),
            hosts: Vec::new(),
            nats: Vec::new(),
            hosts_by_scope: BTreeMap::new(),
            hosts_by_ip: BTreeMap::new(),
            nats_by_ip: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            gates: BTreeMap::new(),
            held_gates: BTreeSet::new(),
            next_seq: 0,
            clock: None,
            stats: NetStats::default(),
            max_run_steps: DEFAULT_MAX_RUN_STEPS,
        }
    }

    /// # Panics
    /// If the public IP is already a NAT's or an internet host's.
    pub fn add_nat(&mut self, cfg: NatConfig, uplink: LinkConfig) -> NatId {
        let ip = cfg.public_ip;
        assert!(
            self.internet_ip_is_free(ip),
            "{ip} is already on the internet"
        );
        let id = NatId(self.nats.len());
        self.nats.push(NatBox::new(cfg, uplink, &mut self.rng));
        self.nats_by_ip.insert(ip, id);
        id
    }

    /// A host with one IP, on the internet (`behind = None`) or on the LAN
    /// behind a NAT. Multi-homed machines are several hosts.
    ///
    /// # Panics
    /// If the IP is already taken where the host would sit (that LAN, or the
    /// internet including NATs' public IPs), or the NAT is not this network's.
    pub fn add_host(&mut self, ip: IpAddr, behind: Option<NatId>, link: LinkConfig) -> HostId {
        let taken = match behind {
            None => !self.internet_ip_is_free(ip),
            Some(nat) => {
                assert!(nat.0 < self.nats.len(), "{nat:?} is not in this network");
                self.hosts_by_scope.contains_key(&(behind, ip))
            }
        };
        assert!(!taken, "{ip} is already taken in {behind:?}");
        let id = HostId(self.hosts.len());
        self.hosts.push(Host {
            ip,
            lan: behind,
            link,
            udp_blocked: false,
        });
        self.hosts_by_scope.insert((behind, ip), id);
        self.hosts_by_ip.entry(ip).or_default().push(id);
        id
    }

    pub fn host_ip(&self, h: HostId) -> IpAddr {
        self.hosts[h.0].ip
    }

    /// The NAT a host sits behind, `None` for an internet host.
    pub fn host_nat(&self, h: HostId) -> Option<NatId> {
        self.hosts[h.0].lan
    }

    pub fn nat_public_ip(&self, n: NatId) -> IpAddr {
        self.nats[n.0].cfg.public_ip
    }

    /// The one host whose IP is `addr.ip()`.
    ///
    /// Errors: no such host, or several (same private IP on different LANs).
    pub fn host_with_ip(&self, addr: SocketAddr) -> Result<HostId, SimError> {
        match self.hosts_by_ip.get(&addr.ip()).map(Vec::as_slice) {
            Some([only]) => Ok(*only),
            Some([_, _, ..]) => Err(SimError::AmbiguousSource(addr)),
            _ => Err(SimError::UnknownSource(addr)),
        }
    }

    /// Sends a UDP datagram from the host whose IP is `from.ip()`.
    ///
    /// The path is computed now and delivery scheduled at `now` plus the
    /// path's delay (so a zero-delay path is due at `now`). Whatever the
    /// network does with the packet, it is no error: drops are counted in
    /// [`Network::stats`]. Errors only when `from.ip()` names no host or,
    /// with overlapping LANs, several; then use [`Network::send_from_host`].
    pub fn send(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    ) -> Result<(), SimError> {
        let host = self.host_with_ip(from)?;
        self.transmit(now, host, from, to, data);
        Ok(())
    }

    /// [`Network::send`] from `host`'s IP and `port`, never ambiguous.
    pub fn send_from_host(
        &mut self,
        now: Instant,
        host: HostId,
        port: u16,
        to: SocketAddr,
        data: Vec<u8>,
    ) {
        let from = SocketAddr::new(self.host_ip(host), port);
        self.transmit(now, host, from, to, data);
    }

    /// Earliest time a datagram may be due. A packet a NAT will still
    /// filter counts too, so polling then may yield nothing.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let first_delivery = self.deliveries.keys().next().map(|&(due, _)| due);
        let first_held_gate = self.held_gates.first().map(|&(at, _)| at);
        first_delivery.into_iter().chain(first_held_gate).min()
    }

    /// Next datagram due at or before `now`, by due time then send order.
    /// `to` is the receiver's own address (after NAT translation) and
    /// `from` the source as the receiver sees it.
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Datagram> {
        self.poll_delivery_to_host(now)
            .map(|(_, datagram)| datagram)
    }

    /// [`Network::poll_delivery`] with the receiving host, which `to` alone
    /// does not name when LANs overlap.
    pub fn poll_delivery_to_host(&mut self, now: Instant) -> Option<(HostId, Datagram)> {
        self.advance(now);
        loop {
            let entry = self.deliveries.first_entry()?;
            if entry.key().0 > now {
                return None;
            }
            let delivery = entry.remove();
            if delivery.from_outside && self.hosts[delivery.host.0].udp_blocked {
                self.stats.dropped.count(DropReason::UdpBlocked);
                continue;
            }
            self.stats.delivered += 1;
            return Some((delivery.host, delivery.datagram));
        }
    }

    pub fn stats(&self) -> NetStats {
        let undecided_gates = self
            .gates
            .values()
            .filter(|gate| !matches!(gate.fate, GateFate::Scheduled { .. }))
            .count();
        NetStats {
            in_flight: (self.deliveries.len() + undecided_gates) as u64,
            ..self.stats
        }
    }

    /// `(internal, public)` for each mapping alive at the latest time the
    /// network was given, by public port.
    pub fn nat_mappings(&self, nat: NatId) -> Vec<(SocketAddr, SocketAddr)> {
        match self.clock {
            Some(now) => self.nats[nat.0].live_mappings(now),
            None => Vec::new(),
        }
    }

    /// Applies to packets sent from now on; packets in flight keep the
    /// conditions they were sent under.
    pub fn set_link_host(&mut self, h: HostId, l: LinkConfig) {
        self.hosts[h.0].link = l;
    }

    /// The NAT's link to the internet; like [`Network::set_link_host`].
    pub fn set_link_nat(&mut self, n: NatId, l: LinkConfig) {
        self.nats[n.0].uplink = l;
    }

    /// A host firewall dropping the host's UDP to and from anything beyond
    /// its LAN (its own NAT's public address included). Checked when a
    /// packet leaves the host and when it is due at the host.
    pub fn set_udp_blocked(&mut self, h: HostId, blocked: bool) {
        self.hosts[h.0].udp_blocked = blocked;
    }

    /// Forgets every mapping, like a conntrack flush or a NAT reboot.
    pub fn flush_nat(&mut self, n: NatId) {
        self.nats[n.0].flush();
    }

    /// The network's PRNG, for tests to derive further seeds from.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Bounds the steps of one [`Network::run`] (default 1 000 000).
    pub fn set_max_run_steps(&mut self, steps: u64) {
        self.max_run_steps = steps;
    }

    pub(super) fn transmit_from(&mut self, now: Instant, host: HostId, dg: Datagram) {
        self.transmit(now, host, dg.from, dg.to, dg.data);
    }

    /// Counts a delivery no runner endpoint listened to as a drop instead.
    pub(super) fn count_unheard(&mut self) {
        self.stats.delivered -= 1;
        self.stats.dropped.count(DropReason::NoListener);
    }

    fn internet_ip_is_free(&self, ip: IpAddr) -> bool {
        !self.nats_by_ip.contains_key(&ip) && !self.hosts_by_scope.contains_key(&(None, ip))
    }

    fn transmit(
        &mut self,
        now: Instant,
        src: HostId,
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    ) {
        self.advance(now);
        self.stats.sent += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        let packet = Packet {
            seq,
            from,
            to,
            data,
        };
        if let Err(reason) = self.route_from_host(now, src, packet) {
            self.stats.dropped.count(reason);
        }
    }

    /// Lets every packet that reached its NAT by `now` through or not, so
    /// that what is sent at `now` cannot open a pinhole for it retroactively.
    fn advance(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |clock| clock.max(now)));
        while let Some(entry) = self.gates.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, seq), gate) = entry.remove_entry();
            self.held_gates.remove(&(at, seq));
            self.pass_gate(at, seq, gate);
        }
    }

    fn route_from_host(
        &mut self,
        now: Instant,
        src: HostId,
        packet: Packet,
    ) -> Result<(), DropReason> {
        let host = self.hosts[src.0];
        if packet.to.ip() == host.ip {
            self.schedule(now, src, packet, false);
            return Ok(());
        }
        if packet.from.is_ipv4() != packet.to.is_ipv4() {
            return Err(DropReason::NoRoute);
        }
        if host.lan.is_some() {
            if let Some(&peer) = self.hosts_by_scope.get(&(host.lan, packet.to.ip())) {
                return self.route_on_lan(now, host, peer, packet);
            }
        }
        if host.udp_blocked {
            return Err(DropReason::UdpBlocked);
        }
        let mut trip = Trip { arrival: now };
        trip.cross(&host.link, &mut self.rng)?;
        match host.lan {
            Some(nat) => self.route_out_of_lan(now, trip, nat, packet),
            None => self.route_on_internet(trip, packet),
        }
    }

    fn route_on_lan(
        &mut self,
        now: Instant,
        host: Host,
        peer: HostId,
        packet: Packet,
    ) -> Result<(), DropReason> {
        let mut trip = Trip { arrival: now };
        trip.cross(&host.link, &mut self.rng)?;
        trip.cross(&self.hosts[peer.0].link, &mut self.rng)?;
        self.schedule(trip.arrival, peer, packet, false);
        Ok(())
    }

    fn route_out_of_lan(
        &mut self,
        now: Instant,
        mut trip: Trip,
        nat: NatId,
        mut packet: Packet,
    ) -> Result<(), DropReason> {
        let nat_box = &mut self.nats[nat.0];
        if packet.to.ip() == nat_box.cfg.public_ip {
            return self.hairpin(now, trip, nat, packet);
        }
        packet.from = nat_box.translate_outbound(now, packet.from, packet.to, &mut self.rng)?;
        trip.cross(&nat_box.uplink, &mut self.rng)?;
        self.route_on_internet(trip, packet)
    }

    /// RFC 4787 REQ-9: the packet comes back in from the sender's public
    /// mapping, through the destination mapping's filter, never touching
    /// the uplink.
    fn hairpin(
        &mut self,
        now: Instant,
        trip: Trip,
        nat: NatId,
        mut packet: Packet,
    ) -> Result<(), DropReason> {
        let nat_box = &mut self.nats[nat.0];
        if !nat_box.cfg.hairpinning {
            return Err(DropReason::HairpinDisabled);
        }
        packet.from = nat_box.translate_outbound(now, packet.from, packet.to, &mut self.rng)?;
        self.enter_nat(trip, nat, packet);
        Ok(())
    }

    fn route_on_internet(&mut self, mut trip: Trip, packet: Packet) -> Result<(), DropReason> {
        let destination = packet.to.ip();
        if let Some(&host) = self.hosts_by_scope.get(&(None, destination)) {
            trip.cross(&self.hosts[host.0].link, &mut self.rng)?;
            self.schedule(trip.arrival, host, packet, true);
            return Ok(());
        }
        let &nat = self
            .nats_by_ip
            .get(&destination)
            .ok_or(DropReason::NoRoute)?;
        trip.cross(&self.nats[nat.0].uplink, &mut self.rng)?;
        self.enter_nat(trip, nat, packet);
        Ok(())
    }

    /// The packet reaches the public side of `nat` at `trip.arrival`.
    fn enter_nat(&mut self, trip: Trip, nat: NatId, packet: Packet) {
        let at = trip.arrival;
        let gate_key = (at, packet.seq);
        let public_port = packet.to.port();
        let source = packet.from;
        let fate = match self.nats[nat.0].live_mapping(at, public_port) {
            None => {
                self.held_gates.insert(gate_key);
                GateFate::Held(packet.data)
            }
            Some(inbound) => match self.last_leg(at, nat, inbound) {
                None => GateFate::LostBeyond,
                Some((host, due)) => {
                    let translated = Packet {
                        to: inbound.internal,
                        ..packet
                    };
                    self.schedule(due, host, translated, true);
                    GateFate::Scheduled {
                        due,
                        mapping_id: inbound.mapping_id,
                    }
                }
            },
        };
        let gate = Gate {
            nat,
            public_port,
            source,
            fate,
        };
        self.gates.insert(gate_key, gate);
    }

    fn pass_gate(&mut self, at: Instant, seq: u64, gate: Gate) {
        let verdict = self.nats[gate.nat.0].admit_inbound(at, gate.public_port, gate.source);
        let inbound = match verdict {
            Ok(inbound) => inbound,
            Err(reason) => {
                if let GateFate::Scheduled { due, .. } = gate.fate {
                    self.deliveries.remove(&(due, seq));
                }
                self.stats.dropped.count(reason);
                return;
            }
        };
        let data = match gate.fate {
            GateFate::Scheduled { mapping_id, .. } if mapping_id == inbound.mapping_id => return,
            // The mapping seen at send time was replaced on the way: re-route.
            GateFate::Scheduled { due, .. } => {
                let stale = self.deliveries.remove(&(due, seq));
                stale
                    .expect("a scheduled gate's delivery is queued")
                    .datagram
                    .data
            }
            GateFate::Held(data) => data,
            GateFate::LostBeyond => {
                self.stats.dropped.count(DropReason::Loss);
                return;
            }
        };
        match self.last_leg(at, gate.nat, inbound) {
            None => self.stats.dropped.count(DropReason::Loss),
            Some((host, due)) => {
                let packet = Packet {
                    seq,
                    from: gate.source,
                    to: inbound.internal,
                    data,
                };
                self.schedule(due, host, packet, true);
            }
        }
    }

    /// The NAT-to-host link: which LAN host, and when the packet reaches it.
    fn last_leg(&mut self, at: Instant, nat: NatId, inbound: Inbound) -> Option<(HostId, Instant)> {
        let host = self.hosts_by_scope[&(Some(nat), inbound.internal.ip())];
        let mut trip = Trip { arrival: at };
        trip.cross(&self.hosts[host.0].link, &mut self.rng).ok()?;
        Some((host, trip.arrival))
    }

    fn schedule(&mut self, due: Instant, host: HostId, packet: Packet, from_outside: bool) {
        let datagram = Datagram {
            from: packet.from,
            to: packet.to,
            data: packet.data,
        };
        let delivery = Delivery {
            host,
            datagram,
            from_outside,
        };
        self.deliveries.insert((due, packet.seq), delivery);
    }
}
