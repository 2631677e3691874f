//! One allocation's state (RFC 8656 §2.2): relayed address, lifetime,
//! permissions by peer IP and channels by number and by peer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::ClientLink;
use crate::stun::TransactionId;

/// RFC 8656 §12: after a channel binding expires, neither its number nor its
/// peer address may be bound to anything else for 5 minutes, so late
/// ChannelData for the old peer cannot be delivered to a new one.
pub(super) const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

pub(super) struct Channel {
    pub peer: SocketAddr,
    /// Bound (usable) strictly before this instant.
    pub expires: Instant,
}

impl Channel {
    pub fn is_live(&self, now: Instant) -> bool {
        now < self.expires
    }

    /// The number and the peer stay reserved until then.
    pub fn reserved_until(&self) -> Instant {
        later(self.expires, CHANNEL_COOLDOWN)
    }
}

pub(super) struct Allocation {
    pub user: String,
    pub link: ClientLink,
    pub relay: SocketAddr,
    pub expires: Instant,
    /// Keyed by canonical IP (IPv4-mapped IPv6 folded to IPv4); the port is
    /// not part of a permission (RFC 8656 §9).
    pub permissions: HashMap<IpAddr, Instant>,
    pub channels: HashMap<u16, Channel>,
    pub channel_by_peer: HashMap<SocketAddr, u16>,
    /// The success that created the allocation, for retransmitted Allocates.
    pub allocate_response: Option<(TransactionId, Vec<u8>)>,
    /// The last answer to any other request, for retransmissions over UDP.
    pub last_response: Option<(TransactionId, Vec<u8>)>,
    /// The deadline of this allocation's live entry in the server's timer heap.
    pub scheduled: Instant,
}

impl Allocation {
    pub fn new(user: String, link: ClientLink, relay: SocketAddr, expires: Instant) -> Self {
        Allocation {
            user,
            link,
            relay,
            expires,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_by_peer: HashMap::new(),
            allocate_response: None,
            last_response: None,
            scheduled: expires,
        }
    }

    pub fn is_live(&self, now: Instant) -> bool {
        now < self.expires
    }

    pub fn cached_response(&self, tid: TransactionId) -> Option<&[u8]> {
        [&self.allocate_response, &self.last_response]
            .into_iter()
            .flatten()
            .find(|(id, _)| *id == tid)
            .map(|(_, bytes)| bytes.as_slice())
    }

    pub fn has_permission(&self, peer_ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&peer_ip.to_canonical())
            .is_some_and(|&expires| now < expires)
    }

    /// Installs or refreshes a permission; never shortens one.
    pub fn permit(&mut self, peer_ip: IpAddr, until: Instant) {
        let slot = self
            .permissions
            .entry(peer_ip.to_canonical())
            .or_insert(until);
        *slot = (*slot).max(until);
    }

    /// The peer a live channel is bound to.
    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|c| c.is_live(now))
            .map(|c| c.peer)
    }

    /// The live channel bound to exactly this peer transport address.
    pub fn channel_for_peer(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.channel_by_peer.get(&peer)?;
        self.channels
            .get(&number)
            .filter(|c| c.is_live(now))
            .map(|_| number)
    }

    /// Whether (number, peer) may be bound: neither half may belong to a
    /// different binding, live or cooling down.
    pub fn channel_conflicts(&self, number: u16, peer: SocketAddr) -> bool {
        let number_taken = self.channels.get(&number).is_some_and(|c| c.peer != peer);
        let peer_taken = self
            .channel_by_peer
            .get(&peer)
            .is_some_and(|&bound| bound != number);
        number_taken || peer_taken
    }

    pub fn bind_channel(&mut self, number: u16, peer: SocketAddr, until: Instant) {
        self.channels.insert(
            number,
            Channel {
                peer,
                expires: until,
            },
        );
        self.channel_by_peer.insert(peer, number);
    }

    /// Forgets permissions that have expired and channels whose cool-down is over.
    pub fn expire_state(&mut self, now: Instant) {
        self.permissions.retain(|_, expires| now < *expires);
        let by_peer = &mut self.channel_by_peer;
        self.channels.retain(|_, channel| {
            let keep = now < channel.reserved_until();
            if !keep {
                by_peer.remove(&channel.peer);
            }
            keep
        });
    }

    /// When something in this allocation next needs the clock.
    pub fn next_deadline(&self) -> Instant {
        let permissions = self.permissions.values().copied();
        let channels = self.channels.values().map(Channel::reserved_until);
        permissions.chain(channels).fold(self.expires, Instant::min)
    }
}

/// `at + d` without the panic `Instant + Duration` has on overflow; the
/// durations come from configuration and the wire, so clamp instead.
pub(super) fn later(at: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    at.checked_add(d.min(FAR))
        .or_else(|| at.checked_add(Duration::from_secs(3600)))
        .unwrap_or(at)
}
