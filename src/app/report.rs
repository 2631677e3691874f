//! The JSON call report of `icephone call --report PATH.json`. Scripts read
//! it, so these keys stay as they are (more may be added):
//! `ice.selected_pair.local.type`, `ice.selected_pair.remote.type`,
//! `ice.selected_pair.local.address`, `ice.selected_pair.remote.address`,
//! `timing.invite_to_answer_ms`, `timing.answer_to_ice_connected_ms`,
//! `timing.answer_to_first_audio_ms`, `rtp.packets_sent`,
//! `rtp.packets_received`, `rtp.packets_lost`, `rtp.jitter_ms`,
//! `quality.mos`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::call::audio::AudioReport;
use crate::call::media::{CheckedPair, SelectedPair};
use crate::call::CallMedia;
use crate::ice::Candidate;
use crate::net::RelayInfo;
use crate::rtp::{estimate, CodecImpairment, QualityInput};

#[derive(Serialize, Default)]
pub struct CallReport {
    pub call: CallInfo,
    pub sip: Vec<SipStep>,
    pub ice: IceReport,
    pub timing: Timing,
    pub rtp: RtpReport,
    pub quality: Quality,
    /// Receive figures once a second, `ms` after the INVITE.
    pub series: Vec<SeriesPoint>,
    /// Delay icephone itself adds, device buffers excluded.
    pub latency: LatencyReport,
}

#[derive(Serialize, Default)]
pub struct LatencyReport {
    /// Capture to network: the microphone queue and encoding.
    pub send_mean_ms: Option<f64>,
    pub send_max_ms: Option<f64>,
    /// Network to speaker queue: the jitter buffer and the frame clock.
    pub playout_mean_ms: Option<f64>,
    pub playout_max_ms: Option<f64>,
}

#[derive(Serialize)]
pub struct SeriesPoint {
    pub ms: f64,
    pub rtt_ms: Option<f64>,
    pub jitter_ms: f64,
    pub packets_received: u64,
    pub packets_lost: i64,
}

#[derive(Serialize, Default)]
pub struct CallInfo {
    pub from: String,
    pub to: String,
    /// `hung up here`, `486 Busy Here`, …
    pub ended: String,
}

/// One SIP message of the call, `ms` after the INVITE went.
#[derive(Serialize)]
pub struct SipStep {
    pub ms: u64,
    pub message: String,
    pub direction: &'static str,
}

#[derive(Serialize, Default)]
pub struct IceReport {
    pub local_candidates: Vec<CandidateReport>,
    pub remote_candidates: Vec<CandidateReport>,
    pub pairs: Vec<PairReport>,
    pub selected_pair: Option<SelectedReport>,
    /// Every pair state change, `ms` after the INVITE.
    pub checks: Vec<CheckReport>,
}

#[derive(Serialize)]
pub struct CheckReport {
    pub ms: f64,
    pub component: u16,
    pub local: String,
    pub remote: String,
    pub state: &'static str,
    pub rtt_ms: Option<f64>,
    pub nominated: bool,
}

#[derive(Serialize)]
pub struct CandidateReport {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
    pub protocol: &'static str,
    pub priority: u32,
    pub component: u16,
    /// For our relayed candidates: the TURN server and how we reach it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayReport>,
}

#[derive(Serialize, Clone)]
pub struct RelayReport {
    pub server: String,
    /// `udp`, `tcp` or `tls`: between us and the TURN server.
    pub transport: &'static str,
}

impl CandidateReport {
    fn new(c: &Candidate, relays: &[RelayInfo]) -> Self {
        CandidateReport {
            kind: c.kind.to_string(),
            address: c.address.to_string(),
            protocol: "udp",
            priority: c.priority,
            component: c.component,
            relay: relays
                .iter()
                .find(|r| r.relayed == c.address)
                .map(|r| RelayReport {
                    server: r.server.to_string(),
                    transport: r.transport.as_str(),
                }),
        }
    }
}

