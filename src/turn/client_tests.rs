//! The client against a scripted server: each test plays the server's side
//! by hand, so every RFC rule the client relies on is spelled out here.

use super::*;
use crate::stun::{password_algorithms_value, response_builder};
use rand::rngs::StdRng;
use rand::SeedableRng;

const SERVER: &str = "203.0.113.1:3478";
const RELAYED: &str = "203.0.113.1:50000";
const MAPPED: &str = "198.51.100.7:40000";
const PEER: &str = "203.0.113.9:7000";
const REALM: &str = "example.org";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn client(now: Instant) -> TurnClient {
    let mut cfg = TurnClientConfig::new(addr(SERVER), "alice", "secret");
    cfg.software = Some("test".into());
    TurnClient::new(cfg, now, Box::new(StdRng::seed_from_u64(7)))
}

fn take(c: &mut TurnClient) -> Vec<u8> {
    c.poll_transmit().expect("a transmit")
}

fn challenge(req: &[u8], code: u16, nonce: &str, sha256: bool) -> Vec<u8> {
    let req = Message::decode(req).unwrap();
    let mut b = crate::stun::error_response(&req, code, "Unauthorized", &[]);
    b.add(&Attribute::Realm(REALM));
    b.add(&Attribute::Nonce(nonce));
    if sha256 {
        let algs = password_algorithms_value(&[PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5]);
        b.add(&Attribute::PasswordAlgorithms(&algs));
    }
    b.finish()
}

fn key(alg: PasswordAlgorithm, password: &str) -> Vec<u8> {
    long_term_key("alice", REALM, password, alg)
}

/// Checks the request is signed with `alg` and builds a signed success.
fn signed_success(
    req: &[u8],
    alg: PasswordAlgorithm,
    add: impl FnOnce(&mut MessageBuilder),
) -> Vec<u8> {
    let req = Message::decode(req).unwrap();
    let k = key(alg, "secret");
    match alg {
        PasswordAlgorithm::Md5 => req.check_integrity(&k).expect("MD5 integrity"),
        PasswordAlgorithm::Sha256 => req.check_integrity_sha256(&k).expect("SHA-256 integrity"),
    }
    assert_eq!(req.username(), Some("alice"));
    let mut b = response_builder(&req, Class::Success);
    add(&mut b);
    match alg {
        PasswordAlgorithm::Md5 => b.add_message_integrity(&k),
        PasswordAlgorithm::Sha256 => b.add_message_integrity_sha256(&k),
    };
    b.add_fingerprint();
    b.finish()
}

fn allocated(req: &[u8], alg: PasswordAlgorithm, lifetime: u32) -> Vec<u8> {
    signed_success(req, alg, |b| {
        b.add(&Attribute::XorRelayedAddress(addr(RELAYED)));
        b.add(&Attribute::XorMappedAddress(addr(MAPPED)));
        b.add(&Attribute::Lifetime(lifetime));
    })
}

/// Runs the two-round-trip allocation; returns the client, allocated.
fn allocate(now: Instant, lifetime: u32) -> TurnClient {
    let mut c = client(now);
    let first = take(&mut c);
    let m = Message::decode(&first).unwrap();
    assert_eq!((m.method(), m.class()), (Method::ALLOCATE, Class::Request));
    assert!(
        !m.has_message_integrity(),
        "first Allocate is unauthenticated"
    );
    assert!(c.handle_packet(now, &challenge(&first, 401, "n1", false)) == TurnInput::Handled);
    let second = take(&mut c);
    assert!(c.poll_transmit().is_none());
    c.handle_packet(now, &allocated(&second, PasswordAlgorithm::Md5, lifetime));
    assert_eq!(c.state(), TurnState::Allocated);
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Allocated {
            relayed: addr(RELAYED),
            mapped: Some(addr(MAPPED)),
            lifetime: Duration::from_secs(u64::from(lifetime)),
        })
    );
    c
}

#[test]
fn allocates_in_two_round_trips_with_md5() {
    let now = Instant::now();
    let c = allocate(now, 600);
    assert_eq!(c.relayed_address(), Some(addr(RELAYED)));
    assert_eq!(c.stats().requests_sent, 2);
}

