//! `icephone bench quality`: how much of a call's audio survives a bad
//! network, in virtual time. A 440 Hz tone goes through the real pipeline
//! (Opus, RTP, jitter buffer, decoder) across a simulated path with random
//! loss and uniformly distributed extra delay; the measure is the share of
//! 20 ms frames in which the tone still stands clear (Goertzel level ≥ 0.5),
//! with FEC and concealment against a receiver that plays silence for
//! what is missing.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::audio::analysis::tone_level;
use crate::audio::codec::{OpusDecoder, OpusEncoder};
use crate::audio::io::Source;
use crate::audio::FRAME;
use crate::call::jitter::{JitterBuffer, Playout};
use crate::rtp::{RtpPacket, RtpReceiver, RtpSender};

#[derive(Serialize)]
struct QualityBench {
    loss_percent: f64,
    jitter_ms: u64,
    frames: u64,
    /// Frames with the tone clear, FEC and concealment on.
    intact_with_fec_and_plc: f64,
    /// The same network, FEC off and silence for missing frames.
    intact_without: f64,
    recovered_by_fec: u64,
    concealed: u64,
    /// The jitter buffer's delay at the end, ms.
    buffer_ms: u32,
}

pub fn run(loss_percent: f64, jitter_ms: u64, seconds: u64, json: bool) -> ExitCode {
    let frames = seconds.max(2) * 50;
    let with = simulate(loss_percent, jitter_ms, frames, true);
    let without = simulate(loss_percent, jitter_ms, frames, false);
    let (with, without) = match (with, without) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let r = QualityBench {
        loss_percent,
        jitter_ms,
        frames,
        intact_with_fec_and_plc: with.intact,
        intact_without: without.intact,
        recovered_by_fec: with.recovered,
        concealed: with.concealed,
        buffer_ms: with.buffer_ms,
    };
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        println!(
            "quality at {:.0} % loss, ±{} ms jitter: {:.1} % of frames intact with FEC+PLC, {:.1} % without ({} recovered by FEC, {} concealed, buffer {} ms)",
            r.loss_percent,
            r.jitter_ms,
            r.intact_with_fec_and_plc * 100.0,
            r.intact_without * 100.0,
            r.recovered_by_fec,
            r.concealed,
            r.buffer_ms
        );
    }
    ExitCode::SUCCESS
}

struct Outcome {
    intact: f64,
    recovered: u64,
    concealed: u64,
    buffer_ms: u32,
}

fn simulate(
    loss_percent: f64,
    jitter_ms: u64,
    frames: u64,
    protect: bool,
) -> Result<Outcome, String> {
    // The same seed for both runs: the same packets are lost and delayed.
    let mut net = StdRng::seed_from_u64(0x5eed);
    let mut rng = StdRng::seed_from_u64(2);
    let t0 = Instant::now();
    let mut sender = RtpSender::new(&mut rng, 111, 48_000, t0);
    let mut encoder = OpusEncoder::new(protect, None).map_err(|e| e.to_string())?;
    let mut decoder = OpusDecoder::new().map_err(|e| e.to_string())?;
    let mut receiver: Option<RtpReceiver> = None;
    let mut jitter = JitterBuffer::new(20, 50);
    let mut source = Source::Tone {
        hz: 440.0,
        phase: 0.0,
    };
    let mut frame = [0i16; FRAME];
    let mut out = [0i16; FRAME];
    // Arrival time (µs) -> packet.
    let mut in_flight: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    let mut intact = 0u64;
    let warmup = 25; // half a second to fill and settle
    for i in 0..frames + 10 {
        let now_us = i * 20_000;
        if i < frames {
            source.next_frame(&mut frame);
            let payload = encoder.encode(&frame).map_err(|e| e.to_string())?;
            let packet = sender.packetize(payload, FRAME as u32, i == 0);
            if !net.random_bool((loss_percent / 100.0).clamp(0.0, 1.0)) {
                let extra = net.random_range(0..=2 * jitter_ms * 1000);
                in_flight.insert((now_us + 10_000 + extra, i), packet);
            }
        }
        // Everything that has arrived by this playout tick.
        let tick = now_us + 5_000;
        while let Some(entry) = in_flight.first_entry() {
            if entry.key().0 > tick {
                break;
            }
            let ((arrival, _), packet) = entry.remove_entry();
            let rtp = RtpPacket::parse(&packet).map_err(|e| e.to_string())?;
            let at = t0 + Duration::from_micros(arrival);
            let r = receiver.get_or_insert_with(|| RtpReceiver::new(rtp.header.ssrc, 48_000, at));
            r.receive(&rtp.header, rtp.payload.len(), at);
            jitter.set_jitter_ms(r.jitter().as_secs_f64() * 1e3);
            jitter.push(rtp.header.sequence, rtp.payload.to_vec());
        }
        let played = match jitter.pop() {
            Playout::Frame(p) => decoder.decode(&p, &mut out),
            Playout::Recover(p) if protect => decoder.recover(&p, &mut out),
            Playout::Conceal | Playout::Recover(_) if protect => decoder.conceal(&mut out),
            _ => {
                out.fill(0);
                Ok(())
            }
        };
        played.map_err(|e| e.to_string())?;
        if i >= warmup && i < frames && tone_level(&out, 440.0) >= 0.5 {
            intact += 1;
        }
    }
    let stats = jitter.stats();
    Ok(Outcome {
        intact: intact as f64 / (frames - warmup) as f64,
        recovered: stats.recovered,
        concealed: stats.concealed,
        buffer_ms: jitter.target_ms(),
    })
}
