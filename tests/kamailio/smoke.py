#!/usr/bin/env python3
"""Smoke test for tests/kamailio/kamailio.cfg (stdlib only, loopback only).

Starts kamailio (found on PATH, or $KAMAILIO) on 127.0.0.1 with an ephemeral
port and a temp runtime dir, drives it with raw SIP over UDP/TCP sockets and
stops it again by PID. Exit status 0 = all checks passed.

    python3 smoke.py            # -v to print every SIP message
"""
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CFG = os.path.join(HERE, "kamailio.cfg")
REALM = "icephone.test"
USERS = {"alice": "Alice-pw1", "bob": "Bob-pw2", "carol": "Carol-pw3"}
VERBOSE = "-v" in sys.argv
IP = "127.0.0.1"


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)
    print("ok   " + what)


def rnd(n=10):
    return "".join(random.choice("0123456789abcdef") for _ in range(n))


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


# ---------------------------------------------------------------- SIP parsing
class Msg:
    def __init__(self, raw):
        self.raw = raw
        head, _, self.body = raw.partition("\r\n\r\n")
        lines = head.split("\r\n")
        self.first = lines[0]
        self.headers = []  # (lower-case name, value), in order
        for ln in lines[1:]:
            if ln[:1] in (" ", "\t") and self.headers:  # folded line
                n, v = self.headers[-1]
                self.headers[-1] = (n, v + " " + ln.strip())
                continue
            n, _, v = ln.partition(":")
            self.headers.append((n.strip().lower(), v.strip()))
        parts = self.first.split(" ", 2)
        self.is_reply = parts[0].startswith("SIP/")
        self.status = int(parts[1]) if self.is_reply else None
        self.method = None if self.is_reply else parts[0]
        self.ruri = None if self.is_reply else parts[1]

    def all(self, name):
        return [v for n, v in self.headers if n == name.lower()]

    def get(self, name):
        v = self.all(name)
        return v[0] if v else None

    def __str__(self):
        return self.raw


def build(first, headers, body=""):
    out = [first]
    for n, v in headers:
        out.append("%s: %s" % (n, v))
    if body:
        out.append("Content-Type: application/sdp")
    out.append("Content-Length: %d" % len(body.encode()))
    return ("\r\n".join(out) + "\r\n\r\n" + body)


def auth_params(value):
    """Parse 'Digest realm="x", nonce="y", qop="auth"' into a dict."""
    _, _, rest = value.partition(" ")
    out = {}
    for item in rest.split(","):
        k, _, v = item.strip().partition("=")
        out[k.strip().lower()] = v.strip().strip('"')
    return out


def digest(user, pw, method, uri, challenge, hdr="Authorization"):
    p = auth_params(challenge)
    cnonce, nc = rnd(16), "00000001"
    ha1 = md5("%s:%s:%s" % (user, p["realm"], pw))
    ha2 = md5("%s:%s" % (method, uri))
    qop = p.get("qop", "")
    if "auth" in qop.split(","):
        resp = md5("%s:%s:%s:%s:auth:%s" % (ha1, p["nonce"], nc, cnonce, ha2))
        v = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", '
             'response="%s", algorithm=MD5, cnonce="%s", qop=auth, nc=%s'
             % (user, p["realm"], p["nonce"], uri, resp, cnonce, nc))
    else:
        resp = md5("%s:%s:%s" % (ha1, p["nonce"], ha2))
        v = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", '
             'response="%s", algorithm=MD5' % (user, p["realm"], p["nonce"], uri, resp))
    if "opaque" in p:
        v += ', opaque="%s"' % p["opaque"]
    return (hdr, v)


