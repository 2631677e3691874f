//! SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966 for tel).
//!
//! Owns: splitting a URI into scheme, userinfo, host, port, parameters and
//! headers, and writing it back so that `parse(display(u)) == u`.
//!
//! How non-SIP URIs are modelled:
//! - `tel:` keeps the number in `user` (`tel:+1-201-555-0123` → user
//!   `+1-201-555-0123`), its `;params` in `params`, and `host` is an empty
//!   `Host::Domain`. A tel: Request-URI is therefore an ordinary `Uri`.
//! - any other scheme (`urn:`, `mailto:`, `http:` …) is opaque: everything
//!   after the colon is kept verbatim in `user`, host empty, no params.
//!
//! Percent-escapes are kept as written (no decoding); comparison of URIs by
//! the rules of RFC 3261 §19.1.4 is not done here. URIs are ASCII: control
//! characters, space, non-ASCII and `<`, `>`, `"` are rejected (a URI that
//! needs them must escape them).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::message::ParseError;

/// A URI scheme; parsing is case-insensitive, `Other` is stored lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other(String),
}

impl Scheme {
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Result<Scheme, &'static str> {
        // RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
        let mut chars = s.chars();
        let starts_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !starts_alpha || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            return Err("bad scheme");
        }
        Ok(match s.to_ascii_lowercase().as_str() {
            "sip" => Scheme::Sip,
            "sips" => Scheme::Sips,
            "tel" => Scheme::Tel,
            other => Scheme::Other(other.to_owned()),
        })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host of a SIP URI or Via. Domain names are stored lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Domain(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Host {
    /// The address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Domain(_) => None,
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => Host::V6(a),
        }
    }
}

impl FromStr for Host {
    type Err = ParseError;

    /// Accepts `example.com`, `192.0.2.1` and `[2001:db8::1]`.
    fn from_str(s: &str) -> Result<Host, ParseError> {
        parse_host(s).map_err(|reason| ParseError::BadUri(reason.to_owned()))
    }
}

impl fmt::Display for Host {
    /// IPv6 in brackets, as in URIs and Via sent-by.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// A parsed URI. See the module doc for how tel: and other schemes map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Uri {
    pub scheme: Scheme,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    /// `;name[=value]` in order, names as written (lookups ignore case).
    pub params: Vec<(String, Option<String>)>,
    /// `?name=value&…` in order.
    pub headers: Vec<(String, String)>,
}

impl Uri {
    /// A URI with only scheme and host set (for tel: set `user` instead).
    pub fn new(scheme: Scheme, host: Host) -> Uri {
        Uri {
            scheme,
            user: None,
            password: None,
            host,
            port: None,
            params: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// `Some(None)` for a parameter without value (`;lr`), `None` if absent.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Replaces the first parameter of that name (dropping later ones) or appends it.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        set_param(&mut self.params, name, value);
    }

    /// Removes every parameter of that name; tells whether there was one.
    pub fn remove_param(&mut self, name: &str) -> bool {
        remove_param(&mut self.params, name)
    }

    /// The `transport` parameter's value (`udp`, `tcp`, `tls`, `ws` …).
    pub fn transport(&self) -> Option<&str> {
        self.param("transport").flatten()
    }

    /// `host` or `host:port`, IPv6 in brackets.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_string(),
        }
    }

    /// `sip:` or `sips:`: the URI has a host to send to.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }
}

impl FromStr for Uri {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Uri, ParseError> {
        parse_uri(s).map_err(|reason| ParseError::BadUri(reason.to_owned()))
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if self.is_sip() {
            if let Some(user) = &self.user {
                f.write_str(user)?;
                if let Some(password) = &self.password {
                    write!(f, ":{password}")?;
                }
                f.write_str("@")?;
            }
            f.write_str(&self.host_port())?;
        } else if let Some(opaque) = &self.user {
            f.write_str(opaque)?;
        }
        write_params(f, &self.params)?;
        for (i, (name, value)) in self.headers.iter().enumerate() {
            let separator = if i == 0 { '?' } else { '&' };
            write!(f, "{separator}{name}={value}")?;
        }
        Ok(())
    }
}

