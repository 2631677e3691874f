//! SIP messages (RFC 3261 §7): methods, the ordered header list, requests,
//! responses, the datagram parser and the serializer, and the one error type
//! of the message layer.
//!
//! Owns: start lines, header lines (folding, compact names, limits),
//! Content-Length and the body. Header *values* are kept as strings and
//! typed on demand by the accessors, so a message with one malformed
//! header still parses and the UA can answer 400 naming that header.
//!
//! Limits (hostile input gets a typed error, never a panic or an unbounded
//! allocation): a message is at most [`MAX_MESSAGE_LEN`] bytes with at most
//! [`MAX_HEADERS`] header lines; every allocation is bounded by the input.

use std::fmt;
use std::str::FromStr;

use super::headers::{
    is_token, parse_delta_seconds, split_list, CSeq, Challenge, Contacts, Credentials, NameAddr,
    Via,
};
use super::uri::Uri;

/// Largest message accepted, headers and body together (64 KiB). Also the
/// most a UDP datagram can carry, and far above any SDP offer we send.
pub const MAX_MESSAGE_LEN: usize = 65_536;
/// Most header lines (after unfolding) in one message.
pub const MAX_HEADERS: usize = 128;

/// Why bytes are not a SIP message, or why a header value is malformed.
/// The `Display` text is short enough for a 400 reason phrase.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Empty message")]
    Empty,
    #[error("Message too large")]
    TooLarge,
    #[error("Too many header fields")]
    TooManyHeaders,
    /// No blank line ends the header section.
    #[error("Truncated message")]
    Truncated,
    #[error("Body shorter than Content-Length ({actual} of {declared} bytes)")]
    BodyTruncated { declared: usize, actual: usize },
    #[error("Malformed start line")]
    BadStartLine,
    #[error("Version not supported")]
    BadVersion,
    #[error("Bad method")]
    BadMethod,
    #[error("Bad status code")]
    BadStatusCode,
    #[error("Bad URI: {0}")]
    BadUri(String),
    /// A header line without a colon, with a name that is not a token, or a
    /// continuation line with no header before it.
    #[error("Malformed header line")]
    BadHeaderLine,
    #[error("Bad {name} header")]
    BadHeader { name: String },
    /// A typed value parsed on its own (outside a message) is malformed.
    #[error("Bad header value: {0}")]
    BadValue(&'static str),
    #[error("Missing {0} header")]
    MissingHeader(&'static str),
    /// Not a decimal number, or given more than once.
    #[error("Bad Content-Length")]
    BadContentLength,
    /// A stream transport cannot find the end of a message without it.
    #[error("Missing Content-Length on a stream")]
    MissingContentLength,
}

impl ParseError {
    /// The response a UAS sends for this error (§21.4.19, §21.5.7).
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::TooLarge => 513,
            ParseError::BadVersion => 505,
            _ => 400,
        }
    }
}

/// A SIP method. Methods are case-sensitive (§7.1): `invite` is `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl FromStr for Method {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Method, ParseError> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other if is_token(other) => Method::Other(other.to_owned()),
            _ => return Err(ParseError::BadMethod),
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compact forms (§7.3.3 and the RFCs that define the headers).
const COMPACT_NAMES: &[(&str, &str)] = &[
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// Known headers in their usual spelling; others are kept as written.
const KNOWN_NAMES: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Headers whose value is a comma-separated list (§7.3.1), so that several
/// lines are equivalent to one joined line. The authentication headers are
/// deliberately absent: their commas separate parameters.
const LIST_HEADERS: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Call-Info",
    "Contact",
    "Content-Encoding",
    "Content-Language",
    "Error-Info",
    "In-Reply-To",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Proxy-Require",
    "Reason",
    "Record-Route",
    "Reject-Contact",
    "Require",
    "Route",
    "Service-Route",
    "Supported",
    "Unsupported",
    "Via",
    "Warning",
];

/// The full, conventionally spelled name for `name` (compact forms expanded,
/// case fixed for known headers); unknown names come back unchanged.
pub fn canonical_name(name: &str) -> &str {
    if let Some((_, full)) = COMPACT_NAMES
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
    {
        return full;
    }
    KNOWN_NAMES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or(name)
}

