//! `icephone call URI`: register, call, wait for the answer, stay in the
//! call for `--hangup-after` seconds or until Ctrl-C / the far end hangs
//! up, hang up, unregister.
//!
//! The offer carries our ICE candidates (`call::CallMedia`); once the
//! answer arrives ICE runs its checks and the selected pair is printed.
//! Audio over that pair is the media path's next step.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::account::{parse_sip_uri, AccountArgs};
use super::register::{describe, describe_pair, finish, start};
use super::report::{finish_report, CallReport, Moments};
use super::server_addr::{parse_stun_server, parse_turn_server, resolve};
use super::sleep_until;
use crate::audio::io::{Sink, Source};
use crate::call::audio::AudioReport;
use crate::call::recovery::Refused;
use crate::call::{CallMedia, MediaError, MediaOptions, PathRecovery};
use crate::net::sip_ua::UaCommand;
use crate::sip::ua::UaEvent;

/// Where a call's audio comes from and goes to, and how ICE gathers.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MediaFlags {
    /// STUN server for server-reflexive candidates: stun:HOST[:PORT]
    /// (repeatable).
    #[arg(long, value_name = "URL")]
    pub stun: Vec<String>,
    /// TURN server for relayed candidates: turn:HOST[:PORT], with
    /// ?transport=tcp over TCP, turns:HOST[:PORT] over TLS (repeatable).
    #[arg(long, value_name = "URL")]
    pub turn: Vec<String>,
    /// TURN user name (long-term credentials).
    #[arg(long)]
    pub turn_user: Option<String>,
    /// TURN password.
    #[arg(long, env = "ICEPHONE_TURN_PASSWORD", hide_env_values = true)]
    pub turn_password: Option<String>,
    /// all: host, server-reflexive and relayed candidates; relay: relayed
    /// only (needs --turn); none: no ICE in our SDP at all (plain RTP, for
    /// peers and gateways that cannot take it) [default: all].
    #[arg(long, value_parser = ["all", "relay", "none"])]
    pub ice_policy: Option<String>,
    /// Voice codecs to offer or accept, in order [default: opus,pcmu,pcma].
    #[arg(long, value_delimiter = ',')]
    pub codecs: Vec<String>,
    /// Microphone: default, a device (`icephone devices`), tone:HZ,
    /// file:PATH.wav or silence. `default` is silence where there is no
    /// sound device [default: default].
    #[arg(long)]
    pub mic: Option<String>,
    /// Speaker: default, a device, file:PATH.wav or null. `default` is
    /// null where there is no sound device [default: default].
    #[arg(long)]
    pub speaker: Option<String>,
    /// TURN servers with their own credentials, from the config file.
    #[arg(skip)]
    pub turn_servers: Vec<(String, String, String)>,
    /// From the config file only: nomination and jitter buffer bounds.
    #[arg(skip)]
    pub tuning: Tuning,
}

/// Settings with no flag of their own: `[ice] nomination`, `[audio]
/// jitter_min_ms` and `jitter_max_ms`.
#[derive(Clone, Debug, Default)]
pub struct Tuning {
    pub nomination: crate::ice::Nomination,
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
}

impl MediaFlags {
    /// Fills what no flag gave from the configuration file's `[ice]` and
    /// `[audio]`, then the built-in defaults. Flags win.
    pub fn apply_config(&mut self, config: &super::config::Config) -> Result<(), String> {
        let (ice, audio) = (&config.ice, &config.audio);
        if self.stun.is_empty() {
            self.stun = ice.stun.clone();
        }
        if self.turn.is_empty() {
            for t in &ice.turn {
                let password = t.password().map_err(|e| e.to_string())?.ok_or_else(|| {
                    format!("[[ice.turn]] {}: no password or password_command", t.url)
                })?;
                self.turn_servers
                    .push((t.url.clone(), t.user.clone(), password));
            }
        }
        if self.ice_policy.is_none() {
            self.ice_policy = Some(ice.policy.map_or("all", |p| p.as_str()).to_owned());
        }
        if self.codecs.is_empty() {
            self.codecs = audio
                .codecs
                .clone()
                .unwrap_or_else(|| ["opus", "pcmu", "pcma"].map(String::from).to_vec());
        }
        if let Some(ptime) = audio.ptime.filter(|p| *p != 20) {
            return Err(format!(
                "[audio] ptime = {ptime}: icephone sends 20 ms packets only"
            ));
        }
        let (min, max) = (
            audio.jitter_min_ms.unwrap_or(0),
            audio.jitter_max_ms.unwrap_or(0),
        );
        if max != 0 && min > max {
            return Err(format!(
                "[audio] jitter_min_ms = {min} is above jitter_max_ms = {max}"
            ));
        }
        self.tuning = Tuning {
            nomination: match ice.nomination {
                Some(super::config::NominationName::Aggressive) => {
                    crate::ice::Nomination::Aggressive
                }
                _ => crate::ice::Nomination::Regular,
            },
            jitter_min_ms: min,
            jitter_max_ms: max,
        };
        self.mic
            .get_or_insert_with(|| audio.mic.clone().unwrap_or_else(|| "default".into()));
        self.speaker
            .get_or_insert_with(|| audio.speaker.clone().unwrap_or_else(|| "default".into()));
        Ok(())
    }

