//! RTCP compound packets (RFC 3550 §6.4–6.6, A.2), NTP timestamps and
//! RTP/RTCP demultiplexing on one port (RFC 5761 §4).
//!
//! Owns: the wire format of SR, RR (with report blocks), SDES (CNAME only;
//! other items are skipped) and BYE, skipping every other packet type by
//! its length; building SR/RR compounds that carry an SDES CNAME; the NTP
//! timestamp arithmetic behind LSR/DLSR and round-trip time.
//!
//! Must not touch: what goes *into* a report (sequence, loss and jitter
//! state live in `session`), when a report is sent (`session`), sockets or
//! clocks: wallclock time arrives as an `NtpTime` anchored to an `Instant`.

use std::time::{Duration, Instant, SystemTime};

use super::packet::be_u32;

pub const PT_SENDER_REPORT: u8 = 200;
pub const PT_RECEIVER_REPORT: u8 = 201;
pub const PT_SOURCE_DESCRIPTION: u8 = 202;
pub const PT_GOODBYE: u8 = 203;
pub const PT_APPLICATION: u8 = 204;

const RTCP_VERSION: u8 = 2;
const HEADER_LEN: usize = 4;
const SENDER_INFO_LEN: usize = 20;
const REPORT_BLOCK_LEN: usize = 24;
/// RC and SC are five-bit fields.
pub const MAX_COUNT: usize = 31;
const SDES_END: u8 = 0;
const SDES_CNAME: u8 = 1;
/// Seconds from the NTP era (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Why a datagram is not an acceptable RTCP compound packet, or why one
/// cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Fewer than four bytes where a packet header should start.
    #[error("{len} bytes at offset {offset} cannot hold an RTCP header")]
    TruncatedHeader { offset: usize, len: usize },
    #[error("RTCP version {version} at offset {offset}, expected 2")]
    BadVersion { offset: usize, version: u8 },
    /// The length field points past the end of the datagram.
    #[error("packet at offset {offset} declares {declared} bytes but {available} remain")]
    LengthOverrun {
        offset: usize,
        declared: usize,
        available: usize,
    },
    /// RFC 3550 A.2: the first packet of a compound must be SR or RR.
    #[error("compound packet starts with type {0}, not SR or RR")]
    FirstNotReport(u8),
    /// RFC 3550 A.2: only the last packet of a compound may be padded.
    #[error("padding bit set on a packet that is not the last of the compound")]
    PaddingNotLast,
    #[error("padding count {count} is invalid for a {packet_len}-byte packet")]
    BadPadding { count: u8, packet_len: usize },
    /// The body is shorter than the fixed part and report blocks need.
    #[error("packet type {packet_type} needs {needed} body bytes but has {len}")]
    BodyTooShort {
        packet_type: u8,
        needed: usize,
        len: usize,
    },
    /// An SDES chunk or item runs past the packet, or lacks its null item.
    #[error("SDES chunk runs past the end of its packet")]
    SdesOverrun,
    /// The BYE reason length runs past the packet.
    #[error("BYE reason runs past the end of its packet")]
    ByeOverrun,
    #[error("CNAME of {0} bytes exceeds the 255-byte SDES item limit")]
    CnameTooLong(usize),
    #[error("BYE reason of {0} bytes exceeds 255 bytes")]
    ReasonTooLong(usize),
    /// More report blocks or BYE sources than a five-bit count holds.
    #[error("{0} entries exceed the 31 a single RTCP packet can carry")]
    TooManyEntries(usize),
}

/// A 64-bit NTP timestamp: seconds since 1900 in the high half, the
/// binary fraction of a second in the low half (RFC 3550 §4).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// From time since the Unix epoch; wraps into the next NTP era in 2036
    /// as the wire format does.
    pub fn from_unix(since_epoch: Duration) -> Self {
        let seconds = since_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET_SECS) & 0xFFFF_FFFF;
        NtpTime((seconds << 32) | u64::from(fraction_of(since_epoch)))
    }

    /// A clock before 1970 is treated as the epoch rather than failing:
    /// only differences between NTP times matter to RTCP.
    pub fn from_system_time(time: SystemTime) -> Self {
        Self::from_unix(
            time.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// The "middle 32 bits" carried as LSR (RFC 3550 §6.4.1).
    pub fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }

    pub fn wrapping_add(self, elapsed: Duration) -> Self {
        NtpTime(self.0.wrapping_add(ntp64_of(elapsed)))
    }

    pub fn wrapping_sub(self, elapsed: Duration) -> Self {
        NtpTime(self.0.wrapping_sub(ntp64_of(elapsed)))
    }
}

