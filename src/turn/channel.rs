//! ChannelData messages (RFC 8656 §12.4) and the framing of STUN and
//! ChannelData on a byte stream (RFC 8656 §12.5, RFC 8489 §6.2.2).

use thiserror::Error;

/// Lowest channel number a client may bind (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
/// Highest channel number our client binds (RFC 8656 §12).
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// Highest channel number accepted on the wire. RFC 5766 allowed up to
/// 0x7FFF and its clients use the whole range (coturn's `turnutils_uclient`
/// picks channels at random in it); RFC 8656 §12.2 would have the server
/// answer them 400, which breaks those clients for no gain, so the server
/// and the decoder accept the old range.
pub const CHANNEL_MAX_RFC5766: u16 = 0x7FFF;
/// The ChannelData header: channel number and length.
pub const CHANNEL_HEADER: usize = 4;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ChannelDataError {
    #[error("ChannelData shorter than its 4-byte header")]
    Truncated,
    #[error("channel number {0:#06x} is outside 0x4000-0x7FFF")]
    BadChannel(u16),
    #[error("ChannelData says {declared} bytes but only {available} follow")]
    LengthMismatch { declared: usize, available: usize },
    #[error("payload of {0} bytes does not fit a ChannelData length field")]
    TooLong(usize),
}

/// True when the first byte marks ChannelData (first two bits 01).
pub fn is_channel_data(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0xC0 == 0x40)
}

/// A decoded ChannelData message; `data` borrows from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Decodes one message. Trailing padding (up to a multiple of four, which
    /// is mandatory over TCP and allowed over UDP) is ignored.
    pub fn decode(buf: &'a [u8]) -> Result<Self, ChannelDataError> {
        if buf.len() < CHANNEL_HEADER {
            return Err(ChannelDataError::Truncated);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if !(CHANNEL_MIN..=CHANNEL_MAX_RFC5766).contains(&channel) {
            return Err(ChannelDataError::BadChannel(channel));
        }
        let declared = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        let available = buf.len() - CHANNEL_HEADER;
        if declared > available {
            return Err(ChannelDataError::LengthMismatch {
                declared,
                available,
            });
        }
        Ok(ChannelData {
            channel,
            data: &buf[CHANNEL_HEADER..CHANNEL_HEADER + declared],
        })
    }

    /// Appends the encoded message to `out`; `pad` rounds the length up to a
    /// multiple of four with zero bytes (required on stream transports).
    pub fn encode_into(
        channel: u16,
        data: &[u8],
        pad: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), ChannelDataError> {
        let len = u16::try_from(data.len()).map_err(|_| ChannelDataError::TooLong(data.len()))?;
        out.reserve(CHANNEL_HEADER + data.len() + 3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
        if pad {
            let rem = data.len() % 4;
            if rem != 0 {
                out.extend(std::iter::repeat_n(0u8, 4 - rem));
            }
        }
        Ok(())
    }

    pub fn encode(channel: u16, data: &[u8], pad: bool) -> Result<Vec<u8>, ChannelDataError> {
        let mut out = Vec::new();
        Self::encode_into(channel, data, pad, &mut out)?;
        Ok(out)
    }
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// The stream cannot be resynchronised: the connection must be closed.
    #[error("stream byte {0:#04x} starts neither STUN nor ChannelData")]
    BadFirstByte(u8),
    #[error("buffered {0} bytes without a complete message")]
    Overflow(usize),
}

/// Splits a byte stream (TCP or TLS to a TURN server or from a client) into
/// whole STUN and ChannelData messages. Feed bytes with [`push`], take
/// messages with [`next_message`].
///
/// [`push`]: StreamDecoder::push
/// [`next_message`]: StreamDecoder::next_message
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    start: usize,
}

/// A STUN message is at most 20 + 65535 bytes; nothing longer is buffered.
const MAX_FRAME: usize = 20 + 0xFFFF + 3;

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message (STUN, or ChannelData with its padding
    /// stripped from the returned slice's tail excluded), `Ok(None)` when more
    /// bytes are needed, or an error after which the stream is unusable.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let pending = &self.buf[self.start..];
        if pending.len() < 4 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([pending[2], pending[3]]) as usize;
        let (frame, consumed) = match pending[0] & 0xC0 {
            0x00 => (20 + len, 20 + len),
            0x40 => (4 + len, (4 + len + 3) & !3),
            _ => return Err(FramingError::BadFirstByte(pending[0])),
        };
        if pending.len() < consumed {
            if self.buffered() > MAX_FRAME {
                return Err(FramingError::Overflow(self.buffered()));
            }
            if self.start > 0 && self.start * 2 > self.buf.len() {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            return Ok(None);
        }
        let at = self.start;
        self.start += consumed;
        Ok(Some(&self.buf[at..at + frame]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_padding() {
        let m = ChannelData::encode(0x4001, b"hello", false).unwrap();
        assert_eq!(m, [0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        let p = ChannelData::encode(0x4001, b"hello", true).unwrap();
        assert_eq!(p.len(), 12);
        for buf in [&m[..], &p[..]] {
            let d = ChannelData::decode(buf).unwrap();
            assert_eq!((d.channel, d.data), (0x4001, &b"hello"[..]));
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            ChannelData::decode(&[0x40, 0]),
            Err(ChannelDataError::Truncated)
        );
        assert_eq!(
            ChannelData::decode(&[0x80, 0, 0, 0]),
            Err(ChannelDataError::BadChannel(0x8000))
        );
        assert_eq!(
            ChannelData::decode(&[0x40, 0, 0, 9, 1]),
            Err(ChannelDataError::LengthMismatch {
                declared: 9,
                available: 1
            })
        );
        // RFC 5766 clients use channels up to 0x7FFF; they decode.
        assert_eq!(
            ChannelData::decode(&[0x7F, 0xFF, 0, 0]).map(|d| d.channel),
            Ok(0x7FFF)
        );
        assert!(ChannelData::encode(0x4000, &vec![0; 70_000], false).is_err());
        assert!(is_channel_data(&[0x40]) && !is_channel_data(&[0x00]) && !is_channel_data(&[]));
    }

    #[test]
    fn stream_decoder_splits_byte_by_byte() {
        let mut stream = ChannelData::encode(0x4002, b"abc", true).unwrap();
        let stun = crate::stun::MessageBuilder::new(
            crate::stun::Class::Request,
            crate::stun::Method::BINDING,
            crate::stun::TransactionId([7; 12]),
        )
        .finish();
        stream.extend_from_slice(&stun);
        stream.extend_from_slice(&ChannelData::encode(0x4003, b"", true).unwrap());
        let mut dec = StreamDecoder::new();
        let mut got = Vec::new();
        for b in &stream {
            dec.push(std::slice::from_ref(b));
            while let Some(m) = dec.next_message().unwrap() {
                got.push(m.to_vec());
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(ChannelData::decode(&got[0]).unwrap().data, b"abc");
        assert_eq!(got[1], stun);
        assert_eq!(ChannelData::decode(&got[2]).unwrap().channel, 0x4003);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn stream_decoder_refuses_garbage() {
        let mut dec = StreamDecoder::new();
        dec.push(&[0x80, 0, 0, 0]);
        assert_eq!(dec.next_message(), Err(FramingError::BadFirstByte(0x80)));
    }
}
