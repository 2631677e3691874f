//! The user agent core against a scripted registrar, in virtual time: each
//! test reads the requests the UA sends and writes the registrar's answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::digest::{DigestCredentials, DigestResponse};
use super::headers::Credentials;
use super::message::{Message, Method, Request};
use super::registration::{RegistrationConfig, RegistrationError, RegistrationEvent};
use super::ua::{UaConfig, UaEvent, UserAgent};
use super::{Target, Transport};

const PASSWORD: &str = "alice-secret";

fn registrar() -> Target {
    Target {
        transport: Transport::Udp,
        addr: "192.0.2.1:5060".parse().unwrap(),
    }
}

fn ua_with(transport: Transport, keepalive: Option<Duration>) -> UserAgent {
    ua_configured(transport, keepalive, false)
}

fn ua_configured(transport: Transport, keepalive: Option<Duration>, gruu: bool) -> UserAgent {
    let local: SocketAddr = "10.0.0.2:5070".parse().unwrap();
    let config = UaConfig {
        registration: RegistrationConfig {
            aor: "sip:alice@example.org".parse().unwrap(),
            registrar: "sip:example.org".parse().unwrap(),
            route: None,
            credentials: DigestCredentials {
                username: "alice".into(),
                password: PASSWORD.into(),
            },
            expires: 600,
            transport,
            local,
            fix_contact: true,
            gruu,
            user_agent: "icephone-test".into(),
        },
        next_hop: Target {
            transport,
            ..registrar()
        },
        keepalive,
        timers: Default::default(),
    };
    UserAgent::new(config, StdRng::seed_from_u64(7))
}

fn ua() -> UserAgent {
    ua_with(Transport::Udp, None)
}

/// Every request the UA has queued, parsed.
fn sent(ua: &mut UserAgent) -> Vec<Request> {
    std::iter::from_fn(|| ua.poll_transmit())
        .filter(|t| t.bytes != b"\r\n\r\n")
        .map(|t| match Message::parse(&t.bytes) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        })
        .collect()
}

/// Wakes the UA whenever it asks, up to `until`; what it sent meanwhile.
fn run_until(ua: &mut UserAgent, until: Instant) -> Vec<Request> {
    let mut out = sent(ua);
    while let Some(at) = ua.poll_timeout().filter(|&at| at <= until) {
        ua.handle_timeout(at);
        out.extend(sent(ua));
    }
    out
}

fn events(ua: &mut UserAgent) -> Vec<UaEvent> {
    std::iter::from_fn(|| ua.poll_event()).collect()
}

/// The registrar's answer to `req`: its Via, From, To (tagged), Call-ID
/// and CSeq, with `extra` header lines.
fn answer(req: &Request, status: &str, extra: &[String]) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {status}\r\n");
    for via in req.headers.get_all("Via") {
        s.push_str(&format!("Via: {via}\r\n"));
    }
    for name in ["From", "Call-ID", "CSeq"] {
        s.push_str(&format!("{name}: {}\r\n", req.headers.get(name).unwrap()));
    }
    s.push_str(&format!(
        "To: {};tag=reg1\r\n",
        req.headers.get("To").unwrap()
    ));
    for line in extra {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s.into_bytes()
}

fn challenge(nonce: &str, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!("WWW-Authenticate: Digest realm=\"example.org\", nonce=\"{nonce}\", qop=\"auth,auth-int\", algorithm=MD5{stale}")
}

fn contact_of(req: &Request) -> String {
    req.headers.get("Contact").unwrap().to_owned()
}

/// The digest answer in `req`, checked against the password.
fn check_authorization(req: &Request, password: &str) -> DigestResponse {
    let value = req.headers.get("Authorization").expect("Authorization");
    let creds: Credentials = value.parse().unwrap();
    let d = DigestResponse::from_params(&creds.scheme, |p| creds.param(p)).unwrap();
    assert!(d.verify("REGISTER", password), "bad digest: {value}");
    d
}