#[test]
fn prefers_sha256_when_the_server_offers_it() {
    let now = Instant::now();
    let mut c = client(now);
    let first = take(&mut c);
    c.handle_packet(now, &challenge(&first, 401, "obMatJos2AAAAnonce", true));
    let second = take(&mut c);
    let m = Message::decode(&second).unwrap();
    assert!(m.has_message_integrity_sha256() && !m.has_message_integrity());
    // The offered list is echoed verbatim: the downgrade protection.
    let echoed = match m.get(attr_type::PASSWORD_ALGORITHMS) {
        Some(Ok(Attribute::PasswordAlgorithms(raw))) => raw.to_vec(),
        other => panic!("PASSWORD-ALGORITHMS not echoed: {other:?}"),
    };
    assert_eq!(
        echoed,
        password_algorithms_value(&[PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5])
    );
    c.handle_packet(now, &allocated(&second, PasswordAlgorithm::Sha256, 600));
    assert_eq!(c.state(), TurnState::Allocated);
}

#[test]
fn offered_algorithms_without_the_nonce_cookie_are_ignored() {
    let now = Instant::now();
    let mut c = client(now);
    let first = take(&mut c);
    c.handle_packet(now, &challenge(&first, 401, "plainnonce", true));
    let m_bytes = take(&mut c);
    let m = Message::decode(&m_bytes).unwrap();
    assert!(m.has_message_integrity() && m.get(attr_type::PASSWORD_ALGORITHM).is_none());
}

#[test]
fn stale_nonce_is_retried_with_the_new_nonce() {
    let now = Instant::now();
    let mut c = client(now);
    let first = take(&mut c);
    c.handle_packet(now, &challenge(&first, 401, "n1", false));
    let second = take(&mut c);
    c.handle_packet(now, &challenge(&second, 438, "n2", false));
    let third = take(&mut c);
    let m = Message::decode(&third).unwrap();
    assert_eq!(m.nonce(), Some("n2"));
    assert_ne!(
        m.transaction_id(),
        Message::decode(&second).unwrap().transaction_id()
    );
    c.handle_packet(now, &allocated(&third, PasswordAlgorithm::Md5, 600));
    assert_eq!(c.state(), TurnState::Allocated);
}

#[test]
fn a_second_401_means_a_wrong_password() {
    let now = Instant::now();
    let mut c = client(now);
    let first = take(&mut c);
    c.handle_packet(now, &challenge(&first, 401, "n1", false));
    let second = take(&mut c);
    c.handle_packet(now, &challenge(&second, 401, "n1", false));
    assert_eq!(c.state(), TurnState::Failed);
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::Unauthorized))
    );
    assert!(c.poll_transmit().is_none());
    assert!(TurnError::Unauthorized.to_string().contains("password"));
}

#[test]
fn quota_and_mismatch_errors_are_reported_as_such() {
    for (code, want) in [
        (486, TurnError::QuotaReached),
        (437, TurnError::AllocationMismatch),
        (508, TurnError::InsufficientCapacity),
        (442, TurnError::UnsupportedTransport),
        (
            599,
            TurnError::Rejected {
                code: 599,
                reason: "Odd".into(),
            },
        ),
    ] {
        let now = Instant::now();
        let mut c = client(now);
        let first = take(&mut c);
        c.handle_packet(now, &challenge(&first, 401, "n1", false));
        let second = take(&mut c);
        let req = Message::decode(&second).unwrap();
        let mut b = crate::stun::error_response(&req, code, "Odd\u{7}", &[]);
        b.add_message_integrity(&key(PasswordAlgorithm::Md5, "secret"));
        c.handle_packet(now, &b.finish());
        assert_eq!(c.poll_event(), Some(TurnEvent::Failed(want)), "code {code}");
    }
}

#[test]
fn an_unsigned_or_forged_success_is_dropped() {
    let now = Instant::now();
    let mut c = client(now);
    let first = take(&mut c);
    c.handle_packet(now, &challenge(&first, 401, "n1", false));
    let second = take(&mut c);
    let req = Message::decode(&second).unwrap();
    let mut b = response_builder(&req, Class::Success);
    b.add(&Attribute::XorRelayedAddress(addr(RELAYED)));
    b.add_message_integrity(&key(PasswordAlgorithm::Md5, "not-the-password"));
    assert_eq!(c.handle_packet(now, &b.finish()), TurnInput::Dropped);
    assert_eq!(c.state(), TurnState::Allocating);
    // The real answer still lands.
    c.handle_packet(now, &allocated(&second, PasswordAlgorithm::Md5, 600));
    assert_eq!(c.state(), TurnState::Allocated);
}

