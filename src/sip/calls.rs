//! INVITE sessions of the user agent (RFC 3261 §13–15): placing a call
//! (with the proxy's 407 answered), answering one, CANCEL both ways, BYE
//! both ways, re-INVITE both ways, and the ACK rules around 2xx answers.
//!
//! The session description is opaque bytes here: what is offered and
//! answered is the call layer's business (SIP knows nothing of media).

use std::time::Instant;

use super::authenticator::Authenticator;
use super::dialog::Dialog;
use super::layer::response_to;
use super::layer::{ClientId, ServerId};
use super::message::{reason_phrase, Headers, Method, Request, Response};
use super::ua::{UaEvent, UserAgent};
use super::uri::Uri;
use super::{random_hex, Target, Transport, ALLOW};

/// A call, as the application names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEnd {
    /// We hung up (BYE, or CANCEL before the answer).
    Local,
    /// The peer sent BYE.
    Remote,
    /// The caller cancelled before we answered.
    Cancelled,
    /// A final failure: the callee's (486, 603, 404…) or ours when we
    /// declined.
    Rejected { code: u16, reason: String },
    /// No final answer to our INVITE (timer B) or the transport failed.
    TimedOut,
    /// Our 2xx was never ACKed (§13.3.1.4).
    NoAck,
}

/// The requests a call sends in transactions of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallRequest {
    Invite,
    Bye,
    ReInvite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// INVITE sent or received, nothing else yet.
    Trying,
    /// A provisional answer went or came.
    Early,
    /// 2xx sent or received.
    Confirmed,
    /// BYE or CANCEL sent, waiting for its end.
    Ending,
}

pub(super) struct Call {
    outgoing: bool,
    phase: Phase,
    /// Outgoing: the INVITE as last sent; incoming: as received.
    invite: Request,
    invite_client: Option<ClientId>,
    /// An INVITE (initial or re-INVITE) we still have to answer.
    invite_server: Option<(ServerId, Request)>,
    /// Incoming: our To tag, fixed at the first answer.
    local_tag: String,
    dialog: Option<Dialog>,
    auth: Option<Authenticator>,
    /// Hang up as soon as the state allows (CANCEL needs a provisional).
    hangup_wanted: bool,
    /// The ACK for the last 2xx, sent again if the 2xx comes again.
    last_ack: Option<(Target, Vec<u8>)>,
    /// Our re-INVITE in progress.
    reinvite_client: Option<(ClientId, Request)>,
    end_client: Option<ClientId>,
    /// 64·T1 after our CANCEL: if the INVITE still has no final answer
    /// then, the call is given up (§9.1).
    cancel_deadline: Option<Instant>,
}

impl UserAgent {
    /// Calls `to` with the session description `body` (may be empty).
    pub fn invite(&mut self, now: Instant, to: Uri, body: Vec<u8>) -> CallHandle {
        let handle = self.new_call_handle();
        let cfg = &self.config.registration;
        let mut req = cfg.new_request(Method::Invite, to.clone(), &mut self.rng);
        let h = &mut req.headers;
        h.push(
            "From",
            format!("<{}>;tag={}", cfg.aor, random_hex(&mut self.rng, 6)),
        );
        h.push("To", format!("<{to}>"));
        h.push(
            "Call-ID",
            format!("{}@icephone", random_hex(&mut self.rng, 10)),
        );
        h.push("CSeq", "1 INVITE");
        h.push(
            "Contact",
            format!("<{}>", self.registration.dialog_contact()),
        );
        h.push("Allow", ALLOW);
        h.push("User-Agent", &cfg.user_agent);
        set_sdp(&mut req.headers, &mut req.body, body);
        let mut call = Call::new(true, req.clone());
        call.auth = Some(Authenticator::new(cfg.credentials.clone()));
        call.invite_client = Some(self.layer.send_request(now, self.config.next_hop, req));
        self.calls.insert(handle, call);
        self.drain_layer(now);
        handle
    }

    /// Answers the INVITE (or re-INVITE) of `call` that is waiting:
    /// 180/183, a 2xx with the session description `body`, or a failure
    /// (486, 603…). False when nothing waits for an answer.
    pub fn answer(&mut self, now: Instant, call: CallHandle, code: u16, body: Vec<u8>) -> bool {
        self.respond_invite(now, call, code, reason_phrase(code), body)
    }

