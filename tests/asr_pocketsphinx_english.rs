//! English on the embedded default: spoken questions (espeak-ng, one per intent, phrased apart
//! from the grammars) go through the real per-call path — `Pipeline` (resample, VAD, endpointer)
//! → PocketSphinx with the domain LM generated from `grammars/` → `nlu` — and reach the right
//! intent. Wideband (16 kHz) is asserted; narrowband (8 kHz, band-limited, upsampled by the
//! pipeline) is printed, as is the stock general LM for comparison.
//!
//! Needs Debian's `libpocketsphinx-dev` and `pocketsphinx-en-us`, and `espeak-ng`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ivr::asr::sphinx::{DEFAULT_MODEL_DIR, SphinxEngine};
use ivr::asr::{EndpointConfig, EndpointEvent, Mode, Pipeline, Recognizer};
use ivr::audio::resample::resample;
use ivr::nlu::{self, Nlu, PhraseSet, Source};
use ivr::types::Lang;

/// One question per intent, written for the tests (not copied from the grammar files); shared
/// with `call_speech_english.rs`.
fn questions() -> Vec<(String, String)> {
    let text = include_str!("data/spoken_questions_en.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('\t'))
        .map(|(q, i)| (q.to_string(), i.to_string()))
        .collect()
}

/// Measured 18/20 (90%) wideband; 8 kHz 16/20; the stock general LM 10/20 (printed by the test).
/// The bar leaves room for two more misses.
const WIDEBAND_MIN: f64 = 0.80;

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for lang in ["en", "es"] {
        let dir = root.join("grammars").join(lang);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("grammars/<lang> exists")
            .map(|e| e.expect("readable dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("utf-8 grammar file");
            let path = f.strip_prefix(root).expect("under the root").to_path_buf();
            out.push(Source { path, text });
        }
    }
    out
}

/// PocketSphinx with the domain LM of the grammars, as `ivr serve` loads it for English.
fn domain_engine(nlu: &Nlu) -> SphinxEngine {
    SphinxEngine::load(
        Path::new(DEFAULT_MODEL_DIR),
        &nlu.phrases(Lang::En, PhraseSet::Question),
        &nlu.vocabulary(Lang::En),
        &std::env::temp_dir(),
    )
    .expect("pocketsphinx-en-us installed")
}

fn nlu() -> Nlu {
    nlu::build(&sources()).unwrap_or_else(|d| panic!("grammars do not build: {d:?}"))
}

/// `text` spoken by espeak-ng at `rate`, with 0.5 s before and 1 s after of faint line noise.
fn speak(text: &str, rate: u32) -> Vec<i16> {
    let dir = std::env::temp_dir().join(format!("ivr-asr-en-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Tests run in parallel and may speak the same text: each rendering gets its own file.
    static RENDERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wav = dir.join(format!("{}-{n}-{rate}.wav", text.replace(' ', "_")));
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng installed")
        .success();
    assert!(ok, "espeak-ng failed");
    let mut r = hound::WavReader::open(&wav).expect("a WAV");
    let from = r.spec().sample_rate;
    let pcm: Vec<i16> = r.samples::<i16>().map(|s| s.expect("16-bit")).collect();
    let _ = std::fs::remove_file(&wav);
    let mut seed = 12345u32;
    let mut noise = |n: usize| -> Vec<i16> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((seed >> 16) % 17) as i16 - 8
            })
            .collect()
    };
    let mut out = noise(rate as usize / 2);
    out.extend(resample(&pcm, from, rate));
    out.extend(noise(rate as usize));
    out
}

/// The media task's view: frames at `rate` through the pipeline; the recognizer sees only the
/// endpointer's audio. Returns the transcript and how much audio the recognizer was fed.
fn recognize(rec: &mut dyn Recognizer, audio: &[i16], rate: u32) -> (String, usize) {
    let t0 = Instant::now();
    let cfg = EndpointConfig::default();
    let mut p = Pipeline::new(rate, rec.sample_rate_hz(), cfg);
    p.listen(t0, cfg);
    let frame = rate as usize / 50;
    let mut fed = 0;
    let mut ended = false;
    for (i, f) in audio.chunks(frame).enumerate() {
        p.handle_frame(t0 + Duration::from_millis(20 * i as u64), f);
        while let Some(e) = p.poll_event() {
            match e {
                EndpointEvent::Audio(a) => {
                    fed += a.len();
                    rec.accept(&a);
                }
                EndpointEvent::EndOfUtterance { .. } | EndpointEvent::NoInput => ended = true,
                EndpointEvent::SpeechStart => {}
            }
        }
        if ended {
            break;
        }
    }
    assert!(ended, "the endpointer ends the utterance");
    (rec.finish().text, fed)
}

