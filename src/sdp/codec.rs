//! The audio codecs a call can carry, as SDP names them.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodecName {
    /// RFC 7587: always `opus/48000/2` in SDP, whatever is sent.
    Opus,
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// RFC 4733 DTMF events.
    TelephoneEvent,
}

impl CodecName {
    pub fn encoding(self) -> &'static str {
        match self {
            CodecName::Opus => "opus",
            CodecName::Pcmu => "PCMU",
            CodecName::Pcma => "PCMA",
            CodecName::TelephoneEvent => "telephone-event",
        }
    }

    pub fn from_encoding(name: &str) -> Option<Self> {
        [
            CodecName::Opus,
            CodecName::Pcmu,
            CodecName::Pcma,
            CodecName::TelephoneEvent,
        ]
        .into_iter()
        .find(|c| c.encoding().eq_ignore_ascii_case(name))
    }
}

/// A payload format on an `m=` line: its payload type, rtpmap and fmtp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    pub name: CodecName,
    pub clock_rate: u32,
    pub channels: u8,
    /// `a=fmtp` parameters, in order.
    pub fmtp: Vec<(String, String)>,
}

impl Codec {
    /// Opus as we offer it (RFC 7587 §7): in-band FEC on, mono, 10 ms
    /// minimum packets, 32 kbit/s at most on average.
    pub fn opus(payload_type: u8) -> Self {
        Codec {
            payload_type,
            name: CodecName::Opus,
            clock_rate: 48_000,
            channels: 2,
            fmtp: vec![
                ("minptime".into(), "10".into()),
                ("useinbandfec".into(), "1".into()),
                ("stereo".into(), "0".into()),
                ("sprop-stereo".into(), "0".into()),
                ("maxaveragebitrate".into(), "32000".into()),
            ],
        }
    }

    pub fn pcmu() -> Self {
        Codec::plain(0, CodecName::Pcmu, 8000)
    }

    pub fn pcma() -> Self {
        Codec::plain(8, CodecName::Pcma, 8000)
    }

    /// telephone-event at `clock_rate` (it must match the voice codec's).
    pub fn telephone_event(payload_type: u8, clock_rate: u32) -> Self {
        Codec {
            payload_type,
            name: CodecName::TelephoneEvent,
            clock_rate,
            channels: 1,
            fmtp: vec![("".into(), "0-15".into())],
        }
    }

    fn plain(payload_type: u8, name: CodecName, clock_rate: u32) -> Self {
        Codec {
            payload_type,
            name,
            clock_rate,
            channels: 1,
            fmtp: Vec::new(),
        }
    }

    pub fn fmtp_param(&self, name: &str) -> Option<&str> {
        self.fmtp
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `a=rtpmap` value.
    pub fn rtpmap(&self) -> String {
        if self.channels > 1 {
            format!(
                "{} {}/{}/{}",
                self.payload_type,
                self.name.encoding(),
                self.clock_rate,
                self.channels
            )
        } else {
            format!(
                "{} {}/{}",
                self.payload_type,
                self.name.encoding(),
                self.clock_rate
            )
        }
    }

    /// The `a=fmtp` value, if it has parameters. A parameter with an empty
    /// name is a bare value (telephone-event's `0-15`).
    pub fn fmtp_value(&self) -> Option<String> {
        if self.fmtp.is_empty() {
            return None;
        }
        let params: Vec<String> = self
            .fmtp
            .iter()
            .map(|(k, v)| {
                if k.is_empty() {
                    v.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        Some(format!("{} {}", self.payload_type, params.join(";")))
    }

    /// Same format: name and clock rate (payload types may differ).
    pub fn same_format(&self, other: &Codec) -> bool {
        self.name == other.name && self.clock_rate == other.clock_rate
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (pt {})",
            self.name.encoding(),
            self.clock_rate,
            self.payload_type
        )
    }
}
