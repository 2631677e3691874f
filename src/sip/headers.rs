//! Typed SIP header values (RFC 3261 §20, grammar of §25.1).
//!
//! Owns: turning one header value string into a typed value and back —
//! name-addr (From, To, Contact, Route, Record-Route, Refer-To), Via, CSeq,
//! Digest challenges and credentials — plus the lexical helpers they share:
//! top-level comma splitting, quoted strings and generic parameters.
//!
//! Does not own: which header a value came from, header names, folding or
//! limits; that is the message layer's. Parameter values keep their quotes
//! as written (`+sip.instance="<urn:uuid:…>"` has the value
//! `"<urn:uuid:…>"`); [`unquote`] or `param_unquoted` removes them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::message::{Method, ParseError};
use super::uri::{self, Host, Uri};

/// A header's generic parameters, `;name[=value]` in order.
pub type Params = Vec<(String, Option<String>)>;
/// Authentication parameters, `name=value` in order, quotes removed.
pub type AuthParams = Vec<(String, String)>;

/// RFC 3261 `token`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Splits a header value on commas that are outside quoted strings and
/// `<…>`, trimming each element and dropping empty ones.
pub fn split_list(value: &str) -> Vec<&str> {
    split_top_level(value, b',')
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Splits on `separator` outside quoted strings (with `\` escapes) and angle
/// brackets. Elements are returned untrimmed and may be empty.
fn split_top_level(value: &str, separator: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut angle_depth = 0usize;
    for (i, b) in value.bytes().enumerate() {
        if in_quotes {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b'<' => angle_depth += 1,
            b'>' => angle_depth = angle_depth.saturating_sub(1),
            _ if b == separator && angle_depth == 0 => {
                // Separators are ASCII, so both slice ends are char boundaries.
                parts.extend(value.get(start..i));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.extend(value.get(start..));
    parts
}

/// Reads the quoted string at the start of `s`: its unescaped content and
/// whatever follows the closing quote.
fn take_quoted(s: &str) -> Result<(String, &str), &'static str> {
    let body = s.strip_prefix('"').ok_or("expected a quoted string")?;
    let mut content = String::new();
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            content.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            let rest = body.get(i + 1..).ok_or("bad quoted string")?;
            return Ok((content, rest));
        } else {
            content.push(c);
        }
    }
    Err("unterminated quoted string")
}

/// The content of `s` if it is exactly one quoted string.
pub fn unquote(s: &str) -> Option<String> {
    match take_quoted(s) {
        Ok((content, "")) => Some(content),
        _ => None,
    }
}

/// `s` as a quoted string, escaping `"` and `\`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Generic parameters `;a=1;b;c="x;y"` (the leading `;` included).
fn parse_params(s: &str) -> Result<Params, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let list = s.strip_prefix(';').ok_or("junk before parameters")?;
    split_top_level(list, b';')
        .into_iter()
        .map(parse_param)
        .collect()
}

fn parse_param(s: &str) -> Result<(String, Option<String>), &'static str> {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (s.trim(), None),
    };
    if !is_token(name) {
        return Err("bad parameter name");
    }
    let Some(value) = value else {
        return Ok((name.to_owned(), None));
    };
    let valid = if value.starts_with('"') {
        unquote(value).is_some()
    } else {
        // token / host / IPv6 reference, and a little more for what real
        // peers send; never a character that delimits params or lists.
        value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\";,<>".contains(&b))
    };
    if !valid {
        return Err("bad parameter value");
    }
    Ok((name.to_owned(), Some(value.to_owned())))
}

fn bad_value(reason: &'static str) -> ParseError {
    ParseError::BadValue(reason)
}

