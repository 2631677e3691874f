//! `icephone register`: register one account, keep it fresh until Ctrl-C or
//! SIGTERM, then unregister. With `--auto-answer` it also takes calls.
//! The start and the end of a session are shared with `icephone call`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::account::{local_ip_towards, Account, AccountArgs};
use super::call::{describe_audio, MediaFlags};
use crate::net::sip_transport::{SipSockets, SipTls};
use crate::net::sip_ua::{spawn_user_agent, UaCommand, UaHandle};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::report::{finish_report, CallReport, Moments};
use super::sleep_until;
use crate::call::media::SelectedPair;
use crate::call::{CallMedia, MediaOptions, PathRecovery};
use crate::sip::calls::{CallEnd, CallHandle};
use crate::sip::registration::RegistrationEvent;
use crate::sip::ua::{UaEvent, UserAgent};
use crate::sip::Transport;

pub struct RegisterArgs {
    pub account: AccountArgs,
    /// Seconds the first registration may take.
    pub timeout: Duration,
    /// Answer incoming calls (180, then 200).
    pub auto_answer: bool,
    pub audio: MediaFlags,
    /// A JSON report per answered call; `{call}` becomes its number.
    pub report: Option<std::path::PathBuf>,
}

/// A registered account with its user agent running.
pub struct Session {
    pub account: Account,
    pub handle: UaHandle,
    pub local_ip: IpAddr,
    pub options: MediaOptions,
}

pub async fn run(mut args: RegisterArgs) -> ExitCode {
    let stop = crate::net::shutdown_signal();
    if let Err(e) = args.audio.load_config(args.account.config.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // Bad audio flags fail at once, not at the first call.
    if let Err(e) = args.audio.check().await {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let options = match args.audio.ice_options(args.account.ca.as_deref()).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut session = match start(&args.account, args.timeout).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    session.options = options;
    serve_until_signal(session, stop, args.auto_answer, args.audio, args.report).await
}

/// Resolves the account, binds its SIP ports, registers, and waits (at
/// most `timeout`) for the registrar's verdict.
pub async fn start(args: &AccountArgs, timeout: Duration) -> Result<Session, String> {
    let account = args.resolve().await.map_err(|e| e.to_string())?;
    let local_ip = local_ip_towards(account.next_hop.addr)
        .map_err(|e| format!("no route to {}: {e}", account.next_hop.addr))?;
    let mut tls = SipTls::default();
    if account.next_hop.transport == Transport::Tls {
        let config = crate::net::tls::client_config(account.ca.as_deref())
            .map_err(|e| format!("--ca: {e}"))?;
        tls.client = Some(config);
    } else if account.ca.is_some() {
        return Err("--ca applies only to a registrar or proxy reached over TLS".into());
    }
    let (sockets, incoming) = SipSockets::bind_with_tls(local_ip, account.sip_port, tls)
        .await
        .map_err(|e| format!("cannot bind SIP port {}: {e}", account.sip_port))?;
    if account.next_hop.transport == Transport::Tls {
        let host = account
            .next_hop_host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = crate::net::tls::server_name(host).map_err(|e| e.to_string())?;
        sockets.set_tls_name(account.next_hop.addr, name);
    }
    let local = sockets.local_udp().map_err(|e| e.to_string())?;
    let mut ua = UserAgent::new(account.ua_config(local), StdRng::from_os_rng());
    ua.register(Instant::now());
    let mut handle = spawn_user_agent(ua, sockets, incoming);
    let first = tokio::time::timeout(timeout, handle.events.recv()).await;
    let failure = match first {
        Ok(Some(UaEvent::Registration(RegistrationEvent::Registered { contact, expires }))) => {
            println!(
                "registered {} contact={contact} expires={expires}",
                account.aor
            );
            return Ok(Session {
                account,
                handle,
                local_ip,
                options: MediaOptions::default(),
            });
        }
        Ok(Some(UaEvent::Registration(RegistrationEvent::Failed { error, .. }))) => {
            format!("registration of {} failed: {error}", account.aor)
        }
        Ok(other) => format!("registration of {} ended: {other:?}", account.aor),
        Err(_) => format!(
            "the registrar {} did not answer within {} s",
            account.next_hop.addr,
            timeout.as_secs()
        ),
    };
    let _ = handle.commands.send(UaCommand::Shutdown);
    Err(failure)
}

async fn serve_until_signal(
    mut session: Session,
    stop: impl std::future::Future<Output = ()>,
    auto_answer: bool,
    audio: MediaFlags,
    report: Option<std::path::PathBuf>,
) -> ExitCode {
    tokio::pin!(stop);
    // The media of each answered call lives in a task of its own, told to
    // end (and finish its speaker file) when the call does.
    let mut media: HashMap<CallHandle, CallTask> = HashMap::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = session.handle.events.recv() => match event {
                Some(UaEvent::IncomingCall { call, from, body }) if auto_answer => {
                    println!("incoming call {} from {from}: answering", call.0);
                    let commands = session.handle.commands.clone();
                    let (ended, on_end) = watch::channel(None);
                    let report = report.as_ref().map(|p| CallReportOut {
                        path: p.to_string_lossy().replace("{call}", &call.0.to_string()).into(),
                        from: from.to_string(),
                        to: session.account.aor.to_string(),
                        invited: Instant::now(),
                    });
                    let (reoffer, reoffers) = mpsc::unbounded_channel();
                    let answering = AnswerCall {
                        commands,
                        call,
                        offer: body,
                        local_ip: session.local_ip,
                        options: session.options.clone(),
                        audio: audio.clone(),
                        ended: on_end,
                        reoffers,
                        report,
                    };
                    let task = tokio::spawn(answer_call(answering));
                    media.insert(call, CallTask { task, ended, reoffer });
                }
                Some(UaEvent::ReInvite { call, body }) => match media.get(&call) {
                    Some(t) => {
                        let _ = t.reoffer.send(body);
                    }
                    None => {
                        let _ = session.handle.commands.send(UaCommand::Reject {
                            call,
                            code: 488,
                            reason: "no media session for this call".into(),
                        });
                    }
                },
                Some(UaEvent::CallEnded { call, end }) => {
                    println!("call {} ended: {}", call.0, describe(&end));
                    if let Some(t) = media.remove(&call) {
                        let _ = t.ended.send(Some(end));
                        let _ = tokio::time::timeout(Duration::from_secs(3), t.task).await;
                    }
                }
                Some(event) => on_event(&session, event),
                None => {
                    eprintln!("error: the SIP user agent stopped");
                    return ExitCode::from(2);
                }
            },
        }
    }
    for (_, t) in media {
        let _ = t.ended.send(Some(CallEnd::Local));
        let _ = tokio::time::timeout(Duration::from_secs(3), t.task).await;
    }
    finish(session).await
}

