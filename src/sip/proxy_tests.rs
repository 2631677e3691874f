//! The registrar and proxy on a scripted network in virtual time: each test
//! feeds bytes as a UA would send them, reads what the proxy transmitted,
//! and answers as the far side would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::super::digest::{DigestChallenge, DigestCredentials, DigestResponse};
use super::super::headers::Challenge;
use super::super::registrar::RegistrarConfig;
use super::*;

const PROXY: &str = "192.0.2.1:5060";
const REALM: &str = "example.com";
/// Alice is not behind a NAT: her Contact is her source address.
const ALICE_AT: &str = "198.51.100.7:5060";
/// Bob is behind a NAT: he sends from here, his Contact says 10.0.0.2:5060.
const BOB_AT: &str = "203.0.113.5:40000";
const BOB_PRIVATE: &str = "10.0.0.2:5060";

fn udp(addr: &str) -> Target {
    Target {
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
    }
}

fn tcp(addr: &str) -> Target {
    Target {
        transport: Transport::Tcp,
        addr: addr.parse().unwrap(),
    }
}

fn users() -> HashMap<String, String> {
    [("alice", "wonderland"), ("bob", "builder")]
        .into_iter()
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .collect()
}

/// The proxy and the virtual clock.
struct Net {
    proxy: Proxy,
    now: Instant,
}

impl Net {
    fn new() -> Net {
        Net::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut ProxyConfig)) -> Net {
        let mut registrar = RegistrarConfig::new(REALM, users());
        registrar.min_expires = 5;
        let mut config = ProxyConfig::new(registrar, vec![udp(PROXY), tcp(PROXY)]);
        adjust(&mut config);
        Net {
            proxy: Proxy::new(config, StdRng::seed_from_u64(7)),
            now: Instant::now(),
        }
    }

    /// Delivers `bytes` from `from`; returns everything the proxy sent.
    fn send_bytes(&mut self, from: Target, bytes: &[u8]) -> Vec<Transmit> {
        self.proxy.handle_message(self.now, from, bytes);
        self.drain()
    }

    fn send(&mut self, from: Target, message: &Message) -> Vec<Transmit> {
        self.send_bytes(from, &message.to_bytes())
    }

    fn request(&mut self, from: Target, req: &Request) -> Vec<Transmit> {
        self.send(from, &Message::Request(req.clone()))
    }

    fn response(&mut self, from: Target, resp: &Response) -> Vec<Transmit> {
        self.send(from, &Message::Response(resp.clone()))
    }

    /// Runs the clock forward by `by`, waking the proxy when it asks.
    fn advance(&mut self, by: Duration) -> Vec<Transmit> {
        let until = self.now + by;
        let mut sent = Vec::new();
        while let Some(due) = self.proxy.poll_timeout() {
            if due > until {
                break;
            }
            self.now = self.now.max(due);
            self.proxy.handle_timeout(self.now);
            sent.extend(self.drain());
        }
        self.now = until;
        sent
    }

    fn drain(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.proxy.poll_transmit()).collect()
    }
}

fn parse(t: &Transmit) -> Message {
    Message::parse(&t.bytes).unwrap_or_else(|e| panic!("{e}: {:?}", t.bytes))
}

fn as_response(t: &Transmit) -> Response {
    match parse(t) {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

fn as_request(t: &Transmit) -> Request {
    match parse(t) {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got {}", r.code),
    }
}

/// The only transmit, as a response to `to`.
fn one_response(sent: &[Transmit], to: &str) -> Response {
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].target, udp(to));
    as_response(&sent[0])
}

/// The only transmit, as a request to `to`.
fn one_request(sent: &[Transmit], to: &str) -> Request {
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].target, udp(to));
    as_request(&sent[0])
}

/// A test UA: its name, password, where it sends from and its Contact.
struct Ua {
    user: &'static str,
    password: &'static str,
    at: &'static str,
    contact: String,
    call_id: String,
    cseq: u32,
    branches: u32,
}

impl Ua {
    fn new(user: &'static str, at: &'static str, contact_host: &str) -> Ua {
        Ua {
            user,
            password: if user == "alice" {
                "wonderland"
            } else {
                "builder"
            },
            at,
            contact: format!("sip:{user}@{contact_host}"),
            call_id: format!("{user}-reg@test"),
            cseq: 0,
            branches: 0,
        }
    }

    fn alice() -> Ua {
        Ua::new("alice", ALICE_AT, ALICE_AT)
    }

    fn bob() -> Ua {
        Ua::new("bob", BOB_AT, BOB_PRIVATE)
    }

    fn flow(&self) -> Target {
        udp(self.at)
    }

    fn via(&mut self) -> String {
        self.branches += 1;
        let host = self.contact.split('@').nth(1).unwrap();
        format!(
            "SIP/2.0/UDP {host};branch=z9hG4bK{}{};rport",
            self.user, self.branches
        )
    }

    fn aor(&self) -> String {
        format!("sip:{}@{REALM}", self.user)
    }

    fn register(&mut self, contact: &str, expires: Option<u32>) -> Request {
        self.cseq += 1;
        let mut req = Request::new(Method::Register, format!("sip:{REALM}").parse().unwrap());
        let via = self.via();
        let h = &mut req.headers;
        h.push("Via", via);
        h.push("Max-Forwards", "70");
        h.push("From", format!("<{}>;tag=f{}", self.aor(), self.user));
        h.push("To", format!("<{}>", self.aor()));
        h.push("Call-ID", &self.call_id);
        h.push("CSeq", format!("{} REGISTER", self.cseq));
        if !contact.is_empty() {
            h.push("Contact", contact);
        }
        if let Some(e) = expires {
            h.push("Expires", e);
        }
        req
    }

    /// REGISTER, 401, REGISTER with credentials; returns the final answer.
    fn register_with_auth(
        &mut self,
        net: &mut Net,
        contact: &str,
        expires: Option<u32>,
    ) -> Response {
        let first = self.register(contact, expires);
        let challenge = one_response(&net.request(self.flow(), &first), self.at);
        assert_eq!(challenge.code, 401);
        let mut second = self.register(contact, expires);
        self.authorize(&mut second, &challenge, false);
        one_response(&net.request(self.flow(), &second), self.at)
    }

    fn register_contact(&mut self, net: &mut Net) -> Response {
        let contact = format!("<{}>", self.contact);
        let ok = self.register_with_auth(net, &contact, Some(3600));
        assert_eq!(ok.code, 200, "{ok:?}");
        ok
    }

