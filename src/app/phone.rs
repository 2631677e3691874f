//! `icephone` with no subcommand: the interactive phone. Every account of
//! the configuration file registers; the terminal shows their state, a dial
//! field and the calls, and the keyboard places, answers, mutes, holds and
//! ends them. Logs go to a file, never over the screen.
//!
//! Three layers: an account task per account (its SIP user agent, routing
//! the UA's events to calls), a task per call (its media: ICE, audio,
//! re-INVITEs), and the UI loop, which only reads a shared snapshot
//! ([`PhoneState`]) and sends commands. The drawing is `phone_view`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::account::{parse_sip_uri, AccountArgs};
use super::call::MediaFlags;
use super::config::Config;
use super::register::{describe, describe_pair, finish, start, Session};
use super::sleep_until;
use crate::call::audio::LiveAudio;
use crate::call::media::AudioHandle;
use crate::call::recovery::{self, Refused};
use crate::call::{CallMedia, MediaOptions, PathRecovery};
use crate::ice::ConnectionState;
use crate::net::sip_ua::UaCommand;
use crate::sdp::Direction;
use crate::sip::calls::CallHandle;
use crate::sip::registration::RegistrationEvent;
use crate::sip::ua::UaEvent;

/// What the screen shows; tasks update it, the UI draws it.
#[derive(Default)]
pub struct PhoneState {
    pub accounts: Vec<AccountView>,
    pub calls: Vec<CallView>,
    /// The last thing worth telling the user (an error, a refusal).
    pub notice: String,
    /// Devices picked in the phone (F2), for the calls that follow.
    pub mic: Option<String>,
    pub speaker: Option<String>,
}

