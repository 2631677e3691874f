//! One call's media transport: a UDP socket (RTP and RTCP multiplexed,
//! RFC 5761), the ICE agent running on it, and the SDP that describes it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use thiserror::Error;

use tokio::sync::{mpsc, oneshot, watch};

use super::audio::{self, AudioReport, AudioSetup, LiveAudio};
use crate::audio::io::{Sink, Source};
use crate::ice::{
    Candidate, CandidateType, ConnectionState, IceAgent, IceConfig, IceCredentials, IceEvent,
    PairState,
};
use crate::net::{bind_sockets, spawn_session_with_relays, IceCommand, IceSession, RelayServer};
use crate::sdp::{
    self, CodecName, Direction, IceDescription, LocalMedia, Negotiated, SdpError,
    SessionDescription,
};

/// How long gathering may hold up an offer or answer.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum MediaError {
    #[error("cannot open a media socket: {0}")]
    Socket(String),
    #[error(transparent)]
    Sdp(#[from] SdpError),
    #[error("ICE failed: no candidate pair works")]
    IceFailed,
    #[error("ICE did not connect within {0} s")]
    IceTimeout(u64),
    #[error("the peer does not do ICE, and we have no host address to send to {0} from (--ice-policy relay?)")]
    NoIce(SocketAddr),
}

#[derive(Clone, Debug, Default)]
pub struct MediaOptions {
    /// STUN servers for server-reflexive candidates.
    pub stun: Vec<SocketAddr>,
    /// Voice codecs in order of preference; empty: Opus, PCMU, PCMA.
    pub codecs: Vec<CodecName>,
    /// TURN servers for relayed candidates (UDP, TCP or TLS to the server).
    pub turn: Vec<RelayServer>,
    /// `--ice-policy relay`: offer and check relayed candidates only.
    pub relay_only: bool,
    /// `--ice-policy none`: offer no ICE at all (plain RTP, for peers and
    /// gateways that cannot take it).
    pub no_ice: bool,
    pub nomination: crate::ice::Nomination,
    /// Jitter buffer bounds in ms; 0 keeps the default (20 and 1000).
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
}

/// The pair ICE selected, as the call reports it.
#[derive(Clone, Debug)]
pub struct SelectedPair {
    pub local: Candidate,
    pub remote: Candidate,
    /// From `start_checks` to the selection.
    pub after: Duration,
    /// False for a peer without ICE: plain RTP to its SDP address, no
    /// checks (the remote "candidate" is that address).
    pub checked: bool,
}

/// The Ta we ask for with `a=ice-pacing`: one audio stream's checks are a
/// few hundred bytes every 20 ms, well within RFC 8445 §14.2's budget, and
/// a relayed pair late in the check list gets its turn in a fifth of the
/// time 50 ms would take.
const LOCAL_PACING: Duration = Duration::from_millis(20);
/// RFC 8445 §14.2's default, for a peer that does not signal a pacing.
const DEFAULT_PACING: Duration = Duration::from_millis(50);

pub struct CallMedia {
    session: IceSession,
    /// The jitter buffer's bounds, ms (0: default).
    jitter_bounds: (u32, u32),
    /// The caller controls (RFC 8445 §6.1.1: the offerer does).
    controlling: bool,
    /// What gathering found (offered, unless we offer no ICE).
    gathered: Vec<Candidate>,
    local: LocalMedia,
    /// Our last offer, to read the answer against.
    offered: Option<SessionDescription>,
    pub negotiated: Option<Negotiated>,
    checks_started: Option<Instant>,
    selected: Option<SelectedPair>,
    state: ConnectionState,
    /// The relays were allocated afresh since the path was lost: a second
    /// restart (the first re-INVITE refused) reuses them, where a new
    /// allocation from the same 5-tuple would be refused (437).
    relays_renewed: bool,
    /// The negotiation left ICE out: media would go here.
    without_ice: Option<SocketAddr>,
    /// The direction the audio task follows (hold and resume).
    direction: watch::Sender<Direction>,
    /// Every pair checked, with its last state and round trip.
    pairs: Vec<CheckedPair>,
    /// Every state change of every pair, in order.
    checks: Vec<CheckEvent>,
}

