//! Ring 2: `icephone demo` — serve in-process, two real phones, a call with
//! speech — ends with a summary whose checks hold, directly and through
//! the relay.

mod common;

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
    report_renders_in_chromium(&dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// `icephone report --html` on the demo's real report: the page loads in
/// headless Chromium and its script runs to the end without an error.
fn report_renders_in_chromium(dir: &std::path::Path) {
    let html = dir.join("alice.html");
    let out = Command::new(env!("CARGO_BIN_EXE_icephone"))
        .arg("report")
        .arg(dir.join("alice.json"))
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    for part in ["<svg", "INVITE", "180 Ringing", "host 127.0.0.1:"] {
        assert!(page.contains(part), "no {part:?} in the page");
    }
    // Not a report: one clear line, exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_icephone"))
        .arg("report")
        .arg(dir.join("bob-heard.wav"))
        .args(["--html", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let Some(chromium) = common::require("chromium", "report_html") else {
        return;
    };
    let profile = dir.join("chromium-profile");
    let out = Command::new(chromium)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        dom.contains("data-ready=\"yes\""),
        "the page's script did not finish: {log}"
    );
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(errors.is_empty(), "console messages: {errors:?}");
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
