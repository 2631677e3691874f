//! Ring-1 tests of the ICE agent: two agents and a STUN server on the
//! in-memory network, in virtual time, behind every pair of NAT behaviours.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::testbed::*;
use super::*;
use crate::sim::LinkConfig;

use CandidateType::{Host, PeerReflexive as Prflx, ServerReflexive as Srflx};

/// Expected outcome of a NAT-matrix row, from the controlling side (A).
#[derive(Debug)]
enum Expect {
    Pair(CandidateType, CandidateType),
    /// Only a TURN relay can connect these two (`nat_matrix_with_relay`
    /// shows that they do once one is configured).
    NeedsRelay,
}

fn matrix_row(a: Nat, b: Nat, expect: Expect) {
    let mut w = WorldBuilder::default().nats(a, b).build();
    let connected = w.connect(Duration::from_secs(40));
    match expect {
        Expect::Pair(local, remote) => {
            let t = connected.unwrap_or_else(|| {
                panic!(
                    "{a:?}/{b:?} did not connect: A {:?}, B {:?}",
                    w.sides[0].agent.state(),
                    w.sides[1].agent.state()
                )
            });
            assert_eq!(
                w.selected_types(0),
                Some((local, remote)),
                "{a:?}/{b:?} from A"
            );
            // B sees the same pair from the other end.
            assert_eq!(
                w.selected_types(1),
                Some((remote, local)),
                "{a:?}/{b:?} from B"
            );
            // Both sides agree on the addresses of the selected pair.
            let (al, ar) = w.sides[0].agent.selected_pair(1).unwrap();
            let (bl, br) = w.sides[1].agent.selected_pair(1).unwrap();
            assert_eq!(al.address, br.address, "{a:?}/{b:?}");
            assert_eq!(ar.address, bl.address, "{a:?}/{b:?}");
            // With 22 ms RTT, every connectable row is up well within a second.
            assert!(t < Duration::from_millis(600), "{a:?}/{b:?} took {t:?}");
        }
        Expect::NeedsRelay => {
            assert!(connected.is_none(), "{a:?}/{b:?} connected without a relay");
            assert_eq!(
                w.sides[0].agent.state(),
                ConnectionState::Failed,
                "{a:?}/{b:?}"
            );
            assert_eq!(
                w.sides[1].agent.state(),
                ConnectionState::Failed,
                "{a:?}/{b:?}"
            );
        }
    }
}

#[test]
fn nat_matrix() {
    use Expect::*;
    use Nat::*;
    let rows = [
        (None, None, Pair(Host, Host)),
        (None, FullCone, Pair(Host, Srflx)),
        (None, PortRestricted, Pair(Host, Srflx)),
        (None, Symmetric, Pair(Host, Prflx)),
        (FullCone, None, Pair(Srflx, Host)),
        (FullCone, FullCone, Pair(Srflx, Srflx)),
        (FullCone, PortRestricted, Pair(Srflx, Srflx)),
        (FullCone, Symmetric, Pair(Srflx, Prflx)),
        (PortRestricted, None, Pair(Srflx, Host)),
        (PortRestricted, FullCone, Pair(Srflx, Srflx)),
        (PortRestricted, PortRestricted, Pair(Srflx, Srflx)),
        (PortRestricted, Symmetric, NeedsRelay),
        (Symmetric, None, Pair(Prflx, Host)),
        (Symmetric, FullCone, Pair(Prflx, Srflx)),
        (Symmetric, PortRestricted, NeedsRelay),
        (Symmetric, Symmetric, NeedsRelay),
    ];
    for (a, b, expect) in rows {
        matrix_row(a, b, expect);
    }
}

