//! Ring 2: `icephone register` against Kamailio (the Debian package), run
//! on loopback from `tests/kamailio/kamailio.cfg`, and a running UA fed
//! malformed SIP. Every process is killed by PID when its guard drops.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{icephone, require, Background, Serve};
use icephone::audio::analysis::{tone_level, tone_onset};

const REALM: &str = "icephone.test";

struct Kamailio {
    _process: Background,
    port: u16,
    dir: PathBuf,
}

impl Kamailio {
    /// Kamailio on 127.0.0.1, UDP and TCP on one free port, with alice,
    /// bob and carol; ready once it answers OPTIONS.
    fn start(test: &str) -> Option<Kamailio> {
        let kamailio = require("kamailio", test)?;
        let dir = std::env::temp_dir().join(format!("icephone-kam-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_udp_and_tcp_port();
        let mut cmd = Command::new(kamailio);
        cmd.args(common::kamailio_args(
            &dir,
            "127.0.0.1",
            port,
            REALM,
            "alice=Alice-pw1;bob=Bob-pw2;carol=Carol-pw3",
        ));
        let log = std::fs::File::create(dir.join("kamailio.log")).unwrap();
        // A group of its own: its worker processes are stopped with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let process = Background::spawn_with_stderr(&mut cmd, log);
        let k = Kamailio {
            _process: process,
            port,
            dir,
        };
        k.wait_ready();
        Some(k)
    }

    fn wait_ready(&self) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let uri = format!("sip:127.0.0.1:{}", self.port);
            let options = options_request(sock.local_addr().unwrap().port(), &uri);
            sock.send_to(options.as_bytes(), ("127.0.0.1", self.port))
                .unwrap();
            if let Ok(n) = sock.recv(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!("kamailio did not answer OPTIONS on port {}", self.port);
    }

    /// `kamcmd ul.lookup location USER`, as text.
    fn location(&self, user: &str) -> String {
        let socket = format!("unix:{}", self.dir.join("kamailio_ctl").display());
        let kamcmd = require("kamcmd", "location").expect("kamcmd comes with kamailio");
        let out = Command::new(kamcmd)
            .args(["-s", &socket, "ul.lookup", "location", user])
            .output()
            .expect("run kamcmd");
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    }

    fn registrar(&self, transport: &str) -> String {
        format!("sip:127.0.0.1:{};transport={transport}", self.port)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // Its workers, too: the whole process group.
        self._process.shut_down_group(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both UDP and TCP");
}

fn options_request(local_port: u16, uri: &str) -> String {
    format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <{uri}>\r\n\
         Call-ID: probe-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        n = Instant::now().elapsed().as_nanos() ^ u128::from(local_port)
    )
}

fn register_cmd(aor: &str, password: &str, registrar: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_icephone"));
    cmd.args(["--log", "icephone=debug", "register", "--aor", aor])
        .args(["--password", password, "--registrar", registrar])
        .args(extra);
    cmd
}

/// "registered sip:… contact=sip:alice@127.0.0.1:PORT;… expires=N"
fn contact_port(line: &str) -> u16 {
    let contact = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("contact="))
        .unwrap_or_else(|| panic!("no contact in {line:?}"));
    let hostport = contact.split(';').next().unwrap();
    hostport.rsplit(':').next().unwrap().parse().unwrap()
}

/// Registers alice for 5 s, sees the refresh, unregisters on SIGTERM; with
/// Kamailio also checks its location table at each step.
fn register_refresh_unregister(registrar: &str, kam: Option<&Kamailio>) {
    let aor = format!("sip:alice@{REALM}");
    // 5 s: the registrar's minimum, so a refresh comes within the test.
    let mut ua = Background::spawn(&mut register_cmd(
        &aor,
        "Alice-pw1",
        registrar,
        &["--expires", "5"],
    ));
    let line = ua.wait_line("registered ", Duration::from_secs(10));
    assert!(line.contains("expires=5"), "{line}");
    let port = contact_port(&line);
    if let Some(kam) = kam {
        let location = kam.location("alice");
        assert!(
            location.contains(&format!("Address: sip:alice@127.0.0.1:{port}")),
            "{registrar}: our contact is not in Kamailio's location table: {location}"
        );
    }
    // Refreshed before it expires (4.5 s in), so it never drops out.
    let refreshed = ua.wait_line("refreshed ", Duration::from_secs(8));
    assert!(refreshed.contains("expires=5"), "{refreshed}");
    if let Some(kam) = kam {
        assert!(kam.location("alice").contains("Address:"));
    }
    let (status, stderr, lines) = ua.terminate_with_output(Duration::from_secs(10));
    assert!(status.success(), "{registrar}: {stderr}");
    assert!(
        lines.iter().any(|l| l.starts_with("unregistered ")),
        "{lines:?}"
    );
    if let Some(kam) = kam {
        let location = kam.location("alice");
        assert!(
            location.contains("AOR not found"),
            "{registrar}: still registered after unregister: {location}"
        );
    }
    assert!(
        !stderr.contains("Alice-pw1"),
        "the password reached the log"
    );
}

#[test]
fn register_refresh_and_unregister_against_kamailio_over_udp_and_tcp() {
    let Some(kam) = Kamailio::start("register") else {
        return;
    };
    for transport in ["udp", "tcp"] {
        register_refresh_unregister(&kam.registrar(transport), Some(&kam));
    }
}

#[test]
fn wrong_password_and_unreachable_registrars_fail_fast_with_one_clear_line() {
    let Some(kam) = Kamailio::start("failures") else {
        return;
    };
    let aor = format!("sip:bob@{REALM}");
    let start = Instant::now();
    let out = register_cmd(&aor, "not-bobs", &kam.registrar("udp"), &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("wrong username or password"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!err.contains("not-bobs"), "the password reached the log");

    // Nothing listens: UDP is silent (bounded by --timeout), TCP refuses.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (out, took) = icephone(
        &[
            "register",
            "--aor",
            &aor,
            "--password",
            "x",
            "--timeout",
            "2",
            "--registrar",
            &format!("sip:127.0.0.1:{port}"),
        ],
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("did not answer within 2 s"), "{err}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    drop(silent);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (out, took) = icephone(
        &[
            "register",
            "--aor",
            &aor,
            "--password",
            "x",
            "--registrar",
            &format!("sip:127.0.0.1:{port};transport=tcp"),
        ],
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot reach the registrar") && err.contains("refused"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Bad input: one line naming the flag.
    for (args, needle) in [
        (vec!["--aor", "alice@example.org"], "--aor"),
        (vec!["--aor", "sip:example.org"], "must name a user"),
        (
            vec![
                "--aor",
                "sip:a@b",
                "--registrar",
                "sip:127.0.0.1;transport=sctp",
            ],
            "transport",
        ),
        (
            vec![
                "--aor",
                "sip:a@b",
                "--registrar",
                "sip:no-such-host.invalid",
            ],
            "cannot resolve",
        ),
    ] {
        let mut full = vec!["register", "--password", "x", "--timeout", "2"];
        full.extend(args);
        let (out, _) = icephone(&full, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {err}");
        assert!(err.contains(needle), "{full:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{full:?}: {err}");
    }
}

#[test]
fn a_registered_ua_answers_hostile_sip_with_400_or_silence_and_keeps_serving() {
    let Some(kam) = Kamailio::start("hostile") else {
        return;
    };
    let mut ua = Background::spawn(&mut register_cmd(
        &format!("sip:carol@{REALM}"),
        "Carol-pw3",
        &kam.registrar("udp"),
        &[],
    ));
    let line = ua.wait_line("registered ", Duration::from_secs(10));
    let port = contact_port(&line);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let me = sock.local_addr().unwrap().port();
    let via = format!("Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKhostile;rport");
    let huge = "X-Big: ".to_owned() + &"a".repeat(70_000);
    // (message, expected status line prefix or None for silence)
    let corpus: Vec<(String, Option<&str>)> = vec![
        ("\u{0}\u{1}garbage\r\n\r\n".into(), None),
        ("INVITE\r\n\r\n".into(), None),
        ("OPTIONS sip:carol@127.0.0.1 SIP/3.0\r\n\r\n".into(), None),
        (
            format!("OPTIONS sip:carol@127.0.0.1 SIP/2.0\r\n{via}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"),
            Some("SIP/2.0 400"),
        ),
        (
            format!("OPTIONS sip:carol@127.0.0.1 SIP/2.0\r\n{via}\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:carol@127.0.0.1>\r\nCall-ID: h1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 999\r\n\r\n"),
            None,
        ),
        (
            format!("FOO sip:carol@127.0.0.1 SIP/2.0\r\n{via}1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:carol@127.0.0.1>\r\nCall-ID: h2\r\nCSeq: 1 FOO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
            Some("SIP/2.0 501"),
        ),
        (
            format!("MESSAGE sip:carol@127.0.0.1 SIP/2.0\r\n{via}2\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:carol@127.0.0.1>\r\nCall-ID: h3\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
            Some("SIP/2.0 405"),
        ),
        (
            format!("BYE sip:carol@127.0.0.1 SIP/2.0\r\n{via}3\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:carol@127.0.0.1>;tag=2\r\nCall-ID: h4\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
            Some("SIP/2.0 481"),
        ),
        (format!("OPTIONS sip:carol@127.0.0.1 SIP/2.0\r\n{via}4\r\n{huge}\r\n\r\n"), None),
        ("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnobody\r\nContent-Length: 0\r\n\r\n".into(), None),
    ];
    let mut buf = vec![0u8; 65_536];
    for (message, expect) in &corpus {
        // A datagram over 64 KiB cannot be sent: that one goes truncated.
        let bytes = &message.as_bytes()[..message.len().min(65_000)];
        sock.send_to(bytes, ("127.0.0.1", port)).unwrap();
        let answer = sock
            .recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).to_string());
        match (expect, &answer) {
            (Some(prefix), Some(a)) => {
                assert!(a.starts_with(prefix), "{message:.80?} got {a:.200}")
            }
            (Some(prefix), None) => panic!("{message:.80?}: no answer, expected {prefix}"),
            (None, Some(a)) => panic!("{message:.80?}: expected silence, got {a:.200}"),
            (None, None) => {}
        }
    }
    // Still serving: a well-formed OPTIONS gets 200 with Allow.
    sock.send_to(
        options_request(me, "sip:carol@127.0.0.1").as_bytes(),
        ("127.0.0.1", port),
    )
    .unwrap();
    let n = sock.recv(&mut buf).expect("the UA stopped answering");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(
        answer.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS"),
        "{answer}"
    );
    let (status, stderr) = ua.terminate(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
}

/// `icephone call` to a `register --auto-answer` UA, both through
/// Kamailio (which challenges the INVITE with 407 and Record-Routes):
/// INVITE, 180, 200, ACK, then BYE from the caller.
/// With audio both ways at once: alice's microphone is a 440 Hz tone,
/// bob's an 880 Hz one, and each records what it hears.
fn call_through(registrar_of_caller: &str, registrar_of_callee: &str, kam: Option<&Kamailio>) {
    call_with(
        registrar_of_caller,
        registrar_of_callee,
        kam,
        &[],
        &[],
        "host",
    );
}

/// As [`call_through`], with more flags for the callee (e.g. its codecs).
/// `pair_type`: the candidate type both ends must select (`host`, `relay`),
/// with the caller's way to its TURN server after a slash (`relay/tcp`).
fn call_with(
    registrar_of_caller: &str,
    registrar_of_callee: &str,
    kam: Option<&Kamailio>,
    callee_flags: &[&str],
    caller_flags: &[&str],
    pair_type: &str,
) {
    let (pair_type, relay_transport) = pair_type.split_once('/').unwrap_or((pair_type, "udp"));
    // Tests run in parallel in one process: each call its own folder.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("icephone-call-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let alice_hears = dir.join("alice.wav");
    let bob_hears = dir.join("bob.wav");
    let bob_speaker = format!("file:{}", bob_hears.display());
    let bob_report = dir.join("bob-{call}.json").display().to_string();
    let mut flags = vec![
        "--auto-answer",
        "--mic",
        "tone:880",
        "--speaker",
        &bob_speaker,
        "--report",
        &bob_report,
    ];
    flags.extend_from_slice(callee_flags);
    let mut bob = Background::spawn(&mut register_cmd(
        &format!("sip:bob@{REALM}"),
        "Bob-pw2",
        registrar_of_callee,
        &flags,
    ));
    bob.wait_line("registered ", Duration::from_secs(10));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_icephone"));
    cmd.args([
        "call",
        &format!("sip:bob@{REALM}"),
        "--aor",
        &format!("sip:alice@{REALM}"),
    ])
    .args([
        "--password",
        "Alice-pw1",
        "--registrar",
        registrar_of_caller,
    ])
    .args(["--hangup-after", "1.5", "--mic", "tone:440"])
    .arg("--speaker")
    .arg(format!("file:{}", alice_hears.display()))
    .arg("--report")
    .arg(dir.join("report.json"))
    .args(caller_flags);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::wait_bounded(child, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "180 Ringing",
        "answered after",
        "ice connected in",
        "call ended: hung up here",
        "rtp sent",
        "unregistered",
    ] {
        assert!(stdout.contains(line), "no {line:?} in {stdout}");
    }
    // ICE ran over the addresses the SDP carried, and both ends selected
    // the same pair: "ice connected in N ms: host A -> host B".
    let pair = |line: &str| -> (String, String) {
        let rest = line.split(": ").nth(1).unwrap_or_default();
        let (l, r) = rest.split_once(" -> ").unwrap_or_default();
        (l.to_owned(), r.to_owned())
    };
    let ours = stdout
        .lines()
        .find(|l| l.starts_with("ice connected in"))
        .map(pair)
        .unwrap();
    assert!(
        ours.0.starts_with(&format!("{pair_type} 127.0.0.1:")),
        "{ours:?}"
    );
    let bob_lines = bob.wait_lines(
        &["call 1 confirmed", "call 1 ice connected in"],
        Duration::from_secs(10),
    );
    let theirs = pair(&bob_lines[1]);
    assert_eq!(ours, (theirs.1, theirs.0), "{stdout}");
    bob.wait_line(
        "call 1 ended: the other side hung up",
        Duration::from_secs(5),
    );
    let bob_rtp = bob.wait_line("call 1 rtp sent", Duration::from_secs(5));
    // Keys alice sent (RFC 4733) arrive once each, in order.
    if let Some(i) = caller_flags.iter().position(|f| *f == "--dtmf") {
        let keys = caller_flags[i + 1];
        assert!(
            bob_rtp.ends_with(&format!("dtmf received {keys}")),
            "{bob_rtp}"
        );
    }
    let (status, stderr) = bob.terminate(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    let alice_rtp = stdout.lines().find(|l| l.starts_with("rtp sent")).unwrap();
    for line in [alice_rtp, bob_rtp.trim_start_matches("call 1 ")] {
        // "rtp sent N received M lost L jitter J ms first audio after X ms"
        let w: Vec<&str> = line.split_whitespace().collect();
        let received: u64 = w[4].parse().unwrap();
        let lost: i64 = w[6].parse().unwrap();
        assert!(received >= 50, "about 75 packets in 1.5 s: {line}");
        assert!(lost <= 2, "loopback loses nothing: {line}");
    }
    // Each side hears the other's tone, not its own, after a short delay.
    for (file, tone, other) in [(&alice_hears, 880.0, 440.0), (&bob_hears, 440.0, 880.0)] {
        let samples = common::read_wav(file);
        assert!(
            samples.len() >= 48_000,
            "{} holds {} samples",
            file.display(),
            samples.len()
        );
        // Frame by frame (20 ms) over the call's middle 80 %: the other
        // side's tone in nearly all of them — a loaded CI machine may cost
        // a concealed frame or two, not more — and never our own.
        let body = &samples[samples.len() / 10..samples.len() * 9 / 10];
        let frames: Vec<&[i16]> = body.chunks_exact(960).collect();
        let clear = frames.iter().filter(|f| tone_level(f, tone) >= 0.5).count();
        assert!(
            clear * 100 >= frames.len() * 85,
            "{}: {tone} Hz clear in {clear} of {} frames",
            file.display(),
            frames.len()
        );
        assert!(
            tone_level(body, other) < 0.05,
            "{}: own tone heard",
            file.display()
        );
        let onset = tone_onset(&samples, tone, 480).expect("the tone starts");
        // From the speaker's first frame: the jitter buffer's fill, the
        // codec's look-ahead and the network; generous for a loaded CI.
        assert!(
            onset < 48_000 / 2,
            "{}: tone only after {} ms",
            file.display(),
            onset / 48
        );
    }
    check_report(&dir.join("report.json"), &ours, pair_type, relay_transport);
    // The callee's report of the same call: the same pair, seen from there.
    let text = std::fs::read_to_string(dir.join("bob-1.json")).expect("bob's report");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sel = &r["ice"]["selected_pair"];
    let seen = (
        format!(
            "{} {}",
            sel["remote"]["type"].as_str().unwrap(),
            sel["remote"]["address"].as_str().unwrap()
        ),
        format!(
            "{} {}",
            sel["local"]["type"].as_str().unwrap(),
            sel["local"]["address"].as_str().unwrap()
        ),
    );
    assert_eq!(seen, ours, "{text}");
    assert!(
        r["rtp"]["packets_received"].as_u64().unwrap() >= 50,
        "{text}"
    );
    let steps: Vec<&str> = r["sip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["message"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["INVITE", "180 Ringing", "200 OK", "BYE"], "{text}");
    let _ = std::fs::remove_dir_all(dir);
    if let Some(kam) = kam {
        assert!(
            !kam.location("bob").contains("Address:"),
            "bob still registered"
        );
    }
}

/// The call report's stable keys hold what the call did.
fn check_report(path: &Path, pair: &(String, String), pair_type: &str, relay_transport: &str) {
    let text = std::fs::read_to_string(path).expect("the report was written");
    let r: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    let sel = &r["ice"]["selected_pair"];
    assert_eq!(sel["local"]["type"], pair_type, "{text}");
    if pair_type == "relay" {
        assert_eq!(
            sel["local"]["relay"]["transport"], relay_transport,
            "{text}"
        );
    }
    assert_eq!(sel["remote"]["type"], pair_type, "{text}");
    assert_eq!(
        format!("{pair_type} {}", sel["local"]["address"].as_str().unwrap()),
        pair.0
    );
    assert_eq!(
        format!("{pair_type} {}", sel["remote"]["address"].as_str().unwrap()),
        pair.1
    );
    for key in [
        "invite_to_answer_ms",
        "answer_to_ice_connected_ms",
        "answer_to_first_audio_ms",
    ] {
        let ms = r["timing"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("no timing.{key}: {text}"));
        assert!((0.0..10_000.0).contains(&ms), "timing.{key} = {ms}");
    }
    assert!(r["rtp"]["packets_sent"].as_u64().unwrap() >= 50, "{text}");
    assert!(
        r["rtp"]["packets_received"].as_u64().unwrap() >= 50,
        "{text}"
    );
    assert!(r["rtp"]["packets_lost"].as_i64().unwrap() <= 2, "{text}");
    assert!(r["rtp"]["jitter_ms"].as_f64().is_some(), "{text}");
    let mos = r["quality"]["mos"].as_f64().unwrap();
    assert!(
        (4.0..=4.5).contains(&mos),
        "a clean loopback call: MOS {mos}"
    );
    let steps: Vec<&str> = r["sip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["INVITE", "180 Ringing", "200 OK", "ACK", "BYE"],
        "{text}"
    );
}

#[test]
fn two_uas_call_each_other_through_kamailio() {
    let Some(kam) = Kamailio::start("call") else {
        return;
    };
    call_through(&kam.registrar("udp"), &kam.registrar("udp"), Some(&kam));
    // The callee on TCP: Kamailio reaches it over its registration's
    // connection.
    call_through(&kam.registrar("udp"), &kam.registrar("tcp"), Some(&kam));

    // Nobody registered as carol: 404 from the proxy, exit 1.
    let (out, _) = icephone(
        &[
            "call",
            &format!("sip:carol@{REALM}"),
            "--aor",
            &format!("sip:alice@{REALM}"),
            "--password",
            "Alice-pw1",
            "--registrar",
            &kam.registrar("udp"),
        ],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("call ended: 404"), "{stdout}");

    // A UA without --auto-answer declines with 480.
    let mut bob = Background::spawn(&mut register_cmd(
        &format!("sip:bob@{REALM}"),
        "Bob-pw2",
        &kam.registrar("udp"),
        &[],
    ));
    bob.wait_line("registered ", Duration::from_secs(10));
    let (out, _) = icephone(
        &[
            "call",
            &format!("sip:bob@{REALM}"),
            "--aor",
            &format!("sip:alice@{REALM}"),
            "--password",
            "Alice-pw1",
            "--registrar",
            &kam.registrar("udp"),
        ],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("call ended: 480"), "{stdout}");
    bob.wait_line("incoming call 1 from sip:alice@", Duration::from_secs(5));
}

/// `icephone serve` with its SIP registrar/proxy on a free port, for
/// alice, bob and carol; killed by PID when dropped.
fn call_ends_with(serve: &Serve, callee: &str, needle: &str) {
    let (out, _) = icephone(
        &[
            "call",
            &format!("sip:{callee}@{REALM}"),
            "--aor",
            &format!("sip:alice@{REALM}"),
            "--password",
            "Alice-pw1",
            "--registrar",
            &serve.registrar("udp"),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(needle), "{stdout}");
}

#[test]
fn register_and_call_through_icephone_serve() {
    let serve = Serve::start(REALM);
    for transport in ["udp", "tcp"] {
        register_refresh_unregister(&serve.registrar(transport), None);
    }
    call_through(&serve.registrar("udp"), &serve.registrar("udp"), None);
    call_through(&serve.registrar("tcp"), &serve.registrar("tcp"), None);
    // A callee with G.711 only: the call falls back to PCMU.
    call_with(
        &serve.registrar("udp"),
        &serve.registrar("udp"),
        None,
        &["--codecs", "pcmu"],
        &["--dtmf", "159#"],
        "host",
    );
    // Bob unregistered at the end of each call: the proxy has no binding
    // (480), and nobody is called dave (404).
    call_ends_with(&serve, "bob", "call ended: 480");
    call_ends_with(&serve, "dave", "call ended: 404");

    let (out, took) = icephone(
        &[
            "register",
            "--aor",
            &format!("sip:bob@{REALM}"),
            "--password",
            "wrong",
            "--registrar",
            &serve.registrar("udp"),
        ],
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("wrong username or password"), "{err}");
    assert!(took < Duration::from_secs(5));

    let (status, log) = serve.process.terminate(Duration::from_secs(10));
    assert!(status.success(), "{log}");
    for secret in ["Alice-pw1", "Bob-pw2", "wrong"] {
        assert!(!log.contains(secret), "a password reached the log");
    }
}

#[test]
fn icephone_serve_answers_hostile_sip_with_400_or_silence_and_keeps_serving() {
    let serve = Serve::start(REALM);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let me = sock.local_addr().unwrap().port();
    let via = format!("Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKhostile;rport");
    let target = format!("sip:127.0.0.1:{}", serve.port);
    let corpus: Vec<(String, Option<&str>)> = vec![
        ("\u{0}\u{1}garbage\r\n\r\n".into(), None),
        ("REGISTER\r\n\r\n".into(), None),
        (format!("OPTIONS {target} SIP/3.0\r\n\r\n"), None),
        (
            format!("REGISTER {target} SIP/2.0\r\n{via}1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"),
            Some("SIP/2.0 400"),
        ),
        (
            format!("OPTIONS {target} SIP/2.0\r\n{via}2\r\nFrom: <sip:x@y>;tag=1\r\nTo: <{target}>\r\nCall-ID: h1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 999\r\n\r\n"),
            None,
        ),
        (
            format!("OPTIONS {target} SIP/2.0\r\n{via}3\r\n{}\r\n\r\n", "X-Big: ".to_owned() + &"a".repeat(65_000)),
            None,
        ),
        ("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnobody\r\nContent-Length: 0\r\n\r\n".into(), None),
    ];
    let mut buf = vec![0u8; 65_536];
    for (message, expect) in &corpus {
        let bytes = &message.as_bytes()[..message.len().min(65_000)];
        sock.send_to(bytes, ("127.0.0.1", serve.port)).unwrap();
        let answer = sock
            .recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).to_string());
        match (expect, &answer) {
            (Some(prefix), Some(a)) => {
                assert!(a.starts_with(prefix), "{message:.80?} got {a:.200}")
            }
            (Some(prefix), None) => panic!("{message:.80?}: no answer, expected {prefix}"),
            (None, Some(a)) => panic!("{message:.80?}: expected silence, got {a:.200}"),
            (None, None) => {}
        }
    }
    sock.send_to(
        options_request(me, &target).as_bytes(),
        ("127.0.0.1", serve.port),
    )
    .unwrap();
    let n = sock.recv(&mut buf).expect("serve stopped answering");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    // And over TCP, a stream that loses its framing is closed, the server
    // goes on.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", serve.port)).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        b"OPTIONS sip:x SIP/2.0\r\nContent-Length: nope\r\n\r\n",
    )
    .unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut tcp, &mut rest);
    sock.send_to(
        options_request(me, &target).as_bytes(),
        ("127.0.0.1", serve.port),
    )
    .unwrap();
    assert!(
        sock.recv(&mut buf).is_ok(),
        "serve stopped answering after a bad stream"
    );
}

#[test]
fn register_and_call_over_tls_through_icephone_serve() {
    let Some(certs) = common::test_certificates("sip_tls") else {
        return;
    };
    let cert = certs.join("server.pem").display().to_string();
    let key = certs.join("server.key").display().to_string();
    let ca = certs.join("ca.pem").display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_icephone"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1",
        "--port",
        "0",
        "--tls-port",
        "0",
    ])
    .args(["--sip-port", "0", "--sip-tls-port", "0", "--realm", REALM])
    .args([
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--allow-loopback-peers",
    ])
    .args(["--user", "alice:Alice-pw1", "--user", "bob:Bob-pw2"]);
    let mut serve = Background::spawn(&mut cmd);
    let line = serve.wait_line("listening ", Duration::from_secs(20));
    let turns_port = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tls="))
        .and_then(|a| a.rsplit(':').next())
        .unwrap_or_else(|| panic!("no tls= in {line:?}"))
        .to_owned();
    let port: u16 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sips="))
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no sips= in {line:?}"));
    let registrar = format!("sip:127.0.0.1:{port};transport=tls");
    let mut bob = Background::spawn(&mut register_cmd(
        &format!("sip:bob@{REALM}"),
        "Bob-pw2",
        &registrar,
        &["--auto-answer", "--ca", &ca],
    ));
    let registered = bob.wait_line("registered ", Duration::from_secs(10));
    assert!(registered.contains(";transport=tls"), "{registered}");
    // Signalling over TLS, and alice's media relayed by serve's TURN,
    // reached over TLS too (turns:, verified against the same CA).
    let report = certs.join("report.json");
    let (out, _) = icephone(
        &[
            "call",
            &format!("sip:bob@{REALM}"),
            "--aor",
            &format!("sip:alice@{REALM}"),
            "--password",
            "Alice-pw1",
            "--registrar",
            &format!("sips:127.0.0.1:{port}"),
            "--ca",
            &ca,
            "--hangup-after",
            "1",
            "--turn",
            &format!("turns:127.0.0.1:{turns_port}"),
            "--turn-user",
            "alice",
            "--turn-password",
            "Alice-pw1",
            "--ice-policy",
            "relay",
            "--mic",
            "tone:440",
            "--report",
            report.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("answered after"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let local = &r["ice"]["selected_pair"]["local"];
    assert_eq!(local["type"], "relay", "{r}");
    assert_eq!(local["relay"]["transport"], "tls", "{r}");
    assert!(r["rtp"]["packets_received"].as_u64().unwrap() >= 25, "{r}");
    bob.wait_line(
        "call 1 ended: the other side hung up",
        Duration::from_secs(5),
    );

    // Without our CA the server is not trusted: one clear line, exit 2.
    let (out, took) = icephone(
        &[
            "register",
            "--aor",
            &format!("sip:alice@{REALM}"),
            "--password",
            "Alice-pw1",
            "--registrar",
            &registrar,
        ],
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("TLS handshake") && err.contains("certificate"),
        "{err}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    let (status, stderr) = bob.terminate(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    drop(serve);
    let _ = std::fs::remove_dir_all(certs);
}

#[test]
fn register_takes_its_account_from_a_config_file() {
    let serve = Serve::start(REALM);
    let dir = std::env::temp_dir().join(format!("icephone-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("icephone.toml");
    std::fs::write(
        &file,
        format!(
            "[[account]]\naor = \"sip:carol@{REALM}\"\npassword_command = \"echo Carol-pw3\"\n\
             registrar = \"{}\"\nexpires = 120\n",
            serve.registrar("tcp")
        ),
    )
    .unwrap();
    let config = file.display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_icephone"));
    cmd.args(["register", "--config", &config]);
    let mut ua = Background::spawn(&mut cmd);
    let line = ua.wait_line("registered ", Duration::from_secs(10));
    assert!(
        line.starts_with(&format!("registered sip:carol@{REALM}")),
        "{line}"
    );
    assert!(
        line.contains(";transport=tcp") && line.contains("expires=120"),
        "{line}"
    );
    let (status, stderr) = ua.terminate(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");

    // A flag overrides its field: a wrong --password fails.
    let (out, _) = icephone(
        &["register", "--config", &config, "--password", "nope"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    // An unknown key is one line naming the file and the line.
    std::fs::write(
        &file,
        "[[account]]\naor = \"sip:carol@x\"\nregistrar_port = 5\n",
    )
    .unwrap();
    let (out, _) = icephone(&["register", "--config", &config], Duration::from_secs(20));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{config}, line 3")) && err.contains("registrar_port"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// coturn on loopback with one long-term user, `relay:Relay-pw9`; its UDP
/// and TCP port.
fn start_coturn(turnserver: &Path, dir: &Path) -> (Background, u16) {
    let turn_port = free_udp_and_tcp_port();
    let mut cmd = Command::new(turnserver);
    cmd.args(common::coturn_args(
        dir,
        "127.0.0.1",
        turn_port,
        "coturn.example",
        &["relay:Relay-pw9"],
    ))
    .arg("--allow-loopback-peers");
    let coturn = Background::spawn(&mut cmd);
    wait_for_stun(turn_port);
    (coturn, turn_port)
}

/// A relay-only call (`--ice-policy relay`): both ends offer relayed
/// candidates only, so ICE, RTP and RTCP all go through coturn, while
/// `icephone serve` is the SIP proxy. `caller_turn_query` picks how the
/// caller reaches coturn (`""` UDP, `"?transport=tcp"` TCP); the callee
/// uses UDP.
fn relay_only_call_through_coturn(test: &str, caller_turn_query: &str) {
    let Some(turnserver) = require("turnserver", test) else {
        return;
    };
    let serve = Serve::start(REALM);
    let dir = std::env::temp_dir().join(format!("icephone-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_coturn, turn_port) = start_coturn(&turnserver, &dir);
    let relay_flags = |url: String| -> Vec<String> {
        [
            "--turn",
            &url,
            "--turn-user",
            "relay",
            "--turn-password",
            "Relay-pw9",
            "--ice-policy",
            "relay",
        ]
        .map(String::from)
        .to_vec()
    };
    let callee = relay_flags(format!("turn:127.0.0.1:{turn_port}"));
    let caller = relay_flags(format!("turn:127.0.0.1:{turn_port}{caller_turn_query}"));
    let callee: Vec<&str> = callee.iter().map(String::as_str).collect();
    let caller: Vec<&str> = caller.iter().map(String::as_str).collect();
    let transport = if caller_turn_query.is_empty() {
        "relay/udp"
    } else {
        "relay/tcp"
    };
    call_with(
        &serve.registrar("udp"),
        &serve.registrar("udp"),
        None,
        &callee,
        &caller,
        transport,
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_relay_only_call_goes_through_coturn() {
    relay_only_call_through_coturn("relay_call", "");
}

/// What gets a call out of a network that lets only TCP out: the caller
/// allocates over TCP (RFC 8656 §3.1); ChannelData rides the stream.
#[test]
fn a_relay_only_call_reaches_coturn_over_tcp() {
    relay_only_call_through_coturn("relay_call_tcp", "?transport=tcp");
}

/// Polls a STUN server with Binding requests until it answers (bounded).
fn wait_for_stun(port: u16) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(b"icephone-rdy");
    let mut buf = [0u8; 512];
    for _ in 0..100 {
        let _ = sock.send_to(&request, ("127.0.0.1", port));
        if sock.recv(&mut buf).is_ok() {
            return;
        }
    }
    panic!("no STUN answer on port {port}");
}

/// Bob (auto-answer, an 880 Hz tone) registers to `serve`; alice calls
/// him with a 440 Hz tone and `flags`, recording what she hears. Returns
/// alice's stdout, bob still running, and alice's recording.
/// Bob registered with `serve`, answering every call with an 880 Hz tone.
fn bob_answering(serve: &Serve) -> Background {
    let mut bob = Background::spawn(&mut register_cmd(
        &format!("sip:bob@{REALM}"),
        "Bob-pw2",
        &serve.registrar("udp"),
        &["--auto-answer", "--mic", "tone:880"],
    ));
    bob.wait_line("registered ", Duration::from_secs(10));
    bob
}

/// `icephone call` from alice (440 Hz) to bob through `serve`.
fn alice_calls_bob_args(serve: &Serve) -> Vec<String> {
    vec![
        "call".to_owned(),
        format!("sip:bob@{REALM}"),
        "--aor".into(),
        format!("sip:alice@{REALM}"),
        "--password".into(),
        "Alice-pw1".into(),
        "--registrar".into(),
        serve.registrar("udp"),
        "--mic".into(),
        "tone:440".into(),
    ]
}

fn alice_calls_bob(serve: &Serve, test: &str, flags: &[&str]) -> (String, Background, Vec<i16>) {
    let dir = std::env::temp_dir().join(format!("icephone-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let alice_hears = dir.join("alice.wav");
    let bob = bob_answering(serve);
    let speaker = format!("file:{}", alice_hears.display());
    let mut args = alice_calls_bob_args(serve);
    args.extend(["--speaker".to_owned(), speaker]);
    args.extend(flags.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, _) = icephone(&args, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    let samples = common::read_wav(&alice_hears);
    let _ = std::fs::remove_dir_all(dir);
    (stdout, bob, samples)
}

/// Hold and resume by re-INVITE: while alice holds (`sendonly`), bob
/// answers `recvonly` and sends nothing, so what alice hears of bob's tone
/// stops for that second and comes back.
#[test]
fn hold_and_resume_stop_and_restart_the_held_side() {
    let serve = Serve::start(REALM);
    let flags = [
        "--hold-after",
        "1",
        "--resume-after",
        "2",
        "--hangup-after",
        "3",
    ];
    let (stdout, mut bob, samples) = alice_calls_bob(&serve, "hold", &flags);
    assert!(
        stdout.contains("re-INVITE answered: media now sendonly"),
        "{stdout}"
    );
    assert!(
        stdout.contains("re-INVITE answered: media now sendrecv"),
        "{stdout}"
    );
    let lines = bob.wait_lines(
        &[
            "call 1 re-INVITE: now recvonly",
            "call 1 re-INVITE: now sendrecv",
        ],
        Duration::from_secs(5),
    );
    assert_eq!(lines.len(), 2);
    let clear = |from_s: f64, to_s: f64| -> f64 {
        let a = (from_s * 48_000.0) as usize;
        let b = ((to_s * 48_000.0) as usize).min(samples.len());
        let frames: Vec<&[i16]> = samples[a..b].chunks_exact(960).collect();
        let n = frames
            .iter()
            .filter(|f| tone_level(f, 880.0) >= 0.5)
            .count();
        n as f64 / frames.len().max(1) as f64
    };
    // Seconds since alice's speaker started (about the answer).
    assert!(clear(0.3, 0.9) > 0.85, "before hold: {}", clear(0.3, 0.9));
    assert!(clear(1.3, 1.8) < 0.1, "on hold: {}", clear(1.3, 1.8));
    assert!(clear(2.3, 2.8) > 0.85, "after resume: {}", clear(2.3, 2.8));
    let (status, stderr) = bob.terminate(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
}

/// An ICE restart mid-call (re-INVITE with new credentials): both sides
/// check again and select a pair, and the audio does not stop meanwhile —
/// media stays on the old pair until the new one is chosen.
#[test]
fn an_ice_restart_mid_call_leaves_no_gap_in_the_audio() {
    let serve = Serve::start(REALM);
    let flags = ["--ice-restart-after", "1", "--hangup-after", "2.5"];
    let (stdout, mut bob, samples) = alice_calls_bob(&serve, "restart", &flags);
    assert!(
        stdout.contains("ice restarted: ice connected in"),
        "{stdout}"
    );
    bob.wait_line(
        "call 1 ice restarted: ice connected in",
        Duration::from_secs(10),
    );
    // After the first 0.3 s, no more than 5 frames (100 ms) in a row
    // without bob's tone.
    let mut silent_run = 0;
    let mut longest = 0;
    for frame in samples[48_000 * 3 / 10..].chunks_exact(960) {
        if tone_level(frame, 880.0) >= 0.5 {
            silent_run = 0;
        } else {
            silent_run += 1;
            longest = longest.max(silent_run);
        }
    }
    assert!(longest <= 5, "a gap of {longest} frames around the restart");
    let (status, stderr) = bob.terminate(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
}

/// A peer that does not do ICE (`--ice-policy none` offers none): both
/// sides fall back to plain RTP to the SDP's address, and audio flows.
#[test]
fn a_call_without_ice_sends_plain_rtp_both_ways() {
    let serve = Serve::start(REALM);
    let flags = ["--ice-policy", "none", "--hangup-after", "1.5"];
    let (stdout, mut bob, samples) = alice_calls_bob(&serve, "no_ice", &flags);
    assert!(
        stdout.contains("no ICE at the far end: plain RTP 127.0.0.1:"),
        "{stdout}"
    );
    bob.wait_line(
        "call 1 no ICE at the far end: plain RTP 127.0.0.1:",
        Duration::from_secs(5),
    );
    let frames: Vec<&[i16]> = samples.chunks_exact(960).collect();
    let clear = frames
        .iter()
        .filter(|f| tone_level(f, 880.0) >= 0.5)
        .count();
    assert!(
        clear >= 50,
        "bob's tone in {clear} of {} frames",
        frames.len()
    );
    let (status, stderr) = bob.terminate(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
}

/// The caller vanishes mid-call (killed: no BYE). The callee's media stops,
/// consent goes unanswered, and no restart comes: it hangs up by itself
/// once the path has stayed broken for 20 s (`call::recovery::GIVE_UP`),
/// instead of holding the call open for ever.
#[test]
fn a_callee_whose_caller_vanished_hangs_up_by_itself() {
    let serve = Serve::start(REALM);
    let mut bob = bob_answering(&serve);
    let mut alice = Background::spawn(
        Command::new(env!("CARGO_BIN_EXE_icephone"))
            .args(alice_calls_bob_args(&serve))
            .args(["--hangup-after", "120"]),
    );
    alice.wait_line("ice connected", Duration::from_secs(15));
    bob.wait_line("call 1 ice connected", Duration::from_secs(5));
    let _ = alice.child.kill();
    let _ = alice.child.wait();
    let killed = Instant::now();
    bob.wait_line("call 1 ice lost the path", Duration::from_secs(10));
    let lost_after = killed.elapsed();
    bob.wait_line(
        "call 1 the media path did not come back in 20 s: hanging up",
        Duration::from_secs(25),
    );
    let gave_up_after = killed.elapsed();
    assert!(
        lost_after < Duration::from_secs(4),
        "the silence took {lost_after:?} to notice"
    );
    assert!(
        gave_up_after >= Duration::from_secs(20),
        "gave up after {gave_up_after:?}"
    );
    let (status, _) = bob.terminate(Duration::from_secs(40));
    assert!(status.success());
}
