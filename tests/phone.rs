//! Ring 2: the interactive phone, driven like a person would — keys into a
//! real terminal (tmux), the screen read back — through a whole outgoing
//! and a whole incoming call against other icephone processes.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{require, Background, Serve, Tmux};

const REALM: &str = "phone.test";

#[test]
fn the_phone_places_and_answers_calls_from_the_keyboard() {
    if require("tmux", "phone").is_none() {
        return;
    }
    let serve = Serve::start(REALM);
    let dir = std::env::temp_dir().join(format!("icephone-phone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bob = Background::spawn(
        Command::new(env!("CARGO_BIN_EXE_icephone"))
            .args([
                "register",
                "--aor",
                &format!("sip:bob@{REALM}"),
                "--password",
                "Bob-pw2",
            ])
            .args(["--registrar", &serve.registrar("udp"), "--auto-answer"])
            .args(["--mic", "tone:880", "--speaker", "null"]),
    );
    bob.wait_line("registered ", Duration::from_secs(10));
    let heard: PathBuf = dir.join("alice.wav");
    let config = dir.join("alice.toml");
    std::fs::write(
        &config,
        format!(
            "[[account]]\naor = \"sip:alice@{REALM}\"\npassword = \"Alice-pw1\"\nregistrar = \"{}\"\n\
             [audio]\nmic = \"tone:440\"\nspeaker = \"file:{}\"\n",
            serve.registrar("udp"),
            heard.display()
        ),
    )
    .unwrap();
    let tmux = Tmux::start(
        "phone",
        &format!(
            "{} --config {}",
            env!("CARGO_BIN_EXE_icephone"),
            config.display()
        ),
        &dir.join("state"),
    );
    tmux.wait_for("registered", Duration::from_secs(15));
    tmux.wait_for("type a name or URI", Duration::from_secs(2));

    // Outgoing: a bare user name is completed with the account's domain.
    tmux.keys(&["bob", "Enter"]);
    let screen = tmux.wait_for("active 00:0", Duration::from_secs(15));
    assert!(screen.contains(&format!("→ sip:bob@{REALM}")), "{screen}");
    let screen = tmux.wait_for("pair: ice connected in", Duration::from_secs(5));
    assert!(screen.contains("host 127.0.0.1:"), "{screen}");
    assert!(screen.contains("m mute · h hold/resume"), "{screen}");
    tmux.wait_for("active 00:02", Duration::from_secs(5));
    let screen = tmux.screen();
    assert!(
        screen.contains("MOS") && screen.contains("mic █"),
        "{screen}"
    );
    tmux.keys(&["m"]);
    tmux.wait_for("[muted]", Duration::from_secs(3));
    tmux.keys(&["h"]);
    tmux.wait_for("[on hold]", Duration::from_secs(5));
    tmux.keys(&["h"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.screen().contains("[on hold]") {
        assert!(
            Instant::now() < deadline,
            "still on hold:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys(&["x"]);
    tmux.wait_for("ended: hung up here", Duration::from_secs(5));
    bob.wait_line(
        "call 1 ended: the other side hung up",
        Duration::from_secs(5),
    );
    // What alice heard was bob's tone.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        common::tone_frames(&common::read_wav(&heard), 880.0) >= 50,
        "bob's tone not heard"
    );

    // Incoming: carol calls, it rings, `a` answers, carol hangs up.
    let carol = Background::spawn(
        Command::new(env!("CARGO_BIN_EXE_icephone"))
            .args([
                "call",
                &format!("sip:alice@{REALM}"),
                "--aor",
                &format!("sip:carol@{REALM}"),
            ])
            .args([
                "--password",
                "Carol-pw3",
                "--registrar",
                &serve.registrar("udp"),
            ])
            .args([
                "--mic",
                "tone:660",
                "--speaker",
                "null",
                "--hangup-after",
                "2",
            ]),
    );
    let screen = tmux.wait_for("RINGING", Duration::from_secs(15));
    assert!(screen.contains(&format!("← sip:carol@{REALM}")), "{screen}");
    assert!(
        screen.contains("a/Enter answer · d/Esc decline"),
        "{screen}"
    );
    tmux.keys(&["a"]);
    tmux.wait_for("active 00:0", Duration::from_secs(10));
    tmux.wait_for("ended: the other side hung up", Duration::from_secs(10));
    let (status, _) = carol.terminate(Duration::from_secs(10));
    let _ = status;

    // F2: the sound devices; Enter picks one and the config remembers it.
    tmux.keys(&["F2"]);
    let screen = tmux.wait_for("Sound devices", Duration::from_secs(5));
    assert!(screen.contains("mic     default"), "{screen}");
    assert!(screen.contains("speaker default"), "{screen}");
    tmux.keys(&["Enter"]);
    tmux.wait_for("mic: default (remembered in", Duration::from_secs(5));
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(saved.contains("mic = \"default\""), "{saved}");
    assert!(
        saved.contains("[[account]]") && saved.contains("speaker = \"file:"),
        "{saved}"
    );

    // Ctrl-C: unregisters and leaves.
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("PHONE-EXITED 0", Duration::from_secs(15));
    assert!(screen.contains("icephone: bye"), "{screen}");
    let (status, stderr) = bob.terminate(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    let log = std::fs::read_to_string(dir.join("state/icephone/icephone.log")).unwrap_or_default();
    assert!(!log.contains("Alice-pw1"), "the password reached the log");
    drop(serve);
    let _ = std::fs::remove_dir_all(dir);
}
