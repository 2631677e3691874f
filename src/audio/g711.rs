//! G.711 µ-law and A-law (ITU-T G.711) at 8 kHz, for peers without Opus,
//! with the 48 kHz ↔ 8 kHz conversion the rest of icephone needs and a
//! simple concealment (the last frame again, fading).

use super::FRAME;

/// Samples in a 20 ms G.711 frame.
pub const G711_FRAME: usize = 160;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Law {
    /// PCMU, payload type 0.
    Mu,
    /// PCMA, payload type 8.
    A,
}

pub struct G711 {
    law: Law,
    last: [i16; FRAME],
    fade: f32,
}

impl G711 {
    pub fn new(law: Law) -> Self {
        G711 {
            law,
            last: [0; FRAME],
            fade: 1.0,
        }
    }

    /// A 48 kHz frame as 160 G.711 bytes (each the mean of six samples: a
    /// box filter against aliasing, enough for speech).
    pub fn encode(&self, frame: &[i16; FRAME]) -> Vec<u8> {
        frame
            .chunks(6)
            .map(|c| {
                let mean = c.iter().map(|&s| i32::from(s)).sum::<i32>() / 6;
                match self.law {
                    Law::Mu => linear_to_ulaw(mean as i16),
                    Law::A => linear_to_alaw(mean as i16),
                }
            })
            .collect()
    }

    /// 160 bytes (fewer leave the rest silent) to a 48 kHz frame, each
    /// 8 kHz sample interpolated linearly to six.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16; FRAME]) {
        let pcm: Vec<i16> = payload
            .iter()
            .take(G711_FRAME)
            .map(|&b| match self.law {
                Law::Mu => ulaw_to_linear(b),
                Law::A => alaw_to_linear(b),
            })
            .collect();
        out.fill(0);
        for (i, &s) in pcm.iter().enumerate() {
            let next = pcm.get(i + 1).copied().unwrap_or(s);
            for k in 0..6 {
                let v = f32::from(s) + (f32::from(next) - f32::from(s)) * k as f32 / 6.0;
                out[i * 6 + k] = v as i16;
            }
        }
        self.last = *out;
        self.fade = 1.0;
    }

    /// A lost frame: the last one again, quieter each time.
    pub fn conceal(&mut self, out: &mut [i16; FRAME]) {
        self.fade *= 0.5;
        for (o, s) in out.iter_mut().zip(self.last.iter()) {
            *o = (f32::from(*s) * self.fade) as i16;
        }
    }
}

/// ITU-T G.711 µ-law encoding with the usual bias of 0x84.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - (s.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

pub fn ulaw_to_linear(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// ITU-T G.711 A-law encoding (even bits inverted, 0x55).
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3; // 13-bit
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0
    };
    let s = s.min(0x0FFF);
    let byte = if s < 32 {
        (s >> 1) as u8
    } else {
        let exponent = (31 - (s as u32).leading_zeros() - 4) as i32; // 1..=7
        let mantissa = (s >> exponent) & 0x0F;
        (((exponent) << 4) | mantissa) as u8
    };
    (byte | sign) ^ 0x55
}

pub fn alaw_to_linear(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0F);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if sign != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::analysis::tone_level;
    use crate::audio::io::Source;

    #[test]
    fn known_code_points() {
        // Silence and full scale, per G.711's tables.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(32767), 0x80);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-8), 0x55);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(alaw_to_linear(0xD5), 8);
    }

    #[test]
    fn round_trips_stay_within_the_law_step() {
        for s in (-32768i32..32768).step_by(97) {
            let s = s as i16;
            for (enc, dec) in [
                (
                    linear_to_ulaw as fn(i16) -> u8,
                    ulaw_to_linear as fn(u8) -> i16,
                ),
                (linear_to_alaw, alaw_to_linear),
            ] {
                let back = dec(enc(s));
                let err = (i32::from(back) - i32::from(s)).abs();
                // Logarithmic steps: about 1/16 of the magnitude, at least a few units.
                assert!(err <= (i32::from(s).abs() / 14).max(16), "{s} -> {back}");
            }
        }
    }

    #[test]
    fn a_tone_survives_both_laws() {
        for law in [Law::Mu, Law::A] {
            let mut codec = G711::new(law);
            let mut src = Source::Tone {
                hz: 440.0,
                phase: 0.0,
            };
            let mut frame = [0i16; FRAME];
            let mut out = [0i16; FRAME];
            src.next_frame(&mut frame);
            let bytes = codec.encode(&frame);
            assert_eq!(bytes.len(), G711_FRAME);
            codec.decode(&bytes, &mut out);
            assert!(tone_level(&out, 440.0) > 0.9, "{law:?}");
            codec.conceal(&mut out);
            assert!(
                tone_level(&out, 440.0) > 0.9,
                "{law:?}: concealment repeats"
            );
        }
    }
}