/// `name-addr` or bare `addr-spec` with header parameters (§20.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted and unescaped.
    pub display: Option<String>,
    pub uri: Uri,
    /// Header parameters (after `>`, or after the bare URI).
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    pub fn set_tag(&mut self, tag: &str) {
        self.set_param("tag", Some(tag));
    }

    /// `Some(None)` for a parameter without value, `None` if absent.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        uri::find_param(&self.params, name)
    }

    /// A parameter's value with surrounding quotes removed, e.g.
    /// `+sip.instance` → `<urn:uuid:…>`.
    pub fn param_unquoted(&self, name: &str) -> Option<String> {
        let value = self.param(name).flatten()?;
        Some(unquote(value).unwrap_or_else(|| value.to_owned()))
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        uri::set_param(&mut self.params, name, value);
    }

    pub fn remove_param(&mut self, name: &str) -> bool {
        uri::remove_param(&mut self.params, name)
    }

    /// The Contact `expires` parameter. Values beyond `u32` saturate
    /// (§10.2.1 allows it); a malformed value reads as absent, and the
    /// registrar's default (3600 per §10.2.1) is the caller's to apply.
    pub fn expires(&self) -> Option<u32> {
        parse_delta_seconds(self.param("expires").flatten()?)
    }
}

/// Digits only; saturates at `u32::MAX` instead of failing on huge values.
pub(super) fn parse_delta_seconds(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u32, |acc, b| {
        acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    }))
}

impl FromStr for NameAddr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<NameAddr, ParseError> {
        parse_name_addr(s.trim())
    }
}

fn parse_name_addr(s: &str) -> Result<NameAddr, ParseError> {
    if s.starts_with('"') {
        let (display, rest) = take_quoted(s).map_err(bad_value)?;
        return parse_angle_part(Some(display), rest.trim_start());
    }
    // A display name made of tokens runs up to '<'; a bare URI hits ';'
    // (its header params may hold quoted '<', as +sip.instance does) or ends.
    match s.find(['<', ';', '"']) {
        Some(i) if s.as_bytes().get(i) == Some(&b'<') => {
            let (display, rest) = s.split_at_checked(i).ok_or(bad_value("bad name-addr"))?;
            let display = display.trim();
            if display.chars().any(|c| c.is_control() || c == '>') {
                return Err(bad_value("bad display name"));
            }
            let display = (!display.is_empty()).then(|| display.to_owned());
            parse_angle_part(display, rest)
        }
        _ => parse_addr_spec(s),
    }
}

/// `<uri>;params` once the display name is consumed.
fn parse_angle_part(display: Option<String>, s: &str) -> Result<NameAddr, ParseError> {
    let inside = s.strip_prefix('<').ok_or(bad_value("expected '<'"))?;
    let (uri, params) = inside.split_once('>').ok_or(bad_value("missing '>'"))?;
    Ok(NameAddr {
        display,
        uri: uri.trim().parse()?,
        params: parse_params(params).map_err(bad_value)?,
    })
}

/// Bare addr-spec: every `;param` after the URI is a header parameter.
fn parse_addr_spec(s: &str) -> Result<NameAddr, ParseError> {
    let (uri, params) = match s.find(';') {
        Some(i) => s.split_at_checked(i).ok_or(bad_value("bad addr-spec"))?,
        None => (s, ""),
    };
    Ok(NameAddr {
        display: None,
        uri: uri.trim().parse()?,
        params: parse_params(params).map_err(bad_value)?,
    })
}

impl fmt::Display for NameAddr {
    /// Always the `<…>` form, so URI parameters cannot be mistaken for
    /// header parameters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(display) = &self.display {
            write!(f, "{} ", quote(display))?;
        }
        write!(f, "<{}>", self.uri)?;
        uri::write_params(f, &self.params)
    }
}

/// A Contact header's value: the `*` of a de-registration, or addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contacts {
    Wildcard,
    Addrs(Vec<NameAddr>),
}

impl Contacts {
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Contacts::Wildcard)
    }

    /// The addresses; empty for the wildcard.
    pub fn addrs(&self) -> &[NameAddr] {
        match self {
            Contacts::Wildcard => &[],
            Contacts::Addrs(addrs) => addrs,
        }
    }

    /// From the Contact elements of all Contact lines (already split).
    pub fn from_elements<'a>(
        elements: impl IntoIterator<Item = &'a str>,
    ) -> Result<Contacts, ParseError> {
        let elements: Vec<&str> = elements.into_iter().collect();
        if elements.iter().any(|e| e.trim() == "*") {
            // §20.10: STAR stands alone.
            return match elements.as_slice() {
                [_] => Ok(Contacts::Wildcard),
                _ => Err(bad_value("'*' mixed with other contacts")),
            };
        }
        elements
            .into_iter()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Contacts::Addrs)
    }
}

