//! Parses arbitrary bytes as a SIP message and as a TCP stream: the parser
//! and the framer must never panic, every typed header accessor must
//! survive what the parser accepted, and whatever parses must serialise to
//! bytes that parse to the same message.
#![no_main]

use icephone::sip::framing::{Frame, StreamDecoder};
use icephone::sip::message::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::parse(data) {
        let h = msg.headers();
        let _ = (h.via(), h.top_via(), h.from(), h.to(), h.call_id(), h.cseq());
        let _ = (h.contacts(), h.max_forwards(), h.expires(), h.record_route(), h.route());
        let _ = (h.www_authenticate(), h.proxy_authenticate(), h.authorization());
        if let Message::Request(r) = &msg {
            let _ = r.check_mandatory();
        }
        let bytes = msg.to_bytes();
        let again = Message::parse(&bytes).expect("a serialised message must parse");
        assert_eq!(again, msg);
    }
    // The same bytes as a stream, cut in two at a point the input chooses.
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut decoder = StreamDecoder::new();
    for chunk in [&data[..cut], &data[cut..]] {
        if decoder.push(chunk).is_err() {
            return;
        }
        loop {
            match decoder.next() {
                Ok(Some(Frame::Message(m))) => {
                    let _ = Message::parse(&m);
                }
                Ok(Some(Frame::KeepAlive { .. })) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
});