/// The same sixteen rows with a TURN server on the internet and an
/// allocation on each side: rows that connected directly keep their direct
/// pair (a relay is the last resort, by priority), and the rows that failed
/// for lack of a relay now connect through one.
#[test]
fn nat_matrix_with_relay() {
    use CandidateType::Relayed;
    use Nat::*;
    let direct = [
        (None, None, (Host, Host)),
        (None, FullCone, (Host, Srflx)),
        (None, PortRestricted, (Host, Srflx)),
        (None, Symmetric, (Host, Prflx)),
        (FullCone, None, (Srflx, Host)),
        (FullCone, FullCone, (Srflx, Srflx)),
        (FullCone, PortRestricted, (Srflx, Srflx)),
        (FullCone, Symmetric, (Srflx, Prflx)),
        (PortRestricted, None, (Srflx, Host)),
        (PortRestricted, FullCone, (Srflx, Srflx)),
        (PortRestricted, PortRestricted, (Srflx, Srflx)),
        (Symmetric, None, (Prflx, Host)),
        (Symmetric, FullCone, (Prflx, Srflx)),
    ];
    for (a, b, want) in direct {
        let mut w = relay_world(a, b);
        w.connect(Duration::from_secs(40))
            .unwrap_or_else(|| panic!("{a:?}/{b:?} did not connect with a relay around"));
        assert_eq!(w.selected_types(0), Some(want), "{a:?}/{b:?}");
        // The relays were there: both sides offered a relayed candidate.
        for side in &w.sides {
            assert!(
                side.agent
                    .local_candidates()
                    .iter()
                    .any(|c| c.kind == Relayed),
                "{a:?}/{b:?}: no relayed candidate gathered"
            );
        }
    }
    for (a, b) in [
        (PortRestricted, Symmetric),
        (Symmetric, PortRestricted),
        (Symmetric, Symmetric),
    ] {
        let mut w = relay_world(a, b);
        let t = w
            .connect(Duration::from_secs(40))
            .unwrap_or_else(|| panic!("{a:?}/{b:?} did not connect through the relay"));
        let (al, ar) = w.sides[0].agent.selected_pair(1).unwrap();
        let (bl, br) = w.sides[1].agent.selected_pair(1).unwrap();
        assert!(
            al.kind == Relayed || ar.kind == Relayed,
            "{a:?}/{b:?}: selected {:?}/{:?}",
            al.kind,
            ar.kind
        );
        assert_eq!(al.address, br.address, "{a:?}/{b:?}");
        assert_eq!(ar.address, bl.address, "{a:?}/{b:?}");
        // Relay rows pay for the allocation's extra round trips and the
        // lower-priority checks, but stay within a couple of seconds.
        assert!(t < Duration::from_secs(3), "{a:?}/{b:?} took {t:?}");
    }
}

/// Both sides behind the given NATs, with the simulated TURN server.
fn relay_world(a: Nat, b: Nat) -> World {
    WorldBuilder {
        nats: [a, b],
        relay: true,
        ..Default::default()
    }
    .build()
}

/// Media over a relayed pair: a channel is bound once the pair is selected
/// and every datagram arrives, with the 4-byte ChannelData framing.
#[test]
fn media_flows_through_the_relay_on_a_channel() {
    let mut w = relay_world(Nat::Symmetric, Nat::Symmetric);
    w.connect(Duration::from_secs(40))
        .expect("connects via relay");
    // Let the ChannelBind complete.
    let until = w.elapsed() + Duration::from_millis(500);
    w.run_until(until, |_| false);
    let now = w.now;
    for n in 0..50u8 {
        for i in 0..2 {
            let payload = [0x80, n, i as u8, 0xAA];
            w.sides[i]
                .agent
                .send_media(now, 1, &payload)
                .expect("a media pair");
        }
    }
    let until = w.elapsed() + Duration::from_millis(500);
    w.run_until(until, |_| false);
    for i in 0..2 {
        let got: Vec<&Vec<u8>> = w.sides[i].media.iter().filter(|m| m[0] == 0x80).collect();
        assert_eq!(got.len(), 50, "side {i} received {}", got.len());
        assert!(got
            .iter()
            .enumerate()
            .all(|(n, m)| m[1] == n as u8 && m[2] == 1 - i as u8));
    }
    let channel_data: u64 = w
        .sides
        .iter()
        .flat_map(|s| s.agent.relays())
        .map(|r| r.stats().sent_channel_data)
        .sum();
    assert!(
        channel_data >= 50,
        "media went as indications: {channel_data}"
    );
    let turn = w.turn.as_ref().unwrap();
    assert!(turn.server.stats().relayed_to_peer_packets >= 50);
}

/// Shutting down releases the allocations on the server.
#[test]
fn release_frees_the_allocations() {
    let mut w = relay_world(Nat::Symmetric, Nat::Symmetric);
    w.connect(Duration::from_secs(40))
        .expect("connects via relay");
    assert_eq!(w.turn.as_ref().unwrap().server.allocation_count(), 2);
    let now = w.now;
    for s in &mut w.sides {
        s.agent.release(now);
    }
    let until = w.elapsed() + Duration::from_secs(3);
    w.run_until(until, |_| false);
    assert!(w.sides.iter().all(|s| s.agent.released()));
    assert_eq!(w.turn.as_ref().unwrap().server.allocation_count(), 0);
}

