//! TURN (RFC 8656, and RFC 5766 servers) for icephone.
//!
//! Owns: ChannelData and stream framing, the sans-IO TURN client (one
//! allocation on one server) and the sans-IO TURN server core behind
//! `icephone serve`.
//!
//! Must not touch: ICE (the ICE layer drives a client; TURN knows nothing of
//! candidates), sockets, clocks or tokio. Builds on `stun` for the wire format.

mod channel;
mod server;

pub use channel::{
    is_channel_data, ChannelData, ChannelDataError, FramingError, StreamDecoder, CHANNEL_HEADER,
    CHANNEL_MAX, CHANNEL_MAX_RFC5766, CHANNEL_MIN,
};
pub use server::{
    ClientLink, ClientTransport, EndReason, RelayAllocError, RelayAllocator, ServerEvent,
    ServerOutput, TurnServer, TurnServerConfig, TurnServerStats,
};

mod client;

pub use client::{
    TurnClient, TurnClientConfig, TurnClientStats, TurnError, TurnEvent, TurnInput, TurnState,
    TurnTransport,
};
