//! The user agent core: one account's registration, keep-alives, its calls
//! (`sip::calls`), and the answers a UA owes to requests outside any call
//! (RFC 3261 §8.2). Sans-IO: bytes and instants in, [`Transmit`]s and
//! [`UaEvent`]s out.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;

use super::calls::{Call, CallEnd, CallHandle};
use super::layer::{
    response_target, response_to, ClientId, LayerEvent, ServerId, TransactionLayer,
};
use super::message::{Message, Method, Request, Response};
use super::registration::{Registration, RegistrationConfig, RegistrationError, RegistrationEvent};
use super::transaction::SipTimers;
use super::{random_hex, Target, Transmit, ALLOW};

#[derive(Clone, Debug)]
pub struct UaConfig {
    pub registration: RegistrationConfig,
    /// Where our requests go: the registrar, or the outbound proxy.
    pub next_hop: Target,
    /// Keep-alive period while registered: an OPTIONS to the next hop over
    /// UDP (its answer also shows a changed NAT mapping), a CRLF CRLF ping
    /// over TCP (RFC 5626 §4.4.1). `None`: no keep-alives.
    pub keepalive: Option<Duration>,
    pub timers: SipTimers,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UaEvent {
    Registration(RegistrationEvent),
    /// Someone calls: answer with [`UserAgent::answer`].
    IncomingCall {
        call: CallHandle,
        /// The caller's URI (From).
        from: String,
        /// Their session description (the offer), possibly empty.
        body: Vec<u8>,
    },
    /// A provisional answer to our INVITE (180 Ringing, 183…).
    CallProgress {
        call: CallHandle,
        code: u16,
        reason: String,
    },
    /// Our call was answered (and ACKed); `body` is their answer.
    CallAnswered {
        call: CallHandle,
        body: Vec<u8>,
    },
    /// The caller ACKed our 2xx: the call is up.
    CallConfirmed {
        call: CallHandle,
    },
    /// The peer sent a re-INVITE: answer with [`UserAgent::answer`].
    ReInvite {
        call: CallHandle,
        body: Vec<u8>,
    },
    /// The final answer to our re-INVITE.
    CallUpdated {
        call: CallHandle,
        code: u16,
        body: Vec<u8>,
    },
    CallEnded {
        call: CallHandle,
        end: CallEnd,
    },
}

/// Counters of what the UA refused or could not place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UaStats {
    /// Not SIP at all, or unparseable: dropped.
    pub malformed: u64,
    /// Parsed, but answered 400 (a mandatory header missing or bad).
    pub bad_requests: u64,
    /// Responses that matched no transaction, requests without a branch.
    pub unmatched: u64,
}

pub struct UserAgent {
    pub(super) config: UaConfig,
    pub(super) layer: TransactionLayer,
    pub(super) registration: Registration,
    pub(super) rng: StdRng,
    pub(super) calls: BTreeMap<CallHandle, Call>,
    pub(super) next_call: u64,
    register_tx: Option<ClientId>,
    keepalive_tx: Option<ClientId>,
    next_keepalive: Option<Instant>,
    keepalive_cseq: u32,
    keepalive_call_id: String,
    transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<UaEvent>,
    stats: UaStats,
    /// Why the last send failed, for the timeout that follows it.
    pub(super) transport_failure: Option<String>,
}

impl UserAgent {
    pub fn new(config: UaConfig, mut rng: StdRng) -> Self {
        let registration = Registration::new(config.registration.clone(), &mut rng);
        UserAgent {
            layer: TransactionLayer::new(config.timers),
            registration,
            calls: BTreeMap::new(),
            next_call: 0,
            register_tx: None,
            keepalive_tx: None,
            next_keepalive: None,
            keepalive_cseq: 0,
            keepalive_call_id: format!("{}@icephone", random_hex(&mut rng, 10)),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: UaStats::default(),
            transport_failure: None,
            rng,
            config,
        }
    }

    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    pub fn stats(&self) -> UaStats {
        self.stats
    }

