//! Long-term credentials for the TURN server (RFC 8489 §9.2): the per-user
//! keys, derived once, and stateless nonces.
//!
//! A nonce is `[cookie+features] stamp tag`: the optional "obMatJos2" cookie
//! with the security feature set, the issue time in seconds since the
//! server's first packet (16 hex digits), and a truncated HMAC-SHA256, keyed
//! with a random secret, over everything before it plus the client's address.
//! Checking one needs no table, so the memory a flood of 401s can cost is
//! zero, and a nonce handed to one client address is useless from another.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::stun::{
    attr_type, long_term_key, password_algorithms_value, Attribute, Message, MessageBuilder,
    PasswordAlgorithm,
};

/// RFC 8489 §9.2: a NONCE starting with this carries a security feature set.
const NONCE_COOKIE: &str = "obMatJos2";
/// The 24-bit feature set, base64: bit 0 (the most significant, "Password
/// algorithms") set, every other bit clear.
const FEATURES_PASSWORD_ALGORITHMS: &str = "gAAA";
const STAMP_HEX: usize = 16;
/// 96 bits of HMAC make forging a nonce for someone else's address hopeless.
const TAG_LEN: usize = 12;

/// The two long-term keys of one user; the password itself is not kept.
pub(super) struct UserKeys {
    md5: Vec<u8>,
    sha256: Vec<u8>,
}

/// Which MAC the request used; the response is signed the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MacKind {
    Sha1,
    Sha256,
}

/// A request that passed the long-term credential checks.
pub(super) struct Authenticated {
    pub user: String,
    key: Vec<u8>,
    mac: MacKind,
}

impl Authenticated {
    /// Appends the integrity attribute the request used, keyed the same way.
    pub fn sign(&self, builder: &mut MessageBuilder) {
        match self.mac {
            MacKind::Sha1 => builder.add_message_integrity(&self.key),
            MacKind::Sha256 => builder.add_message_integrity_sha256(&self.key),
        };
    }
}

/// Why a request was not authenticated; each maps to one error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AuthReject {
    /// No integrity attribute: 401 with REALM and NONCE, not a failure.
    Challenge,
    /// Missing USERNAME, REALM or NONCE, or a PASSWORD-ALGORITHM(S) mismatch: 400.
    BadRequest,
    /// Unknown user or wrong MAC: 401, counted as an auth failure.
    Unauthorized,
    /// Expired nonce, or one this server did not mint for this address: 438.
    StaleNonce,
}

enum NonceState {
    Fresh { password_algorithms: bool },
    Expired { password_algorithms: bool },
    Foreign,
}

/// Users, realm and nonce secret.
pub(super) struct LongTermAuth {
    realm: String,
    users: HashMap<String, UserKeys>,
    secret: [u8; 32],
    /// The server's own time origin for nonce stamps (there is no wall clock).
    epoch: Option<Instant>,
    nonce_lifetime: Duration,
    offer_sha256: bool,
    /// PASSWORD-ALGORITHMS as sent; an echo must match byte for byte.
    offered_algorithms: Vec<u8>,
}

impl LongTermAuth {
    pub fn new(
        realm: String,
        users: HashMap<String, String>,
        nonce_lifetime: Duration,
        offer_sha256: bool,
        rng: &mut dyn RngCore,
    ) -> Self {
        let users = users
            .into_iter()
            .map(|(name, password)| {
                let keys = UserKeys {
                    md5: long_term_key(&name, &realm, &password, PasswordAlgorithm::Md5),
                    sha256: long_term_key(&name, &realm, &password, PasswordAlgorithm::Sha256),
                };
                (name, keys)
            })
            .collect();
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        // SHA-256 first: clients take the first algorithm they support.
        let offered_algorithms =
            password_algorithms_value(&[PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5]);
        LongTermAuth {
            realm,
            users,
            secret,
            epoch: None,
            nonce_lifetime,
            offer_sha256,
            offered_algorithms,
        }
    }

    /// Adds REALM, a fresh NONCE and (when SHA-256 is offered)
    /// PASSWORD-ALGORITHMS: the body of every 401 and 438.
    pub fn add_challenge(
        &mut self,
        builder: &mut MessageBuilder,
        now: Instant,
        client: SocketAddr,
    ) {
        let nonce = self.mint(now, client);
        builder
            .add(&Attribute::Realm(&self.realm))
            .add(&Attribute::Nonce(&nonce));
        if self.offer_sha256 {
            builder.add(&Attribute::PasswordAlgorithms(&self.offered_algorithms));
        }
    }

