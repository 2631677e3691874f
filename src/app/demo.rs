//! `icephone demo`: the whole product on one machine with nothing set up.
//! `icephone serve` (registrar, proxy, STUN, TURN) runs in this process on
//! loopback; two accounts register as real `icephone` processes; alice
//! calls bob with a speech sample as her microphone, bob answers with a
//! tone, each records what they hear; then a summary of what ICE found,
//! how long each step took, the RTP figures and a measured check that the
//! audio arrived. `--relay` forces the call through TURN.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::audio::analysis::{align, tone_level};
use crate::audio::io::{builtin_speech, read_wav};
use crate::server::sip::{SipServer, SipServerConfig};
use crate::server::{ServeConfig, Server};
use crate::turn::TurnServerConfig;

const REALM: &str = "icephone.demo";
/// Bob's microphone: a tone alice's recording is checked for.
const BOB_TONE_HZ: f64 = 660.0;

pub struct DemoArgs {
    pub relay: bool,
    /// Where the recordings and reports go (default: a fresh temp folder).
    pub out: Option<PathBuf>,
    /// The whole demo gives up after this long.
    pub timeout: Duration,
}

pub async fn run(args: DemoArgs) -> ExitCode {
    match run_inner(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// The servers this process runs for the demo.
struct Servers {
    turn: Server,
    sip: SipServer,
    passwords: HashMap<String, String>,
}

async fn start_servers() -> Result<Servers, String> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut rng = rand::rng();
    let passwords: HashMap<String, String> = ["alice", "bob"]
        .iter()
        .map(|u| (u.to_string(), format!("demo-{:08x}", rng.next_u32())))
        .collect();
    let turn = TurnServerConfig {
        realm: REALM.into(),
        users: passwords.clone(),
        // The peers are on loopback too.
        allow_loopback_peers: true,
        software: Some(concat!("icephone ", env!("CARGO_PKG_VERSION")).into()),
        ..Default::default()
    };
    let config = ServeConfig {
        listen: vec![loopback],
        port: 0,
        rfc5780: false,
        turn,
        tls: None,
        sip: None,
    };
    let turn = Server::start(config).await.map_err(|e| e.to_string())?;
    let sip = SipServer::start(SipServerConfig {
        listen: vec![loopback],
        port: 0,
        realm: REALM.into(),
        users: passwords.clone(),
        min_expires: 60,
        tls: None,
        digest: Vec::new(),
    })
    .await
    .map_err(|e| format!("cannot start the SIP registrar: {e}"))?;
    Ok(Servers {
        turn,
        sip,
        passwords,
    })
}

/// A line one of the two phones printed.
struct Line {
    who: &'static str,
    text: String,
}

/// One `icephone` child process whose stdout lines come to `lines`.
struct Phone {
    child: Child,
}

impl Phone {
    fn spawn(
        who: &'static str,
        args: &[String],
        log: &Path,
        lines: mpsc::UnboundedSender<Line>,
    ) -> Result<Phone, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find icephone: {e}"))?;
        let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {who}'s phone: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(Line { who, text }).is_err() {
                    return;
                }
            }
        });
        Ok(Phone { child })
    }

    /// SIGTERM (unregisters and exits 0), then a kill if it lingers.
    async fn stop(mut self) {
        #[cfg(unix)]
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The flags both phones share: account, servers, ICE policy.
fn phone_flags(user: &str, servers: &Servers, relay: bool) -> Vec<String> {
    let sip = servers.sip.addrs[0];
    let turn = servers.turn.udp[0];
    let password = &servers.passwords[user];
    let mut flags = vec![
        "--aor".into(),
        format!("sip:{user}@{REALM}"),
        "--password".into(),
        password.clone(),
        "--registrar".into(),
        format!("sip:{sip};transport=udp"),
        "--stun".into(),
        format!("stun:{turn}"),
        "--turn".into(),
        format!("turn:{turn}"),
        "--turn-user".into(),
        user.into(),
        "--turn-password".into(),
        password.clone(),
    ];
    if relay {
        flags.extend(["--ice-policy".into(), "relay".into()]);
    }
    flags
}

async fn run_inner(args: DemoArgs) -> Result<bool, String> {
    let started = Instant::now();
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("icephone-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The caller's microphone: our own recording (`assets/make-speech`),
    // built into the binary so the demo needs no files.
    let speech = builtin_speech();
    let speech_path = dir.join("speech.wav");
    write_wav(&speech_path, &speech)?;
    let speech_secs = speech.len() as f64 / 48_000.0;

    println!(
        "icephone demo: alice calls bob on this machine{}\n",
        if args.relay {
            ", through the TURN relay (--relay)"
        } else {
            ""
        }
    );
    let servers = start_servers().await?;
    let progress = |what: &str, text: &str| {
        println!(
            "{:>6.2} s  {what:<6} {text}",
            started.elapsed().as_secs_f64()
        );
    };
    progress(
        "serve",
        &format!(
            "registrar and proxy on sip:{}, STUN and TURN on {} (in this process)",
            servers.sip.addrs[0], servers.turn.udp[0]
        ),
    );

    let (tx, mut lines) = mpsc::unbounded_channel();
    let bob_heard = dir.join("bob-heard.wav");
    let alice_heard = dir.join("alice-heard.wav");
    let mut bob_args = vec!["register".to_string()];
    bob_args.extend(phone_flags("bob", &servers, args.relay));
    bob_args.extend([
        "--auto-answer".into(),
        "--mic".into(),
        format!("tone:{BOB_TONE_HZ}"),
        "--speaker".into(),
        format!("file:{}", bob_heard.display()),
        "--report".into(),
        dir.join("bob.json").display().to_string(),
    ]);
    let bob = Phone::spawn("bob", &bob_args, &dir.join("bob.log"), tx.clone())?;

    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut alice: Option<Phone> = None;
    let mut bob_done = false;
    let mut alice_done = false;
    let mut failed = None;
    while !(alice_done && bob_done) {
        let line = match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(_) => {
                failed = Some(format!("no end within {:?}", args.timeout));
                break;
            }
        };
        progress(line.who, &line.text);
        match (line.who, line.text.as_str()) {
            ("bob", t) if t.starts_with("registered ") && alice.is_none() => {
                let mut alice_args = vec!["call".to_string(), format!("sip:bob@{REALM}")];
                alice_args.extend(phone_flags("alice", &servers, args.relay));
                alice_args.extend([
                    "--mic".into(),
                    format!("file:{}", speech_path.display()),
                    "--speaker".into(),
                    format!("file:{}", alice_heard.display()),
                    "--hangup-after".into(),
                    format!("{:.1}", speech_secs + 1.0),
                    "--report".into(),
                    dir.join("alice.json").display().to_string(),
                ]);
                alice = Some(Phone::spawn(
                    "alice",
                    &alice_args,
                    &dir.join("alice.log"),
                    tx.clone(),
                )?);
            }
            ("bob", t) if t.contains("report written") => bob_done = true,
            ("alice", t) if t.starts_with("unregistered") => alice_done = true,
            ("alice", t) if t.starts_with("error:") => {
                failed = Some(format!("alice: {t}"));
                break;
            }
            ("bob", t) if t.starts_with("error:") => {
                failed = Some(format!("bob: {t}"));
                break;
            }
            _ => {}
        }
        if let Some(a) = alice.as_mut() {
            if let Ok(Some(status)) = a.child.try_wait() {
                alice_done = true;
                if !status.success() && failed.is_none() {
                    failed = Some(format!(
                        "alice's phone exited with {status} (log: {})",
                        dir.join("alice.log").display()
                    ));
                }
            }
        }
    }
    bob.stop().await;
    if let Some(a) = alice {
        a.stop().await;
    }
    // The last lines (bob unregistering) before the summary.
    while let Ok(line) = lines.try_recv() {
        progress(line.who, &line.text);
    }
    let sip = servers.sip;
    sip.shutdown().await;
    servers.turn.shutdown();
    if let Some(why) = failed {
        println!("\nthe call did not complete: {why}");
        println!("logs and recordings: {}", dir.display());
        return Ok(false);
    }
    let ok = summary(&dir, &speech, &bob_heard, &alice_heard, args.relay)?;
    Ok(ok)
}

fn write_wav(path: &Path, samples: &[i16]) -> Result<(), String> {
    let mut sink = crate::audio::io::Sink::parse(&format!("file:{}", path.display()))
        .map_err(|e| e.to_string())?;
    sink.write(samples);
    sink.finish().map_err(|e| e.to_string())
}

fn read_report(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// "relay 127.0.0.1:50002 (TURN/udp via 127.0.0.1:3478)".
fn describe_candidate(c: &Value) -> String {
    let mut s = format!(
        "{} {}",
        c["type"].as_str().unwrap_or("?"),
        c["address"].as_str().unwrap_or("?")
    );
    if let Some(server) = c["relay"]["server"].as_str() {
        s.push_str(&format!(
            " (TURN/{} via {server})",
            c["relay"]["transport"].as_str().unwrap_or("?")
        ));
    }
    s
}

fn ms(v: &Value) -> String {
    v.as_f64()
        .map(|m| format!("{m:.0} ms"))
        .unwrap_or_else(|| "-".into())
}

/// Prints what the call did and checks the audio; true when it all held.
fn summary(
    dir: &Path,
    speech: &[i16],
    bob_heard: &Path,
    alice_heard: &Path,
    relay: bool,
) -> Result<bool, String> {
    let alice = read_report(&dir.join("alice.json"))?;
    let bob = read_report(&dir.join("bob.json"))?;
    let mut ok = true;
    println!("\n── what happened ───────────────────────────────────────────");
    for (who, r) in [("alice", &alice), ("bob", &bob)] {
        // Component 1 (RTP, and RTCP multiplexed on it); component 2 is
        // gathered only for peers that do not multiplex.
        let cands: Vec<String> = r["ice"]["local_candidates"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["component"] == 1)
                    .map(describe_candidate)
                    .collect()
            })
            .unwrap_or_default();
        println!("candidates   {who:<5} {}", cands.join(", "));
    }
    let sel = &alice["ice"]["selected_pair"];
    println!(
        "selected     {} <-> {}",
        describe_candidate(&sel["local"]),
        describe_candidate(&sel["remote"])
    );
    let want = if relay { "relay" } else { "host" };
    if sel["local"]["type"] != want {
        println!("             expected a {want} pair");
        ok = false;
    }
    let t = &alice["timing"];
    println!(
        "setup        INVITE -> 200 OK {}, 200 OK -> ICE connected {}, 200 OK -> first audio {}",
        ms(&t["invite_to_answer_ms"]),
        ms(&t["answer_to_ice_connected_ms"]),
        ms(&t["answer_to_first_audio_ms"])
    );
    for (who, r) in [("alice", &alice), ("bob", &bob)] {
        let rtp = &r["rtp"];
        println!(
            "rtp          {who:<5} sent {} received {} lost {} jitter {:.1} ms, MOS {}",
            rtp["packets_sent"],
            rtp["packets_received"],
            rtp["packets_lost"],
            rtp["jitter_ms"].as_f64().unwrap_or(0.0),
            r["quality"]["mos"]
                .as_f64()
                .map(|m| format!("{m:.2}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    // Bob's recording holds alice's speech: found by cross-correlation.
    let heard = read_wav(bob_heard).map_err(|e| e.to_string())?;
    match align(speech, &heard, 48_000 * 2) {
        Some(a) if a.correlation >= 0.5 => println!(
            "audio        bob heard alice's speech: correlation {:.2}, {} ms into his recording  OK",
            a.correlation,
            a.delay / 48
        ),
        found => {
            ok = false;
            println!("audio        bob did not hear alice's speech ({found:?})");
        }
    }
    let heard = read_wav(alice_heard).map_err(|e| e.to_string())?;
    let frames: Vec<&[i16]> = heard.chunks_exact(960).collect();
    let clear = frames
        .iter()
        .filter(|f| tone_level(f, BOB_TONE_HZ) >= 0.5)
        .count();
    let share = clear as f64 / frames.len().max(1) as f64;
    println!(
        "             alice heard bob's {BOB_TONE_HZ} Hz tone in {:.0} % of her recording{}",
        share * 100.0,
        if share >= 0.6 { "  OK" } else { "" }
    );
    ok &= share >= 0.6;
    println!("files        {} (recordings, reports, logs)", dir.display());
    println!(
        "\n{}",
        if ok {
            "OK: the call worked end to end."
        } else {
            "FAILED: see above."
        }
    );
    Ok(ok)
}
