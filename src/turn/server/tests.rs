//! Server tests in virtual time, with a fake relay allocator handing out
//! 203.0.113.10:49152 and up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::*;
use crate::stun::{
    attr_type, long_term_key, password_algorithms_value, Attribute, Class, Message, MessageBuilder,
    Method, PasswordAlgorithm, TransactionId,
};

const REALM: &str = "icephone.test";
const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "rabbit-hole-42";
const BOB: &str = "bob";
const BOB_PASSWORD: &str = "builder-7";

fn relay_addr(n: u16) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], 49152 + n))
}

fn peer_a() -> SocketAddr {
    "198.51.100.20:6000".parse().unwrap()
}

fn peer_b() -> SocketAddr {
    "198.51.100.21:7000".parse().unwrap()
}

fn udp_link(port: u16) -> ClientLink {
    ClientLink {
        transport: ClientTransport::Udp,
        local: "192.0.2.1:3478".parse().unwrap(),
        remote: SocketAddr::from(([192, 0, 2, 99], port)),
    }
}

fn tcp_link(port: u16) -> ClientLink {
    ClientLink {
        transport: ClientTransport::Tcp,
        ..udp_link(port)
    }
}

fn config() -> TurnServerConfig {
    let users = HashMap::from([
        (ALICE.to_owned(), ALICE_PASSWORD.to_owned()),
        (BOB.to_owned(), BOB_PASSWORD.to_owned()),
    ]);
    TurnServerConfig {
        realm: REALM.into(),
        users,
        software: Some("icephone-test".into()),
        ..TurnServerConfig::default()
    }
}

#[derive(Default)]
struct FakeRelays {
    handed_out: u16,
    ipv6: bool,
}

impl RelayAllocator for FakeRelays {
    fn allocate(
        &mut self,
        family: AddressFamily,
        _even_port: bool,
        _client: &ClientLink,
    ) -> Result<SocketAddr, RelayAllocError> {
        if family == AddressFamily::V6 && !self.ipv6 {
            return Err(RelayAllocError::FamilyUnsupported(family));
        }
        let port = 49152 + self.handed_out;
        self.handed_out += 1;
        Ok(match family {
            AddressFamily::V4 => SocketAddr::from(([203, 0, 113, 10], port)),
            AddressFamily::V6 => SocketAddr::new("2001:db8::10".parse().unwrap(), port),
        })
    }

    fn allocate_even_pair(
        &mut self,
        family: AddressFamily,
        client: &ClientLink,
    ) -> Result<(SocketAddr, SocketAddr), RelayAllocError> {
        if self.handed_out % 2 == 1 {
            self.handed_out += 1;
        }
        let even = self.allocate(family, true, client)?;
        let next = self.allocate(family, false, client)?;
        Ok((even, next))
    }
}

/// Owned copy of a [`ServerOutput`], so the test can keep it.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    None,
    Peer {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    Client {
        link: ClientLink,
        data: Vec<u8>,
    },
}

impl From<ServerOutput<'_>> for Out {
    fn from(out: ServerOutput<'_>) -> Self {
        match out {
            ServerOutput::None => Out::None,
            ServerOutput::ToPeer { from, to, data } => Out::Peer {
                from,
                to,
                data: data.to_vec(),
            },
            ServerOutput::ToClient { link, data } => Out::Client {
                link,
                data: data.to_vec(),
            },
        }
    }
}

/// How a test client signs its request.
#[derive(Clone)]
enum Sign {
    /// Unauthenticated.
    None,
    /// MESSAGE-INTEGRITY with the MD5 key, no algorithm attributes.
    Md5,
    /// PASSWORD-ALGORITHMS echoing `list`, PASSWORD-ALGORITHM `choice`,
    /// MESSAGE-INTEGRITY-SHA256 with that algorithm's key.
    Negotiated {
        list: Vec<u8>,
        choice: PasswordAlgorithm,
    },
}

fn offered_list() -> Vec<u8> {
    password_algorithms_value(&[PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5])
}

fn sha256_sign() -> Sign {
    Sign::Negotiated {
        list: offered_list(),
        choice: PasswordAlgorithm::Sha256,
    }
}

/// Builds a client request with MessageBuilder.
struct Req<'a> {
    class: Class,
    method: Method,
    tid: TransactionId,
    attrs: Vec<Attribute<'a>>,
    user: &'a str,
    password: &'a str,
    nonce: &'a str,
    sign: Sign,
    fingerprint: bool,
}

impl<'a> Req<'a> {
    fn new(method: Method, tid: u8) -> Self {
        Req {
            class: Class::Request,
            method,
            tid: TransactionId([tid; 12]),
            attrs: Vec::new(),
            user: ALICE,
            password: ALICE_PASSWORD,
            nonce: "",
            sign: Sign::None,
            fingerprint: true,
        }
    }

    fn allocate(tid: u8) -> Self {
        Self::new(Method::ALLOCATE, tid).attr(Attribute::RequestedTransport(17))
    }

    fn attr(mut self, attr: Attribute<'a>) -> Self {
        self.attrs.push(attr);
        self
    }

    fn signed(mut self, nonce: &'a str, sign: Sign) -> Self {
        self.nonce = nonce;
        self.sign = sign;
        self
    }

