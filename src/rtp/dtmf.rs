//! DTMF as RFC 4733 telephone-events: the 4-byte payload, a sender state
//! machine that turns one key press into its packet timeline, and a
//! receiver that reports each key press once.
//!
//! Owns: the telephone-event payload format (event, E bit, volume,
//! duration) and the timing and deduplication rules of RFC 4733 §2.5.
//!
//! Must not touch: RTP headers, sequence numbers or SSRCs (the caller hands
//! `DtmfPacket`s to `RtpSender::packetize_at`, so events share the audio
//! stream's sequence space as §2.1 requires), in-band tone generation or
//! detection, sockets or clocks.
//!
//! Not implemented: long-event segmentation (§2.5.1.3); a tone is capped at
//! what the 16-bit duration field holds (8.19 s at 8 kHz, 1.36 s at 48 kHz),
//! far above any key press. Multiple events per packet and RFC 2198
//! redundancy are not parsed.

use std::time::{Duration, Instant};

const PAYLOAD_LEN: usize = 4;
/// §2.5.1.2 recommends updates every 50 ms when there is no audio packet
/// interval to follow.
pub const DEFAULT_UPDATE_INTERVAL: Duration = Duration::from_millis(50);
const MIN_UPDATE_INTERVAL: Duration = Duration::from_millis(5);
/// §2.5.1.4: the final packet "SHOULD be sent a total of three times".
const END_PACKET_COUNT: u8 = 3;
/// ITU-T Q.24 receivers need at least 40 ms of tone; shorter requests are
/// lengthened so the far end can still regenerate a recognisable digit.
const MIN_TONE: Duration = Duration::from_millis(40);
/// A typical send level (-10 dBm0, §2.3.4 volume is the negated power).
const DEFAULT_VOLUME: u8 = 10;
/// How many recent event timestamps the receiver remembers.
const REMEMBERED_EVENTS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// A telephone-event payload is exactly four bytes.
    #[error("telephone-event payload of {0} bytes, expected 4")]
    WrongLength(usize),
    /// `start` while the previous event's packets are still going out.
    #[error("a DTMF event is still being sent")]
    Busy,
}

/// The sixteen DTMF events, codes 0–15 (RFC 4733 §3.2, table 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DtmfDigit {
    Zero,
    One,
    Two,
    Three,
    Four,
    Five,
    Six,
    Seven,
    Eight,
    Nine,
    Star,
    Pound,
    A,
    B,
    C,
    D,
}

impl DtmfDigit {
    const ALL: [DtmfDigit; 16] = [
        DtmfDigit::Zero,
        DtmfDigit::One,
        DtmfDigit::Two,
        DtmfDigit::Three,
        DtmfDigit::Four,
        DtmfDigit::Five,
        DtmfDigit::Six,
        DtmfDigit::Seven,
        DtmfDigit::Eight,
        DtmfDigit::Nine,
        DtmfDigit::Star,
        DtmfDigit::Pound,
        DtmfDigit::A,
        DtmfDigit::B,
        DtmfDigit::C,
        DtmfDigit::D,
    ];
    const CHARS: [char; 16] = [
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
    ];

    /// `None` for event codes that are not DTMF (flash, modem tones, ...).
    pub fn from_event(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    pub fn event(self) -> u8 {
        self as u8
    }

    /// Accepts lower-case a–d too.
    pub fn from_char(key: char) -> Option<Self> {
        let key = key.to_ascii_uppercase();
        let index = Self::CHARS.iter().position(|&c| c == key)?;
        Self::ALL.get(index).copied()
    }

    pub fn as_char(self) -> char {
        Self::CHARS
            .get(usize::from(self.event()))
            .copied()
            .unwrap_or('?')
    }
}

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    /// The E bit: this is (a retransmission of) the event's final packet.
    pub end: bool,
    /// Power level as -dBm0, 0..=63; the writer keeps the low six bits.
    pub volume: u8,
    /// Duration of the event so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// The R bit is ignored, as §2.3 asks of receivers.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let bytes: &[u8; PAYLOAD_LEN] = payload
            .try_into()
            .map_err(|_| DtmfError::WrongLength(payload.len()))?;
        Ok(TelephoneEvent {
            event: bytes[0],
            end: bytes[1] & 0x80 != 0,
            volume: bytes[1] & 0x3F,
            duration: u16::from_be_bytes([bytes[2], bytes[3]]),
        })
    }

    pub fn to_bytes(&self) -> [u8; PAYLOAD_LEN] {
        let [high, low] = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            high,
            low,
        ]
    }

    pub fn digit(&self) -> Option<DtmfDigit> {
        DtmfDigit::from_event(self.event)
    }
}

