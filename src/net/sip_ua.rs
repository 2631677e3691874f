//! Runs a `sip::ua::UserAgent` on its own task: feeds it what the SIP
//! sockets receive and its timeouts, sends what it returns, and hands its
//! events to the application.

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::sip_transport::{Incoming, SipSockets};
use crate::sip::calls::CallHandle;
use crate::sip::ua::{UaEvent, UserAgent};
use crate::sip::uri::Uri;
use crate::sip::Target;

#[derive(Debug)]
pub enum UaCommand {
    /// Place a call; its handle comes back on `reply`.
    Invite {
        to: Uri,
        body: Vec<u8>,
        reply: oneshot::Sender<CallHandle>,
    },
    /// Answer a call (or a re-INVITE) with `code` and a session description.
    Answer {
        call: CallHandle,
        code: u16,
        body: Vec<u8>,
    },
    /// Refuse a call with `code` and a reason (488 for an unusable offer).
    Reject {
        call: CallHandle,
        code: u16,
        reason: String,
    },
    Hangup(CallHandle),
    /// A re-INVITE with a new session description (hold, resume).
    ReInvite {
        call: CallHandle,
        body: Vec<u8>,
    },
    /// Remove the registration; the task ends after the answer (or its
    /// timeout) with the `Unregistered` event.
    Unregister,
    /// Send the NAT keep-alive now (the media path was lost).
    KeepAliveNow,
    /// End at once.
    Shutdown,
}

pub struct UaHandle {
    pub commands: mpsc::UnboundedSender<UaCommand>,
    pub events: mpsc::UnboundedReceiver<UaEvent>,
    /// Ends with the core, so its counters can be read.
    pub task: JoinHandle<UserAgent>,
}

/// Starts `ua` (call `register` on it first, or send commands later).
pub fn spawn_user_agent(
    ua: UserAgent,
    sockets: SipSockets,
    incoming: mpsc::Receiver<Incoming>,
) -> UaHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(ua, sockets, incoming, cmd_rx, ev_tx));
    UaHandle {
        commands: cmd_tx,
        events: ev_rx,
        task,
    }
}

async fn run(
    mut ua: UserAgent,
    sockets: SipSockets,
    mut incoming: mpsc::Receiver<Incoming>,
    mut commands: mpsc::UnboundedReceiver<UaCommand>,
    events: mpsc::UnboundedSender<UaEvent>,
) -> UserAgent {
    let mut commands_open = true;
    loop {
        flush(&mut ua, &sockets).await;
        while let Some(event) = ua.poll_event() {
            let done = matches!(
                event,
                UaEvent::Registration(crate::sip::registration::RegistrationEvent::Unregistered)
            );
            let _ = events.send(event);
            if done {
                flush(&mut ua, &sockets).await;
                return ua;
            }
        }
        let deadline = ua
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            msg = incoming.recv() => match msg {
                Some(msg) => {
                    let source = Target { transport: msg.transport, addr: msg.remote };
                    match &msg.closed {
                        Some(reason) => ua.connection_lost(Instant::now(), source, reason),
                        None => ua.handle_input(Instant::now(), source, &msg.bytes),
                    }
                }
                None => return ua,
            },
            _ = tokio::time::sleep_until(deadline) => ua.handle_timeout(Instant::now()),
            cmd = commands.recv(), if commands_open => match cmd {
                Some(UaCommand::Invite { to, body, reply }) => {
                    let _ = reply.send(ua.invite(Instant::now(), to, body));
                }
                Some(UaCommand::Answer { call, code, body }) => {
                    ua.answer(Instant::now(), call, code, body);
                }
                Some(UaCommand::Reject { call, code, reason }) => {
                    ua.reject(Instant::now(), call, code, &reason);
                }
                Some(UaCommand::Hangup(call)) => ua.hangup(Instant::now(), call),
                Some(UaCommand::ReInvite { call, body }) => {
                    ua.reinvite(Instant::now(), call, body);
                }
                Some(UaCommand::Unregister) => ua.unregister(Instant::now()),
                Some(UaCommand::KeepAliveNow) => {
                    // The path broke: connections through the NAT are likely
                    // dead. Over UDP signalling they only carried large
                    // requests, which open a new one next time; a stream
                    // that is our registration flow stays (its loss is the
                    // registration's to notice).
                    if !ua.next_hop().transport.is_reliable() {
                        sockets.close_streams();
                    }
                    ua.keepalive_now(Instant::now());
                }
                Some(UaCommand::Shutdown) => return ua,
                // The application is gone: keep going until told or done.
                None => commands_open = false,
            },
        }
    }
}

async fn flush(ua: &mut UserAgent, sockets: &SipSockets) {
    while let Some(t) = ua.poll_transmit() {
        if let Err(e) = sockets
            .send(t.target.transport, t.target.addr, t.bytes)
            .await
        {
            tracing::debug!(to = %t.target.addr, error = %e, "SIP send failed");
            ua.transport_error(Instant::now(), t.target, &e.to_string());
        }
    }
}