pub struct AccountView {
    pub aor: String,
    pub status: String,
    pub registered: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CallStatus {
    /// Ours, before an answer; the text is the latest provisional.
    Calling(String),
    /// Theirs, waiting for us to answer or decline.
    Ringing,
    /// Answered, ICE still checking.
    Connecting,
    Active,
    Ended(String),
}

pub struct CallView {
    pub id: u64,
    pub account: usize,
    pub peer: String,
    pub incoming: bool,
    pub status: CallStatus,
    /// When ICE connected (the call's clock starts).
    pub since: Option<Instant>,
    /// "host 10.0.0.1:4000 -> relay 203.0.113.10:50000 (TURN/udp)".
    pub pair: Option<String>,
    pub muted: bool,
    pub held: bool,
    pub live: LiveAudio,
    pub ended_at: Option<Instant>,
}

pub type Shared = Arc<Mutex<PhoneState>>;

/// What the UI asks of a call.
#[derive(Clone, Copy, Debug)]
pub enum CallCmd {
    Answer,
    Decline,
    Hangup,
    ToggleMute,
    ToggleHold,
    Dtmf(char),
}

/// What the UI asks of an account.
pub enum AccountCmd {
    Dial(String),
    Call(u64, CallCmd),
    /// Hang up, unregister, and say so on `done`.
    Quit(oneshot::Sender<()>),
}

/// The UI's handle on the account tasks.
pub struct Phone {
    pub state: Shared,
    pub accounts: Vec<mpsc::UnboundedSender<AccountCmd>>,
    /// Where picked devices are remembered.
    pub config_path: Option<PathBuf>,
}

static NEXT_CALL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn update(state: &Shared, f: impl FnOnce(&mut PhoneState)) {
    if let Ok(mut s) = state.lock() {
        f(&mut s);
    }
}

fn update_call(state: &Shared, id: u64, f: impl FnOnce(&mut CallView)) {
    update(state, |s| {
        if let Some(c) = s.calls.iter_mut().find(|c| c.id == id) {
            f(c);
        }
    });
}

/// Starts an account task per configured account.
pub fn start_accounts(config: &Config, config_path: Option<PathBuf>, media: MediaFlags) -> Phone {
    let state: Shared = Arc::new(Mutex::new(PhoneState::default()));
    let mut accounts = Vec::new();
    for (index, account) in config.accounts.iter().enumerate() {
        update(&state, |s| {
            s.accounts.push(AccountView {
                aor: account.aor.clone(),
                status: "registering…".into(),
                registered: false,
            })
        });
        let args = AccountArgs {
            config: config_path.clone(),
            aor: Some(account.aor.clone()),
            password: None,
            auth_user: None,
            registrar: None,
            outbound_proxy: None,
            expires: None,
            sip_port: None,
            ca: None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(account_task(index, args, media.clone(), state.clone(), rx));
        accounts.push(tx);
    }
    Phone {
        state,
        accounts,
        config_path: None,
    }
}

fn set_account(state: &Shared, index: usize, status: String, registered: bool) {
    update(state, |s| {
        if let Some(a) = s.accounts.get_mut(index) {
            a.status = status;
            a.registered = registered;
        }
    });
}

/// What a call task needs from its account.
#[derive(Clone)]
struct CallCtx {
    account: usize,
    commands: mpsc::UnboundedSender<UaCommand>,
    local_ip: std::net::IpAddr,
    options: MediaOptions,
    audio: MediaFlags,
    state: Shared,
    /// Tells the account which UA handle belongs to an outgoing call.
    register: mpsc::UnboundedSender<(CallHandle, mpsc::UnboundedSender<CallInput>)>,
}

enum CallInput {
    Ui(CallCmd),
    Ua(UaEvent),
}

async fn account_task(
    index: usize,
    args: AccountArgs,
    audio: MediaFlags,
    state: Shared,
    mut cmds: mpsc::UnboundedReceiver<AccountCmd>,
) {
    let mut session = match prepare(&args, &audio).await {
        Ok(s) => s,
        Err(e) => {
            set_account(&state, index, format!("failed: {e}"), false);
            // Still answer Quit.
            while let Some(cmd) = cmds.recv().await {
                if let AccountCmd::Quit(done) = cmd {
                    let _ = done.send(());
                    return;
                }
            }
            return;
        }
    };
    set_account(&state, index, "registered".into(), true);
    let (register, mut registered) = mpsc::unbounded_channel();
    let ctx = CallCtx {
        account: index,
        commands: session.handle.commands.clone(),
        local_ip: session.local_ip,
        options: session.options.clone(),
        audio,
        state: state.clone(),
        register,
    };
    // UA handle -> the call task's inbox; UI id -> the same.
    let mut by_handle: HashMap<CallHandle, mpsc::UnboundedSender<CallInput>> = HashMap::new();
    let mut by_id: HashMap<u64, mpsc::UnboundedSender<CallInput>> = HashMap::new();
    // Events for an outgoing call whose handle its task has not told yet.
    let mut early: HashMap<CallHandle, Vec<UaEvent>> = HashMap::new();
    let mut quit = None;
    while quit.is_none() {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(AccountCmd::Dial(target)) => {
                    let domain = session.account.aor.host.to_string();
                    match dial_uri(&target, &domain) {
                        Ok(uri) => {
                            let id = NEXT_CALL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let (tx, rx) = mpsc::unbounded_channel();
                            by_id.insert(id, tx.clone());
                            tokio::spawn(outgoing_call(ctx.clone(), id, uri, tx, rx));
                        }
                        Err(e) => update(&state, |s| s.notice = e),
                    }
                }
                Some(AccountCmd::Call(id, cmd)) => {
                    if let Some(tx) = by_id.get(&id) {
                        let _ = tx.send(CallInput::Ui(cmd));
                    }
                }
                Some(AccountCmd::Quit(done)) => quit = Some(done),
                None => break,
            },
            Some((handle, tx)) = registered.recv() => {
                for event in early.remove(&handle).unwrap_or_default() {
                    let _ = tx.send(CallInput::Ua(event));
                }
                by_handle.insert(handle, tx);
            }
            event = session.handle.events.recv() => match event {
                Some(UaEvent::Registration(e)) => on_registration(&state, index, e),
                Some(UaEvent::IncomingCall { call, from, body }) => {
                    let id = NEXT_CALL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (tx, rx) = mpsc::unbounded_channel();
                    by_id.insert(id, tx.clone());
                    by_handle.insert(call, tx);
                    tokio::spawn(incoming_call(ctx.clone(), id, call, from, body, rx));
                }
                Some(event) => {
                    let Some(handle) = call_of(&event) else { continue };
                    match by_handle.get(&handle) {
                        Some(tx) => {
                            let _ = tx.send(CallInput::Ua(event));
                        }
                        None => early.entry(handle).or_default().push(event),
                    }
                }
                None => {
                    set_account(&state, index, "the SIP user agent stopped".into(), false);
                    break;
                }
            },
        }
        by_id.retain(|_, tx| !tx.is_closed());
        by_handle.retain(|_, tx| !tx.is_closed());
    }
    // Hang up what is up, give the calls a moment to send BYE and release
    // their relays, then unregister.
    for tx in by_id.values() {
        let _ = tx.send(CallInput::Ui(CallCmd::Hangup));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while by_id.values().any(|tx| !tx.is_closed()) && tokio::time::Instant::now() < deadline {
        // Keep routing the UA's answers (200 to BYE) to the calls.
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(50), session.handle.events.recv()).await
        {
            if let Some(tx) = call_of(&event).and_then(|h| by_handle.get(&h)) {
                let _ = tx.send(CallInput::Ua(event));
            }
        }
    }
    set_account(&state, index, "unregistering…".into(), false);
    let _ = finish(session).await;
    set_account(&state, index, "unregistered".into(), false);
    if let Some(done) = quit {
        let _ = done.send(());
    }
}

