//! RFC 5780 NAT behaviour discovery client, sans-IO (`icephone nat-check`).
//!
//! Tests run one at a time from a single local socket, in this order:
//!
//! 1. Test I: Binding to the server's primary address. Gives the mapped
//!    address, OTHER-ADDRESS, and whether there is a NAT at all.
//! 2. Filtering test II (§4.4): to the primary address with CHANGE-REQUEST
//!    change-IP+port. A response means endpoint-independent filtering.
//! 3. Filtering test III, only if II got nothing: change-port only. A response
//!    means address-dependent filtering, silence address-and-port-dependent.
//! 4. Mapping test II (§4.3): to alternate IP, primary port. Same mapping as
//!    test I means endpoint-independent mapping.
//! 5. Mapping test III, only if needed: to alternate IP and port.
//!
//! Without a NAT the filtering tests still run (a firewall filters just like
//! a NAT does) and the mapping tests are skipped.
//!
//! Filtering runs before the mapping tests II/III on purpose: §3.2 and §4.4
//! require that no binding towards the alternate address exists yet, and the
//! mapping tests would create exactly that, making any filter look open.
//!
//! For the filtering tests a timeout is an expected answer ("filtered"), so
//! each one costs the full retransmission schedule. `new` uses the caller's
//! policy for every test; pass a short one, or set a shorter one for the
//! filtering tests only with [`BehaviorDiscovery::with_filtering_policy`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::stun::attr::Attribute;
use crate::stun::message::{Class, Message, MessageBuilder, Method, TransactionId};
use crate::stun::transaction::{ClientTransaction, RetransmitPolicy, TransactionEvent};

/// How the NAT picks the public address for a flow (RFC 4787 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatMapping {
    /// The mapped address equals the local one.
    NoNat,
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// Which inbound packets the NAT lets through to a mapping (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatFiltering {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// What was learnt. `mapping`/`filtering` are `None` when the server has no
/// usable OTHER-ADDRESS, or (mapping only) when the alternate address never
/// answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BehaviorReport {
    pub local: SocketAddr,
    pub mapped: Option<SocketAddr>,
    pub other_address: Option<SocketAddr>,
    pub mapping: Option<NatMapping>,
    pub filtering: Option<NatFiltering>,
    /// Round trip of test I; `None` if it needed retransmissions, since the
    /// response cannot then be matched to one send (Karn's rule).
    pub rtt: Option<Duration>,
    pub server_software: Option<String>,
}

