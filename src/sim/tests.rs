//! Behaviour of the simulator: RFC 4787 NAT types, routing, links, runner.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;

const NAT_IP: &str = "203.0.113.100";
const CLIENT: &str = "10.0.0.2:5000";
/// Two ports of one echo server, and a second echo server.
const S1A: &str = "203.0.113.1:3478";
const S1B: &str = "203.0.113.1:3479";
const S2A: &str = "203.0.113.2:3478";

const MAPPINGS: [Mapping; 3] = [
    Mapping::EndpointIndependent,
    Mapping::AddressDependent,
    Mapping::AddressAndPortDependent,
];
const FILTERINGS: [Filtering; 3] = [
    Filtering::EndpointIndependent,
    Filtering::AddressDependent,
    Filtering::AddressAndPortDependent,
];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Answers every datagram with the source it saw, like a STUN binding.
#[derive(Default)]
struct Echo {
    outbox: VecDeque<Datagram>,
}

impl Endpoint for Echo {
    fn handle_datagram(&mut self, _now: Instant, dg: Datagram) {
        self.outbox.push_back(Datagram {
            from: dg.to,
            to: dg.from,
            data: dg.from.to_string().into_bytes(),
        });
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self) -> Option<Datagram> {
        self.outbox.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Sends what it is told to and keeps what it gets.
struct Probe {
    local: SocketAddr,
    outbox: VecDeque<Datagram>,
    inbox: Vec<Datagram>,
}

impl Probe {
    fn new(local: SocketAddr) -> Self {
        Probe {
            local,
            outbox: VecDeque::new(),
            inbox: Vec::new(),
        }
    }

    fn queue(&mut self, to: SocketAddr, data: &[u8]) {
        let from = self.local;
        let data = data.to_vec();
        self.outbox.push_back(Datagram { from, to, data });
    }

    /// The source `server` says it saw us at.
    fn observed_by(&self, server: SocketAddr) -> Option<SocketAddr> {
        let answer = self.inbox.iter().find(|dg| dg.from == server)?;
        Some(std::str::from_utf8(&answer.data).unwrap().parse().unwrap())
    }
}

impl Endpoint for Probe {
    fn handle_datagram(&mut self, _now: Instant, dg: Datagram) {
        self.inbox.push(dg);
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self) -> Option<Datagram> {
        self.outbox.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Times out every `period`.
struct Ticker {
    next: Instant,
    period: Duration,
    ticks: u32,
}

impl Endpoint for Ticker {
    fn handle_datagram(&mut self, _now: Instant, _dg: Datagram) {}
    fn handle_timeout(&mut self, now: Instant) {
        self.ticks += 1;
        self.next = now + self.period;
    }
    fn poll_transmit(&mut self) -> Option<Datagram> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }
}

/// A client behind one NAT and two echo servers on the internet.
struct Fixture {
    net: Network,
    now: Instant,
    nat: NatId,
    client: HostId,
}

fn fixture(cfg: NatConfig) -> Fixture {
    let mut net = Network::new(7);
    let nat = net.add_nat(cfg, LinkConfig::with_delay(ms(5)));
    let client = net.add_host(ip("10.0.0.2"), Some(nat), LinkConfig::with_delay(ms(1)));
    for server in ["203.0.113.1", "203.0.113.2"] {
        net.add_host(ip(server), None, LinkConfig::with_delay(ms(10)));
    }
    Fixture {
        net,
        now: Instant::now(),
        nat,
        client,
    }
}

impl Fixture {
    /// What each echo server sees as the source of one probe from `local`.
    fn observe(&mut self, local: SocketAddr, servers: &[&str]) -> Vec<Option<SocketAddr>> {
        let mut probe = Probe::new(local);
        for server in servers {
            probe.queue(sa(server), b"who am i");
        }
        let (mut echo1, mut echo2) = (Echo::default(), Echo::default());
        let until = self.now + Duration::from_secs(1);
        let outcome = self
            .net
            .run(
                &mut self.now,
                &mut [
                    (&[local], &mut probe),
                    (&[sa("203.0.113.1:0")], &mut echo1),
                    (&[sa("203.0.113.2:0")], &mut echo2),
                ],
                until,
                &mut |_| false,
            )
            .unwrap();
        assert_eq!(outcome, RunOutcome::ReachedUntil);
        servers.iter().map(|s| probe.observed_by(sa(s))).collect()
    }

    /// Whether a datagram from `from` to `to` reaches any host.
    fn reaches(&mut self, from: &str, to: SocketAddr) -> bool {
        self.net
            .send(self.now, sa(from), to, b"knock".to_vec())
            .unwrap();
        !self.drain().is_empty()
    }

    /// Every delivery until the network is idle.
    fn drain(&mut self) -> Vec<(HostId, Datagram)> {
        let mut delivered = Vec::new();
        while let Some(due) = self.net.poll_timeout() {
            self.now = self.now.max(due);
            while let Some(delivery) = self.net.poll_delivery_to_host(self.now) {
                delivered.push(delivery);
            }
        }
        delivered
    }
}

fn assert_stats_balance(net: &Network) {
    let stats = net.stats();
    let accounted = stats.delivered + stats.dropped.total() + stats.in_flight;
    assert_eq!(stats.sent, accounted, "{stats:?}");
}

#[test]
fn mapping_reuse_follows_mapping_behaviour() {
    for mapping in MAPPINGS {
        for filtering in FILTERINGS {
            let mut f = fixture(NatConfig::new(ip(NAT_IP), mapping, filtering));
            let seen: Vec<SocketAddr> = f
                .observe(sa(CLIENT), &[S1A, S1B, S2A])
                .into_iter()
                .map(|s| s.expect("answers come from where we sent, so pass any filter"))
                .collect();
            assert!(seen.iter().all(|s| s.ip() == ip(NAT_IP)), "{seen:?}");
            // seen: [S1A, S1B (same IP, other port), S2A (other IP)].
            let new_port = |a: usize, b: usize| seen[a] != seen[b];
            let observed = (new_port(0, 1), new_port(0, 2), new_port(1, 2));
            let (per_port, per_ip, mapping_count) = match mapping {
                Mapping::EndpointIndependent => (false, false, 1),
                Mapping::AddressDependent => (false, true, 2),
                Mapping::AddressAndPortDependent => (true, true, 3),
            };
            let case = format!("{mapping:?}/{filtering:?}: {seen:?}");
            assert_eq!(observed, (per_port, per_ip, per_ip), "{case}");
            assert_eq!(f.net.nat_mappings(f.nat).len(), mapping_count, "{case}");
        }
    }
}

#[test]
fn filtering_admits_per_filtering_behaviour() {
    for mapping in MAPPINGS {
        for filtering in FILTERINGS {
            let mut f = fixture(NatConfig::new(ip(NAT_IP), mapping, filtering));
            let public = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
            let case = format!("{mapping:?}/{filtering:?}");
            assert!(f.reaches(S1A, public), "{case}: the address we sent to");
            let same_ip = f.reaches(S1B, public);
            let other_ip = f.reaches(S2A, public);
            match filtering {
                Filtering::EndpointIndependent => assert!(same_ip && other_ip, "{case}"),
                Filtering::AddressDependent => assert!(same_ip && !other_ip, "{case}"),
                Filtering::AddressAndPortDependent => assert!(!same_ip && !other_ip, "{case}"),
            }
            let rejected = u64::from(!same_ip) + u64::from(!other_ip);
            assert_eq!(f.net.stats().dropped.filtered, rejected, "{case}");
            assert_stats_balance(&f.net);
        }
    }
}

#[test]
fn inbound_to_unmapped_port_has_no_mapping() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    assert!(!f.reaches(S1A, sa("203.0.113.100:4000")));
    assert_eq!(f.net.stats().dropped.no_mapping, 1);
}

#[test]
fn port_preservation_keeps_the_internal_port_while_free() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    f.net
        .add_host(ip("10.0.0.3"), Some(f.nat), LinkConfig::IDEAL);
    let first = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    assert_eq!(first, sa("203.0.113.100:5000"));
    let second = f.observe(sa("10.0.0.3:5000"), &[S1A])[0].unwrap();
    assert_ne!(second.port(), 5000, "port 5000 is taken");
    assert!(second.port() >= 1024);
}

#[test]
fn without_preservation_cone_ports_are_sequential_from_a_random_start() {
    let cfg = NatConfig {
        port_preservation: false,
        ..NatConfig::full_cone(ip(NAT_IP))
    };
    let mut f = fixture(cfg);
    f.net
        .add_host(ip("10.0.0.3"), Some(f.nat), LinkConfig::IDEAL);
    let first = f.observe(sa(CLIENT), &[S1A])[0].unwrap().port();
    let second = f.observe(sa("10.0.0.3:5000"), &[S1A])[0].unwrap().port();
    assert_ne!(first, 5000);
    assert_eq!(second, if first == u16::MAX { 1024 } else { first + 1 });
}

#[test]
fn symmetric_nat_gives_a_fresh_random_port_per_destination() {
    let mut f = fixture(NatConfig::symmetric(ip(NAT_IP)));
    let ports: Vec<u16> = f
        .observe(sa(CLIENT), &[S1A, S1B, S2A])
        .into_iter()
        .map(|s| s.unwrap().port())
        .collect();
    assert!(ports.iter().all(|&p| p >= 1024 && p != 5000), "{ports:?}");
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    let steps: Vec<i32> = ports
        .windows(2)
        .map(|w| i32::from(w[1]) - i32::from(w[0]))
        .collect();
    assert!(
        steps.iter().any(|&step| step.abs() > 16),
        "guessable: {ports:?}"
    );
}

#[test]
fn mapping_expires_without_outbound_and_inbound_does_not_refresh_it() {
    let cfg = NatConfig {
        mapping_timeout: Duration::from_secs(30),
        ..NatConfig::port_restricted_cone(ip(NAT_IP))
    };
    let mut f = fixture(cfg);
    let start = f.now;
    let public = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    f.now = start + Duration::from_secs(20);
    assert!(f.reaches(S1A, public), "inbound within the timeout");
    f.now = start + Duration::from_secs(31);
    assert!(
        !f.reaches(S1A, public),
        "inbound traffic refreshed the mapping"
    );
    assert_eq!(f.net.stats().dropped.mapping_expired, 1);
    assert!(f.net.nat_mappings(f.nat).is_empty());
}

#[test]
fn outbound_traffic_refreshes_the_mapping() {
    let cfg = NatConfig {
        mapping_timeout: Duration::from_secs(30),
        ..NatConfig::port_restricted_cone(ip(NAT_IP))
    };
    let mut f = fixture(cfg);
    let start = f.now;
    let public = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    f.now = start + Duration::from_secs(25);
    assert_eq!(f.observe(sa(CLIENT), &[S1A])[0], Some(public));
    f.now = start + Duration::from_secs(50);
    assert!(f.reaches(S1A, public));
    f.now = start + Duration::from_secs(100);
    assert!(!f.reaches(S1A, public));
    let renewed = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    assert_eq!(renewed, public, "port preserved again once free");
    assert_eq!(f.net.nat_mappings(f.nat), vec![(sa(CLIENT), public)]);
}

/// Two LAN hosts behind one NAT, each with a mapping made through S1A.
fn hairpin_fixture(cfg: NatConfig) -> (Fixture, SocketAddr, SocketAddr) {
    let mut f = fixture(cfg);
    f.net
        .add_host(ip("10.0.0.3"), Some(f.nat), LinkConfig::with_delay(ms(1)));
    let a_public = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    let b_public = f.observe(sa("10.0.0.3:6000"), &[S1A])[0].unwrap();
    (f, a_public, b_public)
}

#[test]
fn hairpinning_loops_back_with_the_senders_public_source() {
    let (mut f, a_public, b_public) = hairpin_fixture(NatConfig::full_cone(ip(NAT_IP)));
    let sent_at = f.now;
    f.net
        .send(sent_at, sa(CLIENT), b_public, b"hi".to_vec())
        .unwrap();
    let delivered = f.drain();
    assert_eq!(delivered.len(), 1);
    let dg = &delivered[0].1;
    assert_eq!((dg.from, dg.to), (a_public, sa("10.0.0.3:6000")));
    assert_eq!(f.now - sent_at, ms(2), "two host links, no uplink");
}

#[test]
fn hairpinned_packets_pass_the_destination_filter() {
    let cfg = NatConfig::port_restricted_cone(ip(NAT_IP));
    let (mut f, a_public, b_public) = hairpin_fixture(cfg);
    f.net
        .send(f.now, sa(CLIENT), b_public, b"1".to_vec())
        .unwrap();
    assert!(f.drain().is_empty(), "B never sent to A's public address");
    f.net
        .send(f.now, sa("10.0.0.3:6000"), a_public, b"2".to_vec())
        .unwrap();
    assert_eq!(f.drain().len(), 1, "A did send to B's public address");
    f.net
        .send(f.now, sa(CLIENT), b_public, b"3".to_vec())
        .unwrap();
    assert_eq!(f.drain().len(), 1);
    assert_eq!(f.net.stats().dropped.filtered, 1);
}

#[test]
fn hairpinning_disabled_drops() {
    let cfg = NatConfig {
        hairpinning: false,
        ..NatConfig::full_cone(ip(NAT_IP))
    };
    let (mut f, _, b_public) = hairpin_fixture(cfg);
    f.net
        .send(f.now, sa(CLIENT), b_public, b"hi".to_vec())
        .unwrap();
    assert!(f.drain().is_empty());
    assert_eq!(f.net.stats().dropped.hairpin_disabled, 1);
}

#[test]
fn same_lan_hosts_talk_directly_without_the_nat() {
    let mut f = fixture(NatConfig::symmetric(ip(NAT_IP)));
    let peer = f
        .net
        .add_host(ip("10.0.0.3"), Some(f.nat), LinkConfig::with_delay(ms(1)));
    let sent_at = f.now;
    f.net
        .send(sent_at, sa(CLIENT), sa("10.0.0.3:6000"), b"hi".to_vec())
        .unwrap();
    let delivered = f.drain();
    assert_eq!(delivered.len(), 1);
    let (host, dg) = &delivered[0];
    assert_eq!(
        (*host, dg.from, dg.to),
        (peer, sa(CLIENT), sa("10.0.0.3:6000"))
    );
    assert_eq!(f.now - sent_at, ms(2));
    assert!(f.net.nat_mappings(f.nat).is_empty());
}

#[test]
fn overlapping_private_subnets_stay_separate() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    let a1 = f.client;
    let b1 = f
        .net
        .add_host(ip("10.0.0.3"), Some(f.nat), LinkConfig::IDEAL);
    let nat2 = f
        .net
        .add_nat(NatConfig::full_cone(ip("203.0.113.101")), LinkConfig::IDEAL);
    let a2 = f
        .net
        .add_host(ip("10.0.0.2"), Some(nat2), LinkConfig::IDEAL);

