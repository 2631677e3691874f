//! Sans-IO TURN client: one allocation on one server (RFC 8656 §6–§12).
//!
//! The caller owns the socket (UDP) or connection (TCP/TLS) to the server and
//! feeds every message from it to [`TurnClient::handle_packet`]; everything
//! the client wants sent goes out through [`TurnClient::poll_transmit`],
//! always to the server. Over a stream the caller splits incoming bytes with
//! [`StreamDecoder`](super::StreamDecoder) and writes each transmit as is.
//!
//! An allocation costs two round trips: the unauthenticated Allocate that
//! fetches REALM and NONCE (the 401), then the signed one. Nothing else is
//! added before the relayed address is known.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::RngCore;
use thiserror::Error;

use super::channel::{is_channel_data, ChannelData, CHANNEL_MAX, CHANNEL_MIN};
use crate::stun::{
    attr_type, long_term_key, password_algorithms, AddressFamily, Attribute, Class,
    ClientTransaction, Message, MessageBuilder, Method, PasswordAlgorithm, RetransmitPolicy,
    TransactionEvent, TransactionId,
};

/// How the client reaches the server. The relay itself is always UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TurnTransport {
    Udp,
    Tcp,
    Tls,
}

impl TurnTransport {
    pub fn is_stream(self) -> bool {
        !matches!(self, TurnTransport::Udp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TurnTransport::Udp => "udp",
            TurnTransport::Tcp => "tcp",
            TurnTransport::Tls => "tls",
        }
    }
}

#[derive(Clone)]
pub struct TurnClientConfig {
    pub server: SocketAddr,
    pub transport: TurnTransport,
    pub username: String,
    pub password: String,
    /// Asked for in Allocate and Refresh; the server may grant less.
    pub lifetime: Duration,
    /// Relay address family (RFC 8656 §7.1 REQUESTED-ADDRESS-FAMILY); `None`
    /// leaves the server's default, IPv4.
    pub family: Option<AddressFamily>,
    pub software: Option<String>,
    /// Retransmissions over UDP. Over TCP/TLS a request is sent once and
    /// times out after the same total time.
    pub retransmit: RetransmitPolicy,
}

impl TurnClientConfig {
    pub fn new(server: SocketAddr, username: &str, password: &str) -> Self {
        TurnClientConfig {
            server,
            transport: TurnTransport::Udp,
            username: username.to_owned(),
            password: password.to_owned(),
            lifetime: Duration::from_secs(600),
            family: None,
            software: None,
            retransmit: RetransmitPolicy::rfc8489(),
        }
    }
}

/// The password never reaches a log through `{:?}`.
impl fmt::Debug for TurnClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClientConfig")
            .field("server", &self.server)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// What went wrong, in words a user can act on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TurnError {
    #[error("the TURN server rejected the username or password (401)")]
    Unauthorized,
    #[error("the TURN server's allocation quota for this user is reached (486)")]
    QuotaReached,
    #[error("the TURN server already has an allocation for this address and port (437); retry from another local port")]
    AllocationMismatch,
    #[error("the TURN allocation no longer exists on the server (437)")]
    AllocationLost,
    #[error("the TURN server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the TURN server refused: forbidden (403)")]
    Forbidden,
    #[error("the TURN server does not relay this transport (442)")]
    UnsupportedTransport,
    #[error("the TURN server does not support this address family (440)")]
    UnsupportedFamily,
    #[error("the TURN server has no capacity left (508)")]
    InsufficientCapacity,
    #[error("the TURN server kept answering with a stale nonce (438)")]
    StaleNonceLoop,
    #[error("the TURN server redirects to {0} (300); configure that server instead")]
    TryAlternate(String),
    #[error("the TURN server answered {code} {reason}")]
    Rejected { code: u16, reason: String },
    #[error("the TURN server's answer is malformed: {0}")]
    BadResponse(&'static str),
    #[error("no TURN allocation is in place")]
    NotAllocated,
    #[error("peer {0} is not of the relayed address family")]
    WrongFamily(SocketAddr),
    #[error("{0} channels are bound: no channel number left")]
    NoChannelLeft(usize),
    #[error("datagram of {0} bytes is too large to relay")]
    TooLarge(usize),
}

