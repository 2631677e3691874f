//! A call's media side: joins SDP offer/answer (`sdp`) with an ICE session
//! (`ice` through the `net` driver). SIP carries the bytes this produces;
//! the audio path joins here next.
//!
//! Owns: turning gathered candidates into an offer or answer and a
//! negotiation into ICE commands. Must not touch: SIP (it sees only SDP
//! bytes) or protocol decisions of the cores.

pub mod audio;
pub mod jitter;
pub mod media;
pub mod recovery;

pub use media::{CallMedia, MediaError, MediaOptions};
pub use recovery::PathRecovery;
