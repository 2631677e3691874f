//! The session descriptions a call exchanges, as typed values: parsed from
//! and written to SDP text with `sdp-types`, keeping only what an audio
//! call with ICE uses (and remembering other m-lines so an answer can
//! refuse them in place, RFC 3264 §6).

use std::net::{IpAddr, SocketAddr};

use sdp_types::{AddrType, Attribute, Connection, Media, NetType, Origin, Session, Time};
use thiserror::Error;

use super::codec::{Codec, CodecName};
use crate::ice::{Candidate, CandidateType};

/// Why a description cannot be used; the text fits a 488 reason phrase or
/// Warning header.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("malformed SDP: {0}")]
    Syntax(String),
    #[error("no audio stream offered")]
    NoAudio,
    #[error("unsupported media transport {0:?} (RTP/AVP only)")]
    Transport(String),
    #[error("no common codec")]
    NoCommonCodec,
    #[error("bad connection address {0:?}")]
    Address(String),
    #[error("bad a={0} attribute")]
    Attribute(&'static str),
    #[error("the answer does not match the offer: {0}")]
    Mismatch(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn token(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Self> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.token() == name)
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub fn from_flags(send: bool, recv: bool) -> Self {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The answer's direction to an offer of `self` when we want `ours`
    /// (RFC 3264 §6.1): we send only what they receive, and so on.
    pub fn answer(self, ours: Direction) -> Self {
        Direction::from_flags(
            self.receives() && ours.sends(),
            self.sends() && ours.receives(),
        )
    }
}

/// The ICE part of an audio description (RFC 8839).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceDescription {
    pub ufrag: String,
    pub pwd: String,
    pub lite: bool,
    pub options: Vec<String>,
    pub candidates: Vec<Candidate>,
    pub end_of_candidates: bool,
    /// `a=remote-candidates` (controlling side, after nomination): per
    /// component, the remote address chosen.
    pub remote_candidates: Vec<(u16, SocketAddr)>,
    /// `a=ice-pacing` (RFC 8839 §5.5), ms: the Ta this side wants. Both
    /// use the larger of the two, 50 ms when a side does not say.
    pub pacing_ms: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioDescription {
    /// 0: the stream is refused or disabled.
    pub port: u16,
    pub proto: String,
    /// The connection address (`c=`, media or session level).
    pub address: IpAddr,
    pub codecs: Vec<Codec>,
    pub ptime: Option<u32>,
    pub maxptime: Option<u32>,
    pub rtcp_mux: bool,
    /// `a=rtcp` (RFC 3605); otherwise RTCP is on port + 1.
    pub rtcp: Option<SocketAddr>,
    pub direction: Direction,
    pub ice: Option<IceDescription>,
    /// `a=ice-mismatch`: the answerer saw a default address that is none
    /// of the offered candidates, and dropped ICE (RFC 8839 §5.4).
    pub ice_mismatch: bool,
}

impl AudioDescription {
    /// Where RTP goes without ICE: `c=` and the `m=` port.
    pub fn rtp_address(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// Where RTCP goes without ICE.
    pub fn rtcp_address(&self) -> SocketAddr {
        if self.rtcp_mux {
            return self.rtp_address();
        }
        self.rtcp
            .unwrap_or_else(|| SocketAddr::new(self.address, self.port.saturating_add(1)))
    }
}

/// One `m=` line: ours, or one we refuse (kept for its place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaLine {
    Audio(AudioDescription),
    Other {
        media: String,
        proto: String,
        fmt: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    pub session_id: u64,
    pub version: u64,
    pub origin_address: IpAddr,
    pub media: Vec<MediaLine>,
}

impl SessionDescription {
    /// The first usable audio stream (a port-0 one counts: it is refused).
    pub fn audio(&self) -> Option<&AudioDescription> {
        self.media.iter().find_map(|m| match m {
            MediaLine::Audio(a) => Some(a),
            MediaLine::Other { .. } => None,
        })
    }

    pub fn audio_mut(&mut self) -> Option<&mut AudioDescription> {
        self.media.iter_mut().find_map(|m| match m {
            MediaLine::Audio(a) => Some(a),
            MediaLine::Other { .. } => None,
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, SdpError> {
        let session = Session::parse(bytes).map_err(|e| SdpError::Syntax(e.to_string()))?;
        let origin_address =
            parse_ip(&session.origin.unicast_address).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let session_id = session.origin.sess_id.parse().unwrap_or(0);
        let session_ice = ice_credentials(&session.attributes);
        let mut media = Vec::new();
        let mut audio_seen = false;
        for m in &session.medias {
            // Only the first RTP/AVP audio stream is ours; later ones are
            // refused like any other medium.
            if m.media == "audio" && !audio_seen && is_rtp_avp(&m.proto) {
                audio_seen = true;
                media.push(MediaLine::Audio(parse_audio(&session, m, &session_ice)?));
            } else if m.media == "audio" && !audio_seen {
                return Err(SdpError::Transport(m.proto.clone()));
            } else {
                media.push(MediaLine::Other {
                    media: m.media.clone(),
                    proto: m.proto.clone(),
                    fmt: m.fmt.clone(),
                });
            }
        }
        Ok(SessionDescription {
            session_id,
            version: session.origin.sess_version,
            origin_address,
            media,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let addrtype = addr_type(self.origin_address);
        let origin = Origin {
            username: Some("icephone".into()),
            sess_id: self.session_id.to_string(),
            sess_version: self.version,
            nettype: NetType::In,
            addrtype,
            unicast_address: self.origin_address.to_string(),
        };
        let mut session = Session::new(origin, "-");
        session.times.push(Time {
            start_time: 0,
            stop_time: 0,
            repeats: Vec::new(),
        });
        for m in &self.media {
            session.medias.push(match m {
                MediaLine::Audio(a) => write_audio(a),
                MediaLine::Other { media, proto, fmt } => Media {
                    media: media.clone(),
                    port: 0,
                    num_ports: None,
                    proto: proto.clone(),
                    fmt: fmt.clone(),
                    media_title: None,
                    connections: Vec::new(),
                    bandwidths: Vec::new(),
                    key: None,
                    attributes: Vec::new(),
                },
            });
        }
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = session.write(&mut out);
        out
    }
}

fn is_rtp_avp(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/AVP") || proto.eq_ignore_ascii_case("RTP/AVPF")
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.split('/').next().and_then(|a| a.parse().ok())
}

fn addr_type(ip: IpAddr) -> AddrType {
    if ip.is_ipv4() {
        AddrType::Ip4
    } else {
        AddrType::Ip6
    }
}

fn attribute<'a>(attrs: &'a [Attribute], name: &str) -> Option<Option<&'a str>> {
    attrs
        .iter()
        .find(|a| a.attribute == name)
        .map(|a| a.value.as_deref())
}

fn values<'a>(attrs: &'a [Attribute], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    attrs
        .iter()
        .filter(move |a| a.attribute == name)
        .filter_map(|a| a.value.as_deref())
}

/// Session-level ICE attributes, which media-level ones override.
#[derive(Clone, Default)]
struct IceCredentials {
    ufrag: Option<String>,
    pwd: Option<String>,
    lite: bool,
    options: Vec<String>,
    pacing_ms: Option<u32>,
}

fn ice_credentials(attrs: &[Attribute]) -> IceCredentials {
    IceCredentials {
        ufrag: attribute(attrs, "ice-ufrag").flatten().map(str::to_owned),
        pwd: attribute(attrs, "ice-pwd").flatten().map(str::to_owned),
        lite: attribute(attrs, "ice-lite").is_some(),
        options: values(attrs, "ice-options")
            .flat_map(|v| v.split_whitespace().map(str::to_owned))
            .collect(),
        // A value we cannot read is as good as none: the default applies.
        pacing_ms: attribute(attrs, "ice-pacing")
            .flatten()
            .and_then(|v| v.trim().parse().ok()),
    }
}

fn parse_audio(
    session: &Session,
    m: &Media,
    session_ice: &IceCredentials,
) -> Result<AudioDescription, SdpError> {
    let connection = m
        .connections
        .first()
        .or(session.connection.as_ref())
        .ok_or(SdpError::Address("no c= line".into()))?;
    let address = parse_ip(&connection.connection_address)
        .ok_or_else(|| SdpError::Address(connection.connection_address.clone()))?;
    let attrs = &m.attributes;
    let codecs = parse_codecs(m)?;
    let number = |name: &'static str| -> Result<Option<u32>, SdpError> {
        attribute(attrs, name)
            .map(|v| {
                v.and_then(|v| v.trim().parse().ok())
                    .ok_or(SdpError::Attribute(name))
            })
            .transpose()
    };
    let rtcp = match attribute(attrs, "rtcp") {
        Some(Some(v)) => Some(parse_rtcp(v, address)?),
        Some(None) => return Err(SdpError::Attribute("rtcp")),
        None => None,
    };
    let direction = attrs
        .iter()
        .rev()
        .find_map(|a| Direction::from_attribute(&a.attribute))
        .or_else(|| {
            session
                .attributes
                .iter()
                .rev()
                .find_map(|a| Direction::from_attribute(&a.attribute))
        })
        .unwrap_or(Direction::SendRecv);
    Ok(AudioDescription {
        port: m.port,
        proto: m.proto.clone(),
        address,
        codecs,
        ptime: number("ptime")?,
        maxptime: number("maxptime")?,
        rtcp_mux: attribute(attrs, "rtcp-mux").is_some(),
        rtcp,
        direction,
        ice: parse_ice(attrs, session_ice)?,
        ice_mismatch: attribute(attrs, "ice-mismatch").is_some(),
    })
}

fn parse_rtcp(value: &str, default_ip: IpAddr) -> Result<SocketAddr, SdpError> {
    let mut parts = value.split_whitespace();
    let port = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(SdpError::Attribute("rtcp"))?;
    let ip = match (parts.next(), parts.next(), parts.next()) {
        (Some("IN"), Some(_), Some(addr)) => parse_ip(addr).ok_or(SdpError::Attribute("rtcp"))?,
        (None, ..) => default_ip,
        _ => return Err(SdpError::Attribute("rtcp")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// The payload formats of `m`, in its order: rtpmap for dynamic types,
/// the static table for 0 and 8; formats we do not know are skipped.
fn parse_codecs(m: &Media) -> Result<Vec<Codec>, SdpError> {
    let mut codecs = Vec::new();
    for pt in m.fmt.split_whitespace() {
        let pt: u8 = pt
            .parse()
            .map_err(|_| SdpError::Syntax(format!("payload type {pt:?}")))?;
        if pt > 127 {
            return Err(SdpError::Syntax(format!("payload type {pt}")));
        }
        let rtpmap = values(&m.attributes, "rtpmap").find_map(|v| {
            let (p, rest) = v.split_once(' ')?;
            (p.trim().parse::<u8>().ok()? == pt).then_some(rest.trim())
        });
        let codec = match rtpmap {
            Some(map) => codec_from_rtpmap(pt, map),
            None if pt == 0 => Some(Codec::pcmu()),
            None if pt == 8 => Some(Codec::pcma()),
            None => None,
        };
        let Some(mut codec) = codec else {
            continue;
        };
        codec.fmtp = fmtp_params(m, pt);
        codecs.push(codec);
    }
    Ok(codecs)
}

fn codec_from_rtpmap(pt: u8, map: &str) -> Option<Codec> {
    let mut parts = map.split('/');
    let name = CodecName::from_encoding(parts.next()?.trim())?;
    let clock_rate = parts.next()?.trim().parse().ok()?;
    let channels = parts.next().map_or(Some(1), |c| c.trim().parse().ok())?;
    Some(Codec {
        payload_type: pt,
        name,
        clock_rate,
        channels,
        fmtp: Vec::new(),
    })
}

fn fmtp_params(m: &Media, pt: u8) -> Vec<(String, String)> {
    let Some(params) = values(&m.attributes, "fmtp").find_map(|v| {
        let (p, rest) = v.split_once(' ')?;
        (p.trim().parse::<u8>().ok()? == pt).then_some(rest)
    }) else {
        return Vec::new();
    };
    params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
            None => (String::new(), p.to_owned()),
        })
        .collect()
}

fn parse_ice(
    attrs: &[Attribute],
    session: &IceCredentials,
) -> Result<Option<IceDescription>, SdpError> {
    let media = ice_credentials(attrs);
    let ufrag = media.ufrag.or(session.ufrag.clone());
    let pwd = media.pwd.or(session.pwd.clone());
    let (ufrag, pwd) = match (ufrag, pwd) {
        (Some(u), Some(p)) => (u, p),
        (None, None) => return Ok(None),
        // One without the other is unusable (RFC 8839 §5.4).
        (Some(_), None) => return Err(SdpError::Attribute("ice-pwd")),
        (None, Some(_)) => return Err(SdpError::Attribute("ice-ufrag")),
    };
    let mut candidates = Vec::new();
    for v in values(attrs, "candidate") {
        match parse_candidate(v) {
            Ok(Some(c)) => candidates.push(c),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
    let mut remote_candidates = Vec::new();
    if let Some(v) = attribute(attrs, "remote-candidates").flatten() {
        let words: Vec<&str> = v.split_whitespace().collect();
        for triple in words.chunks(3) {
            let [component, ip, port] = triple else {
                return Err(SdpError::Attribute("remote-candidates"));
            };
            let parsed = component
                .parse()
                .ok()
                .zip(ip.parse::<IpAddr>().ok())
                .zip(port.parse::<u16>().ok());
            let ((component, ip), port) = parsed.ok_or(SdpError::Attribute("remote-candidates"))?;
            remote_candidates.push((component, SocketAddr::new(ip, port)));
        }
    }
    Ok(Some(IceDescription {
        ufrag,
        pwd,
        lite: media.lite || session.lite,
        options: if media.options.is_empty() {
            session.options.clone()
        } else {
            media.options
        },
        candidates,
        end_of_candidates: attribute(attrs, "end-of-candidates").is_some(),
        remote_candidates,
        pacing_ms: media.pacing_ms.or(session.pacing_ms),
    }))
}

/// One `a=candidate` value (RFC 8839 §5.1). A candidate we cannot use —
/// TCP, or a host name such as an mDNS `.local` one — is skipped, not an
/// error; one that does not parse is.
pub fn parse_candidate(value: &str) -> Result<Option<Candidate>, SdpError> {
    let bad = || SdpError::Attribute("candidate");
    let w: Vec<&str> = value.split_whitespace().collect();
    if w.len() < 8 || w[6] != "typ" {
        return Err(bad());
    }
    let component: u16 = w[1].parse().map_err(|_| bad())?;
    let priority: u32 = w[3].parse().map_err(|_| bad())?;
    let port: u16 = w[5].parse().map_err(|_| bad())?;
    let kind = CandidateType::from_token(w[7]).ok_or_else(bad)?;
    if !w[2].eq_ignore_ascii_case("udp") {
        return Ok(None);
    }
    let Ok(ip) = w[4].parse::<IpAddr>() else {
        return Ok(None);
    };
    let mut related_ip = None;
    let mut related_port = None;
    let mut rest = w[8..].chunks(2);
    for pair in rest.by_ref() {
        match pair {
            ["raddr", v] => related_ip = v.parse::<IpAddr>().ok(),
            ["rport", v] => related_port = v.parse::<u16>().ok(),
            [_, _] => {} // extensions (generation, network-id…)
            _ => return Err(bad()),
        }
    }
    let related = related_ip
        .zip(related_port)
        .map(|(i, p)| SocketAddr::new(i, p));
    Ok(Some(Candidate::remote(
        SocketAddr::new(ip, port),
        kind,
        priority,
        w[0],
        component,
        related,
    )))
}

fn write_audio(a: &AudioDescription) -> Media {
    let mut attrs = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        attrs.push(Attribute {
            attribute: name.to_owned(),
            value,
        })
    };
    for c in &a.codecs {
        add("rtpmap", Some(c.rtpmap()));
        if let Some(f) = c.fmtp_value() {
            add("fmtp", Some(f));
        }
    }
    if let Some(p) = a.ptime {
        add("ptime", Some(p.to_string()));
    }
    if let Some(p) = a.maxptime {
        add("maxptime", Some(p.to_string()));
    }
    add(a.direction.token(), None);
    if a.rtcp_mux {
        add("rtcp-mux", None);
    }
    if let Some(r) = a.rtcp {
        let t = if r.is_ipv4() { "IP4" } else { "IP6" };
        add("rtcp", Some(format!("{} IN {t} {}", r.port(), r.ip())));
    }
    if a.ice_mismatch {
        add("ice-mismatch", None);
    }
    if let Some(ice) = &a.ice {
        if ice.lite {
            add("ice-lite", None);
        }
        add("ice-ufrag", Some(ice.ufrag.clone()));
        add("ice-pwd", Some(ice.pwd.clone()));
        if !ice.options.is_empty() {
            add("ice-options", Some(ice.options.join(" ")));
        }
        if let Some(ms) = ice.pacing_ms {
            add("ice-pacing", Some(ms.to_string()));
        }
        for c in &ice.candidates {
            add("candidate", Some(c.to_sdp_value()));
        }
        if !ice.remote_candidates.is_empty() {
            let list: Vec<String> = ice
                .remote_candidates
                .iter()
                .map(|(c, addr)| format!("{c} {} {}", addr.ip(), addr.port()))
                .collect();
            add("remote-candidates", Some(list.join(" ")));
        }
        if ice.end_of_candidates {
            add("end-of-candidates", None);
        }
    }
    let fmt: Vec<String> = a
        .codecs
        .iter()
        .map(|c| c.payload_type.to_string())
        .collect();
    Media {
        media: "audio".into(),
        port: a.port,
        num_ports: None,
        proto: a.proto.clone(),
        fmt: if fmt.is_empty() {
            "0".into()
        } else {
            fmt.join(" ")
        },
        media_title: None,
        connections: vec![Connection {
            nettype: NetType::In,
            addrtype: addr_type(a.address),
            connection_address: a.address.to_string(),
        }],
        bandwidths: Vec::new(),
        key: None,
        attributes: attrs,
    }
}