fn is_list_header(name: &str) -> bool {
    LIST_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The header fields of a message, in wire order. Names are stored in
/// canonical form and compared case-insensitively; lookups accept compact
/// names too. Values never contain control characters other than HT:
/// parsing refuses them and the mutators replace them with spaces, so no
/// value can inject a header line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name).to_owned();
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    }

    /// The first line's value, as written (a list header is not split).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }

    /// Every value: one per line, or one per element for list headers.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let split = is_list_header(canonical_name(name));
        let mut all = Vec::new();
        for value in self.values(name) {
            if split {
                all.extend(split_list(value));
            } else {
                all.push(value);
            }
        }
        all
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a line. The name is canonicalised; it must be a token.
    pub fn push(&mut self, name: &str, value: impl fmt::Display) {
        self.entries.push(entry(name, value));
    }

    /// Puts a line above the first line of that name (or at the very top if
    /// there is none), as a proxy adds its Via or Record-Route.
    pub fn insert_first(&mut self, name: &str, value: impl fmt::Display) {
        let (name, value) = entry(name, value);
        let at = self
            .entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(&name))
            .unwrap_or(0);
        self.entries.insert(at, (name, value));
    }

    /// Removes every line of that name; returns how many went.
    pub fn remove(&mut self, name: &str) -> usize {
        let name = canonical_name(name).to_owned();
        let before = self.entries.len();
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        before - self.entries.len()
    }

    /// Replaces all lines of that name by one, where the first one was.
    pub fn set(&mut self, name: &str, value: impl fmt::Display) {
        let (name, value) = entry(name, value);
        match self
            .entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some(first) => {
                let mut index = 0;
                self.entries.retain(|(n, _)| {
                    let keep = index <= first || !n.eq_ignore_ascii_case(&name);
                    index += 1;
                    keep
                });
                if let Some(slot) = self.entries.get_mut(first) {
                    slot.1 = value;
                }
            }
            None => self.entries.push((name, value)),
        }
    }

    /// Takes the first element of a header (the top Via or Route), splitting
    /// a comma-joined line when needed.
    pub fn remove_first_value(&mut self, name: &str) -> Option<String> {
        let name = canonical_name(name).to_owned();
        let index = self
            .entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(&name))?;
        let value = self.entries.get(index)?.1.clone();
        if is_list_header(&name) {
            let elements = split_list(&value);
            if let Some((first, rest)) = elements.split_first() {
                if rest.is_empty() {
                    self.entries.remove(index);
                } else if let Some(slot) = self.entries.get_mut(index) {
                    slot.1 = rest.join(", ");
                }
                return Some(first.to_string());
            }
        }
        self.entries.remove(index);
        Some(value)
    }

    fn single(&self, name: &'static str) -> Result<Option<&str>, ParseError> {
        let mut values = self.values(name);
        let first = values.next();
        // §7.3.1: a header that is not a list may appear only once.
        if values.next().is_some() {
            return Err(bad_header(name));
        }
        Ok(first)
    }

    fn required(&self, name: &'static str) -> Result<&str, ParseError> {
        self.single(name)?.ok_or(ParseError::MissingHeader(name))
    }

    fn name_addr(&self, name: &'static str) -> Result<NameAddr, ParseError> {
        self.required(name)?.parse().map_err(|_| bad_header(name))
    }

    fn name_addr_list(&self, name: &'static str) -> Result<Vec<NameAddr>, ParseError> {
        self.get_all(name)
            .into_iter()
            .map(|v| v.parse().map_err(|_| bad_header(name)))
            .collect()
    }

    fn typed_list<T: FromStr>(&self, name: &'static str) -> Result<Vec<T>, ParseError> {
        self.get_all(name)
            .into_iter()
            .map(|v| v.parse().map_err(|_| bad_header(name)))
            .collect()
    }

    /// Every Via hop, top first, across lines and comma-joined values.
    pub fn via(&self) -> Result<Vec<Via>, ParseError> {
        self.typed_list("Via")
    }

    pub fn top_via(&self) -> Result<Via, ParseError> {
        let first_line = self.get("Via").ok_or(ParseError::MissingHeader("Via"))?;
        let top = split_list(first_line).into_iter().next();
        top.ok_or_else(|| bad_header("Via"))?.parse()
    }

    pub fn from(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("From")
    }

    pub fn to(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("To")
    }

    pub fn call_id(&self) -> Result<&str, ParseError> {
        let id = self.required("Call-ID")?;
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(bad_header("Call-ID"));
        }
        Ok(id)
    }

    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        self.required("CSeq")?.parse()
    }

    /// All Contact lines together; no Contact header gives an empty list.
    pub fn contacts(&self) -> Result<Contacts, ParseError> {
        Contacts::from_elements(self.get_all("Contact")).map_err(|_| bad_header("Contact"))
    }

    /// §20.22: 0–255.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        let Some(value) = self.single("Max-Forwards")? else {
            return Ok(None);
        };
        let hops = parse_delta_seconds(value).and_then(|n| u8::try_from(n).ok());
        hops.map(Some).ok_or_else(|| bad_header("Max-Forwards"))
    }

    /// Delta-seconds; values beyond `u32` saturate.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.single("Expires")?
            .map(|v| parse_delta_seconds(v).ok_or_else(|| bad_header("Expires")))
            .transpose()
    }

    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        let mut values = self.values("Content-Length");
        let first = values.next();
        if values.next().is_some() {
            return Err(ParseError::BadContentLength);
        }
        first.map(parse_content_length).transpose()
    }

    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type")
    }

    pub fn record_route(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addr_list("Record-Route")
    }

    pub fn route(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addr_list("Route")
    }

    pub fn refer_to(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("Refer-To")
    }

    /// One challenge per line (§7.3.1 forbids joining them).
    pub fn www_authenticate(&self) -> Result<Vec<Challenge>, ParseError> {
        self.typed_list("WWW-Authenticate")
    }

    pub fn proxy_authenticate(&self) -> Result<Vec<Challenge>, ParseError> {
        self.typed_list("Proxy-Authenticate")
    }

    pub fn authorization(&self) -> Result<Vec<Credentials>, ParseError> {
        self.typed_list("Authorization")
    }

    pub fn proxy_authorization(&self) -> Result<Vec<Credentials>, ParseError> {
        self.typed_list("Proxy-Authorization")
    }
}

fn bad_header(name: &str) -> ParseError {
    ParseError::BadHeader {
        name: name.to_owned(),
    }
}

fn entry(name: &str, value: impl fmt::Display) -> (String, String) {
    let value = value.to_string();
    let value = if value.chars().any(is_forbidden_in_value) {
        value
            .chars()
            .map(|c| if is_forbidden_in_value(c) { ' ' } else { c })
            .collect()
    } else {
        value
    };
    (
        canonical_name(name).to_owned(),
        value.trim_matches([' ', '\t']).to_owned(),
    )
}

/// Control characters other than HT: CR and LF would split the line, the
/// rest have no business in a header (§25.1 TEXT-UTF8).
fn is_forbidden_in_value(c: char) -> bool {
    c.is_control() && c != '\t'
}

/// Generates the typed header accessors on a message type by delegating
/// to its `headers`, so Request and Response read the same way.
macro_rules! header_accessors {
    ($ty:ty) => {
        impl $ty {
            /// Every Via hop, top first, across lines.
            pub fn via(&self) -> Result<Vec<Via>, ParseError> {
                self.headers.via()
            }
            pub fn top_via(&self) -> Result<Via, ParseError> {
                self.headers.top_via()
            }
            pub fn from(&self) -> Result<NameAddr, ParseError> {
                self.headers.from()
            }
            pub fn to(&self) -> Result<NameAddr, ParseError> {
                self.headers.to()
            }
            pub fn call_id(&self) -> Result<&str, ParseError> {
                self.headers.call_id()
            }
            pub fn cseq(&self) -> Result<CSeq, ParseError> {
                self.headers.cseq()
            }
            pub fn contacts(&self) -> Result<Contacts, ParseError> {
                self.headers.contacts()
            }
            pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
                self.headers.max_forwards()
            }
            pub fn expires(&self) -> Result<Option<u32>, ParseError> {
                self.headers.expires()
            }
            /// The header's value; the body length is what `to_bytes` writes.
            pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
                self.headers.content_length()
            }
            pub fn record_route(&self) -> Result<Vec<NameAddr>, ParseError> {
                self.headers.record_route()
            }
            pub fn route(&self) -> Result<Vec<NameAddr>, ParseError> {
                self.headers.route()
            }
        }
    };
}

/// A SIP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response. `reason` may be empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

header_accessors!(Request);
header_accessors!(Response);

