use std::net::SocketAddr;

use super::*;
use crate::ice::{Candidate, CandidateType};
use crate::sdp::description::MediaLine;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ice(ufrag: &str, candidates: Vec<Candidate>) -> IceDescription {
    IceDescription {
        pacing_ms: None,
        ufrag: ufrag.into(),
        pwd: format!("{ufrag}-password-0123456789abc"),
        lite: false,
        options: vec!["trickle".into()],
        candidates,
        end_of_candidates: true,
        remote_candidates: Vec::new(),
    }
}

fn local(ip_port: &str, ufrag: Option<&str>) -> LocalMedia {
    let a = addr(ip_port);
    LocalMedia {
        codecs: vec![CodecName::Opus, CodecName::Pcmu, CodecName::Pcma],
        dtmf: true,
        ptime: 20,
        direction: Direction::SendRecv,
        address: a,
        rtcp: None,
        rtcp_mux: true,
        ice: ufrag.map(|u| {
            ice(
                u,
                vec![
                    Candidate::host(a, 1, 65535),
                    Candidate::remote(
                        addr("203.0.113.7:40000"),
                        CandidateType::ServerReflexive,
                        1_694_498_815,
                        "srflx1",
                        1,
                        Some(a),
                    ),
                ],
            )
        }),
        session_id: 4242,
        version: 1,
    }
}

fn round_trip(s: &SessionDescription) -> SessionDescription {
    let text = s.to_bytes();
    SessionDescription::parse(&text)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&text)))
}

