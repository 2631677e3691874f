//! The RTP fixed header and its zero-copy parser and writer (RFC 3550 §5.1, §5.3.1).
//!
//! Owns: the wire layout of one RTP packet — version, padding, header
//! extension framing, CSRC list, marker, payload type, sequence number,
//! timestamp and SSRC — and the validity checks of RFC 3550 Appendix A.1
//! that can be made on a single packet.
//!
//! Must not touch: sequence/loss/jitter state (`session`), RTCP (`rtcp`),
//! payload formats (`dtmf`), sockets or clocks. RTP/RTCP demultiplexing on
//! a shared port is `rtcp::is_rtcp`.

/// The only RTP version there is (RFC 3550 §5.1).
pub const RTP_VERSION: u8 = 2;
/// Fixed header without CSRCs.
pub const FIXED_HEADER_LEN: usize = 12;
/// The CC field is four bits wide.
pub const MAX_CSRCS: usize = 15;
const EXTENSION_HEADER_LEN: usize = 4;

/// Why a datagram is not an acceptable RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Fewer bytes than the 12-byte fixed header.
    #[error("datagram of {len} bytes is shorter than the 12-byte RTP header")]
    TooShort { len: usize },
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The CSRC count announces more identifiers than the datagram holds.
    #[error("{count} CSRCs announced but the datagram has only {len} bytes")]
    CsrcOverrun { count: usize, len: usize },
    /// The X bit is set but the extension header or its data runs past the end.
    #[error("header extension runs past the end of the {len}-byte datagram")]
    ExtensionOverrun { len: usize },
    /// The P bit is set but the pad count is zero or larger than what
    /// follows the header (RFC 3550 A.1: it must be "less than the total
    /// packet length minus the header size").
    #[error("padding count {count} is invalid with {available} bytes after the header")]
    BadPadding { count: u8, available: usize },
}

/// Contributing sources, at most 15, stored inline so that parsing does not
/// allocate.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CsrcList {
    ids: [u32; MAX_CSRCS],
    len: u8,
}

impl CsrcList {
    /// Keeps the first 15 identifiers; a mixer never has more to name (the
    /// CC field cannot say more).
    pub fn from_slice(ids: &[u32]) -> Self {
        let mut list = CsrcList::default();
        for (slot, id) in list.ids.iter_mut().zip(ids) {
            *slot = *id;
            list.len += 1;
        }
        list
    }

    pub fn as_slice(&self) -> &[u32] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The header fields a sender chooses. Header extensions and padding are
/// understood on receipt but never sent: nothing in icephone needs them.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct RtpHeader {
    pub marker: bool,
    /// 7 bits; the writer drops the high bit.
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrcs: CsrcList,
}

/// A header extension (RFC 3550 §5.3.1): the profile-defined 16 bits and
/// the extension data, whose length is a whole number of 32-bit words.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeaderExtension<'a> {
    pub profile: u16,
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RtpPacket<'a> {
    pub header: RtpHeader,
    pub extension: Option<HeaderExtension<'a>>,
    /// The payload with padding removed.
    pub payload: &'a [u8],
    /// Padding octets removed from the end (0 when the P bit is clear).
    pub padding_len: u8,
}

