//! HTTP digest authentication for SIP (RFC 3261 §22, RFC 7616 with the
//! RFC 8760 algorithms): the client's answer to a 401/407 challenge and the
//! registrar's check of that answer.
//!
//! Computed here rather than by a SIP crate: the nonce count must be eight
//! hex digits and keep counting per nonce, `-sess` algorithms must hash the
//! cnonce in, and a `qop` list such as `"auth,auth-int"` must be understood.
//! Passwords and keys never reach `Debug` output or logs.

use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl DigestAlgorithm {
    /// The token of the `algorithm` parameter; absent means MD5 (RFC 7616 §3.3).
    pub fn parse(token: Option<&str>) -> Option<Self> {
        let Some(token) = token else {
            return Some(DigestAlgorithm::Md5);
        };
        match token.to_ascii_uppercase().as_str() {
            "MD5" => Some(DigestAlgorithm::Md5),
            "MD5-SESS" => Some(DigestAlgorithm::Md5Sess),
            "SHA-256" => Some(DigestAlgorithm::Sha256),
            "SHA-256-SESS" => Some(DigestAlgorithm::Sha256Sess),
            _ => None,
        }
    }

    pub fn token(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Md5Sess => "MD5-sess",
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn is_session(self) -> bool {
        matches!(self, DigestAlgorithm::Md5Sess | DigestAlgorithm::Sha256Sess)
    }

    /// Lowercase hex of the hash of `parts` joined by ':'.
    fn hash(self, parts: &[&str]) -> String {
        fn run<D: Digest>(parts: &[&str]) -> String {
            let mut d = D::new();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(part.as_bytes());
            }
            hex(&d.finalize())
        }
        match self {
            DigestAlgorithm::Md5 | DigestAlgorithm::Md5Sess => run::<Md5>(parts),
            DigestAlgorithm::Sha256 | DigestAlgorithm::Sha256Sess => run::<Sha256>(parts),
        }
    }

    /// Preference when a server offers several challenges (RFC 8760 §2.4:
    /// the strongest one the client supports).
    pub fn strength(self) -> u8 {
        match self {
            DigestAlgorithm::Md5 | DigestAlgorithm::Md5Sess => 1,
            DigestAlgorithm::Sha256 | DigestAlgorithm::Sha256Sess => 2,
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0F)] as char);
    }
    s
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("the challenge is not Digest but {0:?}")]
    NotDigest(String),
    #[error("the challenge has no {0}")]
    Missing(&'static str),
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    #[error("the challenge offers qop {0:?} but not \"auth\"")]
    Qop(String),
}

/// A parsed `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: DigestAlgorithm,
    /// The server offered `qop=auth` (we never use auth-int).
    pub qop_auth: bool,
    /// `stale=true`: the nonce expired but the credentials were right.
    pub stale: bool,
}