    f.net
        .send_from_host(f.now, b1, 6000, sa(CLIENT), b"lan1".to_vec());
    let delivered = f.drain();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].0, a1, "reached LAN 1's 10.0.0.2, not LAN 2's");

    f.net
        .send_from_host(f.now, a2, 5000, sa("10.0.0.3:6000"), b"x".to_vec());
    assert!(f.drain().is_empty(), "10.0.0.3 is on the other LAN");
    assert!(
        !f.reaches(S1A, sa(CLIENT)),
        "private addresses are not routed"
    );
    assert_eq!(f.net.stats().dropped.no_route, 2);

    let err = f.net.send(f.now, sa(CLIENT), sa(S1A), Vec::new());
    assert_eq!(err, Err(SimError::AmbiguousSource(sa(CLIENT))));
}

#[test]
fn runner_binds_hosts_by_id_when_lans_overlap() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    let nat2 = f
        .net
        .add_nat(NatConfig::full_cone(ip("203.0.113.101")), LinkConfig::IDEAL);
    let a2 = f
        .net
        .add_host(ip("10.0.0.2"), Some(nat2), LinkConfig::IDEAL);
    let server = f.net.host_with_ip(sa(S1A)).unwrap();
    let (mut p1, mut p2) = (Probe::new(sa(CLIENT)), Probe::new(sa(CLIENT)));
    p1.queue(sa(S1A), b"1");
    p2.queue(sa(S1A), b"2");
    let mut echo = Echo::default();
    let until = f.now + Duration::from_secs(1);
    let endpoints: &mut [Bound<(HostId, u16)>] = &mut [
        (&[(f.client, 5000)], &mut p1),
        (&[(a2, 5000)], &mut p2),
        (&[(server, 3478)], &mut echo),
    ];
    f.net
        .run(&mut f.now, endpoints, until, &mut |_| false)
        .unwrap();
    assert_eq!(p1.observed_by(sa(S1A)), Some(sa("203.0.113.100:5000")));
    assert_eq!(p2.observed_by(sa(S1A)), Some(sa("203.0.113.101:5000")));
}

