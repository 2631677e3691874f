//! A dialog (RFC 3261 §12): the state two UAs share between an INVITE's
//! answer and the BYE — Call-ID and tags, both CSeq counters, the remote
//! target and the route set — and the requests built from it.

use rand::rngs::StdRng;
use rand::Rng;
use thiserror::Error;

use super::headers::NameAddr;
use super::message::{Method, Request, Response};
use super::uri::Uri;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DialogError {
    #[error("the {0} has no tag")]
    NoTag(&'static str),
    #[error("no usable Contact")]
    NoContact,
    #[error("malformed {0}")]
    Malformed(&'static str),
}

#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    /// Our From (as UAC) or To (as UAS), with our tag.
    local: NameAddr,
    /// Theirs, with their tag.
    remote: NameAddr,
    local_seq: u32,
    remote_seq: Option<u32>,
    /// Where requests in the dialog go: the peer's Contact.
    pub remote_target: Uri,
    /// Record-Route, in the order our requests visit it.
    route_set: Vec<NameAddr>,
}

impl Dialog {
    /// The UAC's dialog from its INVITE and a 2xx (or tagged 1xx) answer
    /// (§12.1.2): the route set is the Record-Route reversed.
    pub fn as_uac(invite: &Request, response: &Response) -> Result<Self, DialogError> {
        let local = invite.from().map_err(|_| DialogError::Malformed("From"))?;
        let remote = response.to().map_err(|_| DialogError::Malformed("To"))?;
        if remote.tag().is_none() {
            return Err(DialogError::NoTag("To"));
        }
        let mut route_set = response
            .record_route()
            .map_err(|_| DialogError::Malformed("Record-Route"))?;
        route_set.reverse();
        Ok(Dialog {
            call_id: invite
                .call_id()
                .map_err(|_| DialogError::Malformed("Call-ID"))?
                .to_owned(),
            local,
            remote,
            local_seq: invite
                .cseq()
                .map_err(|_| DialogError::Malformed("CSeq"))?
                .seq,
            remote_seq: None,
            remote_target: first_contact(response.contacts().ok())?,
            route_set,
        })
    }

    /// The UAS's dialog from an INVITE it answers with `local_tag`
    /// (§12.1.1): the route set is the Record-Route as received.
    pub fn as_uas(
        invite: &Request,
        local_tag: &str,
        rng: &mut StdRng,
    ) -> Result<Self, DialogError> {
        let remote = invite.from().map_err(|_| DialogError::Malformed("From"))?;
        if remote.tag().is_none() {
            return Err(DialogError::NoTag("From"));
        }
        let mut local = invite.to().map_err(|_| DialogError::Malformed("To"))?;
        local.set_tag(local_tag);
        Ok(Dialog {
            call_id: invite
                .call_id()
                .map_err(|_| DialogError::Malformed("Call-ID"))?
                .to_owned(),
            local,
            remote,
            // §12.1.1: our own count starts anywhere below 2^31.
            local_seq: rng.random_range(1..(1 << 20)),
            remote_seq: Some(
                invite
                    .cseq()
                    .map_err(|_| DialogError::Malformed("CSeq"))?
                    .seq,
            ),
            remote_target: first_contact(invite.contacts().ok())?,
            route_set: invite
                .record_route()
                .map_err(|_| DialogError::Malformed("Record-Route"))?,
        })
    }

    pub fn local_tag(&self) -> &str {
        self.local.tag().unwrap_or_default()
    }

    pub fn remote_tag(&self) -> &str {
        self.remote.tag().unwrap_or_default()
    }

    /// Whether `req` belongs here: same Call-ID, its To tag ours, its
    /// From tag theirs (§12.2.2).
    pub fn matches_request(&self, req: &Request) -> bool {
        req.call_id().is_ok_and(|c| c == self.call_id)
            && req.to().is_ok_and(|t| t.tag() == Some(self.local_tag()))
            && req.from().is_ok_and(|f| f.tag() == Some(self.remote_tag()))
    }

    /// Checks a request's CSeq against the remote count (§12.2.2): a
    /// lower one is out of order (answer 500). ACK and CANCEL reuse the
    /// INVITE's number and are never out of order.
    pub fn accept_remote_cseq(&mut self, req: &Request) -> bool {
        let Ok(cseq) = req.cseq() else {
            return false;
        };
        if matches!(req.method, Method::Ack | Method::Cancel) {
            return true;
        }
        if self.remote_seq.is_some_and(|seen| cseq.seq <= seen) {
            return false;
        }
        self.remote_seq = Some(cseq.seq);
        true
    }

    /// A 2xx to a re-INVITE or a target-refreshing request moves the
    /// remote target (§12.2.1.2, §12.2.2).
    pub fn refresh_target(&mut self, contact: Uri) {
        self.remote_target = contact;
    }

    /// The URI whose host the request goes to: the first route, or the
    /// remote target.
    pub fn next_hop(&self) -> &Uri {
        self.route_set
            .first()
            .map(|r| &r.uri)
            .unwrap_or(&self.remote_target)
    }

    /// A new request in the dialog (§12.2.1.1) with the next CSeq. `via`
    /// is our Via value; `contact` our Contact URI.
    pub fn request(&mut self, method: Method, via: &str, contact: &Uri) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.build(method, self.local_seq, via, Some(contact))
    }

    /// The ACK for the 2xx to the INVITE with CSeq `seq` (§13.2.2.4): its
    /// own transaction, the INVITE's CSeq number.
    pub fn ack(&self, seq: u32, via: &str) -> Request {
        self.build(Method::Ack, seq, via, None)
    }

    /// The CSeq number of the last request we sent.
    pub fn local_seq(&self) -> u32 {
        self.local_seq
    }

    fn build(&self, method: Method, seq: u32, via: &str, contact: Option<&Uri>) -> Request {
        // Loose routing keeps the remote target as Request-URI; a strict
        // router (no ;lr) must be the Request-URI, the target goes last.
        let strict = self
            .route_set
            .first()
            .is_some_and(|r| r.uri.param("lr").is_none());
        let (uri, routes): (Uri, Vec<String>) = if strict {
            let mut routes: Vec<String> =
                self.route_set[1..].iter().map(|r| r.to_string()).collect();
            routes.push(format!("<{}>", self.remote_target));
            (self.route_set[0].uri.clone(), routes)
        } else {
            let routes = self.route_set.iter().map(|r| r.to_string()).collect();
            (self.remote_target.clone(), routes)
        };
        let mut req = Request::new(method.clone(), uri);
        let h = &mut req.headers;
        h.push("Via", via);
        h.push("Max-Forwards", "70");
        for route in routes {
            h.push("Route", route);
        }
        h.push("From", &self.local);
        h.push("To", &self.remote);
        h.push("Call-ID", &self.call_id);
        h.push("CSeq", format!("{seq} {method}"));
        if let Some(contact) = contact {
            h.push("Contact", format!("<{contact}>"));
        }
        req
    }
}