#[test]
fn our_offer_survives_the_wire_with_every_attribute() {
    let o = offer(&local("192.0.2.1:50000", Some("alic")));
    let text = String::from_utf8(o.to_bytes()).unwrap();
    for line in [
        "m=audio 50000 RTP/AVP 111 0 8 101 100",
        "c=IN IP4 192.0.2.1",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0;maxaveragebitrate=32000",
        "a=rtpmap:101 telephone-event/48000",
        "a=fmtp:101 0-15",
        "a=rtpmap:100 telephone-event/8000",
        "a=ptime:20",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=ice-ufrag:alic",
        "a=ice-options:trickle",
        "a=candidate:",
        "typ srflx raddr 192.0.2.1 rport 50000",
        "a=end-of-candidates",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    let back = round_trip(&o);
    assert_eq!(back, o);
}

#[test]
fn two_icephones_agree_on_opus_with_fec_dtmf_and_ice() {
    let alice = local("192.0.2.1:50000", Some("alic"));
    let o = round_trip(&offer(&alice));
    let bob = local("198.51.100.2:52000", Some("bobb"));
    let (a, on_bob) = answer(&o, &bob).unwrap();
    assert_eq!(on_bob.send_codec.name, CodecName::Opus);
    assert_eq!(on_bob.send_codec.payload_type, 111);
    assert!(on_bob.send_fec);
    assert_eq!(on_bob.max_bitrate, Some(32000));
    assert_eq!(on_bob.dtmf.as_ref().map(|c| c.payload_type), Some(101));
    assert_eq!(on_bob.ptime, 20);
    assert!(on_bob.rtcp_mux);
    assert_eq!(on_bob.remote_ice.as_ref().unwrap().ufrag, "alic");
    assert_eq!(on_bob.remote_ice.as_ref().unwrap().candidates.len(), 2);
    assert_eq!(on_bob.remote_rtp, addr("192.0.2.1:50000"));

    let a = round_trip(&a);
    let on_alice = apply_answer(&o, &a).unwrap();
    assert_eq!(on_alice.send_codec.payload_type, 111);
    assert_eq!(on_alice.remote_ice.as_ref().unwrap().ufrag, "bobb");
    assert_eq!(on_alice.remote_rtp, addr("198.51.100.2:52000"));
    assert_eq!(on_alice.direction, Direction::SendRecv);
    assert_eq!(on_alice.dtmf.as_ref().map(|c| c.clock_rate), Some(48_000));
}

/// A G.711-only peer without ICE, written as such phones write it.
const PLAIN_PCMU: &str =
    "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=call\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 18 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\na=ptime:30\r\n";

#[test]
fn a_peer_without_ice_or_opus_gets_pcmu_and_plain_rtp() {
    let o = SessionDescription::parse(PLAIN_PCMU.as_bytes()).unwrap();
    let (a, n) = answer(&o, &local("192.0.2.1:50000", Some("alic"))).unwrap();
    assert_eq!(n.send_codec.name, CodecName::Pcmu);
    assert_eq!(n.dtmf.as_ref().map(|c| c.payload_type), Some(101));
    assert_eq!(n.ptime, 30, "their ptime");
    assert!(n.remote_ice.is_none());
    assert!(!n.rtcp_mux);
    assert_eq!(n.remote_rtp, addr("192.0.2.9:4000"));
    assert_eq!(n.remote_rtcp, addr("192.0.2.9:4001"));
    let text = String::from_utf8(a.to_bytes()).unwrap();
    assert!(text.contains("m=audio 50000 RTP/AVP 0 101"), "{text}");
    assert!(
        !text.contains("ice-ufrag") && !text.contains("rtcp-mux"),
        "{text}"
    );
}

#[test]
fn hold_and_inactive_offers_get_mirrored_directions() {
    let mut o = round_trip(&offer(&local("192.0.2.1:50000", None)));
    o.audio_mut().unwrap().direction = Direction::SendOnly;
    let (a, n) = answer(&o, &local("192.0.2.2:50002", None)).unwrap();
    assert_eq!(a.audio().unwrap().direction, Direction::RecvOnly);
    assert_eq!(n.direction, Direction::RecvOnly);
    let back = apply_answer(&o, &a).unwrap();
    assert_eq!(back.direction, Direction::SendOnly);
    o.audio_mut().unwrap().direction = Direction::Inactive;
    let (a, _) = answer(&o, &local("192.0.2.2:50002", None)).unwrap();
    assert_eq!(a.audio().unwrap().direction, Direction::Inactive);
}

#[test]
fn a_default_address_outside_the_candidates_is_an_ice_mismatch() {
    let mut o = round_trip(&offer(&local("192.0.2.1:50000", Some("alic"))));
    o.audio_mut().unwrap().port = 51111; // an ALG rewrote c=/m=
    let (a, n) = answer(&o, &local("192.0.2.2:50002", Some("bobb"))).unwrap();
    assert!(n.remote_ice.is_none());
    let audio = a.audio().unwrap();
    assert!(audio.ice_mismatch && audio.ice.is_none());
    assert!(String::from_utf8(a.to_bytes())
        .unwrap()
        .contains("a=ice-mismatch"));
    assert!(apply_answer(&o, &round_trip(&a))
        .unwrap()
        .remote_ice
        .is_none());
}

#[test]
fn other_media_lines_are_refused_in_place() {
    let text = format!("{PLAIN_PCMU}m=video 5000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n");
    let text = text.replacen("m=audio 4000", "m=video 6000 RTP/AVP 97\r\nm=audio 4000", 1);
    let o = SessionDescription::parse(text.as_bytes()).unwrap();
    assert_eq!(o.media.len(), 3);
    let (a, _) = answer(&o, &local("192.0.2.1:50000", None)).unwrap();
    let kinds: Vec<(String, u16)> = SessionDescription::parse(&a.to_bytes())
        .unwrap()
        .media
        .iter()
        .map(|m| match m {
            MediaLine::Audio(a) => ("audio".to_string(), a.port),
            MediaLine::Other { media, .. } => (media.clone(), 0),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("video".into(), 0),
            ("audio".into(), 50000),
            ("video".into(), 0)
        ]
    );
    let written = String::from_utf8(a.to_bytes()).unwrap();
    assert!(written.contains("m=video 0 RTP/AVP 97"), "{written}");
}

#[test]
fn unusable_offers_say_why() {
    let only_g729 = PLAIN_PCMU.replace("RTP/AVP 0 18 101", "RTP/AVP 18");
    let o = SessionDescription::parse(only_g729.as_bytes()).unwrap();
    assert_eq!(
        answer(&o, &local("192.0.2.1:5000", None)).unwrap_err(),
        SdpError::NoCommonCodec
    );
    let srtp = PLAIN_PCMU.replace("RTP/AVP", "RTP/SAVP");
    assert!(matches!(
        SessionDescription::parse(srtp.as_bytes()),
        Err(SdpError::Transport(_))
    ));
    let no_c = PLAIN_PCMU.replace("c=IN IP4 192.0.2.9\r\n", "");
    assert!(matches!(
        SessionDescription::parse(no_c.as_bytes()),
        Err(SdpError::Address(_))
    ));
    let video_only = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n";
    let o = SessionDescription::parse(video_only.as_bytes()).unwrap();
    assert_eq!(
        answer(&o, &local("192.0.2.1:5000", None)).unwrap_err(),
        SdpError::NoAudio
    );
    for garbage in ["", "hello", "v=0\r\nm=audio x RTP/AVP 0\r\n"] {
        assert!(
            SessionDescription::parse(garbage.as_bytes()).is_err(),
            "{garbage:?}"
        );
    }
    let half_ice = format!("{PLAIN_PCMU}a=ice-ufrag:abcd\r\n");
    assert_eq!(
        SessionDescription::parse(half_ice.as_bytes()).unwrap_err(),
        SdpError::Attribute("ice-pwd")
    );
    let bad_candidate = format!("{PLAIN_PCMU}a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=candidate:1 1 UDP x 1.2.3.4 5 typ host\r\n");
    assert_eq!(
        SessionDescription::parse(bad_candidate.as_bytes()).unwrap_err(),
        SdpError::Attribute("candidate")
    );
}

#[test]
fn candidates_we_cannot_use_are_skipped_and_extensions_ignored() {
    use crate::sdp::description::parse_candidate;
    let c = parse_candidate("842163049 1 udp 1677729535 203.0.113.5 40000 typ srflx raddr 10.0.0.2 rport 5000 generation 0 network-cost 10")
        .unwrap()
        .unwrap();
    assert_eq!(c.kind, CandidateType::ServerReflexive);
    assert_eq!(c.related, Some(addr("10.0.0.2:5000")));
    assert!(
        parse_candidate("1 1 tcp 1 192.0.2.1 9 typ host tcptype active")
            .unwrap()
            .is_none()
    );
    assert!(parse_candidate("1 1 udp 1 4f3c-abc.local 5000 typ host")
        .unwrap()
        .is_none());
    assert!(parse_candidate("1 1 udp 1 192.0.2.1 5000 typ weird").is_err());
    assert!(parse_candidate("1 1 udp 1 192.0.2.1 5000 typ host raddr").is_err());
}

#[test]
fn answers_must_stay_within_the_offer_and_restarts_are_seen() {
    let alice = local("192.0.2.1:50000", Some("alic"));
    let o = offer(&alice);
    let (mut a, _) = answer(&o, &local("192.0.2.2:50002", Some("bobb"))).unwrap();
    a.audio_mut().unwrap().codecs[0].payload_type = 96;
    assert_eq!(
        apply_answer(&o, &a).unwrap_err(),
        SdpError::Mismatch("a codec we did not offer")
    );
    let (a1, _) = answer(&o, &local("192.0.2.2:50002", Some("bobb"))).unwrap();
    let (a2, _) = answer(&o, &local("192.0.2.2:50002", Some("bob2"))).unwrap();
    let first = apply_answer(&o, &a1).unwrap();
    let second = apply_answer(&o, &a2).unwrap();
    assert!(second.restarts_ice(first.remote_ice.as_ref()));
    assert!(!first.restarts_ice(first.remote_ice.as_ref()));
}

#[test]
fn rtcp_attribute_and_remote_candidates_round_trip() {
    let mut l = local("192.0.2.1:50000", Some("alic"));
    l.rtcp_mux = false;
    l.rtcp = Some(addr("192.0.2.1:50001"));
    let mut o = offer(&l);
    o.audio_mut()
        .unwrap()
        .ice
        .as_mut()
        .unwrap()
        .remote_candidates = vec![(1, addr("198.51.100.2:52000"))];
    let back = round_trip(&o);
    let audio = back.audio().unwrap();
    assert_eq!(audio.rtcp_address(), addr("192.0.2.1:50001"));
    assert_eq!(
        audio.ice.as_ref().unwrap().remote_candidates,
        [(1, addr("198.51.100.2:52000"))]
    );
}

#[test]
fn mutated_descriptions_never_panic() {
    let valid = [
        offer(&local("192.0.2.1:50000", Some("alic"))).to_bytes(),
        PLAIN_PCMU.as_bytes().to_vec(),
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let me = local("192.0.2.9:6000", Some("mutt"));
    for i in 0..5_000 {
        let mut bytes = valid[i % 2].clone();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => bytes[at] = next() as u8,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, b" :/=0\r\n"[(next() % 7) as usize]),
            }
        }
        if let Ok(o) = SessionDescription::parse(&bytes) {
            if let Ok((a, _)) = answer(&o, &me) {
                let _ = apply_answer(&o, &a);
            }
        }
    }
}

/// RFC 8839 §5.5: `a=ice-pacing` goes out as given and comes back in,
/// media or session level; an unreadable value is no value.
#[test]
fn ice_pacing_survives_the_wire() {
    let mut ours = local("192.0.2.1:4000", Some("pace"));
    if let Some(i) = ours.ice.as_mut() {
        i.pacing_ms = Some(20);
    }
    let offer = round_trip(&offer(&ours));
    let text = String::from_utf8(offer.to_bytes()).unwrap();
    assert!(text.contains("a=ice-pacing:20\r\n"), "{text}");
    let MediaLine::Audio(audio) = &offer.media[0] else {
        panic!("no audio line")
    };
    assert_eq!(audio.ice.as_ref().unwrap().pacing_ms, Some(20));
    let bad = text.replace("a=ice-pacing:20", "a=ice-pacing:soon");
    let parsed = SessionDescription::parse(bad.as_bytes()).unwrap();
    let MediaLine::Audio(audio) = &parsed.media[0] else {
        panic!("no audio line")
    };
    assert_eq!(audio.ice.as_ref().unwrap().pacing_ms, None);
}
