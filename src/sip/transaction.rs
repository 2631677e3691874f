//! The four transaction state machines of RFC 3261 §17, with the RFC 6026
//! "Accepted" states. Each one holds the bytes it may have to send again
//! and its named timers (A–K, L, M); the transaction layer
//! (`sip::layer`) matches messages to them and builds the ACK a client
//! INVITE transaction sends for a failure.
//!
//! Shape: `Instant`s in, `poll_transmit` / `poll_event` / `poll_timeout`
//! out; no clock reads, no sockets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// T1, T2 and T4 of RFC 3261 §17.1.1.1 and Table 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipTimers {
    /// RTT estimate: the first retransmission interval (500 ms).
    pub t1: Duration,
    /// The cap on non-INVITE and response retransmission intervals (4 s).
    pub t2: Duration,
    /// How long a message may linger in the network (5 s).
    pub t4: Duration,
}

impl Default for SipTimers {
    fn default() -> Self {
        SipTimers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl SipTimers {
    /// 64·T1: timers B, F, H, J, L and M.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionKind {
    Invite,
    NonInvite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard yet.
    Calling,
    /// Non-INVITE sent, nothing heard yet.
    Trying,
    Proceeding,
    /// INVITE: a 2xx arrived; later 2xx still reach the dialog (RFC 6026).
    Accepted,
    Completed,
    Terminated,
}

/// What the transaction user hears from a client transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Timer B or F: no final response in time (the TU acts as on a 408).
    TimedOut,
    Terminated,
}

/// What to do with a response that matched this transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseVerdict {
    /// Hand it to the transaction user.
    Deliver,
    /// Hand it to the TU, and send the ACK for it: the layer builds the
    /// ACK and passes it to [`ClientTransaction::send_ack`].
    DeliverAndAck,
    /// A retransmitted final response: the ACK already sent goes again,
    /// the TU hears nothing.
    Absorb,
}

#[derive(Debug)]
pub struct ClientTransaction {
    kind: TransactionKind,
    reliable: bool,
    timers: SipTimers,
    state: ClientState,
    request: Vec<u8>,
    ack: Option<Vec<u8>>,
    /// Timer A (INVITE) or E (non-INVITE), and its current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B or F.
    give_up: Option<Instant>,
    /// Timer D, K or M: when a Completed/Accepted transaction ends.
    linger: Option<Instant>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
}

