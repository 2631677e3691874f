//! SIP (RFC 3261): the message layer, transactions, digest authentication,
//! registration and dialogs, as sans-IO cores.
//!
//! Owns: SIP syntax and SIP state. Must not touch: sockets, tokio or the
//! clock (the driver in `net` feeds bytes and instants in), and anything of
//! media — an SDP body is opaque bytes here.

pub mod digest;
pub mod transaction;