/// One packet of an event for `RtpSender::packetize_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfPacket {
    /// Set on the first packet of an event (§2.5.1.1).
    pub marker: bool,
    /// The event's start; the same on every packet of the event.
    pub timestamp: u32,
    pub event: TelephoneEvent,
}

/// The key press being sent.
#[derive(Clone, Copy, Debug)]
struct ActiveEvent {
    digit: DtmfDigit,
    timestamp: u32,
    started: Instant,
    tone: Duration,
    updates_sent: u32,
    ends_sent: u8,
}

/// Turns key presses into RFC 4733 packet timelines.
///
/// Packet n of an event is due at start + n × interval. Packets before the
/// tone's end report the duration covered once that packet's interval has
/// played (so the first one is non-zero, like an audio packet covering the
/// samples after its timestamp); then three end packets report the full
/// duration. All carry the timestamp of the event's start.
#[derive(Clone, Debug)]
pub struct DtmfSender {
    clock_rate: u32,
    update_interval: Duration,
    volume: u8,
    active: Option<ActiveEvent>,
}

impl DtmfSender {
    /// `clock_rate` is the negotiated telephone-event rate (8000 normally,
    /// 48000 alongside Opus).
    pub fn new(clock_rate: u32) -> Self {
        DtmfSender {
            clock_rate,
            update_interval: DEFAULT_UPDATE_INTERVAL,
            volume: DEFAULT_VOLUME,
            active: None,
        }
    }

    /// Follow the audio packet interval instead of 50 ms (§2.5.1.2). Held
    /// to at least 5 ms so that a tone is a bounded number of packets.
    pub fn with_update_interval(mut self, interval: Duration) -> Self {
        self.update_interval = interval.max(MIN_UPDATE_INTERVAL);
        self
    }

    /// Begins sending `digit` for `tone`; `rtp_timestamp` is the media
    /// timestamp at `now` (`RtpSender::current_timestamp`). The tone is
    /// lengthened to 40 ms or cut to what the duration field can carry.
    pub fn start(
        &mut self,
        digit: DtmfDigit,
        tone: Duration,
        rtp_timestamp: u32,
        now: Instant,
    ) -> Result<(), DtmfError> {
        if self.active.is_some() {
            return Err(DtmfError::Busy);
        }
        let longest = self.duration_of(u16::MAX);
        self.active = Some(ActiveEvent {
            digit,
            timestamp: rtp_timestamp,
            started: now,
            tone: tone.max(MIN_TONE).min(longest),
            updates_sent: 0,
            ends_sent: 0,
        });
        Ok(())
    }

    pub fn is_busy(&self) -> bool {
        self.active.is_some()
    }

    /// When the next packet is due; `None` when idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let active = self.active.as_ref()?;
        let index = active.updates_sent + u32::from(active.ends_sent);
        Some(active.started + self.update_interval * index)
    }

    /// The packet due at `now`, at most one per call.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DtmfPacket> {
        if now < self.poll_timeout()? {
            return None;
        }
        let mut active = self.active.take()?;
        let offset = self.update_interval * active.updates_sent;
        let (end, covered) = if active.ends_sent == 0 && offset < active.tone {
            active.updates_sent += 1;
            (false, (offset + self.update_interval).min(active.tone))
        } else {
            active.ends_sent += 1;
            (true, active.tone)
        };
        let packet = DtmfPacket {
            marker: !end && active.updates_sent == 1,
            timestamp: active.timestamp,
            event: TelephoneEvent {
                event: active.digit.event(),
                end,
                volume: self.volume,
                duration: self.units_of(covered),
            },
        };
        if active.ends_sent < END_PACKET_COUNT {
            self.active = Some(active);
        }
        Some(packet)
    }

    /// Timestamp units in `d`, saturating at the 16-bit field.
    fn units_of(&self, d: Duration) -> u16 {
        let units = d.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
        u16::try_from(units).unwrap_or(u16::MAX)
    }

    fn duration_of(&self, units: u16) -> Duration {
        let nanos = u64::from(units) * 1_000_000_000 / u64::from(self.clock_rate.max(1));
        Duration::from_nanos(nanos)
    }
}