/// Runs the challenge and the signed REGISTER to a 200 granting `expires`.
fn register_ok(ua: &mut UserAgent, now: Instant, expires: u32) -> Request {
    ua.register(now);
    let first = sent(ua).remove(0);
    assert!(first.headers.get("Authorization").is_none());
    ua.handle_input(
        now,
        registrar(),
        &answer(&first, "401 Unauthorized", &[challenge("n1", false)]),
    );
    let signed = sent(ua).remove(0);
    check_authorization(&signed, PASSWORD);
    let binding = contact_of(&signed);
    let uri = binding.split_once(";expires=").unwrap().0;
    let contact = format!("Contact: {uri};expires={expires}");
    ua.handle_input(now, registrar(), &answer(&signed, "200 OK", &[contact]));
    signed
}

#[test]
fn registers_in_two_round_trips_and_refreshes_with_cached_credentials() {
    let mut ua = ua();
    let t0 = Instant::now();
    let signed = register_ok(&mut ua, t0, 300);
    assert_eq!(signed.cseq().unwrap().seq, 2);
    assert_eq!(
        events(&mut ua),
        [UaEvent::Registration(RegistrationEvent::Registered {
            contact: "sip:alice@10.0.0.2:5070".into(),
            expires: 300,
        })]
    );
    // The refresh is due 30 s early (a tenth of 300 s), not before.
    assert!(run_until(&mut ua, t0 + Duration::from_secs(269)).is_empty());
    let refresh = run_until(&mut ua, t0 + Duration::from_secs(270)).remove(0);
    assert_eq!(refresh.cseq().unwrap().seq, 3);
    assert_eq!(
        refresh.headers.get("Call-ID"),
        signed.headers.get("Call-ID")
    );
    let d = check_authorization(&refresh, PASSWORD);
    assert_eq!(
        d.qop.as_ref().map(|(_, nc)| *nc),
        Some(2),
        "nonce count goes on"
    );
    assert_ne!(
        refresh.top_via().unwrap().branch(),
        signed.top_via().unwrap().branch(),
        "a new transaction"
    );
}