#[test]
fn an_unreachable_server_times_out_after_the_retransmissions() {
    let start = Instant::now();
    let mut c = client(start);
    let mut sent = 0;
    let mut now = start;
    while c.state() == TurnState::Allocating {
        while c.poll_transmit().is_some() {
            sent += 1;
        }
        now = c.poll_timeout().expect("a timer while allocating");
        c.handle_timeout(now);
    }
    assert_eq!(sent, 7, "RFC 8489 Rc = 7");
    assert_eq!(now - start, Duration::from_millis(39_500));
    assert!(matches!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::Timeout(_)))
    ));
}

#[test]
fn over_tcp_a_request_is_sent_once() {
    let start = Instant::now();
    let mut cfg = TurnClientConfig::new(addr(SERVER), "alice", "secret");
    cfg.transport = TurnTransport::Tcp;
    let mut c = TurnClient::new(cfg, start, Box::new(StdRng::seed_from_u64(1)));
    assert!(c.poll_transmit().is_some());
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline - start, Duration::from_millis(39_500));
    c.handle_timeout(deadline);
    assert!(c.poll_transmit().is_none());
    assert_eq!(c.state(), TurnState::Failed);
}

#[test]
fn refreshes_before_expiry_and_reports_a_lost_allocation() {
    let start = Instant::now();
    let mut c = allocate(start, 600);
    let due = c.poll_timeout().unwrap();
    assert_eq!(due - start, Duration::from_secs(540));
    c.handle_timeout(due);
    let refresh = take(&mut c);
    let m = Message::decode(&refresh).unwrap();
    assert_eq!(m.method(), Method::REFRESH);
    assert_eq!(m.lifetime(), Some(600));
    c.handle_packet(
        due,
        &signed_success(&refresh, PasswordAlgorithm::Md5, |b| {
            b.add(&Attribute::Lifetime(300));
        }),
    );
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Refreshed {
            lifetime: Duration::from_secs(300)
        })
    );
    let next = c.poll_timeout().unwrap();
    assert_eq!(next - due, Duration::from_secs(240));
    c.handle_timeout(next);
    let refresh = take(&mut c);
    let req = Message::decode(&refresh).unwrap();
    let mut b = crate::stun::error_response(&req, 437, "Allocation Mismatch", &[]);
    b.add_message_integrity(&key(PasswordAlgorithm::Md5, "secret"));
    c.handle_packet(next, &b.finish());
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::AllocationLost))
    );
}

#[test]
fn sends_wait_for_their_permission_then_use_indications() {
    let now = Instant::now();
    let mut c = allocate(now, 600);
    c.send_to(now, addr(PEER), b"one").unwrap();
    c.send_to(now, addr(PEER), b"two").unwrap();
    let perm = take(&mut c);
    assert!(
        c.poll_transmit().is_none(),
        "data held until the permission exists"
    );
    let m = Message::decode(&perm).unwrap();
    assert_eq!(m.method(), Method::CREATE_PERMISSION);
    assert_eq!(m.xor_peer_address().map(|a| a.ip()), Some(addr(PEER).ip()));
    c.handle_packet(now, &signed_success(&perm, PasswordAlgorithm::Md5, |_| {}));
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::PermissionCreated {
            peer: addr(PEER).ip()
        })
    );
    for want in [&b"one"[..], b"two"] {
        let ind = take(&mut c);
        let m = Message::decode(&ind).unwrap();
        assert_eq!((m.class(), m.method()), (Class::Indication, Method::SEND));
        assert_eq!(
            (m.xor_peer_address(), m.data()),
            (Some(addr(PEER)), Some(want))
        );
    }
    // Refreshed a minute before the 300 s lifetime runs out.
    assert_eq!(c.poll_timeout().unwrap() - now, Duration::from_secs(240));
}

#[test]
fn a_failed_permission_drops_the_held_data() {
    let now = Instant::now();
    let mut c = allocate(now, 600);
    c.send_to(now, addr(PEER), b"x").unwrap();
    let perm = take(&mut c);
    let req = Message::decode(&perm).unwrap();
    let mut b = crate::stun::error_response(&req, 403, "Forbidden", &[]);
    b.add_message_integrity(&key(PasswordAlgorithm::Md5, "secret"));
    c.handle_packet(now, &b.finish());
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::PermissionFailed {
            peer: addr(PEER).ip(),
            error: TurnError::Forbidden
        })
    );
    assert!(c.poll_transmit().is_none());
    assert_eq!(c.stats().dropped_sends, 1);
}

