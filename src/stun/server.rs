//! Sans-IO Binding responder (RFC 8489 §6.3), optionally with the RFC 5780
//! NAT behaviour discovery extensions.

use std::net::{IpAddr, SocketAddr};

use crate::stun::attr::{attr_type, Attribute};
use crate::stun::message::{
    error_response, response_builder, Class, Message, MessageBuilder, Method,
};

/// A datagram the caller must send from `from` (one of the server's local
/// addresses) to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTransmit {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Counters since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Every datagram handed to `handle`.
    pub received: u64,
    /// Responses produced, success and error alike.
    pub answered: u64,
    /// Datagrams dropped because they are not well-formed STUN (bad header,
    /// framing or FINGERPRINT, or a malformed attribute value).
    pub malformed: u64,
    /// Error responses among `answered`.
    pub errors: u64,
    /// Well-formed datagrams dropped on purpose: not a Binding request, or
    /// arrived on an address the server does not own.
    pub ignored: u64,
}

/// The four addresses of an RFC 5780 server: A1/A2 × P1/P2.
#[derive(Clone, Copy, Debug)]
struct Alternate {
    ip: IpAddr,
    port: u16,
}

/// Answers Binding requests. Holds no per-client state: Binding is
/// idempotent, so a retransmitted request just gets a fresh, identical answer
/// (RFC 8489 §6.3.1).
#[derive(Clone, Debug)]
pub struct BindingServer {
    primary: SocketAddr,
    alternate: Option<Alternate>,
    software: Option<String>,
    stats: ServerStats,
}

/// RFC 8489 §6.3.1 asks for a reason phrase "suitable for the error code".
const UNKNOWN_ATTRIBUTE: (u16, &str) = (420, "Unknown Attribute");

/// Enough for any sane request; more unknown types than this are still
/// answered with 420, listing the first ones.
const MAX_UNKNOWN: usize = 16;

impl BindingServer {
    /// `primary`: the address it listens on. `alternate`: Some(alt_ip:alt_port)
    /// makes it RFC 5780 capable: it then owns the 4 addresses primary/alternate
    /// IP × primary/alternate port, must be told about packets arriving on any
    /// of them, answers with OTHER-ADDRESS, RESPONSE-ORIGIN and MAPPED-ADDRESS
    /// and honours CHANGE-REQUEST.
    ///
    /// RFC 5780 §6 requires two distinct IPs and two distinct ports; an
    /// alternate sharing the primary's IP or port, or of another address
    /// family, is ignored and the server behaves as a plain one, which is what
    /// the RFC mandates for a server with a single address.
    ///
    /// Without alternate, CHANGE-REQUEST is answered with 420 (RFC 5780 §6).
    pub fn new(
        primary: SocketAddr,
        alternate: Option<SocketAddr>,
        software: Option<String>,
    ) -> Self {
        let usable = |alt: &SocketAddr| {
            alt.ip() != primary.ip()
                && alt.port() != primary.port()
                && alt.is_ipv4() == primary.is_ipv4()
        };
        BindingServer {
            primary,
            alternate: alternate.filter(usable).map(|a| Alternate {
                ip: a.ip(),
                port: a.port(),
            }),
            software,
            stats: ServerStats::default(),
        }
    }

    /// Whether the alternate address was accepted (RFC 5780 behaviour on).
    pub fn is_behavior_capable(&self) -> bool {
        self.alternate.is_some()
    }

