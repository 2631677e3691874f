//! Seeded mutation loop over valid RTP and RTCP datagrams: every parser and
//! the session state machines must turn hostile bytes into errors or
//! ignored packets, never a panic.
//!
//! Test-only; owns no protocol logic.

use std::time::{Duration, Instant};

use rand::RngCore;

use super::dtmf::{DtmfReceiver, TelephoneEvent};
use super::packet::{CsrcList, RtpHeader, RtpPacket};
use super::quality::{estimate_from_stats, CodecImpairment};
use super::rtcp::{
    append_bye, build_rr, build_sr, is_rtcp, parse_compound, NtpTime, ReceiverReport, ReportBlock,
    SenderInfo, SenderReport,
};
use super::session::{RtcpTiming, RtpSession, SessionConfig, OPUS_CLOCK_RATE};
use super::test_rng::XorShift;

const ITERATIONS: u32 = 20_000;

fn rtp_samples(peer: &mut RtpSession) -> Vec<Vec<u8>> {
    let mut samples: Vec<Vec<u8>> = (0..3)
        .map(|i| peer.sender_mut().packetize(&[0x55; 40], 960, i == 0))
        .collect();
    samples.push(
        peer.sender_mut()
            .packetize_at(101, 7, true, &[5, 0x0A, 1, 0x90]),
    );
    let mut with_csrcs = Vec::new();
    RtpHeader {
        marker: false,
        payload_type: 0,
        sequence: 9,
        timestamp: 160,
        ssrc: peer.sender().ssrc(),
        csrcs: CsrcList::from_slice(&[1, 2, 3]),
    }
    .write(&[0xFF; 160], &mut with_csrcs);
    samples.push(with_csrcs);
    // Extension and padding, hand-written.
    samples.push(vec![
        0xB0, 111, 0, 10, 0, 0, 3, 0xC0, 0, 0, 0, 42, 0xBE, 0xDE, 0, 1, 0x22, 1, 2, 0, 9, 9, 0, 2,
    ]);
    samples
}

fn rtcp_samples(peer: &mut RtpSession, now: Instant) -> Vec<Vec<u8>> {
    let block = ReportBlock {
        ssrc: 1,
        fraction_lost: 3,
        cumulative_lost: -4,
        extended_highest_seq: 70_000,
        jitter: 12,
        last_sr: 0x1234_5678,
        delay_since_last_sr: 99,
    };
    let mut sr = Vec::new();
    let report = SenderReport {
        ssrc: peer.sender().ssrc(),
        info: SenderInfo {
            ntp: NtpTime(0xE000_0001_8000_0000),
            rtp_timestamp: 5,
            packet_count: 6,
            octet_count: 7,
        },
        reports: vec![block, block],
    };
    build_sr(&report, "peer@example", &mut sr).expect("fits");
    let mut rr_bye = Vec::new();
    let rr = ReceiverReport {
        ssrc: peer.sender().ssrc(),
        reports: vec![block],
    };
    build_rr(&rr, "peer", &mut rr_bye).expect("fits");
    append_bye(&[peer.sender().ssrc(), 3], Some("bye now"), &mut rr_bye).expect("fits");
    let mut rr_app_padded = Vec::new();
    build_rr(&rr, "p", &mut rr_app_padded).expect("fits");
    rr_app_padded.extend_from_slice(&[0xA0, 204, 0, 2, b'a', b'b', b'c', b'd', 1, 2, 0, 4]);
    vec![
        sr,
        rr_bye,
        rr_app_padded,
        peer.bye(now, Some("done")).expect("fits"),
    ]
}