fn first_contact(contacts: Option<super::headers::Contacts>) -> Result<Uri, DialogError> {
    contacts
        .and_then(|c| c.addrs().first().map(|a| a.uri.clone()))
        .ok_or(DialogError::NoContact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use rand::SeedableRng;

    fn parse(text: &str) -> Message {
        Message::parse(text.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    fn invite() -> Request {
        match parse(
            "INVITE sip:bob@example.org SIP/2.0\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\n\
             Max-Forwards: 70\n\
             From: <sip:alice@example.org>;tag=al\n\
             To: <sip:bob@example.org>\n\
             Call-ID: c1\n\
             CSeq: 7 INVITE\n\
             Contact: <sip:alice@10.0.0.1:5060>\n\
             Record-Route: <sip:p2.example.org;lr>, <sip:p1.example.org;lr>\n\
             Content-Length: 0\n\n",
        ) {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn ok() -> Response {
        match parse(
            "SIP/2.0 200 OK\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\n\
             From: <sip:alice@example.org>;tag=al\n\
             To: <sip:bob@example.org>;tag=bb\n\
             Call-ID: c1\n\
             CSeq: 7 INVITE\n\
             Contact: <sip:bob@10.0.0.2:5062>\n\
             Record-Route: <sip:p2.example.org;lr>, <sip:p1.example.org;lr>\n\
             Content-Length: 0\n\n",
        ) {
            Message::Response(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn uac_routes_reversed_and_counts_on_from_the_invite() {
        let mut d = Dialog::as_uac(&invite(), &ok()).unwrap();
        assert_eq!(d.remote_tag(), "bb");
        assert_eq!(d.next_hop().to_string(), "sip:p1.example.org;lr");
        let via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKb";
        let contact: Uri = "sip:alice@10.0.0.1:5060".parse().unwrap();
        let bye = d.request(Method::Bye, via, &contact);
        assert_eq!(bye.uri.to_string(), "sip:bob@10.0.0.2:5062");
        assert_eq!(bye.cseq().unwrap().seq, 8);
        let routes: Vec<String> = bye
            .route()
            .unwrap()
            .iter()
            .map(|r| r.uri.to_string())
            .collect();
        assert_eq!(routes, ["sip:p1.example.org;lr", "sip:p2.example.org;lr"]);
        assert_eq!(bye.to().unwrap().tag(), Some("bb"));
        assert_eq!(bye.from().unwrap().tag(), Some("al"));
        let ack = d.ack(7, via);
        assert_eq!(ack.cseq().unwrap().seq, 7);
        assert_eq!(ack.cseq().unwrap().method, Method::Ack);
    }

    #[test]
    fn uas_keeps_route_order_and_rejects_old_cseqs() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut d = Dialog::as_uas(&invite(), "bb", &mut rng).unwrap();
        assert_eq!(d.next_hop().to_string(), "sip:p2.example.org;lr");
        assert_eq!(d.remote_target.to_string(), "sip:alice@10.0.0.1:5060");
        let mut bye = invite();
        bye.method = Method::Bye;
        bye.headers.set("To", "<sip:bob@example.org>;tag=bb");
        bye.headers.set("CSeq", "8 BYE");
        assert!(d.matches_request(&bye));
        assert!(d.accept_remote_cseq(&bye));
        assert!(
            !d.accept_remote_cseq(&bye),
            "the same CSeq again is out of order"
        );
        bye.headers.set("To", "<sip:bob@example.org>;tag=zz");
        assert!(!d.matches_request(&bye));
    }

    #[test]
    fn strict_router_becomes_the_request_uri() {
        let mut resp = ok();
        resp.headers.set("Record-Route", "<sip:strict.example.org>");
        let mut d = Dialog::as_uac(&invite(), &resp).unwrap();
        let contact: Uri = "sip:alice@10.0.0.1".parse().unwrap();
        let bye = d.request(
            Method::Bye,
            "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKc",
            &contact,
        );
        assert_eq!(bye.uri.to_string(), "sip:strict.example.org");
        let routes: Vec<String> = bye
            .route()
            .unwrap()
            .iter()
            .map(|r| r.uri.to_string())
            .collect();
        assert_eq!(routes, ["sip:bob@10.0.0.2:5062"]);
    }

    #[test]
    fn a_2xx_without_tag_or_contact_makes_no_dialog() {
        let mut resp = ok();
        resp.headers.set("To", "<sip:bob@example.org>");
        assert_eq!(
            Dialog::as_uac(&invite(), &resp).unwrap_err(),
            DialogError::NoTag("To")
        );
        let mut resp = ok();
        resp.headers.remove("Contact");
        assert_eq!(
            Dialog::as_uac(&invite(), &resp).unwrap_err(),
            DialogError::NoContact
        );
    }
}
