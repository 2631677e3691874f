//! The registrar of `icephone serve` (RFC 3261 §10.3) and the digest
//! authentication it shares with the proxy (§22, RFC 7616, RFC 8760).
//!
//! Owns: the location service (user → bindings, each remembering the flow
//! it arrived on so a UA behind a NAT is reached at its public address),
//! the REGISTER answer, and stateless nonces. Sans-IO: instants come in,
//! randomness only from the injected `StdRng`, no clock, no sockets.
//!
//! Must not touch: routing, Via/Route handling or transactions (the proxy
//! hands it a REGISTER already addressed to one of our domains and sends
//! the answer through its server transaction). Passwords never reach a log
//! or `Debug` output.
//!
//! Choices, where RFC 3261 leaves room or the deployment is simple:
//! - One user namespace for all our domains: the address of record is the
//!   user part of To, whichever of our hosts follows the `@`.
//! - An out-of-order REGISTER (same Call-ID, CSeq not higher than a
//!   binding's) fails with 500 and changes nothing (§10.3 steps 7–8).
//! - At most [`RegistrarConfig::max_bindings`] bindings per user: beyond
//!   that the least recently refreshed are dropped, so a phone that keeps
//!   rebooting behind a NAT (a new port each time) is never locked out.
//! - Nonces are stateless (a time stamp and an HMAC bound to the client's
//!   address), so nonce counts are not tracked: within a nonce's lifetime
//!   an answer could be replayed, but only from the same address and port.
//! - The 200 carries no Date header (there is no wall clock here).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::RngCore;
use sha2::Sha256;

use super::digest::{DigestAlgorithm, DigestResponse};
use super::headers::{quote, Challenge, Contacts, Credentials, NameAddr};
use super::layer::response_to;
use super::message::{reason_phrase, Method, ParseError, Request, Response};
use super::uri::{Host, Scheme, Uri};
use super::Target;

/// Hex digits of the issue time in a nonce.
const STAMP_HEX: usize = 16;
/// Bytes of HMAC kept in a nonce: 96 bits make forging one hopeless.
const TAG_LEN: usize = 12;

#[derive(Clone)]
pub struct RegistrarConfig {
    /// The digest realm; also a domain we are responsible for.
    pub realm: String,
    /// Further domains we are responsible for: host names and our own IP
    /// addresses (as written in URIs, IPv6 with or without brackets).
    pub domains: Vec<String>,
    /// User name → password. Only these users can register or place calls.
    pub users: HashMap<String, String>,
    /// Seconds; shorter non-zero requests get 423 (§10.3 step 7).
    pub min_expires: u32,
    /// Seconds; longer requests are shortened to this.
    pub max_expires: u32,
    /// Seconds, when neither the Contact nor the request says.
    pub default_expires: u32,
    /// How long a nonce is accepted before the answer is `stale=true`.
    pub nonce_lifetime: Duration,
    /// Bindings kept per user; see the module doc.
    pub max_bindings: usize,
    /// The digest algorithms challenged with, most preferred first. Some
    /// clients (baresip 1.0) try only the first challenge of a 401.
    pub digest: Vec<DigestAlgorithm>,
}

impl RegistrarConfig {
    /// The usual limits: 60 s to 3600 s, 3600 s by default, nonces for
    /// 300 s, ten bindings per user.
    pub fn new(realm: &str, users: HashMap<String, String>) -> Self {
        RegistrarConfig {
            realm: realm.to_owned(),
            domains: Vec::new(),
            users,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            nonce_lifetime: Duration::from_secs(300),
            max_bindings: 10,
            digest: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
        }
    }
}

impl fmt::Debug for RegistrarConfig {
    /// User names only: passwords stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("RegistrarConfig")
            .field("realm", &self.realm)
            .field("domains", &self.domains)
            .field("users", &users)
            .field("min_expires", &self.min_expires)
            .field("max_expires", &self.max_expires)
            .field("default_expires", &self.default_expires)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("max_bindings", &self.max_bindings)
            .field("digest", &self.digest)
            .finish()
    }
}

