//! The transaction layer (RFC 3261 §17.1.3, §17.2.3): matches each message
//! to its transaction, keeps the transactions' timers, builds the ACK for an
//! INVITE failure, and routes responses back per §18.2.2 and RFC 3581.
//!
//! Above it the transaction user (`sip::ua`) sees only what is new: fresh
//! requests, responses that matter, ACKs for 2xx, and timeouts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::message::{Method, Request, Response};
use super::transaction::{
    ClientEvent, ClientTransaction, ResponseVerdict, ServerEvent, ServerTransaction, SipTimers,
    TransactionKind,
};
use rand::rngs::StdRng;

use super::{random_hex, Target, Transmit, Transport};

/// RFC 3261 §8.1.1.7: a branch that starts so was made by a 3261 element.
pub const BRANCH_MAGIC: &str = "z9hG4bK";

/// A client transaction: its branch and the method of its CSeq (a CANCEL
/// shares the INVITE's branch but is a transaction of its own).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientId {
    pub branch: String,
    pub method: Method,
}

/// A server transaction: branch, the top Via's sent-by, and the method
/// (ACK counts as INVITE).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerId {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

#[derive(Debug)]
pub enum LayerEvent {
    /// A response the transaction user must see.
    Response(ClientId, Response),
    /// Timer B/F, or the transport failed: treat as 408.
    ClientTimedOut(ClientId),
    /// A new request: answer it with [`TransactionLayer::respond`].
    Request(ServerId, Request, Target),
    /// An ACK that matched no server transaction: the ACK for a 2xx, which
    /// belongs to a dialog.
    Ack(Request, Target),
    /// A 2xx or failure to an INVITE was never ACKed.
    ServerNoAck(ServerId),
}

struct ClientEntry {
    tx: ClientTransaction,
    target: Target,
    request: Request,
    /// The deadline queued in the timer heap for this transaction.
    scheduled: Option<Instant>,
}

struct ServerEntry {
    tx: ServerTransaction,
    target: Target,
    scheduled: Option<Instant>,
}

/// Which transaction a timer-heap entry wakes.
#[derive(Clone, Debug)]
enum TxKey {
    Client(ClientId),
    Server(ServerId),
}

/// Why a message was dropped, for the caller's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// A response no transaction of ours sent.
    UnmatchedResponse,
    /// A request whose top Via has no branch: cannot be matched safely.
    NoBranch,
}

pub struct TransactionLayer {
    timers: SipTimers,
    clients: HashMap<ClientId, ClientEntry>,
    servers: HashMap<ServerId, ServerEntry>,
    /// (deadline, entry number): a server holds tens of thousands of
    /// transactions lingering in timer J or K, so the next deadline comes
    /// from a heap, not a scan. An entry is live while its deadline is the
    /// transaction's `scheduled`; the others are skipped when popped.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    deadline_keys: HashMap<u64, TxKey>,
    next_deadline_key: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<LayerEvent>,
}