impl RtpHeader {
    /// Appends this header and `payload` to `out`.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) {
        let csrcs = self.csrcs.as_slice();
        out.reserve(FIXED_HEADER_LEN + 4 * csrcs.len() + payload.len());
        // csrcs.len() <= 15 by construction of CsrcList.
        out.push((RTP_VERSION << 6) | (csrcs.len() as u8 & 0x0F));
        out.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7F));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for csrc in csrcs {
            out.extend_from_slice(&csrc.to_be_bytes());
        }
        out.extend_from_slice(payload);
    }

    /// Size of the header `write` produces.
    pub fn len(&self) -> usize {
        FIXED_HEADER_LEN + 4 * self.csrcs.len()
    }

    /// Never true: a header has at least its 12 fixed bytes.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<'a> RtpPacket<'a> {
    /// Parses one RTP packet, checking everything RFC 3550 A.1 asks of a
    /// single packet: version, CSRC list and extension within bounds, and
    /// a sane padding count. The payload type is not checked here because
    /// only the caller knows what was negotiated.
    pub fn parse(datagram: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let len = datagram.len();
        let fixed: &[u8; FIXED_HEADER_LEN] =
            datagram.first_chunk().ok_or(RtpError::TooShort { len })?;
        let version = fixed[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = fixed[0] & 0x20 != 0;
        let has_extension = fixed[0] & 0x10 != 0;
        let csrc_count = usize::from(fixed[0] & 0x0F);

        let (csrcs, after_csrcs) = parse_csrcs(datagram, csrc_count)?;
        let (extension, body_start) = if has_extension {
            let (ext, end) = parse_extension(datagram, after_csrcs)?;
            (Some(ext), end)
        } else {
            (None, after_csrcs)
        };
        let body = datagram.get(body_start..).unwrap_or(&[]);
        let (payload, padding_len) = strip_padding(body, has_padding)?;

        Ok(RtpPacket {
            header: RtpHeader {
                marker: fixed[1] & 0x80 != 0,
                payload_type: fixed[1] & 0x7F,
                sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
                timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
                ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
                csrcs,
            },
            extension,
            payload,
            padding_len,
        })
    }
}

/// Reads `count` CSRCs after the fixed header; returns them and where the
/// next field starts.
fn parse_csrcs(datagram: &[u8], count: usize) -> Result<(CsrcList, usize), RtpError> {
    let end = FIXED_HEADER_LEN + 4 * count;
    let bytes = datagram
        .get(FIXED_HEADER_LEN..end)
        .ok_or(RtpError::CsrcOverrun {
            count,
            len: datagram.len(),
        })?;
    let mut csrcs = CsrcList::default();
    for (index, slot) in csrcs.ids.iter_mut().take(count).enumerate() {
        *slot = be_u32(bytes, 4 * index).unwrap_or(0);
    }
    csrcs.len = count as u8; // count <= 15: it came from four bits.
    Ok((csrcs, end))
}

/// The big-endian u16 at `at`, or `None` past the end: the one way the
/// codecs read multi-byte fields from untrusted input.
pub(super) fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let field: &[u8; 2] = bytes.get(at..)?.first_chunk()?;
    Some(u16::from_be_bytes(*field))
}

/// The big-endian u32 at `at`, or `None` past the end.
pub(super) fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field: &[u8; 4] = bytes.get(at..)?.first_chunk()?;
    Some(u32::from_be_bytes(*field))
}

/// Reads the extension header at `start`; its length field counts 32-bit
/// words *after* the 4-byte extension header (RFC 3550 §5.3.1).
fn parse_extension(
    datagram: &[u8],
    start: usize,
) -> Result<(HeaderExtension<'_>, usize), RtpError> {
    let overrun = RtpError::ExtensionOverrun {
        len: datagram.len(),
    };
    let head = datagram
        .get(start..start + EXTENSION_HEADER_LEN)
        .ok_or(overrun)?;
    let profile = be_u16(head, 0).ok_or(overrun)?;
    let words = usize::from(be_u16(head, 2).ok_or(overrun)?);
    let data_start = start + EXTENSION_HEADER_LEN;
    let data_end = data_start + 4 * words;
    let data = datagram.get(data_start..data_end).ok_or(overrun)?;
    Ok((HeaderExtension { profile, data }, data_end))
}