    /// [`Self::apply_config`] with the file `--config` names (or the user's).
    pub fn load_config(&mut self, path: Option<&std::path::Path>) -> Result<(), String> {
        let config = super::config::Config::find(path).map_err(|e| e.to_string())?;
        self.apply_config(&config)
    }

    /// `--mic`, once [`Self::apply_config`] ran (`default` before).
    pub fn mic(&self) -> &str {
        self.mic.as_deref().unwrap_or("default")
    }

    pub fn speaker(&self) -> &str {
        self.speaker.as_deref().unwrap_or("default")
    }

    /// The STUN and TURN servers, resolved; a bad one is an error naming
    /// it. `ca`: extra trust for `turns:` servers.
    pub async fn ice_options(&self, ca: Option<&std::path::Path>) -> Result<MediaOptions, String> {
        let policy = self.ice_policy.as_deref().unwrap_or("all");
        let mut options = MediaOptions {
            relay_only: policy == "relay",
            no_ice: policy == "none",
            nomination: self.tuning.nomination,
            jitter_min_ms: self.tuning.jitter_min_ms,
            jitter_max_ms: self.tuning.jitter_max_ms,
            ..MediaOptions::default()
        };
        let mut turn: Vec<(String, String, String)> = Vec::new();
        for url in &self.turn {
            let (Some(user), Some(password)) = (&self.turn_user, &self.turn_password) else {
                return Err("--turn needs --turn-user and --turn-password".into());
            };
            turn.push((url.clone(), user.clone(), password.clone()));
        }
        turn.extend(self.turn_servers.iter().cloned());
        for (url, user, password) in &turn {
            let server = parse_turn_server(url).map_err(|e| format!("--turn {url}: {e}"))?;
            let tls = match server.transport {
                crate::turn::TurnTransport::Tls => Some(crate::net::tls::TlsClient {
                    config: crate::net::tls::client_config(ca).map_err(|e| format!("--ca: {e}"))?,
                    server_name: crate::net::tls::server_name(&server.name.host)
                        .map_err(|e| format!("--turn {url}: {e}"))?,
                }),
                _ => None,
            };
            let addr = resolve(&server.name)
                .await
                .map_err(|e| format!("--turn {url}: {e}"))?;
            let mut config = crate::turn::TurnClientConfig::new(addr, user, password);
            config.transport = server.transport;
            options.turn.push(crate::net::RelayServer { config, tls });
        }
        if options.relay_only && options.turn.is_empty() {
            return Err("--ice-policy relay needs a --turn server".into());
        }
        for name in &self.codecs {
            match crate::sdp::CodecName::from_encoding(name.trim()) {
                Some(c) if c != crate::sdp::CodecName::TelephoneEvent => options.codecs.push(c),
                _ => {
                    return Err(format!(
                        "--codecs: unknown codec {name:?} (opus, pcmu, pcma)"
                    ))
                }
            }
        }
        for url in &self.stun {
            let name = parse_stun_server(url).map_err(|e| format!("--stun {url}: {e}"))?;
            let addr = resolve(&name)
                .await
                .map_err(|e| format!("--stun {url}: {e}"))?;
            options.stun.push(addr);
        }
        Ok(options)
    }

    /// Checks both without holding a sound device.
    pub async fn check(&self) -> Result<(), String> {
        let (mic, speaker) = (self.mic().to_owned(), self.speaker().to_owned());
        tokio::task::spawn_blocking(move || crate::audio::io::check_specs(&mic, &speaker))
            .await
            .map_err(|e| format!("audio: {e}"))?
    }

