//! Ring 3: real calls across real Linux NATs. `tests/natlab/lab.sh` builds
//! hosts and NAT routers as network namespaces joined by veth pairs, with
//! nftables doing the NAT (see tests/natlab/README.md); here real icephone
//! processes — `serve` on the simulated internet, bob behind one router,
//! alice behind the other — make a call in each scenario, and the call
//! reports say which pair ICE selected and how much audio arrived.
//!
//! Needs root (namespaces, nftables): without it every test says so and
//! passes as skipped, except in CI, where it fails. Each test has a lab of
//! its own (its LAB_ID names its namespaces and LAN subnets), so they run
//! in parallel; every lab is taken down when its test ends, failed or not,
//! and when the run is interrupted (SIGINT, SIGTERM).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Background;
use icephone::audio::analysis::tone_level;
use serde_json::Value;

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/natlab/lab.sh");
const SERVER: &str = "203.0.113.10";

/// Root and the tools, or a visible skip (never in CI).
fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let nft = common::which("nft").is_some();
    if root && nft {
        return true;
    }
    let why = if root {
        "nft (nftables) is missing"
    } else {
        "it needs root"
    };
    assert!(std::env::var_os("CI").is_none(), "{test}: {why} in CI");
    eprintln!("SKIPPED {test}: {why} (run scripts/setup, as root)");
    false
}

/// At most this many labs at once: each runs four or five processes, and
/// CI has two cores; a starved phone would fail a check for no reason.
const LABS_AT_ONCE: usize = 4;

static RUNNING: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// A place among the labs running at once, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Slot {
        let (count, freed) = &RUNNING;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= LABS_AT_ONCE {
            n = freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, freed) = &RUNNING;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        freed.notify_one();
    }
}

/// The labs up in this process, for the signal handler's thread.
static LABS_UP: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
/// Where the signal handler writes a byte (the only async-signal-safe way
/// to wake a thread).
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; the buffer is a static byte.
    unsafe {
        libc::write(fd, b"!".as_ptr().cast(), 1);
    }
}

/// From the first lab on, SIGINT or SIGTERM takes every lab of this
/// process down (their processes included) before it exits: an
/// interrupted `cargo test` leaves no namespace behind.
fn take_labs_down_on_signal() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills the two descriptors it is given.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return;
        }
        SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::Relaxed);
        std::thread::spawn(move || {
            let mut byte = 0u8;
            // SAFETY: reads one byte into a local.
            while unsafe { libc::read(fds[0], (&mut byte as *mut u8).cast(), 1) } != 1 {}
            let ids = LABS_UP.lock().map(|l| l.clone()).unwrap_or_default();
            for id in ids {
                let _ = Command::new(LAB).args(["down", &id.to_string()]).status();
            }
            eprintln!("natlab: interrupted; every lab of this run is down");
            // SAFETY: ends the process at once, as the signal would have.
            unsafe { libc::_exit(130) };
        });
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: installs a handler that only calls write(2).
        unsafe {
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
    });
}

/// A lab, taken down when dropped.
struct Lab {
    id: u8,
    _slot: Slot,
}

