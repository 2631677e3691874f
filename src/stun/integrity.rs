//! Credentials (RFC 8489 §9), HMACs over messages and FINGERPRINT.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::stun::attr::PasswordAlgorithm;
use crate::stun::error::StunError;

/// "STUN" in ASCII; XOR-ed into the CRC so that a FINGERPRINT differs from
/// the CRC-32 an application protocol multiplexed on the port might carry.
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Short-term credential key (RFC 8489 §9.1.1): OpaqueString(password).
///
/// OpaqueString (RFC 8265) preparation is NOT performed: the key is the raw
/// UTF-8 bytes. That is exact for ASCII passwords such as ICE's ice-pwd (RFC
/// 8445 restricts it to ice-chars); callers with non-ASCII passwords must
/// pass them already prepared.
pub fn short_term_key(password: &str) -> Vec<u8> {
    password.as_bytes().to_vec()
}

/// Long-term credential key (RFC 8489 §9.2.2):
/// `H(username ":" OpaqueString(realm) ":" OpaqueString(password))` with H = MD5
/// (16 bytes) or SHA-256 (32 bytes).
///
/// Like [`short_term_key`], no OpaqueString/SASLprep preparation is done: pass
/// prepared strings (RFC 5769's "The\u{AD}M\u{AA}tr\u{2168}" becomes "TheMatrIX").
pub fn long_term_key(
    username: &str,
    realm: &str,
    password: &str,
    alg: PasswordAlgorithm,
) -> Vec<u8> {
    let parts = [username, ":", realm, ":", password];
    match alg {
        PasswordAlgorithm::Md5 => hash_parts::<Md5>(&parts),
        PasswordAlgorithm::Sha256 => hash_parts::<Sha256>(&parts),
    }
}

/// USERHASH value (RFC 8489 §14.4): SHA-256(username ":" realm), with the same
/// caveat about string preparation as [`long_term_key`].
pub fn user_hash(username: &str, realm: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [username, ":", realm] {
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// FINGERPRINT value (RFC 8489 §14.7) over the message bytes that precede
/// the FINGERPRINT attribute; the header length must already count it.
pub fn fingerprint(bytes_before_fingerprint_attr: &[u8]) -> u32 {
    crc32fast::hash(bytes_before_fingerprint_attr) ^ FINGERPRINT_XOR
}

fn hash_parts<D: Digest>(parts: &[&str]) -> Vec<u8> {
    let mut hasher = D::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hasher.finalize().to_vec()
}

/// HMAC over `covered` (header + attributes before the integrity attribute)
/// with the header's length field replaced by `adjusted_len`, as RFC 8489
/// §14.5/§14.6 require: the length must count the integrity attribute itself
/// but nothing after it, whatever the datagram's real length is.
fn mac_over<M: Mac + hmac::digest::KeyInit>(
    key: &[u8],
    covered: &[u8],
    adjusted_len: u16,
) -> Option<M> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).ok()?;
    mac.update(covered.get(..2)?);
    mac.update(&adjusted_len.to_be_bytes());
    mac.update(covered.get(4..)?);
    Some(mac)
}

/// Computes MESSAGE-INTEGRITY (HMAC-SHA1) for the builder.
pub(crate) fn sha1_tag(key: &[u8], covered: &[u8], adjusted_len: u16) -> [u8; 20] {
    // HMAC accepts keys of any length and the builder always has a header,
    // so `mac_over` cannot fail here.
    mac_over::<Hmac<Sha1>>(key, covered, adjusted_len)
        .map(|m| m.finalize().into_bytes().into())
        .unwrap_or([0; 20])
}

/// Computes MESSAGE-INTEGRITY-SHA256 for the builder.
pub(crate) fn sha256_tag(key: &[u8], covered: &[u8], adjusted_len: u16) -> [u8; 32] {
    mac_over::<Hmac<Sha256>>(key, covered, adjusted_len)
        .map(|m| m.finalize().into_bytes().into())
        .unwrap_or([0; 32])
}

/// Constant-time check of a MESSAGE-INTEGRITY value.
pub(crate) fn verify_sha1(
    key: &[u8],
    covered: &[u8],
    adjusted_len: u16,
    tag: &[u8],
) -> Result<(), StunError> {
    mac_over::<Hmac<Sha1>>(key, covered, adjusted_len)
        .ok_or(StunError::IntegrityMismatch)?
        .verify_slice(tag)
        .map_err(|_| StunError::IntegrityMismatch)
}

/// Constant-time check of a (possibly truncated) MESSAGE-INTEGRITY-SHA256 value.
pub(crate) fn verify_sha256(
    key: &[u8],
    covered: &[u8],
    adjusted_len: u16,
    tag: &[u8],
) -> Result<(), StunError> {
    mac_over::<Hmac<Sha256>>(key, covered, adjusted_len)
        .ok_or(StunError::IntegrityMismatch)?
        .verify_truncated_left(tag)
        .map_err(|_| StunError::IntegrityMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_term_md5_key_matches_rfc5769_parameters() {
        let key = long_term_key(
            "マトリックス",
            "example.org",
            "TheMatrIX",
            PasswordAlgorithm::Md5,
        );
        assert_eq!(key.len(), 16);
        let sha = long_term_key(
            "マトリックス",
            "example.org",
            "TheMatrIX",
            PasswordAlgorithm::Sha256,
        );
        assert_eq!(sha.len(), 32);
        assert_ne!(key[..], sha[..16]);
    }

    #[test]
    fn user_hash_is_sha256_of_username_colon_realm() {
        let expected: [u8; 32] = Sha256::digest("user:realm").into();
        assert_eq!(user_hash("user", "realm"), expected);
    }

    #[test]
    fn short_term_key_is_password_bytes() {
        assert_eq!(
            short_term_key("VOkJxbRl1RmTxUk/WvJxBt"),
            b"VOkJxbRl1RmTxUk/WvJxBt"
        );
    }

    #[test]
    fn fingerprint_is_crc32_xor_stun() {
        // CRC-32 of "123456789" is the standard check value 0xCBF43926.
        assert_eq!(fingerprint(b"123456789"), 0xCBF4_3926 ^ 0x5354_554E);
    }

    #[test]
    fn truncated_sha256_tag_verifies_and_too_short_fails() {
        let covered = [0u8; 20];
        let tag = sha256_tag(b"k", &covered, 36);
        assert_eq!(verify_sha256(b"k", &covered, 36, &tag[..16]), Ok(()));
        assert_eq!(verify_sha256(b"k", &covered, 36, &tag), Ok(()));
        assert_eq!(
            verify_sha256(b"x", &covered, 36, &tag),
            Err(StunError::IntegrityMismatch)
        );
    }
}