    /// RFC 8489 §9.2.4, in its order: integrity present, attributes present,
    /// PASSWORD-ALGORITHM(S) consistent, user known, MAC right, nonce fresh.
    /// A nonce that is not ours at all is refused up front (438), since its
    /// feature bits cannot be trusted.
    pub fn authenticate(
        &mut self,
        now: Instant,
        client: SocketAddr,
        req: &Message<'_>,
    ) -> Result<Authenticated, AuthReject> {
        let sha256_mac = req.has_message_integrity_sha256();
        if !sha256_mac && !req.has_message_integrity() {
            return Err(AuthReject::Challenge);
        }
        let (Some(user), Some(_realm), Some(nonce)) = (req.username(), req.realm(), req.nonce())
        else {
            return Err(AuthReject::BadRequest);
        };
        let (fresh, password_algorithms) = match self.check_nonce(now, client, nonce) {
            NonceState::Fresh {
                password_algorithms,
            } => (true, password_algorithms),
            NonceState::Expired {
                password_algorithms,
            } => (false, password_algorithms),
            NonceState::Foreign => return Err(AuthReject::StaleNonce),
        };
        let algorithm = if password_algorithms {
            self.chosen_algorithm(req)?
        } else {
            PasswordAlgorithm::Md5
        };
        // The realm needs no comparison: the key is derived with ours, so a
        // client that used another cannot produce a matching MAC.
        let keys = self.users.get(user).ok_or(AuthReject::Unauthorized)?;
        let key = match algorithm {
            PasswordAlgorithm::Md5 => &keys.md5,
            PasswordAlgorithm::Sha256 => &keys.sha256,
        };
        let checked = if sha256_mac {
            req.check_integrity_sha256(key)
        } else {
            req.check_integrity(key)
        };
        checked.map_err(|_| AuthReject::Unauthorized)?;
        if !fresh {
            return Err(AuthReject::StaleNonce);
        }
        Ok(Authenticated {
            user: user.to_owned(),
            key: key.clone(),
            mac: if sha256_mac {
                MacKind::Sha256
            } else {
                MacKind::Sha1
            },
        })
    }

    /// RFC 8489 §9.2.4 when the nonce has the "Password algorithms" bit:
    /// neither attribute means MD5; otherwise both must be present, the list
    /// must be exactly what we sent (so nobody on path stripped SHA-256) and
    /// the choice must be in it.
    fn chosen_algorithm(&self, req: &Message<'_>) -> Result<PasswordAlgorithm, AuthReject> {
        let list = match req.get(attr_type::PASSWORD_ALGORITHMS) {
            Some(Ok(Attribute::PasswordAlgorithms(raw))) => Some(raw),
            Some(_) => return Err(AuthReject::BadRequest),
            None => None,
        };
        let choice = match req.get(attr_type::PASSWORD_ALGORITHM) {
            Some(Ok(Attribute::PasswordAlgorithm(alg))) => Some(alg),
            Some(_) => return Err(AuthReject::BadRequest),
            None => None,
        };
        match (list, choice) {
            (None, None) => Ok(PasswordAlgorithm::Md5),
            (Some(list), Some(choice)) if list == self.offered_algorithms.as_slice() => Ok(choice),
            _ => Err(AuthReject::BadRequest),
        }
    }

    fn seconds(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs()
    }

    fn tag(&self, prefix: &str, stamp: &str, client: SocketAddr) -> Hmac<Sha256> {
        // HMAC takes keys of any length; the fallback key is never used.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        mac.update(prefix.as_bytes());
        mac.update(stamp.as_bytes());
        match client.ip() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        mac
    }

