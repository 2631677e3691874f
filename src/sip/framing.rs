//! Finding message boundaries on stream transports (RFC 3261 §18.3) and
//! telling keep-alives apart (RFC 5626 §3.5.1, §4.4.1).
//!
//! Owns: buffering bytes from TCP/TLS, cutting them into whole messages by
//! the blank line and Content-Length, and recognising the CRLF ping ("\r\n\r\n")
//! and pong ("\r\n"). Does not parse messages: a frame goes to
//! `Message::parse`, so a malformed header costs a 400, not the connection.
//! A framing error does cost the connection: once the boundary is lost there
//! is no resynchronising, so the decoder stays failed.

use super::message::{header_section_end, parse_content_length, ParseError, MAX_MESSAGE_LEN};

/// What a client sends to keep a flow alive, and what the server answers.
pub const PING: &[u8] = b"\r\n\r\n";
pub const PONG: &[u8] = b"\r\n";

/// Most bytes the decoder holds: one unfinished message plus one read of
/// up to `MAX_MESSAGE_LEN`, provided the caller drains `next` after each push.
pub const MAX_BUFFERED: usize = 2 * MAX_MESSAGE_LEN;

/// One unit cut from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message, body included, ready for `Message::parse`.
    Message(Vec<u8>),
    /// `ping: true` is a double CRLF that must be answered with [`PONG`];
    /// `ping: false` is a single CRLF (the pong, or stray CRLF before a
    /// start line, which §7.5 says to ignore).
    KeepAlive { ping: bool },
}

/// Cuts a byte stream into frames. Call [`push`](Self::push) with each read,
/// then [`next`](Self::next) until it returns `Ok(None)`.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Bytes before this are consumed. Frames are taken by moving it, and
    /// the buffer is compacted on the next push, so a flood of tiny
    /// keep-alives costs linear, not quadratic, time.
    start: usize,
    /// Where to resume looking for the blank line (relative to `start`),
    /// so a message fed a byte at a time is scanned once, not once per byte.
    scanned: usize,
    /// Header section length plus Content-Length, once known.
    frame_len: Option<usize>,
    failed: Option<ParseError>,
}

impl StreamDecoder {
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Appends bytes read from the stream. Fails with `TooLarge` rather than
    /// grow past [`MAX_BUFFERED`]; like every error here that ends the stream.
    pub fn push(&mut self, data: &[u8]) -> Result<(), ParseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.buffered().saturating_add(data.len()) > MAX_BUFFERED {
            return Err(self.fail(ParseError::TooLarge));
        }
        self.buf.drain(..self.start.min(self.buf.len()));
        self.start = 0;
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Bytes held but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.pending().len()
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    fn consume(&mut self, len: usize) {
        self.start = self.start.saturating_add(len).min(self.buf.len());
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    ///
    /// Errors: `TooLarge` (a header section longer than `MAX_MESSAGE_LEN`
    /// without a blank line, or a message above it), `MissingContentLength`
    /// (mandatory on streams), `BadContentLength`. After an error the
    /// decoder returns it forever; close the connection.
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<Option<Frame>, ParseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.frame_len.is_none() && self.scanned == 0 {
            if let Some(keepalive) = self.take_keepalive() {
                return Ok(keepalive);
            }
        }
        match self.take_message() {
            Ok(frame) => Ok(frame.map(Frame::Message)),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Handles CRLFs where a start line could begin. `Some(None)` means
    /// "wait": three bytes "\r\n\r" may be a ping still arriving.
    fn take_keepalive(&mut self) -> Option<Option<Frame>> {
        // A bare LF is no keep-alive; drop it like leading CRLF (§7.5).
        let stray_lf = self.pending().iter().take_while(|&&b| b == b'\n').count();
        self.consume(stray_lf);
        match self.pending() {
            [b'\r', b'\n', b'\r', b'\n', ..] => {
                self.consume(PING.len());
                Some(Some(Frame::KeepAlive { ping: true }))
            }
            [b'\r', b'\n', b'\r'] | [b'\r'] | [] => Some(None),
            // A lone CRLF is reported at once: a client waiting for its
            // pong cannot wait for bytes that will not come.
            [b'\r', b'\n', ..] => {
                self.consume(PONG.len());
                Some(Some(Frame::KeepAlive { ping: false }))
            }
            _ => None,
        }
    }

    fn take_message(&mut self) -> Result<Option<Vec<u8>>, ParseError> {
        let frame_len = match self.frame_len {
            Some(len) => len,
            None => match self.measure()? {
                Some(len) => len,
                None => return Ok(None),
            },
        };
        let Some(frame) = self.pending().get(..frame_len).map(<[u8]>::to_vec) else {
            self.frame_len = Some(frame_len);
            return Ok(None);
        };
        self.consume(frame_len);
        self.frame_len = None;
        self.scanned = 0;
        Ok(Some(frame))
    }

    /// The length of the message at the front, once its header section is
    /// complete.
    fn measure(&mut self) -> Result<Option<usize>, ParseError> {
        let pending = self.pending();
        let Some(body_start) = header_section_end(pending, self.scanned) else {
            if pending.len() > MAX_MESSAGE_LEN {
                return Err(ParseError::TooLarge);
            }
            // Back off so a "\n" + "\r\n" split across reads is still seen.
            self.scanned = pending.len().saturating_sub(2);
            return Ok(None);
        };
        let head = pending.get(..body_start).unwrap_or_default();
        let body_len = stream_content_length(head)?;
        let total = body_start.saturating_add(body_len);
        if total > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge);
        }
        Ok(Some(total))
    }

