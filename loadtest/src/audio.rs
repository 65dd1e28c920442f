//! Caller audio, prepared once before a run: WAV files at any rate resampled to 8 kHz, TTY text
//! rendered to Baudot FSK, both encoded to G.711 frames that every call playing them shares.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ivr_proto::audio::tty::{TtyModulator, TtyTxConfig};
use ivr_proto::rtp::codec::{alaw_encode, ulaw_encode};

use crate::manifest::{Manifest, Step};

#[derive(Debug)]
pub enum AudioError {
    Wav(PathBuf, String),
    Tty(String),
}

impl std::fmt::Display for AudioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AudioError::Wav(p, e) => write!(f, "{}: {e}", p.display()),
            AudioError::Tty(e) => write!(f, "tty text: {e}"),
        }
    }
}

impl std::error::Error for AudioError {}

/// A WAV file's first channel at 8 kHz. Integer (8–32 bit) and float WAVs are accepted.
pub fn load_wav(path: &Path) -> Result<Vec<i16>, AudioError> {
    let err = |e: hound::Error| AudioError::Wav(path.to_path_buf(), e.to_string());
    let mut r = hound::WavReader::open(path).map_err(err)?;
    let spec = r.spec();
    let channels = usize::from(spec.channels.max(1));
    let all: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, _) => r
            .samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16))
            .collect::<Result<_, _>>()
            .map_err(err)?,
        (hound::SampleFormat::Int, bits) if bits <= 16 => {
            let shift = 16 - u32::from(bits);
            r.samples::<i16>()
                .map(|s| s.map(|v| v << shift))
                .collect::<Result<_, _>>()
                .map_err(err)?
        }
        (hound::SampleFormat::Int, bits) => {
            let shift = u32::from(bits.min(32)) - 16;
            r.samples::<i32>()
                .map(|s| s.map(|v| (v >> shift) as i16))
                .collect::<Result<_, _>>()
                .map_err(err)?
        }
    };
    let mono: Vec<i16> = all.iter().step_by(channels).copied().collect();
    Ok(ivr_proto::audio::resample::resample(
        &mono,
        spec.sample_rate,
        8000,
    ))
}

/// Text as a TTY sends it: 8 kHz Baudot FSK with the modem's lead-in and tail.
pub fn tty_pcm(text: &str) -> Result<Vec<i16>, AudioError> {
    let mut m = TtyModulator::new(TtyTxConfig::default());
    m.push_text(text)
        .map_err(|e| AudioError::Tty(format!("{e:?}")))?;
    let mut out = Vec::new();
    let mut frame = [0i16; 160];
    // 45.45 baud: ~7 characters a second; bound the loop for absurdly long text.
    for _ in 0..(50 * 60 * 30) {
        let n = m.fill(&mut frame);
        out.extend_from_slice(&frame[..n]);
        if n < frame.len() {
            break;
        }
    }
    Ok(out)
}

/// G.711 frames of `pcm`, the last padded with silence to a whole 20 ms.
pub fn encode(pcm: &[i16], alaw: bool) -> Arc<[u8]> {
    let mut out: Vec<u8> = pcm
        .iter()
        .map(|&s| if alaw { alaw_encode(s) } else { ulaw_encode(s) })
        .collect();
    let silence = if alaw { 0xD5 } else { 0xFF };
    out.resize(out.len().div_ceil(160) * 160, silence);
    out.into()
}

/// Encoded audio of every `audio` and `tty` step of a manifest, by (source, codec).
#[derive(Default)]
pub struct AudioSet {
    clips: HashMap<(String, bool), Arc<[u8]>>,
}

impl AudioSet {
    /// Loads and encodes everything the manifest's scripts play, for the codecs they use.
    pub fn prepare(manifest: &Manifest, audio_dir: &Path) -> Result<AudioSet, AudioError> {
        let mut set = AudioSet::default();
        for s in &manifest.scripts {
            let alaw = s.codec.as_deref() == Some("pcma");
            for step in &s.steps {
                let key = match step {
                    Step::Audio { file } => Self::audio_key(file),
                    Step::Tty { text } => Self::tty_key(text),
                    _ => continue,
                };
                if set.clips.contains_key(&(key.clone(), alaw)) {
                    continue;
                }
                let pcm = match step {
                    Step::Audio { file } => load_wav(&audio_dir.join(file))?,
                    Step::Tty { text } => tty_pcm(text)?,
                    _ => continue,
                };
                set.clips.insert((key, alaw), encode(&pcm, alaw));
            }
        }
        Ok(set)
    }

    fn audio_key(file: &Path) -> String {
        format!("file:{}", file.display())
    }

    fn tty_key(text: &str) -> String {
        format!("tty:{text}")
    }

    /// The encoded clip of a step prepared by [`AudioSet::prepare`].
    pub fn clip(&self, step: &Step, alaw: bool) -> Option<Arc<[u8]>> {
        let key = match step {
            Step::Audio { file } => Self::audio_key(file),
            Step::Tty { text } => Self::tty_key(text),
            _ => return None,
        };
        self.clips.get(&(key, alaw)).cloned()
    }

    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, rate: u32, bits: u16, samples: &[i32]) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn wav_at_any_rate_becomes_8khz() {
        let dir = std::env::temp_dir().join(format!("loadtest-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // One second of a 440 Hz tone at 22.05 kHz, 16 bit.
        let tone: Vec<i32> = (0..22050)
            .map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / 22050.0).sin() * 8000.0) as i32)
            .collect();
        let p = dir.join("tone.wav");
        write_wav(&p, 22050, 16, &tone);
        let pcm = load_wav(&p).unwrap();
        assert!((7990..=8010).contains(&pcm.len()), "{}", pcm.len());
        let rms =
            (pcm.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
        assert!((rms - 8000.0 / 2f64.sqrt()).abs() < 400.0, "{rms}");
        // 8-bit input is scaled to 16-bit range.
        let p8 = dir.join("eight.wav");
        write_wav(&p8, 8000, 8, &[100, -100, 50]);
        assert_eq!(load_wav(&p8).unwrap(), vec![100 << 8, -100 << 8, 50 << 8]);
        // Not a WAV: an error naming the file, no panic.
        let junk = dir.join("junk.wav");
        std::fs::write(&junk, b"RIFF????WAVEjunk").unwrap();
        assert!(
            load_wav(&junk)
                .unwrap_err()
                .to_string()
                .contains("junk.wav")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tty_text_is_fsk_of_plausible_length() {
        let pcm = tty_pcm("HELLO").unwrap();
        // 5 letters + a shift at 45.45 baud, 7.5 bits each ≈ 165 ms each, plus lead-in and tail.
        let secs = pcm.len() as f64 / 8000.0;
        assert!((0.9..2.0).contains(&secs), "{secs}");
        assert!(pcm.iter().any(|&s| s.abs() > 1000));
        assert!(tty_pcm("").unwrap().is_empty());
    }

    #[test]
    fn encode_pads_to_whole_frames() {
        let e = encode(&[0; 161], false);
        assert_eq!(e.len(), 320);
        assert!(e.iter().all(|&b| b == 0xFF));
        assert_eq!(encode(&[], true).len(), 0);
    }
}