    fn prefix(&self) -> &'static str {
        if self.offer_sha256 {
            // The cookie and feature set are one literal so the prefix is static.
            "obMatJos2gAAA"
        } else {
            ""
        }
    }

    fn mint(&mut self, now: Instant, client: SocketAddr) -> String {
        let stamp = format!("{:0width$x}", self.seconds(now), width = STAMP_HEX);
        let prefix = self.prefix();
        let tag = self.tag(prefix, &stamp, client).finalize().into_bytes();
        let mut nonce = String::with_capacity(prefix.len() + STAMP_HEX + 2 * TAG_LEN);
        nonce.push_str(prefix);
        nonce.push_str(&stamp);
        for byte in tag.iter().take(TAG_LEN) {
            nonce.push(hex_digit(byte >> 4));
            nonce.push(hex_digit(byte & 0x0F));
        }
        nonce
    }

    fn check_nonce(&mut self, now: Instant, client: SocketAddr, nonce: &str) -> NonceState {
        let (password_algorithms, prefix, rest) = match nonce.strip_prefix(NONCE_COOKIE) {
            Some(after_cookie) => match after_cookie.strip_prefix(FEATURES_PASSWORD_ALGORITHMS) {
                Some(rest) => (true, self.prefix(), rest),
                None => return NonceState::Foreign,
            },
            None => (false, "", nonce),
        };
        // A nonce minted under the other setting is not ours.
        if password_algorithms != self.offer_sha256
            || !rest.is_ascii()
            || rest.len() != STAMP_HEX + 2 * TAG_LEN
        {
            return NonceState::Foreign;
        }
        let (stamp, tag_hex) = rest.split_at(STAMP_HEX);
        let (Some(issued), Some(tag)) = (parse_hex_u64(stamp), parse_hex_tag(tag_hex)) else {
            return NonceState::Foreign;
        };
        if self
            .tag(prefix, stamp, client)
            .verify_truncated_left(&tag)
            .is_err()
        {
            return NonceState::Foreign;
        }
        let now_secs = self.seconds(now);
        let Some(age) = now_secs.checked_sub(issued) else {
            return NonceState::Foreign;
        };
        if age >= self.nonce_lifetime.as_secs() {
            NonceState::Expired {
                password_algorithms,
            }
        } else {
            NonceState::Fresh {
                password_algorithms,
            }
        }
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Strict hex (no sign, unlike `from_str_radix`).
fn parse_hex_u64(s: &str) -> Option<u64> {
    s.bytes()
        .try_fold(0u64, |acc, c| Some((acc << 4) | u64::from(hex_value(c)?)))
}

fn parse_hex_tag(s: &str) -> Option<[u8; TAG_LEN]> {
    let mut out = [0u8; TAG_LEN];
    let bytes = s.as_bytes();
    if bytes.len() != 2 * TAG_LEN {
        return None;
    }
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, lo) = (hex_value(*pair.first()?)?, hex_value(*pair.get(1)?)?);
        *slot = (hi << 4) | lo;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn auth(offer_sha256: bool, seed: u64) -> LongTermAuth {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        LongTermAuth::new(
            "realm".into(),
            HashMap::new(),
            Duration::from_secs(600),
            offer_sha256,
            &mut rng,
        )
    }

    #[test]
    fn nonce_round_trip_expiry_and_binding_to_the_client() {
        let now = Instant::now();
        let client: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let other: SocketAddr = "198.51.100.1:5001".parse().unwrap();
        for offer in [true, false] {
            let mut a = auth(offer, 3);
            let nonce = a.mint(now, client);
            assert_eq!(nonce.starts_with("obMatJos2gAAA"), offer);
            assert!(matches!(
                a.check_nonce(now + Duration::from_secs(599), client, &nonce),
                NonceState::Fresh { password_algorithms } if password_algorithms == offer
            ));
            assert!(matches!(
                a.check_nonce(now + Duration::from_secs(600), client, &nonce),
                NonceState::Expired { .. }
            ));
            assert!(matches!(
                a.check_nonce(now, other, &nonce),
                NonceState::Foreign
            ));
            let mut tampered = nonce.clone().into_bytes();
            if let Some(last) = tampered.last_mut() {
                *last = if *last == b'0' { b'1' } else { b'0' };
            }
            let tampered = String::from_utf8(tampered).unwrap();
            assert!(matches!(
                a.check_nonce(now, client, &tampered),
                NonceState::Foreign
            ));
            assert!(matches!(
                auth(offer, 4).check_nonce(now, client, &nonce),
                NonceState::Foreign
            ));
        }
        let mut a = auth(true, 3);
        for junk in ["", "obMatJos2", "obMatJos2AAAA00", "+0000000000000000", "é"] {
            assert!(matches!(
                a.check_nonce(now, client, junk),
                NonceState::Foreign
            ));
        }
    }
}
