//! RFC 3264 offer/answer for one audio stream, with ICE (RFC 8839 §4.2)
//! and the codec rules of RFC 7587 and RFC 4733.

use std::net::SocketAddr;

use super::codec::{Codec, CodecName};
use super::description::{
    AudioDescription, Direction, IceDescription, MediaLine, SdpError, SessionDescription,
};

/// Payload types of our offers (dynamic ones are ours to choose).
const OPUS_PT: u8 = 111;
const TELEPHONE_EVENT_48K_PT: u8 = 101;
const TELEPHONE_EVENT_8K_PT: u8 = 100;

/// What our side brings to a negotiation.
#[derive(Clone, Debug)]
pub struct LocalMedia {
    /// Voice codecs in order of preference.
    pub codecs: Vec<CodecName>,
    /// Offer RFC 4733 DTMF.
    pub dtmf: bool,
    /// Milliseconds of audio per packet we would like to receive.
    pub ptime: u32,
    pub direction: Direction,
    /// The default candidate's address: `c=` and the `m=` port.
    pub address: SocketAddr,
    /// RTCP's default address when not multiplexed (`a=rtcp`).
    pub rtcp: Option<SocketAddr>,
    pub rtcp_mux: bool,
    /// Our ICE credentials and candidates; `None` for plain RTP.
    pub ice: Option<IceDescription>,
    pub session_id: u64,
    /// Bumped by the caller for every new offer or answer in a session.
    pub version: u64,
}

/// What a negotiation decided, for the media and ICE layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// What we send, with the payload type the peer expects.
    pub send_codec: Codec,
    /// What we accept, by payload type.
    pub receive_codecs: Vec<Codec>,
    /// telephone-event at the send codec's clock rate, if both have it.
    pub dtmf: Option<Codec>,
    /// Milliseconds per packet we send.
    pub ptime: u32,
    /// Our direction after negotiation.
    pub direction: Direction,
    /// Where media goes without ICE (also ICE's fallback default).
    pub remote_rtp: SocketAddr,
    pub remote_rtcp: SocketAddr,
    pub rtcp_mux: bool,
    /// The peer's ICE; `None`: plain RTP to `remote_rtp`, latching to
    /// where their packets come from.
    pub remote_ice: Option<IceDescription>,
    /// Opus: the peer decodes in-band FEC, so we send it.
    pub send_fec: bool,
    /// Opus: the peer's `maxaveragebitrate`.
    pub max_bitrate: Option<u32>,
}

impl Negotiated {
    /// Whether `self` restarts ICE against what the peer used before
    /// (RFC 8839 §4.4.1.1.1: new credentials).
    pub fn restarts_ice(&self, before: Option<&IceDescription>) -> bool {
        match (before, &self.remote_ice) {
            (Some(old), Some(new)) => old.ufrag != new.ufrag || old.pwd != new.pwd,
            _ => false,
        }
    }
}

/// Our offer.
pub fn offer(local: &LocalMedia) -> SessionDescription {
    let mut codecs = Vec::new();
    for name in &local.codecs {
        codecs.push(match name {
            CodecName::Opus => Codec::opus(OPUS_PT),
            CodecName::Pcmu => Codec::pcmu(),
            CodecName::Pcma => Codec::pcma(),
            CodecName::TelephoneEvent => continue,
        });
    }
    if local.dtmf {
        let mut rates: Vec<u32> = codecs.iter().map(|c| c.clock_rate).collect();
        rates.dedup();
        for rate in rates {
            let pt = if rate == 48_000 {
                TELEPHONE_EVENT_48K_PT
            } else {
                TELEPHONE_EVENT_8K_PT
            };
            if !codecs
                .iter()
                .any(|c| c.name == CodecName::TelephoneEvent && c.clock_rate == rate)
            {
                codecs.push(Codec::telephone_event(pt, rate));
            }
        }
    }
    session(
        local,
        local_audio(local, codecs, local.direction, local.ice.clone()),
        Vec::new(),
    )
}