/// One registered contact of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as registered: the Request-URI of requests to it.
    pub contact: Uri,
    /// Where the REGISTER came from: where requests to it are sent.
    pub flow: Target,
    pub expires: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// The UA instance (`+sip.instance`, RFC 5626 §4.1), e.g.
    /// `urn:uuid:…`: what its GRUU names (RFC 5627).
    pub instance: Option<String>,
}

/// The outcome of checking a request's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Right password, fresh nonce: the authenticated user name.
    Authorized(String),
    /// No credentials for our realm (`stale: false`), or right ones with an
    /// expired nonce or one minted for another address (`stale: true`).
    Challenge { stale: bool },
    /// Unknown user or wrong password: 403 (as Kamailio answers).
    Forbidden,
    /// Credentials we cannot check: 400 with this reason.
    BadRequest(&'static str),
}

/// Digest checks and stateless nonces for the realm's users; the registrar
/// uses it for `Authorization`, the proxy for `Proxy-Authorization`.
pub struct ServerAuth {
    realm: String,
    users: HashMap<String, String>,
    secret: [u8; 32],
    /// Time origin of nonce stamps: the first instant we were handed.
    epoch: Option<Instant>,
    lifetime: Duration,
    algorithms: Vec<DigestAlgorithm>,
}

enum NonceState {
    Fresh,
    /// Ours, but too old.
    Expired,
    /// Not minted by us for this address (or garbled).
    Foreign,
}

