//! The ICE agent (RFC 8445), sans-IO.
//!
//! Feed it datagrams (`handle_packet`) and the time (`handle_timeout`); take
//! from it datagrams to send (`poll_transmit`), when to call it next
//! (`poll_timeout`) and what happened (`poll_event`). It owns one data stream
//! with one or two components, and never touches a socket or a clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::candidate::{host_local_preference, is_link_local_v6, Candidate, CandidateType};
use super::config::{IceConfig, Nomination};
use super::pair::{priority_for, CandidatePair, PairReport, PairState};
use crate::stun::{
    error_response, response_builder, short_term_key, Attribute, Class, ClientTransaction, Message,
    MessageBuilder, Method, RetransmitPolicy, TransactionEvent, TransactionId,
};

/// Username fragment and password (RFC 8445 §5.3, RFC 8839 §5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

impl IceCredentials {
    /// 8 ice-chars of ufrag (≥ 4 required) and 24 of password (≥ 22 required),
    /// i.e. 48 and 144 bits of randomness.
    pub fn random(rng: &mut dyn RngCore) -> Self {
        IceCredentials {
            ufrag: random_ice_chars(rng, 8),
            pwd: random_ice_chars(rng, 24),
        }
    }
}

fn random_ice_chars(rng: &mut dyn RngCore, n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..n)
        .map(|_| ALPHABET[(rng.next_u32() % 64) as usize] as char)
        .collect()
}

/// Connection states for UIs, after the WebRTC names the issue asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    New,
    Checking,
    /// Every component has a selected (nominated) pair.
    Connected,
    /// Connected, and no check is still in flight.
    Completed,
    /// Consent checks on a selected pair go unanswered (RFC 7675).
    Disconnected,
    /// No pair can work, or consent expired.
    Failed,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::New => "new",
            ConnectionState::Checking => "checking",
            ConnectionState::Connected => "connected",
            ConnectionState::Completed => "completed",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IceEvent {
    /// A local candidate to signal to the peer (host, srflx, relay, prflx).
    LocalCandidate(Candidate),
    /// The peer reached us from an address it never signalled.
    RemotePeerReflexive(Candidate),
    /// Every STUN server has answered or timed out.
    GatheringComplete,
    PairStateChanged {
        component: u16,
        local: SocketAddr,
        remote: SocketAddr,
        state: PairState,
        rtt: Option<Duration>,
    },
    SelectedPair {
        component: u16,
        local: Candidate,
        remote: Candidate,
    },
    ConnectionState(ConnectionState),
    RoleChanged {
        controlling: bool,
    },
}

