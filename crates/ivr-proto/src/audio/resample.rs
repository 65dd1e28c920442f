//! Sample-rate conversion.
//!
//! - `Upsampler2x` / `Downsampler2x`: 8 kHz ↔ 16 kHz on the media path with a half-band FIR,
//!   stateful across frames so frame edges are seamless, no allocation per frame.
//! - `resample`: one-shot windowed-sinc conversion between any two rates, for loading recorded
//!   prompt overrides (11025, 22050, 44100, 48000 Hz...) at startup. Allocates.

use std::f64::consts::PI;

/// Half-band filter length: 4·k − 1 so the centre tap is odd-indexed-zero symmetric.
/// 47 taps give about 60 dB stop-band rejection with a Blackman window.
const TAPS: usize = 47;
const CENTER: usize = TAPS / 2;

fn blackman(i: usize, n: usize) -> f64 {
    let x = 2.0 * PI * i as f64 / (n - 1) as f64;
    0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos()
}

/// Half-band low-pass (cutoff at a quarter of the rate), unity DC gain.
fn halfband() -> [f32; TAPS] {
    let mut h = [0f64; TAPS];
    for (i, v) in h.iter_mut().enumerate() {
        let m = i as f64 - CENTER as f64;
        let sinc = if m == 0.0 {
            0.5
        } else {
            (PI * m / 2.0).sin() / (PI * m)
        };
        *v = sinc * blackman(i, TAPS);
    }
    let sum: f64 = h.iter().sum();
    let mut out = [0f32; TAPS];
    for (o, v) in out.iter_mut().zip(h) {
        *o = (v / sum) as f32;
    }
    out
}

fn to_i16(v: f32) -> i16 {
    v.round().clamp(-32768.0, 32767.0) as i16
}

/// The taps of the odd phase (the even phase of a half-band filter is only the centre tap).
const PHASE_TAPS: usize = TAPS.div_ceil(2) / 2 * 2;

/// 8 kHz → 16 kHz. Output length is exactly twice the input length.
#[derive(Debug, Clone)]
pub struct Upsampler2x {
    /// Non-zero odd-phase taps, scaled by 2 for the zero-stuffing gain.
    taps: [f32; PHASE_TAPS],
    /// Last `PHASE_TAPS` input samples, newest last.
    hist: [f32; PHASE_TAPS],
}

impl Default for Upsampler2x {
    fn default() -> Self {
        Self::new()
    }
}

impl Upsampler2x {
    pub fn new() -> Self {
        let h = halfband();
        let mut taps = [0f32; PHASE_TAPS];
        // Taps at even distance from... odd offsets from the centre are the non-zero ones.
        for (j, t) in taps.iter_mut().enumerate() {
            *t = 2.0 * h[CENTER + 1 + 2 * j - PHASE_TAPS];
        }
        Upsampler2x {
            taps,
            hist: [0.0; PHASE_TAPS],
        }
    }

    /// Writes `2 * input.len()` samples into `out` (truncated to what fits); returns the count.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let n = input.len().min(out.len() / 2);
        for (i, &x) in input[..n].iter().enumerate() {
            self.hist.copy_within(1.., 0);
            self.hist[PHASE_TAPS - 1] = x as f32;
            // Even phase: the centre tap alone, i.e. the input delayed by half the phase length.
            out[2 * i] = to_i16(self.hist[PHASE_TAPS / 2 - 1]);
            let odd: f32 = self
                .hist
                .iter()
                .zip(self.taps.iter())
                .map(|(a, b)| a * b)
                .sum();
            out[2 * i + 1] = to_i16(odd);
        }
        2 * n
    }
}

/// 16 kHz → 8 kHz. Output length is half the input (an odd sample is carried to the next call).
#[derive(Debug, Clone)]
pub struct Downsampler2x {
    taps: [f32; TAPS],
    hist: [f32; TAPS],
    /// Input samples seen mod 2, to keep the decimation phase across odd-length frames.
    phase: bool,
}

impl Default for Downsampler2x {
    fn default() -> Self {
        Self::new()
    }
}

