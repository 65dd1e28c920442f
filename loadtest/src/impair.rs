//! Network impairment of the callers' RTP, in user space (no `netem` needed): loss, jitter,
//! reordering, duplicates, a drifting sender clock, an SSRC change and an RTP timestamp jump.
//!
//! [`Schedule`] is the pure part: seeded, no clock, no I/O. It says when each packet of a
//! stream leaves on the sender's (drifted) clock and what the network does to it. The pacing
//! threads (`sender.rs`) apply it: a delayed packet waits in a fixed ring of the stream's and
//! the thread wakes when it is due, so impairment costs no allocation and no thread per packet.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Nominal packet interval, ns.
const PTIME_NS: i64 = 20_000_000;

/// What `--impair` asks for. All zero: no impairment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Impairment {
    /// Packets dropped, percent.
    pub loss_pct: f64,
    /// Each packet delayed by a uniform random 0..=jitter_ms (so packets also overtake each
    /// other when the jitter exceeds the 20 ms interval).
    pub jitter_ms: u32,
    /// Packets held back an extra 21–40 ms, so they arrive after the next one, percent.
    pub reorder_pct: f64,
    /// Packets sent twice (the copy with its own jitter), percent.
    pub dup_pct: f64,
    /// Sender clock error in parts per million: positive sends faster than real time (more
    /// packets per second, timestamps still 160 apart), negative slower.
    pub drift_ppm: f64,
    /// The stream changes SSRC (and restarts its sequence number and timestamp at random
    /// values) once, at a random time between 0.5 and 1.5 times this many seconds into the
    /// call's media. 0: never.
    pub ssrc_change_s: f64,
    /// The RTP timestamp jumps once (forwards or backwards by 1 s to 1000 s, sequence numbers
    /// continuous), at a random time between 0.5 and 1.5 times this many seconds. 0: never.
    pub ts_jump_s: f64,
}

impl Impairment {
    pub fn is_none(&self) -> bool {
        *self == Impairment::default()
    }
}

impl FromStr for Impairment {
    type Err = String;

    /// `loss=PCT,jitter=MS,reorder=PCT,dup=PCT,drift=PPM,ssrc_change=S,ts_jump=S`; any subset,
    /// any order; `none` or an empty string for none.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut imp = Impairment::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "none" {
                continue;
            }
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected key=value"))?;
            let num: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{k}: {v:?} is not a number"))?;
            if !num.is_finite() {
                return Err(format!("{k}: {v:?} is not a number"));
            }
            let pct = |n: f64| {
                if (0.0..=100.0).contains(&n) {
                    Ok(n)
                } else {
                    Err(format!("{k}={v}: a percentage 0..=100"))
                }
            };
            let secs = |n: f64| {
                if (0.0..=86_400.0).contains(&n) {
                    Ok(n)
                } else {
                    Err(format!("{k}={v}: seconds 0..=86400"))
                }
            };
            match k.trim() {
                "loss" => imp.loss_pct = pct(num)?,
                "reorder" => imp.reorder_pct = pct(num)?,
                "dup" => imp.dup_pct = pct(num)?,
                "jitter" if (0.0..=1000.0).contains(&num) => imp.jitter_ms = num.round() as u32,
                "jitter" => return Err(format!("jitter={v}: milliseconds 0..=1000")),
                "drift" if num.abs() <= 10_000.0 => imp.drift_ppm = num,
                "drift" => return Err(format!("drift={v}: ppm within ±10000")),
                "ssrc_change" => imp.ssrc_change_s = secs(num)?,
                "ts_jump" => imp.ts_jump_s = secs(num)?,
                other => {
                    return Err(format!(
                        "unknown impairment {other:?} (loss, jitter, reorder, dup, drift, ssrc_change, ts_jump)"
                    ));
                }
            }
        }
        Ok(imp)
    }
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        let mut parts = Vec::new();
        let mut add = |k: &str, v: f64| {
            if v != 0.0 {
                parts.push(format!("{k}={v}"));
            }
        };
        add("loss", self.loss_pct);
        add("jitter", f64::from(self.jitter_ms));
        add("reorder", self.reorder_pct);
        add("dup", self.dup_pct);
        add("drift", self.drift_ppm);
        add("ssrc_change", self.ssrc_change_s);
        add("ts_jump", self.ts_jump_s);
        f.write_str(&parts.join(","))
    }
}

/// splitmix64: small, fast, good enough for a test schedule, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: f64) -> bool {
        pct > 0.0 && self.unit() * 100.0 < pct
    }
}

/// The seed of call `n`'s stream in a run seeded `seed`.
pub fn stream_seed(seed: u64, n: usize) -> u64 {
    Rng::new(seed ^ (n as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// What the network does to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fate {
    pub dropped: bool,
    /// Delay after its send time, µs.
    pub delay_us: u32,
    /// Held back to arrive after the next packet.
    pub reordered: bool,
    /// A second copy goes out this long after the send time, µs.
    pub dup_delay_us: Option<u32>,
}

/// Something that happens to the stream itself before a packet is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// New SSRC, sequence number and timestamp (a restarted sender or a switched media server).
    NewSsrc { ssrc: u32, seq: u16, timestamp: u32 },
    /// The timestamp moves by this many 8 kHz units (wrapping), sequence numbers continuous.
    TimestampJump(i32),
}

/// One stream's impairment schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    imp: Impairment,
    rng: Rng,
    /// Sender clock period per packet, ns (20 ms on a clock running `drift_ppm` fast).
    period_ns: f64,
    ssrc_change_at: Option<u64>,
    ts_jump_at: Option<u64>,
    ts_jump: i32,
}