    fn user(mut self, user: &'a str, password: &'a str) -> Self {
        self.user = user;
        self.password = password;
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut b = MessageBuilder::new(self.class, self.method, self.tid);
        for attr in &self.attrs {
            b.add(attr);
        }
        match &self.sign {
            Sign::None => {}
            Sign::Md5 => {
                b.add(&Attribute::Username(self.user))
                    .add(&Attribute::Realm(REALM))
                    .add(&Attribute::Nonce(self.nonce))
                    .add_message_integrity(&key(self.user, self.password, PasswordAlgorithm::Md5));
            }
            Sign::Negotiated { list, choice } => {
                b.add(&Attribute::Username(self.user))
                    .add(&Attribute::Realm(REALM))
                    .add(&Attribute::Nonce(self.nonce))
                    .add(&Attribute::PasswordAlgorithms(list))
                    .add(&Attribute::PasswordAlgorithm(*choice))
                    .add_message_integrity_sha256(&key(self.user, self.password, *choice));
            }
        }
        if self.fingerprint {
            b.add_fingerprint();
        }
        b.finish()
    }
}

fn key(user: &str, password: &str, alg: PasswordAlgorithm) -> Vec<u8> {
    long_term_key(user, REALM, password, alg)
}

struct Harness {
    server: TurnServer,
    relays: FakeRelays,
    now: Instant,
}

impl Harness {
    fn new(config: TurnServerConfig) -> Self {
        let rng = rand::rngs::StdRng::seed_from_u64(0x7E57);
        Harness {
            server: TurnServer::new(config, Box::new(rng)),
            relays: FakeRelays::default(),
            now: Instant::now(),
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.server.handle_timeout(self.now);
    }

    fn client(&mut self, link: ClientLink, data: &[u8]) -> Out {
        self.server
            .handle_client(self.now, link, data, &mut self.relays)
            .into()
    }

    fn peer(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Out {
        self.server.handle_peer(self.now, relay, peer, data).into()
    }

    /// Sends a request and returns the response bytes (to the same link).
    fn ask(&mut self, link: ClientLink, data: &[u8]) -> Vec<u8> {
        match self.client(link, data) {
            Out::Client { link: to, data } => {
                assert_eq!(to, link, "response goes back over the request's link");
                data
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// An unauthenticated Allocate, which must be challenged; returns the nonce.
    fn nonce(&mut self, link: ClientLink) -> String {
        let resp = self.ask(link, &Req::allocate(0xC0).build());
        let msg = Message::decode(&resp).unwrap();
        assert_eq!(error_code(&msg), Some(401));
        msg.nonce().unwrap().to_owned()
    }

    fn allocate(&mut self, link: ClientLink, user: &str, password: &str) -> SocketAddr {
        let nonce = self.nonce(link);
        let resp = self.ask(
            link,
            &Req::allocate(1)
                .user(user, password)
                .signed(&nonce, Sign::Md5)
                .build(),
        );
        let msg = Message::decode(&resp).unwrap();
        assert_eq!(msg.class(), Class::Success, "{:?}", msg.error_code());
        msg.xor_relayed_address().unwrap()
    }

    /// Allocates for alice on `link`; returns (relay, nonce).
    fn alice(&mut self, link: ClientLink) -> (SocketAddr, String) {
        let relay = self.allocate(link, ALICE, ALICE_PASSWORD);
        let nonce = self.nonce_for_requests(link);
        (relay, nonce)
    }

    /// A nonce for later requests (a 401 to an unsigned Refresh).
    fn nonce_for_requests(&mut self, link: ClientLink) -> String {
        let resp = self.ask(link, &Req::new(Method::REFRESH, 0xC1).build());
        let msg = Message::decode(&resp).unwrap();
        assert_eq!(error_code(&msg), Some(401));
        msg.nonce().unwrap().to_owned()
    }

    fn signed_request(&mut self, link: ClientLink, req: Req<'_>) -> Vec<u8> {
        self.ask(link, &req.build())
    }

    fn permit(&mut self, link: ClientLink, nonce: &str, tid: u8, peer: SocketAddr) {
        let resp = self.signed_request(
            link,
            Req::new(Method::CREATE_PERMISSION, tid)
                .attr(Attribute::XorPeerAddress(peer))
                .signed(nonce, Sign::Md5),
        );
        assert_eq!(class_and_code(&resp), (Class::Success, None));
    }

    fn bind(
        &mut self,
        link: ClientLink,
        nonce: &str,
        tid: u8,
        channel: u16,
        peer: SocketAddr,
    ) -> Option<u16> {
        let resp = self.signed_request(
            link,
            Req::new(Method::CHANNEL_BIND, tid)
                .attr(Attribute::ChannelNumber(channel))
                .attr(Attribute::XorPeerAddress(peer))
                .signed(nonce, Sign::Md5),
        );
        class_and_code(&resp).1
    }

    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}

fn error_code(msg: &Message<'_>) -> Option<u16> {
    msg.error_code().map(|(code, _)| code)
}

fn class_and_code(resp: &[u8]) -> (Class, Option<u16>) {
    let msg = Message::decode(resp).unwrap();
    (msg.class(), error_code(&msg))
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::new(Class::Indication, Method::SEND, TransactionId([0x5E; 12]));
    b.add(&Attribute::XorPeerAddress(peer))
        .add(&Attribute::Data(data));
    b.finish()
}

#[test]
fn challenge_then_md5_allocate() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let resp = h.ask(link, &Req::allocate(0xC0).build());
    let msg = Message::decode(&resp).unwrap();
    assert_eq!((msg.class(), error_code(&msg)), (Class::Error, Some(401)));
    assert_eq!(msg.realm(), Some(REALM));
    let nonce = msg.nonce().unwrap().to_owned();
    assert!(nonce.starts_with("obMatJos2gAAA"), "{nonce}");
    assert_eq!(
        msg.get(attr_type::PASSWORD_ALGORITHMS),
        Some(Ok(Attribute::PasswordAlgorithms(&offered_list())))
    );
    assert!(!msg.has_message_integrity(), "challenges are not signed");
    assert!(msg.has_fingerprint());
    assert_eq!(h.server.stats().auth_failures, 0);

    let resp = h.ask(link, &Req::allocate(1).signed(&nonce, Sign::Md5).build());
    let msg = Message::decode(&resp).unwrap();
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(msg.xor_relayed_address(), Some(relay_addr(0)));
    assert_eq!(msg.xor_mapped_address(), Some(link.remote));
    assert_eq!(msg.lifetime(), Some(600));
    assert_eq!(msg.software(), Some("icephone-test"));
    let md5 = key(ALICE, ALICE_PASSWORD, PasswordAlgorithm::Md5);
    assert_eq!(msg.check_integrity(&md5), Ok(()));
    assert!(!msg.has_message_integrity_sha256());
    assert!(msg.has_fingerprint());
    assert_eq!(
        h.events(),
        [ServerEvent::AllocationCreated {
            user: ALICE.into(),
            client: link,
            relay: relay_addr(0),
            lifetime: Duration::from_secs(600),
        }]
    );
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.stats().allocations_active, 1);
}

#[test]
fn allocate_with_sha256_is_answered_with_sha256() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let nonce = h.nonce(link);
    let resp = h.ask(
        link,
        &Req::allocate(1)
            .attr(Attribute::Lifetime(1800))
            .signed(&nonce, sha256_sign())
            .build(),
    );
    let msg = Message::decode(&resp).unwrap();
    assert_eq!(msg.class(), Class::Success, "{:?}", msg.error_code());
    assert_eq!(msg.lifetime(), Some(1800));
    let sha = key(ALICE, ALICE_PASSWORD, PasswordAlgorithm::Sha256);
    assert_eq!(msg.check_integrity_sha256(&sha), Ok(()));
    assert!(!msg.has_message_integrity());
    // The SHA-256 key is really used: the MD5 key does not verify it.
    let md5 = key(ALICE, ALICE_PASSWORD, PasswordAlgorithm::Md5);
    assert!(msg.check_integrity_sha256(&md5).is_err());
}

#[test]
fn downgrade_attempts_get_400() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let nonce = h.nonce(link);
    let md5_only = password_algorithms_value(&[PasswordAlgorithm::Md5]);
    let stripped = Sign::Negotiated {
        list: md5_only,
        choice: PasswordAlgorithm::Md5,
    };
    let resp = h.ask(link, &Req::allocate(1).signed(&nonce, stripped).build());
    assert_eq!(class_and_code(&resp), (Class::Error, Some(400)));
    // PASSWORD-ALGORITHM without the echoed list.
    let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, TransactionId([2; 12]));
    b.add(&Attribute::RequestedTransport(17))
        .add(&Attribute::Username(ALICE))
        .add(&Attribute::Realm(REALM))
        .add(&Attribute::Nonce(&nonce))
        .add(&Attribute::PasswordAlgorithm(PasswordAlgorithm::Md5))
        .add_message_integrity(&key(ALICE, ALICE_PASSWORD, PasswordAlgorithm::Md5));
    let resp = h.ask(link, &b.finish());
    assert_eq!(class_and_code(&resp), (Class::Error, Some(400)));
    assert_eq!(h.server.allocation_count(), 0);
    // The honest echo works.
    let resp = h.ask(
        link,
        &Req::allocate(3).signed(&nonce, sha256_sign()).build(),
    );
    assert_eq!(class_and_code(&resp), (Class::Success, None));
}