/// An answered call's media task and how to reach it.
struct CallTask {
    task: JoinHandle<()>,
    ended: watch::Sender<Option<CallEnd>>,
    /// The peer's re-offers (hold, resume).
    reoffer: mpsc::UnboundedSender<Vec<u8>>,
}

/// What answering one call needs.
struct AnswerCall {
    commands: mpsc::UnboundedSender<UaCommand>,
    call: CallHandle,
    offer: Vec<u8>,
    local_ip: IpAddr,
    options: MediaOptions,
    audio: MediaFlags,
    /// Says how the call ended, when it has.
    ended: watch::Receiver<Option<CallEnd>>,
    reoffers: mpsc::UnboundedReceiver<Vec<u8>>,
    report: Option<CallReportOut>,
}

/// Where an answered call's report goes, and what it starts from.
struct CallReportOut {
    path: std::path::PathBuf,
    from: String,
    to: String,
    invited: Instant,
}

/// Answers one call: ICE on a socket of its own, our SDP answer in a 200
/// (or a 488 naming what in the offer we cannot use), the checks, then
/// audio until the call ends.
async fn answer_call(a: AnswerCall) {
    let AnswerCall {
        commands,
        call,
        offer,
        local_ip,
        options,
        audio,
        mut ended,
        mut reoffers,
        report,
    } = a;
    let mut timeline = report.as_ref().map(|r| {
        let moments = Moments::starting(r.invited);
        let mut report = CallReport::between(r.from.clone(), r.to.clone());
        report.record(&moments, "INVITE", false);
        (report, moments)
    });
    // Sound devices take a second or two to start: open them while ICE
    // gathers and checks, not after.
    let opening = tokio::spawn(async move { audio.open().await });
    let mut media = match CallMedia::start(local_ip, false, &options).await {
        Ok(m) => m,
        Err(e) => {
            println!("call {}: cannot start media: {e}", call.0);
            let _ = commands.send(UaCommand::Reject {
                call,
                code: 500,
                reason: e.to_string(),
            });
            return;
        }
    };
    let answer = match media.answer(&offer) {
        Ok(a) => a,
        Err(e) => {
            println!("call {}: refusing the offer: {e}", call.0);
            let _ = commands.send(UaCommand::Reject {
                call,
                code: 488,
                reason: e.to_string(),
            });
            return;
        }
    };
    let _ = commands.send(UaCommand::Answer {
        call,
        code: 180,
        body: Vec::new(),
    });
    let _ = commands.send(UaCommand::Answer {
        call,
        code: 200,
        body: answer,
    });
    if let Some((r, m)) = timeline.as_mut() {
        r.record(m, "180 Ringing", true);
        m.answer = Some(Instant::now());
        r.record(m, "200 OK", true);
    }
    let mut selected = None;
    // The audio starts now: its packets go out as soon as ICE has a valid
    // pair, before nomination (RFC 8445 §12.1), and not at all before one.
    let mut running = match opening.await {
        Ok(Ok((source, sink))) => media.start_audio(source, sink),
        Ok(Err(e)) => {
            println!("call {}: no audio: {e}", call.0);
            None
        }
        Err(e) => {
            println!("call {}: no audio: {e}", call.0);
            None
        }
    };
    if let (Some(_), Some((_, m))) = (&running, timeline.as_mut()) {
        m.audio_started = Some(Instant::now());
    }
    tokio::select! {
        connected = media.connected(Duration::from_secs(15)) => match connected {
            Ok(pair) => {
                println!("call {} {}", call.0, describe_pair(&pair));
                if let Some((_, m)) = timeline.as_mut() {
                    m.ice_connected = Some(Instant::now());
                }
                selected = Some(pair);
            }
            Err(e) => {
                println!("call {}: {e}", call.0);
                if let Some(a) = running.take() {
                    a.stop().await;
                }
            }
        },
        _ = ended.changed() => {}
    }
    // The socket, ICE (consent) and audio live until the call ends;
    // meanwhile re-offers (hold, resume, ICE restarts) are answered.
    let mut recovery = PathRecovery::new(false);
    while ended.borrow().is_none() {
        let give_up_due = sleep_until(recovery.give_up_at());
        tokio::select! {
            changed = ended.changed() => if changed.is_err() { break },
            // The path broke: re-open our signalling flow at once so the
            // caller's restarting re-INVITE can reach us (ours would meet
            // theirs in glare; the caller restarts). Or it came back.
            state = media.path_change(recovery.is_lost()) => {
                if recovery.is_lost() {
                    println!("call {} ice found the path again ({})", call.0, state.as_str());
                    recovery.on_restored();
                } else {
                    println!("call {} ice lost the path: waiting for the restart", call.0);
                    recovery.on_lost(Instant::now());
                    let _ = commands.send(UaCommand::KeepAliveNow);
                }
            }
            // No restart came (the caller vanished, or cannot reach us).
            _ = give_up_due => {
                println!(
                    "call {} the media path did not come back in {} s: hanging up",
                    call.0,
                    crate::call::recovery::GIVE_UP.as_secs()
                );
                recovery.on_given_up();
                let _ = commands.send(UaCommand::Hangup(call));
            }
            Some(offer) = reoffers.recv() => match media.reanswer(&offer).await {
                Ok((answer, restarted)) => {
                    let state = media.negotiated.as_ref().map(|n| n.direction.token()).unwrap_or("?");
                    println!("call {} re-INVITE: now {state}", call.0);
                    let _ = commands.send(UaCommand::Answer { call, code: 200, body: answer });
                    if restarted {
                        match media.connected(Duration::from_secs(15)).await {
                            Ok(pair) => {
                                println!("call {} ice restarted: {}", call.0, describe_pair(&pair));
                                selected = Some(pair);
                                recovery.on_restored();
                            }
                            Err(e) => println!("call {} ice restart failed: {e}", call.0),
                        }
                    }
                }
                Err(e) => {
                    let _ = commands.send(UaCommand::Reject { call, code: 488, reason: e.to_string() });
                }
            },
        }
    }
    let audio = match running {
        Some(audio) => {
            let r = audio.stop().await;
            println!("call {} {}", call.0, describe_audio(&r));
            Some(r)
        }
        None => None,
    };
    if let (Some((mut r, mut m)), Some(out)) = (timeline, report) {
        let end = ended.borrow().clone();
        m.ended = Some(Instant::now());
        if let Some(end) = end {
            r.call.ended = describe(&end);
            match end {
                CallEnd::Remote => r.record(&m, "BYE", false),
                CallEnd::Local => r.record(&m, "BYE", true),
                _ => {}
            }
        }
        finish_report(&mut r, &m, &media, selected.as_ref(), audio.as_ref());
        match r.write(&out.path) {
            Ok(()) => println!("call {} report written to {}", call.0, out.path.display()),
            Err(e) => eprintln!("error: cannot write the report: {e}"),
        }
    }
    media.shutdown().await;
}

