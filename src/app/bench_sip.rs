//! `icephone bench register|call`: load generators for any SIP registrar
//! and proxy, ours (`icephone serve`) or Kamailio, so both are measured by
//! the same client in one run (`scripts/bench-sip` runs the comparison).
//!
//! Each worker drives sans-IO user agents (`sip::ua`) on one UDP socket of
//! its own; all workers share one thread, so the generator uses one core.
//! A registration here is the full two-round-trip exchange (401, then the
//! signed REGISTER): every one starts from a fresh agent with no cached
//! challenge. A call setup is INVITE → 407 → signed INVITE → 200 (then ACK,
//! BYE and its 200 before the next call).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::UdpSocket;

use super::bench::{finish, BenchReport};
use crate::sip::calls::CallEnd;
use crate::sip::digest::DigestCredentials;
use crate::sip::registration::{RegistrationConfig, RegistrationEvent};
use crate::sip::ua::{UaConfig, UaEvent, UserAgent};
use crate::sip::uri::Uri;
use crate::sip::{Target, Transport};

pub struct SipBenchArgs {
    pub server: SocketAddr,
    /// Domain of the accounts (the realm of the server).
    pub domain: String,
    /// Accounts are PREFIX0 … PREFIX(window-1), all with `password`; the
    /// call bench's callee is PREFIX + "callee".
    pub prefix: String,
    pub password: String,
    pub duration: Duration,
    pub window: usize,
}

/// How long one exchange may take before it counts as lost.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn register(args: SipBenchArgs) -> Result<BenchReport, String> {
    run(args, false)
}

pub fn call(args: SipBenchArgs) -> Result<BenchReport, String> {
    run(args, true)
}

fn run(args: SipBenchArgs, calls: bool) -> Result<BenchReport, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let args = Rc::new(args);
        let mut callee = None;
        if calls {
            let (ua, socket) = agent(&args, &format!("{}callee", args.prefix)).await?;
            callee = Some(tokio::task::spawn_local(answer_calls(
                ua,
                socket,
                args.clone(),
            )));
        }
        let start = Instant::now();
        let mut workers = Vec::new();
        for i in 0..args.window {
            let args = args.clone();
            workers.push(tokio::task::spawn_local(async move {
                let user = format!("{}{i}", args.prefix);
                if calls {
                    call_loop(&args, &user, start).await
                } else {
                    register_loop(&args, &user, start).await
                }
            }));
        }
        let mut rtts = Vec::new();
        let mut lost = 0;
        for w in workers {
            let (r, l) = w.await.map_err(|e| e.to_string())??;
            rtts.extend(r);
            lost += l;
        }
        if let Some(c) = callee {
            c.abort();
        }
        let kind = if calls { "sip-call" } else { "sip-register" };
        Ok(finish(
            kind,
            args.server,
            args.window,
            start.elapsed(),
            rtts,
            lost,
            false,
        ))
    })
}

/// A fresh agent for `user` on a socket of its own, registered.
async fn agent(args: &SipBenchArgs, user: &str) -> Result<(UserAgent, UdpSocket), String> {
    let ip = super::account::local_ip_towards(args.server).map_err(|e| e.to_string())?;
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(|e| e.to_string())?;
    let mut ua = new_agent(args, user, socket.local_addr().map_err(|e| e.to_string())?)?;
    ua.register(Instant::now());
    let mut buf = vec![0u8; 65_536];
    match drive(&mut ua, &socket, &mut buf, |e| {
        matches!(e, UaEvent::Registration(_))
    })
    .await
    {
        Some(UaEvent::Registration(RegistrationEvent::Registered { .. })) => Ok((ua, socket)),
        other => Err(format!("{user} could not register: {other:?}")),
    }
}

fn new_agent(args: &SipBenchArgs, user: &str, local: SocketAddr) -> Result<UserAgent, String> {
    let aor: Uri = format!("sip:{user}@{}", args.domain)
        .parse()
        .map_err(|e| format!("bad domain {:?}: {e}", args.domain))?;
    let registrar: Uri = format!("sip:{}", args.domain)
        .parse()
        .map_err(|e| format!("bad domain {:?}: {e}", args.domain))?;
    let config = UaConfig {
        registration: RegistrationConfig {
            aor,
            registrar,
            route: None,
            credentials: DigestCredentials {
                username: user.to_owned(),
                password: args.password.clone(),
            },
            expires: 300,
            transport: Transport::Udp,
            local,
            fix_contact: false,
            gruu: false,
            user_agent: "icephone-bench".into(),
        },
        next_hop: Target {
            transport: Transport::Udp,
            addr: args.server,
        },
        keepalive: None,
        timers: Default::default(),
    };
    Ok(UserAgent::new(config, StdRng::from_os_rng()))
}