/// Writes `;name[=value]` for each parameter; shared with header params.
pub(super) fn write_params(
    f: &mut fmt::Formatter<'_>,
    params: &[(String, Option<String>)],
) -> fmt::Result {
    for (name, value) in params {
        match value {
            Some(v) => write!(f, ";{name}={v}")?,
            None => write!(f, ";{name}")?,
        }
    }
    Ok(())
}

pub(super) fn find_param<'a>(
    params: &'a [(String, Option<String>)],
    name: &str,
) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

pub(super) fn set_param(
    params: &mut Vec<(String, Option<String>)>,
    name: &str,
    value: Option<&str>,
) {
    let value = value.map(str::to_owned);
    match params
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(first) => {
            let mut index = 0;
            params.retain(|(n, _)| {
                let keep = index <= first || !n.eq_ignore_ascii_case(name);
                index += 1;
                keep
            });
            if let Some(slot) = params.get_mut(first) {
                slot.1 = value;
            }
        }
        None => params.push((name.to_owned(), value)),
    }
}

pub(super) fn remove_param(params: &mut Vec<(String, Option<String>)>, name: &str) -> bool {
    let before = params.len();
    params.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    params.len() != before
}

fn parse_uri(s: &str) -> Result<Uri, &'static str> {
    if let Some(bad) = s.chars().find(|&c| !is_uri_char(c)) {
        return Err(if bad.is_ascii_control() || bad == ' ' {
            "control character or space"
        } else {
            "character not allowed in a URI"
        });
    }
    let (scheme, rest) = s.split_once(':').ok_or("missing scheme")?;
    match Scheme::parse(scheme)? {
        scheme @ (Scheme::Sip | Scheme::Sips) => parse_sip(scheme, rest),
        Scheme::Tel => parse_tel(rest),
        other => parse_opaque(other, rest),
    }
}

/// Visible ASCII minus the characters that delimit a URI inside a header.
fn is_uri_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"')
}

fn parse_sip(scheme: Scheme, rest: &str) -> Result<Uri, &'static str> {
    // No '@' may appear unescaped after the userinfo (§25.1), so the first
    // one ends it even though the user part may contain ';' and '?'.
    let (userinfo, hostpart) = match rest.split_once('@') {
        Some((userinfo, hostpart)) => (Some(userinfo), hostpart),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p.to_owned())),
                None => (info, None),
            };
            if user.is_empty() {
                return Err("empty user part");
            }
            (Some(user.to_owned()), password)
        }
    };
    let (host, port, tail) = split_host_port(hostpart)?;
    let (params, headers) = parse_params_and_headers(tail)?;
    Ok(Uri {
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

/// `host[:port]` at the start of `s`; returns what follows (params, headers).
fn split_host_port(s: &str) -> Result<(Host, Option<u16>, &str), &'static str> {
    let host_end = if s.starts_with('[') {
        s.find(']').ok_or("unbalanced brackets")? + 1
    } else {
        s.find([':', ';', '?']).unwrap_or(s.len())
    };
    let (host, rest) = s.split_at_checked(host_end).ok_or("bad host")?;
    let host = parse_host(host)?;
    let Some(after_colon) = rest.strip_prefix(':') else {
        return Ok((host, None, rest));
    };
    let port_end = after_colon.find([';', '?']).unwrap_or(after_colon.len());
    let (port, rest) = after_colon.split_at_checked(port_end).ok_or("bad port")?;
    Ok((host, Some(parse_port(port)?), rest))
}

pub(super) fn parse_port(s: &str) -> Result<u16, &'static str> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad port");
    }
    s.parse().map_err(|_| "bad port")
}