# ---------------------------------------------------------------- user agent
class UA:
    """A raw SIP endpoint. `advertise` = host:port written into Via/Contact
    (a fake private address simulates a UA behind NAT)."""

    def __init__(self, user, proxy, transport="udp", advertise=None):
        self.user, self.proxy, self.transport = user, proxy, transport
        self.buf = b""
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((IP, 0))
        else:
            self.sock = socket.create_connection(proxy, timeout=3)
        self.local = "%s:%d" % self.sock.getsockname()
        self.advertise = advertise or self.local
        self.cseq = 0
        self.call_id = rnd(16) + "@" + user

    def close(self):
        self.sock.close()

    def contact(self):
        c = "<sip:%s@%s" % (self.user, self.advertise)
        if self.transport == "tcp":
            c += ";transport=tcp"
        return c + ">"

    def via(self, branch=None):
        return ("SIP/2.0/%s %s;branch=%s;rport"
                % (self.transport.upper(), self.advertise, branch or "z9hG4bK" + rnd()))

    def send(self, text):
        if VERBOSE:
            print(">>> %s %s\n%s" % (self.user, self.transport, text))
        if self.transport == "udp":
            self.sock.sendto(text.encode(), self.proxy)
        else:
            self.sock.sendall(text.encode())

    def recv(self, timeout=3.0):
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                if self.transport == "udp":
                    data, _ = self.sock.recvfrom(65535)
                    raw = data.decode()
                else:
                    raw = self._recv_tcp()
                    if raw is None:
                        continue
            except socket.timeout:
                return None
            m = Msg(raw)
            if VERBOSE:
                print("<<< %s %s\n%s" % (self.user, self.transport, raw))
            return m

    def _recv_tcp(self):
        while True:
            if b"\r\n\r\n" in self.buf:
                head, _, rest = self.buf.partition(b"\r\n\r\n")
                clen = 0
                for ln in head.split(b"\r\n"):
                    n, _, v = ln.partition(b":")
                    if n.strip().lower() in (b"content-length", b"l"):
                        clen = int(v.strip())
                if len(rest) >= clen:
                    self.buf = rest[clen:]
                    return (head + b"\r\n\r\n" + rest[:clen]).decode()
            if self.buf.startswith(b"\r\n"):  # keepalive CRLF
                self.buf = self.buf[2:]
                continue
            chunk = self.sock.recv(65535)
            if not chunk:
                raise Fail("TCP connection closed by kamailio")
            self.buf += chunk

    def expect(self, pred, what, timeout=3.0):
        """Receive until pred(msg) is true; ignore everything else."""
        end = time.time() + timeout
        while time.time() < end:
            m = self.recv(end - time.time())
            if m is not None and pred(m):
                return m
        raise Fail("%s: timed out waiting for %s" % (self.user, what))

    def final(self, cseq_method, timeout=3.0):
        return self.expect(lambda m: m.is_reply and m.status >= 200
                           and m.get("cseq").endswith(" " + cseq_method),
                           "final reply to " + cseq_method, timeout)

    # -- requests ------------------------------------------------------------
    def request(self, method, ruri, to, extra=(), body="", branch=None, cseq=None,
                from_tag=None, call_id=None):
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        hdrs = [("Via", self.via(branch)),
                ("Max-Forwards", "70"),
                ("From", "<sip:%s@%s>;tag=%s" % (self.user, REALM, from_tag or self.tag())),
                ("To", to),
                ("Call-ID", call_id or self.call_id),
                ("CSeq", "%d %s" % (cseq, method)),
                ("Contact", self.contact()),
                ("User-Agent", "icephone-smoke")]
        hdrs += list(extra)
        return build("%s %s SIP/2.0" % (method, ruri), hdrs, body)

    def tag(self):
        if not hasattr(self, "_tag"):
            self._tag = rnd(8)
        return self._tag

    def register(self, pw, expires=60, expect_status=200):
        ruri = "sip:%s" % REALM
        to = "<sip:%s@%s>" % (self.user, REALM)
        self.send(self.request("REGISTER", ruri, to, [("Expires", str(expires))]))
        r = self.final("REGISTER")
        if r.status != 401:
            return r, None
        ch = r.get("www-authenticate")
        self.send(self.request("REGISTER", ruri, to, [
            ("Expires", str(expires)), digest(self.user, pw, "REGISTER", ruri, ch)]))
        return self.final("REGISTER"), r

    def reply_to(self, req, status, reason, to_tag=None, contact=True, body=""):
        hdrs = [("Via", v) for v in req.all("via")]
        to = req.get("to")
        if to_tag and "tag=" not in to:
            to += ";tag=" + to_tag
        hdrs += [("From", req.get("from")), ("To", to), ("Call-ID", req.get("call-id")),
                 ("CSeq", req.get("cseq"))]
        hdrs += [("Record-Route", v) for v in req.all("record-route")]
        if contact:
            hdrs.append(("Contact", self.contact()))
        self.send(build("SIP/2.0 %d %s" % (status, reason), hdrs, body))


SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       "t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


# ---------------------------------------------------------------- kamailio
def free_port():
    """A port that is free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        t = socket.socket()
        t.bind((IP, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((IP, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise Fail("no free port")


def kamcmd(tmp, *args):
    exe = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
    return subprocess.run([exe, "-s", "unix:" + os.path.join(tmp, "kamailio_ctl")] + list(args),
                          capture_output=True, text=True, timeout=5).stdout


def start_kamailio(tmp, port):
    exe = os.environ.get("KAMAILIO") or shutil.which("kamailio") or "/usr/sbin/kamailio"
    users = ";".join("%s=%s" % kv for kv in USERS.items())
    cmd = [exe, "-f", CFG, "-DD", "-E", "-n", "1", "-m", "32", "-M", "4",
           "-Y", tmp, "-P", os.path.join(tmp, "kamailio.pid"), "-w", tmp,
           "-A", "SIP_IP=%s" % IP, "-A", "SIP_PORT=%d" % port,
           "-A", 'REALM="%s"' % REALM, "-A", 'USERS="%s"' % users]
    print("start: " + " ".join(cmd))
    log = open(os.path.join(tmp, "kamailio.log"), "w")
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    # ready = answers OPTIONS on UDP
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((IP, 0))
    probe.settimeout(0.1)
    lp = probe.getsockname()[1]
    while time.time() - t0 < 10:
        if proc.poll() is not None:
            raise Fail("kamailio exited early with %s" % proc.returncode)
        opt = build("OPTIONS sip:%s:%d SIP/2.0" % (IP, port), [
            ("Via", "SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport" % (IP, lp, rnd())),
            ("Max-Forwards", "70"), ("From", "<sip:probe@%s>;tag=%s" % (IP, rnd())),
            ("To", "<sip:%s:%d>" % (IP, port)), ("Call-ID", rnd()), ("CSeq", "1 OPTIONS")])
        probe.sendto(opt.encode(), (IP, port))
        try:
            data = probe.recv(65535).decode()
            if Msg(data).status == 200:
                break
        except (socket.timeout, ConnectionRefusedError):
            pass
    else:
        raise Fail("kamailio did not answer OPTIONS within 10 s")
    probe.close()
    print("ok   kamailio up, answering OPTIONS after %.2f s (pid %d)" % (time.time() - t0, proc.pid))
    return proc


def stop(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------- scenarios
def run(tmp, port):
    proxy = (IP, port)
    # alice pretends to be behind NAT: Via/Contact say 10.0.0.99:5060
    alice = UA("alice", proxy, advertise="10.0.0.99:5060")
    bob = UA("bob", proxy)
    carol = UA("carol", proxy, transport="tcp", advertise="127.0.0.1:5070")
    uas = [alice, bob, carol]
    try:
        # --- REGISTER with digest, qop=auth
        r, ch = bob.register(USERS["bob"], expires=60)
        check(ch is not None and ch.status == 401, "REGISTER without credentials -> 401")
        p = auth_params(ch.get("www-authenticate"))
        check(p.get("realm") == REALM and "auth" in p.get("qop", ""),
              "401 challenge has realm=%s and qop=auth" % REALM)
        check(r.status == 200, "REGISTER with Authorization -> 200 (got %d)" % r.status)
        check(any("expires=60" in c for c in r.all("contact")), "200 OK Contact has expires=60")

        r, _ = alice.register(USERS["alice"], expires=60)
        check(r.status == 200, "NATed alice REGISTER -> 200")
        via = r.get("via")
        check("received=127.0.0.1" in via and "rport=%s" % alice.local.split(":")[1] in via,
              "200 OK Via carries received/rport: " + via)

        r, _ = carol.register(USERS["carol"], expires=60)
        check(r.status == 200, "carol REGISTER over TCP -> 200")

        # --- wrong password, unknown user, too-short expires
        eve = UA("bob", proxy)
        uas.append(eve)
        r, _ = eve.register("wrong-password")
        check(r.status in (401, 403), "wrong password -> %d" % r.status)
        mallory = UA("mallory", proxy)
        uas.append(mallory)
        r, _ = mallory.register("whatever")
        check(r.status == 403, "unknown user -> %d" % r.status)
        r, _ = bob.register(USERS["bob"], expires=2)
        check(r.status == 423 and r.get("min-expires") == "5",
              "Expires: 2 -> 423 Min-Expires: 5")

        # --- location table
        dump = kamcmd(tmp, "ul.dump")
        if VERBOSE:
            print(dump)
        check("sip:bob@%s" % bob.local in dump, "ul.dump lists bob's contact sip:bob@%s" % bob.local)
        check("Received: sip:127.0.0.1:%s" % alice.local.split(":")[1] in dump,
              "ul.dump shows alice's NAT 'Received' address")
        check("transport=tcp" in dump and "sip:127.0.0.1:%s;transport=tcp"
              % carol.local.split(":")[1] in dump, "ul.dump shows carol's TCP received")
        look = kamcmd(tmp, "ul.lookup", "location", "bob")
        check("sip:bob@%s" % bob.local in look, "ul.lookup location bob works")

        # --- OPTIONS to the server
        bob.send(build("OPTIONS sip:%s:%d SIP/2.0" % proxy, [
            ("Via", bob.via()), ("Max-Forwards", "70"),
            ("From", "<sip:bob@%s>;tag=%s" % (REALM, rnd())), ("To", "<sip:%s:%d>" % proxy),
            ("Call-ID", rnd()), ("CSeq", "1 OPTIONS")]))
        check(bob.final("OPTIONS").status == 200, "OPTIONS to the server -> 200")

        # --- INVITE alice -> bob: 407, then authenticated INVITE reaches bob
        ruri = "sip:bob@%s" % REALM
        to = "<sip:bob@%s>" % REALM
        alice.call_id = rnd(16) + "@alice"
        br = "z9hG4bK" + rnd()
        alice.send(alice.request("INVITE", ruri, to, body=SDP, branch=br))
        r = alice.final("INVITE")
        check(r.status == 407, "INVITE without credentials -> 407")
        ack = build("ACK %s SIP/2.0" % ruri, [
            ("Via", alice.via(br)), ("Max-Forwards", "70"), ("From", r.get("from")),
            ("To", r.get("to")), ("Call-ID", alice.call_id), ("CSeq", "%d ACK" % alice.cseq)])
        alice.send(ack)
        pa = digest("alice", USERS["alice"], "INVITE", ruri,
                    r.get("proxy-authenticate"), "Proxy-Authorization")
        alice.send(alice.request("INVITE", ruri, to, [pa], body=SDP))
        inv = bob.expect(lambda m: m.method == "INVITE", "INVITE at bob")
        check(True, "authenticated INVITE reached bob's socket (%s)" % inv.ruri)
        rr = inv.all("record-route")
        check(len(rr) >= 1 and ("%s:%d" % proxy) in rr[0] and ";lr" in rr[0],
              "INVITE carries Record-Route: " + ", ".join(rr))
        check(inv.get("proxy-authorization") is None, "Proxy-Authorization consumed")
        check(inv.body == SDP, "SDP body relayed unchanged")
        check("alias=127.0.0.1~%s~1" % alice.local.split(":")[1] in inv.get("contact"),
              "NATed caller's Contact got ;alias= (" + inv.get("contact") + ")")
        bob_tag = rnd(8)
        bob.reply_to(inv, 180, "Ringing", bob_tag)
        bob.reply_to(inv, 200, "OK", bob_tag, body=SDP)
        ok = alice.final("INVITE")
        check(ok.status == 200 and ok.all("record-route"), "alice gets 200 OK with Record-Route")

        # ACK and BYE follow the route set (loose routing)
        route = [("Route", v) for v in ok.all("record-route")[::-1]]
        bob_contact = ok.get("contact").strip("<>").split(">")[0]
        alice.send(build("ACK %s SIP/2.0" % bob_contact, [
            ("Via", alice.via()), ("Max-Forwards", "70"), ("From", ok.get("from")),
            ("To", ok.get("to")), ("Call-ID", alice.call_id),
            ("CSeq", "%d ACK" % alice.cseq)] + route))
        bob.expect(lambda m: m.method == "ACK", "ACK at bob")
        check(True, "in-dialog ACK loose-routed to bob")

        # bob hangs up: BYE goes to alice's *real* socket, not 10.0.0.99
        alice_contact = inv.get("contact").strip("<>").split(">")[0]
        broute = [("Route", v) for v in inv.all("record-route")]
        bob.send(build("BYE %s SIP/2.0" % alice_contact, [
            ("Via", bob.via()), ("Max-Forwards", "70"), ("From", ok.get("to")),
            ("To", ok.get("from")), ("Call-ID", alice.call_id), ("CSeq", "1 BYE")] + broute))
        bye = alice.expect(lambda m: m.method == "BYE", "BYE at alice")
        check(True, "BYE from bob reached NATed alice via loose_route + alias")
        alice.reply_to(bye, 200, "OK", contact=False)
        check(bob.final("BYE").status == 200, "bob gets 200 OK for BYE")

        # --- CANCEL
        alice.call_id = rnd(16) + "@alice"
        br = "z9hG4bK" + rnd()
        alice.send(alice.request("INVITE", ruri, to, body=SDP, branch=br))
        r = alice.final("INVITE")
        pa = digest("alice", USERS["alice"], "INVITE", ruri,
                    r.get("proxy-authenticate"), "Proxy-Authorization")
        alice.send(build("ACK %s SIP/2.0" % ruri, [
            ("Via", alice.via(br)), ("Max-Forwards", "70"), ("From", r.get("from")),
            ("To", r.get("to")), ("Call-ID", alice.call_id), ("CSeq", "%d ACK" % alice.cseq)]))
        br = "z9hG4bK" + rnd()
        alice.send(alice.request("INVITE", ruri, to, [pa], body=SDP, branch=br))
        inv = bob.expect(lambda m: m.method == "INVITE", "2nd INVITE at bob")
        bob.reply_to(inv, 180, "Ringing", bob_tag)
        alice.expect(lambda m: m.is_reply and m.status == 180, "180 at alice")
        alice.send(build("CANCEL %s SIP/2.0" % ruri, [
            ("Via", alice.via(br)), ("Max-Forwards", "70"),
            ("From", "<sip:alice@%s>;tag=%s" % (REALM, alice.tag())), ("To", to),
            ("Call-ID", alice.call_id), ("CSeq", "%d CANCEL" % alice.cseq)]))
        can = bob.expect(lambda m: m.method == "CANCEL", "CANCEL at bob")
        bob.reply_to(can, 200, "OK", bob_tag, contact=False)
        bob.reply_to(inv, 487, "Request Terminated", bob_tag, contact=False)
        check(alice.final("CANCEL").status == 200, "CANCEL -> 200 at alice")
        check(alice.final("INVITE").status == 487, "cancelled INVITE -> 487 at alice")

        # --- INVITE to carol, registered over TCP behind "NAT"
        alice.call_id = rnd(16) + "@alice"
        cr = "sip:carol@%s" % REALM
        br = "z9hG4bK" + rnd()
        alice.send(alice.request("INVITE", cr, "<%s>" % cr, body=SDP, branch=br))
        r = alice.final("INVITE")
        pa = digest("alice", USERS["alice"], "INVITE", cr,
                    r.get("proxy-authenticate"), "Proxy-Authorization")
        alice.send(build("ACK %s SIP/2.0" % cr, [
            ("Via", alice.via(br)), ("Max-Forwards", "70"), ("From", r.get("from")),
            ("To", r.get("to")), ("Call-ID", alice.call_id), ("CSeq", "%d ACK" % alice.cseq)]))
        alice.send(alice.request("INVITE", cr, "<%s>" % cr, [pa], body=SDP))
        inv = carol.expect(lambda m: m.method == "INVITE", "INVITE at carol (TCP)")
        check(len(inv.all("record-route")) == 2,
              "INVITE reached carol over her TCP connection, double Record-Route (udp->tcp)")
        carol.reply_to(inv, 486, "Busy Here", rnd(8), contact=False)
        r = alice.final("INVITE")
        check(r.status == 486, "carol's 486 relayed back to alice")

        # --- 404 for a user that is not registered
        bob.register(USERS["bob"], expires=0)  # unregister bob
        check("sip:bob@" not in kamcmd(tmp, "ul.dump"), "Expires: 0 removed bob from ul.dump")
        alice.call_id = rnd(16) + "@alice"
        alice.send(alice.request("INVITE", ruri, to, [], body=SDP))
        r = alice.final("INVITE")
        pa = digest("alice", USERS["alice"], "INVITE", ruri,
                    r.get("proxy-authenticate"), "Proxy-Authorization")
        br = "z9hG4bK" + rnd()
        alice.send(alice.request("INVITE", ruri, to, [pa], body=SDP, branch=br))
        r = alice.final("INVITE")
        check(r.status == 404, "INVITE to unregistered bob -> 404")
        alice.send(build("ACK %s SIP/2.0" % ruri, [
            ("Via", alice.via(br)), ("Max-Forwards", "70"), ("From", r.get("from")),
            ("To", r.get("to")), ("Call-ID", alice.call_id), ("CSeq", "%d ACK" % alice.cseq)]))

        # --- wrong password on INVITE
        alice.call_id = rnd(16) + "@alice"
        alice.send(alice.request("INVITE", ruri, to, [], body=SDP))
        r = alice.final("INVITE")
        pa = digest("alice", "bad", "INVITE", ruri, r.get("proxy-authenticate"),
                    "Proxy-Authorization")
        alice.send(alice.request("INVITE", ruri, to, [pa], body=SDP))
        r = alice.final("INVITE")
        check(r.status in (403, 407), "INVITE with wrong password -> %d" % r.status)
    finally:
        for ua in uas:
            ua.close()


def main():
    if not os.path.exists(CFG):
        print("missing " + CFG)
        return 2
    tmp = tempfile.mkdtemp(prefix="icephone-kam-")
    port = free_port()
    proc = None
    rc = 1
    try:
        proc = start_kamailio(tmp, port)
        run(tmp, port)
        rc = 0
        print("PASS")
    except Fail as e:
        print("FAIL: %s" % e)
    except Exception as e:  # noqa: BLE001
        print("FAIL (exception): %r" % e)
    finally:
        if proc is not None:
            stop(proc)
        if rc != 0 or VERBOSE:
            try:
                with open(os.path.join(tmp, "kamailio.log")) as f:
                    print("---- kamailio log (tail) ----")
                    print("".join(f.readlines()[-40:]))
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
