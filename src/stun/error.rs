//! The single error type of the STUN codec.

/// Why a datagram or attribute was rejected.
///
/// Every variant is produced by a specific, tested malformation so that callers
/// (and logs) can tell an attack or a buggy peer from a credential problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Fewer bytes than the fixed 20-byte header.
    #[error("datagram of {len} bytes is shorter than the 20-byte STUN header")]
    TooShort { len: usize },
    /// The two most significant bits of the message type are not zero, so
    /// this is some other protocol sharing the port (RFC 7983).
    #[error("the two leading bits are not zero: not a STUN message")]
    NotStun,
    /// The magic cookie is missing: not STUN, or a pre-RFC 5389 (RFC 3489) peer.
    #[error("magic cookie is {0:#010x}, expected 0x2112a442")]
    BadMagicCookie(u32),
    /// The header length field is not a multiple of four.
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The header length field disagrees with the datagram size.
    #[error("header announces {header} bytes of attributes but {actual} follow it")]
    LengthMismatch { header: usize, actual: usize },
    /// An attribute's value (with its padding) runs past the end of the message.
    #[error("attribute {typ:#06x} at offset {offset} runs past the end of the message")]
    AttributeOverrun { typ: u16, offset: usize },
    /// Something follows the FINGERPRINT attribute.
    #[error("FINGERPRINT is not the last attribute")]
    FingerprintNotLast,
    /// The FINGERPRINT value does not match the CRC of the message.
    #[error("FINGERPRINT is {actual:#010x}, expected {expected:#010x}")]
    FingerprintMismatch { expected: u32, actual: u32 },
    /// An attribute value has a length its type does not allow.
    #[error("attribute {typ:#06x} has invalid length {len}")]
    BadAttributeLength { typ: u16, len: usize },
    /// An address attribute (or REQUESTED-ADDRESS-FAMILY) names a family other
    /// than IPv4 (0x01) or IPv6 (0x02).
    #[error("unknown address family {0:#04x}")]
    BadAddressFamily(u8),
    /// A textual attribute is not valid UTF-8.
    #[error("attribute {typ:#06x} is not valid UTF-8")]
    InvalidUtf8 { typ: u16 },
    /// ERROR-CODE class outside 3..=6 or number outside 0..=99.
    #[error("invalid ERROR-CODE class {class} number {number}")]
    BadErrorCode { class: u8, number: u8 },
    /// PASSWORD-ALGORITHM names an algorithm this implementation lacks.
    #[error("unknown password algorithm {0:#06x}")]
    UnknownPasswordAlgorithm(u16),
    /// The integrity attribute being checked is absent.
    #[error("message carries no integrity attribute of the requested kind")]
    MissingIntegrity,
    /// The HMAC does not match: wrong key or tampered message.
    #[error("message integrity check failed")]
    IntegrityMismatch,
}
