//! Per-stream RTP state for the media path of a two-party call: the sender
//! (SSRC, sequence, timestamps, SR counters), the receiver statistics of
//! RFC 3550 Appendix A.1 (source validation), A.3 (loss), A.8 (jitter),
//! RTT from report blocks (§6.4.1) and the RTCP report schedule (§6.3,
//! A.7), tied together by `RtpSession`, which also snapshots `MediaStats`.
//!
//! Must not touch: wire formats (`packet`, `rtcp`, `dtmf` own those),
//! codecs, jitter buffering or playout, sockets, clocks or global
//! randomness. Time arrives as `Instant`, wallclock as one `NtpTime`
//! reading, randomness as `&mut impl RngCore`.
//!
//! Simplifications for a two-party session, all deliberate:
//! - one remote source at a time; a new SSRC replaces it only after it
//!   passes the A.1 probation on its own;
//! - the RTCP interval is the §6.3.1 formula with members fixed at 2 and
//!   without timer reconsideration (§6.3.6), so also without the
//!   e − 3/2 compensation divisor, which exists only to offset
//!   reconsideration; BYE is sent at once, without §6.3.7 back-off.

use std::time::{Duration, Instant};

use rand::RngCore;

use super::packet::{CsrcList, RtpHeader, RtpPacket};
use super::rtcp::{
    append_bye, build_rr, build_sr, parse_compound, round_trip_time, to_ntp_short, NtpTime,
    ReceiverReport, ReportBlock, RtcpError, RtcpPacket, SenderInfo, SenderReport, WallClock,
};

/// RFC 7587 §4.1: Opus always uses a 48 kHz RTP clock, whatever it encodes.
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// PCMU/PCMA (RFC 3551 §4.5.14).
pub const G711_CLOCK_RATE: u32 = 8_000;
/// RFC 3551 §4.5.2: G.722 samples at 16 kHz but its RTP clock runs at
/// 8 kHz "for historical reasons".
pub const G722_CLOCK_RATE: u32 = 8_000;

/// RFC 3550 A.1 constants.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
const MIN_SEQUENTIAL: u8 = 2;
/// How many sequence numbers behind the highest one duplicate detection
/// remembers; covers every packet A.1 accepts as reordered (< 100 behind).
const DUPLICATE_WINDOW: u16 = 128;

/// IPv4 + UDP headers, counted into the average RTCP size as A.7 asks.
const LOWER_LAYER_OVERHEAD: usize = 28;
/// RFC 3550 §6.2: RTCP gets 5% of the session bandwidth.
const RTCP_BANDWIDTH_FRACTION: f64 = 0.05;
/// Upper bound on any RTCP interval.
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);
/// How many of our recent SRs a report block's LSR may refer to.
const REMEMBERED_SRS: usize = 8;