#[test]
fn stale_nonce_gets_438_then_the_new_nonce_works() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let nonce = h.nonce(link);
    h.advance(601);
    let resp = h.ask(link, &Req::allocate(1).signed(&nonce, Sign::Md5).build());
    let msg = Message::decode(&resp).unwrap();
    assert_eq!(error_code(&msg), Some(438));
    assert_eq!(msg.realm(), Some(REALM));
    let fresh = msg.nonce().unwrap().to_owned();
    assert_ne!(fresh, nonce);
    let resp = h.ask(link, &Req::allocate(2).signed(&fresh, Sign::Md5).build());
    assert_eq!(class_and_code(&resp), (Class::Success, None));
    // A nonce minted for another client address is not accepted either.
    let other = udp_link(40001);
    let resp = h.ask(other, &Req::allocate(3).signed(&fresh, Sign::Md5).build());
    assert_eq!(class_and_code(&resp), (Class::Error, Some(438)));
    assert_eq!(h.server.stats().auth_failures, 0);
}

#[test]
fn wrong_password_and_unknown_user_get_401() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let nonce = h.nonce(link);
    let resp = h.ask(
        link,
        &Req::allocate(1)
            .user(ALICE, "not-her-password")
            .signed(&nonce, Sign::Md5)
            .build(),
    );
    let msg = Message::decode(&resp).unwrap();
    assert_eq!(error_code(&msg), Some(401));
    assert!(msg.nonce().is_some() && msg.realm() == Some(REALM));
    assert!(!msg.has_message_integrity());
    assert_eq!(h.server.stats().auth_failures, 1);

    let resp = h.ask(
        link,
        &Req::allocate(2)
            .user("mallory", ALICE_PASSWORD)
            .signed(&nonce, Sign::Md5)
            .build(),
    );
    assert_eq!(class_and_code(&resp), (Class::Error, Some(401)));
    assert_eq!(h.server.stats().auth_failures, 2);
    assert_eq!(h.server.allocation_count(), 0);

    // Integrity present but no NONCE: 400, not a failure count.
    let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, TransactionId([3; 12]));
    b.add(&Attribute::RequestedTransport(17))
        .add(&Attribute::Username(ALICE))
        .add_message_integrity(b"whatever");
    let resp = h.ask(link, &b.finish());
    assert_eq!(class_and_code(&resp), (Class::Error, Some(400)));
    assert_eq!(h.server.stats().auth_failures, 2);
}