    fn fail(&mut self, error: ParseError) -> ParseError {
        self.failed = Some(error.clone());
        error
    }
}

/// Content-Length from a raw header section, read leniently (only this
/// header matters for framing): compact `l`, any case, folded values.
fn stream_content_length(head: &[u8]) -> Result<usize, ParseError> {
    let text = String::from_utf8_lossy(head);
    let mut value: Option<String> = None;
    let mut in_content_length = false;
    for line in text.lines().skip(1) {
        if line.starts_with([' ', '\t']) {
            if let (true, Some(v)) = (in_content_length, value.as_mut()) {
                v.push(' ');
                v.push_str(line);
            }
            continue;
        }
        in_content_length = false;
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim_end_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            if value.is_some() {
                return Err(ParseError::BadContentLength);
            }
            value = Some(rest.to_owned());
            in_content_length = true;
        }
    }
    let value = value.ok_or(ParseError::MissingContentLength)?;
    parse_content_length(value.trim_matches([' ', '\t']))
}

/// A UDP datagram made only of CR and LF bytes: an RFC 5626-style CRLF
/// keep-alive (many UAs send "\r\n\r\n" over UDP too). Nothing to answer.
pub fn is_keepalive(datagram: &[u8]) -> bool {
    !datagram.is_empty() && datagram.iter().all(|&b| b == b'\r' || b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::super::message::Message;
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:b@example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP h.example;branch=z9hG4bK1\r\n\
        Call-ID: one@h\r\n\
        CSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";

    const MESSAGE: &str = "MESSAGE sip:b@example.com SIP/2.0\r\n\
        Call-ID: two@h\r\n\
        l: 13\r\n\r\n\
        a\r\n\r\nb\r\n\r\nc\r\n";

    fn message(frame: Option<Frame>) -> Vec<u8> {
        match frame {
            Some(Frame::Message(bytes)) => bytes,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn drain(decoder: &mut StreamDecoder) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next().unwrap() {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn two_messages_in_one_chunk() {
        let mut d = StreamDecoder::new();
        d.push(format!("{OPTIONS}{MESSAGE}").as_bytes()).unwrap();
        assert_eq!(message(d.next().unwrap()), OPTIONS.as_bytes());
        let second = message(d.next().unwrap());
        assert_eq!(second, MESSAGE.as_bytes());
        assert_eq!(d.next(), Ok(None));
        assert_eq!(d.buffered(), 0);
        let parsed = Message::parse(&second).unwrap();
        assert_eq!(
            parsed.body(),
            b"a\r\n\r\nb\r\n\r\nc\r\n",
            "a body may hold blank lines"
        );
    }

    #[test]
    fn a_message_split_byte_by_byte() {
        let mut d = StreamDecoder::new();
        let input = format!("{MESSAGE}{OPTIONS}");
        let mut frames = Vec::new();
        for byte in input.as_bytes() {
            d.push(std::slice::from_ref(byte)).unwrap();
            frames.extend(drain(&mut d));
        }
        assert_eq!(
            frames,
            [
                Frame::Message(MESSAGE.as_bytes().to_vec()),
                Frame::Message(OPTIONS.as_bytes().to_vec())
            ]
        );
    }

    #[test]
    fn keepalives_between_messages() {
        let mut d = StreamDecoder::new();
        d.push(format!("\r\n\r\n{OPTIONS}\r\n{MESSAGE}\r\n\r\n\r\n").as_bytes())
            .unwrap();
        let frames = drain(&mut d);
        assert_eq!(
            frames,
            [
                Frame::KeepAlive { ping: true },
                Frame::Message(OPTIONS.as_bytes().to_vec()),
                Frame::KeepAlive { ping: false },
                Frame::Message(MESSAGE.as_bytes().to_vec()),
                Frame::KeepAlive { ping: true },
                Frame::KeepAlive { ping: false },
            ]
        );
    }

    #[test]
    fn a_ping_split_across_reads_and_a_lone_pong() {
        let mut d = StreamDecoder::new();
        d.push(b"\r\n\r").unwrap();
        assert_eq!(d.next(), Ok(None), "may still become a ping");
        d.push(b"\n").unwrap();
        assert_eq!(d.next(), Ok(Some(Frame::KeepAlive { ping: true })));
        d.push(b"\r\n").unwrap();
        assert_eq!(
            d.next(),
            Ok(Some(Frame::KeepAlive { ping: false })),
            "a pong is not held back"
        );
        d.push(b"\r").unwrap();
        assert_eq!(d.next(), Ok(None));
        d.push(b"\n").unwrap();
        assert_eq!(d.next(), Ok(Some(Frame::KeepAlive { ping: false })));
        d.push(b"\n\n").unwrap();
        assert_eq!(d.next(), Ok(None), "bare LFs are dropped");
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn content_length_is_mandatory_on_streams() {
        let mut d = StreamDecoder::new();
        d.push(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n")
            .unwrap();
        assert_eq!(d.next(), Err(ParseError::MissingContentLength));
        assert_eq!(
            d.next(),
            Err(ParseError::MissingContentLength),
            "the failure sticks"
        );
        assert_eq!(
            d.push(OPTIONS.as_bytes()),
            Err(ParseError::MissingContentLength)
        );
    }

    #[test]
    fn bad_content_lengths_on_streams() {
        for head in [
            "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 1\r\n\r\n",
            "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
            "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1e3\r\n\r\n",
        ] {
            let mut d = StreamDecoder::new();
            d.push(head.as_bytes()).unwrap();
            assert_eq!(d.next(), Err(ParseError::BadContentLength), "{head}");
        }
        let mut d = StreamDecoder::new();
        d.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 70000\r\n\r\n")
            .unwrap();
        assert_eq!(d.next(), Err(ParseError::TooLarge));
    }

    #[test]
    fn folded_compact_lowercase_content_length() {
        let mut d = StreamDecoder::new();
        d.push(b"MESSAGE sip:a@b SIP/2.0\nL :\n 3\n\nxyzMESSAGE")
            .unwrap();
        let frame = message(d.next().unwrap());
        assert_eq!(frame, b"MESSAGE sip:a@b SIP/2.0\nL :\n 3\n\nxyz");
        assert_eq!(Message::parse(&frame).unwrap().body(), b"xyz");
        assert_eq!(d.next(), Ok(None));
        assert_eq!(d.buffered(), "MESSAGE".len());
    }

    #[test]
    fn waits_for_the_body() {
        let mut d = StreamDecoder::new();
        let (head, body) = MESSAGE.split_at(MESSAGE.len() - 5);
        d.push(head.as_bytes()).unwrap();
        assert_eq!(d.next(), Ok(None));
        d.push(body.as_bytes()).unwrap();
        assert_eq!(message(d.next().unwrap()), MESSAGE.as_bytes());
    }

    #[test]
    fn header_section_without_blank_line_is_bounded() {
        let mut d = StreamDecoder::new();
        d.push(b"OPTIONS sip:a@b SIP/2.0\r\n").unwrap();
        let line = format!("X-Filler: {}\r\n", "f".repeat(1000));
        let mut result = Ok(None);
        for _ in 0..70 {
            if let Err(e) = d.push(line.as_bytes()) {
                result = Err(e);
                break;
            }
            result = d.next();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ParseError::TooLarge));
        assert!(d.buffered() <= MAX_BUFFERED);
    }

    #[test]
    fn push_refuses_to_grow_past_the_bound() {
        let mut d = StreamDecoder::new();
        let chunk = vec![b'x'; MAX_MESSAGE_LEN];
        assert_eq!(d.push(&chunk), Ok(()));
        assert_eq!(d.push(&chunk), Ok(()));
        assert_eq!(d.push(b"x"), Err(ParseError::TooLarge));
        assert_eq!(d.buffered(), MAX_BUFFERED);
    }

    #[test]
    fn a_flood_of_keepalives_and_stray_lfs() {
        let mut d = StreamDecoder::new();
        d.push(&b"\r\n".repeat(MAX_MESSAGE_LEN / 2)).unwrap();
        d.push(&b"\n".repeat(MAX_MESSAGE_LEN - 1)).unwrap();
        let frames = drain(&mut d);
        assert_eq!(frames.len(), MAX_MESSAGE_LEN / 4);
        assert!(frames.iter().all(|f| *f == Frame::KeepAlive { ping: true }));
        assert_eq!(d.buffered(), 0);
        d.push(OPTIONS.as_bytes()).unwrap();
        assert_eq!(message(d.next().unwrap()), OPTIONS.as_bytes());
    }

    #[test]
    fn udp_keepalive_detection() {
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(is_keepalive(b"\r\n"));
        assert!(!is_keepalive(b""));
        assert!(!is_keepalive(b"\0\0\0\0"));
        assert!(!is_keepalive(b"\r\nOPTIONS"));
    }

    #[test]
    fn random_chunking_and_garbage_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        let stream = format!("{OPTIONS}\r\n\r\n{MESSAGE}\r\n{OPTIONS}");
        for round in 0..2_000 {
            let mut bytes = stream.as_bytes().to_vec();
            // Corrupt a few bytes in most rounds; keep every tenth stream clean.
            if round % 10 != 0 {
                for _ in 0..1 + random(3) {
                    let at = random(bytes.len());
                    bytes[at] = random(256) as u8;
                }
            }
            let mut d = StreamDecoder::new();
            let mut messages = Vec::new();
            let mut rest = bytes.as_slice();
            'feed: while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(1 + random(rest.len().min(64)));
                rest = tail;
                if d.push(chunk).is_err() {
                    break;
                }
                loop {
                    match d.next() {
                        Ok(Some(Frame::Message(m))) => messages.push(m),
                        Ok(Some(Frame::KeepAlive { .. })) => {}
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
            for m in &messages {
                let _ = Message::parse(m);
            }
            if round % 10 == 0 {
                assert_eq!(messages.len(), 3);
                assert_eq!(d.buffered(), 0);
            }
        }
    }
}