impl TransactionLayer {
    pub fn new(timers: SipTimers) -> Self {
        TransactionLayer {
            timers,
            clients: HashMap::new(),
            servers: HashMap::new(),
            deadlines: BinaryHeap::new(),
            deadline_keys: HashMap::new(),
            next_deadline_key: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn timers(&self) -> SipTimers {
        self.timers
    }

    /// Starts a client transaction for `request`, whose top Via carries a
    /// fresh branch. ACK is not a transaction: use [`Self::send_stateless`].
    pub fn send_request(&mut self, now: Instant, target: Target, request: Request) -> ClientId {
        let (target, request) = congestion_safe(target, request);
        self.start_client(now, target, request)
    }

    /// As [`Self::send_request`], over `target`'s transport whatever the
    /// size: for a flow a client registered from (RFC 5626 §5.3). Behind a
    /// NAT, the UDP flow is the only way in — a TCP connection to the NAT's
    /// address is refused — so a large INVITE goes there over UDP, and IP
    /// fragmentation is the lesser evil.
    pub fn send_request_on_flow(
        &mut self,
        now: Instant,
        target: Target,
        request: Request,
    ) -> ClientId {
        self.start_client(now, target, request)
    }

    fn start_client(&mut self, now: Instant, target: Target, request: Request) -> ClientId {
        let branch = request
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default();
        let id = ClientId {
            branch,
            method: request.method.clone(),
        };
        let kind = match request.method {
            Method::Invite => TransactionKind::Invite,
            _ => TransactionKind::NonInvite,
        };
        let tx = ClientTransaction::new(
            now,
            kind,
            target.transport.is_reliable(),
            self.timers,
            request.to_bytes(),
        );
        self.clients.insert(
            id.clone(),
            ClientEntry {
                tx,
                target,
                request,
                scheduled: None,
            },
        );
        self.touch_client(&id);
        id
    }

    /// Sends a message outside any transaction (an ACK for a 2xx, a
    /// response to a stray request).
    pub fn send_stateless(&mut self, target: Target, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { target, bytes });
    }

    pub fn handle_response(&mut self, now: Instant, response: Response) -> Result<(), Dropped> {
        let id = response
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_owned))
            .zip(response.cseq().ok().map(|c| c.method))
            .map(|(branch, method)| ClientId { branch, method })
            .ok_or(Dropped::UnmatchedResponse)?;
        let entry = self
            .clients
            .get_mut(&id)
            .ok_or(Dropped::UnmatchedResponse)?;
        match entry.tx.handle_response(now, response.code) {
            ResponseVerdict::Deliver => self
                .events
                .push_back(LayerEvent::Response(id.clone(), response)),
            ResponseVerdict::DeliverAndAck => {
                let ack = ack_for_failure(&entry.request, &response);
                entry.tx.send_ack(ack.to_bytes());
                self.events
                    .push_back(LayerEvent::Response(id.clone(), response));
            }
            ResponseVerdict::Absorb => {}
        }
        self.touch_client(&id);
        Ok(())
    }

    /// A request from `source`. New requests, and ACKs for 2xx, come out as
    /// events; retransmissions are answered here.
    pub fn handle_request(
        &mut self,
        now: Instant,
        source: Target,
        request: Request,
    ) -> Result<(), Dropped> {
        let via = request.top_via().map_err(|_| Dropped::NoBranch)?;
        let branch = via
            .branch()
            .filter(|b| b.starts_with(BRANCH_MAGIC))
            .ok_or(Dropped::NoBranch)?
            .to_owned();
        let method = match request.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        let id = ServerId {
            branch,
            sent_by: via.sent_by(),
            method,
        };
        if let Some(entry) = self.servers.get_mut(&id) {
            if request.method == Method::Ack {
                entry.tx.handle_ack(now);
            } else {
                entry.tx.handle_retransmission();
            }
            self.touch_server(&id);
            return Ok(());
        }
        if request.method == Method::Ack {
            self.events.push_back(LayerEvent::Ack(request, source));
            return Ok(());
        }
        let kind = match request.method {
            Method::Invite => TransactionKind::Invite,
            _ => TransactionKind::NonInvite,
        };
        let target = response_target(source, &request);
        let tx = ServerTransaction::new(kind, source.transport.is_reliable(), self.timers);
        self.servers.insert(
            id.clone(),
            ServerEntry {
                tx,
                target,
                scheduled: None,
            },
        );
        self.events
            .push_back(LayerEvent::Request(id, request, source));
        Ok(())
    }

    /// The transaction user's response to the request of `id`; false when
    /// that transaction is gone or already answered finally.
    pub fn respond(&mut self, now: Instant, id: &ServerId, response: &Response) -> bool {
        let Some(entry) = self.servers.get_mut(id) else {
            return false;
        };
        let sent = entry.tx.respond(now, response.code, response.to_bytes());
        self.touch_server(id);
        sent
    }

    /// The dialog matched an ACK to the 2xx of the INVITE transaction whose
    /// CSeq and Call-ID it knows: stop retransmitting that 2xx.
    pub fn ack_2xx(&mut self, now: Instant, id: &ServerId) {
        if let Some(entry) = self.servers.get_mut(id) {
            entry.tx.handle_ack(now);
            self.touch_server(id);
        }
    }

    /// Drops a client transaction that will never hear its end: an INVITE
    /// whose callee ignored our CANCEL sits in Proceeding, which has no
    /// timer (§9.1: destroy it 64·T1 after the CANCEL).
    pub fn abandon(&mut self, id: &ClientId) {
        // Its queued deadline, if any, is skipped when popped.
        self.clients.remove(id);
    }

    /// Sending to `target` failed: every transaction using it times out.
    /// A rare event, so a scan is fine here.
    pub fn transport_error(&mut self, target: Target) {
        self.connection_lost(target);
        let servers: Vec<ServerId> = self
            .servers
            .iter()
            .filter(|(_, e)| e.target == target)
            .map(|(id, _)| id.clone())
            .collect();
        for id in servers {
            if let Some(e) = self.servers.get_mut(&id) {
                e.tx.transport_error();
            }
            self.touch_server(&id);
        }
    }

    /// The connection to `target` closed or was reset: no answer can come
    /// back on it, so our requests sent over it fail now (§17.1.4) rather
    /// than at Timer B or F. Answers we owe still go out (§18.2.2 opens a
    /// new connection for them).
    pub fn connection_lost(&mut self, target: Target) {
        let clients: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, e)| e.target == target)
            .map(|(id, _)| id.clone())
            .collect();
        for id in clients {
            if let Some(e) = self.clients.get_mut(&id) {
                e.tx.transport_error();
            }
            self.touch_client(&id);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, n))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            match self.deadline_keys.remove(&n) {
                Some(TxKey::Client(id)) => {
                    let Some(e) = self.clients.get_mut(&id) else {
                        continue;
                    };
                    if e.scheduled != Some(at) {
                        continue; // superseded
                    }
                    e.scheduled = None;
                    e.tx.handle_timeout(now);
                    self.touch_client(&id);
                }
                Some(TxKey::Server(id)) => {
                    let Some(e) = self.servers.get_mut(&id) else {
                        continue;
                    };
                    if e.scheduled != Some(at) {
                        continue;
                    }
                    e.scheduled = None;
                    e.tx.handle_timeout(now);
                    self.touch_server(&id);
                }
                None => {}
            }
        }
    }

    /// The earliest deadline; possibly earlier (a superseded entry), never
    /// later.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LayerEvent> {
        self.events.pop_front()
    }

    /// Transactions alive (for tests and counters).
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// After anything happened to a client transaction: move what it
    /// wants sent and said into the layer's queues, queue its next
    /// deadline, forget it once terminated.
    fn touch_client(&mut self, id: &ClientId) {
        let Some(e) = self.clients.get_mut(id) else {
            return;
        };
        while let Some(bytes) = e.tx.poll_transmit() {
            self.transmits.push_back(Transmit {
                target: e.target,
                bytes,
            });
        }
        while let Some(event) = e.tx.poll_event() {
            if event == ClientEvent::TimedOut {
                self.events
                    .push_back(LayerEvent::ClientTimedOut(id.clone()));
            }
        }
        if e.tx.is_terminated() {
            self.clients.remove(id);
            return;
        }
        let next = e.tx.poll_timeout();
        if next != e.scheduled {
            e.scheduled = next;
            if let Some(at) = next {
                self.queue_deadline(at, TxKey::Client(id.clone()));
            }
        }
    }

    fn touch_server(&mut self, id: &ServerId) {
        let Some(e) = self.servers.get_mut(id) else {
            return;
        };
        while let Some(bytes) = e.tx.poll_transmit() {
            self.transmits.push_back(Transmit {
                target: e.target,
                bytes,
            });
        }
        while let Some(event) = e.tx.poll_event() {
            if event == ServerEvent::NoAck {
                self.events.push_back(LayerEvent::ServerNoAck(id.clone()));
            }
        }
        if e.tx.is_terminated() {
            self.servers.remove(id);
            return;
        }
        let next = e.tx.poll_timeout();
        if next != e.scheduled {
            e.scheduled = next;
            if let Some(at) = next {
                self.queue_deadline(at, TxKey::Server(id.clone()));
            }
        }
    }

    fn queue_deadline(&mut self, at: Instant, key: TxKey) {
        self.next_deadline_key += 1;
        self.deadlines.push(Reverse((at, self.next_deadline_key)));
        self.deadline_keys.insert(self.next_deadline_key, key);
    }
}