/// Registers and resolves the ICE servers.
async fn prepare(args: &AccountArgs, audio: &MediaFlags) -> Result<Session, String> {
    let options = audio.ice_options(args.ca.as_deref()).await?;
    let mut session = start(args, Duration::from_secs(10)).await?;
    session.options = options;
    Ok(session)
}

fn on_registration(state: &Shared, index: usize, event: RegistrationEvent) {
    let (text, ok) = match &event {
        RegistrationEvent::Registered { expires, .. } => {
            (format!("registered (expires in {expires} s)"), true)
        }
        RegistrationEvent::Unregistered => ("unregistered".into(), false),
        other => (format!("{other:?}"), false),
    };
    set_account(state, index, text, ok);
}

fn call_of(event: &UaEvent) -> Option<CallHandle> {
    match event {
        UaEvent::IncomingCall { call, .. }
        | UaEvent::CallProgress { call, .. }
        | UaEvent::CallAnswered { call, .. }
        | UaEvent::CallConfirmed { call }
        | UaEvent::ReInvite { call, .. }
        | UaEvent::CallUpdated { call, .. }
        | UaEvent::CallEnded { call, .. } => Some(*call),
        UaEvent::Registration(_) => None,
    }
}

/// `bob` -> `sip:bob@DOMAIN`, `bob@example.org` -> `sip:bob@example.org`.
pub fn dial_uri(input: &str, domain: &str) -> Result<crate::sip::uri::Uri, String> {
    let input = input.trim();
    if input.is_empty() {
        return Err("type a SIP URI or a user name".into());
    }
    let full = match (
        input.starts_with("sip:") || input.starts_with("sips:"),
        input.contains('@'),
    ) {
        (true, _) => input.to_owned(),
        (false, true) => format!("sip:{input}"),
        (false, false) => format!("sip:{input}@{domain}"),
    };
    parse_sip_uri(&full, "dial").map_err(|e| e.to_string())
}

fn new_call(ctx: &CallCtx, id: u64, peer: String, incoming: bool, status: CallStatus) {
    update(&ctx.state, |s| {
        s.calls.push(CallView {
            id,
            account: ctx.account,
            peer,
            incoming,
            status,
            since: None,
            pair: None,
            muted: false,
            held: false,
            live: LiveAudio::default(),
            ended_at: None,
        })
    });
}

