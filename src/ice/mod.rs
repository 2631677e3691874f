//! ICE (RFC 8445): candidates, check lists, nomination, consent freshness.
//!
//! Owns: the connectivity-check state machine of one data stream, as a
//! sans-IO agent (`IceAgent`): datagrams and `Instant`s in; datagrams to send,
//! a next timeout and events out.
//! Must not touch: sockets, tokio, clocks or global randomness (the RNG is
//! injected), SDP text (the `sdp` module maps candidates to `a=candidate`),
//! or TURN allocations (relayed candidates are fed in by the TURN layer, and
//! transmits from a relayed base are routed through it by the driver).
//!
//! Deliberate deviations from the RFCs are listed in `docs/ice.md`.

mod agent;
mod candidate;
mod config;
mod pair;
mod transport;

pub use agent::{ConnectionState, IceAgent, IceCredentials, IceEvent, IceStats, Transmit};
pub use candidate::{
    candidate_priority, foundation, host_local_preference, Candidate, CandidateType,
};
pub use config::{IceConfig, Nomination};
pub use pair::{pair_priority, PairReport, PairState};
pub use transport::{IceTransport, Received, RelayEvent, SendError};

pub mod testbed;

#[cfg(test)]
mod tests;
