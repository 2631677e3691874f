//! Candidate pairs and their check states (RFC 8445 §6.1.2).

use std::time::Duration;

use super::candidate::Candidate;
use crate::stun::TransactionId;

/// RFC 8445 §6.1.2.6 pair states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PairState {
    Frozen,
    Waiting,
    InProgress,
    Succeeded,
    Failed,
}

impl PairState {
    pub fn as_str(self) -> &'static str {
        match self {
            PairState::Frozen => "frozen",
            PairState::Waiting => "waiting",
            PairState::InProgress => "in-progress",
            PairState::Succeeded => "succeeded",
            PairState::Failed => "failed",
        }
    }

    /// Still able to produce a valid pair.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            PairState::Frozen | PairState::Waiting | PairState::InProgress
        )
    }
}

/// RFC 8445 §6.1.2.3: 2^32·MIN(G,D) + 2·MAX(G,D) + (G>D ? 1 : 0), where G is
/// the controlling agent's candidate priority.
pub fn pair_priority(controlling_priority: u32, controlled_priority: u32) -> u64 {
    let g = u64::from(controlling_priority);
    let d = u64::from(controlled_priority);
    (1u64 << 32) * g.min(d) + 2 * g.max(d) + u64::from(g > d)
}

/// One entry of the check list (or of the valid list, for pairs built from a
/// peer-reflexive mapped address).
#[derive(Clone, Debug)]
pub(crate) struct CandidatePair {
    pub local: usize,
    pub remote: usize,
    pub component: u16,
    pub priority: u64,
    pub foundation: String,
    pub state: PairState,
    /// In the valid list (§7.2.5.3.2).
    pub valid: bool,
    pub nominated: bool,
    /// Controlled side: a USE-CANDIDATE check arrived before this pair succeeded.
    pub nominate_on_success: bool,
    /// Controlling side: a check with USE-CANDIDATE is in flight.
    pub nominating: bool,
    /// Only in the valid list, never scheduled as a check (§7.2.5.3.2).
    pub valid_only: bool,
    pub current_transaction: Option<TransactionId>,
    pub rtt: Option<Duration>,
    pub checks_sent: u32,
    pub responses_received: u32,
}

impl CandidatePair {
    pub fn new(
        local_index: usize,
        local: &Candidate,
        remote_index: usize,
        remote: &Candidate,
        controlling: bool,
    ) -> Self {
        CandidatePair {
            local: local_index,
            remote: remote_index,
            component: local.component,
            priority: priority_for(local, remote, controlling),
            foundation: format!("{}:{}", local.foundation, remote.foundation),
            state: PairState::Frozen,
            valid: false,
            nominated: false,
            nominate_on_success: false,
            nominating: false,
            valid_only: false,
            current_transaction: None,
            rtt: None,
            checks_sent: 0,
            responses_received: 0,
        }
    }
}

pub(crate) fn priority_for(local: &Candidate, remote: &Candidate, controlling: bool) -> u64 {
    if controlling {
        pair_priority(local.priority, remote.priority)
    } else {
        pair_priority(remote.priority, local.priority)
    }
}

/// A read-only snapshot of a pair for UIs and call reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairReport {
    pub local: Candidate,
    pub remote: Candidate,
    pub component: u16,
    pub priority: u64,
    pub state: PairState,
    pub valid: bool,
    pub nominated: bool,
    pub rtt: Option<Duration>,
    pub checks_sent: u32,
    pub responses_received: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_priority_is_symmetric_between_agents() {
        // Both agents must compute the same number for the same pair (§6.1.2.3).
        let (g, d) = (2_130_706_431, 1_694_498_815);
        let p = pair_priority(g, d);
        assert_eq!(p, (1u64 << 32) * 1_694_498_815 + 2 * 2_130_706_431 + 1);
        assert_eq!(
            pair_priority(d, g),
            (1u64 << 32) * 1_694_498_815 + 2 * 2_130_706_431
        );
    }
}
