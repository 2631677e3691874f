//! Sans-IO TURN server core (RFC 8656; RFC 5766 clients such as coturn's
//! `turnutils_uclient` work too).
//!
//! Owns: long-term authentication with stateless nonces (RFC 8489 §9.2),
//! allocations and their quotas and lifetimes, permissions, channel
//! bindings, the relay data path in both directions, and Binding requests
//! (handed to [`BindingServer`]).
//!
//! Does not own: sockets, TCP/TLS connections and their framing (the driver
//! splits streams with [`StreamDecoder`](crate::turn::StreamDecoder) and maps
//! each connection to a [`ClientLink`]), binding relay sockets (a
//! [`RelayAllocator`]), the clock (time comes in as `Instant`) and randomness
//! (injected). Every input produces at most one output; the data path forwards
//! slices of the input or writes into one reused buffer, never allocating per
//! packet.

mod allocation;
mod auth;
mod requests;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::RngCore;

use self::allocation::Allocation;
use self::auth::LongTermAuth;
use crate::stun::{
    AddressFamily, Attribute, BindingServer, Class, Message, MessageBuilder, Method, TransactionId,
};
use crate::turn::channel::{is_channel_data, ChannelData};

/// How the client reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientTransport {
    Udp,
    Tcp,
    /// TLS over TCP: a stream like TCP to the core; the driver terminates TLS.
    Tls,
}

impl ClientTransport {
    /// Framed by the messages' own lengths, with ChannelData padded
    /// (RFC 8656 §12.5), and no answering from another address.
    pub fn is_stream(self) -> bool {
        !matches!(self, ClientTransport::Udp)
    }
}

/// The client's 5-tuple. Over TCP the driver maps it to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientLink {
    pub transport: ClientTransport,
    /// Our address the client talks to.
    pub local: SocketAddr,
    /// The client's address as we see it.
    pub remote: SocketAddr,
}

/// Server settings. Durations are whole seconds on the wire.
#[derive(Clone)]
pub struct TurnServerConfig {
    pub realm: String,
    /// User name -> password. The long-term keys are derived once, in
    /// [`TurnServer::new`]; the passwords are not kept after that.
    pub users: HashMap<String, String>,
    pub software: Option<String>,
    /// The address Binding requests arrive on; only needed (and only used)
    /// with `alternate`, for RFC 5780's OTHER-ADDRESS and CHANGE-REQUEST.
    pub primary: SocketAddr,
    /// RFC 5780 second address (other IP and port) for Binding requests.
    pub alternate: Option<SocketAddr>,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    /// Allocations one user may hold at once (486 beyond).
    pub user_quota: usize,
    /// Allocations the server holds at once (508 beyond).
    pub total_allocations: usize,
    pub max_permissions_per_allocation: usize,
    /// Let peers be loopback addresses (tests, local demos). Unspecified,
    /// multicast and broadcast peers are refused regardless.
    pub allow_loopback_peers: bool,
    /// Offer SHA-256 keys (PASSWORD-ALGORITHMS and the nonce cookie).
    pub offer_sha256: bool,
}

impl Default for TurnServerConfig {
    fn default() -> Self {
        TurnServerConfig {
            realm: "icephone".into(),
            users: HashMap::new(),
            software: None,
            primary: SocketAddr::from(([0, 0, 0, 0], 3478)),
            alternate: None,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            user_quota: 10,
            total_allocations: 10_000,
            max_permissions_per_allocation: 64,
            allow_loopback_peers: false,
            offer_sha256: true,
        }
    }
}

/// Written by hand so that passwords never reach a log.
impl fmt::Debug for TurnServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("TurnServerConfig")
            .field("realm", &self.realm)
            .field("users", &RedactedUsers(&users))
            .field("software", &self.software)
            .field("primary", &self.primary)
            .field("alternate", &self.alternate)
            .field("default_lifetime", &self.default_lifetime)
            .field("max_lifetime", &self.max_lifetime)
            .field("permission_lifetime", &self.permission_lifetime)
            .field("channel_lifetime", &self.channel_lifetime)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("user_quota", &self.user_quota)
            .field("total_allocations", &self.total_allocations)
            .field(
                "max_permissions_per_allocation",
                &self.max_permissions_per_allocation,
            )
            .field("allow_loopback_peers", &self.allow_loopback_peers)
            .field("offer_sha256", &self.offer_sha256)
            .finish()
    }
}

