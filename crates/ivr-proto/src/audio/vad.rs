//! Energy + zero-crossing voice activity detection with an adaptive noise floor, per 20 ms
//! frame at 8 or 16 kHz. Used for barge-in and endpointing; recognition only sees speech.
//!
//! A frame is "speech-like" when its energy stands well above the tracked noise floor and above
//! an absolute floor. Speech must start with voiced-looking frames (low zero-crossing rate), which
//! is what keeps steady hiss and white noise (ZCR ≈ 0.5; an aspirated /h/ is ≈ 0.35–0.4) from
//! opening a talkspurt; once open,
//! loud unvoiced frames (fricatives) keep it open. `onset_frames` speech-like frames in a row
//! open it, `hangover_frames` quiet frames in a row close it.

use super::level::{FLOOR_DB, dbfs};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Frames (20 ms) of speech needed to declare a start.
    pub onset_frames: u32,
    /// Frames of non-speech needed to declare an end.
    pub hangover_frames: u32,
    /// How far above the noise floor a frame must be, in dB.
    pub margin_db: f64,
    /// Nothing quieter than this is speech, whatever the floor.
    pub min_speech_dbfs: f64,
    /// Zero-crossing rate (per sample) above which a frame cannot start speech.
    pub max_onset_zcr: f64,
}

