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

/// Runs until `stop` turns true; returns the figures. Only Opus is sent
/// and played (a G.711-only peer gets nothing yet: an honest gap).
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
    if codec.name != CodecName::Opus {
        tracing::warn!(%codec, "only Opus audio is implemented; the call stays silent");
    }
    let opus_pt = codec.payload_type;
    let sending = codec.name == CodecName::Opus && negotiated.direction.sends();
    let mut rng = StdRng::from_os_rng();
    let started = Instant::now();
    let mut sender = RtpSender::new(&mut rng, opus_pt, 48_000, started);
    let mut receiver: Option<RtpReceiver> = None;
    let mut encoder = OpusEncoder::new(negotiated.send_fec, negotiated.max_bitrate).ok();
    let mut decoder = OpusDecoder::new().ok();
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
                on_packet(&packet, opus_pt, &mut receiver, &mut jitter, &mut report, started);
            }
            _ = tick.tick() => {
                source.next_frame(&mut frame);
                // One 20 ms Opus frame a packet, whatever a=ptime asked:
                // packing two frames for 40 ms is not done yet.
                if sending {
                    if let Some(enc) = encoder.as_mut() {
                        if let Ok(payload) = enc.encode(&frame) {
                            let packet = sender.packetize(payload, FRAME as u32, first);
                            first = false;
                            report.packets_sent += 1;
                            report.bytes_sent += packet.len() as u64;
                            let _ = commands.send(IceCommand::SendMedia { component: 1, data: packet });
                        }
                    }
                }
                play(&mut jitter, decoder.as_mut(), &mut out);
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
    opus_pt: u8,
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
    if rtp.header.payload_type != opus_pt {
        return;
    }
    let now = Instant::now();
    let r = receiver.get_or_insert_with(|| RtpReceiver::new(rtp.header.ssrc, 48_000, now));
    if let ReceiveOutcome::Accepted { .. } | ReceiveOutcome::Resynchronized { .. } =
        r.receive(&rtp.header, rtp.payload.len(), now)
    {
        report.first_packet_after.get_or_insert(started.elapsed());
        report.bytes_received += packet.data.len() as u64;
        jitter.set_jitter_ms(r.jitter().as_secs_f64() * 1e3);
        jitter.push(rtp.header.sequence, rtp.payload.to_vec());
    }
}

/// One frame out of the jitter buffer, decoded (silence while filling).
fn play(jitter: &mut JitterBuffer, decoder: Option<&mut OpusDecoder>, out: &mut [i16; FRAME]) {
    let Some(dec) = decoder else {
        out.fill(0);
        return;
    };
    let ok = match jitter.pop() {
        Playout::Wait => {
            out.fill(0);
            Ok(())
        }
        Playout::Frame(p) => dec.decode(&p, out),
        Playout::Recover(next) => dec.recover(&next, out),
        Playout::Conceal => dec.conceal(out),
    };
    if ok.is_err() {
        out.fill(0);
    }
}