struct RedactedUsers<'a>(&'a [&'a str]);

impl fmt::Debug for RedactedUsers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|name| (name, "<redacted>")))
            .finish()
    }
}

/// Why the driver could not provide a relay address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayAllocError {
    /// The server has no address of that family to relay from (-> 440).
    #[error("no relay address of family {0:?}")]
    FamilyUnsupported(AddressFamily),
    /// No port or socket available (-> 508).
    #[error("no relay port available")]
    Exhausted,
    /// Binding the socket failed for another reason (-> 508).
    #[error("relay socket could not be bound: {0}")]
    Bind(String),
}

/// Provides relay transport addresses: the driver binds a UDP socket, the
/// simulator hands out ports. The address must be of the requested family
/// and not in use by another allocation; the core tells the driver to close
/// it through [`ServerEvent::AllocationEnded`].
pub trait RelayAllocator {
    /// `even_port`: the client asked for an even port (RFC 8656 §7.2,
    /// EVEN-PORT without the R bit).
    fn allocate(
        &mut self,
        family: AddressFamily,
        even_port: bool,
        client: &ClientLink,
    ) -> Result<SocketAddr, RelayAllocError>;

    /// An even port and the next-higher one, both held (EVEN-PORT with the R
    /// bit): the first is the new allocation's, the second is kept in
    /// reserve until it is claimed by a RESERVATION-TOKEN (it then comes
    /// back in [`ServerEvent::AllocationCreated`]) or the core ends it with
    /// [`ServerEvent::ReservationEnded`].
    fn allocate_even_pair(
        &mut self,
        family: AddressFamily,
        client: &ClientLink,
    ) -> Result<(SocketAddr, SocketAddr), RelayAllocError>;
}

/// What one input makes the driver send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerOutput<'a> {
    None,
    /// Send `data` from relay address `from` to the peer `to` over UDP.
    ToPeer {
        from: SocketAddr,
        to: SocketAddr,
        data: &'a [u8],
    },
    /// Send `data` to the client over `link` (for UDP: from `link.local` to
    /// `link.remote`; `link.local` may differ from the input's for an RFC
    /// 5780 CHANGE-REQUEST). Over TCP, `data` is already framed.
    ToClient {
        link: ClientLink,
        data: &'a [u8],
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Expired,
    /// Refresh with LIFETIME 0.
    Deleted,
    Shutdown,
    /// The client's TCP connection closed.
    ConnectionClosed,
}

/// Allocation life cycle, for the driver's log and relay sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    AllocationCreated {
        user: String,
        client: ClientLink,
        relay: SocketAddr,
        lifetime: Duration,
    },
    /// The driver closes the relay socket.
    AllocationEnded {
        user: String,
        client: ClientLink,
        relay: SocketAddr,
        reason: EndReason,
    },
    /// A reserved port (EVEN-PORT with the R bit) was not claimed in time,
    /// or the server shut down: the driver closes its socket.
    ReservationEnded { relay: SocketAddr },
}

/// How long a reserved port waits for its RESERVATION-TOKEN (RFC 8656
/// §7.2: "approximately 30 seconds").
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// A port held for a later Allocate with its token.
#[derive(Clone, Copy, Debug)]
struct Reservation {
    relay: SocketAddr,
    expires: Instant,
}

/// Counters since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TurnServerStats {
    /// STUN requests from clients, Binding included.
    pub requests: u64,
    /// Client input that is neither STUN nor ChannelData, or has a malformed
    /// attribute or ChannelData header, or a Send indication without
    /// XOR-PEER-ADDRESS or DATA.
    pub malformed: u64,
    /// 401s for an unknown user or a wrong MAC (not first-contact challenges).
    pub auth_failures: u64,
    /// Error responses of any code.
    pub error_responses: u64,
    /// Data for a forbidden peer address (loopback, unspecified, multicast,
    /// broadcast, port 0) dropped.
    pub forbidden_peer_drops: u64,
    /// Data dropped for want of a permission or a bound channel, both ways.
    pub no_permission_drops: u64,
    /// Data (either way) or indications for a link or relay address without
    /// a live allocation.
    pub no_allocation_drops: u64,
    /// Indications, responses and peer data too large to wrap, dropped.
    pub ignored: u64,
    pub relayed_to_peer_packets: u64,
    pub relayed_to_peer_bytes: u64,
    pub relayed_to_client_packets: u64,
    pub relayed_to_client_bytes: u64,
    pub allocations_active: u64,
}