fn score(nlu: &Nlu, rec: &mut dyn Recognizer, rate: u32, label: &str) -> f64 {
    let mut right = 0;
    let questions = questions();
    for (q, intent) in &questions {
        let (text, fed) = recognize(rec, &speak(q, rate), rate);
        assert!(fed > 0, "speech reached the recognizer");
        let got = nlu.classify(Lang::En, &text).intent;
        let ok = got.as_deref() == Some(intent.as_str());
        right += usize::from(ok);
        println!(
            "{label} {} {q:?} -> {text:?} -> {}",
            if ok { "ok  " } else { "MISS" },
            got.as_deref().unwrap_or("-")
        );
    }
    let acc = right as f64 / questions.len() as f64;
    println!(
        "{label}: {right}/{} right intent ({:.0}%)",
        questions.len(),
        acc * 100.0
    );
    acc
}

#[test]
fn spoken_questions_reach_the_right_intent() {
    let nlu = nlu();
    let model = Path::new(DEFAULT_MODEL_DIR);
    let engine = SphinxEngine::load(
        model,
        &nlu.phrases(Lang::En, PhraseSet::Question),
        &nlu.vocabulary(Lang::En),
        &std::env::temp_dir(),
    )
    .expect("pocketsphinx-en-us installed");
    println!(
        "words missing from cmudict (left out of the LM): {:?}",
        engine.dropped_words()
    );
    let mut rec = engine.recognizer(&Mode::Domain).expect("domain recognizer");
    let wide = score(&nlu, &mut rec, 16_000, "domain LM, 16 kHz");
    let narrow = score(&nlu, &mut rec, 8_000, "domain LM, 8 kHz band-limited");
    let general = SphinxEngine::general(model).expect("stock LM");
    let mut open = general
        .recognizer(&Mode::Domain)
        .expect("general recognizer");
    let baseline = score(&nlu, &mut open, 16_000, "general LM, 16 kHz");
    println!(
        "SUMMARY intent accuracy: domain LM 16 kHz {:.0}%, 8 kHz {:.0}%; general LM 16 kHz {:.0}%",
        wide * 100.0,
        narrow * 100.0,
        baseline * 100.0
    );
    assert!(wide >= WIDEBAND_MIN, "wideband accuracy {wide}");
}

#[test]
fn closed_grammar_answers_yes_or_no() {
    let nlu = nlu();
    let engine = domain_engine(&nlu);
    let yes_no = Mode::Grammar(nlu.phrases(Lang::En, PhraseSet::YesNo));
    let mut rec = engine.recognizer(&yes_no).expect("yes/no grammar");
    for (said, act) in [
        ("yes please", "yes"),
        ("no", "no"),
        ("yeah", "yes"),
        ("nope", "no"),
    ] {
        let (text, _) = recognize(&mut rec, &speak(said, 16_000), 16_000);
        let got = nlu.act(Lang::En, &text).map(|(a, _)| a);
        println!("{said:?} -> {text:?} -> {got:?}");
        assert_eq!(got.as_deref(), Some(act), "{said:?} heard as {text:?}");
    }
}

#[test]
fn odd_input_never_panics_and_yields_nothing_sensible() {
    let engine = SphinxEngine::load(
        Path::new(DEFAULT_MODEL_DIR),
        &["yes".to_string(), "no".to_string()],
        &["yes".to_string(), "no".to_string()],
        &std::env::temp_dir(),
    )
    .expect("pocketsphinx-en-us installed");
    let mut rec = engine.recognizer(&Mode::Domain).expect("domain recognizer");
    // Finish and reset with nothing fed, twice.
    assert_eq!(rec.finish().text, "");
    rec.reset();
    rec.reset();
    // Empty, one-sample, full-scale square wave and silence.
    assert!(rec.accept(&[]).is_none());
    rec.accept(&[i16::MIN]);
    let square: Vec<i16> = (0..32_000)
        .map(|i| if i / 20 % 2 == 0 { i16::MAX } else { i16::MIN })
        .collect();
    rec.accept(&square);
    rec.accept(&[0; 16_000]);
    let t = rec.finish();
    assert!((0.0..=1.0).contains(&t.confidence));
    // A grammar with no pronounceable word is a typed error, not a crash.
    assert!(
        engine
            .recognizer(&Mode::Grammar(vec!["123 ###".into()]))
            .is_err()
    );
    assert!(engine.recognizer(&Mode::Grammar(vec![])).is_err());
}