/// The low 32 bits of an NTP timestamp for the sub-second part of `d`.
fn fraction_of(d: Duration) -> u32 {
    ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u32
}

fn ntp64_of(d: Duration) -> u64 {
    (d.as_secs() << 32).wrapping_add(u64::from(fraction_of(d)))
}

/// Maps monotonic `Instant`s to wallclock NTP time from one reading of the
/// wallclock, so that the core never reads a clock and a wallclock step
/// during a call cannot distort RTT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WallClock {
    anchor: Instant,
    anchor_ntp: NtpTime,
}

impl WallClock {
    pub fn new(anchor: Instant, anchor_ntp: NtpTime) -> Self {
        WallClock { anchor, anchor_ntp }
    }

    pub fn ntp_at(&self, at: Instant) -> NtpTime {
        match at.checked_duration_since(self.anchor) {
            Some(after) => self.anchor_ntp.wrapping_add(after),
            None => self.anchor_ntp.wrapping_sub(self.anchor.duration_since(at)),
        }
    }
}

/// A duration in the 1/65536 s units of DLSR, saturating at u32::MAX
/// (about 18 hours).
pub fn to_ntp_short(d: Duration) -> u32 {
    let units = d.as_nanos().saturating_mul(65_536) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

pub fn from_ntp_short(units: u32) -> Duration {
    Duration::from_nanos(u64::from(units) * 1_000_000_000 / 65_536)
}

/// Round-trip time from a report block (RFC 3550 §6.4.1): arrival time A
/// minus LSR minus DLSR, all in middle-32-bit NTP units. `None` when the
/// peer has not yet received an SR (LSR zero) or the result is negative,
/// which only a lying or broken DLSR can cause.
pub fn round_trip_time(
    arrival_middle32: u32,
    last_sr: u32,
    delay_since_last_sr: u32,
) -> Option<Duration> {
    if last_sr == 0 {
        return None;
    }
    let rtt = arrival_middle32
        .wrapping_sub(last_sr)
        .wrapping_sub(delay_since_last_sr);
    // Serial arithmetic: the upper half of the circle is "negative".
    (rtt < 0x8000_0000).then(|| from_ntp_short(rtt))
}

/// RFC 5761 §4: on a shared port, the second octet of RTCP (its packet
/// type) falls in 192..=223, where RTP would have marker set and payload
/// type 64..=95 — payload types an rtcp-mux session must not use.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram.get(1), Some(192..=223))
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256ths.
    pub fraction_lost: u8,
    /// 24-bit signed on the wire; negative when duplicates or late
    /// packets outnumber losses. Clamped when written.
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR from `ssrc`, or 0.
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 s, or 0.
    pub delay_since_last_sr: u32,
}