#[test]
fn both_behind_one_nat_without_hairpinning_use_host_candidates() {
    for nat in [Nat::FullCone, Nat::PortRestricted, Nat::Symmetric] {
        let mut w = WorldBuilder {
            nats: [nat, nat],
            same_nat: true,
            ..Default::default()
        }
        .build();
        let t = w
            .connect(Duration::from_secs(20))
            .expect("connects on the LAN");
        assert_eq!(w.selected_types(0), Some((Host, Host)), "{nat:?}");
        assert!(t < Duration::from_millis(200), "{t:?}");
    }
}

#[test]
fn host_only_connects_within_two_rtt_plus_ta() {
    // Public hosts, 13 ms per access link: 52 ms RTT.
    let mut w = WorldBuilder {
        access_ms: 1,
        internet_ms: 12,
        ..Default::default()
    }
    .build();
    // Public hosts: their server-reflexive addresses equal the host ones and
    // are dropped as redundant, so only host candidates are signalled.
    let t = w.connect(Duration::from_secs(10)).expect("connects");
    let rtt = Duration::from_millis(2 * 2 * 13);
    let ta = w.sides[0].agent.config().ta;
    assert!(t <= 2 * rtt + ta, "took {t:?}, budget {:?}", 2 * rtt + ta);
}

fn connected_world(builder: WorldBuilder) -> World {
    let mut w = builder.build();
    w.connect(Duration::from_secs(20)).expect("connects");
    w
}

#[test]
fn role_conflict_resolves_when_both_claim_control() {
    for (controlling, a_wins) in [(true, true), (true, false), (false, true), (false, false)] {
        let mut w = WorldBuilder::default().build();
        for s in &mut w.sides {
            s.agent.set_controlling(controlling);
        }
        w.sides[0]
            .agent
            .set_tie_breaker(if a_wins { u64::MAX } else { 1 });
        w.sides[1]
            .agent
            .set_tie_breaker(if a_wins { 1 } else { u64::MAX });
        w.connect(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("conflict ({controlling}, {a_wins}) not resolved"));
        let roles = [
            w.sides[0].agent.is_controlling(),
            w.sides[1].agent.is_controlling(),
        ];
        // The larger tie-breaker controls (RFC 8445 §7.3.1.1).
        assert_eq!(
            roles,
            [a_wins, !a_wins],
            "conflict ({controlling}, {a_wins})"
        );
        assert!(w.sides.iter().any(|s| s.agent.stats().role_conflicts > 0));
    }
}

#[test]
fn ice_restart_keeps_media_on_the_old_pair_until_a_new_one_is_selected() {
    let mut w = connected_world(WorldBuilder::default().nats(Nat::FullCone, Nat::PortRestricted));
    let old = w.sides[0]
        .agent
        .selected_pair(1)
        .map(|(l, r)| (l.address, r.address));
    let old_ufrag = w.sides[0].agent.local_credentials().ufrag.clone();
    for s in &mut w.sides {
        s.agent.restart();
    }
    assert_ne!(w.sides[0].agent.local_credentials().ufrag, old_ufrag);
    for s in &w.sides {
        assert!(s.agent.selected_pair(1).is_none());
        assert!(s.agent.media_pair(1).is_some(), "media must keep flowing");
    }
    let before = w.now;
    w.exchange_candidates();
    w.run_until(w.elapsed() + Duration::from_secs(10), |w| {
        w.both_connected()
    });
    assert!(w.both_connected(), "restart did not reconnect");
    assert!(w.now - before < Duration::from_millis(600));
    let new = w.sides[0]
        .agent
        .selected_pair(1)
        .map(|(l, r)| (l.address, r.address));
    assert_eq!(new, old, "same network, same best pair");
}