/// Two port-restricted cones, A behind one and B behind the other, each
/// knowing the other's public address; uplinks 20 ms, host links 1 ms.
fn two_nat_fixture() -> (Network, Instant, SocketAddr, SocketAddr) {
    let mut net = Network::new(3);
    let uplink = LinkConfig::with_delay(ms(20));
    let host_link = LinkConfig::with_delay(ms(1));
    let nat_a = net.add_nat(NatConfig::port_restricted_cone(ip(NAT_IP)), uplink);
    let nat_b = net.add_nat(NatConfig::port_restricted_cone(ip("203.0.113.101")), uplink);
    net.add_host(ip("10.0.0.2"), Some(nat_a), host_link);
    net.add_host(ip("10.0.1.2"), Some(nat_b), host_link);
    net.add_host(ip("203.0.113.1"), None, host_link);
    net.add_host(ip("203.0.113.2"), None, host_link);
    let mut f = Fixture {
        net,
        now: Instant::now(),
        nat: nat_a,
        client: HostId(0),
    };
    let a_public = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    let b_public = f.observe(sa("10.0.1.2:6000"), &[S1A])[0].unwrap();
    (f.net, f.now, a_public, b_public)
}

#[test]
fn filters_decide_when_the_packet_reaches_the_nat() {
    // A's packet reaches B's NAT 41 ms after it is sent, and B's host 1 ms later.
    // A tie goes to the arrival: B's send at 41 ms is too late.
    let just_before_delivery = ms(41) + Duration::from_micros(500);
    let cases = [
        (ms(5), true),
        (ms(40), true),
        (ms(41), false),
        (just_before_delivery, false),
        (ms(60), false),
    ];
    for (b_delay, a_admitted) in cases {
        let (mut net, t, a_public, b_public) = two_nat_fixture();
        net.send(t, sa(CLIENT), b_public, b"from A".to_vec())
            .unwrap();
        net.send(
            t + b_delay,
            sa("10.0.1.2:6000"),
            a_public,
            b"from B".to_vec(),
        )
        .unwrap();
        let mut got = Vec::new();
        while let Some(due) = net.poll_timeout() {
            while let Some(dg) = net.poll_delivery(due) {
                got.push(dg.data);
            }
        }
        let case = format!("B sends {b_delay:?} after A");
        assert_eq!(got.contains(&b"from A".to_vec()), a_admitted, "{case}");
        assert!(
            got.contains(&b"from B".to_vec()),
            "{case}: A opened its pinhole first"
        );
        assert_stats_balance(&net);
    }
}