impl Request {
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// §8.1.1: To, From, CSeq, Call-ID, Max-Forwards and Via must be there,
    /// once each (Via at least once), parse, and CSeq must carry this
    /// request's method. The parser does not insist, so that a UAS can
    /// answer 400 with this error as the reason.
    pub fn check_mandatory(&self) -> Result<(), ParseError> {
        for name in ["To", "From", "CSeq", "Call-ID", "Max-Forwards", "Via"] {
            if !self.headers.contains(name) {
                return Err(ParseError::MissingHeader(name));
            }
        }
        self.to()?;
        self.from()?;
        let cseq = self.cseq()?;
        self.call_id()?;
        self.max_forwards()?;
        self.via()?;
        if cseq.method != self.method {
            return Err(bad_header("CSeq"));
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let start_line = format!("{} {} SIP/2.0", self.method, self.uri);
        serialize(&start_line, &self.headers, &self.body)
    }
}

impl Response {
    pub fn new(code: u16, reason: &str) -> Response {
        Response {
            code,
            reason: reason.to_owned(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// §8.2.6.2 / §20: what every response carries.
    pub fn check_mandatory(&self) -> Result<(), ParseError> {
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if !self.headers.contains(name) {
                return Err(ParseError::MissingHeader(name));
            }
        }
        self.via()?;
        self.from()?;
        self.to()?;
        self.call_id()?;
        self.cseq()?;
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // The reason is a public field: keep CR/LF out of the status line.
        let reason: String = self
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let start_line = format!("SIP/2.0 {:03} {}", self.code, reason.trim());
        serialize(&start_line, &self.headers, &self.body)
    }
}

/// The usual reason phrase for a status code (§21), or "" if unknown.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "",
    }
}

/// Start line, headers in order with full names and CRLF, Content-Length
/// equal to the body (where the message had it, else last), blank line, body.
fn serialize(start_line: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut head = String::with_capacity(256 + headers.len() * 64);
    head.push_str(start_line);
    head.push_str("\r\n");
    let content_length = body.len().to_string();
    let mut wrote_length = false;
    for (name, value) in headers.iter() {
        let value = if name.eq_ignore_ascii_case("Content-Length") {
            if wrote_length {
                continue;
            }
            wrote_length = true;
            content_length.as_str()
        } else {
            value
        };
        push_header_line(&mut head, name, value);
    }
    if !wrote_length {
        push_header_line(&mut head, "Content-Length", &content_length);
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

fn push_header_line(head: &mut String, name: &str, value: &str) {
    head.push_str(name);
    head.push_str(": ");
    head.push_str(value);
    head.push_str("\r\n");
}

/// A parsed datagram or stream frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    /// Parses one message. CRLFs before the start line are skipped (§7.5).
    /// With Content-Length the body is exactly that many bytes and anything
    /// after it is ignored (§18.3, datagram rule); without it the body runs
    /// to the end of `input`. LF-only line ends and folded lines are read.
    pub fn parse(input: &[u8]) -> Result<Message, ParseError> {
        if input.len() > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge);
        }
        let input = skip_leading_newlines(input);
        if input.is_empty() {
            return Err(ParseError::Empty);
        }
        let body_start = header_section_end(input, 0).ok_or(ParseError::Truncated)?;
        let (head, rest) = input
            .split_at_checked(body_start)
            .ok_or(ParseError::Truncated)?;
        // Lossy: a peer's Latin-1 display name should not cost it the call.
        let head = String::from_utf8_lossy(head);
        let mut lines = head.lines();
        let start_line = parse_start_line(lines.next().unwrap_or_default())?;
        let mut headers = parse_header_lines(lines)?;
        let body = take_body(&mut headers, rest)?;
        Ok(match start_line {
            StartLine::Request { method, uri } => Message::Request(Request {
                method,
                uri,
                headers,
                body,
            }),
            StartLine::Response { code, reason } => Message::Response(Response {
                code,
                reason,
                headers,
                body,
            }),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }
}

fn skip_leading_newlines(mut input: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = input {
        input = rest;
    }
    input
}

/// Where the body starts: just past the first empty line (CRLF or bare LF)
/// at or after `from`. Shared with the stream framer so both agree.
pub(super) fn header_section_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let newline = at + buf.get(at..)?.iter().position(|&b| b == b'\n')?;
        match buf.get(newline + 1..)? {
            [b'\n', ..] => return Some(newline + 2),
            [b'\r', b'\n', ..] => return Some(newline + 3),
            _ => at = newline + 1,
        }
    }
}

/// 1*DIGIT, no sign, within the message limit.
pub(super) fn parse_content_length(value: &str) -> Result<usize, ParseError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadContentLength);
    }
    let length = value
        .bytes()
        .try_fold(0usize, |acc, b| {
            acc.checked_mul(10)?.checked_add(usize::from(b - b'0'))
        })
        .ok_or(ParseError::TooLarge)?;
    if length > MAX_MESSAGE_LEN {
        return Err(ParseError::TooLarge);
    }
    Ok(length)
}

enum StartLine {
    Request { method: Method, uri: Uri },
    Response { code: u16, reason: String },
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if line.starts_with([' ', '\t']) || line.chars().any(char::is_control) {
        return Err(ParseError::BadStartLine);
    }
    let is_status_line = line
        .get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("SIP/"));
    if is_status_line {
        parse_status_line(line)
    } else {
        parse_request_line(line)
    }
}

fn check_version(version: &str) -> Result<(), ParseError> {
    if version.eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else {
        Err(ParseError::BadVersion)
    }
}

/// `Method SP Request-URI SP SIP/2.0`; runs of spaces are tolerated.
fn parse_request_line(line: &str) -> Result<StartLine, ParseError> {
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine);
    };
    let method = method.parse()?;
    check_version(version)?;
    Ok(StartLine::Request {
        method,
        uri: uri.parse()?,
    })
}

/// `SIP/2.0 SP 3DIGIT SP Reason-Phrase`; the reason may be empty or absent.
fn parse_status_line(line: &str) -> Result<StartLine, ParseError> {
    let (version, rest) = line.split_once(' ').ok_or(ParseError::BadStartLine)?;
    check_version(version)?;
    let rest = rest.trim_start_matches(' ');
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadStatusCode);
    }
    let code: u16 = code.parse().map_err(|_| ParseError::BadStatusCode)?;
    if !(100..=699).contains(&code) {
        return Err(ParseError::BadStatusCode);
    }
    Ok(StartLine::Response {
        code,
        reason: reason.trim().to_owned(),
    })
}

/// Header lines up to the blank line: unfolds continuations (§7.3.1: the
/// fold is equivalent to one SP), canonicalises names, trims values.
fn parse_header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, ParseError> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            let (_, value) = entries.last_mut().ok_or(ParseError::BadHeaderLine)?;
            value.push(' ');
            value.push_str(line.trim_matches([' ', '\t']));
            continue;
        }
        if entries.len() == MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::BadHeaderLine)?;
        // HCOLON allows whitespace before the colon.
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ParseError::BadHeaderLine);
        }
        entries.push((canonical_name(name).to_owned(), value.to_owned()));
    }
    for (name, value) in &mut entries {
        if value.chars().any(is_forbidden_in_value) {
            return Err(bad_header(name));
        }
        let trimmed = value.trim_matches([' ', '\t']);
        if trimmed.len() != value.len() {
            *value = trimmed.to_owned();
        }
    }
    Ok(Headers { entries })
}