    /// Opens both, with a clear error naming the flag. Sound devices take
    /// a second or two to start, so this runs off the async workers.
    pub async fn open(&self) -> Result<(Source, Sink), String> {
        let (mic, speaker) = (self.mic().to_owned(), self.speaker().to_owned());
        tokio::task::spawn_blocking(move || {
            let source = Source::parse(&mic).map_err(|e| format!("--mic: {e}"))?;
            let sink = Sink::parse(&speaker).map_err(|e| format!("--speaker: {e}"))?;
            Ok((source, sink))
        })
        .await
        .map_err(|e| format!("audio: {e}"))?
    }
}

/// "rtp sent 150 received 149 lost 0 jitter 0.4 ms first audio after 61 ms".
pub fn describe_audio(r: &AudioReport) -> String {
    let first = r
        .first_packet_after
        .map(|d| format!("{} ms", d.as_millis()))
        .unwrap_or_else(|| "never".into());
    let mut line = format!(
        "rtp sent {} received {} lost {} jitter {:.1} ms first audio after {first}",
        r.packets_sent, r.packets_received, r.packets_lost, r.jitter_ms
    );
    for (what, keys) in [("sent", &r.dtmf_sent), ("received", &r.dtmf_received)] {
        if !keys.is_empty() {
            line.push_str(&format!(" dtmf {what} {keys}"));
        }
    }
    line
}

pub struct CallArgs {
    pub account: AccountArgs,
    pub audio: MediaFlags,
    /// Write the JSON call report here.
    pub report: Option<std::path::PathBuf>,
    /// Put the call on hold (re-INVITE, sendonly) this long after the
    /// answer, and take it off again at `resume_after`.
    pub hold_after: Option<Duration>,
    pub resume_after: Option<Duration>,
    /// Keys to send (RFC 4733) once the audio runs.
    pub dtmf: Option<String>,
    /// Restart ICE (re-INVITE with new credentials) this long after the answer.
    pub ice_restart_after: Option<Duration>,
    pub to: String,
    pub timeout: Duration,
    /// Hang up this long after the answer; `None`: stay until Ctrl-C.
    pub hangup_after: Option<Duration>,
}