#[test]
fn user_quota_gives_486_and_total_gives_508() {
    let mut h = Harness::new(TurnServerConfig {
        user_quota: 2,
        total_allocations: 3,
        ..config()
    });
    h.allocate(udp_link(1), ALICE, ALICE_PASSWORD);
    h.allocate(udp_link(2), ALICE, ALICE_PASSWORD);
    let link = udp_link(3);
    let nonce = h.nonce(link);
    let resp = h.ask(link, &Req::allocate(1).signed(&nonce, Sign::Md5).build());
    let msg = Message::decode(&resp).unwrap();
    assert_eq!(error_code(&msg), Some(486));
    // Errors after authentication are signed.
    let md5 = key(ALICE, ALICE_PASSWORD, PasswordAlgorithm::Md5);
    assert_eq!(msg.check_integrity(&md5), Ok(()));
    // Bob has his own quota, but the server is then full.
    h.allocate(udp_link(4), BOB, BOB_PASSWORD);
    let link = udp_link(5);
    let nonce = h.nonce(link);
    let resp = h.ask(
        link,
        &Req::allocate(1)
            .user(BOB, BOB_PASSWORD)
            .signed(&nonce, Sign::Md5)
            .build(),
    );
    assert_eq!(class_and_code(&resp), (Class::Error, Some(508)));
    assert_eq!(h.server.allocation_count(), 3);
}

#[test]
fn second_allocate_gets_437_and_a_retransmission_the_same_success() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let nonce = h.nonce(link);
    let request = Req::allocate(1).signed(&nonce, Sign::Md5).build();
    let first = h.ask(link, &request);
    assert_eq!(class_and_code(&first), (Class::Success, None));
    h.advance(2);
    let again = h.ask(link, &request);
    assert_eq!(again, first, "a retransmission gets the very same bytes");
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.events().len(), 1, "one allocation, one event");
    let resp = h.ask(link, &Req::allocate(2).signed(&nonce, Sign::Md5).build());
    assert_eq!(class_and_code(&resp), (Class::Error, Some(437)));
    // The original transaction still replays after that.
    assert_eq!(h.ask(link, &request), first);
}

#[test]
fn allocate_attribute_errors() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let nonce = h.nonce(link);
    let tcp_relay = Req::new(Method::ALLOCATE, 1)
        .attr(Attribute::RequestedTransport(6))
        .signed(&nonce, Sign::Md5);
    assert_eq!(
        class_and_code(&h.signed_request(link, tcp_relay)),
        (Class::Error, Some(442))
    );
    let no_transport = Req::new(Method::ALLOCATE, 2).signed(&nonce, Sign::Md5);
    assert_eq!(
        class_and_code(&h.signed_request(link, no_transport)),
        (Class::Error, Some(400))
    );
    let ipv6 = Req::allocate(3)
        .attr(Attribute::RequestedAddressFamily(AddressFamily::V6))
        .signed(&nonce, Sign::Md5);
    assert_eq!(
        class_and_code(&h.signed_request(link, ipv6)),
        (Class::Error, Some(440))
    );
    let unknown_token = Req::allocate(5)
        .attr(Attribute::ReservationToken(7))
        .signed(&nonce, Sign::Md5);
    assert_eq!(
        class_and_code(&h.signed_request(link, unknown_token)),
        (Class::Error, Some(508))
    );
    let token_and_even_port = Req::allocate(4)
        .attr(Attribute::ReservationToken(7))
        .attr(Attribute::EvenPort(false))
        .signed(&nonce, Sign::Md5);
    assert_eq!(
        class_and_code(&h.signed_request(link, token_and_even_port)),
        (Class::Error, Some(400))
    );
    let unknown = Req::allocate(6)
        .attr(Attribute::Unknown {
            typ: 0x7F33,
            value: b"?",
        })
        .signed(&nonce, Sign::Md5);
    let resp = h.signed_request(link, unknown);
    let msg = Message::decode(&resp).unwrap();
    assert_eq!(error_code(&msg), Some(420));
    assert_eq!(
        msg.get(attr_type::UNKNOWN_ATTRIBUTES),
        Some(Ok(Attribute::UnknownAttributes(&[0x7F, 0x33])))
    );
    assert_eq!(h.server.allocation_count(), 0);
    // Even port without reservation is just passed on, and DONT-FRAGMENT is fine.
    let even = Req::allocate(7)
        .attr(Attribute::EvenPort(false))
        .attr(Attribute::DontFragment)
        .signed(&nonce, Sign::Md5);
    assert_eq!(
        class_and_code(&h.signed_request(link, even)),
        (Class::Success, None)
    );
}

#[test]
fn ipv6_relay_when_the_allocator_has_one() {
    let mut h = Harness::new(config());
    h.relays.ipv6 = true;
    let link = udp_link(40000);
    let nonce = h.nonce(link);
    let resp = h.signed_request(
        link,
        Req::allocate(1)
            .attr(Attribute::RequestedAddressFamily(AddressFamily::V6))
            .signed(&nonce, Sign::Md5),
    );
    let msg = Message::decode(&resp).unwrap();
    assert!(msg.xor_relayed_address().unwrap().is_ipv6());
    // An IPv4 peer on an IPv6 relay: 443.
    let resp = h.signed_request(
        link,
        Req::new(Method::CREATE_PERMISSION, 2)
            .attr(Attribute::XorPeerAddress(peer_a()))
            .signed(&nonce, Sign::Md5),
    );
    assert_eq!(class_and_code(&resp), (Class::Error, Some(443)));
}

