//! Drives endpoints (agents, servers) over the network in virtual time.

use std::net::SocketAddr;
use std::time::Instant;

use super::network::Network;
use super::{Datagram, HostId, SimError};

/// Something that lives on a host and is driven in virtual time (an ICE
/// agent wrapper, a STUN server...).
pub trait Endpoint {
    fn handle_datagram(&mut self, now: Instant, dg: Datagram);
    fn handle_timeout(&mut self, now: Instant);
    /// `from` is one of the endpoint's own local addresses.
    fn poll_transmit(&mut self) -> Option<Datagram>;
    fn poll_timeout(&self) -> Option<Instant>;
}

/// A local address an endpoint owns. Port 0 owns every port of the host
/// (a TURN server's relay ports), below any endpoint bound to the exact port.
pub trait LocalAddr {
    fn resolve(&self, net: &Network) -> Result<(HostId, SocketAddr), SimError>;
}

/// The host is the one with this IP; errors if LANs overlap on it.
impl LocalAddr for SocketAddr {
    fn resolve(&self, net: &Network) -> Result<(HostId, SocketAddr), SimError> {
        Ok((net.host_with_ip(*self)?, *self))
    }
}

/// A port on a named host: works when LANs overlap.
impl LocalAddr for (HostId, u16) {
    fn resolve(&self, net: &Network) -> Result<(HostId, SocketAddr), SimError> {
        let (host, port) = *self;
        Ok((host, SocketAddr::new(net.host_ip(host), port)))
    }
}

/// An endpoint with the local addresses it owns, as [`Network::run`] takes
/// them; for naming a list of them, e.g. `&mut [Bound<(HostId, u16)>]`.
pub type Bound<'a, L = SocketAddr> = (&'a [L], &'a mut dyn Endpoint);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// `stop` returned true.
    Stopped,
    /// Nothing left to do before `until`; `now` is `until`.
    ReachedUntil,
}

struct Binding {
    host: HostId,
    addr: SocketAddr,
    endpoint: usize,
}

struct Bindings(Vec<Binding>);

impl Bindings {
    fn resolve<L: LocalAddr>(
        net: &Network,
        endpoints: &[(&[L], &mut dyn Endpoint)],
    ) -> Result<Self, SimError> {
        let mut bindings: Vec<Binding> = Vec::new();
        for (endpoint, (locals, _)) in endpoints.iter().enumerate() {
            for local in locals.iter() {
                let (host, addr) = local.resolve(net)?;
                if bindings.iter().any(|b| b.host == host && b.addr == addr) {
                    return Err(SimError::AddressInUse(addr));
                }
                bindings.push(Binding {
                    host,
                    addr,
                    endpoint,
                });
            }
        }
        Ok(Bindings(bindings))
    }

    fn listener(&self, host: HostId, to: SocketAddr) -> Option<usize> {
        let on_host = || self.0.iter().filter(move |b| b.host == host);
        let exact = on_host().find(|b| b.addr == to);
        let any_port = || on_host().find(|b| b.addr == SocketAddr::new(to.ip(), 0));
        exact.or_else(any_port).map(|b| b.endpoint)
    }

    fn sender(&self, endpoint: usize, from: SocketAddr) -> Result<HostId, SimError> {
        let owns = |b: &&Binding| {
            b.endpoint == endpoint && (b.addr == from || b.addr == SocketAddr::new(from.ip(), 0))
        };
        self.0
            .iter()
            .find(owns)
            .map(|b| b.host)
            .ok_or(SimError::NotBound(from))
    }
}

impl Network {
    /// Runs `endpoints`, each owning the local addresses listed with it,
    /// until `until` or until `stop(now)` is true (asked before each step).
    ///
    /// Each step sends what endpoints have to send, jumps `now` to the next
    /// event (delivery or endpoint timeout), delivers what is due, then fires
    /// due timeouts. Datagrams due at an address no endpoint owns count as
    /// [`DropReason::NoListener`](super::DropReason::NoListener).
    ///
    /// Errors on bad bindings, on a transmit from an unbound address, and
    /// after [`Network::set_max_run_steps`] steps, so an endpoint that keeps
    /// asking for a timeout at `now` fails the test instead of hanging it.
    pub fn run<L: LocalAddr>(
        &mut self,
        now: &mut Instant,
        endpoints: &mut [(&[L], &mut dyn Endpoint)],
        until: Instant,
        stop: &mut dyn FnMut(Instant) -> bool,
    ) -> Result<RunOutcome, SimError> {
        let bindings = Bindings::resolve(self, endpoints)?;
        let mut steps = 0;
        loop {
            if stop(*now) {
                return Ok(RunOutcome::Stopped);
            }
            if steps == self.max_run_steps {
                return Err(SimError::StepLimit { steps });
            }
            if !self.step_bound(&bindings, now, endpoints, until)? {
                return Ok(RunOutcome::ReachedUntil);
            }
            steps += 1;
        }
    }

    /// One step of [`Network::run`], for loops that inspect their endpoints
    /// between steps. Returns false, with `now` at `until`, when nothing is
    /// left to do before `until`.
    pub fn step<L: LocalAddr>(
        &mut self,
        now: &mut Instant,
        endpoints: &mut [(&[L], &mut dyn Endpoint)],
        until: Instant,
    ) -> Result<bool, SimError> {
        let bindings = Bindings::resolve(self, endpoints)?;
        self.step_bound(&bindings, now, endpoints, until)
    }

    fn step_bound<L: LocalAddr>(
        &mut self,
        bindings: &Bindings,
        now: &mut Instant,
        endpoints: &mut [(&[L], &mut dyn Endpoint)],
        until: Instant,
    ) -> Result<bool, SimError> {
        self.send_transmits(*now, bindings, endpoints)?;
        let Some(next) = self.next_event(endpoints).filter(|&t| t <= until) else {
            *now = (*now).max(until);
            return Ok(false);
        };
        *now = (*now).max(next);
        self.deliver_due(*now, bindings, endpoints);
        for (_, endpoint) in endpoints.iter_mut() {
            if endpoint.poll_timeout().is_some_and(|t| t <= *now) {
                endpoint.handle_timeout(*now);
            }
        }
        // Sent now rather than next step, so nothing an endpoint produced
        // waits in it when the run stops.
        self.send_transmits(*now, bindings, endpoints)?;
        Ok(true)
    }

    fn next_event<L>(&self, endpoints: &[(&[L], &mut dyn Endpoint)]) -> Option<Instant> {
        let timeouts = endpoints
            .iter()
            .filter_map(|(_, endpoint)| endpoint.poll_timeout());
        timeouts.chain(self.poll_timeout()).min()
    }

    fn send_transmits<L>(
        &mut self,
        now: Instant,
        bindings: &Bindings,
        endpoints: &mut [(&[L], &mut dyn Endpoint)],
    ) -> Result<(), SimError> {
        for (index, (_, endpoint)) in endpoints.iter_mut().enumerate() {
            while let Some(dg) = endpoint.poll_transmit() {
                let host = bindings.sender(index, dg.from)?;
                self.transmit_from(now, host, dg);
            }
        }
        Ok(())
    }

    fn deliver_due<L>(
        &mut self,
        now: Instant,
        bindings: &Bindings,
        endpoints: &mut [(&[L], &mut dyn Endpoint)],
    ) {
        while let Some((host, dg)) = self.poll_delivery_to_host(now) {
            match bindings.listener(host, dg.to) {
                Some(index) => endpoints[index].1.handle_datagram(now, dg),
                None => self.count_unheard(),
            }
        }
    }
}
