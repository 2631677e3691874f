//! STUN (RFC 8489) for icephone.
//!
//! Owns: the STUN wire format (zero-copy decoding, building), credentials and
//! message integrity/fingerprint, client transaction retransmission timing, a
//! Binding responder and RFC 5780 NAT behaviour discovery.
//!
//! Must not touch: ICE (candidates, pairs, roles: the ICE agent builds on
//! this), TURN allocation state, sockets, clocks or tokio. Everything here is
//! sans-IO: time is passed in as `Instant`, randomness as `&mut impl RngCore`,
//! and datagrams go in and out as byte slices.

mod attr;
mod behavior;
mod error;
mod integrity;
mod message;
mod server;
mod transaction;

pub use attr::{
    attr_type, password_algorithms, password_algorithms_value, unknown_attribute_types,
    unknown_attributes_value, AddressFamily, Attribute, PasswordAlgorithm, PasswordAlgorithms,
};
pub use behavior::{BehaviorDiscovery, BehaviorError, BehaviorReport, NatFiltering, NatMapping};
pub use error::StunError;
pub use integrity::{fingerprint, long_term_key, short_term_key, user_hash};
pub use message::{
    error_response, is_stun, response_builder, Class, Message, MessageBuilder, Method,
    TransactionId, MAGIC_COOKIE,
};
pub use server::{BindingServer, ServerStats, ServerTransmit};
pub use transaction::{ClientTransaction, RetransmitPolicy, TransactionEvent};