pub(super) fn parse_host(s: &str) -> Result<Host, &'static str> {
    if s.is_empty() {
        return Err("empty host");
    }
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("unbalanced brackets")?;
        return inner.parse().map(Host::V6).map_err(|_| "bad IPv6 address");
    }
    if s.contains(['[', ']']) {
        return Err("unbalanced brackets");
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return s.parse().map(Host::V4).map_err(|_| "bad IPv4 address");
    }
    // hostname = *( domainlabel "." ) toplabel [ "." ]; '_' is tolerated
    // because real deployments use it in internal names.
    let valid = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid || s.starts_with(['.', '-']) || s.contains("..") {
        return Err("bad host name");
    }
    Ok(Host::Domain(s.to_ascii_lowercase()))
}

fn parse_tel(rest: &str) -> Result<Uri, &'static str> {
    let number_end = rest.find([';', '?']).unwrap_or(rest.len());
    let (number, tail) = rest.split_at_checked(number_end).ok_or("bad number")?;
    // RFC 3966: digits, visual separators, '+', '*', '#', hex digits and
    // pause characters; '%' for escaped ones.
    let valid = number
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-.()*#%".contains(&b));
    if number.is_empty() || !valid {
        return Err("bad telephone number");
    }
    let (params, headers) = parse_params_and_headers(tail)?;
    Ok(Uri {
        scheme: Scheme::Tel,
        user: Some(number.to_owned()),
        password: None,
        host: Host::Domain(String::new()),
        port: None,
        params,
        headers,
    })
}

fn parse_opaque(scheme: Scheme, rest: &str) -> Result<Uri, &'static str> {
    if rest.is_empty() {
        return Err("empty URI after scheme");
    }
    let mut uri = Uri::new(scheme, Host::Domain(String::new()));
    uri.user = Some(rest.to_owned());
    Ok(uri)
}

type UriParams = Vec<(String, Option<String>)>;
type UriHeaders = Vec<(String, String)>;

/// `;p1=v1;p2?h1=v1&h2=v2` (either part may be absent).
fn parse_params_and_headers(s: &str) -> Result<(UriParams, UriHeaders), &'static str> {
    let (params, headers) = match s.split_once('?') {
        Some((p, h)) => (p, Some(h)),
        None => (s, None),
    };
    let params = match params.strip_prefix(';') {
        Some(list) => list
            .split(';')
            .map(parse_uri_param)
            .collect::<Result<_, _>>()?,
        None if params.is_empty() => Vec::new(),
        None => return Err("junk after host"),
    };
    let headers = match headers {
        Some(list) => list
            .split('&')
            .map(parse_uri_header)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok((params, headers))
}

fn parse_uri_param(s: &str) -> Result<(String, Option<String>), &'static str> {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (s, None),
    };
    if name.is_empty() {
        return Err("empty parameter name");
    }
    Ok((name.to_owned(), value))
}