impl DigestChallenge {
    /// From the challenge's scheme and a lookup of its (unquoted) parameters.
    pub fn from_params<'a>(
        scheme: &str,
        param: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, DigestError> {
        let algorithm = digest_algorithm(scheme, &param)?;
        let realm = param("realm").ok_or(DigestError::Missing("realm"))?;
        let nonce = param("nonce").ok_or(DigestError::Missing("nonce"))?;
        let qop_auth = match param("qop") {
            None => false,
            Some(list) => {
                if !list
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"))
                {
                    return Err(DigestError::Qop(list.to_owned()));
                }
                true
            }
        };
        Ok(DigestChallenge {
            realm: realm.to_owned(),
            nonce: nonce.to_owned(),
            opaque: param("opaque").map(str::to_owned),
            algorithm,
            qop_auth,
            stale: param("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// Who we authenticate as. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for DigestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestCredentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The fields of one `Authorization` / `Proxy-Authorization` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestResponse {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: DigestAlgorithm,
    pub opaque: Option<String>,
    /// With qop=auth: (cnonce, nonce count).
    pub qop: Option<(String, u32)>,
}

impl DigestResponse {
    /// Answers `challenge` for a request `method uri`. `nc` is this nonce's
    /// count of uses (1 for the first), `cnonce` a fresh client nonce.
    pub fn answer(
        challenge: &DigestChallenge,
        credentials: &DigestCredentials,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> Self {
        let qop = challenge.qop_auth.then(|| (cnonce.to_owned(), nc));
        let response = compute(
            challenge.algorithm,
            &credentials.username,
            &challenge.realm,
            &credentials.password,
            &challenge.nonce,
            method,
            uri,
            qop.as_ref().map(|(c, n)| (c.as_str(), *n)),
        );
        DigestResponse {
            username: credentials.username.clone(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_owned(),
            response,
            algorithm: challenge.algorithm,
            opaque: challenge.opaque.clone(),
            qop,
        }
    }

    /// Whether `self.response` is right for `password` and `method`.
    pub fn verify(&self, method: &str, password: &str) -> bool {
        let expected = compute(
            self.algorithm,
            &self.username,
            &self.realm,
            password,
            &self.nonce,
            method,
            &self.uri,
            self.qop.as_ref().map(|(c, n)| (c.as_str(), *n)),
        );
        constant_time_eq(
            expected.as_bytes(),
            self.response.to_ascii_lowercase().as_bytes(),
        )
    }

    /// From an `Authorization` header's scheme and (unquoted) parameters.
    pub fn from_params<'a>(
        scheme: &str,
        param: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, DigestError> {
        let algorithm = digest_algorithm(scheme, &param)?;
        let get = |name: &'static str| param(name).ok_or(DigestError::Missing(name));
        let qop = match param("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = u32::from_str_radix(get("nc")?, 16)
                    .map_err(|_| DigestError::Missing("valid nc"))?;
                Some((get("cnonce")?.to_owned(), nc))
            }
            Some(q) => return Err(DigestError::Qop(q.to_owned())),
        };
        Ok(DigestResponse {
            username: get("username")?.to_owned(),
            realm: get("realm")?.to_owned(),
            nonce: get("nonce")?.to_owned(),
            uri: get("uri")?.to_owned(),
            response: get("response")?.to_owned(),
            algorithm,
            opaque: param("opaque").map(str::to_owned),
            qop,
        })
    }

    /// The header value: `Digest username="…", realm="…", …`.
    pub fn to_header_value(&self) -> String {
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            quote_escape(&self.username),
            quote_escape(&self.realm),
            quote_escape(&self.nonce),
            quote_escape(&self.uri),
            self.response,
            self.algorithm.token()
        );
        if let Some((cnonce, nc)) = &self.qop {
            v.push_str(&format!(
                ", qop=auth, nc={nc:08x}, cnonce=\"{}\"",
                quote_escape(cnonce)
            ));
        }
        if let Some(opaque) = &self.opaque {
            v.push_str(&format!(", opaque=\"{}\"", quote_escape(opaque)));
        }
        v
    }
}

/// The algorithm of a Digest challenge or answer; anything but Digest is
/// refused.
fn digest_algorithm<'a>(
    scheme: &str,
    param: &impl Fn(&str) -> Option<&'a str>,
) -> Result<DigestAlgorithm, DigestError> {
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest(scheme.to_owned()));
    }
    let token = param("algorithm");
    DigestAlgorithm::parse(token)
        .ok_or_else(|| DigestError::Algorithm(token.unwrap_or("").to_owned()))
}

#[allow(clippy::too_many_arguments)]
fn compute(
    alg: DigestAlgorithm,
    username: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<(&str, u32)>,
) -> String {
    let mut ha1 = alg.hash(&[username, realm, password]);
    if alg.is_session() {
        let cnonce = qop.map(|(c, _)| c).unwrap_or("");
        ha1 = alg.hash(&[&ha1, nonce, cnonce]);
    }
    let ha2 = alg.hash(&[method, uri]);
    match qop {
        Some((cnonce, nc)) => {
            let nc = format!("{nc:08x}");
            alg.hash(&[&ha1, nonce, &nc, cnonce, "auth", &ha2])
        }
        None => alg.hash(&[&ha1, nonce, &ha2]),
    }
}

/// A quoted-string's content with `"` and `\` escaped (RFC 3261 §25.1).
fn quote_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(params: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    fn mufasa() -> DigestCredentials {
        DigestCredentials {
            username: "Mufasa".into(),
            password: "Circle of Life".into(),
        }
    }

    // RFC 7616 §3.9.1, the MD5 and SHA-256 examples.
    const NONCE_7616: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE_7616: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn challenge_7616(alg: &str) -> DigestChallenge {
        let params = [
            ("realm", "http-auth@example.org"),
            ("qop", "auth, auth-int"),
            ("algorithm", alg),
            ("nonce", NONCE_7616),
            ("opaque", "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"),
        ];
        DigestChallenge::from_params("Digest", lookup(&params)).unwrap()
    }

    #[test]
    fn rfc7616_md5_vector() {
        let r = DigestResponse::answer(
            &challenge_7616("MD5"),
            &mufasa(),
            "GET",
            "/dir/index.html",
            1,
            CNONCE_7616,
        );
        assert_eq!(r.response, "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc7616_sha256_vector() {
        let r = DigestResponse::answer(
            &challenge_7616("SHA-256"),
            &mufasa(),
            "GET",
            "/dir/index.html",
            1,
            CNONCE_7616,
        );
        assert_eq!(
            r.response,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc2617_vector_and_no_qop_form() {
        let params = [
            ("realm", "testrealm@host.com"),
            ("qop", "auth,auth-int"),
            ("nonce", "dcd98b7102dd2f0e8b11d0f600bfb0c093"),
        ];
        let ch = DigestChallenge::from_params("Digest", lookup(&params)).unwrap();
        let creds = DigestCredentials {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
        };
        let r = DigestResponse::answer(&ch, &creds, "GET", "/dir/index.html", 1, "0a4f113b");
        assert_eq!(r.response, "6629fae49393a05397450978507c4ef1");
        // RFC 2069 form (no qop): H(HA1:nonce:HA2), checked by hand.
        let plain = DigestChallenge {
            qop_auth: false,
            ..ch
        };
        let r = DigestResponse::answer(&plain, &creds, "GET", "/dir/index.html", 1, "x");
        assert_eq!(r.qop, None);
        let ha1 = DigestAlgorithm::Md5.hash(&["Mufasa", "testrealm@host.com", "Circle Of Life"]);
        let ha2 = DigestAlgorithm::Md5.hash(&["GET", "/dir/index.html"]);
        let want = DigestAlgorithm::Md5.hash(&[&ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", &ha2]);
        assert_eq!(r.response, want);
        assert!(!r.to_header_value().contains("qop"));
    }

    #[test]
    fn nonce_count_is_eight_hex_digits_past_nine() {
        let ch = challenge_7616("MD5");
        let r = DigestResponse::answer(&ch, &mufasa(), "REGISTER", "sip:x", 10, "c");
        let v = r.to_header_value();
        assert!(v.contains("nc=0000000a"), "{v}");
        let r = DigestResponse::answer(&ch, &mufasa(), "REGISTER", "sip:x", 0x1234_5678, "c");
        assert!(r.to_header_value().contains("nc=12345678"));
    }

    #[test]
    fn session_algorithms_hash_the_cnonce_in() {
        let a = DigestResponse::answer(&challenge_7616("MD5-sess"), &mufasa(), "GET", "/", 1, "a");
        let b = DigestResponse::answer(&challenge_7616("MD5-sess"), &mufasa(), "GET", "/", 1, "b");
        let plain = DigestResponse::answer(&challenge_7616("MD5"), &mufasa(), "GET", "/", 1, "a");
        assert_ne!(a.response, plain.response);
        assert_ne!(a.response, b.response);
        assert!(a.verify("GET", "Circle of Life"));
        assert!(!a.verify("GET", "circle of life"));
    }

    #[test]
    fn header_round_trip_verifies_and_wrong_inputs_fail() {
        for alg in ["MD5", "SHA-256", "SHA-256-sess"] {
            let r = DigestResponse::answer(
                &challenge_7616(alg),
                &mufasa(),
                "INVITE",
                "sip:bob@example.org",
                3,
                "abc",
            );
            let v = r.to_header_value();
            // The header as a parser would hand it over: quotes stripped.
            let body = v.strip_prefix("Digest ").unwrap();
            let params: Vec<(String, String)> = body
                .split(", ")
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            let get = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            let parsed = DigestResponse::from_params("Digest", get).unwrap();
            assert_eq!(parsed, r);
            assert!(parsed.verify("INVITE", "Circle of Life"));
            assert!(!parsed.verify("BYE", "Circle of Life"));
            assert!(!parsed.verify("INVITE", "wrong"));
        }
    }

    #[test]
    fn bad_challenges_are_refused_with_a_reason() {
        let no_nonce = [("realm", "r")];
        assert_eq!(
            DigestChallenge::from_params("Digest", lookup(&no_nonce)),
            Err(DigestError::Missing("nonce"))
        );
        let auth_int_only = [("realm", "r"), ("nonce", "n"), ("qop", "auth-int")];
        assert!(matches!(
            DigestChallenge::from_params("Digest", lookup(&auth_int_only)),
            Err(DigestError::Qop(_))
        ));
        let odd_alg = [("realm", "r"), ("nonce", "n"), ("algorithm", "SHA-512-256")];
        assert!(matches!(
            DigestChallenge::from_params("Digest", lookup(&odd_alg)),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            DigestChallenge::from_params("Basic", lookup(&odd_alg)),
            Err(DigestError::NotDigest(_))
        ));
        let stale = [("realm", "r"), ("nonce", "n"), ("stale", "TRUE")];
        assert!(
            DigestChallenge::from_params("digest", lookup(&stale))
                .unwrap()
                .stale
        );
    }

    #[test]
    fn quotes_in_values_are_escaped_and_password_is_hidden() {
        let ch = DigestChallenge {
            realm: "a\"b".into(),
            nonce: "n".into(),
            opaque: None,
            algorithm: DigestAlgorithm::Md5,
            qop_auth: false,
            stale: false,
        };
        let r = DigestResponse::answer(&ch, &mufasa(), "REGISTER", "sip:x", 1, "c");
        assert!(r.to_header_value().contains("realm=\"a\\\"b\""));
        assert!(!format!("{:?}", mufasa()).contains("Circle"));
    }
}
