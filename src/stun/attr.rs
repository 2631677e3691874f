//! Attribute types and the codec for attribute values (RFC 8489 §14, RFC 8445
//! §16, RFC 8656 §18, RFC 5780 §7).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::stun::error::StunError;
use crate::stun::message::{TransactionId, MAGIC_COOKIE};

/// Attribute type numbers (IANA "STUN Attributes" registry).
pub mod attr_type {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const CHANGE_REQUEST: u16 = 0x0003;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    /// Same as [`USERHASH`]; spelled after the `Attribute::UserHash` variant.
    pub const USER_HASH: u16 = USERHASH;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    pub const SOFTWARE: u16 = 0x8022;
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    pub const OTHER_ADDRESS: u16 = 0x802C;

    /// Whether this implementation decodes `typ` into a typed [`Attribute`](super::Attribute).
    pub fn is_known(typ: u16) -> bool {
        KNOWN.contains(&typ)
    }

    /// RFC 8489 §14: types below 0x8000 must be understood or the message rejected.
    pub fn is_comprehension_required(typ: u16) -> bool {
        typ < 0x8000
    }

    const KNOWN: [u16; 33] = [
        MAPPED_ADDRESS,
        CHANGE_REQUEST,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        MESSAGE_INTEGRITY_SHA256,
        PASSWORD_ALGORITHM,
        USERHASH,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
        PRIORITY,
        USE_CANDIDATE,
        PASSWORD_ALGORITHMS,
        ALTERNATE_DOMAIN,
        SOFTWARE,
        ALTERNATE_SERVER,
        FINGERPRINT,
        ICE_CONTROLLED,
        ICE_CONTROLLING,
        RESPONSE_ORIGIN,
        OTHER_ADDRESS,
    ];
}

use attr_type as t;

/// Long-term credential key derivation algorithms (RFC 8489 §18.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    Md5,
    Sha256,
}

