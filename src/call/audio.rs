//! A call's audio task: every packet time it encodes a frame of the
//! microphone and sends it over the ICE session's selected pair, and plays
//! one frame out of the jitter buffer into the speaker.
//!
//! Runs on its own tokio task beside the ICE driver; the codec and the RTP
//! state are sans-IO pieces it only calls.

use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::{mpsc, watch};

use super::jitter::{JitterBuffer, JitterStats, Playout};
use crate::audio::codec::{OpusDecoder, OpusEncoder};
use crate::audio::g711::{Law, G711, G711_FRAME};
use crate::audio::io::{Sink, Source};
use crate::audio::FRAME;
use crate::net::{IceCommand, MediaPacket};
use crate::rtp::{
    DtmfDigit, DtmfReceiver, DtmfSender, NtpTime, ReceiveOutcome, RtcpTiming, RtpPacket,
    RtpSession, SessionConfig,
};
use crate::sdp::{CodecName, Direction, Negotiated};

/// What the audio of a call amounted to.
#[derive(Clone, Debug, Default)]
pub struct AudioReport {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_lost: i64,
    pub jitter_ms: f64,
    /// From the task's start to the first packet that arrived.
    pub first_packet_after: Option<Duration>,
    pub playout: JitterStats,
    /// The speaker file could not be finished (with why).
    pub sink_error: Option<String>,
    /// Round trip from RTCP (LSR/DLSR), once a report came back.
    pub rtt_ms: Option<f64>,
    /// What the peer last reported losing of our stream, 0 to 1.
    pub remote_fraction_lost: Option<f64>,
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    /// RFC 4733 keys the peer pressed, in order.
    pub dtmf_received: String,
    pub dtmf_sent: String,
    /// The receive figures once a second, for the report's plots.
    pub series: Vec<StatsSample>,
    /// The delay icephone itself adds on each side of the network.
    pub latency: LatencyStats,
}

/// Delay added by icephone, device buffers excluded: from a frame's
/// capture until its packet is handed to the network (the wait in the
/// microphone queue plus encoding), and from a packet's arrival until its
/// frame is played into the speaker queue (the jitter buffer plus the wait
/// for the next frame time).
#[derive(Clone, Debug, Default)]
pub struct LatencyStats {
    pub send: Average,
    pub playout: Average,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Average {
    pub count: u64,
    pub total_ms: f64,
    pub max_ms: f64,
}

impl Average {
    fn add(&mut self, ms: f64) {
        self.count += 1;
        self.total_ms += ms;
        self.max_ms = self.max_ms.max(ms);
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.total_ms / self.count as f64)
    }
}

/// The stream's figures at one moment.
#[derive(Clone, Debug)]
pub struct StatsSample {
    pub at: Instant,
    pub rtt_ms: Option<f64>,
    pub jitter_ms: f64,
    pub packets_received: u64,
    pub packets_lost: i64,
}

/// What the phone shows while a call runs, updated every frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveAudio {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: i64,
    pub jitter_ms: f64,
    pub rtt_ms: Option<f64>,
    /// RMS of the last frame sent and played, 0 to 1.
    pub mic_level: f32,
    pub speaker_level: f32,
}

pub struct AudioSetup {
    pub source: Source,
    pub sink: Sink,
    /// While true the microphone is replaced by silence.
    pub mute: watch::Receiver<bool>,
    /// The jitter buffer's bounds, ms (0: the default, 20 and 1000).
    pub jitter_bounds: (u32, u32),
    pub live: watch::Sender<LiveAudio>,
    pub negotiated: Negotiated,
    /// Our direction, changed by re-INVITEs (hold, resume).
    pub direction: watch::Receiver<Direction>,
    /// Keys to send as RFC 4733 events, in order.
    pub dtmf: mpsc::UnboundedReceiver<char>,
}