    /// Every address the caller must listen on and report packets from.
    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        let p = self.primary;
        match self.alternate {
            None => vec![p],
            Some(a) => vec![
                p,
                SocketAddr::new(p.ip(), a.port),
                SocketAddr::new(a.ip, p.port()),
                SocketAddr::new(a.ip, a.port),
            ],
        }
    }

    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Handles a datagram that arrived on `local` from `from`.
    ///
    /// A Binding request gets a success response with XOR-MAPPED-ADDRESS
    /// (plus the RFC 5780 attributes when capable) and FINGERPRINT if the
    /// request had one. Unknown comprehension-required attributes get 420
    /// with UNKNOWN-ATTRIBUTES. Malformed datagrams and anything that is not a
    /// Binding request are dropped (`None`) and counted. RFC 3489 requests
    /// (no magic cookie) are treated as malformed: answering them would need
    /// a second codec for a protocol obsoleted in 2008.
    pub fn handle(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<ServerTransmit> {
        self.stats.received += 1;
        let Some(req) = Message::decode(data)
            .ok()
            .filter(|m| m.attributes().all(|a| a.is_ok()))
        else {
            self.stats.malformed += 1;
            return None;
        };
        // RFC 8489 §6.3: unsupported methods and non-requests are silently discarded.
        if req.class() != Class::Request || req.method() != Method::BINDING || !self.owns(local) {
            self.stats.ignored += 1;
            return None;
        }
        let response = match self.unknown_attributes(&req) {
            Some((types, n)) => self.reject(&req, local, &types[..n]),
            None => self.accept(&req, local, from),
        };
        self.stats.answered += 1;
        Some(response.finish_for(&req, from, self.software.as_deref()))
    }

    fn owns(&self, local: SocketAddr) -> bool {
        // A plain server answers from wherever the caller received the request.
        self.alternate.is_none() || self.local_addresses().contains(&local)
    }

    /// Comprehension-required types we cannot honour; CHANGE-REQUEST is one of
    /// them when there is no alternate address (RFC 5780 §6).
    fn unknown_attributes(&self, req: &Message<'_>) -> Option<([u16; MAX_UNKNOWN], usize)> {
        let mut types = [0u16; MAX_UNKNOWN];
        let mut n = req.unknown_comprehension_required(&mut types);
        let change = req.get(attr_type::CHANGE_REQUEST).is_some();
        if change && self.alternate.is_none() && n < MAX_UNKNOWN {
            types[n] = attr_type::CHANGE_REQUEST;
            n += 1;
        }
        (n > 0).then_some((types, n))
    }

    fn reject(&mut self, req: &Message<'_>, local: SocketAddr, unknown: &[u16]) -> Pending {
        self.stats.errors += 1;
        let (code, reason) = UNKNOWN_ATTRIBUTE;
        Pending {
            builder: error_response(req, code, reason, unknown),
            source: local,
        }
    }

    fn accept(&self, req: &Message<'_>, local: SocketAddr, from: SocketAddr) -> Pending {
        let mut builder = response_builder(req, Class::Success);
        builder.add(&Attribute::XorMappedAddress(from));
        let Some(alt) = self.alternate else {
            return Pending {
                builder,
                source: local,
            };
        };
        let (change_ip, change_port) = req.change_request().unwrap_or((false, false));
        let source = self.changed(alt, local, change_ip, change_port);
        // RFC 5780 §6.1: MAPPED-ADDRESS too (lets clients spot ALGs rewriting
        // addresses), where the answer comes from, and the Ca:Cp address.
        builder.add(&Attribute::MappedAddress(from));
        builder.add(&Attribute::ResponseOrigin(source));
        builder.add(&Attribute::OtherAddress(
            self.changed(alt, local, true, true),
        ));
        Pending { builder, source }
    }

    /// Table 1 of RFC 5780: Da/Dp replaced by Ca/Cp as the flags ask.
    fn changed(
        &self,
        alt: Alternate,
        local: SocketAddr,
        change_ip: bool,
        change_port: bool,
    ) -> SocketAddr {
        let other_ip = if local.ip() == alt.ip {
            self.primary.ip()
        } else {
            alt.ip
        };
        let other_port = if local.port() == alt.port {
            self.primary.port()
        } else {
            alt.port
        };
        SocketAddr::new(
            if change_ip { other_ip } else { local.ip() },
            if change_port {
                other_port
            } else {
                local.port()
            },
        )
    }
}

/// A response still open for SOFTWARE/FINGERPRINT, and the address it must
/// leave from.
struct Pending {
    builder: MessageBuilder,
    source: SocketAddr,
}