    /// Answers the first (SHA-256) challenge of `challenge`.
    fn authorize(&self, req: &mut Request, challenge: &Response, proxy: bool) {
        let (ask, answer) = if proxy {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let c: Challenge = challenge.headers.get(ask).unwrap().parse().unwrap();
        let digest = DigestChallenge::from_params(&c.scheme, |n| c.param(n)).unwrap();
        let credentials = DigestCredentials {
            username: self.user.to_owned(),
            password: self.password.to_owned(),
        };
        let uri = req.uri.to_string();
        let response = DigestResponse::answer(
            &digest,
            &credentials,
            req.method.as_str(),
            &uri,
            1,
            "c0ffee",
        );
        req.headers.push(answer, response.to_header_value());
    }

    fn invite(&mut self, to: &str, call_id: &str) -> Request {
        self.cseq += 1;
        let mut req = Request::new(Method::Invite, to.parse().unwrap());
        let via = self.via();
        let h = &mut req.headers;
        h.push("Via", via);
        h.push("Max-Forwards", "70");
        h.push("From", format!("<{}>;tag=from-{}", self.aor(), self.user));
        h.push("To", format!("<{to}>"));
        h.push("Call-ID", call_id);
        h.push("CSeq", format!("{} INVITE", self.cseq));
        h.push("Contact", format!("<{}>", self.contact));
        h.push("Content-Type", "application/sdp");
        req.body = b"v=0\r\n".to_vec();
        req
    }

    /// INVITE, 407 (ACKed), INVITE with Proxy-Authorization; returns the
    /// authorized INVITE as sent and what the proxy transmitted for it.
    fn call(&mut self, net: &mut Net, to: &str, call_id: &str) -> (Request, Vec<Transmit>) {
        let first = self.invite(to, call_id);
        let challenge = one_response(&net.request(self.flow(), &first), self.at);
        assert_eq!(challenge.code, 407);
        let ack = ack_for(&first, &challenge);
        assert!(
            net.request(self.flow(), &ack).is_empty(),
            "ACK of the 407 absorbed"
        );
        let mut second = self.invite(to, call_id);
        self.authorize(&mut second, &challenge, true);
        let sent = net.request(self.flow(), &second);
        (second, sent)
    }
}

/// The ACK a UAC sends for a non-2xx final response (same branch).
fn ack_for(invite: &Request, resp: &Response) -> Request {
    super::super::layer::ack_for_failure(invite, resp)
}

/// A UAS's response to `req`: Vias, From, Call-ID, CSeq and Record-Route
/// copied, To tagged, its own Contact.
fn answer(req: &Request, code: u16, to_tag: &str, contact: &str) -> Response {
    let mut resp = Response::new(code, reason_phrase(code));
    for via in req.headers.get_all("Via") {
        resp.headers.push("Via", via);
    }
    for rr in req.headers.get_all("Record-Route") {
        resp.headers.push("Record-Route", rr);
    }
    resp.headers.push("From", req.headers.get("From").unwrap());
    let to = req.headers.get("To").unwrap();
    if req.to().unwrap().tag().is_some() || code == 100 {
        resp.headers.push("To", to);
    } else {
        resp.headers.push("To", format!("{to};tag={to_tag}"));
    }
    resp.headers
        .push("Call-ID", req.headers.get("Call-ID").unwrap());
    resp.headers.push("CSeq", req.headers.get("CSeq").unwrap());
    if !contact.is_empty() {
        resp.headers.push("Contact", format!("<{contact}>"));
    }
    resp
}

/// Alice's BYE in a dialog with bob (tags `alicetag` and `bob_tag`), to
/// `target` along the proxy's Record-Route.
fn alices_bye(alice: &mut Ua, target: &str, bob_tag: &str, call_id: &str) -> Request {
    let mut bye = Request::new(Method::Bye, target.parse().unwrap());
    bye.headers.push("Via", alice.via());
    bye.headers
        .push("Route", "<sip:192.0.2.1:5060;transport=udp;lr>");
    bye.headers.push("Max-Forwards", "70");
    bye.headers
        .push("From", "<sip:alice@example.com>;tag=alicetag");
    bye.headers
        .push("To", format!("<sip:bob@example.com>;tag={bob_tag}"));
    bye.headers.push("Call-ID", call_id);
    bye.headers.push("CSeq", "1 BYE");
    bye
}

fn binding_count(net: &Net, user: &str) -> usize {
    net.proxy.registrar().lookup(net.now, user).len()
}

// ---- registrar --------------------------------------------------------------

#[test]
fn register_is_challenged_then_accepted_and_lists_the_binding() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let first = alice.register("<sip:alice@198.51.100.7:5060>", Some(3600));
    let challenge = one_response(&net.request(alice.flow(), &first), ALICE_AT);
    assert_eq!(challenge.code, 401);
    let offered: Vec<_> = challenge.headers.www_authenticate().unwrap();
    assert_eq!(offered.len(), 2);
    assert_eq!(
        offered[0].param("algorithm"),
        Some("SHA-256"),
        "SHA-256 first"
    );
    assert_eq!(offered[1].param("algorithm"), Some("MD5"));
    for c in &offered {
        assert_eq!(c.param("qop"), Some("auth"));
        assert_eq!(c.param("realm"), Some(REALM));
        assert_eq!(c.param("stale"), None);
    }
    let via = challenge.top_via().unwrap();
    assert_eq!(via.rport(), Some(Some(5060)), "rport filled in");
    assert!(challenge.to().unwrap().tag().is_some());

    let mut second = alice.register("<sip:alice@198.51.100.7:5060>", Some(3600));
    alice.authorize(&mut second, &challenge, false);
    let ok = one_response(&net.request(alice.flow(), &second), ALICE_AT);
    assert_eq!(ok.code, 200);
    let contacts = ok.contacts().unwrap();
    assert_eq!(contacts.addrs().len(), 1);
    assert_eq!(
        contacts.addrs()[0].uri.to_string(),
        "sip:alice@198.51.100.7:5060"
    );
    assert_eq!(contacts.addrs()[0].expires(), Some(3600));
    assert!(ok.headers.get("Date").is_none());
    let bindings = net.proxy.registrar().lookup(net.now, "alice");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].flow, udp(ALICE_AT));
    assert_eq!(bindings[0].cseq, 2);

    // A query (no Contact) lists it with the time left.
    net.advance(Duration::from_secs(100));
    let mut query = alice.register("", None);
    alice.authorize(&mut query, &challenge, false);
    let listed = one_response(&net.request(alice.flow(), &query), ALICE_AT);
    assert_eq!(listed.code, 200);
    assert_eq!(listed.contacts().unwrap().addrs()[0].expires(), Some(3500));
}

#[test]
fn md5_answers_are_accepted_too() {
    let mut net = Net::new();
    let alice = Ua::alice();
    let mut alice = alice;
    let first = alice.register("<sip:alice@198.51.100.7:5060>", None);
    let challenge = one_response(&net.request(alice.flow(), &first), ALICE_AT);
    let md5: Challenge = challenge.headers.www_authenticate().unwrap()[1].clone();
    let digest = DigestChallenge::from_params(&md5.scheme, |n| md5.param(n)).unwrap();
    let creds = DigestCredentials {
        username: "alice".into(),
        password: "wonderland".into(),
    };
    let mut second = alice.register("<sip:alice@198.51.100.7:5060>", None);
    let answer = DigestResponse::answer(
        &digest,
        &creds,
        "REGISTER",
        &second.uri.to_string(),
        1,
        "ab",
    );
    second
        .headers
        .push("Authorization", answer.to_header_value());
    let ok = one_response(&net.request(alice.flow(), &second), ALICE_AT);
    assert_eq!(ok.code, 200);
    assert_eq!(
        ok.contacts().unwrap().addrs()[0].expires(),
        Some(3600),
        "default"
    );
}