/// One change of a pair's state, when it happened (the report's check
/// timeline).
#[derive(Clone, Debug)]
pub struct CheckEvent {
    pub at: Instant,
    pub component: u16,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: PairState,
    pub rtt: Option<Duration>,
    /// The pair was selected here.
    pub nominated: bool,
}

/// A candidate pair as the checks left it, for the call report.
#[derive(Clone, Debug)]
pub struct CheckedPair {
    pub component: u16,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: PairState,
    pub rtt: Option<Duration>,
}

impl CallMedia {
    /// Binds a socket on `ip`, starts ICE (controlling for the caller) and
    /// waits for gathering to end.
    pub async fn start(
        ip: IpAddr,
        controlling: bool,
        options: &MediaOptions,
    ) -> Result<Self, MediaError> {
        // Component 2 (RTCP) too, for peers that do not multiplex; unused
        // (no remote candidates for it) when the answer agrees to rtcp-mux.
        let components = if options.no_ice { 1 } else { 2 };
        let sockets = bind_sockets(&[ip], components)
            .await
            .map_err(|e| MediaError::Socket(e.to_string()))?;
        let mut rng = StdRng::from_os_rng();
        let mut agent = IceAgent::new(
            IceConfig {
                nomination: options.nomination,
                components,
                ..IceConfig::default()
            },
            Instant::now(),
            Box::new(StdRng::from_rng(&mut rng)),
        );
        agent.set_controlling(controlling);
        if !options.no_ice {
            for server in &options.stun {
                agent.add_stun_server(*server);
            }
        }
        let turn = if options.no_ice {
            Vec::new()
        } else {
            options.turn.clone()
        };
        let mut session = spawn_session_with_relays(agent, sockets, turn, options.relay_only)
            .await
            .map_err(|e| MediaError::Socket(e.to_string()))?;
        let candidates = gather(&mut session).await;
        let default = default_candidate(&candidates)
            .ok_or_else(|| MediaError::Socket("no candidate".into()))?;
        let rtcp_default = default_candidate_of(&candidates, 2);
        let credentials = session.local_credentials.clone();
        let local = LocalMedia {
            codecs: if options.codecs.is_empty() {
                vec![CodecName::Opus, CodecName::Pcmu, CodecName::Pcma]
            } else {
                options.codecs.clone()
            },
            dtmf: true,
            ptime: 20,
            direction: Direction::SendRecv,
            address: default,
            rtcp: rtcp_default,
            rtcp_mux: true,
            ice: (!options.no_ice).then(|| IceDescription {
                ufrag: credentials.ufrag,
                pwd: credentials.pwd,
                lite: false,
                options: Vec::new(),
                candidates: candidates.clone(),
                end_of_candidates: true,
                remote_candidates: Vec::new(),
                pacing_ms: Some(LOCAL_PACING.as_millis() as u32),
            }),
            session_id: rng.next_u32().into(),
            version: 1,
        };
        Ok(CallMedia {
            session,
            jitter_bounds: (options.jitter_min_ms, options.jitter_max_ms),
            controlling,
            gathered: candidates,
            local,
            offered: None,
            negotiated: None,
            checks_started: None,
            selected: None,
            state: ConnectionState::New,
            relays_renewed: false,
            without_ice: None,
            direction: watch::channel(Direction::SendRecv).0,
            pairs: Vec::new(),
            checks: Vec::new(),
        })
    }

    /// Our offer, as SDP bytes.
    pub fn offer(&mut self) -> Vec<u8> {
        let offer = sdp::offer(&self.local);
        let bytes = offer.to_bytes();
        self.offered = Some(offer);
        self.local.version += 1;
        bytes
    }