#[test]
fn a_mapping_made_while_a_packet_travels_admits_it() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    let t = f.now;
    // 10 ms server link + 5 ms uplink: at the NAT at t+15.
    f.net
        .send(t, sa(S1A), sa("203.0.113.100:5000"), b"early".to_vec())
        .unwrap();
    assert_eq!(
        f.net.poll_timeout(),
        Some(t + ms(15)),
        "undecided until it reaches the NAT"
    );
    f.net
        .send(t + ms(3), sa(CLIENT), sa(S2A), b"open".to_vec())
        .unwrap();
    let delivered = f.drain();
    let early = delivered
        .iter()
        .find(|(_, dg)| dg.data == b"early")
        .unwrap();
    assert_eq!((early.0, early.1.to), (f.client, sa(CLIENT)));

    f.net.flush_nat(f.nat);
    let t = f.now;
    f.net
        .send(t, sa(S1A), sa("203.0.113.100:5000"), b"late".to_vec())
        .unwrap();
    f.net
        .send(t + ms(20), sa(CLIENT), sa(S2A), b"too late".to_vec())
        .unwrap();
    assert!(f.drain().iter().all(|(_, dg)| dg.data != b"late"));
    assert_eq!(f.net.stats().dropped.no_mapping, 1);
    assert_stats_balance(&f.net);
}