impl Lab {
    fn up(id: u8, scenario: &str, links: Links) -> Lab {
        let slot = Slot::take();
        take_labs_down_on_signal();
        if let Ok(mut up) = LABS_UP.lock() {
            up.push(id);
        }
        let out = Command::new(LAB)
            .args(["up", &id.to_string(), scenario])
            .env("LOSS", links.loss_percent.to_string())
            .env("DELAY_MS", links.delay_ms.to_string())
            .env("JITTER_MS", links.jitter_ms.to_string())
            .output()
            .expect("run lab.sh");
        let lab = Lab { id, _slot: slot };
        assert!(
            out.status.success(),
            "lab.sh up {id} {scenario}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// `program args` inside `host`'s namespace (lab.sh execs into it, so
    /// the PID is the program's own).
    fn command(&self, host: &str, args: &[String]) -> Command {
        let mut cmd = self.exec(host, env!("CARGO_BIN_EXE_icephone"));
        cmd.args(args);
        cmd
    }

    /// `program` inside `host`'s namespace; its arguments follow.
    fn exec(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(LAB);
        cmd.args(["exec", &self.id.to_string(), host, "--"])
            .arg(program);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(LAB)
            .args(["down", &self.id.to_string()])
            .status();
        if let Ok(mut up) = LABS_UP.lock() {
            up.retain(|&id| id != self.id);
        }
    }
}

/// What the internet links of a lab do to packets (`lab.sh`'s LOSS,
/// DELAY_MS and JITTER_MS): loss both ways on each router's public side,
/// delay on what each router sends out (so any path between two of the
/// lab's hosts crosses one delay).
#[derive(Clone, Copy, Debug)]
struct Links {
    loss_percent: u8,
    delay_ms: u16,
    jitter_ms: u16,
}

const CLEAN: Links = Links {
    loss_percent: 0,
    delay_ms: 0,
    jitter_ms: 0,
};

/// The impaired internet: 2 % loss, 40 ms ± 10 ms.
const IMPAIRED: Links = Links {
    loss_percent: 2,
    delay_ms: 40,
    jitter_ms: 10,
};

/// How the two phones reach the servers in a scenario.
struct Setup {
    /// `udp` or `tcp` to the registrar.
    sip: &'static str,
    /// Appended to the TURN URL (`?transport=tcp`).
    turn_query: &'static str,
    /// Extra flags for both phones.
    both: &'static [&'static str],
    /// Seconds alice stays in the call.
    hangup_after: &'static str,
}

const PLAIN: Setup = Setup {
    sip: "udp",
    turn_query: "",
    both: &[],
    hangup_after: "3",
};

/// Who serves SIP and STUN/TURN on the lab's internet.
#[derive(Clone, Copy, Debug)]
enum Servers {
    /// `icephone serve`: registrar, proxy, STUN and TURN in one.
    Serve,
    /// Kamailio (registrar and proxy, `tests/kamailio/kamailio.cfg`) and
    /// coturn (STUN and TURN).
    KamailioCoturn,
    /// `serve` challenging with MD5 only: baresip 1.0 tries only the first
    /// challenge, and knows no SHA-256.
    ServeMd5,
}

/// Whether the programs `servers` needs are here (`common::require` says
/// why not, and fails in CI).
fn servers_installed(servers: Servers, test: &str) -> bool {
    !matches!(servers, Servers::KamailioCoturn)
        || (common::require("kamailio", test).is_some()
            && common::require("turnserver", test).is_some())
}

/// Waits until something in the server namespace listens on UDP `port`.
fn wait_listening(lab: &Lab, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = lab.exec("server", "ss").arg("-lun").output().expect("ss");
        if String::from_utf8_lossy(&out.stdout).contains(&format!("{SERVER}:{port} ")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {SERVER}:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the servers; what they return must live as long as the call.
fn start_servers(lab: &Lab, servers: Servers, dir: &Path) -> Vec<Background> {
    let s = |v: &str| v.to_owned();
    match servers {
        Servers::Serve | Servers::ServeMd5 => {
            let md5: &[&str] = if matches!(servers, Servers::ServeMd5) {
                &["--sip-digest", "md5"]
            } else {
                &[]
            };
            let mut serve = Background::spawn(
                &mut lab.command(
                    "server",
                    &[
                        "serve",
                        "--listen",
                        SERVER,
                        "--port",
                        "3478",
                        "--sip-port",
                        "5060",
                        "--realm",
                        "lab.test",
                    ]
                    .map(s)
                    .into_iter()
                    .chain(
                        [
                            "--user",
                            "alice:pw1",
                            "--user",
                            "bob:pw2",
                            "--user",
                            "carol:pw3",
                        ]
                        .map(s),
                    )
                    .chain(md5.iter().map(|f| s(f)))
                    .collect::<Vec<_>>(),
                ),
            );
            serve.wait_line("listening ", Duration::from_secs(15));
            vec![serve]
        }
        Servers::KamailioCoturn => {
            let kamailio = common::require("kamailio", "natlab").expect("kamailio");
            let turnserver = common::require("turnserver", "natlab").expect("coturn");
            let kam_dir = dir.join("kamailio");
            std::fs::create_dir_all(&kam_dir).unwrap();
            let mut kam = lab.exec("server", kamailio);
            kam.args(common::kamailio_args(
                &kam_dir,
                SERVER,
                5060,
                "lab.test",
                "alice=pw1;bob=pw2",
            ));
            let log = std::fs::File::create(dir.join("kamailio.log")).unwrap();
            let kam = Background::spawn_with_stderr(&mut kam, log);
            let mut coturn = lab.exec("server", turnserver);
            coturn.args(common::coturn_args(
                dir,
                SERVER,
                3478,
                "lab.test",
                &["alice:pw1", "bob:pw2"],
            ));
            let coturn = Background::spawn(&mut coturn);
            wait_listening(lab, 5060);
            wait_listening(lab, 3478);
            vec![kam, coturn]
        }
    }
}

/// What a call across the lab left behind.
struct Outcome {
    /// What alice's `call` printed.
    alice_says: String,
    alice: Value,
    bob: Value,
    alice_heard: Vec<i16>,
    bob_heard: Vec<i16>,
    dir: PathBuf,
}

impl Outcome {
    fn pair(&self, who: &Value) -> (String, String) {
        let sel = &who["ice"]["selected_pair"];
        let kind = |c: &Value| c["type"].as_str().unwrap_or("-").to_owned();
        (kind(&sel["local"]), kind(&sel["remote"]))
    }

    /// Both sides heard the other's tone for most of the call.
    fn audio_both_ways(&self, share: f64) {
        for (heard, hz, who) in [
            (&self.alice_heard, 880.0, "alice"),
            (&self.bob_heard, 440.0, "bob"),
        ] {
            let frames: Vec<&[i16]> = heard.chunks_exact(960).collect();
            let clear = frames.iter().filter(|f| tone_level(f, hz) >= 0.5).count();
            let need = (share * 150.0) as usize; // 3 s of call = 150 frames
            assert!(
                clear >= need,
                "{who} heard {hz} Hz in {clear} frames (want {need}); reports in {}",
                self.dir.display()
            );
        }
    }

    fn summary(&self) -> String {
        format!(
            "alice {:?} ice {} ms audio {} ms; bob {:?}",
            self.pair(&self.alice),
            self.alice["timing"]["answer_to_ice_connected_ms"],
            self.alice["timing"]["answer_to_first_audio_ms"],
            self.pair(&self.bob)
        )
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A phone's account, audio and ICE flags in the lab: `user` at lab.test,
/// a `tone` for microphone, what it hears to `heard`, its report to
/// `report`, STUN and TURN at the server.
fn phone_args(
    setup: &Setup,
    user: &str,
    password: &str,
    tone: &str,
    heard: &Path,
    report: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--aor".into(),
        format!("sip:{user}@lab.test"),
        "--password".into(),
        password.into(),
        "--registrar".into(),
        format!("sip:{SERVER}:5060;transport={}", setup.sip),
        "--mic".into(),
        format!("tone:{tone}"),
        "--speaker".into(),
        format!("file:{}", heard.display()),
        "--stun".into(),
        format!("stun:{SERVER}:3478"),
        "--turn".into(),
        format!("turn:{SERVER}:3478{}", setup.turn_query),
        "--turn-user".into(),
        user.into(),
        "--turn-password".into(),
        password.into(),
        "--report".into(),
        report.display().to_string(),
    ];
    args.extend(setup.both.iter().map(|f| f.to_string()));
    args
}

/// `serve` on the internet, bob (tone 880) registered from b, alice (tone
/// 440) calls him from a for three seconds.
fn call_across(lab: &Lab, setup: &Setup, servers: Servers) -> Outcome {
    call_across_with(lab, setup, servers, |_| {})
}

/// As [`call_across`], doing `mid_call` to the lab a second and a half
/// into the call.
fn call_across_with(
    lab: &Lab,
    setup: &Setup,
    servers: Servers,
    mid_call: impl FnOnce(&Lab),
) -> Outcome {
    let dir =
        std::env::temp_dir().join(format!("icephone-natlab-{}-{}", lab.id, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _servers = start_servers(lab, servers, &dir);
    let phone = |user: &str, password: &str, tone: &str, heard: &Path, report: &Path| {
        phone_args(setup, user, password, tone, heard, report)
    };
    let (bob_heard, bob_report) = (dir.join("bob.wav"), dir.join("bob.json"));
    let mut bob_args = vec!["register".to_owned(), "--auto-answer".into()];
    bob_args.extend(phone("bob", "pw2", "880", &bob_heard, &bob_report));
    let mut bob = Background::spawn(&mut lab.command("b", &bob_args));
    bob.wait_line("registered ", Duration::from_secs(15));

    let (alice_heard, alice_report) = (dir.join("alice.wav"), dir.join("alice.json"));
    let mut alice_args = vec![
        "call".to_owned(),
        "sip:bob@lab.test".into(),
        "--hangup-after".into(),
        setup.hangup_after.into(),
    ];
    alice_args.extend(phone("alice", "pw1", "440", &alice_heard, &alice_report));
    let child = lab
        .command("a", &alice_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // ICE takes well under a second here: 1.5 s after the start is mid-call.
    std::thread::sleep(Duration::from_millis(1500));
    mid_call(lab);
    let out = common::wait_bounded(child, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "alice: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bob.wait_line("call 1 report written", Duration::from_secs(10));
    let (status, stderr) = bob.terminate(Duration::from_secs(10));
    assert!(status.success(), "bob: {stderr}");
    let read = |p: &Path| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    };
    Outcome {
        alice_says: stdout.to_string(),
        alice: read(&alice_report),
        bob: read(&bob_report),
        alice_heard: common::read_wav(&alice_heard),
        bob_heard: common::read_wav(&bob_heard),
        dir,
    }
}

fn scenario(
    test: &str,
    id: u8,
    name: &str,
    links: Links,
    setup: &Setup,
    servers: Servers,
) -> Option<Outcome> {
    if !can_run(test) {
        return None;
    }
    if !servers_installed(servers, test) {
        return None;
    }
    let started = Instant::now();
    let lab = Lab::up(id, name, links);
    let outcome = call_across(&lab, setup, servers);
    eprintln!(
        "{test} ({servers:?}): {} ({:.1} s)",
        outcome.summary(),
        started.elapsed().as_secs_f64()
    );
    Some(outcome)
}

/// Each scenario twice: with `icephone serve`, and with Kamailio + coturn
/// (lab ids `id` and `id + 10`).
macro_rules! scenarios {
    ($($serve:ident, $kamailio:ident, $id:expr, $lab:expr, $links:expr, $setup:expr, $check:ident;)*) => {$(
        #[test]
        fn $serve() {
            if let Some(o) = scenario(stringify!($serve), $id, $lab, $links, &$setup, Servers::Serve) {
                $check(&o);
            }
        }
        #[test]
        fn $kamailio() {
            if let Some(o) = scenario(stringify!($kamailio), $id + 10, $lab, $links, &$setup, Servers::KamailioCoturn) {
                $check(&o);
            }
        }
    )*};
}

const TCP_ONLY: Setup = Setup {
    sip: "tcp",
    turn_query: "?transport=tcp",
    both: &[],
    hangup_after: "3",
};

const RELAY_POLICY: Setup = Setup {
    sip: "udp",
    turn_query: "",
    both: &["--ice-policy", "relay"],
    hangup_after: "3",
};

scenarios! {
    no_nat_selects_host_to_host, no_nat_with_kamailio_and_coturn, 1, "none", CLEAN, PLAIN, host_to_host;
    endpoint_independent_nats_connect_directly, endpoint_independent_nats_with_kamailio_and_coturn, 2, "eim", CLEAN, PLAIN, direct_reflexive;
    symmetric_nats_connect_through_the_relay, symmetric_nats_with_kamailio_and_coturn, 3, "sym", CLEAN, PLAIN, through_relay;
    symmetric_against_endpoint_independent_finds_a_way, mixed_nats_with_kamailio_and_coturn, 4, "mixed", CLEAN, PLAIN, any_pair;
    two_hosts_behind_one_nat_talk_over_the_lan, same_lan_with_kamailio_and_coturn, 5, "samelan", CLEAN, PLAIN, host_on_the_lan;
    with_udp_blocked_turn_over_tcp_carries_the_call, udp_blocked_with_kamailio_and_coturn, 6, "udpblock", CLEAN, TCP_ONLY, relay_over_tcp;
    the_relay_policy_uses_relayed_candidates_only, relay_policy_with_kamailio_and_coturn, 7, "eim", CLEAN, RELAY_POLICY, relayed_only;
    loss_delay_and_jitter_keep_the_call_intelligible, impaired_links_with_kamailio_and_coturn, 8, "eim", IMPAIRED, PLAIN, intelligible_when_impaired;
}

fn host_to_host(o: &Outcome) {
    assert_eq!(
        o.pair(&o.alice),
        ("host".into(), "host".into()),
        "{}",
        o.summary()
    );
    o.audio_both_ways(0.8);
}

fn direct_reflexive(o: &Outcome) {
    let (local, remote) = o.pair(&o.alice);
    assert!(local != "relay" && remote != "relay", "{}", o.summary());
    assert!(
        ["srflx", "prflx"].contains(&local.as_str()),
        "{}",
        o.summary()
    );
    o.audio_both_ways(0.8);
}

fn through_relay(o: &Outcome) {
    let (local, remote) = o.pair(&o.alice);
    assert!(local == "relay" || remote == "relay", "{}", o.summary());
    o.audio_both_ways(0.8);
}

/// Whatever ICE found is in the report, and audio flows both ways.
fn any_pair(o: &Outcome) {
    assert_ne!(o.pair(&o.alice).0, "-", "{}", o.summary());
    o.audio_both_ways(0.8);
}

fn host_on_the_lan(o: &Outcome) {
    assert_eq!(
        o.pair(&o.alice),
        ("host".into(), "host".into()),
        "{}",
        o.summary()
    );
    let local = o.alice["ice"]["selected_pair"]["local"]["address"]
        .as_str()
        .unwrap_or("");
    assert!(
        local.starts_with("10.") && local.contains(".1."),
        "{}",
        o.summary()
    );
    o.audio_both_ways(0.8);
}

fn relay_over_tcp(o: &Outcome) {
    let local = &o.alice["ice"]["selected_pair"]["local"];
    assert_eq!(local["type"], "relay", "{}", o.summary());
    assert_eq!(local["relay"]["transport"], "tcp", "{}", o.summary());
    o.audio_both_ways(0.8);
}

fn relayed_only(o: &Outcome) {
    assert_eq!(
        o.pair(&o.alice),
        ("relay".into(), "relay".into()),
        "{}",
        o.summary()
    );
    for who in [&o.alice, &o.bob] {
        for c in who["ice"]["local_candidates"].as_array().unwrap() {
            assert_eq!(c["type"], "relay", "{c}");
        }
    }
    o.audio_both_ways(0.8);
}

/// 2 % loss each way on each router (about 4 % end to end), 40 ± 10 ms
/// one way: FEC, concealment and the jitter buffer keep most frames
/// carrying the tone, and the checks of the selected pair took the two
/// crossings of the delay stage.
fn intelligible_when_impaired(o: &Outcome) {
    o.audio_both_ways(0.7);
    let lost = o.alice["rtp"]["packets_lost"].as_i64().unwrap_or(0);
    assert!(lost < 25, "{lost} lost of 150: {}", o.summary());
    for who in [&o.alice, &o.bob] {
        let selected = &who["ice"]["selected_pair"];
        let (local, remote) = (
            &selected["local"]["address"],
            &selected["remote"]["address"],
        );
        let rtt = who["ice"]["pairs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| &p["local"] == local && &p["remote"] == remote)
            .and_then(|p| p["rtt_ms"].as_f64())
            .unwrap_or(0.0);
        assert!(
            (60.0..200.0).contains(&rtt),
            "RTT {rtt} ms on the selected pair, where two crossings of 40 ± 10 ms were due: {}",
            o.summary()
        );
    }
}

// ----- another softphone: baresip ---------------------------------------

/// `tests/natlab/baresip.sh` for carol on host b; returns its summary line.
fn baresip(lab: &Lab, dir: &Path, role: &[&str], seconds: u32, rtcp_mux: &str) -> Background {
    let mic = dir.join("tone660.wav");
    if !mic.exists() {
        common::write_tone_wav(&mic, 660.0, 30.0);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/natlab/baresip.sh");
    let mut cmd = Command::new(script);
    cmd.args([&lab.id.to_string(), "b"])
        .arg(dir.join(format!("baresip-{}", role[0].trim_start_matches('-'))))
        .args(["--aor", "sip:carol@lab.test", "--password", "pw3"])
        .args(["--registrar", "203.0.113.10:5060;transport=udp"])
        .args([
            "--turn",
            "203.0.113.10:3478",
            "--turn-user",
            "carol",
            "--turn-password",
            "pw3",
        ])
        .arg("--mic")
        .arg(&mic)
        .args(role)
        .args([
            "--seconds",
            &seconds.to_string(),
            "--wait",
            "30",
            "--rtcp-mux",
            rtcp_mux,
        ])
        .args(["--expect-hz", "440", "--no-sip-trace"]);
    Background::spawn(&mut cmd)
}

/// `key=value` out of baresip.sh's summary line.
fn field<'a>(summary: &'a str, key: &str) -> &'a str {
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
}

fn icephone_and_baresip(test: &str, id: u8, scenario: &str, rtcp_mux: &str) {
    if !can_run(test) || common::require("baresip", test).is_none() {
        return;
    }
    let lab = Lab::up(id, scenario, CLEAN);
    let dir = std::env::temp_dir().join(format!("icephone-natlab-bs-{id}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _servers = start_servers(&lab, Servers::ServeMd5, &dir);
    let ice_flags = |user: &str, password: &str, heard: &Path, report: &Path| -> Vec<String> {
        [
            "--aor",
            &format!("sip:{user}@lab.test"),
            "--password",
            password,
            "--registrar",
            "sip:203.0.113.10:5060;transport=udp",
            "--mic",
            "tone:440",
            "--speaker",
            &format!("file:{}", heard.display()),
            "--stun",
            "stun:203.0.113.10:3478",
            "--turn",
            "turn:203.0.113.10:3478",
            "--turn-user",
            user,
            "--turn-password",
            password,
            "--report",
            &report.display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    };

    // icephone calls baresip.
    let mut callee = baresip(&lab, &dir, &["--answer"], 8, rtcp_mux);
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = dir.join("baresip-answer/baresip.log");
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("200 OK")
    {
        assert!(Instant::now() < deadline, "baresip did not register");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (heard, report) = (dir.join("alice-out.wav"), dir.join("alice-out.json"));
    let mut args = vec![
        "call".to_owned(),
        "sip:carol@lab.test".into(),
        "--hangup-after".into(),
        "6".into(),
    ];
    args.extend(ice_flags("alice", "pw1", &heard, &report));
    let out = common::wait_bounded(
        lab.command("a", &args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let summary = callee.wait_line("baresip:", Duration::from_secs(60));
    eprintln!("{test} icephone->baresip: {summary}");
    assert_eq!(field(&summary, "ice"), "ok", "{summary}");
    let theirs: f64 = field(&summary, "heard_tone440_s").parse().unwrap_or(0.0);
    let ours = common::tone_frames(&common::read_wav(&heard), 660.0) as f64 * 0.02;
    assert!(
        theirs >= 1.0,
        "baresip heard 440 Hz for {theirs} s: {summary}"
    );
    assert!(ours >= 1.0, "icephone heard 660 Hz for {ours} s");

    // baresip calls icephone.
    let (heard, report) = (dir.join("alice-in.wav"), dir.join("alice-in.json"));
    let mut args = vec!["register".to_owned(), "--auto-answer".into()];
    args.extend(ice_flags("alice", "pw1", &heard, &report));
    let mut alice = Background::spawn(&mut lab.command("a", &args));
    alice.wait_line("registered ", Duration::from_secs(15));
    let mut caller = baresip(&lab, &dir, &["--call", "sip:alice@lab.test"], 5, rtcp_mux);
    let summary = caller.wait_line("baresip:", Duration::from_secs(80));
    eprintln!("{test} baresip->icephone: {summary}");
    alice.wait_line("call 1 report written", Duration::from_secs(15));
    let (status, _) = alice.terminate(Duration::from_secs(10));
    assert!(status.success());
    assert_eq!(field(&summary, "ice"), "ok", "{summary}");
    let theirs: f64 = field(&summary, "heard_tone440_s").parse().unwrap_or(0.0);
    let ours = common::tone_frames(&common::read_wav(&heard), 660.0) as f64 * 0.02;
    assert!(
        theirs >= 1.0,
        "baresip heard 440 Hz for {theirs} s: {summary}"
    );
    assert!(ours >= 1.0, "icephone heard 660 Hz for {ours} s");
    let _ = std::fs::remove_dir_all(dir);
}

/// baresip 1.0 (its ice, turn, opus, aufile and sndfile modules: see
/// tests/natlab/README.md) and icephone call each other both ways across
/// two endpoint-independent NATs; audio is checked on both sides. baresip
/// as installed: no rtcp-mux, so ICE runs on RTP and RTCP components.
#[test]
fn icephone_and_baresip_across_endpoint_independent_nats() {
    icephone_and_baresip("baresip_eim", 9, "eim", "no");
}

/// The same across two symmetric NATs, with baresip multiplexing RTCP.
#[test]
fn icephone_and_baresip_across_symmetric_nats() {
    icephone_and_baresip("baresip_sym", 19, "sym", "yes");
}

/// Whether `conntrack` can flush the lab's routers, or a visible skip
/// (never in CI, where `scripts/setup` installs it).
fn can_flush(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    if common::which("conntrack").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "conntrack is missing in CI"
    );
    eprintln!("SKIPPED {test}: conntrack not installed");
    false
}

/// Both routers forget every mapping (`conntrack -F`): media and
/// signalling alike.
fn flush_both_routers(lab: &Lab) {
    for router in ["rA", "rB"] {
        let status = lab
            .exec(router, "conntrack")
            .arg("-F")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "conntrack -F on {router}");
    }
}

/// The NAT forgets every mapping mid-call (conntrack flushed on both
/// routers), a second and a half into a call of `seconds`.
fn mappings_lost_mid_call(
    test: &str,
    id: u8,
    (nat, sip): (&str, &'static str),
    servers: Servers,
    hangup_after: &'static str,
) -> Option<Outcome> {
    if !can_flush(test) || !servers_installed(servers, test) {
        return None;
    }
    let setup = Setup {
        hangup_after,
        sip,
        ..PLAIN
    };
    let lab = Lab::up(id, nat, CLEAN);
    let o = call_across_with(&lab, &setup, servers, flush_both_routers);
    eprintln!("{test} ({servers:?}): {}", o.summary());
    Some(o)
}

/// Behind endpoint-independent, port-preserving NATs the next packets out
/// re-create the same mappings, so the media carries on after a gap of a
/// few packets, with nothing to repair. (Bob's SIP flow stays shut until
/// his next keep-alive re-opens it, up to 25 s later, and the BYE reaches
/// him only then: these two tests are slow on purpose.)
fn carries_on_after_a_gap(o: &Outcome) {
    assert!(
        !o.alice_says.contains("ice lost the path"),
        "{}",
        o.alice_says
    );
    for (who, peer) in [(&o.alice, &o.bob), (&o.bob, &o.alice)] {
        let received = who["rtp"]["packets_received"].as_i64().unwrap_or(0);
        let sent = peer["rtp"]["packets_sent"].as_i64().unwrap_or(0);
        assert!(
            sent - received < 25,
            "{received} of {sent} arrived: {}",
            o.summary()
        );
    }
    // The last second still carries the other side's tone.
    for (heard, hz) in [(&o.alice_heard, 880.0), (&o.bob_heard, 440.0)] {
        let tail = &heard[heard.len().saturating_sub(48_000)..];
        let clear = tail
            .chunks_exact(960)
            .filter(|f| tone_level(f, hz) >= 0.5)
            .count();
        assert!(clear >= 35, "{hz} Hz in {clear} of the last 50 frames");
    }
}

/// Behind symmetric NATs every new mapping gets a new port: the relayed
/// pair is dead, and so are both phones' flows to the registrar. Both
/// notice the silence together, re-register from their new mappings, and
/// the caller restarts ICE by re-INVITE to the callee's GRUU, which the
/// proxy routes to his new flow; the tone is back within seconds, the BYE
/// at the end reaches him, and the reports name the new relayed pair.
fn recovers_by_ice_restart(o: &Outcome) {
    for line in ["ice lost the path", "ice restarted: ice connected in"] {
        assert!(o.alice_says.contains(line), "{}", o.alice_says);
    }
    // The first restart went through: no re-INVITE on a connection the
    // NAT had killed.
    assert!(
        !o.alice_says.contains("re-INVITE refused"),
        "{}",
        o.alice_says
    );
    let restarted_after = o
        .alice_says
        .lines()
        .find_map(|l| l.strip_prefix("ice restarted: ice connected in "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    eprintln!("restart connected in {restarted_after}");
    // The last three seconds carry the other side's tone again.
    for (heard, hz) in [(&o.alice_heard, 880.0), (&o.bob_heard, 440.0)] {
        let tail = &heard[heard.len().saturating_sub(3 * 48_000)..];
        let clear = common::tone_frames(tail, hz);
        assert!(
            clear >= 120,
            "{hz} Hz in {clear} of the last 150 frames: {}",
            o.alice_says
        );
    }
    // Both reports end on a relayed pair (not the one before the flush:
    // its allocations were retired with the restart).
    for who in [&o.alice, &o.bob] {
        let (local, remote) = o.pair(who);
        assert!(
            local == "relay" || remote == "relay",
            "{local} ↔ {remote}: {}",
            o.summary()
        );
    }
}

/// Each flush test: lab id, NAT and SIP transport, servers, seconds in the
/// call, the check.
macro_rules! flush_tests {
    ($($name:ident, $id:expr, $nat:expr, $sip:expr, $servers:expr, $seconds:expr, $check:ident;)*) => {$(
        #[test]
        fn $name() {
            if let Some(o) = mappings_lost_mid_call(stringify!($name), $id, ($nat, $sip), $servers, $seconds) {
                $check(&o);
            }
        }
    )*};
}

flush_tests! {
    nat_mappings_lost_mid_call_come_back_behind_endpoint_independent_nats, 10, "eim", "udp", Servers::Serve, "4", carries_on_after_a_gap;
    nat_mappings_lost_behind_endpoint_independent_nats_with_kamailio_and_coturn, 20, "eim", "udp", Servers::KamailioCoturn, "4", carries_on_after_a_gap;
    nat_mappings_lost_mid_call_behind_symmetric_nats_are_repaired_by_an_ice_restart, 21, "sym", "udp", Servers::Serve, "9", recovers_by_ice_restart;
    nat_mappings_lost_behind_symmetric_nats_with_kamailio_and_coturn, 22, "sym", "udp", Servers::KamailioCoturn, "9", recovers_by_ice_restart;
    // Over TCP the flush kills both registration connections: the phones
    // register again on new ones as soon as theirs close (RFC 5626 §4.4.1).
    nat_mappings_lost_with_sip_over_tcp_are_repaired_too, 24, "sym", "tcp", Servers::Serve, "9", recovers_by_ice_restart;
}

/// The interactive phone (in tmux, in host a) calls bob across symmetric
/// NATs, which then forget every mapping: the screen says it is
/// reconnecting, then shows the new pair, and bob's tone is heard again.
#[test]
fn the_phone_reconnects_when_the_nats_forget_its_call() {
    let test = "phone_flush";
    if !can_flush(test) || common::require("tmux", test).is_none() {
        return;
    }
    let lab = Lab::up(23, "sym", CLEAN);
    let dir = std::env::temp_dir().join(format!("icephone-natlab-phone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _servers = start_servers(&lab, Servers::Serve, &dir);
    let mut bob_args = vec!["register".to_owned(), "--auto-answer".into()];
    bob_args.extend(phone_args(
        &PLAIN,
        "bob",
        "pw2",
        "880",
        &dir.join("bob.wav"),
        &dir.join("bob.json"),
    ));
    let mut bob = Background::spawn(&mut lab.command("b", &bob_args));
    bob.wait_line("registered ", Duration::from_secs(15));

    let heard = dir.join("alice.wav");
    let config = dir.join("alice.toml");
    std::fs::write(
        &config,
        format!(
            "[[account]]\naor = \"sip:alice@lab.test\"\npassword = \"pw1\"\n\
             registrar = \"sip:{SERVER}:5060;transport=udp\"\n\
             [ice]\nstun = [\"stun:{SERVER}:3478\"]\n\
             [[ice.turn]]\nurl = \"turn:{SERVER}:3478\"\nuser = \"alice\"\npassword = \"pw1\"\n\
             [audio]\nmic = \"tone:440\"\nspeaker = \"file:{}\"\n",
            heard.display()
        ),
    )
    .unwrap();
    let tmux = common::Tmux::start(
        "natlab-phone",
        &format!(
            "{LAB} exec {} a -- {} --config {}",
            lab.id,
            env!("CARGO_BIN_EXE_icephone"),
            config.display()
        ),
        &dir.join("state"),
    );
    tmux.wait_for("registered", Duration::from_secs(15));
    tmux.keys(&["bob", "Enter"]);
    tmux.wait_for("pair: ice connected in", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    flush_both_routers(&lab);
    let flushed = Instant::now();
    tmux.wait_for("reconnecting…", Duration::from_secs(10));
    let screen = tmux.wait_for("pair: ice connected in", Duration::from_secs(15));
    let repaired = flushed.elapsed();
    eprintln!(
        "{test}: repaired {:.1} s after the flush",
        repaired.as_secs_f64()
    );
    assert!(screen.contains("TURN/udp"), "{screen}");
    assert!(repaired < Duration::from_secs(8), "{repaired:?}:\n{screen}");
    // Three seconds more of the call, then hang up; the last seconds alice
    // heard carry bob's tone again.
    std::thread::sleep(Duration::from_secs(3));
    tmux.keys(&["x"]);
    tmux.wait_for("ended: hung up here", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let samples = common::read_wav(&heard);
    let tail = &samples[samples.len().saturating_sub(2 * 48_000)..];
    let clear = common::tone_frames(tail, 880.0);
    assert!(clear >= 80, "880 Hz in {clear} of the last 100 frames");
    tmux.keys(&["C-c"]);
    tmux.wait_for("PHONE-EXITED 0", Duration::from_secs(15));
    bob.wait_line("call 1 report written", Duration::from_secs(10));
    let _ = bob.terminate(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Behind symmetric NATs, the mappings towards the TURN server are lost
/// mid-call (their conntrack entries deleted on both routers; signalling
/// keeps its own). The allocations are then reached from 5-tuples the
/// server does not know: consent checks go unanswered (RFC 7675), and the
/// caller restarts ICE by re-INVITE with fresh allocations. The audio comes
/// back within seconds.
#[test]
fn a_relayed_call_recovers_when_the_nats_lose_the_mappings_to_turn() {
    let test = "relay_path_lost";
    if !can_run(test) || common::which("conntrack").is_none() {
        return;
    }
    const LONG: Setup = Setup {
        sip: "udp",
        turn_query: "",
        both: &[],
        hangup_after: "14",
    };
    let lab = Lab::up(11, "sym", CLEAN);
    let o = call_across_with(&lab, &LONG, Servers::Serve, |lab| {
        for router in ["rA", "rB"] {
            let _ = lab
                .exec(router, "conntrack")
                .args(["-D", "-p", "udp", "--orig-port-dst", "3478"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    });
    eprintln!("{test}: {}", o.summary());
    recovers_by_ice_restart(&o);
}