/// Spelled addresses for the sequence grammar, as a caller says them (commas give espeak-ng a
/// caller's pauses between letters), and what the parser must make of them.
const SPELLED: &[(&str, &str)] = &[
    (
        "j, o, h, n, dot, s, m, i, t, h, at, gmail, dot, com",
        "john.smith@gmail.com",
    ),
    (
        "m, a, r, i, a, seven, at, yahoo, dot, com",
        "maria7@yahoo.com",
    ),
    (
        "k, i, m, underscore, l, e, e, at, outlook, dot, com",
        "kim_lee@outlook.com",
    ),
    ("r, o, s, a, at, hotmail, dot, com", "rosa@hotmail.com"),
    (
        "f, r, a, n, k, two, at, icloud, dot, com",
        "frank2@icloud.com",
    ),
    (
        "w, o, n, g, dot, a, l, at, comcast, dot, net",
        "wong.al@comcast.net",
    ),
];

fn spelling_endpoint() -> EndpointConfig {
    EndpointConfig {
        trailing_silence_ms: 1500,
        max_utterance_ms: 30_000,
        ..EndpointConfig::default()
    }
}

fn recognize_with(
    rec: &mut dyn Recognizer,
    audio: &[i16],
    rate: u32,
    cfg: EndpointConfig,
) -> String {
    let t0 = Instant::now();
    let mut p = Pipeline::new(rate, rec.sample_rate_hz(), cfg);
    p.listen(t0, cfg);
    let frame = rate as usize / 50;
    // Quiet line after the speech for as long as the endpointer waits (faint noise, as a
    // telephone line carries: digital zeros are not what a recognizer hears in a call).
    let mut audio = audio.to_vec();
    let mut seed = 4242u32;
    audio.extend((0..rate as usize * 2).map(|_| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        ((seed >> 16) % 17) as i16 - 8
    }));
    for (i, f) in audio.chunks(frame).enumerate() {
        p.handle_frame(t0 + Duration::from_millis(20 * i as u64), f);
        while let Some(e) = p.poll_event() {
            match e {
                EndpointEvent::Audio(a) => {
                    rec.accept(&a);
                }
                EndpointEvent::EndOfUtterance { .. } | EndpointEvent::NoInput => {
                    return rec.finish().text;
                }
                EndpointEvent::SpeechStart => {}
            }
        }
    }
    panic!("the endpointer ends the utterance");
}

/// The sequence grammars on the embedded default. PocketSphinx's 16 kHz model does not spell:
/// measured 0/6 addresses exact at 16 and 8 kHz (insertions of short vowel letters between
/// characters), and 0–1/3 phone numbers. Asserted: the grammar loops (a run of its tokens comes
/// back); the accuracy is printed. A production English line needs a Vosk model for spelling.
#[test]
fn spelled_email_addresses_and_spoken_numbers() {
    let nlu = nlu();
    let engine = domain_engine(&nlu);
    let mut rec = engine
        .recognizer(&Mode::spelling(Lang::En))
        .expect("spelling grammar");
    for rate in [16_000, 8_000] {
        let mut right = 0;
        for (said, want) in SPELLED {
            let text = recognize_with(&mut rec, &speak(said, rate), rate, spelling_endpoint());
            let got = nlu::spell::email(&text);
            let ok = got.as_deref() == Some(*want);
            right += usize::from(ok);
            println!(
                "{rate} Hz {} {said:?} -> {text:?} -> {got:?}",
                if ok { "ok  " } else { "MISS" }
            );
        }
        println!(
            "SUMMARY spelling {rate} Hz: {right}/{} exact",
            SPELLED.len()
        );
    }
    let mut digits = engine
        .recognizer(&Mode::digits(Lang::En))
        .expect("digit grammar");
    for rate in [16_000, 8_000] {
        for (said, want) in [
            (
                "two oh two, five five five, zero one two three",
                "2025550123",
            ),
            (
                "three one two, eight six seven, five three oh nine",
                "3128675309",
            ),
            (
                "seven one eight, four four four, nine eight seven six",
                "7184449876",
            ),
        ] {
            let text = recognize_with(&mut digits, &speak(said, rate), rate, spelling_endpoint());
            assert!(
                text.split_whitespace().count() >= 6
                    && text
                        .split_whitespace()
                        .all(|w| nlu::spell::digit_tokens(Lang::En).iter().any(|t| t == w)),
                "a run of digit words: {text:?}"
            );
            let got = nlu::spell::phone(&text);
            println!(
                "{rate} Hz {said:?} -> {text:?} -> {got:?} {}",
                if got.as_deref() == Some(want) {
                    "ok"
                } else {
                    "MISS"
                }
            );
        }
    }
}

