//! Opus (RFC 6716, RTP per RFC 7587) for 20 ms mono frames at 48 kHz, with
//! in-band FEC and packet-loss concealment.

use opus::{Application, Bitrate, Channels, Decoder, Encoder};
use thiserror::Error;

use super::{FRAME, RATE};

#[derive(Debug, Error)]
#[error("opus: {0}")]
pub struct CodecError(String);

impl From<opus::Error> for CodecError {
    fn from(e: opus::Error) -> Self {
        CodecError(e.to_string())
    }
}

pub struct OpusEncoder {
    inner: Encoder,
    out: Vec<u8>,
}

impl OpusEncoder {
    /// `fec`: the peer decodes in-band FEC (its `useinbandfec=1`);
    /// `bitrate`: its `maxaveragebitrate`, or 32 kbit/s.
    pub fn new(fec: bool, bitrate: Option<u32>) -> Result<Self, CodecError> {
        let mut inner = Encoder::new(RATE, Channels::Mono, Application::Voip)?;
        let bits = bitrate.unwrap_or(32_000).clamp(6_000, 510_000);
        inner.set_bitrate(Bitrate::Bits(bits as i32))?;
        inner.set_inband_fec(fec)?;
        if fec {
            // FEC is only spent when the encoder expects loss.
            inner.set_packet_loss_perc(10)?;
        }
        Ok(OpusEncoder {
            inner,
            out: vec![0; 1500],
        })
    }

    pub fn encode(&mut self, frame: &[i16; FRAME]) -> Result<&[u8], CodecError> {
        let n = self.inner.encode(frame, &mut self.out)?;
        Ok(&self.out[..n])
    }
}

pub struct OpusDecoder {
    inner: Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, CodecError> {
        Ok(OpusDecoder {
            inner: Decoder::new(RATE, Channels::Mono)?,
        })
    }

    /// Decodes one packet into a frame (a shorter packet leaves the rest
    /// silent).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16; FRAME]) -> Result<(), CodecError> {
        let n = self.inner.decode(payload, out, false)?;
        out[n.min(FRAME)..].fill(0);
        Ok(())
    }

    /// A lost frame rebuilt from the FEC data in the packet after it.
    pub fn recover(
        &mut self,
        next_payload: &[u8],
        out: &mut [i16; FRAME],
    ) -> Result<(), CodecError> {
        let n = self.inner.decode(next_payload, out, true)?;
        out[n.min(FRAME)..].fill(0);
        Ok(())
    }

    /// A lost frame with nothing to rebuild it from: concealment.
    pub fn conceal(&mut self, out: &mut [i16; FRAME]) -> Result<(), CodecError> {
        let n = self.inner.decode(&[], out, false)?;
        out[n.min(FRAME)..].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::analysis::tone_level;
    use crate::audio::io::Source;

    #[test]
    fn a_tone_survives_encoding_fec_and_concealment() {
        let mut enc = OpusEncoder::new(true, None).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut src = Source::Tone {
            hz: 1000.0,
            phase: 0.0,
        };
        let mut frame = [0i16; FRAME];
        let mut out = [0i16; FRAME];
        let mut packets = Vec::new();
        for _ in 0..50 {
            src.next_frame(&mut frame);
            packets.push(enc.encode(&frame).unwrap().to_vec());
        }
        let mut decoded = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            match i {
                20 => dec.recover(&packets[21], &mut out).unwrap(),
                30 => dec.conceal(&mut out).unwrap(),
                _ => dec.decode(p, &mut out).unwrap(),
            }
            decoded.extend_from_slice(&out);
        }
        // After the codec's start-up, the tone is there, at 1 kHz, not at 700 Hz.
        let tail = &decoded[FRAME * 10..];
        assert!(
            tone_level(tail, 1000.0) > 0.5,
            "{}",
            tone_level(tail, 1000.0)
        );
        assert!(
            tone_level(tail, 700.0) < 0.05,
            "{}",
            tone_level(tail, 700.0)
        );
        assert!(packets.iter().all(|p| p.len() < 200));
    }
}
