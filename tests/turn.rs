//! Ring 2: TURN on loopback with real processes. `icephone serve` against
//! `icephone turn-probe` and against coturn's own clients; our client
//! (`turn-probe`) against coturn's server. Every server gets an ephemeral
//! port and is killed by PID when the test ends.

use std::process::Command;
use std::time::Duration;

mod common;
use common::{icephone, json, require, test_certificates, Background};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-Pa55";

/// `icephone serve` on 127.0.0.1 with a free port; returns the guard and port.
fn start_serve(extra: &[&str]) -> (Background, u16) {
    let (server, line) = start_serve_line(extra);
    let port = port_in(&line, "udp=").unwrap_or_else(|| panic!("no port in {line:?}"));
    (server, port)
}

/// The port of the first address after `key` in serve's
/// "listening udp=127.0.0.1:P tcp=127.0.0.1:P [tls=127.0.0.1:Q]" line.
fn port_in(line: &str, key: &str) -> Option<u16> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|a| a.split(',').next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
}

fn start_serve_line(extra: &[&str]) -> (Background, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_icephone"));
    cmd.args([
        "--log",
        "info",
        "serve",
        "--listen",
        "127.0.0.1",
        "--port",
        "0",
        "--realm",
        "test.example",
        "--user",
        &format!("{USER}:{PASSWORD}"),
        "--allow-loopback-peers",
        "--sip-port",
        "0",
        "--sip-tls-port",
        "0",
    ])
    .args(extra);
    let mut server = Background::spawn(&mut cmd);
    let line = server.wait_line("listening ", Duration::from_secs(20));
    (server, line)
}

fn probe(url: &str, user: &str, password: &str) -> (std::process::Output, serde_json::Value) {
    probe_with(url, user, password, &[])
}

fn probe_with(
    url: &str,
    user: &str,
    password: &str,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let mut args = vec![
        "turn-probe",
        "--turn",
        url,
        "--user",
        user,
        "--password",
        password,
        "--json",
    ];
    args.extend_from_slice(extra);
    let (out, _) = icephone(&args, Duration::from_secs(40));
    let j = json(&out);
    (out, j)
}

fn assert_probe_ok(url: &str, j: &serde_json::Value) {
    assert_eq!(j["sent"], 5, "{url}: {j}");
    assert_eq!(j["received"], 5, "{url}: {j}");
    assert_eq!(j["released"], true, "{url}: {j}");
    assert!(
        j["relayed"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:")),
        "{j}"
    );
    assert!(j["lifetime_s"].as_u64().is_some_and(|l| l > 0), "{j}");
    // One datagram went as a Send indication, the rest on the channel.
    assert!(j["sent_as_indication"].as_u64() >= Some(1), "{j}");
    assert!(j["sent_as_channel_data"].as_u64() >= Some(4), "{j}");
    assert_eq!(j["rtt_ms"].as_array().map(Vec::len), Some(5), "{j}");
}

#[test]
fn turn_probe_against_icephone_serve_over_udp_and_tcp() {
    let (server, port) = start_serve(&[]);
    for url in [
        format!("turn:127.0.0.1:{port}"),
        format!("turn:127.0.0.1:{port}?transport=tcp"),
    ] {
        let (out, j) = probe(&url, USER, PASSWORD);
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_probe_ok(&url, &j);
        assert_eq!(
            j["transport"],
            if url.contains("tcp") { "tcp" } else { "udp" }
        );
    }
    let (status, log) = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "serve exit {status:?}: {log}");
    // One line per allocation, created and ended, and never a secret.
    assert_eq!(log.matches("allocation created").count(), 2, "{log}");
    assert_eq!(log.matches("allocation ended").count(), 2, "{log}");
    assert!(!log.contains(PASSWORD), "the password reached the log");
}

