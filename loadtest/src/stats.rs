//! What the caller measures on the IVR's stream: RFC 3550 interarrival jitter, loss, pacing error
//! (|arrival interval − 20 ms| between consecutive packets), and where the IVR speaks.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Frames quieter than this RMS are silence (the IVR sends digital silence between prompts;
/// speech is hundreds to thousands).
pub const SPEECH_RMS: f64 = 100.0;
/// Bound on the pacing samples kept per call (10 minutes of packets).
const PACING_SAMPLES_MAX: usize = 30_000;

#[derive(Debug, Default, Clone)]
pub struct RtpStats {
    pub received: u64,
    first_seq: Option<u64>,
    max_seq: u64,
    /// RFC 3550 §6.4.1 jitter in timestamp units (8 kHz).
    jitter: f64,
    last_transit: Option<f64>,
    last: Option<(Instant, u64)>,
    pub pacing_us: Vec<u32>,
    base: Option<Instant>,
}

impl RtpStats {
    pub fn handle(&mut self, arrival: Instant, seq: u16, timestamp: u32) {
        let base = *self.base.get_or_insert(arrival);
        let ext = self.extend(seq);
        self.received += 1;
        // Arrival in 8 kHz units against the sender's timestamp: the difference is the transit
        // time plus a constant; its variation is the jitter.
        let arrival_ts = arrival.duration_since(base).as_secs_f64() * 8000.0;
        let transit = arrival_ts - f64::from(timestamp);
        if let Some(prev) = self.last_transit {
            let mut d = (transit - prev).abs();
            // A timestamp wrap shows as a 2^32 jump: fold it back.
            if d > f64::from(u32::MAX) / 2.0 {
                d = (d - f64::from(u32::MAX) - 1.0).abs();
            }
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        if let Some((t, s)) = self.last
            && ext == s + 1
        {
            let gap = arrival.duration_since(t).as_micros() as i64;
            let err = (gap - 20_000).unsigned_abs().min(u64::from(u32::MAX)) as u32;
            if self.pacing_us.len() < PACING_SAMPLES_MAX {
                self.pacing_us.push(err);
            }
        }
        if self.last.is_none_or(|(_, s)| ext > s) {
            self.last = Some((arrival, ext));
        }
    }

    /// Sequence number extended to 64 bits around the highest seen (RFC 3550 A.1, simplified).
    fn extend(&mut self, seq: u16) -> u64 {
        let s = u64::from(seq);
        let Some(first) = self.first_seq else {
            // Start one cycle up so a packet from "before" the first does not underflow.
            let ext = (1u64 << 16) + s;
            self.first_seq = Some(ext);
            self.max_seq = ext;
            return ext;
        };
        let cycles = self.max_seq & !0xFFFF;
        // This cycle, the next or the previous one: the value nearest the highest seen wins.
        let ext = [
            cycles + s,
            cycles + 0x1_0000 + s,
            (cycles + s).saturating_sub(0x1_0000),
        ]
        .into_iter()
        .min_by_key(|c| c.abs_diff(self.max_seq))
        .unwrap_or(cycles + s);
        self.max_seq = self.max_seq.max(ext);
        if ext < first {
            self.first_seq = Some(ext);
        }
        ext
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter / 8.0
    }

    pub fn expected(&self) -> u64 {
        self.first_seq.map_or(0, |f| self.max_seq - f + 1)
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub fn loss_pct(&self) -> f64 {
        let e = self.expected();
        if e == 0 {
            0.0
        } else {
            100.0 * self.lost() as f64 / e as f64
        }
    }
}

/// RMS of a G.711 payload, decoded with the product's tables.
pub fn frame_rms(payload: &[u8], alaw: bool) -> f64 {
    if payload.is_empty() {
        return 0.0;
    }
    let sum: f64 = payload
        .iter()
        .map(|&b| {
            let v = if alaw {
                ivr_proto::rtp::codec::alaw_decode(b)
            } else {
                ivr_proto::rtp::codec::ulaw_decode(b)
            };
            f64::from(v) * f64::from(v)
        })
        .sum();
    (sum / payload.len() as f64).sqrt()
}

/// Summary of a sample: count, mean, min, percentiles, max.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Dist {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    pub fn of(values: &[f64]) -> Dist {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            // Nearest rank: the smallest value with at least p of the sample at or below it.
            let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1]
        };
        Dist {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: v[v.len() - 1],
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_stream_has_no_jitter_loss_or_pacing_error() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        for i in 0..100u32 {
            s.handle(
                t0 + Duration::from_millis(20 * u64::from(i)),
                65500u16.wrapping_add(i as u16),
                i * 160,
            );
        }
        assert_eq!(s.received, 100);
        assert_eq!(s.expected(), 100, "sequence wrap handled");
        assert_eq!(s.lost(), 0);
        assert!(s.jitter_ms() < 0.01);
        assert_eq!(s.pacing_us.len(), 99);
        assert!(s.pacing_us.iter().all(|&e| e < 5));
    }

    #[test]
    fn loss_and_jitter_are_measured() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        for i in 0..200u32 {
            if i % 10 == 3 {
                continue; // 10 % lost
            }
            // Alternate 0 and 4 ms of extra delay: |D| = 4 ms each packet, jitter → 4 ms.
            let wobble = if i % 2 == 0 { 0 } else { 4 };
            s.handle(
                t0 + Duration::from_millis(20 * u64::from(i) + wobble),
                i as u16,
                i * 160,
            );
        }
        assert_eq!(s.lost(), 20);
        assert!((s.loss_pct() - 10.0).abs() < 0.01);
        assert!((s.jitter_ms() - 4.0).abs() < 0.5, "{}", s.jitter_ms());
        let max = *s.pacing_us.iter().max().unwrap();
        assert!((3_900..=4_100).contains(&max), "{max}");
    }

    #[test]
    fn reordered_and_duplicated_packets_do_not_break_counts() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        for (k, seq) in [1u16, 3, 2, 2, 4].iter().enumerate() {
            s.handle(
                t0 + Duration::from_millis(20 * k as u64),
                *seq,
                u32::from(*seq) * 160,
            );
        }
        assert_eq!(s.expected(), 4);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn dist_percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let d = Dist::of(&v);
        assert_eq!(
            (d.count, d.p50, d.p90, d.p99, d.max, d.min),
            (100, 50.0, 90.0, 99.0, 100.0, 1.0)
        );
        assert_eq!(Dist::of(&[]).count, 0);
        assert_eq!(Dist::of(&[f64::NAN, 3.0]).p99, 3.0);
    }

    #[test]
    fn rms_of_silence_and_tone() {
        assert_eq!(frame_rms(&[0xFF; 160], false), 0.0);
        assert!(frame_rms(&[0xD5; 160], true) < 10.0);
        let loud: Vec<u8> = (0..160)
            .map(|i| ivr_proto::rtp::codec::ulaw_encode(if i % 2 == 0 { 3000 } else { -3000 }))
            .collect();
        assert!(frame_rms(&loud, false) > 2500.0);
    }
}