/// The media of a call, once answered, and what the keys change in it.
struct Running {
    handle: CallHandle,
    media: CallMedia,
    audio: Option<AudioHandle>,
    /// A broken path's repair (the caller restarts ICE).
    recovery: PathRecovery,
}

impl Running {
    /// A key pressed during the call.
    fn on_key(&mut self, ctx: &CallCtx, id: u64, cmd: CallCmd) {
        match cmd {
            CallCmd::Hangup | CallCmd::Decline => {
                let _ = ctx.commands.send(UaCommand::Hangup(self.handle));
            }
            CallCmd::ToggleMute => {
                if let Some(a) = &self.audio {
                    let muted = !a.is_muted();
                    a.set_mute(muted);
                    update_call(&ctx.state, id, |c| c.muted = muted);
                }
            }
            CallCmd::ToggleHold => {
                let hold = self
                    .media
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.direction == Direction::SendRecv);
                let body = self.media.reoffer(hold);
                let _ = ctx.commands.send(UaCommand::ReInvite {
                    call: self.handle,
                    body,
                });
            }
            CallCmd::Dtmf(key) => {
                if let Some(a) = &self.audio {
                    a.send_dtmf(&key.to_string());
                }
            }
            CallCmd::Answer => {}
        }
    }

    /// A re-INVITE or its answer; returns false when the call ended.
    async fn on_event(&mut self, ctx: &CallCtx, id: u64, event: UaEvent) -> bool {
        match event {
            UaEvent::ReInvite { body, .. } => match self.media.reanswer(&body).await {
                Ok((answer, restarted)) => {
                    let _ = ctx.commands.send(UaCommand::Answer {
                        call: self.handle,
                        code: 200,
                        body: answer,
                    });
                    self.show_direction(ctx, id);
                    if restarted {
                        self.await_pair(ctx, id).await;
                    }
                }
                Err(e) => {
                    let _ = ctx.commands.send(UaCommand::Reject {
                        call: self.handle,
                        code: 488,
                        reason: e.to_string(),
                    });
                }
            },
            UaEvent::CallUpdated { code, body, .. }
                if (200..300).contains(&code) && self.media.apply_reanswer(&body).is_ok() =>
            {
                self.show_direction(ctx, id);
                if self.recovery.restart_in_flight() {
                    self.recovery.on_restart_answered();
                    self.await_pair(ctx, id).await;
                }
            }
            UaEvent::CallUpdated { code, .. } if code >= 300 => {
                let refused = self.recovery.on_refused(Instant::now(), code);
                if refused == Refused::Exhausted {
                    update(&ctx.state, |s| {
                        s.notice = format!("reconnecting failed: re-INVITE refused ({code})")
                    });
                }
            }
            UaEvent::CallEnded { end, .. } => {
                update_call(&ctx.state, id, |c| {
                    c.status = CallStatus::Ended(describe(&end));
                    c.ended_at = Some(Instant::now());
                });
                return false;
            }
            _ => {}
        }
        true
    }

    fn show_direction(&self, ctx: &CallCtx, id: u64) {
        let held = self
            .media
            .negotiated
            .as_ref()
            .is_some_and(|n| n.direction != Direction::SendRecv);
        update_call(&ctx.state, id, |c| c.held = held);
    }

    /// The audio starts (its packets leave once ICE has a valid pair), then
    /// the selected pair goes on screen.
    async fn start_audio(&mut self, ctx: &CallCtx, id: u64) {
        match audio_flags(ctx).open().await {
            Ok((source, sink)) => self.audio = self.media.start_audio(source, sink),
            Err(e) => update(&ctx.state, |s| s.notice = format!("no audio: {e}")),
        }
        if !self.await_pair(ctx, id).await {
            let _ = ctx.commands.send(UaCommand::Hangup(self.handle));
        }
    }

    /// Waits for ICE's selected pair (after the answer, or a restart) and
    /// shows it; false when none came.
    async fn await_pair(&mut self, ctx: &CallCtx, id: u64) -> bool {
        match self.media.connected(Duration::from_secs(15)).await {
            Ok(pair) => {
                self.recovery.on_restored();
                let relays = self.media.relays();
                let via = relays
                    .iter()
                    .find(|r| r.relayed == pair.local.address)
                    .map(|r| format!(" via {} (TURN/{})", r.server, r.transport.as_str()))
                    .unwrap_or_default();
                let text = format!("{}{via}", describe_pair(&pair));
                update_call(&ctx.state, id, |c| {
                    c.pair = Some(text);
                    c.status = CallStatus::Active;
                    c.since.get_or_insert_with(Instant::now);
                });
                true
            }
            Err(e) => {
                update(&ctx.state, |s| s.notice = e.to_string());
                false
            }
        }
    }

    /// The path broke (or came back) mid-call: `call::recovery`.
    fn on_path(&mut self, ctx: &CallCtx, id: u64, state: ConnectionState) {
        if self.recovery.is_lost() {
            self.recovery.on_restored();
            update_call(&ctx.state, id, |c| c.status = CallStatus::Active);
            return;
        }
        self.recovery.on_lost(Instant::now());
        // Re-open signalling (and re-register from a new NAT mapping).
        let _ = ctx.commands.send(UaCommand::KeepAliveNow);
        update_call(&ctx.state, id, |c| {
            c.status = CallStatus::Connecting;
            c.pair = Some(format!("path lost ({}): reconnecting…", state.as_str()));
        });
    }

    async fn restart(&mut self, ctx: &CallCtx) {
        match self.media.restart_offer().await {
            Ok(body) => {
                self.recovery.on_restart_sent();
                let _ = ctx.commands.send(UaCommand::ReInvite {
                    call: self.handle,
                    body,
                });
            }
            Err(e) => {
                self.recovery.on_restart_failed();
                update(&ctx.state, |s| {
                    s.notice = format!("reconnecting failed: {e}")
                });
            }
        }
    }

    /// The call's loop once it is up: keys, SIP, and the live figures.
    async fn run(mut self, ctx: CallCtx, id: u64, mut rx: mpsc::UnboundedReceiver<CallInput>) {
        let mut refresh = tokio::time::interval(Duration::from_millis(200));
        loop {
            let restart_due = sleep_until(self.recovery.restart_at());
            let give_up_due = sleep_until(self.recovery.give_up_at());
            let broken = self.recovery.is_lost();
            let restarting = self.recovery.restart_in_flight();
            tokio::select! {
                state = self.media.path_change(broken), if !restarting => {
                    self.on_path(&ctx, id, state);
                }
                _ = restart_due, if !restarting => self.restart(&ctx).await,
                _ = give_up_due => {
                    update(&ctx.state, |s| s.notice = format!(
                        "the call's audio path did not come back in {} s: hung up",
                        recovery::GIVE_UP.as_secs()
                    ));
                    let _ = ctx.commands.send(UaCommand::Hangup(self.handle));
                    self.recovery.on_given_up();
                }
                input = rx.recv() => match input {
                    Some(CallInput::Ui(cmd)) => self.on_key(&ctx, id, cmd),
                    Some(CallInput::Ua(event)) => {
                        if !self.on_event(&ctx, id, event).await {
                            break;
                        }
                    }
                    None => break,
                },
                _ = refresh.tick() => {
                    if let Some(a) = &self.audio {
                        let live = a.live();
                        update_call(&ctx.state, id, |c| c.live = live);
                    }
                }
            }
        }
        if let Some(a) = self.audio.take() {
            a.stop().await;
        }
        self.media.shutdown().await;
    }
}

