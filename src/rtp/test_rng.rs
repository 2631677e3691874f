//! A tiny seeded xorshift64 generator for deterministic tests: it stands in
//! for the injected `RngCore` and drives the mutation loop.
//!
//! Test-only; nothing outside `#[cfg(test)]` code may use it.

use rand::RngCore;

pub(super) struct XorShift(u64);

impl XorShift {
    /// Any seed works; zero (xorshift's fixed point) is mapped away.
    pub(super) fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A value in `0..bound` (bound > 0); the slight modulo bias is
    /// irrelevant to tests.
    pub(super) fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

impl RngCore for XorShift {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
