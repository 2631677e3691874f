//! One hop's conditions: host to its LAN (or to the internet), or NAT to the internet.

use std::time::Duration;

use super::rng::SimRng;

/// Conditions of one link, applied independently to each packet that
/// crosses it. Jitter is drawn per packet, so it may reorder packets, as
/// real paths do.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a packet is lost on this link.
    pub loss: f64,
}

impl LinkConfig {
    /// No delay, no jitter, no loss.
    pub const IDEAL: LinkConfig = LinkConfig {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
    };

    /// A lossless, jitter-free link with a fixed delay.
    pub fn with_delay(delay: Duration) -> Self {
        LinkConfig {
            delay,
            ..LinkConfig::IDEAL
        }
    }

    /// This packet's delay on the link, or `None` when the link loses it.
    pub(super) fn sample(&self, rng: &mut SimRng) -> Option<Duration> {
        if rng.chance(self.loss) {
            return None;
        }
        Some(self.delay + self.draw_jitter(rng))
    }

    fn draw_jitter(&self, rng: &mut SimRng) -> Duration {
        let max_nanos = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX - 1);
        if max_nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rng.range(0, max_nanos + 1))
    }
}