    /// Refuses the waiting INVITE with `code` and a reason a person can
    /// read (in the status line and a Warning, RFC 3261 §20.43): a 488
    /// naming what in the offer could not be used.
    pub fn reject(&mut self, now: Instant, call: CallHandle, code: u16, reason: &str) -> bool {
        self.respond_invite(now, call, code, reason, Vec::new())
    }

    fn respond_invite(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
        body: Vec<u8>,
    ) -> bool {
        let contact = self.registration.dialog_contact().clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        let Some((id, invite)) = c.invite_server.clone() else {
            return false;
        };
        // A reason phrase is one line of printable text (§25.1).
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        let mut resp = response_to(&invite, code, &reason, &mut self.rng);
        if code >= 300 && reason != reason_phrase(code) {
            let text = reason.replace(['"', '\\'], "'");
            resp.headers
                .push("Warning", format!("399 icephone \"{text}\""));
        }
        resp.headers.set("To", with_tag(&invite, &c.local_tag));
        if (101..300).contains(&code) {
            // §12.1.1: the dialog's route set travels back in the answer.
            for rr in invite.headers.get_all("Record-Route") {
                resp.headers.push("Record-Route", rr);
            }
            resp.headers.push("Contact", format!("<{contact}>"));
        }
        if (200..300).contains(&code) {
            resp.headers.push("Allow", ALLOW);
            set_sdp(&mut resp.headers, &mut resp.body, body);
            if c.dialog.is_none() {
                match Dialog::as_uas(&invite, &c.local_tag, &mut self.rng) {
                    Ok(d) => c.dialog = Some(d),
                    Err(e) => {
                        // Nothing to build a dialog from: refuse instead.
                        resp = response_to(&invite, 400, &e.to_string(), &mut self.rng);
                    }
                }
            }
        }
        self.layer.respond(now, &id, &resp);
        let reinvite = c.phase == Phase::Confirmed;
        match resp.code {
            101..=199 => c.phase = Phase::Early,
            200..=299 => {
                c.phase = Phase::Confirmed;
                // A 2xx stays pending until its ACK; failures end here.
                if reinvite {
                    c.invite_server = None;
                }
            }
            300.. => {
                c.invite_server = None;
                if !reinvite {
                    let end = CallEnd::Rejected {
                        code: resp.code,
                        reason: resp.reason.clone(),
                    };
                    self.end_call(call, end);
                }
            }
            _ => {}
        }
        self.drain_layer(now);
        true
    }