/// Our answer to `offer`, and what it means for media. Errors are the
/// reason of a 488.
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<(SessionDescription, Negotiated), SdpError> {
    let theirs = offer.audio().ok_or(SdpError::NoAudio)?;
    if theirs.port == 0 {
        return Err(SdpError::NoAudio);
    }
    let voice = common_voice_codecs(theirs, &local.codecs);
    let send_codec = voice.first().cloned().ok_or(SdpError::NoCommonCodec)?;
    let dtmf = local
        .dtmf
        .then(|| telephone_event_for(&theirs.codecs, send_codec.clock_rate))
        .flatten();
    let mut codecs = voice.clone();
    codecs.extend(dtmf.clone());
    let direction = theirs.direction.answer(local.direction);
    let rtcp_mux = theirs.rtcp_mux && local.rtcp_mux;
    // ICE only when both speak it and the offer's default address is one
    // of its candidates (RFC 8839 §4.2.2: otherwise a=ice-mismatch).
    let mismatch = theirs
        .ice
        .as_ref()
        .is_some_and(|ice| local.ice.is_some() && !ice.lite && default_mismatch(theirs, ice));
    let use_ice = theirs.ice.is_some() && local.ice.is_some() && !mismatch;
    let mut ours = local_audio(
        local,
        codecs,
        direction,
        if use_ice { local.ice.clone() } else { None },
    );
    ours.rtcp_mux = rtcp_mux;
    if rtcp_mux {
        // RFC 8839 §4.2.1: multiplexing, the answer has no RTCP component.
        ours.rtcp = None;
        if let Some(ice) = ours.ice.as_mut() {
            ice.candidates.retain(|c| c.component == 1);
        }
    }
    ours.ice_mismatch = mismatch;
    let others = offer
        .media
        .iter()
        .map(|m| match m {
            MediaLine::Audio(_) => None,
            other => Some(other.clone()),
        })
        .collect();
    let negotiated = Negotiated {
        send_fec: opus_wants_fec(&send_codec),
        max_bitrate: send_codec
            .fmtp_param("maxaveragebitrate")
            .and_then(|v| v.parse().ok()),
        ptime: send_ptime(theirs, local.ptime),
        send_codec,
        receive_codecs: voice,
        dtmf,
        direction,
        remote_rtp: theirs.rtp_address(),
        remote_rtcp: theirs.rtcp_address(),
        rtcp_mux,
        remote_ice: if use_ice { theirs.ice.clone() } else { None },
    };
    Ok((session(local, ours, others), negotiated))
}

/// What the peer's answer to our `offer` means for media.
pub fn apply_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<Negotiated, SdpError> {
    let ours = offer.audio().ok_or(SdpError::NoAudio)?;
    let theirs = answer.audio().ok_or(SdpError::NoAudio)?;
    if theirs.port == 0 {
        return Err(SdpError::NoAudio);
    }
    if offer.media.len() != answer.media.len() {
        return Err(SdpError::Mismatch("a different number of m-lines"));
    }
    for c in &theirs.codecs {
        let offered = ours
            .codecs
            .iter()
            .any(|o| o.payload_type == c.payload_type && o.same_format(c));
        if !offered {
            return Err(SdpError::Mismatch("a codec we did not offer"));
        }
    }
    let send_codec = theirs
        .codecs
        .iter()
        .find(|c| c.name != CodecName::TelephoneEvent)
        .cloned()
        .ok_or(SdpError::NoCommonCodec)?;
    let dtmf = telephone_event_for(&theirs.codecs, send_codec.clock_rate);
    // We send what we offered to send and they accept to receive, and
    // the other way round.
    let direction = Direction::from_flags(
        ours.direction.sends() && theirs.direction.receives(),
        ours.direction.receives() && theirs.direction.sends(),
    );
    let rtcp_mux = ours.rtcp_mux && theirs.rtcp_mux;
    let remote_ice = match (&ours.ice, &theirs.ice) {
        (Some(_), Some(ice)) if !theirs.ice_mismatch => Some(ice.clone()),
        _ => None,
    };
    Ok(Negotiated {
        send_fec: opus_wants_fec(&send_codec),
        max_bitrate: send_codec
            .fmtp_param("maxaveragebitrate")
            .and_then(|v| v.parse().ok()),
        ptime: send_ptime(theirs, ours.ptime.unwrap_or(20)),
        receive_codecs: theirs
            .codecs
            .iter()
            .filter(|c| c.name != CodecName::TelephoneEvent)
            .cloned()
            .collect(),
        send_codec,
        dtmf,
        direction,
        remote_rtp: theirs.rtp_address(),
        remote_rtcp: theirs.rtcp_address(),
        rtcp_mux,
        remote_ice,
    })
}

