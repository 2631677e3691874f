//! Measurements on received audio, for tests and call reports: how much of
//! a signal's energy sits at one frequency (Goertzel), and where a signal
//! starts.

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
}
