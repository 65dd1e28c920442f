//! In-band DTMF detection (Goertzel) on 8 kHz (or 16 kHz) PCM, with Q.24-style validity checks.
//!
//! Audio is cut into 12.75 ms blocks (102 samples at 8 kHz, 204 at 16 kHz). A block is a candidate digit when one row and
//! one column tone stand out: each above the minimum level, twist within limits, each well above
//! the other tones of its group, and the two tones carrying most of the block's energy (speech
//! spreads its energy over harmonics and formants; that test is the main talk-off guard). A digit
//! is reported once, after two consecutive candidate blocks (≥ 25.5 ms, so any ≥ 40 ms tone
//! qualifies) and only after two quiet blocks since the previous digit (the inter-digit pause).

use std::f32::consts::PI;

use super::level::sine_amplitude_for_dbm0;

/// Block length at 8 kHz (12.75 ms); at 16 kHz the same duration is 204 samples.
const BLOCK_8K: usize = 102;
const BLOCK_MAX: usize = 2 * BLOCK_8K;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Tuning, defaulting to the limits the brief and ITU-T Q.24 suggest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DtmfConfig {
    /// Weakest tone accepted, per tone, in dBm0.
    pub min_tone_dbm0: f64,
    /// Row tone may exceed column tone by this much ("normal" twist).
    pub normal_twist_db: f64,
    /// Column tone may exceed row tone by this much ("reverse" twist).
    pub reverse_twist_db: f64,
    /// Each tone must beat the other tones of its group by this much.
    pub relative_peak_db: f64,
    /// Share of block energy the two tones must hold.
    pub min_tone_energy_share: f32,
    /// Consecutive candidate blocks needed to report a digit.
    pub min_on_blocks: u32,
    /// Consecutive non-candidate blocks needed before the next digit.
    pub min_off_blocks: u32,
}