#[test]
fn wrong_password_unknown_user_and_foreign_to_are_403() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    alice.password = "looking-glass";
    let resp = alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7>", None);
    assert_eq!((resp.code, resp.reason.as_str()), (403, "Forbidden"));

    let mut mallory = Ua::new("mallory", "198.51.100.66:5060", "198.51.100.66:5060");
    mallory.password = "x";
    let resp = mallory.register_with_auth(&mut net, "<sip:mallory@198.51.100.66>", None);
    assert_eq!(resp.code, 403);

    // Bob's credentials cannot register Alice.
    let mut bob = Ua::bob();
    let mut req = bob.register("<sip:bob@10.0.0.2>", None);
    req.headers.set("To", "<sip:alice@example.com>");
    let challenge = one_response(&net.request(bob.flow(), &req), BOB_AT);
    let mut again = bob.register("<sip:bob@10.0.0.2>", None);
    again.headers.set("To", "<sip:alice@example.com>");
    bob.authorize(&mut again, &challenge, false);
    let resp = one_response(&net.request(bob.flow(), &again), BOB_AT);
    assert_eq!(resp.code, 403);
    assert_eq!(binding_count(&net, "alice"), 0);
    assert_eq!(binding_count(&net, "bob"), 0);
}

#[test]
fn too_brief_is_423_zero_is_allowed_and_long_is_clamped() {
    let mut net = Net::with(|c| c.registrar.min_expires = 60);
    let mut alice = Ua::alice();
    let resp = alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7>;expires=30", None);
    assert_eq!(resp.code, 423);
    assert_eq!(resp.headers.get("Min-Expires"), Some("60"));
    assert_eq!(binding_count(&net, "alice"), 0);

    let resp = alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7>", Some(86_400));
    assert_eq!(resp.code, 200);
    assert_eq!(resp.contacts().unwrap().addrs()[0].expires(), Some(3600));

    let resp = alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7>", Some(0));
    assert_eq!(resp.code, 200, "0 is never too brief");
    assert_eq!(binding_count(&net, "alice"), 0);
}

#[test]
fn expires_zero_removes_only_that_binding() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let two = "<sip:alice@198.51.100.7:5060>, <sip:alice@198.51.100.7:5070>;expires=600";
    let ok = alice.register_with_auth(&mut net, two, Some(3600));
    let listed: Vec<_> = ok
        .contacts()
        .unwrap()
        .addrs()
        .iter()
        .map(|c| (c.uri.port, c.expires()))
        .collect();
    assert_eq!(listed, [(Some(5060), Some(3600)), (Some(5070), Some(600))]);

    let ok = alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7:5060>;expires=0", None);
    assert_eq!(ok.code, 200);
    let left: Vec<_> = ok
        .contacts()
        .unwrap()
        .addrs()
        .iter()
        .map(|c| c.uri.port)
        .collect();
    assert_eq!(left, [Some(5070)]);
    assert_eq!(binding_count(&net, "alice"), 1);
}

#[test]
fn wildcard_needs_expires_zero_and_removes_everything() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    alice.register_with_auth(
        &mut net,
        "<sip:alice@198.51.100.7:5060>, <sip:alice@198.51.100.8>",
        None,
    );
    assert_eq!(binding_count(&net, "alice"), 2);

    let resp = alice.register_with_auth(&mut net, "*", Some(60));
    assert_eq!(resp.code, 400);
    assert!(resp.reason.contains("Expires: 0"), "{}", resp.reason);
    assert_eq!(binding_count(&net, "alice"), 2);

    let resp = alice.register_with_auth(&mut net, "*", Some(0));
    assert_eq!(resp.code, 200);
    assert!(resp.headers.get("Contact").is_none());
    assert_eq!(binding_count(&net, "alice"), 0);

    let resp = alice.register_with_auth(&mut net, "*, <sip:alice@198.51.100.7>", Some(0));
    assert_eq!(resp.code, 400, "* stands alone");
}

#[test]
fn bindings_expire_in_handle_timeout() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7>", Some(5));
    assert_eq!(binding_count(&net, "alice"), 1);
    let expiry = net.now + Duration::from_secs(5);
    assert!(net.proxy.poll_timeout().is_some_and(|t| t <= expiry));
    net.advance(Duration::from_secs(4));
    assert_eq!(binding_count(&net, "alice"), 1);
    net.advance(Duration::from_secs(1));
    assert_eq!(binding_count(&net, "alice"), 0);
    assert!(
        net.proxy.registrar().poll_timeout().is_none(),
        "dropped, not just hidden"
    );
}

#[test]
fn out_of_order_register_fails_with_500_and_changes_nothing() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let ok = alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7>", Some(600));
    assert_eq!(ok.code, 200);
    // A delayed copy of an older REGISTER: same Call-ID, lower CSeq.
    alice.cseq = 0;
    let resp = alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7>", Some(0));
    assert_eq!(resp.code, 500);
    assert_eq!(binding_count(&net, "alice"), 1);
    // Another Call-ID (another UA instance) may replace it whatever its CSeq.
    alice.call_id = "other@test".into();
    alice.cseq = 0;
    let resp = alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7>", Some(0));
    assert_eq!(resp.code, 200);
    assert_eq!(binding_count(&net, "alice"), 0);
}

#[test]
fn expired_or_moved_nonce_gets_a_stale_challenge() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let first = alice.register("<sip:alice@198.51.100.7>", None);
    let challenge = one_response(&net.request(alice.flow(), &first), ALICE_AT);
    net.advance(Duration::from_secs(301));
    let mut late = alice.register("<sip:alice@198.51.100.7>", None);
    alice.authorize(&mut late, &challenge, false);
    let resp = one_response(&net.request(alice.flow(), &late), ALICE_AT);
    assert_eq!(resp.code, 401);
    let again: Challenge = resp
        .headers
        .get("WWW-Authenticate")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(again.param("stale"), Some("true"));

    // A fresh nonce used from another address (port) is stale there too.
    let mut moved = alice.register("<sip:alice@198.51.100.7>", None);
    alice.authorize(&mut moved, &resp, false);
    let resp = one_response(
        &net.request(udp("198.51.100.7:5062"), &moved),
        "198.51.100.7:5062",
    );
    assert_eq!(resp.code, 401);
    assert!(resp
        .headers
        .get("WWW-Authenticate")
        .unwrap()
        .contains("stale=true"));

    // With a wrong password, a stale nonce is still a 403.
    alice.password = "nope";
    let mut wrong = alice.register("<sip:alice@198.51.100.7>", None);
    alice.authorize(&mut wrong, &challenge, false);
    assert_eq!(
        one_response(&net.request(alice.flow(), &wrong), ALICE_AT).code,
        403
    );
}

#[test]
fn binding_count_is_capped_by_dropping_the_oldest() {
    let mut net = Net::with(|c| c.registrar.max_bindings = 3);
    let mut alice = Ua::alice();
    for port in [5060, 5061, 5062, 5063] {
        let contact = format!("<sip:alice@198.51.100.7:{port}>");
        assert_eq!(alice.register_with_auth(&mut net, &contact, None).code, 200);
    }
    let ports: Vec<_> = net
        .proxy
        .registrar()
        .lookup(net.now, "alice")
        .iter()
        .map(|b| b.contact.port)
        .collect();
    assert_eq!(ports, [Some(5063), Some(5062), Some(5061)], "newest first");
}