#[test]
fn a_second_challenge_means_the_password_is_wrong_but_stale_is_answered() {
    let mut ua = ua();
    let now = Instant::now();
    ua.register(now);
    let first = sent(&mut ua).remove(0);
    ua.handle_input(
        now,
        registrar(),
        &answer(&first, "401 Unauthorized", &[challenge("n1", false)]),
    );
    let signed = sent(&mut ua).remove(0);
    // Stale: the same credentials, a new nonce.
    ua.handle_input(
        now,
        registrar(),
        &answer(&signed, "401 Unauthorized", &[challenge("n2", true)]),
    );
    let again = sent(&mut ua).remove(0);
    let d = check_authorization(&again, PASSWORD);
    assert_eq!(d.nonce, "n2");
    assert!(events(&mut ua).is_empty());
    // Not stale: wrong password, one clear failure.
    ua.handle_input(
        now,
        registrar(),
        &answer(&again, "401 Unauthorized", &[challenge("n3", false)]),
    );
    assert!(sent(&mut ua).is_empty(), "no third attempt");
    match events(&mut ua).as_slice() {
        [UaEvent::Registration(RegistrationEvent::Failed {
            error: RegistrationError::Unauthorized { code: 401, .. },
            retry_in: Some(_),
        })] => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_403_after_credentials_reads_as_a_wrong_password() {
    let mut ua = ua();
    let now = Instant::now();
    ua.register(now);
    let first = sent(&mut ua).remove(0);
    ua.handle_input(
        now,
        registrar(),
        &answer(&first, "401 Unauthorized", &[challenge("n1", false)]),
    );
    let signed = sent(&mut ua).remove(0);
    ua.handle_input(now, registrar(), &answer(&signed, "403 Forbidden", &[]));
    let ev = events(&mut ua);
    let text = format!("{ev:?}");
    assert!(
        text.contains("Unauthorized") && text.contains("403"),
        "{text}"
    );
}

#[test]
fn interval_too_brief_retries_with_min_expires() {
    let mut ua = ua();
    let now = Instant::now();
    ua.register(now);
    let first = sent(&mut ua).remove(0);
    ua.handle_input(
        now,
        registrar(),
        &answer(
            &first,
            "423 Interval Too Brief",
            &["Min-Expires: 1200".into()],
        ),
    );
    let again = sent(&mut ua).remove(0);
    assert_eq!(again.headers.get("Expires"), Some("1200"));
    assert!(contact_of(&again).ends_with(";expires=1200"));
}

#[test]
fn behind_a_nat_the_contact_becomes_the_address_the_registrar_saw() {
    let mut ua = ua();
    let now = Instant::now();
    ua.register(now);
    let first = sent(&mut ua).remove(0);
    ua.handle_input(
        now,
        registrar(),
        &answer(&first, "401 Unauthorized", &[challenge("n1", false)]),
    );
    let signed = sent(&mut ua).remove(0);
    // The registrar fills in received and rport (RFC 3581).
    let mut resp = String::from_utf8(answer(
        &signed,
        "200 OK",
        &[format!("Contact: {}", contact_of(&signed))],
    ))
    .unwrap();
    resp = resp.replacen(";rport", ";received=203.0.113.5;rport=40001", 1);
    ua.handle_input(now, registrar(), resp.as_bytes());
    let fixed = sent(&mut ua).remove(0);
    let contact = contact_of(&fixed);
    assert!(
        contact.starts_with("<sip:alice@203.0.113.5:40001>;expires=600"),
        "{contact}"
    );
    assert!(
        contact.contains("<sip:alice@10.0.0.2:5070>;expires=0"),
        "{contact}"
    );
    assert!(
        events(&mut ua).is_empty(),
        "not registered until the fix is"
    );
    let public = "Contact: <sip:alice@203.0.113.5:40001>;expires=600".to_string();
    let resp = String::from_utf8(answer(&fixed, "200 OK", &[public]))
        .unwrap()
        .replacen(";rport", ";received=203.0.113.5;rport=40001", 1);
    ua.handle_input(now, registrar(), resp.as_bytes());
    assert_eq!(
        events(&mut ua),
        [UaEvent::Registration(RegistrationEvent::Registered {
            contact: "sip:alice@203.0.113.5:40001".into(),
            expires: 600
        })]
    );
}

#[test]
fn a_silent_registrar_times_out_at_64_t1_then_retries_after_back_off() {
    let mut ua = ua();
    let t0 = Instant::now();
    ua.register(t0);
    let mut sends = 0;
    while let Some(at) = ua.poll_timeout() {
        if at > t0 + Duration::from_secs(33) {
            break;
        }
        ua.handle_timeout(at);
        sends += sent(&mut ua).len();
        if !events_peek_empty(&mut ua) {
            break;
        }
    }
    // The REGISTER and 10 retransmissions (timer E, capped at T2) before
    // timer F.
    assert_eq!(sends, 11);
    let next = ua.poll_timeout().unwrap();
    let wait = next - (t0 + Duration::from_secs(32));
    assert!(
        (Duration::from_secs(15)..=Duration::from_secs(30)).contains(&wait),
        "{wait:?}"
    );
    ua.handle_timeout(next);
    assert_eq!(sent(&mut ua).len(), 1, "tried again");
}

fn events_peek_empty(ua: &mut UserAgent) -> bool {
    let ev = events(ua);
    if let Some(UaEvent::Registration(RegistrationEvent::Failed { error, .. })) = ev.first() {
        assert_eq!(*error, RegistrationError::Timeout);
        return false;
    }
    assert!(ev.is_empty(), "{ev:?}");
    true
}

#[test]
fn unregister_sends_expires_zero_with_credentials() {
    let mut ua = ua();
    let now = Instant::now();
    register_ok(&mut ua, now, 600);
    events(&mut ua);
    ua.unregister(now);
    let bye = sent(&mut ua).remove(0);
    assert_eq!(bye.headers.get("Expires"), Some("0"));
    assert!(contact_of(&bye).ends_with(";expires=0"));
    check_authorization(&bye, PASSWORD);
    ua.handle_input(now, registrar(), &answer(&bye, "200 OK", &[]));
    assert_eq!(
        events(&mut ua),
        [UaEvent::Registration(RegistrationEvent::Unregistered)]
    );
}

fn request_to_ua(method: &str, branch: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} sip:alice@10.0.0.2:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@example.org>;tag=b1\r\nTo: <sip:alice@example.org>\r\n\
         Call-ID: c-{branch}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn responses(ua: &mut UserAgent) -> Vec<(Target, super::message::Response)> {
    std::iter::from_fn(|| ua.poll_transmit())
        .map(|t| match Message::parse(&t.bytes) {
            Ok(Message::Response(r)) => (t.target, r),
            other => panic!("not a response: {other:?}"),
        })
        .collect()
}

#[test]
fn answers_what_a_ua_without_a_dialog_must() {
    let mut ua = ua();
    let now = Instant::now();
    let peer = Target {
        transport: Transport::Udp,
        addr: "192.0.2.9:61000".parse().unwrap(),
    };
    // (An INVITE starts a call: see sip::calls_tests.)
    for (method, code) in [
        ("OPTIONS", 200),
        ("BYE", 481),
        ("CANCEL", 481),
        ("SUBSCRIBE", 405),
        ("PING", 501),
    ] {
        ua.handle_input(now, peer, &request_to_ua(method, method, ""));
        let got = responses(&mut ua);
        let codes: Vec<u16> = got.iter().map(|(_, r)| r.code).collect();
        let last = got.last().unwrap();
        assert_eq!(last.1.code, code, "{method}: {codes:?}");
        // rport: back to the source port, not the Via's 5060.
        assert_eq!(last.0, peer);
        assert!(last.1.headers.get("To").unwrap().contains("tag="));
        if code == 200 || code == 405 {
            assert!(last.1.headers.get("Allow").is_some());
        }
    }
    // A retransmitted OPTIONS gets the same answer from its transaction.
    ua.handle_input(now, peer, &request_to_ua("OPTIONS", "OPTIONS", ""));
    let again = responses(&mut ua);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.code, 200);
    // A request without Call-ID: 400 naming it; without Via: silence.
    let no_call_id = String::from_utf8(request_to_ua("OPTIONS", "x1", ""))
        .unwrap()
        .replace("Call-ID: c-x1\r\n", "");
    ua.handle_input(now, peer, no_call_id.as_bytes());
    let got = responses(&mut ua);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.code, 400);
    assert!(got[0].1.reason.contains("Call-ID"), "{}", got[0].1.reason);
    let no_via = String::from_utf8(request_to_ua("OPTIONS", "x2", ""))
        .unwrap()
        .replace(
            "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKx2;rport\r\n",
            "",
        );
    ua.handle_input(now, peer, no_via.as_bytes());
    assert!(responses(&mut ua).is_empty());
    ua.handle_input(now, peer, b"\x00\x01 not sip at all");
    assert!(responses(&mut ua).is_empty());
    let stats = ua.stats();
    assert_eq!((stats.bad_requests, stats.malformed), (1, 2));
}

