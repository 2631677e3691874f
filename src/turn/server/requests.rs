//! The authenticated requests: Allocate, Refresh, CreatePermission and
//! ChannelBind (RFC 8656 §7, §9, §12), and how their answers are built.

use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::allocation::{later, Allocation};
use super::auth::{AuthReject, Authenticated};
use super::{
    canonical, family_of, ClientLink, EndReason, RelayAllocError, RelayAllocator, Reservation,
    ServerEvent, Step, TurnServer, RESERVATION_LIFETIME,
};
use crate::stun::{attr_type, AddressFamily, Attribute, Class, Message, MessageBuilder, Method};
use crate::turn::channel::{CHANNEL_MAX_RFC5766, CHANNEL_MIN};
use rand::RngCore;

/// IANA protocol number of UDP, the only relayed transport (RFC 8656 §7.2).
const UDP: u8 = 17;

/// Enough for any sane request; more are still answered 420 with these.
const MAX_UNKNOWN: usize = 16;

/// What a request handler granted; the success response carries it.
enum Granted {
    Allocated {
        relay: SocketAddr,
        mapped: SocketAddr,
        lifetime: Duration,
        /// The token of the next port, reserved for EVEN-PORT with R.
        reservation: Option<u64>,
    },
    Refreshed {
        lifetime: Duration,
    },
    Done,
}

