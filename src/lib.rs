//! icephone: a desktop SIP softphone with its own ICE, STUN and TURN stack.
//!
//! Protocol cores (`stun`, `ice`) are sans-IO state machines; `net` is the
//! tokio driver that owns sockets and timers; `app` is what a person runs.
//! `sim` is the deterministic NAT network the cores are tested on.

pub mod app;
pub mod audio;
pub mod call;
pub mod ice;
pub mod net;
pub mod rtp;
pub mod sdp;
pub mod server;
pub mod sim;
pub mod sip;
pub mod stun;
pub mod turn;
