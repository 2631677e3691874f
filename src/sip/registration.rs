//! Registration (RFC 3261 §10) of one contact for one address of record:
//! REGISTER, the digest challenge, refresh before expiry, 423 Min-Expires,
//! back-off after a failure, the contact fixed from `received`/`rport` when
//! a NAT stands between us and the registrar, and unregistration.
//!
//! It builds requests and reads responses; the user agent (`sip::ua`) puts
//! them on transactions. Credentials are cached after the first challenge
//! so a refresh costs one round trip.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use thiserror::Error;

use super::authenticator::{AuthFailure, Authenticator};
use super::digest::DigestCredentials;
use super::headers::NameAddr;
use super::message::{Method, Request, Response};
use super::uri::{Host, Uri};
use super::{random_hex, Transport};

/// Back-off after a failure: 30 s doubling to 30 min (RFC 5626 §4.5's
/// base and cap), each drawn between half and all of that.
const BACKOFF_BASE: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(1800);
/// Refresh this long before expiry (or a tenth of the lifetime, if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    /// The address of record, e.g. `sip:alice@example.org`.
    pub aor: Uri,
    /// Request-URI of REGISTER: the registrar, e.g. `sip:example.org`.
    pub registrar: Uri,
    /// A `Route` to put on every request (an outbound proxy, with `;lr`).
    pub route: Option<Uri>,
    pub credentials: DigestCredentials,
    /// Requested lifetime, seconds.
    pub expires: u32,
    pub transport: Transport,
    /// Our address as the registrar should reach us (Via sent-by, Contact).
    pub local: SocketAddr,
    /// Rewrite the Contact to the address the registrar saw (rport).
    pub fix_contact: bool,
    /// Register as a UA instance (`+sip.instance`) and ask for a GRUU
    /// (RFC 5627): calls then give it as their Contact, which stays
    /// valid when a NAT maps us somewhere new and we re-register.
    pub gruu: bool,
    pub user_agent: String,
}

impl RegistrationConfig {
    /// Our Via for a new transaction: a fresh branch, and `rport` so the
    /// answer comes back through any NAT (RFC 3581).
    pub fn via(&self, rng: &mut StdRng) -> String {
        format!(
            "SIP/2.0/{} {};branch={}{};rport",
            self.transport.via_token(),
            host_port(self.local),
            super::layer::BRANCH_MAGIC,
            random_hex(rng, 8)
        )
    }