#[test]
fn refresh_zero_deletes_and_releases() {
    let mut h = Harness::new(TurnServerConfig {
        user_quota: 1,
        ..config()
    });
    let link = udp_link(40000);
    let (relay, nonce) = h.alice(link);
    h.events();
    let resp = h.signed_request(
        link,
        Req::new(Method::REFRESH, 9)
            .attr(Attribute::Lifetime(0))
            .signed(&nonce, Sign::Md5),
    );
    let msg = Message::decode(&resp).unwrap();
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(msg.lifetime(), Some(0));
    let md5 = key(ALICE, ALICE_PASSWORD, PasswordAlgorithm::Md5);
    assert_eq!(msg.check_integrity(&md5), Ok(()));
    assert_eq!(
        h.events(),
        [ServerEvent::AllocationEnded {
            user: ALICE.into(),
            client: link,
            relay,
            reason: EndReason::Deleted,
        }]
    );
    assert_eq!(h.server.allocation_count(), 0);
    let resp = h.signed_request(
        link,
        Req::new(Method::REFRESH, 10).signed(&nonce, Sign::Md5),
    );
    assert_eq!(class_and_code(&resp), (Class::Error, Some(437)));
    // The relay address is gone: peer data is dropped.
    assert_eq!(h.peer(relay, peer_a(), b"late"), Out::None);
    // The quota slot is free again.
    h.allocate(udp_link(40001), ALICE, ALICE_PASSWORD);
}

#[test]
fn refresh_extends_and_checks_the_owner() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let (_, nonce) = h.alice(link);
    let resp = h.signed_request(
        link,
        Req::new(Method::REFRESH, 2)
            .attr(Attribute::Lifetime(99_999))
            .signed(&nonce, Sign::Md5),
    );
    assert_eq!(Message::decode(&resp).unwrap().lifetime(), Some(3600));
    // Below the default the default applies (RFC 8656 §7.3).
    let resp = h.signed_request(
        link,
        Req::new(Method::REFRESH, 3)
            .attr(Attribute::Lifetime(30))
            .signed(&nonce, Sign::Md5),
    );
    assert_eq!(Message::decode(&resp).unwrap().lifetime(), Some(600));
    let resp = h.signed_request(
        link,
        Req::new(Method::REFRESH, 4)
            .user(BOB, BOB_PASSWORD)
            .signed(&nonce, Sign::Md5),
    );
    assert_eq!(class_and_code(&resp), (Class::Error, Some(441)));
    // Refreshed at t=0 for 600 s: still there at 599 s, gone at 600 s.
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(1);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn expiry_in_virtual_time_ends_the_allocation_and_frees_the_quota() {
    let mut h = Harness::new(TurnServerConfig {
        user_quota: 1,
        ..config()
    });
    let start = h.now;
    let link = udp_link(40000);
    let relay = h.allocate(link, ALICE, ALICE_PASSWORD);
    h.events();
    assert_eq!(
        h.server.poll_timeout(),
        Some(start + Duration::from_secs(600))
    );
    h.advance(599);
    assert!(h.events().is_empty());
    h.advance(1);
    assert_eq!(
        h.events(),
        [ServerEvent::AllocationEnded {
            user: ALICE.into(),
            client: link,
            relay,
            reason: EndReason::Expired,
        }]
    );
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    let again = h.allocate(udp_link(40001), ALICE, ALICE_PASSWORD);
    assert_ne!(again, relay);
}

#[test]
fn permissions_are_enforced_both_ways() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let (relay, nonce) = h.alice(link);

    assert_eq!(h.peer(relay, peer_a(), b"knock"), Out::None);
    assert_eq!(h.server.stats().no_permission_drops, 1);
    assert_eq!(
        h.client(link, &send_indication(peer_a(), b"hello")),
        Out::None
    );
    assert_eq!(h.server.stats().no_permission_drops, 2);

    h.permit(link, &nonce, 5, SocketAddr::new(peer_a().ip(), 1));
    // The port does not matter for a permission.
    assert_eq!(
        h.client(link, &send_indication(peer_a(), b"hello")),
        Out::Peer {
            from: relay,
            to: peer_a(),
            data: b"hello".to_vec()
        }
    );
    let Out::Client { link: to, data } = h.peer(relay, peer_a(), b"hi back") else {
        panic!("peer data with a permission must reach the client");
    };
    assert_eq!(to, link);
    let msg = Message::decode(&data).unwrap();
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Indication, Method::DATA)
    );
    assert_eq!(msg.xor_peer_address(), Some(peer_a()));
    assert_eq!(msg.data(), Some(&b"hi back"[..]));
    // Another peer is still refused.
    assert_eq!(h.peer(relay, peer_b(), b"x"), Out::None);
    assert_eq!(h.server.stats().no_permission_drops, 3);
    // Permissions last 300 s.
    h.advance(300);
    assert_eq!(h.peer(relay, peer_a(), b"late"), Out::None);
    assert_eq!(h.server.stats().no_permission_drops, 4);
    let stats = h.server.stats();
    assert_eq!(
        (stats.relayed_to_peer_packets, stats.relayed_to_peer_bytes),
        (1, 5)
    );
    assert_eq!(
        (
            stats.relayed_to_client_packets,
            stats.relayed_to_client_bytes
        ),
        (1, 7)
    );
}

