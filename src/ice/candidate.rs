//! ICE candidates (RFC 8445 §5.1): what an agent can be reached at, how it is
//! prioritised, and how candidates are grouped into foundations.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Candidate types with the type preferences RFC 8445 §5.1.2.2 recommends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateType {
    Host,
    ServerReflexive,
    PeerReflexive,
    Relayed,
}

impl CandidateType {
    /// RFC 8445 §5.1.2.2: host 126, prflx 110, srflx 100, relay 0.
    pub fn preference(self) -> u32 {
        match self {
            CandidateType::Host => 126,
            CandidateType::PeerReflexive => 110,
            CandidateType::ServerReflexive => 100,
            CandidateType::Relayed => 0,
        }
    }

    /// The token used in `a=candidate` lines and reports (RFC 8839 §5.1).
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::ServerReflexive => "srflx",
            CandidateType::PeerReflexive => "prflx",
            CandidateType::Relayed => "relay",
        }
    }

    pub fn from_token(s: &str) -> Option<Self> {
        Some(match s {
            "host" => CandidateType::Host,
            "srflx" => CandidateType::ServerReflexive,
            "prflx" => CandidateType::PeerReflexive,
            "relay" => CandidateType::Relayed,
            _ => return None,
        })
    }
}

impl fmt::Display for CandidateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 8445 §5.1.2.1: (2^24)·type + (2^8)·local + (256 − component).
pub fn candidate_priority(kind: CandidateType, local_preference: u16, component: u16) -> u32 {
    let component = u32::from(component.clamp(1, 256));
    (kind.preference() << 24) | (u32::from(local_preference) << 8) | (256 - component)
}

/// Local preference for a host address. RFC 8445 §5.1.2.1 wants it unique per
/// base; RFC 8421 prefers IPv6 but keeps IPv4 close so both are tried early.
/// Loopback and link-local rank last: they only work between local processes.
pub fn host_local_preference(ip: IpAddr, index: usize) -> u16 {
    let index = index.min(4000) as u16;
    let family_base: u16 = match ip {
        IpAddr::V6(v6) if is_link_local_v6(&v6) => 8000,
        IpAddr::V6(v6) if v6.is_loopback() => 6000,
        IpAddr::V4(v4) if v4.is_loopback() || v4.is_link_local() => 4000,
        IpAddr::V6(_) => 65535,
        IpAddr::V4(_) => 60000,
    };
    family_base.saturating_sub(index * 2)
}

pub(crate) fn is_link_local_v6(ip: &std::net::Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// A candidate, local or remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The transport address others send to.
    pub address: SocketAddr,
    /// Where we send from for this candidate: the host address for host,
    /// server- and peer-reflexive candidates, the relayed address itself for
    /// relayed ones (RFC 8445 §5.1.1.1). For remote candidates it equals `address`.
    pub base: SocketAddr,
    pub kind: CandidateType,
    pub priority: u32,
    pub foundation: String,
    pub component: u16,
    /// `raddr`/`rport`: the base of a reflexive candidate, the mapped address of a relayed one.
    pub related: Option<SocketAddr>,
}

impl Candidate {
    pub fn host(address: SocketAddr, component: u16, local_preference: u16) -> Self {
        Candidate {
            address,
            base: address,
            kind: CandidateType::Host,
            priority: candidate_priority(CandidateType::Host, local_preference, component),
            foundation: foundation(CandidateType::Host, address.ip(), None),
            component,
            related: None,
        }
    }

    pub fn server_reflexive(
        address: SocketAddr,
        base: SocketAddr,
        server: SocketAddr,
        component: u16,
        local_preference: u16,
    ) -> Self {
        Candidate {
            address,
            base,
            kind: CandidateType::ServerReflexive,
            priority: candidate_priority(
                CandidateType::ServerReflexive,
                local_preference,
                component,
            ),
            foundation: foundation(CandidateType::ServerReflexive, base.ip(), Some(server.ip())),
            component,
            related: Some(base),
        }
    }

    /// A relayed candidate from a TURN allocation; `mapped` is the
    /// XOR-MAPPED-ADDRESS the TURN server saw us at.
    pub fn relayed(
        relayed: SocketAddr,
        mapped: SocketAddr,
        server: SocketAddr,
        component: u16,
        local_preference: u16,
    ) -> Self {
        Candidate {
            address: relayed,
            base: relayed,
            kind: CandidateType::Relayed,
            priority: candidate_priority(CandidateType::Relayed, local_preference, component),
            foundation: foundation(CandidateType::Relayed, mapped.ip(), Some(server.ip())),
            component,
            related: Some(mapped),
        }
    }

    /// A local peer-reflexive candidate learnt from a check's XOR-MAPPED-ADDRESS
    /// (RFC 8445 §7.2.5.3.1): its priority is the PRIORITY we sent in the check.
    pub fn local_peer_reflexive(
        address: SocketAddr,
        base: SocketAddr,
        priority: u32,
        component: u16,
    ) -> Self {
        Candidate {
            address,
            base,
            kind: CandidateType::PeerReflexive,
            priority,
            foundation: foundation(CandidateType::PeerReflexive, base.ip(), None),
            component,
            related: Some(base),
        }
    }