/// Largest peer payload a Data indication can carry: the STUN length field
/// is 16 bits and XOR-PEER-ADDRESS (IPv6) plus the DATA header take 28.
const MAX_INDICATION_DATA: usize = 0xFFFF - 28 - 3;

/// The answer to one input, before it is turned into [`ServerOutput`]
/// (responses live in `scratch`).
enum Step<'d> {
    Drop,
    Reply(ClientLink),
    Forward {
        from: SocketAddr,
        to: SocketAddr,
        data: &'d [u8],
    },
}

/// The TURN server. See the module documentation.
pub struct TurnServer {
    config: TurnServerConfig,
    auth: LongTermAuth,
    binding: BindingServer,
    rng: Box<dyn RngCore + Send>,
    allocations: HashMap<ClientLink, Allocation>,
    by_relay: HashMap<SocketAddr, ClientLink>,
    per_user: HashMap<String, usize>,
    /// RESERVATION-TOKEN -> reserved port; at most `total_allocations`.
    reservations: HashMap<u64, Reservation>,
    /// (deadline, allocation) entries; an entry is live only while it equals
    /// the allocation's `scheduled`, the others are skipped when popped.
    timers: BinaryHeap<Reverse<(Instant, ClientLink)>>,
    events: VecDeque<ServerEvent>,
    stats: TurnServerStats,
    /// Every response and every framed datagram to a client is built here.
    scratch: Vec<u8>,
}

impl TurnServer {
    pub fn new(mut config: TurnServerConfig, mut rng: Box<dyn RngCore + Send>) -> Self {
        let users = std::mem::take(&mut config.users);
        let auth = LongTermAuth::new(
            config.realm.clone(),
            users,
            config.nonce_lifetime,
            config.offer_sha256,
            rng.as_mut(),
        );
        let binding = BindingServer::new(config.primary, config.alternate, config.software.clone());
        TurnServer {
            config,
            auth,
            binding,
            rng,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            reservations: HashMap::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            stats: TurnServerStats::default(),
            scratch: Vec::with_capacity(2048),
        }
    }

