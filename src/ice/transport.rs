//! The ICE agent with its TURN relays: everything that carries one media
//! stream's packets, still sans-IO.
//!
//! The agent treats a relayed candidate like any other base. This layer sits
//! between it and the wire: a transmit whose source is a relayed address is
//! wrapped by that allocation's TURN client and leaves from the client's own
//! socket towards the server; what the server relays back is unwrapped and
//! offered to the agent (STUN) or returned as media. Permissions follow the
//! agent's checks (the first check to a peer creates one), and a channel is
//! bound as soon as a relayed pair is selected, so media pays 4 bytes of
//! framing instead of a Send indication's 36.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::{Candidate, CandidateType, IceAgent, IceEvent, Transmit};
use crate::stun::{is_stun, Message, Method};
use crate::turn::{TurnClient, TurnClientConfig, TurnEvent, TurnInput, TurnState};

/// Local preference for relayed candidates: below every host and
/// server-reflexive candidate by type preference already; this orders
/// several relays among themselves.
const RELAY_LOCAL_PREFERENCE: u16 = 65_535;

/// What an incoming datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// ICE or TURN signalling, consumed.
    Control,
    /// Media (RTP/RTCP, or anything not STUN) from `from`, which is the
    /// peer's address even when it came through a relay.
    Media {
        component: Option<u16>,
        from: SocketAddr,
        relayed: bool,
        data: &'a [u8],
    },
    /// Malformed or unexpected, counted by the layer that dropped it.
    Dropped,
}

/// A TURN client's event, tagged with the relay it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayEvent {
    pub relay: usize,
    pub component: u16,
    pub server: SocketAddr,
    pub event: TurnEvent,
}

/// Why media could not be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("component {0} has no pair to send on (ICE not connected, or consent lost)")]
    NoPair(u16),
    #[error("the relay for {0} is gone: {1}")]
    Relay(SocketAddr, crate::turn::TurnError),
}

struct Relay {
    component: u16,
    /// The local socket (UDP) or connection (TCP/TLS) address the client
    /// talks to its server from.
    base: SocketAddr,
    client: TurnClient,
    /// Allocated or failed: no longer holds gathering open.
    settled: bool,
}

pub struct IceTransport {
    agent: IceAgent,
    /// Peers without ICE, per component: media goes to them from a host
    /// base with no checks (RFC 8839 §3.2 talks to such peers plainly).
    plain: Vec<PlainPeer>,
    relays: Vec<Relay>,
    now: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
    relay_events: VecDeque<RelayEvent>,
    /// When media last arrived, and whether the silence since has been
    /// probed with a consent check already.
    last_media: Option<Instant>,
    silence_probed: bool,
}

/// Media normally arrives every 20 ms: this long without any while a pair
/// is selected sends the consent checks at once instead of within 4–6 s.
/// A NAT that lost its mapping loses both directions at the same moment,
/// so both peers notice together, and the restart can start on both.
pub const MEDIA_SILENCE: Duration = Duration::from_millis(600);

/// A peer that does not do ICE.
struct PlainPeer {
    component: u16,
    base: SocketAddr,
    remote: SocketAddr,
    latched: bool,
}

/// An `IceTransport` is an agent with relays: read-only and signalling
/// calls reach the agent directly. The transport's own `handle_*` and
/// `poll_*` shadow the agent's, so datagrams always pass through the relays.
impl std::ops::Deref for IceTransport {
    type Target = IceAgent;

    fn deref(&self) -> &IceAgent {
        &self.agent
    }
}

impl std::ops::DerefMut for IceTransport {
    fn deref_mut(&mut self) -> &mut IceAgent {
        &mut self.agent
    }
}

impl IceTransport {
    pub fn new(agent: IceAgent, now: Instant) -> Self {
        IceTransport {
            agent,
            plain: Vec::new(),
            relays: Vec::new(),
            now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            relay_events: VecDeque::new(),
            last_media: None,
            silence_probed: false,
        }
    }

    pub fn agent(&self) -> &IceAgent {
        &self.agent
    }

    /// The agent, once the relays are released (or given up).
    pub fn into_agent(self) -> IceAgent {
        self.agent
    }

    /// For signalling (credentials, remote candidates, role, restart).
    /// Call [`handle_timeout`](Self::handle_timeout) or poll afterwards so
    /// the consequences are collected.
    pub fn agent_mut(&mut self) -> &mut IceAgent {
        &mut self.agent
    }