#[test]
fn register_for_a_foreign_domain_is_refused_and_bad_contact_is_400() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut req = alice.register("<sip:alice@198.51.100.7>", None);
    req.uri = "sip:elsewhere.example.net".parse().unwrap();
    let resp = one_response(&net.request(alice.flow(), &req), ALICE_AT);
    assert_eq!(resp.code, 403);

    let resp = alice.register_with_auth(&mut net, "<sip:alice@198.51.100.7", None);
    assert_eq!(resp.code, 400);
    assert!(resp.reason.contains("Contact"), "{}", resp.reason);
}

// ---- proxy ------------------------------------------------------------------

#[test]
fn options_to_the_proxy_is_answered_with_allow() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut req = alice.register("", None);
    req.method = Method::Options;
    req.uri = format!("sip:{PROXY}").parse().unwrap();
    req.headers.set("CSeq", "9 OPTIONS");
    let resp = one_response(&net.request(alice.flow(), &req), ALICE_AT);
    assert_eq!(resp.code, 200);
    assert!(resp.headers.get("Allow").unwrap().contains("INVITE"));
    assert!(resp.headers.get("Allow").unwrap().contains("REGISTER"));
}

#[test]
fn invite_follows_the_nat_flow_not_the_private_contact() {
    let mut net = Net::new();
    let mut bob = Ua::bob();
    bob.register_contact(&mut net);
    let binding = &net.proxy.registrar().lookup(net.now, "bob")[0];
    assert_eq!(binding.contact.to_string(), "sip:bob@10.0.0.2:5060");
    assert_eq!(binding.flow, udp(BOB_AT));

    let mut alice = Ua::alice();
    let (_, sent) = alice.call(&mut net, "sip:bob@example.com", "call-nat@test");
    let to_bob = sent
        .iter()
        .find(|t| t.target == udp(BOB_AT))
        .expect("INVITE to bob's flow");
    let invite = as_request(to_bob);
    assert_eq!(invite.uri.to_string(), "sip:bob@10.0.0.2:5060");
    assert!(sent
        .iter()
        .all(|t| t.target.addr.to_string() != BOB_PRIVATE));
}

#[test]
fn full_call_alice_to_bob() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut bob = Ua::bob();
    alice.register_contact(&mut net);
    bob.register_contact(&mut net);

    // INVITE → 407 → INVITE with credentials → 100 to alice, INVITE to bob.
    let (invite, sent) = alice.call(&mut net, "sip:bob@example.com", "call-1@test");
    assert_eq!(sent.len(), 2, "{sent:?}");
    let trying = as_response(&sent[0]);
    assert_eq!((sent[0].target, trying.code), (udp(ALICE_AT), 100));
    assert_eq!(sent[1].target, udp(BOB_AT));
    let fwd = as_request(&sent[1]);
    assert_eq!(fwd.method, Method::Invite);
    assert_eq!(fwd.uri.to_string(), "sip:bob@10.0.0.2:5060");
    assert_eq!(fwd.max_forwards(), Ok(Some(69)));
    assert!(fwd.headers.get("Proxy-Authorization").is_none(), "consumed");
    let rr = fwd.record_route().unwrap();
    assert_eq!(rr.len(), 1);
    assert_eq!(rr[0].uri.to_string(), "sip:192.0.2.1:5060;transport=udp;lr");
    let vias = fwd.via().unwrap();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].sent_by(), PROXY);
    assert!(vias[0].branch().unwrap().starts_with("z9hG4bK"));
    assert_eq!(vias[1].received(), Some("198.51.100.7"));
    assert_eq!(fwd.body, invite.body, "the SDP passes untouched");

    // Bob rings, then answers; each goes to alice without our Via.
    let ringing = answer(&fwd, 180, "bobtag", "sip:bob@10.0.0.2:5060");
    let up = one_response(&net.response(bob.flow(), &ringing), ALICE_AT);
    assert_eq!(up.code, 180);
    assert_eq!(up.via().unwrap().len(), 1);
    assert_eq!(
        up.top_via().unwrap().branch(),
        invite.top_via().unwrap().branch()
    );
    let ok = answer(&fwd, 200, "bobtag", "sip:bob@10.0.0.2:5060");
    let up = one_response(&net.response(bob.flow(), &ok), ALICE_AT);
    assert_eq!(up.code, 200);
    assert_eq!(up.via().unwrap().len(), 1);
    assert_eq!(up.record_route().unwrap().len(), 1);
    // A retransmitted 200 from bob is relayed again; we add none of our own.
    let again = one_response(&net.response(bob.flow(), &ok), ALICE_AT);
    assert_eq!(again.code, 200);
    assert!(net.advance(Duration::from_millis(600)).is_empty());

    // ACK along the route set: to bob's flow, our Route popped.
    let mut ack = Request::new(Method::Ack, "sip:bob@10.0.0.2:5060".parse().unwrap());
    let via = alice.via();
    ack.headers.push("Via", via);
    ack.headers
        .push("Route", "<sip:192.0.2.1:5060;transport=udp;lr>");
    ack.headers.push("Max-Forwards", "70");
    ack.headers
        .push("From", invite.headers.get("From").unwrap());
    ack.headers.push("To", up.headers.get("To").unwrap());
    ack.headers.push("Call-ID", "call-1@test");
    ack.headers
        .push("CSeq", format!("{} ACK", invite.cseq().unwrap().seq));
    let fwd_ack = one_request(&net.request(alice.flow(), &ack), BOB_AT);
    assert_eq!(fwd_ack.method, Method::Ack);
    assert!(fwd_ack.headers.get("Route").is_none());
    assert_eq!(fwd_ack.max_forwards(), Ok(Some(69)));
    assert_eq!(fwd_ack.via().unwrap().len(), 2);

    // Bob hangs up: BYE to alice's contact via our Record-Route.
    let mut bye = Request::new(Method::Bye, "sip:alice@198.51.100.7:5060".parse().unwrap());
    let via = bob.via();
    bye.headers.push("Via", via);
    bye.headers
        .push("Route", "<sip:192.0.2.1:5060;transport=udp;lr>");
    bye.headers.push("Max-Forwards", "70");
    bye.headers.push("From", up.headers.get("To").unwrap());
    bye.headers.push("To", invite.headers.get("From").unwrap());
    bye.headers.push("Call-ID", "call-1@test");
    bye.headers.push("CSeq", "1 BYE");
    let fwd_bye = one_request(&net.request(bob.flow(), &bye), ALICE_AT);
    assert_eq!(fwd_bye.method, Method::Bye);
    assert!(
        fwd_bye.headers.get("Record-Route").is_none(),
        "BYE is not record-routed"
    );
    let bye_ok = answer(&fwd_bye, 200, "", "");
    let up = one_response(&net.response(alice.flow(), &bye_ok), BOB_AT);
    assert_eq!(up.code, 200);
    assert_eq!(up.via().unwrap().len(), 1);
    let stats = net.proxy.stats();
    assert_eq!(stats.forwarded, 3, "INVITE, ACK, BYE");
    assert_eq!(stats.relayed, 4, "180, 200 twice, BYE's 200");

    // Transactions wind down; the 2xx context is forgotten after 64·T1.
    net.advance(Duration::from_secs(40));
    assert_eq!(net.proxy.pending(), 0);
}