    /// A request of ours outside a dialog: Request-Line, a Via with a fresh
    /// branch and `rport` (RFC 3581), Max-Forwards, and the Route to the
    /// outbound proxy. The caller adds From, To, Call-ID, CSeq.
    pub fn new_request(&self, method: Method, uri: Uri, rng: &mut StdRng) -> Request {
        let mut req = Request::new(method, uri);
        let h = &mut req.headers;
        h.push("Via", self.via(rng));
        h.push("Max-Forwards", "70");
        if let Some(route) = &self.route {
            h.push("Route", format!("<{route}>"));
        }
        req
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RegistrationError {
    #[error("wrong username or password ({code} {reason})")]
    Unauthorized { code: u16, reason: String },
    #[error("the registrar refused the registration ({code} {reason})")]
    Forbidden { code: u16, reason: String },
    #[error("the registrar did not answer")]
    Timeout,
    #[error("cannot reach the registrar: {0}")]
    Unreachable(String),
    #[error("the registrar answered {code} {reason}")]
    Rejected { code: u16, reason: String },
    #[error("the registrar's challenge is unusable: {0}")]
    BadChallenge(String),
    #[error("the registrar's answer is malformed: {0}")]
    BadResponse(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationEvent {
    Registered {
        /// The contact the registrar holds for us.
        contact: String,
        /// Seconds granted.
        expires: u32,
    },
    /// The registration failed; with `retry_in`, it is tried again then.
    Failed {
        error: RegistrationError,
        retry_in: Option<Duration>,
    },
    Unregistered,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationState {
    Idle,
    Registering,
    Registered { expires: u32 },
    Failed,
    Unregistering,
    Unregistered,
}

pub struct Registration {
    config: RegistrationConfig,
    state: RegistrationState,
    call_id: String,
    from_tag: String,
    cseq: u32,
    contact: Uri,
    /// A contact replaced by a NAT fix, removed with the next REGISTER.
    stale_contact: Option<Uri>,
    /// `urn:uuid:…`, fixed for this registration's life.
    instance: Option<String>,
    /// The public GRUU the registrar gave our instance.
    gruu: Option<Uri>,
    expires: u32,
    auth: Authenticator,
    failures: u32,
    /// When to send the next REGISTER (refresh or retry).
    next_register: Option<Instant>,
}

impl Registration {
    pub fn new(config: RegistrationConfig, rng: &mut StdRng) -> Self {
        let contact = contact_uri(&config, config.local);
        Registration {
            call_id: format!("{}@icephone", random_hex(rng, 10)),
            from_tag: random_hex(rng, 6),
            cseq: 0,
            expires: config.expires,
            contact,
            stale_contact: None,
            instance: config.gruu.then(|| uuid_urn(rng)),
            gruu: None,
            auth: Authenticator::new(config.credentials.clone()),
            failures: 0,
            next_register: None,
            state: RegistrationState::Idle,
            config,
        }
    }

    pub fn state(&self) -> &RegistrationState {
        &self.state
    }

    pub fn contact(&self) -> &Uri {
        &self.contact
    }

    /// The Contact for our dialogs: the GRUU if the registrar gave one
    /// (requests to it reach whichever flow we registered last), else the
    /// registered contact.
    pub fn dialog_contact(&self) -> &Uri {
        self.gruu.as_ref().unwrap_or(&self.contact)
    }

    pub fn config(&self) -> &RegistrationConfig {
        &self.config
    }

    /// The REGISTER that starts (or refreshes) the registration.
    pub fn register(&mut self, rng: &mut StdRng) -> Request {
        self.state = match self.state {
            RegistrationState::Registered { expires } => RegistrationState::Registered { expires },
            _ => RegistrationState::Registering,
        };
        self.next_register = None;
        self.build(rng, self.expires)
    }

    /// The REGISTER with expires 0 that removes our contact.
    pub fn unregister(&mut self, rng: &mut StdRng) -> Request {
        self.state = RegistrationState::Unregistering;
        self.next_register = None;
        self.build(rng, 0)
    }

    /// When [`Self::register`] should be called again (refresh or retry).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_register
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.next_register.is_some_and(|t| t <= now)
    }

    /// The final response to our last REGISTER. Returns the events, and a
    /// REGISTER to send at once (after a challenge, a 423, a NAT fix).
    pub fn handle_response(
        &mut self,
        now: Instant,
        response: &Response,
        rng: &mut StdRng,
    ) -> (Option<RegistrationEvent>, Option<Request>) {
        let unregistering = self.state == RegistrationState::Unregistering;
        match response.code {
            100..=199 => (None, None),
            200..=299 if unregistering => {
                self.state = RegistrationState::Unregistered;
                (Some(RegistrationEvent::Unregistered), None)
            }
            200..=299 => self.on_success(now, response, rng),
            401 | 407 => match self.on_challenge(response) {
                Ok(()) => {
                    let expires = if unregistering { 0 } else { self.expires };
                    (None, Some(self.build(rng, expires)))
                }
                Err(error) => self.fail(now, error, rng),
            },
            423 if !unregistering => {
                let min = response
                    .headers
                    .get("Min-Expires")
                    .and_then(|v| v.trim().parse::<u32>().ok());
                match min {
                    Some(min) if min > self.expires => {
                        self.expires = min;
                        (None, Some(self.build(rng, min)))
                    }
                    _ => {
                        let error = RegistrationError::BadResponse(
                            "423 without a usable Min-Expires".into(),
                        );
                        self.fail(now, error, rng)
                    }
                }
            }
            _ if unregistering => {
                self.state = RegistrationState::Unregistered;
                (Some(RegistrationEvent::Unregistered), None)
            }
            code => {
                let reason = response.reason.clone();
                let error = match code {
                    // After our credentials, a 403 is how many registrars
                    // (Kamailio among them) say the password is wrong.
                    403 if self.auth.has_credentials() => {
                        RegistrationError::Unauthorized { code, reason }
                    }
                    403 => RegistrationError::Forbidden { code, reason },
                    _ => RegistrationError::Rejected { code, reason },
                };
                self.fail(now, error, rng)
            }
        }
    }

    /// Our last REGISTER got no final answer: `error` is
    /// [`RegistrationError::Timeout`] (timer F) or
    /// [`RegistrationError::Unreachable`] (the transport failed).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        error: RegistrationError,
        rng: &mut StdRng,
    ) -> Option<RegistrationEvent> {
        if self.state == RegistrationState::Unregistering {
            self.state = RegistrationState::Unregistered;
            return Some(RegistrationEvent::Unregistered);
        }
        self.fail(now, error, rng).0
    }

    /// The connection our registration lives on closed: the registrar can
    /// no longer reach us through it, so register again (over a new one)
    /// at once (RFC 5626 §4.4.1).
    pub fn flow_lost(&mut self, now: Instant) {
        if matches!(self.state, RegistrationState::Registered { .. }) {
            self.next_register = Some(now);
        }
    }

    /// A response to a keep-alive OPTIONS: if the NAT now maps us
    /// elsewhere, re-register with the new contact at once.
    pub fn check_mapping(&mut self, now: Instant, response: &Response) {
        if !matches!(self.state, RegistrationState::Registered { .. }) {
            return;
        }
        if self
            .seen_address(response)
            .is_some_and(|a| self.is_natted(a))
        {
            self.next_register = Some(now);
        }
    }

    fn on_success(
        &mut self,
        now: Instant,
        response: &Response,
        rng: &mut StdRng,
    ) -> (Option<RegistrationEvent>, Option<Request>) {
        self.auth.on_success();
        self.failures = 0;
        self.stale_contact = None;
        if self.config.fix_contact {
            if let Some(seen) = self.seen_address(response) {
                if self.is_natted(seen) {
                    // Behind a NAT: register the public address instead,
                    // and remove the private one in the same request.
                    let old = std::mem::replace(&mut self.contact, contact_uri(&self.config, seen));
                    self.stale_contact = Some(old);
                    return (None, Some(self.build(rng, self.expires)));
                }
            }
        }
        let expires = self.granted_expires(response);
        if self.instance.is_some() {
            self.gruu = self.granted_gruu(response);
        }
        if expires == 0 {
            let error =
                RegistrationError::BadResponse("the registrar kept no contact of ours".into());
            return self.fail(now, error, rng);
        }
        self.state = RegistrationState::Registered { expires };
        let lifetime = Duration::from_secs(u64::from(expires));
        self.next_register = Some(now + lifetime - REFRESH_MARGIN.min(lifetime / 10));
        let event = RegistrationEvent::Registered {
            contact: self.contact.to_string(),
            expires,
        };
        (Some(event), None)
    }

    /// The lifetime of our contact in a 2xx: its `expires` parameter, else
    /// the Expires header, else what we asked for (§10.2.4).
    fn granted_expires(&self, response: &Response) -> u32 {
        let ours = self.listed_contact(response);
        let from_header = response
            .headers
            .get("Expires")
            .and_then(|v| v.trim().parse::<u32>().ok());
        match ours {
            Some(c) => c.expires().or(from_header).unwrap_or(self.expires),
            // A registrar that lists contacts but not ours dropped it.
            None if response.headers.get("Contact").is_some() => 0,
            None => from_header.unwrap_or(self.expires),
        }
    }

    /// RFC 5627 §5.1: the `pub-gruu` of our contact in the 2xx, if any.
    fn granted_gruu(&self, response: &Response) -> Option<Uri> {
        let ours = self.listed_contact(response)?;
        ours.param_unquoted("pub-gruu")?.parse().ok()
    }

    /// Our contact as a 2xx lists it, with the registrar's parameters.
    fn listed_contact(&self, response: &Response) -> Option<NameAddr> {
        let contacts = response.contacts().ok()?;
        contacts
            .addrs()
            .iter()
            .find(|c| same_contact(&c.uri, &self.contact))
            .cloned()
    }

    fn on_challenge(&mut self, response: &Response) -> Result<(), RegistrationError> {
        self.auth.on_challenge(response).map_err(|f| match f {
            AuthFailure::Rejected { code, reason } => {
                RegistrationError::Unauthorized { code, reason }
            }
            AuthFailure::Unusable(why) => RegistrationError::BadChallenge(why),
        })
    }

    fn fail(
        &mut self,
        now: Instant,
        error: RegistrationError,
        rng: &mut StdRng,
    ) -> (Option<RegistrationEvent>, Option<Request>) {
        self.state = RegistrationState::Failed;
        self.failures += 1;
        if matches!(error, RegistrationError::Unauthorized { .. }) {
            self.auth.forget();
        } else {
            self.auth.on_success();
        }
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << (self.failures - 1).min(10))
            .min(BACKOFF_MAX);
        let retry_in = ceiling / 2 + ceiling.mul_f64(rng.random::<f64>() / 2.0);
        self.next_register = Some(now + retry_in);
        let event = RegistrationEvent::Failed {
            error,
            retry_in: Some(retry_in),
        };
        (Some(event), None)
    }

    fn build(&mut self, rng: &mut StdRng, expires: u32) -> Request {
        self.cseq += 1;
        let cfg = &self.config;
        let mut req = cfg.new_request(Method::Register, cfg.registrar.clone(), rng);
        let h = &mut req.headers;
        h.push("From", format!("<{}>;tag={}", cfg.aor, self.from_tag));
        h.push("To", format!("<{}>", cfg.aor));
        h.push("Call-ID", &self.call_id);
        h.push("CSeq", format!("{} REGISTER", self.cseq));
        let mut contact = format!("<{}>;expires={expires}", self.contact);
        if let Some(instance) = &self.instance {
            contact.push_str(&format!(";+sip.instance=\"<{instance}>\""));
        }
        if let Some(old) = &self.stale_contact {
            contact.push_str(&format!(", <{old}>;expires=0"));
        }
        h.push("Contact", &contact);
        h.push("Expires", expires.to_string());
        h.push("Allow", super::ALLOW);
        if self.instance.is_some() {
            h.push("Supported", "gruu");
        }
        h.push("User-Agent", &cfg.user_agent);
        self.auth.sign(&mut req, rng);
        req
    }

    /// The address the registrar saw us at: `received` (or the Via host)
    /// with `rport`, from the top Via of its response.
    fn seen_address(&self, response: &Response) -> Option<SocketAddr> {
        let via = response.top_via().ok()?;
        let port = via.rport().flatten()?;
        let ip: IpAddr = match via.received() {
            Some(r) => r.parse().ok()?,
            None => via.host.ip()?,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// Whether the registrar saw us somewhere our Contact does not say.
    /// Over a stream the source port is always the connection's own, so
    /// only a changed address means a NAT (then the flow is the only way
    /// in, and the registrar's proxy must use it).
    fn is_natted(&self, seen: SocketAddr) -> bool {
        let contact = self.contact_address();
        if self.config.transport.is_reliable() {
            seen.ip() != contact.ip()
        } else {
            seen != contact
        }
    }

    fn contact_address(&self) -> SocketAddr {
        let ip = self.contact.host.ip().unwrap_or(self.config.local.ip());
        SocketAddr::new(ip, self.contact.port.unwrap_or(5060))
    }
}

fn contact_uri(config: &RegistrationConfig, at: SocketAddr) -> Uri {
    let mut uri = config.aor.clone();
    uri.host = match at.ip() {
        IpAddr::V4(v4) => Host::V4(v4),
        IpAddr::V6(v6) => Host::V6(v6),
    };
    uri.port = Some(at.port());
    uri.params.clear();
    uri.headers.clear();
    uri.password = None;
    if config.transport != Transport::Udp {
        uri.set_param(
            "transport",
            Some(&config.transport.via_token().to_ascii_lowercase()),
        );
    }
    uri
}

/// A random (version 4) UUID URN (RFC 4122 §4.4) for `+sip.instance`.
fn uuid_urn(rng: &mut StdRng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Contacts compare by user, host and port (§10.2.4 uses URI equality; the
/// parameters a registrar may add do not make it another binding).
fn same_contact(a: &Uri, b: &Uri) -> bool {
    a.user == b.user && a.host == b.host && a.port.unwrap_or(5060) == b.port.unwrap_or(5060)
}

pub fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}