#[test]
fn channel_data_both_ways_with_exact_bytes() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let (relay, nonce) = h.alice(link);
    assert_eq!(h.bind(link, &nonce, 7, 0x4001, peer_a()), None);
    // Client -> peer: the payload is forwarded as is, without its padding.
    let frame = [
        0x40, 0x01, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0, 0, 0,
    ];
    assert_eq!(
        h.client(link, &frame),
        Out::Peer {
            from: relay,
            to: peer_a(),
            data: b"hello".to_vec()
        }
    );
    // Peer -> client over UDP: header + payload, no padding.
    assert_eq!(
        h.peer(relay, peer_a(), b"world"),
        Out::Client {
            link,
            data: vec![0x40, 0x01, 0x00, 0x05, b'w', b'o', b'r', b'l', b'd']
        }
    );
    // The same IP from another port has the permission but not the channel.
    let other_port = SocketAddr::new(peer_a().ip(), 6001);
    let Out::Client { data, .. } = h.peer(relay, other_port, b"!") else {
        panic!("permission covers the IP");
    };
    assert_eq!(Message::decode(&data).unwrap().method(), Method::DATA);
    // Unbound channel: dropped.
    assert_eq!(h.client(link, &[0x40, 0x02, 0x00, 0x01, b'x']), Out::None);
    // Garbled ChannelData: dropped as malformed.
    let malformed = h.server.stats().malformed;
    assert_eq!(h.client(link, &[0x40, 0x01, 0x00, 0x09, b'x']), Out::None);
    assert_eq!(h.server.stats().malformed, malformed + 1);
    // From a link without allocation: dropped.
    assert_eq!(h.client(udp_link(1), &frame), Out::None);
}

#[test]
fn channel_data_to_a_stream_client_is_padded() {
    for transport in [ClientTransport::Tcp, ClientTransport::Tls] {
        let mut h = Harness::new(config());
        let link = ClientLink {
            transport,
            ..tcp_link(40000)
        };
        let (relay, nonce) = h.alice(link);
        assert_eq!(h.bind(link, &nonce, 7, 0x4FFF, peer_a()), None);
        assert_eq!(
            h.peer(relay, peer_a(), b"abcde"),
            Out::Client {
                link,
                data: vec![0x4F, 0xFF, 0x00, 0x05, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]
            },
            "{transport:?}"
        );
        assert_eq!(
            h.peer(relay, peer_a(), b"abcd"),
            Out::Client {
                link,
                data: vec![0x4F, 0xFF, 0x00, 0x04, b'a', b'b', b'c', b'd']
            },
            "{transport:?}"
        );
    }
}

#[test]
fn channel_conflicts_get_400_and_numbers_cool_down() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let (_, nonce) = h.alice(link);
    assert_eq!(h.bind(link, &nonce, 0x11, 0x4000, peer_a()), None);
    assert_eq!(h.bind(link, &nonce, 0x12, 0x4000, peer_b()), Some(400));
    assert_eq!(h.bind(link, &nonce, 0x13, 0x4001, peer_a()), Some(400));
    assert_eq!(h.bind(link, &nonce, 0x14, 0x3FFF, peer_b()), Some(400));
    assert_eq!(h.bind(link, &nonce, 0x15, 0x8000, peer_b()), Some(400));
    // Rebinding the same pair refreshes.
    assert_eq!(h.bind(link, &nonce, 0x16, 0x4000, peer_a()), None);
    // Keep the allocation alive while the channel expires (600 s) and cools (300 s).
    h.advance(500);
    let nonce2 = h.nonce_for_requests(link);
    let resp = h.signed_request(
        link,
        Req::new(Method::REFRESH, 0x17)
            .attr(Attribute::Lifetime(3600))
            .signed(&nonce2, Sign::Md5),
    );
    assert_eq!(class_and_code(&resp), (Class::Success, None));
    h.advance(200); // t = 700: channel expired, cooling down
    let nonce3 = h.nonce_for_requests(link);
    assert_eq!(h.client(link, &[0x40, 0x00, 0x00, 0x01, b'x']), Out::None);
    assert_eq!(h.bind(link, &nonce3, 0x18, 0x4000, peer_b()), Some(400));
    h.advance(300); // t = 1000: cool-down over
    let nonce4 = h.nonce_for_requests(link);
    assert_eq!(h.bind(link, &nonce4, 0x19, 0x4000, peer_b()), None);
}

#[test]
fn forbidden_peers_get_403_unless_loopback_is_allowed() {
    let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let (relay, nonce) = h.alice(link);
    let forbidden: [SocketAddr; 4] = [
        loopback,
        "0.0.0.0:5000".parse().unwrap(),
        "224.0.0.1:5000".parse().unwrap(),
        "255.255.255.255:5000".parse().unwrap(),
    ];
    for (tid, peer) in (0x20..).zip(forbidden) {
        let resp = h.signed_request(
            link,
            Req::new(Method::CREATE_PERMISSION, tid)
                .attr(Attribute::XorPeerAddress(peer))
                .signed(&nonce, Sign::Md5),
        );
        assert_eq!(class_and_code(&resp), (Class::Error, Some(403)), "{peer}");
    }
    assert_eq!(h.bind(link, &nonce, 3, 0x4000, loopback), Some(403));
    assert_eq!(h.client(link, &send_indication(loopback, b"x")), Out::None);
    assert_eq!(h.server.stats().forbidden_peer_drops, 1);

    let mut h = Harness::new(TurnServerConfig {
        allow_loopback_peers: true,
        ..config()
    });
    let (relay2, nonce) = h.alice(link);
    assert_eq!(relay2, relay);
    h.permit(link, &nonce, 2, loopback);
    assert_eq!(
        h.client(link, &send_indication(loopback, b"x")),
        Out::Peer {
            from: relay,
            to: loopback,
            data: b"x".to_vec()
        }
    );
}