/// The sender information section of an SR.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SenderInfo {
    pub ntp: NtpTime,
    /// The same instant as `ntp`, on the media clock.
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    /// Payload octets only, as RFC 3550 §6.4.1 defines the field.
    pub octet_count: u32,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SenderReport {
    pub ssrc: u32,
    pub info: SenderInfo,
    pub reports: Vec<ReportBlock>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReceiverReport {
    pub ssrc: u32,
    pub reports: Vec<ReportBlock>,
}

/// One SDES chunk, reduced to the item RTP requires (RFC 3550 §6.5.1).
/// The CNAME is kept as bytes: it is an identifier to compare, and a
/// peer's odd encoding must not cost us its SR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SdesChunk<'a> {
    pub ssrc: u32,
    pub cname: Option<&'a [u8]>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Goodbye<'a> {
    pub ssrcs: Vec<u32>,
    pub reason: Option<&'a [u8]>,
}

/// One packet of a compound.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RtcpPacket<'a> {
    SenderReport(SenderReport),
    ReceiverReport(ReceiverReport),
    SourceDescription(Vec<SdesChunk<'a>>),
    Goodbye(Goodbye<'a>),
    /// APP, feedback, XR and anything newer: framed, not interpreted.
    Other {
        packet_type: u8,
        count: u8,
        body: &'a [u8],
    },
}

/// Parses a compound RTCP packet with the validity checks of RFC 3550
/// A.2: every packet version 2, lengths adding up to the datagram, only
/// the last packet padded, and the first one an SR or RR.
pub fn parse_compound(datagram: &[u8]) -> Result<Vec<RtcpPacket<'_>>, RtcpError> {
    let mut packets = Vec::new();
    let mut offset = 0;
    loop {
        let rest = datagram.get(offset..).unwrap_or(&[]);
        let frame = frame_packet(rest, offset)?;
        if packets.is_empty() && !is_report_type(frame.packet_type) {
            return Err(RtcpError::FirstNotReport(frame.packet_type));
        }
        packets.push(parse_body(&frame)?);
        offset += frame.total_len;
        if offset >= datagram.len() {
            return Ok(packets);
        }
    }
}

fn is_report_type(packet_type: u8) -> bool {
    packet_type == PT_SENDER_REPORT || packet_type == PT_RECEIVER_REPORT
}

/// One packet's header fields and its body without padding.
struct Frame<'a> {
    packet_type: u8,
    count: u8,
    body: &'a [u8],
    total_len: usize,
}

/// Frames the packet at the start of `rest` (which begins at `offset` in
/// the datagram).
fn frame_packet(rest: &[u8], offset: usize) -> Result<Frame<'_>, RtcpError> {
    let header: &[u8; HEADER_LEN] = rest.first_chunk().ok_or(RtcpError::TruncatedHeader {
        offset,
        len: rest.len(),
    })?;
    let version = header[0] >> 6;
    if version != RTCP_VERSION {
        return Err(RtcpError::BadVersion { offset, version });
    }
    let words = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let total_len = (words + 1) * 4;
    let packet = rest.get(..total_len).ok_or(RtcpError::LengthOverrun {
        offset,
        declared: total_len,
        available: rest.len(),
    })?;
    let padded = header[0] & 0x20 != 0;
    if padded && total_len != rest.len() {
        return Err(RtcpError::PaddingNotLast);
    }
    let body = strip_padding(packet, padded)?;
    Ok(Frame {
        packet_type: header[1],
        count: header[0] & 0x1F,
        body,
        total_len,
    })
}

/// The body of `packet` (after its header) minus padding. The pad count
/// includes itself, so it must be at least 1 and may not eat the header.
fn strip_padding(packet: &[u8], padded: bool) -> Result<&[u8], RtcpError> {
    let body = packet.get(HEADER_LEN..).unwrap_or(&[]);
    if !padded {
        return Ok(body);
    }
    let count = packet.last().copied().unwrap_or(0);
    let bad = RtcpError::BadPadding {
        count,
        packet_len: packet.len(),
    };
    if count == 0 {
        return Err(bad);
    }
    let body_len = body.len().checked_sub(usize::from(count)).ok_or(bad)?;
    body.get(..body_len).ok_or(bad)
}

fn parse_body<'a>(frame: &Frame<'a>) -> Result<RtcpPacket<'a>, RtcpError> {
    let count = usize::from(frame.count);
    Ok(match frame.packet_type {
        PT_SENDER_REPORT => RtcpPacket::SenderReport(parse_sender_report(frame.body, count)?),
        PT_RECEIVER_REPORT => RtcpPacket::ReceiverReport(parse_receiver_report(frame.body, count)?),
        PT_SOURCE_DESCRIPTION => RtcpPacket::SourceDescription(parse_sdes(frame.body, count)?),
        PT_GOODBYE => RtcpPacket::Goodbye(parse_goodbye(frame.body, count)?),
        packet_type => RtcpPacket::Other {
            packet_type,
            count: frame.count,
            body: frame.body,
        },
    })
}

/// Fails unless `body` holds at least `needed` bytes.
fn require(body: &[u8], packet_type: u8, needed: usize) -> Result<(), RtcpError> {
    if body.len() < needed {
        return Err(RtcpError::BodyTooShort {
            packet_type,
            needed,
            len: body.len(),
        });
    }
    Ok(())
}