#[test]
fn consent_loss_is_detected_and_recovery_noticed() {
    let mut w = connected_world(WorldBuilder::default().nats(Nat::None, Nat::PortRestricted));
    let b = w.sides[1].host;
    w.net.set_udp_blocked(b, true);
    let blocked_at = w.now;
    w.run_until(w.elapsed() + Duration::from_secs(15), |w| {
        w.sides[0].agent.state() == ConnectionState::Disconnected
    });
    assert_eq!(w.sides[0].agent.state(), ConnectionState::Disconnected);
    // One consent interval (≤ 6 s) plus one unanswered check (1.5 s).
    let detected = w.now - blocked_at;
    assert!(detected <= Duration::from_millis(7500), "{detected:?}");
    w.net.set_udp_blocked(b, false);
    w.run_until(w.elapsed() + Duration::from_secs(5), |w| {
        is_connected(w.sides[0].agent.state())
    });
    assert!(is_connected(w.sides[0].agent.state()), "consent restored");

    w.net.set_udp_blocked(b, true);
    w.run_until(w.elapsed() + Duration::from_secs(45), |w| {
        w.sides[0].agent.state() == ConnectionState::Failed
    });
    assert_eq!(
        w.sides[0].agent.state(),
        ConnectionState::Failed,
        "consent expired"
    );
    assert!(
        w.sides[0].agent.media_pair(1).is_none(),
        "no media without consent"
    );
}

#[test]
fn twenty_percent_loss_still_connects() {
    for seed in 1..=20 {
        let mut builder = WorldBuilder {
            seed,
            ..Default::default()
        }
        .nats(Nat::PortRestricted, Nat::FullCone);
        builder.internet_ms = 20;
        let mut w = builder.build();
        for s in &w.sides {
            if let Some(nat) = s.nat {
                w.net.set_link_nat(
                    nat,
                    LinkConfig {
                        loss: 0.2,
                        ..link(20)
                    },
                );
            }
        }
        let t = w.connect(Duration::from_secs(30));
        assert!(t.is_some(), "seed {seed}: not connected under 20 % loss");
        assert_eq!(w.selected_types(0), Some((Srflx, Srflx)), "seed {seed}");
    }
}

#[test]
fn aggressive_nomination_connects_and_both_sides_agree() {
    let config = IceConfig {
        nomination: Nomination::Aggressive,
        ..Default::default()
    };
    let mut w = WorldBuilder {
        config,
        ..Default::default()
    }
    .nats(Nat::FullCone, Nat::None)
    .build();
    w.connect(Duration::from_secs(10)).expect("connects");
    let (al, ar) = w.sides[0].agent.selected_pair(1).unwrap();
    let (bl, br) = w.sides[1].agent.selected_pair(1).unwrap();
    assert_eq!((al.address, ar.address), (br.address, bl.address));
}

#[test]
fn rtp_and_rtcp_components_both_get_a_pair() {
    let mut w = WorldBuilder {
        components: 2,
        ..Default::default()
    }
    .nats(Nat::PortRestricted, Nat::PortRestricted)
    .build();
    w.connect(Duration::from_secs(10)).expect("connects");
    for s in &w.sides {
        let rtp = s.agent.selected_pair(1).expect("RTP pair");
        let rtcp = s.agent.selected_pair(2).expect("RTCP pair");
        assert_ne!(rtp.0.address, rtcp.0.address);
        assert_eq!((rtp.0.component, rtcp.0.component), (1, 2));
    }
}

#[test]
fn remote_candidates_trickled_after_checks_began_are_used() {
    let mut w = WorldBuilder::default()
        .nats(Nat::None, Nat::FullCone)
        .build();
    w.run_until(Duration::from_secs(5), |w| w.gathered(0) && w.gathered(1));
    // B learns A's candidates; A learns only B's credentials at first.
    let a_creds = w.sides[0].agent.local_credentials().clone();
    let b_creds = w.sides[1].agent.local_credentials().clone();
    w.sides[0].agent.set_remote_credentials(b_creds);
    w.sides[1].agent.set_remote_credentials(a_creds);
    for c in w.sides[0].agent.local_candidates().to_vec() {
        w.sides[1].agent.add_remote_candidate(c);
    }
    w.run_until(w.elapsed() + Duration::from_millis(300), |_| false);
    let b_cands = w.sides[1].agent.local_candidates().to_vec();
    for c in b_cands.into_iter().filter(|c| c.kind != Prflx) {
        w.sides[0].agent.add_remote_candidate(c);
    }
    for s in &mut w.sides {
        s.agent.end_of_remote_candidates();
    }
    w.run_until(w.elapsed() + Duration::from_secs(5), |w| w.both_connected());
    assert!(w.both_connected());
    // A reaches B's trickled server-reflexive candidate, not merely a
    // peer-reflexive guess learnt from B's checks.
    assert_eq!(w.selected_types(0), Some((Host, Srflx)));
}

