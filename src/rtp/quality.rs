//! Call quality estimate: the ITU-T G.107 E-model reduced to what a
//! softphone measures (one-way delay and packet loss), and MOS from R.
//!
//! Owns: the rating R = Ro − Is − Id − Ie,eff + A with every other
//! parameter at its G.107 default (Table 3), the codec impairment values,
//! and the R → MOS mapping of G.107 Annex B.
//!
//! Must not touch: measuring anything (`session` does), codecs, UI
//! thresholds. All functions are pure.
//!
//! Model, explicitly:
//! - Ro − Is = 94.77 − 1.41 = 93.36: the basic signal-to-noise ratio and
//!   simultaneous impairments with all G.107 defaults (noise, loudness
//!   ratings, sidetone, qdu = 1). With Idle at zero delay (0.15) this gives
//!   the familiar default R = 93.2.
//! - Id = Idte + Idle + Idd from the mouth-to-ear one-way delay T, with
//!   Ta = T, Tr = 2T and the default echo paths (TELR = 65 dB, WEPL =
//!   110 dB): well-cancelled echo, so delay itself (Idd) dominates.
//! - Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl), Ppl in percent.
//! - A = 0 (no advantage factor for a desktop softphone).

use std::time::Duration;

use super::session::MediaStats;

/// Ro with all G.107 default values.
const RO_DEFAULT: f64 = 94.77;
/// Is with all G.107 default values (Iolr 0.44 + Ist 0 + Iq 0.97).
const IS_DEFAULT: f64 = 1.41;
/// Talker echo loudness rating, dB (default).
const TELR: f64 = 65.0;
/// Weighted echo path loss, dB (default).
const WEPL: f64 = 110.0;
/// Idd starts at mT = 100 ms (default delay sensitivity).
const IDD_THRESHOLD_MS: f64 = 100.0;

/// A codec's equipment impairment Ie and packet-loss robustness Bpl.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodecImpairment {
    pub ie: f64,
    pub bpl: f64,
}

impl CodecImpairment {
    /// G.711 without loss concealment, random loss (G.113 Appendix I).
    pub const G711: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 4.3 };
    /// G.711 with the G.711 Appendix I concealment (G.113 Appendix I).
    pub const G711_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// G.729A + VAD (G.113 Appendix I).
    pub const G729A: CodecImpairment = CodecImpairment {
        ie: 11.0,
        bpl: 19.0,
    };
    /// Opus has no G.113 entry; these are our assumptions, not ITU-T
    /// values. Ie = 0: at 24 kbit/s or more Opus is wideband or better, so
    /// on this narrowband R scale it is not worse than G.711 (we do not
    /// credit the wideband gain, which needs G.107.1's extended scale).
    /// Bpl = 20: Opus conceals loss itself, but lacking a measured figure we
    /// stay below G.711+PLC's 25.1 so the meter errs towards pessimism; in-
    /// band FEC, when negotiated, only makes real quality better than this.
    pub const OPUS: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 20.0 };
}

/// What the estimate is computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualityInput {
    /// Mouth-to-ear: network one way plus capture, jitter buffer and playout.
    pub one_way_delay: Duration,
    /// Ppl, percent of packets lost (or discarded late), 0..=100.
    pub packet_loss_percent: f64,
    /// BurstR: 1 for random loss, above 1 for bursty loss.
    pub burst_ratio: f64,
    pub codec: CodecImpairment,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualityEstimate {
    /// Transmission rating, 0..=100 in practice.
    pub r: f64,
    pub mos: f64,
}

/// Burst ratio of a two-state Markov loss model (G.107 §7.5):
/// p = P(loss | previous received), q = P(received | previous lost).
/// Random loss has p + q = 1 and BurstR = 1.
pub fn burst_ratio(p: f64, q: f64) -> f64 {
    let sum = p + q;
    if sum.is_finite() && sum > 0.0 {
        1.0 / sum
    } else {
        1.0
    }
}

/// Idd: the impairment of delay itself (G.107 §7.4), zero up to 100 ms.
pub fn absolute_delay_impairment(one_way_ms: f64) -> f64 {
    if one_way_ms <= IDD_THRESHOLD_MS {
        return 0.0;
    }
    let x = (one_way_ms / IDD_THRESHOLD_MS).log2();
    let term = |v: f64| (1.0 + v.powi(6)).powf(1.0 / 6.0);
    25.0 * (term(x) - 3.0 * term(x / 3.0) + 2.0)
}