#[derive(Serialize)]
pub struct PairReport {
    pub component: u16,
    pub local: String,
    pub remote: String,
    pub state: &'static str,
    pub rtt_ms: Option<f64>,
}

impl From<&CheckedPair> for PairReport {
    fn from(p: &CheckedPair) -> Self {
        PairReport {
            component: p.component,
            local: p.local.to_string(),
            remote: p.remote.to_string(),
            state: p.state.as_str(),
            rtt_ms: p.rtt.map(ms_f64),
        }
    }
}

#[derive(Serialize)]
pub struct SelectedReport {
    pub local: CandidateReport,
    pub remote: CandidateReport,
}

#[derive(Serialize, Default)]
pub struct Timing {
    pub invite_to_answer_ms: Option<f64>,
    pub answer_to_ice_connected_ms: Option<f64>,
    pub answer_to_first_audio_ms: Option<f64>,
    pub call_ms: Option<f64>,
}

#[derive(Serialize, Default)]
pub struct RtpReport {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: i64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub jitter_ms: f64,
    pub frames_played: u64,
    pub frames_recovered_by_fec: u64,
    pub frames_concealed: u64,
    /// Round trip measured by RTCP (RFC 3550 §6.4.1).
    pub rtt_ms: Option<f64>,
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    /// What the peer last reported losing of our stream, percent.
    pub remote_loss_percent: Option<f64>,
}

#[derive(Serialize, Default)]
pub struct Quality {
    /// E-model (ITU-T G.107) estimate, 1 to 4.5.
    pub mos: Option<f64>,
    pub r_factor: Option<f64>,
}

/// The moments of a call, as `call` sees them.
pub struct Moments {
    pub invite: Instant,
    pub answer: Option<Instant>,
    pub ice_connected: Option<Instant>,
    pub audio_started: Option<Instant>,
    pub ended: Option<Instant>,
}

impl Moments {
    /// A call that starts now (the INVITE went, or came).
    pub fn starting(invite: Instant) -> Self {
        Moments {
            invite,
            answer: None,
            ice_connected: None,
            audio_started: None,
            ended: None,
        }
    }
}

impl CallReport {
    /// An empty report of the call `from` -> `to`.
    pub fn between(from: String, to: String) -> Self {
        CallReport {
            call: CallInfo {
                from,
                to,
                ended: String::new(),
            },
            ..Default::default()
        }
    }

    pub fn record(&mut self, moments: &Moments, message: &str, outgoing: bool) {
        self.sip.push(SipStep {
            ms: moments.invite.elapsed().as_millis() as u64,
            message: message.to_owned(),
            direction: if outgoing { "sent" } else { "received" },
        });
    }

    pub fn set_ice(&mut self, media: &CallMedia, selected: Option<&SelectedPair>, since: Instant) {
        let relays = media.relays();
        let ours = |c: &Candidate| CandidateReport::new(c, &relays);
        let theirs = |c: &Candidate| CandidateReport::new(c, &[]);
        self.ice = IceReport {
            local_candidates: media.local_candidates().iter().map(ours).collect(),
            remote_candidates: media.remote_candidates().iter().map(theirs).collect(),
            pairs: media.checked_pairs().iter().map(Into::into).collect(),
            selected_pair: selected.map(|s| SelectedReport {
                local: ours(&s.local),
                remote: theirs(&s.remote),
            }),
            checks: media
                .check_events()
                .iter()
                .map(|c| CheckReport {
                    ms: ms_f64(c.at.saturating_duration_since(since)),
                    component: c.component,
                    local: c.local.to_string(),
                    remote: c.remote.to_string(),
                    state: c.state.as_str(),
                    rtt_ms: c.rtt.map(ms_f64),
                    nominated: c.nominated,
                })
                .collect(),
        };
    }

