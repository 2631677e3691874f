//! Message header, zero-copy decoding and the message builder (RFC 8489 §5, §6, §14).

use std::net::SocketAddr;

use crate::stun::attr::{attr_type, padded_len, unknown_attributes_value, Attribute};
use crate::stun::error::StunError;
use crate::stun::integrity;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub(crate) const HEADER_LEN: usize = 20;
const ATTR_HEADER_LEN: usize = 4;
const SHA1_TAG_LEN: usize = 20;
const SHA256_TAG_LEN: usize = 32;

/// The 96-bit transaction id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// RFC 8489 §5 wants ids uniformly random so that off-path attackers
    /// cannot forge responses; the caller supplies the randomness source.
    pub fn random<R: rand::RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 12];
        rng.fill_bytes(&mut id);
        TransactionId(id)
    }
}

/// Message class (the C1/C0 bits of the message type).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn type_bits(self) -> u16 {
        match self {
            Class::Request => 0x0000,
            Class::Indication => 0x0010,
            Class::Success => 0x0100,
            Class::Error => 0x0110,
        }
    }

    fn from_type(typ: u16) -> Self {
        match typ & 0x0110 {
            0x0000 => Class::Request,
            0x0010 => Class::Indication,
            0x0100 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// A 12-bit STUN method. Bits above the 12th are dropped when encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Method(pub u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);

    /// The class bits are interleaved with the method bits (RFC 8489 §5,
    /// figure 3) so that the type stays compatible with RFC 3489.
    fn from_type(typ: u16) -> Self {
        Method((typ & 0x000F) | ((typ & 0x00E0) >> 1) | ((typ & 0x3E00) >> 2))
    }

    fn type_bits(self) -> u16 {
        let m = self.0 & 0x0FFF;
        (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2)
    }
}

fn message_type(class: Class, method: Method) -> u16 {
    class.type_bits() | method.type_bits()
}

/// RFC 7983 demultiplexing plus a cheap header check: first byte in 0..=3,
/// at least a header, the magic cookie, a 4-aligned length that matches the
/// datagram. Does not look at attributes.
pub fn is_stun(buf: &[u8]) -> bool {
    check_header(buf).is_ok()
}

fn check_header(buf: &[u8]) -> Result<(), StunError> {
    let header: &[u8; HEADER_LEN] = buf
        .first_chunk()
        .ok_or(StunError::TooShort { len: buf.len() })?;
    if header[0] & 0xC0 != 0 {
        return Err(StunError::NotStun);
    }
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if cookie != MAGIC_COOKIE {
        return Err(StunError::BadMagicCookie(cookie));
    }
    let length = u16::from_be_bytes([header[2], header[3]]);
    if length % 4 != 0 {
        return Err(StunError::UnalignedLength(length));
    }
    let actual = buf.len() - HEADER_LEN;
    if usize::from(length) != actual {
        return Err(StunError::LengthMismatch {
            header: usize::from(length),
            actual,
        });
    }
    Ok(())
}

/// One attribute's framing: where it starts, its type, value and where the next begins.
#[derive(Clone, Copy, Debug)]
struct Tlv<'a> {
    offset: usize,
    typ: u16,
    value: &'a [u8],
    next: usize,
}

fn read_tlv(buf: &[u8], offset: usize) -> Result<Tlv<'_>, StunError> {
    let overrun = |typ| StunError::AttributeOverrun { typ, offset };
    let head: &[u8; ATTR_HEADER_LEN] = buf
        .get(offset..)
        .and_then(|rest| rest.first_chunk())
        .ok_or(overrun(0))?;
    let typ = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let start = offset + ATTR_HEADER_LEN;
    let next = start + padded_len(len);
    if next > buf.len() {
        return Err(overrun(typ));
    }
    let value = buf.get(start..start + len).ok_or(overrun(typ))?;
    Ok(Tlv {
        offset,
        typ,
        value,
        next,
    })
}

/// Zero-copy view of a validated STUN message.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    /// Offset of the MESSAGE-INTEGRITY attribute that counts (the first one,
    /// and only if no MESSAGE-INTEGRITY-SHA256 precedes it).
    integrity: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute that counts.
    integrity_sha256: Option<usize>,
    fingerprint: bool,
}

impl<'a> Message<'a> {
    /// Validates header (top two bits zero, cookie, length multiple of 4 and
    /// == buf.len()-20), the TLV framing of every attribute (length in bounds
    /// incl. padding), that FINGERPRINT if present is last and correct, and
    /// notes where MESSAGE-INTEGRITY(-SHA256) sit. Attributes after
    /// MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256/FINGERPRINT (and
    /// after MESSAGE-INTEGRITY-SHA256 other than FINGERPRINT) are ignored per
    /// RFC 8489 §14.5/§14.6: they stay framed but are never yielded.
    /// Does NOT check integrity (no key yet). No allocation.
    pub fn decode(buf: &'a [u8]) -> Result<Self, StunError> {
        check_header(buf)?;
        let mut msg = Message {
            buf,
            integrity: None,
            integrity_sha256: None,
            fingerprint: false,
        };
        let mut offset = HEADER_LEN;
        let mut fingerprint = None;
        while offset < buf.len() {
            let tlv = read_tlv(buf, offset)?;
            if fingerprint.is_some() {
                return Err(StunError::FingerprintNotLast);
            }
            if tlv.typ == attr_type::FINGERPRINT {
                fingerprint = Some(tlv);
            }
            msg.note_integrity(&tlv);
            offset = tlv.next;
        }
        if let Some(tlv) = fingerprint {
            msg.verify_fingerprint(&tlv)?;
            msg.fingerprint = true;
        }
        Ok(msg)
    }