/// The error code for a relay the driver could not provide.
fn alloc_error_code(e: &RelayAllocError) -> u16 {
    match e {
        RelayAllocError::FamilyUnsupported(_) => 440,
        _ => {
            tracing::warn!(error = %e, "no relay address for a TURN allocation");
            508
        }
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

impl TurnServer {
    /// Any request but Binding: validate, replay a retransmission,
    /// authenticate, then dispatch. Every answer after authentication is
    /// signed the way the request was.
    pub(super) fn request(
        &mut self,
        now: Instant,
        link: ClientLink,
        req: &Message<'_>,
        relays: &mut dyn RelayAllocator,
    ) -> Step<'static> {
        if req.attributes().any(|a| a.is_err()) {
            self.stats.malformed += 1;
            return self.unsigned_error(link, req, 400);
        }
        let method = req.method();
        let known = [
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
        ];
        if !known.contains(&method) {
            return self.unsigned_error(link, req, 400);
        }
        // RFC 8656 §7.2, and idempotency over UDP for the rest: the same
        // transaction gets the same bytes, without being executed twice.
        if let Some(cached) = self
            .allocations
            .get(&link)
            .and_then(|a| a.cached_response(req.transaction_id()))
        {
            self.scratch.clear();
            self.scratch.extend_from_slice(cached);
            return Step::Reply(link);
        }
        let auth = match self.auth.authenticate(now, link.remote, req) {
            Ok(auth) => auth,
            Err(reject) => return self.reject(now, link, req, reject),
        };
        let mut unknown = [0u16; MAX_UNKNOWN];
        let n = req.unknown_comprehension_required(&mut unknown);
        let outcome = if n > 0 {
            Err(420)
        } else {
            match method {
                Method::ALLOCATE => self.allocate(now, link, req, &auth, relays),
                Method::REFRESH => self.refresh(now, link, req, &auth),
                Method::CREATE_PERMISSION => self.create_permission(now, link, req, &auth),
                _ => self.channel_bind(now, link, req, &auth),
            }
        };
        let builder = match outcome {
            Ok(granted) => self.success_builder(req, &granted),
            Err(code) => {
                let mut builder = self.error_builder(req, code);
                if code == 420 {
                    let types = unknown.get(..n).unwrap_or_default();
                    let value: Vec<u8> = types.iter().flat_map(|t| t.to_be_bytes()).collect();
                    builder.add(&Attribute::UnknownAttributes(&value));
                }
                builder
            }
        };
        let created =
            matches!(self.allocations.get(&link), Some(a) if a.allocate_response.is_none());
        self.finish_response(builder, req, Some(&auth));
        if let Some(alloc) = self.allocations.get_mut(&link) {
            let entry = Some((req.transaction_id(), self.scratch.clone()));
            if created {
                alloc.allocate_response = entry;
            } else if method != Method::ALLOCATE {
                alloc.last_response = entry;
            }
        }
        Step::Reply(link)
    }

    fn reject(
        &mut self,
        now: Instant,
        link: ClientLink,
        req: &Message<'_>,
        reject: AuthReject,
    ) -> Step<'static> {
        let code = match reject {
            AuthReject::BadRequest => return self.unsigned_error(link, req, 400),
            AuthReject::Challenge => 401,
            AuthReject::Unauthorized => {
                self.stats.auth_failures += 1;
                tracing::debug!(client = %link.remote, user = req.username().unwrap_or(""), "TURN authentication failed");
                401
            }
            AuthReject::StaleNonce => 438,
        };
        let mut builder = self.error_builder(req, code);
        self.auth.add_challenge(&mut builder, now, link.remote);
        self.finish_response(builder, req, None);
        Step::Reply(link)
    }

    fn unsigned_error(&mut self, link: ClientLink, req: &Message<'_>, code: u16) -> Step<'static> {
        let builder = self.error_builder(req, code);
        self.finish_response(builder, req, None);
        Step::Reply(link)
    }

    /// An error response skeleton in the scratch buffer.
    pub(super) fn error_builder(&mut self, req: &Message<'_>, code: u16) -> MessageBuilder {
        self.stats.error_responses += 1;
        let mut builder = MessageBuilder::with_buffer(
            std::mem::take(&mut self.scratch),
            Class::Error,
            req.method(),
            req.transaction_id(),
        );
        builder.add(&Attribute::ErrorCode {
            code,
            reason: reason_phrase(code),
        });
        builder
    }

    fn success_builder(&mut self, req: &Message<'_>, granted: &Granted) -> MessageBuilder {
        let mut builder = MessageBuilder::with_buffer(
            std::mem::take(&mut self.scratch),
            Class::Success,
            req.method(),
            req.transaction_id(),
        );
        match *granted {
            Granted::Allocated {
                relay,
                mapped,
                lifetime,
                reservation,
            } => {
                builder
                    .add(&Attribute::XorRelayedAddress(relay))
                    .add(&Attribute::Lifetime(wire_seconds(lifetime)))
                    .add(&Attribute::XorMappedAddress(mapped));
                if let Some(token) = reservation {
                    builder.add(&Attribute::ReservationToken(token));
                }
            }
            Granted::Refreshed { lifetime } => {
                builder.add(&Attribute::Lifetime(wire_seconds(lifetime)));
            }
            Granted::Done => {}
        }
        builder
    }

    /// SOFTWARE, the integrity attribute of the request (if authenticated)
    /// and FINGERPRINT when the request had one; the bytes land in `scratch`.
    pub(super) fn finish_response(
        &mut self,
        mut builder: MessageBuilder,
        req: &Message<'_>,
        auth: Option<&Authenticated>,
    ) {
        if let Some(software) = &self.config.software {
            builder.add(&Attribute::Software(software));
        }
        if let Some(auth) = auth {
            auth.sign(&mut builder);
        }
        if req.has_fingerprint() {
            builder.add_fingerprint();
        }
        self.scratch = builder.finish();
    }

    /// RFC 8656 §7.2 and §7.3: the smaller of the requested and the maximum
    /// lifetime, but never below the default.
    fn granted_lifetime(&self, requested: Option<u32>) -> Duration {
        let max = self.config.max_lifetime;
        let default = self.config.default_lifetime.min(max);
        match requested.map(|secs| Duration::from_secs(u64::from(secs)).min(max)) {
            Some(asked) if asked > default => asked,
            _ => default,
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        link: ClientLink,
        req: &Message<'_>,
        auth: &Authenticated,
        relays: &mut dyn RelayAllocator,
    ) -> Result<Granted, u16> {
        match self.allocations.get(&link) {
            // Expired but not yet reaped by handle_timeout: reap it now so
            // the 5-tuple can be reused.
            Some(old) if !old.is_live(now) => self.end_allocation(link, EndReason::Expired),
            Some(_) => return Err(437),
            None => {}
        }
        match req.get(attr_type::REQUESTED_TRANSPORT) {
            Some(Ok(Attribute::RequestedTransport(UDP))) => {}
            Some(_) => return Err(442),
            None => return Err(400),
        }
        let family = match req.get(attr_type::REQUESTED_ADDRESS_FAMILY) {
            Some(Ok(Attribute::RequestedAddressFamily(f))) => Some(f),
            _ => None,
        };
        let even_port = match req.get(attr_type::EVEN_PORT) {
            Some(Ok(Attribute::EvenPort(reserve_next))) => Some(reserve_next),
            _ => None,
        };
        let token = match req.get(attr_type::RESERVATION_TOKEN) {
            Some(Ok(Attribute::ReservationToken(t))) => Some(t),
            Some(_) => return Err(400),
            None => None,
        };
        if token.is_some() && (even_port.is_some() || family.is_some()) {
            return Err(400);
        }
        if self.per_user.get(&auth.user).copied().unwrap_or(0) >= self.config.user_quota {
            return Err(486);
        }
        if self.allocations.len() >= self.config.total_allocations {
            return Err(508);
        }
        let family = family.unwrap_or(AddressFamily::V4);
        let (relay, reservation) = match (token, even_port) {
            (Some(token), _) => (self.claim_reservation(now, token)?, None),
            (None, Some(true)) => {
                let (relay, token) = self.reserve_pair(now, family, link, relays)?;
                (relay, Some(token))
            }
            (None, even) => {
                let relay = relays
                    .allocate(family, even.is_some(), &link)
                    .map_err(|e| alloc_error_code(&e))?;
                (relay, None)
            }
        };
        // A claimed reservation keeps the family it was made with.
        let expected = token.is_none().then_some(family);
        if self.by_relay.contains_key(&relay) || expected.is_some_and(|f| family_of(relay) != f) {
            tracing::warn!(%relay, "relay allocator returned an unusable address");
            return Err(508);
        }
        let lifetime = self.granted_lifetime(req.lifetime());
        let alloc = Allocation::new(auth.user.clone(), link, relay, later(now, lifetime));
        self.timers.push(Reverse((alloc.scheduled, link)));
        self.allocations.insert(link, alloc);
        self.by_relay.insert(relay, link);
        *self.per_user.entry(auth.user.clone()).or_insert(0) += 1;
        tracing::debug!(user = %auth.user, client = %link.remote, %relay, "TURN allocation created");
        self.events.push_back(ServerEvent::AllocationCreated {
            user: auth.user.clone(),
            client: link,
            relay,
            lifetime,
        });
        Ok(Granted::Allocated {
            relay,
            mapped: link.remote,
            lifetime,
            reservation,
        })
    }

    /// RESERVATION-TOKEN: the reserved port, if the token is known and the
    /// reservation still stands; 508 otherwise (RFC 8656 §7.2).
    fn claim_reservation(&mut self, now: Instant, token: u64) -> Result<SocketAddr, u16> {
        match self.reservations.remove(&token) {
            Some(r) if r.expires > now => Ok(r.relay),
            Some(r) => {
                self.events
                    .push_back(ServerEvent::ReservationEnded { relay: r.relay });
                Err(508)
            }
            None => Err(508),
        }
    }

    /// EVEN-PORT with R: an even port for this allocation, the next one
    /// held under a fresh token.
    fn reserve_pair(
        &mut self,
        now: Instant,
        family: AddressFamily,
        link: ClientLink,
        relays: &mut dyn RelayAllocator,
    ) -> Result<(SocketAddr, u64), u16> {
        if self.reservations.len() >= self.config.total_allocations {
            return Err(508);
        }
        let (relay, next) = relays
            .allocate_even_pair(family, &link)
            .map_err(|e| alloc_error_code(&e))?;
        let mut token = self.rng.next_u64();
        while self.reservations.contains_key(&token) {
            token = self.rng.next_u64();
        }
        self.reservations.insert(
            token,
            Reservation {
                relay: next,
                expires: later(now, RESERVATION_LIFETIME),
            },
        );
        Ok((relay, token))
    }

    /// The caller's live allocation, if the credentials are its owner's
    /// (RFC 8656 §5: 441 otherwise).
    fn owned_allocation(
        &mut self,
        now: Instant,
        link: ClientLink,
        auth: &Authenticated,
    ) -> Result<&mut Allocation, u16> {
        let alloc = self
            .allocations
            .get_mut(&link)
            .filter(|a| a.is_live(now))
            .ok_or(437u16)?;
        if alloc.user != auth.user {
            return Err(441);
        }
        alloc.expire_state(now);
        Ok(alloc)
    }

    fn refresh(
        &mut self,
        now: Instant,
        link: ClientLink,
        req: &Message<'_>,
        auth: &Authenticated,
    ) -> Result<Granted, u16> {
        let lifetime = self.granted_lifetime(req.lifetime());
        let alloc = self.owned_allocation(now, link, auth)?;
        if let Some(Ok(Attribute::RequestedAddressFamily(f))) =
            req.get(attr_type::REQUESTED_ADDRESS_FAMILY)
        {
            if f != family_of(alloc.relay) {
                return Err(443);
            }
        }
        if req.lifetime() == Some(0) {
            self.end_allocation(link, EndReason::Deleted);
            return Ok(Granted::Refreshed {
                lifetime: Duration::ZERO,
            });
        }
        alloc.expires = later(now, lifetime);
        // `scheduled` may now be early; the timer then just finds nothing due.
        Ok(Granted::Refreshed { lifetime })
    }

    /// Checks a peer for CreatePermission and ChannelBind (RFC 8656 §9.2).
    fn check_peer(&self, relay: SocketAddr, peer: SocketAddr) -> Result<SocketAddr, u16> {
        let peer = canonical(peer);
        if family_of(peer) != family_of(relay) {
            return Err(443);
        }
        // Port 0 is fine here: permissions ignore the port.
        let probe = SocketAddr::new(peer.ip(), peer.port().max(1));
        if !self.peer_allowed(probe) {
            return Err(403);
        }
        Ok(peer)
    }

    fn create_permission(
        &mut self,
        now: Instant,
        link: ClientLink,
        req: &Message<'_>,
        auth: &Authenticated,
    ) -> Result<Granted, u16> {
        let relay = self.owned_allocation(now, link, auth)?.relay;
        let mut peers: Vec<IpAddr> = Vec::new();
        for attr in req.attributes().flatten() {
            if let Attribute::XorPeerAddress(peer) = attr {
                peers.push(self.check_peer(relay, peer)?.ip());
            }
        }
        if peers.is_empty() {
            return Err(400);
        }
        peers.sort_unstable();
        peers.dedup();
        let max = self.config.max_permissions_per_allocation;
        let until = later(now, self.config.permission_lifetime);
        let alloc = self.owned_allocation(now, link, auth)?;
        let added = peers
            .iter()
            .filter(|ip| !alloc.permissions.contains_key(ip))
            .count();
        if alloc.permissions.len() + added > max {
            return Err(508);
        }
        for ip in peers {
            alloc.permit(ip, until);
        }
        self.reschedule(link);
        Ok(Granted::Done)
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        link: ClientLink,
        req: &Message<'_>,
        auth: &Authenticated,
    ) -> Result<Granted, u16> {
        let relay = self.owned_allocation(now, link, auth)?.relay;
        let number = match req.get(attr_type::CHANNEL_NUMBER) {
            Some(Ok(Attribute::ChannelNumber(n)))
                if (CHANNEL_MIN..=CHANNEL_MAX_RFC5766).contains(&n) =>
            {
                n
            }
            _ => return Err(400),
        };
        let peer = req.xor_peer_address().ok_or(400u16)?;
        let peer = self.check_peer(relay, peer)?;
        if peer.port() == 0 {
            return Err(400);
        }
        let max = self.config.max_permissions_per_allocation;
        let channel_until = later(now, self.config.channel_lifetime);
        let permission_until = later(now, self.config.permission_lifetime);
        let alloc = self.owned_allocation(now, link, auth)?;
        if alloc.channel_conflicts(number, peer) {
            return Err(400);
        }
        if !alloc.permissions.contains_key(&peer.ip()) && alloc.permissions.len() >= max {
            return Err(508);
        }
        alloc.bind_channel(number, peer, channel_until);
        alloc.permit(peer.ip(), permission_until);
        self.reschedule(link);
        Ok(Granted::Done)
    }

    /// Makes sure the timer heap wakes up for the allocation's earliest deadline.
    fn reschedule(&mut self, link: ClientLink) {
        if let Some(alloc) = self.allocations.get_mut(&link) {
            let next = alloc.next_deadline();
            if next < alloc.scheduled {
                alloc.scheduled = next;
                self.timers.push(Reverse((next, link)));
            }
        }
    }
}

fn wire_seconds(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