    /// Handles one STUN message or ChannelData message from a client (over
    /// TCP: one frame from the stream decoder).
    ///
    /// EVEN-PORT with the R bit reserves the next port for
    /// [`RESERVATION_LIFETIME`] and answers with its RESERVATION-TOKEN; an
    /// unknown or expired token gets 508. ADDITIONAL-ADDRESS-FAMILY (dual
    /// allocation) is comprehension-optional and ignored: the client gets
    /// the one family.
    pub fn handle_client<'a>(
        &'a mut self,
        now: Instant,
        link: ClientLink,
        data: &'a [u8],
        relays: &mut dyn RelayAllocator,
    ) -> ServerOutput<'a> {
        let step = if is_channel_data(data) {
            self.channel_data_from_client(now, link, data)
        } else {
            match Message::decode(data) {
                Ok(msg) => self.stun_from_client(now, link, msg, relays),
                Err(_) => {
                    self.stats.malformed += 1;
                    Step::Drop
                }
            }
        };
        match step {
            Step::Drop => ServerOutput::None,
            Step::Reply(link) => ServerOutput::ToClient {
                link,
                data: &self.scratch,
            },
            Step::Forward { from, to, data } => ServerOutput::ToPeer { from, to, data },
        }
    }

    /// Handles a UDP datagram from `peer` to our relay address `relay`.
    pub fn handle_peer<'a>(
        &'a mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &'a [u8],
    ) -> ServerOutput<'a> {
        let peer = canonical(peer);
        let Some(alloc) = self
            .by_relay
            .get(&relay)
            .and_then(|link| self.allocations.get(link))
            .filter(|a| a.is_live(now))
        else {
            self.stats.no_allocation_drops += 1;
            return ServerOutput::None;
        };
        if !alloc.has_permission(peer.ip(), now) {
            self.stats.no_permission_drops += 1;
            return ServerOutput::None;
        }
        let link = alloc.link;
        match alloc.channel_for_peer(peer, now) {
            Some(number) => {
                // A UDP datagram is at most 65507 bytes, so this only guards
                // against a driver bug.
                let Ok(len) = u16::try_from(data.len()) else {
                    self.stats.ignored += 1;
                    return ServerOutput::None;
                };
                self.scratch.clear();
                self.scratch.extend_from_slice(&number.to_be_bytes());
                self.scratch.extend_from_slice(&len.to_be_bytes());
                self.scratch.extend_from_slice(data);
                // RFC 8656 §12.5: over a stream ChannelData is padded to 4.
                if link.transport.is_stream() {
                    let padded = (self.scratch.len() + 3) & !3;
                    self.scratch.resize(padded, 0);
                }
            }
            None => {
                if data.len() > MAX_INDICATION_DATA {
                    self.stats.ignored += 1;
                    return ServerOutput::None;
                }
                let mut tid = [0u8; 12];
                self.rng.fill_bytes(&mut tid);
                let mut builder = MessageBuilder::with_buffer(
                    std::mem::take(&mut self.scratch),
                    Class::Indication,
                    Method::DATA,
                    TransactionId(tid),
                );
                builder
                    .add(&Attribute::XorPeerAddress(peer))
                    .add(&Attribute::Data(data));
                self.scratch = builder.finish();
            }
        }
        self.stats.relayed_to_client_packets += 1;
        self.stats.relayed_to_client_bytes += data.len() as u64;
        ServerOutput::ToClient {
            link,
            data: &self.scratch,
        }
    }

    /// Ends expired allocations (event `Expired`) and forgets expired
    /// permissions and channels whose cool-down is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, link))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(alloc) = self.allocations.get_mut(&link) else {
                continue;
            };
            if alloc.scheduled != at {
                continue; // superseded entry
            }
            if !alloc.is_live(now) {
                self.end_allocation(link, EndReason::Expired);
                continue;
            }
            alloc.expire_state(now);
            let next = alloc.next_deadline();
            alloc.scheduled = next;
            self.timers.push(Reverse((next, link)));
        }
        self.end_reservations(|r| r.expires <= now);
    }

    /// The earliest instant `handle_timeout` has work; possibly earlier
    /// (an entry superseded by a refresh), never later.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let allocation = self.timers.peek().map(|Reverse((at, _))| *at);
        let reservation = self.reservations.values().map(|r| r.expires).min();
        match (allocation, reservation) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    /// Drops the reservations `done` picks, each with a `ReservationEnded`.
    fn end_reservations(&mut self, mut done: impl FnMut(&Reservation) -> bool) {
        let mut ended: Vec<SocketAddr> = Vec::new();
        self.reservations.retain(|_, r| {
            let end = done(r);
            if end {
                ended.push(r.relay);
            }
            !end
        });
        ended.sort_unstable();
        self.events.extend(
            ended
                .into_iter()
                .map(|relay| ServerEvent::ReservationEnded { relay }),
        );
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Ends every allocation, each with an `AllocationEnded { Shutdown }` event.
    pub fn shutdown(&mut self) {
        let mut links: Vec<ClientLink> = self.allocations.keys().copied().collect();
        links.sort_unstable();
        for link in links {
            self.end_allocation(link, EndReason::Shutdown);
        }
        self.end_reservations(|_| true);
        self.timers.clear();
    }

    /// The client's TCP connection closed: its allocation ends with it
    /// (RFC 8656 §3.1: over TCP the allocation is tied to the connection).
    pub fn close_link(&mut self, link: ClientLink) {
        if self.allocations.contains_key(&link) {
            self.end_allocation(link, EndReason::ConnectionClosed);
        }
    }

    pub fn stats(&self) -> TurnServerStats {
        TurnServerStats {
            allocations_active: self.allocations.len() as u64,
            ..self.stats
        }
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    fn stun_from_client<'a>(
        &mut self,
        now: Instant,
        link: ClientLink,
        msg: Message<'a>,
        relays: &mut dyn RelayAllocator,
    ) -> Step<'a> {
        match (msg.class(), msg.method()) {
            (Class::Request, Method::BINDING) => {
                self.stats.requests += 1;
                self.binding(link, msg.as_bytes())
            }
            (Class::Request, _) => {
                self.stats.requests += 1;
                self.request(now, link, &msg, relays)
            }
            (Class::Indication, Method::SEND) => self.send_indication(now, link, &msg),
            // RFC 8489 §6.3: unexpected indications and responses are discarded.
            _ => {
                self.stats.ignored += 1;
                Step::Drop
            }
        }
    }

    fn binding(&mut self, link: ClientLink, data: &[u8]) -> Step<'static> {
        let Some(transmit) = self.binding.handle(link.local, link.remote, data) else {
            self.stats.malformed += 1;
            return Step::Drop;
        };
        // A stream cannot answer from another address: CHANGE-REQUEST is a
        // UDP test (RFC 5780 §7.2), so a TCP client asking for it is refused.
        if link.transport.is_stream() && transmit.from != link.local {
            if let Ok(req) = Message::decode(data) {
                let builder = self.error_builder(&req, 400);
                self.finish_response(builder, &req, None);
                return Step::Reply(link);
            }
            return Step::Drop;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&transmit.data);
        Step::Reply(ClientLink {
            local: transmit.from,
            ..link
        })
    }

    fn send_indication<'a>(
        &mut self,
        now: Instant,
        link: ClientLink,
        msg: &Message<'a>,
    ) -> Step<'a> {
        let Some(alloc) = self.allocations.get(&link).filter(|a| a.is_live(now)) else {
            self.stats.no_allocation_drops += 1;
            return Step::Drop;
        };
        let (Some(peer), Some(payload)) = (msg.xor_peer_address(), msg.data()) else {
            self.stats.malformed += 1;
            return Step::Drop;
        };
        // Indications cannot be answered with 420, so they are dropped.
        if msg.unknown_comprehension_required(&mut [0u16; 1]) > 0 {
            self.stats.ignored += 1;
            return Step::Drop;
        }
        let peer = canonical(peer);
        if !self.peer_allowed(peer) {
            self.stats.forbidden_peer_drops += 1;
            return Step::Drop;
        }
        if !alloc.has_permission(peer.ip(), now) {
            self.stats.no_permission_drops += 1;
            return Step::Drop;
        }
        self.stats.relayed_to_peer_packets += 1;
        self.stats.relayed_to_peer_bytes += payload.len() as u64;
        Step::Forward {
            from: alloc.relay,
            to: peer,
            data: payload,
        }
    }

    fn channel_data_from_client<'a>(
        &mut self,
        now: Instant,
        link: ClientLink,
        data: &'a [u8],
    ) -> Step<'a> {
        let Ok(message) = ChannelData::decode(data) else {
            self.stats.malformed += 1;
            return Step::Drop;
        };
        let Some(alloc) = self.allocations.get(&link).filter(|a| a.is_live(now)) else {
            self.stats.no_allocation_drops += 1;
            return Step::Drop;
        };
        // RFC 8656 §12.6: ChannelData on an unbound channel is discarded; and
        // nothing reaches a peer whose permission has lapsed.
        let Some(peer) = alloc
            .channel_peer(message.channel, now)
            .filter(|peer| alloc.has_permission(peer.ip(), now))
        else {
            self.stats.no_permission_drops += 1;
            return Step::Drop;
        };
        // Checked at bind time, but the configuration is the last word.
        if !self.peer_allowed(peer) {
            self.stats.forbidden_peer_drops += 1;
            return Step::Drop;
        }
        self.stats.relayed_to_peer_packets += 1;
        self.stats.relayed_to_peer_bytes += message.data.len() as u64;
        Step::Forward {
            from: alloc.relay,
            to: peer,
            data: message.data,
        }
    }

    /// RFC 8656 §21.1.3 ("TURN server as a proxy"): no relaying to the
    /// server's own host, nowhere, or to many hosts at once.
    fn peer_allowed(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if peer.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
            return false;
        }
        !ip.is_loopback() || self.config.allow_loopback_peers
    }

    fn end_allocation(&mut self, link: ClientLink, reason: EndReason) {
        let Some(alloc) = self.allocations.remove(&link) else {
            return;
        };
        self.by_relay.remove(&alloc.relay);
        if let Some(count) = self.per_user.get_mut(&alloc.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_user.remove(&alloc.user);
            }
        }
        tracing::debug!(user = %alloc.user, client = %link.remote, relay = %alloc.relay, ?reason, "TURN allocation ended");
        self.events.push_back(ServerEvent::AllocationEnded {
            user: alloc.user,
            client: link,
            relay: alloc.relay,
            reason,
        });
    }
}

/// IPv4-mapped IPv6 folded to IPv4, so that a dual-stack driver socket and
/// an XOR-PEER-ADDRESS name the same peer the same way.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn family_of(addr: SocketAddr) -> AddressFamily {
    if addr.ip().to_canonical().is_ipv4() {
        AddressFamily::V4
    } else {
        AddressFamily::V6
    }
}
