//! Ring 2: the real `icephone nat-check` binary on loopback, against our
//! own RFC 5780 Binding server, against coturn, against a silent server, and
//! with bad arguments.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use icephone::stun::BindingServer;

mod common;
use common::{icephone, json, which};

/// Runs `nat-check --json` against `target`, which must succeed.
fn nat_check_json(target: &str) -> serde_json::Value {
    let (out, _) = icephone(
        &["nat-check", "--stun", target, "--json"],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

/// Our Binding server on real sockets. With `rfc5780`, it owns 127.0.0.1
/// and 127.0.0.2, each on two ports.
struct LoopbackStunServer {
    primary: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl LoopbackStunServer {
    fn start(rfc5780: bool) -> Self {
        let (sockets, primary, alternate) = loop {
            if let Some(found) = bind_server_sockets(rfc5780) {
                break found;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || serve(sockets, primary, alternate, flag));
        LoopbackStunServer {
            primary,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LoopbackStunServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Bound = (Vec<UdpSocket>, SocketAddr, Option<SocketAddr>);

fn bind_server_sockets(rfc5780: bool) -> Option<Bound> {
    let first = UdpSocket::bind("127.0.0.1:0").ok()?;
    let primary = first.local_addr().ok()?;
    if !rfc5780 {
        return Some((vec![first], primary, None));
    }
    let second = UdpSocket::bind("127.0.0.1:0").ok()?;
    let alt_port = second.local_addr().ok()?.port();
    // The same two ports on the second address; retry if they are taken.
    let third = UdpSocket::bind(("127.0.0.2", primary.port())).ok()?;
    let fourth = UdpSocket::bind(("127.0.0.2", alt_port)).ok()?;
    let alternate: SocketAddr = format!("127.0.0.2:{alt_port}").parse().unwrap();
    Some((vec![first, second, third, fourth], primary, Some(alternate)))
}

fn serve(
    sockets: Vec<UdpSocket>,
    primary: SocketAddr,
    alternate: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
) {
    let mut server = BindingServer::new(primary, alternate, None);
    for s in &sockets {
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    }
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        for s in &sockets {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let local = s.local_addr().unwrap();
            if let Some(t) = server.handle(local, from, &buf[..n]) {
                let out = sockets
                    .iter()
                    .find(|o| o.local_addr().unwrap() == t.from)
                    .expect("the server answers from an address it owns");
                let _ = out.send_to(&t.data, t.to);
            }
        }
    }
}

#[test]
fn reports_no_nat_and_open_filtering_on_loopback() {
    let server = LoopbackStunServer::start(true);
    let target = server.primary.to_string();
    let j = nat_check_json(&target);
    assert_eq!(j["rfc5780"], true);
    assert_eq!(j["mapping"], "no-nat");
    assert_eq!(j["filtering"], "endpoint-independent");
    assert_eq!(j["relay_needed"], false);
    assert_eq!(
        j["mapped"], j["local"],
        "on loopback the mapped address is ours"
    );
    assert!(j["other_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.2:"));
    // RTT is left out after a retransmission (Karn's rule), so only bound it.
    assert!(j["rtt_ms"].is_null() || j["rtt_ms"].as_f64().unwrap() < 5000.0);

    let (text, _) = icephone(&["nat-check", "--stun", &target], Duration::from_secs(30));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("not behind a NAT"), "{text}");
}

#[test]
fn a_server_without_rfc5780_still_gives_the_public_address() {
    let server = LoopbackStunServer::start(false);
    let target = format!("stun:{}", server.primary);
    let j = nat_check_json(&target);
    assert_eq!(j["rfc5780"], false);
    assert!(j["other_address"].is_null());
    // Test I alone proves there is no NAT (mapped == local); the filtering
    // tests need OTHER-ADDRESS and are not run.
    assert_eq!(j["mapping"], "no-nat");
    assert!(j["filtering"].is_null());
    assert_eq!(j["mapped"], j["local"]);
}

#[test]
fn a_silent_server_fails_clearly_within_the_timeout() {
    // Bound but never read: datagrams vanish, like a firewalled server.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap().to_string();
    let (out, took) = icephone(
        &["nat-check", "--stun", &target, "--timeout", "8"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer from STUN server"), "{err}");
    // Discovery gives up after 1.6 s of silence; the rest is slack for a
    // loaded machine. The --timeout deadline is only a backstop.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert!(out.stdout.is_empty(), "no report on failure");
}

#[test]
fn bad_arguments_get_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["nat-check", "--stun", "turn:127.0.0.1"],
            "unsupported scheme",
        ),
        (&["nat-check", "--stun", "127.0.0.1:99999"], "invalid port"),
        (&["nat-check", "--stun", ""], "empty server address"),
        (
            &["nat-check", "--stun", "no-such-host.invalid"],
            "could not resolve",
        ),
    ];
    for (args, expected) in cases {
        let (out, _) = icephone(args, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    let (out, _) = icephone(&["nat-check"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2), "clap: missing --stun");
}

/// coturn, the reference server, with RFC 5780 on two loopback addresses.
#[test]
fn interop_with_coturn_rfc5780() {
    let Some(turnserver) = which("turnserver") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "coturn is missing in CI: scripts/setup installs it"
        );
        eprintln!("SKIPPED interop_with_coturn_rfc5780: coturn not installed (run scripts/setup)");
        return;
    };
    let port = free_port_pair();
    let dir = std::env::temp_dir().join(format!("icephone-coturn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut coturn = Command::new(turnserver)
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--listening-ip=127.0.0.2",
            &format!("--listening-port={port}"),
            &format!("--alt-listening-port={}", port + 1),
            "--stun-only",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-stdout-log",
            &format!("--log-file={}", dir.join("coturn.log").display()),
            &format!("--pidfile={}", dir.join("coturn.pid").display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coturn");
    let target = format!("127.0.0.1:{port}");
    // coturn needs a moment to bind; nat-check retransmits, so just retry.
    let mut last = None;
    for _ in 0..20 {
        let (out, _) = icephone(
            &["nat-check", "--stun", &target, "--json", "--timeout", "5"],
            Duration::from_secs(30),
        );
        if out.status.success() {
            last = Some(out);
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    let _ = coturn.kill();
    let _ = coturn.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let out = last.expect("nat-check never succeeded against coturn");
    let j = json(&out);
    assert_eq!(j["rfc5780"], true, "{j}");
    assert_eq!(j["other_address"], format!("127.0.0.2:{}", port + 1));
    assert_eq!(j["mapping"], "no-nat");
    assert_eq!(j["filtering"], "endpoint-independent");
}

/// Two consecutive free UDP ports on both loopback addresses.
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        if port == u16::MAX {
            continue;
        }
        let all_free = ["127.0.0.1", "127.0.0.2"].iter().all(|ip| {
            UdpSocket::bind((*ip, port)).is_ok() && UdpSocket::bind((*ip, port + 1)).is_ok()
        });
        if all_free {
            return port;
        }
    }
    panic!("no free port pair on loopback");
}