/// Removes padding from what follows the header. The pad count in the last
/// octet includes itself, so zero is as invalid as one running into the
/// header.
fn strip_padding(body: &[u8], has_padding: bool) -> Result<(&[u8], u8), RtpError> {
    if !has_padding {
        return Ok((body, 0));
    }
    let count = body.last().copied().unwrap_or(0);
    let bad = RtpError::BadPadding {
        count,
        available: body.len(),
    };
    if count == 0 {
        return Err(bad);
    }
    let payload_len = body.len().checked_sub(usize::from(count)).ok_or(bad)?;
    let payload = body.get(..payload_len).ok_or(bad)?;
    Ok((payload, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 111,
            sequence: 0xBEEF,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x1234_5678,
            csrcs: CsrcList::from_slice(&[7, 8]),
        }
    }

    #[test]
    fn header_round_trip() {
        let header = sample_header();
        let mut out = Vec::new();
        header.write(b"opus", &mut out);
        assert_eq!(out.len(), header.len() + 4);
        let packet = RtpPacket::parse(&out).expect("valid");
        assert_eq!(packet.header, header);
        assert_eq!(packet.payload, b"opus");
        assert_eq!(packet.extension, None);
        assert_eq!(packet.padding_len, 0);
    }

    #[test]
    fn writer_layout_matches_rfc3550_figure() {
        let mut out = Vec::new();
        RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: 1,
            timestamp: 160,
            ssrc: 0xAABB_CCDD,
            csrcs: CsrcList::default(),
        }
        .write(&[0xFF], &mut out);
        assert_eq!(
            out,
            [0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0xAA, 0xBB, 0xCC, 0xDD, 0xFF]
        );
    }

    #[test]
    fn extension_is_skipped_and_exposed() {
        // V=2, X=1, PT=96; one-word extension (profile 0xBEDE, RFC 8285).
        let datagram = [
            0x90, 96, 0, 5, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0, b'h', b'i',
        ];
        let packet = RtpPacket::parse(&datagram).expect("valid");
        let ext = packet.extension.expect("extension");
        assert_eq!(ext.profile, 0xBEDE);
        assert_eq!(ext.data, [0x10, 0xAA, 0, 0]);
        assert_eq!(packet.payload, b"hi");
    }

    #[test]
    fn padding_is_removed_and_validated() {
        let mut datagram = vec![0xA0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
        datagram.extend_from_slice(&[1, 2, 3, 0, 0, 3]);
        let packet = RtpPacket::parse(&datagram).expect("valid");
        assert_eq!(packet.payload, [1, 2, 3]);
        assert_eq!(packet.padding_len, 3);

        let last = datagram.len() - 1;
        datagram[last] = 0;
        assert!(matches!(
            RtpPacket::parse(&datagram),
            Err(RtpError::BadPadding { count: 0, .. })
        ));
        datagram[last] = 7;
        assert!(matches!(
            RtpPacket::parse(&datagram),
            Err(RtpError::BadPadding { count: 7, .. })
        ));
        // Padding may consume the whole body, leaving an empty payload.
        datagram[last] = 6;
        assert_eq!(
            RtpPacket::parse(&datagram).expect("valid").payload,
            &[] as &[u8]
        );
        // P bit with nothing after the header at all.
        assert!(matches!(
            RtpPacket::parse(&datagram[..12]),
            Err(RtpError::BadPadding { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        assert_eq!(
            RtpPacket::parse(&[0x80; 11]),
            Err(RtpError::TooShort { len: 11 })
        );
        let mut bad_version = [0u8; 12];
        bad_version[0] = 0x40;
        assert_eq!(RtpPacket::parse(&bad_version), Err(RtpError::BadVersion(1)));
        let mut csrcs = [0u8; 16];
        csrcs[0] = 0x82; // two CSRCs but room for one
        assert_eq!(
            RtpPacket::parse(&csrcs),
            Err(RtpError::CsrcOverrun { count: 2, len: 16 })
        );
        let ext_header_cut = [0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE];
        assert_eq!(
            RtpPacket::parse(&ext_header_cut),
            Err(RtpError::ExtensionOverrun { len: 13 })
        );
        let ext_data_cut = [
            0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE, 0xDE, 0, 2, 1, 2, 3, 4,
        ];
        assert_eq!(
            RtpPacket::parse(&ext_data_cut),
            Err(RtpError::ExtensionOverrun { len: 20 })
        );
    }

    #[test]
    fn csrc_list_caps_at_fifteen() {
        let many: Vec<u32> = (0..20).collect();
        let list = CsrcList::from_slice(&many);
        assert_eq!(list.len(), MAX_CSRCS);
        assert_eq!(list.as_slice(), &many[..15]);
        let header = RtpHeader {
            csrcs: list,
            ..RtpHeader::default()
        };
        let mut out = Vec::new();
        header.write(&[], &mut out);
        assert_eq!(RtpPacket::parse(&out).expect("valid").header.csrcs, list);
    }
}
