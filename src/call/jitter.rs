//! The adaptive jitter buffer: RTP payloads in by sequence number, one
//! frame out every packet time — the packet itself, the next packet's FEC
//! when it is missing, or concealment when neither is there.
//!
//! It holds `target` frames before playing, where `target` follows the
//! measured interarrival jitter (twice it, plus a margin, in whole frames),
//! and drops frames when it holds more than `target + 2`, so a sender whose
//! clock runs fast cannot make the delay grow (clock drift).

use std::collections::BTreeMap;

/// What to play for the next frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout {
    /// Nothing yet: the buffer is still filling.
    Wait,
    Frame(Vec<u8>),
    /// The frame is missing; the next packet's FEC can rebuild it.
    Recover(Vec<u8>),
    /// Missing with nothing to rebuild it from.
    Conceal,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub played: u64,
    pub recovered: u64,
    pub concealed: u64,
    /// Late (already played over) or duplicate packets.
    pub discarded: u64,
    /// Frames dropped to keep the delay from growing.
    pub dropped_for_drift: u64,
}

pub struct JitterBuffer {
    /// Extended sequence number -> payload.
    packets: BTreeMap<u64, Vec<u8>>,
    /// The extended sequence number of the next frame to play.
    next: Option<u64>,
    last_ext: Option<u64>,
    /// Frames to hold before and while playing.
    target: usize,
    max: usize,
    frame_ms: u32,
    /// Frames concealed in a row with nothing buffered: the sender (or the
    /// network) stalled.
    starved: u32,
    stats: JitterStats,
    /// The sequence number of the frame `pop` last returned as `Frame`.
    last_played: Option<u16>,
    /// The fewest frames held, whatever the measured jitter.
    min_frames: usize,
}

impl JitterBuffer {
    /// `frame_ms`: the packet time; `max`: the most frames ever held.
    pub fn new(frame_ms: u32, max: usize) -> Self {
        JitterBuffer {
            packets: BTreeMap::new(),
            next: None,
            last_ext: None,
            target: 2,
            max: max.max(4),
            frame_ms: frame_ms.max(1),
            starved: 0,
            stats: JitterStats::default(),
            last_played: None,
            min_frames: 1,
        }
    }

    /// The fewest frames to hold (`[audio] jitter_min_ms`), at most half
    /// the buffer.
    pub fn set_min_frames(&mut self, frames: usize) {
        self.min_frames = frames.clamp(1, self.max / 2);
        self.target = self.target.max(self.min_frames);
    }