/// A caller spelling with Asterisk's recorded letters and digits (a human voice, 8 kHz), 0.3 s
/// between characters.
fn asterisk_spelling(parts: &[&str]) -> Vec<i16> {
    // Faint line noise between the characters: a telephone line is never digital silence.
    let mut seed = 99u32;
    let mut noise = |n: usize| -> Vec<i16> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((seed >> 16) % 33) as i16 - 16
            })
            .collect()
    };
    let mut out = noise(4000);
    for p in parts {
        let path = format!("/usr/share/asterisk/sounds/en/{p}.wav");
        let mut r = hound::WavReader::open(&path).expect(&path);
        out.extend(r.samples::<i16>().map(|s| s.expect("16-bit")));
        out.extend(noise(2400));
    }
    out
}

#[test]
fn human_spelling_asterisk_recordings() {
    let nlu = nlu();
    let engine = domain_engine(&nlu);
    let tokens = ivr::nlu::spell::email_tokens(Lang::En);
    let in_grammar = |text: &str| {
        let words: Vec<&str> = text.split_whitespace().collect();
        words.len() >= 4 && words.iter().all(|w| tokens.iter().any(|t| t == w))
    };
    let mut rec = engine
        .recognizer(&Mode::spelling(Lang::En))
        .expect("spelling grammar");
    let l = |s: &str| -> Vec<String> {
        s.split(' ')
            .map(|c| match c {
                "at" | "dot" | "dash" => format!("letters/{c}"),
                c if c.len() == 1 && c.as_bytes()[0].is_ascii_digit() => format!("digits/{c}"),
                c => format!("letters/{c}"),
            })
            .collect()
    };
    for addr in [
        "j o h n dot s m i t h at g m a i l dot c o m",
        "m a r i a 7 at y a h o o dot c o m",
        "r o s a at u s c i s dot g o v",
        "k i m dash l e e at a o l dot c o m",
    ] {
        let parts = l(addr);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let audio = asterisk_spelling(&parts);
        let text = recognize_with(&mut rec, &audio, 8000, spelling_endpoint());
        assert!(in_grammar(&text), "a run of spelling tokens: {text:?}");
        println!("8k {addr:?} -> {text:?} -> {:?}", nlu::spell::email(&text));
        let up = resample(&audio, 8000, 16000);
        let text = recognize_with(&mut rec, &up, 16000, spelling_endpoint());
        println!(
            "16k-up {addr:?} -> {text:?} -> {:?}",
            nlu::spell::email(&text)
        );
    }
}

/// Key tones cancel the utterance the VAD had started on them; the tone audio already reached
/// the decoder. Its live cepstral mean must not keep it: found in a call where four cancelled
/// tone fragments left the next "yes please" recognized as nothing.
#[test]
fn cancelled_key_tones_do_not_deafen_the_recognizer() {
    let nlu = nlu();
    let engine = domain_engine(&nlu);
    let mut rec = engine
        .recognizer(&Mode::choices(&nlu, Lang::En))
        .expect("choices grammar");
    // DTMF pairs at 16 kHz, the lengths the endpointer passed on before the tone was known.
    let tone = |low: f64, high: f64, ms: usize| -> Vec<i16> {
        (0..16 * ms)
            .map(|i| {
                let t = i as f64 / 16_000.0;
                (6000.0
                    * ((2.0 * std::f64::consts::PI * low * t).sin()
                        + (2.0 * std::f64::consts::PI * high * t).sin())) as i16
            })
            .collect()
    };
    for (low, high, ms) in [
        (697.0, 1209.0, 300),
        (770.0, 1209.0, 20),
        (697.0, 1336.0, 20),
        (941.0, 1477.0, 220),
    ] {
        rec.accept(&tone(low, high, ms));
        rec.reset();
    }
    let (text, _) = recognize(&mut rec, &speak("yes please", 8_000), 8_000);
    assert_eq!(
        nlu.act(Lang::En, &text).map(|(a, _)| a).as_deref(),
        Some("yes"),
        "heard {text:?} after cancelled tones"
    );
}