impl ClientTransaction {
    /// Starts the transaction: `request` goes out at once.
    pub fn new(
        now: Instant,
        kind: TransactionKind,
        reliable: bool,
        timers: SipTimers,
        request: Vec<u8>,
    ) -> Self {
        let retransmit = (!reliable).then(|| (now + timers.t1, timers.t1));
        let state = match kind {
            TransactionKind::Invite => ClientState::Calling,
            TransactionKind::NonInvite => ClientState::Trying,
        };
        let mut t = ClientTransaction {
            kind,
            reliable,
            timers,
            state,
            request,
            ack: None,
            retransmit,
            give_up: Some(now + timers.transaction_timeout()),
            linger: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        t.transmits.push_back(t.request.clone());
        t
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn kind(&self) -> TransactionKind {
        self.kind
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// A response with status `code` matched this transaction.
    pub fn handle_response(&mut self, now: Instant, code: u16) -> ResponseVerdict {
        use ClientState::*;
        match (self.kind, self.state, code) {
            // Not a status code: the parser refuses these, so never here.
            (_, Terminated, _) | (_, _, 0..=99) => ResponseVerdict::Absorb,
            (_, Calling | Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                match self.kind {
                    // Timer A stops; timer B only guards Calling.
                    TransactionKind::Invite => {
                        self.retransmit = None;
                        self.give_up = None;
                    }
                    // Timer E keeps going, now every T2 (§17.1.2.2).
                    TransactionKind::NonInvite => {
                        if let Some((_, interval)) = &mut self.retransmit {
                            *interval = self.timers.t2;
                        }
                    }
                }
                ResponseVerdict::Deliver
            }
            (_, Completed | Accepted, 100..=199) => ResponseVerdict::Absorb,
            (TransactionKind::Invite, Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.stop_sending();
                self.linger = Some(now + self.timers.transaction_timeout()); // timer M
                ResponseVerdict::Deliver
            }
            // RFC 6026 §7.2: every 2xx retransmission reaches the dialog,
            // which answers it with its ACK.
            (TransactionKind::Invite, Accepted, 200..=299) => ResponseVerdict::Deliver,
            (TransactionKind::Invite, Calling | Proceeding, _) => {
                self.state = Completed;
                self.stop_sending();
                let d = if self.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32).max(self.timers.transaction_timeout() / 2)
                };
                self.linger = Some(now + d); // timer D
                ResponseVerdict::DeliverAndAck
            }
            (TransactionKind::Invite, Completed, _) => {
                if let Some(ack) = &self.ack {
                    self.transmits.push_back(ack.clone());
                }
                ResponseVerdict::Absorb
            }
            (TransactionKind::Invite, Accepted | Trying, _) => ResponseVerdict::Absorb,
            (TransactionKind::NonInvite, Trying | Proceeding, _) => {
                self.state = Completed;
                self.stop_sending();
                let k = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.linger = Some(now + k); // timer K
                ResponseVerdict::Deliver
            }
            (TransactionKind::NonInvite, _, _) => ResponseVerdict::Absorb,
        }
    }

    /// The ACK for the failure response just delivered (§17.1.1.3).
    pub fn send_ack(&mut self, ack: Vec<u8>) {
        self.transmits.push_back(ack.clone());
        self.ack = Some(ack);
    }

    /// The transport failed to send (§17.1.4): the TU hears a timeout.
    pub fn transport_error(&mut self) {
        if !self.is_terminated() {
            self.events.push_back(ClientEvent::TimedOut);
            self.terminate();
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                self.transmits.push_back(self.request.clone());
                let next = match self.kind {
                    TransactionKind::Invite => interval.saturating_mul(2),
                    TransactionKind::NonInvite => {
                        if self.state == ClientState::Proceeding {
                            self.timers.t2
                        } else {
                            interval.saturating_mul(2).min(self.timers.t2)
                        }
                    }
                };
                self.retransmit = Some((now + next, next));
            }
        }
        if self.give_up.is_some_and(|at| now >= at) {
            self.events.push_back(ClientEvent::TimedOut);
            self.terminate();
        }
        if self.linger.is_some_and(|at| now >= at) {
            self.terminate();
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.retransmit.map(|(at, _)| at), self.give_up, self.linger]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn stop_sending(&mut self) {
        self.retransmit = None;
        self.give_up = None;
    }

    fn terminate(&mut self) {
        self.stop_sending();
        self.linger = None;
        self.state = ClientState::Terminated;
        self.events.push_back(ClientEvent::Terminated);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, no response yet: retransmissions are absorbed.
    Trying,
    Proceeding,
    /// INVITE answered 2xx: the 2xx goes again until the ACK (RFC 6026).
    Accepted,
    Completed,
    /// INVITE failure ACKed: stray ACKs absorbed until timer I.
    Confirmed,
    Terminated,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// Timer H (failure) or L (2xx) ran out with no ACK. For a 2xx the
    /// dialog should end the call with a BYE (§13.3.1.4).
    NoAck,
    Terminated,
}

#[derive(Debug)]
pub struct ServerTransaction {
    kind: TransactionKind,
    reliable: bool,
    timers: SipTimers,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    /// Timer G, or the 2xx retransmission of §13.3.1.4: (due, interval).
    retransmit: Option<(Instant, Duration)>,
    /// Timer H or L: no ACK by then.
    ack_deadline: Option<Instant>,
    /// Timer I or J: when the transaction ends.
    linger: Option<Instant>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<ServerEvent>,
}

impl ServerTransaction {
    /// A new request arrived. An INVITE transaction starts in Proceeding
    /// (the layer sends 100 Trying at once through [`Self::respond`]).
    pub fn new(kind: TransactionKind, reliable: bool, timers: SipTimers) -> Self {
        ServerTransaction {
            kind,
            reliable,
            timers,
            state: match kind {
                TransactionKind::Invite => ServerState::Proceeding,
                TransactionKind::NonInvite => ServerState::Trying,
            },
            last_response: None,
            retransmit: None,
            ack_deadline: None,
            linger: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn kind(&self) -> TransactionKind {
        self.kind
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// The request came again: the last response goes again (if any).
    pub fn handle_retransmission(&mut self) {
        use ServerState::*;
        match self.state {
            Proceeding | Completed => {
                if let Some(r) = &self.last_response {
                    self.transmits.push_back(r.clone());
                }
            }
            // Accepted: the 2xx has its own schedule; Trying, Confirmed:
            // nothing to resend.
            Trying | Accepted | Confirmed | Terminated => {}
        }
    }

    /// The TU answers with status `code`, already encoded as `response`.
    /// Returns false (and sends nothing) when the transaction can no longer
    /// respond, e.g. after a final response.
    pub fn respond(&mut self, now: Instant, code: u16, response: Vec<u8>) -> bool {
        use ServerState::*;
        if !matches!(self.state, Trying | Proceeding) {
            return false;
        }
        self.transmits.push_back(response.clone());
        self.last_response = Some(response);
        let timeout = self.timers.transaction_timeout();
        match (self.kind, code) {
            (_, 100..=199) => self.state = Proceeding,
            (TransactionKind::Invite, 200..=299) => {
                self.state = Accepted;
                self.retransmit = (!self.reliable).then(|| (now + self.timers.t1, self.timers.t1));
                self.ack_deadline = Some(now + timeout); // timer L
            }
            (TransactionKind::Invite, _) => {
                self.state = Completed;
                self.retransmit = (!self.reliable).then(|| (now + self.timers.t1, self.timers.t1)); // timer G
                self.ack_deadline = Some(now + timeout); // timer H
            }
            (TransactionKind::NonInvite, _) => {
                self.state = Completed;
                let j = if self.reliable {
                    Duration::ZERO
                } else {
                    timeout
                };
                self.linger = Some(now + j); // timer J
            }
        }
        true
    }

    /// The ACK for this INVITE's final response arrived (for a failure, the
    /// layer matched it by branch; for a 2xx, the dialog matched it).
    pub fn handle_ack(&mut self, now: Instant) {
        match self.state {
            ServerState::Completed if self.kind == TransactionKind::Invite => {
                self.state = ServerState::Confirmed;
                self.retransmit = None;
                self.ack_deadline = None;
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.linger = Some(now + i); // timer I
            }
            ServerState::Accepted => {
                // The 2xx stops; retransmitted INVITEs are still absorbed
                // until timer L ends the transaction.
                self.retransmit = None;
                self.linger = self.ack_deadline.take();
            }
            _ => {}
        }
    }

    pub fn transport_error(&mut self) {
        if !self.is_terminated() {
            self.terminate();
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                if let Some(r) = &self.last_response {
                    self.transmits.push_back(r.clone());
                }
                let next = interval.saturating_mul(2).min(self.timers.t2);
                self.retransmit = Some((now + next, next));
            }
        }
        if self.ack_deadline.is_some_and(|at| now >= at) {
            self.events.push_back(ServerEvent::NoAck);
            self.terminate();
        }
        if self.linger.is_some_and(|at| now >= at) {
            self.terminate();
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.retransmit.map(|(at, _)| at),
            self.ack_deadline,
            self.linger,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    fn terminate(&mut self) {
        self.retransmit = None;
        self.ack_deadline = None;
        self.linger = None;
        self.state = ServerState::Terminated;
        self.events.push_back(ServerEvent::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Duration = Duration::from_millis(500);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs `t` to `until`, waking only when it asks; returns the instants
    /// (ms from `start`) at which it transmitted.
    fn client_sends(t: &mut ClientTransaction, start: Instant, until: Duration) -> Vec<u64> {
        let mut at = Vec::new();
        while t.poll_transmit().is_some() {
            at.push(0);
        }
        while let Some(due) = t.poll_timeout() {
            if due > start + until {
                break;
            }
            t.handle_timeout(due);
            while t.poll_transmit().is_some() {
                at.push((due - start).as_millis() as u64);
            }
        }
        at
    }

    fn events(t: &mut ClientTransaction) -> Vec<ClientEvent> {
        std::iter::from_fn(|| t.poll_event()).collect()
    }

    fn client(kind: TransactionKind, reliable: bool, now: Instant) -> ClientTransaction {
        ClientTransaction::new(now, kind, reliable, SipTimers::default(), b"REQ".to_vec())
    }

    #[test]
    fn invite_timer_a_doubles_and_timer_b_gives_up_at_64_t1() {
        let start = Instant::now();
        let mut t = client(TransactionKind::Invite, false, start);
        let sends = client_sends(&mut t, start, Duration::from_secs(40));
        // 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; timer B at 32 s.
        assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(t.state(), ClientState::Terminated);
        assert_eq!(
            events(&mut t),
            [ClientEvent::TimedOut, ClientEvent::Terminated]
        );
    }

    #[test]
    fn invite_over_tcp_is_not_retransmitted() {
        let start = Instant::now();
        let mut t = client(TransactionKind::Invite, true, start);
        assert_eq!(client_sends(&mut t, start, Duration::from_secs(40)), [0]);
        assert_eq!(events(&mut t)[0], ClientEvent::TimedOut);
    }

    #[test]
    fn provisional_stops_timers_a_and_b() {
        let start = Instant::now();
        let mut t = client(TransactionKind::Invite, false, start);
        t.poll_transmit();
        assert_eq!(
            t.handle_response(start + ms(100), 180),
            ResponseVerdict::Deliver
        );
        assert_eq!(t.state(), ClientState::Proceeding);
        // Ringing for minutes is fine: no retransmission, no timeout.
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn invite_failure_is_acked_once_and_again_per_retransmission_then_timer_d() {
        let start = Instant::now();
        let mut t = client(TransactionKind::Invite, false, start);
        t.poll_transmit();
        assert_eq!(
            t.handle_response(start + ms(50), 486),
            ResponseVerdict::DeliverAndAck
        );
        t.send_ack(b"ACK".to_vec());
        assert_eq!(t.poll_transmit().as_deref(), Some(&b"ACK"[..]));
        assert_eq!(
            t.handle_response(start + ms(600), 486),
            ResponseVerdict::Absorb
        );
        assert_eq!(t.poll_transmit().as_deref(), Some(&b"ACK"[..]));
        assert_eq!(
            t.poll_timeout(),
            Some(start + ms(50) + Duration::from_secs(32))
        );
        t.handle_timeout(start + ms(50) + Duration::from_secs(32));
        assert!(t.is_terminated());
        assert_eq!(events(&mut t), [ClientEvent::Terminated]);
    }

    #[test]
    fn invite_2xx_moves_to_accepted_and_later_2xx_still_reach_the_tu() {
        let start = Instant::now();
        let mut t = client(TransactionKind::Invite, false, start);
        t.poll_transmit();
        assert_eq!(t.handle_response(start, 200), ResponseVerdict::Deliver);
        assert_eq!(t.state(), ClientState::Accepted);
        assert_eq!(
            t.handle_response(start + ms(500), 200),
            ResponseVerdict::Deliver
        );
        assert_eq!(
            t.handle_response(start + ms(500), 180),
            ResponseVerdict::Absorb
        );
        // Timer M.
        assert_eq!(t.poll_timeout(), Some(start + 64 * T1));
        t.handle_timeout(start + 64 * T1);
        assert!(t.is_terminated());
        assert_eq!(
            events(&mut t),
            [ClientEvent::Terminated],
            "M is not a timeout"
        );
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_timer_f_at_64_t1() {
        let start = Instant::now();
        let mut t = client(TransactionKind::NonInvite, false, start);
        let sends = client_sends(&mut t, start, Duration::from_secs(40));
        assert_eq!(
            sends,
            [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(
            events(&mut t),
            [ClientEvent::TimedOut, ClientEvent::Terminated]
        );
    }

    #[test]
    fn non_invite_provisional_makes_timer_e_fire_every_t2() {
        let start = Instant::now();
        let mut t = client(TransactionKind::NonInvite, false, start);
        t.poll_transmit();
        t.handle_timeout(start + ms(500)); // first retransmission; next at 1.5 s
        t.poll_transmit();
        assert_eq!(
            t.handle_response(start + ms(600), 100),
            ResponseVerdict::Deliver
        );
        t.handle_timeout(start + ms(1500));
        assert!(t.poll_transmit().is_some());
        assert_eq!(t.poll_timeout(), Some(start + ms(5500)), "T2 after 1.5 s");
    }

    #[test]
    fn non_invite_final_then_timer_k_absorbs_retransmissions() {
        let start = Instant::now();
        let mut t = client(TransactionKind::NonInvite, false, start);
        t.poll_transmit();
        assert_eq!(t.handle_response(start, 401), ResponseVerdict::Deliver);
        assert_eq!(
            t.handle_response(start + ms(10), 401),
            ResponseVerdict::Absorb
        );
        assert_eq!(t.poll_transmit(), None);
        assert_eq!(t.poll_timeout(), Some(start + Duration::from_secs(5)));
        t.handle_timeout(start + Duration::from_secs(5));
        assert!(t.is_terminated());
        // Over TCP timer K is zero.
        let mut t = client(TransactionKind::NonInvite, true, start);
        t.handle_response(start, 200);
        assert_eq!(t.poll_timeout(), Some(start));
    }

    #[test]
    fn transport_error_is_a_timeout_for_the_tu() {
        let start = Instant::now();
        let mut t = client(TransactionKind::NonInvite, false, start);
        t.transport_error();
        assert_eq!(
            events(&mut t),
            [ClientEvent::TimedOut, ClientEvent::Terminated]
        );
        assert_eq!(t.poll_timeout(), None);
    }

    fn server_sends(t: &mut ServerTransaction, start: Instant, until: Duration) -> Vec<u64> {
        let mut at = Vec::new();
        while t.poll_transmit().is_some() {}
        while let Some(due) = t.poll_timeout() {
            if due > start + until {
                break;
            }
            t.handle_timeout(due);
            while t.poll_transmit().is_some() {
                at.push((due - start).as_millis() as u64);
            }
        }
        at
    }

    #[test]
    fn invite_server_failure_timer_g_caps_at_t2_and_timer_h_reports_no_ack() {
        let start = Instant::now();
        let mut t = ServerTransaction::new(TransactionKind::Invite, false, SipTimers::default());
        assert!(t.respond(start, 100, b"100".to_vec()));
        t.handle_retransmission();
        assert_eq!(t.poll_transmit().as_deref(), Some(&b"100"[..]));
        assert_eq!(t.poll_transmit().as_deref(), Some(&b"100"[..]));
        assert!(t.respond(start, 486, b"486".to_vec()));
        assert!(
            !t.respond(start, 200, b"200".to_vec()),
            "one final response"
        );
        let sends = server_sends(&mut t, start, Duration::from_secs(40));
        assert_eq!(
            sends,
            [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        let ev: Vec<_> = std::iter::from_fn(|| t.poll_event()).collect();
        assert_eq!(ev, [ServerEvent::NoAck, ServerEvent::Terminated]);
    }

    #[test]
    fn invite_server_failure_acked_then_timer_i() {
        let start = Instant::now();
        let mut t = ServerTransaction::new(TransactionKind::Invite, false, SipTimers::default());
        t.respond(start, 603, b"603".to_vec());
        t.handle_retransmission();
        assert_eq!(
            std::iter::from_fn(|| t.poll_transmit()).count(),
            2,
            "the 603, and again for the retransmitted INVITE"
        );
        t.handle_ack(start + ms(100));
        assert_eq!(t.state(), ServerState::Confirmed);
        assert_eq!(
            t.poll_timeout(),
            Some(start + ms(100) + Duration::from_secs(5))
        );
        t.handle_retransmission();
        assert_eq!(t.poll_transmit(), None, "confirmed: nothing to resend");
        t.handle_timeout(start + ms(5100));
        assert!(t.is_terminated());
    }

    #[test]
    fn invite_server_2xx_goes_again_until_the_ack_then_absorbs_until_timer_l() {
        let start = Instant::now();
        let mut t = ServerTransaction::new(TransactionKind::Invite, false, SipTimers::default());
        t.respond(start, 200, b"200".to_vec());
        t.poll_transmit();
        t.handle_timeout(start + ms(500));
        t.handle_timeout(start + ms(1500));
        assert_eq!(std::iter::from_fn(|| t.poll_transmit()).count(), 2);
        t.handle_ack(start + ms(1600));
        t.handle_retransmission();
        assert_eq!(t.poll_transmit(), None);
        assert_eq!(t.poll_timeout(), Some(start + 64 * T1));
        t.handle_timeout(start + 64 * T1);
        let ev: Vec<_> = std::iter::from_fn(|| t.poll_event()).collect();
        assert_eq!(ev, [ServerEvent::Terminated], "acked: no NoAck");
    }

    #[test]
    fn invite_server_2xx_without_ack_reports_no_ack_at_64_t1() {
        let start = Instant::now();
        let mut t = ServerTransaction::new(TransactionKind::Invite, true, SipTimers::default());
        t.respond(start, 200, b"200".to_vec());
        assert!(server_sends(&mut t, start, Duration::from_secs(40)).is_empty());
        let ev: Vec<_> = std::iter::from_fn(|| t.poll_event()).collect();
        assert_eq!(ev, [ServerEvent::NoAck, ServerEvent::Terminated]);
    }

    #[test]
    fn non_invite_server_absorbs_then_resends_final_until_timer_j() {
        let start = Instant::now();
        let mut t = ServerTransaction::new(TransactionKind::NonInvite, false, SipTimers::default());
        t.handle_retransmission();
        assert_eq!(t.poll_transmit(), None, "Trying absorbs");
        t.respond(start, 200, b"200".to_vec());
        t.poll_transmit();
        t.handle_retransmission();
        assert_eq!(t.poll_transmit().as_deref(), Some(&b"200"[..]));
        assert_eq!(t.poll_timeout(), Some(start + 64 * T1));
        let mut t = ServerTransaction::new(TransactionKind::NonInvite, true, SipTimers::default());
        t.respond(start, 200, b"200".to_vec());
        assert_eq!(t.poll_timeout(), Some(start), "timer J is zero over TCP");
    }
}