    /// Registers now (or refreshes).
    pub fn register(&mut self, now: Instant) {
        let request = self.registration.register(&mut self.rng);
        self.send_register(now, request);
    }

    /// Removes our contact; [`RegistrationEvent::Unregistered`] follows.
    pub fn unregister(&mut self, now: Instant) {
        self.next_keepalive = None;
        let request = self.registration.unregister(&mut self.rng);
        self.send_register(now, request);
    }

    /// One datagram or stream frame from `source`.
    pub fn handle_input(&mut self, now: Instant, source: Target, bytes: &[u8]) {
        match Message::parse(bytes) {
            Ok(Message::Request(req)) => self.on_request(now, source, req),
            Ok(Message::Response(resp)) => {
                if self.layer.handle_response(now, resp).is_err() {
                    self.stats.unmatched += 1;
                }
            }
            Err(e) => {
                self.stats.malformed += 1;
                tracing::debug!(%source.addr, error = %e, "dropping malformed SIP");
            }
        }
        self.drain_layer(now);
    }

    /// Sending to `target` failed (connection refused, reset): its
    /// transactions end, and a registration among them fails with `reason`.
    pub fn transport_error(&mut self, now: Instant, target: Target, reason: &str) {
        self.transport_failure = Some(reason.to_owned());
        self.layer.transport_error(target);
        self.drain_layer(now);
    }

