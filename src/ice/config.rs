//! Tunables of the ICE agent, with defaults taken from the RFCs where they
//! give one, and the reason where we deviate.

use std::time::Duration;

use crate::stun::RetransmitPolicy;

/// How the controlling agent nominates (RFC 8445 §8.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Nomination {
    /// Check, then nominate the best valid pair with a second check carrying
    /// USE-CANDIDATE. RFC 8445's only procedure.
    #[default]
    Regular,
    /// RFC 5245 §8.1.1.2: USE-CANDIDATE on every check; the highest-priority
    /// nominated pair wins. Faster by one RTT, kept for old peers that expect it.
    Aggressive,
}

#[derive(Clone, Debug)]
pub struct IceConfig {
    /// Pacing of new checks and gathering transactions (RFC 8445 §14.2).
    /// 50 ms is the RFC's default, and the value a peer that does not signal
    /// `a=ice-pacing` assumes; both sides must use the larger value, so a
    /// smaller default would only hold against ourselves.
    pub ta: Duration,
    /// Retransmission of connectivity checks. RFC 8445 §14.3 sets RTO ≥ 500 ms;
    /// we keep 500 ms but cap each interval at 1.6 s and wait 4·RTO after the
    /// last of 7 transmissions, so a dead pair fails after ~9.9 s rather than
    /// RFC 8489's 39.5 s: a caller waiting on a silent phone gives up sooner.
    pub check_retransmit: RetransmitPolicy,
    /// Retransmission of Binding requests to STUN servers while gathering.
    /// Gathering blocks the SDP offer, so a dead server is given 3.5 s
    /// (sends at 0, 0.5 and 1.5 s, then 4·RTO of silence).
    pub gather_retransmit: RetransmitPolicy,
    /// Consent checks (RFC 7675): sent at 0 and 0.5 s, lost at 1.5 s.
    pub consent_retransmit: RetransmitPolicy,
    pub nomination: Nomination,
    /// Regular nomination waits this long after the first valid pair for a
    /// higher-priority pair still being checked; with none pending it
    /// nominates at once. RFC 8445 leaves the wait to the implementation.
    pub nomination_delay: Duration,
    /// RFC 7675 §5.1: 5 s on average, randomised over [0.8, 1.2]·interval.
    pub consent_interval: Duration,
    /// After a consent check goes unanswered the pair is disconnected and
    /// checked this often until it answers or consent expires.
    pub consent_retry_interval: Duration,
    /// RFC 7675 §5.1: consent expires 30 s after the last answered check.
    pub consent_timeout: Duration,
    /// Number of components (1, or 2 for RTP + RTCP without rtcp-mux).
    pub components: u16,
    /// RFC 8445 §6.1.2.5 asks for a limit on the number of pairs; 100 is the
    /// value it names.
    pub max_pairs: usize,
}

impl Default for IceConfig {
    fn default() -> Self {
        IceConfig {
            ta: Duration::from_millis(50),
            check_retransmit: RetransmitPolicy {
                rto: Duration::from_millis(500),
                max_rto: Duration::from_millis(1600),
                max_transmissions: 7,
                last_wait_factor: 4,
            },
            gather_retransmit: RetransmitPolicy {
                rto: Duration::from_millis(500),
                max_rto: Duration::from_millis(1600),
                max_transmissions: 3,
                last_wait_factor: 4,
            },
            consent_retransmit: RetransmitPolicy {
                rto: Duration::from_millis(500),
                max_rto: Duration::from_millis(500),
                max_transmissions: 2,
                last_wait_factor: 2,
            },
            nomination: Nomination::Regular,
            nomination_delay: Duration::from_millis(250),
            consent_interval: Duration::from_secs(5),
            consent_retry_interval: Duration::from_millis(500),
            consent_timeout: Duration::from_secs(30),
            components: 1,
            max_pairs: 100,
        }
    }
}
