//! Client transaction timing (RFC 8489 §6.2.1). The caller keeps the request
//! bytes and matches responses; this only says when to (re)send and when to give up.

use std::time::{Duration, Instant};

/// Retransmission parameters for unreliable transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitPolicy {
    /// Initial retransmission timeout.
    pub rto: Duration,
    /// Cap on each retransmission interval (the RFC has none; `Duration::MAX`).
    pub max_rto: Duration,
    /// Rc: total number of transmissions, the first one included (0 acts as 1).
    pub max_transmissions: u32,
    /// Rm: after the last transmission, wait `Rm * rto` (the initial rto,
    /// not the doubled one) before declaring a timeout.
    pub last_wait_factor: u32,
}

impl RetransmitPolicy {
    /// RFC 8489 defaults: RTO 500 ms, no cap, Rc = 7, Rm = 16. Sends at 0,
    /// 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s and times out at 39.5 s.
    pub fn rfc8489() -> Self {
        RetransmitPolicy {
            rto: Duration::from_millis(500),
            max_rto: Duration::MAX,
            max_transmissions: 7,
            last_wait_factor: 16,
        }
    }

    /// Time from the first transmission to the timeout, if every
    /// transmission goes out exactly when due.
    pub fn total_timeout(&self) -> Duration {
        let mut interval = self.rto.min(self.max_rto);
        let mut total = Duration::ZERO;
        for _ in 1..self.transmissions() {
            if total == Duration::MAX {
                break;
            }
            total = total.saturating_add(interval);
            interval = self.next_interval(interval);
        }
        total.saturating_add(self.last_wait())
    }

    fn transmissions(&self) -> u32 {
        self.max_transmissions.max(1)
    }

    fn next_interval(&self, interval: Duration) -> Duration {
        interval.saturating_mul(2).min(self.max_rto)
    }

    fn last_wait(&self) -> Duration {
        self.rto.saturating_mul(self.last_wait_factor)
    }
}

impl Default for RetransmitPolicy {
    fn default() -> Self {
        Self::rfc8489()
    }
}

/// What the caller must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionEvent {
    /// Send (or resend) the request.
    Transmit,
    /// Give up: no response will be accepted any more.
    TimedOut,
}

/// Timer state of one client transaction.
#[derive(Clone, Debug)]
pub struct ClientTransaction {
    policy: RetransmitPolicy,
    /// When the next transmission, or after the last one the timeout, is due.
    deadline: Instant,
    interval: Duration,
    transmissions: u32,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    done: bool,
}

impl ClientTransaction {
    /// The first transmission is due at `now`.
    pub fn new(now: Instant, policy: RetransmitPolicy) -> Self {
        ClientTransaction {
            policy,
            deadline: now,
            interval: policy.rto.min(policy.max_rto),
            transmissions: 0,
            first_sent: None,
            last_sent: None,
            done: false,
        }
    }