    /// Allocates a relay for `component` from the socket or connection at
    /// `base`; its relayed candidate joins the agent when allocated, and
    /// gathering stays open until then (or until it fails).
    pub fn add_turn_server(
        &mut self,
        now: Instant,
        component: u16,
        base: SocketAddr,
        config: TurnClientConfig,
        rng: Box<dyn RngCore + Send>,
    ) -> usize {
        self.now = now;
        self.agent.set_external_gathering(true);
        self.relays.push(Relay {
            component,
            base,
            client: TurnClient::new(config, now, rng),
            settled: false,
        });
        self.pump();
        self.relays.len() - 1
    }

    pub fn relay(&self, index: usize) -> Option<&TurnClient> {
        self.relays.get(index).map(|r| &r.client)
    }

    pub fn relays(&self) -> impl Iterator<Item = &TurnClient> {
        self.relays.iter().map(|r| &r.client)
    }

    /// Offer a datagram (or one framed message of a TURN stream) received
    /// from `source` on the local socket or connection at `destination`.
    pub fn handle_packet<'a>(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &'a [u8],
    ) -> Received<'a> {
        self.now = now;
        let received = match self.relay_for_wire(source, destination, data) {
            Some(i) => self.on_relay_packet(now, i, data),
            None if self.agent.handle_packet(now, source, destination, data) => Received::Control,
            None => Received::Media {
                component: self.component_of_base(destination),
                from: source,
                relayed: false,
                data,
            },
        };
        if matches!(received, Received::Media { .. }) {
            self.last_media = Some(now);
            self.silence_probed = false;
        }
        self.pump();
        received
    }

    /// When the current media silence becomes worth a consent check.
    fn silence_deadline(&self) -> Option<Instant> {
        if self.silence_probed || !self.agent.has_selected_pair() {
            return None;
        }
        self.last_media.map(|at| at + MEDIA_SILENCE)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        for r in &mut self.relays {
            if r.client.poll_timeout().is_some_and(|t| t <= now) {
                r.client.handle_timeout(now);
            }
        }
        if self.silence_deadline().is_some_and(|t| t <= now) {
            tracing::debug!("no media for {MEDIA_SILENCE:?}: checking consent now");
            self.silence_probed = true;
            self.agent.check_consent_now(now);
        } else if self.agent.poll_timeout().is_some_and(|t| t <= now) {
            self.agent.handle_timeout(now);
        }
        self.pump();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.relays
            .iter()
            .filter_map(|r| r.client.poll_timeout())
            .chain(self.agent.poll_timeout())
            .chain(self.silence_deadline())
            .min()
    }

    /// The next datagram for the wire; its source is always a local socket
    /// or TURN connection address, never a relayed address.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pump();
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.pump();
        self.events.pop_front()
    }

    pub fn poll_relay_event(&mut self) -> Option<RelayEvent> {
        self.relay_events.pop_front()
    }

    /// A peer without ICE at `remote` (its SDP's `c=`/`m=` address) for
    /// `component`: media goes there from our host base of the same
    /// family, and the peer is re-learnt from the source of the first
    /// media it sends (latching: a NAT in front of it rewrites the address
    /// its SDP named). `None` without a host candidate to send from.
    pub fn set_plain_peer(&mut self, component: u16, remote: SocketAddr) -> Option<SocketAddr> {
        let base = self
            .agent
            .local_candidates()
            .iter()
            .find(|c| {
                c.component == component
                    && c.kind == CandidateType::Host
                    && c.address.is_ipv4() == remote.is_ipv4()
            })?
            .base;
        self.plain.retain(|p| p.component != component);
        self.plain.push(PlainPeer {
            component,
            base,
            remote,
            latched: false,
        });
        Some(base)
    }

    /// The component whose media may come from `from`: the remote end of
    /// its media pair or of any valid pair, or its plain peer — which
    /// latches onto the first source it hears from.
    pub fn accept_media(&mut self, from: SocketAddr) -> Option<u16> {
        if let Some(c) = (1..=2).find(|c| {
            self.agent
                .media_pair(*c)
                .is_some_and(|(_, remote)| remote.address == from)
        }) {
            return Some(c);
        }
        if let Some(c) = self.agent.valid_remote(from) {
            return Some(c);
        }
        let p = self
            .plain
            .iter_mut()
            .find(|p| p.remote == from || !p.latched)?;
        if !p.latched {
            p.latched = true;
            if p.remote != from {
                tracing::info!(signalled = %p.remote, %from, "latched onto the peer's media source");
                p.remote = from;
            }
        }
        Some(p.component)
    }

    /// Sends media on `component`'s current pair (the selected one, or the
    /// best valid one before nomination), or to its plain peer.
    pub fn send_media(
        &mut self,
        now: Instant,
        component: u16,
        data: &[u8],
    ) -> Result<(), SendError> {
        self.now = now;
        let (source, destination) = match self.agent.media_pair(component) {
            Some((local, remote)) => (local.base, remote.address),
            None => {
                let p = self
                    .plain
                    .iter()
                    .find(|p| p.component == component)
                    .ok_or(SendError::NoPair(component))?;
                (p.base, p.remote)
            }
        };
        let t = Transmit {
            source,
            destination,
            contents: data.to_vec(),
        };
        self.route(t)?;
        Ok(())
    }

    /// Fresh allocations on every TURN server, for an ICE restart after the
    /// path to the servers changed (a NAT lost its mapping: the server no
    /// longer knows our new address, RFC 8656 §3 ties an allocation to its
    /// 5-tuple). The old ones are released (best effort) and their relayed
    /// candidates stay, dead; the new ones join the agent as they come,
    /// and gathering is open until they have.
    pub fn reallocate(&mut self, now: Instant, rng: &mut dyn FnMut() -> Box<dyn RngCore + Send>) {
        self.now = now;
        for r in &mut self.relays {
            if let Some(dead) = r.client.relayed_address() {
                self.agent.retire_local_candidate(dead);
            }
            r.client.release(now);
            let config = r.client.config().clone();
            r.client = TurnClient::new(config, now, rng());
            r.settled = false;
        }
        if !self.relays.is_empty() {
            self.agent.set_external_gathering(true);
        }
        self.pump();
    }

    /// Deallocates every relay (each waits at most 2 s for an answer).
    pub fn release(&mut self, now: Instant) {
        self.now = now;
        for r in &mut self.relays {
            r.client.release(now);
        }
        self.pump();
    }

    /// True once no relay is still allocated or releasing.
    pub fn released(&self) -> bool {
        self.relays
            .iter()
            .all(|r| matches!(r.client.state(), TurnState::Released | TurnState::Failed))
    }

    // ----- internals ---------------------------------------------------------

    fn relay_for_wire(
        &self,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> Option<usize> {
        let i = self
            .relays
            .iter()
            .position(|r| r.client.server() == source && r.base == destination)?;
        // The same server may also be the agent's STUN server: its Binding
        // answers belong to the agent's gathering.
        if is_stun(data) && Message::decode(data).is_ok_and(|m| m.method() == Method::BINDING) {
            return None;
        }
        Some(i)
    }

    fn on_relay_packet<'a>(&mut self, now: Instant, i: usize, data: &'a [u8]) -> Received<'a> {
        let relay = &mut self.relays[i];
        match relay.client.handle_packet(now, data) {
            TurnInput::Relayed { peer, data } => {
                let Some(relayed) = relay.client.relayed_address() else {
                    return Received::Dropped;
                };
                let component = relay.component;
                if self.agent.handle_packet(now, peer, relayed, data) {
                    Received::Control
                } else {
                    Received::Media {
                        component: Some(component),
                        from: peer,
                        relayed: true,
                        data,
                    }
                }
            }
            TurnInput::Handled => Received::Control,
            TurnInput::Dropped => Received::Dropped,
        }
    }

    fn component_of_base(&self, base: SocketAddr) -> Option<u16> {
        self.agent
            .local_candidates()
            .iter()
            .find(|c| c.base == base)
            .map(|c| c.component)
    }

    /// Sends `t` directly, or through the relay whose relayed address is its source.
    fn route(&mut self, t: Transmit) -> Result<(), SendError> {
        let now = self.now;
        match self
            .relays
            .iter_mut()
            .find(|r| r.client.relayed_address() == Some(t.source))
        {
            Some(r) => {
                let server = r.client.server();
                r.client
                    .send_to(now, t.destination, &t.contents)
                    .map_err(|e| SendError::Relay(server, e))?;
                while let Some(contents) = r.client.poll_transmit() {
                    self.transmits.push_back(Transmit {
                        source: r.base,
                        destination: server,
                        contents,
                    });
                }
            }
            None => self.transmits.push_back(t),
        }
        Ok(())
    }

    /// Moves work between the agent and the relays until both are quiet.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.agent.poll_transmit() {
                progressed = true;
                if let Err(e) = self.route(t) {
                    tracing::debug!(error = %e, "ICE transmit not relayed");
                }
            }
            for i in 0..self.relays.len() {
                while let Some(event) = self.relays[i].client.poll_event() {
                    progressed = true;
                    self.on_relay_event(i, event);
                }
                let r = &mut self.relays[i];
                while let Some(contents) = r.client.poll_transmit() {
                    progressed = true;
                    self.transmits.push_back(Transmit {
                        source: r.base,
                        destination: r.client.server(),
                        contents,
                    });
                }
            }
            while let Some(event) = self.agent.poll_event() {
                progressed = true;
                self.on_agent_event(&event);
                self.events.push_back(event);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_agent_event(&mut self, event: &IceEvent) {
        let IceEvent::SelectedPair { local, remote, .. } = event else {
            return;
        };
        if local.kind != CandidateType::Relayed {
            return;
        }
        let now = self.now;
        if let Some(r) = self
            .relays
            .iter_mut()
            .find(|r| r.client.relayed_address() == Some(local.address))
        {
            if let Err(e) = r.client.bind_channel(now, remote.address) {
                tracing::warn!(error = %e, "no TURN channel for the selected pair");
            }
        }
    }

    fn on_relay_event(&mut self, i: usize, event: TurnEvent) {
        let r = &mut self.relays[i];
        let server = r.client.server();
        match &event {
            TurnEvent::Allocated {
                relayed, mapped, ..
            } => {
                tracing::info!(%server, %relayed, "TURN allocation ready");
                let mapped = mapped.unwrap_or(r.base);
                let candidate = Candidate::relayed(
                    *relayed,
                    mapped,
                    server,
                    r.component,
                    RELAY_LOCAL_PREFERENCE - i.min(1000) as u16,
                );
                r.settled = true;
                self.agent.add_local_candidate(candidate);
                self.settle_gathering();
            }
            TurnEvent::Failed(error) => {
                tracing::warn!(%server, %error, "TURN relay unavailable");
                r.settled = true;
                self.settle_gathering();
            }
            _ => {}
        }
        let component = self.relays[i].component;
        self.relay_events.push_back(RelayEvent {
            relay: i,
            component,
            server,
            event,
        });
    }

    fn settle_gathering(&mut self) {
        if self.relays.iter().all(|r| r.settled) {
            self.agent.set_external_gathering(false);
        }
    }
}