/// The body per Content-Length (normalising its value), or all of `rest`.
fn take_body(headers: &mut Headers, rest: &[u8]) -> Result<Vec<u8>, ParseError> {
    let mut lengths = headers
        .entries
        .iter_mut()
        .filter(|(n, _)| n == "Content-Length");
    let value = match (lengths.next(), lengths.next()) {
        (None, _) => return Ok(rest.to_vec()),
        (Some((_, value)), None) => value,
        (Some(_), Some(_)) => return Err(ParseError::BadContentLength),
    };
    let declared = parse_content_length(value)?;
    *value = declared.to_string();
    let body = rest.get(..declared).ok_or(ParseError::BodyTruncated {
        declared,
        actual: rest.len(),
    })?;
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    use super::super::uri::{Host, Scheme};

    fn parse(text: &str) -> Message {
        Message::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn request(text: &str) -> Request {
        match parse(text) {
            Message::Request(r) => r,
            Message::Response(_) => panic!("not a request"),
        }
    }

    fn response(text: &str) -> Response {
        match parse(text) {
            Message::Response(r) => r,
            Message::Request(_) => panic!("not a response"),
        }
    }

    fn parse_err(text: &[u8]) -> ParseError {
        match Message::parse(text) {
            Ok(m) => panic!("parsed: {m:?}"),
            Err(e) => e,
        }
    }

    /// parse → to_bytes → parse gives the same message (Content-Length
    /// aside, which serialization always adds), and bytes are a fixed point.
    fn assert_round_trip(message: &Message) {
        let bytes = message.to_bytes();
        let again = Message::parse(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        assert_eq!(again.to_bytes(), bytes);
        let strip = |m: &Message| {
            let mut m = m.clone();
            m.headers_mut().remove("Content-Length");
            m
        };
        assert_eq!(strip(&again), strip(message));
    }

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\
        \r\n\
        v=0\n";

    #[test]
    fn parses_a_plain_invite() {
        let r = request(INVITE);
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri.to_string(), "sip:bob@biloxi.example.com");
        assert_eq!(r.body, b"v=0\n");
        assert_eq!(r.max_forwards(), Ok(Some(70)));
        assert_eq!(r.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(r.to().unwrap().display.as_deref(), Some("Bob"));
        assert_eq!(r.call_id(), Ok("a84b4c76e66710@pc33.atlanta.example.com"));
        assert_eq!(r.cseq().unwrap().seq, 314159);
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(r.content_length(), Ok(Some(4)));
        assert_eq!(r.headers.content_type(), Some("application/sdp"));
        assert_eq!(r.check_mandatory(), Ok(()));
        assert_round_trip(&Message::Request(r));
    }

    #[test]
    fn serialization_is_canonical() {
        let r = request(INVITE);
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(
            text, INVITE,
            "an already canonical message is written back unchanged"
        );
    }

    #[test]
    fn ipv6_in_request_uri_and_via() {
        let r = request(
            "OPTIONS sip:alice@[2001:db8::1]:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP [2001:db8::2]:5062;branch=z9hG4bKv6;rport\r\n\
             Content-Length: 0\r\n\r\n",
        );
        assert_eq!(r.uri.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(r.uri.port, Some(5060));
        let via = r.top_via().unwrap();
        assert_eq!(
            via.host,
            Host::V6("2001:db8::2".parse::<Ipv6Addr>().unwrap())
        );
        assert_eq!(via.port, Some(5062));
        assert_eq!(via.rport(), Some(None));
        assert_round_trip(&Message::Request(r));
    }

    #[test]
    fn tel_request_uri_does_not_fail_the_message() {
        let r =
            request("INVITE tel:+1-201-555-0123;phone-context=example.com SIP/2.0\r\nl: 0\r\n\r\n");
        assert_eq!(r.uri.scheme, Scheme::Tel);
        assert_eq!(r.uri.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(r.uri.param("phone-context"), Some(Some("example.com")));
        let urn = request("INVITE urn:service:sos SIP/2.0\r\n\r\n");
        assert_eq!(urn.uri.scheme, Scheme::Other("urn".into()));
        assert_round_trip(&Message::Request(r));
        assert_round_trip(&Message::Request(urn));
    }

    #[test]
    fn register_ok_with_several_bindings() {
        let r = response(
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/TCP client.example.com:5060;branch=z9hG4bKnashds7;received=192.0.2.4\r\n\
             To: <sip:bob@example.com>;tag=2493k59kd\r\n\
             From: <sip:bob@example.com>;tag=456248\r\n\
             Call-ID: 843817637684230@998sdasdh09\r\n\
             CSeq: 1826 REGISTER\r\n\
             Contact: <sip:bob@192.0.2.4>;expires=3600, \"Desk\" <sip:bob@[2001:db8::4]:5070;transport=tcp>;expires=120\r\n\
             m: <sip:bob@198.51.100.9>;expires=60;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\r\n\
             Content-Length: 0\r\n\r\n",
        );
        let contacts = r.contacts().unwrap();
        let addrs = contacts.addrs();
        assert_eq!(addrs.len(), 3);
        let expires: Vec<_> = addrs.iter().map(|c| c.expires()).collect();
        assert_eq!(expires, vec![Some(3600), Some(120), Some(60)]);
        assert_eq!(addrs[1].display.as_deref(), Some("Desk"));
        assert_eq!(addrs[1].uri.transport(), Some("tcp"));
        assert_eq!(
            addrs[2].param_unquoted("+sip.instance").as_deref(),
            Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>")
        );
        assert_eq!(r.check_mandatory(), Ok(()));
        assert_round_trip(&Message::Response(r));
    }

    #[test]
    fn contact_wildcard() {
        let r = request("REGISTER sip:example.com SIP/2.0\r\nContact: *\r\nExpires: 0\r\n\r\n");
        assert_eq!(r.contacts(), Ok(Contacts::Wildcard));
        assert_eq!(r.expires(), Ok(Some(0)));
        let none = request("REGISTER sip:example.com SIP/2.0\r\n\r\n");
        assert_eq!(none.contacts(), Ok(Contacts::Addrs(vec![])));
    }

    #[test]
    fn www_authenticate_with_quoted_commas() {
        let r = response(
            "SIP/2.0 401 Unauthorized\r\n\
             WWW-Authenticate: Digest realm=\"x\", qop=\"auth,auth-int\", nonce=\"..\", algorithm=MD5\r\n\
             WWW-Authenticate: Digest realm=\"x\", nonce=\"n2\", algorithm=SHA-256\r\n\
             Proxy-Authenticate: Digest realm=\"proxy\", nonce=\"p\"\r\n\r\n",
        );
        let challenges = r.headers.www_authenticate().unwrap();
        assert_eq!(challenges.len(), 2, "commas inside quotes split nothing");
        assert_eq!(challenges[0].param("qop"), Some("auth,auth-int"));
        assert_eq!(challenges[0].param("algorithm"), Some("MD5"));
        assert_eq!(challenges[1].param("algorithm"), Some("SHA-256"));
        assert_eq!(
            r.headers.proxy_authenticate().unwrap()[0].param("realm"),
            Some("proxy")
        );
        assert_eq!(r.headers.get_all("WWW-Authenticate").len(), 2);
        assert_round_trip(&Message::Response(r));
    }

    #[test]
    fn comma_joined_via_lines_give_all_hops_in_order() {
        let r = response(
            "SIP/2.0 180 Ringing\r\n\
             Via: SIP/2.0/UDP p1.example;branch=z9hG4bK1, SIP/2.0/TCP p2.example:5070;branch=z9hG4bK2\r\n\
             v: SIP/2.0/UDP [2001:db8::3];branch=z9hG4bK3\r\n\
             VIA: SIP/2.0/TLS p4.example;branch=z9hG4bK4 ,SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK5\r\n\r\n",
        );
        let hops = r.via().unwrap();
        let branches: Vec<_> = hops.iter().map(|v| v.branch().unwrap()).collect();
        assert_eq!(
            branches,
            ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3", "z9hG4bK4", "z9hG4bK5"]
        );
        assert_eq!(hops[1].transport, "TCP");
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_round_trip(&Message::Response(r));
    }

    #[test]
    fn compact_names_are_expanded() {
        let r = request(
            "SUBSCRIBE sip:x@example.com SIP/2.0\r\n\
             v: SIP/2.0/UDP h;branch=z9hG4bKc\r\n\
             i: compact@h\r\n\
             m: <sip:me@h>\r\n\
             e: gzip\r\n\
             c: text/plain\r\n\
             f: <sip:me@h>;tag=1\r\n\
             s: hello\r\n\
             k: 100rel, timer\r\n\
             t: <sip:x@example.com>\r\n\
             o: presence\r\n\
             r: <sip:y@example.com>\r\n\
             u: refer\r\n\
             b: <sip:z@example.com>\r\n\
             x: 1800\r\n\
             Max-Forwards: 70\r\n\
             CSeq: 1 SUBSCRIBE\r\n\
             l: 2\r\n\r\nhi",
        );
        let names: Vec<_> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Via",
                "Call-ID",
                "Contact",
                "Content-Encoding",
                "Content-Type",
                "From",
                "Subject",
                "Supported",
                "To",
                "Event",
                "Refer-To",
                "Allow-Events",
                "Referred-By",
                "Session-Expires",
                "Max-Forwards",
                "CSeq",
                "Content-Length"
            ]
        );
        assert_eq!(
            r.headers.get("I"),
            Some("compact@h"),
            "lookups accept compact names"
        );
        assert_eq!(r.headers.get_all("supported"), ["100rel", "timer"]);
        assert_eq!(
            r.headers.refer_to().unwrap().uri.to_string(),
            "sip:y@example.com"
        );
        assert_eq!(r.body, b"hi");
        assert_eq!(r.check_mandatory(), Ok(()));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.contains("\r\nCall-ID: compact@h\r\n") && !text.contains("\r\ni:"));
        assert_round_trip(&Message::Request(r));
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let r =
            request("BYE sip:a@b SIP/2.0\r\ncall-id: x1\r\nCSEQ: 2 BYE\r\nX-Custom: kept\r\n\r\n");
        assert_eq!(r.call_id(), Ok("x1"));
        assert_eq!(r.cseq().unwrap().method, Method::Bye);
        assert_eq!(r.headers.get("x-CUSTOM"), Some("kept"));
        let names: Vec<_> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["Call-ID", "CSeq", "X-Custom"],
            "unknown names kept as written"
        );
    }

    #[test]
    fn lf_only_line_endings() {
        let lf = INVITE.replace("\r\n", "\n");
        let r = request(&lf);
        assert_eq!(r.body, b"v=0\n");
        assert_eq!(r.check_mandatory(), Ok(()));
        assert_eq!(r.to_bytes(), request(INVITE).to_bytes());
        let mixed = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP h\r\nContent-Length: 1\n\r\nxJUNK";
        assert_eq!(response(mixed).body, b"x");
    }

    #[test]
    fn folded_header_lines_are_unfolded() {
        let r = request(
            "INVITE sip:a@b SIP/2.0\r\n\
             Subject: I know you're there,\r\n  pick up\r\n\t the phone\r\n\
             Via: SIP/2.0/UDP\r\n  h.example;branch=z9hG4bKf\r\n\
             Route: <sip:p1.example;lr>,\r\n <sip:p2.example;lr>\r\n\r\n",
        );
        assert_eq!(
            r.headers.get("Subject"),
            Some("I know you're there, pick up the phone")
        );
        assert_eq!(r.top_via().unwrap().host, Host::Domain("h.example".into()));
        assert_eq!(r.route().unwrap().len(), 2);
        assert_eq!(
            parse_err(b"INVITE sip:a@b SIP/2.0\r\n folded: before any header\r\n\r\n"),
            ParseError::BadHeaderLine
        );
        assert_round_trip(&Message::Request(r));
    }

    #[test]
    fn content_length_is_honoured() {
        let base = "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\n";
        let extra = request(&format!("{base}helloEXTRA BYTES"));
        assert_eq!(extra.body, b"hello", "bytes after the body are ignored");
        assert_eq!(
            parse_err(format!("{base}hell").as_bytes()),
            ParseError::BodyTruncated {
                declared: 5,
                actual: 4
            }
        );
        let without = request("MESSAGE sip:a@b SIP/2.0\r\n\r\nto the end\r\n");
        assert_eq!(
            without.body, b"to the end\r\n",
            "no Content-Length: body runs to the end"
        );
        assert_eq!(without.content_length(), Ok(None));
        let zero = request("MESSAGE sip:a@b SIP/2.0\r\nl:0\r\n\r\nignored");
        assert!(zero.body.is_empty());
        let padded = request("MESSAGE sip:a@b SIP/2.0\r\nContent-Length:   0005 \r\n\r\nhello");
        assert_eq!(
            padded.headers.get("Content-Length"),
            Some("5"),
            "normalised"
        );
    }

    #[test]
    fn bad_content_lengths() {
        let with = |cl: &str| format!("MESSAGE sip:a@b SIP/2.0\r\n{cl}\r\n\r\nhello");
        assert_eq!(
            parse_err(with("Content-Length: 5\r\nContent-Length: 5").as_bytes()),
            ParseError::BadContentLength
        );
        assert_eq!(
            parse_err(with("Content-Length: 5\r\nl: 4").as_bytes()),
            ParseError::BadContentLength
        );
        assert_eq!(
            parse_err(with("Content-Length: -1").as_bytes()),
            ParseError::BadContentLength
        );
        assert_eq!(
            parse_err(with("Content-Length: +5").as_bytes()),
            ParseError::BadContentLength
        );
        assert_eq!(
            parse_err(with("Content-Length: 5 5").as_bytes()),
            ParseError::BadContentLength
        );
        assert_eq!(
            parse_err(with("Content-Length: 0x5").as_bytes()),
            ParseError::BadContentLength
        );
        assert_eq!(
            parse_err(with("Content-Length:").as_bytes()),
            ParseError::BadContentLength
        );
        assert_eq!(
            parse_err(with("Content-Length: 99999999999999999999999999").as_bytes()),
            ParseError::TooLarge
        );
        assert_eq!(
            parse_err(with("Content-Length: 65537").as_bytes()),
            ParseError::TooLarge
        );
        assert!(matches!(
            parse_err(with("Content-Length: 65536").as_bytes()),
            ParseError::BodyTruncated {
                declared: 65536,
                ..
            }
        ));
    }

    #[test]
    fn start_line_rules() {
        assert_eq!(
            parse_err(b"INVITE sip:a@b SIP/3.0\r\n\r\n"),
            ParseError::BadVersion
        );
        assert_eq!(
            parse_err(b"INVITE sip:a@b HTTP/1.1\r\n\r\n"),
            ParseError::BadVersion
        );
        assert_eq!(parse_err(b"SIP/2.1 200 OK\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(
            parse_err(b"INVITE sip:a@b\r\n\r\n"),
            ParseError::BadStartLine
        );
        assert_eq!(
            parse_err(b"INVITE sip:a@b SIP/2.0 extra\r\n\r\n"),
            ParseError::BadStartLine
        );
        assert_eq!(
            parse_err(b" INVITE sip:a@b SIP/2.0\r\n\r\n"),
            ParseError::BadStartLine
        );
        assert_eq!(
            parse_err(b"INV@TE sip:a@b SIP/2.0\r\n\r\n"),
            ParseError::BadMethod
        );
        assert!(matches!(
            parse_err(b"INVITE sip:a@b:99999 SIP/2.0\r\n\r\n"),
            ParseError::BadUri(_)
        ));
        assert!(matches!(
            parse_err(b"INVITE <sip:a@b> SIP/2.0\r\n\r\n"),
            ParseError::BadUri(_)
        ));
        for code in ["99", "099", "700", "1000", "abc", "2OO", ""] {
            let line = format!("SIP/2.0 {code} Whatever\r\n\r\n");
            assert_eq!(
                parse_err(line.as_bytes()),
                ParseError::BadStatusCode,
                "{code}"
            );
        }
        assert_eq!(parse_err(b"SIP/2.0\r\n\r\n"), ParseError::BadStartLine);
        let empty_reason = response("SIP/2.0 100 \r\n\r\n");
        assert_eq!((empty_reason.code, empty_reason.reason.as_str()), (100, ""));
        assert_eq!(response("SIP/2.0 699\r\n\r\n").code, 699);
        assert_eq!(
            response("sip/2.0 200   All  good \r\n\r\n").reason,
            "All  good"
        );
        let lower = request("invite sip:a@b sip/2.0\r\n\r\n");
        assert_eq!(
            lower.method,
            Method::Other("invite".into()),
            "methods are case-sensitive"
        );
        let extension = request("NEWMETHOD sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(extension.method.as_str(), "NEWMETHOD");
        let spaced = request("INVITE  sip:a@b   SIP/2.0\r\n\r\n");
        assert_eq!(spaced.uri.to_string(), "sip:a@b");
    }

    #[test]
    fn method_names() {
        for m in [
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "REGISTER",
            "OPTIONS",
            "INFO",
            "UPDATE",
            "PRACK",
            "SUBSCRIBE",
            "NOTIFY",
            "REFER",
            "MESSAGE",
            "PUBLISH",
        ] {
            let method: Method = m.parse().unwrap();
            assert!(!matches!(method, Method::Other(_)), "{m}");
            assert_eq!(method.to_string(), m);
        }
        assert_eq!("Invite".parse(), Ok(Method::Other("Invite".into())));
        assert_eq!("".parse::<Method>(), Err(ParseError::BadMethod));
        assert_eq!("IN VITE".parse::<Method>(), Err(ParseError::BadMethod));
    }

    #[test]
    fn check_mandatory_names_the_missing_header() {
        let full = request(INVITE);
        for (line, name) in [
            ("To:", "To"),
            ("From:", "From"),
            ("CSeq:", "CSeq"),
            ("Call-ID:", "Call-ID"),
            ("Max-Forwards:", "Max-Forwards"),
            ("Via:", "Via"),
        ] {
            let text: String = INVITE
                .split_inclusive("\r\n")
                .filter(|l| !l.starts_with(line))
                .collect();
            let r = request(&text);
            assert_eq!(r.check_mandatory(), Err(ParseError::MissingHeader(name)));
            assert_eq!(
                ParseError::MissingHeader(name).to_string(),
                format!("Missing {name} header")
            );
        }
        let mut mismatched = full.clone();
        mismatched.headers.set("CSeq", "1 BYE");
        assert_eq!(mismatched.check_mandatory(), Err(bad_header("CSeq")));
        let mut twice = full.clone();
        twice.headers.push("From", "<sip:other@x>;tag=2");
        assert_eq!(twice.check_mandatory(), Err(bad_header("From")));
        let mut hops = full.clone();
        hops.headers.set("Max-Forwards", "256");
        assert_eq!(hops.check_mandatory(), Err(bad_header("Max-Forwards")));
        let mut bad_via = full;
        bad_via.headers.push("Via", "SIP/2.0/UDP");
        assert_eq!(bad_via.check_mandatory(), Err(bad_header("Via")));
        assert_eq!(bad_header("Via").to_string(), "Bad Via header");
    }

    #[test]
    fn malformed_typed_headers_do_not_fail_the_message() {
        let r = request("INVITE sip:a@b SIP/2.0\r\nFrom: <sip:a@b\r\nCSeq: x INVITE\r\nExpires: soon\r\nMax-Forwards: -1\r\n\r\n");
        assert_eq!(r.from(), Err(bad_header("From")));
        assert_eq!(r.cseq(), Err(bad_header("CSeq")));
        assert_eq!(r.expires(), Err(bad_header("Expires")));
        assert_eq!(r.max_forwards(), Err(bad_header("Max-Forwards")));
        assert_eq!(r.to(), Err(ParseError::MissingHeader("To")));
        assert_eq!(r.top_via(), Err(ParseError::MissingHeader("Via")));
        assert_eq!(r.check_mandatory(), Err(ParseError::MissingHeader("To")));
    }

    #[test]
    fn torture_escapes_whitespace_and_unknown_headers() {
        let r = request(
            "INVITE sip:sips%3Auser%40example.com@example.net;%74ransport=udp SIP/2.0\r\n\
             To   :\tsip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n\
             from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n\
             Max-Forwards: 0068\r\n\
             Call-ID: wsinv.ndaksdj@192.0.2.1\r\n\
             cseq: 0009\r\n  INVITE\r\n\
             Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=390skdjuw\r\n\
             NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n\
             UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n\
             Content-Type: application/sdp\r\n\
             v:  SIP/2.0/TCP spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n\
             m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33\r\n\
             Content-Length: 0\r\n\r\n",
        );
        assert_eq!(r.uri.user.as_deref(), Some("sips%3Auser%40example.com"));
        assert_eq!(r.to().unwrap().tag(), Some("1918181833n"));
        let from = r.from().unwrap();
        assert_eq!(from.display.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(from.tag(), Some("98asjd8"));
        assert_eq!(r.max_forwards(), Ok(Some(68)));
        assert_eq!(
            r.cseq().unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        let hops = r.via().unwrap();
        assert_eq!(hops.len(), 3);
        assert_eq!(hops[1].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(hops[2].branch(), Some("z9hG4bK30239"));
        assert_eq!(
            r.headers.get("newfangledheader"),
            Some("newfangled value continued newfangled value")
        );
        assert_eq!(
            r.headers.get("UnknownHeaderWithUnusualValue"),
            Some(";;,,;;,;")
        );
        let contact = r.contacts().unwrap();
        assert_eq!(contact.addrs()[0].param("q"), Some(Some("0.33")));
        assert_eq!(contact.addrs()[0].param("secondparam"), Some(None));
        assert_eq!(r.check_mandatory(), Ok(()));
        assert_round_trip(&Message::Request(r));
    }

    #[test]
    fn long_values_and_many_headers_within_limits() {
        let long = "a".repeat(20_000);
        let mut text = format!("OPTIONS sip:a@b SIP/2.0\r\nX-Long: {long}\r\nCall-ID: {long}\r\n");
        for i in 0..MAX_HEADERS - 2 {
            text.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        text.push_str("\r\n");
        let r = request(&text);
        assert_eq!(r.headers.len(), MAX_HEADERS);
        assert_eq!(r.call_id().map(str::len), Ok(20_000));
        let one_more = text.replacen("\r\n\r\n", "\r\nX-Last: 1\r\n\r\n", 1);
        assert_eq!(parse_err(one_more.as_bytes()), ParseError::TooManyHeaders);
        let huge = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nX: {}\r\n\r\n",
            "b".repeat(MAX_MESSAGE_LEN)
        );
        assert_eq!(parse_err(huge.as_bytes()), ParseError::TooLarge);
    }

    #[test]
    fn garbage_and_truncation() {
        assert_eq!(parse_err(b""), ParseError::Empty);
        assert_eq!(parse_err(b"\r\n\r\n"), ParseError::Empty);
        assert_eq!(
            parse_err(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n"),
            ParseError::Truncated
        );
        assert_eq!(parse_err(b"INVITE sip:a@b SIP/2.0"), ParseError::Truncated);
        assert_eq!(
            parse_err(b"\x00\x01\x02\xff\xfe\r\n\r\n"),
            ParseError::BadStartLine
        );
        assert_eq!(parse_err(b"hello world\r\n\r\n"), ParseError::BadStartLine);
        assert_eq!(
            parse_err(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            ParseError::Truncated
        );
        assert_eq!(
            parse_err(b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n"),
            ParseError::BadHeaderLine
        );
        assert_eq!(
            parse_err(b"INVITE sip:a@b SIP/2.0\r\n: empty name\r\n\r\n"),
            ParseError::BadHeaderLine
        );
        assert_eq!(
            parse_err(b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n"),
            ParseError::BadHeaderLine
        );
        assert_eq!(
            parse_err(b"INVITE sip:a\x00@b SIP/2.0\r\n\r\n"),
            ParseError::BadStartLine
        );
        assert_eq!(
            parse_err(b"INVITE sip:a@b SIP/2.0\r\nSubject: nul\x00inside\r\n\r\n"),
            bad_header("Subject")
        );
        assert_eq!(
            parse_err(b"INVITE sip:a@b SIP/2.0\r\nSubject: bare\rCR\r\n\r\n"),
            bad_header("Subject")
        );
    }

    #[test]
    fn binary_body_and_non_utf8_headers() {
        let mut bytes = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Type: application/octet-stream\r\nContent-Length: 8\r\n\r\n".to_vec();
        let body = [0u8, 0xff, b'\r', b'\n', b'\r', b'\n', 0x80, 0];
        bytes.extend_from_slice(&body);
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.body(), body);
        assert_eq!(m.to_bytes(), bytes);
        let latin1 = b"INVITE sip:a@b SIP/2.0\r\nFrom: \"Jos\xe9\" <sip:j@b>;tag=1\r\n\r\n";
        let m = Message::parse(latin1).unwrap();
        assert_eq!(
            m.headers().from().unwrap().display.as_deref(),
            Some("Jos\u{fffd}")
        );
        assert_round_trip(&m);
    }

    #[test]
    fn leading_crlf_is_skipped() {
        let r = request(&format!("\r\n\r\n{INVITE}"));
        assert_eq!(r.method, Method::Invite);
    }

    #[test]
    fn to_bytes_writes_content_length_from_the_body() {
        let mut r = request(INVITE);
        r.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n".to_vec();
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.contains("\r\nContent-Length: 31\r\n"));
        let mut fresh = Request::new(Method::Options, "sip:x@y".parse().unwrap());
        fresh.headers.push("Via", "SIP/2.0/UDP h;branch=z9hG4bKn");
        fresh.headers.push("content-length", 99);
        fresh.headers.push("Content-Length", 98);
        assert_eq!(
            String::from_utf8(fresh.to_bytes()).unwrap(),
            "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKn\r\nContent-Length: 0\r\n\r\n"
        );
        let mut ok = Response::new(200, reason_phrase(200));
        ok.headers.push("To", "<sip:x@y>");
        assert_eq!(
            String::from_utf8(ok.to_bytes()).unwrap(),
            "SIP/2.0 200 OK\r\nTo: <sip:x@y>\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn header_list_operations() {
        let mut h = Headers::new();
        h.push(
            "v",
            "SIP/2.0/UDP b;branch=z9hG4bK2, SIP/2.0/UDP c;branch=z9hG4bK3",
        );
        h.push("To", "<sip:t@x>");
        h.insert_first("Via", "SIP/2.0/UDP a;branch=z9hG4bK1");
        h.insert_first("Record-Route", "<sip:p.example;lr>");
        let names: Vec<_> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Record-Route", "Via", "Via", "To"]);
        let branches: Vec<_> = h
            .via()
            .unwrap()
            .iter()
            .map(|v| v.branch().unwrap().to_owned())
            .collect();
        assert_eq!(branches, ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]);
        assert_eq!(
            h.remove_first_value("Via").as_deref(),
            Some("SIP/2.0/UDP a;branch=z9hG4bK1")
        );
        assert_eq!(
            h.remove_first_value("via").as_deref(),
            Some("SIP/2.0/UDP b;branch=z9hG4bK2")
        );
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP c;branch=z9hG4bK3"));
        assert_eq!(
            h.remove_first_value("Via").as_deref(),
            Some("SIP/2.0/UDP c;branch=z9hG4bK3")
        );
        assert_eq!(h.remove_first_value("Via"), None);
        h.push("Allow", "INVITE, ACK");
        h.push("Allow", "BYE");
        assert_eq!(h.get_all("allow"), ["INVITE", "ACK", "BYE"]);
        h.set("ALLOW", "OPTIONS");
        assert_eq!(h.get_all("Allow"), ["OPTIONS"]);
        assert_eq!(h.remove("allow"), 1);
        assert_eq!(h.remove("allow"), 0);
        h.set("Subject", "new");
        assert_eq!(h.iter().last(), Some(("Subject", "new")));
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn mutators_cannot_inject_header_lines() {
        let mut r = Request::new(Method::Message, "sip:a@b".parse().unwrap());
        r.headers
            .push("Subject", "hi\r\nVia: SIP/2.0/UDP evil\r\n\r\nbody");
        let mut resp = Response::new(200, "OK\r\nX-Evil: 1");
        resp.headers = r.headers.clone();
        for bytes in [r.to_bytes(), resp.to_bytes()] {
            let parsed = Message::parse(&bytes).unwrap();
            assert_eq!(parsed.headers().get("Via"), None);
            assert_eq!(parsed.headers().get("X-Evil"), None);
            assert!(parsed.body().is_empty());
        }
    }

    #[test]
    fn error_status_codes() {
        assert_eq!(ParseError::TooLarge.status_code(), 513);
        assert_eq!(ParseError::BadVersion.status_code(), 505);
        assert_eq!(ParseError::MissingHeader("Via").status_code(), 400);
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n.max(1) as u64) as usize
        }
    }

    const SEEDS: &[&str] = &[
        INVITE,
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa;rport=5060;received=2001:db8::2, SIP/2.0/TCP p.example;branch=z9hG4bKb\r\nTo: <sip:bob@example.com>;tag=x\r\nFrom: \"Bob \\\"B\\\"\" <sip:bob@example.com>;tag=y\r\nCall-ID: c@h\r\nCSeq: 2 REGISTER\r\nContact: <sip:bob@192.0.2.4>;expires=3600;+sip.instance=\"<urn:uuid:1-2>\", sip:bob@h;expires=60\r\nContent-Length: 0\r\n\r\n",
        "SIP/2.0 401 Unauthorized\nWWW-Authenticate: Digest realm=\"x\", qop=\"auth,auth-int\", nonce=\"abc\", algorithm=MD5\nv: SIP/2.0/UDP h;branch=z9hG4bKc\nl: 0\n\n",
        "INVITE tel:+1-555-0100;phone-context=example.com SIP/2.0\r\nAuthorization: Digest username=\"a\", realm=\"x\", nonce=\"n\", uri=\"tel:+1\", response=\"00\", qop=auth, nc=00000001, cnonce=\"c\"\r\nRoute: <sip:p1.example;lr>,\r\n <sip:p2.example;lr>\r\nRecord-Route: <sip:rr@[::1];lr>\r\nMax-Forwards: 70\r\nSubject: folded\r\n\tline\r\nContent-Length: 6\r\n\r\n\x00\x01\r\n\r\nEXTRA",
    ];

    const INTERESTING: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r\n\r\n",
        b" ",
        b"\t",
        b":",
        b";",
        b",",
        b"\"",
        b"\\",
        b"<",
        b">",
        b"[",
        b"]",
        b"@",
        b"=",
        b"%",
        b"\x00",
        b"\xff",
        b"\xc3\xa9",
        b"\r\n ",
        b"Content-Length: 99999\r\n",
        b"l: 3\r\n",
        b"SIP/2.0",
        b"sip:",
        b"tel:",
        b"[::1]",
        b":65536",
        b"*",
    ];

    fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len() + 1);
            match rng.below(6) {
                0 if !input.is_empty() => {
                    let i = at.min(input.len() - 1);
                    input[i] ^= 1 << rng.below(8);
                }
                1 if at < input.len() => {
                    input.remove(at);
                }
                2 => {
                    let token = INTERESTING[rng.below(INTERESTING.len())];
                    input.splice(at..at, token.iter().copied());
                }
                3 => input.truncate(at),
                4 if at < input.len() => {
                    let end = (at + rng.below(40)).min(input.len());
                    let copy = input[at..end].to_vec();
                    let to = rng.below(input.len() + 1);
                    input.splice(to..to, copy);
                }
                _ => input.insert(at, rng.below(256) as u8),
            }
        }
    }

    /// Every typed accessor must return, and whatever it returns must
    /// display and parse back to itself.
    fn exercise_accessors(m: &Message) {
        let h = m.headers();
        if let Ok(hops) = h.via() {
            for via in hops {
                assert_eq!(via.to_string().parse::<Via>().as_ref(), Ok(&via), "{via}");
            }
        }
        let _ = h.top_via();
        for addr in [h.from(), h.to(), h.refer_to()].into_iter().flatten() {
            assert_eq!(
                addr.to_string().parse::<NameAddr>().as_ref(),
                Ok(&addr),
                "{addr}"
            );
        }
        if let Ok(contacts) = h.contacts() {
            for addr in contacts.addrs() {
                assert_eq!(
                    addr.to_string().parse::<NameAddr>().as_ref(),
                    Ok(addr),
                    "{addr}"
                );
            }
        }
        for list in [h.route(), h.record_route()].into_iter().flatten() {
            for addr in list {
                assert_eq!(
                    addr.to_string().parse::<NameAddr>().as_ref(),
                    Ok(&addr),
                    "{addr}"
                );
            }
        }
        if let Ok(cseq) = h.cseq() {
            assert_eq!(cseq.to_string().parse::<CSeq>().as_ref(), Ok(&cseq));
        }
        for challenges in [h.www_authenticate(), h.proxy_authenticate()]
            .into_iter()
            .flatten()
        {
            for c in challenges {
                assert_eq!(c.to_string().parse::<Challenge>().as_ref(), Ok(&c), "{c}");
            }
        }
        if let Ok(creds) = h.authorization() {
            for c in creds {
                assert_eq!(c.to_string().parse::<Credentials>().as_ref(), Ok(&c), "{c}");
            }
        }
        let _ = (
            h.call_id(),
            h.max_forwards(),
            h.expires(),
            h.content_length(),
        );
        if let Message::Request(r) = m {
            let _ = r.check_mandatory();
            assert_eq!(r.uri.to_string().parse::<Uri>().as_ref(), Ok(&r.uri));
        }
    }

    #[test]
    fn seeded_mutations_never_panic_and_round_trip() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for round in 0..20_000 {
            let seed = SEEDS[round % SEEDS.len()];
            let mut input = seed.as_bytes().to_vec();
            mutate(&mut rng, &mut input);
            let Ok(message) = Message::parse(&input) else {
                continue;
            };
            parsed += 1;
            exercise_accessors(&message);
            assert_round_trip(&message);
        }
        // The loop is only worth something if many mutants still parse.
        assert!(parsed > 5_000, "only {parsed} mutants parsed");
    }
}
