//! Counters of what the network did with the packets it was given.

/// Why a packet never reached a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Random loss on a link.
    Loss,
    /// No host or NAT owns the destination in the sender's scope: a private
    /// address off the sender's LAN, an unknown public address, or an
    /// IPv4/IPv6 mismatch.
    NoRoute,
    /// Arrived at a NAT's public address on a port with no mapping.
    NoMapping,
    /// The mapping exists but its filter rejects the source.
    Filtered,
    /// A LAN host addressed its own NAT's public address, and the NAT does
    /// not hairpin.
    HairpinDisabled,
    /// The mapping timed out (no outbound traffic for `mapping_timeout`).
    MappingExpired,
    /// The sending or receiving host has UDP to/from the internet blocked.
    UdpBlocked,
    /// Delivered to a host address no runner endpoint is bound to.
    NoListener,
    /// The NAT had no free public port for a new mapping.
    PortsExhausted,
}

/// Dropped packets by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    pub loss: u64,
    pub no_route: u64,
    pub no_mapping: u64,
    pub filtered: u64,
    pub hairpin_disabled: u64,
    pub mapping_expired: u64,
    pub udp_blocked: u64,
    pub no_listener: u64,
    pub ports_exhausted: u64,
}

impl DropCounts {
    pub fn get(&self, reason: DropReason) -> u64 {
        let mut counts = *self;
        *counts.slot_mut(reason)
    }

    pub fn total(&self) -> u64 {
        let DropCounts {
            loss,
            no_route,
            no_mapping,
            filtered,
            hairpin_disabled,
            mapping_expired,
            udp_blocked,
            no_listener,
            ports_exhausted,
        } = *self;
        loss + no_route
            + no_mapping
            + filtered
            + hairpin_disabled
            + mapping_expired
            + udp_blocked
            + no_listener
            + ports_exhausted
    }

    pub(super) fn count(&mut self, reason: DropReason) {
        *self.slot_mut(reason) += 1;
    }

    fn slot_mut(&mut self, reason: DropReason) -> &mut u64 {
        match reason {
            DropReason::Loss => &mut self.loss,
            DropReason::NoRoute => &mut self.no_route,
            DropReason::NoMapping => &mut self.no_mapping,
            DropReason::Filtered => &mut self.filtered,
            DropReason::HairpinDisabled => &mut self.hairpin_disabled,
            DropReason::MappingExpired => &mut self.mapping_expired,
            DropReason::UdpBlocked => &mut self.udp_blocked,
            DropReason::NoListener => &mut self.no_listener,
            DropReason::PortsExhausted => &mut self.ports_exhausted,
        }
    }
}

/// Always `sent == delivered + dropped.total() + in_flight`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams accepted by `send` (errors are not counted).
    pub sent: u64,
    /// Handed out by `poll_delivery` (and, under the runner, to a listener).
    pub delivered: u64,
    pub dropped: DropCounts,
    /// Neither delivered nor dropped yet.
    pub in_flight: u64,
}