    /// Returns `Transmit` when a (re)transmission is due at `now` (at most one
    /// per call), `TimedOut` once when Rm*rto after the last transmission has
    /// passed, `None` otherwise. Intervals double each time, capped by max_rto.
    ///
    /// Later deadlines are counted from `now`, the moment the caller actually
    /// sends, so a late timer shifts the schedule instead of bunching resends.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TransactionEvent> {
        if self.done || now < self.deadline {
            return None;
        }
        if self.transmissions < self.policy.transmissions() {
            self.record_transmission(now);
            return Some(TransactionEvent::Transmit);
        }
        self.done = true;
        Some(TransactionEvent::TimedOut)
    }

    fn record_transmission(&mut self, now: Instant) {
        self.transmissions += 1;
        self.first_sent.get_or_insert(now);
        self.last_sent = Some(now);
        let wait = if self.transmissions < self.policy.transmissions() {
            let wait = self.interval;
            self.interval = self.policy.next_interval(self.interval);
            wait
        } else {
            self.policy.last_wait()
        };
        // An absurd policy (Duration::MAX rto) must not overflow Instant.
        self.deadline = now
            .checked_add(wait)
            .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365)))
            .unwrap_or(now);
    }

    /// When `handle_timeout` next has something to do; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.done).then_some(self.deadline)
    }

    /// Stop the timers, e.g. because a response arrived.
    pub fn complete(&mut self) {
        self.done = true;
    }

    pub fn transmissions(&self) -> u32 {
        self.transmissions
    }

    pub fn first_sent(&self) -> Option<Instant> {
        self.first_sent
    }

    pub fn last_sent(&self) -> Option<Instant> {
        self.last_sent
    }

    /// Timed out or completed.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a transaction in virtual time, jumping from deadline to deadline,
    /// and returns the offsets (ms) of each event.
    fn schedule(policy: RetransmitPolicy) -> Vec<(u128, TransactionEvent)> {
        let t0 = Instant::now();
        let mut txn = ClientTransaction::new(t0, policy);
        let mut events = Vec::new();
        while let Some(at) = txn.poll_timeout() {
            assert_eq!(
                txn.handle_timeout(at - Duration::from_nanos(1)),
                None,
                "fired early"
            );
            let ev = txn
                .handle_timeout(at)
                .expect("deadline must produce an event");
            events.push(((at - t0).as_millis(), ev));
            assert!(events.len() < 100, "runaway schedule");
        }
        events
    }

    fn transmit_times(events: &[(u128, TransactionEvent)]) -> Vec<u128> {
        events
            .iter()
            .filter(|(_, e)| *e == TransactionEvent::Transmit)
            .map(|(t, _)| *t)
            .collect()
    }

    #[test]
    fn rfc8489_default_schedule() {
        let events = schedule(RetransmitPolicy::default());
        assert_eq!(
            transmit_times(&events),
            [0, 500, 1500, 3500, 7500, 15500, 31500]
        );
        assert_eq!(events.last(), Some(&(39_500, TransactionEvent::TimedOut)));
        assert_eq!(events.len(), 8);
        assert_eq!(
            RetransmitPolicy::default().total_timeout(),
            Duration::from_millis(39_500)
        );
    }

    #[test]
    fn cap_limits_each_interval() {
        let policy = RetransmitPolicy {
            max_rto: Duration::from_secs(2),
            ..RetransmitPolicy::rfc8489()
        };
        let events = schedule(policy);
        assert_eq!(
            transmit_times(&events),
            [0, 500, 1500, 3500, 5500, 7500, 9500]
        );
        assert_eq!(events.last(), Some(&(17_500, TransactionEvent::TimedOut)));
        assert_eq!(policy.total_timeout(), Duration::from_millis(17_500));
    }

    #[test]
    fn single_transmission_policy() {
        let policy = RetransmitPolicy {
            rto: Duration::from_millis(100),
            max_rto: Duration::MAX,
            max_transmissions: 0,
            last_wait_factor: 3,
        };
        let events = schedule(policy);
        assert_eq!(
            events,
            [
                (0, TransactionEvent::Transmit),
                (300, TransactionEvent::TimedOut)
            ]
        );
        assert_eq!(policy.total_timeout(), Duration::from_millis(300));
    }

    #[test]
    fn one_event_per_call_and_done_after_timeout() {
        let t0 = Instant::now();
        let mut txn = ClientTransaction::new(t0, RetransmitPolicy::default());
        assert_eq!(txn.first_sent(), None);
        let late = t0 + Duration::from_secs(100);
        assert_eq!(txn.handle_timeout(late), Some(TransactionEvent::Transmit));
        assert_eq!(
            txn.handle_timeout(late),
            None,
            "next resend counts from the actual send"
        );
        assert_eq!(txn.transmissions(), 1);
        assert_eq!(txn.first_sent(), Some(late));
        assert_eq!(txn.poll_timeout(), Some(late + Duration::from_millis(500)));
        let mut now = late;
        while let Some(at) = txn.poll_timeout() {
            now = at;
            txn.handle_timeout(now);
        }
        assert!(txn.is_done());
        assert_eq!(txn.handle_timeout(now + Duration::from_secs(1000)), None);
        assert_eq!(txn.last_sent(), Some(late + Duration::from_millis(31_500)));
    }

    #[test]
    fn complete_stops_timers() {
        let t0 = Instant::now();
        let mut txn = ClientTransaction::new(t0, RetransmitPolicy::default());
        txn.handle_timeout(t0);
        txn.complete();
        assert!(txn.is_done());
        assert_eq!(txn.poll_timeout(), None);
        assert_eq!(txn.handle_timeout(t0 + Duration::from_secs(60)), None);
    }
}
