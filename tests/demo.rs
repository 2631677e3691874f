//! Ring 2: `icephone demo` — serve in-process, two real phones, a call with
//! speech — ends with a summary whose checks hold, directly and through
//! the relay.

use std::process::{Command, Stdio};

fn demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_icephone"))
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run icephone demo");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK: the call worked end to end."),
        "{stdout}"
    );
    for line in [
        "serve  registrar and proxy on sip:127.0.0.1:",
        "bob    registered sip:bob@icephone.demo",
        "alice  answered after",
        "bob heard alice's speech: correlation",
        "alice heard bob's 660 Hz tone",
    ] {
        assert!(stdout.contains(line), "no {line:?} in {stdout}");
    }
    stdout
}

fn selected(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with("selected "))
        .unwrap_or_else(|| panic!("no selected pair: {stdout}"))
}

#[test]
fn the_demo_calls_with_speech_and_checks_what_arrived() {
    let dir = std::env::temp_dir().join(format!("icephone-demo-test-{}", std::process::id()));
    let stdout = demo(&["--out", dir.to_str().unwrap()]);
    let line = selected(&stdout);
    assert!(
        line.contains("host 127.0.0.1:") && !line.contains("relay"),
        "{line}"
    );
    // Both sides gathered a relayed candidate from the in-process TURN.
    assert_eq!(
        stdout.matches("(TURN/udp via 127.0.0.1:").count(),
        2,
        "{stdout}"
    );
    for file in ["alice.json", "bob.json", "bob-heard.wav", "alice-heard.wav"] {
        assert!(dir.join(file).is_file(), "no {file}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_demo_with_relay_goes_through_turn() {
    let dir = std::env::temp_dir().join(format!("icephone-demo-relay-{}", std::process::id()));
    let stdout = demo(&["--relay", "--out", dir.to_str().unwrap()]);
    let line = selected(&stdout);
    assert!(line.starts_with("selected     relay 127.0.0.1:"), "{line}");
    assert!(line.contains("<-> relay 127.0.0.1:"), "{line}");
    assert!(!stdout.contains("candidates   alice host"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}
