//! Calls between two user agents in virtual time, over an in-memory
//! network that can drop what it carries, and through a scripted proxy
//! that challenges the INVITE with 407.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::calls::{CallEnd, CallHandle};
use super::digest::{DigestCredentials, DigestResponse};
use super::headers::Credentials;
use super::message::{Message, Method, Request};
use super::registration::RegistrationConfig;
use super::ua::{UaConfig, UaEvent, UserAgent};
use super::{Target, Transmit, Transport};

const ALICE: &str = "10.0.0.1:5060";
const BOB: &str = "10.0.0.2:5060";

fn ua(user: &str, local: &str, peer: &str, seed: u64) -> UserAgent {
    let local: SocketAddr = local.parse().unwrap();
    let config = UaConfig {
        registration: RegistrationConfig {
            aor: format!("sip:{user}@example.org").parse().unwrap(),
            registrar: "sip:example.org".parse().unwrap(),
            route: None,
            credentials: DigestCredentials {
                username: user.into(),
                password: format!("{user}-pw"),
            },
            expires: 600,
            transport: Transport::Udp,
            local,
            fix_contact: false,
            gruu: false,
            user_agent: "icephone-test".into(),
        },
        next_hop: Target {
            transport: Transport::Udp,
            addr: peer.parse().unwrap(),
        },
        keepalive: None,
        timers: Default::default(),
    };
    UserAgent::new(config, StdRng::seed_from_u64(seed))
}

/// Two UAs and the wire between them, in virtual time.
struct Pair {
    alice: UserAgent,
    bob: UserAgent,
    now: Instant,
    /// Drops the n-th datagram of each direction when `drop(n)` says so.
    drop: Box<dyn FnMut(&Transmit) -> bool>,
    events_alice: Vec<UaEvent>,
    events_bob: Vec<UaEvent>,
    sent: Vec<(bool, Vec<u8>)>,
}