    /// Timings, RTP figures and the quality estimate. `network_rtt` is the
    /// selected pair's check round trip, used until RTCP has measured one.
    pub fn finish(
        &mut self,
        m: &Moments,
        audio: Option<&AudioReport>,
        network_rtt: Option<Duration>,
        jitter_buffer: Duration,
    ) {
        let between = |a: Option<Instant>, b: Option<Instant>| {
            a.zip(b)
                .map(|(a, b)| ms_f64(b.saturating_duration_since(a)))
        };
        self.timing = Timing {
            invite_to_answer_ms: between(Some(m.invite), m.answer),
            answer_to_ice_connected_ms: between(m.answer, m.ice_connected),
            answer_to_first_audio_ms: audio
                .and_then(|a| a.first_packet_after)
                .and_then(|first| m.audio_started.map(|s| s + first))
                .and_then(|first| between(m.answer, Some(first))),
            call_ms: between(m.answer, m.ended),
        };
        let Some(a) = audio else {
            return;
        };
        self.series = a
            .series
            .iter()
            .map(|p| SeriesPoint {
                ms: ms_f64(p.at.saturating_duration_since(m.invite)),
                rtt_ms: p.rtt_ms.map(|v| (v * 10.0).round() / 10.0),
                jitter_ms: (p.jitter_ms * 10.0).round() / 10.0,
                packets_received: p.packets_received,
                packets_lost: p.packets_lost,
            })
            .collect();
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let l = &a.latency;
        self.latency = LatencyReport {
            send_mean_ms: l.send.mean_ms().map(round),
            send_max_ms: (l.send.count > 0).then(|| round(l.send.max_ms)),
            playout_mean_ms: l.playout.mean_ms().map(round),
            playout_max_ms: (l.playout.count > 0).then(|| round(l.playout.max_ms)),
        };
        self.rtp = RtpReport {
            packets_sent: a.packets_sent,
            packets_received: a.packets_received,
            packets_lost: a.packets_lost,
            bytes_sent: a.bytes_sent,
            bytes_received: a.bytes_received,
            jitter_ms: (a.jitter_ms * 10.0).round() / 10.0,
            frames_played: a.playout.played,
            frames_recovered_by_fec: a.playout.recovered,
            frames_concealed: a.playout.concealed,
            rtt_ms: a.rtt_ms.map(|v| (v * 10.0).round() / 10.0),
            rtcp_sent: a.rtcp_sent,
            rtcp_received: a.rtcp_received,
            remote_loss_percent: a.remote_fraction_lost.map(|f| (f * 1000.0).round() / 10.0),
        };
        if a.packets_received == 0 {
            return;
        }
        let expected = a.packets_received as f64 + a.packets_lost.max(0) as f64;
        let loss = 100.0 * a.packets_lost.max(0) as f64 / expected;
        // Mouth to ear: half the round trip, 20 ms of packetisation, the
        // jitter buffer (devices are not counted: there are none yet).
        let rtt = a
            .rtt_ms
            .and_then(|ms| Duration::try_from_secs_f64(ms / 1e3).ok())
            .or(network_rtt);
        let delay = rtt.unwrap_or_default() / 2 + Duration::from_millis(20) + jitter_buffer;
        let q = estimate(&QualityInput {
            one_way_delay: delay,
            packet_loss_percent: loss,
            burst_ratio: 1.0,
            codec: CodecImpairment::OPUS,
        });
        self.quality = Quality {
            mos: Some((q.mos * 100.0).round() / 100.0),
            r_factor: Some((q.r * 10.0).round() / 10.0),
        };
    }

    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// ICE, timings, RTP figures and quality into `report`, from a call that
/// has ended (either side of it). The selected pair's check RTT stands in
/// until RTCP measured one.
pub fn finish_report(
    report: &mut CallReport,
    moments: &Moments,
    media: &CallMedia,
    selected: Option<&SelectedPair>,
    audio: Option<&AudioReport>,
) {
    report.set_ice(media, selected, moments.invite);
    let rtt = selected.and_then(|s| {
        media
            .checked_pairs()
            .iter()
            .find(|p| p.local == s.local.base && p.remote == s.remote.address)
            .and_then(|p| p.rtt)
    });
    report.finish(moments, audio, rtt, Duration::from_millis(40));
}

fn ms_f64(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}