/// Samples of `elapsed` on a `clock_rate` clock, modulo 2^32 as RTP
/// timestamps are.
fn timestamp_units(elapsed: Duration, clock_rate: u32) -> u32 {
    (elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32
}

/// A uniform draw from [0, 1) built from 32 random bits.
fn unit_interval(rng: &mut impl RngCore) -> f64 {
    f64::from(rng.next_u32()) / 4_294_967_296.0
}

/// The sending half of a stream.
#[derive(Clone, Debug)]
pub struct RtpSender {
    ssrc: u32,
    payload_type: u8,
    clock_rate: u32,
    next_sequence: u16,
    timestamp_base: u32,
    /// Media samples produced so far, modulo 2^32.
    samples_elapsed: u32,
    /// When the media timeline (`timestamp_base`) began.
    started: Instant,
    packets_sent: u64,
    octets_sent: u64,
}

impl RtpSender {
    /// Random SSRC, sequence number and timestamp base as RFC 3550 §5.1
    /// asks, so that the stream is hard to predict (and, for SSRC, to
    /// collide). The first sequence number is kept below 2^15 so the first
    /// wrap is at least 32768 packets away, which SRTP receivers guessing
    /// the roll-over counter appreciate. The media timeline starts at `now`.
    pub fn new(rng: &mut impl RngCore, payload_type: u8, clock_rate: u32, now: Instant) -> Self {
        RtpSender {
            ssrc: rng.next_u32(),
            payload_type,
            clock_rate,
            next_sequence: (rng.next_u32() & 0x7FFF) as u16,
            timestamp_base: rng.next_u32(),
            samples_elapsed: 0,
            started: now,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    /// One media packet whose timestamp is the current position of the
    /// media timeline; the timeline then advances by `samples`.
    pub fn packetize(&mut self, payload: &[u8], samples: u32, marker: bool) -> Vec<u8> {
        let timestamp = self.current_timestamp();
        let packet = self.packetize_at(self.payload_type, timestamp, marker, payload);
        self.samples_elapsed = self.samples_elapsed.wrapping_add(samples);
        packet
    }

    /// A packet in this stream's SSRC and sequence space with a caller-chosen
    /// payload type and timestamp, e.g. RFC 4733 events, whose timestamp is
    /// the event's start. Does not advance the media timeline.
    pub fn packetize_at(
        &mut self,
        payload_type: u8,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        let header = RtpHeader {
            marker,
            payload_type,
            sequence: self.next_sequence,
            timestamp,
            ssrc: self.ssrc,
            csrcs: CsrcList::default(),
        };
        let mut out = Vec::with_capacity(header.len() + payload.len());
        header.write(payload, &mut out);
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.packets_sent += 1;
        self.octets_sent += payload.len() as u64;
        out
    }

    /// Advances the media timeline without sending, e.g. over a silence
    /// period, so that the next packet's timestamp reflects the gap.
    pub fn skip(&mut self, samples: u32) {
        self.samples_elapsed = self.samples_elapsed.wrapping_add(samples);
    }

    /// The timestamp the next `packetize` will use.
    pub fn current_timestamp(&self) -> u32 {
        self.timestamp_base.wrapping_add(self.samples_elapsed)
    }

    /// What an SR says about this sender at `now`. The RTP timestamp is
    /// derived from real time since the timeline began (§6.4.1: "calculated
    /// from the corresponding NTP timestamp"), not copied from the last
    /// packet, so it is right even between packets.
    pub fn sender_info(&self, now: Instant, clock: &WallClock) -> SenderInfo {
        let elapsed = now.saturating_duration_since(self.started);
        SenderInfo {
            ntp: clock.ntp_at(now),
            rtp_timestamp: self
                .timestamp_base
                .wrapping_add(timestamp_units(elapsed, self.clock_rate)),
            // The SR fields are 32-bit and wrap (§6.4.1).
            packet_count: self.packets_sent as u32,
            octet_count: self.octets_sent as u32,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    pub fn next_sequence(&self) -> u16 {
        self.next_sequence
    }

    pub fn timestamp_base(&self) -> u32 {
        self.timestamp_base
    }

    pub fn packets_sent(&self) -> u64 {
        self.packets_sent
    }

    /// Payload octets, as the SR counts them.
    pub fn octets_sent(&self) -> u64 {
        self.octets_sent
    }
}

/// What the receiver made of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveOutcome {
    /// In sequence, or reordered within A.1's window: play it.
    Accepted { extended_seq: u64 },
    /// Accepted, and the sequence space starts afresh here: the source
    /// just passed probation, restarted after a jump, or replaced the
    /// previous remote source. A playout buffer should reset.
    Resynchronized { extended_seq: u64 },
    /// A new source not yet validated (A.1 probation): not counted.
    Probation,
    /// Seen before; not counted again (a deviation from A.1, see
    /// `RtpReceiver::receive`).
    Duplicate,
    /// A very large sequence jump, held back until the next packet
    /// confirms the sender restarted (A.1).
    Discarded,
    /// Not from the source this receiver tracks.
    ForeignSource,
}

/// Reception statistics for one remote SSRC.
#[derive(Clone, Debug)]
pub struct RtpReceiver {
    ssrc: u32,
    clock_rate: u32,
    /// Origin of arrival times on the media clock.
    epoch: Instant,
    /// Packets of this payload type (RFC 4733 events) keep one timestamp
    /// for a whole event, so their transit time grows with the event: they
    /// are kept out of the jitter estimate.
    event_payload_type: Option<u8>,
    heard: bool,
    probation: u8,
    max_seq: u16,
    /// Sequence number cycles, each counted as one wrap of 2^16.
    cycles: u64,
    base_seq: u16,
    /// The sequence number that would confirm a restart after a jump.
    bad_seq: Option<u16>,
    /// Bit k set: sequence number `max_seq - k` has been received.
    recent: u128,
    received: u64,
    received_prior: u64,
    expected_prior: u64,
    octets_received: u64,
    last_fraction_lost: u8,
    /// Previous relative transit time, in timestamp units.
    transit: Option<u32>,
    /// A.8 jitter estimate in timestamp units.
    jitter: f64,
    /// Middle 32 bits of the last SR from this source and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl RtpReceiver {
    pub fn new(ssrc: u32, clock_rate: u32, now: Instant) -> Self {
        RtpReceiver {
            ssrc,
            clock_rate,
            epoch: now,
            event_payload_type: None,
            heard: false,
            probation: MIN_SEQUENTIAL,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            recent: 0,
            received: 0,
            received_prior: 0,
            expected_prior: 0,
            octets_received: 0,
            last_fraction_lost: 0,
            transit: None,
            jitter: 0.0,
            last_sr: None,
        }
    }

    /// Keeps packets of `payload_type` (telephone-event) out of the jitter
    /// estimate; they still count for sequence and loss.
    pub fn with_event_payload_type(mut self, payload_type: Option<u8>) -> Self {
        self.event_payload_type = payload_type;
        self
    }

    /// RFC 3550 A.1 `update_seq`, plus A.8 jitter and duplicate detection.
    ///
    /// Deviation: A.1 counts duplicates as received ("the number of packets
    /// received includes any which are late or duplicates, and hence may be
    /// greater" than expected). We recognise duplicates within the last 128
    /// sequence numbers and count them nowhere, so that cumulative loss is
    /// not masked by a network that duplicates packets.
    pub fn receive(
        &mut self,
        header: &RtpHeader,
        payload_len: usize,
        now: Instant,
    ) -> ReceiveOutcome {
        if header.ssrc != self.ssrc {
            return ReceiveOutcome::ForeignSource;
        }
        let seq = header.sequence;
        if !self.heard {
            self.heard = true;
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        let outcome = self.update_seq(seq);
        if let ReceiveOutcome::Accepted { .. } | ReceiveOutcome::Resynchronized { .. } = outcome {
            self.octets_received += payload_len as u64;
            if self.event_payload_type != Some(header.payload_type) {
                self.update_jitter(header.timestamp, now);
            }
        }
        outcome
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq;
        self.max_seq = seq;
        self.bad_seq = None;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        self.recent = 1;
        self.transit = None;
    }

    fn update_seq(&mut self, seq: u16) -> ReceiveOutcome {
        if self.probation > 0 {
            return self.update_probation(seq);
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta == 0 {
            return ReceiveOutcome::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles += 1;
            }
            self.max_seq = seq;
            self.recent = if udelta >= DUPLICATE_WINDOW {
                1
            } else {
                (self.recent << udelta) | 1
            };
            self.received += 1;
            ReceiveOutcome::Accepted {
                extended_seq: self.extended_max(),
            }
        } else if udelta <= u16::MAX - MAX_MISORDER + 1 {
            // A very large jump: accept it only once the next packet follows it.
            if Some(seq) == self.bad_seq {
                self.init_seq(seq);
                self.received += 1;
                return ReceiveOutcome::Resynchronized {
                    extended_seq: self.extended_max(),
                };
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            ReceiveOutcome::Discarded
        } else {
            self.update_reordered(seq)
        }
    }

    /// A new source must deliver MIN_SEQUENTIAL packets in sequence.
    fn update_probation(&mut self, seq: u16) -> ReceiveOutcome {
        if seq != self.max_seq.wrapping_add(1) {
            self.probation = MIN_SEQUENTIAL - 1;
            self.max_seq = seq;
            return ReceiveOutcome::Probation;
        }
        self.probation -= 1;
        self.max_seq = seq;
        if self.probation > 0 {
            return ReceiveOutcome::Probation;
        }
        self.init_seq(seq);
        self.received += 1;
        ReceiveOutcome::Resynchronized {
            extended_seq: self.extended_max(),
        }
    }

    /// A packet up to MAX_MISORDER behind the highest one.
    fn update_reordered(&mut self, seq: u16) -> ReceiveOutcome {
        let behind = self.max_seq.wrapping_sub(seq);
        let bit = 1u128 << behind; // behind < MAX_MISORDER < 128
        if self.recent & bit != 0 {
            return ReceiveOutcome::Duplicate;
        }
        self.recent |= bit;
        self.received += 1;
        ReceiveOutcome::Accepted {
            // Saturates only for a packet older than the first one accepted.
            extended_seq: self.extended_max().saturating_sub(u64::from(behind)),
        }
    }

    /// RFC 3550 A.8, in floating point: J += (|D| - J) / 16, where D is the
    /// change in relative transit time (arrival minus RTP timestamp, both
    /// in timestamp units).
    fn update_jitter(&mut self, timestamp: u32, now: Instant) {
        let arrival = timestamp_units(now.saturating_duration_since(self.epoch), self.clock_rate);
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(previous) = self.transit {
            // Wrapping difference read as signed: transit times are modulo 2^32.
            let d = f64::from((transit.wrapping_sub(previous) as i32).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// Records an SR from this source for the LSR/DLSR of our next report.
    pub fn on_sender_report(&mut self, ntp: NtpTime, now: Instant) {
        self.last_sr = Some((ntp.middle32(), now));
    }

    /// Whether the source has passed probation.
    pub fn is_valid(&self) -> bool {
        self.heard && self.probation == 0
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn extended_max(&self) -> u64 {
        (self.cycles << 16) | u64::from(self.max_seq)
    }

    /// A.3: packets expected since the sequence space (re)started.
    pub fn expected(&self) -> u64 {
        if !self.is_valid() {
            return 0;
        }
        (self.extended_max() + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Valid, non-duplicate packets since the sequence space (re)started.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn octets_received(&self) -> u64 {
        self.octets_received
    }

    /// A.3 cumulative loss: negative when late packets from before the
    /// first one arrive.
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Jitter in timestamp units.
    pub fn jitter_units(&self) -> f64 {
        self.jitter
    }

    pub fn jitter(&self) -> Duration {
        Duration::try_from_secs_f64(self.jitter / f64::from(self.clock_rate.max(1)))
            .unwrap_or_default()
    }

    /// Fraction lost (1/256ths) in the interval closed by the last
    /// `report_block`.
    pub fn last_fraction_lost(&self) -> u8 {
        self.last_fraction_lost
    }

    /// The report block about this source at `now`; closes the A.3
    /// reporting interval.
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        self.last_fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((middle, arrived)) => {
                (middle, to_ntp_short(now.saturating_duration_since(arrived)))
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost: self.last_fraction_lost,
            cumulative_lost: self.cumulative_lost().clamp(-0x80_0000, 0x7F_FFFF) as i32,
            extended_highest_seq: self.extended_max() as u32,
            jitter: self.jitter as u32,
            last_sr,
            delay_since_last_sr,
        }
    }
}

/// When RTCP reports go out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RtcpTiming {
    /// §6.2 recommends 5 s; smaller values are allowed for unicast ("360
    /// divided by the session bandwidth in kbit/s").
    pub min_interval: Duration,
    /// Media bandwidth of the session; RTCP may use 5% of it.
    pub session_bandwidth_bps: u32,
}

impl Default for RtcpTiming {
    fn default() -> Self {
        RtcpTiming {
            min_interval: Duration::from_secs(5),
            session_bandwidth_bps: 64_000,
        }
    }
}

impl RtcpTiming {
    /// The §6.3.1 interval for a two-party session, randomised by a factor
    /// in [0.5, 1.5). With `initial`, the minimum is halved (§6.2: "for
    /// the first RTCP packet ... half the minimum interval"). `senders` is
    /// how many of the two members sent RTP in the last two intervals.
    pub fn interval(
        &self,
        avg_rtcp_size: f64,
        senders: u32,
        initial: bool,
        rng: &mut impl RngCore,
    ) -> Duration {
        const MEMBERS: f64 = 2.0;
        let minimum = if initial {
            self.min_interval / 2
        } else {
            self.min_interval
        };
        let rtcp_bandwidth = f64::from(self.session_bandwidth_bps) / 8.0 * RTCP_BANDWIDTH_FRACTION;
        // §6.3.1 gives senders a quarter of the bandwidth when they are at
        // most a quarter of the members; of two members that only happens
        // with no senders at all, and then both are receivers sharing the
        // receivers' three quarters.
        let bandwidth = if senders == 0 {
            rtcp_bandwidth * 0.75
        } else {
            rtcp_bandwidth
        };
        let deterministic = Duration::try_from_secs_f64(avg_rtcp_size * MEMBERS / bandwidth)
            .unwrap_or(minimum)
            .max(minimum);
        let randomised = deterministic.as_secs_f64() * (0.5 + unit_interval(rng));
        // An absurd configuration must not overflow `Instant` arithmetic.
        Duration::try_from_secs_f64(randomised)
            .unwrap_or(MAX_INTERVAL)
            .min(MAX_INTERVAL)
    }
}

/// What a session was configured with.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionConfig {
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Negotiated telephone-event payload type, if any.
    pub event_payload_type: Option<u8>,
    /// Our canonical name (§6.5.1), at most 255 bytes.
    pub cname: String,
    pub timing: RtcpTiming,
}

/// A snapshot for the UI and the E-model. Receive-side figures are about
/// the current remote source.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MediaStats {
    pub packets_sent: u64,
    /// RTP payload octets.
    pub bytes_sent: u64,
    pub packets_received: u64,
    /// RTP payload octets.
    pub bytes_received: u64,
    pub cumulative_lost: i64,
    /// Fraction lost in the last reporting interval we closed, 0.0..=1.0.
    pub fraction_lost: f64,
    pub jitter_ms: f64,
    pub rtt_ms: Option<f64>,
    /// The loss the peer last reported about our stream, 0.0..=1.0.
    pub remote_fraction_lost: Option<f64>,
}

/// What an incoming RTCP compound told us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcpReceived {
    /// A fresh RTT sample from a report block about our stream.
    pub rtt: Option<Duration>,
    /// The remote source said BYE.
    pub remote_bye: bool,
}

/// Counts at a report time, to tell who sent in the last two intervals.
#[derive(Clone, Copy, Debug, Default)]
struct Activity {
    sent: u64,
    received: u64,
}

/// Sender, receiver and RTCP for one media stream of a two-party call.
#[derive(Clone, Debug)]
pub struct RtpSession {
    config: SessionConfig,
    clock: WallClock,
    sender: RtpSender,
    receiver: Option<RtpReceiver>,
    /// A new remote SSRC on probation, replacing `receiver` once valid.
    candidate: Option<RtpReceiver>,
    packets_received: u64,
    octets_received: u64,
    avg_rtcp_size: f64,
    next_report: Instant,
    /// Activity at the last report and the one before (§6.4: "since the
    /// last-but-one report").
    activity: [Activity; 2],
    /// Middle-32 NTP times of our recent SRs, newest last.
    sent_srs: Vec<u32>,
    rtt: Option<Duration>,
    remote_report: Option<ReportBlock>,
    remote_bye: bool,
}

impl RtpSession {
    /// `wallclock` is the NTP time at `now`, read once by the caller.
    pub fn new(
        config: SessionConfig,
        now: Instant,
        wallclock: NtpTime,
        rng: &mut impl RngCore,
    ) -> Result<Self, RtcpError> {
        if config.cname.len() > usize::from(u8::MAX) {
            return Err(RtcpError::CnameTooLong(config.cname.len()));
        }
        let sender = RtpSender::new(rng, config.payload_type, config.clock_rate, now);
        // A.7 starts the average at "the probable size of the first RTCP
        // packet": an SR with one block (52 bytes) and our SDES (about 12
        // bytes plus the CNAME).
        let avg_rtcp_size = (LOWER_LAYER_OVERHEAD + 52 + 12 + config.cname.len()) as f64;
        let first = config.timing.interval(avg_rtcp_size, 0, true, rng);
        Ok(RtpSession {
            clock: WallClock::new(now, wallclock),
            sender,
            receiver: None,
            candidate: None,
            packets_received: 0,
            octets_received: 0,
            avg_rtcp_size,
            next_report: now + first,
            activity: [Activity::default(); 2],
            sent_srs: Vec::with_capacity(REMEMBERED_SRS),
            rtt: None,
            remote_report: None,
            remote_bye: false,
            config,
        })
    }

    pub fn sender(&self) -> &RtpSender {
        &self.sender
    }

    /// For `packetize`, `packetize_at` (DTMF) and `skip`.
    pub fn sender_mut(&mut self) -> &mut RtpSender {
        &mut self.sender
    }

    /// The current remote source (the first one may still be on probation).
    pub fn receiver(&self) -> Option<&RtpReceiver> {
        self.receiver.as_ref()
    }

    /// Feeds one received RTP packet through source validation and
    /// statistics.
    pub fn receive_rtp(&mut self, packet: &RtpPacket<'_>, now: Instant) -> ReceiveOutcome {
        let ssrc = packet.header.ssrc;
        // Our own SSRC coming back is a loop or a collision (§8.2); neither
        // is media to play.
        if ssrc == self.sender.ssrc() {
            return ReceiveOutcome::ForeignSource;
        }
        let outcome = match &mut self.receiver {
            Some(current) if current.ssrc() == ssrc => {
                current.receive(&packet.header, packet.payload.len(), now)
            }
            Some(_) => self.receive_from_candidate(packet, now),
            None => {
                let mut first = self.new_receiver(ssrc, now);
                let outcome = first.receive(&packet.header, packet.payload.len(), now);
                self.receiver = Some(first);
                outcome
            }
        };
        if let ReceiveOutcome::Accepted { .. } | ReceiveOutcome::Resynchronized { .. } = outcome {
            self.packets_received += 1;
            self.octets_received += packet.payload.len() as u64;
        }
        outcome
    }

    fn new_receiver(&self, ssrc: u32, now: Instant) -> RtpReceiver {
        RtpReceiver::new(ssrc, self.config.clock_rate, now)
            .with_event_payload_type(self.config.event_payload_type)
    }

    /// A packet from an SSRC other than the current source's: it must pass
    /// probation on its own before it replaces the current source, so a
    /// stray or spoofed packet cannot hijack the stream.
    fn receive_from_candidate(&mut self, packet: &RtpPacket<'_>, now: Instant) -> ReceiveOutcome {
        let ssrc = packet.header.ssrc;
        let mut candidate = match self.candidate.take() {
            Some(candidate) if candidate.ssrc() == ssrc => candidate,
            _ => self.new_receiver(ssrc, now),
        };
        let outcome = candidate.receive(&packet.header, packet.payload.len(), now);
        if candidate.is_valid() {
            self.receiver = Some(candidate);
            self.remote_bye = false;
        } else {
            self.candidate = Some(candidate);
        }
        outcome
    }

    /// Processes an incoming RTCP compound.
    pub fn receive_rtcp(
        &mut self,
        datagram: &[u8],
        now: Instant,
    ) -> Result<RtcpReceived, RtcpError> {
        let packets = parse_compound(datagram)?;
        self.note_rtcp_size(datagram.len());
        let mut received = RtcpReceived::default();
        for packet in &packets {
            match packet {
                RtcpPacket::SenderReport(sr) => {
                    if let Some(receiver) = self.receiver.as_mut().filter(|r| r.ssrc() == sr.ssrc) {
                        receiver.on_sender_report(sr.info.ntp, now);
                    }
                    self.read_report_blocks(&sr.reports, now, &mut received);
                }
                RtcpPacket::ReceiverReport(rr) => {
                    self.read_report_blocks(&rr.reports, now, &mut received)
                }
                RtcpPacket::Goodbye(bye) => {
                    let current = self.receiver.as_ref().map(RtpReceiver::ssrc);
                    if current.is_some_and(|ssrc| bye.ssrcs.contains(&ssrc)) {
                        self.remote_bye = true;
                        received.remote_bye = true;
                    }
                }
                RtcpPacket::SourceDescription(_) | RtcpPacket::Other { .. } => {}
            }
        }
        Ok(received)
    }

    fn read_report_blocks(
        &mut self,
        blocks: &[ReportBlock],
        now: Instant,
        received: &mut RtcpReceived,
    ) {
        for block in blocks.iter().filter(|b| b.ssrc == self.sender.ssrc()) {
            self.remote_report = Some(*block);
            // Only trust an LSR that echoes one of our SRs: anything else
            // would produce a meaningless RTT.
            if !self.sent_srs.contains(&block.last_sr) {
                continue;
            }
            let arrival = self.clock.ntp_at(now).middle32();
            if let Some(rtt) = round_trip_time(arrival, block.last_sr, block.delay_since_last_sr) {
                self.rtt = Some(rtt);
                received.rtt = Some(rtt);
            }
        }
    }

    /// A.7: the average counts every RTCP packet sent or received,
    /// including lower-layer headers.
    fn note_rtcp_size(&mut self, len: usize) {
        let size = (len + LOWER_LAYER_OVERHEAD) as f64;
        self.avg_rtcp_size += (size - self.avg_rtcp_size) / 16.0;
    }

    /// When the next RTCP report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_report
    }

    /// The compound report to send if one is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl RngCore) -> Option<Vec<u8>> {
        if now < self.next_report {
            return None;
        }
        let (we_sent, remote_sent) = self.recent_activity();
        let compound = self.build_report(now, we_sent);
        self.note_rtcp_size(compound.len());
        self.activity = [
            self.activity[1],
            Activity {
                sent: self.sender.packets_sent(),
                received: self.packets_received,
            },
        ];
        let senders = u32::from(we_sent) + u32::from(remote_sent);
        let interval = self
            .config
            .timing
            .interval(self.avg_rtcp_size, senders, false, rng);
        self.next_report = now + interval;
        Some(compound)
    }

    /// Whether we, and the peer, sent RTP since the last-but-one report.
    fn recent_activity(&self) -> (bool, bool) {
        let before_last = self.activity[0];
        (
            self.sender.packets_sent() > before_last.sent,
            self.packets_received > before_last.received,
        )
    }

    /// Our compound report: SR if we have sent RTP since the last-but-one
    /// report (§6.4), else RR, followed by SDES CNAME.
    fn build_report(&mut self, now: Instant, we_sent: bool) -> Vec<u8> {
        let reports: Vec<ReportBlock> = self
            .receiver
            .as_mut()
            .filter(|r| r.is_valid())
            .map(|r| r.report_block(now))
            .into_iter()
            .collect();
        let ssrc = self.sender.ssrc();
        let mut out = Vec::with_capacity(128);
        // Cannot fail: one block at most and the CNAME was checked in new().
        let built = if we_sent {
            let info = self.sender.sender_info(now, &self.clock);
            self.remember_sr(info.ntp.middle32());
            build_sr(
                &SenderReport {
                    ssrc,
                    info,
                    reports,
                },
                &self.config.cname,
                &mut out,
            )
        } else {
            build_rr(
                &ReceiverReport { ssrc, reports },
                &self.config.cname,
                &mut out,
            )
        };
        debug_assert!(built.is_ok());
        out
    }

    fn remember_sr(&mut self, middle32: u32) {
        if self.sent_srs.len() == REMEMBERED_SRS {
            self.sent_srs.remove(0);
        }
        self.sent_srs.push(middle32);
    }

    /// The final compound: our report followed by a BYE (§6.6), sent at
    /// once (no §6.3.7 reconsideration with a single peer).
    pub fn bye(&mut self, now: Instant, reason: Option<&str>) -> Result<Vec<u8>, RtcpError> {
        let (we_sent, _) = self.recent_activity();
        let mut compound = self.build_report(now, we_sent);
        append_bye(&[self.sender.ssrc()], reason, &mut compound)?;
        Ok(compound)
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Whether the current remote source said BYE.
    pub fn remote_bye(&self) -> bool {
        self.remote_bye
    }

    pub fn stats(&self) -> MediaStats {
        let receiver = self.receiver.as_ref();
        MediaStats {
            packets_sent: self.sender.packets_sent(),
            bytes_sent: self.sender.octets_sent(),
            packets_received: self.packets_received,
            bytes_received: self.octets_received,
            cumulative_lost: receiver.map_or(0, RtpReceiver::cumulative_lost),
            fraction_lost: receiver.map_or(0.0, |r| f64::from(r.last_fraction_lost()) / 256.0),
            jitter_ms: receiver.map_or(0.0, |r| r.jitter().as_secs_f64() * 1000.0),
            rtt_ms: self.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
            remote_fraction_lost: self
                .remote_report
                .map(|b| f64::from(b.fraction_lost) / 256.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_rng::XorShift;
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SSRC: u32 = 0xCAFE;

    fn header(seq: u16, timestamp: u32) -> RtpHeader {
        RtpHeader {
            marker: false,
            payload_type: 111,
            sequence: seq,
            timestamp,
            ssrc: SSRC,
            csrcs: CsrcList::default(),
        }
    }

    /// A receiver past probation whose highest sequence number is `seq`.
    fn validated(seq: u16, t0: Instant) -> RtpReceiver {
        let mut receiver = RtpReceiver::new(SSRC, OPUS_CLOCK_RATE, t0);
        assert_eq!(
            receiver.receive(&header(seq.wrapping_sub(1), 0), 0, t0),
            ReceiveOutcome::Probation
        );
        assert!(matches!(
            receiver.receive(&header(seq, 0), 0, t0),
            ReceiveOutcome::Resynchronized { .. }
        ));
        receiver
    }

    #[test]
    fn sender_numbers_packets_and_advances_timestamps() {
        let t0 = Instant::now();
        let mut sender = RtpSender::new(&mut XorShift::new(7), 111, OPUS_CLOCK_RATE, t0);
        let (seq0, ts0) = (sender.next_sequence(), sender.current_timestamp());
        assert!(seq0 < 0x8000);
        assert_eq!(ts0, sender.timestamp_base());
        let first = sender.packetize(b"abc", 960, true);
        let second = sender.packetize(b"de", 960, false);
        let first = RtpPacket::parse(&first).expect("valid");
        let second = RtpPacket::parse(&second).expect("valid");
        assert_eq!(first.header.ssrc, sender.ssrc());
        assert!(first.header.marker && !second.header.marker);
        assert_eq!(first.header.sequence, seq0);
        assert_eq!(second.header.sequence, seq0.wrapping_add(1));
        assert_eq!(first.header.timestamp, ts0);
        assert_eq!(second.header.timestamp, ts0.wrapping_add(960));
        assert_eq!((sender.packets_sent(), sender.octets_sent()), (2, 5));

        sender.skip(960 * 5);
        let event = sender.packetize_at(101, 42, true, &[1, 2, 3, 4]);
        let event = RtpPacket::parse(&event).expect("valid");
        assert_eq!(
            (event.header.payload_type, event.header.timestamp),
            (101, 42)
        );
        assert_eq!(sender.current_timestamp(), ts0.wrapping_add(960 * 7));

        let other = RtpSender::new(&mut XorShift::new(8), 111, OPUS_CLOCK_RATE, t0);
        assert_ne!(
            other.ssrc(),
            sender.ssrc(),
            "SSRC comes from the injected RNG"
        );
    }

    #[test]
    fn sender_info_follows_real_time() {
        let t0 = Instant::now();
        let sender = RtpSender::new(&mut XorShift::new(1), 0, G711_CLOCK_RATE, t0);
        let clock = WallClock::new(t0, NtpTime(5 << 32));
        let info = sender.sender_info(t0 + 500 * MS, &clock);
        assert_eq!(
            info.rtp_timestamp,
            sender.timestamp_base().wrapping_add(4000)
        );
        assert_eq!(info.ntp, NtpTime((5 << 32) | (1 << 31)));
    }

    #[test]
    fn probation_needs_two_sequential_packets() {
        let t0 = Instant::now();
        let mut receiver = RtpReceiver::new(SSRC, OPUS_CLOCK_RATE, t0);
        assert_eq!(
            receiver.receive(&header(100, 0), 10, t0),
            ReceiveOutcome::Probation
        );
        // Not sequential: probation starts over from this packet.
        assert_eq!(
            receiver.receive(&header(300, 0), 10, t0),
            ReceiveOutcome::Probation
        );
        assert!(!receiver.is_valid());
        assert_eq!(
            receiver.receive(&header(301, 0), 10, t0),
            ReceiveOutcome::Resynchronized { extended_seq: 301 }
        );
        assert!(receiver.is_valid());
        assert_eq!((receiver.received(), receiver.expected()), (1, 1));
        assert_eq!(
            receiver.receive(&header(302, 0), 10, t0),
            ReceiveOutcome::Accepted { extended_seq: 302 }
        );
        assert_eq!(
            receiver.octets_received(),
            20,
            "probation packets are not counted"
        );
        let mut stranger = header(303, 0);
        stranger.ssrc = 1;
        assert_eq!(
            receiver.receive(&stranger, 10, t0),
            ReceiveOutcome::ForeignSource
        );
    }

    #[test]
    fn wraparound_counts_a_cycle() {
        let t0 = Instant::now();
        let mut receiver = validated(65_534, t0);
        assert_eq!(
            receiver.receive(&header(65_535, 0), 0, t0),
            ReceiveOutcome::Accepted {
                extended_seq: 65_535
            }
        );
        assert_eq!(
            receiver.receive(&header(0, 0), 0, t0),
            ReceiveOutcome::Accepted {
                extended_seq: 65_536
            }
        );
        assert_eq!(
            receiver.receive(&header(1, 0), 0, t0),
            ReceiveOutcome::Accepted {
                extended_seq: 65_537
            }
        );
        // Reordered across the wrap: placed in the previous cycle.
        let mut late = validated(65_535, t0);
        late.receive(&header(1, 0), 0, t0);
        assert_eq!(
            late.receive(&header(0, 0), 0, t0),
            ReceiveOutcome::Accepted {
                extended_seq: 65_536
            }
        );
        let block = receiver.report_block(t0);
        assert_eq!(block.extended_highest_seq, 0x0001_0001);
        assert_eq!((block.cumulative_lost, block.fraction_lost), (0, 0));
    }

    #[test]
    fn big_jump_then_sequential_packet_is_a_restart() {
        let t0 = Instant::now();
        let mut receiver = validated(1_000, t0);
        receiver.receive(&header(1_001, 0), 0, t0);
        assert_eq!(
            receiver.receive(&header(40_000, 0), 0, t0),
            ReceiveOutcome::Discarded
        );
        assert_eq!(
            receiver.receive(&header(40_001, 0), 0, t0),
            ReceiveOutcome::Resynchronized {
                extended_seq: 40_001
            }
        );
        assert_eq!(
            receiver.receive(&header(40_002, 0), 0, t0),
            ReceiveOutcome::Accepted {
                extended_seq: 40_002
            }
        );
        assert_eq!((receiver.received(), receiver.expected()), (2, 2));
        // A lone jump that is not followed up is discarded and forgotten.
        assert_eq!(
            receiver.receive(&header(10_000, 0), 0, t0),
            ReceiveOutcome::Discarded
        );
        assert_eq!(
            receiver.receive(&header(40_003, 0), 0, t0),
            ReceiveOutcome::Accepted {
                extended_seq: 40_003
            }
        );
        assert_eq!(
            receiver.receive(&header(10_002, 0), 0, t0),
            ReceiveOutcome::Discarded
        );
    }

    #[test]
    fn duplicates_and_reordering() {
        let t0 = Instant::now();
        let mut receiver = validated(10, t0);
        assert_eq!(
            receiver.receive(&header(10, 0), 0, t0),
            ReceiveOutcome::Duplicate
        );
        assert_eq!(
            receiver.receive(&header(13, 0), 0, t0),
            ReceiveOutcome::Accepted { extended_seq: 13 }
        );
        assert_eq!(
            receiver.receive(&header(12, 0), 0, t0),
            ReceiveOutcome::Accepted { extended_seq: 12 }
        );
        assert_eq!(
            receiver.receive(&header(12, 0), 0, t0),
            ReceiveOutcome::Duplicate
        );
        assert_eq!(
            receiver.receive(&header(11, 0), 0, t0),
            ReceiveOutcome::Accepted { extended_seq: 11 }
        );
        assert_eq!((receiver.received(), receiver.expected()), (4, 4));
        assert_eq!(receiver.cumulative_lost(), 0);
        // Far enough ahead to slide the whole window: older ones are
        // reordered-too-late jumps, not duplicates.
        assert!(matches!(
            receiver.receive(&header(2_000, 0), 0, t0),
            ReceiveOutcome::Accepted { .. }
        ));
        assert_eq!(
            receiver.receive(&header(13, 0), 0, t0),
            ReceiveOutcome::Discarded
        );
    }

    #[test]
    fn loss_and_fraction_lost_per_interval() {
        let t0 = Instant::now();
        let mut receiver = validated(0, t0);
        // Interval 1: sequence numbers 1..=99 with every tenth one lost.
        for seq in (1..100).filter(|s| s % 10 != 0) {
            receiver.receive(&header(seq, 0), 0, t0);
        }
        let block = receiver.report_block(t0);
        // Expected 100 (0..=99), received 91: lost 9, 9*256/100 = 23.
        assert_eq!((block.cumulative_lost, block.fraction_lost), (9, 23));
        // Interval 2: nothing lost; the cumulative count stays.
        for seq in 100..200 {
            receiver.receive(&header(seq, 0), 0, t0);
        }
        let block = receiver.report_block(t0);
        assert_eq!((block.cumulative_lost, block.fraction_lost), (9, 0));
        // Interval 3: half lost.
        for seq in (200..300).step_by(2) {
            receiver.receive(&header(seq, 0), 0, t0);
        }
        let block = receiver.report_block(t0);
        // Expected 99 (199 -> 298), received 50: 49 lost, 49*256/99 = 126.
        assert_eq!((block.cumulative_lost, block.fraction_lost), (58, 126));
        assert_eq!(
            receiver.report_block(t0).fraction_lost,
            0,
            "an empty interval reports no loss"
        );
    }

    /// Feeds 20 ms Opus packets whose arrival deviates from the nominal
    /// time by `offset(i)`; returns the jitter estimate in ms. The first
    /// two packets validate the source.
    fn jitter_after(offset: impl Fn(u32) -> Duration, packets: u32) -> f64 {
        let t0 = Instant::now();
        let mut receiver = RtpReceiver::new(SSRC, OPUS_CLOCK_RATE, t0);
        for i in 0..packets {
            let arrival = t0 + 20 * MS * i + offset(i);
            receiver.receive(&header(i as u16, 960 * i), 0, arrival);
        }
        receiver.jitter().as_secs_f64() * 1000.0
    }

    #[test]
    fn jitter_is_zero_for_constant_transit() {
        assert_eq!(jitter_after(|_| 35 * MS, 200), 0.0);
    }

    /// Arrivals alternately 10 ms late and 10 ms early (around a fixed
    /// delay) change the transit time by 20 ms every packet, so |D| = 20 ms
    /// and J -> 20 ms, since J converges to the mean of |D|.
    #[test]
    fn jitter_converges_for_alternating_delay() {
        let jitter = jitter_after(|i| if i % 2 == 0 { 30 * MS } else { 10 * MS }, 400);
        assert!((jitter - 20.0).abs() < 0.01, "jitter {jitter} ms");
    }

    #[test]
    fn telephone_events_stay_out_of_jitter() {
        let t0 = Instant::now();
        let mut receiver = validated(0, t0).with_event_payload_type(Some(101));
        receiver.receive(&header(1, 960), 0, t0 + 20 * MS);
        for i in 2..20u16 {
            let mut event = header(i, 960 * 2); // timestamp fixed at the event start
            event.payload_type = 101;
            receiver.receive(&event, 4, t0 + 20 * MS * u32::from(i));
        }
        receiver.receive(&header(20, 960 * 20), 0, t0 + 400 * MS);
        assert_eq!(receiver.jitter_units(), 0.0);
        assert_eq!(receiver.received(), 21);
    }

    #[test]
    fn rtcp_interval_is_randomised_around_the_minimum() {
        let timing = RtcpTiming::default();
        let mut rng = XorShift::new(3);
        let mut sum = Duration::ZERO;
        for _ in 0..1_000 {
            let interval = timing.interval(120.0, 2, false, &mut rng);
            assert!(
                interval >= Duration::from_millis(2_500) && interval < Duration::from_millis(7_500)
            );
            sum += interval;
        }
        let mean = sum / 1_000;
        assert!(
            mean > Duration::from_millis(4_800) && mean < Duration::from_millis(5_200),
            "{mean:?}"
        );
        let first = timing.interval(120.0, 0, true, &mut rng);
        assert!(first >= Duration::from_millis(1_250) && first < Duration::from_millis(3_750));
        let fast = RtcpTiming {
            min_interval: Duration::from_millis(500),
            ..timing
        };
        // Bandwidth now binds: 120 B * 2 / (64 kbit/s * 5% / 8) = 0.6 s.
        let interval = fast.interval(120.0, 2, false, &mut rng);
        assert!(interval >= Duration::from_millis(300) && interval < Duration::from_millis(900));
        let starved = RtcpTiming {
            session_bandwidth_bps: 0,
            ..timing
        };
        assert!(starved.interval(120.0, 2, false, &mut rng) >= Duration::from_millis(2_500));
    }

    fn session(seed: u64, cname: &str, t0: Instant) -> RtpSession {
        let config = SessionConfig {
            payload_type: 111,
            clock_rate: OPUS_CLOCK_RATE,
            event_payload_type: Some(101),
            cname: cname.to_owned(),
            timing: RtcpTiming::default(),
        };
        // Both ends read the same wallclock; their NTP times agree.
        RtpSession::new(
            config,
            t0,
            NtpTime(0xE000_0000_0000_0000),
            &mut XorShift::new(seed),
        )
        .expect("valid")
    }

    /// Delivers `datagram` from one session to another as RTP.
    fn deliver_rtp(to: &mut RtpSession, datagram: &[u8], now: Instant) -> ReceiveOutcome {
        to.receive_rtp(&RtpPacket::parse(datagram).expect("valid"), now)
    }

    #[test]
    fn rtt_from_a_report_about_our_sr() {
        let t0 = Instant::now();
        let mut rng = XorShift::new(9);
        let mut alice = session(1, "alice@a", t0);
        let mut bob = session(2, "bob@b", t0);
        let one_way = 40 * MS;
        for i in 0..3u32 {
            let packet = alice.sender_mut().packetize(b"voice", 960, i == 0);
            deliver_rtp(&mut bob, &packet, t0 + 20 * MS * i + one_way);
        }
        let sr_at = alice.poll_timeout();
        let sr = alice.handle_timeout(sr_at, &mut rng).expect("due");
        assert_eq!(
            bob.receive_rtcp(&sr, sr_at + one_way).expect("valid"),
            RtcpReceived::default()
        );
        // Bob reports 300 ms after receiving the SR; DLSR covers that hold.
        let rr_at = sr_at + one_way + 300 * MS;
        let mut bob_report = bob.bye(rr_at, None).expect("fits");
        bob_report.truncate(bob_report.len() - 8); // drop the BYE, keep RR + SDES
        let heard = alice
            .receive_rtcp(&bob_report, rr_at + one_way)
            .expect("valid");
        let rtt = heard.rtt.expect("rtt");
        assert!(rtt.abs_diff(2 * one_way) < MS / 10, "{rtt:?}");
        assert_eq!(alice.stats().rtt_ms.map(f64::round), Some(80.0));
        assert_eq!(alice.stats().remote_fraction_lost, Some(0.0));
        assert!(!heard.remote_bye);
    }

    #[test]
    fn a_report_block_with_a_foreign_lsr_gives_no_rtt() {
        let t0 = Instant::now();
        let mut alice = session(1, "alice@a", t0);
        let forged = ReceiverReport {
            ssrc: 77,
            reports: vec![ReportBlock {
                ssrc: alice.sender().ssrc(),
                last_sr: 0x1234_5678,
                ..ReportBlock::default()
            }],
        };
        let mut datagram = Vec::new();
        build_rr(&forged, "mallory", &mut datagram).expect("fits");
        assert_eq!(alice.receive_rtcp(&datagram, t0).expect("valid").rtt, None);
        assert_eq!(alice.rtt(), None);
    }

    #[test]
    fn reports_alternate_sr_and_rr_with_activity() {
        let t0 = Instant::now();
        let mut rng = XorShift::new(5);
        let mut alice = session(1, "alice@a", t0);
        let first_due = alice.poll_timeout();
        assert!(
            first_due - t0 >= Duration::from_millis(1_250)
                && first_due - t0 < Duration::from_millis(3_750)
        );
        assert_eq!(alice.handle_timeout(first_due - MS, &mut rng), None);
        let rr = alice.handle_timeout(first_due, &mut rng).expect("due");
        assert!(matches!(
            parse_compound(&rr).expect("valid")[0],
            RtcpPacket::ReceiverReport(_)
        ));
        alice.sender_mut().packetize(b"x", 960, false);
        let second_due = alice.poll_timeout();
        let interval = second_due - first_due;
        assert!(
            interval >= Duration::from_millis(2_500) && interval < Duration::from_millis(7_500)
        );
        let sr = alice.handle_timeout(second_due, &mut rng).expect("due");
        assert!(matches!(
            parse_compound(&sr).expect("valid")[0],
            RtcpPacket::SenderReport(_)
        ));
        // Still an SR once more (sent since the last-but-one report), then RR.
        let sr_again = alice
            .handle_timeout(alice.poll_timeout(), &mut rng)
            .expect("due");
        assert!(matches!(
            parse_compound(&sr_again).expect("valid")[0],
            RtcpPacket::SenderReport(_)
        ));
        let rr_again = alice
            .handle_timeout(alice.poll_timeout(), &mut rng)
            .expect("due");
        assert!(matches!(
            parse_compound(&rr_again).expect("valid")[0],
            RtcpPacket::ReceiverReport(_)
        ));
    }

    #[test]
    fn a_new_ssrc_must_pass_probation_before_replacing_the_source() {
        let t0 = Instant::now();
        let mut alice = session(1, "alice@a", t0);
        let mut bob = session(2, "bob@b", t0);
        let mut carol = session(3, "carol@c", t0);
        for _ in 0..3 {
            let packet = alice.sender_mut().packetize(b"a", 960, false);
            deliver_rtp(&mut bob, &packet, t0);
        }
        let stray = carol.sender_mut().packetize(b"c", 960, false);
        assert_eq!(deliver_rtp(&mut bob, &stray, t0), ReceiveOutcome::Probation);
        assert_eq!(
            bob.receiver().map(RtpReceiver::ssrc),
            Some(alice.sender().ssrc())
        );
        let follow_up = carol.sender_mut().packetize(b"c", 960, false);
        assert!(matches!(
            deliver_rtp(&mut bob, &follow_up, t0),
            ReceiveOutcome::Resynchronized { .. }
        ));
        assert_eq!(
            bob.receiver().map(RtpReceiver::ssrc),
            Some(carol.sender().ssrc())
        );
        // Our own SSRC reflected back is never media.
        let echo = bob.sender_mut().packetize(b"b", 960, false);
        assert_eq!(
            deliver_rtp(&mut bob, &echo, t0),
            ReceiveOutcome::ForeignSource
        );
    }

    #[test]
    fn bye_and_stats() {
        let t0 = Instant::now();
        let mut alice = session(1, "alice@a", t0);
        let mut bob = session(2, "bob@b", t0);
        for i in 0..10u32 {
            let packet = alice.sender_mut().packetize(&[0; 80], 960, false);
            if i != 5 {
                deliver_rtp(&mut bob, &packet, t0 + 20 * MS * i);
            }
        }
        let bye = alice.bye(t0 + 200 * MS, Some("hangup")).expect("fits");
        let heard = bob.receive_rtcp(&bye, t0 + 200 * MS).expect("valid");
        assert!(heard.remote_bye && bob.remote_bye());
        let mut rng = XorShift::new(4);
        bob.handle_timeout(bob.poll_timeout(), &mut rng)
            .expect("due");
        let stats = bob.stats();
        // Probation swallows the first packet; 8 of the 9 expected after it arrive.
        assert_eq!(stats.packets_received, 8);
        assert_eq!(stats.bytes_received, 640);
        assert_eq!(stats.cumulative_lost, 1);
        assert_eq!(stats.fraction_lost, 28.0 / 256.0);
        assert_eq!(stats.jitter_ms, 0.0);
        assert_eq!(stats.rtt_ms, None);
        assert_eq!(alice.stats().packets_sent, 10);
        assert_eq!(alice.stats().bytes_sent, 800);
    }

    #[test]
    fn oversized_cname_is_rejected_up_front() {
        let config = SessionConfig {
            payload_type: 0,
            clock_rate: G711_CLOCK_RATE,
            event_payload_type: None,
            cname: "x".repeat(300),
            timing: RtcpTiming::default(),
        };
        let result = RtpSession::new(config, Instant::now(), NtpTime(0), &mut XorShift::new(1));
        assert_eq!(result.err(), Some(RtcpError::CnameTooLong(300)));
    }
}
