//! Sample-rate conversion by linear interpolation, in chunks of any size
//! with no seam between them: a sound card's rate to 48 kHz and back, and
//! WAV files of other rates.
//!
//! Linear interpolation is enough for narrow- and wide-band speech (it
//! rolls off a little near Nyquist); the common case, a device that takes
//! 48 kHz, skips it altogether.

pub struct StreamResampler {
    /// Input samples per output sample.
    step: f64,
    /// Where the next output falls, in input samples from the start of the
    /// next chunk; -1 is the previous chunk's last sample.
    pos: f64,
    last: f32,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> Self {
        StreamResampler {
            step: f64::from(from.max(1)) / f64::from(to.max(1)),
            pos: 0.0,
            last: 0.0,
        }
    }

    fn is_passthrough(&self) -> bool {
        self.step == 1.0
    }

    /// Appends to `out` every output sample `input` completes.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.is_passthrough() {
            out.extend_from_slice(input);
            return;
        }
        let n = input.len();
        if n == 0 {
            return;
        }
        let at = |i: isize| -> f32 {
            if i < 0 {
                self.last
            } else {
                input[i as usize]
            }
        };
        while self.pos.floor() as isize + 1 < n as isize {
            let k = self.pos.floor() as isize;
            let frac = (self.pos - k as f64) as f32;
            let (a, b) = (at(k), at(k + 1));
            out.push(a + (b - a) * frac);
            self.pos += self.step;
        }
        self.pos -= n as f64;
        self.last = input[n - 1];
    }

    /// Ends the stream: the outputs that fall after the last input sample
    /// hold it (a whole buffer then resamples to exactly its duration).
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        while self.pos < 0.0 {
            out.push(self.last);
            self.pos += self.step;
        }
    }

    /// How many input samples the next `outputs` output samples need.
    pub fn input_needed(&self, outputs: usize) -> usize {
        if self.is_passthrough() || outputs == 0 {
            return outputs;
        }
        let last = self.pos + (outputs - 1) as f64 * self.step;
        (last.floor() as isize + 2).max(1) as usize
    }
}

/// A whole buffer at once.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    let mut out = Vec::with_capacity(
        (input.len() as u64 * u64::from(to) / u64::from(from.max(1))) as usize + 1,
    );
    let mut r = StreamResampler::new(from, to);
    r.process(input, &mut out);
    r.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_give_the_same_samples_as_one_buffer() {
        let input: Vec<f32> = (0..4410).map(|i| (i as f32 * 0.05).sin()).collect();
        let whole = resample(&input, 44_100, 48_000);
        let mut r = StreamResampler::new(44_100, 48_000);
        let mut chunked = Vec::new();
        for chunk in input.chunks(97) {
            r.process(chunk, &mut chunked);
        }
        r.finish(&mut chunked);
        // The running position is a float: an output landing exactly on
        // the last input may fall either side of it.
        assert!(whole.len().abs_diff(chunked.len()) <= 1);
        for (a, b) in whole.iter().zip(&chunked) {
            assert!((a - b).abs() < 1e-5);
        }
        assert!((whole.len() as i64 - 4800).abs() <= 1, "{}", whole.len());
    }

    #[test]
    fn input_needed_is_exactly_enough() {
        for (from, to) in [
            (48_000, 44_100),
            (44_100, 48_000),
            (8_000, 48_000),
            (48_000, 16_000),
        ] {
            let mut r = StreamResampler::new(from, to);
            for want in [1usize, 7, 441, 960] {
                let n = r.input_needed(want);
                let mut out = Vec::new();
                r.process(&vec![0.1; n], &mut out);
                assert!(
                    out.len() >= want,
                    "{from}->{to}: {n} inputs gave {} < {want}",
                    out.len()
                );
                // Upsampling by k completes up to k outputs per input.
                let slack = (to as usize).div_ceil(from as usize);
                assert!(
                    out.len() <= want + slack,
                    "{from}->{to}: {n} inputs gave {} for {want}",
                    out.len()
                );
            }
        }
    }

    #[test]
    fn a_tone_keeps_its_pitch_down_and_up() {
        let tone: Vec<f32> = (0..48_000)
            .map(|i| (std::f32::consts::TAU * 440.0 * i as f32 / 48_000.0).sin())
            .collect();
        for rate in [8_000, 16_000, 44_100] {
            let down = resample(&tone, 48_000, rate);
            let up = resample(&down, rate, 48_000);
            let crossings = |s: &[f32]| {
                s.windows(2)
                    .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
                    .count()
            };
            assert!(
                (875..=885).contains(&crossings(&down)),
                "{rate}: {}",
                crossings(&down)
            );
            assert!((875..=885).contains(&crossings(&up)), "{rate}");
        }
    }
}