/// Idte: talker echo at the default TELR, echo path delay T.
fn talker_echo_impairment(t_ms: f64) -> f64 {
    // Roe = -1.5 (No - RLR) with the default noise No = -61.18 dBm0p, RLR = 2.
    let roe = RO_DEFAULT;
    let terv = TELR - 40.0 * ((1.0 + t_ms / 10.0) / (1.0 + t_ms / 150.0)).log10()
        + 6.0 * (-0.3 * t_ms * t_ms).exp();
    let re = 80.0 + 2.5 * (terv - 14.0);
    let half = (roe - re) / 2.0;
    (half + (half * half + 100.0).sqrt() - 1.0) * (1.0 - (-t_ms).exp())
}

/// Idle: listener echo at the default WEPL, round-trip delay Tr.
fn listener_echo_impairment(tr_ms: f64) -> f64 {
    let rle = 10.5 * (WEPL + 7.0) * (tr_ms + 1.0).powf(-0.25);
    let half = (RO_DEFAULT - rle) / 2.0;
    half + (half * half + 169.0).sqrt()
}

/// Id = Idte + Idle + Idd for a mouth-to-ear delay.
pub fn delay_impairment(one_way: Duration) -> f64 {
    let t_ms = one_way.as_secs_f64() * 1000.0;
    talker_echo_impairment(t_ms)
        + listener_echo_impairment(2.0 * t_ms)
        + absolute_delay_impairment(t_ms)
}

/// Ie,eff (G.107 §7.5). Non-finite or out-of-range inputs are clamped so a
/// bad statistic cannot produce a NaN rating.
pub fn effective_equipment_impairment(
    codec: CodecImpairment,
    loss_percent: f64,
    burst_ratio: f64,
) -> f64 {
    let ppl = if loss_percent.is_finite() {
        loss_percent.clamp(0.0, 100.0)
    } else {
        0.0
    };
    if ppl == 0.0 {
        return codec.ie;
    }
    let burst = if burst_ratio.is_finite() && burst_ratio > 0.0 {
        burst_ratio
    } else {
        1.0
    };
    codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst + codec.bpl)
}

pub fn r_factor(input: &QualityInput) -> f64 {
    RO_DEFAULT
        - IS_DEFAULT
        - delay_impairment(input.one_way_delay)
        - effective_equipment_impairment(input.codec, input.packet_loss_percent, input.burst_ratio)
}

/// G.107 Annex B: MOS = 1 + 0.035 R + R (R − 60)(100 − R) · 7·10⁻⁶ for
/// 0 < R < 100. The cubic dips just below 1 for R under about 6.5; the
/// result is held at 1 there.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6).max(1.0)
}

pub fn estimate(input: &QualityInput) -> QualityEstimate {
    let r = r_factor(input);
    QualityEstimate {
        r,
        mos: mos_from_r(r),
    }
}

