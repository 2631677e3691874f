//! The stateful proxy of `icephone serve` (RFC 3261 §16): routes requests
//! between the users of our [`Registrar`], answers REGISTER and OPTIONS
//! addressed to us, and relays responses back through the transaction
//! that asked. Sans-IO: bytes and instants in, [`Transmit`]s out.
//!
//! Owns: request validation (§16.3), Route handling (§16.4), target choice
//! (§16.5), forwarding (§16.6), response relay (§16.7), timer C (§16.8),
//! CANCEL (§16.10), proxy authentication (§22.3), and Via `received` /
//! `rport` stamping (§18.2.1, RFC 3581). Must not touch: sockets, DNS, the
//! clock, media or bodies (SDP passes through untouched), and the message
//! syntax, transactions and bindings (`message`, `layer`, `registrar`).
//!
//! Deliberate limits and choices:
//! - No forking: a request goes to the newest binding only, so each
//!   proxied request has exactly one client transaction and the "best
//!   response" of §16.7 is simply that branch's.
//! - No DNS: a non-local target must be an IP literal; a domain we would
//!   have to resolve is answered 502 (as is a transport we do not listen on).
//! - A user known to us but not registered gets 480 (§16.5); an unknown
//!   user in our domain gets 404.
//! - A CANCEL is answered 200 at once and sent downstream only after a
//!   provisional response (§9.1); if the callee never answers it, 64·T1
//!   later the caller gets 487 and the context is dropped.
//! - No open relay: a request goes to a foreign target only when it is an
//!   initial request from an authenticated user, or an in-dialog request
//!   that follows a Record-Route of ours and comes from a flow one of our
//!   users registered from (their BYE to an outside party). So a user must
//!   be registered for their in-dialog requests to reach outside parties.
//! - A 2xx to an INVITE is not retransmitted by us: the callee retransmits
//!   it and every copy is relayed (RFC 6026 §7.3, §16.7 step 10).
//! - Stray responses (no transaction) are relayed statelessly (§16.7,
//!   step 1) only when they are 2xx to an INVITE and carry a branch we
//!   minted for exactly the address they would go to, so that we cannot be
//!   used to reflect traffic.
//! - `sips:` Request-URIs are forwarded only over TLS (else 480).
//! - A non-INVITE that times out downstream is answered 408 although RFC
//!   4320 §4.2 says to stay silent: `TransactionLayer` cannot drop a server
//!   transaction unanswered, and it would otherwise live forever.
//! - When we give up on an INVITE whose callee ignores our CANCEL, its client
//!   transaction stays in `TransactionLayer` (no timer runs in Proceeding,
//!   and the layer cannot drop one); only our context is freed.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::Sha256;

use super::framing::is_keepalive;
use super::headers::{Credentials, NameAddr, Via};
use super::layer::response_to;
use super::layer::{
    response_target, ClientId, LayerEvent, ServerId, TransactionLayer, BRANCH_MAGIC,
};
use super::message::{reason_phrase, Message, Method, ParseError, Request, Response};
use super::registrar::{AuthVerdict, Registrar, RegistrarConfig};
use super::transaction::SipTimers;
use super::uri::{Scheme, Uri};
use super::{random_hex, Target, Transmit, Transport, ALLOW};

/// RFC 3261 §16.6 step 11: more than three minutes.
const TIMER_C: Duration = Duration::from_secs(181);
/// Hex digits of the random part and of the HMAC tag of our branches.
const BRANCH_NONCE_HEX: usize = 16;
const BRANCH_TAG_BYTES: usize = 6;

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Realm, users and binding limits. Our own IP addresses are added to
    /// its domains by [`Proxy::new`].
    pub registrar: RegistrarConfig,
    /// The addresses we listen on, one per transport (and IP family): Via
    /// sent-by and Record-Route. Concrete addresses, never 0.0.0.0.
    pub local: Vec<Target>,
    pub timers: SipTimers,
    /// Timer C (§16.8); tests shorten it.
    pub timer_c: Duration,
    /// Most requests in flight; more are answered 503.
    pub max_pending: usize,
}

impl ProxyConfig {
    pub fn new(registrar: RegistrarConfig, local: Vec<Target>) -> Self {
        ProxyConfig {
            registrar,
            local,
            timers: SipTimers::default(),
            timer_c: TIMER_C,
            max_pending: 4096,
        }
    }
}

/// What the proxy dropped, refused and passed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Not a SIP message, or a request with no Via to answer: dropped.
    pub malformed: u64,
    /// Requests answered 400 (or 505/513) for their syntax.
    pub bad_requests: u64,
    /// Requests (ACKs included) sent on downstream.
    pub forwarded: u64,
    /// Responses relayed upstream.
    pub relayed: u64,
    /// Responses for no transaction of ours, requests without a 3261
    /// branch, ACKs that could not be routed: dropped.
    pub unmatched: u64,
}