impl Pending {
    fn finish_for(
        mut self,
        req: &Message<'_>,
        to: SocketAddr,
        software: Option<&str>,
    ) -> ServerTransmit {
        if let Some(software) = software {
            self.builder.add(&Attribute::Software(software));
        }
        // Mirror the client: FINGERPRINT matters when STUN shares a port with media.
        if req.has_fingerprint() {
            self.builder.add_fingerprint();
        }
        ServerTransmit {
            from: self.source,
            to,
            data: self.builder.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::message::TransactionId;
    use std::net::Ipv4Addr;

    const TID: TransactionId = TransactionId([9; 12]);

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, last)), port)
    }

    fn client() -> SocketAddr {
        "203.0.113.7:40000".parse().unwrap()
    }

    fn request(attrs: &[Attribute<'_>], fingerprint: bool) -> Vec<u8> {
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, TID);
        for a in attrs {
            b.add(a);
        }
        if fingerprint {
            b.add_fingerprint();
        }
        b.finish()
    }

    fn plain() -> BindingServer {
        BindingServer::new(addr(1, 3478), None, Some("icephone test".into()))
    }

    fn rfc5780() -> BindingServer {
        BindingServer::new(addr(1, 3478), Some(addr(2, 3479)), None)
    }

    #[test]
    fn plain_server_answers_with_xor_mapped_address() {
        let mut server = plain();
        let out = server
            .handle(addr(1, 3478), client(), &request(&[], true))
            .unwrap();
        assert_eq!((out.from, out.to), (addr(1, 3478), client()));
        let msg = Message::decode(&out.data).unwrap();
        assert_eq!(
            (msg.class(), msg.method(), msg.transaction_id()),
            (Class::Success, Method::BINDING, TID)
        );
        assert_eq!(msg.xor_mapped_address(), Some(client()));
        assert_eq!(msg.software(), Some("icephone test"));
        assert!(msg.has_fingerprint());
        assert_eq!(msg.other_address(), None);
        assert_eq!(msg.response_origin(), None);
        assert_eq!(msg.mapped_address(), None);

        let out = server
            .handle(addr(1, 3478), client(), &request(&[], false))
            .unwrap();
        assert!(
            !Message::decode(&out.data).unwrap().has_fingerprint(),
            "fingerprint mirrors the request"
        );
        let stats = server.stats();
        assert_eq!(
            (
                stats.received,
                stats.answered,
                stats.errors,
                stats.malformed
            ),
            (2, 2, 0, 0)
        );
        assert_eq!(server.local_addresses(), [addr(1, 3478)]);
    }

    #[test]
    fn ipv6_client_gets_ipv6_mapping() {
        let mut server = BindingServer::new("[2001:db8::1]:3478".parse().unwrap(), None, None);
        let from: SocketAddr = "[2001:db8::beef]:5000".parse().unwrap();
        let out = server
            .handle(
                "[2001:db8::1]:3478".parse().unwrap(),
                from,
                &request(&[], false),
            )
            .unwrap();
        assert_eq!(
            Message::decode(&out.data).unwrap().xor_mapped_address(),
            Some(from)
        );
    }

    fn unknown_types(data: &[u8]) -> (u16, Vec<u16>) {
        let msg = Message::decode(data).unwrap();
        assert_eq!(msg.class(), Class::Error);
        let Some(Ok(Attribute::UnknownAttributes(raw))) = msg.get(attr_type::UNKNOWN_ATTRIBUTES)
        else {
            panic!("420 without UNKNOWN-ATTRIBUTES");
        };
        let code = msg.error_code().unwrap().0;
        (
            code,
            crate::stun::attr::unknown_attribute_types(raw).collect(),
        )
    }

    #[test]
    fn unknown_comprehension_required_gets_420() {
        let mut server = plain();
        let req = request(
            &[
                Attribute::Unknown {
                    typ: 0x7F01,
                    value: b"?",
                },
                Attribute::Unknown {
                    typ: 0xBEEF,
                    value: b"optional",
                },
                Attribute::Unknown {
                    typ: 0x0027,
                    value: &[0, 1, 0, 0],
                },
            ],
            true,
        );
        let out = server.handle(addr(1, 3478), client(), &req).unwrap();
        assert_eq!(unknown_types(&out.data), (420, vec![0x7F01, 0x0027]));
        assert!(Message::decode(&out.data).unwrap().has_fingerprint());
        assert_eq!(server.stats().errors, 1);
        assert_eq!(server.stats().answered, 1);
    }

    #[test]
    fn change_request_without_alternate_gets_420() {
        let mut server = plain();
        let change = Attribute::ChangeRequest {
            change_ip: false,
            change_port: true,
        };
        let out = server
            .handle(addr(1, 3478), client(), &request(&[change], false))
            .unwrap();
        assert_eq!(
            unknown_types(&out.data),
            (420, vec![attr_type::CHANGE_REQUEST])
        );
        assert_eq!(out.from, addr(1, 3478));
    }

    #[test]
    fn change_request_routing_follows_rfc5780_table_1() {
        let mut server = rfc5780();
        let locals = server.local_addresses();
        assert_eq!(
            locals,
            [addr(1, 3478), addr(1, 3479), addr(2, 3478), addr(2, 3479)]
        );
        for local in locals {
            let ca = if local.ip() == addr(1, 0).ip() { 2 } else { 1 };
            let cp = if local.port() == 3478 { 3479 } else { 3478 };
            let other = addr(ca, cp);
            for (change_ip, change_port) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let change = Attribute::ChangeRequest {
                    change_ip,
                    change_port,
                };
                let out = server
                    .handle(local, client(), &request(&[change], false))
                    .unwrap();
                let expected = SocketAddr::new(
                    if change_ip { other.ip() } else { local.ip() },
                    if change_port {
                        other.port()
                    } else {
                        local.port()
                    },
                );
                assert_eq!(
                    out.from, expected,
                    "local {local} flags {change_ip}/{change_port}"
                );
                assert_eq!(out.to, client());
                let msg = Message::decode(&out.data).unwrap();
                assert_eq!(msg.response_origin(), Some(expected));
                assert_eq!(msg.other_address(), Some(other));
                assert_eq!(msg.xor_mapped_address(), Some(client()));
                assert_eq!(msg.mapped_address(), Some(client()));
            }
        }
        assert_eq!(server.stats().answered, 16);
    }

    #[test]
    fn rfc5780_server_without_change_request_still_reports_addresses() {
        let mut server = rfc5780();
        let out = server
            .handle(addr(1, 3478), client(), &request(&[], false))
            .unwrap();
        assert_eq!(out.from, addr(1, 3478));
        let msg = Message::decode(&out.data).unwrap();
        assert_eq!(msg.other_address(), Some(addr(2, 3479)));
        assert_eq!(msg.response_origin(), Some(addr(1, 3478)));
    }

    #[test]
    fn malformed_and_irrelevant_datagrams_are_dropped_and_counted() {
        let mut server = rfc5780();
        let local = addr(1, 3478);
        assert_eq!(server.handle(local, client(), b"definitely not stun"), None);
        assert_eq!(server.handle(local, client(), &[]), None);
        let good = request(&[], true);
        assert_eq!(
            server.handle(local, client(), &good[..good.len() - 4]),
            None
        );
        let mut bad_fp = good.clone();
        *bad_fp.last_mut().unwrap() ^= 0xFF;
        assert_eq!(server.handle(local, client(), &bad_fp), None);
        let bad_value = request(
            &[Attribute::Unknown {
                typ: attr_type::CHANGE_REQUEST,
                value: &[0; 3],
            }],
            false,
        );
        assert_eq!(server.handle(local, client(), &bad_value), None);
        assert_eq!(server.stats().malformed, 5);

        let indication = MessageBuilder::new(Class::Indication, Method::BINDING, TID).finish();
        let response = MessageBuilder::new(Class::Success, Method::BINDING, TID).finish();
        let allocate = MessageBuilder::new(Class::Request, Method::ALLOCATE, TID).finish();
        for dgram in [indication, response, allocate] {
            assert_eq!(server.handle(local, client(), &dgram), None);
        }
        assert_eq!(
            server.handle(addr(9, 3478), client(), &good),
            None,
            "not our address"
        );
        let stats = server.stats();
        assert_eq!((stats.received, stats.ignored, stats.answered), (9, 4, 0));
    }

    #[test]
    fn unusable_alternate_is_ignored() {
        for alt in [
            addr(1, 3479),
            addr(2, 3478),
            "[2001:db8::2]:3479".parse().unwrap(),
        ] {
            let server = BindingServer::new(addr(1, 3478), Some(alt), None);
            assert!(!server.is_behavior_capable(), "{alt}");
            assert_eq!(server.local_addresses().len(), 1);
        }
        assert!(rfc5780().is_behavior_capable());
    }
}
