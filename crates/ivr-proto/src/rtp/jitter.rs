//! A fixed-capacity jitter buffer keyed by RTP sequence number, played out at 20 ms ticks.
//!
//! All storage is allocated in `new`; `push` and `pop` never allocate. Playout starts once the
//! buffer holds the target depth; the target adapts (between `min_depth_ms` and `max_depth_ms`)
//! to the interarrival jitter it measures, and only changes while re-buffering, so audio is never
//! time-stretched mid-talkspurt.

use std::time::Instant;

/// Tuning; the default is for 20 ms telephony packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Slots in the ring (packets). Also the reorder window.
    pub capacity: usize,
    /// Largest payload stored; bigger payloads are dropped.
    pub max_payload: usize,
    pub frame_ms: u32,
    /// RTP clock rate, to measure jitter from timestamps.
    pub clock_rate: u32,
    pub min_depth_ms: u32,
    pub max_depth_ms: u32,
    /// A sequence jump beyond this (either way) means the sender restarted: resync.
    pub resync_jump: u16,
}

impl Default for JitterConfig {
    /// 16 slots × 20 ms, 40–100 ms target, G.711-sized payloads up to 320 bytes.
    fn default() -> Self {
        JitterConfig {
            capacity: 16,
            max_payload: 320,
            frame_ms: 20,
            clock_rate: 8000,
            min_depth_ms: 40,
            max_depth_ms: 100,
            resync_jump: 100,
        }
    }
}

/// What `push` did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Stored,
    Duplicate,
    /// Its playout time has passed.
    Late,
    TooLarge,
    /// Far outside the window: buffer flushed and restarted at this packet.
    Resync,
}

/// What the playout tick gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<'a> {
    Frame {
        seq: u16,
        timestamp: u32,
        payload: &'a [u8],
    },
    /// The packet for this tick is lost or late: conceal it (`Decoder::decode_missing`).
    Missing { seq: u16 },
    /// Nothing to play (not started, re-buffering, or the sender went silent).
    Empty,
}

/// Counters for metrics and CDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    pub played: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicate: u64,
    /// Dropped because the buffer overflowed (sender burst or clock drift).
    pub overflow: u64,
    pub resyncs: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    used: bool,
    seq: u16,
    timestamp: u32,
    len: u16,
}