#[test]
fn gathering_finds_the_server_reflexive_address() {
    let mut w = WorldBuilder::default()
        .nats(Nat::PortRestricted, Nat::None)
        .build();
    w.run_until(Duration::from_secs(5), |w| w.gathered(0) && w.gathered(1));
    let a: Vec<_> = w.sides[0].agent.local_candidates().to_vec();
    let srflx = a
        .iter()
        .find(|c| c.kind == Srflx)
        .expect("srflx behind NAT");
    assert_eq!(srflx.address.ip(), "203.0.113.1".parse::<IpAddr>().unwrap());
    assert_eq!(srflx.related, Some(w.sides[0].addr));
    // A public host's reflexive address is its host address: dropped as redundant.
    assert!(w.sides[1]
        .agent
        .local_candidates()
        .iter()
        .all(|c| c.kind == Host));
}

#[test]
fn silent_stun_server_still_completes_gathering() {
    let start = Instant::now();
    let mut agent = IceAgent::new(
        IceConfig::default(),
        start,
        Box::new(StdRng::seed_from_u64(1)),
    );
    agent.add_host_candidate(1, "10.0.0.1:5000".parse().unwrap());
    agent.add_stun_server(STUN_SERVER.parse().unwrap());
    let mut now = start;
    let mut complete_at = None;
    for _ in 0..1000 {
        agent.handle_timeout(now);
        while agent.poll_transmit().is_some() {}
        while let Some(e) = agent.poll_event() {
            if e == IceEvent::GatheringComplete {
                complete_at = Some(now - start);
            }
        }
        if complete_at.is_some() {
            break;
        }
        now = agent.poll_timeout().expect("a gathering timer");
    }
    let t = complete_at.expect("gathering completes");
    assert_eq!(
        t,
        Duration::from_millis(3500),
        "gives up after 3 sends and 2 s of silence"
    );
    assert_eq!(agent.local_candidates().len(), 1);
}

/// A minimal ice-lite peer (RFC 8445 §2.5): answers checks, never sends any.
#[test]
fn full_agent_connects_to_an_ice_lite_peer() {
    use crate::stun::{response_builder, short_term_key, Attribute, Class, Message};
    let start = Instant::now();
    let mut agent = IceAgent::new(
        IceConfig::default(),
        start,
        Box::new(StdRng::seed_from_u64(3)),
    );
    let local: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let lite: SocketAddr = "192.0.2.2:6000".parse().unwrap();
    agent.add_host_candidate(1, local);
    agent.set_remote_lite(true);
    assert!(agent.is_controlling());
    let lite_creds = IceCredentials {
        ufrag: "lite".into(),
        pwd: "litepasswordlitepassword".into(),
    };
    agent.set_remote_credentials(lite_creds.clone());
    agent.add_remote_candidate(Candidate::remote(lite, Host, 2_130_706_431, "1", 1, None));
    agent.end_of_remote_candidates();
    let mut now = start;
    for _ in 0..100 {
        agent.handle_timeout(now);
        while let Some(t) = agent.poll_transmit() {
            let msg = Message::decode(&t.contents).expect("valid check");
            assert!(msg.username().unwrap().starts_with("lite:"));
            msg.check_integrity(&short_term_key(&lite_creds.pwd))
                .expect("signed with the lite peer's password");
            let mut b = response_builder(&msg, Class::Success);
            b.add(&Attribute::XorMappedAddress(t.source));
            b.add_message_integrity(&short_term_key(&lite_creds.pwd));
            b.add_fingerprint();
            let response = b.finish();
            agent.handle_packet(now, lite, local, &response);
        }
        if is_connected(agent.state()) {
            break;
        }
        now = agent.poll_timeout().unwrap_or(now).max(now);
    }
    assert!(is_connected(agent.state()), "state {:?}", agent.state());
    assert_eq!(agent.selected_pair(1).unwrap().1.address, lite);
}

