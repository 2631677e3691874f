//! Audio for calls: where the microphone's samples come from and where the
//! far end's go (sound devices through cpal; files, tones and silence for
//! tests and servers), resampling, the Opus codec, and the measurements
//! tests make on what arrived.
//!
//! Owns: 48 kHz mono sample frames and their encoding. Must not touch:
//! RTP, sockets or timing — the call's media task decides when a frame is
//! due.

pub mod analysis;
pub mod codec;
pub mod device;
pub mod g711;
pub mod io;
pub mod resample;

/// Every frame inside icephone is 48 kHz mono (RFC 7587 clocks Opus at
/// 48 kHz whatever it carries).
pub const RATE: u32 = 48_000;
/// 20 ms at 48 kHz.
pub const FRAME: usize = 960;