fn parse_uri_header(s: &str) -> Result<(String, String), &'static str> {
    // The grammar wants "name=value"; a bare name is read as an empty value.
    let (name, value) = s.split_once('=').unwrap_or((s, ""));
    if name.is_empty() {
        return Err("empty URI header name");
    }
    Ok((name.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn round_trip(s: &str) -> Uri {
        let parsed = uri(s);
        let written = parsed.to_string();
        assert_eq!(uri(&written), parsed, "{s} -> {written}");
        parsed
    }

    #[test]
    fn full_sip_uri() {
        let u = round_trip(
            "sip:alice:secret@Atlanta.COM:5061;transport=tcp;lr?subject=hi&priority=urgent",
        );
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Domain("atlanta.com".into()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tcp"));
        assert_eq!(u.param("LR"), Some(None));
        assert_eq!(u.param("maddr"), None);
        assert_eq!(u.headers.len(), 2);
        assert_eq!(u.host_port(), "atlanta.com:5061");
    }

    #[test]
    fn ipv6_host_with_port() {
        let u = round_trip("sip:alice@[2001:db8::1]:5060");
        assert_eq!(u.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.host_port(), "[2001:db8::1]:5060");
        assert_eq!(u.to_string(), "sip:alice@[2001:db8::1]:5060");
        let bare = round_trip("sips:[::1];transport=tls");
        assert_eq!(bare.host, Host::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(bare.port, None);
    }

    #[test]
    fn ipv4_host() {
        let u = round_trip("sip:192.0.2.4:5070");
        assert_eq!(u.host, Host::V4(Ipv4Addr::new(192, 0, 2, 4)));
        assert_eq!(u.host.ip(), Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 4))));
    }

    #[test]
    fn tel_uri_keeps_number_and_params() {
        let u = round_trip("tel:+1-201-555-0123;phone-context=example.com;ext=42");
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(u.host, Host::Domain(String::new()));
        assert_eq!(u.param("ext"), Some(Some("42")));
        assert_eq!(uri("TEL:911").scheme, Scheme::Tel);
        assert!("tel:".parse::<Uri>().is_err());
        assert!("tel:12 34".parse::<Uri>().is_err());
    }

    #[test]
    fn other_schemes_are_opaque() {
        let u = round_trip("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
        assert_eq!(u.scheme, Scheme::Other("urn".into()));
        assert_eq!(
            u.user.as_deref(),
            Some("uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
        );
        round_trip("http://www.example.com/a;b?c=d");
    }

    #[test]
    fn escapes_and_odd_user_characters_are_kept_as_written() {
        let u = round_trip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user.as_deref(), Some("sips%3Auser%40example.com"));
        let phone = round_trip("sip:+1-212-555-1212;phone-context=x@example.com;user=phone");
        assert_eq!(
            phone.user.as_deref(),
            Some("+1-212-555-1212;phone-context=x")
        );
        assert_eq!(phone.param("user"), Some(Some("phone")));
        round_trip("sip:%61lice@example.com;%74ransport=tcp");
        round_trip("sip:*97#@example.com");
    }

    #[test]
    fn scheme_and_host_are_case_insensitive() {
        let u = uri("SIP:Bob@EXAMPLE.org");
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("Bob"), "user part keeps its case");
        assert_eq!(u.to_string(), "sip:Bob@example.org");
    }

    #[test]
    fn param_helpers() {
        let mut u = uri("sip:a@b;Transport=UDP;x;x=2");
        assert_eq!(u.transport(), Some("UDP"));
        u.set_param("x", Some("3"));
        assert_eq!(u.to_string(), "sip:a@b;Transport=UDP;x=3");
        u.set_param("lr", None);
        assert!(u.remove_param("transport"));
        assert!(!u.remove_param("transport"));
        assert_eq!(u.to_string(), "sip:a@b;x=3;lr");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "sip:",
            "sip:@example.com",
            "sip:alice@",
            "sip:alice@:5060",
            "sip:alice@example.com:",
            "sip:alice@example.com:65536",
            "sip:alice@example.com:50a0",
            "sip:alice@example.com:123456",
            "sip:alice@[2001:db8::1",
            "sip:alice@2001:db8::1]",
            "sip:alice@[2001:db8::1]]",
            "sip:alice@[not-v6]",
            "sip:alice@[::1]x",
            "sip:alice@1.2.3.256",
            "sip:ali ce@example.com",
            "sip:alice@exa\0mple.com",
            "sip:alice@example.com\r\n",
            "sip:alice@exa<mple.com",
            "sip:alice@bad!host",
            "sip:alice@example.com;=x",
            "sip:alice@example.com;a;;b",
            "sip:alice@example.com?=v",
            "sip:alicé@example.com",
            "nocolon",
            "1sip:a@b",
            ":a@b",
        ] {
            assert!(
                matches!(bad.parse::<Uri>(), Err(ParseError::BadUri(_))),
                "{bad:?} should fail"
            );
        }
    }

    #[test]
    fn port_boundaries() {
        assert_eq!(uri("sip:h:65535").port, Some(65535));
        assert_eq!(uri("sip:h:0").port, Some(0));
        assert_eq!(uri("sip:h:05060").to_string(), "sip:h:5060");
    }

    #[test]
    fn host_from_str() {
        assert_eq!(
            "[::1]".parse::<Host>().unwrap(),
            Host::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            "Proxy.Example".parse::<Host>().unwrap().to_string(),
            "proxy.example"
        );
        assert!("".parse::<Host>().is_err());
        assert!("a b".parse::<Host>().is_err());
    }
}