impl Schedule {
    pub fn new(imp: Impairment, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let at = |s: f64, rng: &mut Rng| {
            (s > 0.0).then(|| ((0.5 + rng.unit()) * s * 50.0).round().max(1.0) as u64)
        };
        let ssrc_change_at = at(imp.ssrc_change_s, &mut rng);
        let ts_jump_at = at(imp.ts_jump_s, &mut rng);
        let magnitude = 8_000 + (rng.unit() * 7_992_000.0) as i32;
        let ts_jump = if rng.next_u64() & 1 == 0 {
            magnitude
        } else {
            -magnitude
        };
        Schedule {
            imp,
            rng,
            period_ns: PTIME_NS as f64 / (1.0 + imp.drift_ppm * 1e-6),
            ssrc_change_at,
            ts_jump_at,
            ts_jump,
        }
    }

    pub fn impairment(&self) -> &Impairment {
        &self.imp
    }

    /// When packet `k` (0-based) leaves, ns after the stream's first packet, on the sender's
    /// drifted clock.
    pub fn send_offset_ns(&self, k: u64) -> i64 {
        (k as f64 * self.period_ns).round() as i64
    }

    /// What happens to the stream before packet `k` is written.
    pub fn event(&mut self, k: u64) -> Option<StreamEvent> {
        if self.ssrc_change_at == Some(k) {
            let x = self.rng.next_u64();
            return Some(StreamEvent::NewSsrc {
                ssrc: (x as u32) | 1,
                seq: (x >> 32) as u16,
                timestamp: (x >> 16) as u32,
            });
        }
        if self.ts_jump_at == Some(k) {
            return Some(StreamEvent::TimestampJump(self.ts_jump));
        }
        None
    }

    /// The next packet's fate. Call once per packet, in order.
    pub fn fate(&mut self) -> Fate {
        let imp = self.imp;
        let mut f = Fate::default();
        if self.rng.chance(imp.loss_pct) {
            f.dropped = true;
            return f;
        }
        f.delay_us = self.jitter_us();
        if self.rng.chance(imp.reorder_pct) {
            f.reordered = true;
            f.delay_us += 21_000 + (self.rng.unit() * 19_000.0) as u32;
        }
        if self.rng.chance(imp.dup_pct) {
            f.dup_delay_us = Some(f.delay_us.max(self.jitter_us()));
        }
        f
    }

    fn jitter_us(&mut self) -> u32 {
        if self.imp.jitter_ms == 0 {
            0
        } else {
            (self.rng.unit() * f64::from(self.imp.jitter_ms) * 1000.0) as u32
        }
    }
}

/// What the impairment did to a stream (or a run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImpairCounts {
    /// Packets the sender wrote (sequence numbers used).
    pub generated: u64,
    pub dropped: u64,
    pub delayed: u64,
    pub reordered: u64,
    pub duplicated: u64,
    /// The stream's hold ring was full: sent without its delay.
    pub hold_overflow: u64,
    pub ssrc_changes: u64,
    pub ts_jumps: u64,
}

impl ImpairCounts {
    pub fn add(&mut self, o: &ImpairCounts) {
        self.generated += o.generated;
        self.dropped += o.dropped;
        self.delayed += o.delayed;
        self.reordered += o.reordered;
        self.duplicated += o.duplicated;
        self.hold_overflow += o.hold_overflow;
        self.ssrc_changes += o.ssrc_changes;
        self.ts_jumps += o.ts_jumps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(s: &str) -> Impairment {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_specs() {
        let i = imp("loss=5,jitter=40,reorder=2,dup=1,drift=-300,ssrc_change=8,ts_jump=10");
        assert_eq!(i.loss_pct, 5.0);
        assert_eq!(i.jitter_ms, 40);
        assert_eq!(i.reorder_pct, 2.0);
        assert_eq!(i.dup_pct, 1.0);
        assert_eq!(i.drift_ppm, -300.0);
        assert_eq!(i.ssrc_change_s, 8.0);
        assert_eq!(i.ts_jump_s, 10.0);
        assert_eq!(imp(&i.to_string()), i);
        assert!(imp("").is_none() && imp("none").is_none());
        assert_eq!(imp("none").to_string(), "none");
        for bad in [
            "loss=101",
            "loss",
            "jitter=-1",
            "drift=20000",
            "x=1",
            "loss=abc",
            "loss=NaN",
        ] {
            assert!(bad.parse::<Impairment>().is_err(), "{bad}");
        }
    }

    /// Arrival times (µs) and sequence indexes of `n` packets through a schedule.
    fn arrivals(s: &mut Schedule, n: u64) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        for k in 0..n {
            let at = s.send_offset_ns(k) / 1000;
            let f = s.fate();
            if f.dropped {
                continue;
            }
            out.push((at + i64::from(f.delay_us), k));
            if let Some(d) = f.dup_delay_us {
                out.push((at + i64::from(d), k));
            }
        }
        out.sort_by_key(|a| a.0);
        out
    }

    #[test]
    fn deterministic_with_a_seed() {
        let i = imp("loss=5,jitter=40,reorder=2,dup=1,drift=300,ssrc_change=5,ts_jump=5");
        let run = |seed| {
            let mut s = Schedule::new(i, seed);
            let events: Vec<_> = (0..1000).filter_map(|k| s.event(k)).collect();
            (arrivals(&mut s, 2000), events)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7).0, run(8).0);
        assert_ne!(stream_seed(1, 0), stream_seed(1, 1));
        assert_ne!(stream_seed(1, 0), stream_seed(2, 0));
    }