    /// Answers an offer and starts the checks; an error is a 488's reason.
    pub fn answer(&mut self, offer: &[u8]) -> Result<Vec<u8>, MediaError> {
        let offer = SessionDescription::parse(offer)?;
        let (answer, negotiated) = sdp::answer(&offer, &self.local)?;
        self.local.version += 1;
        self.start_checks(negotiated)?;
        Ok(answer.to_bytes())
    }

    /// A re-offer in the same session (same ICE credentials and candidates,
    /// a new version) that puts the call on hold (`sendonly`) or takes it
    /// off (`sendrecv`), RFC 3264 §8.4.
    pub fn reoffer(&mut self, hold: bool) -> Vec<u8> {
        self.local.direction = if hold {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        self.follow_selection();
        self.offer()
    }

    /// New checks: nothing is selected in the new generation yet, so the
    /// default candidate is back in `c=`/`m=`.
    fn forget_selection(&mut self) {
        if let Some(ice) = self.local.ice.as_mut() {
            ice.remote_candidates.clear();
        }
        if let Some(d) = default_candidate(&self.gathered) {
            self.local.address = d;
        }
        self.local.rtcp = default_candidate_of(&self.gathered, 2);
    }

    /// RFC 8839 §4.2.2: once ICE has selected, the controlling side's
    /// re-offers put the selected local candidate in `c=`/`m=` and name the
    /// selected remote one in `a=remote-candidates`, so that a middlebox
    /// or a lite peer reading the SDP sees where media really flows.
    ///
    /// The controlled side's answers carry the selected local candidate
    /// too (without `a=remote-candidates`): a peer that sends to our
    /// `c=`/`m=` address after ICE (baresip does) then uses the selected
    /// pair, not our relay.
    fn follow_selection(&mut self) {
        let Some(sel) = self.selected.as_ref().filter(|s| s.checked) else {
            return;
        };
        self.local.address = sel.local.address;
        if let Some(ice) = self.local.ice.as_mut() {
            ice.remote_candidates = if self.controlling {
                vec![(sel.remote.component, sel.remote.address)]
            } else {
                Vec::new()
            };
        }
    }

    /// An ICE restart (RFC 8445 §9): new local credentials, then a
    /// re-offer carrying them. Media stays on the old pair until the new
    /// checks select one.
    pub async fn restart_offer(&mut self) -> Result<Vec<u8>, MediaError> {
        self.restart_local().await?;
        self.forget_selection();
        self.local.direction = Direction::SendRecv;
        Ok(self.offer())
    }

    /// Reads the answer to a re-offer: the direction media now flows in
    /// (and, for a restart, the peer's new credentials start the checks).
    pub fn apply_reanswer(&mut self, answer: &[u8]) -> Result<Direction, MediaError> {
        let negotiated = self.read_answer(answer)?;
        let restart = negotiated.restarts_ice(self.remote_ice());
        Ok(self.adopt(negotiated, restart))
    }

    /// Answers the peer's re-offer: hold, resume, codec change, or an ICE
    /// restart (new credentials: we restart too). The flag says whether
    /// ICE restarted, so the caller can wait for the new pair.
    pub async fn reanswer(&mut self, offer: &[u8]) -> Result<(Vec<u8>, bool), MediaError> {
        let offer = SessionDescription::parse(offer)?;
        let restart = offer
            .audio()
            .and_then(|a| a.ice.as_ref())
            .zip(self.remote_ice())
            .is_some_and(|(new, old)| new.ufrag != old.ufrag || new.pwd != old.pwd);
        if restart {
            self.restart_local().await?;
            self.forget_selection();
        } else {
            self.follow_selection();
        }
        self.local.direction = Direction::SendRecv;
        let (answer, negotiated) = sdp::answer(&offer, &self.local)?;
        self.local.version += 1;
        self.adopt(negotiated, restart);
        Ok((answer.to_bytes(), restart))
    }

    fn remote_ice(&self) -> Option<&IceDescription> {
        self.negotiated.as_ref().and_then(|n| n.remote_ice.as_ref())
    }

    /// New local credentials from the agent, for our next description.
    async fn restart_local(&mut self) -> Result<(), MediaError> {
        // Consent lost: the NAT in front of us may have changed our
        // address, so the TURN allocations are reached from a new 5-tuple
        // the servers do not know; allocate afresh and offer the new ones.
        self.drain_events();
        let lost = matches!(
            self.state,
            ConnectionState::Disconnected | ConnectionState::Failed
        ) && !self.relays_renewed;
        self.relays_renewed |= lost;
        let (tx, rx) = oneshot::channel();
        let command = if lost {
            IceCommand::RestartWithNewRelays(tx)
        } else {
            IceCommand::Restart(tx)
        };
        let _ = self.session.commands.send(command);
        let credentials = rx.await.map_err(|_| MediaError::IceFailed)?;
        if lost {
            let fresh = gather(&mut self.session).await;
            // The old relays were replaced: only the new ones are offered.
            if fresh.iter().any(|c| c.kind == CandidateType::Relayed) {
                self.gathered.retain(|c| c.kind != CandidateType::Relayed);
            }
            for c in fresh {
                if !self
                    .gathered
                    .iter()
                    .any(|g| g.address == c.address && g.component == c.component)
                {
                    self.gathered.push(c);
                }
            }
            if let Some(ice) = self.local.ice.as_mut() {
                ice.candidates = self.gathered.clone();
            }
        }
        if let Some(ice) = self.local.ice.as_mut() {
            ice.ufrag = credentials.ufrag;
            ice.pwd = credentials.pwd;
        }
        self.selected = None;
        Ok(())
    }

    /// Takes in what the ICE session said since last asked (state,
    /// selections, pair changes), without waiting.
    fn drain_events(&mut self) {
        while let Ok(event) = self.session.events.try_recv() {
            self.on_event(event);
        }
    }

    /// Waits for the path to break (`broken == false`: consent checks went
    /// unanswered (RFC 7675), so `Disconnected` or `Failed`) or, when it is
    /// broken, to work again (a pair selected); the state it reached.
    /// Meanwhile it keeps the call's view of ICE current. Never resolves
    /// without ICE.
    pub async fn path_change(&mut self, broken: bool) -> ConnectionState {
        if self.without_ice.is_some() {
            return std::future::pending().await;
        }
        loop {
            match self.session.events.recv().await {
                Some(event) => {
                    self.on_event(event);
                    let works = matches!(
                        self.state,
                        ConnectionState::Connected | ConnectionState::Completed
                    );
                    let fails = matches!(
                        self.state,
                        ConnectionState::Disconnected | ConnectionState::Failed
                    );
                    if (broken && works) || (!broken && fails) {
                        return self.state;
                    }
                }
                None => return std::future::pending().await,
            }
        }
    }

    /// A negotiation in a running call; after a restart the peer's new
    /// credentials and candidates go to the agent.
    fn adopt(&mut self, negotiated: Negotiated, restart: bool) -> Direction {
        if restart {
            if let Some(ice) = negotiated.remote_ice.clone() {
                self.checks_started = Some(Instant::now());
                self.send_remote(ice);
            }
        }
        self.follow(negotiated)
    }

    /// A new negotiation in a running call: the audio follows its
    /// direction.
    fn follow(&mut self, negotiated: Negotiated) -> Direction {
        let direction = negotiated.direction;
        let _ = self.direction.send(direction);
        self.negotiated = Some(negotiated);
        direction
    }

    /// Reads the answer to our offer and starts the checks.
    pub fn apply_answer(&mut self, answer: &[u8]) -> Result<(), MediaError> {
        let negotiated = self.read_answer(answer)?;
        self.start_checks(negotiated)
    }

    /// The peer's answer, read against our last offer.
    fn read_answer(&self, answer: &[u8]) -> Result<Negotiated, MediaError> {
        let answer = SessionDescription::parse(answer)?;
        let offer = self
            .offered
            .as_ref()
            .ok_or(SdpError::Mismatch("an answer without an offer"))?;
        Ok(sdp::apply_answer(offer, &answer)?)
    }

    fn start_checks(&mut self, negotiated: Negotiated) -> Result<(), MediaError> {
        let remote = negotiated.remote_ice.clone();
        let rtp = negotiated.remote_rtp;
        self.negotiated = Some(negotiated);
        let Some(ice) = remote else {
            // A peer without ICE: plain RTP to where its SDP points.
            self.without_ice = Some(rtp);
            let _ = self.session.commands.send(IceCommand::SetPlainPeer {
                component: 1,
                remote: rtp,
            });
            return Ok(());
        };
        self.send_remote(ice);
        self.checks_started = Some(Instant::now());
        Ok(())
    }

    /// The peer's credentials and candidates, to the agent.
    fn send_remote(&self, mut ice: IceDescription) {
        // Multiplexing: RTCP rides component 1, so the peer's component 2
        // candidates (offered for peers that do not) are not checked.
        if self.negotiated.as_ref().is_none_or(|n| n.rtcp_mux) {
            ice.candidates.retain(|c| c.component == 1);
        }
        let tx = &self.session.commands;
        // RFC 8839 §5.5: both sides pace at the larger Ta, and a side that
        // does not say wants the default 50 ms.
        let theirs = ice
            .pacing_ms
            .map_or(DEFAULT_PACING, |ms| Duration::from_millis(u64::from(ms)));
        let _ = tx.send(IceCommand::SetPacing(theirs.max(LOCAL_PACING)));
        let _ = tx.send(IceCommand::SetRemoteCredentials(IceCredentials {
            ufrag: ice.ufrag,
            pwd: ice.pwd,
        }));
        for c in ice.candidates {
            let _ = tx.send(IceCommand::AddRemoteCandidate(c));
        }
        // Without trickle (RFC 8838) the SDP holds every candidate there
        // will be (RFC 8839 §4.1): a peer that does not write
        // a=end-of-candidates (baresip) has sent them all too. Until the
        // end is known an unused component (RTCP, when multiplexed) would
        // keep the session from connecting.
        let trickles = ice.options.iter().any(|o| o == "trickle");
        if ice.end_of_candidates || !trickles {
            let _ = tx.send(IceCommand::EndOfRemoteCandidates);
        }
    }

    /// Waits until ICE selects a pair (or fails, or `timeout` passes).
    pub async fn connected(&mut self, timeout: Duration) -> Result<SelectedPair, MediaError> {
        if let Some(to) = self.without_ice {
            let local = self
                .gathered
                .iter()
                .find(|c| c.kind == CandidateType::Host && c.address.is_ipv4() == to.is_ipv4())
                .cloned()
                .ok_or(MediaError::NoIce(to))?;
            return Ok(SelectedPair {
                local,
                remote: Candidate::remote(to, CandidateType::Host, 0, "plain", 1, None),
                after: Duration::ZERO,
                checked: false,
            });
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = &self.selected {
                if matches!(
                    self.state,
                    ConnectionState::Connected | ConnectionState::Completed
                ) {
                    return Ok(s.clone());
                }
            }
            if self.state == ConnectionState::Failed {
                return Err(MediaError::IceFailed);
            }
            match tokio::time::timeout_at(deadline, self.session.events.recv()).await {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => return Err(MediaError::IceFailed),
                Err(_) => return Err(MediaError::IceTimeout(timeout.as_secs())),
            }
        }
    }

    fn on_event(&mut self, event: IceEvent) {
        match event {
            IceEvent::SelectedPair {
                local,
                remote,
                component,
            } => {
                let after = self.checks_started.map(|t| t.elapsed()).unwrap_or_default();
                self.checks.push(CheckEvent {
                    at: Instant::now(),
                    component,
                    local: local.base,
                    remote: remote.address,
                    state: PairState::Succeeded,
                    rtt: None,
                    nominated: true,
                });
                // RTCP's pair goes in the check log, not as the call's pair.
                if component != 1 {
                    return;
                }
                self.selected = Some(SelectedPair {
                    local,
                    remote,
                    after,
                    checked: true,
                });
            }
            IceEvent::ConnectionState(s) => {
                self.state = s;
                if matches!(s, ConnectionState::Connected | ConnectionState::Completed) {
                    self.relays_renewed = false;
                }
            }
            IceEvent::PairStateChanged {
                component,
                local,
                remote,
                state,
                rtt,
            } => {
                self.checks.push(CheckEvent {
                    at: Instant::now(),
                    component,
                    local,
                    remote,
                    state,
                    rtt,
                    nominated: false,
                });
                let pair = CheckedPair {
                    component,
                    local,
                    remote,
                    state,
                    rtt,
                };
                match self
                    .pairs
                    .iter_mut()
                    .find(|p| p.component == component && p.local == local && p.remote == remote)
                {
                    Some(p) => {
                        *p = CheckedPair {
                            rtt: rtt.or(p.rtt),
                            ..pair
                        }
                    }
                    None => self.pairs.push(pair),
                }
            }
            _ => {}
        }
    }

    /// Our candidates, as offered or answered.
    /// The TURN allocations behind our relayed candidates.
    pub fn relays(&self) -> Vec<crate::net::RelayInfo> {
        self.session
            .relays
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    pub fn local_candidates(&self) -> &[Candidate] {
        self.local.ice.as_ref().map_or(&[], |i| &i.candidates)
    }

    /// The peer's candidates, once negotiated.
    pub fn remote_candidates(&self) -> &[Candidate] {
        self.negotiated
            .as_ref()
            .and_then(|n| n.remote_ice.as_ref())
            .map_or(&[], |i| &i.candidates)
    }

    pub fn check_events(&self) -> &[CheckEvent] {
        &self.checks
    }

    pub fn checked_pairs(&self) -> &[CheckedPair] {
        &self.pairs
    }

    /// Starts the audio over the selected pair (after [`Self::connected`]).
    pub fn start_audio(&mut self, source: Source, sink: Sink) -> Option<AudioHandle> {
        let negotiated = self.negotiated.clone()?;
        // The media channel moves to the audio task; a closed one stays.
        let (_, closed) = mpsc::channel(1);
        let media = std::mem::replace(&mut self.session.media, closed);
        let (stop, stopped) = watch::channel(false);
        let _ = self.direction.send(negotiated.direction);
        let (keys, dtmf) = mpsc::unbounded_channel();
        let (mute, muted) = watch::channel(false);
        let (live_tx, live) = watch::channel(LiveAudio::default());
        let setup = AudioSetup {
            source,
            sink,
            mute: muted,
            live: live_tx,
            jitter_bounds: self.jitter_bounds,
            negotiated,
            direction: self.direction.subscribe(),
            dtmf,
        };
        let task = tokio::spawn(audio::run(
            setup,
            self.session.commands.clone(),
            media,
            stopped,
        ));
        Some(AudioHandle {
            stop,
            task,
            keys,
            mute,
            live,
        })
    }

    /// Ends the ICE session.
    pub fn close(&self) {
        let _ = self.session.commands.send(IceCommand::Shutdown);
    }

    /// Ends the ICE session and waits (at most 3 s) until its TURN
    /// allocations are released, so a relay is not left to expire.
    pub async fn shutdown(mut self) {
        self.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), &mut self.session.task).await;
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        self.close();
    }
}