#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Vec<Slot>,
    data: Vec<u8>,
    /// Seq to play at the next tick; `None` until the first packet.
    next_seq: Option<u16>,
    /// Highest seq stored (meaningful while `buffered > 0`).
    max_seq: u16,
    playing: bool,
    /// Nothing popped since the last reset: an earlier seq may still become the start.
    fresh: bool,
    buffered: usize,
    target_frames: usize,
    /// Jitter estimate in RTP units scaled by 16 (RFC 3550 A.8), from packet arrivals.
    jitter_q4: u64,
    last_transit: Option<(Instant, u32)>,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(cfg: JitterConfig) -> Self {
        let capacity = cfg.capacity.clamp(4, 1024);
        let cfg = JitterConfig {
            capacity,
            clock_rate: cfg.clock_rate.max(1),
            frame_ms: cfg.frame_ms.max(1),
            ..cfg
        };
        let mut jb = JitterBuffer {
            cfg,
            slots: vec![Slot::default(); capacity],
            data: vec![0; capacity * cfg.max_payload],
            next_seq: None,
            max_seq: 0,
            playing: false,
            fresh: true,
            buffered: 0,
            target_frames: 0,
            jitter_q4: 0,
            last_transit: None,
            stats: JitterStats::default(),
        };
        jb.target_frames = jb.compute_target();
        jb
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Current playout target in ms.
    pub fn target_ms(&self) -> u32 {
        self.target_frames as u32 * self.cfg.frame_ms
    }

    /// Current playout target in frames.
    pub fn target_frames(&self) -> usize {
        self.target_frames
    }

    /// Measured interarrival jitter in ms.
    pub fn jitter_ms(&self) -> f64 {
        (self.jitter_q4 >> 4) as f64 * 1000.0 / self.cfg.clock_rate as f64
    }

    /// Packets currently held.
    pub fn len(&self) -> usize {
        self.buffered
    }

    pub fn is_empty(&self) -> bool {
        self.buffered == 0
    }

    fn compute_target(&self) -> usize {
        // Three times the mean deviation covers nearly all arrivals for near-normal jitter.
        let want_ms = self.cfg.min_depth_ms as f64 + 3.0 * self.jitter_ms();
        // max/min rather than clamp: a config with min > max must not panic.
        let ms = want_ms
            .min(self.cfg.max_depth_ms as f64)
            .max(self.cfg.min_depth_ms as f64);
        let frames = (ms / self.cfg.frame_ms as f64).round() as usize;
        frames.clamp(1, self.cfg.capacity - 1)
    }

    /// Forgets everything (new SSRC, re-INVITE to a new stream). Keeps the jitter estimate.
    pub fn reset(&mut self) {
        for s in self.slots.iter_mut() {
            s.used = false;
        }
        self.buffered = 0;
        self.next_seq = None;
        self.playing = false;
        self.fresh = true;
        self.last_transit = None;
    }

    /// Where a new source's packets continue this buffer's sequence space (an SSRC change):
    /// right after the highest packet held, or where playout stands when none is held
    /// (`None` before any packet). Audio already buffered still plays, the new packets follow
    /// it without a re-buffering pause, and the jitter estimate does not compare the new
    /// source's timestamps with the old one's.
    pub fn splice_point(&mut self) -> Option<u16> {
        self.last_transit = None;
        if self.buffered > 0 {
            Some(self.max_seq.wrapping_add(1))
        } else {
            self.next_seq
        }
    }

    fn observe_arrival(&mut self, now: Instant, timestamp: u32) {
        if let Some((t_prev, ts_prev)) = self.last_transit {
            let arrival_units = (now.saturating_duration_since(t_prev).as_nanos()
                * self.cfg.clock_rate as u128
                / 1_000_000_000) as i64;
            let ts_units = timestamp.wrapping_sub(ts_prev) as i32 as i64;
            let d = (arrival_units - ts_units)
                .unsigned_abs()
                .min(u32::MAX as u64);
            // More than a second off is not jitter but a jump of the sender's timestamps
            // (clock base restarted): re-anchor on this packet. Counted, one such packet
            // raised the estimate to hours and the target to its maximum for seconds.
            if d <= u64::from(self.cfg.clock_rate) {
                self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
            }
        }
        // Arrivals going backwards in time cannot happen with a monotonic clock; keep the newest.
        self.last_transit = Some((now, timestamp));
    }

    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) -> PushOutcome {
        self.store(Some(now), seq, timestamp, payload)
    }

    /// Holds the place of a sequence number that carries no audio (an RFC 4733 event packet in
    /// the same stream), so its tick plays as an empty frame rather than counting as lost. It does
    /// not feed the jitter estimate (event timestamps repeat by design).
    pub fn push_placeholder(&mut self, seq: u16, timestamp: u32) -> PushOutcome {
        self.store(None, seq, timestamp, &[])
    }

    fn store(
        &mut self,
        now: Option<Instant>,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
    ) -> PushOutcome {
        if payload.len() > self.cfg.max_payload {
            return PushOutcome::TooLarge;
        }
        let mut outcome = PushOutcome::Stored;
        let next = match self.next_seq {
            Some(n) => n,
            None => {
                self.next_seq = Some(seq);
                seq
            }
        };
        let delta = seq.wrapping_sub(next) as i16;
        let cap = self.cfg.capacity;
        if delta.unsigned_abs() > self.cfg.resync_jump {
            self.reset();
            self.stats.resyncs += 1;
            self.next_seq = Some(seq);
            outcome = PushOutcome::Resync;
        } else if delta < 0 && self.fresh && (self.max_seq.wrapping_sub(seq) as usize) < cap {
            // Reordered before playout started: nothing was played yet, so start earlier.
            self.next_seq = Some(seq);
        } else if delta < 0 {
            self.stats.late += 1;
            return PushOutcome::Late;
        } else if delta as usize >= cap {
            // Ahead of the window: slide it, dropping the oldest, so latency stays bounded.
            let new_next = seq.wrapping_sub(cap as u16 - 1);
            let mut s = next;
            while s != new_next {
                let slot = &mut self.slots[s as usize % cap];
                if slot.used && slot.seq == s {
                    slot.used = false;
                    self.buffered -= 1;
                    self.stats.overflow += 1;
                }
                s = s.wrapping_add(1);
            }
            self.next_seq = Some(new_next);
        }
        let idx = seq as usize % cap;
        let slot = &mut self.slots[idx];
        if slot.used {
            if slot.seq == seq {
                self.stats.duplicate += 1;
                return PushOutcome::Duplicate;
            }
            // A stale entry the window moved past (cannot normally happen); reuse it.
            self.buffered -= 1;
        }
        *slot = Slot {
            used: true,
            seq,
            timestamp,
            len: payload.len() as u16,
        };
        if self.buffered == 0 || (seq.wrapping_sub(self.max_seq) as i16) > 0 {
            self.max_seq = seq;
        }
        let off = idx * self.cfg.max_payload;
        self.data[off..off + payload.len()].copy_from_slice(payload);
        self.buffered += 1;
        if let Some(now) = now {
            self.observe_arrival(now, timestamp);
        }
        outcome
    }

    /// Where the next packet in sequence will be stored: its slot, and the start of its
    /// payload. Addresses for a cache prefetch by a shell that handles many calls in turn (a
    /// hint: never to be read through; stale once the buffer changes).
    pub fn next_store_addrs(&self) -> [*const u8; 2] {
        let seq = match self.next_seq {
            Some(_) if self.buffered > 0 => self.max_seq.wrapping_add(1),
            Some(n) => n,
            None => 0,
        };
        let idx = seq as usize % self.cfg.capacity;
        [
            self.slots.as_ptr().wrapping_add(idx).cast(),
            self.data.as_ptr().wrapping_add(idx * self.cfg.max_payload),
        ]
    }

    /// One playout tick (every `frame_ms`).
    pub fn pop(&mut self, _now: Instant) -> Pop<'_> {
        let Some(next) = self.next_seq else {
            return Pop::Empty;
        };
        if !self.playing {
            self.target_frames = self.compute_target();
            if self.buffered >= self.target_frames {
                self.playing = true;
            } else {
                return Pop::Empty;
            }
        }
        if self.buffered == 0 {
            // Drained: the sender paused (silence suppression) or a long outage. Re-buffer, and
            // take the chance to adopt a new target.
            self.playing = false;
            self.target_frames = self.compute_target();
            return Pop::Empty;
        }
        let cap = self.cfg.capacity;
        let idx = next as usize % cap;
        self.next_seq = Some(next.wrapping_add(1));
        self.fresh = false;
        let slot = self.slots[idx];
        if slot.used && slot.seq == next {
            self.slots[idx].used = false;
            self.buffered -= 1;
            self.stats.played += 1;
            let off = idx * self.cfg.max_payload;
            Pop::Frame {
                seq: next,
                timestamp: slot.timestamp,
                payload: &self.data[off..off + slot.len as usize],
            }
        } else {
            self.stats.lost += 1;
            Pop::Missing { seq: next }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn jb() -> JitterBuffer {
        JitterBuffer::new(JitterConfig::default())
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn pop_seq(j: &mut JitterBuffer, now: Instant) -> Option<Result<u16, u16>> {
        match j.pop(now) {
            Pop::Frame { seq, payload, .. } => {
                assert_eq!(payload[0], seq as u8);
                Some(Ok(seq))
            }
            Pop::Missing { seq } => Some(Err(seq)),
            Pop::Empty => None,
        }
    }

    #[test]
    fn waits_for_target_then_plays_in_order_despite_reordering() {
        let t0 = Instant::now();
        let mut j = jb();
        assert_eq!(j.target_ms(), 40);
        let order = [10u16, 12, 11, 13, 15, 14, 16, 17];
        let mut played = vec![];
        for (i, &s) in order.iter().enumerate() {
            let now = at(t0, i as u64 * 20);
            assert_eq!(
                j.push(now, s, s as u32 * 160, &[s as u8; 160]),
                PushOutcome::Stored
            );
            if let Some(p) = pop_seq(&mut j, now) {
                played.push(p);
            }
        }
        // First pop happens once 2 frames (40 ms) are buffered.
        assert_eq!(
            played,
            vec![Ok(10), Ok(11), Ok(12), Ok(13), Ok(14), Ok(15), Ok(16)]
        );
        assert_eq!(j.stats().played, 7);
    }

    #[test]
    fn the_store_hint_names_where_the_next_packet_in_sequence_goes() {
        let t0 = Instant::now();
        // Across the sequence number's wrap too (the slot index jumps there).
        for first in [10u16, 65_534] {
            let mut j = jb();
            let a = first;
            let b = first.wrapping_add(1);
            j.push(t0, a, 0, &[a as u8; 160]);
            let [slot, data] = j.next_store_addrs();
            j.push(t0, b, 160, &[b as u8; 160]);
            let idx = b as usize % j.cfg.capacity;
            assert_eq!(slot, j.slots.as_ptr().wrapping_add(idx).cast::<u8>());
            assert!(matches!(j.pop(t0), Pop::Frame { seq, .. } if seq == a));
            match j.pop(t0) {
                Pop::Frame { seq, payload, .. } => {
                    assert_eq!(seq, b);
                    assert_eq!(
                        payload.as_ptr(),
                        data,
                        "seq {b}'s payload is where the hint said"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn loss_duplicates_and_late_packets() {
        let t0 = Instant::now();
        let mut j = jb();
        for s in [0u16, 1, 3, 4] {
            j.push(t0, s, s as u32 * 160, &[s as u8; 160]);
        }
        assert_eq!(j.push(t0, 3, 480, &[3; 160]), PushOutcome::Duplicate);
        assert_eq!(pop_seq(&mut j, t0), Some(Ok(0)));
        assert_eq!(pop_seq(&mut j, t0), Some(Ok(1)));
        assert_eq!(pop_seq(&mut j, t0), Some(Err(2)));
        // 2 arrives after its tick.
        assert_eq!(j.push(t0, 2, 320, &[2; 160]), PushOutcome::Late);
        assert_eq!(pop_seq(&mut j, t0), Some(Ok(3)));
        assert_eq!(pop_seq(&mut j, t0), Some(Ok(4)));
        // Drained: empty, not an endless run of "missing".
        assert_eq!(pop_seq(&mut j, t0), None);
        let s = j.stats();
        assert_eq!((s.lost, s.late, s.duplicate, s.played), (1, 1, 1, 4));
    }

    #[test]
    fn reorder_before_playout_starts_earlier() {
        let t0 = Instant::now();
        let mut j = jb();
        j.push(t0, 11, 160, &[11; 4]);
        assert_eq!(j.push(t0, 10, 0, &[10; 4]), PushOutcome::Stored);
        assert_eq!(pop_seq(&mut j, t0), Some(Ok(10)));
        assert_eq!(pop_seq(&mut j, t0), Some(Ok(11)));
    }

    #[test]
    fn placeholders_play_as_empty_frames() {
        let t0 = Instant::now();
        let mut j = jb();
        j.push(t0, 1, 0, &[1; 4]);
        j.push_placeholder(2, 160);
        j.push(t0, 3, 320, &[3; 4]);
        assert_eq!(pop_seq(&mut j, t0), Some(Ok(1)));
        assert!(matches!(
            j.pop(t0),
            Pop::Frame {
                seq: 2,
                payload: &[],
                ..
            }
        ));
        assert_eq!(pop_seq(&mut j, t0), Some(Ok(3)));
        assert_eq!(j.stats().lost, 0);
    }

    #[test]
    fn sequence_wrap_is_seamless() {
        let t0 = Instant::now();
        let mut j = jb();
        let mut out = vec![];
        let mut seq = 65533u16;
        for i in 0..8u64 {
            j.push(at(t0, i * 20), seq, (i * 160) as u32, &[seq as u8; 4]);
            seq = seq.wrapping_add(1);
            if let Some(p) = pop_seq(&mut j, at(t0, i * 20)) {
                out.push(p);
            }
        }
        assert_eq!(
            out,
            vec![Ok(65533), Ok(65534), Ok(65535), Ok(0), Ok(1), Ok(2), Ok(3)]
        );
    }

    #[test]
    fn resync_on_big_jump_and_overflow_slides_window() {
        let t0 = Instant::now();
        let mut j = jb();
        j.push(t0, 100, 0, &[100; 4]);
        j.push(t0, 101, 160, &[101; 4]);
        assert_eq!(j.push(t0, 40000, 0, &[0x40; 4]), PushOutcome::Resync);
        assert_eq!(j.len(), 1);
        assert_eq!(j.stats().resyncs, 1);
        // A burst of 20 in-window packets into a 16-slot ring: the oldest 4 are dropped.
        let mut j = jb();
        for s in 0..20u16 {
            j.push(t0, s, s as u32 * 160, &[s as u8; 4]);
        }
        assert_eq!(j.len(), 16);
        assert_eq!(j.stats().overflow, 4);
        assert_eq!(pop_seq(&mut j, t0), Some(Ok(4)));
        assert_eq!(j.push(t0, 1, 0, &[0; 400]), PushOutcome::TooLarge);
    }

    #[test]
    fn target_grows_with_jitter() {
        let t0 = Instant::now();
        let mut j = jb();
        // Arrivals alternating 0 / +30 ms around the 20 ms grid: ~30 ms jitter.
        for i in 0..200u64 {
            let ms = i * 20 + if i % 2 == 1 { 30 } else { 0 };
            j.push(at(t0, ms), i as u16, i as u32 * 160, &[i as u8; 4]);
            j.pop(at(t0, ms));
        }
        assert!(j.jitter_ms() > 20.0, "jitter {}", j.jitter_ms());
        // Drain so the target is recomputed at re-buffering.
        while j.pop(t0) != Pop::Empty {}
        assert_eq!(j.target_ms(), 100);
    }

    /// The sender's timestamps jump (by 100 s, then back) mid-stream on a perfect network: the
    /// jitter estimate and the target stay where they were.
    #[test]
    fn timestamp_jump_is_not_jitter() {
        let t0 = Instant::now();
        let mut j = jb();
        for i in 0..100u64 {
            let jump: u32 = match i {
                0..40 => 0,
                40..70 => 800_000,
                _ => 0u32.wrapping_sub(8_000_000),
            };
            let ts = (i as u32 * 160).wrapping_add(jump);
            j.push(at(t0, i * 20), i as u16, ts, &[i as u8; 4]);
            j.pop(at(t0, i * 20));
        }
        assert!(j.jitter_ms() < 1.0, "jitter {}", j.jitter_ms());
        while j.pop(t0) != Pop::Empty {}
        assert_eq!(j.target_ms(), 40);
    }

    #[test]
    fn odd_configs_do_not_panic() {
        let t0 = Instant::now();
        for cfg in [
            JitterConfig {
                min_depth_ms: 200,
                max_depth_ms: 20,
                ..Default::default()
            },
            JitterConfig {
                capacity: 0,
                max_payload: 0,
                frame_ms: 0,
                clock_rate: 0,
                ..Default::default()
            },
        ] {
            let mut j = JitterBuffer::new(cfg);
            j.push(t0, 1, 0, &[]);
            j.push(t0, 2, 0, &[]);
            j.pop(t0);
            assert!(j.target_ms() > 0);
        }
    }

    #[test]
    fn random_input_never_panics() {
        let t0 = Instant::now();
        let mut j = JitterBuffer::new(JitterConfig {
            capacity: 8,
            max_payload: 8,
            ..Default::default()
        });
        let mut x: u64 = 7;
        for i in 0..100_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let seq = (x >> 48) as u16 % 300;
            let len = (x >> 40) as usize % 12;
            j.push(at(t0, i), seq, (x >> 8) as u32, &[0u8; 12][..len]);
            if x & 3 == 0 {
                j.pop(at(t0, i));
            }
            assert!(j.len() <= 8);
        }
    }
}