    /// Our connection to `target` closed or was reset (a NAT that forgot
    /// it, a server restart): requests waiting on it fail with `reason`.
    pub fn connection_lost(&mut self, now: Instant, target: Target, reason: &str) {
        self.transport_failure = Some(reason.to_owned());
        self.layer.connection_lost(target);
        if target == self.config.next_hop && target.transport.is_reliable() {
            self.registration.flow_lost(now);
        }
        self.drain_layer(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        self.drain_layer(now);
        self.calls_handle_timeout(now);
        if self.registration.is_due(now) && self.register_tx.is_none() {
            self.register(now);
        }
        if self.next_keepalive.is_some_and(|t| t <= now) {
            self.send_keepalive(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.layer.poll_timeout(),
            self.registration.poll_timeout(),
            self.next_keepalive,
            self.calls_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits
            .pop_front()
            .or_else(|| self.layer.poll_transmit())
    }

    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }

    fn send_register(&mut self, now: Instant, request: Request) {
        let id = self.layer.send_request(now, self.config.next_hop, request);
        self.register_tx = Some(id);
    }

    /// A keep-alive now rather than at its time: the media path was just
    /// lost, so the NAT may have dropped our signalling mapping too. Going
    /// out re-opens it, and the answer shows whether the address changed
    /// (then we register again from it).
    pub fn keepalive_now(&mut self, now: Instant) {
        self.send_keepalive(now);
    }

    /// Where our requests go, and over what: the registrar or outbound proxy.
    pub fn next_hop(&self) -> Target {
        self.config.next_hop
    }

    fn send_keepalive(&mut self, now: Instant) {
        let Some(period) = self.config.keepalive else {
            return;
        };
        self.next_keepalive = Some(now + period);
        let hop = self.config.next_hop;
        if hop.transport.is_reliable() {
            self.transmits.push_back(Transmit {
                target: hop,
                bytes: b"\r\n\r\n".to_vec(),
            });
            return;
        }
        if self.keepalive_tx.is_some() {
            return; // the last one is still out
        }
        self.keepalive_cseq += 1;
        let cfg = &self.config.registration;
        let mut req = cfg.new_request(Method::Options, cfg.registrar.clone(), &mut self.rng);
        let h = &mut req.headers;
        h.push(
            "From",
            format!("<{}>;tag={}", cfg.aor, random_hex(&mut self.rng, 6)),
        );
        h.push("To", format!("<{}>", cfg.registrar));
        h.push("Call-ID", &self.keepalive_call_id);
        h.push("CSeq", format!("{} OPTIONS", self.keepalive_cseq));
        h.push("User-Agent", &cfg.user_agent);
        self.keepalive_tx = Some(self.layer.send_request(now, hop, req));
    }

    fn on_request(&mut self, now: Instant, source: Target, request: Request) {
        if let Err(e) = request.check_mandatory() {
            // Without a Via there is nowhere to send an answer.
            if request.top_via().is_ok() && request.method != Method::Ack {
                self.stats.bad_requests += 1;
                let resp = response_to(&request, 400, &e.to_string(), &mut self.rng);
                let target = response_target(source, &request);
                self.layer.send_stateless(target, resp.to_bytes());
            } else {
                self.stats.malformed += 1;
            }
            return;
        }
        if self.layer.handle_request(now, source, request).is_err() {
            self.stats.unmatched += 1;
        }
    }

    pub(super) fn drain_layer(&mut self, now: Instant) {
        while let Some(event) = self.layer.poll_event() {
            match event {
                LayerEvent::Request(id, req, _) => {
                    if !self.call_request(now, &id, &req) {
                        self.answer_outside_calls(now, &id, &req);
                    }
                }
                LayerEvent::Response(id, resp) => {
                    if !self.call_response(now, &id, &resp) {
                        self.on_response(now, &id, &resp);
                    }
                }
                LayerEvent::ClientTimedOut(id) => {
                    if !self.call_timeout(&id) {
                        self.on_client_timeout(now, &id);
                    }
                }
                LayerEvent::Ack(req, _) => self.call_ack(now, &req),
                LayerEvent::ServerNoAck(id) => self.call_no_ack(now, &id),
            }
        }
        while let Some(t) = self.layer.poll_transmit() {
            self.transmits.push_back(t);
        }
        // A send failure explains only the timeouts it caused just now.
        self.transport_failure = None;
    }

    fn on_response(&mut self, now: Instant, id: &ClientId, resp: &Response) {
        if self.keepalive_tx.as_ref() == Some(id) {
            if resp.code >= 200 {
                self.keepalive_tx = None;
                self.registration.check_mapping(now, resp);
            }
            return;
        }
        if self.register_tx.as_ref() != Some(id) || resp.code < 200 {
            return;
        }
        self.register_tx = None;
        let (event, next) = self.registration.handle_response(now, resp, &mut self.rng);
        if let Some(next) = next {
            self.send_register(now, next);
        }
        if let Some(event) = event {
            if matches!(event, RegistrationEvent::Registered { .. }) {
                self.next_keepalive = self.config.keepalive.map(|p| now + p);
            }
            self.events.push_back(UaEvent::Registration(event));
        }
    }

    fn on_client_timeout(&mut self, now: Instant, id: &ClientId) {
        if self.keepalive_tx.as_ref() == Some(id) {
            self.keepalive_tx = None;
            return;
        }
        if self.register_tx.as_ref() == Some(id) {
            self.register_tx = None;
            let error = match self.transport_failure.take() {
                Some(reason) => RegistrationError::Unreachable(reason),
                None => RegistrationError::Timeout,
            };
            if let Some(event) = self.registration.handle_timeout(now, error, &mut self.rng) {
                self.events.push_back(UaEvent::Registration(event));
            }
        }
    }

    /// What a UA answers outside its calls (RFC 3261 §8.2, §11).
    fn answer_outside_calls(&mut self, now: Instant, id: &ServerId, req: &Request) {
        let (code, reason) = if !req.uri.is_sip() {
            (416, "Unsupported URI Scheme")
        } else {
            match &req.method {
                Method::Options => (200, "OK"),
                Method::Other(_) => (501, "Not Implemented"),
                _ => (405, "Method Not Allowed"),
            }
        };
        let mut resp = response_to(req, code, reason, &mut self.rng);
        if matches!(code, 200 | 405) {
            resp.headers.push("Allow", ALLOW);
        }
        if code == 200 {
            resp.headers.push("Accept", "application/sdp");
        }
        self.layer.respond(now, id, &resp);
    }
}
