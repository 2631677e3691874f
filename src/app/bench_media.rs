//! `icephone bench media`: what one call's audio costs a CPU — per 20 ms
//! frame, a tone encoded with Opus (FEC on), put in RTP, parsed again,
//! counted by the receiver, through the jitter buffer and decoded — and so
//! how many calls one core carries. Single-threaded, in process, no I/O.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::audio::codec::{OpusDecoder, OpusEncoder};
use crate::audio::io::Source;
use crate::audio::FRAME;
use crate::call::jitter::{JitterBuffer, Playout};
use crate::rtp::{RtpPacket, RtpReceiver, RtpSender};

#[derive(Serialize)]
struct MediaBench {
    frames: u64,
    /// CPU per 20 ms frame of one call, both directions' work (encode and
    /// send, receive and decode), microseconds.
    per_frame_us: f64,
    /// Share of one core one call takes.
    core_percent_per_call: f64,
    /// Calls one core could carry at that cost.
    calls_per_core: f64,
}

pub fn run(frames: u64, json: bool) -> ExitCode {
    match measure(frames.max(50)) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                println!(
                    "media: {:.1} µs per 20 ms frame per call ({:.2} % of a core), about {:.0} calls per core ({} frames)",
                    r.per_frame_us, r.core_percent_per_call, r.calls_per_core, r.frames
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn measure(frames: u64) -> Result<MediaBench, String> {
    let mut rng = StdRng::seed_from_u64(1);
    let start = Instant::now();
    let mut sender = RtpSender::new(&mut rng, 111, 48_000, start);
    let mut receiver: Option<RtpReceiver> = None;
    let mut encoder = OpusEncoder::new(true, None).map_err(|e| e.to_string())?;
    let mut decoder = OpusDecoder::new().map_err(|e| e.to_string())?;
    let mut jitter = JitterBuffer::new(20, 50);
    let mut source = Source::Tone {
        hz: 440.0,
        phase: 0.0,
    };
    let mut frame = [0i16; FRAME];
    let mut out = [0i16; FRAME];
    let mut sink = 0i64;
    let t = Instant::now();
    for i in 0..frames {
        source.next_frame(&mut frame);
        let payload = encoder.encode(&frame).map_err(|e| e.to_string())?;
        let packet = sender.packetize(payload, FRAME as u32, i == 0);
        let rtp = RtpPacket::parse(&packet).map_err(|e| e.to_string())?;
        // Virtual arrival times, so the jitter estimate sees a steady stream.
        let now = start + Duration::from_millis(20 * i);
        let r = receiver.get_or_insert_with(|| RtpReceiver::new(rtp.header.ssrc, 48_000, now));
        r.receive(&rtp.header, rtp.payload.len(), now);
        jitter.push(rtp.header.sequence, rtp.payload.to_vec());
        match jitter.pop() {
            Playout::Frame(p) => decoder.decode(&p, &mut out).map_err(|e| e.to_string())?,
            Playout::Recover(p) => decoder.recover(&p, &mut out).map_err(|e| e.to_string())?,
            Playout::Conceal => decoder.conceal(&mut out).map_err(|e| e.to_string())?,
            Playout::Wait => {}
        }
        sink += i64::from(out[0]);
    }
    let elapsed = t.elapsed();
    std::hint::black_box(sink);
    let per_frame = elapsed.as_secs_f64() * 1e6 / frames as f64;
    Ok(MediaBench {
        frames,
        per_frame_us: (per_frame * 10.0).round() / 10.0,
        core_percent_per_call: (per_frame / 20_000.0 * 100.0 * 100.0).round() / 100.0,
        calls_per_core: (20_000.0 / per_frame).floor(),
    })
}