impl Downsampler2x {
    pub fn new() -> Self {
        Downsampler2x {
            taps: halfband(),
            hist: [0.0; TAPS],
            phase: false,
        }
    }

    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let mut k = 0;
        for &x in input {
            self.hist.copy_within(1.., 0);
            self.hist[TAPS - 1] = x as f32;
            self.phase = !self.phase;
            if !self.phase {
                if k >= out.len() {
                    break;
                }
                // Half the taps are zero; skipping them halves the work.
                let mut acc = self.taps[CENTER] * self.hist[CENTER];
                let mut i = (CENTER % 2) ^ 1;
                while i < TAPS {
                    acc += self.taps[i] * self.hist[i];
                    i += 2;
                }
                out[k] = to_i16(acc);
                k += 1;
            }
        }
        k
    }
}

/// One-shot conversion from `from_hz` to `to_hz` with a Blackman-windowed sinc (16 zero
/// crossings each side at the lower rate, cutoff at 0.95 × the lower Nyquist). Allocates.
///
/// Polyphase: output `n` sits at input position `n·from/to`, whose fractional part takes only
/// `to / gcd(from, to)` distinct values, so the filter taps are computed once per phase (no trig
/// in the inner loop) — 22.05 kHz → 8 kHz needs 160 phases.
pub fn resample(input: &[i16], from_hz: u32, to_hz: u32) -> Vec<i16> {
    if from_hz == 0 || to_hz == 0 || input.is_empty() {
        return Vec::new();
    }
    if from_hz == to_hz {
        return input.to_vec();
    }
    let ratio = to_hz as f64 / from_hz as f64;
    let out_len = (input.len() as u64 * to_hz as u64 / from_hz as u64) as usize;
    // Cutoff relative to the input rate, with a little guard band.
    let cutoff = 0.5 * ratio.min(1.0) * 0.95;
    const ZEROS: f64 = 16.0;
    let half_width = ZEROS / (2.0 * cutoff); // in input samples
    let g = gcd(from_hz as u64, to_hz as u64);
    let (num, den) = (from_hz as u64 / g, to_hz as u64 / g);
    // Taps for each phase p (fraction p/den): input offsets -reach..=reach around floor(t).
    let reach = half_width.ceil() as i64 + 1;
    let width = (2 * reach + 1) as usize;
    let phases = den as usize;
    let mut table = vec![0.0f64; phases * width];
    for p in 0..phases {
        let frac = p as f64 / den as f64;
        let taps = &mut table[p * width..(p + 1) * width];
        for (j, tap) in taps.iter_mut().enumerate() {
            let d = (j as i64 - reach) as f64 - frac;
            if d.abs() > half_width {
                continue;
            }
            let arg = 2.0 * cutoff * d;
            let sinc = if arg.abs() < 1e-12 {
                1.0
            } else {
                (PI * arg).sin() / (PI * arg)
            };
            let w =
                0.42 + 0.5 * (PI * d / half_width).cos() + 0.08 * (2.0 * PI * d / half_width).cos();
            *tap = sinc * w;
        }
    }
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        // Exact rational position so long files do not drift.
        let pos = n as u64 * num;
        let base = (pos / den) as i64;
        let phase = (pos % den) as usize;
        let taps = &table[phase * width..(phase + 1) * width];
        let mut acc = 0.0;
        let mut wsum = 0.0;
        for (j, &h) in taps.iter().enumerate() {
            let k = base + j as i64 - reach;
            if k < 0 || k >= input.len() as i64 || h == 0.0 {
                continue;
            }
            acc += input[k as usize] as f64 * h;
            wsum += h;
        }
        // Normalising by the tap sum keeps DC gain exact, also at the edges of the input.
        let v = if wsum.abs() > 1e-9 { acc / wsum } else { 0.0 };
        out.push(v.round().clamp(-32768.0, 32767.0) as i16);
    }
    out
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / rate as f64).sin()).round() as i16)
            .collect()
    }

    /// Level of `freq` in `x` (amplitude), by correlation over whole periods.
    fn tone_amp(x: &[i16], freq: f64, rate: u32) -> f64 {
        let (mut s, mut c) = (0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            let ph = 2.0 * PI * freq * i as f64 / rate as f64;
            s += v as f64 * ph.sin();
            c += v as f64 * ph.cos();
        }
        2.0 * (s * s + c * c).sqrt() / x.len() as f64
    }

    #[test]
    fn up_then_down_is_transparent_in_band_and_seamless_across_frames() {
        let input = sine(1000.0, 8000, 1600, 10000.0);
        let mut up = Upsampler2x::new();
        let mut down = Downsampler2x::new();
        let mut wide = vec![0i16; 3200];
        let mut back = vec![0i16; 1600];
        // Process in 20 ms frames through the stateful converters.
        for f in 0..10 {
            let n = up.process(
                &input[f * 160..(f + 1) * 160],
                &mut wide[f * 320..(f + 1) * 320],
            );
            assert_eq!(n, 320);
            let k = down.process(
                &wide[f * 320..(f + 1) * 320],
                &mut back[f * 160..(f + 1) * 160],
            );
            assert_eq!(k, 160);
        }
        // Skip the filter delay, then compare levels.
        let a16 = tone_amp(&wide[400..3200], 1000.0, 16000);
        assert!((a16 - 10000.0).abs() < 100.0, "16k amp {a16}");
        // The 16 kHz signal has no image at 7 kHz (8 kHz − 1 kHz).
        let image = tone_amp(&wide[400..3200], 7000.0, 16000);
        assert!(image < 30.0, "image {image}");
        let a8 = tone_amp(&back[200..1600], 1000.0, 8000);
        assert!((a8 - 10000.0).abs() < 150.0, "8k amp {a8}");
    }

    #[test]
    fn downsampler_rejects_above_4khz() {
        let input = sine(6000.0, 16000, 3200, 10000.0);
        let mut down = Downsampler2x::new();
        let mut out = vec![0i16; 1600];
        assert_eq!(down.process(&input, &mut out), 1600);
        // 6 kHz would alias to 2 kHz.
        let alias = tone_amp(&out[100..], 2000.0, 8000);
        assert!(alias < 30.0, "alias {alias}");
        // Odd-length frames keep the phase.
        let mut d1 = Downsampler2x::new();
        let mut d2 = Downsampler2x::new();
        let x = sine(500.0, 16000, 640, 8000.0);
        let mut a = vec![0i16; 320];
        let mut b = vec![0i16; 320];
        let n1 = d1.process(&x, &mut a);
        let mut n2 = d2.process(&x[..101], &mut b);
        n2 += d2.process(&x[101..], &mut b[n2..]);
        assert_eq!((n1, n2), (320, 320));
        assert_eq!(a, b);
    }

    #[test]
    fn one_shot_common_rates() {
        for from in [11025u32, 22050, 44100, 48000] {
            for to in [8000u32, 16000] {
                let x = sine(440.0, from, from as usize, 12000.0);
                let y = resample(&x, from, to);
                assert_eq!(y.len(), to as usize);
                let amp = tone_amp(&y[200..y.len() - 200], 440.0, to);
                assert!((amp - 12000.0).abs() < 120.0, "{from}->{to}: {amp}");
                // A tone above the target Nyquist disappears instead of aliasing.
                let hi = sine(5000.0, from, from as usize, 12000.0);
                let y = resample(&hi, from, 8000);
                let alias = tone_amp(&y[200..y.len() - 200], 3000.0, 8000);
                let rms = crate::audio::level::rms(&y[200..y.len() - 200]);
                assert!(
                    alias < 100.0 && rms < 150.0,
                    "{from}: alias {alias} rms {rms}"
                );
            }
        }
        assert_eq!(resample(&[1, 2, 3], 8000, 8000), vec![1, 2, 3]);
        assert!(resample(&[], 8000, 16000).is_empty());
        assert!(resample(&[1], 0, 16000).is_empty());
    }
}
