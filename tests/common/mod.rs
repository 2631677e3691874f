//! Helpers shared by the ring-2 tests: run the real binary with a time
//! limit, keep background servers in guards that kill them by PID.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub fn icephone(args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_icephone"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn icephone");
    let output = wait_bounded(child, limit);
    (output, start.elapsed())
}

/// Waits at most `limit`, then kills the child by PID: a hung binary must
/// fail the test, not hang it.
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "process did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn which(name: &str) -> Option<PathBuf> {
    // Daemons such as kamailio live in /usr/sbin, which a non-root PATH
    // may lack.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

/// A peer program the test needs: present, or the test is skipped — but
/// never in CI, where `scripts/setup` installs it.
pub fn require(program: &str, test: &str) -> Option<PathBuf> {
    let found = which(program);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing in CI: scripts/setup installs it"
        );
        eprintln!("SKIPPED {test}: {program} not installed (run scripts/setup)");
    }
    found
}

/// A background process, killed (by PID) and reaped when dropped.
pub struct Background {
    pub child: Child,
    /// Lines the process printed on stdout, as they arrive.
    pub lines: Option<mpsc::Receiver<String>>,
}

impl Background {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self::spawn_with_stderr(cmd, Stdio::piped())
    }

    /// As [`Self::spawn`], with stderr going to `stderr` — a file, for a
    /// chatty server whose log would fill an unread pipe and stall it.
    pub fn spawn_with_stderr(cmd: &mut Command, stderr: impl Into<Stdio>) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn background process");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background {
            child,
            lines: Some(rx),
        }
    }

    /// The first stdout line starting with `prefix`, within `limit`.
    pub fn wait_line(&mut self, prefix: &str, limit: Duration) -> String {
        let rx = self.lines.as_ref().expect("stdout reader");
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!("no {prefix:?} line within {limit:?}"),
            }
        }
    }

    /// The first stdout line starting with each of `prefixes`, in any
    /// order, within `limit` (lines of concurrent tasks may interleave).
    pub fn wait_lines(&mut self, prefixes: &[&str], limit: Duration) -> Vec<String> {
        let rx = self.lines.as_ref().expect("stdout reader");
        let deadline = Instant::now() + limit;
        let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let missing = prefixes
                        .iter()
                        .zip(&found)
                        .position(|(p, f)| f.is_none() && line.starts_with(p));
                    if let Some(i) = missing {
                        found[i] = Some(line);
                    }
                }
                Err(_) => panic!("not all of {prefixes:?} within {limit:?}: {found:?}"),
            }
        }
        found.into_iter().flatten().collect()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns stderr.
    pub fn terminate(self, limit: Duration) -> (std::process::ExitStatus, String) {
        let (status, stderr, _) = self.terminate_with_output(limit);
        (status, stderr)
    }

    /// As [`Self::terminate`], also returning the stdout lines not yet read.
    pub fn terminate_with_output(
        mut self,
        limit: Duration,
    ) -> (std::process::ExitStatus, String, Vec<String>) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                // The reader thread ends at EOF, which has come.
                let lines = self
                    .lines
                    .take()
                    .map(|rx| rx.iter().collect())
                    .unwrap_or_default();
                return (status, err, lines);
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {limit:?} of SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Background {
    /// SIGTERM by PID, then a bounded wait: for daemons such as Kamailio,
    /// whose worker processes end only when their parent shuts them down
    /// (a SIGKILL would orphan them). The drop's SIGKILL follows if needed.
    pub fn shut_down(&mut self, limit: Duration) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait_up_to(limit);
    }

    /// For a daemon started in a process group of its own
    /// (`CommandExt::process_group(0)`): SIGTERM to the whole group, a
    /// bounded wait, then SIGKILL to whatever of the group is left.
    pub fn shut_down_group(&mut self, limit: Duration) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        self.wait_up_to(limit);
        thread::sleep(Duration::from_millis(100));
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }

    fn wait_up_to(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate it signed for 127.0.0.1 and
/// localhost, made with the openssl command (Debian's `openssl`). Returns
/// the directory holding ca.pem, server.pem and server.key.
pub fn test_certificates(test: &str) -> Option<std::path::PathBuf> {
    let openssl = require("openssl", test)?;
    let dir = std::env::temp_dir().join(format!("icephone-tls-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let p = |name: &str| dir.join(name).display().to_string();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let steps = [
        format!(
            "req -x509 {ec} -days 2 -subj /CN=icephone-test-CA -keyout {} -out {}",
            p("ca.key"),
            p("ca.pem")
        ),
        format!(
            "req {ec} -subj /CN=localhost -keyout {} -out {}",
            p("server.key"),
            p("server.csr")
        ),
        format!(
            "x509 -req -days 2 -CAcreateserial -in {} -CA {} -CAkey {} -extfile {} -out {}",
            p("server.csr"),
            p("ca.pem"),
            p("ca.key"),
            p("server.ext"),
            p("server.pem")
        ),
    ];
    // Temporary paths have no spaces, so splitting on whitespace is exact.
    for step in steps {
        let out = Command::new(&openssl)
            .args(step.split_whitespace())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(dir)
}

/// `icephone serve` on loopback with free ports: registrar, proxy, STUN and
/// TURN, with the users alice, bob and carol.
pub struct Serve {
    pub process: Background,
    pub port: u16,
}

impl Serve {
    pub fn start(realm: &str) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_icephone"));
        cmd.args([
            "--log",
            "info",
            "serve",
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .args(["--sip-port", "0", "--min-expires", "5", "--realm", realm])
        .args([
            "--user",
            "alice:Alice-pw1",
            "--user",
            "bob:Bob-pw2",
            "--user",
            "carol:Carol-pw3",
        ]);
        let mut process = Background::spawn(&mut cmd);
        let line = process.wait_line("listening ", Duration::from_secs(20));
        let port = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("sip="))
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no sip= in {line:?}"));
        Serve { process, port }
    }

    pub fn registrar(&self, transport: &str) -> String {
        format!("sip:127.0.0.1:{};transport={transport}", self.port)
    }
}

/// A sine of `hz` at about -12 dBFS as a 48 kHz mono WAV: a microphone for
/// a peer that needs a file (PulseAudio's paplay, baresip's aufile).
pub fn write_tone_wav(path: &std::path::Path, hz: f64, seconds: f64) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(48_000.0 * seconds) as usize {
        let v = (std::f64::consts::TAU * hz * i as f64 / 48_000.0).sin() * 8000.0;
        w.write_sample(v as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// The samples of a 16-bit WAV; a missing or broken file is none.
pub fn read_wav(path: &std::path::Path) -> Vec<i16> {
    hound::WavReader::open(path)
        .map(|r| r.into_samples::<i16>().map_while(Result::ok).collect())
        .unwrap_or_default()
}

/// How many 20 ms frames of `samples` carry `hz` clearly.
pub fn tone_frames(samples: &[i16], hz: f64) -> usize {
    samples
        .chunks_exact(960)
        .filter(|f| icephone::audio::analysis::tone_level(f, hz) >= 0.5)
        .count()
}

/// Kamailio's command line for `tests/kamailio/kamailio.cfg` (no daemon,
/// logs on stderr, runtime files in `dir`), on `ip:port` for `realm` and
/// `users` (`name=password;…`).
pub fn kamailio_args(
    dir: &std::path::Path,
    ip: &str,
    port: u16,
    realm: &str,
    users: &str,
) -> Vec<String> {
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kamailio/kamailio.cfg");
    let mut args: Vec<String> = vec!["-f".into(), cfg.display().to_string()];
    args.extend(["-DD", "-E", "-n", "1", "-m", "32", "-M", "4", "-Y"].map(String::from));
    args.push(dir.display().to_string());
    args.push("-P".into());
    args.push(dir.join("kamailio.pid").display().to_string());
    for define in [
        format!("SIP_IP={ip}"),
        format!("SIP_PORT={port}"),
        format!("REALM=\"{realm}\""),
        format!("USERS=\"{users}\""),
    ] {
        args.push("-A".into());
        args.push(define);
    }
    args
}

/// coturn's command line: STUN and TURN on `ip:port`, relaying from `ip`,
/// long-term credentials for `users` (`name:password`) in `realm`, no TLS,
/// DTLS or CLI, its log and PID file in `dir`.
pub fn coturn_args(
    dir: &std::path::Path,
    ip: &str,
    port: u16,
    realm: &str,
    users: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-n".into(),
        format!("--listening-ip={ip}"),
        format!("--relay-ip={ip}"),
        format!("--listening-port={port}"),
        "--lt-cred-mech".into(),
        format!("--realm={realm}"),
    ];
    args.extend(users.iter().map(|u| format!("--user={u}")));
    // One log file with the name given, no date appended.
    args.extend(
        [
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-stdout-log",
            "--simple-log",
        ]
        .map(String::from),
    );
    args.push(format!("--log-file={}", dir.join("coturn.log").display()));
    args.push(format!("--pidfile={}", dir.join("coturn.pid").display()));
    args
}

/// A tmux server of our own (its own socket), killed when dropped.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// `command` in a new tmux server named after `name` (one per test),
    /// with `XDG_STATE_HOME` at `state`; the pane stays 30 s after it exits.
    pub fn start(name: &str, command: &str, state: &Path) -> Tmux {
        let tmux = Tmux {
            socket: format!("icephone-{name}-{}", std::process::id()),
        };
        let status = Command::new("tmux")
            .args([
                "-L",
                &tmux.socket,
                "new-session",
                "-d",
                "-s",
                "phone",
                "-x",
                "110",
                "-y",
                "30",
            ])
            .arg(format!(
                "env XDG_STATE_HOME={} {command}; echo PHONE-EXITED $?; sleep 30",
                state.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        tmux
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "phone"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "phone"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the screen shows `text`.
    pub fn wait_for(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the screen within {limit:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}