/// Runs until `stop` turns true; returns the figures. Opus, or G.711 for a
/// peer without it.
pub async fn run(
    setup: AudioSetup,
    commands: mpsc::UnboundedSender<IceCommand>,
    mut media: mpsc::Receiver<MediaPacket>,
    mut stop: watch::Receiver<bool>,
) -> AudioReport {
    let AudioSetup {
        mut source,
        mut sink,
        mute,
        live,
        jitter_bounds,
        negotiated,
        direction,
        mut dtmf,
    } = setup;
    let mut report = AudioReport::default();
    let codec = &negotiated.send_codec;
    let voice_pt = codec.payload_type;
    // RTCP on its own component unless multiplexed (RFC 5761).
    let rtcp_component = if negotiated.rtcp_mux { 1 } else { 2 };

    let mut rng = StdRng::from_os_rng();
    let started = Instant::now();
    let Some(mut voice) = Voice::new(&negotiated) else {
        tracing::warn!(%codec, "no codec to send with: the call stays silent");
        return report;
    };
    let config = SessionConfig {
        payload_type: voice_pt,
        clock_rate: codec.clock_rate,
        event_payload_type: negotiated.dtmf.as_ref().map(|d| d.payload_type),
        cname: format!("icephone-{:08x}", rng.next_u32()),
        timing: RtcpTiming::default(),
    };
    // The one wall-clock reading RTCP's NTP timestamps are counted from.
    let wallclock = NtpTime::from_system_time(SystemTime::now());
    let mut rtp = match RtpSession::new(config, started, wallclock, &mut rng) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start RTP");
            return report;
        }
    };
    let (min_ms, max_ms) = jitter_bounds;
    let max_frames = if max_ms == 0 {
        50
    } else {
        (max_ms / 20).max(4) as usize
    };
    let mut jitter = JitterBuffer::new(20, max_frames);
    jitter.set_min_frames((min_ms / 20).max(1) as usize);
    let dtmf_pt = negotiated.dtmf.as_ref().map(|d| d.payload_type);
    let mut keys = DtmfKeys {
        sender: DtmfSender::new(codec.clock_rate),
        receiver: DtmfReceiver::new(),
        queue: std::collections::VecDeque::new(),
    };
    let mut sample = tokio::time::interval(Duration::from_secs(1));
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut frame = [0i16; FRAME];
    let mut out = [0i16; FRAME];
    let mut first = true;
    // Voice packets' arrival times, to measure their wait until played.
    let mut arrivals: std::collections::VecDeque<(u16, Instant)> = Default::default();
    // Set when the capture device has a frame (sound cards only).
    let capture_ready = source.ready_signal();
    let (mut do_send, mut do_play) = (false, false);
    loop {
        tokio::select! {
            // Packets waiting are pushed before a frame is played, so a busy
            // moment does not make them late.
            biased;
            packet = media.recv() => {
                let Some(packet) = packet else { break };
                let pts = (voice_pt, dtmf_pt);
                if let Some(seq) = on_packet(&packet, pts, &mut rtp, &mut jitter, &mut keys.receiver, &mut report, started) {
                    if arrivals.len() >= 64 {
                        arrivals.pop_front();
                    }
                    arrivals.push_back((seq, Instant::now()));
                }
            }
            Some(key) = dtmf.recv() => {
                if let (Some(_), Some(digit)) = (dtmf_pt, DtmfDigit::from_char(key)) {
                    keys.queue.push_back(digit);
                }
            }
            _ = sleep_until_opt(keys.sender.poll_timeout()) => {
                if let (Some(pt), Some(p)) = (dtmf_pt, keys.sender.handle_timeout(Instant::now())) {
                    let packet = rtp.sender_mut().packetize_at(pt, p.timestamp, p.marker, &p.event.to_bytes());
                    let _ = commands.send(IceCommand::SendMedia { component: 1, data: packet });
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(rtp.poll_timeout())) => {
                if let Some(compound) = rtp.handle_timeout(Instant::now(), &mut rng) {
                    report.rtcp_sent += 1;
                    let _ = commands.send(IceCommand::SendMedia { component: rtcp_component, data: compound });
                }
            }
            _ = tick.tick() => {
                do_play = true;
                do_send = capture_ready.is_none();
            }
            _ = wait_ready(capture_ready.as_deref()) => do_send = true,
            _ = sample.tick() => {
                let st = rtp.stats();
                live.send_modify(|l| {
                    l.packets_received = st.packets_received;
                    l.packets_lost = st.cumulative_lost;
                    l.jitter_ms = st.jitter_ms;
                    l.rtt_ms = st.rtt_ms;
                });
                report.series.push(StatsSample {
                    at: Instant::now(),
                    rtt_ms: st.rtt_ms,
                    jitter_ms: st.jitter_ms,
                    packets_received: st.packets_received,
                    packets_lost: st.cumulative_lost,
                });
            }
            _ = stop.changed() => break,
        }
        // A sound card's microphone paces the sending: each frame goes as
        // soon as the device has delivered it, not at the next tick.
        while do_send {
            do_send = false;
            // A stale wake-up: nothing whole to send yet.
            if capture_ready.is_some() && !source.frame_ready() {
                break;
            }
            if !keys.sender.is_busy() {
                if let Some(digit) = keys.queue.pop_front() {
                    let ts = rtp.sender().current_timestamp();
                    if keys
                        .sender
                        .start(digit, DTMF_TONE, ts, Instant::now())
                        .is_ok()
                    {
                        report.dtmf_sent.push(digit.as_char());
                    }
                }
            }
            let frame_started = Instant::now();
            source.next_frame(&mut frame);
            let waited = source.waited_ms();
            if *mute.borrow() {
                frame.fill(0);
            }
            // One 20 ms Opus frame a packet, whatever a=ptime asked:
            // packing two frames for 40 ms is not done yet.
            // On hold we send nothing (RTCP goes on, RFC 3264 §8.4).
            if !direction.borrow().sends() {
                // The timeline goes on while nothing is sent, so the
                // peer's jitter estimate sees no jump at resume
                // (RFC 3550 §5.1: the timestamp is the sampling instant).
                rtp.sender_mut().skip(voice.frame_samples());
            } else {
                if let Some((payload, samples)) = voice.encode(&frame) {
                    let packet = rtp.sender_mut().packetize(&payload, samples, first);
                    first = false;
                    report.packets_sent += 1;
                    report.bytes_sent += packet.len() as u64;
                    let _ = commands.send(IceCommand::SendMedia {
                        component: 1,
                        data: packet,
                    });
                    report
                        .latency
                        .send
                        .add(waited + frame_started.elapsed().as_secs_f64() * 1e3);
                }
            }
            if capture_ready.is_some() && source.frame_ready() {
                do_send = true;
            }
        }
        if std::mem::take(&mut do_play) {
            let before = jitter.last_played();
            voice.play(&mut jitter, &mut out);
            sink.write(&out);
            if let Some(seq) = jitter.last_played().filter(|s| Some(*s) != before) {
                if let Some(i) = arrivals.iter().position(|(s, _)| *s == seq) {
                    report
                        .latency
                        .playout
                        .add(arrivals[i].1.elapsed().as_secs_f64() * 1e3);
                }
            }
            live.send_modify(|l| {
                l.packets_sent = report.packets_sent;
                l.mic_level = rms(&frame);
                l.speaker_level = rms(&out);
            });
        }
    }
    // RFC 3550 §6.6: a BYE tells the peer the stream ends.
    if let Ok(bye) = rtp.bye(Instant::now(), None) {
        let _ = commands.send(IceCommand::SendMedia {
            component: rtcp_component,
            data: bye,
        });
    }
    let stats = rtp.stats();
    report.packets_received = stats.packets_received;
    report.packets_lost = stats.cumulative_lost;
    report.jitter_ms = stats.jitter_ms;
    report.rtt_ms = stats.rtt_ms;
    report.remote_fraction_lost = stats.remote_fraction_lost;
    report.playout = jitter.stats();
    report.sink_error = sink.finish().err().map(|e| e.to_string());
    report
}

