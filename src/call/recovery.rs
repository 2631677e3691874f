//! What a call does when its media path breaks mid-call: ICE consent is
//! lost (RFC 7675), typically because a NAT forgot its mappings.
//!
//! Both sides first re-open their signalling flows (a keep-alive, which
//! also re-registers from a new NAT mapping). The caller then restarts ICE
//! by re-INVITE (RFC 8445 §9) — after a pause in which the callee, who
//! noticed at the same moment, re-registers, since the re-INVITE reaches
//! it through that registration (its GRUU). A refused restart is tried
//! again; a path still broken after [`GIVE_UP`] ends the call, on either
//! side (a caller that vanished never sends the restart).
//!
//! Plain state, instants in and out: the application's call loops own the
//! timers and send what this decides.

use std::time::{Duration, Instant};

/// After the loss, how long the caller waits before its restart re-INVITE
/// (the callee re-registers in 2–3 round trips).
pub const RESTART_SETTLE: Duration = Duration::from_millis(1000);
/// A refused restart re-INVITE is sent again this much later. The usual
/// refusal is our own 503: a stream connection to the proxy that died
/// with the NAT's mappings.
pub const RESTART_RETRY: Duration = Duration::from_millis(300);
/// After a 491 (both sides re-INVITEd), what RFC 3261 §14.1 asks of the
/// Call-ID's owner, which the caller is.
pub const RESTART_RETRY_GLARE: Duration = Duration::from_millis(2100);
/// Restart re-INVITEs sent for one loss, at most.
pub const RESTART_TRIES: u32 = 3;
/// A path not back this long after the loss ends the call.
pub const GIVE_UP: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRecovery {
    /// Whether we restart (the caller) or wait for the restart.
    restarts: bool,
    lost_at: Option<Instant>,
    restart_at: Option<Instant>,
    /// Restart re-INVITEs sent since the loss.
    tries: u32,
    /// A restart re-INVITE is out, its answer not in yet.
    in_flight: bool,
}

/// What a refused restart leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a restart of ours: nothing to do.
    NotOurs,
    RetryAt(Instant),
    /// Every try refused: wait for [`PathRecovery::give_up_at`].
    Exhausted,
}

impl PathRecovery {
    pub fn new(caller: bool) -> Self {
        PathRecovery {
            restarts: caller,
            lost_at: None,
            restart_at: None,
            tries: 0,
            in_flight: false,
        }
    }

    /// Whether the path is lost and not yet repaired.
    pub fn is_lost(&self) -> bool {
        self.lost_at.is_some()
    }

    /// The path broke at `now`: a caller's restart is due after the
    /// settle. Repeated reports of the same loss change nothing.
    pub fn on_lost(&mut self, now: Instant) {
        if self.lost_at.is_some() {
            return;
        }
        self.lost_at = Some(now);
        self.tries = 0;
        self.in_flight = false;
        self.restart_at = self.restarts.then_some(now + RESTART_SETTLE);
    }

    /// When the next restart re-INVITE should go out.
    pub fn restart_at(&self) -> Option<Instant> {
        self.restart_at
    }

    /// The restart re-INVITE went out (or was started by hand: `in_flight`
    /// then marks the answer to wait for, lost or not).
    pub fn on_restart_sent(&mut self) {
        self.restart_at = None;
        self.tries += 1;
        self.in_flight = true;
    }

    /// Preparing the restart failed locally (no candidates, the ICE task
    /// gone): nothing went out, and nothing more will.
    pub fn on_restart_failed(&mut self) {
        self.restart_at = None;
    }

    /// Whether a re-INVITE's final answer is for our restart.
    pub fn restart_in_flight(&self) -> bool {
        self.in_flight
    }

    /// Our restart re-INVITE was answered `code` (≥ 300) at `now`.
    pub fn on_refused(&mut self, now: Instant, code: u16) -> Refused {
        if !std::mem::take(&mut self.in_flight) || self.lost_at.is_none() {
            return Refused::NotOurs;
        }
        if self.tries >= RESTART_TRIES {
            return Refused::Exhausted;
        }
        let wait = if code == 491 {
            RESTART_RETRY_GLARE
        } else {
            RESTART_RETRY
        };
        let at = now + wait;
        self.restart_at = Some(at);
        Refused::RetryAt(at)
    }

    /// The restart's answer was accepted (ours) or given (theirs): ICE
    /// checks again; whether they succeed is [`on_restored`]'s.
    ///
    /// [`on_restored`]: Self::on_restored
    pub fn on_restart_answered(&mut self) {
        self.in_flight = false;
    }

    /// A pair is selected again: the path is back.
    pub fn on_restored(&mut self) {
        *self = PathRecovery::new(self.restarts);
    }

    /// The call is being hung up for want of a path: nothing more to
    /// restart or wait for.
    pub fn on_given_up(&mut self) {
        *self = PathRecovery::new(self.restarts);
    }

    /// When to hang up if the path is still not back.
    pub fn give_up_at(&self) -> Option<Instant> {
        self.lost_at.map(|at| at + GIVE_UP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_restarts_after_the_settle_and_retries_refusals() {
        let t0 = Instant::now();
        let mut r = PathRecovery::new(true);
        assert!(!r.is_lost());
        assert_eq!(r.restart_at(), None);
        r.on_lost(t0);
        r.on_lost(t0 + Duration::from_millis(300));
        assert_eq!(r.restart_at(), Some(t0 + RESTART_SETTLE));
        assert_eq!(r.give_up_at(), Some(t0 + GIVE_UP));

        let t1 = t0 + RESTART_SETTLE;
        r.on_restart_sent();
        assert_eq!(r.restart_at(), None);
        assert_eq!(r.on_refused(t1, 503), Refused::RetryAt(t1 + RESTART_RETRY));
        // A refusal nobody waits for (a hold, say) is not ours.
        assert_eq!(r.on_refused(t1, 503), Refused::NotOurs);
        r.on_restart_sent();
        assert_eq!(
            r.on_refused(t1, 491),
            Refused::RetryAt(t1 + RESTART_RETRY_GLARE)
        );
        r.on_restart_sent();
        assert_eq!(r.on_refused(t1, 500), Refused::Exhausted);
        assert_eq!(r.restart_at(), None);
        assert!(r.is_lost(), "the give-up still stands");

        r.on_restored();
        assert_eq!(r, PathRecovery::new(true));
        // The next loss starts over.
        let t2 = t1 + Duration::from_secs(60);
        r.on_lost(t2);
        assert_eq!(r.restart_at(), Some(t2 + RESTART_SETTLE));
    }

    #[test]
    fn the_callee_waits_for_the_restart_then_gives_up() {
        let t0 = Instant::now();
        let mut r = PathRecovery::new(false);
        r.on_lost(t0);
        assert!(r.is_lost());
        assert_eq!(r.restart_at(), None);
        assert_eq!(r.give_up_at(), Some(t0 + GIVE_UP));
        r.on_restored();
        assert_eq!(r.give_up_at(), None);
    }
}