/// Lifecycle of the allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnState {
    Allocating,
    Allocated,
    /// Deallocation (Refresh with LIFETIME 0) sent; waiting for the answer.
    Releasing,
    Released,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnEvent {
    Allocated {
        relayed: SocketAddr,
        /// Our address as the server saw it (XOR-MAPPED-ADDRESS), if sent.
        mapped: Option<SocketAddr>,
        lifetime: Duration,
    },
    Refreshed {
        lifetime: Duration,
    },
    PermissionCreated {
        peer: IpAddr,
    },
    PermissionFailed {
        peer: IpAddr,
        error: TurnError,
    },
    ChannelBound {
        peer: SocketAddr,
        channel: u16,
    },
    ChannelBindFailed {
        peer: SocketAddr,
        error: TurnError,
    },
    /// The allocation failed or was lost; nothing more will be relayed.
    Failed(TurnError),
    /// Deallocated (or gave up waiting for the server to confirm).
    Released,
}

/// What a message from the server turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum TurnInput<'a> {
    /// A datagram a peer sent to our relayed address.
    Relayed { peer: SocketAddr, data: &'a [u8] },
    /// A TURN response or other control message, consumed.
    Handled,
    /// Malformed or unexpected; counted and dropped.
    Dropped,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TurnClientStats {
    pub requests_sent: u64,
    pub retransmissions: u64,
    pub sent_channel_data: u64,
    pub sent_indications: u64,
    pub received_channel_data: u64,
    pub received_indications: u64,
    /// Datagrams held back while their permission was pending and then
    /// dropped because it failed or the queue was full.
    pub dropped_sends: u64,
    pub malformed: u64,
    pub unmatched: u64,
}

/// Refresh this long before the server would expire the state, or at
/// three quarters of the lifetime when that is sooner (short lifetimes).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// RFC 8656 §9: permissions last 300 s.
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
// Channel bindings last 600 s (RFC 8656 §12) but their permission only 300 s;
// a ChannelBind refreshes both (§12.2), so channels are rebound on the
// permission schedule.
/// 401s and 438s tolerated for one request before giving up.
const MAX_AUTH_RETRIES: u8 = 3;
/// Datagrams held per peer while its permission is being installed.
const MAX_PENDING_PER_PEER: usize = 8;
/// How long to wait for the answer to a deallocation before calling it done.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 8489 §9.2: a nonce starting with this cookie carries security feature bits.
const NONCE_COOKIE: &str = "obMatJos2";

#[derive(Clone, Debug)]
enum RequestKind {
    Allocate,
    Refresh { lifetime: Duration },
    Permission { peers: Vec<IpAddr> },
    ChannelBind { peer: SocketAddr, channel: u16 },
}

struct Request {
    id: TransactionId,
    kind: RequestKind,
    bytes: Vec<u8>,
    timer: ClientTransaction,
    auth_retries: u8,
    /// Whether this request carried credentials (a 401 then means they are wrong).
    signed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Install {
    Pending,
    Installed,
    Failed,
}

struct Permission {
    state: Install,
    refresh_at: Option<Instant>,
    pending: Vec<(SocketAddr, Vec<u8>)>,
}

struct Channel {
    number: u16,
    state: Install,
    refresh_at: Option<Instant>,
}

struct Credentials {
    realm: String,
    nonce: String,
    algorithm: PasswordAlgorithm,
    /// PASSWORD-ALGORITHMS exactly as the server sent it, echoed back
    /// (RFC 8489 §9.2.4: the echo is the downgrade protection).
    algorithms: Option<Vec<u8>>,
    key: Vec<u8>,
}

pub struct TurnClient {
    config: TurnClientConfig,
    rng: Box<dyn RngCore + Send>,
    state: TurnState,
    credentials: Option<Credentials>,
    relayed: Option<SocketAddr>,
    mapped: Option<SocketAddr>,
    lifetime: Duration,
    refresh_at: Option<Instant>,
    release_deadline: Option<Instant>,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    channel_peers: HashMap<u16, SocketAddr>,
    next_channel: u16,
    requests: Vec<Request>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
    stats: TurnClientStats,
}

impl TurnClient {
    /// Starts allocating at once: the first Allocate is ready in `poll_transmit`.
    pub fn new(config: TurnClientConfig, now: Instant, rng: Box<dyn RngCore + Send>) -> Self {
        let mut client = TurnClient {
            config,
            rng,
            state: TurnState::Allocating,
            credentials: None,
            relayed: None,
            mapped: None,
            lifetime: Duration::ZERO,
            refresh_at: None,
            release_deadline: None,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_peers: HashMap::new(),
            next_channel: CHANNEL_MIN,
            requests: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TurnClientStats::default(),
        };
        client.start_request(now, RequestKind::Allocate, 0);
        client
    }

    pub fn config(&self) -> &TurnClientConfig {
        &self.config
    }

    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    pub fn state(&self) -> TurnState {
        self.state
    }

    pub fn relayed_address(&self) -> Option<SocketAddr> {
        self.relayed
    }

    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.mapped
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn stats(&self) -> TurnClientStats {
        self.stats
    }

    /// The channel bound to `peer`, once the server confirmed it.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        self.channels
            .get(&peer)
            .filter(|c| c.state == Install::Installed)
            .map(|c| c.number)
    }

    pub fn has_permission(&self, peer: IpAddr) -> bool {
        self.permissions
            .get(&peer)
            .is_some_and(|p| p.state == Install::Installed)
    }

    // ----- commands --------------------------------------------------------

    /// Installs a permission for `peer` (idempotent); it is then kept fresh.
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) -> Result<(), TurnError> {
        self.check_peer_family(SocketAddr::new(peer, 0))?;
        if self.permissions.contains_key(&peer) {
            return Ok(());
        }
        self.permissions.insert(
            peer,
            Permission {
                state: Install::Pending,
                refresh_at: None,
                pending: Vec::new(),
            },
        );
        if self.state == TurnState::Allocated {
            self.start_request(now, RequestKind::Permission { peers: vec![peer] }, 0);
        }
        Ok(())
    }

    /// Binds a channel to `peer` (idempotent), so datagrams to and from it
    /// carry 4 bytes of framing instead of a 36-byte-plus indication.
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, TurnError> {
        self.check_peer_family(peer)?;
        if let Some(c) = self.channels.get(&peer) {
            return Ok(c.number);
        }
        let number = self.free_channel()?;
        self.channels.insert(
            peer,
            Channel {
                number,
                state: Install::Pending,
                refresh_at: None,
            },
        );
        self.channel_peers.insert(number, peer);
        // A ChannelBind installs the permission too (RFC 8656 §12.2).
        self.permissions.entry(peer.ip()).or_insert(Permission {
            state: Install::Pending,
            refresh_at: None,
            pending: Vec::new(),
        });
        if self.state == TurnState::Allocated {
            self.start_request(
                now,
                RequestKind::ChannelBind {
                    peer,
                    channel: number,
                },
                0,
            );
        }
        Ok(number)
    }

    /// Relays `data` to `peer`: as ChannelData once a channel is bound, as a
    /// Send indication otherwise. Without a permission yet, one is created
    /// and the datagram waits for it (a few per peer), since the server
    /// would silently drop it.
    pub fn send_to(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), TurnError> {
        match self.state {
            TurnState::Allocated => {}
            TurnState::Allocating => {
                // Keep it until the relay exists, like a pending permission.
                self.check_peer_family(peer)?;
                self.create_permission(now, peer.ip())?;
                return self.hold(peer, data);
            }
            _ => return Err(TurnError::NotAllocated),
        }
        self.check_peer_family(peer)?;
        if data.len() > u16::MAX as usize - 64 {
            return Err(TurnError::TooLarge(data.len()));
        }
        if let Some(number) = self.channel(peer) {
            let mut out = Vec::with_capacity(data.len() + 8);
            ChannelData::encode_into(number, data, self.config.transport.is_stream(), &mut out)
                .map_err(|_| TurnError::TooLarge(data.len()))?;
            self.stats.sent_channel_data += 1;
            self.transmits.push_back(out);
            return Ok(());
        }
        if !self.has_permission(peer.ip()) {
            self.create_permission(now, peer.ip())?;
            return self.hold(peer, data);
        }
        self.send_indication(peer, data);
        Ok(())
    }

    /// Deallocates: a Refresh with LIFETIME 0, answered or not within 2 s.
    pub fn release(&mut self, now: Instant) {
        match self.state {
            TurnState::Allocated => {
                self.requests.clear();
                self.state = TurnState::Releasing;
                self.release_deadline = Some(now + RELEASE_TIMEOUT);
                self.start_request(
                    now,
                    RequestKind::Refresh {
                        lifetime: Duration::ZERO,
                    },
                    0,
                );
            }
            TurnState::Allocating => {
                self.requests.clear();
                self.finish_release();
            }
            _ => {}
        }
    }

    // ----- sans-IO plumbing -------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self.requests.iter().filter_map(|r| r.timer.poll_timeout());
        let refreshes = self
            .permissions
            .values()
            .filter_map(|p| p.refresh_at)
            .chain(self.channels.values().filter_map(|c| c.refresh_at));
        requests
            .chain(refreshes)
            .chain(self.refresh_at)
            .chain(self.release_deadline)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.drive_requests(now);
        if self.release_deadline.is_some_and(|d| now >= d) {
            self.finish_release();
            return;
        }
        if self.state != TurnState::Allocated {
            return;
        }
        if self.refresh_at.is_some_and(|t| now >= t) && !self.pending_refresh() {
            self.refresh_at = None;
            let lifetime = self.config.lifetime;
            self.start_request(now, RequestKind::Refresh { lifetime }, 0);
        }
        self.refresh_channels(now);
        self.refresh_permissions(now);
    }

    /// A message from the server (one datagram, or one framed message of a stream).
    pub fn handle_packet<'a>(&mut self, now: Instant, data: &'a [u8]) -> TurnInput<'a> {
        if is_channel_data(data) {
            return self.on_channel_data(data);
        }
        let Ok(msg) = Message::decode(data) else {
            self.stats.malformed += 1;
            return TurnInput::Dropped;
        };
        match msg.class() {
            Class::Indication if msg.method() == Method::DATA => self.on_data_indication(&msg),
            Class::Success | Class::Error => self.on_response(now, &msg),
            _ => {
                self.stats.unmatched += 1;
                TurnInput::Dropped
            }
        }
    }

    // ----- internals ---------------------------------------------------------

    fn check_peer_family(&self, peer: SocketAddr) -> Result<(), TurnError> {
        let relay_v6 = match (self.relayed, self.config.family) {
            (Some(r), _) => r.is_ipv6(),
            (None, Some(AddressFamily::V6)) => true,
            (None, _) => false,
        };
        if peer.is_ipv6() != relay_v6 {
            return Err(TurnError::WrongFamily(peer));
        }
        Ok(())
    }

    fn free_channel(&mut self) -> Result<u16, TurnError> {
        let span = (CHANNEL_MAX - CHANNEL_MIN) as usize + 1;
        for _ in 0..span {
            let n = self.next_channel;
            self.next_channel = if n >= CHANNEL_MAX { CHANNEL_MIN } else { n + 1 };
            if !self.channel_peers.contains_key(&n) {
                return Ok(n);
            }
        }
        Err(TurnError::NoChannelLeft(self.channels.len()))
    }

    fn hold(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), TurnError> {
        if let Some(p) = self.permissions.get_mut(&peer.ip()) {
            if p.pending.len() < MAX_PENDING_PER_PEER {
                p.pending.push((peer, data.to_vec()));
            } else {
                self.stats.dropped_sends += 1;
            }
        }
        Ok(())
    }

    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let id = TransactionId::random(self.rng.as_mut());
        let mut b = MessageBuilder::new(Class::Indication, Method::SEND, id);
        b.add(&Attribute::XorPeerAddress(peer));
        b.add(&Attribute::Data(data));
        self.stats.sent_indications += 1;
        self.transmits.push_back(b.finish());
    }

    fn pending_refresh(&self) -> bool {
        self.requests
            .iter()
            .any(|r| matches!(r.kind, RequestKind::Refresh { .. }))
    }

    fn policy(&self) -> RetransmitPolicy {
        let p = self.config.retransmit;
        if self.config.transport.is_stream() {
            // Reliable transport: send once, wait as long as the UDP schedule would.
            let total = p.total_timeout();
            RetransmitPolicy {
                rto: total,
                max_rto: total,
                max_transmissions: 1,
                last_wait_factor: 1,
            }
        } else {
            p
        }
    }

    fn start_request(&mut self, now: Instant, kind: RequestKind, auth_retries: u8) {
        let id = TransactionId::random(self.rng.as_mut());
        let bytes = self.encode_request(id, &kind);
        let signed = self.credentials.is_some();
        self.requests.push(Request {
            id,
            kind,
            bytes,
            timer: ClientTransaction::new(now, self.policy()),
            auth_retries,
            signed,
        });
        self.drive_requests(now);
    }

    fn encode_request(&self, id: TransactionId, kind: &RequestKind) -> Vec<u8> {
        let method = match kind {
            RequestKind::Allocate => Method::ALLOCATE,
            RequestKind::Refresh { .. } => Method::REFRESH,
            RequestKind::Permission { .. } => Method::CREATE_PERMISSION,
            RequestKind::ChannelBind { .. } => Method::CHANNEL_BIND,
        };
        let mut b = MessageBuilder::new(Class::Request, method, id);
        if let Some(software) = &self.config.software {
            b.add(&Attribute::Software(software));
        }
        match kind {
            RequestKind::Allocate => {
                b.add(&Attribute::RequestedTransport(17));
                if let Some(family) = self.config.family {
                    b.add(&Attribute::RequestedAddressFamily(family));
                }
                b.add(&Attribute::Lifetime(lifetime_secs(self.config.lifetime)));
            }
            RequestKind::Refresh { lifetime } => {
                b.add(&Attribute::Lifetime(lifetime_secs(*lifetime)));
            }
            RequestKind::Permission { peers } => {
                for ip in peers {
                    b.add(&Attribute::XorPeerAddress(SocketAddr::new(*ip, 0)));
                }
            }
            RequestKind::ChannelBind { peer, channel } => {
                b.add(&Attribute::ChannelNumber(*channel));
                b.add(&Attribute::XorPeerAddress(*peer));
            }
        }
        if let Some(c) = &self.credentials {
            b.add(&Attribute::Username(&self.config.username));
            b.add(&Attribute::Realm(&c.realm));
            b.add(&Attribute::Nonce(&c.nonce));
            if let Some(algs) = &c.algorithms {
                b.add(&Attribute::PasswordAlgorithms(algs));
                b.add(&Attribute::PasswordAlgorithm(c.algorithm));
            }
            match c.algorithm {
                PasswordAlgorithm::Md5 => b.add_message_integrity(&c.key),
                PasswordAlgorithm::Sha256 => b.add_message_integrity_sha256(&c.key),
            };
        }
        b.add_fingerprint();
        b.finish()
    }

    fn drive_requests(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        for (i, r) in self.requests.iter_mut().enumerate() {
            match r.timer.handle_timeout(now) {
                Some(TransactionEvent::Transmit) => {
                    if r.timer.transmissions() > 1 {
                        self.stats.retransmissions += 1;
                    } else {
                        self.stats.requests_sent += 1;
                    }
                    self.transmits.push_back(r.bytes.clone());
                }
                Some(TransactionEvent::TimedOut) => timed_out.push(i),
                None => {}
            }
        }
        for i in timed_out.into_iter().rev() {
            let r = self.requests.remove(i);
            let waited = r
                .timer
                .first_sent()
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            self.on_request_failed(now, r.kind, TurnError::Timeout(waited));
        }
    }

    fn on_channel_data<'a>(&mut self, data: &'a [u8]) -> TurnInput<'a> {
        let Ok(cd) = ChannelData::decode(data) else {
            self.stats.malformed += 1;
            return TurnInput::Dropped;
        };
        match self.channel_peers.get(&cd.channel) {
            Some(&peer) => {
                self.stats.received_channel_data += 1;
                TurnInput::Relayed {
                    peer,
                    data: cd.data,
                }
            }
            None => {
                self.stats.unmatched += 1;
                TurnInput::Dropped
            }
        }
    }

    fn on_data_indication<'a>(&mut self, msg: &Message<'a>) -> TurnInput<'a> {
        match (msg.xor_peer_address(), msg.data()) {
            (Some(peer), Some(data)) => {
                self.stats.received_indications += 1;
                TurnInput::Relayed { peer, data }
            }
            _ => {
                self.stats.malformed += 1;
                TurnInput::Dropped
            }
        }
    }

    fn on_response<'a>(&mut self, now: Instant, msg: &Message<'_>) -> TurnInput<'a> {
        let Some(i) = self
            .requests
            .iter()
            .position(|r| r.id == msg.transaction_id())
        else {
            self.stats.unmatched += 1;
            return TurnInput::Dropped;
        };
        let code = msg.error_code().map(|(c, _)| c);
        // 401 and 438 are unsigned by design; everything else from a server
        // we hold a key for must prove it knows the key (RFC 8489 §9.2.5).
        if !matches!(code, Some(401) | Some(438)) && !self.response_authentic(msg) {
            self.stats.malformed += 1;
            return TurnInput::Dropped;
        }
        let r = self.requests.remove(i);
        match msg.class() {
            Class::Success => self.on_success(now, r.kind, msg),
            _ => self.on_error(now, r, msg),
        }
        TurnInput::Handled
    }

    fn response_authentic(&self, msg: &Message<'_>) -> bool {
        let Some(c) = &self.credentials else {
            return true;
        };
        if msg.has_message_integrity_sha256() {
            return c.algorithm == PasswordAlgorithm::Sha256
                && msg.check_integrity_sha256(&c.key).is_ok();
        }
        if msg.has_message_integrity() {
            return c.algorithm == PasswordAlgorithm::Md5 && msg.check_integrity(&c.key).is_ok();
        }
        // RFC 5766 servers sign; an unsigned answer to a signed request is forged.
        false
    }

    fn on_error(&mut self, now: Instant, r: Request, msg: &Message<'_>) {
        let (code, reason) = msg.error_code().unwrap_or((0, ""));
        match code {
            401 if (!r.signed || self.realm_changed(msg)) && r.auth_retries < MAX_AUTH_RETRIES => {
                if self.learn_credentials(msg) {
                    self.start_request(now, r.kind, r.auth_retries + 1);
                } else {
                    self.on_request_failed(
                        now,
                        r.kind,
                        TurnError::BadResponse("401 without REALM and NONCE"),
                    );
                }
            }
            401 => self.on_request_failed(now, r.kind, TurnError::Unauthorized),
            438 if r.auth_retries < MAX_AUTH_RETRIES => {
                let learned = match (&mut self.credentials, msg.nonce()) {
                    (Some(c), Some(nonce)) => {
                        c.nonce = nonce.to_owned();
                        true
                    }
                    _ => self.learn_credentials(msg),
                };
                if learned {
                    self.start_request(now, r.kind, r.auth_retries + 1);
                } else {
                    self.on_request_failed(
                        now,
                        r.kind,
                        TurnError::BadResponse("438 without NONCE"),
                    );
                }
            }
            438 => self.on_request_failed(now, r.kind, TurnError::StaleNonceLoop),
            _ => {
                let error = error_for(code, reason, msg, &r.kind);
                self.on_request_failed(now, r.kind, error);
            }
        }
    }

    fn realm_changed(&self, msg: &Message<'_>) -> bool {
        match (&self.credentials, msg.realm()) {
            (Some(c), Some(realm)) => c.realm != realm,
            _ => false,
        }
    }

    /// Takes REALM, NONCE and the offered algorithms from a 401/438 and
    /// derives the key. SHA-256 when the server offers it (RFC 8489 §9.2.4).
    fn learn_credentials(&mut self, msg: &Message<'_>) -> bool {
        let (Some(realm), Some(nonce)) = (msg.realm(), msg.nonce()) else {
            return false;
        };
        let offered = match msg.get(attr_type::PASSWORD_ALGORITHMS) {
            Some(Ok(Attribute::PasswordAlgorithms(raw))) if nonce.starts_with(NONCE_COOKIE) => {
                Some(raw.to_vec())
            }
            _ => None,
        };
        let algorithm = match &offered {
            Some(raw)
                if password_algorithms(raw)
                    .any(|(n, _)| n == PasswordAlgorithm::Sha256.number()) =>
            {
                PasswordAlgorithm::Sha256
            }
            _ => PasswordAlgorithm::Md5,
        };
        let key = long_term_key(
            &self.config.username,
            realm,
            &self.config.password,
            algorithm,
        );
        self.credentials = Some(Credentials {
            realm: realm.to_owned(),
            nonce: nonce.to_owned(),
            algorithm,
            algorithms: offered,
            key,
        });
        true
    }

    fn on_success(&mut self, now: Instant, kind: RequestKind, msg: &Message<'_>) {
        match kind {
            RequestKind::Allocate => self.on_allocated(now, msg),
            RequestKind::Refresh { lifetime } if lifetime.is_zero() => self.finish_release(),
            RequestKind::Refresh { .. } => {
                let lifetime = Duration::from_secs(u64::from(msg.lifetime().unwrap_or(0)));
                if lifetime.is_zero() {
                    self.fail(TurnError::BadResponse("Refresh success without LIFETIME"));
                    return;
                }
                self.lifetime = lifetime;
                self.refresh_at = Some(now + refresh_after(lifetime));
                self.events.push_back(TurnEvent::Refreshed { lifetime });
            }
            RequestKind::Permission { peers } => {
                for peer in peers {
                    self.on_permission_installed(now, peer);
                }
            }
            RequestKind::ChannelBind { peer, channel } => {
                if let Some(c) = self.channels.get_mut(&peer) {
                    let first = c.state != Install::Installed;
                    c.state = Install::Installed;
                    c.refresh_at = Some(now + refresh_after(PERMISSION_LIFETIME));
                    if first {
                        self.events
                            .push_back(TurnEvent::ChannelBound { peer, channel });
                    }
                }
                self.on_permission_installed(now, peer.ip());
            }
        }
    }

    fn on_allocated(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(relayed) = msg.xor_relayed_address() else {
            self.fail(TurnError::BadResponse(
                "Allocate success without XOR-RELAYED-ADDRESS",
            ));
            return;
        };
        let lifetime = Duration::from_secs(u64::from(msg.lifetime().unwrap_or(600)));
        self.state = TurnState::Allocated;
        self.relayed = Some(relayed);
        self.mapped = msg.xor_mapped_address();
        self.lifetime = lifetime;
        self.refresh_at = Some(now + refresh_after(lifetime));
        self.events.push_back(TurnEvent::Allocated {
            relayed,
            mapped: self.mapped,
            lifetime,
        });
        // Work asked for before the relay existed, in one request each.
        let waiting: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(ip, p)| {
                p.state == Install::Pending
                    && !self.channels.keys().any(|peer| peer.ip() == **ip)
                    && ip.is_ipv6() == relayed.is_ipv6()
            })
            .map(|(ip, _)| *ip)
            .collect();
        if !waiting.is_empty() {
            self.start_request(now, RequestKind::Permission { peers: waiting }, 0);
        }
        let channels: Vec<(SocketAddr, u16)> =
            self.channels.iter().map(|(p, c)| (*p, c.number)).collect();
        for (peer, channel) in channels {
            self.start_request(now, RequestKind::ChannelBind { peer, channel }, 0);
        }
    }

    fn on_permission_installed(&mut self, now: Instant, peer: IpAddr) {
        let Some(p) = self.permissions.get_mut(&peer) else {
            return;
        };
        let first = p.state != Install::Installed;
        p.state = Install::Installed;
        p.refresh_at = Some(now + refresh_after(PERMISSION_LIFETIME));
        let pending = std::mem::take(&mut p.pending);
        if first {
            self.events.push_back(TurnEvent::PermissionCreated { peer });
        }
        for (to, data) in pending {
            let _ = self.send_to(now, to, &data);
        }
    }

    fn on_request_failed(&mut self, _now: Instant, kind: RequestKind, error: TurnError) {
        match kind {
            RequestKind::Allocate => self.fail(error),
            RequestKind::Refresh { lifetime } if lifetime.is_zero() => self.finish_release(),
            RequestKind::Refresh { .. } => {
                let error = if error == TurnError::AllocationMismatch {
                    TurnError::AllocationLost
                } else {
                    error
                };
                self.fail(error);
            }
            RequestKind::Permission { peers } => {
                for peer in peers {
                    if let Some(p) = self.permissions.get_mut(&peer) {
                        p.state = Install::Failed;
                        p.refresh_at = None;
                        self.stats.dropped_sends += p.pending.len() as u64;
                        p.pending.clear();
                    }
                    self.events.push_back(TurnEvent::PermissionFailed {
                        peer,
                        error: error.clone(),
                    });
                }
            }
            RequestKind::ChannelBind { peer, channel } => {
                // Forget the binding; data keeps flowing as indications if
                // the permission stands on its own.
                self.channels.remove(&peer);
                self.channel_peers.remove(&channel);
                self.events
                    .push_back(TurnEvent::ChannelBindFailed { peer, error });
            }
        }
    }

    fn fail(&mut self, error: TurnError) {
        if matches!(self.state, TurnState::Failed | TurnState::Released) {
            return;
        }
        self.state = TurnState::Failed;
        self.requests.clear();
        self.refresh_at = None;
        self.permissions.clear();
        self.channels.clear();
        self.channel_peers.clear();
        self.events.push_back(TurnEvent::Failed(error));
    }

    fn finish_release(&mut self) {
        self.state = TurnState::Released;
        self.release_deadline = None;
        self.refresh_at = None;
        self.requests.clear();
        self.permissions.clear();
        self.channels.clear();
        self.channel_peers.clear();
        self.events.push_back(TurnEvent::Released);
    }

    fn refresh_channels(&mut self, now: Instant) {
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter_mut()
            .filter(|(_, c)| c.refresh_at.is_some_and(|t| now >= t))
            .map(|(peer, c)| {
                c.refresh_at = None;
                (*peer, c.number)
            })
            .collect();
        for (peer, channel) in due {
            self.start_request(now, RequestKind::ChannelBind { peer, channel }, 0);
        }
    }

    fn refresh_permissions(&mut self, now: Instant) {
        let channelled: Vec<IpAddr> = self.channels.keys().map(|p| p.ip()).collect();
        let mut due = Vec::new();
        for (ip, p) in self.permissions.iter_mut() {
            if p.refresh_at.is_some_and(|t| now >= t) {
                p.refresh_at = None;
                // A channel's rebind refreshes its permission already.
                if !channelled.contains(ip) {
                    due.push(*ip);
                }
            }
        }
        if !due.is_empty() {
            self.start_request(now, RequestKind::Permission { peers: due }, 0);
        }
    }
}