pub async fn run(mut args: CallArgs) -> ExitCode {
    let stop = crate::net::shutdown_signal();
    if let Err(e) = args.audio.load_config(args.account.config.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let to = match args.to.trim() {
        t if t.starts_with("sip:") => parse_sip_uri(t, "to"),
        t => parse_sip_uri(&format!("sip:{t}"), "to"),
    };
    let to = match to {
        Ok(to) if to.user.is_some() => to,
        Ok(_) => {
            eprintln!("error: the callee must name a user: sip:USER@HOST");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Bad audio flags fail before anything is registered.
    let (source, sink) = match args.audio.open().await {
        Ok(io) => io,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut audio_io = Some((source, sink));
    let options = match args.audio.ice_options(args.account.ca.as_deref()).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut audio = None;
    let mut session = match start(&args.account, args.timeout).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    session.options = options;
    let mut media = match CallMedia::start(session.local_ip, true, &session.options).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            let _ = finish(session).await;
            return ExitCode::from(2);
        }
    };
    let (reply, handle) = oneshot::channel();
    let body = media.offer();
    println!("calling {to}");
    let sent = Instant::now();
    let mut moments = Moments::starting(sent);
    let mut report = CallReport::between(session.account.aor.to_string(), to.to_string());
    report.record(&moments, "INVITE", true);
    let mut selected = None;
    let _ = session.handle.commands.send(UaCommand::Invite {
        to: to.clone(),
        body,
        reply,
    });
    let Ok(call) = handle.await else {
        eprintln!("error: the SIP user agent stopped");
        return ExitCode::from(2);
    };
    tokio::pin!(stop);
    let mut hangup_at: Option<tokio::time::Instant> = None;
    // Re-INVITEs still to send, soonest first.
    let mut changes: Vec<(tokio::time::Instant, Change)> = Vec::new();
    // A restart of ours is out (by hand, or to repair a lost path).
    let mut restarting = false;
    let mut recovery = PathRecovery::new(true);
    let mut outcome = ExitCode::SUCCESS;
    let mut hung_up = false;
    loop {
        let hangup_due = sleep_until(hangup_at);
        let hold_due = sleep_until(changes.first().map(|(at, _)| *at));
        let restart_due = sleep_until(recovery.restart_at());
        let give_up_due = sleep_until(recovery.give_up_at());
        tokio::select! {
            _ = &mut stop, if !hung_up => {
                hung_up = true;
                report.record(&moments, if moments.answer.is_some() { "BYE" } else { "CANCEL" }, true);
                let _ = session.handle.commands.send(UaCommand::Hangup(call));
            }
            _ = hold_due, if !hung_up => {
                let (_, change) = changes.remove(0);
                let body = match change {
                    Change::Hold => media.reoffer(true),
                    Change::Resume => media.reoffer(false),
                    Change::RestartIce => match media.restart_offer().await {
                        Ok(body) => {
                            restarting = true;
                            body
                        }
                        Err(e) => {
                            println!("ICE restart failed: {e}");
                            continue;
                        }
                    },
                };
                report.record(&moments, "INVITE (re-INVITE)", true);
                let _ = session.handle.commands.send(UaCommand::ReInvite { call, body });
            }
            // Consent lost mid-call (RFC 7675), typically a NAT that forgot
            // its mappings: re-open signalling at once (a keep-alive, which
            // re-registers from a new mapping); the restart follows
            // (`call::recovery`). Or the path came back.
            state = media.path_change(recovery.is_lost()), if moments.answer.is_some() && !restarting && !hung_up => {
                if recovery.is_lost() {
                    println!("ice found the path again ({})", state.as_str());
                    recovery.on_restored();
                } else {
                    let _ = session.handle.commands.send(UaCommand::KeepAliveNow);
                    println!("ice lost the path ({}): restarting ICE", state.as_str());
                    recovery.on_lost(Instant::now());
                }
            }
            _ = restart_due, if !hung_up && !restarting => match media.restart_offer().await {
                Ok(body) => {
                    recovery.on_restart_sent();
                    restarting = true;
                    report.record(&moments, "INVITE (re-INVITE)", true);
                    let _ = session.handle.commands.send(UaCommand::ReInvite { call, body });
                }
                Err(e) => {
                    println!("ICE restart failed: {e}");
                    recovery.on_restart_failed();
                }
            },
            _ = give_up_due, if !hung_up => {
                println!("the media path did not come back in {} s: hanging up", crate::call::recovery::GIVE_UP.as_secs());
                outcome = ExitCode::from(1);
                hung_up = true;
                report.record(&moments, "BYE", true);
                let _ = session.handle.commands.send(UaCommand::Hangup(call));
            }
            _ = hangup_due, if !hung_up => {
                hung_up = true;
                report.record(&moments, "BYE", true);
                let _ = session.handle.commands.send(UaCommand::Hangup(call));
            }
            event = session.handle.events.recv() => match event {
                Some(UaEvent::CallProgress { code, reason, .. }) => {
                    println!("{code} {reason}");
                    report.record(&moments, &format!("{code} {reason}"), false);
                }
                Some(UaEvent::CallAnswered { body, .. }) => {
                    println!("answered after {} ms", sent.elapsed().as_millis());
                    moments.answer = Some(Instant::now());
                    report.record(&moments, "200 OK", false);
                    report.record(&moments, "ACK", true);
                    // The audio starts with the answer: its packets go out
                    // as soon as ICE has a valid pair, before nomination
                    // (RFC 8445 §12.1), and not at all before one.
                    let applied = media.apply_answer(&body);
                    if applied.is_ok() {
                        if let Some((source, sink)) = audio_io.take() {
                            audio = media.start_audio(source, sink);
                            moments.audio_started = Some(Instant::now());
                        }
                    }
                    let connected = match applied {
                        Ok(()) => media.connected(Duration::from_secs(15)).await,
                        Err(e) => Err(e),
                    };
                    match connected {
                        Ok(pair) => {
                            println!("{}", describe_pair(&pair));
                            moments.ice_connected = Some(Instant::now());
                            selected = Some(pair);
                            if let (Some(a), Some(keys)) = (&audio, &args.dtmf) {
                                a.send_dtmf(keys);
                            }
                        }
                        Err(e) => {
                            println!("{e}");
                            if !matches!(e, MediaError::NoIce(_)) {
                                outcome = ExitCode::from(1);
                                hung_up = true;
                                let _ = session.handle.commands.send(UaCommand::Hangup(call));
                            }
                        }
                    }
                    let answered = tokio::time::Instant::now();
                    hangup_at = args.hangup_after.map(|d| answered + d);
                    changes.extend(args.hold_after.map(|d| (answered + d, Change::Hold)));
                    changes.extend(args.resume_after.map(|d| (answered + d, Change::Resume)));
                    changes.extend(args.ice_restart_after.map(|d| (answered + d, Change::RestartIce)));
                    changes.sort_by_key(|(at, _)| *at);
                }
                Some(UaEvent::CallUpdated { code, body, .. }) => {
                    report.record(&moments, &format!("{code} (re-INVITE)"), false);
                    if (200..300).contains(&code) {
                        match media.apply_reanswer(&body) {
                            Ok(d) => println!("re-INVITE answered: media now {}", d.token()),
                            Err(e) => println!("re-INVITE answer unusable: {e}"),
                        }
                        if std::mem::take(&mut restarting) {
                            recovery.on_restart_answered();
                            match media.connected(Duration::from_secs(15)).await {
                                Ok(pair) => {
                                    println!("ice restarted: {}", describe_pair(&pair));
                                    selected = Some(pair);
                                    recovery.on_restored();
                                }
                                Err(e) => println!("ICE restart failed: {e}"),
                            }
                        }
                    } else {
                        println!("re-INVITE refused: {code}");
                        restarting = false;
                        // A restart that did not get through (a connection
                        // the NAT killed, glare…) is tried again.
                        match recovery.on_refused(Instant::now(), code) {
                            Refused::RetryAt(_) => println!("ICE restart: trying again"),
                            Refused::Exhausted => println!("ICE restart failed: every re-INVITE refused"),
                            Refused::NotOurs => {}
                        }
                    }
                }
                Some(UaEvent::CallEnded { end, .. }) => {
                    println!("call ended: {}", describe(&end));
                    moments.ended = Some(Instant::now());
                    report.call.ended = describe(&end);
                    if matches!(end, crate::sip::calls::CallEnd::Remote) {
                        report.record(&moments, "BYE", false);
                    }
                    if !matches!(end, crate::sip::calls::CallEnd::Local | crate::sip::calls::CallEnd::Remote) {
                        outcome = ExitCode::from(1);
                    }
                    break;
                }
                Some(other) => tracing::debug!(?other, "UA event"),
                None => {
                    eprintln!("error: the SIP user agent stopped");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let audio_report = match audio {
        Some(audio) => {
            let r = audio.stop().await;
            println!("{}", describe_audio(&r));
            Some(r)
        }
        None => None,
    };
    if let Some(path) = &args.report {
        finish_report(
            &mut report,
            &moments,
            &media,
            selected.as_ref(),
            audio_report.as_ref(),
        );
        match report.write(path) {
            Ok(()) => println!("report written to {}", path.display()),
            Err(e) => eprintln!("error: cannot write the report: {e}"),
        }
    }
    // BYE is out; the relays are released before the registration goes.
    media.shutdown().await;
    let unregistered = finish(session).await;
    if outcome == ExitCode::SUCCESS {
        unregistered
    } else {
        outcome
    }
}

/// A change to the session made by re-INVITE.
#[derive(Clone, Copy, Debug)]
enum Change {
    Hold,
    Resume,
    RestartIce,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn apply(text: &str) -> Result<MediaFlags, String> {
        let config = super::super::config::Config::parse(text, Path::new("t.toml"))
            .map_err(|e| e.to_string())?;
        let mut flags = MediaFlags::default();
        flags.apply_config(&config)?;
        Ok(flags)
    }

    #[test]
    fn audio_and_ice_tuning_come_from_the_file_and_nonsense_is_refused() {
        let f = apply("[ice]\nnomination = \"aggressive\"\n[audio]\njitter_min_ms = 40\njitter_max_ms = 400\n").unwrap();
        assert_eq!(f.tuning.nomination, crate::ice::Nomination::Aggressive);
        assert_eq!((f.tuning.jitter_min_ms, f.tuning.jitter_max_ms), (40, 400));
        let err = apply("[audio]\nptime = 40\n").unwrap_err();
        assert!(err.contains("20 ms"), "{err}");
        let err = apply("[audio]\njitter_min_ms = 500\njitter_max_ms = 100\n").unwrap_err();
        assert!(err.contains("jitter_min_ms"), "{err}");
        // Flags win over the file.
        let config =
            super::super::config::Config::parse("[audio]\nmic = \"tone:300\"\n", Path::new("t"))
                .unwrap();
        let mut flags = MediaFlags {
            mic: Some("silence".into()),
            ..MediaFlags::default()
        };
        flags.apply_config(&config).unwrap();
        assert_eq!(flags.mic(), "silence");
    }
}