#[test]
fn a_packet_follows_the_mapping_its_port_has_when_it_arrives() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    let other = f
        .net
        .add_host(ip("10.0.0.3"), Some(f.nat), LinkConfig::with_delay(ms(1)));
    let public = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    let t = f.now;
    f.net.send(t, sa(S1A), public, b"x".to_vec()).unwrap();
    f.net.flush_nat(f.nat);
    // The same port, preserved for another host, before the packet arrives.
    f.net
        .send(t + ms(5), sa("10.0.0.3:5000"), sa(S2A), b"open".to_vec())
        .unwrap();
    let delivered = f.drain();
    let (host, dg) = delivered.iter().find(|(_, dg)| dg.data == b"x").unwrap();
    assert_eq!((*host, dg.to), (other, sa("10.0.0.3:5000")));
    assert_eq!(f.net.stats().dropped.total(), 0);
    assert_stats_balance(&f.net);
}

#[test]
fn poll_timeout_is_the_exact_delivery_time_through_a_known_mapping() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    let public = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    let t = f.now;
    f.net.send(t, sa(S1A), public, b"x".to_vec()).unwrap();
    assert_eq!(f.net.poll_timeout(), Some(t + ms(16)), "10 + 5 + 1 ms");
    assert_eq!(f.net.poll_delivery(t + ms(15)), None);
    assert!(f.net.poll_delivery(t + ms(16)).is_some());
}