fn lifetime_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// When to refresh state that lives `lifetime`.
fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime > REFRESH_MARGIN * 4 {
        lifetime - REFRESH_MARGIN
    } else {
        lifetime * 3 / 4
    }
}

fn error_for(code: u16, reason: &str, msg: &Message<'_>, kind: &RequestKind) -> TurnError {
    match code {
        403 => TurnError::Forbidden,
        437 if matches!(kind, RequestKind::Allocate) => TurnError::AllocationMismatch,
        437 => TurnError::AllocationLost,
        440 => TurnError::UnsupportedFamily,
        442 => TurnError::UnsupportedTransport,
        486 => TurnError::QuotaReached,
        508 => TurnError::InsufficientCapacity,
        300 => TurnError::TryAlternate(
            msg.get(attr_type::ALTERNATE_SERVER)
                .and_then(Result::ok)
                .map_or_else(
                    || "an unnamed server".to_owned(),
                    |a| match a {
                        Attribute::AlternateServer(addr) => addr.to_string(),
                        _ => "an unnamed server".to_owned(),
                    },
                ),
        ),
        _ => TurnError::Rejected {
            code,
            reason: sanitize(reason),
        },
    }
}

/// A server's reason phrase goes into user-facing messages: keep it short
/// and printable.
fn sanitize(reason: &str) -> String {
    reason
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect()
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