/// One Via hop (§20.42): `SIP/2.0/UDP host:port;branch=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// Uppercase: `UDP`, `TCP`, `TLS`, `WS`, `WSS`, `SCTP` …
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn new(transport: &str, host: Host, port: Option<u16>) -> Via {
        Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params: Vec::new(),
        }
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    /// `Some(None)`: `;rport` asks for the source port (RFC 3581);
    /// `Some(Some(p))`: the port a server filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        let value = self.param("rport")?;
        // A non-numeric value is refused when parsing, so this only drops
        // one a caller set through `params` directly.
        Some(value.and_then(|v| v.parse().ok()))
    }

    pub fn set_branch(&mut self, branch: &str) {
        self.set_param("branch", Some(branch));
    }

    /// IPv6 is written without brackets, as §20.42's grammar has it.
    pub fn set_received(&mut self, ip: IpAddr) {
        self.set_param("received", Some(&ip.to_string()));
    }

    /// `None` writes a bare `;rport` (a request); `Some` fills it in.
    pub fn set_rport(&mut self, port: Option<u16>) {
        let value = port.map(|p| p.to_string());
        self.set_param("rport", value.as_deref());
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        uri::find_param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        uri::set_param(&mut self.params, name, value);
    }

    pub fn remove_param(&mut self, name: &str) -> bool {
        uri::remove_param(&mut self.params, name)
    }

    /// `host[:port]`, IPv6 in brackets.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_string(),
        }
    }
}

impl FromStr for Via {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Via, ParseError> {
        parse_via(s).map_err(|_| ParseError::BadHeader {
            name: "Via".to_owned(),
        })
    }
}

fn parse_via(s: &str) -> Result<Via, &'static str> {
    let (sent, params) = match split_top_level(s, b';').first() {
        Some(first) => (*first, s.get(first.len()..).unwrap_or("")),
        None => (s, ""),
    };
    // sent-protocol: SWS around each '/' is allowed.
    let (protocol, rest) = sent.split_once('/').ok_or("missing protocol")?;
    let (version, rest) = rest.split_once('/').ok_or("missing version")?;
    if !protocol.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
        return Err("not SIP/2.0");
    }
    let rest = rest.trim_start();
    let transport_end = rest.find([' ', '\t']).ok_or("missing sent-by")?;
    let (transport, sent_by) = rest.split_at_checked(transport_end).ok_or("bad Via")?;
    if !is_token(transport) {
        return Err("bad transport");
    }
    let (host, port) = parse_sent_by(sent_by.trim())?;
    let params = parse_params(params)?;
    if let Some(Some(rport)) = uri::find_param(&params, "rport") {
        uri::parse_port(rport)?;
    }
    Ok(Via {
        transport: transport.to_ascii_uppercase(),
        host,
        port,
        params,
    })
}

/// `host [ COLON port ]`, allowing space around the colon.
fn parse_sent_by(s: &str) -> Result<(Host, Option<u16>), &'static str> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']').ok_or("unbalanced brackets")? + 1;
        let (host, rest) = s.split_at_checked(end).ok_or("bad sent-by")?;
        let rest = rest.trim_start();
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err("junk after host"),
        }
    } else if s.matches(':').count() > 1 {
        // Unbracketed IPv6 is invalid but seen in the wild; no port then.
        let ip = s.parse().map_err(|_| "bad IPv6 address")?;
        return Ok((Host::V6(ip), None));
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host.trim_end(), Some(port)),
            None => (s, None),
        }
    };
    let port = port.map(|p| uri::parse_port(p.trim())).transpose()?;
    Ok((uri::parse_host(host)?, port))
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.sent_by())?;
        uri::write_params(f, &self.params)
    }
}