#[test]
fn flushing_a_nat_drops_packets_in_flight_to_it() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    let public = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    f.net.send(f.now, sa(S1A), public, b"x".to_vec()).unwrap();
    f.net.flush_nat(f.nat);
    assert!(f.net.nat_mappings(f.nat).is_empty());
    assert!(f.drain().is_empty());
    assert_eq!(f.net.stats().dropped.no_mapping, 1);
}

#[test]
fn loss_rate_is_near_the_configured_value() {
    let mut net = Network::new(11);
    let lossy = LinkConfig {
        loss: 0.1,
        ..LinkConfig::IDEAL
    };
    net.add_host(ip("203.0.113.1"), None, lossy);
    net.add_host(ip("203.0.113.2"), None, lossy);
    let now = Instant::now();
    let n: u32 = 20_000;
    for i in 0..n {
        net.send(now, sa(S1A), sa(S2A), i.to_string().into_bytes())
            .unwrap();
    }
    let delivered = std::iter::from_fn(|| net.poll_delivery(now)).count() as f64;
    let loss = 1.0 - delivered / f64::from(n);
    // Two 10 % links lose 19 %; 5 standard deviations is under 0.015.
    assert!((loss - 0.19).abs() < 0.015, "loss {loss}");
    assert_eq!(
        net.stats().dropped.loss + net.stats().delivered,
        u64::from(n)
    );
}

#[test]
fn delay_is_the_sum_of_links_with_bounded_jitter() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    let jittery = |delay, jitter| LinkConfig {
        delay: ms(delay),
        jitter: ms(jitter),
        loss: 0.0,
    };
    f.net.set_link_host(f.client, jittery(10, 5));
    f.net.set_link_nat(f.nat, jittery(20, 0));
    let server = f.net.host_with_ip(sa(S1A)).unwrap();
    f.net.set_link_host(server, jittery(5, 10));
    let start = f.now;
    for i in 0..2000u32 {
        let sent_at = start + ms(u64::from(i));
        f.net
            .send(sent_at, sa(CLIENT), sa(S1A), i.to_be_bytes().to_vec())
            .unwrap();
    }
    let mut delays = Vec::new();
    let mut order = Vec::new();
    while let Some(due) = f.net.poll_timeout() {
        while let Some(dg) = f.net.poll_delivery(due) {
            let i = u32::from_be_bytes(dg.data.try_into().unwrap());
            delays.push(due - (start + ms(u64::from(i))));
            order.push(i);
        }
    }
    assert_eq!(delays.len(), 2000);
    assert!(
        delays.iter().all(|&d| d >= ms(35) && d <= ms(50)),
        "out of bounds"
    );
    assert!(delays.iter().min().unwrap() < &ms(37));
    assert!(delays.iter().max().unwrap() > &ms(48));
    assert!(order.windows(2).any(|w| w[1] < w[0]), "jitter reorders");
}

/// Deliveries of a busy scenario with jitter, loss and two NATs.
fn delivery_log(seed: u64) -> Vec<(Duration, HostId, Datagram)> {
    let mut net = Network::new(seed);
    let link = LinkConfig {
        delay: ms(10),
        jitter: ms(8),
        loss: 0.05,
    };
    let nat_a = net.add_nat(NatConfig::full_cone(ip(NAT_IP)), link);
    let nat_b = net.add_nat(NatConfig::symmetric(ip("203.0.113.101")), link);
    net.add_host(ip("10.0.0.2"), Some(nat_a), link);
    net.add_host(ip("10.0.1.2"), Some(nat_b), link);
    net.add_host(ip("203.0.113.1"), None, link);
    let start = Instant::now();
    let mut log = Vec::new();
    for i in 0..300u64 {
        let now = start + ms(i);
        for from in [CLIENT, "10.0.1.2:6000"] {
            net.send(now, sa(from), sa(S1A), i.to_string().into_bytes())
                .unwrap();
        }
        net.send(now, sa(S1A), sa("203.0.113.100:5000"), b"back".to_vec())
            .unwrap();
        while let Some((host, dg)) = net.poll_delivery_to_host(now) {
            log.push((now - start, host, dg));
        }
    }
    log
}

