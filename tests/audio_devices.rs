//! The sound-card path for real: a headless PulseAudio gives each side a
//! virtual microphone and a virtual speaker, icephone opens them through
//! cpal, and what was fed to alice's microphone must come out of bob's
//! speaker (and the other way at once). See shared/notes/virtual-audio.md.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{require, Background, Serve};
use icephone::audio::analysis::tone_level;

const REALM: &str = "icephone.test";

/// A private PulseAudio daemon in its own runtime dir; every command that
/// talks to it gets `env` (the test process's own environment is shared by
/// tests running in parallel and stays untouched).
struct Pulse {
    daemon: Option<Background>,
    dir: PathBuf,
}

impl Pulse {
    fn start(test: &str) -> Pulse {
        let dir = std::env::temp_dir().join(format!("icephone-pa-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["run", "home"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut pulse = Pulse { daemon: None, dir };
        let mut cmd = pulse.command("pulseaudio");
        // Not daemonised: the test owns its PID and kills it.
        cmd.args([
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
        ])
        .arg(format!(
            "--log-target=file:{}",
            pulse.dir.join("pulse.log").display()
        ))
        .args(["-L", "module-native-protocol-unix auth-anonymous=1"]);
        for side in ["alice", "bob"] {
            cmd.args([
                "-L",
                &format!("module-null-sink sink_name=spk_{side} rate=48000 channels=1"),
            ])
            .args([
                "-L",
                &format!("module-null-sink sink_name=feed_{side} rate=48000 channels=1"),
            ])
            .args([
                "-L",
                &format!("module-remap-source source_name=mic_{side} master=feed_{side}.monitor"),
            ]);
        }
        pulse.daemon = Some(Background::spawn_with_stderr(&mut cmd, Stdio::null()));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = pulse
                .command("pactl")
                .args(["list", "short", "sources"])
                .output()
                .map(|o| {
                    o.status.success() && String::from_utf8_lossy(&o.stdout).contains("mic_bob")
                })
                .unwrap_or(false);
            if ok {
                return pulse;
            }
            assert!(
                Instant::now() < deadline,
                "PulseAudio did not start: {}",
                std::fs::read_to_string(pulse.dir.join("pulse.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let run = self.dir.join("run");
        cmd.env("XDG_RUNTIME_DIR", &run)
            .env("HOME", self.dir.join("home"))
            .env(
                "PULSE_SERVER",
                format!("unix:{}", run.join("pulse/native").display()),
            );
        cmd
    }

    fn icephone(&self) -> Command {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_icephone"));
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Plays a WAV into a side's virtual microphone, in real time.
    fn feed(&self, side: &str, wav: &Path) -> Background {
        Background::spawn(
            self.command("paplay")
                .arg(format!("--device=feed_{side}"))
                .arg("--latency-msec=20")
                .arg(wav),
        )
    }

    /// Records what a side's virtual speaker plays, as raw 48 kHz s16.
    fn record(&self, side: &str, raw: &Path) -> Background {
        Background::spawn(
            self.command("parec")
                .arg(format!("--device=spk_{side}.monitor"))
                // An idle null sink renders in blocks of up to 2 s: a new
                // stream would wait that long for its first request. A
                // low-latency reader keeps the blocks short, as a sound
                // card's period would.
                .arg("--latency-msec=10")
                .args(["--format=s16le", "--rate=48000", "--channels=1", "--raw"])
                .arg(raw),
        )
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_raw(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// 20 ms frames in which `hz` stands clear, and in which `other` does.
fn frames_with(samples: &[i16], hz: f64, other: f64) -> (usize, usize) {
    let frames: Vec<&[i16]> = samples.chunks_exact(960).collect();
    let ours = frames.iter().filter(|f| tone_level(f, hz) >= 0.5).count();
    let theirs = frames
        .iter()
        .filter(|f| tone_level(f, other) >= 0.5)
        .count();
    (ours, theirs)
}

#[test]
fn devices_lists_the_virtual_microphones_and_speakers() {
    let test = "devices_lists";
    if require("pulseaudio", test).is_none() {
        return;
    }
    let pulse = Pulse::start("list");
    let out = pulse
        .icephone()
        .args(["devices", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {list}"))
            .clone()
    };
    assert_eq!(find("mic_alice")["input"], true);
    assert_eq!(find("spk_bob")["output"], true);
    // A name that is not there is one clear line naming what is.
    let (out, _) = {
        let start = Instant::now();
        let out = pulse
            .icephone()
            .args([
                "call",
                "sip:bob@example.invalid",
                "--aor",
                "sip:alice@example.invalid",
            ])
            .args(["--password", "x", "--mic", "no_such_mic"])
            .output()
            .unwrap();
        (out, start.elapsed())
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no_such_mic") && stderr.contains("mic_alice"),
        "{stderr}"
    );
}

#[test]
fn a_call_carries_each_virtual_microphone_to_the_other_sides_speaker() {
    let test = "a_call_carries_each_virtual_microphone";
    for program in ["pulseaudio", "paplay", "parec"] {
        if require(program, test).is_none() {
            return;
        }
    }
    let pulse = Pulse::start("call");
    let dir = pulse.dir.clone();
    let (alice_tone, bob_tone) = (dir.join("440.wav"), dir.join("880.wav"));
    common::write_tone_wav(&alice_tone, 440.0, 20.0);
    common::write_tone_wav(&bob_tone, 880.0, 20.0);
    let _feeds = [
        pulse.feed("alice", &alice_tone),
        pulse.feed("bob", &bob_tone),
    ];
    let (alice_heard, bob_heard) = (dir.join("alice.raw"), dir.join("bob.raw"));
    let mut recorders = [
        pulse.record("alice", &alice_heard),
        pulse.record("bob", &bob_heard),
    ];

    let serve = Serve::start(REALM);
    let mut bob = pulse.icephone();
    bob.args([
        "register",
        "--aor",
        &format!("sip:bob@{REALM}"),
        "--password",
        "Bob-pw2",
    ])
    .args(["--registrar", &serve.registrar("udp"), "--auto-answer"])
    .args(["--mic", "mic_bob", "--speaker", "spk_bob"]);
    let mut bob = Background::spawn(&mut bob);
    bob.wait_line("registered ", Duration::from_secs(20));
    let report = dir.join("report.json");
    let child = pulse
        .icephone()
        .args([
            "call",
            &format!("sip:bob@{REALM}"),
            "--aor",
            &format!("sip:alice@{REALM}"),
        ])
        .args([
            "--password",
            "Alice-pw1",
            "--registrar",
            &serve.registrar("udp"),
        ])
        .args([
            "--mic",
            "mic_alice",
            "--speaker",
            "spk_alice",
            "--hangup-after",
            "6",
        ])
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::wait_bounded(child, Duration::from_secs(40));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bob.wait_line("call 1 ended", Duration::from_secs(10));
    let (status, stderr) = bob.terminate(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    for r in recorders.iter_mut() {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }

    // Six seconds of call: the other side's tone in at least 2.4 s of what
    // each speaker played (CI is loaded: other tests run alongside), its
    // own never. The rest goes to starting the
    // streams (PulseAudio takes about a second to deliver a capture
    // stream's first samples) and to the null sink's first request.
    for (file, hz, other) in [(&bob_heard, 440.0, 880.0), (&alice_heard, 880.0, 440.0)] {
        let samples = read_raw(file);
        let (clear, own) = frames_with(&samples, hz, other);
        eprintln!("{}: {hz} Hz clear in {clear} frames", file.display());
        assert!(
            clear >= 120,
            "{}: {hz} Hz clear in only {clear} frames of {}",
            file.display(),
            samples.len() / 960
        );
        assert_eq!(own, 0, "{}: heard its own tone", file.display());
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        report["rtp"]["packets_received"].as_u64().unwrap() >= 150,
        "{report}"
    );
    // What icephone adds between the devices and the network.
    let latency = &report["latency"];
    eprintln!("latency with sound devices: {latency}");
    assert!(latency["send_mean_ms"].as_f64().is_some(), "{report}");
    assert!(latency["playout_mean_ms"].as_f64().is_some(), "{report}");
}