#[test]
fn permission_limit_gives_508() {
    let mut h = Harness::new(TurnServerConfig {
        max_permissions_per_allocation: 2,
        ..config()
    });
    let link = udp_link(40000);
    let (_, nonce) = h.alice(link);
    h.permit(link, &nonce, 2, peer_a());
    h.permit(link, &nonce, 3, peer_b());
    h.permit(link, &nonce, 4, peer_a());
    let resp = h.signed_request(
        link,
        Req::new(Method::CREATE_PERMISSION, 5)
            .attr(Attribute::XorPeerAddress(
                "198.51.100.30:1".parse().unwrap(),
            ))
            .signed(&nonce, Sign::Md5),
    );
    assert_eq!(class_and_code(&resp), (Class::Error, Some(508)));
}

#[test]
fn binding_is_answered_without_auth_over_udp_and_tcp() {
    let mut h = Harness::new(config());
    for link in [udp_link(40000), tcp_link(40001)] {
        let req =
            MessageBuilder::new(Class::Request, Method::BINDING, TransactionId([4; 12])).finish();
        let resp = h.ask(link, &req);
        let msg = Message::decode(&resp).unwrap();
        assert_eq!(
            (msg.class(), msg.method()),
            (Class::Success, Method::BINDING)
        );
        assert_eq!(msg.xor_mapped_address(), Some(link.remote));
    }
    assert_eq!(h.server.stats().requests, 2);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn binding_change_request_answers_from_the_other_address() {
    let primary: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let alternate: SocketAddr = "192.0.2.2:3479".parse().unwrap();
    let mut h = Harness::new(TurnServerConfig {
        primary,
        alternate: Some(alternate),
        ..config()
    });
    let mut b = MessageBuilder::new(Class::Request, Method::BINDING, TransactionId([4; 12]));
    b.add(&Attribute::ChangeRequest {
        change_ip: true,
        change_port: true,
    });
    let req = b.finish();
    let Out::Client { link, data } = h.client(udp_link(40000), &req) else {
        panic!("Binding must be answered");
    };
    assert_eq!(link.local, alternate);
    assert_eq!(
        Message::decode(&data).unwrap().response_origin(),
        Some(alternate)
    );
    // Over TCP the answer cannot come from elsewhere.
    let resp = h.ask(tcp_link(40000), &req);
    assert_eq!(class_and_code(&resp), (Class::Error, Some(400)));
}

#[test]
fn requests_without_allocation_unknown_methods_and_strays() {
    let mut h = Harness::new(config());
    let link = udp_link(40000);
    let nonce = h.nonce(link);
    for (tid, method) in [
        (1, Method::REFRESH),
        (2, Method::CREATE_PERMISSION),
        (3, Method::CHANNEL_BIND),
    ] {
        let resp = h.signed_request(
            link,
            Req::new(method, tid)
                .attr(Attribute::XorPeerAddress(peer_a()))
                .attr(Attribute::ChannelNumber(0x4000))
                .signed(&nonce, Sign::Md5),
        );
        assert_eq!(
            class_and_code(&resp),
            (Class::Error, Some(437)),
            "{method:?}"
        );
    }
    let resp = h.ask(link, &Req::new(Method(0x0AB), 4).build());
    assert_eq!(class_and_code(&resp), (Class::Error, Some(400)));
    assert_eq!(h.client(link, &send_indication(peer_a(), b"x")), Out::None);
    let response =
        MessageBuilder::new(Class::Success, Method::ALLOCATE, TransactionId([5; 12])).finish();
    assert_eq!(h.client(link, &response), Out::None);
    assert_eq!(h.client(link, b"\x00\x01garbage"), Out::None);
    assert_eq!(h.client(link, &[]), Out::None);
    assert_eq!(h.peer(relay_addr(9), peer_a(), b"x"), Out::None);
    let stats = h.server.stats();
    assert_eq!(stats.no_allocation_drops, 2);
    assert_eq!(stats.malformed, 2);
}

#[test]
fn shutdown_ends_everything() {
    let mut h = Harness::new(config());
    h.allocate(udp_link(1), ALICE, ALICE_PASSWORD);
    h.allocate(udp_link(2), BOB, BOB_PASSWORD);
    h.events();
    h.server.shutdown();
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| matches!(
        e,
        ServerEvent::AllocationEnded {
            reason: EndReason::Shutdown,
            ..
        }
    )));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn config_debug_redacts_passwords() {
    let text = format!("{:?}", config());
    assert!(
        text.contains(ALICE) && text.contains("<redacted>"),
        "{text}"
    );
    assert!(
        !text.contains(ALICE_PASSWORD) && !text.contains(BOB_PASSWORD),
        "{text}"
    );
}