impl Default for VadConfig {
    /// Tuned for telephone speech: 40 ms onset, 400 ms hangover, 10 dB above noise, onset
    /// ZCR ≤ 0.42 (white noise sits at 0.5 ± 0.04 per 20 ms frame).
    fn default() -> Self {
        VadConfig {
            onset_frames: 2,
            hangover_frames: 20,
            margin_db: 10.0,
            min_speech_dbfs: -50.0,
            max_onset_zcr: 0.42,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began at `onset_ms` (stream time of the first speech frame, which is earlier than
    /// the frame that confirmed it; ASR padding can start from there).
    SpeechStart { onset_ms: u64 },
    /// Speech ended at `end_ms` (after the last speech frame, before the hangover).
    SpeechEnd { end_ms: u64 },
}

#[derive(Debug, Clone)]
pub struct Vad {
    cfg: VadConfig,
    rate: u32,
    /// Stream time in samples.
    samples: u64,
    floor_db: Option<f64>,
    in_speech: bool,
    run: u32,
    run_start_samples: u64,
    quiet: u32,
    last_speech_end_samples: u64,
}

impl Vad {
    pub fn new(rate: u32, cfg: VadConfig) -> Self {
        Vad {
            cfg,
            rate: rate.max(1),
            samples: 0,
            floor_db: None,
            in_speech: false,
            run: 0,
            run_start_samples: 0,
            quiet: 0,
            last_speech_end_samples: 0,
        }
    }

    pub fn is_speech(&self) -> bool {
        self.in_speech
    }

    /// Current noise-floor estimate in dBFS.
    pub fn noise_floor_dbfs(&self) -> f64 {
        self.floor_db.unwrap_or(FLOOR_DB)
    }

    fn ms(&self, samples: u64) -> u64 {
        samples * 1000 / self.rate as u64
    }

    /// Feeds one frame (20 ms recommended); returns a start or end event when one happens.
    pub fn process(&mut self, frame: &[i16]) -> Option<VadEvent> {
        if frame.is_empty() {
            return None;
        }
        let frame_start = self.samples;
        self.samples += frame.len() as u64;
        let e = dbfs(frame);
        let floor = *self.floor_db.get_or_insert(e.max(-75.0));
        let loud = e > floor + self.cfg.margin_db && e > self.cfg.min_speech_dbfs;
        // Only a loud frame's crossings matter (both uses below need `loud`): a quiet line,
        // most of every call, costs one pass over the frame, not two.
        let voiced_like = loud && zero_crossing_rate(frame) <= self.cfg.max_onset_zcr;

        // Floor tracking: drop fast toward quieter frames (noise minima), rise slowly otherwise,
        // and very slowly during speech so a step up in background noise is learnt eventually.
        // Loud noise-like frames outside speech are most likely a new background: learn it.
        let rise = match (self.in_speech, loud, voiced_like) {
            (true, _, _) | (false, true, true) => 0.002,
            _ => 0.05,
        };
        let next_floor = if e < floor {
            floor + 0.3 * (e - floor)
        } else {
            floor + rise * (e - floor)
        };
        self.floor_db = Some(next_floor.max(-90.0));

        if self.in_speech {
            if loud {
                self.quiet = 0;
                self.last_speech_end_samples = self.samples;
                return None;
            }
            self.quiet += 1;
            if self.quiet >= self.cfg.hangover_frames {
                self.in_speech = false;
                self.run = 0;
                return Some(VadEvent::SpeechEnd {
                    end_ms: self.ms(self.last_speech_end_samples),
                });
            }
            return None;
        }
        if loud && voiced_like {
            if self.run == 0 {
                self.run_start_samples = frame_start;
            }
            self.run += 1;
            if self.run >= self.cfg.onset_frames {
                self.in_speech = true;
                self.quiet = 0;
                self.last_speech_end_samples = self.samples;
                return Some(VadEvent::SpeechStart {
                    onset_ms: self.ms(self.run_start_samples),
                });
            }
        } else {
            self.run = 0;
        }
        None
    }
}

/// Sign changes per sample.
pub fn zero_crossing_rate(frame: &[i16]) -> f64 {
    if frame.len() < 2 {
        return 0.0;
    }
    let crossings = frame
        .windows(2)
        .filter(|w| (w[0] >= 0) != (w[1] >= 0))
        .count();
    crossings as f64 / (frame.len() - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next_f64(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Roughly Gaussian (sum of 4 uniforms), unit variance.
        fn gauss(&mut self) -> f64 {
            (0..4).map(|_| self.next_f64() - 0.5).sum::<f64>() * 3f64.sqrt()
        }
    }

    fn noise(n: usize, amp: f64, seed: u64) -> Vec<i16> {
        let mut r = Lcg(seed);
        (0..n).map(|_| (r.gauss() * amp) as i16).collect()
    }

    /// A crude vowel: 120 Hz pulse-ish harmonics with a formant-like roll-off.
    fn vowel(n: usize, rate: u32, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / rate as f64;
                let v: f64 = (1..=20)
                    .map(|h| (2.0 * std::f64::consts::PI * 120.0 * h as f64 * t).sin() / h as f64)
                    .sum();
                (v * amp) as i16
            })
            .collect()
    }

    fn run(vad: &mut Vad, pcm: &[i16], frame: usize) -> Vec<(usize, VadEvent)> {
        pcm.chunks(frame)
            .enumerate()
            .filter_map(|(i, f)| vad.process(f).map(|e| (i, e)))
            .collect()
    }

    #[test]
    fn vowel_in_noise_starts_and_ends() {
        for rate in [8000u32, 16000] {
            let frame = rate as usize / 50;
            let mut pcm = noise(rate as usize, 100.0, 1);
            let v = vowel(rate as usize, rate, 3000.0);
            for (p, s) in pcm[rate as usize / 2..].iter_mut().zip(&v) {
                *p = p.saturating_add(*s);
            }
            // Half a second of vowel, then back to noise for a second.
            pcm.truncate(rate as usize);
            pcm.extend(noise(rate as usize, 100.0, 2));
            let mut vad = Vad::new(rate, VadConfig::default());
            let ev = run(&mut vad, &pcm, frame);
            assert_eq!(ev.len(), 2, "{rate}: {ev:?}");
            // Confirmed two frames after the true start at 500 ms.
            assert_eq!(ev[0], (26, VadEvent::SpeechStart { onset_ms: 500 }));
            match ev[1].1 {
                VadEvent::SpeechEnd { end_ms } => assert_eq!(end_ms, 1000),
                e => panic!("{e:?}"),
            }
            // End reported after the 400 ms hangover.
            assert_eq!(ev[1].0, 50 + 19);
        }
    }

    #[test]
    fn white_noise_is_never_speech_at_any_level() {
        for amp in [30.0, 300.0, 3000.0, 10000.0] {
            for rate in [8000u32, 16000] {
                let mut vad = Vad::new(rate, VadConfig::default());
                // Noise switching on abruptly after digital silence, too.
                let mut pcm = vec![0i16; rate as usize / 2];
                pcm.extend(noise(rate as usize * 3, amp, 9));
                assert!(
                    run(&mut vad, &pcm, rate as usize / 50).is_empty(),
                    "amp {amp} rate {rate}"
                );
            }
        }
    }

    #[test]
    fn floor_follows_noise_and_zcr_is_sane() {
        let mut vad = Vad::new(8000, VadConfig::default());
        let pcm = noise(16000, 1000.0, 3);
        run(&mut vad, &pcm, 160);
        let lvl = dbfs(&pcm);
        assert!(
            (vad.noise_floor_dbfs() - lvl).abs() < 3.0,
            "{} vs {lvl}",
            vad.noise_floor_dbfs()
        );
        assert!(zero_crossing_rate(&pcm) > 0.4);
        assert!(zero_crossing_rate(&vowel(800, 8000, 3000.0)) < 0.1);
        assert_eq!(zero_crossing_rate(&[5]), 0.0);
        assert_eq!(vad.process(&[]), None);
    }
}