    /// The RTP sequence number of the frame last played (for measuring how
    /// long frames wait here).
    pub fn last_played(&self) -> Option<u16> {
        self.last_played
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Frames currently waiting.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// The delay the buffer aims for, in milliseconds.
    pub fn target_ms(&self) -> u32 {
        self.target as u32 * self.frame_ms
    }

    /// Follows the receiver's jitter estimate: room for twice the jitter
    /// and 5 ms, in whole frames, at least one.
    pub fn set_jitter_ms(&mut self, jitter_ms: f64) {
        let want = ((2.0 * jitter_ms + 5.0) / f64::from(self.frame_ms)).ceil() as usize;
        self.target = want.clamp(self.min_frames, self.max / 2);
    }

    pub fn push(&mut self, sequence: u16, payload: Vec<u8>) {
        let ext = self.extend(sequence);
        // After a stall everything arrives "late": rather than discard the
        // whole burst, play on from it with the delay the stall showed.
        if self.starved >= 2 && self.packets.is_empty() && self.next.is_some_and(|n| ext < n) {
            self.next = None;
            self.starved = 0;
        }
        if self.next.is_some_and(|n| ext < n) || self.packets.contains_key(&ext) {
            self.stats.discarded += 1;
            return;
        }
        self.packets.insert(ext, payload);
        while self.packets.len() > self.max {
            self.packets.pop_first();
            self.stats.dropped_for_drift += 1;
        }
    }

    /// The frame for this packet time.
    pub fn pop(&mut self) -> Playout {
        let next = match self.next {
            Some(n) => n,
            None => {
                // Start once `target` frames are in.
                if self.packets.len() < self.target {
                    return Playout::Wait;
                }
                match self.packets.keys().next() {
                    Some(&first) => first,
                    None => return Playout::Wait,
                }
            }
        };
        // Too much held (the sender's clock is fast, or a burst came):
        // skip ahead rather than let the delay grow.
        let mut next = next;
        while self.packets.range(next..).count() > self.target + 2 {
            self.packets.remove(&next);
            next += 1;
            self.stats.dropped_for_drift += 1;
        }
        self.next = Some(next + 1);
        if let Some(p) = self.packets.remove(&next) {
            self.stats.played += 1;
            self.starved = 0;
            self.last_played = Some(next as u16);
            return Playout::Frame(p);
        }
        if self.packets.is_empty() {
            self.starved += 1;
        }
        if self.packets.is_empty() && self.stats.played == 0 {
            self.next = None;
            return Playout::Wait;
        }
        match self.packets.get(&(next + 1)) {
            Some(p) => {
                self.stats.recovered += 1;
                Playout::Recover(p.clone())
            }
            None => {
                self.stats.concealed += 1;
                Playout::Conceal
            }
        }
    }

    /// A 16-bit sequence number extended with the cycles seen so far.
    fn extend(&mut self, sequence: u16) -> u64 {
        let ext = match self.last_ext {
            None => u64::from(sequence) + (1 << 16),
            Some(last) => {
                let delta = sequence.wrapping_sub(last as u16) as i16;
                (last as i64 + i64::from(delta)).max(0) as u64
            }
        };
        if self.last_ext.is_none_or(|l| ext > l) {
            self.last_ext = Some(ext);
        }
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Vec<u8> {
        vec![n]
    }

    #[test]
    fn reorders_and_waits_for_its_target() {
        let mut jb = JitterBuffer::new(20, 20);
        assert_eq!(jb.pop(), Playout::Wait);
        jb.push(11, p(11));
        assert_eq!(jb.pop(), Playout::Wait, "target is 2 frames");
        jb.push(10, p(10));
        assert_eq!(jb.pop(), Playout::Frame(p(10)));
        assert_eq!(jb.pop(), Playout::Frame(p(11)));
        jb.push(13, p(13));
        assert_eq!(jb.pop(), Playout::Recover(p(13)), "12 lost, 13's FEC");
        assert_eq!(jb.pop(), Playout::Frame(p(13)));
        assert_eq!(jb.pop(), Playout::Conceal);
        jb.push(14, p(14));
        assert_eq!(jb.stats().discarded, 1, "14 came after its time");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = JitterBuffer::new(20, 20);
        jb.push(65534, p(1));
        jb.push(65535, p(2));
        jb.push(0, p(3));
        jb.push(1, p(4));
        let out: Vec<Playout> = (0..4).map(|_| jb.pop()).collect();
        assert_eq!(out, [1, 2, 3, 4].map(|n| Playout::Frame(p(n))));
    }

    #[test]
    fn a_fast_sender_does_not_grow_the_delay() {
        let mut jb = JitterBuffer::new(20, 50);
        let mut seq = 0u16;
        // One extra packet every 10 frames: 10 % drift.
        for tick in 0..500 {
            jb.push(seq, p(0));
            seq += 1;
            if tick % 10 == 0 {
                jb.push(seq, p(0));
                seq += 1;
            }
            jb.pop();
            assert!(
                jb.len() <= jb.target + 3,
                "{} held at tick {tick}",
                jb.len()
            );
        }
        assert!(jb.stats().dropped_for_drift > 40);
    }

    #[test]
    fn after_a_stall_the_late_burst_is_played_not_discarded() {
        let mut jb = JitterBuffer::new(20, 50);
        for seq in 0..10u16 {
            jb.push(seq, p(seq as u8));
            jb.pop();
        }
        assert_eq!(jb.pop(), Playout::Frame(p(9)), "the one still held");
        // 200 ms of nothing: ten frames concealed.
        for _ in 0..10 {
            assert!(matches!(jb.pop(), Playout::Conceal | Playout::Wait));
        }
        // The sender catches up: its burst is older than the play-out point.
        for seq in 10..20u16 {
            jb.push(seq, p(seq as u8));
        }
        // Play resumes from the burst, trimmed to target + 2 frames so the
        // stall does not leave a lasting delay.
        let played: Vec<Playout> = (0..4).map(|_| jb.pop()).collect();
        assert_eq!(played, [16, 17, 18, 19].map(|n| Playout::Frame(p(n))));
    }

    #[test]
    fn the_target_follows_jitter() {
        let mut jb = JitterBuffer::new(20, 20);
        jb.set_jitter_ms(0.0);
        assert_eq!(jb.target_ms(), 20);
        jb.set_jitter_ms(30.0);
        assert_eq!(jb.target_ms(), 80, "2·30 + 5 = 65 ms -> 4 frames");
        jb.set_jitter_ms(10_000.0);
        assert_eq!(jb.target_ms(), 200, "capped at half the buffer");
    }

    #[test]
    fn the_minimum_holds_whatever_the_jitter() {
        let mut jb = JitterBuffer::new(20, 50);
        jb.set_min_frames(3);
        jb.set_jitter_ms(0.0);
        assert_eq!(jb.target_ms(), 60);
        // Never more than half the buffer.
        jb.set_min_frames(100);
        assert_eq!(jb.target_ms(), 25 * 20);
    }
}