#[test]
fn keepalive_options_notice_a_new_nat_mapping_and_re_register() {
    let mut ua = ua_with(Transport::Udp, Some(Duration::from_secs(25)));
    let t0 = Instant::now();
    register_ok(&mut ua, t0, 600);
    events(&mut ua);
    assert!(run_until(&mut ua, t0 + Duration::from_millis(24_999)).is_empty());
    let ping = run_until(&mut ua, t0 + Duration::from_secs(25)).remove(0);
    assert_eq!(ping.method, Method::Options);
    let resp = String::from_utf8(answer(&ping, "200 OK", &[]))
        .unwrap()
        .replacen(";rport", ";received=203.0.113.7;rport=50000", 1);
    ua.handle_input(t0 + Duration::from_secs(25), registrar(), resp.as_bytes());
    ua.handle_timeout(t0 + Duration::from_secs(25));
    let reregister = sent(&mut ua);
    assert_eq!(reregister.len(), 1, "{reregister:?}");
    assert_eq!(reregister[0].method, Method::Register);
}

#[test]
fn keepalive_over_tcp_is_a_crlf_ping() {
    let mut ua = ua_with(Transport::Tcp, Some(Duration::from_secs(30)));
    let t0 = Instant::now();
    register_ok(&mut ua, t0, 600);
    assert!(run_until(&mut ua, t0 + Duration::from_secs(29)).is_empty());
    ua.handle_timeout(t0 + Duration::from_secs(30));
    let t = ua.poll_transmit().unwrap();
    assert_eq!(t.bytes, b"\r\n\r\n");
    assert_eq!(t.target.transport, Transport::Tcp);
}