impl ServerAuth {
    pub fn new(
        realm: &str,
        users: HashMap<String, String>,
        lifetime: Duration,
        rng: &mut StdRng,
    ) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        ServerAuth {
            realm: realm.to_owned(),
            users,
            secret,
            epoch: None,
            lifetime,
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Which algorithms to challenge with, in order (an empty list keeps
    /// the default).
    pub fn set_algorithms(&mut self, algorithms: Vec<DigestAlgorithm>) {
        if !algorithms.is_empty() {
            self.algorithms = algorithms;
        }
    }

    /// The challenges of a 401/407: by default SHA-256 first, then MD5 for
    /// older clients (RFC 8760 §2.4), all `qop="auth"` with one fresh nonce.
    pub fn challenges(&mut self, now: Instant, client: SocketAddr, stale: bool) -> Vec<Challenge> {
        let nonce = self.mint(now, client);
        self.algorithms
            .clone()
            .into_iter()
            .map(|algorithm| {
                let mut c = Challenge::new("Digest");
                c.set_param("realm", &self.realm);
                c.set_param("nonce", &nonce);
                c.set_param("qop", "auth");
                c.set_param("algorithm", algorithm.token());
                if stale {
                    c.set_param("stale", "true");
                }
                c
            })
            .collect()
    }

    /// RFC 3261 §22.3 / RFC 7616 §3.4 for a request `method uri` from
    /// `client` carrying `credentials` (all of one header name).
    pub fn verify(
        &mut self,
        now: Instant,
        client: SocketAddr,
        method: &Method,
        uri: &Uri,
        credentials: &[Credentials],
    ) -> AuthVerdict {
        let ours = credentials.iter().find(|c| {
            c.scheme.eq_ignore_ascii_case("Digest") && c.param("realm") == Some(self.realm.as_str())
        });
        let Some(ours) = ours else {
            return AuthVerdict::Challenge { stale: false };
        };
        let Ok(answer) = DigestResponse::from_params(&ours.scheme, |n| ours.param(n)) else {
            return AuthVerdict::BadRequest("Malformed digest credentials");
        };
        if answer.qop.is_none() {
            // We offered qop=auth; RFC 7616 §3.4 makes clients use it.
            return AuthVerdict::BadRequest("Digest qop=auth required");
        }
        if !same_digest_uri(&answer.uri, uri) {
            return AuthVerdict::BadRequest("Digest uri does not match the Request-URI");
        }
        let Some(password) = self.users.get(&answer.username) else {
            return AuthVerdict::Forbidden;
        };
        if !answer.verify(method.as_str(), password) {
            return AuthVerdict::Forbidden;
        }
        match self.check_nonce(now, client, &answer.nonce) {
            NonceState::Fresh => AuthVerdict::Authorized(answer.username),
            NonceState::Expired | NonceState::Foreign => AuthVerdict::Challenge { stale: true },
        }
    }

    fn seconds(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs()
    }

    fn tag(&self, stamp: &str, client: SocketAddr) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so the fallback is never used.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        mac.update(b"sip-nonce");
        mac.update(stamp.as_bytes());
        match client.ip() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        mac
    }

    /// `stamp tag`: 16 hex digits of seconds since the epoch, then 24 hex
    /// digits of HMAC over the stamp and the client's address.
    fn mint(&mut self, now: Instant, client: SocketAddr) -> String {
        let stamp = format!("{:0width$x}", self.seconds(now), width = STAMP_HEX);
        let tag = self.tag(&stamp, client).finalize().into_bytes();
        let mut nonce = stamp;
        nonce.push_str(&super::digest::hex(tag.get(..TAG_LEN).unwrap_or(&[])));
        nonce
    }

    fn check_nonce(&mut self, now: Instant, client: SocketAddr, nonce: &str) -> NonceState {
        if !nonce.is_ascii() || nonce.len() != STAMP_HEX + 2 * TAG_LEN {
            return NonceState::Foreign;
        }
        let (stamp, tag_hex) = nonce.split_at(STAMP_HEX);
        let (Ok(issued), Some(tag)) = (u64::from_str_radix(stamp, 16), parse_hex(tag_hex)) else {
            return NonceState::Foreign;
        };
        if self.tag(stamp, client).verify_truncated_left(&tag).is_err() {
            return NonceState::Foreign;
        }
        match self.seconds(now).checked_sub(issued) {
            None => NonceState::Foreign,
            Some(age) if age >= self.lifetime.as_secs() => NonceState::Expired,
            Some(_) => NonceState::Fresh,
        }
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits = s.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

/// The digest `uri` names the Request-URI (RFC 7616 §3.4.6), compared
/// parsed so that spelling differences such as case do not matter.
fn same_digest_uri(digest_uri: &str, request_uri: &Uri) -> bool {
    digest_uri == request_uri.to_string()
        || digest_uri.parse::<Uri>().is_ok_and(|u| &u == request_uri)
}

/// Why a REGISTER was refused before any binding changed, with the
/// headers the refusal needs (WWW-Authenticate, Min-Expires).
struct Refusal {
    code: u16,
    reason: String,
    headers: Vec<(&'static str, String)>,
}

impl Refusal {
    fn new(code: u16, reason: &str) -> Self {
        Refusal {
            code,
            reason: reason.to_owned(),
            headers: Vec::new(),
        }
    }

    fn bad(error: ParseError) -> Self {
        Refusal::new(error.status_code(), &error.to_string())
    }

    fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// What one Contact of a REGISTER asks for.
struct ContactUpdate {
    uri: Uri,
    /// Seconds, already clamped; 0 removes.
    expires: u32,
    instance: Option<String>,
}

pub struct Registrar {
    config: RegistrarConfig,
    auth: ServerAuth,
    /// User → bindings, most recently refreshed first.
    bindings: HashMap<String, Vec<Binding>>,
    rng: StdRng,
}

impl Registrar {
    pub fn new(config: RegistrarConfig, mut rng: StdRng) -> Self {
        let mut auth = ServerAuth::new(
            &config.realm,
            config.users.clone(),
            config.nonce_lifetime,
            &mut rng,
        );
        auth.set_algorithms(config.digest.clone());
        Registrar {
            config,
            auth,
            bindings: HashMap::new(),
            rng,
        }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// For the proxy's `Proxy-Authorization` checks: same users, realm and
    /// nonces.
    pub fn auth(&mut self) -> &mut ServerAuth {
        &mut self.auth
    }

    /// Whether `name` is a configured user.
    pub fn is_user(&self, name: &str) -> bool {
        self.config.users.contains_key(name)
    }

    /// Whether `host` is the realm or one of our domains (names compare
    /// case-insensitively, addresses as addresses). Ports are the caller's.
    pub fn serves_domain(&self, host: &Host) -> bool {
        let names = std::iter::once(self.config.realm.as_str())
            .chain(self.config.domains.iter().map(String::as_str));
        for name in names {
            let matches = match (host, parse_domain(name)) {
                (Host::Domain(d), Host::Domain(n)) => d.eq_ignore_ascii_case(&n),
                (h, n) => h.ip().is_some() && h.ip() == n.ip(),
            };
            if matches {
                return true;
            }
        }
        false
    }

    /// The answer to a REGISTER from `source` (RFC 3261 §10.3 steps 2–8;
    /// step 1, the Request-URI's domain, is the proxy's).
    pub fn handle_register(&mut self, now: Instant, req: &Request, source: Target) -> Response {
        match self.register(now, req, source) {
            Ok(resp) => resp,
            Err(refusal) => {
                let mut resp = response_to(req, refusal.code, &refusal.reason, &mut self.rng);
                for (name, value) in refusal.headers {
                    resp.headers.push(name, value);
                }
                resp
            }
        }
    }

    /// The live bindings of `user`, most recently refreshed first.
    pub fn lookup(&self, now: Instant, user: &str) -> Vec<Binding> {
        self.bindings
            .get(user)
            .map(|list| list.iter().filter(|b| b.expires > now).cloned().collect())
            .unwrap_or_default()
    }

    /// The newest live binding of `user`'s `instance`: where a request to
    /// its GRUU goes (RFC 5627 §5.2.1). A UA that re-registers from a new
    /// NAT mapping keeps its GRUU, so its dialogs follow it.
    pub fn binding_for_instance(
        &self,
        now: Instant,
        user: &str,
        instance: &str,
    ) -> Option<Binding> {
        self.lookup(now, user)
            .into_iter()
            .find(|b| b.instance.as_deref() == Some(instance))
    }

    /// The live binding whose contact is `uri` (user, host and port), else
    /// one with the same host and port: how an in-dialog request addressed
    /// to a UA's contact finds the flow that reaches it. Among several, the
    /// one that lasts longest (the most recently refreshed, as a rule).
    pub fn binding_for_contact(&self, now: Instant, uri: &Uri) -> Option<Binding> {
        let live = || {
            self.bindings
                .values()
                .flatten()
                .filter(move |b| b.expires > now)
        };
        live()
            .filter(|b| same_contact(&b.contact, uri))
            .max_by_key(|b| b.expires)
            .or_else(|| {
                live()
                    .filter(|b| same_address(&b.contact, uri))
                    .max_by_key(|b| b.expires)
            })
            .cloned()
    }

    /// Whether some live binding was registered from `flow`: the request
    /// comes from one of our users' UAs.
    pub fn is_user_flow(&self, now: Instant, flow: Target) -> bool {
        self.bindings
            .values()
            .flatten()
            .any(|b| b.flow == flow && b.expires > now)
    }

    /// Drops expired bindings.
    pub fn handle_timeout(&mut self, now: Instant) {
        for list in self.bindings.values_mut() {
            list.retain(|b| b.expires > now);
        }
        self.bindings.retain(|_, list| !list.is_empty());
    }

    /// When the next binding expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bindings.values().flatten().map(|b| b.expires).min()
    }

    fn register(
        &mut self,
        now: Instant,
        req: &Request,
        source: Target,
    ) -> Result<Response, Refusal> {
        if req.method != Method::Register {
            return Err(Refusal::new(405, reason_phrase(405)));
        }
        req.check_mandatory().map_err(Refusal::bad)?;
        let required = req.headers.get_all("Require");
        if !required.is_empty() {
            // §10.3 step 2: we implement no registration extension.
            let refusal = Refusal::new(420, reason_phrase(420));
            return Err(refusal.with_header("Unsupported", required.join(", ")));
        }
        let user = self.authenticate(now, req, source)?;
        let to = req.to().map_err(Refusal::bad)?;
        if to.uri.user.as_deref() != Some(user.as_str()) {
            return Err(Refusal::new(403, "To does not match the credentials"));
        }
        let contacts = req.contacts().map_err(Refusal::bad)?;
        let call_id = req.call_id().map_err(Refusal::bad)?;
        let cseq = req.cseq().map_err(Refusal::bad)?.seq;
        let header_expires = req.expires().map_err(Refusal::bad)?;
        let current = self.lookup(now, &user);
        let updated = match contacts {
            Contacts::Wildcard => remove_all(&current, header_expires, call_id, cseq)?,
            Contacts::Addrs(addrs) if addrs.is_empty() => current,
            Contacts::Addrs(addrs) => {
                let updates = self.contact_updates(&addrs, header_expires)?;
                let fresh = BindingStamp {
                    now,
                    flow: source,
                    call_id,
                    cseq,
                };
                apply_updates(&current, &updates, &fresh, self.config.max_bindings)?
            }
        };
        tracing::debug!(%user, bindings = updated.len(), "registered");
        let resp = self.ok_listing(now, req, &updated);
        if updated.is_empty() {
            self.bindings.remove(&user);
        } else {
            self.bindings.insert(user, updated);
        }
        Ok(resp)
    }

    /// §22: the Authorization of our realm must be right and fresh.
    fn authenticate(
        &mut self,
        now: Instant,
        req: &Request,
        source: Target,
    ) -> Result<String, Refusal> {
        let credentials = req.headers.authorization().map_err(Refusal::bad)?;
        let verdict = self
            .auth
            .verify(now, source.addr, &req.method, &req.uri, &credentials);
        match verdict {
            AuthVerdict::Authorized(user) => Ok(user),
            AuthVerdict::Challenge { stale } => {
                let challenges = self.auth.challenges(now, source.addr, stale);
                let refusal = challenges
                    .iter()
                    .fold(Refusal::new(401, reason_phrase(401)), |r, c| {
                        r.with_header("WWW-Authenticate", c.to_string())
                    });
                Err(refusal)
            }
            AuthVerdict::Forbidden => Err(Refusal::new(403, reason_phrase(403))),
            AuthVerdict::BadRequest(why) => Err(Refusal::new(400, why)),
        }
    }

    /// §10.3 step 7 for each Contact: its lifetime, 423 if too brief.
    fn contact_updates(
        &self,
        addrs: &[NameAddr],
        header_expires: Option<u32>,
    ) -> Result<Vec<ContactUpdate>, Refusal> {
        let cfg = &self.config;
        addrs
            .iter()
            .map(|addr| {
                if !addr.uri.is_sip() {
                    return Err(Refusal::new(400, "Contact must be a SIP URI"));
                }
                let asked = addr
                    .expires()
                    .or(header_expires)
                    .unwrap_or(cfg.default_expires);
                if asked != 0 && asked < cfg.min_expires {
                    let refusal = Refusal::new(423, reason_phrase(423));
                    return Err(refusal.with_header("Min-Expires", cfg.min_expires.to_string()));
                }
                Ok(ContactUpdate {
                    uri: addr.uri.clone(),
                    expires: asked.min(cfg.max_expires),
                    instance: instance_of(addr),
                })
            })
            .collect()
    }

    /// §10.3 step 8: 200 with every current binding and its remaining time;
    /// to a UA that supports GRUU, each instance's public GRUU (RFC 5627
    /// §6: the address of record with `gr` set to the instance).
    fn ok_listing(&mut self, now: Instant, req: &Request, bindings: &[Binding]) -> Response {
        let mut resp = response_to(req, 200, reason_phrase(200), &mut self.rng);
        let aor = req
            .to()
            .ok()
            .map(|to| to.uri)
            .filter(|_| supports(req, "gruu"));
        for b in bindings {
            let left = b.expires.saturating_duration_since(now).as_secs();
            let mut contact = format!("<{}>;expires={left}", b.contact);
            if let Some(instance) = &b.instance {
                contact.push_str(&format!(
                    ";+sip.instance={}",
                    quote(&format!("<{instance}>"))
                ));
                if let Some(aor) = &aor {
                    let gruu = public_gruu(aor, instance);
                    contact.push_str(&format!(";pub-gruu={}", quote(&gruu.to_string())));
                }
            }
            resp.headers.push("Contact", contact);
        }
        if aor.is_some() {
            resp.headers.push("Supported", "gruu");
        }
        resp
    }
}

/// What a REGISTER stamps on the bindings it creates or refreshes.
struct BindingStamp<'a> {
    now: Instant,
    flow: Target,
    call_id: &'a str,
    cseq: u32,
}

/// §10.3 step 6: `Contact: *` needs `Expires: 0`, and removes every
/// binding unless one of the same Call-ID is newer.
fn remove_all(
    current: &[Binding],
    header_expires: Option<u32>,
    call_id: &str,
    cseq: u32,
) -> Result<Vec<Binding>, Refusal> {
    if header_expires != Some(0) {
        return Err(Refusal::new(400, "Contact: * requires Expires: 0"));
    }
    if current.iter().any(|b| out_of_order(b, call_id, cseq)) {
        return Err(Refusal::new(500, "Out of order REGISTER"));
    }
    Ok(Vec::new())
}

/// §10.3 step 7: a binding of the same Call-ID may only be changed by a
/// higher CSeq.
fn out_of_order(binding: &Binding, call_id: &str, cseq: u32) -> bool {
    binding.call_id == call_id && cseq <= binding.cseq
}

/// The new binding list: this request's contacts first (in its order),
/// then the untouched ones; all or nothing (§10.3 step 8).
fn apply_updates(
    current: &[Binding],
    updates: &[ContactUpdate],
    stamp: &BindingStamp<'_>,
    max_bindings: usize,
) -> Result<Vec<Binding>, Refusal> {
    let mut kept: Vec<Binding> = current.to_vec();
    let mut fresh = Vec::new();
    for update in updates {
        if let Some(at) = kept
            .iter()
            .position(|b| same_contact(&b.contact, &update.uri))
        {
            if out_of_order(&kept[at], stamp.call_id, stamp.cseq) {
                return Err(Refusal::new(500, "Out of order REGISTER"));
            }
            kept.remove(at);
        }
        fresh.retain(|b: &Binding| !same_contact(&b.contact, &update.uri));
        if update.expires > 0 {
            fresh.push(Binding {
                contact: update.uri.clone(),
                flow: stamp.flow,
                expires: stamp.now + Duration::from_secs(u64::from(update.expires)),
                call_id: stamp.call_id.to_owned(),
                cseq: stamp.cseq,
                instance: update.instance.clone(),
            });
        }
    }
    fresh.extend(kept);
    // Oldest last, so the cap drops the least recently refreshed.
    fresh.truncate(max_bindings);
    Ok(fresh)
}

/// The instance a Contact names (`+sip.instance="<urn:…>"`), without
/// its angle brackets.
fn instance_of(addr: &NameAddr) -> Option<String> {
    let value = addr.param_unquoted("+sip.instance")?;
    let urn = value.trim().trim_start_matches('<').trim_end_matches('>');
    (!urn.is_empty()).then(|| urn.to_owned())
}

/// Whether the request lists `option` in a Supported header (`get_all`
/// gives a list header's elements).
fn supports(req: &Request, option: &str) -> bool {
    req.headers
        .get_all("Supported")
        .iter()
        .any(|o| o.trim().eq_ignore_ascii_case(option))
}

/// RFC 5627 §3.1: the public GRUU of `instance` for the AOR `aor`.
pub fn public_gruu(aor: &Uri, instance: &str) -> Uri {
    let mut gruu = aor.clone();
    gruu.params.clear();
    gruu.headers.clear();
    gruu.password = None;
    gruu.port = None;
    gruu.set_param("gr", Some(instance));
    gruu
}

/// Contacts are the same binding when scheme, user, host and port agree
/// (§19.1.4 without the URI parameters, which a UA may vary).
fn same_contact(a: &Uri, b: &Uri) -> bool {
    a.scheme == b.scheme && a.user == b.user && same_address(a, b)
}

fn same_address(a: &Uri, b: &Uri) -> bool {
    a.host == b.host && default_port(a) == default_port(b)
}

fn default_port(uri: &Uri) -> u16 {
    uri.port.unwrap_or(match uri.scheme {
        Scheme::Sips => 5061,
        _ => 5060,
    })
}

/// A configured domain as a host: IP literals (bracketed or not) as
/// addresses, anything else as a lowercase name.
fn parse_domain(name: &str) -> Host {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Host::from(ip),
        Err(_) => Host::Domain(name.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::Message;
    use super::super::Transport;
    use super::*;
    use rand::SeedableRng;

    fn registrar() -> Registrar {
        let users = HashMap::from([("alice".to_owned(), "wonderland".to_owned())]);
        Registrar::new(
            RegistrarConfig::new("example.com", users),
            StdRng::seed_from_u64(1),
        )
    }

    fn source() -> Target {
        Target {
            transport: Transport::Udp,
            addr: "198.51.100.7:5060".parse().unwrap(),
        }
    }

    fn register(extra: &str) -> Request {
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@example.com>;tag=1\r\n\
             Call-ID: r@test\r\n\
             CSeq: 1 REGISTER\r\n\
             {extra}\r\n"
        );
        match Message::parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn malformed_registers_are_400_with_the_reason() {
        let mut r = registrar();
        let now = Instant::now();
        let resp = r.handle_register(now, &register("Contact: <sip:a@h>\r\n"), source());
        assert_eq!(
            (resp.code, resp.reason.as_str()),
            (400, "Missing To header")
        );
        let resp = r.handle_register(
            now,
            &register("To: sip:alice@example.com\r\nRequire: path\r\n"),
            source(),
        );
        assert_eq!(resp.code, 420);
        assert_eq!(resp.headers.get("Unsupported"), Some("path"));
    }

    #[test]
    fn nonces_are_fresh_then_expired_and_bound_to_the_address() {
        let mut r = registrar();
        let auth = r.auth();
        let start = Instant::now();
        let here: SocketAddr = "198.51.100.7:5060".parse().unwrap();
        let there: SocketAddr = "198.51.100.7:5061".parse().unwrap();
        let challenge = auth.challenges(start, here, false).remove(0);
        let nonce = challenge.param("nonce").unwrap().to_owned();
        assert_eq!(nonce.len(), STAMP_HEX + 2 * TAG_LEN);
        assert!(matches!(
            auth.check_nonce(start, here, &nonce),
            NonceState::Fresh
        ));
        assert!(matches!(
            auth.check_nonce(start, there, &nonce),
            NonceState::Foreign
        ));
        let late = start + Duration::from_secs(300);
        assert!(matches!(
            auth.check_nonce(late, here, &nonce),
            NonceState::Expired
        ));
        for junk in [
            "",
            "zz",
            &nonce[1..],
            &format!("{}0", &nonce[..nonce.len() - 1]),
        ] {
            assert!(matches!(
                auth.check_nonce(start, here, junk),
                NonceState::Foreign
            ));
        }
    }

    #[test]
    fn serves_realm_names_and_addresses() {
        let mut config = RegistrarConfig::new("Example.COM", HashMap::new());
        config.domains = vec!["192.0.2.1".into(), "[2001:db8::1]".into()];
        let r = Registrar::new(config, StdRng::seed_from_u64(1));
        for host in ["example.com", "192.0.2.1", "[2001:db8::1]"] {
            assert!(r.serves_domain(&host.parse().unwrap()), "{host}");
        }
        for host in ["example.org", "192.0.2.2"] {
            assert!(!r.serves_domain(&host.parse().unwrap()), "{host}");
        }
    }
}
