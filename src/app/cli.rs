//! `icephone` command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "icephone",
    version,
    about = "A SIP softphone with its own ICE, STUN and TURN stack"
)]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. `debug` or `icephone::ice=trace`.
    /// Logs go to stderr (the phone's to its log file). Overrides RUST_LOG.
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// Without a command: the phone's configuration file (default:
    /// ~/.config/icephone/icephone.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole phone on this machine: serve, two accounts, a call with speech, a summary.
    Demo {
        /// Force the call through the TURN relay.
        #[arg(long)]
        relay: bool,
        /// Keep the recordings, reports and logs in this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Report your public address and, with an RFC 5780 server, your NAT's behaviour.
    NatCheck {
        /// STUN server: stun:HOST[:PORT], HOST[:PORT] or [IPv6]:PORT (port 3478 by default).
        #[arg(long)]
        stun: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Seconds the whole check may take before giving up.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Run the embedded STUN/TURN server and SIP registrar/proxy until Ctrl-C or SIGTERM.
    Serve(super::serve::ServeArgs),
    /// Register a SIP account, keep it registered until Ctrl-C or SIGTERM, then unregister.
    Register {
        #[command(flatten)]
        account: super::account::AccountArgs,
        /// Seconds the first registration may take before giving up.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Answer incoming calls (180 Ringing, then 200 OK).
        #[arg(long)]
        auto_answer: bool,
        #[command(flatten)]
        audio: super::call::MediaFlags,
        /// Write a JSON report of each answered call here (`{call}` in the
        /// path becomes the call's number; without it the last call wins).
        #[arg(long, value_name = "PATH.json")]
        report: Option<std::path::PathBuf>,
    },
    /// Register, call a SIP URI, stay in the call, hang up, unregister.
    Call {
        /// Who to call: sip:USER@HOST[:PORT] (or USER@HOST).
        to: String,
        #[command(flatten)]
        account: super::account::AccountArgs,
        /// Seconds the first registration may take before giving up.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Hang up this many seconds after the answer (default: on Ctrl-C).
        #[arg(long, value_name = "SECS")]
        hangup_after: Option<f64>,
        #[command(flatten)]
        audio: super::call::MediaFlags,
        /// Write a JSON call report (SIP timeline, ICE candidates and pairs,
        /// timings, RTP figures, MOS estimate) to this file.
        #[arg(long, value_name = "PATH.json")]
        report: Option<std::path::PathBuf>,
        /// Put the call on hold (re-INVITE, sendonly) SECS after the answer.
        #[arg(long, value_name = "SECS")]
        hold_after: Option<f64>,
        /// Take it off hold SECS after the answer.
        #[arg(long, value_name = "SECS")]
        resume_after: Option<f64>,
        /// Send these keys as RFC 4733 events once the audio runs
        /// (0-9, *, #, A-D).
        #[arg(long, value_name = "KEYS")]
        dtmf: Option<String>,
        /// Restart ICE (re-INVITE with new credentials) SECS after the answer.
        #[arg(long, value_name = "SECS")]
        ice_restart_after: Option<f64>,
    },
    /// Load generators for STUN/TURN servers (ours or coturn): see scripts/bench-turn.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Render a call report (from `call --report`) as a self-contained HTML page.
    Report {
        /// The JSON call report.
        report: std::path::PathBuf,
        /// Where to write the page.
        #[arg(long, value_name = "OUT.html")]
        html: std::path::PathBuf,
    },
    /// List the sound devices --mic and --speaker can name.
    Devices {
        /// Print one JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Allocate on a TURN server, relay a few datagrams to a local echo peer, report, release.
    TurnProbe {
        /// TURN server: turn:HOST[:PORT][?transport=udp|tcp] (port 3478 by
        /// default) or turns:HOST[:PORT] (TLS, port 5349 by default).
        #[arg(long)]
        turn: String,
        /// TURN username (long-term credentials).
        #[arg(long)]
        user: String,
        /// TURN password. Never logged.
        #[arg(long)]
        password: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Seconds the whole probe may take before giving up.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// For turns: trust the CA certificates in this PEM file besides
        /// the system's (a private CA, or a self-signed server certificate).
        #[arg(long, value_name = "FILE")]
        ca: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Binding requests per second with a window of outstanding requests.
    Stun {
        /// Server address, IP:PORT.
        #[arg(long)]
        server: std::net::SocketAddr,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        window: usize,
        #[arg(long)]
        json: bool,
    },
    /// ChannelData relayed per second through one allocation to a local echo peer.
    Relay {
        /// TURN server address, IP:PORT (UDP).
        #[arg(long)]
        server: std::net::SocketAddr,
        #[arg(long)]
        user: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        window: usize,
        /// Payload bytes per datagram (at least 16).
        #[arg(long, default_value_t = 160)]
        size: usize,
        #[arg(long)]
        json: bool,
    },
    /// One call's audio CPU per 20 ms frame (Opus with FEC, RTP, jitter
    /// buffer, both directions), and so calls per core.
    Media {
        #[arg(long, default_value_t = 3000)]
        frames: u64,
        #[arg(long)]
        json: bool,
    },
    /// Share of audio frames that survive random loss and jitter, with
    /// FEC and concealment against without (virtual time).
    Quality {
        /// Percent of packets lost at random.
        #[arg(long, default_value_t = 5.0)]
        loss: f64,
        /// Extra delay drawn uniformly from 0 to twice this, ms.
        #[arg(long, default_value_t = 30)]
        jitter: u64,
        /// Seconds of simulated call.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long)]
        json: bool,
    },
    /// Full SIP registrations (401, signed REGISTER, 200) per second.
    Register {
        #[command(flatten)]
        sip: SipBenchFlags,
    },
    /// SIP call setups (INVITE, 407, signed INVITE, 200) per second, each
    /// followed by ACK and BYE, to a callee the generator registers itself.
    Call {
        #[command(flatten)]
        sip: SipBenchFlags,
    },
}

#[derive(clap::Args, Debug)]
pub struct SipBenchFlags {
    /// Registrar/proxy address, IP:PORT (UDP).
    #[arg(long)]
    server: std::net::SocketAddr,
    /// The accounts' domain (the server's realm).
    #[arg(long)]
    domain: String,
    /// Accounts are PREFIX0…PREFIX(window-1) (and PREFIXcallee for calls).
    #[arg(long, default_value = "bench")]
    prefix: String,
    #[arg(long)]
    password: String,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Exchanges in flight at once (one account each).
    #[arg(long, default_value_t = 16)]
    window: usize,
    #[arg(long)]
    json: bool,
}

impl SipBenchFlags {
    fn into_args(self) -> (super::bench_sip::SipBenchArgs, bool) {
        let json = self.json;
        let args = super::bench_sip::SipBenchArgs {
            server: self.server,
            domain: self.domain,
            prefix: self.prefix,
            password: self.password,
            duration: Duration::from_secs(self.seconds),
            window: self.window.max(1),
        };
        (args, json)
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_none() {
        // The phone owns the screen: logs go to a file.
        let path = super::phone::log_path();
        if let Err(e) = init_file_logging(cli.log.as_deref(), &path) {
            eprintln!("error: cannot open the log file {}: {e}", path.display());
            return ExitCode::from(2);
        }
    } else {
        init_logging(cli.log.as_deref());
    }
    // `serve` runs its core behind one lock, so a second worker thread
    // only adds cross-thread wake-ups: on one thread a packet's reader task
    // and the relay's run back to back. The clients keep two workers.
    let runtime = if matches!(cli.command, Some(Command::Serve { .. })) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(command) = cli.command else {
        return runtime.block_on(super::phone::run(cli.config));
    };
    if let Command::Report { report, html } = command {
        return render_report(&report, &html);
    }
    if let Command::Devices { json } = command {
        return list_devices(json);
    }
    if let Command::Bench(bench) = command {
        return match bench {
            BenchCommand::Stun {
                server,
                seconds,
                window,
                json,
            } => {
                let r = super::bench::stun(server, Duration::from_secs(seconds), window.max(1));
                super::bench::print(&r, json)
            }
            BenchCommand::Relay {
                server,
                user,
                password,
                seconds,
                window,
                size,
                json,
            } => {
                let r = super::bench::relay(super::bench::RelayArgs {
                    server,
                    user,
                    password,
                    duration: Duration::from_secs(seconds),
                    window: window.max(1),
                    size: size.clamp(16, 1200),
                });
                super::bench::print(&r, json)
            }
            BenchCommand::Media { frames, json } => super::bench_media::run(frames, json),
            BenchCommand::Quality {
                loss,
                jitter,
                seconds,
                json,
            } => super::bench_quality::run(loss, jitter, seconds, json),
            BenchCommand::Register { sip } => {
                let (args, json) = sip.into_args();
                super::bench::print(&super::bench_sip::register(args), json)
            }
            BenchCommand::Call { sip } => {
                let (args, json) = sip.into_args();
                super::bench::print(&super::bench_sip::call(args), json)
            }
        };
    }
    runtime.block_on(async move {
        match command {
            Command::Bench(_) | Command::Devices { .. } | Command::Report { .. } => {
                unreachable!("bench, devices and report run without the runtime, above")
            }
            Command::Demo {
                relay,
                out,
                timeout,
            } => {
                super::demo::run(super::demo::DemoArgs {
                    relay,
                    out,
                    timeout: Duration::from_secs(timeout),
                })
                .await
            }
            Command::NatCheck {
                stun,
                json,
                timeout,
            } => super::nat_check::run(&stun, json, Duration::from_secs(timeout)).await,
            Command::Serve(args) => super::serve::run(args).await,
            Command::Register {
                account,
                timeout,
                auto_answer,
                audio,
                report,
            } => {
                super::register::run(super::register::RegisterArgs {
                    account,
                    timeout: Duration::from_secs(timeout),
                    auto_answer,
                    audio,
                    report,
                })
                .await
            }
            Command::Call {
                to,
                account,
                timeout,
                hangup_after,
                audio,
                report,
                hold_after,
                resume_after,
                dtmf,
                ice_restart_after,
            } => {
                let secs = |v: Option<f64>, flag: &str| match v.map(Duration::try_from_secs_f64) {
                    Some(Err(_)) => Err(format!("--{flag} must be a number of seconds, 0 or more")),
                    other => Ok(other.and_then(Result::ok)),
                };
                let parsed = (
                    secs(hangup_after, "hangup-after"),
                    secs(hold_after, "hold-after"),
                    secs(resume_after, "resume-after"),
                    secs(ice_restart_after, "ice-restart-after"),
                );
                let (hangup_after, hold_after, resume_after, ice_restart_after) = match parsed {
                    (Ok(a), Ok(h), Ok(r), Ok(i)) => (a, h, r, i),
                    (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
                super::call::run(super::call::CallArgs {
                    account,
                    audio,
                    report,
                    hold_after,
                    resume_after,
                    dtmf,
                    ice_restart_after,
                    to,
                    timeout: Duration::from_secs(timeout),
                    hangup_after,
                })
                .await
            }
            Command::TurnProbe {
                turn,
                user,
                password,
                json,
                timeout,
                ca,
            } => {
                super::turn_probe::run(super::turn_probe::ProbeArgs {
                    turn: &turn,
                    user: &user,
                    password: &password,
                    json,
                    timeout: Duration::from_secs(timeout),
                    ca: ca.as_deref(),
                })
                .await
            }
        }
    })
}

fn list_devices(json: bool) -> ExitCode {
    let devices = match crate::audio::device::list() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        let rows: Vec<serde_json::Value> = devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name, "description": d.description,
                    "input": d.input, "output": d.output, "default": d.is_default,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return ExitCode::SUCCESS;
    }
    if devices.is_empty() {
        println!("no sound devices (is a sound server running?); use --mic file:PATH.wav or tone:HZ and --speaker file:PATH.wav or null");
    }
    for d in &devices {
        let kind = match (d.input, d.output) {
            (true, true) => "in/out",
            (true, false) => "mic",
            (false, true) => "speaker",
            (false, false) => "-",
        };
        let default = if d.is_default { " (default)" } else { "" };
        println!("{kind:8} {}{default}  {}", d.name, d.description);
    }
    ExitCode::SUCCESS
}

fn render_report(report: &std::path::Path, html: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(report) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", report.display());
            return ExitCode::from(2);
        }
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {} is not a call report: {e}", report.display());
            return ExitCode::from(2);
        }
    };
    if !value.is_object() || value.get("sip").is_none() {
        eprintln!(
            "error: {} is not a call report (no \"sip\" key)",
            report.display()
        );
        return ExitCode::from(2);
    }
    match std::fs::write(html, super::report_html::render(&value)) {
        Ok(()) => {
            println!("wrote {}", html.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", html.display());
            ExitCode::from(2)
        }
    }
}

fn init_file_logging(filter: Option<&str>, path: &std::path::Path) -> std::io::Result<()> {
    use tracing_subscriber::EnvFilter;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;

    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    // Colours only on a terminal: logs redirected to a file or read by a
    // script must not carry escape codes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