/// Runs `ua` on `socket` until an event `done` accepts (returned), or
/// [`EXCHANGE_TIMEOUT`] passes (None).
async fn drive(
    ua: &mut UserAgent,
    socket: &UdpSocket,
    buf: &mut [u8],
    mut done: impl FnMut(&UaEvent) -> bool,
) -> Option<UaEvent> {
    let give_up = tokio::time::Instant::now() + EXCHANGE_TIMEOUT;
    loop {
        while let Some(t) = ua.poll_transmit() {
            let _ = socket.send_to(&t.bytes, t.target.addr).await;
        }
        while let Some(event) = ua.poll_event() {
            if done(&event) {
                return Some(event);
            }
        }
        let wake = ua
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or(give_up)
            .min(give_up);
        tokio::select! {
            r = socket.recv_from(buf) => {
                if let Ok((n, from)) = r {
                    let source = Target { transport: Transport::Udp, addr: from };
                    ua.handle_input(Instant::now(), source, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= give_up {
                    return None;
                }
                ua.handle_timeout(Instant::now());
            }
        }
    }
}

async fn register_loop(
    args: &SipBenchArgs,
    user: &str,
    start: Instant,
) -> Result<(Vec<Duration>, u64), String> {
    let ip = super::account::local_ip_towards(args.server).map_err(|e| e.to_string())?;
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_536];
    let (mut rtts, mut lost) = (Vec::new(), 0);
    while start.elapsed() < args.duration {
        // A new agent each time: no cached challenge, a new Call-ID.
        let mut ua = new_agent(args, user, local)?;
        let began = Instant::now();
        ua.register(began);
        let outcome = drive(&mut ua, &socket, &mut buf, |e| {
            matches!(e, UaEvent::Registration(_))
        })
        .await;
        match outcome {
            Some(UaEvent::Registration(RegistrationEvent::Registered { .. })) => {
                rtts.push(began.elapsed())
            }
            Some(UaEvent::Registration(RegistrationEvent::Failed { error, .. }))
                if rtts.is_empty() =>
            {
                return Err(format!("{user}: {error}"));
            }
            _ => lost += 1,
        }
    }
    Ok((rtts, lost))
}

async fn call_loop(
    args: &SipBenchArgs,
    user: &str,
    start: Instant,
) -> Result<(Vec<Duration>, u64), String> {
    let (mut ua, socket) = agent(args, user).await?;
    let callee: Uri = format!("sip:{}callee@{}", args.prefix, args.domain)
        .parse()
        .map_err(|e| format!("bad domain: {e}"))?;
    let mut buf = vec![0u8; 65_536];
    let (mut rtts, mut lost) = (Vec::new(), 0);
    while start.elapsed() < args.duration {
        let began = Instant::now();
        let call = ua.invite(began, callee.clone(), Vec::new());
        let answered = drive(&mut ua, &socket, &mut buf, |e| {
            matches!(e, UaEvent::CallAnswered { call: c, .. } | UaEvent::CallEnded { call: c, .. } if *c == call)
        })
        .await;
        match answered {
            Some(UaEvent::CallAnswered { .. }) => rtts.push(began.elapsed()),
            Some(UaEvent::CallEnded {
                end: CallEnd::Rejected { code, reason },
                ..
            }) if rtts.is_empty() => {
                return Err(format!("{user}: the call failed: {code} {reason}"));
            }
            _ => {
                lost += 1;
                continue;
            }
        }
        ua.hangup(Instant::now(), call);
        let ended = drive(&mut ua, &socket, &mut buf, |e| {
            matches!(e, UaEvent::CallEnded { .. })
        })
        .await;
        if ended.is_none() {
            lost += 1;
        }
    }
    Ok((rtts, lost))
}

/// The callee: answers every call at once, forever.
async fn answer_calls(mut ua: UserAgent, socket: UdpSocket, _args: Rc<SipBenchArgs>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let event = drive(&mut ua, &socket, &mut buf, |e| {
            matches!(e, UaEvent::IncomingCall { .. })
        })
        .await;
        if let Some(UaEvent::IncomingCall { call, .. }) = event {
            ua.answer(Instant::now(), call, 200, Vec::new());
        }
    }
}