#[cfg(test)]
mod plain_peer_tests {
    use super::*;
    use crate::ice::IceConfig;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_without_ice_gets_media_and_is_latched_onto_once() {
        let now = Instant::now();
        let mut agent = IceAgent::new(
            IceConfig::default(),
            now,
            Box::new(StdRng::seed_from_u64(3)),
        );
        agent.add_host_candidate(1, addr("10.0.0.1:4000"));
        let mut ice = IceTransport::new(agent, now);
        assert_eq!(ice.send_media(now, 1, b"x"), Err(SendError::NoPair(1)));
        let signalled = addr("192.0.2.7:5000");
        assert_eq!(
            ice.set_plain_peer(1, signalled),
            Some(addr("10.0.0.1:4000"))
        );
        while ice.poll_transmit().is_some() {}
        ice.send_media(now, 1, b"rtp").unwrap();
        let t = ice.poll_transmit().expect("sent");
        assert_eq!(
            (t.source, t.destination),
            (addr("10.0.0.1:4000"), signalled)
        );
        // Its media really comes from a NAT's address: we follow it there…
        let natted = addr("198.51.100.9:6000");
        assert_eq!(ice.accept_media(natted), Some(1));
        ice.send_media(now, 1, b"rtp").unwrap();
        assert_eq!(ice.poll_transmit().unwrap().destination, natted);
        // …and only once: a third party cannot take the stream over.
        assert_eq!(ice.accept_media(addr("203.0.113.66:7000")), None);
        assert_eq!(ice.accept_media(natted), Some(1));
    }
}