#[test]
fn bye_to_a_natted_caller_reaches_its_flow() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut bob = Ua::bob();
    alice.register_contact(&mut net);
    bob.register_contact(&mut net);
    // Bob calls; his Contact is private, but the BYE must reach his flow.
    let (_, sent) = bob.call(&mut net, "sip:alice@example.com", "call-2@test");
    let fwd = as_request(&sent[1]);
    let ok = answer(&fwd, 200, "alicetag", "sip:alice@198.51.100.7:5060");
    one_response(&net.response(alice.flow(), &ok), BOB_AT);

    let bye = alices_bye(
        &mut alice,
        "sip:bob@10.0.0.2:5060",
        "from-bob",
        "call-2@test",
    );
    let fwd_bye = one_request(&net.request(alice.flow(), &bye), BOB_AT);
    assert_eq!(fwd_bye.uri.to_string(), "sip:bob@10.0.0.2:5060");
}

#[test]
fn cancel_before_answer() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut bob = Ua::bob();
    alice.register_contact(&mut net);
    bob.register_contact(&mut net);
    let (invite, sent) = alice.call(&mut net, "sip:bob@example.com", "call-3@test");
    let fwd = as_request(&sent[1]);
    let ringing = answer(&fwd, 180, "bobtag", "sip:bob@10.0.0.2:5060");
    one_response(&net.response(bob.flow(), &ringing), ALICE_AT);

    let mut cancel = Request::new(Method::Cancel, invite.uri.clone());
    cancel
        .headers
        .push("Via", invite.headers.get("Via").unwrap());
    cancel.headers.push("Max-Forwards", "70");
    for name in ["From", "To", "Call-ID"] {
        cancel.headers.push(name, invite.headers.get(name).unwrap());
    }
    cancel
        .headers
        .push("CSeq", format!("{} CANCEL", invite.cseq().unwrap().seq));
    let sent = net.request(alice.flow(), &cancel);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let ok = as_response(&sent[0]);
    assert_eq!((sent[0].target, ok.code), (udp(ALICE_AT), 200));
    assert_eq!(ok.cseq().unwrap().method, Method::Cancel);
    assert_eq!(sent[1].target, udp(BOB_AT));
    let down = as_request(&sent[1]);
    assert_eq!(down.method, Method::Cancel);
    assert_eq!(down.uri, fwd.uri);
    assert_eq!(
        down.top_via().unwrap().branch(),
        fwd.top_via().unwrap().branch()
    );
    assert_eq!(down.cseq().unwrap().seq, fwd.cseq().unwrap().seq);
    assert_eq!(down.via().unwrap().len(), 1);

    // Bob: 200 to the CANCEL (ends at the proxy), 487 to the INVITE.
    assert!(net
        .response(bob.flow(), &answer(&down, 200, "bobtag", ""))
        .is_empty());
    let terminated = answer(&fwd, 487, "bobtag", "");
    let sent = net.response(bob.flow(), &terminated);
    assert_eq!(sent.len(), 2, "ACK down, 487 up: {sent:?}");
    let ack = sent.iter().find(|t| t.target == udp(BOB_AT)).unwrap();
    assert_eq!(as_request(ack).method, Method::Ack);
    let up = sent.iter().find(|t| t.target == udp(ALICE_AT)).unwrap();
    assert_eq!(as_response(up).code, 487);
    assert_eq!(net.proxy.pending(), 0);

    // A CANCEL matching nothing is 481.
    let mut stray = cancel.clone();
    stray
        .headers
        .set("Via", "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKnothing");
    let resp = one_response(&net.request(alice.flow(), &stray), ALICE_AT);
    assert_eq!(resp.code, 481);
}

#[test]
fn cancel_waits_for_a_provisional_before_going_downstream() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut bob = Ua::bob();
    alice.register_contact(&mut net);
    bob.register_contact(&mut net);
    let (invite, sent) = alice.call(&mut net, "sip:bob@example.com", "call-4@test");
    let fwd = as_request(&sent[1]);
    let mut cancel = ack_for(&invite, &answer(&invite, 487, "x", ""));
    cancel.method = Method::Cancel;
    cancel.headers.set("To", invite.headers.get("To").unwrap());
    cancel
        .headers
        .set("CSeq", format!("{} CANCEL", invite.cseq().unwrap().seq));
    let sent = net.request(alice.flow(), &cancel);
    assert_eq!(one_response(&sent, ALICE_AT).code, 200);
    // Bob's 100 Trying is what allows the CANCEL out (§9.1).
    let trying = answer(&fwd, 100, "", "");
    let sent = net.response(bob.flow(), &trying);
    let down = one_request(&sent, BOB_AT);
    assert_eq!(down.method, Method::Cancel);
}

#[test]
fn callee_silent_after_ringing_gets_cancelled_by_timer_c() {
    let mut net = Net::with(|c| c.timer_c = Duration::from_secs(200));
    let mut alice = Ua::alice();
    let mut bob = Ua::bob();
    alice.register_contact(&mut net);
    bob.register_contact(&mut net);
    let (_, sent) = alice.call(&mut net, "sip:bob@example.com", "call-5@test");
    let fwd = as_request(&sent[1]);
    net.response(bob.flow(), &answer(&fwd, 180, "bobtag", ""));
    let sent = net.advance(Duration::from_secs(201));
    let cancels: Vec<_> = sent
        .iter()
        .filter(|t| t.target == udp(BOB_AT))
        .map(as_request)
        .filter(|r| r.method == Method::Cancel)
        .collect();
    assert!(!cancels.is_empty(), "{sent:?}");
    assert!(
        cancels.iter().all(|c| c == &cancels[0]),
        "one CANCEL, retransmitted by timer E"
    );
    // Bob never answers even that: alice hears 408 after 64·T1.
    let sent = net.advance(Duration::from_secs(33));
    let to_alice: Vec<_> = sent
        .iter()
        .filter(|t| t.target == udp(ALICE_AT))
        .map(as_response)
        .collect();
    assert!(!to_alice.is_empty());
    assert!(
        to_alice.iter().all(|r| r.code == 408),
        "408, retransmitted until ACKed"
    );
    assert_eq!(net.proxy.pending(), 0);
}

#[test]
fn silent_callee_gives_408_after_timer_b() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut bob = Ua::bob();
    alice.register_contact(&mut net);
    bob.register_contact(&mut net);
    alice.call(&mut net, "sip:bob@example.com", "call-6@test");
    let sent = net.advance(Duration::from_secs(33));
    let retransmits = sent.iter().filter(|t| t.target == udp(BOB_AT)).count();
    assert_eq!(retransmits, 6, "timer A");
    let up: Vec<_> = sent
        .iter()
        .filter(|t| t.target == udp(ALICE_AT))
        .map(as_response)
        .collect();
    assert!(up.iter().all(|r| r.code == 408) && !up.is_empty(), "{up:?}");
    assert_eq!(up[0].via().unwrap().len(), 1);
    assert_eq!(net.proxy.pending(), 0);
}