#[test]
fn hostile_datagrams_are_counted_never_fatal() {
    let mut w = WorldBuilder::default().build();
    w.connect(Duration::from_secs(5)).expect("connects");
    let (a, b) = (w.sides[0].addr, w.sides[1].addr);
    let now = w.now;
    let mut rng = crate::sim::SimRng::new(99);
    let agent = &mut w.sides[0].agent;
    let malformed_before = agent.stats().malformed;
    for len in 0..200usize {
        let mut junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if len >= 8 {
            // Make it look like STUN so it reaches the decoder.
            junk[0] &= 0x01;
            junk[4..8].copy_from_slice(&crate::stun::MAGIC_COOKIE.to_be_bytes());
            let body = (len - 20.min(len)) as u16 & !3;
            if len >= 20 {
                junk[2..4].copy_from_slice(&body.to_be_bytes());
                junk.truncate(20 + body as usize);
            }
        }
        agent.handle_packet(now, b, a, &junk);
    }
    assert!(agent.stats().malformed >= malformed_before);
    // A well-formed check with the wrong password gets a 401 and teaches nothing.
    let id = crate::stun::TransactionId([7; 12]);
    let mut m = crate::stun::MessageBuilder::new(
        crate::stun::Class::Request,
        crate::stun::Method::BINDING,
        id,
    );
    let user = format!("{}:x", agent.local_credentials().ufrag);
    m.add(&crate::stun::Attribute::Username(&user));
    m.add(&crate::stun::Attribute::Priority(1));
    m.add_message_integrity(b"wrong password");
    m.add_fingerprint();
    let stranger: SocketAddr = "203.0.113.99:1".parse().unwrap();
    while agent.poll_transmit().is_some() {}
    agent.handle_packet(now, stranger, a, &m.finish());
    let reply = agent.poll_transmit().expect("an error response");
    let reply = crate::stun::Message::decode(&reply.contents).unwrap();
    assert_eq!(reply.error_code().map(|(c, _)| c), Some(401));
    assert!(agent
        .remote_candidates()
        .iter()
        .all(|c| c.address != stranger));
    assert!(is_connected(agent.state()));
}

// ----- a scripted peer for unit tests of single exchanges ---------------------

const LOCAL: &str = "192.0.2.1:5000";
const PEER: &str = "192.0.2.2:6000";

fn peer_credentials() -> IceCredentials {
    IceCredentials {
        ufrag: "peer".into(),
        pwd: "peerpasswordpeerpassword".into(),
    }
}

/// An agent with one host candidate, paired with one remote host candidate
/// of a scripted peer whose credentials it knows.
fn agent_with_peer(controlling: bool, seed: u64) -> (IceAgent, Instant) {
    let start = Instant::now();
    let mut agent = IceAgent::new(
        IceConfig::default(),
        start,
        Box::new(StdRng::seed_from_u64(seed)),
    );
    agent.add_host_candidate(1, LOCAL.parse().unwrap());
    agent.set_controlling(controlling);
    agent.set_remote_credentials(peer_credentials());
    agent.add_remote_candidate(Candidate::remote(
        PEER.parse().unwrap(),
        Host,
        2_130_706_431,
        "9",
        1,
        None,
    ));
    agent.end_of_remote_candidates();
    (agent, start)
}

fn reply(check: &[u8], code: Option<u16>, signed: bool) -> Vec<u8> {
    use crate::stun::{
        error_response, response_builder, short_term_key, Attribute, Class, Message,
    };
    let msg = Message::decode(check).unwrap();
    let mut b = match code {
        Some(code) => error_response(&msg, code, "scripted", &[]),
        None => {
            let mut b = response_builder(&msg, Class::Success);
            b.add(&Attribute::XorMappedAddress(LOCAL.parse().unwrap()));
            b
        }
    };
    if signed {
        b.add_message_integrity(&short_term_key(&peer_credentials().pwd));
    }
    b.add_fingerprint();
    b.finish()
}

