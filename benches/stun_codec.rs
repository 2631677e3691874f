//! ns/op of the STUN codec hot paths, with plain `Instant` loops.
//!
//! `cargo bench --bench stun_codec` measures for real. Under
//! `cargo test --all-targets` the binary gets no `--bench` argument and only
//! does a short smoke run, so the test suite stays fast.

use std::hint::black_box;
use std::time::Instant;

use icephone::stun::*;

const PASSWORD: &str = "asd88fgpdd777uzjYhagZg";
const TID: TransactionId = TransactionId([0x5a; 12]);

/// An ICE connectivity check as the agent sends it.
fn connectivity_check(buf: Vec<u8>, key: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::with_buffer(buf, Class::Request, Method::BINDING, TID);
    b.add(&Attribute::Username("9uB6:3Jhx"))
        .add(&Attribute::Priority(0x6e00_01ff))
        .add(&Attribute::IceControlling(0x0123_4567_89ab_cdef))
        .add(&Attribute::UseCandidate)
        .add_message_integrity(key)
        .add_fingerprint();
    b.finish()
}

/// Runs `f` `iters` times in batches after a warm-up and prints the best
/// batch mean: on a shared machine the minimum is the figure that reflects
/// the code rather than the neighbours.
fn measure(name: &str, iters: u32, mut f: impl FnMut()) {
    const BATCHES: u32 = 5;
    for _ in 0..iters / 10 {
        f();
    }
    let per_batch = (iters / BATCHES).max(1);
    let best = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(per_batch)
        })
        .fold(f64::INFINITY, f64::min);
    println!("{name:<32} {best:>10.1} ns/op");
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let iters = if full { 500_000 } else { 1_000 };
    let key = short_term_key(PASSWORD);
    let packet = connectivity_check(Vec::new(), &key);
    assert!(Message::decode(&packet).is_ok_and(|m| m.check_integrity(&key).is_ok()));

    measure("decode (validates FINGERPRINT)", iters, || {
        black_box(Message::decode(black_box(&packet)).is_ok());
    });
    measure("decode + read ICE attributes", iters, || {
        let msg = Message::decode(black_box(&packet)).expect("valid");
        black_box((
            msg.username(),
            msg.priority(),
            msg.ice_controlling(),
            msg.use_candidate(),
        ));
    });
    let mut buf = Vec::with_capacity(128);
    measure("encode (reused buffer, MI+FP)", iters, || {
        buf = connectivity_check(std::mem::take(&mut buf), black_box(&key));
        black_box(buf.len());
    });
    let msg = Message::decode(&packet).expect("valid");
    measure("check_integrity (HMAC-SHA1)", iters, || {
        black_box(black_box(&msg).check_integrity(black_box(&key)).is_ok());
    });
    let covered = &packet[..packet.len() - 8];
    let stored = u32::from_be_bytes(packet[packet.len() - 4..].try_into().expect("4 bytes"));
    measure("fingerprint check (CRC-32)", iters, || {
        black_box(fingerprint(black_box(covered)) == stored);
    });
}
