//! Ring 2: `icephone demo` — two agents through the real driver and real
//! UDP sockets on loopback — connects and says so.

use std::process::{Command, Stdio};

#[test]
fn demo_connects_two_agents_over_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_icephone"))
        .args(["demo", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run icephone demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK: both agents connected."), "{stdout}");
    assert_eq!(stdout.matches("typ host").count(), 2, "{stdout}");
    for who in ["alice", "bob"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{who}: selected pair host 127.0.0.1:")))
            .unwrap_or_else(|| panic!("no selected pair for {who}: {stdout}"));
        assert!(line.contains("-> host 127.0.0.1:"), "{line}");
    }
}