/// Estimate from live statistics: network delay is half the RTT (zero
/// until one is measured), plus `terminal_delay` (packetisation, jitter
/// buffer, audio device); loss is the last interval's fraction lost,
/// assumed random.
pub fn estimate_from_stats(
    stats: &MediaStats,
    codec: CodecImpairment,
    terminal_delay: Duration,
) -> QualityEstimate {
    let network_ms = stats.rtt_ms.unwrap_or(0.0) / 2.0;
    let network = Duration::try_from_secs_f64(network_ms / 1000.0).unwrap_or_default();
    estimate(&QualityInput {
        one_way_delay: network.saturating_add(terminal_delay),
        packet_loss_percent: stats.fraction_lost * 100.0,
        burst_ratio: 1.0,
        codec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance
    }

    fn input(delay_ms: u32, loss: f64, codec: CodecImpairment) -> QualityInput {
        QualityInput {
            one_way_delay: MS * delay_ms,
            packet_loss_percent: loss,
            burst_ratio: 1.0,
            codec,
        }
    }

    #[test]
    fn mos_at_known_r_values() {
        assert!(close(mos_from_r(93.2), 4.41, 0.005), "{}", mos_from_r(93.2));
        assert_eq!(mos_from_r(0.0), 1.0);
        assert_eq!(mos_from_r(100.0), 4.5);
        assert_eq!(mos_from_r(-20.0), 1.0);
        assert_eq!(mos_from_r(130.0), 4.5);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        assert!(close(mos_from_r(50.0), 2.575, 1e-9), "{}", mos_from_r(50.0));
        let samples: Vec<f64> = (0..=100).map(|r| mos_from_r(f64::from(r))).collect();
        assert!(samples.iter().all(|&mos| (1.0..=4.5).contains(&mos)));
        assert!(
            samples.windows(2).skip(7).all(|w| w[0] <= w[1]),
            "monotonic above R = 7"
        );
    }

    #[test]
    fn default_connection_rates_93_2() {
        let r = r_factor(&input(0, 0.0, CodecImpairment::G711));
        assert!(close(r, 93.2, 0.05), "{r}");
        assert!(close(
            estimate(&input(0, 0.0, CodecImpairment::G711)).mos,
            4.41,
            0.01
        ));
    }

    #[test]
    fn delay_impairment_follows_g107() {
        assert_eq!(absolute_delay_impairment(100.0), 0.0);
        assert_eq!(absolute_delay_impairment(20.0), 0.0);
        // X = 1 at 200 ms: 25 ((2)^(1/6) - 3 (1 + 3^-6)^(1/6) + 2).
        assert!(close(absolute_delay_impairment(200.0), 3.044, 0.001));
        assert!(close(absolute_delay_impairment(400.0), 24.07, 0.01));
        let ratings: Vec<f64> = [0, 100, 150, 200, 300, 400, 600]
            .iter()
            .map(|&ms| r_factor(&input(ms, 0.0, CodecImpairment::G711)))
            .collect();
        assert!(ratings.windows(2).all(|w| w[0] > w[1]), "{ratings:?}");
        // G.114's planning points: about 90 at 150 ms, 'many users
        // dissatisfied' (R < 70) before 400 ms of mouth-to-ear delay.
        assert!(close(ratings[2], 89.6, 0.5), "{ratings:?}");
        assert!(ratings[5] < 70.0 && ratings[4] > 70.0, "{ratings:?}");
    }

    #[test]
    fn loss_impairment_per_codec() {
        let ie = |codec, loss| effective_equipment_impairment(codec, loss, 1.0);
        assert_eq!(ie(CodecImpairment::G711, 0.0), 0.0);
        assert!(close(ie(CodecImpairment::G711, 1.0), 95.0 / 5.3, 1e-9));
        assert!(close(
            ie(CodecImpairment::G711_PLC, 2.0),
            190.0 / 27.1,
            1e-9
        ));
        assert!(close(ie(CodecImpairment::G729A, 0.0), 11.0, 1e-9));
        assert!(close(
            ie(CodecImpairment::G711, 100.0),
            95.0 * 100.0 / 104.3,
            1e-9
        ));
        // Bursty loss hurts more than the same amount of random loss.
        let bursty = effective_equipment_impairment(CodecImpairment::OPUS, 5.0, 2.0);
        assert!(bursty > ie(CodecImpairment::OPUS, 5.0));
        // Nonsense inputs do not produce NaN.
        assert_eq!(ie(CodecImpairment::G711, f64::NAN), 0.0);
        assert!(
            effective_equipment_impairment(CodecImpairment::G711, 3.0, f64::INFINITY).is_finite()
        );
        assert_eq!(burst_ratio(0.1, 0.9), 1.0);
        assert!(close(burst_ratio(0.05, 0.45), 2.0, 1e-9));
        assert_eq!(burst_ratio(0.0, 0.0), 1.0);
    }

    #[test]
    fn estimate_from_session_stats() {
        let stats = MediaStats {
            fraction_lost: 0.01,
            rtt_ms: Some(100.0),
            ..MediaStats::default()
        };
        let estimate = estimate_from_stats(&stats, CodecImpairment::G711_PLC, 60 * MS);
        let expected = r_factor(&input(110, 1.0, CodecImpairment::G711_PLC));
        assert!(close(estimate.r, expected, 1e-9));
        assert!(estimate.mos > 4.0 && estimate.mos < 4.41, "{estimate:?}");
    }
}
