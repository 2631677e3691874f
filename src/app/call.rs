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
use crate::audio::io::{Sink, Source};
use crate::call::audio::AudioReport;
use crate::call::media::SelectedPair;
use crate::call::{CallMedia, MediaError};
use crate::net::sip_ua::UaCommand;
use crate::sip::ua::UaEvent;

/// Where a call's audio comes from and goes to.
#[derive(clap::Args, Clone, Debug)]
pub struct AudioFlags {
    /// Microphone: tone:HZ, file:PATH.wav or silence (sound devices come
    /// with the phone).
    #[arg(long, default_value = "silence")]
    pub mic: String,
    /// Speaker: file:PATH.wav or null.
    #[arg(long, default_value = "null")]
    pub speaker: String,
}

impl AudioFlags {
    /// Opens both, with a clear error naming the flag.
    pub fn open(&self) -> Result<(Source, Sink), String> {
        let source = Source::parse(&self.mic).map_err(|e| format!("--mic: {e}"))?;
        let sink = Sink::parse(&self.speaker).map_err(|e| format!("--speaker: {e}"))?;
        Ok((source, sink))
    }
}

/// "rtp sent 150 received 149 lost 0 jitter 0.4 ms first audio after 61 ms".
pub fn describe_audio(r: &AudioReport) -> String {
    let first = r
        .first_packet_after
        .map(|d| format!("{} ms", d.as_millis()))
        .unwrap_or_else(|| "never".into());
    format!(
        "rtp sent {} received {} lost {} jitter {:.1} ms first audio after {first}",
        r.packets_sent, r.packets_received, r.packets_lost, r.jitter_ms
    )
}

pub struct CallArgs {
    pub account: AccountArgs,
    pub audio: AudioFlags,
    pub to: String,
    pub timeout: Duration,
    /// Hang up this long after the answer; `None`: stay until Ctrl-C.
    pub hangup_after: Option<Duration>,
}

pub async fn run(args: CallArgs) -> ExitCode {
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
    let (source, sink) = match args.audio.open() {
        Ok(io) => io,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut audio_io = Some((source, sink));
    let mut audio = None;
    let mut session = match start(&args.account, args.timeout).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
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
    let _ = session.handle.commands.send(UaCommand::Invite {
        to: to.clone(),
        body,
        reply,
    });
    let Ok(call) = handle.await else {
        eprintln!("error: the SIP user agent stopped");
        return ExitCode::from(2);
    };
    let stop = crate::net::shutdown_signal();
    tokio::pin!(stop);
    let mut hangup_at: Option<tokio::time::Instant> = None;
    let mut outcome = ExitCode::SUCCESS;
    let mut hung_up = false;
    loop {
        let hangup_due = async {
            match hangup_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop, if !hung_up => {
                hung_up = true;
                let _ = session.handle.commands.send(UaCommand::Hangup(call));
            }
            _ = hangup_due, if !hung_up => {
                hung_up = true;
                let _ = session.handle.commands.send(UaCommand::Hangup(call));
            }
            event = session.handle.events.recv() => match event {
                Some(UaEvent::CallProgress { code, reason, .. }) => println!("{code} {reason}"),
                Some(UaEvent::CallAnswered { body, .. }) => {
                    println!("answered after {} ms", sent.elapsed().as_millis());
                    match connect(&mut media, &body).await {
                        Ok(pair) => {
                            println!("{}", describe_pair(&pair));
                            if let Some((source, sink)) = audio_io.take() {
                                audio = media.start_audio(source, sink);
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
                    hangup_at = args.hangup_after.map(|d| tokio::time::Instant::now() + d);
                }
                Some(UaEvent::CallEnded { end, .. }) => {
                    println!("call ended: {}", describe(&end));
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
    if let Some(audio) = audio {
        println!("{}", describe_audio(&audio.stop().await));
    }
    let unregistered = finish(session).await;
    if outcome == ExitCode::SUCCESS {
        unregistered
    } else {
        outcome
    }
}

/// Reads the callee's answer and waits for ICE to select a pair.
async fn connect(media: &mut CallMedia, answer: &[u8]) -> Result<SelectedPair, MediaError> {
    media.apply_answer(answer)?;
    media.connected(Duration::from_secs(15)).await
}