fn on_event(session: &Session, event: UaEvent) {
    let commands = &session.handle.commands;
    match event {
        UaEvent::Registration(RegistrationEvent::Registered { contact, expires }) => {
            println!("refreshed contact={contact} expires={expires}");
        }
        UaEvent::Registration(RegistrationEvent::Failed { error, retry_in }) => {
            let retry = retry_in
                .map(|d| format!("; retrying in {} s", d.as_secs()))
                .unwrap_or_default();
            eprintln!("registration failed: {error}{retry}");
        }
        UaEvent::IncomingCall { call, from, .. } => {
            println!(
                "incoming call {} from {from}: declined (no --auto-answer)",
                call.0
            );
            let _ = commands.send(UaCommand::Answer {
                call,
                code: 480,
                body: Vec::new(),
            });
        }
        UaEvent::CallConfirmed { call } => println!("call {} confirmed", call.0),
        other => tracing::debug!(?other, "UA event"),
    }
}

/// Hangs up nothing (the caller did), unregisters, bounded in time: an
/// unanswered unregistration times out with timer F, but a person pressing
/// Ctrl-C should not wait that long.
pub async fn finish(mut session: Session) -> ExitCode {
    let _ = session.handle.commands.send(UaCommand::Unregister);
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = session.handle.events.recv().await {
            if matches!(
                event,
                UaEvent::Registration(RegistrationEvent::Unregistered)
            ) {
                return true;
            }
        }
        false
    })
    .await;
    if matches!(done, Ok(true)) {
        println!("unregistered {}", session.account.aor);
        ExitCode::SUCCESS
    } else {
        let _ = session.handle.commands.send(UaCommand::Shutdown);
        eprintln!("warning: the registrar did not confirm the unregistration");
        ExitCode::from(1)
    }
}

pub fn describe(end: &CallEnd) -> String {
    match end {
        CallEnd::Local => "hung up here".into(),
        CallEnd::Remote => "the other side hung up".into(),
        CallEnd::Cancelled => "cancelled by the caller".into(),
        CallEnd::Rejected { code, reason } => format!("{code} {reason}"),
        CallEnd::TimedOut => "no answer (timeout)".into(),
        CallEnd::NoAck => "the caller never confirmed (no ACK)".into(),
    }
}

/// "ice connected in 12 ms: host 127.0.0.1:5000 -> host 127.0.0.1:6000".
pub fn describe_pair(p: &SelectedPair) -> String {
    if !p.checked {
        return format!(
            "no ICE at the far end: plain RTP {} -> {} (latching to its source)",
            p.local.address, p.remote.address
        );
    }
    format!(
        "ice connected in {} ms: {} {} -> {} {}",
        p.after.as_millis(),
        p.local.kind,
        p.local.address,
        p.remote.kind,
        p.remote.address
    )
}