#[test]
fn a_bound_channel_carries_data_with_four_bytes_of_framing() {
    let now = Instant::now();
    let mut c = allocate(now, 600);
    let number = c.bind_channel(now, addr(PEER)).unwrap();
    assert_eq!(number, CHANNEL_MIN);
    let bind = take(&mut c);
    let m = Message::decode(&bind).unwrap();
    assert_eq!(m.method(), Method::CHANNEL_BIND);
    c.handle_packet(now, &signed_success(&bind, PasswordAlgorithm::Md5, |_| {}));
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::ChannelBound {
            peer: addr(PEER),
            channel: number
        })
    );
    assert!(c.has_permission(addr(PEER).ip()));
    let payload = [0x80u8; 160];
    c.send_to(now, addr(PEER), &payload).unwrap();
    let wire = take(&mut c);
    assert_eq!(wire.len(), 164);
    assert_eq!(&wire[..4], &[0x40, 0x00, 0x00, 160]);
    // And the way back: ChannelData from the server names the peer.
    let back = ChannelData::encode(number, b"pong", false).unwrap();
    assert_eq!(
        c.handle_packet(now, &back),
        TurnInput::Relayed {
            peer: addr(PEER),
            data: b"pong"
        }
    );
    // An unknown channel is dropped, not misattributed.
    let stray = ChannelData::encode(number + 1, b"?", false).unwrap();
    assert_eq!(c.handle_packet(now, &stray), TurnInput::Dropped);
    // The binding is refreshed within the permission lifetime.
    assert_eq!(c.poll_timeout().unwrap() - now, Duration::from_secs(240));
}

#[test]
fn data_indications_are_delivered_and_garbage_is_counted() {
    let now = Instant::now();
    let mut c = allocate(now, 600);
    let mut b = MessageBuilder::new(Class::Indication, Method::DATA, TransactionId([3; 12]));
    b.add(&Attribute::XorPeerAddress(addr(PEER)));
    b.add(&Attribute::Data(b"hello"));
    let ind = b.finish();
    assert_eq!(
        c.handle_packet(now, &ind),
        TurnInput::Relayed {
            peer: addr(PEER),
            data: b"hello"
        }
    );
    for junk in [&[][..], &[0, 1, 0], &[0x40, 0, 0, 200, 1], &[0xff; 40]] {
        assert_eq!(c.handle_packet(now, junk), TurnInput::Dropped);
    }
    assert!(c.stats().malformed >= 3);
}

#[test]
fn work_asked_for_while_allocating_happens_once_allocated() {
    let now = Instant::now();
    let mut c = client(now);
    let first = take(&mut c);
    c.send_to(now, addr(PEER), b"early").unwrap();
    c.handle_packet(now, &challenge(&first, 401, "n1", false));
    let second = take(&mut c);
    c.handle_packet(now, &allocated(&second, PasswordAlgorithm::Md5, 600));
    let perm = take(&mut c);
    assert_eq!(
        Message::decode(&perm).unwrap().method(),
        Method::CREATE_PERMISSION
    );
    c.handle_packet(now, &signed_success(&perm, PasswordAlgorithm::Md5, |_| {}));
    let ind = take(&mut c);
    assert_eq!(Message::decode(&ind).unwrap().data(), Some(&b"early"[..]));
}

#[test]
fn release_sends_lifetime_zero_and_ends_even_unanswered() {
    let now = Instant::now();
    let mut c = allocate(now, 600);
    c.release(now);
    let refresh = take(&mut c);
    assert_eq!(Message::decode(&refresh).unwrap().lifetime(), Some(0));
    assert_eq!(c.state(), TurnState::Releasing);
    let deadline = c.poll_timeout().unwrap();
    assert!(deadline - now <= Duration::from_secs(2));
    c.handle_timeout(now + Duration::from_secs(2));
    assert_eq!(c.state(), TurnState::Released);
    assert_eq!(c.poll_event(), Some(TurnEvent::Released));
    assert_eq!(
        c.send_to(now, addr(PEER), b"x"),
        Err(TurnError::NotAllocated)
    );
}

#[test]
fn wrong_family_peers_are_refused() {
    let now = Instant::now();
    let mut c = allocate(now, 600);
    let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
    assert_eq!(c.send_to(now, v6, b"x"), Err(TurnError::WrongFamily(v6)));
    assert!(c.poll_transmit().is_none());
}

#[test]
fn debug_output_hides_the_password() {
    let cfg = TurnClientConfig::new(addr(SERVER), "alice", "hunter2");
    assert!(!format!("{cfg:?}").contains("hunter2"));
}