#[cfg(test)]
mod silence_tests {
    use super::*;
    use crate::ice::{ConnectionState, IceConfig};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Two transports on one link, host candidates only, connected: the
    /// world's time, and each side's transport.
    fn connected() -> (Instant, [IceTransport; 2]) {
        let start = Instant::now();
        let mut sides = [1u8, 2].map(|n| {
            let mut agent = IceAgent::new(
                IceConfig::default(),
                start,
                Box::new(StdRng::seed_from_u64(n.into())),
            );
            agent.add_host_candidate(1, format!("10.0.0.{n}:4000").parse().unwrap());
            agent.set_controlling(n == 1);
            IceTransport::new(agent, start)
        });
        for (me, peer) in [(0, 1), (1, 0)] {
            let credentials = sides[peer].local_credentials().clone();
            let candidates = sides[peer].local_candidates().to_vec();
            let ice = sides[me].agent_mut();
            ice.set_remote_credentials(credentials);
            candidates
                .into_iter()
                .for_each(|c| ice.add_remote_candidate(c));
            ice.end_of_remote_candidates();
        }
        let mut now = start;
        while !sides.iter().all(|s| s.has_selected_pair()) {
            assert!(now - start < Duration::from_secs(5), "never connected");
            now += Duration::from_millis(5);
            exchange(now, &mut sides, true);
        }
        (now, sides)
    }