/// Applies one to four random edits.
fn mutate(datagram: &mut Vec<u8>, rng: &mut XorShift) {
    for _ in 0..=rng.below(4) {
        let len = datagram.len().max(1);
        match rng.below(6) {
            0 => {
                if let Some(byte) = datagram.get_mut(rng.below(len)) {
                    *byte ^= 1 << rng.below(8);
                }
            }
            1 => {
                if let Some(byte) = datagram.get_mut(rng.below(len)) {
                    *byte = rng.next_u32() as u8;
                }
            }
            2 => {
                // Header and length fields are where parsers are most fragile.
                if let Some(byte) = datagram.get_mut(rng.below(4.min(len))) {
                    *byte = rng.next_u32() as u8;
                }
            }
            3 => datagram.truncate(rng.below(len + 1)),
            4 => {
                let mut tail = vec![0; 1 + rng.below(16)];
                rng.fill_bytes(&mut tail);
                datagram.extend_from_slice(&tail);
            }
            _ => {
                let at = rng.below(len);
                let copy: Vec<u8> = datagram.get(at..).unwrap_or(&[]).to_vec();
                datagram.extend_from_slice(&copy);
            }
        }
    }
}

/// Whatever parses must also survive a write/parse round trip.
fn check_rtp(
    datagram: &[u8],
    session: &mut RtpSession,
    dtmf: &mut DtmfReceiver,
    now: Instant,
) -> bool {
    let Ok(packet) = RtpPacket::parse(datagram) else {
        return false;
    };
    let mut rewritten = Vec::new();
    packet.header.write(packet.payload, &mut rewritten);
    let again = RtpPacket::parse(&rewritten).expect("a written header parses");
    assert_eq!(again.header, packet.header);
    assert_eq!(again.payload, packet.payload);
    session.receive_rtp(&packet, now);
    let _ = dtmf.on_packet(packet.header.timestamp, packet.payload);
    true
}

#[test]
fn mutated_datagrams_never_panic() {
    let t0 = Instant::now();
    let mut rng = XorShift::new(0x5EED);
    let config = SessionConfig {
        payload_type: 111,
        clock_rate: OPUS_CLOCK_RATE,
        event_payload_type: Some(101),
        cname: "me@here".to_owned(),
        timing: RtcpTiming {
            min_interval: Duration::from_millis(200),
            ..RtcpTiming::default()
        },
    };
    let mut peer = RtpSession::new(config.clone(), t0, NtpTime(1 << 40), &mut rng).expect("valid");
    let mut session = RtpSession::new(config, t0, NtpTime(1 << 40), &mut rng).expect("valid");
    let mut dtmf = DtmfReceiver::new();
    let rtp = rtp_samples(&mut peer);
    let rtcp = rtcp_samples(&mut peer, t0);
    for sample in rtp.iter().chain(&rtcp) {
        assert!(RtpPacket::parse(sample).is_ok() || parse_compound(sample).is_ok());
    }

    let (mut rtp_ok, mut rtcp_ok) = (0, 0);
    for i in 0..ITERATIONS {
        let now = t0 + Duration::from_millis(u64::from(i));
        let corpus = if i % 2 == 0 { &rtp } else { &rtcp };
        let mut datagram = corpus[rng.below(corpus.len())].clone();
        mutate(&mut datagram, &mut rng);

        let _ = is_rtcp(&datagram);
        let _ = TelephoneEvent::parse(&datagram);
        if check_rtp(&datagram, &mut session, &mut dtmf, now) {
            rtp_ok += 1;
        }
        if parse_compound(&datagram).is_ok() {
            rtcp_ok += 1;
        }
        let _ = session.receive_rtcp(&datagram, now);
        if let Some(report) = session.handle_timeout(now, &mut rng) {
            parse_compound(&report).expect("our own reports parse");
        }
        let estimate = estimate_from_stats(
            &session.stats(),
            CodecImpairment::OPUS,
            Duration::from_millis(60),
        );
        assert!((1.0..=4.5).contains(&estimate.mos), "{estimate:?}");
    }
    // The loop must exercise both acceptance and rejection paths.
    assert!(rtp_ok > 1_000 && rtp_ok < ITERATIONS, "{rtp_ok} RTP parses");
    assert!(
        rtcp_ok > 500 && rtcp_ok < ITERATIONS,
        "{rtcp_ok} RTCP parses"
    );
}