#[test]
fn invite_to_unknown_or_unregistered_user_is_answered_statefully() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    alice.register_contact(&mut net);
    let (invite, sent) = alice.call(&mut net, "sip:carol@example.com", "call-7@test");
    let resp = one_response(&sent, ALICE_AT);
    assert_eq!(resp.code, 404);
    // The 404 is retransmitted until ACKed, then absorbed.
    assert_eq!(net.advance(Duration::from_millis(500)).len(), 1);
    assert!(net
        .request(alice.flow(), &ack_for(&invite, &resp))
        .is_empty());
    assert!(net.advance(Duration::from_secs(2)).is_empty());

    // Bob exists but is not registered: 480 (RFC 3261 §16.5).
    let (_, sent) = alice.call(&mut net, "sip:bob@example.com", "call-8@test");
    assert_eq!(one_response(&sent, ALICE_AT).code, 480);
}

#[test]
fn non_users_may_call_in_but_not_relay_out() {
    let mut net = Net::new();
    let mut bob = Ua::bob();
    bob.register_contact(&mut net);
    let mut stranger = Ua::new("eve", "192.0.2.99:5060", "192.0.2.99:5060");
    // To a foreign domain (an IP we would happily reach): refused.
    let mut out = stranger.invite("sip:someone@198.51.100.200", "relay@test");
    out.headers
        .set("From", "<sip:eve@elsewhere.example>;tag=e1");
    let resp = one_response(&net.request(stranger.flow(), &out), "192.0.2.99:5060");
    assert_eq!(resp.code, 403);
    // To one of our users: no challenge, straight to bob's flow.
    let mut call = stranger.invite("sip:bob@example.com", "inbound@test");
    call.headers
        .set("From", "<sip:eve@elsewhere.example>;tag=e2");
    let sent = net.request(stranger.flow(), &call);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        as_request(&sent[1]).uri.to_string(),
        "sip:bob@10.0.0.2:5060"
    );
    // Claiming our domain without credentials gets a 407.
    let mut spoof = stranger.invite("sip:bob@example.com", "spoof@test");
    spoof.headers.set("From", "<sip:alice@example.com>;tag=e3");
    let resp = one_response(&net.request(stranger.flow(), &spoof), "192.0.2.99:5060");
    assert_eq!(resp.code, 407);
    assert_eq!(resp.headers.proxy_authenticate().unwrap().len(), 2);
}

#[test]
fn a_route_to_us_does_not_open_a_relay() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    alice.register_contact(&mut net);
    let mut eve = Ua::new("eve", "192.0.2.99:5060", "192.0.2.99:5060");
    let route = "<sip:192.0.2.1:5060;transport=udp;lr>";
    // Initial, with a preloaded Route naming us.
    let mut initial = eve.invite("sip:victim@198.51.100.200", "r1@test");
    initial
        .headers
        .set("From", "<sip:eve@elsewhere.example>;tag=e1");
    initial.headers.push("Route", route);
    let resp = one_response(&net.request(eve.flow(), &initial), "192.0.2.99:5060");
    assert_eq!(resp.code, 403);
    // Posing as in-dialog: a To tag changes nothing for a stranger's flow.
    let mut fake = eve.invite("sip:victim@198.51.100.200", "r2@test");
    fake.method = Method::Message;
    fake.headers.set("CSeq", "2 MESSAGE");
    fake.headers
        .set("From", "<sip:eve@elsewhere.example>;tag=e1");
    fake.headers.set("To", "<sip:victim@198.51.100.200>;tag=v1");
    fake.headers.push("Route", route);
    let resp = one_response(&net.request(eve.flow(), &fake), "192.0.2.99:5060");
    assert_eq!(resp.code, 403);
    // From alice's registered flow, the same in-dialog request goes out.
    let mut hers = fake.clone();
    hers.headers.set("Via", alice.via());
    let sent = net.request(alice.flow(), &hers);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target, udp("198.51.100.200:5060"));
}

#[test]
fn users_may_call_out_to_ip_literals_but_not_to_names() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    alice.register_contact(&mut net);
    let (_, sent) = alice.call(&mut net, "sip:carol@198.51.100.200:5080", "out@test");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].target, udp("198.51.100.200:5080"));
    let (_, sent) = alice.call(&mut net, "sip:carol@far.example.net", "out2@test");
    assert_eq!(one_response(&sent, ALICE_AT).code, 502);
}

#[test]
fn wrong_proxy_password_is_403_and_from_must_match() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    alice.password = "guess";
    let (_, sent) = alice.call(&mut net, "sip:bob@example.com", "pw@test");
    assert_eq!(one_response(&sent, ALICE_AT).code, 403);
}

#[test]
fn max_forwards_zero_is_483() {
    let mut net = Net::new();
    let mut bob = Ua::bob();
    bob.register_contact(&mut net);
    let mut stranger = Ua::new("eve", "192.0.2.99:5060", "192.0.2.99:5060");
    let mut req = stranger.invite("sip:bob@example.com", "mf@test");
    req.headers
        .set("From", "<sip:eve@elsewhere.example>;tag=e1");
    req.headers.set("Max-Forwards", "0");
    let resp = one_response(&net.request(stranger.flow(), &req), "192.0.2.99:5060");
    assert_eq!(resp.code, 483);
}

#[test]
fn loops_and_unsupported_extensions_are_refused() {
    let mut net = Net::new();
    let mut bob = Ua::bob();
    bob.register_contact(&mut net);
    let mut stranger = Ua::new("eve", "192.0.2.99:5060", "192.0.2.99:5060");
    let mut req = stranger.invite("sip:bob@example.com", "loop@test");
    req.headers
        .set("From", "<sip:eve@elsewhere.example>;tag=e1");
    req.headers
        .push("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKold");
    assert_eq!(
        one_response(&net.request(stranger.flow(), &req), "192.0.2.99:5060").code,
        482
    );
    let mut req = stranger.invite("sip:bob@example.com", "ext@test");
    req.headers
        .set("From", "<sip:eve@elsewhere.example>;tag=e1");
    req.headers.push("Proxy-Require", "foo");
    let resp = one_response(&net.request(stranger.flow(), &req), "192.0.2.99:5060");
    assert_eq!(resp.code, 420);
    assert_eq!(resp.headers.get("Unsupported"), Some("foo"));
}

#[test]
fn missing_mandatory_header_is_400_with_the_reason() {
    let mut net = Net::new();
    let text = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKx\r\n\
        From: <sip:eve@elsewhere.example>;tag=1\r\n\
        To: <sip:bob@example.com>\r\n\
        CSeq: 1 OPTIONS\r\n\r\n";
    let sent = net.send_bytes(udp("192.0.2.99:5060"), text.as_bytes());
    let resp = one_response(&sent, "192.0.2.99:5060");
    assert_eq!(resp.code, 400);
    assert_eq!(resp.reason, "Missing Call-ID header");
    assert_eq!(net.proxy.stats().bad_requests, 1);
}

