//! The client side of digest authentication across requests: answers a
//! 401/407 challenge, caches it so later requests are signed up front (a
//! refresh costs one round trip), counts nonce uses, and tells a wrong
//! password from a stale nonce.

use rand::rngs::StdRng;

use super::digest::{DigestChallenge, DigestCredentials, DigestResponse};
use super::message::{Request, Response};
use super::random_hex;

/// Consecutive challenges answered without success before giving up.
const MAX_CHALLENGES: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Our answer was refused: the password (or user) is wrong.
    Rejected { code: u16, reason: String },
    /// The challenge cannot be answered (no Digest, unknown algorithm).
    Unusable(String),
}

/// A cached challenge and how often its nonce was used.
struct Cached {
    challenge: DigestChallenge,
    /// `Proxy-Authorization` (407) rather than `Authorization` (401).
    proxy: bool,
    nc: u32,
}

pub struct Authenticator {
    credentials: DigestCredentials,
    cached: Option<Cached>,
    /// Challenges since the last success.
    challenges: u32,
}

impl Authenticator {
    pub fn new(credentials: DigestCredentials) -> Self {
        Authenticator {
            credentials,
            cached: None,
            challenges: 0,
        }
    }

    /// Whether requests now carry credentials.
    pub fn has_credentials(&self) -> bool {
        self.cached.is_some()
    }

    /// A 401 or 407 arrived: Ok when the next request can answer it.
    pub fn on_challenge(&mut self, response: &Response) -> Result<(), AuthFailure> {
        let proxy = response.code == 407;
        let challenge = strongest_challenge(response, proxy)?;
        let rejected = || AuthFailure::Rejected {
            code: response.code,
            reason: response.reason.clone(),
        };
        // A fresh challenge right after our answer means the answer was
        // wrong, unless the server only says our nonce went stale.
        if self.cached.is_some() && self.challenges > 0 && !challenge.stale {
            return Err(rejected());
        }
        self.challenges += 1;
        if self.challenges > MAX_CHALLENGES {
            return Err(rejected());
        }
        self.cached = Some(Cached {
            challenge,
            proxy,
            nc: 0,
        });
        Ok(())
    }

    /// A final response other than a challenge: the next challenge is a
    /// new conversation.
    pub fn on_success(&mut self) {
        self.challenges = 0;
    }

    /// Credentials that failed are not sent again unasked.
    pub fn forget(&mut self) {
        self.cached = None;
        self.challenges = 0;
    }

    /// Adds `Authorization` or `Proxy-Authorization` to `req` when a
    /// challenge is cached.
    pub fn sign(&mut self, req: &mut Request, rng: &mut StdRng) {
        let Some(cached) = &mut self.cached else {
            return;
        };
        cached.nc += 1;
        let answer = DigestResponse::answer(
            &cached.challenge,
            &self.credentials,
            req.method.as_str(),
            &req.uri.to_string(),
            cached.nc,
            &random_hex(rng, 8),
        );
        let name = if cached.proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        req.headers.push(name, answer.to_header_value());
    }
}

/// The best Digest challenge of a 401 (`proxy`: 407): SHA-256 over MD5
/// (RFC 8760 §2.4), skipping schemes and algorithms we cannot answer.
fn strongest_challenge(response: &Response, proxy: bool) -> Result<DigestChallenge, AuthFailure> {
    let challenges = if proxy {
        response.headers.proxy_authenticate()
    } else {
        response.headers.www_authenticate()
    }
    .map_err(|e| AuthFailure::Unusable(e.to_string()))?;
    let mut best: Option<DigestChallenge> = None;
    let mut last_error = "no challenge".to_owned();
    for c in &challenges {
        match DigestChallenge::from_params(&c.scheme, |p| c.param(p)) {
            Ok(d)
                if best
                    .as_ref()
                    .is_none_or(|b| d.algorithm.strength() > b.algorithm.strength()) =>
            {
                best = Some(d)
            }
            Ok(_) => {}
            Err(e) => last_error = e.to_string(),
        }
    }
    best.ok_or(AuthFailure::Unusable(last_error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Message, Method};
    use rand::SeedableRng;

    fn response(text: &str) -> Response {
        match Message::parse(text.as_bytes()).unwrap() {
            Message::Response(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn picks_sha256_over_md5_and_signs_with_it() {
        let r = response(
            "SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"a\", algorithm=MD5, qop=\"auth\"\r\n\
             WWW-Authenticate: Digest realm=\"r\", nonce=\"b\", algorithm=SHA-256, qop=\"auth\"\r\nContent-Length: 0\r\n\r\n",
        );
        let mut a = Authenticator::new(DigestCredentials {
            username: "u".into(),
            password: "p".into(),
        });
        a.on_challenge(&r).unwrap();
        let mut req = Request::new(Method::Register, "sip:r".parse().unwrap());
        a.sign(&mut req, &mut StdRng::seed_from_u64(1));
        let v = req.headers.get("Authorization").unwrap();
        assert!(
            v.contains("algorithm=SHA-256") && v.contains("nonce=\"b\""),
            "{v}"
        );
    }

    #[test]
    fn a_challenge_without_digest_is_unusable() {
        let r = response(
            "SIP/2.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\n\r\n",
        );
        let mut a = Authenticator::new(DigestCredentials {
            username: "u".into(),
            password: "p".into(),
        });
        assert!(matches!(a.on_challenge(&r), Err(AuthFailure::Unusable(_))));
    }
}