    /// A remote peer-reflexive candidate learnt from a check's source address
    /// (RFC 8445 §7.3.1.3); the foundation only has to be unique.
    pub fn remote_peer_reflexive(address: SocketAddr, priority: u32, component: u16) -> Self {
        Candidate {
            address,
            base: address,
            kind: CandidateType::PeerReflexive,
            priority,
            foundation: format!("prflx{}", fnv1a(address.to_string().as_bytes()) % 1_000_000),
            component,
            related: None,
        }
    }

    /// A remote candidate as signalled (SDP `a=candidate`).
    pub fn remote(
        address: SocketAddr,
        kind: CandidateType,
        priority: u32,
        foundation: impl Into<String>,
        component: u16,
        related: Option<SocketAddr>,
    ) -> Self {
        Candidate {
            address,
            base: address,
            kind,
            priority,
            foundation: foundation.into(),
            component,
            related,
        }
    }

    /// The PRIORITY attribute of checks sent from this candidate's base: what
    /// the peer would assign us if it learnt us as peer-reflexive (§7.1.1).
    pub fn peer_reflexive_priority(&self) -> u32 {
        let local_preference = ((self.priority >> 8) & 0xffff) as u16;
        candidate_priority(
            CandidateType::PeerReflexive,
            local_preference,
            self.component,
        )
    }

    /// The candidate-attribute value of RFC 8839 §5.1, without the `a=candidate:` prefix.
    pub fn to_sdp_value(&self) -> String {
        let mut s = format!(
            "{} {} UDP {} {} {} typ {}",
            self.foundation,
            self.component,
            self.priority,
            self.address.ip(),
            self.address.port(),
            self.kind
        );
        if let Some(r) = self.related {
            s.push_str(&format!(" raddr {} rport {}", r.ip(), r.port()));
        }
        s
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (component {}, priority {})",
            self.kind, self.address, self.component, self.priority
        )
    }
}

/// RFC 8445 §5.1.1.3: candidates share a foundation when they have the same
/// type, base IP, server and transport. Only equality matters, so a hash will do.
pub fn foundation(kind: CandidateType, base_ip: IpAddr, server_ip: Option<IpAddr>) -> String {
    let key = format!("{}|{}|{:?}|udp", kind.as_str(), base_ip, server_ip);
    format!("{}", fnv1a(key.as_bytes()) % 100_000_000)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_formula_matches_rfc() {
        // 126·2^24 + 65535·2^8 + 255
        assert_eq!(
            candidate_priority(CandidateType::Host, 65535, 1),
            2_130_706_431
        );
        assert_eq!(
            candidate_priority(CandidateType::Relayed, 0, 2),
            254,
            "relay with zero local preference, RTCP component"
        );
    }

    #[test]
    fn host_beats_prflx_beats_srflx_beats_relay() {
        let p = |k| candidate_priority(k, 1000, 1);
        assert!(p(CandidateType::Host) > p(CandidateType::PeerReflexive));
        assert!(p(CandidateType::PeerReflexive) > p(CandidateType::ServerReflexive));
        assert!(p(CandidateType::ServerReflexive) > p(CandidateType::Relayed));
    }

    #[test]
    fn foundations_group_by_type_base_and_server() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(
            foundation(CandidateType::Host, a, None),
            foundation(CandidateType::Host, a, None)
        );
        assert_ne!(
            foundation(CandidateType::Host, a, None),
            foundation(CandidateType::Host, b, None)
        );
        assert_ne!(
            foundation(CandidateType::Host, a, None),
            foundation(CandidateType::ServerReflexive, a, Some(s))
        );
    }

    #[test]
    fn local_preference_prefers_routable_addresses() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let ll: IpAddr = "fe80::1".parse().unwrap();
        assert!(host_local_preference(v6, 0) > host_local_preference(v4, 0));
        assert!(host_local_preference(v4, 3) > host_local_preference(ll, 0));
        assert!(host_local_preference(ll, 0) > host_local_preference(lo, 0));
        assert_ne!(host_local_preference(v4, 0), host_local_preference(v4, 1));
    }

    #[test]
    fn sdp_value_carries_related_address() {
        let c = Candidate::server_reflexive(
            "203.0.113.5:4000".parse().unwrap(),
            "10.0.0.5:5000".parse().unwrap(),
            "203.0.113.10:3478".parse().unwrap(),
            1,
            60000,
        );
        let v = c.to_sdp_value();
        assert!(v.contains("UDP"), "{v}");
        assert!(v.ends_with("typ srflx raddr 10.0.0.5 rport 5000"), "{v}");
    }

    #[test]
    fn peer_reflexive_priority_keeps_local_preference() {
        let c = Candidate::host("10.0.0.1:1".parse().unwrap(), 1, 60000);
        let p = c.peer_reflexive_priority();
        assert_eq!(p >> 24, 110);
        assert_eq!((p >> 8) & 0xffff, 60000);
    }
}
