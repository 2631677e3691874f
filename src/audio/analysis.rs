//! Measurements on received audio, for tests, the demo and call reports:
//! how much of a signal's energy sits at one frequency (Goertzel), where a
//! signal starts, and where (and how faithfully) a sent signal turns up in
//! a recording.

use super::RATE;

/// The share of `samples`' energy at `hz` (0 to 1): about 1 for a pure tone
/// at `hz`, about 0 for silence or another tone.
pub fn tone_level(samples: &[i16], hz: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = std::f64::consts::TAU * hz / f64::from(RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut total = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        total += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    if total == 0.0 {
        return 0.0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A pure tone of N samples gives power ≈ N²A²/4 against total ≈ NA²/2.
    (2.0 * power / (samples.len() as f64 * total)).min(1.0)
}

/// Where the first `window`-sample stretch with `hz` in it starts, in
/// samples, if any (for the delay a call adds).
pub fn tone_onset(samples: &[i16], hz: f64, window: usize) -> Option<usize> {
    samples
        .chunks(window)
        .position(|w| w.len() == window && tone_level(w, hz) > 0.3)
        .map(|i| i * window)
}

/// Where a sent signal sits in a recording of what arrived.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Alignment {
    /// How far into the recording the signal starts, in 48 kHz samples.
    pub delay: usize,
    /// Normalised cross-correlation at that delay, -1 to 1: about 1 when
    /// the signal arrived intact, near 0 when what arrived is unrelated.
    pub correlation: f64,
}

/// 8 kHz is plenty to line speech up, and six times less work than 48.
const DECIMATE: usize = 6;
/// 10 ms envelope frames at 8 kHz for the coarse search.
const ENVELOPE: usize = 80;

/// Finds `sent` in `recording`, at most `max_delay` samples in (both at
/// 48 kHz): a coarse search on 10 ms energy envelopes, refined sample by
/// sample at 8 kHz within a frame either side. `None` when either is
/// silent or the recording is too short to hold the signal at all.
pub fn align(sent: &[i16], recording: &[i16], max_delay: usize) -> Option<Alignment> {
    let a = decimate(sent);
    let b = decimate(recording);
    if a.len() < 4 * ENVELOPE || b.len() < a.len() / 2 {
        return None;
    }
    let (ea, eb) = (envelope(&a), envelope(&b));
    let max_lag = (max_delay / DECIMATE / ENVELOPE).min(eb.len());
    let coarse = (0..=max_lag)
        .map(|lag| (lag, normalised(&ea, &eb[lag.min(eb.len())..])))
        .max_by(|x, y| x.1.total_cmp(&y.1))?
        .0;
    let centre = coarse * ENVELOPE;
    let from = centre.saturating_sub(ENVELOPE);
    let to = (centre + ENVELOPE).min(b.len());
    let (lag, correlation) = (from..=to)
        .map(|lag| (lag, normalised(&a, &b[lag.min(b.len())..])))
        .max_by(|x, y| x.1.total_cmp(&y.1))?;
    (correlation.is_finite()).then_some(Alignment {
        delay: lag * DECIMATE,
        correlation,
    })
}

/// Averages of six: a crude low-pass and 48 kHz to 8 kHz.
fn decimate(x: &[i16]) -> Vec<f64> {
    x.chunks_exact(DECIMATE)
        .map(|c| c.iter().map(|v| f64::from(*v)).sum::<f64>() / DECIMATE as f64)
        .collect()
}

fn envelope(x: &[f64]) -> Vec<f64> {
    x.chunks_exact(ENVELOPE)
        .map(|c| (c.iter().map(|v| v * v).sum::<f64>() / ENVELOPE as f64).sqrt())
        .collect()
}

/// Pearson correlation of `a` with the start of `b` (over their common
/// length), 0 when either is flat.
fn normalised(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().sum::<f64>() / n as f64;
    let mb = b.iter().sum::<f64>() / n as f64;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x - ma, y - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::io::Source;
    use crate::audio::FRAME;

    #[test]
    fn tones_are_told_apart_and_found() {
        let mut src = Source::Tone {
            hz: 440.0,
            phase: 0.0,
        };
        let mut frame = [0i16; FRAME];
        src.next_frame(&mut frame);
        assert!(tone_level(&frame, 440.0) > 0.9);
        assert!(tone_level(&frame, 1000.0) < 0.01);
        assert_eq!(tone_level(&[0; 960], 440.0), 0.0);
        let mut signal = vec![0i16; 4800];
        signal.extend_from_slice(&frame);
        assert_eq!(tone_onset(&signal, 440.0, 480), Some(4800));
    }

    /// Something speech-like: a few tones swept and gated into syllables.
    fn babble(len: usize, seed: u64) -> Vec<i16> {
        let mut rng = seed;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as f64 / (1u64 << 31) as f64
        };
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let (f, on, gap) = (
                150.0 + 400.0 * next(),
                4000 + (next() * 8000.0) as usize,
                (next() * 6000.0) as usize,
            );
            for i in 0..on {
                let t = i as f64 / 48_000.0;
                let v = (std::f64::consts::TAU * f * t).sin()
                    + 0.5 * (std::f64::consts::TAU * 2.7 * f * t).sin();
                out.push((v * 6000.0) as i16);
            }
            out.extend(std::iter::repeat_n(0, gap));
        }
        out.truncate(len);
        out
    }

    #[test]
    fn a_delayed_noisy_copy_is_found_and_an_unrelated_signal_is_not() {
        let sent = babble(48_000 * 3, 1);
        let delay = 3_123;
        let mut noise = 7u32;
        let mut recording = vec![0i16; delay];
        recording.extend(sent.iter().map(|s| {
            noise = noise.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            s.saturating_add(((noise >> 16) % 1000) as i16 - 500)
        }));
        recording.extend(std::iter::repeat_n(0, 4800));
        let found = align(&sent, &recording, 48_000).expect("aligned");
        assert!(found.delay.abs_diff(delay) <= DECIMATE, "{found:?}");
        assert!(found.correlation > 0.9, "{found:?}");
        let other = babble(48_000 * 3, 99);
        let found = align(&sent, &other, 48_000).expect("aligned");
        assert!(found.correlation < 0.3, "{found:?}");
        assert_eq!(align(&sent, &[], 48_000), None);
    }
}