/// The configured audio, with the devices picked in the phone since.
fn audio_flags(ctx: &CallCtx) -> MediaFlags {
    let mut flags = ctx.audio.clone();
    if let Ok(s) = ctx.state.lock() {
        if let Some(m) = &s.mic {
            flags.mic = Some(m.clone());
        }
        if let Some(m) = &s.speaker {
            flags.speaker = Some(m.clone());
        }
    }
    flags
}

/// Plays the ring on the speaker while a call rings, when the speaker is a
/// sound device (never into a recording). Stops when `stop` fires.
fn ring(ctx: &CallCtx, mut stop: oneshot::Receiver<()>) {
    let speaker = audio_flags(ctx).speaker().to_owned();
    if speaker.starts_with("file:") || speaker == "null" {
        return;
    }
    tokio::spawn(async move {
        let sink =
            tokio::task::spawn_blocking(move || crate::audio::io::Sink::parse(&speaker)).await;
        let Ok(Ok(mut sink)) = sink else { return };
        if matches!(sink, crate::audio::io::Sink::Null) {
            return;
        }
        let tone = crate::audio::io::builtin_ring();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut at = 0;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    let frame: Vec<i16> = (0..crate::audio::FRAME)
                        .map(|i| tone.get((at + i) % tone.len().max(1)).copied().unwrap_or(0))
                        .collect();
                    at = (at + crate::audio::FRAME) % tone.len().max(1);
                    sink.write(&frame);
                }
            }
        }
        // The device closes off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || drop(sink)).await;
    });
}