/// A datagram to send from a local base address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The base to send from: a host socket's address, or a relayed address
    /// (then the datagram goes through that TURN allocation).
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Counters for what the agent dropped or answered with an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IceStats {
    pub checks_sent: u64,
    pub checks_received: u64,
    pub malformed: u64,
    pub unauthenticated: u64,
    pub unmatched_responses: u64,
    pub role_conflicts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChecklistState {
    Running,
    Completed,
    Failed,
}

#[derive(Clone, Debug)]
enum Purpose {
    Check {
        pair: usize,
        use_candidate: bool,
        priority_sent: u32,
        controlling: bool,
    },
    Gather {
        host: usize,
        server: SocketAddr,
    },
    Consent {
        component: u16,
    },
}

struct InFlight {
    id: TransactionId,
    purpose: Purpose,
    transaction: ClientTransaction,
    contents: Vec<u8>,
    source: SocketAddr,
    destination: SocketAddr,
    /// False once a triggered check superseded this one (§7.3.1.4): it still
    /// accepts a response but is neither retransmitted nor failed on timeout.
    retransmit: bool,
    generation: u32,
}

#[derive(Clone, Debug, Default)]
struct ComponentState {
    id: u16,
    selected: Option<usize>,
    /// Kept across an ICE restart so media keeps flowing (§12.1).
    previous: Option<(Candidate, Candidate)>,
    first_valid_at: Option<Instant>,
    consent: Option<Consent>,
}

#[derive(Clone, Debug)]
struct Consent {
    last_answered: Instant,
    next_check: Instant,
    in_flight: bool,
    failing: bool,
}

/// The credentials of the session an ICE restart replaced. Kept until a new
/// pair is selected, so the peer's checks on the old pair are still answered
/// and our consent on it keeps running (RFC 8445 §9, RFC 7675).
struct PreviousSession {
    generation: u32,
    local: IceCredentials,
    remote: IceCredentials,
}

/// Which session an authenticated request belongs to.
enum RequestSession {
    Current,
    Previous,
}

/// Full ICE agent for one data stream.
pub struct IceAgent {
    config: IceConfig,
    rng: Box<dyn RngCore + Send>,
    now: Instant,
    controlling: bool,
    tie_breaker: u64,
    local_credentials: IceCredentials,
    remote_credentials: Option<IceCredentials>,
    remote_lite: bool,
    local: Vec<Candidate>,
    remote: Vec<Candidate>,
    pairs: Vec<CandidatePair>,
    triggered: VecDeque<usize>,
    in_flight: Vec<InFlight>,
    /// Local candidates no longer usable (a relay whose allocation was
    /// replaced): kept for the record, never paired again.
    retired: Vec<SocketAddr>,
    stun_servers: Vec<SocketAddr>,
    gathers_queued: VecDeque<(usize, SocketAddr)>,
    gathering_reported: bool,
    next_pace: Instant,
    checklist: ChecklistState,
    components: Vec<ComponentState>,
    remote_end_of_candidates: bool,
    /// Another layer (TURN) is still gathering candidates for us.
    external_gathering: bool,
    consent_lost: bool,
    state: ConnectionState,
    generation: u32,
    previous_session: Option<PreviousSession>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
    stats: IceStats,
}

impl IceAgent {
    pub fn new(config: IceConfig, now: Instant, mut rng: Box<dyn RngCore + Send>) -> Self {
        let local_credentials = IceCredentials::random(rng.as_mut());
        let tie_breaker = rng.next_u64();
        let components = (1..=config.components.max(1))
            .map(|id| ComponentState {
                id,
                ..Default::default()
            })
            .collect();
        IceAgent {
            config,
            rng,
            now,
            controlling: false,
            tie_breaker,
            local_credentials,
            remote_credentials: None,
            remote_lite: false,
            local: Vec::new(),
            remote: Vec::new(),
            pairs: Vec::new(),
            triggered: VecDeque::new(),
            in_flight: Vec::new(),
            retired: Vec::new(),
            stun_servers: Vec::new(),
            gathers_queued: VecDeque::new(),
            gathering_reported: false,
            next_pace: now,
            checklist: ChecklistState::Running,
            components,
            remote_end_of_candidates: false,
            external_gathering: false,
            consent_lost: false,
            state: ConnectionState::New,
            generation: 0,
            previous_session: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: IceStats::default(),
        }
    }

    // ----- configuration and signalling ---------------------------------

    pub fn local_credentials(&self) -> &IceCredentials {
        &self.local_credentials
    }

    pub fn remote_credentials(&self) -> Option<&IceCredentials> {
        self.remote_credentials.as_ref()
    }

    pub fn set_remote_credentials(&mut self, credentials: IceCredentials) {
        self.remote_credentials = Some(credentials);
    }

    pub fn is_controlling(&self) -> bool {
        self.controlling
    }

    /// Ta, the pacing of new checks (RFC 8445 §14.2), once the peers
    /// agreed on one (RFC 8839 §5.5: the larger of theirs and ours). Never
    /// below 5 ms.
    pub fn set_pacing(&mut self, ta: Duration) {
        self.config.ta = ta.max(Duration::from_millis(5));
    }

    /// Sends the next consent check of every selected pair now rather than
    /// at its scheduled time: the peer's media stopped arriving, and an
    /// answer (or none) tells sooner whether the path still works.
    /// RFC 7675 §5.1 fixes the ceiling on check spacing, not a floor; one
    /// extra check per silence is far below its rate limit.
    pub fn check_consent_now(&mut self, now: Instant) {
        for comp in &mut self.components {
            if let Some(consent) = comp.consent.as_mut() {
                consent.next_check = consent.next_check.min(now);
            }
        }
        self.handle_timeout(now);
    }

    pub fn set_controlling(&mut self, controlling: bool) {
        if self.controlling != controlling {
            self.controlling = controlling;
            self.recompute_pair_priorities();
        }
    }

    /// The tie-breaker for role conflicts (§7.3.1.1). Tests set it to force an outcome.
    pub fn set_tie_breaker(&mut self, tie_breaker: u64) {
        self.tie_breaker = tie_breaker;
    }

    /// The peer is an ice-lite implementation (`a=ice-lite`): it never checks,
    /// so RFC 8445 §6.1.1 makes us the controlling agent.
    pub fn set_remote_lite(&mut self, lite: bool) {
        self.remote_lite = lite;
        if lite {
            self.set_controlling(true);
        }
    }

    pub fn config(&self) -> &IceConfig {
        &self.config
    }

    pub fn state(&self) -> ConnectionState {
        self.state
    }

    pub fn stats(&self) -> IceStats {
        self.stats
    }

    pub fn local_candidates(&self) -> &[Candidate] {
        &self.local
    }

    pub fn remote_candidates(&self) -> &[Candidate] {
        &self.remote
    }

    /// A host candidate for a socket bound to `address`. Unspecified addresses
    /// are refused: a candidate must be an address the peer can send to.
    pub fn add_host_candidate(&mut self, component: u16, address: SocketAddr) -> Option<Candidate> {
        if address.ip().is_unspecified() || address.port() == 0 || !self.has_component(component) {
            return None;
        }
        let index = self
            .local
            .iter()
            .filter(|c| c.kind == CandidateType::Host && c.component == component)
            .count();
        let candidate = Candidate::host(
            address,
            component,
            host_local_preference(address.ip(), index),
        );
        let host = self.push_local(candidate.clone())?;
        for server in self.stun_servers.clone() {
            self.queue_gather(host, server);
        }
        Some(candidate)
    }

    /// A candidate found by another layer: a relayed candidate (and the
    /// server-reflexive one its allocation revealed) from the TURN client.
    pub fn add_local_candidate(&mut self, candidate: Candidate) -> bool {
        if !self.has_component(candidate.component) {
            return false;
        }
        self.push_local(candidate).is_some()
    }

    /// Another layer (the TURN client) is gathering relayed candidates: until
    /// it says it is done, gathering is not complete and the check list
    /// cannot fail for lack of candidates.
    pub fn set_external_gathering(&mut self, pending: bool) {
        self.external_gathering = pending;
        if pending {
            self.gathering_reported = false;
        } else {
            self.report_gathering_complete();
        }
    }

    /// Gather a server-reflexive candidate from every host candidate of the
    /// same address family (RFC 8445 §5.1.1.2).
    pub fn add_stun_server(&mut self, server: SocketAddr) {
        if self.stun_servers.contains(&server) {
            return;
        }
        self.stun_servers.push(server);
        let hosts: Vec<usize> = (0..self.local.len())
            .filter(|&i| self.local[i].kind == CandidateType::Host)
            .collect();
        for host in hosts {
            self.queue_gather(host, server);
        }
    }

    /// A candidate from the peer's signalling (SDP or trickle). Pairs are
    /// formed at once, so checks may start before the peer is done.
    pub fn add_remote_candidate(&mut self, candidate: Candidate) {
        if !self.has_component(candidate.component) || candidate.address.port() == 0 {
            return;
        }
        if let Some(existing) = self
            .remote
            .iter()
            .position(|r| r.address == candidate.address && r.component == candidate.component)
        {
            // A signalled candidate replaces a peer-reflexive guess
            // (§7.3.1.3), and is paired with every base like any other.
            if self.remote[existing].kind == CandidateType::PeerReflexive {
                self.remote[existing] = candidate;
                self.recompute_pair_priorities();
                for local in 0..self.local.len() {
                    self.form_pair(local, existing);
                }
                self.revive_checklist();
            }
            return;
        }
        self.remote.push(candidate);
        let remote = self.remote.len() - 1;
        for local in 0..self.local.len() {
            self.form_pair(local, remote);
        }
        self.revive_checklist();
    }

    /// New candidates give a failed check list something to try again.
    fn revive_checklist(&mut self) {
        if self.checklist == ChecklistState::Failed && !self.consent_lost {
            self.checklist = ChecklistState::Running;
        }
    }

    /// The peer has signalled all its candidates (a complete SDP, or
    /// trickle's end-of-candidates): from now on a check list with nothing
    /// left to try has failed.
    pub fn end_of_remote_candidates(&mut self) {
        self.remote_end_of_candidates = true;
    }

    /// ICE restart (RFC 8445 §9): new credentials, a new check list, the
    /// selected pair kept for media until a new one is chosen.
    pub fn restart(&mut self) -> IceCredentials {
        let new = IceCredentials::random(self.rng.as_mut());
        let old = std::mem::replace(&mut self.local_credentials, new);
        let carrying_media = self
            .components
            .iter()
            .any(|c| self.media_pair(c.id).is_some());
        self.previous_session = match self.remote_credentials.take() {
            Some(remote) if carrying_media && !self.consent_lost => Some(PreviousSession {
                generation: self.generation,
                local: old,
                remote,
            }),
            _ => None,
        };
        for c in 0..self.components.len() {
            let snapshot = self.media_pair(self.components[c].id);
            let comp = &mut self.components[c];
            comp.previous = snapshot;
            comp.selected = None;
            comp.first_valid_at = None;
            if comp.previous.is_none() {
                comp.consent = None;
            }
        }
        self.remote.clear();
        self.pairs.clear();
        self.triggered.clear();
        // Checks of the old generation end here; consent on the old pair goes on.
        self.in_flight
            .retain(|t| matches!(t.purpose, Purpose::Gather { .. } | Purpose::Consent { .. }));
        self.generation += 1;
        self.remote_end_of_candidates = false;
        self.checklist = ChecklistState::Running;
        self.next_pace = self.now;
        self.update_state();
        self.local_credentials.clone()
    }

    // ----- queries --------------------------------------------------------

    /// The selected pair of a component, as (local, remote).
    /// Whether some component has a selected pair whose consent is kept.
    pub fn has_selected_pair(&self) -> bool {
        self.components.iter().any(|c| c.consent.is_some())
    }

    pub fn selected_pair(&self, component: u16) -> Option<(&Candidate, &Candidate)> {
        let comp = self.component(component)?;
        let pair = &self.pairs[comp.selected?];
        Some((&self.local[pair.local], &self.remote[pair.remote]))
    }

    /// Where media for a component goes now: the selected pair, else the best
    /// valid pair (RFC 8445 §12.1 allows sending on any valid pair before
    /// selection), else the pair selected before an ICE restart.
    /// Nothing once consent is lost: RFC 7675 §5.1 forbids sending.
    pub fn media_pair(&self, component: u16) -> Option<(Candidate, Candidate)> {
        if self.consent_lost {
            return None;
        }
        if let Some((l, r)) = self.selected_pair(component) {
            return Some((l.clone(), r.clone()));
        }
        if let Some(best) = self.best_valid(component) {
            let p = &self.pairs[best];
            return Some((self.local[p.local].clone(), self.remote[p.remote].clone()));
        }
        self.component(component)?.previous.clone()
    }

    /// The component for which `from` is the remote end of a valid pair:
    /// media from there passed a check, even if it is not the selected pair
    /// (a peer may send on any valid pair, e.g. through its own relay,
    /// RFC 8445 §12.1).
    pub fn valid_remote(&self, from: SocketAddr) -> Option<u16> {
        if self.consent_lost {
            return None;
        }
        self.pairs
            .iter()
            .find(|p| p.valid && self.remote[p.remote].address == from)
            .map(|p| p.component)
    }

    /// Stops pairing the local candidate at `address` (an allocation that
    /// was replaced). Pairs already formed run their course; an ICE restart
    /// forms none with it. Its foundation would otherwise hold the new
    /// relay's pairs frozen behind its dead ones (RFC 8445 §6.1.2.6).
    pub fn retire_local_candidate(&mut self, address: SocketAddr) {
        if !self.retired.contains(&address) {
            self.retired.push(address);
        }
    }

    /// Every pair the agent knows, for reports.
    pub fn pairs(&self) -> Vec<PairReport> {
        self.pairs
            .iter()
            .map(|p| PairReport {
                local: self.local[p.local].clone(),
                remote: self.remote[p.remote].clone(),
                component: p.component,
                priority: p.priority,
                state: p.state,
                valid: p.valid,
                nominated: p.nominated,
                rtt: p.rtt,
                checks_sent: p.checks_sent,
                responses_received: p.responses_received,
            })
            .collect()
    }

    // ----- sans-IO surface ------------------------------------------------

    /// Offer a received datagram. Returns true when it was a STUN message
    /// for this agent (consumed); false for anything else (media, TURN, or a
    /// STUN response to a transaction this agent never started).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> bool {
        self.now = now;
        if !crate::stun::is_stun(contents) {
            return false;
        }
        let msg = match Message::decode(contents) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%source, error = %e, "dropping malformed STUN");
                self.stats.malformed += 1;
                return true;
            }
        };
        if msg.method() != Method::BINDING {
            return false;
        }
        let consumed = match msg.class() {
            Class::Request => {
                self.handle_request(now, &msg, source, destination);
                true
            }
            Class::Indication => true,
            Class::Success | Class::Error => self.handle_response(now, &msg, source, destination),
        };
        // A success may make the best pair unbeatable: nominate without
        // waiting for a timer.
        self.nominate(now);
        self.update_state();
        consumed
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.start_queued_gathers(now);
        self.drive_transactions(now);
        self.pace_checks(now);
        self.nominate(now);
        self.drive_consent(now);
        self.update_state();
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if !self.gathers_queued.is_empty() {
            consider(self.next_pace.max(self.now));
        }
        for t in &self.in_flight {
            if let Some(at) = t.transaction.poll_timeout() {
                consider(at);
            }
        }
        if self.has_check_to_send() {
            consider(self.next_pace.max(self.now));
        }
        if let Some(at) = self.nomination_deadline() {
            consider(at);
        }
        for comp in &self.components {
            if let Some(c) = &comp.consent {
                if !c.in_flight {
                    consider(c.next_check);
                }
            }
        }
        next
    }

    // ----- candidates and pairs -------------------------------------------

    fn has_component(&self, component: u16) -> bool {
        component >= 1 && component <= self.config.components.max(1)
    }

    fn component(&self, id: u16) -> Option<&ComponentState> {
        self.components.iter().find(|c| c.id == id)
    }

    fn component_mut(&mut self, id: u16) -> Option<&mut ComponentState> {
        self.components.iter_mut().find(|c| c.id == id)
    }

    /// Adds a local candidate unless redundant (same address and base,
    /// §5.1.3), pairs it, and announces it. Returns its index.
    fn push_local(&mut self, candidate: Candidate) -> Option<usize> {
        if let Some(existing) = self.local.iter().position(|c| {
            c.address == candidate.address
                && c.base == candidate.base
                && c.component == candidate.component
        }) {
            // §5.1.3: keep only the higher-priority one of redundant candidates.
            if self.local[existing].priority < candidate.priority {
                self.local[existing] = candidate;
                self.recompute_pair_priorities();
            }
            return None;
        }
        self.events
            .push_back(IceEvent::LocalCandidate(candidate.clone()));
        self.local.push(candidate);
        let local = self.local.len() - 1;
        for remote in 0..self.remote.len() {
            self.form_pair(local, remote);
        }
        self.revive_checklist();
        Some(local)
    }

    /// RFC 8445 §6.1.2.2/§6.1.2.4: server-reflexive (and peer-reflexive)
    /// local candidates are replaced by their base, which makes them
    /// redundant with the host pair: only host and relayed ones are paired.
    fn form_pair(&mut self, local: usize, remote: usize) -> Option<usize> {
        let (l, r) = (&self.local[local], &self.remote[remote]);
        let pairable = !self.retired.contains(&l.address)
            && matches!(l.kind, CandidateType::Host | CandidateType::Relayed)
            && l.component == r.component
            && l.address.is_ipv4() == r.address.is_ipv4()
            && scope_compatible(l.address, r.address);
        if !pairable {
            return None;
        }
        if let Some(existing) = self.find_pair(local, remote) {
            return Some(existing);
        }
        if self.pairs.len() >= self.config.max_pairs {
            tracing::debug!("pair limit reached; not pairing {} with {}", l, r);
            return None;
        }
        let mut pair = CandidatePair::new(local, l, remote, r, self.controlling);
        // §6.1.2.6, applied per new pair so trickled candidates follow the
        // same rule: the first pair of a foundation waits, the rest freeze.
        if !self.foundation_busy(&pair.foundation) {
            pair.state = PairState::Waiting;
        }
        self.pairs.push(pair);
        Some(self.pairs.len() - 1)
    }

    fn find_pair(&self, local: usize, remote: usize) -> Option<usize> {
        self.pairs
            .iter()
            .position(|p| p.local == local && p.remote == remote)
    }

    /// After a role change or a replaced candidate: priorities and
    /// foundations follow the candidates.
    fn recompute_pair_priorities(&mut self) {
        for p in &mut self.pairs {
            let (l, r) = (&self.local[p.local], &self.remote[p.remote]);
            p.priority = priority_for(l, r, self.controlling);
            p.foundation = format!("{}:{}", l.foundation, r.foundation);
        }
    }

    fn set_pair_state(&mut self, pair: usize, state: PairState) {
        let p = &mut self.pairs[pair];
        if state == PairState::Failed {
            // §7.2.5.3.4: a failed pair leaves the valid list, and with it
            // any nomination.
            p.valid = false;
            p.nominated = false;
            p.nominating = false;
            p.nominate_on_success = false;
        }
        if p.state == state {
            return;
        }
        p.state = state;
        let p = &self.pairs[pair];
        self.events.push_back(IceEvent::PairStateChanged {
            component: p.component,
            local: self.local[p.local].address,
            remote: self.remote[p.remote].address,
            state,
            rtt: p.rtt,
        });
    }

    fn best_valid(&self, component: u16) -> Option<usize> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.component == component && p.valid && p.state == PairState::Succeeded)
            .max_by_key(|(_, p)| p.priority)
            .map(|(i, _)| i)
    }

    // ----- gathering --------------------------------------------------------

    fn queue_gather(&mut self, host: usize, server: SocketAddr) {
        if self.local[host].address.is_ipv4() == server.is_ipv4() {
            self.gathers_queued.push_back((host, server));
            self.gathering_reported = false;
        }
    }

    /// Gathering transactions are paced by Ta like checks (§5.1.1).
    fn start_queued_gathers(&mut self, now: Instant) {
        while now >= self.next_pace {
            let Some((host, server)) = self.gathers_queued.pop_front() else {
                break;
            };
            let id = TransactionId::random(self.rng.as_mut());
            let mut b = MessageBuilder::new(Class::Request, Method::BINDING, id);
            b.add_fingerprint();
            let source = self.local[host].base;
            self.start_transaction(
                now,
                id,
                Purpose::Gather { host, server },
                b.finish(),
                source,
                server,
                self.config.gather_retransmit,
            );
            self.next_pace = now + self.config.ta;
        }
        self.report_gathering_complete();
    }

    fn gathering(&self) -> bool {
        self.external_gathering
            || !self.gathers_queued.is_empty()
            || self
                .in_flight
                .iter()
                .any(|t| matches!(t.purpose, Purpose::Gather { .. }))
    }

    fn report_gathering_complete(&mut self) {
        if !self.gathering() && !self.gathering_reported {
            self.gathering_reported = true;
            self.events.push_back(IceEvent::GatheringComplete);
        }
    }

    fn on_gather_response(&mut self, host: usize, server: SocketAddr, msg: &Message<'_>) {
        if msg.class() == Class::Error {
            let (code, reason) = msg.error_code().unwrap_or((0, ""));
            tracing::warn!(%server, code, reason, "STUN server refused a Binding request");
            return;
        }
        let Some(mapped) = msg.reflexive_address() else {
            tracing::warn!(%server, "STUN response without a mapped address");
            return;
        };
        let base = &self.local[host];
        if mapped == base.address {
            return; // not behind a NAT: the srflx would duplicate the host candidate
        }
        let local_preference = ((base.priority >> 8) & 0xffff) as u16;
        let srflx = Candidate::server_reflexive(
            mapped,
            base.base,
            server,
            base.component,
            local_preference,
        );
        self.push_local(srflx);
    }

    // ----- transactions -----------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn start_transaction(
        &mut self,
        now: Instant,
        id: TransactionId,
        purpose: Purpose,
        contents: Vec<u8>,
        source: SocketAddr,
        destination: SocketAddr,
        policy: RetransmitPolicy,
    ) {
        let mut transaction = ClientTransaction::new(now, policy);
        // The first transmission is due now; consume it here and send.
        let _ = transaction.handle_timeout(now);
        self.transmits.push_back(Transmit {
            source,
            destination,
            contents: contents.clone(),
        });
        self.in_flight.push(InFlight {
            id,
            purpose,
            transaction,
            contents,
            source,
            destination,
            retransmit: true,
            generation: self.generation,
        });
    }

    fn drive_transactions(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        for t in &mut self.in_flight {
            while let Some(event) = t.transaction.handle_timeout(now) {
                match event {
                    TransactionEvent::Transmit if t.retransmit => {
                        self.transmits.push_back(Transmit {
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents.clone(),
                        });
                    }
                    TransactionEvent::Transmit => {}
                    TransactionEvent::TimedOut => {
                        timed_out.push(t.id);
                        break;
                    }
                }
            }
        }
        for id in timed_out {
            if let Some(pos) = self.in_flight.iter().position(|t| t.id == id) {
                let t = self.in_flight.swap_remove(pos);
                self.on_transaction_timeout(now, t);
            }
        }
    }

    fn on_transaction_timeout(&mut self, now: Instant, t: InFlight) {
        match t.purpose {
            Purpose::Check { pair, .. } => {
                if t.generation == self.generation
                    && self.pairs.get(pair).and_then(|p| p.current_transaction) == Some(t.id)
                {
                    self.pairs[pair].current_transaction = None;
                    // A cancelled check's silence is not a failure (§8.1.2).
                    let state = if t.retransmit {
                        PairState::Failed
                    } else {
                        PairState::Waiting
                    };
                    self.set_pair_state(pair, state);
                }
            }
            Purpose::Gather { server, .. } => {
                tracing::warn!(%server, "STUN server did not answer; no server-reflexive candidate from it");
                self.report_gathering_complete();
            }
            Purpose::Consent { component } => self.on_consent_unanswered(now, component),
        }
    }

    // ----- sending checks ---------------------------------------------------

    /// Mirrors `next_check` without changing anything, so `poll_timeout`
    /// never asks to be woken for work `handle_timeout` would not do.
    fn has_check_to_send(&self) -> bool {
        if self.remote_credentials.is_none() {
            return false;
        }
        let sendable_trigger = self
            .triggered
            .iter()
            .any(|&p| self.pairs[p].state != PairState::Succeeded || self.pairs[p].nominating);
        if sendable_trigger {
            return true;
        }
        if self.checklist != ChecklistState::Running {
            return false;
        }
        self.pairs.iter().any(|p| {
            !p.valid_only
                && !self.component_selected(p.component)
                && (p.state == PairState::Waiting
                    || (p.state == PairState::Frozen && !self.foundation_busy(&p.foundation)))
        })
    }

    fn foundation_busy(&self, foundation: &str) -> bool {
        self.pairs.iter().any(|p| {
            p.foundation == foundation
                && matches!(p.state, PairState::Waiting | PairState::InProgress)
        })
    }

    fn pace_checks(&mut self, now: Instant) {
        if now < self.next_pace || self.remote_credentials.is_none() {
            return;
        }
        if let Some(pair) = self.next_check() {
            self.send_check(now, pair);
            self.next_pace = now + self.config.ta;
        }
    }

    /// RFC 8445 §6.1.4.2: the triggered-check queue first, then the
    /// highest-priority Waiting pair, then unfreeze by foundation.
    fn next_check(&mut self) -> Option<usize> {
        while let Some(pair) = self.triggered.pop_front() {
            let p = &self.pairs[pair];
            if p.state != PairState::Succeeded || p.nominating {
                return Some(pair);
            }
        }
        if self.checklist != ChecklistState::Running {
            return None;
        }
        if let Some(pair) = self.highest_waiting() {
            return Some(pair);
        }
        self.unfreeze_one_per_idle_foundation();
        self.highest_waiting()
    }

    fn highest_waiting(&self) -> Option<usize> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PairState::Waiting && !p.valid_only)
            .filter(|(_, p)| !self.component_selected(p.component))
            .max_by_key(|(_, p)| p.priority)
            .map(|(i, _)| i)
    }

    fn unfreeze_one_per_idle_foundation(&mut self) {
        let mut order: Vec<usize> = (0..self.pairs.len())
            .filter(|&i| self.pairs[i].state == PairState::Frozen)
            .filter(|&i| !self.component_selected(self.pairs[i].component))
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.pairs[i].priority));
        for i in order {
            if !self.foundation_busy(&self.pairs[i].foundation) {
                self.set_pair_state(i, PairState::Waiting);
            }
        }
    }

    fn send_check(&mut self, now: Instant, pair: usize) {
        let Some(remote_credentials) = self.remote_credentials.clone() else {
            return;
        };
        let use_candidate = self.controlling
            && (self.config.nomination == Nomination::Aggressive || self.pairs[pair].nominating);
        let (local, remote) = (
            &self.local[self.pairs[pair].local],
            &self.remote[self.pairs[pair].remote],
        );
        let priority_sent = local.peer_reflexive_priority();
        let (source, destination) = (local.base, remote.address);
        let id = TransactionId::random(self.rng.as_mut());
        let local_ufrag = self.local_credentials.ufrag.clone();
        let contents = self.build_check(
            id,
            &local_ufrag,
            &remote_credentials,
            priority_sent,
            use_candidate,
        );
        // A superseded transaction may still be answered, but must not
        // retransmit or fail the pair (§7.3.1.4).
        if let Some(old) = self.pairs[pair].current_transaction {
            if let Some(t) = self.in_flight.iter_mut().find(|t| t.id == old) {
                t.retransmit = false;
            }
        }
        let p = &mut self.pairs[pair];
        p.current_transaction = Some(id);
        p.checks_sent += 1;
        self.stats.checks_sent += 1;
        if p.state != PairState::Succeeded {
            self.set_pair_state(pair, PairState::InProgress);
        }
        let purpose = Purpose::Check {
            pair,
            use_candidate,
            priority_sent,
            controlling: self.controlling,
        };
        let policy = self.config.check_retransmit;
        tracing::trace!(%source, %destination, use_candidate, "sending check");
        self.start_transaction(now, id, purpose, contents, source, destination, policy);
    }

    fn build_check(
        &self,
        id: TransactionId,
        local_ufrag: &str,
        remote: &IceCredentials,
        priority: u32,
        use_candidate: bool,
    ) -> Vec<u8> {
        let username = format!("{}:{}", remote.ufrag, local_ufrag);
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, id);
        b.add(&Attribute::Username(&username));
        b.add(&Attribute::Priority(priority));
        if self.controlling {
            b.add(&Attribute::IceControlling(self.tie_breaker));
        } else {
            b.add(&Attribute::IceControlled(self.tie_breaker));
        }
        if use_candidate {
            b.add(&Attribute::UseCandidate);
        }
        b.add_message_integrity(&short_term_key(&remote.pwd));
        b.add_fingerprint();
        b.finish()
    }

    // ----- receiving requests (§7.3) -------------------------------------------

    fn handle_request(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        source: SocketAddr,
        destination: SocketAddr,
    ) {
        self.stats.checks_received += 1;
        let Some(local) = self
            .local
            .iter()
            .position(|c| c.address == destination && c.base == destination)
        else {
            tracing::debug!(%destination, "check to an address that is not a local base");
            self.stats.malformed += 1;
            return;
        };
        tracing::trace!(%source, %destination, use_candidate = msg.use_candidate(), "check received");
        let session = match self.authenticate_request(msg) {
            Ok(session) => session,
            Err(code) => {
                let reason = if code == 400 {
                    "Bad Request"
                } else {
                    "Unauthorized"
                };
                self.respond_unauthenticated(msg, destination, source, code, reason);
                return;
            }
        };
        if let RequestSession::Previous = session {
            // The peer's consent on the old pair: answer, learn nothing.
            self.respond_previous_session(msg, destination, source);
            return;
        }
        let mut unknown = [0u16; 8];
        let n = msg.unknown_comprehension_required(&mut unknown);
        if n > 0 {
            self.respond(
                msg,
                destination,
                source,
                Err((420, "Unknown Attribute", &unknown[..n])),
            );
            return;
        }
        let Some(priority) = msg.priority() else {
            self.respond(
                msg,
                destination,
                source,
                Err((400, "Missing PRIORITY", &[])),
            );
            return;
        };
        if !self.resolve_role_conflict(msg) {
            self.respond(msg, destination, source, Err((487, "Role Conflict", &[])));
            return;
        }
        self.respond(msg, destination, source, Ok(()));
        let component = self.local[local].component;
        let remote = self.remote_for_request(source, component, priority);
        let Some(pair) = self.form_pair(local, remote) else {
            return;
        };
        self.trigger_check(pair);
        if msg.use_candidate() && !self.controlling {
            self.nominate_from_peer(now, pair);
        }
    }

    /// RFC 8445 §7.3: USERNAME must start with our ufrag — of this session,
    /// or of the one a restart replaced while it still carries media — and
    /// MESSAGE-INTEGRITY verify with the matching password; RFC 8489 §9.1.3
    /// says which code answers what.
    fn authenticate_request(&mut self, msg: &Message<'_>) -> Result<RequestSession, u16> {
        let (Some(username), true) = (msg.username(), msg.has_message_integrity()) else {
            self.stats.unauthenticated += 1;
            return Err(400);
        };
        let ufrag = username.split(':').next().unwrap_or_default();
        let verifies = |creds: &IceCredentials| {
            creds.ufrag == ufrag && msg.check_integrity(&short_term_key(&creds.pwd)).is_ok()
        };
        if verifies(&self.local_credentials) {
            return Ok(RequestSession::Current);
        }
        if self
            .previous_session
            .as_ref()
            .is_some_and(|p| verifies(&p.local))
        {
            return Ok(RequestSession::Previous);
        }
        self.stats.unauthenticated += 1;
        Err(401)
    }

    /// RFC 8445 §7.3.1.1. Returns false when the request must get a 487.
    fn resolve_role_conflict(&mut self, msg: &Message<'_>) -> bool {
        let theirs = match (
            self.controlling,
            msg.ice_controlling(),
            msg.ice_controlled(),
        ) {
            (true, Some(t), _) => t,
            (false, _, Some(t)) => t,
            _ => return true,
        };
        self.stats.role_conflicts += 1;
        let we_win = self.tie_breaker >= theirs;
        // The controlling agent keeps its role when it wins; the controlled
        // one takes control when it wins.
        if self.controlling && we_win {
            return false;
        }
        if !self.controlling && !we_win {
            return false;
        }
        self.switch_role();
        true
    }

    fn switch_role(&mut self) {
        self.controlling = !self.controlling;
        self.recompute_pair_priorities();
        for p in &mut self.pairs {
            p.nominating = false;
        }
        self.events.push_back(IceEvent::RoleChanged {
            controlling: self.controlling,
        });
    }

    /// Answers an authenticated request, signed with our password.
    fn respond(
        &mut self,
        req: &Message<'_>,
        from: SocketAddr,
        to: SocketAddr,
        outcome: Result<(), (u16, &str, &[u16])>,
    ) {
        let key = short_term_key(&self.local_credentials.pwd);
        self.respond_signed(req, from, to, outcome, &key);
    }

    /// The peer's consent on the pair a restart replaced: answered with the
    /// old password, and nothing is learnt from it.
    fn respond_previous_session(&mut self, req: &Message<'_>, from: SocketAddr, to: SocketAddr) {
        let Some(previous) = self.previous_session.as_ref() else {
            return;
        };
        let key = short_term_key(&previous.local.pwd);
        self.respond_signed(req, from, to, Ok(()), &key);
    }

    fn respond_signed(
        &mut self,
        req: &Message<'_>,
        from: SocketAddr,
        to: SocketAddr,
        outcome: Result<(), (u16, &str, &[u16])>,
        key: &[u8],
    ) {
        let mut b = match outcome {
            Ok(()) => {
                let mut b = response_builder(req, Class::Success);
                b.add(&Attribute::XorMappedAddress(to));
                b
            }
            Err((code, reason, unknown)) => error_response(req, code, reason, unknown),
        };
        b.add_message_integrity(key);
        self.send_response(b, from, to);
    }

    /// A 400/401 carries no integrity: the request did not prove it knows
    /// the password, so there is nothing to sign for (RFC 8489 §9.1.3).
    fn respond_unauthenticated(
        &mut self,
        req: &Message<'_>,
        from: SocketAddr,
        to: SocketAddr,
        code: u16,
        reason: &str,
    ) {
        let b = error_response(req, code, reason, &[]);
        self.send_response(b, from, to);
    }

    fn send_response(&mut self, mut b: MessageBuilder, from: SocketAddr, to: SocketAddr) {
        b.add_fingerprint();
        self.transmits.push_back(Transmit {
            source: from,
            destination: to,
            contents: b.finish(),
        });
    }

    /// RFC 8445 §7.3.1.3: a request from an unknown address reveals a
    /// peer-reflexive remote candidate.
    fn remote_for_request(&mut self, source: SocketAddr, component: u16, priority: u32) -> usize {
        if let Some(i) = self
            .remote
            .iter()
            .position(|r| r.address == source && r.component == component)
        {
            return i;
        }
        let candidate = Candidate::remote_peer_reflexive(source, priority, component);
        self.events
            .push_back(IceEvent::RemotePeerReflexive(candidate.clone()));
        self.remote.push(candidate);
        let remote = self.remote.len() - 1;
        // §7.3.1.4: only the base that received the check pairs with it (by the caller).
        remote
    }

    /// RFC 8445 §7.3.1.4.
    fn trigger_check(&mut self, pair: usize) {
        match self.pairs[pair].state {
            PairState::Succeeded => return,
            PairState::Waiting => {}
            PairState::Failed | PairState::Frozen | PairState::InProgress => {
                self.set_pair_state(pair, PairState::Waiting)
            }
        }
        if !self.triggered.contains(&pair) {
            self.triggered.push_back(pair);
        }
    }

    /// RFC 8445 §7.3.1.5: the controlling agent nominated this pair.
    fn nominate_from_peer(&mut self, now: Instant, pair: usize) {
        if self.pairs[pair].state == PairState::Succeeded {
            // The valid pair this check produced may be a peer-reflexive one.
            let valid = self.valid_pair_for(pair);
            self.pairs[valid].nominated = true;
            self.update_selection(now);
        } else {
            self.pairs[pair].nominate_on_success = true;
        }
    }

    fn valid_pair_for(&self, pair: usize) -> usize {
        if self.pairs[pair].valid {
            return pair;
        }
        let p = &self.pairs[pair];
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                v.valid
                    && v.remote == p.remote
                    && self.local[v.local].base == self.local[p.local].base
            })
            .max_by_key(|(_, v)| v.priority)
            .map_or(pair, |(i, _)| i)
    }

    // ----- receiving responses (§7.2.5) ------------------------------------------

    fn handle_response(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        source: SocketAddr,
        destination: SocketAddr,
    ) -> bool {
        let id = msg.transaction_id();
        let Some(pos) = self.in_flight.iter().position(|t| t.id == id) else {
            self.stats.unmatched_responses += 1;
            return false;
        };
        match self.in_flight[pos].purpose.clone() {
            Purpose::Gather { host, server } => {
                if source != self.in_flight[pos].destination {
                    self.stats.unmatched_responses += 1;
                    return true;
                }
                self.in_flight.swap_remove(pos);
                self.on_gather_response(host, server, msg);
                self.report_gathering_complete();
            }
            Purpose::Check { .. } | Purpose::Consent { .. } => {
                let Some(key) = self.remote_key(self.in_flight[pos].generation) else {
                    return true;
                };
                if msg.check_integrity(&key).is_err() {
                    // A forged or stale answer must not end the transaction.
                    self.stats.unauthenticated += 1;
                    return true;
                }
                let t = self.in_flight.swap_remove(pos);
                let symmetric = source == t.destination && destination == t.source;
                match t.purpose.clone() {
                    Purpose::Check { .. } if t.generation == self.generation => {
                        self.on_check_response(now, t, msg, symmetric)
                    }
                    Purpose::Check { .. } => {}
                    Purpose::Consent { component } => {
                        self.on_consent_response(now, component, msg, symmetric)
                    }
                    Purpose::Gather { .. } => unreachable!("handled above"),
                }
            }
        }
        true
    }

    /// The peer's password for transactions of a given generation.
    fn remote_key(&self, generation: u32) -> Option<Vec<u8>> {
        if generation == self.generation {
            return self
                .remote_credentials
                .as_ref()
                .map(|c| short_term_key(&c.pwd));
        }
        self.previous_session
            .as_ref()
            .filter(|p| p.generation == generation)
            .map(|p| short_term_key(&p.remote.pwd))
    }

    fn on_check_response(&mut self, now: Instant, t: InFlight, msg: &Message<'_>, symmetric: bool) {
        let Purpose::Check {
            pair,
            use_candidate,
            priority_sent,
            controlling,
        } = t.purpose
        else {
            return;
        };
        let rtt = t
            .transaction
            .last_sent()
            .map(|sent| now.saturating_duration_since(sent));
        if self.pairs[pair].current_transaction == Some(t.id) {
            self.pairs[pair].current_transaction = None;
        }
        self.pairs[pair].responses_received += 1;
        if msg.class() == Class::Error {
            self.on_check_error(pair, msg, controlling);
            return;
        }
        let mapped = msg.xor_mapped_address();
        let (true, Some(mapped)) = (symmetric, mapped) else {
            // §7.2.5.2.1: a non-symmetric answer fails the pair.
            self.set_pair_state(pair, PairState::Failed);
            return;
        };
        let valid = self.construct_valid_pair(pair, mapped, priority_sent);
        for i in [pair, valid] {
            let p = &mut self.pairs[i];
            p.rtt = rtt;
            self.set_pair_state(i, PairState::Succeeded);
        }
        self.pairs[valid].valid = true;
        self.unfreeze_foundation(pair);
        let comp = self.pairs[pair].component;
        if let Some(c) = self.component_mut(comp) {
            c.first_valid_at.get_or_insert(now);
        }
        if (use_candidate && self.controlling)
            || (!self.controlling && self.pairs[pair].nominate_on_success)
        {
            self.pairs[valid].nominated = true;
        }
        self.pairs[pair].nominating = false;
        self.update_selection(now);
    }

    fn on_check_error(&mut self, pair: usize, msg: &Message<'_>, was_controlling: bool) {
        let (code, reason) = msg.error_code().unwrap_or((0, ""));
        if code == 487 {
            // §7.2.5.1: switch to the role opposite the one the request
            // claimed, unless an earlier conflict already did, and retry.
            if self.controlling == was_controlling {
                self.switch_role();
                // §7.2.5.1: "The agent MUST change the tiebreaker value."
                self.tie_breaker = self.rng.next_u64();
            }
            self.set_pair_state(pair, PairState::Waiting);
            if !self.triggered.contains(&pair) {
                self.triggered.push_back(pair);
            }
            return;
        }
        tracing::debug!(code, reason, "check answered with an error");
        self.set_pair_state(pair, PairState::Failed);
    }

    /// §7.2.5.3.2: the valid pair is (the local candidate whose address is
    /// the mapped address, the pair's remote) — a new local peer-reflexive
    /// candidate when no local candidate has that address.
    fn construct_valid_pair(
        &mut self,
        pair: usize,
        mapped: SocketAddr,
        priority_sent: u32,
    ) -> usize {
        let (local, remote, component) = {
            let p = &self.pairs[pair];
            (p.local, p.remote, p.component)
        };
        if self.local[local].address == mapped {
            return pair;
        }
        let existing = self
            .local
            .iter()
            .position(|c| c.address == mapped && c.component == component);
        let mapped_local = match existing {
            Some(i) => i,
            None => {
                let base = self.local[local].base;
                let prflx = Candidate::local_peer_reflexive(mapped, base, priority_sent, component);
                self.events
                    .push_back(IceEvent::LocalCandidate(prflx.clone()));
                self.local.push(prflx);
                self.local.len() - 1
            }
        };
        if let Some(existing) = self.find_pair(mapped_local, remote) {
            return existing;
        }
        let mut valid = CandidatePair::new(
            mapped_local,
            &self.local[mapped_local],
            remote,
            &self.remote[remote],
            self.controlling,
        );
        valid.valid_only = true;
        self.pairs.push(valid);
        self.pairs.len() - 1
    }

    /// §7.2.5.3.3: a success thaws the frozen pairs that share its foundation.
    fn unfreeze_foundation(&mut self, pair: usize) {
        let foundation = self.pairs[pair].foundation.clone();
        for i in 0..self.pairs.len() {
            if self.pairs[i].state == PairState::Frozen && self.pairs[i].foundation == foundation {
                self.set_pair_state(i, PairState::Waiting);
            }
        }
    }

    // ----- nomination and selection (§8) -----------------------------------------

    fn nomination_deadline(&self) -> Option<Instant> {
        if !self.controlling || self.config.nomination != Nomination::Regular {
            return None;
        }
        self.components
            .iter()
            .filter_map(|c| self.nomination_due(c))
            .min()
    }

    /// When regular nomination should happen for a component: now if its
    /// best valid pair cannot be beaten by a pair still being checked,
    /// otherwise `nomination_delay` after its first valid pair.
    fn nomination_due(&self, comp: &ComponentState) -> Option<Instant> {
        if comp.selected.is_some() || self.nominating(comp.id) {
            return None;
        }
        let best = self.best_valid(comp.id)?;
        let best_priority = self.pairs[best].priority;
        let better_pending = self.pairs.iter().any(|p| {
            p.component == comp.id
                && !p.valid_only
                && p.priority > best_priority
                && p.state.is_pending()
        });
        if better_pending {
            comp.first_valid_at
                .map(|t| t + self.config.nomination_delay)
        } else {
            Some(self.now)
        }
    }

    fn nominating(&self, component: u16) -> bool {
        self.pairs
            .iter()
            .any(|p| p.component == component && (p.nominating || p.nominated))
    }

    /// Regular nomination: once the best valid pair can no longer be beaten
    /// by a pair still being checked — or the wait has run out — send it a
    /// check with USE-CANDIDATE.
    fn nominate(&mut self, now: Instant) {
        if !self.controlling || self.config.nomination != Nomination::Regular {
            return;
        }
        for c in 0..self.components.len() {
            if self
                .nomination_due(&self.components[c])
                .is_some_and(|t| t <= now)
            {
                if let Some(best) = self.best_valid(self.components[c].id) {
                    self.pairs[best].nominating = true;
                    self.triggered.push_front(best);
                }
            }
        }
        if self
            .triggered
            .front()
            .is_some_and(|&p| self.pairs[p].nominating)
        {
            // As urgent as any triggered check: send now if pacing allows.
            self.pace_checks(now);
        }
    }

    /// The selected pair is the highest-priority nominated valid pair (the
    /// rule for aggressive nomination, and trivially true for regular).
    fn update_selection(&mut self, now: Instant) {
        for c in 0..self.components.len() {
            let id = self.components[c].id;
            let best = self
                .pairs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.component == id && p.valid && p.nominated)
                .max_by_key(|(_, p)| p.priority)
                .map(|(i, _)| i);
            let Some(best) = best else { continue };
            if self.components[c].selected == Some(best) {
                continue;
            }
            let jitter = self.consent_jitter();
            let comp = &mut self.components[c];
            comp.selected = Some(best);
            comp.previous = None;
            comp.consent = Some(Consent {
                last_answered: now,
                next_check: now + jitter,
                in_flight: false,
                failing: false,
            });
            // Consent checks still out were for the pair selected before (an
            // ICE restart keeps it going): their answers or silence say
            // nothing of the new one, and must not mark it failing.
            self.in_flight.retain(
                |t| !matches!(t.purpose, Purpose::Consent { component } if component == id),
            );
            self.stop_checks_for(id);
            let p = &self.pairs[best];
            self.events.push_back(IceEvent::SelectedPair {
                component: id,
                local: self.local[p.local].clone(),
                remote: self.remote[p.remote].clone(),
            });
        }
        if self.components_in_use().all(|c| c.selected.is_some()) {
            // §8.1.2: with every component selected the check list is done,
            // and the session a restart replaced is over.
            self.checklist = ChecklistState::Completed;
            self.triggered.retain(|&p| self.pairs[p].nominating);
            self.previous_session = None;
        }
    }

    /// §8.1.2: once a component has its selected pair, its other checks
    /// stop: no new ones, and those in flight are no longer retransmitted.
    fn stop_checks_for(&mut self, component: u16) {
        let pairs = &self.pairs;
        self.triggered
            .retain(|&p| pairs[p].component != component || pairs[p].nominating);
        for t in &mut self.in_flight {
            if let Purpose::Check { pair, .. } = t.purpose {
                if pairs[pair].component == component && !pairs[pair].nominating {
                    t.retransmit = false;
                }
            }
        }
    }

    fn component_selected(&self, component: u16) -> bool {
        self.component(component)
            .is_some_and(|c| c.selected.is_some())
    }

    /// RFC 8445 §6.1.2.2: the number of components is the smaller of both
    /// sides'. Once the peer has signalled everything, a component it has no
    /// candidate for is not in use (e.g. RTCP when it answered rtcp-mux).
    fn components_in_use(&self) -> impl Iterator<Item = &ComponentState> {
        self.components.iter().filter(|c| {
            c.id == 1
                || !self.remote_end_of_candidates
                || self.remote.iter().any(|r| r.component == c.id)
        })
    }

    // ----- consent freshness (RFC 7675) -------------------------------------------

    fn consent_jitter(&mut self) -> Duration {
        // Uniform over [0.8, 1.2] · interval (RFC 7675 §5.1).
        let factor = 0.8 + 0.4 * (self.rng.next_u32() as f64 / u32::MAX as f64);
        self.config.consent_interval.mul_f64(factor)
    }

    fn drive_consent(&mut self, now: Instant) {
        for c in 0..self.components.len() {
            let comp = &self.components[c];
            let Some(consent) = comp.consent.as_ref() else {
                continue;
            };
            if consent.in_flight || now < consent.next_check {
                continue;
            }
            let Some((local, remote, local_ufrag, remote_credentials, generation)) =
                self.consent_target(comp)
            else {
                continue;
            };
            let component = comp.id;
            let id = TransactionId::random(self.rng.as_mut());
            let priority = local.peer_reflexive_priority();
            let contents = self.build_check(id, &local_ufrag, &remote_credentials, priority, false);
            if let Some(consent) = self.components[c].consent.as_mut() {
                consent.in_flight = true;
            }
            let policy = self.config.consent_retransmit;
            let purpose = Purpose::Consent { component };
            self.start_transaction(
                now,
                id,
                purpose,
                contents,
                local.base,
                remote.address,
                policy,
            );
            if let Some(t) = self.in_flight.last_mut() {
                t.generation = generation;
            }
        }
    }

    /// The pair consent is kept for, with the credentials of its session:
    /// the selected pair, or during a restart the one media still uses.
    #[allow(clippy::type_complexity)]
    fn consent_target(
        &self,
        comp: &ComponentState,
    ) -> Option<(Candidate, Candidate, String, IceCredentials, u32)> {
        if let Some(selected) = comp.selected {
            let p = &self.pairs[selected];
            return Some((
                self.local[p.local].clone(),
                self.remote[p.remote].clone(),
                self.local_credentials.ufrag.clone(),
                self.remote_credentials.clone()?,
                self.generation,
            ));
        }
        let (local, remote) = comp.previous.clone()?;
        let previous = self.previous_session.as_ref()?;
        Some((
            local,
            remote,
            previous.local.ufrag.clone(),
            previous.remote.clone(),
            previous.generation,
        ))
    }

    fn on_consent_response(
        &mut self,
        now: Instant,
        component: u16,
        msg: &Message<'_>,
        symmetric: bool,
    ) {
        let answered = symmetric && msg.class() == Class::Success;
        if !answered {
            self.on_consent_unanswered(now, component);
            return;
        }
        let next = now + self.consent_jitter();
        if let Some(consent) = self
            .component_mut(component)
            .and_then(|c| c.consent.as_mut())
        {
            consent.in_flight = false;
            consent.failing = false;
            consent.last_answered = now;
            consent.next_check = next;
        }
    }

    fn on_consent_unanswered(&mut self, now: Instant, component: u16) {
        let retry = self.config.consent_retry_interval;
        let timeout = self.config.consent_timeout;
        let mut lost = false;
        if let Some(consent) = self
            .component_mut(component)
            .and_then(|c| c.consent.as_mut())
        {
            consent.in_flight = false;
            consent.failing = true;
            consent.next_check = now + retry;
            lost = now >= consent.last_answered + timeout;
        }
        if lost {
            // RFC 7675 §5.1: stop sending on the pair; the call layer may restart ICE.
            self.consent_lost = true;
            self.previous_session = None;
            for comp in &mut self.components {
                comp.consent = None;
                comp.previous = None;
            }
        }
    }

    // ----- connection state --------------------------------------------------------

    fn update_state(&mut self) {
        self.check_for_failure();
        let new = self.compute_state();
        if new != self.state {
            self.state = new;
            self.events.push_back(IceEvent::ConnectionState(new));
        }
    }

    /// §6.1.2.1/§8.1.2: a component with no valid pair and nothing left to
    /// check fails the check list — only once the peer has sent all its
    /// candidates and our own gathering is over.
    fn check_for_failure(&mut self) {
        if self.checklist != ChecklistState::Running || !self.remote_end_of_candidates {
            return;
        }
        if self.gathering() || !self.triggered.is_empty() {
            return;
        }
        let hopeless = self.components_in_use().any(|c| {
            c.selected.is_none()
                && !self.pairs.iter().any(|p| {
                    p.component == c.id && (p.valid || p.state.is_pending() || p.nominating)
                })
        });
        if hopeless {
            self.checklist = ChecklistState::Failed;
        }
    }

    fn compute_state(&self) -> ConnectionState {
        if self.consent_lost || self.checklist == ChecklistState::Failed {
            return ConnectionState::Failed;
        }
        if self
            .components
            .iter()
            .any(|c| c.consent.as_ref().is_some_and(|k| k.failing))
        {
            return ConnectionState::Disconnected;
        }
        if self.components_in_use().all(|c| c.selected.is_some()) {
            let checks_in_flight = self.pairs.iter().any(|p| p.state == PairState::InProgress);
            return if checks_in_flight {
                ConnectionState::Connected
            } else {
                ConnectionState::Completed
            };
        }
        if self.remote_credentials.is_some() && !self.pairs.is_empty() {
            return ConnectionState::Checking;
        }
        if self.generation > 0 {
            return ConnectionState::Checking;
        }
        ConnectionState::New
    }
}

/// Pairs across scopes waste checks that cannot work: a loopback address
/// only reaches loopback, an IPv6 link-local only link-local.
fn scope_compatible(a: SocketAddr, b: SocketAddr) -> bool {
    let scope = |s: SocketAddr| match s.ip() {
        std::net::IpAddr::V4(v4) => (v4.is_loopback(), false),
        std::net::IpAddr::V6(v6) => (v6.is_loopback(), is_link_local_v6(&v6)),
    };
    scope(a) == scope(b)
}