    fn note_integrity(&mut self, tlv: &Tlv<'a>) {
        match tlv.typ {
            attr_type::MESSAGE_INTEGRITY
                if self.integrity.is_none() && self.integrity_sha256.is_none() =>
            {
                self.integrity = Some(tlv.offset);
            }
            attr_type::MESSAGE_INTEGRITY_SHA256 if self.integrity_sha256.is_none() => {
                self.integrity_sha256 = Some(tlv.offset);
            }
            _ => {}
        }
    }

    fn verify_fingerprint(&self, tlv: &Tlv<'a>) -> Result<(), StunError> {
        let actual = match Attribute::decode(tlv.typ, tlv.value, &self.transaction_id())? {
            Attribute::Fingerprint(v) => v,
            _ => {
                return Err(StunError::BadAttributeLength {
                    typ: tlv.typ,
                    len: tlv.value.len(),
                })
            }
        };
        let expected = integrity::fingerprint(self.buf.get(..tlv.offset).unwrap_or_default());
        if actual == expected {
            Ok(())
        } else {
            Err(StunError::FingerprintMismatch { expected, actual })
        }
    }

    fn message_type(&self) -> u16 {
        u16::from_be_bytes([self.header()[0], self.header()[1]])
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        // decode() proved the header is there.
        self.buf.first_chunk().copied().unwrap_or([0; HEADER_LEN])
    }

    pub fn class(&self) -> Class {
        Class::from_type(self.message_type())
    }

    pub fn method(&self) -> Method {
        Method::from_type(self.message_type())
    }

    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.header()[8..]);
        TransactionId(id)
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Whether the attribute at `offset` is to be processed: RFC 8489 §14.5
    /// and §14.6 make agents ignore what follows the integrity attributes,
    /// except the second integrity attribute and FINGERPRINT.
    fn is_visible(&self, offset: usize, typ: u16) -> bool {
        let first_integrity = match (self.integrity, self.integrity_sha256) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return true,
        };
        offset <= first_integrity
            || typ == attr_type::FINGERPRINT
            || Some(offset) == self.integrity_sha256
    }

    fn raw_attributes(&self) -> RawAttributes<'a> {
        RawAttributes {
            msg: *self,
            offset: HEADER_LEN,
        }
    }

    /// Typed attributes in order (those ignored per the rule on `decode` are
    /// not yielded). A malformed value (bad address family, wrong length...)
    /// yields `Err` without stopping the iteration.
    pub fn attributes(&self) -> impl Iterator<Item = Result<Attribute<'a>, StunError>> + 'a {
        let tid = self.transaction_id();
        self.raw_attributes()
            .map(move |tlv| Attribute::decode(tlv.typ, tlv.value, &tid))
    }

    /// First attribute of that type, decoded.
    pub fn get(&self, typ: u16) -> Option<Result<Attribute<'a>, StunError>> {
        let tlv = self.raw_attributes().find(|tlv| tlv.typ == typ)?;
        Some(Attribute::decode(
            tlv.typ,
            tlv.value,
            &self.transaction_id(),
        ))
    }

    /// Applies `pick` to the first attribute of type `typ` if it decodes.
    fn typed<T>(&self, typ: u16, pick: impl FnOnce(Attribute<'a>) -> Option<T>) -> Option<T> {
        self.get(typ)?.ok().and_then(pick)
    }

    fn address(&self, typ: u16) -> Option<SocketAddr> {
        use Attribute as A;
        self.typed(typ, |a| match a {
            A::MappedAddress(s)
            | A::XorMappedAddress(s)
            | A::AlternateServer(s)
            | A::XorPeerAddress(s)
            | A::XorRelayedAddress(s)
            | A::ResponseOrigin(s)
            | A::OtherAddress(s) => Some(s),
            _ => None,
        })
    }

    fn text(&self, typ: u16) -> Option<&'a str> {
        use Attribute as A;
        self.typed(typ, |a| match a {
            A::Username(s) | A::Realm(s) | A::Nonce(s) | A::Software(s) | A::AlternateDomain(s) => {
                Some(s)
            }
            _ => None,
        })
    }

    pub fn username(&self) -> Option<&'a str> {
        self.text(attr_type::USERNAME)
    }

    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.address(attr_type::XOR_MAPPED_ADDRESS)
    }

    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.address(attr_type::MAPPED_ADDRESS)
    }

    /// XOR-MAPPED-ADDRESS, falling back to MAPPED-ADDRESS for servers that
    /// predate it (RFC 8489 §14.1 keeps MAPPED-ADDRESS for that reason).
    pub fn reflexive_address(&self) -> Option<SocketAddr> {
        self.xor_mapped_address().or_else(|| self.mapped_address())
    }

    pub fn priority(&self) -> Option<u32> {
        self.typed(attr_type::PRIORITY, |a| match a {
            Attribute::Priority(p) => Some(p),
            _ => None,
        })
    }

    pub fn use_candidate(&self) -> bool {
        matches!(
            self.get(attr_type::USE_CANDIDATE),
            Some(Ok(Attribute::UseCandidate))
        )
    }

    pub fn ice_controlling(&self) -> Option<u64> {
        self.typed(attr_type::ICE_CONTROLLING, |a| match a {
            Attribute::IceControlling(v) => Some(v),
            _ => None,
        })
    }

    pub fn ice_controlled(&self) -> Option<u64> {
        self.typed(attr_type::ICE_CONTROLLED, |a| match a {
            Attribute::IceControlled(v) => Some(v),
            _ => None,
        })
    }

    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        self.typed(attr_type::ERROR_CODE, |a| match a {
            Attribute::ErrorCode { code, reason } => Some((code, reason)),
            _ => None,
        })
    }

    pub fn realm(&self) -> Option<&'a str> {
        self.text(attr_type::REALM)
    }

    pub fn nonce(&self) -> Option<&'a str> {
        self.text(attr_type::NONCE)
    }

    pub fn other_address(&self) -> Option<SocketAddr> {
        self.address(attr_type::OTHER_ADDRESS)
    }

    pub fn response_origin(&self) -> Option<SocketAddr> {
        self.address(attr_type::RESPONSE_ORIGIN)
    }

    pub fn xor_relayed_address(&self) -> Option<SocketAddr> {
        self.address(attr_type::XOR_RELAYED_ADDRESS)
    }

    pub fn xor_peer_address(&self) -> Option<SocketAddr> {
        self.address(attr_type::XOR_PEER_ADDRESS)
    }

    pub fn lifetime(&self) -> Option<u32> {
        self.typed(attr_type::LIFETIME, |a| match a {
            Attribute::Lifetime(v) => Some(v),
            _ => None,
        })
    }

    pub fn data(&self) -> Option<&'a [u8]> {
        self.typed(attr_type::DATA, |a| match a {
            Attribute::Data(d) => Some(d),
            _ => None,
        })
    }

    /// (change_ip, change_port)
    pub fn change_request(&self) -> Option<(bool, bool)> {
        self.typed(attr_type::CHANGE_REQUEST, |a| match a {
            Attribute::ChangeRequest {
                change_ip,
                change_port,
            } => Some((change_ip, change_port)),
            _ => None,
        })
    }

    pub fn software(&self) -> Option<&'a str> {
        self.text(attr_type::SOFTWARE)
    }

    /// True when a FINGERPRINT is present (decode already proved it correct).
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint
    }

    pub fn has_message_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    pub fn has_message_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Verify MESSAGE-INTEGRITY (HMAC-SHA1, computed with the length field
    /// adjusted per RFC 8489 §14.5). Constant-time compare.
    pub fn check_integrity(&self, key: &[u8]) -> Result<(), StunError> {
        let offset = self.integrity.ok_or(StunError::MissingIntegrity)?;
        let (covered, tag, adjusted_len) = self.integrity_input(offset)?;
        if tag.len() != SHA1_TAG_LEN {
            return Err(StunError::BadAttributeLength {
                typ: attr_type::MESSAGE_INTEGRITY,
                len: tag.len(),
            });
        }
        integrity::verify_sha1(key, covered, adjusted_len, tag)
    }

    /// Same for MESSAGE-INTEGRITY-SHA256; a value truncated to 16..=32 bytes
    /// (multiple of 4) is accepted as RFC 8489 §14.6 allows.
    pub fn check_integrity_sha256(&self, key: &[u8]) -> Result<(), StunError> {
        let offset = self.integrity_sha256.ok_or(StunError::MissingIntegrity)?;
        let (covered, tag, adjusted_len) = self.integrity_input(offset)?;
        let len_ok = (16..=SHA256_TAG_LEN).contains(&tag.len()) && tag.len() % 4 == 0;
        if !len_ok {
            return Err(StunError::BadAttributeLength {
                typ: attr_type::MESSAGE_INTEGRITY_SHA256,
                len: tag.len(),
            });
        }
        integrity::verify_sha256(key, covered, adjusted_len, tag)
    }

    /// The bytes an integrity attribute at `offset` covers, its value, and
    /// the header length that makes the message end right after it.
    fn integrity_input(&self, offset: usize) -> Result<(&'a [u8], &'a [u8], u16), StunError> {
        let tlv = read_tlv(self.buf, offset)?;
        let covered = self.buf.get(..offset).unwrap_or_default();
        let adjusted =
            u16::try_from(tlv.next - HEADER_LEN).map_err(|_| StunError::BadAttributeLength {
                typ: tlv.typ,
                len: tlv.value.len(),
            })?;
        Ok((covered, tlv.value, adjusted))
    }

    /// Comprehension-required (0x0000-0x7FFF) attribute types this
    /// implementation does not know, in message order, written into `out`;
    /// returns how many were written (at most `out.len()`). No allocation.
    pub fn unknown_comprehension_required(&self, out: &mut [u16]) -> usize {
        let unknown = self
            .raw_attributes()
            .map(|tlv| tlv.typ)
            .filter(|&typ| attr_type::is_comprehension_required(typ) && !attr_type::is_known(typ));
        out.iter_mut()
            .zip(unknown)
            .map(|(slot, typ)| *slot = typ)
            .count()
    }
}