fn parse_sender_report(body: &[u8], count: usize) -> Result<SenderReport, RtcpError> {
    let blocks_at = 4 + SENDER_INFO_LEN;
    require(body, PT_SENDER_REPORT, blocks_at + count * REPORT_BLOCK_LEN)?;
    let field = |at| be_u32(body, at).unwrap_or(0); // in bounds: checked above
    let ntp = (u64::from(field(4)) << 32) | u64::from(field(8));
    Ok(SenderReport {
        ssrc: field(0),
        info: SenderInfo {
            ntp: NtpTime(ntp),
            rtp_timestamp: field(12),
            packet_count: field(16),
            octet_count: field(20),
        },
        // Anything after the blocks is a profile-specific extension: ignored.
        reports: parse_report_blocks(body.get(blocks_at..).unwrap_or(&[]), count),
    })
}

fn parse_receiver_report(body: &[u8], count: usize) -> Result<ReceiverReport, RtcpError> {
    require(body, PT_RECEIVER_REPORT, 4 + count * REPORT_BLOCK_LEN)?;
    Ok(ReceiverReport {
        ssrc: be_u32(body, 0).unwrap_or(0),
        reports: parse_report_blocks(body.get(4..).unwrap_or(&[]), count),
    })
}

/// The caller has checked that `count` blocks fit.
fn parse_report_blocks(bytes: &[u8], count: usize) -> Vec<ReportBlock> {
    bytes
        .chunks_exact(REPORT_BLOCK_LEN)
        .take(count)
        .map(parse_report_block)
        .collect()
}

fn parse_report_block(block: &[u8]) -> ReportBlock {
    let field = |at| be_u32(block, at).unwrap_or(0);
    let loss_word = field(4);
    ReportBlock {
        ssrc: field(0),
        fraction_lost: (loss_word >> 24) as u8,
        // Shift the 24-bit field to the top and back to sign-extend it.
        cumulative_lost: ((loss_word << 8) as i32) >> 8,
        extended_highest_seq: field(8),
        jitter: field(12),
        last_sr: field(16),
        delay_since_last_sr: field(20),
    }
}

/// Chunks: an SSRC, then items (type, length, text) ended by a null item
/// and null octets up to the next 32-bit boundary (RFC 3550 §6.5).
fn parse_sdes(body: &[u8], count: usize) -> Result<Vec<SdesChunk<'_>>, RtcpError> {
    let mut chunks = Vec::with_capacity(count);
    let mut at = 0;
    for _ in 0..count {
        let ssrc = be_u32(body, at).ok_or(RtcpError::SdesOverrun)?;
        let (cname, next) = parse_sdes_items(body, at + 4)?;
        chunks.push(SdesChunk { ssrc, cname });
        at = next;
    }
    Ok(chunks)
}

/// Walks items from `at`; returns the CNAME (if any) and where the next
/// chunk starts.
fn parse_sdes_items(body: &[u8], mut at: usize) -> Result<(Option<&[u8]>, usize), RtcpError> {
    let mut cname = None;
    loop {
        let item_type = *body.get(at).ok_or(RtcpError::SdesOverrun)?;
        if item_type == SDES_END {
            // The body starts 32-bit aligned, so alignment is relative to it.
            return Ok((cname, (at + 1).next_multiple_of(4)));
        }
        let len = usize::from(*body.get(at + 1).ok_or(RtcpError::SdesOverrun)?);
        let text = body
            .get(at + 2..at + 2 + len)
            .ok_or(RtcpError::SdesOverrun)?;
        if item_type == SDES_CNAME {
            cname = Some(text);
        }
        at += 2 + len;
    }
}

fn parse_goodbye(body: &[u8], count: usize) -> Result<Goodbye<'_>, RtcpError> {
    require(body, PT_GOODBYE, 4 * count)?;
    let ssrcs = (0..count)
        .map(|index| be_u32(body, 4 * index).unwrap_or(0))
        .collect();
    let rest = body.get(4 * count..).unwrap_or(&[]);
    let reason = match rest.split_first() {
        None => None,
        Some((&len, text)) => Some(text.get(..usize::from(len)).ok_or(RtcpError::ByeOverrun)?),
    };
    Ok(Goodbye { ssrcs, reason })
}