impl PasswordAlgorithm {
    /// The registry number carried on the wire.
    pub fn number(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => 0x0001,
            PasswordAlgorithm::Sha256 => 0x0002,
        }
    }

    pub fn from_number(n: u16) -> Option<Self> {
        match n {
            0x0001 => Some(PasswordAlgorithm::Md5),
            0x0002 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// Address family as carried by REQUESTED-ADDRESS-FAMILY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressFamily {
    V4,
    V6,
}

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

impl AddressFamily {
    fn from_wire(b: u8) -> Result<Self, StunError> {
        match b {
            FAMILY_V4 => Ok(AddressFamily::V4),
            FAMILY_V6 => Ok(AddressFamily::V6),
            other => Err(StunError::BadAddressFamily(other)),
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            AddressFamily::V4 => FAMILY_V4,
            AddressFamily::V6 => FAMILY_V6,
        }
    }
}

/// Typed attributes. Borrowed from the datagram on decode.
///
/// Encoding writes the given values verbatim: `MessageIntegrity`,
/// `MessageIntegritySha256` and `Fingerprint` are copied as they are, not
/// computed; use the dedicated `MessageBuilder` methods to compute them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute<'a> {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    Username(&'a str),
    MessageIntegrity(&'a [u8]),
    MessageIntegritySha256(&'a [u8]),
    Fingerprint(u32),
    ErrorCode {
        code: u16,
        reason: &'a str,
    },
    Realm(&'a str),
    Nonce(&'a str),
    /// Raw list; walk it with [`password_algorithms`].
    PasswordAlgorithms(&'a [u8]),
    PasswordAlgorithm(PasswordAlgorithm),
    UserHash(&'a [u8]),
    /// Raw list of big-endian u16 types; walk it with [`unknown_attribute_types`].
    UnknownAttributes(&'a [u8]),
    Software(&'a str),
    AlternateServer(SocketAddr),
    AlternateDomain(&'a str),
    Priority(u32),
    UseCandidate,
    IceControlled(u64),
    IceControlling(u64),
    ChannelNumber(u16),
    Lifetime(u32),
    XorPeerAddress(SocketAddr),
    Data(&'a [u8]),
    XorRelayedAddress(SocketAddr),
    /// IANA protocol number (17 = UDP).
    RequestedTransport(u8),
    DontFragment,
    ReservationToken(u64),
    /// The R bit: ask for the next-higher port to be reserved too.
    EvenPort(bool),
    RequestedAddressFamily(AddressFamily),
    ChangeRequest {
        change_ip: bool,
        change_port: bool,
    },
    ResponseOrigin(SocketAddr),
    OtherAddress(SocketAddr),
    Unknown {
        typ: u16,
        value: &'a [u8],
    },
}

impl Attribute<'_> {
    /// The attribute type number.
    pub fn typ(&self) -> u16 {
        use Attribute as A;
        match self {
            A::MappedAddress(_) => t::MAPPED_ADDRESS,
            A::XorMappedAddress(_) => t::XOR_MAPPED_ADDRESS,
            A::Username(_) => t::USERNAME,
            A::MessageIntegrity(_) => t::MESSAGE_INTEGRITY,
            A::MessageIntegritySha256(_) => t::MESSAGE_INTEGRITY_SHA256,
            A::Fingerprint(_) => t::FINGERPRINT,
            A::ErrorCode { .. } => t::ERROR_CODE,
            A::Realm(_) => t::REALM,
            A::Nonce(_) => t::NONCE,
            A::PasswordAlgorithms(_) => t::PASSWORD_ALGORITHMS,
            A::PasswordAlgorithm(_) => t::PASSWORD_ALGORITHM,
            A::UserHash(_) => t::USERHASH,
            A::UnknownAttributes(_) => t::UNKNOWN_ATTRIBUTES,
            A::Software(_) => t::SOFTWARE,
            A::AlternateServer(_) => t::ALTERNATE_SERVER,
            A::AlternateDomain(_) => t::ALTERNATE_DOMAIN,
            A::Priority(_) => t::PRIORITY,
            A::UseCandidate => t::USE_CANDIDATE,
            A::IceControlled(_) => t::ICE_CONTROLLED,
            A::IceControlling(_) => t::ICE_CONTROLLING,
            A::ChannelNumber(_) => t::CHANNEL_NUMBER,
            A::Lifetime(_) => t::LIFETIME,
            A::XorPeerAddress(_) => t::XOR_PEER_ADDRESS,
            A::Data(_) => t::DATA,
            A::XorRelayedAddress(_) => t::XOR_RELAYED_ADDRESS,
            A::RequestedTransport(_) => t::REQUESTED_TRANSPORT,
            A::DontFragment => t::DONT_FRAGMENT,
            A::ReservationToken(_) => t::RESERVATION_TOKEN,
            A::EvenPort(_) => t::EVEN_PORT,
            A::RequestedAddressFamily(_) => t::REQUESTED_ADDRESS_FAMILY,
            A::ChangeRequest { .. } => t::CHANGE_REQUEST,
            A::ResponseOrigin(_) => t::RESPONSE_ORIGIN,
            A::OtherAddress(_) => t::OTHER_ADDRESS,
            A::Unknown { typ, .. } => *typ,
        }
    }
}

impl<'a> Attribute<'a> {
    /// Decodes one attribute value. `tid` is needed for the XOR-ed addresses.
    pub(crate) fn decode(typ: u16, v: &'a [u8], tid: &TransactionId) -> Result<Self, StunError> {
        use Attribute as A;
        let xor = Some(tid);
        Ok(match typ {
            t::MAPPED_ADDRESS => A::MappedAddress(decode_address(typ, v, None)?),
            t::XOR_MAPPED_ADDRESS => A::XorMappedAddress(decode_address(typ, v, xor)?),
            t::ALTERNATE_SERVER => A::AlternateServer(decode_address(typ, v, None)?),
            t::XOR_PEER_ADDRESS => A::XorPeerAddress(decode_address(typ, v, xor)?),
            t::XOR_RELAYED_ADDRESS => A::XorRelayedAddress(decode_address(typ, v, xor)?),
            t::RESPONSE_ORIGIN => A::ResponseOrigin(decode_address(typ, v, None)?),
            t::OTHER_ADDRESS => A::OtherAddress(decode_address(typ, v, None)?),
            t::USERNAME => A::Username(text(typ, v)?),
            t::REALM => A::Realm(text(typ, v)?),
            t::NONCE => A::Nonce(text(typ, v)?),
            t::SOFTWARE => A::Software(text(typ, v)?),
            t::ALTERNATE_DOMAIN => A::AlternateDomain(text(typ, v)?),
            t::MESSAGE_INTEGRITY => A::MessageIntegrity(exact::<20>(typ, v)?),
            t::MESSAGE_INTEGRITY_SHA256 => A::MessageIntegritySha256(sha256_tag(v)?),
            t::USERHASH => A::UserHash(exact::<32>(typ, v)?),
            t::FINGERPRINT => A::Fingerprint(be_u32(typ, v)?),
            t::PRIORITY => A::Priority(be_u32(typ, v)?),
            t::LIFETIME => A::Lifetime(be_u32(typ, v)?),
            t::ICE_CONTROLLED => A::IceControlled(be_u64(typ, v)?),
            t::ICE_CONTROLLING => A::IceControlling(be_u64(typ, v)?),
            t::RESERVATION_TOKEN => A::ReservationToken(be_u64(typ, v)?),
            t::USE_CANDIDATE => empty(typ, v, A::UseCandidate)?,
            t::DONT_FRAGMENT => empty(typ, v, A::DontFragment)?,
            t::DATA => A::Data(v),
            _ => Self::decode_structured(typ, v)?,
        })
    }

    /// The attributes whose value has internal structure.
    fn decode_structured(typ: u16, v: &'a [u8]) -> Result<Self, StunError> {
        use Attribute as A;
        Ok(match typ {
            t::ERROR_CODE => decode_error_code(v)?,
            t::UNKNOWN_ATTRIBUTES if v.len() % 2 == 0 => A::UnknownAttributes(v),
            t::UNKNOWN_ATTRIBUTES => return Err(bad_len(typ, v)),
            t::PASSWORD_ALGORITHMS => A::PasswordAlgorithms(check_algorithm_list(v)?),
            t::PASSWORD_ALGORITHM => A::PasswordAlgorithm(decode_password_algorithm(v)?),
            t::CHANNEL_NUMBER => A::ChannelNumber(high_u16(typ, v)?),
            t::REQUESTED_TRANSPORT => A::RequestedTransport(first_of_four(typ, v)?),
            t::REQUESTED_ADDRESS_FAMILY => {
                A::RequestedAddressFamily(AddressFamily::from_wire(first_of_four(typ, v)?)?)
            }
            t::EVEN_PORT => A::EvenPort(exact::<1>(typ, v)?[0] & 0x80 != 0),
            t::CHANGE_REQUEST => {
                let flags = be_u32(typ, v)?;
                A::ChangeRequest {
                    change_ip: flags & 0x4 != 0,
                    change_port: flags & 0x2 != 0,
                }
            }
            typ => A::Unknown { typ, value: v },
        })
    }

    /// Appends the value (no header, no padding) to `out`.
    pub(crate) fn encode_value(&self, tid: &TransactionId, out: &mut Vec<u8>) {
        use Attribute as A;
        match self {
            A::MappedAddress(a)
            | A::AlternateServer(a)
            | A::ResponseOrigin(a)
            | A::OtherAddress(a) => encode_address(*a, None, out),
            A::XorMappedAddress(a) | A::XorPeerAddress(a) | A::XorRelayedAddress(a) => {
                encode_address(*a, Some(tid), out)
            }
            A::Username(s) | A::Realm(s) | A::Nonce(s) | A::Software(s) | A::AlternateDomain(s) => {
                out.extend_from_slice(s.as_bytes())
            }
            A::MessageIntegrity(b)
            | A::MessageIntegritySha256(b)
            | A::PasswordAlgorithms(b)
            | A::UserHash(b)
            | A::UnknownAttributes(b)
            | A::Data(b)
            | A::Unknown { value: b, .. } => out.extend_from_slice(b),
            A::Fingerprint(n) | A::Priority(n) | A::Lifetime(n) => {
                out.extend_from_slice(&n.to_be_bytes())
            }
            A::IceControlled(n) | A::IceControlling(n) | A::ReservationToken(n) => {
                out.extend_from_slice(&n.to_be_bytes())
            }
            A::UseCandidate | A::DontFragment => {}
            A::ErrorCode { code, reason } => encode_error_code(*code, reason, out),
            A::PasswordAlgorithm(alg) => out.extend_from_slice(&password_algorithms_value(&[*alg])),
            A::ChannelNumber(n) => {
                let [hi, lo] = n.to_be_bytes();
                out.extend_from_slice(&[hi, lo, 0, 0]);
            }
            A::RequestedTransport(p) => out.extend_from_slice(&[*p, 0, 0, 0]),
            A::RequestedAddressFamily(f) => out.extend_from_slice(&[f.to_wire(), 0, 0, 0]),
            A::EvenPort(r) => out.push(if *r { 0x80 } else { 0 }),
            A::ChangeRequest {
                change_ip,
                change_port,
            } => {
                let flags = (u32::from(*change_ip) << 2) | (u32::from(*change_port) << 1);
                out.extend_from_slice(&flags.to_be_bytes());
            }
        }
    }
}

/// Class is the hundreds digit, number the rest (RFC 8489 §14.8); codes
/// outside 300..=699 are the caller's bug and are written as-is modulo the
/// field widths rather than panicking.
fn encode_error_code(code: u16, reason: &str, out: &mut Vec<u8>) {
    let class = u8::try_from(code / 100).unwrap_or(0) & 0x07;
    let number = u8::try_from(code % 100).unwrap_or(0);
    out.extend_from_slice(&[0, 0, class, number]);
    out.extend_from_slice(reason.as_bytes());
}

/// Walks a raw PASSWORD-ALGORITHMS value, yielding (algorithm number, parameters).
/// Stops at the first malformed entry (decode has already rejected those).
pub fn password_algorithms(raw: &[u8]) -> PasswordAlgorithms<'_> {
    PasswordAlgorithms { rest: raw }
}

/// Iterator returned by [`password_algorithms`].
#[derive(Clone, Debug)]
pub struct PasswordAlgorithms<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PasswordAlgorithms<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (alg, params, rest) = split_algorithm(self.rest)?;
        self.rest = rest;
        Some((alg, params))
    }
}

/// Builds a PASSWORD-ALGORITHMS value (parameters are empty for MD5 and SHA-256).
pub fn password_algorithms_value(algs: &[PasswordAlgorithm]) -> Vec<u8> {
    algs.iter()
        .flat_map(|a| {
            let [hi, lo] = a.number().to_be_bytes();
            [hi, lo, 0, 0]
        })
        .collect()
}

/// Walks a raw UNKNOWN-ATTRIBUTES value.
pub fn unknown_attribute_types(raw: &[u8]) -> impl Iterator<Item = u16> + '_ {
    raw.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
}

/// Builds an UNKNOWN-ATTRIBUTES value.
pub fn unknown_attributes_value(types: &[u16]) -> Vec<u8> {
    types.iter().flat_map(|t| t.to_be_bytes()).collect()
}

pub(crate) fn padded_len(len: usize) -> usize {
    (len + 3) & !3
}

fn bad_len(typ: u16, v: &[u8]) -> StunError {
    StunError::BadAttributeLength { typ, len: v.len() }
}

fn exact<const N: usize>(typ: u16, v: &[u8]) -> Result<&[u8; N], StunError> {
    v.try_into().map_err(|_| bad_len(typ, v))
}

fn be_u32(typ: u16, v: &[u8]) -> Result<u32, StunError> {
    exact::<4>(typ, v).map(|b| u32::from_be_bytes(*b))
}

fn be_u64(typ: u16, v: &[u8]) -> Result<u64, StunError> {
    exact::<8>(typ, v).map(|b| u64::from_be_bytes(*b))
}

/// Four-byte values whose first two bytes carry a u16 and the rest is RFFU.
fn high_u16(typ: u16, v: &[u8]) -> Result<u16, StunError> {
    exact::<4>(typ, v).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Four-byte values whose first byte carries the data and the rest is RFFU.
fn first_of_four(typ: u16, v: &[u8]) -> Result<u8, StunError> {
    exact::<4>(typ, v).map(|b| b[0])
}

fn empty<'a>(typ: u16, v: &[u8], attr: Attribute<'a>) -> Result<Attribute<'a>, StunError> {
    if v.is_empty() {
        Ok(attr)
    } else {
        Err(bad_len(typ, v))
    }
}

fn text(typ: u16, v: &[u8]) -> Result<&str, StunError> {
    std::str::from_utf8(v).map_err(|_| StunError::InvalidUtf8 { typ })
}

/// RFC 8489 §14.6: at least 16 bytes, at most 32, a multiple of 4.
fn sha256_tag(v: &[u8]) -> Result<&[u8], StunError> {
    if (16..=32).contains(&v.len()) && v.len() % 4 == 0 {
        Ok(v)
    } else {
        Err(bad_len(t::MESSAGE_INTEGRITY_SHA256, v))
    }
}

fn decode_error_code(v: &[u8]) -> Result<Attribute<'_>, StunError> {
    let (head, reason) = v
        .split_first_chunk::<4>()
        .ok_or_else(|| bad_len(t::ERROR_CODE, v))?;
    let class = head[2] & 0x07;
    let number = head[3];
    if !(3..=6).contains(&class) || number > 99 {
        return Err(StunError::BadErrorCode { class, number });
    }
    Ok(Attribute::ErrorCode {
        code: u16::from(class) * 100 + u16::from(number),
        reason: text(t::ERROR_CODE, reason)?,
    })
}

/// Splits one (algorithm, parameters) entry off a list; None if malformed.
fn split_algorithm(v: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let (head, rest) = v.split_first_chunk::<4>()?;
    let alg = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let params = rest.get(..len)?;
    let rest = rest.get(padded_len(len)..)?;
    Some((alg, params, rest))
}

fn check_algorithm_list(v: &[u8]) -> Result<&[u8], StunError> {
    let mut rest = v;
    while !rest.is_empty() {
        let (_, _, tail) =
            split_algorithm(rest).ok_or_else(|| bad_len(t::PASSWORD_ALGORITHMS, v))?;
        rest = tail;
    }
    Ok(v)
}

fn decode_password_algorithm(v: &[u8]) -> Result<PasswordAlgorithm, StunError> {
    let (alg, _, rest) = split_algorithm(v).ok_or_else(|| bad_len(t::PASSWORD_ALGORITHM, v))?;
    if !rest.is_empty() {
        return Err(bad_len(t::PASSWORD_ALGORITHM, v));
    }
    PasswordAlgorithm::from_number(alg).ok_or(StunError::UnknownPasswordAlgorithm(alg))
}

/// The 16 bytes an IPv6 address is XOR-ed with: cookie then transaction id.
fn xor_pad(tid: &TransactionId) -> [u8; 16] {
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(&tid.0);
    pad
}

fn xor_in_place(bytes: &mut [u8], pad: &[u8]) {
    bytes.iter_mut().zip(pad).for_each(|(b, p)| *b ^= p);
}

/// MAPPED-ADDRESS layout (RFC 8489 §14.1); with `xor`, XOR-MAPPED-ADDRESS (§14.2).
fn decode_address(
    typ: u16,
    v: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, StunError> {
    let (head, addr) = v.split_first_chunk::<4>().ok_or_else(|| bad_len(typ, v))?;
    let family = head[1];
    let mut port = u16::from_be_bytes([head[2], head[3]]);
    let pad = xor.map(xor_pad);
    if pad.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        FAMILY_V4 => {
            let mut b = *exact::<4>(typ, addr).map_err(|_| bad_len(typ, v))?;
            if let Some(p) = &pad {
                xor_in_place(&mut b, p);
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        FAMILY_V6 => {
            let mut b = *exact::<16>(typ, addr).map_err(|_| bad_len(typ, v))?;
            if let Some(p) = &pad {
                xor_in_place(&mut b, p);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        other => return Err(StunError::BadAddressFamily(other)),
    };
    Ok(SocketAddr::new(ip, port))
}

fn encode_address(addr: SocketAddr, xor: Option<&TransactionId>, out: &mut Vec<u8>) {
    let pad = xor.map(xor_pad);
    let port_mask = if pad.is_some() {
        (MAGIC_COOKIE >> 16) as u16
    } else {
        0
    };
    let family = match addr.ip() {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    };
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&(addr.port() ^ port_mask).to_be_bytes());
    let start = out.len();
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    if let (Some(pad), Some(written)) = (pad, out.get_mut(start..)) {
        xor_in_place(written, &pad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::message::{Class, Message, MessageBuilder, Method};

    const TID: TransactionId = TransactionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

    fn v4(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 33)), port)
    }

    fn v6(port: u16) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0xdead, 0xbeef, 0, 0xff)),
            port,
        )
    }

    /// Every variant that can sit before the integrity attributes.
    fn all_attributes<'a>(
        addr: &dyn Fn(u16) -> SocketAddr,
        scratch: &'a [Vec<u8>; 2],
    ) -> Vec<Attribute<'a>> {
        use Attribute as A;
        vec![
            A::MappedAddress(addr(1)),
            A::XorMappedAddress(addr(2)),
            A::Username("user:name"),
            A::ErrorCode {
                code: 438,
                reason: "Stale Nonce",
            },
            A::Realm("example.org"),
            A::Nonce("nonce-value"),
            A::PasswordAlgorithms(&scratch[0]),
            A::PasswordAlgorithm(PasswordAlgorithm::Sha256),
            A::PasswordAlgorithm(PasswordAlgorithm::Md5),
            A::UserHash(&[7; 32]),
            A::UnknownAttributes(&scratch[1]),
            A::Software("icephone 0.1"),
            A::AlternateServer(addr(3)),
            A::AlternateDomain("turn.example.org"),
            A::Priority(0x6e00_01ff),
            A::UseCandidate,
            A::IceControlled(u64::MAX),
            A::IceControlling(0x0123_4567_89ab_cdef),
            A::ChannelNumber(0x4001),
            A::Lifetime(600),
            A::XorPeerAddress(addr(4)),
            A::Data(b"hello, peer"),
            A::Data(b""),
            A::XorRelayedAddress(addr(5)),
            A::RequestedTransport(17),
            A::DontFragment,
            A::ReservationToken(0xfeed_face_cafe_beef),
            A::EvenPort(true),
            A::EvenPort(false),
            A::RequestedAddressFamily(AddressFamily::V4),
            A::RequestedAddressFamily(AddressFamily::V6),
            A::ChangeRequest {
                change_ip: true,
                change_port: false,
            },
            A::ChangeRequest {
                change_ip: false,
                change_port: true,
            },
            A::ResponseOrigin(addr(6)),
            A::OtherAddress(addr(65535)),
            A::Unknown {
                typ: 0xC001,
                value: b"opaque",
            },
        ]
    }

    fn round_trip(addr: &dyn Fn(u16) -> SocketAddr) {
        let scratch = [
            password_algorithms_value(&[PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256]),
            unknown_attributes_value(&[0x7F00, 0x0031, 0x0042]),
        ];
        let attrs = all_attributes(addr, &scratch);
        let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, TID);
        for a in &attrs {
            b.add(a);
        }
        b.add(&Attribute::MessageIntegrity(&[0xAA; 20]))
            .add(&Attribute::MessageIntegritySha256(&[0xBB; 32]))
            .add_fingerprint();
        let buf = b.finish();
        let msg = Message::decode(&buf).unwrap();
        let decoded: Vec<Attribute<'_>> = msg.attributes().map(Result::unwrap).collect();
        let (head, tail) = decoded.split_at(attrs.len());
        assert_eq!(head, &attrs[..]);
        let fp = crate::stun::integrity::fingerprint(&buf[..buf.len() - 8]);
        let expected_tail = [
            Attribute::MessageIntegrity(&[0xAA; 20]),
            Attribute::MessageIntegritySha256(&[0xBB; 32]),
            Attribute::Fingerprint(fp),
        ];
        assert_eq!(tail, &expected_tail[..]);
        for (a, d) in attrs.iter().zip(&decoded) {
            assert_eq!(a.typ(), d.typ());
        }
    }

    #[test]
    fn every_variant_round_trips_ipv4() {
        round_trip(&v4);
    }

    #[test]
    fn every_variant_round_trips_ipv6() {
        round_trip(&v6);
    }

    #[test]
    fn xor_address_wire_format() {
        // XOR-MAPPED-ADDRESS of 192.0.2.1:32853 from RFC 5769 §2.2.
        let mut out = Vec::new();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 32853);
        encode_address(addr, Some(&TID), &mut out);
        assert_eq!(out, [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        encode_address(addr, None, &mut out);
        assert_eq!(&out[8..], [0x00, 0x01, 0x80, 0x55, 192, 0, 2, 1]);
    }

    #[test]
    fn list_helpers() {
        let raw = password_algorithms_value(&[PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5]);
        let algs: Vec<_> = password_algorithms(&raw).collect();
        assert_eq!(algs, [(2, &[][..]), (1, &[][..])]);
        // Parameters are padded to four bytes within the list.
        let raw = [0, 9, 0, 1, 0xEE, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(check_algorithm_list(&raw), Ok(&raw[..]));
        let algs: Vec<_> = password_algorithms(&raw).collect();
        assert_eq!(algs, [(9, &[0xEE][..]), (1, &[][..])]);
        assert!(check_algorithm_list(&raw[..6]).is_err());
        let types: Vec<u16> =
            unknown_attribute_types(&unknown_attributes_value(&[1, 0x8000])).collect();
        assert_eq!(types, [1, 0x8000]);
    }

    #[test]
    fn structured_values_reject_bad_lengths() {
        let bad = |typ: u16, v: &[u8]| Attribute::decode(typ, v, &TID).unwrap_err();
        let len_err = |typ: u16, len: usize| StunError::BadAttributeLength { typ, len };
        assert_eq!(bad(t::USE_CANDIDATE, &[0]), len_err(t::USE_CANDIDATE, 1));
        assert_eq!(bad(t::EVEN_PORT, &[0, 0]), len_err(t::EVEN_PORT, 2));
        assert_eq!(
            bad(t::UNKNOWN_ATTRIBUTES, &[0, 1, 2]),
            len_err(t::UNKNOWN_ATTRIBUTES, 3)
        );
        assert_eq!(
            bad(t::MESSAGE_INTEGRITY_SHA256, &[0; 12]),
            len_err(t::MESSAGE_INTEGRITY_SHA256, 12)
        );
        assert_eq!(
            bad(t::MESSAGE_INTEGRITY_SHA256, &[0; 18]),
            len_err(t::MESSAGE_INTEGRITY_SHA256, 18)
        );
        assert_eq!(bad(t::USERHASH, &[0; 31]), len_err(t::USERHASH, 31));
        assert_eq!(bad(t::ERROR_CODE, &[0, 0, 4]), len_err(t::ERROR_CODE, 3));
        assert_eq!(
            bad(t::REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]),
            StunError::BadAddressFamily(3)
        );
        assert_eq!(
            bad(t::PASSWORD_ALGORITHM, &[0, 1, 0, 0, 0, 0]),
            len_err(t::PASSWORD_ALGORITHM, 6)
        );
        assert_eq!(
            bad(t::XOR_RELAYED_ADDRESS, &[0, 1, 0]),
            len_err(t::XOR_RELAYED_ADDRESS, 3)
        );
    }

    #[test]
    fn known_types_table_matches_decoder() {
        for typ in 0..=u16::MAX {
            let unknown = matches!(
                Attribute::decode(typ, &[], &TID),
                Ok(Attribute::Unknown { .. })
            );
            assert_eq!(attr_type::is_known(typ), !unknown, "type {typ:#06x}");
        }
    }
}