    /// Hangs up: CANCEL before the answer (once a provisional came), BYE
    /// after, 603 Decline to a call still ringing here.
    pub fn hangup(&mut self, now: Instant, call: CallHandle) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match (c.outgoing, c.phase) {
            (_, Phase::Ending) => {}
            (true, Phase::Trying) => c.hangup_wanted = true,
            (true, Phase::Early) => self.send_cancel(now, call),
            (_, Phase::Confirmed) => self.send_bye(now, call),
            (false, _) => {
                self.answer(now, call, 603, Vec::new());
            }
        }
        self.drain_layer(now);
    }

    /// Sends a re-INVITE with a new session description (hold, resume,
    /// ICE restart). The answer arrives as [`UaEvent::CallUpdated`].
    pub fn reinvite(&mut self, now: Instant, call: CallHandle, body: Vec<u8>) -> bool {
        let via = self.config.registration.via(&mut self.rng);
        let contact = self.registration.dialog_contact().clone();
        let target = match self.calls.get(&call).and_then(|c| c.dialog.as_ref()) {
            Some(d) => self.dialog_target(d),
            None => return false,
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        if c.phase != Phase::Confirmed || c.reinvite_client.is_some() {
            return false;
        }
        let Some(dialog) = c.dialog.as_mut() else {
            return false;
        };
        let mut req = dialog.request(Method::Invite, &via, &contact);
        set_sdp(&mut req.headers, &mut req.body, body);
        let id = self.layer.send_request(now, target, req.clone());
        c.reinvite_client = Some((id, req));
        self.drain_layer(now);
        true
    }

    /// The earliest CANCEL deadline of the calls.
    pub(super) fn calls_timeout(&self) -> Option<Instant> {
        self.calls.values().filter_map(|c| c.cancel_deadline).min()
    }

    /// Gives up INVITEs whose CANCEL went unanswered for 64·T1.
    pub(super) fn calls_handle_timeout(&mut self, now: Instant) {
        let expired: Vec<(CallHandle, Option<ClientId>)> = self
            .calls
            .iter()
            .filter(|(_, c)| c.cancel_deadline.is_some_and(|t| t <= now))
            .map(|(h, c)| (*h, c.invite_client.clone()))
            .collect();
        for (handle, invite) in expired {
            if let Some(id) = invite {
                self.layer.abandon(&id);
            }
            self.end_call(handle, CallEnd::Local);
        }
    }

    pub(super) fn new_call_handle(&mut self) -> CallHandle {
        self.next_call += 1;
        CallHandle(self.next_call)
    }

    /// A new request the calls may own; false when it is not theirs.
    pub(super) fn call_request(&mut self, now: Instant, id: &ServerId, req: &Request) -> bool {
        match req.method {
            Method::Invite => self.on_invite(now, id, req),
            Method::Cancel => self.on_cancel(now, id, req),
            Method::Bye => self.on_bye(now, id, req),
            _ => return false,
        }
        true
    }

    /// Which call, and which of its requests, a client transaction is.
    fn call_of(&self, id: &ClientId) -> Option<(CallHandle, CallRequest)> {
        self.calls.iter().find_map(|(&handle, c)| {
            let which = if c.invite_client.as_ref() == Some(id) {
                CallRequest::Invite
            } else if c.end_client.as_ref() == Some(id) {
                CallRequest::Bye
            } else if c.reinvite_client.as_ref().is_some_and(|(r, _)| r == id) {
                CallRequest::ReInvite
            } else {
                return None;
            };
            Some((handle, which))
        })
    }

    /// A response to one of the calls' transactions; false when not theirs.
    pub(super) fn call_response(&mut self, now: Instant, id: &ClientId, resp: &Response) -> bool {
        let Some((handle, which)) = self.call_of(id) else {
            return false;
        };
        match which {
            CallRequest::Invite => self.on_invite_response(now, handle, resp),
            CallRequest::Bye if resp.code >= 200 => self.end_call(handle, CallEnd::Local),
            CallRequest::Bye => {}
            CallRequest::ReInvite => self.on_reinvite_response(now, handle, resp),
        }
        true
    }

    /// One of the calls' transactions got no final answer. A lost
    /// re-INVITE ends the session too (§14.1 leaves the choice).
    pub(super) fn call_timeout(&mut self, id: &ClientId) -> bool {
        let Some((handle, which)) = self.call_of(id) else {
            return false;
        };
        let end = match which {
            // §8.1.3.1: a transport failure reads as a 503, which leaves a
            // re-INVITE's dialog and session as they were (§14.1); only
            // silence ends the dialog (§12.2.1.2).
            CallRequest::ReInvite if self.transport_failure.is_some() => {
                if let Some(c) = self.calls.get_mut(&handle) {
                    c.reinvite_client = None;
                }
                self.events.push_back(UaEvent::CallUpdated {
                    call: handle,
                    code: 503,
                    body: Vec::new(),
                });
                return true;
            }
            // The INVITE was answered already: its transaction only waited
            // for 2xx retransmissions (RFC 6026 Accepted), and its end,
            // even by a transport failure, is not the call's.
            CallRequest::Invite
                if self
                    .calls
                    .get(&handle)
                    .is_some_and(|c| c.phase == Phase::Confirmed) =>
            {
                if let Some(c) = self.calls.get_mut(&handle) {
                    c.invite_client = None;
                }
                return true;
            }
            CallRequest::Bye => CallEnd::Local,
            CallRequest::Invite | CallRequest::ReInvite => CallEnd::TimedOut,
        };
        self.end_call(handle, end);
        true
    }

    /// An ACK outside any transaction: the one for our 2xx.
    pub(super) fn call_ack(&mut self, now: Instant, ack: &Request) {
        let Some((&handle, c)) = self
            .calls
            .iter_mut()
            .find(|(_, c)| c.dialog.as_ref().is_some_and(|d| d.matches_request(ack)))
        else {
            return;
        };
        let Some((id, invite)) = c.invite_server.take() else {
            return; // a retransmitted ACK
        };
        let same_invite = ack.cseq().ok().map(|s| s.seq) == invite.cseq().ok().map(|s| s.seq);
        if !same_invite {
            c.invite_server = Some((id, invite));
            return;
        }
        self.layer.ack_2xx(now, &id);
        let first = !invite.to().is_ok_and(|t| t.tag().is_some());
        if first {
            self.events
                .push_back(UaEvent::CallConfirmed { call: handle });
        }
    }

    /// Our 2xx to an INVITE was never ACKed: the call is over (§13.3.1.4).
    pub(super) fn call_no_ack(&mut self, now: Instant, id: &ServerId) {
        let Some((&handle, _)) = self
            .calls
            .iter()
            .find(|(_, c)| c.invite_server.as_ref().is_some_and(|(s, _)| s == id))
        else {
            return;
        };
        self.send_bye(now, handle);
        self.end_call(handle, CallEnd::NoAck);
    }

    fn on_invite(&mut self, now: Instant, id: &ServerId, req: &Request) {
        let in_dialog = req.to().is_ok_and(|t| t.tag().is_some());
        if !in_dialog {
            let handle = self.new_call_handle();
            let mut call = Call::new(false, req.clone());
            call.local_tag = random_hex(&mut self.rng, 6);
            call.invite_server = Some((id.clone(), req.clone()));
            // 100 at once: the INVITE stops being retransmitted (§17.2.1).
            let trying = response_to(req, 100, "Trying", &mut self.rng);
            self.layer.respond(now, id, &trying);
            self.calls.insert(handle, call);
            let from = req.from().map(|f| f.uri.to_string()).unwrap_or_default();
            self.events.push_back(UaEvent::IncomingCall {
                call: handle,
                from,
                body: req.body.clone(),
            });
            return;
        }
        let Some((&handle, c)) = self
            .calls
            .iter_mut()
            .find(|(_, c)| c.dialog.as_ref().is_some_and(|d| d.matches_request(req)))
        else {
            self.respond_simple(now, id, req, 481);
            return;
        };
        // §14.2: one INVITE at a time in each direction.
        if c.invite_server.is_some() || c.reinvite_client.is_some() {
            let code = if c.invite_server.is_some() { 500 } else { 491 };
            self.respond_simple(now, id, req, code);
            return;
        }
        let in_order = c.dialog.as_mut().is_some_and(|d| d.accept_remote_cseq(req));
        if !in_order {
            self.respond_simple(now, id, req, 500);
            return;
        }
        if let Some(contact) = req
            .contacts()
            .ok()
            .and_then(|cs| cs.addrs().first().map(|a| a.uri.clone()))
        {
            if let Some(d) = c.dialog.as_mut() {
                d.refresh_target(contact);
            }
        }
        c.invite_server = Some((id.clone(), req.clone()));
        self.events.push_back(UaEvent::ReInvite {
            call: handle,
            body: req.body.clone(),
        });
    }

    fn on_cancel(&mut self, now: Instant, id: &ServerId, req: &Request) {
        let target = self.calls.iter().find(|(_, c)| {
            !c.outgoing
                && c.phase != Phase::Confirmed
                && c.invite_server
                    .as_ref()
                    .is_some_and(|(s, _)| s.branch == id.branch && s.sent_by == id.sent_by)
        });
        let Some((&handle, _)) = target else {
            self.respond_simple(now, id, req, 481);
            return;
        };
        self.respond_simple(now, id, req, 200);
        // §9.2: the INVITE gets 487, then the call is gone.
        self.finish_pending_invite(now, handle, 487);
        self.end_call(handle, CallEnd::Cancelled);
    }

    fn on_bye(&mut self, now: Instant, id: &ServerId, req: &Request) {
        let found = self
            .calls
            .iter_mut()
            .find(|(_, c)| c.dialog.as_ref().is_some_and(|d| d.matches_request(req)));
        let Some((&handle, c)) = found else {
            self.respond_simple(now, id, req, 481);
            return;
        };
        if !c.dialog.as_mut().is_some_and(|d| d.accept_remote_cseq(req)) {
            self.respond_simple(now, id, req, 500);
            return;
        }
        // An INVITE still waiting for our answer is over too (§15.1.2).
        self.finish_pending_invite(now, handle, 487);
        self.respond_simple(now, id, req, 200);
        self.end_call(handle, CallEnd::Remote);
    }

    fn on_invite_response(&mut self, now: Instant, handle: CallHandle, resp: &Response) {
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        match resp.code {
            100 => {}
            101..=199 => {
                c.phase = Phase::Early;
                self.events.push_back(UaEvent::CallProgress {
                    call: handle,
                    code: resp.code,
                    reason: resp.reason.clone(),
                });
                if c.hangup_wanted {
                    self.send_cancel(now, handle);
                }
            }
            200..=299 => self.on_invite_2xx(now, handle, resp),
            401 | 407 => {
                let ok = c
                    .auth
                    .as_mut()
                    .is_some_and(|a| a.on_challenge(resp).is_ok());
                if ok && !c.hangup_wanted {
                    self.resend_invite(now, handle);
                } else {
                    self.fail_call(handle, resp);
                }
            }
            _ => {
                if resp.code == 487 && c.hangup_wanted {
                    self.end_call(handle, CallEnd::Local);
                } else {
                    self.fail_call(handle, resp);
                }
            }
        }
    }

    fn on_invite_2xx(&mut self, now: Instant, handle: CallHandle, resp: &Response) {
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        if let Some((target, ack)) = &c.last_ack {
            // A retransmitted 2xx: our ACK was lost (§13.2.2.4).
            self.layer.send_stateless(*target, ack.clone());
            return;
        }
        let dialog = match Dialog::as_uac(&c.invite, resp) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "a 2xx that makes no dialog");
                self.fail_call(handle, resp);
                return;
            }
        };
        let seq = c.invite.cseq().map(|s| s.seq).unwrap_or(1);
        let via = self.config.registration.via(&mut self.rng);
        let ack = dialog.ack(seq, &via).to_bytes();
        let target = self.dialog_target(&dialog);
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        self.layer.send_stateless(target, ack.clone());
        c.last_ack = Some((target, ack));
        c.dialog = Some(dialog);
        c.phase = Phase::Confirmed;
        let hangup = c.hangup_wanted;
        self.events.push_back(UaEvent::CallAnswered {
            call: handle,
            body: resp.body.clone(),
        });
        if hangup {
            self.send_bye(now, handle);
        }
    }

    fn on_reinvite_response(&mut self, _now: Instant, handle: CallHandle, resp: &Response) {
        if resp.code < 200 {
            return;
        }
        let via = self.config.registration.via(&mut self.rng);
        let target = match self.calls.get(&handle).and_then(|c| c.dialog.as_ref()) {
            Some(d) => self.dialog_target(d),
            None => return,
        };
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some((_, req)) = c.reinvite_client.take() else {
            return;
        };
        if (200..300).contains(&resp.code) {
            if let Some(d) = c.dialog.as_mut() {
                if let Some(contact) = resp
                    .contacts()
                    .ok()
                    .and_then(|cs| cs.addrs().first().map(|a| a.uri.clone()))
                {
                    d.refresh_target(contact);
                }
                let seq = req.cseq().map(|s| s.seq).unwrap_or(0);
                let ack = d.ack(seq, &via).to_bytes();
                self.layer.send_stateless(target, ack.clone());
                c.last_ack = Some((target, ack));
            }
        }
        self.events.push_back(UaEvent::CallUpdated {
            call: handle,
            code: resp.code,
            body: resp.body.clone(),
        });
    }

    fn resend_invite(&mut self, now: Instant, handle: CallHandle) {
        let via = self.config.registration.via(&mut self.rng);
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        let mut req = c.invite.clone();
        req.headers.remove("Authorization");
        req.headers.remove("Proxy-Authorization");
        req.headers.set("Via", via);
        let seq = req.cseq().map(|s| s.seq).unwrap_or(1) + 1;
        req.headers.set("CSeq", format!("{seq} INVITE"));
        if let Some(auth) = c.auth.as_mut() {
            auth.sign(&mut req, &mut self.rng);
        }
        c.invite = req.clone();
        c.invite_client = Some(self.layer.send_request(now, self.config.next_hop, req));
    }

    /// CANCEL for our INVITE (§9.1): its Request-URI, Call-ID, From, To,
    /// Route and top Via, CSeq number with method CANCEL.
    fn send_cancel(&mut self, now: Instant, handle: CallHandle) {
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        let invite = &c.invite;
        let mut cancel = Request::new(Method::Cancel, invite.uri.clone());
        if let Some(via) = invite.headers.get_all("Via").first() {
            cancel.headers.push("Via", via);
        }
        cancel.headers.push("Max-Forwards", "70");
        for route in invite.headers.get_all("Route") {
            cancel.headers.push("Route", route);
        }
        for name in ["From", "To", "Call-ID"] {
            if let Some(v) = invite.headers.get(name) {
                cancel.headers.push(name, v);
            }
        }
        let seq = invite.cseq().map(|s| s.seq).unwrap_or(1);
        cancel.headers.push("CSeq", format!("{seq} CANCEL"));
        c.hangup_wanted = true;
        c.phase = Phase::Ending;
        c.cancel_deadline = Some(now + self.layer.timers().transaction_timeout());
        // The CANCEL's own answer is not awaited: the INVITE's 487 (or
        // its timeout) ends the call.
        self.layer.send_request(now, self.config.next_hop, cancel);
    }

    fn send_bye(&mut self, now: Instant, handle: CallHandle) {
        let via = self.config.registration.via(&mut self.rng);
        let contact = self.registration.dialog_contact().clone();
        let target = match self.calls.get(&handle).and_then(|c| c.dialog.as_ref()) {
            Some(d) => self.dialog_target(d),
            None => return,
        };
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(dialog) = c.dialog.as_mut() else {
            return;
        };
        let bye = dialog.request(Method::Bye, &via, &contact);
        c.phase = Phase::Ending;
        c.end_client = Some(self.layer.send_request(now, target, bye));
    }

    /// Where in-dialog requests go: the first route or the remote target,
    /// when it is an address; a name we cannot resolve here falls back to
    /// the account's next hop (the proxy that Record-Routed).
    fn dialog_target(&self, dialog: &Dialog) -> Target {
        let uri = dialog.next_hop();
        let transport = uri
            .transport()
            .and_then(Transport::parse)
            .unwrap_or(self.config.next_hop.transport);
        match uri.host.ip() {
            Some(ip) => Target {
                transport,
                addr: std::net::SocketAddr::new(ip, uri.port.unwrap_or(5060)),
            },
            None => self.config.next_hop,
        }
    }

    /// Answers the INVITE still waiting in `handle` with `code`, under our
    /// tag; nothing if it was answered finally already.
    fn finish_pending_invite(&mut self, now: Instant, handle: CallHandle, code: u16) {
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some((id, invite)) = c.invite_server.take() else {
            return;
        };
        let mut resp = response_to(&invite, code, reason_phrase(code), &mut self.rng);
        resp.headers.set("To", with_tag(&invite, &c.local_tag));
        self.layer.respond(now, &id, &resp);
    }

    fn respond_simple(&mut self, now: Instant, id: &ServerId, req: &Request, code: u16) {
        let resp = response_to(req, code, reason_phrase(code), &mut self.rng);
        self.layer.respond(now, id, &resp);
    }

    fn fail_call(&mut self, handle: CallHandle, resp: &Response) {
        let end = CallEnd::Rejected {
            code: resp.code,
            reason: resp.reason.clone(),
        };
        self.end_call(handle, end);
    }

    pub(super) fn end_call(&mut self, handle: CallHandle, end: CallEnd) {
        if self.calls.remove(&handle).is_some() {
            self.events
                .push_back(UaEvent::CallEnded { call: handle, end });
        }
    }
}

impl Call {
    fn new(outgoing: bool, invite: Request) -> Self {
        Call {
            outgoing,
            phase: Phase::Trying,
            invite,
            invite_client: None,
            invite_server: None,
            local_tag: String::new(),
            dialog: None,
            auth: None,
            hangup_wanted: false,
            last_ack: None,
            reinvite_client: None,
            end_client: None,
            cancel_deadline: None,
        }
    }
}

/// The INVITE's To with our tag.
fn with_tag(invite: &Request, tag: &str) -> String {
    match invite.to() {
        Ok(mut to) => {
            if to.tag().is_none() {
                to.set_tag(tag);
            }
            to.to_string()
        }
        Err(_) => invite.headers.get("To").unwrap_or_default().to_owned(),
    }
}

/// A session description as the message body (none: no Content-Type).
fn set_sdp(headers: &mut Headers, slot: &mut Vec<u8>, body: Vec<u8>) {
    if !body.is_empty() {
        headers.push("Content-Type", "application/sdp");
    }
    *slot = body;
}