fn end_call(ctx: &CallCtx, id: u64, why: String) {
    update_call(&ctx.state, id, |c| {
        c.status = CallStatus::Ended(why);
        c.ended_at = Some(Instant::now());
    });
}

async fn outgoing_call(
    ctx: CallCtx,
    id: u64,
    to: crate::sip::uri::Uri,
    me: mpsc::UnboundedSender<CallInput>,
    mut rx: mpsc::UnboundedReceiver<CallInput>,
) {
    new_call(
        &ctx,
        id,
        to.to_string(),
        false,
        CallStatus::Calling("gathering…".into()),
    );
    let mut media = match CallMedia::start(ctx.local_ip, true, &ctx.options).await {
        Ok(m) => m,
        Err(e) => return end_call(&ctx, id, e.to_string()),
    };
    let (reply, handle) = oneshot::channel();
    let body = media.offer();
    let _ = ctx.commands.send(UaCommand::Invite { to, body, reply });
    let Ok(handle) = handle.await else {
        return end_call(&ctx, id, "the SIP user agent stopped".into());
    };
    let _ = ctx.register.send((handle, me));
    update_call(&ctx.state, id, |c| {
        c.status = CallStatus::Calling("calling…".into())
    });
    // Until the answer: provisional answers, or a key that cancels.
    loop {
        match rx.recv().await {
            Some(CallInput::Ua(UaEvent::CallProgress { code, reason, .. })) => {
                update_call(&ctx.state, id, |c| {
                    c.status = CallStatus::Calling(format!("{code} {reason}"))
                });
            }
            Some(CallInput::Ua(UaEvent::CallAnswered { body, .. })) => {
                update_call(&ctx.state, id, |c| c.status = CallStatus::Connecting);
                if let Err(e) = media.apply_answer(&body) {
                    update(&ctx.state, |s| s.notice = e.to_string());
                    let _ = ctx.commands.send(UaCommand::Hangup(handle));
                }
                break;
            }
            Some(CallInput::Ua(UaEvent::CallEnded { end, .. })) => {
                media.shutdown().await;
                return end_call(&ctx, id, describe(&end));
            }
            Some(CallInput::Ui(CallCmd::Hangup | CallCmd::Decline)) => {
                let _ = ctx.commands.send(UaCommand::Hangup(handle));
            }
            Some(_) => {}
            None => {
                media.shutdown().await;
                return;
            }
        }
    }
    run_call(ctx, id, (handle, true), media, rx).await;
}