impl Pair {
    fn new() -> Self {
        Pair {
            alice: ua("alice", ALICE, BOB, 1),
            bob: ua("bob", BOB, ALICE, 2),
            now: Instant::now(),
            drop: Box::new(|_| false),
            events_alice: Vec::new(),
            events_bob: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Delivers everything queued, both ways, until quiet.
    fn flush(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.alice.poll_transmit() {
                moved = true;
                self.sent.push((true, t.bytes.clone()));
                if !(self.drop)(&t) {
                    let from = Target {
                        transport: Transport::Udp,
                        addr: ALICE.parse().unwrap(),
                    };
                    self.bob.handle_input(self.now, from, &t.bytes);
                }
            }
            while let Some(t) = self.bob.poll_transmit() {
                moved = true;
                self.sent.push((false, t.bytes.clone()));
                if !(self.drop)(&t) {
                    let from = Target {
                        transport: Transport::Udp,
                        addr: BOB.parse().unwrap(),
                    };
                    self.alice.handle_input(self.now, from, &t.bytes);
                }
            }
            self.events_alice
                .extend(std::iter::from_fn(|| self.alice.poll_event()));
            self.events_bob
                .extend(std::iter::from_fn(|| self.bob.poll_event()));
            if !moved {
                return;
            }
        }
    }

    /// Runs both UAs' timers up to `now + d`.
    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.flush();
            let next = [self.alice.poll_timeout(), self.bob.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.alice.handle_timeout(self.now);
                    self.bob.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = until;
        self.flush();
    }

    /// Alice called bob, who answered: alice's and bob's handles.
    fn in_a_call() -> (Pair, CallHandle, CallHandle) {
        let mut p = Pair::new();
        let call = p.alice.invite(p.now, bob_uri(), b"offer1".to_vec());
        p.flush();
        let incoming = p.incoming();
        p.bob.answer(p.now, incoming, 200, b"answer1".to_vec());
        p.flush();
        (p, call, incoming)
    }

    fn incoming(&self) -> CallHandle {
        self.events_bob
            .iter()
            .find_map(|e| match e {
                UaEvent::IncomingCall { call, .. } => Some(*call),
                _ => None,
            })
            .expect("bob got no call")
    }

    fn methods_sent(&self, by_alice: bool) -> Vec<String> {
        self.sent
            .iter()
            .filter(|(a, _)| *a == by_alice)
            .filter_map(|(_, b)| match Message::parse(b) {
                Ok(Message::Request(r)) => Some(r.method.to_string()),
                Ok(Message::Response(r)) => Some(r.code.to_string()),
                Err(_) => None,
            })
            .collect()
    }
}

fn bob_uri() -> super::uri::Uri {
    format!("sip:bob@{BOB}").parse().unwrap()
}

#[test]
fn invite_ring_answer_ack_and_bye_from_the_callee() {
    let mut p = Pair::new();
    let call = p.alice.invite(p.now, bob_uri(), b"v=0 offer".to_vec());
    p.flush();
    let incoming = p.incoming();
    assert!(
        matches!(&p.events_bob[0], UaEvent::IncomingCall { body, from, .. }
        if body == b"v=0 offer" && from == "sip:alice@example.org")
    );
    assert!(p.bob.answer(p.now, incoming, 180, Vec::new()));
    p.flush();
    assert!(p.bob.answer(p.now, incoming, 200, b"v=0 answer".to_vec()));
    p.flush();
    assert!(p.events_alice.contains(&UaEvent::CallProgress {
        call,
        code: 180,
        reason: "Ringing".into()
    }));
    assert!(p.events_alice.contains(&UaEvent::CallAnswered {
        call,
        body: b"v=0 answer".to_vec()
    }));
    assert!(p
        .events_bob
        .contains(&UaEvent::CallConfirmed { call: incoming }));
    assert_eq!(p.methods_sent(true), ["INVITE", "ACK"]);
    assert_eq!(p.methods_sent(false), ["100", "180", "200"]);

    p.bob.hangup(p.now, incoming);
    p.flush();
    assert!(p.events_alice.contains(&UaEvent::CallEnded {
        call,
        end: CallEnd::Remote
    }));
    assert!(p.events_bob.contains(&UaEvent::CallEnded {
        call: incoming,
        end: CallEnd::Local
    }));
    // Nothing is retransmitted afterwards.
    let before = p.sent.len();
    p.advance(Duration::from_secs(40));
    assert_eq!(p.sent.len(), before);
}

#[test]
fn a_lost_ack_brings_the_2xx_again_and_the_caller_acks_again() {
    let mut p = Pair::new();
    let mut acks = 0;
    p.drop = Box::new(move |t| {
        let is_ack = t.bytes.starts_with(b"ACK ");
        if is_ack {
            acks += 1;
        }
        is_ack && acks == 1
    });
    let call = p.alice.invite(p.now, bob_uri(), Vec::new());
    p.flush();
    let incoming = p.incoming();
    p.bob.answer(p.now, incoming, 200, b"sdp".to_vec());
    p.advance(Duration::from_secs(2));
    assert!(p
        .events_bob
        .contains(&UaEvent::CallConfirmed { call: incoming }));
    assert_eq!(p.methods_sent(true), ["INVITE", "ACK", "ACK"]);
    assert_eq!(
        p.events_alice
            .iter()
            .filter(|e| matches!(e, UaEvent::CallAnswered { .. }))
            .count(),
        1,
        "the retransmitted 2xx is not a second answer: {:?}",
        p.events_alice
    );
    p.alice.hangup(p.now, call);
    p.flush();
    assert!(p.events_bob.contains(&UaEvent::CallEnded {
        call: incoming,
        end: CallEnd::Remote
    }));
}

#[test]
fn no_ack_at_all_ends_the_call_with_a_bye() {
    let mut p = Pair::new();
    p.drop = Box::new(|t| t.bytes.starts_with(b"ACK "));
    p.alice.invite(p.now, bob_uri(), Vec::new());
    p.flush();
    let incoming = p.incoming();
    p.bob.answer(p.now, incoming, 200, b"sdp".to_vec());
    p.advance(Duration::from_secs(33));
    assert!(p.events_bob.contains(&UaEvent::CallEnded {
        call: incoming,
        end: CallEnd::NoAck
    }));
    assert!(p.methods_sent(false).contains(&"BYE".to_string()));
}

#[test]
fn busy_callee_and_cancel_before_the_answer() {
    let mut p = Pair::new();
    let call = p.alice.invite(p.now, bob_uri(), Vec::new());
    p.flush();
    let incoming = p.incoming();
    p.bob.answer(p.now, incoming, 486, Vec::new());
    p.flush();
    assert!(p.events_alice.contains(&UaEvent::CallEnded {
        call,
        end: CallEnd::Rejected {
            code: 486,
            reason: "Busy Here".into()
        }
    }));
    assert_eq!(
        p.methods_sent(true),
        ["INVITE", "ACK"],
        "the failure is ACKed"
    );

    // Cancel: only after the 180 (RFC 3261 §9.1).
    let mut p = Pair::new();
    let call = p.alice.invite(p.now, bob_uri(), Vec::new());
    p.flush();
    let incoming = p.incoming();
    p.alice.hangup(p.now, call);
    p.flush();
    assert_eq!(
        p.methods_sent(true),
        ["INVITE"],
        "no CANCEL before a provisional"
    );
    p.bob.answer(p.now, incoming, 180, Vec::new());
    p.flush();
    assert_eq!(p.methods_sent(true), ["INVITE", "CANCEL", "ACK"]);
    assert_eq!(p.methods_sent(false), ["100", "180", "200", "487"]);
    assert!(p.events_alice.contains(&UaEvent::CallEnded {
        call,
        end: CallEnd::Local
    }));
    assert!(p.events_bob.contains(&UaEvent::CallEnded {
        call: incoming,
        end: CallEnd::Cancelled
    }));
}

#[test]
fn reinvite_both_ways_and_glare_gets_491() {
    let (mut p, call, incoming) = Pair::in_a_call();
    // Alice puts the call on hold.
    assert!(p.alice.reinvite(p.now, call, b"offer2 sendonly".to_vec()));
    p.flush();
    assert!(p.events_bob.contains(&UaEvent::ReInvite {
        call: incoming,
        body: b"offer2 sendonly".to_vec()
    }));
    assert!(p
        .bob
        .answer(p.now, incoming, 200, b"answer2 recvonly".to_vec()));
    p.flush();
    assert!(p.events_alice.contains(&UaEvent::CallUpdated {
        call,
        code: 200,
        body: b"answer2 recvonly".to_vec()
    }));
    // Bob re-INVITEs while Alice's own re-INVITE is out: 491 to his.
    p.drop = Box::new(|t| t.bytes.starts_with(b"INVITE ") && t.target.addr == BOB.parse().unwrap());
    assert!(p.alice.reinvite(p.now, call, b"offer3".to_vec()));
    p.flush();
    p.drop = Box::new(|_| false);
    assert!(p.bob.reinvite(p.now, incoming, b"bob offer".to_vec()));
    p.flush();
    assert!(
        p.events_bob
            .iter()
            .any(|e| matches!(e, UaEvent::CallUpdated { code: 491, .. })),
        "{:?}",
        p.events_bob
    );
    // Both still in the call: a BYE ends it on both sides.
    p.bob.hangup(p.now, incoming);
    p.advance(Duration::from_secs(1));
    assert!(p.events_alice.iter().any(|e| matches!(
        e,
        UaEvent::CallEnded {
            end: CallEnd::Remote,
            ..
        }
    )));
}

#[test]
fn a_bye_for_no_call_gets_481_and_an_old_cseq_gets_500() {
    let mut p = Pair::new();
    let call = p.alice.invite(p.now, bob_uri(), Vec::new());
    p.flush();
    let incoming = p.incoming();
    p.bob.answer(p.now, incoming, 200, b"a".to_vec());
    p.flush();
    // Alice's BYE with a CSeq lower than her INVITE's: out of order.
    let invite = p
        .sent
        .iter()
        .find_map(|(a, b)| match Message::parse(b) {
            Ok(Message::Request(r)) if *a && r.method == Method::Invite => Some(r),
            _ => None,
        })
        .unwrap();
    let bob_tag = p
        .sent
        .iter()
        .find_map(|(a, b)| match Message::parse(b) {
            Ok(Message::Response(r)) if !*a && r.code == 200 => {
                r.to().ok().and_then(|t| t.tag().map(str::to_owned))
            }
            _ => None,
        })
        .unwrap();
    let bye = |cseq: u32, tag: &str| {
        let mut r = Request::new(Method::Bye, invite.uri.clone());
        r.headers.push(
            "Via",
            format!("SIP/2.0/UDP {ALICE};branch=z9hG4bKbye{cseq}{tag}"),
        );
        r.headers.push("Max-Forwards", "70");
        r.headers.push("From", invite.headers.get("From").unwrap());
        r.headers.push("To", format!("<sip:bob@{BOB}>;tag={tag}"));
        r.headers
            .push("Call-ID", invite.headers.get("Call-ID").unwrap());
        r.headers.push("CSeq", format!("{cseq} BYE"));
        r.to_bytes()
    };
    let alice = Target {
        transport: Transport::Udp,
        addr: ALICE.parse().unwrap(),
    };
    p.bob.handle_input(p.now, alice, &bye(0, &bob_tag));
    p.bob.handle_input(p.now, alice, &bye(5, "not-a-tag"));
    let codes: Vec<u16> = std::iter::from_fn(|| p.bob.poll_transmit())
        .filter_map(|t| match Message::parse(&t.bytes) {
            Ok(Message::Response(r)) => Some(r.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [500, 481]);
    let _ = call;
}

/// A proxy that answers the first INVITE 407, checks the second's
/// Proxy-Authorization and then passes everything between the two UAs.
#[test]
fn a_407_is_answered_once_with_proxy_credentials() {
    let mut p = Pair::new();
    let call = p.alice.invite(p.now, bob_uri(), Vec::new());
    let first = p.alice.poll_transmit().unwrap();
    let Ok(Message::Request(inv)) = Message::parse(&first.bytes) else {
        panic!()
    };
    let challenge = format!(
        "SIP/2.0 407 Proxy Authentication Required\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=px\r\nCall-ID: {}\r\nCSeq: {}\r\n\
         Proxy-Authenticate: Digest realm=\"example.org\", nonce=\"pn1\", qop=\"auth\", algorithm=MD5\r\nContent-Length: 0\r\n\r\n",
        inv.headers.get("Via").unwrap(), inv.headers.get("From").unwrap(), inv.headers.get("To").unwrap(),
        inv.headers.get("Call-ID").unwrap(), inv.headers.get("CSeq").unwrap()
    );
    let proxy = Target {
        transport: Transport::Udp,
        addr: BOB.parse().unwrap(),
    };
    p.alice.handle_input(p.now, proxy, challenge.as_bytes());
    let out: Vec<Request> = std::iter::from_fn(|| p.alice.poll_transmit())
        .filter_map(|t| match Message::parse(&t.bytes) {
            Ok(Message::Request(r)) => Some(r),
            _ => None,
        })
        .collect();
    let methods: Vec<String> = out.iter().map(|r| r.method.to_string()).collect();
    assert_eq!(methods, ["ACK", "INVITE"]);
    let signed = &out[1];
    assert_eq!(signed.cseq().unwrap().seq, 2);
    assert_eq!(signed.headers.get("Call-ID"), inv.headers.get("Call-ID"));
    assert_eq!(signed.from().unwrap().tag(), inv.from().unwrap().tag());
    let creds: Credentials = signed
        .headers
        .get("Proxy-Authorization")
        .unwrap()
        .parse()
        .unwrap();
    let d = DigestResponse::from_params(&creds.scheme, |n| creds.param(n)).unwrap();
    assert!(d.verify("INVITE", "alice-pw"));
    // A second 407 to the signed INVITE: the password is wrong, no loop.
    let again = challenge
        .replace(
            inv.headers.get("CSeq").unwrap(),
            signed.headers.get("CSeq").unwrap(),
        )
        .replace(
            inv.headers.get("Via").unwrap(),
            signed.headers.get("Via").unwrap(),
        );
    p.alice.handle_input(p.now, proxy, again.as_bytes());
    let ev: Vec<UaEvent> = std::iter::from_fn(|| p.alice.poll_event()).collect();
    assert!(
        ev.contains(&UaEvent::CallEnded {
            call,
            end: CallEnd::Rejected {
                code: 407,
                reason: "Proxy Authentication Required".into()
            }
        }),
        "{ev:?}"
    );
    let resent: Vec<_> = std::iter::from_fn(|| p.alice.poll_transmit()).collect();
    assert_eq!(resent.len(), 1, "only the ACK of the 407");
}

#[test]
fn an_unanswered_invite_times_out_after_64_t1() {
    let mut p = Pair::new();
    p.drop = Box::new(|_| true);
    let call = p.alice.invite(p.now, bob_uri(), Vec::new());
    p.advance(Duration::from_secs(31));
    assert!(p.events_alice.is_empty());
    p.advance(Duration::from_secs(2));
    assert_eq!(
        p.events_alice,
        [UaEvent::CallEnded {
            call,
            end: CallEnd::TimedOut
        }]
    );
}

#[test]
fn the_callee_copies_record_route_into_its_answers_and_routes_its_bye() {
    let mut bob = ua("bob", BOB, ALICE, 2);
    let now = Instant::now();
    let invite = format!(
        "INVITE sip:bob@{BOB} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKproxy1\r\n\
         Via: SIP/2.0/UDP {ALICE};branch=z9hG4bKalice1;rport\r\nMax-Forwards: 69\r\n\
         Record-Route: <sip:192.0.2.50:5060;lr>\r\nFrom: <sip:alice@example.org>;tag=a1\r\n\
         To: <sip:bob@example.org>\r\nCall-ID: rr1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{ALICE}>\r\nContent-Length: 0\r\n\r\n"
    );
    let proxy = Target {
        transport: Transport::Udp,
        addr: "192.0.2.50:5060".parse().unwrap(),
    };
    bob.handle_input(now, proxy, invite.as_bytes());
    let call = match bob.poll_event() {
        Some(UaEvent::IncomingCall { call, .. }) => call,
        other => panic!("{other:?}"),
    };
    bob.answer(now, call, 200, b"sdp".to_vec());
    let ok = std::iter::from_fn(|| bob.poll_transmit())
        .filter_map(|t| match Message::parse(&t.bytes) {
            Ok(Message::Response(r)) if r.code == 200 => Some(r),
            _ => None,
        })
        .next()
        .unwrap();
    assert_eq!(
        ok.headers.get("Record-Route"),
        Some("<sip:192.0.2.50:5060;lr>")
    );
    assert_eq!(ok.headers.get_all("Via").len(), 2);
    let ack = format!(
        "ACK sip:bob@{BOB} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKproxy2\r\nMax-Forwards: 69\r\n\
         From: <sip:alice@example.org>;tag=a1\r\nTo: {}\r\nCall-ID: rr1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        ok.headers.get("To").unwrap()
    );
    bob.handle_input(now, proxy, ack.as_bytes());
    assert_eq!(bob.poll_event(), Some(UaEvent::CallConfirmed { call }));
    bob.hangup(now, call);
    let bye = bob.poll_transmit().unwrap();
    assert_eq!(bye.target, proxy, "the BYE follows the route set");
    let Ok(Message::Request(bye)) = Message::parse(&bye.bytes) else {
        panic!()
    };
    assert_eq!(bye.uri.to_string(), format!("sip:alice@{ALICE}"));
    assert_eq!(bye.headers.get("Route"), Some("<sip:192.0.2.50:5060;lr>"));
}

#[test]
fn a_callee_that_ignores_our_cancel_is_given_up_after_64_t1() {
    let mut p = Pair::new();
    let call = p.alice.invite(p.now, bob_uri(), Vec::new());
    p.flush();
    let incoming = p.incoming();
    p.bob.answer(p.now, incoming, 180, Vec::new());
    p.flush();
    // Bob's side swallows the CANCEL (a broken peer).
    p.drop = Box::new(|t| t.bytes.starts_with(b"CANCEL "));
    p.alice.hangup(p.now, call);
    p.advance(Duration::from_secs(31));
    assert!(!p
        .events_alice
        .iter()
        .any(|e| matches!(e, UaEvent::CallEnded { .. })));
    p.advance(Duration::from_secs(2));
    assert!(p.events_alice.contains(&UaEvent::CallEnded {
        call,
        end: CallEnd::Local
    }));
    assert!(
        p.alice.poll_timeout().is_none_or(|t| t > p.now),
        "nothing left to wake for"
    );
}

#[test]
fn a_rejected_offer_says_why_in_the_status_line_and_a_warning() {
    let mut p = Pair::new();
    let call = p.alice.invite(p.now, bob_uri(), b"v=0 unusable".to_vec());
    p.flush();
    let incoming = p.incoming();
    assert!(p.bob.reject(p.now, incoming, 488, "no common codec"));
    p.flush();
    let resp = p
        .sent
        .iter()
        .rev()
        .find_map(|(a, b)| match Message::parse(b) {
            Ok(Message::Response(r)) if !*a && r.code == 488 => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(resp.reason, "no common codec");
    assert_eq!(
        resp.headers.get("Warning"),
        Some("399 icephone \"no common codec\"")
    );
    assert!(p.events_alice.contains(&UaEvent::CallEnded {
        call,
        end: CallEnd::Rejected {
            code: 488,
            reason: "no common codec".into()
        }
    }));
    assert!(!p.bob.reject(p.now, incoming, 488, "again"), "only once");
}

/// The connection our requests went over closed (a NAT forgot it): the
/// answered INVITE's transaction ends without ending the call, and a
/// re-INVITE waiting on it is refused with 503 (§8.1.3.1), the call going
/// on; another re-INVITE then gets through.
#[test]
fn a_lost_connection_refuses_the_re_invite_but_keeps_the_call() {
    let (mut p, call, incoming) = Pair::in_a_call();
    p.drop = Box::new(|t| t.bytes.starts_with(b"INVITE "));
    assert!(p.alice.reinvite(p.now, call, b"restart".to_vec()));
    p.flush();
    let bob = Target {
        transport: Transport::Udp,
        addr: BOB.parse().unwrap(),
    };
    p.alice
        .connection_lost(p.now, bob, "the TCP connection was reset");
    p.flush();
    assert!(
        p.events_alice.contains(&UaEvent::CallUpdated {
            call,
            code: 503,
            body: Vec::new()
        }),
        "{:?}",
        p.events_alice
    );
    assert!(!p
        .events_alice
        .iter()
        .any(|e| matches!(e, UaEvent::CallEnded { .. })));
    p.drop = Box::new(|_| false);
    assert!(p.alice.reinvite(p.now, call, b"restart again".to_vec()));
    p.flush();
    assert!(p.events_bob.contains(&UaEvent::ReInvite {
        call: incoming,
        body: b"restart again".to_vec()
    }));
    // Silence, unlike a transport failure, still ends the dialog.
    p.bob.answer(p.now, incoming, 200, b"answer".to_vec());
    p.flush();
    p.drop = Box::new(|_| true);
    assert!(p.alice.reinvite(p.now, call, b"unheard".to_vec()));
    p.advance(Duration::from_secs(40));
    assert!(p.events_alice.iter().any(|e| matches!(
        e,
        UaEvent::CallEnded {
            end: CallEnd::TimedOut,
            ..
        }
    )));
}
