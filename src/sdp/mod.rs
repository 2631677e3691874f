//! SDP for a call (RFC 8866 syntax by `sdp-types`; the negotiation is
//! ours): one audio stream, RFC 3264 offer/answer, ICE attributes per
//! RFC 8839, Opus per RFC 7587, telephone-event per RFC 4733, G.711 as the
//! fall-back.
//!
//! Owns: reading and writing session descriptions and deciding what a
//! negotiation yields. Must not touch: sockets, ICE state, media — the call
//! layer turns a [`Negotiated`] into an ICE session and an RTP stream.

pub mod codec;
pub mod description;
pub mod negotiate;

pub use codec::{Codec, CodecName};
pub use description::{AudioDescription, Direction, IceDescription, SdpError, SessionDescription};
pub use negotiate::{answer, apply_answer, offer, LocalMedia, Negotiated};