/// A local answer: status, reason and the headers it needs.
struct Reply {
    code: u16,
    reason: String,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn new(code: u16) -> Self {
        Reply::with_reason(code, reason_phrase(code))
    }

    fn with_reason(code: u16, reason: &str) -> Self {
        Reply {
            code,
            reason: reason.to_owned(),
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn bad(error: ParseError) -> Self {
        Reply::with_reason(error.status_code(), &error.to_string())
    }
}

/// Where a request goes next.
struct Hop {
    target: Target,
    /// The binding's contact replaces the Request-URI (§16.5 retargeting).
    new_uri: Option<Uri>,
    /// The target is one of our users' flows: always allowed.
    local: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// §16.8: no final response for a long time.
    TimerC,
    /// §9.1: the CANCEL went 64·T1 ago and the INVITE is still open.
    CancelGiveUp,
}

/// One proxied request: its server transaction upstream, its client
/// transaction downstream (one branch: no forking).
struct Pending {
    server: ServerId,
    /// Where upstream responses go outside the transaction (2xx copies).
    upstream: Target,
    /// As sent downstream: the CANCEL is built from it.
    request: Request,
    downstream: Target,
    provisional_seen: bool,
    cancel_requested: bool,
    cancel_sent: bool,
    deadline: Option<(Instant, Deadline)>,
}

pub struct Proxy {
    config: ProxyConfig,
    layer: TransactionLayer,
    registrar: Registrar,
    rng: StdRng,
    /// Keys the tags of our branches.
    branch_secret: [u8; 32],
    /// By the branch of our client transaction.
    pending: HashMap<String, Pending>,
    /// The branch for an upstream INVITE, for CANCEL matching.
    by_server: HashMap<ServerId, String>,
    /// INVITEs whose 2xx went up, by our branch: where copies of that 2xx
    /// go (RFC 6026) until 64·T1 later. Kept apart from `pending` so a
    /// busy proxy's answered calls neither count against `max_pending`
    /// nor lengthen its scans.
    answered: HashMap<String, Target>,
    /// (forget at, branch) in time order: every entry waits the same time.
    answered_expiry: VecDeque<(Instant, String)>,
    stats: ProxyStats,
}

impl Proxy {
    pub fn new(mut config: ProxyConfig, mut rng: StdRng) -> Self {
        for local in &config.local {
            let ip = local.addr.ip().to_string();
            if !config.registrar.domains.contains(&ip) {
                config.registrar.domains.push(ip);
            }
        }
        let registrar = Registrar::new(config.registrar.clone(), StdRng::from_rng(&mut rng));
        let mut branch_secret = [0u8; 32];
        rng.fill_bytes(&mut branch_secret);
        Proxy {
            layer: TransactionLayer::new(config.timers),
            registrar,
            rng,
            branch_secret,
            pending: HashMap::new(),
            by_server: HashMap::new(),
            answered: HashMap::new(),
            answered_expiry: VecDeque::new(),
            stats: ProxyStats::default(),
            config,
        }
    }

    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    pub fn stats(&self) -> ProxyStats {
        self.stats
    }

    /// Requests in flight (for tests and counters).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// One datagram or stream frame from `source`.
    pub fn handle_message(&mut self, now: Instant, source: Target, bytes: &[u8]) {
        if is_keepalive(bytes) {
            return; // a CRLF keep-alive; the stream driver answers pings
        }
        match Message::parse(bytes) {
            Ok(Message::Request(req)) => self.on_request(now, source, req),
            Ok(Message::Response(resp)) => self.on_response(now, resp),
            Err(e) => {
                self.stats.malformed += 1;
                tracing::debug!(%source.addr, error = %e, "dropping malformed SIP");
            }
        }
        self.drain_layer(now);
    }

    /// Sending to `target` failed: its transactions end (as timeouts).
    pub fn transport_error(&mut self, now: Instant, target: Target) {
        self.layer.transport_error(target);
        self.drain_layer(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        self.drain_layer(now);
        self.registrar.handle_timeout(now);
        let due: Vec<(String, Deadline)> = self
            .pending
            .iter()
            .filter_map(|(branch, p)| match p.deadline {
                Some((at, kind)) if at <= now => Some((branch.clone(), kind)),
                _ => None,
            })
            .collect();
        for (branch, kind) in due {
            self.on_deadline(now, &branch, kind);
        }
        while self
            .answered_expiry
            .front()
            .is_some_and(|(at, _)| *at <= now)
        {
            if let Some((_, branch)) = self.answered_expiry.pop_front() {
                self.answered.remove(&branch);
            }
        }
        self.drain_layer(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadlines = self
            .pending
            .values()
            .filter_map(|p| p.deadline.map(|d| d.0));
        [
            self.layer.poll_timeout(),
            self.registrar.poll_timeout(),
            self.answered_expiry.front().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .chain(deadlines)
        .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.layer.poll_transmit()
    }

    // ---- input ------------------------------------------------------------

    fn on_request(&mut self, now: Instant, source: Target, mut req: Request) {
        stamp_via(&mut req, source);
        if let Err(e) = validate(&req) {
            // Without a Via there is nowhere to answer; an ACK is not answered.
            if req.top_via().is_ok() && req.method != Method::Ack {
                self.stats.bad_requests += 1;
                let resp = response_to(&req, e.status_code(), &e.to_string(), &mut self.rng);
                let target = response_target(source, &req);
                self.layer.send_stateless(target, resp.to_bytes());
            } else {
                self.stats.malformed += 1;
            }
            return;
        }
        if self.layer.handle_request(now, source, req).is_err() {
            self.stats.unmatched += 1;
        }
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        if resp.check_mandatory().is_err() {
            self.stats.malformed += 1;
            return;
        }
        if self.layer.handle_response(now, resp.clone()).is_err() {
            self.relay_stray(resp);
        }
    }

    fn drain_layer(&mut self, now: Instant) {
        while let Some(event) = self.layer.poll_event() {
            match event {
                LayerEvent::Request(id, req, source) => self.on_new_request(now, id, req, source),
                LayerEvent::Response(id, resp) => self.on_downstream_response(now, &id, resp),
                LayerEvent::ClientTimedOut(id) => self.on_client_timeout(now, &id),
                LayerEvent::Ack(req, source) => self.forward_ack(now, req, source),
                // Our 2xx relays are never retransmitted by us (see
                // `relay_final`), and an unACKed failure needs nothing.
                LayerEvent::ServerNoAck(_) => {}
            }
        }
    }

    // ---- requests ---------------------------------------------------------

    fn on_new_request(&mut self, now: Instant, id: ServerId, mut req: Request, source: Target) {
        let outcome = if req.method == Method::Cancel {
            self.on_cancel(now, &id, &req)
        } else {
            self.process(now, &id, &mut req, source)
        };
        if let Err(reply) = outcome {
            self.reply(now, &id, &req, reply);
        }
    }

    /// §16.3–§16.6 for a new request: answer it here (`Err`) or forward it.
    fn process(
        &mut self,
        now: Instant,
        id: &ServerId,
        req: &mut Request,
        source: Target,
    ) -> Result<(), Reply> {
        if !req.uri.is_sip() {
            return Err(Reply::new(416));
        }
        self.fix_strict_route(req)?;
        let followed_route = self.pop_own_routes(req)?;
        if req.method == Method::Register {
            // Never relayed: we are the registrar of our domains only.
            return self.register(now, id, req, source);
        }
        let routed_on = req.headers.contains("Route");
        if !routed_on && req.uri.user.is_none() && self.is_ours(&req.uri) {
            return Err(self.answer_for_us(req));
        }
        self.check_forwardable(req)?;
        let user = self.authenticate_if_ours(now, req, source)?;
        let hop = self.next_hop(now, req)?;
        let in_dialog = req.to().is_ok_and(|t| t.tag().is_some());
        let from_user = user.is_some()
            || (in_dialog && followed_route && self.registrar.is_user_flow(now, source));
        if !hop.local && !from_user {
            return Err(Reply::with_reason(403, "Relaying Denied"));
        }
        if req.uri.scheme == Scheme::Sips && hop.target.transport != Transport::Tls {
            return Err(Reply::with_reason(480, "SIPS Requires TLS"));
        }
        self.forward(now, id, req.clone(), source, hop)
    }

    /// §10.3 step 1 is ours: a REGISTER for a domain we do not serve is
    /// refused rather than relayed.
    fn register(
        &mut self,
        now: Instant,
        id: &ServerId,
        req: &Request,
        source: Target,
    ) -> Result<(), Reply> {
        if !self.registrar.serves_domain(&req.uri.host) {
            return Err(Reply::with_reason(403, "Not Our Domain"));
        }
        let resp = self.registrar.handle_register(now, req, source);
        self.layer.respond(now, id, &resp);
        Ok(())
    }

    /// A request addressed to the server itself: OPTIONS is answered (keep-
    /// alives of our UAs), anything else has no one to go to.
    fn answer_for_us(&self, req: &Request) -> Reply {
        match req.method {
            Method::Options => Reply::new(200)
                .header("Allow", format!("{ALLOW}, REGISTER"))
                .header("Accept", "application/sdp".to_owned()),
            _ => Reply::new(404),
        }
    }

    /// §16.3 steps 3–5: hops left, no loop through us, no extension we
    /// would have to understand.
    fn check_forwardable(&self, req: &Request) -> Result<(), Reply> {
        if req.max_forwards().map_err(Reply::bad)? == Some(0) {
            return Err(Reply::new(483));
        }
        let vias = req.via().map_err(Reply::bad)?;
        if vias.iter().any(|v| self.is_our_via(v)) {
            return Err(Reply::new(482));
        }
        let required = req.headers.get_all("Proxy-Require");
        if !required.is_empty() {
            return Err(Reply::new(420).header("Unsupported", required.join(", ")));
        }
        Ok(())
    }

    /// §22.3: an initial request claiming to be from one of our domains
    /// must prove it. CANCEL and ACK are never challenged (§22.1), nor are
    /// in-dialog requests (they follow our Record-Route).
    fn authenticate_if_ours(
        &mut self,
        now: Instant,
        req: &mut Request,
        source: Target,
    ) -> Result<Option<String>, Reply> {
        let from = req.from().map_err(Reply::bad)?;
        let in_dialog = req.to().map_err(Reply::bad)?.tag().is_some();
        if in_dialog || !self.registrar.serves_domain(&from.uri.host) {
            return Ok(None);
        }
        let credentials = req.headers.proxy_authorization().map_err(Reply::bad)?;
        let auth = self.registrar.auth();
        match auth.verify(now, source.addr, &req.method, &req.uri, &credentials) {
            AuthVerdict::Authorized(user) => {
                if from.uri.user.as_deref() != Some(user.as_str()) {
                    return Err(Reply::with_reason(403, "From Does Not Match Credentials"));
                }
                let realm = auth.realm().to_owned();
                remove_credentials(req, &realm);
                Ok(Some(user))
            }
            AuthVerdict::Challenge { stale } => {
                let challenges = auth.challenges(now, source.addr, stale);
                Err(challenges.iter().fold(Reply::new(407), |r, c| {
                    r.header("Proxy-Authenticate", c.to_string())
                }))
            }
            AuthVerdict::Forbidden => Err(Reply::new(403)),
            AuthVerdict::BadRequest(why) => Err(Reply::with_reason(400, why)),
        }
    }

    /// §16.5 and §16.6 step 7: the top Route if one is left, else the
    /// Request-URI — a user of ours (their newest binding), a contact we
    /// hold a binding for (its flow), or an IP literal.
    fn next_hop(&self, now: Instant, req: &Request) -> Result<Hop, Reply> {
        if let Some(route) = req.route().map_err(Reply::bad)?.into_iter().next() {
            return self.hop_to(now, &route.uri);
        }
        let uri = &req.uri;
        if !self.is_ours(uri) {
            return self.hop_to(now, uri);
        }
        let user = uri.user.as_deref().ok_or_else(|| Reply::new(404))?;
        if !self.registrar.is_user(user) {
            return Err(Reply::new(404));
        }
        // A GRUU reaches its instance wherever it registered last (RFC 5627
        // §5.2.1: 480 while it has no binding). Otherwise no forking: the
        // most recently refreshed binding only.
        let binding = match uri.param("gr") {
            Some(Some(instance)) => self.registrar.binding_for_instance(now, user, instance),
            _ => self.registrar.lookup(now, user).into_iter().next(),
        }
        .ok_or_else(|| Reply::new(480))?;
        Ok(Hop {
            target: binding.flow,
            new_uri: Some(binding.contact),
            local: true,
        })
    }

    /// A URI outside our domains: the flow of a binding with that contact
    /// (this is how a BYE reaches a UA behind a NAT), else its IP literal.
    fn hop_to(&self, now: Instant, uri: &Uri) -> Result<Hop, Reply> {
        if let Some(binding) = self.registrar.binding_for_contact(now, uri) {
            return Ok(Hop {
                target: binding.flow,
                new_uri: None,
                local: true,
            });
        }
        let ip = uri
            .host
            .ip()
            .ok_or_else(|| Reply::with_reason(502, "Cannot Resolve Host"))?;
        let transport =
            uri_transport(uri).ok_or_else(|| Reply::with_reason(502, "Unsupported Transport"))?;
        let port = uri.port.unwrap_or(default_port(transport));
        Ok(Hop {
            target: Target {
                transport,
                addr: SocketAddr::new(ip, port),
            },
            new_uri: None,
            local: false,
        })
    }

    /// §16.6: retarget, Max-Forwards, Record-Route, our Via, then a client
    /// transaction; an INVITE is answered 100 Trying first (§16.2).
    fn forward(
        &mut self,
        now: Instant,
        id: &ServerId,
        mut req: Request,
        source: Target,
        hop: Hop,
    ) -> Result<(), Reply> {
        if self.pending.len() >= self.config.max_pending {
            return Err(Reply::new(503).header("Retry-After", "5".to_owned()));
        }
        let out = self
            .local_for(hop.target)
            .ok_or_else(|| Reply::with_reason(502, "Unsupported Transport"))?;
        let upstream = response_target(source, &req);
        let is_invite = req.method == Method::Invite;
        if is_invite {
            let trying = response_to(&req, 100, reason_phrase(100), &mut self.rng);
            self.layer.respond(now, id, &trying);
        }
        if let Some(uri) = hop.new_uri {
            req.uri = uri;
        }
        decrement_max_forwards(&mut req);
        if needs_record_route(&req) {
            self.record_route(&mut req, source, out);
        }
        let branch = self.mint_branch(upstream);
        req.headers.insert_first("Via", our_via(out, &branch));
        if hop.local {
            self.layer
                .send_request_on_flow(now, hop.target, req.clone());
        } else {
            self.layer.send_request(now, hop.target, req.clone());
        }
        self.stats.forwarded += 1;
        let deadline = is_invite.then(|| (now + self.config.timer_c, Deadline::TimerC));
        self.by_server.insert(id.clone(), branch.clone());
        self.pending.insert(
            branch,
            Pending {
                server: id.clone(),
                upstream,
                request: req,
                downstream: hop.target,
                provisional_seen: false,
                cancel_requested: false,
                cancel_sent: false,
                deadline,
            },
        );
        Ok(())
    }

    /// Our Record-Route; two of them (RFC 5658) when the request leaves on
    /// another transport or address than it came in on, so each side of the
    /// dialog reaches us the way it can.
    fn record_route(&self, req: &mut Request, source: Target, out: Target) {
        let inbound = self.local_for(source).unwrap_or(out);
        if inbound != out {
            req.headers
                .insert_first("Record-Route", route_value(inbound));
        }
        req.headers.insert_first("Record-Route", route_value(out));
    }

    /// §16.10: a CANCEL matching an INVITE we forwarded is answered 200 at
    /// once; the INVITE is cancelled downstream once that is allowed.
    fn on_cancel(&mut self, now: Instant, id: &ServerId, req: &Request) -> Result<(), Reply> {
        let invite = ServerId {
            method: Method::Invite,
            ..id.clone()
        };
        let Some(branch) = self.by_server.get(&invite).cloned() else {
            return Err(Reply::new(481));
        };
        self.reply(now, id, req, Reply::new(200));
        let Some(p) = self.pending.get_mut(&branch) else {
            return Ok(());
        };
        // A context still pending has relayed no final response.
        p.cancel_requested = true;
        if p.provisional_seen {
            self.send_cancel(now, &branch);
        }
        Ok(())
    }

    /// §9.1: the CANCEL for our INVITE on `branch`: same Request-URI, Call-
    /// ID, From, To, CSeq number and Route, and our Via with its branch.
    fn send_cancel(&mut self, now: Instant, branch: &str) {
        let Some(p) = self.pending.get_mut(branch) else {
            return;
        };
        if p.cancel_sent {
            return;
        }
        p.cancel_sent = true;
        let timeout = self.layer.timers().transaction_timeout();
        p.deadline = Some((now + timeout, Deadline::CancelGiveUp));
        let invite = &p.request;
        let mut cancel = Request::new(Method::Cancel, invite.uri.clone());
        if let Some(via) = invite.headers.get_all("Via").first() {
            cancel.headers.push("Via", via);
        }
        cancel.headers.push("Max-Forwards", "70");
        for name in ["From", "To", "Call-ID"] {
            if let Some(v) = invite.headers.get(name) {
                cancel.headers.push(name, v);
            }
        }
        if let Ok(cseq) = invite.cseq() {
            cancel.headers.push("CSeq", format!("{} CANCEL", cseq.seq));
        }
        for route in invite.headers.get_all("Route") {
            cancel.headers.push("Route", route);
        }
        // The CANCEL follows its INVITE: same flow, same transport.
        let target = p.downstream;
        self.layer.send_request_on_flow(now, target, cancel);
    }

    /// An ACK outside any transaction — for a 2xx, end to end — goes on
    /// statelessly along the same route as other in-dialog requests.
    fn forward_ack(&mut self, now: Instant, mut ack: Request, source: Target) {
        let hop = self.route_ack(now, &mut ack, source);
        let Some(hop) = hop else {
            self.stats.unmatched += 1;
            return;
        };
        let Some(out) = self.local_for(hop.target) else {
            self.stats.unmatched += 1;
            return;
        };
        if let Some(uri) = hop.new_uri {
            ack.uri = uri;
        }
        decrement_max_forwards(&mut ack);
        let branch = self.mint_branch(hop.target);
        ack.headers.insert_first("Via", our_via(out, &branch));
        self.layer.send_stateless(hop.target, ack.to_bytes());
        self.stats.forwarded += 1;
    }

    /// The relay rule of [`Self::process`] for an ACK (always in-dialog).
    fn route_ack(&mut self, now: Instant, ack: &mut Request, source: Target) -> Option<Hop> {
        if !ack.uri.is_sip() || self.check_forwardable(ack).is_err() {
            return None;
        }
        self.fix_strict_route(ack).ok()?;
        let followed_route = self.pop_own_routes(ack).ok()?;
        let hop = self.next_hop(now, ack).ok()?;
        let from_user = followed_route && self.registrar.is_user_flow(now, source);
        (hop.local || from_user).then_some(hop)
    }

    /// §16.4: a strict router before us put our Record-Route URI in the
    /// Request-URI; the real one is the last Route.
    fn fix_strict_route(&self, req: &mut Request) -> Result<(), Reply> {
        let uri = &req.uri;
        if uri.user.is_some() || uri.param("lr").is_none() || !self.is_ours(uri) {
            return Ok(());
        }
        let mut routes: Vec<String> = req
            .headers
            .get_all("Route")
            .into_iter()
            .map(str::to_owned)
            .collect();
        let Some(last) = routes.pop() else {
            return Ok(());
        };
        let last: NameAddr = last.parse().map_err(Reply::bad)?;
        req.uri = last.uri;
        req.headers.remove("Route");
        for route in routes {
            req.headers.push("Route", route);
        }
        Ok(())
    }

    /// §16.4: removes the Route entries that name us (two after a double
    /// Record-Route); tells whether there were any.
    fn pop_own_routes(&self, req: &mut Request) -> Result<bool, Reply> {
        let routes = req.route().map_err(Reply::bad)?;
        let ours = routes.iter().take_while(|r| self.is_ours(&r.uri)).count();
        for _ in 0..ours {
            req.headers.remove_first_value("Route");
        }
        Ok(ours > 0)
    }

    // ---- responses --------------------------------------------------------

    /// §16.7 for the response of one of our client transactions.
    fn on_downstream_response(&mut self, now: Instant, id: &ClientId, mut resp: Response) {
        if id.method == Method::Cancel {
            return; // the answer to our own CANCEL ends here
        }
        if !self.pending.contains_key(&id.branch) {
            self.relay_answered_copy(&id.branch, resp);
            return;
        }
        resp.headers.remove_first_value("Via");
        if resp.headers.get("Via").is_none() {
            self.stats.unmatched += 1;
            return;
        }
        match resp.code {
            100..=199 => self.relay_provisional(now, &id.branch, resp),
            _ => self.relay_final(now, &id.branch, resp),
        }
    }

    /// Another copy of a 2xx already relayed (RFC 6026 §7.2).
    fn relay_answered_copy(&mut self, branch: &str, mut resp: Response) {
        let Some(&upstream) = self.answered.get(branch) else {
            self.stats.unmatched += 1;
            return;
        };
        resp.headers.remove_first_value("Via");
        if !(200..300).contains(&resp.code) || resp.headers.get("Via").is_none() {
            self.stats.unmatched += 1;
            return;
        }
        self.layer.send_stateless(upstream, resp.to_bytes());
        self.stats.relayed += 1;
    }

    fn relay_provisional(&mut self, now: Instant, branch: &str, resp: Response) {
        let timer_c = self.config.timer_c;
        let Some(p) = self.pending.get_mut(branch) else {
            return;
        };
        p.provisional_seen = true;
        if resp.code > 100 && matches!(p.deadline, Some((_, Deadline::TimerC))) {
            p.deadline = Some((now + timer_c, Deadline::TimerC)); // §16.7 step 2
        }
        let cancel_now = p.cancel_requested && !p.cancel_sent;
        let server = p.server.clone();
        // §16.7 step 5: a 100 is hop by hop; we sent our own.
        if resp.code > 100 && self.layer.respond(now, &server, &resp) {
            self.stats.relayed += 1;
        }
        if cancel_now {
            self.send_cancel(now, branch);
        }
    }

    fn relay_final(&mut self, now: Instant, branch: &str, mut resp: Response) {
        let forget_after = self.layer.timers().transaction_timeout();
        let Some(p) = self.pending.get_mut(branch) else {
            return;
        };
        let invite_2xx = p.request.method == Method::Invite && (200..300).contains(&resp.code);
        if resp.code == 503 {
            // §16.7 step 6: a 503 would make the caller avoid *us*.
            resp.code = 500;
            resp.reason = reason_phrase(500).to_owned();
        }
        let server = p.server.clone();
        if self.layer.respond(now, &server, &resp) {
            self.stats.relayed += 1;
        }
        if invite_2xx {
            // The callee retransmits its 2xx until the ACK and we relay each
            // copy; our server transaction must not add its own (RFC 6026).
            self.layer.ack_2xx(now, &server);
            if let Some(p) = self.pending.get(branch) {
                self.answered.insert(branch.to_owned(), p.upstream);
                self.answered_expiry
                    .push_back((now + forget_after, branch.to_owned()));
            }
        }
        self.forget(branch);
    }

    fn on_client_timeout(&mut self, now: Instant, id: &ClientId) {
        if id.method == Method::Cancel {
            return;
        }
        self.give_up(now, &id.branch, 408);
    }

    fn on_deadline(&mut self, now: Instant, branch: &str, kind: Deadline) {
        let Some(p) = self.pending.get(branch) else {
            return;
        };
        match kind {
            Deadline::TimerC if p.provisional_seen => self.send_cancel(now, branch),
            Deadline::TimerC => self.give_up(now, branch, 408),
            Deadline::CancelGiveUp => {
                let code = if p.cancel_requested { 487 } else { 408 };
                self.give_up(now, branch, code);
            }
        }
    }

    /// Answers the upstream transaction ourselves (if nothing final went
    /// yet) and drops the context.
    fn give_up(&mut self, now: Instant, branch: &str, code: u16) {
        let Some(p) = self.pending.get(branch) else {
            return;
        };
        let server = p.server.clone();
        let mut resp = response_to(&p.request, code, reason_phrase(code), &mut self.rng);
        // Built from the downstream copy: drop our Via.
        resp.headers.remove_first_value("Via");
        self.layer.respond(now, &server, &resp);
        // The downstream INVITE may sit in Proceeding for ever.
        let invite = ClientId {
            branch: branch.to_owned(),
            method: Method::Invite,
        };
        self.layer.abandon(&invite);
        self.forget(branch);
    }

    fn forget(&mut self, branch: &str) {
        if let Some(p) = self.pending.remove(branch) {
            self.by_server.remove(&p.server);
        }
    }

    /// §16.7 step 1 for a response no transaction of ours expects: relayed
    /// statelessly when it is a 2xx to an INVITE whose branch we minted for
    /// the address it would now go to (see the module doc).
    fn relay_stray(&mut self, mut resp: Response) {
        let is_invite_2xx = (200..300).contains(&resp.code)
            && resp.cseq().is_ok_and(|c| c.method == Method::Invite);
        let Some(top) = resp.top_via().ok().filter(|v| self.is_our_via(v)) else {
            self.stats.unmatched += 1;
            return;
        };
        resp.headers.remove_first_value("Via");
        let next = resp.top_via().ok().and_then(|v| via_target(&v));
        let genuine = next
            .zip(top.branch())
            .is_some_and(|(to, branch)| self.branch_is_ours(branch, to));
        match next {
            Some(to) if genuine && is_invite_2xx => {
                self.layer.send_stateless(to, resp.to_bytes());
                self.stats.relayed += 1;
            }
            _ => self.stats.unmatched += 1,
        }
    }

    // ---- helpers ----------------------------------------------------------

    fn reply(&mut self, now: Instant, id: &ServerId, req: &Request, reply: Reply) {
        let mut resp = response_to(req, reply.code, &reply.reason, &mut self.rng);
        for (name, value) in reply.headers {
            resp.headers.push(name, value);
        }
        self.layer.respond(now, id, &resp);
    }

    /// Whether `uri` names this server: one of our domain names (any port),
    /// or one of our addresses with no port or a port we listen on.
    fn is_ours(&self, uri: &Uri) -> bool {
        let Some(ip) = uri.host.ip() else {
            return self.registrar.serves_domain(&uri.host);
        };
        match uri.port {
            None => self.registrar.serves_domain(&uri.host),
            Some(port) => self
                .config
                .local
                .iter()
                .any(|l| l.addr == SocketAddr::new(ip, port)),
        }
    }

    fn is_our_via(&self, via: &Via) -> bool {
        let sent_by = via.sent_by();
        self.config
            .local
            .iter()
            .any(|l| host_port(l.addr) == sent_by)
    }

    /// Our address for talking to `peer`: same transport, same IP family if
    /// we have it.
    fn local_for(&self, peer: Target) -> Option<Target> {
        let same_transport = || {
            self.config
                .local
                .iter()
                .filter(move |l| l.transport == peer.transport)
        };
        same_transport()
            .find(|l| l.addr.is_ipv4() == peer.addr.is_ipv4())
            .or_else(|| same_transport().next())
            .copied()
    }

    /// `z9hG4bK`, a random part, and an HMAC tag binding it to `upstream`
    /// (where responses on this branch belong).
    fn mint_branch(&mut self, upstream: Target) -> String {
        let nonce = random_hex(&mut self.rng, BRANCH_NONCE_HEX / 2);
        let tag = self.branch_tag(&nonce, upstream);
        format!("{BRANCH_MAGIC}{nonce}{tag}")
    }

    fn branch_is_ours(&self, branch: &str, upstream: Target) -> bool {
        let Some(rest) = branch.strip_prefix(BRANCH_MAGIC) else {
            return false;
        };
        match (rest.get(..BRANCH_NONCE_HEX), rest.get(BRANCH_NONCE_HEX..)) {
            (Some(nonce), Some(tag)) => self.branch_tag(nonce, upstream) == tag,
            _ => false,
        }
    }

    fn branch_tag(&self, nonce: &str, upstream: Target) -> String {
        // HMAC takes keys of any length, so the fallback is never used.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.branch_secret)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        mac.update(nonce.as_bytes());
        mac.update(upstream.transport.via_token().as_bytes());
        mac.update(host_port(upstream.addr).as_bytes());
        let tag = mac.finalize().into_bytes();
        super::digest::hex(tag.get(..BRANCH_TAG_BYTES).unwrap_or(&[]))
    }
}

/// §8.1.1 / §16.3 step 1, except that a missing Max-Forwards is added
/// when forwarding (§16.6 step 3) rather than refused.
fn validate(req: &Request) -> Result<(), ParseError> {
    match req.check_mandatory() {
        Err(ParseError::MissingHeader("Max-Forwards")) => Ok(()),
        other => other,
    }
}

/// §18.2.1 and RFC 3581: `received` when the source differs from the
/// sent-by host (always, with `rport`), and the source port in `rport`.
fn stamp_via(req: &mut Request, source: Target) {
    let Ok(mut via) = req.top_via() else {
        return;
    };
    let wants_rport = via.rport().is_some();
    let moved = via.host.ip() != Some(source.addr.ip());
    if !wants_rport && !moved {
        return;
    }
    via.set_received(source.addr.ip());
    if wants_rport {
        via.set_rport(Some(source.addr.port()));
    }
    req.headers.remove_first_value("Via");
    req.headers.insert_first("Via", via);
}

/// §16.6 step 3.
fn decrement_max_forwards(req: &mut Request) {
    let hops = req.max_forwards().ok().flatten().unwrap_or(71);
    req.headers.set("Max-Forwards", hops.saturating_sub(1));
}

/// §16.6 step 4: dialog-creating requests get our Record-Route, so the
/// in-dialog requests (BYE, the 2xx ACK) come through us and find the NAT
/// flow of the far end.
fn needs_record_route(req: &Request) -> bool {
    let initial = req.to().is_ok_and(|t| t.tag().is_none());
    initial
        && matches!(
            req.method,
            Method::Invite | Method::Subscribe | Method::Refer
        )
}

/// Removes the Proxy-Authorization lines for `realm` (they were for us);
/// others are for proxies further on (§22.3).
fn remove_credentials(req: &mut Request, realm: &str) {
    let others: Vec<String> = req
        .headers
        .get_all("Proxy-Authorization")
        .into_iter()
        .filter(|v| {
            v.parse::<Credentials>()
                .map_or(true, |c| c.param("realm") != Some(realm))
        })
        .map(str::to_owned)
        .collect();
    req.headers.remove("Proxy-Authorization");
    for value in others {
        req.headers.push("Proxy-Authorization", value);
    }
}

fn our_via(local: Target, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {};branch={branch};rport",
        local.transport.via_token(),
        host_port(local.addr)
    )
}

fn route_value(local: Target) -> String {
    let transport = local.transport.via_token().to_ascii_lowercase();
    format!("<sip:{};transport={transport};lr>", host_port(local.addr))
}

fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// The transport a URI asks for: its `transport` parameter, else TLS for
/// `sips:`, else UDP (RFC 3263 §4.1 without NAPTR).
fn uri_transport(uri: &Uri) -> Option<Transport> {
    match uri.transport() {
        Some(token) => Transport::parse(token),
        None if uri.scheme == Scheme::Sips => Some(Transport::Tls),
        None => Some(Transport::Udp),
    }
}

fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Tls => 5061,
        _ => 5060,
    }
}

/// Where a response goes by its (new) top Via (§18.2.2, RFC 3581):
/// `received` or the sent-by address, with `rport` or the sent-by port.
fn via_target(via: &Via) -> Option<Target> {
    let transport = Transport::parse(&via.transport)?;
    let ip = match via.received() {
        Some(received) => received.parse().ok()?,
        None => via.host.ip()?,
    };
    let port = via
        .rport()
        .flatten()
        .or(via.port)
        .unwrap_or(default_port(transport));
    Some(Target {
        transport,
        addr: SocketAddr::new(ip, port),
    })
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