/// Appends a compound SR + SDES(CNAME) to `out` (RFC 3550 §6.1: a compound
/// starts with a report and carries the CNAME).
pub fn build_sr(report: &SenderReport, cname: &str, out: &mut Vec<u8>) -> Result<(), RtcpError> {
    check_compound(&report.reports, cname)?;
    let start = begin_packet(out, report.reports.len(), PT_SENDER_REPORT);
    out.extend_from_slice(&report.ssrc.to_be_bytes());
    write_sender_info(&report.info, out);
    write_report_blocks(&report.reports, out);
    finish_packet(out, start);
    write_sdes_cname(report.ssrc, cname, out);
    Ok(())
}

/// Appends a compound RR + SDES(CNAME) to `out`.
pub fn build_rr(report: &ReceiverReport, cname: &str, out: &mut Vec<u8>) -> Result<(), RtcpError> {
    check_compound(&report.reports, cname)?;
    let start = begin_packet(out, report.reports.len(), PT_RECEIVER_REPORT);
    out.extend_from_slice(&report.ssrc.to_be_bytes());
    write_report_blocks(&report.reports, out);
    finish_packet(out, start);
    write_sdes_cname(report.ssrc, cname, out);
    Ok(())
}

/// Appends a BYE to a compound already holding a report (RFC 3550 §6.6).
pub fn append_bye(ssrcs: &[u32], reason: Option<&str>, out: &mut Vec<u8>) -> Result<(), RtcpError> {
    if ssrcs.len() > MAX_COUNT {
        return Err(RtcpError::TooManyEntries(ssrcs.len()));
    }
    let reason = reason.map(str::as_bytes);
    let reason_len = reason.map_or(0, <[u8]>::len);
    let reason_len = u8::try_from(reason_len).map_err(|_| RtcpError::ReasonTooLong(reason_len))?;
    let start = begin_packet(out, ssrcs.len(), PT_GOODBYE);
    for ssrc in ssrcs {
        out.extend_from_slice(&ssrc.to_be_bytes());
    }
    if let Some(text) = reason {
        out.push(reason_len);
        out.extend_from_slice(text);
    }
    finish_packet(out, start);
    Ok(())
}

/// Checks everything that could make a build fail before writing a byte,
/// so that `out` is never left holding half a compound.
fn check_compound(reports: &[ReportBlock], cname: &str) -> Result<(), RtcpError> {
    if reports.len() > MAX_COUNT {
        return Err(RtcpError::TooManyEntries(reports.len()));
    }
    if cname.len() > usize::from(u8::MAX) {
        return Err(RtcpError::CnameTooLong(cname.len()));
    }
    Ok(())
}

/// Writes a header with a placeholder length; returns where it starts.
/// Callers pass counts they have checked against `MAX_COUNT`.
fn begin_packet(out: &mut Vec<u8>, count: usize, packet_type: u8) -> usize {
    let start = out.len();
    out.push((RTCP_VERSION << 6) | (count as u8 & 0x1F));
    out.push(packet_type);
    out.extend_from_slice(&[0, 0]);
    start
}

/// Pads the packet begun at `start` with zero octets to a 32-bit boundary
/// (the null padding SDES and BYE call for; the P bit is never used) and
/// fills in its length in words minus one.
fn finish_packet(out: &mut Vec<u8>, start: usize) {
    while (out.len() - start) % 4 != 0 {
        out.push(0);
    }
    let words = ((out.len() - start) / 4 - 1) as u16;
    if let Some(length) = out.get_mut(start + 2..start + 4) {
        length.copy_from_slice(&words.to_be_bytes());
    }
}

fn write_sender_info(info: &SenderInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(&info.ntp.0.to_be_bytes());
    out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
    out.extend_from_slice(&info.packet_count.to_be_bytes());
    out.extend_from_slice(&info.octet_count.to_be_bytes());
}

fn write_report_blocks(reports: &[ReportBlock], out: &mut Vec<u8>) {
    for block in reports {
        out.extend_from_slice(&block.ssrc.to_be_bytes());
        // RFC 3550 A.3: clamp to what 24 signed bits hold.
        let lost = block.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0xFF_FFFF;
        out.extend_from_slice(&((u32::from(block.fraction_lost) << 24) | lost).to_be_bytes());
        out.extend_from_slice(&block.extended_highest_seq.to_be_bytes());
        out.extend_from_slice(&block.jitter.to_be_bytes());
        out.extend_from_slice(&block.last_sr.to_be_bytes());
        out.extend_from_slice(&block.delay_since_last_sr.to_be_bytes());
    }
}