#[test]
fn random_mutations_of_valid_requests_never_panic() {
    let mut h = Harness::new(TurnServerConfig {
        allow_loopback_peers: true,
        ..config()
    });
    let link = udp_link(40000);
    let (relay, nonce) = h.alice(link);
    h.bind(link, &nonce, 0x30, 0x4000, peer_a());
    // Without FINGERPRINT, so that mutations reach the attribute and auth code.
    let bare = |req: Req<'_>| {
        Req {
            fingerprint: false,
            ..req
        }
        .build()
    };
    let seeds: Vec<Vec<u8>> = vec![
        bare(Req::allocate(0x31).signed(&nonce, Sign::Md5)),
        bare(Req::allocate(0x32).signed(&nonce, sha256_sign())),
        bare(
            Req::new(Method::REFRESH, 0x33)
                .attr(Attribute::Lifetime(700))
                .signed(&nonce, Sign::Md5),
        ),
        bare(
            Req::new(Method::CREATE_PERMISSION, 0x34)
                .attr(Attribute::XorPeerAddress(peer_b()))
                .signed(&nonce, Sign::Md5),
        ),
        bare(
            Req::new(Method::CHANNEL_BIND, 0x35)
                .attr(Attribute::ChannelNumber(0x4001))
                .attr(Attribute::XorPeerAddress(peer_b()))
                .signed(&nonce, sha256_sign()),
        ),
        bare(Req::new(Method::BINDING, 0x36)),
        send_indication(peer_a(), b"payload"),
        vec![0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0],
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xF0225);
    let mut answered = 0;
    for i in 0..2000 {
        let mut buf = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..4) {
            match rng.random_range(0..4) {
                0 if !buf.is_empty() => {
                    let at = rng.random_range(0..buf.len());
                    buf[at] ^= 1 << rng.random_range(0..8);
                }
                1 if !buf.is_empty() => {
                    let at = rng.random_range(0..buf.len());
                    buf[at] = rng.random();
                }
                2 => buf.truncate(rng.random_range(0..=buf.len())),
                _ => buf.extend((0..rng.random_range(0..8)).map(|_| rng.random::<u8>())),
            }
        }
        // Half the time keep the header length consistent so decoding
        // gets past the header check.
        if rng.random_bool(0.5) && buf.len() >= 20 && buf.len() % 4 == 0 {
            if let Ok(len) = u16::try_from(buf.len() - 20) {
                buf[2..4].copy_from_slice(&len.to_be_bytes());
            }
        }
        let link = if i % 3 == 0 { tcp_link(40000) } else { link };
        if !matches!(h.client(link, &buf), Out::None) {
            answered += 1;
        }
        if i % 7 == 0 {
            let _ = h.peer(relay, peer_a(), &buf);
        }
        if i % 100 == 0 {
            h.advance(1);
        }
    }
    // Worth its time only if many mutations get past decoding.
    assert!(answered > 200, "only {answered} answered");
}

/// Allocates with EVEN-PORT R=1 on `link`; returns (relay, token).
fn reserve(h: &mut Harness, link: ClientLink) -> (SocketAddr, u64) {
    let nonce = h.nonce(link);
    let resp = h.signed_request(
        link,
        Req::allocate(1)
            .attr(Attribute::EvenPort(true))
            .signed(&nonce, Sign::Md5),
    );
    let msg = Message::decode(&resp).unwrap();
    assert_eq!(msg.class(), Class::Success, "{:?}", msg.error_code());
    let relay = msg.xor_relayed_address().unwrap();
    let Some(Ok(Attribute::ReservationToken(token))) = msg.get(attr_type::RESERVATION_TOKEN) else {
        panic!("no RESERVATION-TOKEN in the response");
    };
    (relay, token)
}

fn allocate_with_token(h: &mut Harness, link: ClientLink, token: u64) -> Result<SocketAddr, u16> {
    let nonce = h.nonce(link);
    let resp = h.signed_request(
        link,
        Req::allocate(2)
            .attr(Attribute::ReservationToken(token))
            .signed(&nonce, Sign::Md5),
    );
    let msg = Message::decode(&resp).unwrap();
    match msg.class() {
        Class::Success => Ok(msg.xor_relayed_address().unwrap()),
        _ => Err(error_code(&msg).unwrap()),
    }
}

#[test]
fn even_port_with_r_reserves_the_next_port_for_its_token() {
    let mut h = Harness::new(config());
    let (rtp, token) = reserve(&mut h, udp_link(40000));
    assert_eq!(rtp.port() % 2, 0, "{rtp}");
    // Another client (RTCP's socket) claims the reserved port with the token.
    let rtcp = allocate_with_token(&mut h, udp_link(40001), token).unwrap();
    assert_eq!(rtcp, SocketAddr::new(rtp.ip(), rtp.port() + 1));
    // A token is good once.
    assert_eq!(
        allocate_with_token(&mut h, udp_link(40002), token),
        Err(508)
    );
    assert_eq!(h.server.allocation_count(), 2);
    let created = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, ServerEvent::AllocationCreated { .. }))
        .count();
    assert_eq!(created, 2);
    // No reservation is left to expire.
    h.advance(RESERVATION_LIFETIME.as_secs() + 1);
    assert!(!h
        .events()
        .iter()
        .any(|e| matches!(e, ServerEvent::ReservationEnded { .. })));
}

#[test]
fn an_unclaimed_reservation_ends_after_30_s() {
    let mut h = Harness::new(config());
    let (rtp, token) = reserve(&mut h, udp_link(40000));
    let reserved = SocketAddr::new(rtp.ip(), rtp.port() + 1);
    let _ = h.events();
    // The reservation is on the clock: poll_timeout is no later than its end.
    let at = h.server.poll_timeout().unwrap();
    assert!(at <= h.now + RESERVATION_LIFETIME);
    h.advance(RESERVATION_LIFETIME.as_secs() - 1);
    assert!(h.events().is_empty());
    h.advance(2);
    assert_eq!(
        h.events(),
        vec![ServerEvent::ReservationEnded { relay: reserved }]
    );
    assert_eq!(
        allocate_with_token(&mut h, udp_link(40001), token),
        Err(508)
    );
}

#[test]
fn shutdown_ends_reservations_too() {
    let mut h = Harness::new(config());
    let (rtp, _) = reserve(&mut h, udp_link(40000));
    let _ = h.events();
    h.server.shutdown();
    let events = h.events();
    assert!(events.contains(&ServerEvent::ReservationEnded {
        relay: SocketAddr::new(rtp.ip(), rtp.port() + 1)
    }));
    assert_eq!(h.server.poll_timeout(), None);
}