/// The offer's voice codecs we support, in our order of preference, with
/// the offer's payload types (RFC 3264 §6.1) and format parameters.
fn common_voice_codecs(theirs: &AudioDescription, ours: &[CodecName]) -> Vec<Codec> {
    ours.iter()
        .filter(|n| **n != CodecName::TelephoneEvent)
        .filter_map(|name| {
            theirs.codecs.iter().find(|c| {
                c.name == *name
                    && match name {
                        CodecName::Opus => c.clock_rate == 48_000,
                        _ => c.clock_rate == 8000,
                    }
            })
        })
        .cloned()
        .collect()
}

fn telephone_event_for(codecs: &[Codec], clock_rate: u32) -> Option<Codec> {
    codecs
        .iter()
        .find(|c| c.name == CodecName::TelephoneEvent && c.clock_rate == clock_rate)
        .cloned()
}

fn opus_wants_fec(codec: &Codec) -> bool {
    codec.name == CodecName::Opus && codec.fmtp_param("useinbandfec") == Some("1")
}

/// The packet time we send: what the peer asked for (`a=ptime`, a
/// multiple of 10 ms up to its `a=maxptime` and 60 ms), else ours.
fn send_ptime(theirs: &AudioDescription, ours: u32) -> u32 {
    let max = theirs.maxptime.unwrap_or(60).min(60);
    theirs
        .ptime
        .filter(|p| *p >= 10 && *p <= max && p % 10 == 0)
        .unwrap_or_else(|| ours.min(max).max(10))
}

/// Whether the default address (`c=`/`m=`) is none of the candidates of
/// component 1 (RFC 8839 §4.2.2 / §5.4).
fn default_mismatch(audio: &AudioDescription, ice: &IceDescription) -> bool {
    if ice.candidates.is_empty() {
        // Trickle: candidates come later; nothing to compare yet.
        return false;
    }
    let default = audio.rtp_address();
    !ice.candidates
        .iter()
        .any(|c| c.component == 1 && c.address == default)
}

fn local_audio(
    local: &LocalMedia,
    codecs: Vec<Codec>,
    direction: Direction,
    ice: Option<IceDescription>,
) -> AudioDescription {
    AudioDescription {
        port: local.address.port(),
        proto: "RTP/AVP".into(),
        address: local.address.ip(),
        codecs,
        ptime: Some(local.ptime),
        maxptime: None,
        rtcp_mux: local.rtcp_mux,
        // Offered beside a=rtcp-mux too (RFC 5761 §5.1.3): a peer that does
        // not multiplex (baresip, pjsua by default) finds its component 2.
        rtcp: local.rtcp,
        direction,
        ice,
        ice_mismatch: false,
    }
}

/// Our description: the audio line where the offer had it, refused lines
/// in their places.
fn session(
    local: &LocalMedia,
    audio: AudioDescription,
    others: Vec<Option<MediaLine>>,
) -> SessionDescription {
    let mut media: Vec<MediaLine> = Vec::new();
    let mut audio = Some(audio);
    for m in others {
        match m {
            Some(other) => media.push(other),
            None => media.extend(audio.take().map(MediaLine::Audio)),
        }
    }
    media.extend(audio.map(MediaLine::Audio));
    SessionDescription {
        session_id: local.session_id,
        version: local.version,
        origin_address: local.address.ip(),
        media,
    }
}

#[cfg(test)]
mod tests;