    /// Moves every pending datagram to the other side (or drops it when
    /// the link is `up == false`), after running due timers.
    fn exchange(now: Instant, sides: &mut [IceTransport; 2], up: bool) -> usize {
        let mut delivered = 0;
        for s in sides.iter_mut() {
            s.handle_timeout(now);
        }
        for from in 0..2 {
            while let Some(t) = sides[from].poll_transmit() {
                if up {
                    delivered += 1;
                    let to = &mut sides[1 - from];
                    let _ = to.handle_packet(now, t.source, t.destination, &t.contents);
                }
            }
        }
        delivered
    }

    /// Both sides send 20 ms media until `until`; the link is cut at `cut`.
    /// When each side's state first became Disconnected.
    fn talk(
        mut now: Instant,
        sides: &mut [IceTransport; 2],
        cut: Instant,
        until: Instant,
    ) -> [Option<Instant>; 2] {
        let mut disconnected = [None, None];
        let mut next_frame = now;
        while now < until {
            now += Duration::from_millis(5);
            if now >= next_frame {
                next_frame += Duration::from_millis(20);
                for s in sides.iter_mut() {
                    let _ = s.send_media(now, 1, &[0x80, 0x60, 0, 1]);
                }
            }
            exchange(now, sides, now < cut);
            for (i, s) in sides.iter().enumerate() {
                if s.state() == ConnectionState::Disconnected && disconnected[i].is_none() {
                    disconnected[i] = Some(now);
                }
            }
        }
        disconnected
    }

    #[test]
    fn media_silence_checks_consent_at_once_on_both_sides() {
        let (now, mut sides) = connected();
        // Let the scheduled consent checks fall anywhere in their 4–6 s.
        let cut = now + Duration::from_millis(2300);
        let seen = talk(now, &mut sides, cut, cut + Duration::from_secs(3));
        let [a, b] = seen.map(|at| at.expect("the loss went unnoticed") - cut);
        // Silence (0.6 s), then one unanswered check (1.5 s), where the
        // schedule alone would take up to 6 s more.
        for after in [a, b] {
            assert!(
                after <= MEDIA_SILENCE + Duration::from_millis(1600),
                "noticed after {a:?} and {b:?}"
            );
        }
        let apart = a.max(b) - a.min(b);
        assert!(apart <= Duration::from_millis(100), "{a:?} and {b:?}");
    }

    #[test]
    fn a_silence_with_the_path_intact_costs_one_answered_check() {
        let (now, mut sides) = connected();
        // Media flows from side 0, then stops (hold) while the link stays up.
        let mut t = now;
        for _ in 0..50 {
            t += Duration::from_millis(20);
            let _ = sides[0].send_media(t, 1, &[0x80, 0x60, 0, 1]);
            exchange(t, &mut sides, true);
        }
        let quiet_since = t;
        let mut probes = Vec::new();
        while t < quiet_since + Duration::from_secs(3) {
            t += Duration::from_millis(5);
            sides.iter_mut().for_each(|s| s.handle_timeout(t));
            while let Some(sent) = sides[1].poll_transmit() {
                probes.push(t - quiet_since);
                let _ = sides[0].handle_packet(t, sent.source, sent.destination, &sent.contents);
            }
            while let Some(sent) = sides[0].poll_transmit() {
                let _ = sides[1].handle_packet(t, sent.source, sent.destination, &sent.contents);
            }
            assert_ne!(sides[1].state(), ConnectionState::Disconnected);
        }
        let probed =
            |d: &Duration| *d >= MEDIA_SILENCE && *d < MEDIA_SILENCE + Duration::from_millis(30);
        assert_eq!(probes.iter().filter(|d| probed(d)).count(), 1, "{probes:?}");
    }
}