/// A running audio task.
pub struct AudioHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<AudioReport>,
    keys: mpsc::UnboundedSender<char>,
    mute: watch::Sender<bool>,
    live: watch::Receiver<LiveAudio>,
}

impl AudioHandle {
    pub fn set_mute(&self, muted: bool) {
        let _ = self.mute.send(muted);
    }

    pub fn is_muted(&self) -> bool {
        *self.mute.borrow()
    }

    /// The running figures and levels.
    pub fn live(&self) -> LiveAudio {
        self.live.borrow().clone()
    }

    /// Sends keys as RFC 4733 events, one after another (keys the peer did
    /// not negotiate telephone-event for, or that are not 0-9 * # A-D, are
    /// skipped).
    pub fn send_dtmf(&self, keys: &str) {
        for key in keys.chars() {
            let _ = self.keys.send(key);
        }
    }

    /// Stops the audio (the speaker file is finished) and returns its figures.
    pub async fn stop(self) -> AudioReport {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// The local candidates, once gathering has ended (or timed out).
async fn gather(session: &mut IceSession) -> Vec<Candidate> {
    let deadline = tokio::time::Instant::now() + GATHER_TIMEOUT;
    let mut candidates = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, session.events.recv()).await {
        match event {
            IceEvent::LocalCandidate(c) => candidates.push(c),
            IceEvent::GatheringComplete => break,
            _ => {}
        }
    }
    candidates
}

/// The address for `c=`/`m=` (RFC 8839 §4.2.1.1: the one most likely to
/// work for a peer without ICE): relayed, else server-reflexive, else the
/// first host candidate.
fn default_candidate(candidates: &[Candidate]) -> Option<SocketAddr> {
    default_candidate_of(candidates, 1)
}

/// RFC 8839 §4.2.1.2: the candidate most likely to work, for `c=`/`m=`
/// (component 1) or `a=rtcp` (component 2): relayed, else reflexive, else
/// host.
fn default_candidate_of(candidates: &[Candidate], component: u16) -> Option<SocketAddr> {
    let of = |kind| {
        candidates
            .iter()
            .find(|c| c.component == component && c.kind == kind)
    };
    of(CandidateType::Relayed)
        .or_else(|| of(CandidateType::ServerReflexive))
        .or_else(|| candidates.iter().find(|c| c.component == component))
        .map(|c| c.address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Two calls' media on loopback, offer and answer straight across.
    async fn connected_pair(options: &MediaOptions) -> (CallMedia, CallMedia) {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut alice = CallMedia::start(ip, true, options).await.unwrap();
        let mut bob = CallMedia::start(ip, false, options).await.unwrap();
        let offer = alice.offer();
        let answer = bob.answer(&offer).unwrap();
        alice.apply_answer(&answer).unwrap();
        let timeout = Duration::from_secs(5);
        let (a, b) = tokio::join!(alice.connected(timeout), bob.connected(timeout));
        a.unwrap();
        b.unwrap();
        (alice, bob)
    }

    #[tokio::test]
    async fn a_re_offer_after_selection_names_the_selected_pair() {
        let (mut alice, mut bob) = connected_pair(&MediaOptions::default()).await;
        let selected = alice.selected.clone().unwrap();
        let reoffer = SessionDescription::parse(&alice.reoffer(true)).unwrap();
        let text = String::from_utf8(reoffer.to_bytes()).unwrap();
        let remote = format!(
            "a=remote-candidates:1 {} {}",
            selected.remote.address.ip(),
            selected.remote.address.port()
        );
        assert!(text.contains(&remote), "{text}");
        assert!(
            text.contains(&format!("m=audio {} ", selected.local.address.port())),
            "{text}"
        );
        // The controlled side never sends it, but answers from its selected
        // candidate too.
        let bob_local = bob.selected.clone().unwrap().local.address;
        let answer = bob.reanswer(&reoffer.to_bytes()).await.unwrap().0;
        let answer = String::from_utf8(answer).unwrap();
        assert!(!answer.contains("a=remote-candidates"), "{answer}");
        assert!(
            answer.contains(&format!("m=audio {} ", bob_local.port())),
            "{answer}"
        );
        alice.shutdown().await;
        bob.shutdown().await;
    }
}