#[test]
fn wrong_password_and_unreachable_server_are_clear_errors() {
    let (_server, port) = start_serve(&[]);
    let url = format!("turn:127.0.0.1:{port}");
    let (out, j) = probe(&url, USER, "wrong");
    assert_eq!(out.status.code(), Some(2));
    let err = j["error"].as_str().unwrap_or_default();
    assert!(err.contains("password") && err.contains("401"), "{j}");

    // Nothing listens on the port next to it over TCP: refused at once.
    let closed = format!("turn:127.0.0.1:{}?transport=tcp", port + 1);
    let (out, j) = probe(&closed, USER, PASSWORD);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        j["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot reach"),
        "{j}"
    );

    let (out, _) = icephone(
        &[
            "turn-probe",
            "--turn",
            "stun:127.0.0.1",
            "--user",
            "a",
            "--password",
            "b",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheme"));
}

#[test]
fn quota_reached_is_reported() {
    let (_server, port) = start_serve(&["--user-quota", "0"]);
    let (out, j) = probe(&format!("turn:127.0.0.1:{port}"), USER, PASSWORD);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        j["error"].as_str().unwrap_or_default().contains("486"),
        "{j}"
    );
}

#[test]
fn serve_refuses_bad_arguments() {
    for args in [
        vec!["serve", "--user", "no-colon"],
        vec!["serve", "--listen", "0.0.0.0", "--port", "0"],
        vec!["serve", "--listen", "not-an-ip"],
    ] {
        let (out, _) = icephone(&args, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.is_empty() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn coturn_clients_against_icephone_serve() {
    let (Some(stunclient), Some(uclient)) = (
        require(
            "turnutils_stunclient",
            "coturn_clients_against_icephone_serve",
        ),
        require("turnutils_uclient", "coturn_clients_against_icephone_serve"),
    ) else {
        return;
    };
    let (server, port) = start_serve(&[]);
    let port_s = port.to_string();

    let out = Command::new(&stunclient)
        .args(["-p", &port_s, "127.0.0.1"])
        .output()
        .expect("run turnutils_stunclient");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stunclient: {text}");
    assert!(
        text.contains("UDP reflexive addr: 127.0.0.1"),
        "stunclient: {text}"
    );

    // Client-to-client through two relays, over UDP and TCP, with channels
    // (the default) and with Send/Data indications (-s). Without -c uclient
    // also allocates for RTCP, with EVEN-PORT reservations and their
    // RESERVATION-TOKENs.
    for flags in [vec!["-y"], vec!["-y", "-t"], vec!["-y", "-c", "-s"]] {
        let mut cmd = Command::new(&uclient);
        cmd.args(&flags).args([
            "-u",
            USER,
            "-w",
            PASSWORD,
            "-p",
            &port_s,
            "-n",
            "20",
            "-l",
            "160",
            "-m",
            "2",
            "127.0.0.1",
        ]);
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run turnutils_uclient");
        let out = common::wait_bounded(child, Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "uclient {flags:?}: {text}");
        assert!(
            text.contains("Total lost packets 0 (0.000000%)"),
            "uclient {flags:?} lost packets: {text}"
        );
        assert!(
            !text.to_lowercase().contains("error"),
            "uclient {flags:?}: {text}"
        );
    }
    let (status, log) = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "{log}");
}

/// coturn on loopback with long-term credentials, plain UDP and TCP only;
/// killed by PID on drop.
fn start_coturn(test: &str) -> Option<(Background, u16, std::path::PathBuf)> {
    start_coturn_with(test, &["--no-tls".into(), "--no-dtls".into()])
}

fn start_coturn_with(
    test: &str,
    extra: &[String],
) -> Option<(Background, u16, std::path::PathBuf)> {
    let turnserver = require("turnserver", test)?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let dir = std::env::temp_dir().join(format!("icephone-coturn-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(turnserver);
    cmd.args([
        "-n",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        &format!("--listening-port={port}"),
        "--lt-cred-mech",
        "--realm=coturn.example",
        &format!("--user={USER}:{PASSWORD}"),
        "--allow-loopback-peers",
        "--no-cli",
        "--no-stdout-log",
        &format!("--log-file={}", dir.join("coturn.log").display()),
        &format!("--pidfile={}", dir.join("coturn.pid").display()),
    ])
    .args(extra);
    Some((Background::spawn(&mut cmd), port, dir))
}

#[test]
fn our_client_against_coturn_over_udp_and_tcp() {
    let Some((coturn, port, dir)) = start_coturn("our_client_against_coturn") else {
        return;
    };
    for url in [
        format!("turn:127.0.0.1:{port}"),
        format!("turn:127.0.0.1:{port}?transport=tcp"),
    ] {
        // coturn needs a moment to bind; the first tries may find nobody.
        let mut last = None;
        for _ in 0..20 {
            let (out, j) = probe(&url, USER, PASSWORD);
            if out.status.success() {
                last = Some(j);
                break;
            }
            last = Some(j);
            std::thread::sleep(Duration::from_millis(250));
        }
        let j = last.unwrap();
        assert_probe_ok(&url, &j);
    }
    // A wrong password against coturn is the same clear error.
    let (out, j) = probe(&format!("turn:127.0.0.1:{port}"), USER, "nope");
    assert_eq!(out.status.code(), Some(2), "{j}");
    assert!(
        j["error"].as_str().unwrap_or_default().contains("password"),
        "{j}"
    );
    drop(coturn);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn turn_probe_over_tls_against_icephone_serve() {
    let Some(certs) = test_certificates("probe_tls_serve") else {
        return;
    };
    let cert = certs.join("server.pem").display().to_string();
    let key = certs.join("server.key").display().to_string();
    let ca = certs.join("ca.pem").display().to_string();
    let (server, line) =
        start_serve_line(&["--tls-cert", &cert, "--tls-key", &key, "--tls-port", "0"]);
    let tls_port = port_in(&line, "tls=").unwrap_or_else(|| panic!("no tls= in {line:?}"));

    let url = format!("turns:127.0.0.1:{tls_port}");
    let (out, j) = probe_with(&url, USER, PASSWORD, &["--ca", &ca]);
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_probe_ok(&url, &j);
    assert_eq!(j["transport"], "tls", "{j}");

    // Without our CA the server is not trusted: a clear error, exit 2.
    let (out, j) = probe(&url, USER, PASSWORD);
    assert_eq!(out.status.code(), Some(2), "{j}");
    let err = j["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("TLS handshake failed") && err.contains("certificate"),
        "{j}"
    );
    // A CA file that does not exist is named.
    let (out, j) = probe_with(&url, USER, PASSWORD, &["--ca", "/nonexistent/ca.pem"]);
    assert_eq!(out.status.code(), Some(2), "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap_or_default()
            .contains("/nonexistent/ca.pem"),
        "{j}"
    );

    // coturn's client over TLS (-S -t), through two relays, with channels.
    if let Some(uclient) = require("turnutils_uclient", "probe_tls_serve") {
        let child = Command::new(uclient)
            .args(["-y", "-t", "-S", "-u", USER, "-w", PASSWORD])
            .args([
                "-p",
                &tls_port.to_string(),
                "-n",
                "20",
                "-l",
                "160",
                "-m",
                "2",
                "127.0.0.1",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run turnutils_uclient");
        let out = common::wait_bounded(child, Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "uclient -S -t: {text}");
        assert!(
            text.contains("Total lost packets 0 (0.000000%)"),
            "uclient -S -t: {text}"
        );
    }

    let (status, log) = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert!(log.contains("transport=Tls"), "{log}");
    assert!(!log.contains(PASSWORD), "the password reached the log");
    let _ = std::fs::remove_dir_all(certs);
}

#[test]
fn serve_refuses_unusable_tls_files() {
    let (out, _) = icephone(
        &[
            "serve",
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
    // A certificate without its key is a usage error.
    let (out, _) = icephone(
        &[
            "serve",
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-cert",
            "/tmp/c.pem",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

#[test]
fn our_client_against_coturn_over_tls() {
    let Some(certs) = test_certificates("client_coturn_tls") else {
        return;
    };
    let cert = certs.join("server.pem").display().to_string();
    let key = certs.join("server.key").display().to_string();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let Some((coturn, _port, dir)) = start_coturn_with(
        "client_coturn_tls",
        &[
            format!("--cert={cert}"),
            format!("--pkey={key}"),
            format!("--tls-listening-port={tls_port}"),
            "--no-dtls".into(),
        ],
    ) else {
        return;
    };
    let url = format!("turns:127.0.0.1:{tls_port}");
    let ca = certs.join("ca.pem").display().to_string();
    let mut last = None;
    for _ in 0..20 {
        let (out, j) = probe_with(&url, USER, PASSWORD, &["--ca", &ca]);
        let ok = out.status.success();
        last = Some(j);
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let j = last.unwrap();
    assert_probe_ok(&url, &j);
    assert_eq!(j["transport"], "tls", "{j}");
    drop(coturn);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(certs);
}