    #[test]
    fn loss_rate_within_tolerance() {
        let n = 100_000u64;
        for seed in 0..5 {
            let mut s = Schedule::new(imp("loss=5"), seed);
            let lost = (0..n).filter(|_| s.fate().dropped).count() as f64;
            // Binomial sd at 5 % of 100,000: ~69 packets; allow 5 sd.
            assert!(
                (lost - 5_000.0).abs() < 350.0,
                "seed {seed}: {lost} lost of {n}"
            );
        }
        let mut s = Schedule::new(imp("jitter=40"), 1);
        assert!((0..10_000).all(|_| !s.fate().dropped));
    }

    #[test]
    fn reorder_really_reorders() {
        let n = 50_000;
        let mut s = Schedule::new(imp("reorder=2"), 3);
        let got = arrivals(&mut s, n);
        assert_eq!(got.len() as u64, n);
        // A packet arriving before one sent earlier than it.
        let inversions = got.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64;
        assert!(
            (inversions / n as f64 - 0.02).abs() < 0.004,
            "{inversions} inversions"
        );
        // Without reorder or jitter, order is kept.
        let mut s = Schedule::new(imp("loss=3,dup=0"), 3);
        let got = arrivals(&mut s, n);
        assert!(got.windows(2).all(|w| w[0].1 < w[1].1));
        // Jitter beyond the packet interval reorders too; within it, never.
        let mut s = Schedule::new(imp("jitter=40"), 3);
        let got = arrivals(&mut s, n);
        assert!(got.windows(2).any(|w| w[1].1 < w[0].1));
        let mut s = Schedule::new(imp("jitter=19"), 3);
        let got = arrivals(&mut s, n);
        assert!(got.windows(2).all(|w| w[0].1 < w[1].1));
    }

    #[test]
    fn dup_really_duplicates() {
        let n = 50_000;
        let mut s = Schedule::new(imp("dup=1,jitter=40"), 4);
        let got = arrivals(&mut s, n);
        let dups = got.len() as f64 - n as f64;
        assert!((dups - 500.0).abs() < 120.0, "{dups} duplicates");
        let mut seen = std::collections::HashMap::new();
        for (_, k) in &got {
            *seen.entry(*k).or_insert(0) += 1;
        }
        assert_eq!(seen.len() as u64, n);
        assert!(seen.values().all(|&c| c == 1 || c == 2));
    }

    #[test]
    fn drift_shifts_the_clock() {
        // +300 ppm: after 50,000 packets (1000 s nominal) the sender is 0.3 s ahead of real
        // time; -300: 0.3 s behind.
        let fast = Schedule::new(imp("drift=300"), 1);
        let slow = Schedule::new(imp("drift=-300"), 1);
        let none = Schedule::new(imp(""), 1);
        let k = 50_000;
        assert_eq!(none.send_offset_ns(k), 1_000_000_000_000);
        let ahead = none.send_offset_ns(k) - fast.send_offset_ns(k);
        let behind = slow.send_offset_ns(k) - none.send_offset_ns(k);
        assert!((ahead - 299_910_000).abs() < 1_000_000, "{ahead}");
        assert!((behind - 300_090_000).abs() < 1_000_000, "{behind}");
        // Monotonic, never two packets at once.
        assert!((1..1000).all(|k| fast.send_offset_ns(k) > fast.send_offset_ns(k - 1)));
    }

    #[test]
    fn ssrc_change_and_ts_jump_happen_once_in_their_window() {
        for seed in 0..50 {
            let mut s = Schedule::new(imp("ssrc_change=10,ts_jump=4"), seed);
            let events: Vec<(u64, StreamEvent)> = (0..2000)
                .filter_map(|k| s.event(k).map(|e| (k, e)))
                .collect();
            assert_eq!(events.len(), 2, "{events:?}");
            for (k, e) in events {
                match e {
                    StreamEvent::NewSsrc { .. } => assert!((250..=750).contains(&k), "{k}"),
                    StreamEvent::TimestampJump(j) => {
                        assert!((100..=300).contains(&k), "{k}");
                        assert!((8_000..=8_000_000).contains(&j.unsigned_abs()), "{j}");
                    }
                }
            }
        }
    }
}
