//! Frame levels: RMS, dBFS and dBm0.
//!
//! dBm0 follows the G.711 µ-law convention: a sine at 0 dBm0 peaks 3.17 dB below full scale, so
//! a full-scale sine (−3.01 dBFS RMS) is +3.17 dBm0 and dBm0 = dBFS + 6.18.

/// Reported for digital silence instead of −∞.
pub const FLOOR_DB: f64 = -120.0;

/// dBm0 − dBFS for the same signal (µ-law: 3.17 dB overload headroom + 3.01 dB sine crest).
pub const DBM0_OFFSET_DB: f64 = 6.18;

/// Mean square of a frame, in (sample units)².
pub fn mean_square(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    // i64 accumulation is exact: 32768² × 2^32 samples still fits.
    let sum: i64 = pcm.iter().map(|&s| s as i64 * s as i64).sum();
    sum as f64 / pcm.len() as f64
}

pub fn rms(pcm: &[i16]) -> f64 {
    mean_square(pcm).sqrt()
}

/// RMS level relative to a full-scale square wave (so a full-scale sine is −3.01 dBFS).
pub fn dbfs(pcm: &[i16]) -> f64 {
    let ms = mean_square(pcm);
    if ms <= 0.0 {
        return FLOOR_DB;
    }
    (10.0 * (ms / (32768.0 * 32768.0)).log10()).max(FLOOR_DB)
}

pub fn dbm0(pcm: &[i16]) -> f64 {
    let d = dbfs(pcm);
    if d <= FLOOR_DB {
        FLOOR_DB
    } else {
        d + DBM0_OFFSET_DB
    }
}

/// Peak amplitude (in sample units) of a sine at `level_dbm0`.
pub fn sine_amplitude_for_dbm0(level_dbm0: f64) -> f64 {
    32768.0 * 10f64.powf((level_dbm0 - 3.17) / 20.0)
}

/// True when the frame's level is below `threshold_dbfs`.
pub fn is_silent(pcm: &[i16], threshold_dbfs: f64) -> bool {
    dbfs(pcm) < threshold_dbfs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(amp: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 8000.0).sin()).round()
                    as i16
            })
            .collect()
    }

    #[test]
    fn levels_of_known_signals() {
        assert_eq!(dbfs(&[0; 160]), FLOOR_DB);
        assert_eq!(dbm0(&[]), FLOOR_DB);
        let full = sine(32767.0, 8000);
        assert!((dbfs(&full) + 3.01).abs() < 0.05, "{}", dbfs(&full));
        assert!((dbm0(&full) - 3.17).abs() < 0.05);
        let zero_dbm0 = sine(sine_amplitude_for_dbm0(0.0), 8000);
        assert!(dbm0(&zero_dbm0).abs() < 0.05);
        let quiet = sine(sine_amplitude_for_dbm0(-40.0), 8000);
        assert!((dbm0(&quiet) + 40.0).abs() < 0.1);
        assert!((rms(&[100, -100, 100, -100]) - 100.0).abs() < 1e-9);
        assert!(is_silent(&quiet, -40.0));
        assert!(!is_silent(&zero_dbm0, -40.0));
    }
}