#[test]
fn garbage_is_dropped_silently() {
    let mut net = Net::new();
    for junk in [
        &b"hello"[..],
        b"\x16\x03\x01\x00\xa5\x01\x00",
        b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"\r\n\r\n",
    ] {
        assert!(net.send_bytes(udp("192.0.2.99:5060"), junk).is_empty());
    }
    assert_eq!(
        net.proxy.stats().malformed,
        4,
        "the CRLF keep-alive is not malformed"
    );
}

#[test]
fn tcp_to_udp_calls_are_record_routed_twice() {
    let mut net = Net::new();
    let mut bob = Ua::bob();
    bob.register_contact(&mut net);
    let mut stranger = Ua::new("eve", "192.0.2.99:5060", "192.0.2.99:5060");
    let mut req = stranger.invite("sip:bob@example.com", "tcp@test");
    req.headers
        .set("From", "<sip:eve@elsewhere.example>;tag=e1");
    req.headers
        .set("Via", "SIP/2.0/TCP 192.0.2.99:5060;branch=z9hG4bKtcp");
    net.proxy
        .handle_message(net.now, tcp("192.0.2.99:40001"), &req.to_bytes());
    let sent = net.drain();
    assert_eq!(
        sent[0].target,
        tcp("192.0.2.99:40001"),
        "100 on the connection"
    );
    let fwd = as_request(&sent[1]);
    let rr: Vec<_> = fwd
        .record_route()
        .unwrap()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(
        rr,
        [
            "sip:192.0.2.1:5060;transport=udp;lr",
            "sip:192.0.2.1:5060;transport=tcp;lr"
        ]
    );
    assert_eq!(fwd.top_via().unwrap().transport, "UDP");
}

#[test]
fn stray_2xx_is_relayed_only_on_our_own_branch() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut bob = Ua::bob();
    alice.register_contact(&mut net);
    bob.register_contact(&mut net);
    let (_, sent) = alice.call(&mut net, "sip:bob@example.com", "stray@test");
    let fwd = as_request(&sent[1]);
    let ok = answer(&fwd, 200, "bobtag", "sip:bob@10.0.0.2:5060");
    one_response(&net.response(bob.flow(), &ok), ALICE_AT);
    // Long after every transaction ended, bob still retransmits his 200.
    net.advance(Duration::from_secs(60));
    assert_eq!(net.proxy.pending(), 0);
    let late = one_response(&net.response(bob.flow(), &ok), ALICE_AT);
    assert_eq!(late.code, 200);
    // A forged one aimed at a third party is not reflected.
    let mut forged = ok.clone();
    forged.headers.remove("Via");
    forged.headers.push("Via", fwd.headers.get_all("Via")[0]);
    forged
        .headers
        .push("Via", "SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bKvictim");
    assert!(net.response(bob.flow(), &forged).is_empty());
}

// ---- robustness ---------------------------------------------------------------

/// xorshift64*: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b" ",
    b";",
    b",",
    b":",
    b"<",
    b">",
    b"\"",
    b"@",
    b"=",
    b"0",
    b"*",
    b"\x00",
    b"\xff",
    b";lr",
    b";tag=x",
    b"Route: <sip:192.0.2.1:5060;lr>\r\n",
    b"Max-Forwards: 0\r\n",
    b"Contact: *\r\n",
    b"Expires: 0\r\n",
    b"sips:",
    b"[::1]",
    b":65535",
    b"CANCEL",
    b"ACK",
];

fn mutate(rng: &mut XorShift, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(2) {
        let at = rng.below(input.len() + 1);
        match rng.below(8) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] ^= 1 << rng.below(8);
            }
            1 if at < input.len() => {
                let end = (at + rng.below(16)).min(input.len());
                input.drain(at..end);
            }
            2 | 5 | 6 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            // Rare: a truncated datagram only ever tests the parser.
            3 if rng.below(4) == 0 => input.truncate(at),
            _ => input.insert(at, rng.below(256) as u8),
        }
    }
}

#[test]
fn seeded_mutations_never_panic() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut bob = Ua::bob();
    alice.register_contact(&mut net);
    bob.register_contact(&mut net);
    // Valid messages, with live credentials so mutants reach deep paths.
    let (invite, sent) = alice.call(&mut net, "sip:bob@example.com", "fuzz@test");
    let fwd = as_request(&sent[1]);
    let first = alice.register("<sip:alice@198.51.100.7>", Some(60));
    let challenge = one_response(&net.request(alice.flow(), &first), ALICE_AT);
    let mut register = alice.register("<sip:alice@198.51.100.7>", Some(60));
    alice.authorize(&mut register, &challenge, false);
    let mut cancel = invite.clone();
    cancel.method = Method::Cancel;
    cancel
        .headers
        .set("CSeq", format!("{} CANCEL", invite.cseq().unwrap().seq));
    let mut bye = fwd.clone();
    bye.method = Method::Bye;
    bye.headers.set("To", "<sip:bob@example.com>;tag=t");
    bye.headers.set("CSeq", "5 BYE");
    bye.headers
        .push("Route", "<sip:192.0.2.1:5060;transport=udp;lr>");
    // (source, message, whether it is a new request needing a new branch)
    let seeds: Vec<(Target, Message, bool)> = vec![
        (alice.flow(), Message::Request(invite.clone()), true),
        (alice.flow(), Message::Request(register), true),
        (alice.flow(), Message::Request(cancel), false),
        (bob.flow(), Message::Request(bye), true),
        (
            bob.flow(),
            Message::Response(answer(&fwd, 180, "b", "sip:bob@10.0.0.2")),
            false,
        ),
        (
            bob.flow(),
            Message::Response(answer(&fwd, 200, "b", "sip:bob@10.0.0.2")),
            false,
        ),
        (
            bob.flow(),
            Message::Response(answer(&fwd, 486, "b", "")),
            false,
        ),
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for round in 0..2_000 {
        let (from, seed, fresh) = &seeds[round % seeds.len()];
        let mut seed = seed.clone();
        if *fresh {
            // A new transaction each time, or the layer absorbs the mutant
            // as a retransmission and nothing deeper runs.
            let mut via = seed.headers().top_via().unwrap();
            via.set_branch(&format!("z9hG4bKfuzz{round}"));
            seed.headers_mut().remove_first_value("Via");
            seed.headers_mut().insert_first("Via", via);
        }
        let mut input = seed.to_bytes();
        mutate(&mut rng, &mut input);
        net.send_bytes(*from, &input);
        if round % 50 == 0 {
            net.advance(Duration::from_secs(rng.below(6) as u64));
        }
    }
    // The mutants must reach routing, not just the parser.
    let stats = net.proxy.stats();
    assert!(stats.forwarded > 20 && stats.relayed > 20, "{stats:?}");
    net.advance(Duration::from_secs(400));
    assert!(
        net.proxy.pending() <= 1,
        "contexts are let go: {}",
        net.proxy.pending()
    );
}

#[test]
fn config_debug_hides_passwords() {
    let config = RegistrarConfig::new(REALM, users());
    let shown = format!("{config:?}");
    assert!(
        shown.contains("alice") && !shown.contains("wonderland"),
        "{shown}"
    );
}