#[test]
fn same_seed_same_deliveries_other_seed_others() {
    let log = delivery_log(1);
    assert!(log.len() > 500);
    assert_eq!(log, delivery_log(1));
    assert_ne!(log, delivery_log(2));
}

#[test]
fn ipv6_hosts_on_the_internet() {
    let mut net = Network::new(5);
    net.add_host(ip("2001:db8::1"), None, LinkConfig::with_delay(ms(3)));
    net.add_host(ip("2001:db8::2"), None, LinkConfig::with_delay(ms(4)));
    net.add_host(ip("203.0.113.1"), None, LinkConfig::IDEAL);
    let nat = net.add_nat(NatConfig::full_cone(ip("2001:db8::100")), LinkConfig::IDEAL);
    net.add_host(ip("fd00::2"), Some(nat), LinkConfig::IDEAL);
    let mut now = Instant::now();
    let (mut client, mut lan_client) = (
        Probe::new(sa("[2001:db8::1]:5000")),
        Probe::new(sa("[fd00::2]:5000")),
    );
    client.queue(sa("[2001:db8::2]:3478"), b"hi");
    client.queue(sa(S1A), b"wrong family");
    lan_client.queue(sa("[2001:db8::2]:3478"), b"hi");
    let mut echo = Echo::default();
    let endpoints: &mut [Bound] = &mut [
        (&[sa("[2001:db8::1]:5000")], &mut client),
        (&[sa("[fd00::2]:5000")], &mut lan_client),
        (&[sa("[2001:db8::2]:3478")], &mut echo),
    ];
    let until = now + Duration::from_secs(1);
    net.run(&mut now, endpoints, until, &mut |_| false).unwrap();
    assert_eq!(
        client.observed_by(sa("[2001:db8::2]:3478")),
        Some(sa("[2001:db8::1]:5000"))
    );
    assert_eq!(
        lan_client.observed_by(sa("[2001:db8::2]:3478")),
        Some(sa("[2001:db8::100]:5000"))
    );
    assert_eq!(net.stats().dropped.no_route, 1);
}

#[test]
fn runner_stops_at_until_and_on_request() {
    let mut net = Network::new(1);
    let start = Instant::now();
    let mut ticker = Ticker {
        next: start + ms(10),
        period: ms(10),
        ticks: 0,
    };
    let none: [SocketAddr; 0] = [];
    let mut now = start;
    let outcome = net
        .run(
            &mut now,
            &mut [(&none, &mut ticker)],
            start + ms(1000),
            &mut |_| false,
        )
        .unwrap();
    assert_eq!(
        (outcome, now, ticker.ticks),
        (RunOutcome::ReachedUntil, start + ms(1000), 100)
    );

    let halt = now + ms(250);
    let outcome = net
        .run(
            &mut now,
            &mut [(&none, &mut ticker)],
            halt + ms(1000),
            &mut |t| t >= halt,
        )
        .unwrap();
    assert_eq!(
        (outcome, now, ticker.ticks),
        (RunOutcome::Stopped, halt, 125)
    );

    let mut idle = Probe::new(sa(CLIENT));
    let mut now = start;
    let outcome = net
        .run(
            &mut now,
            &mut [(&none, &mut idle)],
            start + ms(5),
            &mut |_| false,
        )
        .unwrap();
    assert_eq!((outcome, now), (RunOutcome::ReachedUntil, start + ms(5)));
}

/// Asks to be woken at a time that never moves, the classic runaway.
struct Runaway(Instant);

impl Endpoint for Runaway {
    fn handle_datagram(&mut self, _now: Instant, _dg: Datagram) {}
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self) -> Option<Datagram> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.0)
    }
}