impl BehaviorReport {
    /// `Err(NoOtherAddress)` when the server cannot do behaviour discovery,
    /// for callers that want to treat that as a failure.
    pub fn require_behavior_support(&self) -> Result<(), BehaviorError> {
        match self.other_address {
            Some(_) => Ok(()),
            None => Err(BehaviorError::NoOtherAddress),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BehaviorError {
    /// Test I got no answer: no UDP connectivity to the server.
    #[error("no response from STUN server {server}")]
    Timeout { server: SocketAddr },
    /// The server answered a test with an error response.
    #[error("STUN server answered {code} {reason}")]
    ServerError { code: u16, reason: String },
    /// The server lacks OTHER-ADDRESS. Never returned by `result()` (the
    /// report then simply has no mapping/filtering); see
    /// [`BehaviorReport::require_behavior_support`].
    #[error("STUN server does not support RFC 5780 (no OTHER-ADDRESS)")]
    NoOtherAddress,
    /// Test I's success response carried no (XOR-)MAPPED-ADDRESS.
    #[error("STUN server response carries no mapped address")]
    NoMappedAddress,
    /// A filtering test was answered from an address other than the one
    /// CHANGE-REQUEST asked for: the server ignores CHANGE-REQUEST, and
    /// counting the answer would report a filter as open.
    #[error("response came from {actual}, CHANGE-REQUEST asked for {expected}")]
    UnexpectedSource {
        expected: SocketAddr,
        actual: SocketAddr,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Test {
    MappingI,
    FilteringII,
    FilteringIII,
    MappingII,
    MappingIII,
}

impl Test {
    const COUNT: usize = 5;

    fn index(self) -> usize {
        self as usize
    }

    /// (change_ip, change_port) for the filtering tests.
    fn change_request(self) -> Option<(bool, bool)> {
        match self {
            Test::FilteringII => Some((true, true)),
            Test::FilteringIII => Some((false, true)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Probe {
    test: Test,
    dest: SocketAddr,
    tid: TransactionId,
    request: Vec<u8>,
    txn: ClientTransaction,
    transmit_pending: bool,
}

/// The discovery state machine. Feed it packets and timeouts; take datagrams
/// from `poll_transmit` and send them from `local`.
#[derive(Clone, Debug)]
pub struct BehaviorDiscovery {
    server: SocketAddr,
    policy: RetransmitPolicy,
    filtering_policy: RetransmitPolicy,
    /// Drawn up front: the rng is only lent to `new`.
    tids: [TransactionId; Test::COUNT],
    probe: Option<Probe>,
    report: BehaviorReport,
    mapped_test_ii: Option<SocketAddr>,
    outcome: Option<Result<BehaviorReport, BehaviorError>>,
}

impl BehaviorDiscovery {
    /// Starts test I; its request is ready in `poll_transmit` at once.
    ///
    /// If `local` is unspecified (0.0.0.0 / ::) "no NAT" cannot be told by
    /// comparing it with the mapped address, so it is never concluded and the
    /// mapping tests run; a host that is really not NATed then shows up as
    /// endpoint-independent mapping, which is what no NAT behaves like.
    pub fn new(
        server: SocketAddr,
        local: SocketAddr,
        policy: RetransmitPolicy,
        rng: &mut impl RngCore,
        now: Instant,
    ) -> Self {
        let tids = std::array::from_fn(|_| TransactionId::random(rng));
        let mut discovery = BehaviorDiscovery {
            server,
            policy,
            filtering_policy: policy,
            tids,
            probe: None,
            report: BehaviorReport {
                local,
                mapped: None,
                other_address: None,
                mapping: None,
                filtering: None,
                rtt: None,
                server_software: None,
            },
            mapped_test_ii: None,
            outcome: None,
        };
        discovery.start(Test::MappingI, server, now);
        discovery
    }

    /// Policy for the filtering tests only, whose timeouts are expected.
    pub fn with_filtering_policy(mut self, policy: RetransmitPolicy) -> Self {
        self.filtering_policy = policy;
        self
    }

    /// Takes a datagram received on `local`. Anything that is not a response
    /// to the test in progress is ignored.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(probe) = &self.probe else { return };
        let Ok(msg) = Message::decode(data) else {
            return;
        };
        if msg.transaction_id() != probe.tid || msg.method() != Method::BINDING {
            return;
        }
        match msg.class() {
            Class::Success => self.on_success(now, from, &msg),
            Class::Error => {
                let (code, reason) = msg.error_code().unwrap_or((0, ""));
                self.fail(BehaviorError::ServerError {
                    code,
                    reason: reason.to_owned(),
                });
            }
            Class::Request | Class::Indication => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(probe) = &mut self.probe else { return };
        match probe.txn.handle_timeout(now) {
            Some(TransactionEvent::Transmit) => probe.transmit_pending = true,
            Some(TransactionEvent::TimedOut) => {
                let test = probe.test;
                self.on_timeout(test, now);
            }
            None => {}
        }
    }

    /// Next datagram to send from `local`, with its destination.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let probe = self.probe.as_mut().filter(|p| p.transmit_pending)?;
        probe.transmit_pending = false;
        Some((probe.dest, probe.request.clone()))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.probe.as_ref()?.txn.poll_timeout()
    }

    pub fn is_done(&self) -> bool {
        self.outcome.is_some()
    }

    /// `None` while running.
    pub fn result(&self) -> Option<Result<BehaviorReport, BehaviorError>> {
        self.outcome.clone()
    }

    fn start(&mut self, test: Test, dest: SocketAddr, now: Instant) {
        let tid = self.tids[test.index()];
        let policy = if test.change_request().is_some() {
            self.filtering_policy
        } else {
            self.policy
        };
        let mut txn = ClientTransaction::new(now, policy);
        let transmit_pending = txn.handle_timeout(now) == Some(TransactionEvent::Transmit);
        self.probe = Some(Probe {
            test,
            dest,
            tid,
            request: binding_request(tid, test.change_request()),
            txn,
            transmit_pending,
        });
    }

    fn on_success(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>) {
        let Some(probe) = &self.probe else { return };
        let (test, rtt) = (probe.test, unambiguous_rtt(&probe.txn, now));
        if let Some(expected) = self.expected_source(test) {
            if expected != from {
                return self.fail(BehaviorError::UnexpectedSource {
                    expected,
                    actual: from,
                });
            }
        }
        match test {
            Test::MappingI => self.after_test_i(now, msg, rtt),
            Test::FilteringII => self.after_filtering(NatFiltering::EndpointIndependent, now),
            Test::FilteringIII => self.after_filtering(NatFiltering::AddressDependent, now),
            Test::MappingII | Test::MappingIII => self.after_mapping_test(test, msg, now),
        }
    }

    fn on_timeout(&mut self, test: Test, now: Instant) {
        match test {
            Test::MappingI => self.fail(BehaviorError::Timeout {
                server: self.server,
            }),
            Test::FilteringII => self.start(Test::FilteringIII, self.server, now),
            Test::FilteringIII => self.after_filtering(NatFiltering::AddressAndPortDependent, now),
            // The alternate address is unreachable: mapping stays unknown.
            Test::MappingII | Test::MappingIII => self.succeed(),
        }
    }

    fn after_test_i(&mut self, now: Instant, msg: &Message<'_>, rtt: Option<Duration>) {
        let Some(mapped) = msg.reflexive_address() else {
            return self.fail(BehaviorError::NoMappedAddress);
        };
        let report = &mut self.report;
        report.mapped = Some(mapped);
        report.other_address = msg.other_address();
        report.server_software = msg.software().map(str::to_owned);
        report.rtt = rtt;
        if !report.local.ip().is_unspecified() && same_endpoint(mapped, report.local) {
            report.mapping = Some(NatMapping::NoNat);
        }
        if self.usable_other_address().is_some() {
            self.start(Test::FilteringII, self.server, now);
        } else {
            self.succeed();
        }
    }

    fn after_filtering(&mut self, filtering: NatFiltering, now: Instant) {
        self.report.filtering = Some(filtering);
        match (self.report.mapping, self.usable_other_address()) {
            (None, Some(other)) => self.start(
                Test::MappingII,
                SocketAddr::new(other.ip(), self.server.port()),
                now,
            ),
            _ => self.succeed(),
        }
    }

    fn after_mapping_test(&mut self, test: Test, msg: &Message<'_>, now: Instant) {
        let Some(mapped) = msg.reflexive_address() else {
            return self.fail(BehaviorError::NoMappedAddress);
        };
        let same_as =
            |earlier: Option<SocketAddr>| earlier.is_some_and(|e| same_endpoint(e, mapped));
        if test == Test::MappingIII {
            self.report.mapping = Some(if same_as(self.mapped_test_ii) {
                NatMapping::AddressDependent
            } else {
                NatMapping::AddressAndPortDependent
            });
            return self.succeed();
        }
        if same_as(self.report.mapped) {
            self.report.mapping = Some(NatMapping::EndpointIndependent);
            return self.succeed();
        }
        self.mapped_test_ii = Some(mapped);
        match self.usable_other_address() {
            Some(other) => self.start(Test::MappingIII, other, now),
            None => self.succeed(),
        }
    }

    /// OTHER-ADDRESS if it differs from the server in both IP and port, as
    /// RFC 5780 requires; anything else would make the tests meaningless.
    fn usable_other_address(&self) -> Option<SocketAddr> {
        self.report
            .other_address
            .filter(|o| o.ip() != self.server.ip() && o.port() != self.server.port())
    }

    /// Where a filtering test's response must come from (RFC 5780 Table 1).
    fn expected_source(&self, test: Test) -> Option<SocketAddr> {
        let other = self.usable_other_address()?;
        match test.change_request()? {
            (true, _) => Some(other),
            (false, _) => Some(SocketAddr::new(self.server.ip(), other.port())),
        }
    }

    fn succeed(&mut self) {
        self.finish(Ok(self.report.clone()));
    }

    fn fail(&mut self, error: BehaviorError) {
        self.finish(Err(error));
    }

    fn finish(&mut self, outcome: Result<BehaviorReport, BehaviorError>) {
        self.probe = None;
        self.outcome = Some(outcome);
    }
}

fn binding_request(tid: TransactionId, change: Option<(bool, bool)>) -> Vec<u8> {
    let mut builder = MessageBuilder::new(Class::Request, Method::BINDING, tid);
    if let Some((change_ip, change_port)) = change {
        builder.add(&Attribute::ChangeRequest {
            change_ip,
            change_port,
        });
    }
    // Lets the server tell these requests from other traffic on its port.
    builder.add_fingerprint();
    builder.finish()
}

fn unambiguous_rtt(txn: &ClientTransaction, now: Instant) -> Option<Duration> {
    if txn.transmissions() != 1 {
        return None;
    }
    txn.first_sent()
        .map(|sent| now.saturating_duration_since(sent))
}

/// Equality that sees through IPv4-mapped IPv6 (a dual-stack socket reports
/// `::ffff:a.b.c.d` where the server saw `a.b.c.d`).
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::message::error_response;
    use crate::stun::server::BindingServer;
    use rand::SeedableRng;
    use std::collections::{HashMap, HashSet};
    use std::net::IpAddr;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const PRIMARY: &str = "198.51.100.1:3478";
    const ALTERNATE: &str = "198.51.100.2:3479";
    const INSIDE: &str = "10.0.0.2:5000";

    fn fast_policy() -> RetransmitPolicy {
        RetransmitPolicy {
            rto: Duration::from_millis(100),
            max_rto: Duration::MAX,
            max_transmissions: 3,
            last_wait_factor: 4,
        }
    }

    /// A NAT with one inside endpoint, classified as in RFC 4787.
    struct FakeNat {
        public_ip: IpAddr,
        /// None: no NAT at all (addresses pass through, nothing is filtered).
        mapping: Option<NatMapping>,
        filtering: NatFiltering,
        ports: HashMap<String, u16>,
        next_port: u16,
        contacted: HashSet<SocketAddr>,
    }

    impl FakeNat {
        fn new(mapping: Option<NatMapping>, filtering: NatFiltering) -> Self {
            FakeNat {
                public_ip: sa("203.0.113.7:0").ip(),
                mapping,
                filtering,
                ports: HashMap::new(),
                next_port: 61000,
                contacted: HashSet::new(),
            }
        }

        /// Translates the source of a packet from `inside` to `dest`.
        fn outbound(&mut self, inside: SocketAddr, dest: SocketAddr) -> SocketAddr {
            self.contacted.insert(dest);
            let key = match self.mapping {
                None => return inside,
                Some(NatMapping::NoNat | NatMapping::EndpointIndependent) => String::new(),
                Some(NatMapping::AddressDependent) => dest.ip().to_string(),
                Some(NatMapping::AddressAndPortDependent) => dest.to_string(),
            };
            let next = &mut self.next_port;
            let port = *self.ports.entry(key).or_insert_with(|| {
                *next += 1;
                *next
            });
            SocketAddr::new(self.public_ip, port)
        }

        fn inbound_allowed(&self, from: SocketAddr) -> bool {
            self.mapping.is_none()
                || match self.filtering {
                    NatFiltering::EndpointIndependent => true,
                    NatFiltering::AddressDependent => {
                        self.contacted.iter().any(|c| c.ip() == from.ip())
                    }
                    NatFiltering::AddressAndPortDependent => self.contacted.contains(&from),
                }
        }
    }

    struct Net {
        nat: FakeNat,
        server: Option<BindingServer>,
        /// Simulates a server that ignores CHANGE-REQUEST.
        answer_from_destination: bool,
    }

    impl Net {
        fn new(mapping: Option<NatMapping>, filtering: NatFiltering) -> Self {
            Net {
                nat: FakeNat::new(mapping, filtering),
                server: Some(BindingServer::new(
                    sa(PRIMARY),
                    Some(sa(ALTERNATE)),
                    Some("test server".into()),
                )),
                answer_from_destination: false,
            }
        }

        fn deliver(&mut self, d: &mut BehaviorDiscovery, now: Instant, local: SocketAddr) {
            while let Some((dest, data)) = d.poll_transmit() {
                let external = self.nat.outbound(local, dest);
                let Some(server) = &mut self.server else {
                    continue;
                };
                let Some(mut tx) = server.handle(dest, external, &data) else {
                    continue;
                };
                assert_eq!(tx.to, external);
                if self.answer_from_destination {
                    tx.from = dest;
                }
                if self.nat.inbound_allowed(tx.from) {
                    d.handle_packet(now, tx.from, &tx.data);
                }
            }
        }
    }

    /// Runs discovery to completion in virtual time; returns the outcome and
    /// how long it took.
    fn run_with(
        net: &mut Net,
        local: SocketAddr,
        make: impl FnOnce(Instant) -> BehaviorDiscovery,
    ) -> (Result<BehaviorReport, BehaviorError>, Duration) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut d = make(t0);
        for _ in 0..1_000 {
            net.deliver(&mut d, now, local);
            let Some(at) = d.poll_timeout() else { break };
            assert!(at >= now, "time must not go backwards");
            now = at;
            d.handle_timeout(now);
        }
        assert!(d.is_done());
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.poll_transmit(), None);
        (d.result().unwrap(), now - t0)
    }

    fn run(net: &mut Net, local: SocketAddr) -> (Result<BehaviorReport, BehaviorError>, Duration) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        run_with(net, local, |t0| {
            BehaviorDiscovery::new(sa(PRIMARY), local, fast_policy(), &mut rng, t0)
        })
    }

    fn classify(mapping: NatMapping, filtering: NatFiltering) -> BehaviorReport {
        let mut net = Net::new(Some(mapping), filtering);
        let (result, _) = run(&mut net, sa(INSIDE));
        let report = result.unwrap();
        assert_eq!(report.other_address, Some(sa(ALTERNATE)));
        assert_eq!(report.server_software.as_deref(), Some("test server"));
        assert_eq!(report.mapped.map(|m| m.ip()), Some(net.nat.public_ip));
        report
    }

    #[test]
    fn classifies_every_mapping_and_filtering_combination() {
        use NatFiltering as F;
        use NatMapping as M;
        for mapping in [
            M::EndpointIndependent,
            M::AddressDependent,
            M::AddressAndPortDependent,
        ] {
            for filtering in [
                F::EndpointIndependent,
                F::AddressDependent,
                F::AddressAndPortDependent,
            ] {
                let report = classify(mapping, filtering);
                assert_eq!(report.mapping, Some(mapping), "{mapping:?}/{filtering:?}");
                assert_eq!(
                    report.filtering,
                    Some(filtering),
                    "{mapping:?}/{filtering:?}"
                );
            }
        }
    }

    #[test]
    fn no_nat_is_detected_by_comparing_with_local() {
        let mut net = Net::new(None, NatFiltering::EndpointIndependent);
        let public = sa("203.0.113.7:5000");
        let (result, _) = run(&mut net, public);
        let report = result.unwrap();
        assert_eq!(report.mapped, Some(public));
        assert_eq!(report.mapping, Some(NatMapping::NoNat));
        assert_eq!(report.filtering, Some(NatFiltering::EndpointIndependent));
        assert_eq!(report.rtt, Some(Duration::ZERO));
        assert!(
            !net.nat
                .contacted
                .iter()
                .any(|c| c.ip() == sa(ALTERNATE).ip()),
            "no mapping tests needed"
        );
    }

    #[test]
    fn ipv4_mapped_local_address_still_counts_as_no_nat() {
        // A dual-stack socket names itself ::ffff:a.b.c.d while the server
        // sees and reports plain a.b.c.d.
        let mut net = Net::new(None, NatFiltering::EndpointIndependent);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let dual_stack = sa("[::ffff:203.0.113.7]:5000");
        let (result, _) = run_with(&mut net, sa("203.0.113.7:5000"), |t0| {
            BehaviorDiscovery::new(sa(PRIMARY), dual_stack, fast_policy(), &mut rng, t0)
        });
        let report = result.unwrap();
        assert_eq!(report.mapped, Some(sa("203.0.113.7:5000")));
        assert_eq!(report.mapping, Some(NatMapping::NoNat));
    }

    #[test]
    fn unspecified_local_never_concludes_no_nat() {
        let mut net = Net::new(None, NatFiltering::EndpointIndependent);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let wildcard = sa("0.0.0.0:5000");
        let public = sa("203.0.113.7:5000");
        let (result, _) = run_with(&mut net, public, |t0| {
            BehaviorDiscovery::new(sa(PRIMARY), wildcard, fast_policy(), &mut rng, t0)
        });
        let report = result.unwrap();
        assert_eq!(report.local, wildcard);
        assert_eq!(report.mapping, Some(NatMapping::EndpointIndependent));
    }

    #[test]
    fn server_without_other_address_stops_after_test_i() {
        let mut net = Net::new(
            Some(NatMapping::EndpointIndependent),
            NatFiltering::EndpointIndependent,
        );
        net.server = Some(BindingServer::new(sa(PRIMARY), None, None));
        let (result, elapsed) = run(&mut net, sa(INSIDE));
        let report = result.unwrap();
        assert!(report.mapped.is_some());
        assert_eq!(
            (report.other_address, report.mapping, report.filtering),
            (None, None, None)
        );
        assert_eq!(report.server_software, None);
        assert_eq!(
            report.require_behavior_support(),
            Err(BehaviorError::NoOtherAddress)
        );
        assert_eq!(elapsed, Duration::ZERO);
        assert_eq!(net.nat.contacted.len(), 1);
    }

    #[test]
    fn silent_server_times_out() {
        let mut net = Net::new(
            Some(NatMapping::EndpointIndependent),
            NatFiltering::EndpointIndependent,
        );
        net.server = None;
        let (result, elapsed) = run(&mut net, sa(INSIDE));
        assert_eq!(
            result,
            Err(BehaviorError::Timeout {
                server: sa(PRIMARY)
            })
        );
        assert_eq!(elapsed, fast_policy().total_timeout());
    }

    #[test]
    fn shorter_filtering_policy_is_used_for_filtering_tests_only() {
        let short = RetransmitPolicy {
            rto: Duration::from_millis(10),
            max_rto: Duration::MAX,
            max_transmissions: 2,
            last_wait_factor: 2,
        };
        let mut net = Net::new(
            Some(NatMapping::EndpointIndependent),
            NatFiltering::AddressAndPortDependent,
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (result, elapsed) = run_with(&mut net, sa(INSIDE), |t0| {
            BehaviorDiscovery::new(sa(PRIMARY), sa(INSIDE), fast_policy(), &mut rng, t0)
                .with_filtering_policy(short)
        });
        assert_eq!(
            result.unwrap().filtering,
            Some(NatFiltering::AddressAndPortDependent)
        );
        // Both filtering tests time out; everything else answers at once.
        assert_eq!(elapsed, short.total_timeout() * 2);
    }

    #[test]
    fn server_ignoring_change_request_is_reported() {
        let mut net = Net::new(
            Some(NatMapping::EndpointIndependent),
            NatFiltering::EndpointIndependent,
        );
        net.answer_from_destination = true;
        let (result, _) = run(&mut net, sa(INSIDE));
        let expected = BehaviorError::UnexpectedSource {
            expected: sa(ALTERNATE),
            actual: sa(PRIMARY),
        };
        assert_eq!(result, Err(expected));
    }

    #[test]
    fn error_response_and_foreign_packets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let now = Instant::now();
        let mut d = BehaviorDiscovery::new(sa(PRIMARY), sa(INSIDE), fast_policy(), &mut rng, now);
        let (dest, request) = d.poll_transmit().unwrap();
        assert_eq!(dest, sa(PRIMARY));
        assert_eq!(d.poll_transmit(), None, "one transmission per due time");
        let req = Message::decode(&request).unwrap();
        assert_eq!(
            (req.class(), req.method()),
            (Class::Request, Method::BINDING)
        );

        // Wrong transaction id, garbage and requests are ignored.
        let mut other =
            MessageBuilder::new(Class::Success, Method::BINDING, TransactionId([0; 12]));
        other.add(&Attribute::XorMappedAddress(sa("1.2.3.4:5")));
        d.handle_packet(now, sa(PRIMARY), &other.finish());
        d.handle_packet(now, sa(PRIMARY), b"garbage");
        d.handle_packet(now, sa(PRIMARY), &request);
        assert!(!d.is_done());

        // A retransmission is due after one rto.
        d.handle_timeout(now + Duration::from_millis(100));
        assert_eq!(d.poll_transmit().map(|(_, r)| r), Some(request.clone()));

        let error = error_response(&req, 500, "Server Error", &[]).finish();
        d.handle_packet(now, sa(PRIMARY), &error);
        let expected = BehaviorError::ServerError {
            code: 500,
            reason: "Server Error".into(),
        };
        assert_eq!(d.result(), Some(Err(expected)));
    }

    #[test]
    fn success_without_mapped_address_is_an_error() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let now = Instant::now();
        let mut d = BehaviorDiscovery::new(sa(PRIMARY), sa(INSIDE), fast_policy(), &mut rng, now);
        let (_, request) = d.poll_transmit().unwrap();
        let req = Message::decode(&request).unwrap();
        let bare = crate::stun::message::response_builder(&req, Class::Success).finish();
        d.handle_packet(now, sa(PRIMARY), &bare);
        assert_eq!(d.result(), Some(Err(BehaviorError::NoMappedAddress)));
    }
}
