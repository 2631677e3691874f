//! Which local addresses become host candidates (RFC 8445 §5.1.1.1).

use std::net::IpAddr;

/// What to include besides ordinary routable addresses.
#[derive(Clone, Copy, Debug)]
pub struct InterfaceFilter {
    pub loopback: bool,
    pub link_local: bool,
    pub ipv6: bool,
}

impl Default for InterfaceFilter {
    /// Every routable IPv4 and IPv6 address; no loopback, no link-local.
    fn default() -> Self {
        InterfaceFilter {
            loopback: false,
            link_local: false,
            ipv6: true,
        }
    }
}

/// Addresses of the interfaces that are up, filtered. Loopback and
/// link-local only when asked for: they reach no other machine.
pub fn host_addresses(filter: InterfaceFilter) -> std::io::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| keep(*ip, filter))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn keep(ip: IpAddr, filter: InterfaceFilter) -> bool {
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    if ip.is_loopback() {
        return filter.loopback && (ip.is_ipv4() || filter.ipv6);
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() || filter.link_local,
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            filter.ipv6 && (!link_local || filter.link_local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_drops_loopback_and_link_local_unless_asked() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let ll: IpAddr = "fe80::1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let default = InterfaceFilter::default();
        assert!(!keep(lo, default));
        assert!(keep(v4, default));
        assert!(keep(v6, default));
        assert!(!keep(ll, default));
        let v4_only = InterfaceFilter {
            ipv6: false,
            ..default
        };
        assert!(!keep(v6, v4_only));
        let all = InterfaceFilter {
            loopback: true,
            link_local: true,
            ipv6: true,
        };
        assert!(keep(lo, all) && keep(ll, all) && keep(v6, all));
        assert!(!keep("0.0.0.0".parse().unwrap(), all));
    }
}