#[test]
fn runner_caps_steps() {
    let mut net = Network::new(1);
    net.set_max_run_steps(1000);
    let mut now = Instant::now();
    let mut runaway = Runaway(now);
    let none: [SocketAddr; 0] = [];
    let until = now + Duration::from_secs(1);
    let result = net.run(&mut now, &mut [(&none, &mut runaway)], until, &mut |_| {
        false
    });
    assert_eq!(result, Err(SimError::StepLimit { steps: 1000 }));
}

#[test]
fn runner_counts_unheard_deliveries_and_rejects_bad_bindings() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    let mut probe = Probe::new(sa(CLIENT));
    probe.queue(sa("203.0.113.1:9999"), b"anyone?");
    let mut echo = Echo::default();
    let until = f.now + Duration::from_secs(1);
    let endpoints: &mut [Bound] = &mut [(&[sa(CLIENT)], &mut probe), (&[sa(S1A)], &mut echo)];
    f.net
        .run(&mut f.now, endpoints, until, &mut |_| false)
        .unwrap();
    assert_eq!(f.net.stats().dropped.no_listener, 1);
    assert_eq!(f.net.stats().delivered, 0);
    assert_stats_balance(&f.net);

    let mut liar = Probe::new(sa("10.0.0.2:7000"));
    liar.queue(sa(S1A), b"x");
    let result = f.net.run(
        &mut f.now,
        &mut [(&[sa(CLIENT)], &mut liar)],
        until,
        &mut |_| false,
    );
    assert_eq!(result, Err(SimError::NotBound(sa("10.0.0.2:7000"))));

    let (mut e1, mut e2) = (Echo::default(), Echo::default());
    let endpoints: &mut [Bound] = &mut [(&[sa(S1A)], &mut e1), (&[sa(S1A)], &mut e2)];
    let result = f.net.run(&mut f.now, endpoints, until, &mut |_| false);
    assert_eq!(result, Err(SimError::AddressInUse(sa(S1A))));

    let result = f.net.send(f.now, sa("198.51.100.1:1"), sa(S1A), Vec::new());
    assert_eq!(result, Err(SimError::UnknownSource(sa("198.51.100.1:1"))));
}

#[test]
fn step_lets_tests_inspect_endpoints_between_steps() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    let mut probe = Probe::new(sa(CLIENT));
    probe.queue(sa(S1A), b"?");
    let mut echo = Echo::default();
    let until = f.now + Duration::from_secs(1);
    let mut steps = 0;
    while probe.inbox.is_empty() {
        let endpoints: &mut [Bound] = &mut [
            (&[sa(CLIENT)], &mut probe),
            (&[sa("203.0.113.1:0")], &mut echo),
        ];
        assert!(f.net.step(&mut f.now, endpoints, until).unwrap());
        steps += 1;
    }
    assert_eq!(steps, 2, "request, then answer");
}

#[test]
fn udp_block_drops_internet_traffic_but_not_the_lan() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    f.net
        .add_host(ip("10.0.0.3"), Some(f.nat), LinkConfig::IDEAL);
    let public = f.observe(sa(CLIENT), &[S1A])[0].unwrap();
    f.net.set_udp_blocked(f.client, true);
    assert!(!f.reaches(CLIENT, sa(S1A)), "outbound");
    assert!(!f.reaches(S1A, public), "inbound");
    assert!(f.reaches("10.0.0.3:1", sa(CLIENT)), "LAN");
    assert_eq!(f.net.stats().dropped.udp_blocked, 2);
    f.net.set_udp_blocked(f.client, false);
    assert!(f.reaches(S1A, public));
}

#[test]
fn unknown_public_destinations_have_no_route() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    assert!(!f.reaches(S1A, sa("198.51.100.7:1")));
    assert!(!f.reaches(CLIENT, sa("198.51.100.7:1")));
    assert!(!f.reaches(CLIENT, sa("10.9.9.9:1")));
    assert_eq!(f.net.stats().dropped.no_route, 3);
}

#[test]
fn loopback_is_immediate() {
    let mut f = fixture(NatConfig::full_cone(ip(NAT_IP)));
    f.net
        .send(f.now, sa(CLIENT), sa("10.0.0.2:6000"), b"me".to_vec())
        .unwrap();
    let dg = f.net.poll_delivery(f.now).unwrap();
    assert_eq!((dg.from, dg.to), (sa(CLIENT), sa("10.0.0.2:6000")));
}