/// A check as the peer would send it to our agent.
fn peer_check(username: &str, pwd: &str, attrs: &[crate::stun::Attribute<'_>]) -> Vec<u8> {
    use crate::stun::{short_term_key, Attribute, Class, MessageBuilder, Method, TransactionId};
    let mut b = MessageBuilder::new(Class::Request, Method::BINDING, TransactionId([9; 12]));
    b.add(&Attribute::Username(username));
    b.add(&Attribute::Priority(1_000));
    for a in attrs {
        b.add(a);
    }
    b.add_message_integrity(&short_term_key(pwd));
    b.add_fingerprint();
    b.finish()
}

fn response_code(t: &Transmit) -> Option<u16> {
    crate::stun::Message::decode(&t.contents)
        .unwrap()
        .error_code()
        .map(|(c, _)| c)
}

fn addrs() -> (SocketAddr, SocketAddr) {
    (LOCAL.parse().unwrap(), PEER.parse().unwrap())
}

#[test]
fn an_unsigned_answer_to_a_live_check_is_ignored() {
    let (mut agent, now) = agent_with_peer(true, 1);
    agent.handle_timeout(now);
    let check = agent.poll_transmit().expect("a check");
    let forged = reply(&check.contents, None, false);
    agent.handle_packet(now, check.destination, check.source, &forged);
    assert!(
        agent.pairs().iter().all(|p| !p.valid),
        "forged success accepted"
    );
    assert_eq!(agent.stats().unauthenticated, 1);
    // The genuine answer still completes the transaction afterwards.
    let genuine = reply(&check.contents, None, true);
    agent.handle_packet(now, check.destination, check.source, &genuine);
    assert!(agent.pairs().iter().any(|p| p.valid));
}

#[test]
fn requests_that_fail_authentication_change_nothing() {
    use crate::stun::Attribute;
    let (mut agent, now) = agent_with_peer(false, 2);
    let (local, peer) = addrs();
    let stranger: SocketAddr = "192.0.2.66:7".parse().unwrap();
    let hostile = [Attribute::UseCandidate, Attribute::IceControlled(u64::MAX)];
    let ours = agent.local_credentials().clone();
    let username = format!("{}:peer", ours.ufrag);
    // Wrong password: an unsigned 401, no role change, nothing learnt.
    let bad = peer_check(&username, "not the password at all!", &hostile);
    agent.handle_packet(now, stranger, local, &bad);
    let t = agent.poll_transmit().expect("an answer");
    assert_eq!(response_code(&t), Some(401));
    assert!(!crate::stun::Message::decode(&t.contents)
        .unwrap()
        .has_message_integrity());
    assert!(
        !agent.is_controlling(),
        "an unauthenticated request changed the role"
    );
    assert!(agent
        .remote_candidates()
        .iter()
        .all(|c| c.address != stranger));
    // Right password, someone else's ufrag: 401 as well.
    let wrong_user = peer_check("someone:peer", &ours.pwd, &[]);
    agent.handle_packet(now, peer, local, &wrong_user);
    let t = agent.poll_transmit().expect("an answer");
    assert_eq!(response_code(&t), Some(401));
    // No USERNAME at all: 400.
    let mut b = crate::stun::MessageBuilder::new(
        crate::stun::Class::Request,
        crate::stun::Method::BINDING,
        crate::stun::TransactionId([1; 12]),
    );
    b.add_fingerprint();
    agent.handle_packet(now, peer, local, &b.finish());
    let t = agent.poll_transmit().expect("an answer");
    assert_eq!(response_code(&t), Some(400));
}

#[test]
fn role_conflict_487_both_ways() {
    use crate::stun::{Attribute, Message};
    let (local, peer) = addrs();
    // We control and win: the peer's ICE-CONTROLLING request gets a signed 487.
    let (mut agent, now) = agent_with_peer(true, 3);
    agent.set_tie_breaker(u64::MAX);
    let ours = agent.local_credentials().clone();
    let req = peer_check(
        &format!("{}:peer", ours.ufrag),
        &ours.pwd,
        &[Attribute::IceControlling(5)],
    );
    agent.handle_packet(now, peer, local, &req);
    let t = agent.poll_transmit().expect("an answer");
    assert_eq!(response_code(&t), Some(487));
    assert!(Message::decode(&t.contents)
        .unwrap()
        .has_message_integrity());
    assert!(agent.is_controlling());

    // Our check is answered 487: switch role, change tie-breaker, retry.
    let (mut agent, now) = agent_with_peer(true, 4);
    agent.handle_timeout(now);
    let check = agent.poll_transmit().expect("a check");
    let first = Message::decode(&check.contents).unwrap().ice_controlling();
    let conflict = reply(&check.contents, Some(487), true);
    agent.handle_packet(now, peer, local, &conflict);
    assert!(!agent.is_controlling(), "487 must switch us to controlled");
    let later = now + Duration::from_millis(60);
    agent.handle_timeout(later);
    let retry = agent.poll_transmit().expect("the pair is checked again");
    let retry = Message::decode(&retry.contents).unwrap();
    assert!(retry.ice_controlling().is_none());
    let tie = retry.ice_controlled().expect("now controlled");
    assert_ne!(Some(tie), first, "§7.2.5.1: the tie-breaker changes");
}

#[test]
fn a_refused_nomination_fails_the_pair_instead_of_looping() {
    let (mut agent, start) = agent_with_peer(true, 5);
    let (local, peer) = addrs();
    let mut now = start;
    let mut sent = 0;
    for _ in 0..500 {
        agent.handle_timeout(now);
        while let Some(t) = agent.poll_transmit() {
            sent += 1;
            let msg = crate::stun::Message::decode(&t.contents).unwrap();
            // The scripted peer accepts ordinary checks and refuses nominations.
            let code = msg.use_candidate().then_some(400);
            let r = reply(&t.contents, code, true);
            agent.handle_packet(now, peer, local, &r);
        }
        match agent.poll_timeout() {
            Some(t) if t - start < Duration::from_secs(60) => now = t.max(now),
            _ => break,
        }
    }
    assert!(
        sent < 20,
        "{sent} checks: the refused pair was retried in a loop"
    );
    assert_eq!(agent.state(), ConnectionState::Failed);
    assert!(agent.media_pair(1).is_none(), "no media on a failed pair");
}

#[test]
fn a_peer_without_rtcp_leaves_only_the_rtp_component() {
    // A offers RTP and RTCP; B (rtcp-mux) has only component 1.
    let mut w = WorldBuilder::default().build();
    let config = IceConfig {
        components: 2,
        ..Default::default()
    };
    let mut a = IceAgent::new(config, w.start, Box::new(StdRng::seed_from_u64(8)));
    a.set_controlling(true);
    let rtp = w.sides[0].addr;
    a.add_host_candidate(1, rtp);
    a.add_host_candidate(2, SocketAddr::new(rtp.ip(), rtp.port() + 1));
    a.add_stun_server(STUN_SERVER.parse().unwrap());
    w.sides[0].agent = IceTransport::new(a, w.start);
    let t = w.connect(Duration::from_secs(20));
    assert!(
        t.is_some(),
        "A: {:?}, B: {:?}",
        w.sides[0].agent.state(),
        w.sides[1].agent.state()
    );
    assert!(w.sides[0].agent.selected_pair(1).is_some());
    assert!(w.sides[0].agent.selected_pair(2).is_none());
}

#[test]
fn restart_on_one_side_keeps_the_other_side_connected_until_the_answer() {
    let mut w = connected_world(WorldBuilder::default().nats(Nat::FullCone, Nat::None));
    let old = w.sides[1]
        .agent
        .selected_pair(1)
        .map(|(l, r)| (l.address, r.address));
    w.sides[0].agent.restart();
    // The re-offer takes 20 s to arrive: consent checks flow both ways on
    // the old pair meanwhile, with the old credentials.
    let until = w.elapsed() + Duration::from_secs(20);
    w.run_until(until, |w| !is_connected(w.sides[1].agent.state()));
    let b_state = w.sides[1].agent.state();
    assert!(is_connected(b_state), "B lost A: {b_state:?}");
    assert_ne!(w.sides[0].agent.state(), ConnectionState::Disconnected);
    assert!(w.sides[0].agent.media_pair(1).is_some());
    // Now B restarts too and both exchange the new candidates.
    w.sides[1].agent.restart();
    w.exchange_candidates();
    w.run_until(w.elapsed() + Duration::from_secs(5), |w| w.both_connected());
    assert!(w.both_connected());
    let new = w.sides[1]
        .agent
        .selected_pair(1)
        .map(|(l, r)| (l.address, r.address));
    assert_eq!(new, old);
}

#[test]
fn ipv6_hosts_connect_directly_and_through_nat66() {
    use Nat::*;
    for (a, b, expect) in [
        (None, None, (Host, Host)),
        (PortRestricted, FullCone, (Srflx, Srflx)),
        (None, Symmetric, (Host, Prflx)),
    ] {
        let mut w = WorldBuilder {
            ipv6: true,
            ..Default::default()
        }
        .nats(a, b)
        .build();
        w.connect(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{a:?}/{b:?} over IPv6 did not connect"));
        assert_eq!(w.selected_types(0), Some(expect), "{a:?}/{b:?}");
        let (l, r) = w.sides[0].agent.selected_pair(1).unwrap();
        assert!(l.address.is_ipv6() && r.address.is_ipv6());
    }
}