#[test]
fn ipv6_flows_get_ipv6_vias() {
    let mut net = Net::with(|c| c.local.push(udp("[2001:db8::1]:5060")));
    let mut bob = Ua::new("bob", "[2001:db8::20]:5060", "[2001:db8::20]:5060");
    bob.register_contact(&mut net);
    let mut stranger = Ua::new("eve", "[2001:db8::99]:5060", "[2001:db8::99]:5060");
    let mut req = stranger.invite("sip:bob@example.com", "v6@test");
    req.headers
        .set("From", "<sip:eve@elsewhere.example>;tag=e1");
    let sent = net.request(stranger.flow(), &req);
    let fwd = as_request(&sent[1]);
    assert_eq!(
        sent[1].target.addr,
        "[2001:db8::20]:5060".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(fwd.top_via().unwrap().sent_by(), "[2001:db8::1]:5060");
}

/// A UA behind a NAT that registered over UDP is reachable only through
/// that flow: a large INVITE (ICE candidates make SDP long) still goes
/// there over UDP, not over a TCP connection the NAT would refuse.
#[test]
fn a_large_invite_reaches_a_udp_registered_user_over_its_udp_flow() {
    let mut net = Net::new();
    let mut alice = Ua::alice();
    let mut bob = Ua::bob();
    alice.register_contact(&mut net);
    bob.register_contact(&mut net);
    let first = alice.invite("sip:bob@example.com", "big-1@test");
    let challenge = one_response(&net.request(alice.flow(), &first), ALICE_AT);
    let _ = net.request(alice.flow(), &ack_for(&first, &challenge));
    let mut second = alice.invite("sip:bob@example.com", "big-1@test");
    second.body = format!(
        "v=0\r\n{}",
        "a=candidate:1 1 udp 2130706431 10.0.0.1 4000 typ host\r\n".repeat(40)
    )
    .into_bytes();
    second
        .headers
        .set("Content-Length", second.body.len().to_string());
    alice.authorize(&mut second, &challenge, true);
    let sent = net.request(alice.flow(), &second);
    let fwd = sent
        .iter()
        .find(|t| t.target.addr == bob.flow().addr)
        .expect("forwarded to bob");
    assert!(fwd.bytes.len() > 1300, "{} bytes", fwd.bytes.len());
    assert_eq!(fwd.target, udp(BOB_AT), "over bob's UDP flow");
    assert_eq!(as_request(fwd).top_via().unwrap().transport, "UDP");
}

/// `serve --sip-digest md5`: clients that only try the first challenge
/// (baresip 1.0) see MD5 alone.
#[test]
fn the_challenge_order_follows_the_configuration() {
    let challenge_algorithms = |net: &mut Net| -> Vec<String> {
        let mut alice = Ua::alice();
        let req = alice.register("sip:alice@198.51.100.7:5060", Some(300));
        let resp = one_response(&net.request(alice.flow(), &req), ALICE_AT);
        assert_eq!(resp.code, 401);
        resp.headers
            .get_all("WWW-Authenticate")
            .iter()
            .map(|c| {
                let c = c.to_ascii_uppercase();
                if c.contains("SHA-256") {
                    "SHA-256".to_owned()
                } else {
                    "MD5".to_owned()
                }
            })
            .collect()
    };
    assert_eq!(challenge_algorithms(&mut Net::new()), ["SHA-256", "MD5"]);
    let mut md5_only =
        Net::with(|c| c.registrar.digest = vec![crate::sip::digest::DigestAlgorithm::Md5]);
    assert_eq!(challenge_algorithms(&mut md5_only), ["MD5"]);
}

// ---- GRUU (RFC 5627) ------------------------------------------------------------

const BOB_INSTANCE: &str = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";

/// Bob registers `contact` with his instance and `Supported: gruu` from
/// his current flow; returns the 200.
fn register_instance(net: &mut Net, bob: &mut Ua, contact: &str) -> Response {
    let with_gruu = |bob: &mut Ua| {
        let mut req = bob.register(contact, Some(3600));
        req.headers.push("Supported", "path, gruu");
        req
    };
    let first = with_gruu(bob);
    let challenge = one_response(&net.request(bob.flow(), &first), bob.at);
    let mut second = with_gruu(bob);
    bob.authorize(&mut second, &challenge, false);
    one_response(&net.request(bob.flow(), &second), bob.at)
}

#[test]
fn a_gruu_follows_its_instance_to_a_new_nat_mapping() {
    let mut net = Net::new();
    let mut bob = Ua::bob();
    let first = format!("<sip:bob@{BOB_AT}>;+sip.instance=\"<{BOB_INSTANCE}>\"");
    let ok = register_instance(&mut net, &mut bob, &first);
    assert_eq!(ok.code, 200);
    let listed = &ok.contacts().unwrap().addrs()[0].clone();
    let gruu: Uri = listed.param_unquoted("pub-gruu").unwrap().parse().unwrap();
    assert_eq!(
        gruu.to_string(),
        format!("sip:bob@{REALM};gr={BOB_INSTANCE}")
    );
    assert_eq!(
        listed.param_unquoted("+sip.instance").as_deref(),
        Some(format!("<{BOB_INSTANCE}>").as_str())
    );

    // The NAT forgot bob and maps him elsewhere: he re-registers his new
    // public contact from the new flow and drops the old one.
    const BOB_NOW: &str = "203.0.113.5:40777";
    let mut moved = Ua::new("bob", BOB_NOW, BOB_NOW);
    moved.cseq = bob.cseq;
    let contacts = format!(
        "<sip:bob@{BOB_NOW}>;+sip.instance=\"<{BOB_INSTANCE}>\", <sip:bob@{BOB_AT}>;expires=0"
    );
    let ok = register_instance(&mut net, &mut moved, &contacts);
    assert_eq!(ok.code, 200, "{ok:?}");

    // A request along the dialog's route set to bob's GRUU reaches him
    // on the new flow, retargeted to the contact he registered there.
    let mut alice = Ua::alice();
    let bye = alices_bye(&mut alice, &gruu.to_string(), "bobtag", "call-gruu@test");
    let fwd = one_request(&net.request(alice.flow(), &bye), BOB_NOW);
    assert_eq!(fwd.uri.to_string(), format!("sip:bob@{BOB_NOW}"));

    // A GRUU of an instance with no binding is 480 (RFC 5627 §5.2.1).
    let mut stray = bye.clone();
    stray.uri = format!("sip:bob@{REALM};gr=urn:uuid:00000000-0000-0000-0000-000000000000")
        .parse()
        .unwrap();
    stray.headers.set("Via", alice.via());
    let sent = net.request(alice.flow(), &stray);
    assert_eq!(one_response(&sent, ALICE_AT).code, 480);
}

#[test]
fn no_gruu_without_supported_gruu() {
    let mut net = Net::new();
    let mut bob = Ua::bob();
    let contact = format!("<sip:bob@{BOB_AT}>;+sip.instance=\"<{BOB_INSTANCE}>\"");
    let ok = bob.register_with_auth(&mut net, &contact, Some(3600));
    assert_eq!(ok.code, 200);
    assert!(ok.contacts().unwrap().addrs()[0]
        .param("pub-gruu")
        .is_none());
}