/// Resolves when the microphone has a frame; never without a signal.
async fn wait_ready(signal: Option<&tokio::sync::Notify>) {
    match signal {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

fn rms(frame: &[i16]) -> f32 {
    let sum: f64 = frame.iter().map(|s| f64::from(*s).powi(2)).sum();
    ((sum / frame.len().max(1) as f64).sqrt() / 32768.0) as f32
}

/// RTCP into the session (RTT, the peer's view of our stream), voice into
/// the jitter buffer, RFC 4733 events to the key receiver.
fn on_packet(
    packet: &MediaPacket,
    (voice_pt, dtmf_pt): (u8, Option<u8>),
    rtp: &mut RtpSession,
    jitter: &mut JitterBuffer,
    keys: &mut DtmfReceiver,
    report: &mut AudioReport,
    started: Instant,
) -> Option<u16> {
    let now = Instant::now();
    if crate::rtp::is_rtcp(&packet.data) {
        if rtp.receive_rtcp(&packet.data, now).is_ok() {
            report.rtcp_received += 1;
        }
        return None;
    }
    let Ok(parsed) = RtpPacket::parse(&packet.data) else {
        return None;
    };
    if Some(parsed.header.payload_type) == dtmf_pt {
        rtp.receive_rtp(&parsed, now);
        if let Ok(Some(key)) = keys.on_packet(parsed.header.timestamp, parsed.payload) {
            report.dtmf_received.push(key.digit.as_char());
        }
        return None;
    }
    if parsed.header.payload_type != voice_pt {
        return None;
    }
    if let ReceiveOutcome::Accepted { .. } | ReceiveOutcome::Resynchronized { .. } =
        rtp.receive_rtp(&parsed, now)
    {
        report.first_packet_after.get_or_insert(started.elapsed());
        report.bytes_received += packet.data.len() as u64;
        jitter.set_jitter_ms(rtp.stats().jitter_ms);
        jitter.push(parsed.header.sequence, parsed.payload.to_vec());
        return Some(parsed.header.sequence);
    }
    None
}

/// How long each key's tone lasts (RFC 4733 §2.5.1.3 leaves it to the
/// sender; 100 ms is what phones send for a short press).
const DTMF_TONE: Duration = Duration::from_millis(100);

struct DtmfKeys {
    sender: DtmfSender,
    receiver: DtmfReceiver,
    queue: std::collections::VecDeque<DtmfDigit>,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The voice codec both directions use (the negotiated send codec; our
/// answer and offer make the peer send the same).
enum Voice {
    Opus(OpusEncoder, OpusDecoder),
    /// Boxed: it keeps a whole frame for concealment.
    G711(Box<G711>),
}

impl Voice {
    fn new(n: &Negotiated) -> Option<Self> {
        match n.send_codec.name {
            CodecName::Opus => Some(Voice::Opus(
                OpusEncoder::new(n.send_fec, n.max_bitrate).ok()?,
                OpusDecoder::new().ok()?,
            )),
            CodecName::Pcmu => Some(Voice::G711(Box::new(G711::new(Law::Mu)))),
            CodecName::Pcma => Some(Voice::G711(Box::new(G711::new(Law::A)))),
            CodecName::TelephoneEvent => None,
        }
    }

    /// A 20 ms frame in RTP clock units.
    fn frame_samples(&self) -> u32 {
        match self {
            Voice::Opus(..) => FRAME as u32,
            Voice::G711(_) => G711_FRAME as u32,
        }
    }

    /// A frame's payload and its duration in RTP clock units.
    fn encode(&mut self, frame: &[i16; FRAME]) -> Option<(Vec<u8>, u32)> {
        match self {
            Voice::Opus(enc, _) => enc.encode(frame).ok().map(|p| (p.to_vec(), FRAME as u32)),
            Voice::G711(g) => Some((g.encode(frame), G711_FRAME as u32)),
        }
    }

    /// One frame out of the jitter buffer, decoded (silence while filling).
    fn play(&mut self, jitter: &mut JitterBuffer, out: &mut [i16; FRAME]) {
        let ok = match (self, jitter.pop()) {
            (_, Playout::Wait) => {
                out.fill(0);
                Ok(())
            }
            (Voice::Opus(_, dec), Playout::Frame(p)) => dec.decode(&p, out),
            (Voice::Opus(_, dec), Playout::Recover(next)) => dec.recover(&next, out),
            (Voice::Opus(_, dec), Playout::Conceal) => dec.conceal(out),
            (Voice::G711(g), Playout::Frame(p)) => {
                g.decode(&p, out);
                Ok(())
            }
            (Voice::G711(g), Playout::Recover(_) | Playout::Conceal) => {
                g.conceal(out);
                Ok(())
            }
        };
        if ok.is_err() {
            out.fill(0);
        }
    }
}