/// RFC 5626 §4.4.1: the connection the registration lives on closes (a
/// NAT dropped it, the server restarted): register again at once, which
/// opens a new one; another connection closing changes nothing.
#[test]
fn a_closed_registration_connection_registers_again_at_once() {
    let mut ua = ua_with(Transport::Tcp, Some(Duration::from_secs(30)));
    let t0 = Instant::now();
    register_ok(&mut ua, t0, 600);
    let t1 = t0 + Duration::from_secs(5);
    let elsewhere = Target {
        transport: Transport::Tcp,
        addr: "192.0.2.99:5060".parse().unwrap(),
    };
    ua.connection_lost(t1, elsewhere, "reset");
    assert!(run_until(&mut ua, t1 + Duration::from_secs(1)).is_empty());
    let hop = Target {
        transport: Transport::Tcp,
        ..registrar()
    };
    ua.connection_lost(t1, hop, "the TCP connection was reset");
    assert_eq!(ua.poll_timeout(), Some(t1));
    let sent = run_until(&mut ua, t1);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].method, Method::Register);
}

#[test]
fn a_refused_connection_fails_the_registration_with_its_reason() {
    let mut ua = ua_with(Transport::Tcp, None);
    let now = Instant::now();
    ua.register(now);
    let t = ua.poll_transmit().unwrap();
    ua.transport_error(now, t.target, "Connection refused (os error 111)");
    match events(&mut ua).as_slice() {
        [UaEvent::Registration(RegistrationEvent::Failed {
            error: RegistrationError::Unreachable(reason),
            ..
        })] => assert!(reason.contains("refused")),
        other => panic!("{other:?}"),
    }
    // A later, unrelated timeout is a plain timeout again.
    let next = ua.poll_timeout().unwrap();
    ua.handle_timeout(next);
    let _ = ua.poll_transmit().unwrap();
    let silent = next + Duration::from_secs(33);
    ua.handle_timeout(silent);
    assert!(format!("{:?}", events(&mut ua)).contains("Timeout"));
}

#[test]
fn over_tcp_only_a_changed_address_is_a_nat() {
    let mut ua = ua_with(Transport::Tcp, None);
    let now = Instant::now();
    ua.register(now);
    let first = sent(&mut ua).remove(0);
    ua.handle_input(
        now,
        registrar(),
        &answer(&first, "401 Unauthorized", &[challenge("n1", false)]),
    );
    let signed = sent(&mut ua).remove(0);
    // The connection's own source port differs from our listening port:
    // that is TCP, not a NAT.
    let resp = String::from_utf8(answer(
        &signed,
        "200 OK",
        &[format!("Contact: {}", contact_of(&signed))],
    ))
    .unwrap()
    .replacen(";rport", ";received=10.0.0.2;rport=40123", 1);
    ua.handle_input(now, registrar(), resp.as_bytes());
    assert!(sent(&mut ua).is_empty(), "no contact rewrite");
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::Registration(RegistrationEvent::Registered { .. })]
    ));
}

#[test]
fn with_a_gruu_granted_calls_give_it_as_their_contact() {
    let mut ua = ua_configured(Transport::Udp, None, true);
    let now = Instant::now();
    ua.register(now);
    let first = sent(&mut ua).remove(0);
    let contact = contact_of(&first);
    assert!(contact.contains(";+sip.instance=\"<urn:uuid:"), "{contact}");
    let supported = first.headers.get("Supported").unwrap_or_default();
    assert!(supported.contains("gruu"), "{supported}");
    let instance = contact
        .split("+sip.instance=\"<")
        .nth(1)
        .and_then(|v| v.split_once('>'))
        .unwrap()
        .0
        .to_owned();
    assert_eq!(instance.len(), "urn:uuid:".len() + 36);
    let uri = contact.split_once(";expires=").unwrap().0;
    let gruu = format!("sip:alice@example.org;gr={instance}");
    let granted =
        format!("Contact: {uri};expires=600;+sip.instance=\"<{instance}>\";pub-gruu=\"{gruu}\"");
    ua.handle_input(now, registrar(), &answer(&first, "200 OK", &[granted]));
    assert!(matches!(
        events(&mut ua)[..],
        [UaEvent::Registration(RegistrationEvent::Registered { .. })]
    ));

    ua.invite(
        now,
        "sip:bob@example.org".parse().unwrap(),
        b"v=0\r\n".to_vec(),
    );
    let invite = sent(&mut ua).remove(0);
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(contact_of(&invite), format!("<{gruu}>"));
}