async fn incoming_call(
    ctx: CallCtx,
    id: u64,
    handle: CallHandle,
    from: String,
    offer: Vec<u8>,
    mut rx: mpsc::UnboundedReceiver<CallInput>,
) {
    new_call(&ctx, id, from, true, CallStatus::Ringing);
    let _ = ctx.commands.send(UaCommand::Answer {
        call: handle,
        code: 180,
        body: Vec::new(),
    });
    // Dropped (the ring stops) however this function leaves the ringing.
    let (ringing, stop_ring) = oneshot::channel::<()>();
    ring(&ctx, stop_ring);
    // Gathering runs while it rings, so answering is instant.
    let mut media = match CallMedia::start(ctx.local_ip, false, &ctx.options).await {
        Ok(m) => m,
        Err(e) => {
            let _ = ctx.commands.send(UaCommand::Reject {
                call: handle,
                code: 500,
                reason: e.to_string(),
            });
            return end_call(&ctx, id, e.to_string());
        }
    };
    loop {
        match rx.recv().await {
            Some(CallInput::Ui(CallCmd::Answer)) => break,
            Some(CallInput::Ui(CallCmd::Decline | CallCmd::Hangup)) => {
                let _ = ctx.commands.send(UaCommand::Reject {
                    call: handle,
                    code: 603,
                    reason: "Decline".into(),
                });
                media.shutdown().await;
                return end_call(&ctx, id, "declined".into());
            }
            Some(CallInput::Ua(UaEvent::CallEnded { end, .. })) => {
                media.shutdown().await;
                return end_call(&ctx, id, describe(&end));
            }
            Some(_) => {}
            None => {
                media.shutdown().await;
                return;
            }
        }
    }
    drop(ringing);
    match media.answer(&offer) {
        Ok(answer) => {
            let _ = ctx.commands.send(UaCommand::Answer {
                call: handle,
                code: 200,
                body: answer,
            });
        }
        Err(e) => {
            let _ = ctx.commands.send(UaCommand::Reject {
                call: handle,
                code: 488,
                reason: e.to_string(),
            });
            media.shutdown().await;
            return end_call(&ctx, id, format!("refused the offer: {e}"));
        }
    }
    update_call(&ctx.state, id, |c| c.status = CallStatus::Connecting);
    run_call(ctx, id, (handle, false), media, rx).await;
}

/// An answered call, outgoing or incoming: audio, then keys and SIP until
/// it ends.
async fn run_call(
    ctx: CallCtx,
    id: u64,
    (handle, caller): (CallHandle, bool),
    media: CallMedia,
    rx: mpsc::UnboundedReceiver<CallInput>,
) {
    let mut running = Running {
        handle,
        media,
        audio: None,
        recovery: PathRecovery::new(caller),
    };
    running.start_audio(&ctx, id).await;
    running.run(ctx, id, rx).await;
}

/// Where the phone's log goes: `$XDG_STATE_HOME/icephone/icephone.log`,
/// else `~/.local/state/icephone/icephone.log`, else the temp folder.
pub fn log_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("icephone").join("icephone.log")
}

/// Runs the phone until the user quits (or Ctrl-C / SIGTERM).
pub async fn run(config_path: Option<PathBuf>) -> ExitCode {
    let config = match Config::find(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if config.accounts.is_empty() {
        let place = super::config::default_path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.config/icephone/icephone.toml".into());
        eprintln!(
            "error: no account configured: copy config/icephone.toml to {place} (or give --config FILE) and fill in an [[account]]; `icephone demo` runs without one"
        );
        return ExitCode::from(2);
    }
    let mut media = MediaFlags::default();
    if let Err(e) = media.apply_config(&config) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = media.check().await {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let mut phone = start_accounts(&config, config_path.clone(), media);
    phone.config_path = config_path.or_else(super::config::default_path);
    let outcome = super::phone_view::run(&phone).await;
    // Hang up, unregister; bounded so a dead registrar cannot hold us.
    let mut waits = Vec::new();
    for tx in &phone.accounts {
        let (done, wait) = oneshot::channel();
        let _ = tx.send(AccountCmd::Quit(done));
        waits.push(wait);
    }
    let _ = tokio::time::timeout(Duration::from_secs(8), async {
        for w in waits {
            let _ = w.await;
        }
    })
    .await;
    match outcome {
        Ok(()) => {
            println!("icephone: bye (log: {})", log_path().display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