impl Default for DtmfConfig {
    fn default() -> Self {
        DtmfConfig {
            min_tone_dbm0: -33.0,
            normal_twist_db: 8.0,
            reverse_twist_db: 4.0,
            relative_peak_db: 10.0,
            min_tone_energy_share: 0.75,
            min_on_blocks: 2,
            min_off_blocks: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DtmfDetector {
    cfg: DtmfConfig,
    coeffs: [f32; 8],
    block: [f32; BLOCK_MAX],
    block_len: usize,
    fill: usize,
    /// Candidate of the previous block and how many blocks in a row it has held.
    last: Option<char>,
    run: u32,
    /// Quiet blocks since the last reported digit; `None` while that digit may still be held.
    off_run: u32,
    armed: bool,
    /// Digits found beyond the first in one `process` call (arbitrary frame sizes); more than 32
    /// presses in one call are dropped.
    queue: [char; 32],
    queued: usize,
    min_tone_power: f32,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        Self::new(DtmfConfig::default())
    }
}

impl DtmfDetector {
    /// A detector for 8 kHz PCM.
    pub fn new(cfg: DtmfConfig) -> Self {
        Self::with_rate(8000, cfg)
    }

    /// A detector for 8 or 16 kHz PCM (Opus calls deliver 16 kHz; no need to downsample).
    /// Other rates are treated as 8 kHz.
    pub fn with_rate(rate: u32, cfg: DtmfConfig) -> Self {
        let (rate, block_len) = if rate == 16000 {
            (16000.0, BLOCK_MAX)
        } else {
            (8000.0, BLOCK_8K)
        };
        let mut coeffs = [0f32; 8];
        for (c, f) in coeffs.iter_mut().zip(ROWS.iter().chain(COLS.iter())) {
            *c = 2.0 * (2.0 * PI * f / rate).cos();
        }
        // Goertzel power of a sine of peak amplitude A over N samples ≈ (A·N/2)².
        let a = (sine_amplitude_for_dbm0(cfg.min_tone_dbm0) / 32768.0) as f32;
        let min_tone_power = (a * block_len as f32 / 2.0).powi(2);
        DtmfDetector {
            cfg,
            coeffs,
            block: [0.0; BLOCK_MAX],
            block_len,
            fill: 0,
            last: None,
            run: 0,
            off_run: 0,
            armed: true,
            queue: ['\0'; 32],
            queued: 0,
            min_tone_power,
        }
    }

    /// Feeds 8 kHz PCM of any length; returns a digit once per key press.
    pub fn process(&mut self, pcm: &[i16]) -> Option<char> {
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (self.block_len - self.fill).min(rest.len());
            for (d, &s) in self.block[self.fill..self.fill + take]
                .iter_mut()
                .zip(&rest[..take])
            {
                *d = s as f32 / 32768.0;
            }
            self.fill += take;
            rest = &rest[take..];
            if self.fill == self.block_len {
                self.fill = 0;
                let cand = self.classify_block();
                if let Some(d) = self.track(cand)
                    && self.queued < self.queue.len()
                {
                    self.queue[self.queued] = d;
                    self.queued += 1;
                }
            }
        }
        self.poll_digit()
    }

    /// Digits already detected but not yet returned (when one call held several presses).
    pub fn poll_digit(&mut self) -> Option<char> {
        if self.queued == 0 {
            return None;
        }
        let d = self.queue[0];
        self.queue.copy_within(1..self.queued, 0);
        self.queued -= 1;
        Some(d)
    }

    fn track(&mut self, cand: Option<char>) -> Option<char> {
        if cand.is_some() && cand == self.last {
            self.run += 1;
        } else {
            self.run = u32::from(cand.is_some());
        }
        self.last = cand;
        if cand.is_none() {
            self.off_run += 1;
            if self.off_run >= self.cfg.min_off_blocks {
                self.armed = true;
            }
            return None;
        }
        self.off_run = 0;
        if self.armed && self.run >= self.cfg.min_on_blocks {
            self.armed = false;
            return cand;
        }
        None
    }

    fn classify_block(&self) -> Option<char> {
        // All eight recurrences advance together: eight independent chains instead of one long
        // dependent one per bin, which the compiler turns into one SIMD lane each.
        let mut s1 = [0f32; 8];
        let mut s2 = [0f32; 8];
        let block = &self.block[..self.block_len];
        for &x in block {
            for k in 0..8 {
                let s0 = x + self.coeffs[k] * s1[k] - s2[k];
                s2[k] = s1[k];
                s1[k] = s0;
            }
        }
        let mut power = [0f32; 8];
        for k in 0..8 {
            power[k] = s1[k] * s1[k] + s2[k] * s2[k] - self.coeffs[k] * s1[k] * s2[k];
        }
        let energy: f32 = block.iter().map(|x| x * x).sum();
        let (r, rp) = peak(&power[..4]);
        let (c, cp) = peak(&power[4..]);
        if rp < self.min_tone_power || cp < self.min_tone_power {
            return None;
        }
        let db = |a: f32, b: f32| 10.0 * (a / b).log10() as f64;
        if db(rp, cp) > self.cfg.normal_twist_db || db(cp, rp) > self.cfg.reverse_twist_db {
            return None;
        }
        for (i, &p) in power[..4].iter().enumerate() {
            if i != r && db(rp, p) < self.cfg.relative_peak_db {
                return None;
            }
        }
        for (i, &p) in power[4..].iter().enumerate() {
            if i != c && db(cp, p) < self.cfg.relative_peak_db {
                return None;
            }
        }
        // Share of energy in the two tones: a pure sine gives 2·P/(N·E) = 1.
        let share = 2.0 * (rp + cp) / (self.block_len as f32 * energy);
        if share < self.cfg.min_tone_energy_share {
            return None;
        }
        Some(KEYS[r][c])
    }
}

fn peak(p: &[f32]) -> (usize, f32) {
    let mut best = (0, p[0]);
    for (i, &v) in p.iter().enumerate().skip(1) {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

/// Frequencies (row, column) of a key.
pub fn dtmf_freqs(digit: char) -> Option<(f32, f32)> {
    let d = digit.to_ascii_uppercase();
    for (r, row) in KEYS.iter().enumerate() {
        for (c, &k) in row.iter().enumerate() {
            if k == d {
                return Some((ROWS[r], COLS[c]));
            }
        }
    }
    None
}

/// Test support: a digit at `level_dbm0` total power (each tone 3 dB lower). Allocates.
pub fn dtmf_tone_level(digit: char, duration_ms: u32, rate: u32, level_dbm0: f64) -> Vec<i16> {
    let Some((fr, fc)) = dtmf_freqs(digit) else {
        return Vec::new();
    };
    let n = (duration_ms as u64 * rate as u64 / 1000) as usize;
    let a = sine_amplitude_for_dbm0(level_dbm0 - 3.01);
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let v = a
                * ((2.0 * std::f64::consts::PI * fr as f64 * t).sin()
                    + (2.0 * std::f64::consts::PI * fc as f64 * t).sin());
            v.round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Test support: a digit at −6 dBm0. Allocates.
pub fn dtmf_tone(digit: char, duration_ms: u32, rate: u32) -> Vec<i16> {
    dtmf_tone_level(digit, duration_ms, rate, -6.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect_all(det: &mut DtmfDetector, pcm: &[i16], frame: usize) -> String {
        let mut out = String::new();
        for f in pcm.chunks(frame) {
            out.extend(det.process(f));
            while let Some(d) = det.poll_digit() {
                out.push(d);
            }
        }
        out
    }

    fn sequence(digits: &str, on_ms: u32, off_ms: u32, level: f64) -> Vec<i16> {
        let mut v = vec![];
        for d in digits.chars() {
            v.extend(dtmf_tone_level(d, on_ms, 8000, level));
            v.extend(std::iter::repeat_n(0i16, (off_ms * 8) as usize));
        }
        v
    }

    #[test]
    fn all_keys_once_each_any_frame_size() {
        let keys = "123A456B789C*0#D";
        let pcm = sequence(keys, 60, 60, -6.0);
        for frame in [160, 102, 1, 37, 1000, pcm.len()] {
            let mut det = DtmfDetector::default();
            assert_eq!(detect_all(&mut det, &pcm, frame), keys, "frame {frame}");
        }
    }

    #[test]
    fn levels_and_twist_limits() {
        for level in [-25.0, -15.0, 0.0] {
            let mut det = DtmfDetector::default();
            assert_eq!(
                detect_all(&mut det, &sequence("5", 80, 40, level), 160),
                "5",
                "level {level}"
            );
        }
        let mut det = DtmfDetector::default();
        assert_eq!(
            detect_all(&mut det, &sequence("5", 80, 40, -45.0), 160),
            "",
            "too quiet"
        );
        // Twist: row 6 dB above column is fine, 12 dB is not; column 6 dB above row is not.
        let twisted = |row_db: f64, col_db: f64| -> Vec<i16> {
            let ar = sine_amplitude_for_dbm0(row_db);
            let ac = sine_amplitude_for_dbm0(col_db);
            (0..800)
                .map(|i| {
                    let t = i as f64 / 8000.0;
                    (ar * (2.0 * std::f64::consts::PI * 770.0 * t).sin()
                        + ac * (2.0 * std::f64::consts::PI * 1336.0 * t).sin())
                        as i16
                })
                .collect()
        };
        assert_eq!(
            detect_all(&mut DtmfDetector::default(), &twisted(-6.0, -12.0), 160),
            "5"
        );
        assert_eq!(
            detect_all(&mut DtmfDetector::default(), &twisted(-6.0, -18.0), 160),
            ""
        );
        assert_eq!(
            detect_all(&mut DtmfDetector::default(), &twisted(-12.0, -6.0), 160),
            ""
        );
    }

    #[test]
    fn durations_and_pauses() {
        // 40 ms tones with 40 ms pauses: all detected, each once.
        assert_eq!(
            detect_all(
                &mut DtmfDetector::default(),
                &sequence("1234", 40, 40, -10.0),
                160
            ),
            "1234"
        );
        // 20 ms blips are rejected.
        assert_eq!(
            detect_all(
                &mut DtmfDetector::default(),
                &sequence("1234", 20, 60, -10.0),
                160
            ),
            ""
        );
        // A long press is one digit.
        assert_eq!(
            detect_all(
                &mut DtmfDetector::default(),
                &sequence("9", 2000, 0, -10.0),
                160
            ),
            "9"
        );
        // The same key twice with a 10 ms gap is one press (no pause seen).
        let mut v = dtmf_tone('7', 100, 8000);
        v.extend([0i16; 80]);
        v.extend(dtmf_tone('7', 100, 8000));
        assert_eq!(detect_all(&mut DtmfDetector::default(), &v, 160), "7");
    }

    #[test]
    fn single_tones_and_chords_are_not_digits() {
        let tone = |freqs: &[f64]| -> Vec<i16> {
            (0..1600)
                .map(|i| {
                    let t = i as f64 / 8000.0;
                    freqs
                        .iter()
                        .map(|f| 6000.0 * (2.0 * std::f64::consts::PI * f * t).sin())
                        .sum::<f64>() as i16
                })
                .collect()
        };
        assert_eq!(
            detect_all(&mut DtmfDetector::default(), &tone(&[697.0]), 160),
            ""
        );
        assert_eq!(
            detect_all(&mut DtmfDetector::default(), &tone(&[1000.0]), 160),
            ""
        );
        // Row + column + a third strong tone (music chord): energy share test rejects it.
        assert_eq!(
            detect_all(
                &mut DtmfDetector::default(),
                &tone(&[697.0, 1209.0, 400.0]),
                160
            ),
            ""
        );
        // Two rows at once.
        assert_eq!(
            detect_all(
                &mut DtmfDetector::default(),
                &tone(&[697.0, 852.0, 1209.0]),
                160
            ),
            ""
        );
    }

    #[test]
    fn works_at_16k() {
        let mut pcm = vec![];
        for d in "159#".chars() {
            pcm.extend(dtmf_tone_level(d, 60, 16000, -20.0));
            pcm.extend([0i16; 960]);
        }
        let mut det = DtmfDetector::with_rate(16000, DtmfConfig::default());
        assert_eq!(detect_all(&mut det, &pcm, 320), "159#");
        // The 8 kHz detector must not be fooled by the same samples read at the wrong rate.
        assert_ne!(detect_all(&mut DtmfDetector::default(), &pcm, 320), "159#");
    }

    #[test]
    fn generator_level_is_as_asked() {
        let v = dtmf_tone_level('1', 1000, 8000, -10.0);
        assert!((crate::audio::level::dbm0(&v) + 10.0).abs() < 0.2);
        assert_eq!(dtmf_freqs('#'), Some((941.0, 1477.0)));
        assert!(dtmf_tone('x', 100, 8000).is_empty());
    }
}