/// Walks the framed attributes, skipping the ignored ones.
#[derive(Clone, Debug)]
struct RawAttributes<'a> {
    msg: Message<'a>,
    offset: usize,
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        while self.offset < self.msg.buf.len() {
            // decode() validated the framing; a failure here just ends the walk.
            let tlv = read_tlv(self.msg.buf, self.offset).ok()?;
            self.offset = tlv.next;
            if self.msg.is_visible(tlv.offset, tlv.typ) {
                return Some(tlv);
            }
        }
        None
    }
}

/// Builds a message into an owned, reusable buffer.
///
/// # Panics
/// Adding an attribute whose value exceeds 65535 bytes, or growing the
/// message past 65535 bytes of attributes, panics: such a message cannot be
/// represented on the wire (and no UDP datagram could carry it), so it can
/// only be a caller bug, never the result of decoding hostile input.
#[derive(Clone, Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    tid: TransactionId,
    padding: u8,
}

impl MessageBuilder {
    pub fn new(class: Class, method: Method, tid: TransactionId) -> Self {
        Self::with_buffer(Vec::with_capacity(128), class, method, tid)
    }

    /// Clears `buf` and reuses its allocation.
    pub fn with_buffer(mut buf: Vec<u8>, class: Class, method: Method, tid: TransactionId) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(class, method).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageBuilder {
            buf,
            tid,
            padding: 0,
        }
    }

    /// Byte used to pad attribute values to a multiple of four.
    ///
    /// RFC 8489 §14 requires zero padding on send, which is the default.
    /// This exists only to reproduce vectors such as RFC 5769's, whose padding
    /// bytes are spaces (0x20, allowed by RFC 5389 which said padding "may be
    /// any value"); the padding is covered by MESSAGE-INTEGRITY and
    /// FINGERPRINT, so those vectors can only be rebuilt byte for byte with it.
    pub fn padding_byte(&mut self, byte: u8) -> &mut Self {
        self.padding = byte;
        self
    }

    /// Encodes any attribute (XOR-addresses XOR-ed with cookie and tid,
    /// padding, IPv4 and IPv6). Values are written verbatim: see [`Attribute`].
    pub fn add(&mut self, attr: &Attribute<'_>) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; ATTR_HEADER_LEN]);
        attr.encode_value(&self.tid, &mut self.buf);
        self.finish_attribute(start, attr.typ())
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `key`).
    pub fn add_message_integrity(&mut self, key: &[u8]) -> &mut Self {
        let adjusted = self.length_with(SHA1_TAG_LEN);
        let tag = integrity::sha1_tag(key, &self.buf, adjusted);
        self.add(&Attribute::MessageIntegrity(&tag))
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 with the full 32-byte HMAC.
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let adjusted = self.length_with(SHA256_TAG_LEN);
        let tag = integrity::sha256_tag(key, &self.buf, adjusted);
        self.add(&Attribute::MessageIntegritySha256(&tag))
    }

    /// Appends FINGERPRINT (CRC-32 ^ 0x5354554e); it must be the last attribute.
    pub fn add_fingerprint(&mut self) -> &mut Self {
        let adjusted = self.length_with(4);
        self.set_length(adjusted);
        let crc = integrity::fingerprint(&self.buf);
        self.add(&Attribute::Fingerprint(crc))
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// The message as built so far (header length always up to date).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn finish_attribute(&mut self, start: usize, typ: u16) -> &mut Self {
        let len = self.buf.len() - start - ATTR_HEADER_LEN;
        let len16 = u16::try_from(len).expect("STUN attribute value longer than 65535 bytes");
        let mut header = [0u8; ATTR_HEADER_LEN];
        header[..2].copy_from_slice(&typ.to_be_bytes());
        header[2..].copy_from_slice(&len16.to_be_bytes());
        self.buf[start..start + ATTR_HEADER_LEN].copy_from_slice(&header);
        self.buf
            .resize(start + ATTR_HEADER_LEN + padded_len(len), self.padding);
        let total = to_length(self.buf.len() - HEADER_LEN);
        self.set_length(total);
        self
    }

    /// Header length once an attribute with a `value_len`-byte value is appended.
    fn length_with(&self, value_len: usize) -> u16 {
        to_length(self.buf.len() - HEADER_LEN + ATTR_HEADER_LEN + value_len)
    }

    fn set_length(&mut self, len: u16) {
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

fn to_length(len: usize) -> u16 {
    u16::try_from(len).expect("STUN message longer than 65535 bytes")
}

/// Build a success/error response skeleton for a request (same method and tid).
pub fn response_builder(req: &Message<'_>, class: Class) -> MessageBuilder {
    MessageBuilder::new(class, req.method(), req.transaction_id())
}

/// Error response with ERROR-CODE (class/number split per RFC 8489 §14.8) and
/// `reason`; for 420 pass the unknown types to get UNKNOWN-ATTRIBUTES.
pub fn error_response(
    req: &Message<'_>,
    code: u16,
    reason: &str,
    unknown: &[u16],
) -> MessageBuilder {
    let mut builder = response_builder(req, Class::Error);
    builder.add(&Attribute::ErrorCode { code, reason });
    if !unknown.is_empty() {
        builder.add(&Attribute::UnknownAttributes(&unknown_attributes_value(
            unknown,
        )));
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::attr::attr_type as t;
    use crate::stun::attr::PasswordAlgorithm;
    use crate::stun::integrity::{long_term_key, short_term_key};
    use rand::{Rng, RngCore, SeedableRng};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    // RFC 5769 §2.1. USERNAME is padded with spaces (0x20).
    const SAMPLE_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    // RFC 5769 §2.2. SOFTWARE is padded with a space.
    const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    // RFC 5769 §2.3.
    const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];

    // RFC 5769 §2.4. Padding here is zeros; no FINGERPRINT.
    const SAMPLE_LONG_TERM_REQUEST: [u8; 116] = [
        0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42, 0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72,
        0xc0, 0x29, 0xda, 0x41, 0x2e, 0x00, 0x06, 0x00, 0x12, 0xe3, 0x83, 0x9e, 0xe3, 0x83, 0x88,
        0xe3, 0x83, 0xaa, 0xe3, 0x83, 0x83, 0xe3, 0x82, 0xaf, 0xe3, 0x82, 0xb9, 0x00, 0x00, 0x00,
        0x15, 0x00, 0x1c, 0x66, 0x2f, 0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36,
        0x4f, 0x4c, 0x33, 0x34, 0x6f, 0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79, 0x36, 0x34, 0x73,
        0x41, 0x00, 0x14, 0x00, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6f, 0x72,
        0x67, 0x00, 0x00, 0x08, 0x00, 0x14, 0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e, 0x02,
        0xb8, 0xe0, 0x71, 0x2e, 0x85, 0xc9, 0xa2, 0x8c, 0xa8, 0x96, 0x66,
    ];

    const SAMPLE_TID: TransactionId = TransactionId([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);
    const SAMPLE_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
    const SAMPLE_USERNAME: &str = "evtj:h6vY";
    const LONG_TERM_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    const LONG_TERM_NONCE: &str = "f//499k954d6OL34oL9FSTvy64sA";

    fn sample_key() -> Vec<u8> {
        short_term_key(SAMPLE_PASSWORD)
    }

    fn build_sample_request(padding: u8) -> Vec<u8> {
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, SAMPLE_TID);
        b.padding_byte(padding)
            .add(&Attribute::Software("STUN test client"))
            .add(&Attribute::Priority(0x6e00_01ff))
            .add(&Attribute::IceControlled(0x932f_f9b1_5126_3b36))
            .add(&Attribute::Username(SAMPLE_USERNAME))
            .add_message_integrity(&sample_key())
            .add_fingerprint();
        b.finish()
    }

    fn build_sample_response(mapped: SocketAddr) -> Vec<u8> {
        let mut b = MessageBuilder::new(Class::Success, Method::BINDING, SAMPLE_TID);
        b.padding_byte(b' ')
            .add(&Attribute::Software("test vector"))
            .add(&Attribute::XorMappedAddress(mapped))
            .add_message_integrity(&sample_key())
            .add_fingerprint();
        b.finish()
    }

    #[test]
    fn rfc5769_sample_request_decodes_and_verifies() {
        let msg = Message::decode(&SAMPLE_REQUEST).unwrap();
        assert_eq!(msg.class(), Class::Request);
        assert_eq!(msg.method(), Method::BINDING);
        assert_eq!(msg.transaction_id(), SAMPLE_TID);
        assert_eq!(msg.software(), Some("STUN test client"));
        assert_eq!(msg.priority(), Some(0x6e00_01ff));
        assert_eq!(msg.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
        assert_eq!(msg.ice_controlling(), None);
        assert_eq!(msg.username(), Some(SAMPLE_USERNAME));
        assert!(msg.has_fingerprint() && msg.has_message_integrity());
        assert_eq!(msg.check_integrity(&sample_key()), Ok(()));
        assert_eq!(
            msg.check_integrity(b"wrong"),
            Err(StunError::IntegrityMismatch)
        );
        assert_eq!(
            msg.check_integrity_sha256(&sample_key()),
            Err(StunError::MissingIntegrity)
        );
        assert!(is_stun(&SAMPLE_REQUEST));
    }

    #[test]
    fn rfc5769_sample_request_reencodes_byte_for_byte() {
        // The vector pads USERNAME with spaces; MESSAGE-INTEGRITY and
        // FINGERPRINT cover the padding, so only the same padding byte can
        // reproduce them.
        assert_eq!(build_sample_request(b' '), SAMPLE_REQUEST);
    }

    #[test]
    fn zero_padded_rebuild_differs_only_where_padding_is_covered() {
        let ours = build_sample_request(0);
        let msg = Message::decode(&ours).unwrap();
        assert_eq!(msg.check_integrity(&sample_key()), Ok(()));
        let differing: Vec<usize> = (0..ours.len())
            .filter(|&i| ours[i] != SAMPLE_REQUEST[i])
            .collect();
        // Three padding bytes after USERNAME, then inside MI and FINGERPRINT values.
        assert_eq!(&differing[..3], &[73, 74, 75]);
        assert!(differing[3..]
            .iter()
            .all(|&i| (80..100).contains(&i) || i >= 104));
    }

    #[test]
    fn rfc5769_ipv4_response() {
        let msg = Message::decode(&SAMPLE_IPV4_RESPONSE).unwrap();
        let mapped = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 32853);
        assert_eq!(msg.class(), Class::Success);
        assert_eq!(msg.software(), Some("test vector"));
        assert_eq!(msg.xor_mapped_address(), Some(mapped));
        assert_eq!(msg.reflexive_address(), Some(mapped));
        assert_eq!(msg.check_integrity(&sample_key()), Ok(()));
        assert_eq!(build_sample_response(mapped), SAMPLE_IPV4_RESPONSE);
    }

    #[test]
    fn rfc5769_ipv6_response() {
        let msg = Message::decode(&SAMPLE_IPV6_RESPONSE).unwrap();
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 0x1234, 0x5678, 0x11, 0x2233, 0x4455, 0x6677);
        let mapped = SocketAddr::new(IpAddr::V6(ip), 32853);
        assert_eq!(msg.xor_mapped_address(), Some(mapped));
        assert_eq!(msg.check_integrity(&sample_key()), Ok(()));
        assert_eq!(build_sample_response(mapped), SAMPLE_IPV6_RESPONSE);
    }

    #[test]
    fn rfc5769_long_term_request() {
        let msg = Message::decode(&SAMPLE_LONG_TERM_REQUEST).unwrap();
        assert_eq!(msg.username(), Some(LONG_TERM_USERNAME));
        assert_eq!(msg.nonce(), Some(LONG_TERM_NONCE));
        assert_eq!(msg.realm(), Some("example.org"));
        assert!(!msg.has_fingerprint());
        // SASLprep("The\u{AD}M\u{AA}tr\u{2168}") = "TheMatrIX" (RFC 5769 §2.4).
        let key = long_term_key(
            LONG_TERM_USERNAME,
            "example.org",
            "TheMatrIX",
            PasswordAlgorithm::Md5,
        );
        assert_eq!(msg.check_integrity(&key), Ok(()));

        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, msg.transaction_id());
        b.add(&Attribute::Username(LONG_TERM_USERNAME))
            .add(&Attribute::Nonce(LONG_TERM_NONCE))
            .add(&Attribute::Realm("example.org"))
            .add_message_integrity(&key);
        assert_eq!(
            b.finish(),
            SAMPLE_LONG_TERM_REQUEST,
            "zero padding, as in the vector"
        );
    }

    #[test]
    fn message_type_bits_round_trip() {
        for method in [0x001, 0x003, 0x009, 0x080, 0xFFF] {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let buf = MessageBuilder::new(class, Method(method), SAMPLE_TID).finish();
                let msg = Message::decode(&buf).unwrap();
                assert_eq!((msg.class(), msg.method()), (class, Method(method)));
            }
        }
        // Binding success is the well-known 0x0101, error 0x0111.
        assert_eq!(message_type(Class::Success, Method::BINDING), 0x0101);
        assert_eq!(message_type(Class::Error, Method::BINDING), 0x0111);
        assert_eq!(message_type(Class::Indication, Method::DATA), 0x0017);
    }

    #[test]
    fn sha256_integrity_round_trip_and_truncation() {
        let key = b"secret";
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, SAMPLE_TID);
        b.add(&Attribute::Username("u"))
            .add_message_integrity(key)
            .add_message_integrity_sha256(key)
            .add_fingerprint();
        let buf = b.finish();
        let msg = Message::decode(&buf).unwrap();
        assert_eq!(msg.check_integrity(key), Ok(()));
        assert_eq!(msg.check_integrity_sha256(key), Ok(()));
        assert_eq!(
            msg.check_integrity_sha256(b"other"),
            Err(StunError::IntegrityMismatch)
        );

        // A 16-byte truncated tag computed over the same prefix also verifies.
        let offset = buf.len() - 8 - 36;
        let adjusted = u16::try_from(offset + 4 + 16 - HEADER_LEN).unwrap();
        let tag = integrity::sha256_tag(key, &buf[..offset], adjusted);
        let mut t = buf[..offset].to_vec();
        t.extend_from_slice(&[0x00, 0x1C, 0x00, 0x10]);
        t.extend_from_slice(&tag[..16]);
        t[2..4].copy_from_slice(&adjusted.to_be_bytes());
        let msg = Message::decode(&t).unwrap();
        assert_eq!(msg.check_integrity_sha256(key), Ok(()));
    }

    #[test]
    fn error_response_carries_code_and_unknown_attributes() {
        let req = Message::decode(&SAMPLE_REQUEST).unwrap();
        let buf =
            error_response(&req, 420, "Unknown Attribute", &[0x7F01, 0x0003, 0x0027]).finish();
        let msg = Message::decode(&buf).unwrap();
        assert_eq!(msg.class(), Class::Error);
        assert_eq!(msg.method(), Method::BINDING);
        assert_eq!(msg.transaction_id(), SAMPLE_TID);
        assert_eq!(msg.error_code(), Some((420, "Unknown Attribute")));
        let Some(Ok(Attribute::UnknownAttributes(raw))) = msg.get(t::UNKNOWN_ATTRIBUTES) else {
            panic!("no UNKNOWN-ATTRIBUTES");
        };
        let types: Vec<u16> = crate::stun::attr::unknown_attribute_types(raw).collect();
        assert_eq!(types, [0x7F01, 0x0003, 0x0027]);
        // Odd count: 6 bytes padded to 8.
        assert_eq!(buf.len() % 4, 0);
    }

    #[test]
    fn builder_reuses_buffer() {
        let first = build_sample_request(0);
        let capacity = first.capacity();
        let again = MessageBuilder::with_buffer(first, Class::Indication, Method::SEND, SAMPLE_TID);
        assert_eq!(again.as_bytes().len(), HEADER_LEN);
        assert_eq!(again.transaction_id(), SAMPLE_TID);
        let buf = again.finish();
        assert_eq!(buf.capacity(), capacity);
        assert_eq!(Message::decode(&buf).unwrap().class(), Class::Indication);
    }

    #[test]
    fn transaction_id_random_uses_rng() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = TransactionId::random(&mut rng);
        let b = TransactionId::random(&mut rng);
        assert_ne!(a, b);
        let dyn_rng: &mut dyn RngCore = &mut rng;
        let _ = TransactionId::random(dyn_rng);
    }

    // ---- hostile input -------------------------------------------------

    fn with_length(mut buf: Vec<u8>, len: u16) -> Vec<u8> {
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        buf
    }

    fn header_only() -> Vec<u8> {
        MessageBuilder::new(Class::Request, Method::BINDING, SAMPLE_TID).finish()
    }

    #[test]
    fn empty_and_short_buffers() {
        assert_eq!(
            Message::decode(&[]).unwrap_err(),
            StunError::TooShort { len: 0 }
        );
        assert_eq!(
            Message::decode(&[0; 19]).unwrap_err(),
            StunError::TooShort { len: 19 }
        );
        assert!(!is_stun(&[]));
    }

    #[test]
    fn truncation_at_every_length_is_rejected() {
        for vector in [
            &SAMPLE_REQUEST[..],
            &SAMPLE_IPV4_RESPONSE,
            &SAMPLE_IPV6_RESPONSE,
            &SAMPLE_LONG_TERM_REQUEST,
        ] {
            let announced = vector.len() - HEADER_LEN;
            for n in 0..vector.len() {
                let expected = if n < HEADER_LEN {
                    StunError::TooShort { len: n }
                } else {
                    StunError::LengthMismatch {
                        header: announced,
                        actual: n - HEADER_LEN,
                    }
                };
                assert_eq!(
                    Message::decode(&vector[..n]).unwrap_err(),
                    expected,
                    "n = {n}"
                );
                assert!(!is_stun(&vector[..n]));
            }
        }
    }

    #[test]
    fn header_defects() {
        let mut buf = header_only();
        buf[4] ^= 0xFF;
        assert_eq!(
            Message::decode(&buf).unwrap_err(),
            StunError::BadMagicCookie(0xDE12_A442)
        );
        let mut buf = header_only();
        buf[0] |= 0x40;
        assert_eq!(Message::decode(&buf).unwrap_err(), StunError::NotStun);
        let mut buf = header_only();
        buf.extend_from_slice(&[0; 2]);
        let buf = with_length(buf, 2);
        assert_eq!(
            Message::decode(&buf).unwrap_err(),
            StunError::UnalignedLength(2)
        );
        let buf = with_length(header_only(), 0xFFFF);
        assert_eq!(
            Message::decode(&buf).unwrap_err(),
            StunError::UnalignedLength(0xFFFF)
        );
        let buf = with_length(header_only(), 0xFFFC);
        let expected = StunError::LengthMismatch {
            header: 0xFFFC,
            actual: 0,
        };
        assert_eq!(Message::decode(&buf).unwrap_err(), expected);
        // Trailing bytes beyond the announced length are not STUN either.
        let mut buf = build_sample_request(0);
        buf.extend_from_slice(&[0; 4]);
        assert!(matches!(
            Message::decode(&buf),
            Err(StunError::LengthMismatch { .. })
        ));
    }

    fn with_attribute(typ: u16, declared_len: u16, value: &[u8]) -> Vec<u8> {
        let mut buf = header_only();
        buf.extend_from_slice(&typ.to_be_bytes());
        buf.extend_from_slice(&declared_len.to_be_bytes());
        buf.extend_from_slice(value);
        let len = u16::try_from(buf.len() - HEADER_LEN).unwrap();
        with_length(buf, len)
    }

    #[test]
    fn attribute_overrunning_the_message() {
        let buf = with_attribute(t::USERNAME, 8, &[b'a'; 4]);
        let expected = StunError::AttributeOverrun {
            typ: t::USERNAME,
            offset: 20,
        };
        assert_eq!(Message::decode(&buf).unwrap_err(), expected);
        let buf = with_attribute(t::DATA, 0xFFFF, &[0; 8]);
        let expected = StunError::AttributeOverrun {
            typ: t::DATA,
            offset: 20,
        };
        assert_eq!(Message::decode(&buf).unwrap_err(), expected);
        // Value fits but its padding does not.
        let buf = with_attribute(t::SOFTWARE, 5, &[b'a'; 4]);
        assert!(matches!(
            Message::decode(&buf),
            Err(StunError::AttributeOverrun { .. })
        ));
    }

    #[test]
    fn fingerprint_defects() {
        let mut buf = build_sample_request(0);
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert!(matches!(
            Message::decode(&buf),
            Err(StunError::FingerprintMismatch { .. })
        ));

        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, SAMPLE_TID);
        b.add_fingerprint().add(&Attribute::Priority(1));
        assert_eq!(
            Message::decode(&b.finish()).unwrap_err(),
            StunError::FingerprintNotLast
        );

        let buf = with_attribute(t::FINGERPRINT, 8, &[0; 8]);
        let expected = StunError::BadAttributeLength {
            typ: t::FINGERPRINT,
            len: 8,
        };
        assert_eq!(Message::decode(&buf).unwrap_err(), expected);
    }

    #[test]
    fn integrity_defects() {
        let mut tampered = SAMPLE_LONG_TERM_REQUEST;
        tampered[50] ^= 0x01; // inside NONCE
        let msg = Message::decode(&tampered).unwrap();
        let key = long_term_key(
            LONG_TERM_USERNAME,
            "example.org",
            "TheMatrIX",
            PasswordAlgorithm::Md5,
        );
        assert_eq!(msg.check_integrity(&key), Err(StunError::IntegrityMismatch));

        let msg = Message::decode(&SAMPLE_LONG_TERM_REQUEST).unwrap();
        let sha_key = long_term_key(
            LONG_TERM_USERNAME,
            "example.org",
            "TheMatrIX",
            PasswordAlgorithm::Sha256,
        );
        assert_eq!(
            msg.check_integrity(&sha_key),
            Err(StunError::IntegrityMismatch)
        );

        let plain = header_only();
        let msg = Message::decode(&plain).unwrap();
        assert_eq!(msg.check_integrity(b"k"), Err(StunError::MissingIntegrity));

        // MESSAGE-INTEGRITY with a 16-byte value.
        let buf = with_attribute(t::MESSAGE_INTEGRITY, 16, &[0; 16]);
        let msg = Message::decode(&buf).unwrap();
        let expected = StunError::BadAttributeLength {
            typ: t::MESSAGE_INTEGRITY,
            len: 16,
        };
        assert_eq!(msg.check_integrity(b"k"), Err(expected));
        assert_eq!(msg.attributes().next(), Some(Err(expected)));
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let key = b"k";
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, SAMPLE_TID);
        b.add(&Attribute::Username("alice"))
            .add_message_integrity(key)
            .add(&Attribute::Software("injected"))
            .add(&Attribute::Unknown {
                typ: 0x7F00,
                value: b"x",
            })
            .add(&Attribute::Priority(99))
            .add_fingerprint();
        let buf = b.finish();
        let msg = Message::decode(&buf).unwrap();
        let types: Vec<u16> = msg.attributes().map(|a| a.unwrap().typ()).collect();
        assert_eq!(types, [t::USERNAME, t::MESSAGE_INTEGRITY, t::FINGERPRINT]);
        assert_eq!(msg.software(), None);
        assert_eq!(msg.priority(), None);
        assert_eq!(msg.unknown_comprehension_required(&mut [0; 4]), 0);
        // The MI covers only what precedes it, so it still verifies.
        assert_eq!(msg.check_integrity(key), Ok(()));
        // A second MESSAGE-INTEGRITY after the first does not count either.
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, SAMPLE_TID);
        b.add_message_integrity(key).add_message_integrity(b"other");
        let buf = b.finish();
        let msg = Message::decode(&buf).unwrap();
        assert_eq!(msg.attributes().count(), 1);
        assert_eq!(msg.check_integrity(key), Ok(()));
    }

    #[test]
    fn malformed_attribute_values_yield_specific_errors() {
        let tid = SAMPLE_TID;
        let cases: [(u16, &[u8], StunError); 9] = [
            (
                t::XOR_MAPPED_ADDRESS,
                &[0, 3, 0, 1, 1, 2, 3, 4],
                StunError::BadAddressFamily(3),
            ),
            (
                t::MAPPED_ADDRESS,
                &[0, 0, 0, 1, 1, 2, 3, 4],
                StunError::BadAddressFamily(0),
            ),
            (
                t::MAPPED_ADDRESS,
                &[0, 1, 0, 1],
                StunError::BadAttributeLength {
                    typ: t::MAPPED_ADDRESS,
                    len: 4,
                },
            ),
            (
                t::XOR_PEER_ADDRESS,
                &[0, 2, 0, 1, 1, 2, 3, 4],
                StunError::BadAttributeLength {
                    typ: t::XOR_PEER_ADDRESS,
                    len: 8,
                },
            ),
            (
                t::USERNAME,
                &[0xff, 0xfe],
                StunError::InvalidUtf8 { typ: t::USERNAME },
            ),
            (
                t::ERROR_CODE,
                &[0, 0, 7, 0],
                StunError::BadErrorCode {
                    class: 7,
                    number: 0,
                },
            ),
            (
                t::ERROR_CODE,
                &[0, 0, 4, 100],
                StunError::BadErrorCode {
                    class: 4,
                    number: 100,
                },
            ),
            (
                t::PRIORITY,
                &[0, 0, 1],
                StunError::BadAttributeLength {
                    typ: t::PRIORITY,
                    len: 3,
                },
            ),
            (
                t::PASSWORD_ALGORITHM,
                &[0, 9, 0, 0],
                StunError::UnknownPasswordAlgorithm(9),
            ),
        ];
        for (typ, value, expected) in cases {
            let len = u16::try_from(value.len()).unwrap();
            let buf = with_attribute(typ, len, &pad(value));
            let msg = Message::decode(&buf).unwrap();
            assert_eq!(msg.get(typ), Some(Err(expected)), "type {typ:#06x}");
            assert_eq!(msg.attributes().next(), Some(Err(expected)));
            assert_eq!(Attribute::decode(typ, value, &tid), Err(expected));
        }
        let buf = with_attribute(t::XOR_MAPPED_ADDRESS, 8, &[0, 3, 0, 1, 1, 2, 3, 4]);
        assert_eq!(Message::decode(&buf).unwrap().xor_mapped_address(), None);
    }

    fn pad(value: &[u8]) -> Vec<u8> {
        let mut v = value.to_vec();
        v.resize(padded_len(v.len()), 0);
        v
    }

    #[test]
    fn unknown_comprehension_required_lists_types_and_respects_out_len() {
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, SAMPLE_TID);
        for typ in [0x7F01, 0x8F01, 0x0027, t::CHANGE_REQUEST, 0x0026] {
            b.add(&Attribute::Unknown { typ, value: &[] });
        }
        let buf = b.finish();
        let msg = Message::decode(&buf).unwrap();
        let mut out = [0u16; 8];
        let n = msg.unknown_comprehension_required(&mut out);
        assert_eq!(&out[..n], &[0x7F01, 0x0027, 0x0026]);
        let mut small = [0u16; 2];
        assert_eq!(msg.unknown_comprehension_required(&mut small), 2);
        assert_eq!(small, [0x7F01, 0x0027]);
    }

    /// Decodes and exercises everything reachable from a datagram; must never
    /// panic. Returns whether it decoded.
    fn exercise(buf: &[u8]) -> bool {
        let _ = is_stun(buf);
        let Ok(msg) = Message::decode(buf) else {
            return false;
        };
        assert!(is_stun(buf));
        let attrs: Vec<_> = msg.attributes().collect();
        let _ = (
            msg.username(),
            msg.reflexive_address(),
            msg.error_code(),
            msg.change_request(),
        );
        let _ = (
            msg.check_integrity(b"key"),
            msg.check_integrity_sha256(b"key"),
        );
        let _ = msg.unknown_comprehension_required(&mut [0; 4]);
        let mut b = MessageBuilder::new(msg.class(), msg.method(), msg.transaction_id());
        for attr in attrs.iter().flatten() {
            if !matches!(attr, Attribute::Fingerprint(_)) {
                b.add(attr);
            }
        }
        if msg.has_fingerprint() {
            b.add_fingerprint();
        }
        let rebuilt = b.finish();
        let again = Message::decode(&rebuilt).expect("re-encoded message must decode");
        assert_eq!(
            again.attributes().filter(Result::is_ok).count(),
            attrs.iter().flatten().count()
        );
        true
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
        let seeds = [
            &SAMPLE_REQUEST[..],
            &SAMPLE_IPV4_RESPONSE,
            &SAMPLE_IPV6_RESPONSE,
            &SAMPLE_LONG_TERM_REQUEST,
        ];
        let mut decoded = 0;
        for i in 0..20_000 {
            let buf = match i % 3 {
                0 => random_datagram(&mut rng),
                1 => plausible_datagram(&mut rng),
                _ => mutated(&mut rng, seeds[i % seeds.len()]),
            };
            decoded += usize::from(exercise(&buf));
        }
        // The loop is only worth its time if it reaches past the header checks.
        assert!(decoded > 2_000, "only {decoded} inputs decoded");
    }

    fn random_datagram(rng: &mut impl Rng) -> Vec<u8> {
        let mut buf = vec![0u8; rng.random_range(0..128)];
        rng.fill_bytes(&mut buf);
        buf
    }

    /// A valid header over random TLVs, so decoding gets past the header.
    fn plausible_datagram(rng: &mut impl Rng) -> Vec<u8> {
        let mut buf = header_only();
        for _ in 0..rng.random_range(0..6) {
            let known = [
                t::XOR_MAPPED_ADDRESS,
                t::ERROR_CODE,
                t::USERNAME,
                t::MESSAGE_INTEGRITY,
                t::FINGERPRINT,
            ];
            let typ = if rng.random_bool(0.5) {
                known[rng.random_range(0..known.len())]
            } else {
                rng.random()
            };
            let len: u16 = rng.random_range(0..40);
            buf.extend_from_slice(&typ.to_be_bytes());
            buf.extend_from_slice(&len.to_be_bytes());
            let mut value = vec![0u8; padded_len(usize::from(len))];
            rng.fill_bytes(&mut value);
            buf.extend_from_slice(&value);
        }
        let len = u16::try_from(buf.len() - HEADER_LEN).unwrap();
        with_length(buf, len)
    }

    fn mutated(rng: &mut impl Rng, seed: &[u8]) -> Vec<u8> {
        let mut buf = seed.to_vec();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..buf.len());
            buf[i] ^= 1 << rng.random_range(0..8);
        }
        buf
    }
}
