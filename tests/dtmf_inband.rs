//! In-band DTMF survives a G.711 µ-law round trip and noise at −25..0 dBm0, and speech does not
//! produce digits (talk-off). Digits come from sox and speech from espeak-ng when installed; the
//! parts needing a missing tool print a note and fall back (digits) or skip (speech).

use std::path::PathBuf;
use std::process::Command;

use ivr::audio::dtmf::{DtmfDetector, dtmf_freqs, dtmf_tone_level};
use ivr::audio::level::dbm0;
use ivr::audio::resample::resample;
use ivr::rtp::codec::{Decoder, Encoder};
use ivr::types::Codec;

const KEYS: &str = "0123456789*#ABCD";

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ivr-dtmf-{}-{name}", std::process::id()))
}

/// One digit from sox: `synth 0.1 sine ROW sine COL`, mixed to mono, then `gain`.
fn sox_digit(digit: char, gain_db: f64) -> Vec<i16> {
    let (r, c) = dtmf_freqs(digit).expect("valid key");
    let out = tmp(&format!("{digit}.raw"));
    let st = Command::new("sox")
        .args([
            "-D", "-n", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed", "-t", "raw",
        ])
        .arg(&out)
        .args([
            "synth",
            "0.1",
            "sine",
            &r.to_string(),
            "sine",
            &c.to_string(),
            "gain",
            &gain_db.to_string(),
        ])
        .status()
        .expect("sox runs");
    assert!(st.success());
    let bytes = std::fs::read(&out).expect("sox wrote the file");
    let _ = std::fs::remove_file(&out);
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Deterministic white noise of the given RMS.
fn add_noise(pcm: &mut [i16], rms: f64, seed: u64) {
    let mut x = seed;
    for s in pcm.iter_mut() {
        let mut acc = 0.0;
        for _ in 0..4 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            acc += (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        }
        *s = (*s as f64 + acc * 3f64.sqrt() * rms)
            .round()
            .clamp(-32768.0, 32767.0) as i16;
    }
}

/// Through a µ-law encoder/decoder pair in 20 ms packets, then the detector.
fn ulaw_then_detect(pcm: &[i16]) -> String {
    let mut enc = Encoder::new(Codec::Pcmu).expect("G.711 needs no setup");
    let mut dec = Decoder::new(Codec::Pcmu).expect("G.711 needs no setup");
    let mut det = DtmfDetector::default();
    let mut payload = [0u8; 160];
    let mut frame = [0i16; 160];
    let mut out = String::new();
    for chunk in pcm.chunks(160) {
        let n = enc.encode(chunk, &mut payload).expect("buffer fits");
        let k = dec.decode(&payload[..n], &mut frame).expect("buffer fits");
        out.extend(det.process(&frame[..k]));
    }
    out
}

#[test]
fn digits_through_ulaw_with_noise_at_all_levels() {
    let have_sox = tool("sox");
    if !have_sox {
        println!("NOTE: sox not installed; using the built-in tone generator");
    }
    // sox's mix of two full-scale sines lands near −3 dBm0; gains take it down to about −25.
    for gain in [0.0, -6.0, -12.0, -18.0, -22.0] {
        let mut pcm = vec![0i16; 800];
        let mut level = f64::NAN;
        for d in KEYS.chars() {
            let tone = if have_sox {
                sox_digit(d, gain)
            } else {
                dtmf_tone_level(d, 100, 8000, -3.0 + gain)
            };
            level = dbm0(&tone);
            pcm.extend(tone);
            pcm.extend([0i16; 800]);
        }
        assert!((-26.5..=0.5).contains(&level), "digit level {level} dBm0");
        // Noise 20 dB under the quietest digits, over the whole signal.
        add_noise(
            &mut pcm,
            32768.0 * 10f64.powf((-25.0 - 20.0 - 6.18) / 20.0),
            11,
        );
        assert_eq!(
            ulaw_then_detect(&pcm),
            KEYS,
            "gain {gain} dB (≈{level:.1} dBm0)"
        );
    }
}

/// espeak-ng text → 8 kHz PCM (resampled with our one-shot resampler).
fn speak(text: &str, voice: &str) -> Option<Vec<i16>> {
    let wav = tmp(&format!("{voice}-{}.wav", text.len()));
    let st = Command::new("espeak-ng")
        .args(["-v", voice, "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .ok()?;
    if !st.success() {
        return None;
    }
    let mut r = hound::WavReader::open(&wav).ok()?;
    let rate = r.spec().sample_rate;
    let pcm: Vec<i16> = r.samples::<i16>().collect::<Result<_, _>>().ok()?;
    let _ = std::fs::remove_file(&wav);
    Some(resample(&pcm, rate, 8000))
}

#[test]
fn speech_produces_no_digits() {
    if !tool("espeak-ng") {
        println!("NOTE: espeak-ng not installed; skipping talk-off");
        return;
    }
    let texts = [
        ("en", "hello this is a test"),
        (
            "en",
            "one two three four five six seven eight nine zero, pound, star",
        ),
        (
            "en",
            "I would like to check the status of my application, please",
        ),
        ("es", "hola, necesito ayuda con mi solicitud, gracias"),
        ("en-us+f3", "Please hold while I transfer you to an agent"),
    ];
    let mut total_ms = 0;
    for (voice, text) in texts {
        let mut pcm = speak(text, voice).expect("espeak-ng speaks");
        assert!(pcm.len() > 4000, "{text}: {} samples", pcm.len());
        total_ms += pcm.len() / 8;
        // Loud and quiet renditions.
        for gain in [1.0, 0.3] {
            for s in pcm.iter_mut() {
                *s = (*s as f64 * gain) as i16;
            }
            assert_eq!(ulaw_then_detect(&pcm), "", "talk-off on {voice}: {text:?}");
        }
    }
    println!("talk-off: {total_ms} ms of speech, no digits");
}
