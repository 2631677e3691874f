//! RTP and RTCP for icephone's media path (RFC 3550, 3551, 4733, 5761,
//! 7587) plus the G.107 E-model for a call-quality figure.
//!
//! Owns: RTP packet framing (`packet`), RTCP compounds and NTP time
//! (`rtcp`), per-stream sender/receiver state, statistics and the RTCP
//! schedule (`session`), DTMF telephone-events (`dtmf`) and the quality
//! estimate (`quality`).
//!
//! Must not touch: sockets, ICE/STUN/TURN, SRTP, codecs, jitter buffers or
//! audio devices. Everything here is sans-IO: time is passed in as
//! `Instant` (wallclock once, as an `NtpTime`), randomness as
//! `&mut impl RngCore`, and datagrams go in and out as byte slices.
//! Malformed input yields a typed error, never a panic.

mod dtmf;
mod packet;
mod quality;
mod rtcp;
mod session;

#[cfg(test)]
mod mutation_tests;
#[cfg(test)]
mod test_rng;

pub use dtmf::{
    DtmfDigit, DtmfError, DtmfPacket, DtmfReceiver, DtmfSender, ReceivedDigit, TelephoneEvent,
    DEFAULT_UPDATE_INTERVAL,
};
pub use packet::{
    CsrcList, HeaderExtension, RtpError, RtpHeader, RtpPacket, FIXED_HEADER_LEN, MAX_CSRCS,
    RTP_VERSION,
};
pub use quality::{
    absolute_delay_impairment, burst_ratio, delay_impairment, effective_equipment_impairment,
    estimate, estimate_from_stats, mos_from_r, r_factor, CodecImpairment, QualityEstimate,
    QualityInput,
};
pub use rtcp::{
    append_bye, build_rr, build_sr, from_ntp_short, is_rtcp, parse_compound, round_trip_time,
    to_ntp_short, Goodbye, NtpTime, ReceiverReport, ReportBlock, RtcpError, RtcpPacket, SdesChunk,
    SenderInfo, SenderReport, WallClock, MAX_COUNT, PT_APPLICATION, PT_GOODBYE, PT_RECEIVER_REPORT,
    PT_SENDER_REPORT, PT_SOURCE_DESCRIPTION,
};
pub use session::{
    MediaStats, ReceiveOutcome, RtcpReceived, RtcpTiming, RtpReceiver, RtpSender, RtpSession,
    SessionConfig, G711_CLOCK_RATE, G722_CLOCK_RATE, OPUS_CLOCK_RATE,
};