/// `CSeq: 4711 INVITE` (§20.16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl FromStr for CSeq {
    type Err = ParseError;

    /// Any `u32` is accepted although §8.1.1.5 wants values below 2**31:
    /// refusing a peer's large number gains nothing.
    fn from_str(s: &str) -> Result<CSeq, ParseError> {
        let bad = || ParseError::BadHeader {
            name: "CSeq".to_owned(),
        };
        let mut parts = s.split_whitespace();
        let (Some(seq), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if seq.len() > 10 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(CSeq {
            seq: seq.parse().map_err(|_| bad())?,
            method: method.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` value (§20.44, §20.27).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `Digest` as written.
    pub scheme: String,
    /// Parameters with quotes removed.
    pub params: AuthParams,
}

/// An `Authorization` / `Proxy-Authorization` value (§20.7, §20.28).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub scheme: String,
    pub params: AuthParams,
}

/// Digest parameters that are quoted strings in a challenge (RFC 3261
/// §25.1, RFC 7616 §3.3); `algorithm` and `stale` are tokens.
const CHALLENGE_QUOTED: &[&str] = &["realm", "domain", "nonce", "opaque", "qop"];
const CHALLENGE_TOKENS: &[&str] = &["algorithm", "stale"];
/// In credentials `qop` and `nc` are tokens (the asymmetry is the RFC's).
const CREDENTIALS_QUOTED: &[&str] = &[
    "username", "realm", "nonce", "uri", "response", "cnonce", "opaque",
];
const CREDENTIALS_TOKENS: &[&str] = &["algorithm", "nc", "qop"];

impl Challenge {
    pub fn new(scheme: &str) -> Challenge {
        Challenge {
            scheme: scheme.to_owned(),
            params: Vec::new(),
        }
    }

    /// Case-insensitive lookup of an (unquoted) parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_auth_param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: &str) {
        set_auth_param(&mut self.params, name, value);
    }

    /// The offered qop values: `qop="auth,auth-int"` → `["auth", "auth-int"]`.
    pub fn qop_options(&self) -> Vec<&str> {
        self.param("qop")
            .map(|q| {
                q.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Credentials {
    pub fn new(scheme: &str) -> Credentials {
        Credentials {
            scheme: scheme.to_owned(),
            params: Vec::new(),
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        find_auth_param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: &str) {
        set_auth_param(&mut self.params, name, value);
    }
}

impl FromStr for Challenge {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Challenge, ParseError> {
        let (scheme, params) = parse_auth(s).map_err(bad_value)?;
        Ok(Challenge { scheme, params })
    }
}

impl FromStr for Credentials {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Credentials, ParseError> {
        let (scheme, params) = parse_auth(s).map_err(bad_value)?;
        Ok(Credentials { scheme, params })
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_auth(
            f,
            &self.scheme,
            &self.params,
            CHALLENGE_QUOTED,
            CHALLENGE_TOKENS,
        )
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_auth(
            f,
            &self.scheme,
            &self.params,
            CREDENTIALS_QUOTED,
            CREDENTIALS_TOKENS,
        )
    }
}

fn find_auth_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn set_auth_param(params: &mut Vec<(String, String)>, name: &str, value: &str) {
    match params
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(slot) => slot.1 = value.to_owned(),
        None => params.push((name.to_owned(), value.to_owned())),
    }
}

/// `Scheme name=token, name="quoted, with commas", …`.
fn parse_auth(s: &str) -> Result<(String, AuthParams), &'static str> {
    let s = s.trim();
    let (scheme, rest) = s.split_once([' ', '\t']).unwrap_or((s, ""));
    if !is_token(scheme) {
        return Err("bad auth scheme");
    }
    let params = split_top_level(rest, b',')
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse_auth_param)
        .collect::<Result<_, _>>()?;
    Ok((scheme.to_owned(), params))
}

fn parse_auth_param(item: &str) -> Result<(String, String), &'static str> {
    let (name, value) = item.split_once('=').ok_or("auth parameter without '='")?;
    let (name, value) = (name.trim(), value.trim());
    if !is_token(name) {
        return Err("bad auth parameter name");
    }
    let value = if value.starts_with('"') {
        unquote(value).ok_or("bad quoted string")?
    } else if value.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        value.to_owned()
    } else {
        return Err("bad auth parameter value");
    };
    Ok((name.to_owned(), value))
}

fn write_auth(
    f: &mut fmt::Formatter<'_>,
    scheme: &str,
    params: &[(String, String)],
    quoted: &[&str],
    tokens: &[&str],
) -> fmt::Result {
    f.write_str(scheme)?;
    for (i, (name, value)) in params.iter().enumerate() {
        f.write_str(if i == 0 { " " } else { ", " })?;
        let listed = |list: &[&str]| list.iter().any(|n| n.eq_ignore_ascii_case(name));
        // A value that is not a token must be quoted whatever the RFC says
        // about that parameter, or it would not parse back.
        let as_token = is_token(value) && (listed(tokens) || !listed(quoted));
        if as_token {
            write!(f, "{name}={value}")?;
        } else {
            write!(f, "{name}={}", quote(value))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse, display, parse again: both parses must agree.
    fn round_trip<T>(s: &str) -> T
    where
        T: FromStr + fmt::Display + PartialEq + fmt::Debug,
        T::Err: fmt::Debug,
    {
        let first: T = s.parse().unwrap_or_else(|e| panic!("{s}: {e:?}"));
        let written = first.to_string();
        let second: T = written
            .parse()
            .unwrap_or_else(|e| panic!("{written} (from {s}): {e:?}"));
        assert_eq!(first, second, "{s} -> {written}");
        first
    }

    #[test]
    fn split_list_respects_quotes_and_angles() {
        assert_eq!(
            split_list(r#"<sip:a@x;p=1,2>;x="a,b", sip:b@y , ,"q\",uo" <sip:c@z>"#),
            vec![
                r#"<sip:a@x;p=1,2>;x="a,b""#,
                "sip:b@y",
                r#""q\",uo" <sip:c@z>"#
            ]
        );
        assert_eq!(split_list("INVITE,ACK , BYE"), vec!["INVITE", "ACK", "BYE"]);
        assert!(split_list("").is_empty());
        assert!(split_list(" , ").is_empty());
        // Unbalanced input must not panic and must keep every byte somewhere.
        assert_eq!(
            split_list(r#""unterminated, x"#),
            vec![r#""unterminated, x"#]
        );
        assert_eq!(split_list(">>a,<b"), vec![">>a", "<b"]);
    }

    #[test]
    fn name_addr_with_quoted_display() {
        let n: NameAddr = round_trip(
            r#""Alice \"Al\" Liddell" <sip:alice@atlanta.com;transport=tcp>;tag=1928301774"#,
        );
        assert_eq!(n.display.as_deref(), Some(r#"Alice "Al" Liddell"#));
        assert_eq!(n.uri.transport(), Some("tcp"), "URI params stay in the URI");
        assert_eq!(n.tag(), Some("1928301774"));
    }

    #[test]
    fn name_addr_with_token_display_and_no_display() {
        let n: NameAddr = round_trip("Bob Smith   <sip:bob@biloxi.com>");
        assert_eq!(n.display.as_deref(), Some("Bob Smith"));
        let n: NameAddr = round_trip("<sip:bob@biloxi.com>;tag=a6c85cf");
        assert_eq!(n.display, None);
        assert_eq!(n.to_string(), "<sip:bob@biloxi.com>;tag=a6c85cf");
        let n: NameAddr = round_trip(r#""" <sip:x@y>"#);
        assert_eq!(n.display.as_deref(), Some(""));
    }

    #[test]
    fn bare_addr_spec_params_belong_to_header() {
        let n: NameAddr = round_trip("sip:a@x;tag=1;transport=tcp");
        assert_eq!(n.uri.params, vec![]);
        assert_eq!(n.tag(), Some("1"));
        assert_eq!(n.param("transport"), Some(Some("tcp")));
        assert_eq!(n.to_string(), "<sip:a@x>;tag=1;transport=tcp");
        let tel: NameAddr = round_trip("tel:+15551234;tag=9");
        assert_eq!(tel.uri.user.as_deref(), Some("+15551234"));
        assert_eq!(tel.tag(), Some("9"));
    }

    #[test]
    fn contact_with_sip_instance() {
        let n: NameAddr = round_trip(
            r#"<sip:alice@192.0.2.5:5060;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1;expires=600"#,
        );
        assert_eq!(
            n.param("+sip.instance"),
            Some(Some(r#""<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>""#))
        );
        assert_eq!(
            n.param_unquoted("+SIP.INSTANCE").as_deref(),
            Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>")
        );
        assert_eq!(n.param("reg-id"), Some(Some("1")));
        assert_eq!(n.expires(), Some(600));
        // The bare form with a quoted '<' in a param must not be taken for a name-addr.
        let bare: NameAddr = round_trip(r#"sip:a@x;+sip.instance="<urn:uuid:1>""#);
        assert_eq!(
            bare.param_unquoted("+sip.instance").as_deref(),
            Some("<urn:uuid:1>")
        );
    }

    #[test]
    fn contacts_list_and_wildcard() {
        let value = r#"<sip:a@192.0.2.1>;expires=3600, "B" <sip:b@[2001:db8::2]:5062>;expires=60,sip:c@x;expires=99999999999"#;
        let contacts = Contacts::from_elements(split_list(value)).unwrap();
        let addrs = contacts.addrs();
        assert_eq!(addrs.len(), 3);
        assert_eq!(
            addrs.iter().map(NameAddr::expires).collect::<Vec<_>>(),
            vec![Some(3600), Some(60), Some(u32::MAX)]
        );
        assert_eq!(Contacts::from_elements(["*"]).unwrap(), Contacts::Wildcard);
        assert!(Contacts::from_elements(["*", "sip:a@b"]).is_err());
        assert!(Contacts::from_elements(split_list("<sip:a@b>;expires=abc"))
            .unwrap()
            .addrs()[0]
            .expires()
            .is_none());
    }

    #[test]
    fn name_addr_rejects_malformed() {
        for bad in [
            "",
            "<sip:a@b",
            "\"unterminated <sip:a@b>",
            "\"A\" sip:a@b",
            "<sip:a@b> junk",
            "<sip:a@b>;",
            "<sip:a@b>;=x",
            "<sip:a@b>;tag=\"open",
            "<sip:a@b>;tag=a b",
            "<>",
            "<sip:a@b>, <sip:c@d>",
            "sip:a@b, sip:c@d",
            "A\u{7}B <sip:a@b>",
        ] {
            assert!(bad.parse::<NameAddr>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn via_with_params_and_rport() {
        let v: Via = round_trip(
            "SIP/2.0/udp pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1",
        );
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::Domain("pc33.atlanta.com".into()));
        assert_eq!(v.port, Some(5066));
        assert_eq!(v.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some("192.0.2.1"));
        let filled: Via = round_trip("SIP/2.0/TCP h;rport=5070;branch=z9hG4bKx");
        assert_eq!(filled.rport(), Some(Some(5070)));
        let plain: Via = round_trip("SIP/2.0/TLS h");
        assert_eq!(plain.rport(), None);
        assert_eq!(plain.branch(), None);
    }

    #[test]
    fn via_ipv6_and_odd_whitespace() {
        let v: Via = round_trip(
            "SIP / 2.0 / UDP   [2001:db8::9]:5060 ; branch = z9hG4bK1 ; received=2001:db8::10",
        );
        assert_eq!(v.host, Host::V6("2001:db8::9".parse().unwrap()));
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(v.received(), Some("2001:db8::10"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK1;received=2001:db8::10"
        );
        let spaced: Via = round_trip("SIP/2.0/UDP host.example : 5070");
        assert_eq!(spaced.port, Some(5070));
        let unbracketed: Via = "SIP/2.0/UDP 2001:db8::1;branch=z9hG4bKa".parse().unwrap();
        assert_eq!(unbracketed.host, Host::V6("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn via_setters() {
        let mut v = Via::new("ws", Host::Domain("client.invalid".into()), None);
        v.set_branch("z9hG4bKabc");
        v.set_rport(None);
        assert_eq!(
            v.to_string(),
            "SIP/2.0/WS client.invalid;branch=z9hG4bKabc;rport"
        );
        v.set_rport(Some(40000));
        v.set_received("2001:db8::7".parse().unwrap());
        assert_eq!(
            v.to_string(),
            "SIP/2.0/WS client.invalid;branch=z9hG4bKabc;rport=40000;received=2001:db8::7"
        );
        assert!(v.remove_param("RPORT"));
        assert_eq!(v.rport(), None);
    }

    #[test]
    fn via_rejects_malformed() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/3.0/UDP h",
            "HTTP/2.0/UDP h",
            "SIP/2.0 h",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0/UDP h:",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP [::1] 5060",
            "SIP/2.0/UDP h;rport=abc",
            "SIP/2.0/UDP h;branch=\"x",
            "SIP/2.0/UDP h;;branch=1",
            "SIP/2.0/UDP h junk",
            "SIP/2.0/U(P h",
        ] {
            assert!(bad.parse::<Via>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn cseq() {
        let c: CSeq = round_trip("  4711   INVITE ");
        assert_eq!(c.seq, 4711);
        assert_eq!(c.method, Method::Invite);
        assert_eq!(c.to_string(), "4711 INVITE");
        let c: CSeq = round_trip("4294967295 NEWMETHOD");
        assert_eq!(c.method, Method::Other("NEWMETHOD".into()));
        for bad in [
            "",
            "1",
            "INVITE",
            "-1 INVITE",
            "4294967296 INVITE",
            "1 INVITE x",
            "1x INVITE",
            "1 IN<VITE",
        ] {
            assert!(bad.parse::<CSeq>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn challenge_with_quoted_commas() {
        let c: Challenge =
            round_trip(r#"Digest realm="x", qop="auth,auth-int", nonce="..", algorithm=MD5"#);
        assert_eq!(c.scheme, "Digest");
        assert_eq!(c.param("REALM"), Some("x"));
        assert_eq!(c.param("qop"), Some("auth,auth-int"));
        assert_eq!(c.qop_options(), vec!["auth", "auth-int"]);
        assert_eq!(c.param("nonce"), Some(".."));
        assert_eq!(c.param("algorithm"), Some("MD5"));
        assert_eq!(
            c.to_string(),
            r#"Digest realm="x", qop="auth,auth-int", nonce="..", algorithm=MD5"#
        );
        let mut stale: Challenge = "Digest realm=\"a\\\"b\",stale=TRUE,nonce=abc"
            .parse()
            .unwrap();
        assert_eq!(stale.param("realm"), Some("a\"b"));
        stale.set_param("nonce", "new");
        assert_eq!(
            stale.to_string(),
            r#"Digest realm="a\"b", stale=TRUE, nonce="new""#
        );
    }

    #[test]
    fn credentials_quote_the_right_params() {
        let mut c = Credentials::new("Digest");
        for (name, value) in [
            ("username", "alice"),
            ("realm", "atlanta.com"),
            ("nonce", "84a4cc6f"),
            ("uri", "sip:bob@biloxi.com"),
            ("response", "7587245234b3434cc3412213e5f113a5"),
            ("algorithm", "MD5"),
            ("cnonce", "0a4f113b"),
            ("opaque", "5ccc069c"),
            ("qop", "auth"),
            ("nc", "00000001"),
        ] {
            c.set_param(name, value);
        }
        let written = c.to_string();
        assert_eq!(
            written,
            r#"Digest username="alice", realm="atlanta.com", nonce="84a4cc6f", uri="sip:bob@biloxi.com", response="7587245234b3434cc3412213e5f113a5", algorithm=MD5, cnonce="0a4f113b", opaque="5ccc069c", qop=auth, nc=00000001"#
        );
        let back: Credentials = round_trip(&written);
        assert_eq!(back, c);
    }

    #[test]
    fn auth_rejects_malformed() {
        for bad in [
            "",
            "Dig est",
            "Digest realm",
            "Digest realm=\"x",
            "Digest =x",
            "Digest realm=a b",
            "\"Digest\" realm=x",
        ] {
            assert!(bad.parse::<Challenge>().is_err(), "{bad:?} should fail");
        }
        assert_eq!("Digest".parse::<Credentials>().unwrap().params, vec![]);
    }

    #[test]
    fn quoting_helpers() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(unquote(r#""a\"b\\c""#).as_deref(), Some(r#"a"b\c"#));
        assert_eq!(unquote(r#""a" x"#), None);
        assert_eq!(unquote("plain"), None);
        assert_eq!(unquote("\"trailing\\"), None);
        assert!(is_token("z9hG4bK-._!%*+`'~"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
    }
}
