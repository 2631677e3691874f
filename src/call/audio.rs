//! A call's audio task: every packet time it encodes a frame of the
//! microphone and sends it over the ICE session's selected pair, and plays
//! one frame out of the jitter buffer into the speaker.
//!
//! Runs on its own tokio task beside the ICE driver; the codec and the RTP
//! state are sans-IO pieces it only calls.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};

use super::jitter::{JitterBuffer, JitterStats, Playout};
use crate::audio::codec::{OpusDecoder, OpusEncoder};
use crate::audio::g711::{Law, G711, G711_FRAME};
use crate::audio::io::{Sink, Source};
use crate::audio::FRAME;
use crate::net::{IceCommand, MediaPacket};
use crate::rtp::{ReceiveOutcome, RtpPacket, RtpReceiver, RtpSender};
use crate::sdp::{CodecName, Negotiated};

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
}

pub struct AudioSetup {
    pub source: Source,
    pub sink: Sink,
    pub negotiated: Negotiated,
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
        negotiated,
    } = setup;
    let mut report = AudioReport::default();
    let codec = &negotiated.send_codec;
    let voice_pt = codec.payload_type;
    let sending = negotiated.direction.sends();
    let mut rng = StdRng::from_os_rng();
    let started = Instant::now();
    let mut sender = RtpSender::new(&mut rng, voice_pt, codec.clock_rate, started);
    let mut receiver: Option<RtpReceiver> = None;
    let Some(mut voice) = Voice::new(&negotiated) else {
        tracing::warn!(%codec, "no codec to send with: the call stays silent");
        return report;
    };
    let mut jitter = JitterBuffer::new(20, 50);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut frame = [0i16; FRAME];
    let mut out = [0i16; FRAME];
    let mut first = true;
    loop {
        tokio::select! {
            // Packets waiting are pushed before a frame is played, so a busy
            // moment does not make them late.
            biased;
            packet = media.recv() => {
                let Some(packet) = packet else { break };
                let clock = codec.clock_rate;
                on_packet(&packet, (voice_pt, clock), &mut receiver, &mut jitter, &mut report, started);
            }
            _ = tick.tick() => {
                source.next_frame(&mut frame);
                // One 20 ms Opus frame a packet, whatever a=ptime asked:
                // packing two frames for 40 ms is not done yet.
                if sending {
                    if let Some((payload, samples)) = voice.encode(&frame) {
                        let packet = sender.packetize(&payload, samples, first);
                        first = false;
                        report.packets_sent += 1;
                        report.bytes_sent += packet.len() as u64;
                        let _ = commands.send(IceCommand::SendMedia { component: 1, data: packet });
                    }
                }
                voice.play(&mut jitter, &mut out);
                sink.write(&out);
            }
            _ = stop.changed() => break,
        }
    }
    if let Some(r) = &receiver {
        report.packets_received = r.received();
        report.packets_lost = r.cumulative_lost();
        report.jitter_ms = r.jitter().as_secs_f64() * 1e3;
    }
    report.playout = jitter.stats();
    report.sink_error = sink.finish().err().map(|e| e.to_string());
    report
}

/// An RTP packet from the peer into the jitter buffer (RTCP is read with
/// the call report).
fn on_packet(
    packet: &MediaPacket,
    (voice_pt, clock_rate): (u8, u32),
    receiver: &mut Option<RtpReceiver>,
    jitter: &mut JitterBuffer,
    report: &mut AudioReport,
    started: Instant,
) {
    if crate::rtp::is_rtcp(&packet.data) {
        return;
    }
    let Ok(rtp) = RtpPacket::parse(&packet.data) else {
        return;
    };
    if rtp.header.payload_type != voice_pt {
        return;
    }
    let now = Instant::now();
    let r = receiver.get_or_insert_with(|| RtpReceiver::new(rtp.header.ssrc, clock_rate, now));
    if let ReceiveOutcome::Accepted { .. } | ReceiveOutcome::Resynchronized { .. } =
        r.receive(&rtp.header, rtp.payload.len(), now)
    {
        report.first_packet_after.get_or_insert(started.elapsed());
        report.bytes_received += packet.data.len() as u64;
        jitter.set_jitter_ms(r.jitter().as_secs_f64() * 1e3);
        jitter.push(rtp.header.sequence, rtp.payload.to_vec());
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