/// RFC 3261 §18.1.1: a request larger than 1300 bytes (the path MTU
/// being unknown) must not go over UDP; it goes over TCP to the same
/// address, with its top Via saying so. (The RFC's fall-back to UDP when
/// the connection is refused is not made: the request fails instead.)
pub const MAX_UDP_REQUEST: usize = 1300;

fn congestion_safe(target: Target, mut request: Request) -> (Target, Request) {
    if target.transport != Transport::Udp || request.to_bytes().len() <= MAX_UDP_REQUEST {
        return (target, request);
    }
    let Ok(mut via) = request.top_via() else {
        return (target, request);
    };
    via.transport = "TCP".to_owned();
    request.headers.remove_first_value("Via");
    request.headers.insert_first("Via", via);
    let tcp = Target {
        transport: Transport::Tcp,
        ..target
    };
    (tcp, request)
}

/// Where responses to `request` go (RFC 3261 §18.2.2 with RFC 3581): over a
/// stream, back on the connection; over UDP, to the source address — the
/// `received` address with the `rport` port when the client asked for it,
/// else the Via's sent-by port.
pub fn response_target(source: Target, request: &Request) -> Target {
    if source.transport.is_reliable() {
        return source;
    }
    let port = match request.top_via() {
        Ok(via) if via.rport().is_some() => source.addr.port(),
        Ok(via) => via.port.unwrap_or(5060),
        Err(_) => source.addr.port(),
    };
    Target {
        transport: source.transport,
        addr: SocketAddr::new(source.addr.ip(), port),
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3): the INVITE's
/// Request-URI, Call-ID, From, top Via and Route, the response's To (with
/// its tag), CSeq number with method ACK, no body.
pub fn ack_for_failure(invite: &Request, response: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    let first = |name: &str| invite.headers.get(name).map(str::to_owned);
    // Only the top hop.
    if let Some(via) = invite.headers.get_all("Via").first() {
        ack.headers.push("Via", via);
    }
    for name in ["Max-Forwards", "From", "Call-ID"] {
        if let Some(v) = first(name) {
            ack.headers.push(name, &v);
        }
    }
    if let Some(to) = response.headers.get("To") {
        ack.headers.push("To", to);
    }
    if let Ok(cseq) = invite.cseq() {
        ack.headers.push("CSeq", format!("{} ACK", cseq.seq));
    }
    for route in invite.headers.get_all("Route") {
        ack.headers.push("Route", route);
    }
    ack
}

/// A response to `req` (§8.2.6): its Via lines, From, To (with a tag of
/// ours if it had none), Call-ID and CSeq.
pub fn response_to(req: &Request, code: u16, reason: &str, rng: &mut StdRng) -> Response {
    let mut resp = Response::new(code, reason);
    for via in req.headers.get_all("Via") {
        resp.headers.push("Via", via);
    }
    if let Some(from) = req.headers.get("From") {
        resp.headers.push("From", from);
    }
    if let Some(to) = req.headers.get("To") {
        let tagged = req.to().ok().is_some_and(|t| t.tag().is_some());
        if tagged || code == 100 {
            resp.headers.push("To", to);
        } else {
            resp.headers
                .push("To", format!("{to};tag={}", random_hex(rng, 6)));
        }
    }
    for name in ["Call-ID", "CSeq"] {
        if let Some(v) = req.headers.get(name) {
            resp.headers.push(name, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use std::time::Duration;

    fn options(body_len: usize, branch: &str) -> Request {
        let text = format!(
            "OPTIONS sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@x>\r\nCall-ID: big\r\nCSeq: 1 OPTIONS\r\n\
             Content-Length: {body_len}\r\n\r\n{}",
            "x".repeat(body_len)
        );
        match Message::parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn requests_over_1300_bytes_go_over_tcp_with_a_tcp_via() {
        let udp = Target {
            transport: Transport::Udp,
            addr: "192.0.2.2:5060".parse().unwrap(),
        };
        let mut layer = TransactionLayer::new(SipTimers::default());
        let now = Instant::now();
        layer.send_request(now, udp, options(100, "small"));
        let t = layer.poll_transmit().unwrap();
        assert_eq!(t.target, udp);
        let big = layer.send_request(now, udp, options(1400, "big"));
        let t = layer.poll_transmit().unwrap();
        assert_eq!(t.target.transport, Transport::Tcp);
        assert_eq!(t.target.addr, udp.addr);
        let Ok(Message::Request(sent)) = Message::parse(&t.bytes) else {
            panic!()
        };
        let via = sent.top_via().unwrap();
        assert_eq!(via.transport, "TCP");
        assert_eq!(via.branch(), Some("z9hG4bKbig"));
        assert_eq!(big.branch, "z9hG4bKbig", "matched by its branch as before");
        // Over TCP there is no retransmission.
        layer.handle_timeout(now + Duration::from_secs(1));
        assert!(layer
            .poll_transmit()
            .is_some_and(|t| t.target.transport == Transport::Udp));
        assert!(layer.poll_transmit().is_none());
    }
}