/// A key press heard from the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceivedDigit {
    pub digit: DtmfDigit,
    /// The event's start, which identifies it.
    pub rtp_timestamp: u32,
}

/// Reports each received DTMF event once.
///
/// Every packet of one event, end retransmissions included, carries the
/// event's start timestamp (§2.5.1.1), so the timestamp identifies the
/// event: the first packet seen with a new one reports the digit, whichever
/// packet that is, so losing the marked start packet loses nothing. The
/// last few timestamps are remembered so a late packet of an earlier event
/// is not a new key press either.
#[derive(Clone, Debug, Default)]
pub struct DtmfReceiver {
    recent: [Option<u32>; REMEMBERED_EVENTS],
    next_slot: usize,
}

impl DtmfReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the timestamp and payload of one telephone-event packet.
    pub fn on_packet(
        &mut self,
        rtp_timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<ReceivedDigit>, DtmfError> {
        let event = TelephoneEvent::parse(payload)?;
        if self.recent.contains(&Some(rtp_timestamp)) {
            return Ok(None);
        }
        if let Some(slot) = self.recent.get_mut(self.next_slot) {
            *slot = Some(rtp_timestamp);
        }
        self.next_slot = (self.next_slot + 1) % REMEMBERED_EVENTS;
        Ok(event.digit().map(|digit| ReceivedDigit {
            digit,
            rtp_timestamp,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn digits_and_characters() {
        for (code, key) in "0123456789*#ABCD".chars().enumerate() {
            let digit = DtmfDigit::from_char(key).expect("dtmf key");
            assert_eq!(digit.event(), code as u8);
            assert_eq!(digit.as_char(), key);
            assert_eq!(DtmfDigit::from_event(code as u8), Some(digit));
        }
        assert_eq!(DtmfDigit::from_char('d'), Some(DtmfDigit::D));
        assert_eq!(DtmfDigit::from_char('x'), None);
        assert_eq!(DtmfDigit::from_event(16), None, "flash is not a digit");
    }

    #[test]
    fn payload_round_trip_and_layout() {
        let event = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 0x0320,
        };
        assert_eq!(event.to_bytes(), [11, 0x8A, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&event.to_bytes()), Ok(event));
        assert_eq!(event.digit(), Some(DtmfDigit::Pound));
        // The R bit is ignored.
        let parsed = TelephoneEvent::parse(&[5, 0x4A, 0, 1]).expect("valid");
        assert_eq!((parsed.end, parsed.volume), (false, 10));
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::WrongLength(3))
        );
        assert_eq!(
            TelephoneEvent::parse(&[0; 5]),
            Err(DtmfError::WrongLength(5))
        );
    }

    /// Runs a sender to completion, returning (ms since start, packet).
    fn timeline(sender: &mut DtmfSender, t0: Instant) -> Vec<(u128, DtmfPacket)> {
        let mut packets = Vec::new();
        while let Some(at) = sender.poll_timeout() {
            if at > t0 {
                assert_eq!(sender.handle_timeout(at - MS), None, "early");
            }
            let packet = sender.handle_timeout(at).expect("due");
            packets.push(((at - t0).as_millis(), packet));
            assert!(packets.len() < 1_000, "runaway");
        }
        packets
    }

    #[test]
    fn sender_timeline_for_a_100_ms_key_press() {
        let t0 = Instant::now();
        let mut sender = DtmfSender::new(8_000);
        sender
            .start(DtmfDigit::Five, 100 * MS, 0xFFFF_FF00, t0)
            .expect("idle");
        assert_eq!(
            sender.start(DtmfDigit::Six, 100 * MS, 0, t0),
            Err(DtmfError::Busy)
        );
        let packets = timeline(&mut sender, t0);
        let summary: Vec<(u128, bool, bool, u16)> = packets
            .iter()
            .map(|(at, p)| (*at, p.marker, p.event.end, p.event.duration))
            .collect();
        assert_eq!(
            summary,
            [
                (0, true, false, 400),
                (50, false, false, 800),
                (100, false, true, 800),
                (150, false, true, 800),
                (200, false, true, 800),
            ]
        );
        assert!(packets
            .iter()
            .all(|(_, p)| p.timestamp == 0xFFFF_FF00 && p.event.event == 5));
        assert!(!sender.is_busy());
        assert_eq!(sender.handle_timeout(t0 + 300 * MS), None);
        sender
            .start(DtmfDigit::Six, 100 * MS, 800, t0 + 300 * MS)
            .expect("idle again");
    }

    #[test]
    fn sender_clamps_tone_and_follows_a_custom_interval() {
        let t0 = Instant::now();
        // 48 kHz: the 16-bit duration field holds at most 1365 ms.
        let mut sender = DtmfSender::new(48_000).with_update_interval(20 * MS);
        sender
            .start(DtmfDigit::Star, Duration::from_secs(5), 0, t0)
            .expect("idle");
        let packets = timeline(&mut sender, t0);
        let durations: Vec<u16> = packets.iter().map(|(_, p)| p.event.duration).collect();
        assert!(durations.windows(2).all(|w| w[0] <= w[1]), "durations grow");
        assert_eq!(durations.first(), Some(&960));
        assert_eq!(packets.iter().filter(|(_, p)| p.event.end).count(), 3);
        assert!(packets
            .iter()
            .rev()
            .take(3)
            .all(|(_, p)| p.event.duration == 65_535));
        // Too short a press is lengthened to 40 ms.
        let mut short = DtmfSender::new(8_000);
        short.start(DtmfDigit::One, MS, 0, t0).expect("idle");
        let packets = timeline(&mut short, t0);
        assert_eq!(packets[0].1.event.duration, 320);
        assert!(packets[0].1.marker && !packets[0].1.event.end);
        assert_eq!(packets.len(), 4);
    }

    #[test]
    fn receiver_reports_each_press_once_despite_loss() {
        let t0 = Instant::now();
        let mut sender = DtmfSender::new(8_000);
        let mut receiver = DtmfReceiver::new();
        let mut heard = Vec::new();
        for (press, key) in ['1', '1', '#'].into_iter().enumerate() {
            let start = t0 + 500 * MS * press as u32;
            let digit = DtmfDigit::from_char(key).expect("key");
            sender
                .start(digit, 100 * MS, 4_000 * press as u32, start)
                .expect("idle");
            for (index, (_, packet)) in timeline(&mut sender, start).into_iter().enumerate() {
                // The second press loses its first two packets, marker included.
                if press == 1 && index < 2 {
                    continue;
                }
                let result = receiver.on_packet(packet.timestamp, &packet.event.to_bytes());
                heard.extend(result.expect("valid"));
            }
        }
        let keys: String = heard.iter().map(|d| d.digit.as_char()).collect();
        assert_eq!(keys, "11#");
        assert_eq!(heard[1].rtp_timestamp, 4_000);
        // A late straggler of the first press is not a new one.
        let late = TelephoneEvent {
            event: 1,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(receiver.on_packet(0, &late.to_bytes()), Ok(None));
        assert_eq!(
            receiver.on_packet(9, &[1, 2]),
            Err(DtmfError::WrongLength(2))
        );
        // A non-DTMF event is consumed without a digit.
        let flash = TelephoneEvent {
            event: 16,
            end: false,
            volume: 0,
            duration: 8,
        };
        assert_eq!(receiver.on_packet(20_000, &flash.to_bytes()), Ok(None));
    }
}