/// The caller has checked the CNAME fits in one item.
fn write_sdes_cname(ssrc: u32, cname: &str, out: &mut Vec<u8>) {
    let start = begin_packet(out, 1, PT_SOURCE_DESCRIPTION);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(SDES_CNAME);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname.as_bytes());
    // The null item ending the chunk; finish_packet pads with more nulls.
    out.push(SDES_END);
    finish_packet(out, start);
}

#[cfg(test)]
mod tests {
    use super::super::packet::be_u16;
    use super::*;

    /// Size in bytes of the packet starting at `at` in a compound.
    fn packet_length_at(compound: &[u8], at: usize) -> Option<usize> {
        be_u16(compound, at + 2).map(|words| (usize::from(words) + 1) * 4)
    }

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 64,
            cumulative_lost: -3,
            extended_highest_seq: 0x0001_0005,
            jitter: 120,
            last_sr: 0xB705_2000,
            delay_since_last_sr: 0x0005_4000,
        }
    }

    #[test]
    fn sr_compound_round_trip() {
        let report = SenderReport {
            ssrc: 0x1111_2222,
            info: SenderInfo {
                ntp: NtpTime(0xE000_0000_8000_0000),
                rtp_timestamp: 48_000,
                packet_count: 50,
                octet_count: 8000,
            },
            reports: vec![block(0x3333_4444)],
        };
        let mut out = Vec::new();
        build_sr(&report, "alice@example.com", &mut out).expect("fits");
        assert_eq!(out.len() % 4, 0);
        assert!(is_rtcp(&out));
        let packets = parse_compound(&out).expect("valid");
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0], RtcpPacket::SenderReport(report));
        assert_eq!(
            packets[1],
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: 0x1111_2222,
                cname: Some(b"alice@example.com"),
            }])
        );
    }

    #[test]
    fn rr_compound_with_bye_round_trip() {
        let report = ReceiverReport {
            ssrc: 9,
            reports: vec![block(1), block(2)],
        };
        let mut out = Vec::new();
        build_rr(&report, "bob", &mut out).expect("fits");
        append_bye(&[9], Some("hangup"), &mut out).expect("fits");
        let packets = parse_compound(&out).expect("valid");
        assert_eq!(packets[0], RtcpPacket::ReceiverReport(report));
        assert_eq!(
            packets[2],
            RtcpPacket::Goodbye(Goodbye {
                ssrcs: vec![9],
                reason: Some(b"hangup"),
            })
        );
    }

    #[test]
    fn hand_written_compound() {
        #[rustfmt::skip]
        let datagram = [
            // RR, RC=1, length 7 words
            0x81, 201, 0, 7,
            0, 0, 0, 0x0A,             // sender SSRC
            0, 0, 0, 0x0B,             // reportee
            0x19, 0xFF, 0xFF, 0xFE,    // fraction 25/256, cumulative -2
            0, 2, 0x12, 0x34,          // extended highest seq: 2 cycles
            0, 0, 0, 40,               // jitter
            0x12, 0x34, 0x56, 0x78,    // LSR
            0, 1, 0, 0,                // DLSR = 1 s
            // SDES, SC=1, length 3: CNAME "ab", NOTE item skipped, null
            0x81, 202, 0, 3,
            0, 0, 0, 0x0A,
            1, 2, b'a', b'b',
            7, 1, b'x', 0,
            // APP, 8 bytes, skipped by length
            0x80, 204, 0, 1,
            b'n', b'a', b'm', b'e',
        ];
        let packets = parse_compound(&datagram).expect("valid");
        let RtcpPacket::ReceiverReport(rr) = &packets[0] else {
            panic!("expected RR, got {packets:?}");
        };
        assert_eq!(rr.ssrc, 0x0A);
        assert_eq!(
            rr.reports,
            [ReportBlock {
                ssrc: 0x0B,
                fraction_lost: 25,
                cumulative_lost: -2,
                extended_highest_seq: 0x0002_1234,
                jitter: 40,
                last_sr: 0x1234_5678,
                delay_since_last_sr: 0x0001_0000,
            }]
        );
        assert_eq!(
            packets[1],
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: 0x0A,
                cname: Some(b"ab"),
            }])
        );
        assert_eq!(
            packets[2],
            RtcpPacket::Other {
                packet_type: PT_APPLICATION,
                count: 0,
                body: b"name",
            }
        );
    }

    #[test]
    fn cumulative_lost_is_24_bit_signed_and_clamped() {
        for (written, read) in [
            (5, 5),
            (-1, -1),
            (0x7F_FFFF, 0x7F_FFFF),
            (10_000_000, 0x7F_FFFF),
            (-0x80_0000, -0x80_0000),
            (-10_000_000, -0x80_0000),
        ] {
            let report = ReceiverReport {
                ssrc: 1,
                reports: vec![ReportBlock {
                    cumulative_lost: written,
                    ..ReportBlock::default()
                }],
            };
            let mut out = Vec::new();
            build_rr(&report, "c", &mut out).expect("fits");
            let packets = parse_compound(&out).expect("valid");
            let RtcpPacket::ReceiverReport(rr) = &packets[0] else {
                panic!("expected RR");
            };
            assert_eq!(rr.reports[0].cumulative_lost, read, "wrote {written}");
        }
    }

    #[test]
    fn malformed_lengths_are_errors() {
        let mut out = Vec::new();
        build_rr(
            &ReceiverReport {
                ssrc: 1,
                reports: vec![block(2)],
            },
            "x",
            &mut out,
        )
        .expect("fits");
        // Length field one word too long for the datagram.
        let mut long = out.clone();
        long[3] += 8;
        assert!(matches!(
            parse_compound(&long),
            Err(RtcpError::LengthOverrun { offset: 0, .. })
        ));
        // Trailing bytes too few for another header.
        let mut trailing = out.clone();
        trailing.extend_from_slice(&[0x80, 200]);
        assert!(matches!(
            parse_compound(&trailing),
            Err(RtcpError::TruncatedHeader { len: 2, .. })
        ));
        // RC says two blocks but the length only holds one.
        let mut count = out.clone();
        count[0] = 0x82;
        assert!(matches!(
            parse_compound(&count),
            Err(RtcpError::BodyTooShort {
                packet_type: PT_RECEIVER_REPORT,
                ..
            })
        ));
        // Truncated datagram.
        assert!(matches!(
            parse_compound(&out[..out.len() - 4]),
            Err(RtcpError::LengthOverrun { .. })
        ));
        assert!(matches!(
            parse_compound(&[]),
            Err(RtcpError::TruncatedHeader { .. })
        ));
    }

    #[test]
    fn compound_rules_of_rfc3550_a2() {
        let mut out = Vec::new();
        build_rr(
            &ReceiverReport {
                ssrc: 1,
                reports: vec![],
            },
            "x",
            &mut out,
        )
        .expect("fits");
        let sdes_at = packet_length_at(&out, 0).expect("length");
        assert_eq!(
            parse_compound(&out[sdes_at..]),
            Err(RtcpError::FirstNotReport(PT_SOURCE_DESCRIPTION))
        );
        let mut padded_first = out.clone();
        padded_first[0] |= 0x20;
        assert_eq!(
            parse_compound(&padded_first),
            Err(RtcpError::PaddingNotLast)
        );
        let mut bad_version = out.clone();
        bad_version[sdes_at] = 0x41;
        assert_eq!(
            parse_compound(&bad_version),
            Err(RtcpError::BadVersion {
                offset: sdes_at,
                version: 1
            })
        );
    }

    #[test]
    fn padding_on_last_packet() {
        // RR with no blocks, then 4 octets of padding (count 4).
        let padded = [0xA0, 201, 0, 2, 0, 0, 0, 7, 0, 0, 0, 4];
        let packets = parse_compound(&padded).expect("valid");
        assert_eq!(
            packets,
            [RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: 7,
                reports: vec![]
            })]
        );
        let mut zero = padded;
        zero[11] = 0;
        assert!(matches!(
            parse_compound(&zero),
            Err(RtcpError::BadPadding { count: 0, .. })
        ));
        let mut eats_ssrc = padded;
        eats_ssrc[11] = 5;
        assert!(matches!(
            parse_compound(&eats_ssrc),
            Err(RtcpError::BodyTooShort { .. })
        ));
        let mut eats_header = padded;
        eats_header[11] = 9;
        assert!(matches!(
            parse_compound(&eats_header),
            Err(RtcpError::BadPadding { count: 9, .. })
        ));
    }

    #[test]
    fn sdes_and_bye_overruns() {
        // SDES item length past the packet end.
        let sdes = [
            0x80, 201, 0, 1, 0, 0, 0, 1, 0x81, 202, 0, 2, 0, 0, 0, 1, 1, 9, b'a', b'b',
        ];
        assert_eq!(parse_compound(&sdes), Err(RtcpError::SdesOverrun));
        // SDES chunk without its null item.
        let unterminated = [
            0x80, 201, 0, 1, 0, 0, 0, 1, 0x81, 202, 0, 2, 0, 0, 0, 1, 1, 2, b'a', b'b',
        ];
        assert_eq!(parse_compound(&unterminated), Err(RtcpError::SdesOverrun));
        // BYE reason length past the packet end.
        let bye = [
            0x80, 201, 0, 1, 0, 0, 0, 1, 0x81, 203, 0, 2, 0, 0, 0, 1, 5, b'b', b'y', b'e',
        ];
        assert_eq!(parse_compound(&bye), Err(RtcpError::ByeOverrun));
    }

    #[test]
    fn builders_reject_what_the_wire_cannot_carry() {
        let mut out = Vec::new();
        let long = "x".repeat(256);
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![],
        };
        assert_eq!(
            build_rr(&rr, &long, &mut out),
            Err(RtcpError::CnameTooLong(256))
        );
        let crowded = ReceiverReport {
            ssrc: 1,
            reports: vec![block(1); 32],
        };
        assert_eq!(
            build_rr(&crowded, "x", &mut out),
            Err(RtcpError::TooManyEntries(32))
        );
        assert_eq!(
            append_bye(&[1], Some(&long), &mut out),
            Err(RtcpError::ReasonTooLong(256))
        );
        assert!(out.is_empty(), "failed builds write nothing");
    }

    #[test]
    fn rtcp_mux_demultiplexing() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 191])); // RTP, marker set, PT 63
        assert!(!is_rtcp(&[0x80, 224])); // RTP, marker set, PT 96
        assert!(!is_rtcp(&[0x80, 0])); // PCMU
        assert!(!is_rtcp(&[0x80]));
    }

    #[test]
    fn ntp_conversions() {
        let ntp = NtpTime::from_unix(Duration::from_millis(1_500));
        assert_eq!(ntp.0 >> 32, NTP_UNIX_OFFSET_SECS + 1);
        assert_eq!(ntp.0 as u32, 0x8000_0000);
        assert_eq!(
            ntp.middle32(),
            (((NTP_UNIX_OFFSET_SECS + 1) as u32) << 16) | 0x8000
        );
        let t0 = Instant::now();
        let clock = WallClock::new(t0, ntp);
        assert_eq!(
            clock.ntp_at(t0 + Duration::from_millis(250)).0 - ntp.0,
            1 << 30
        );
        assert_eq!(to_ntp_short(Duration::from_millis(5_250)), 0x0005_4000);
        assert_eq!(from_ntp_short(0x0006_2000), Duration::from_millis(6_125));
        assert_eq!(to_ntp_short(Duration::from_secs(1 << 20)), u32::MAX);
    }

    /// The worked example of RFC 3550 §6.4.1 (figure 2): A = 46864.500 s,
    /// LSR = 46853.125 s, DLSR = 5.250 s, so the RTT is 6.125 s.
    #[test]
    fn rtt_from_rfc3550_example() {
        let rtt = round_trip_time(0xB710_8000, 0xB705_2000, 0x0005_4000);
        assert_eq!(rtt, Some(Duration::from_millis(6_125)));
        assert_eq!(round_trip_time(0xB710_8000, 0, 0x0005_4000), None);
        assert_eq!(
            round_trip_time(0xB705_2000, 0xB705_2000, 1),
            None,
            "negative"
        );
        // Middle-32 time wraps every 18 hours; serial arithmetic copes.
        assert_eq!(
            round_trip_time(0x0000_8000, 0xFFFF_8000, 0),
            Some(Duration::from_secs(1))
        );
    }
}
