//! Word error rate of PocketSphinx on human telephone speech: Asterisk's English prompts (8 kHz
//! recordings, `asterisk-core-sounds-en-wav`) with their transcripts (`core-sounds-en.txt` from
//! `asterisk-core-sounds-en`), upsampled to 16 kHz as the pipeline does, recognized with the
//! stock general LM (these prompts are outside the IVR's domain). The figure is printed; the
//! assertion only bounds it loosely (a broken decoder or resampler gives WER ≈ 1).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ivr::asr::sphinx::{DEFAULT_MODEL_DIR, SphinxEngine};
use ivr::asr::{Mode, Recognizer};
use ivr::audio::resample::Upsampler2x;

const SOUNDS: &str = "/usr/share/asterisk/sounds/en";
const TRANSCRIPTS: &str = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz";
const PROMPTS: usize = 30;
/// Measured 0.620 on the 30 prompts chosen below (printed by the test): the stock model on
/// narrowband human speech. The bound only catches a broken path (WER near 1).
const WER_MAX: f64 = 0.75;

/// Lowercase words; stage directions in parentheses dropped, single digits and `*` as spoken.
fn words(text: &str) -> Vec<String> {
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let mut plain = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '*' if depth == 0 => plain.push_str(" star "),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    plain
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| match w.parse::<usize>() {
            Ok(d) if d < 10 => DIGITS[d].to_string(),
            _ => w.to_string(),
        })
        .collect()
}

/// Word-level Levenshtein distance.
fn edits(reference: &[String], hyp: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hyp.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut cur = vec![i + 1; hyp.len() + 1];
        for (j, h) in hyp.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(r != h))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[hyp.len()]
}

/// `name: transcript` lines; bracketed ones ("[beep]") are not speech.
fn transcripts() -> BTreeMap<String, String> {
    let out = Command::new("zcat")
        .arg(TRANSCRIPTS)
        .output()
        .expect("zcat runs");
    assert!(
        out.status.success(),
        "{TRANSCRIPTS} missing: install asterisk-core-sounds-en"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, t)| !n.contains('/') && !t.contains('[') && !t.trim().is_empty())
        .map(|(n, t)| (n.trim().to_string(), t.trim().to_string()))
        .collect()
}

#[test]
fn word_error_rate_on_human_prompts() {
    let all = transcripts();
    // Prompts of 4+ words with a WAV, spread evenly over the alphabet: a fixed, varied sample.
    let candidates: Vec<(&String, &String)> = all
        .iter()
        .filter(|(n, t)| {
            words(t).len() >= 4 && Path::new(SOUNDS).join(format!("{n}.wav")).is_file()
        })
        .collect();
    assert!(
        candidates.len() >= PROMPTS,
        "only {} prompts found under {SOUNDS}: install asterisk-core-sounds-en-wav",
        candidates.len()
    );
    let step = candidates.len() / PROMPTS;
    let mut engine =
        SphinxEngine::general(Path::new(DEFAULT_MODEL_DIR)).expect("pocketsphinx-en-us");
    // The telephone-band transform (scripts/adapt-8k; these 30 prompts are held out of it).
    if let Ok(m) = std::env::var("IVR_TEST_MLLR") {
        engine = engine.with_mllr(Path::new(&m)).expect("transform");
    }
    let mut rec = engine.recognizer(&Mode::Domain).expect("recognizer");
    let (mut errors, mut total) = (0usize, 0usize);
    for (name, reference) in candidates.iter().step_by(step).take(PROMPTS) {
        let mut r = hound::WavReader::open(Path::new(SOUNDS).join(format!("{name}.wav")))
            .expect("readable WAV");
        assert_eq!(r.spec().sample_rate, 8000, "{name}: 8 kHz telephone audio");
        let pcm: Vec<i16> = r.samples::<i16>().map(|s| s.expect("16-bit")).collect();
        // As the pipeline does it: 20 ms frames through the streaming 2x upsampler.
        let mut up = Upsampler2x::new();
        let mut buf = vec![0i16; 320];
        for frame in pcm.chunks(160) {
            let n = up.process(frame, &mut buf);
            rec.accept(&buf[..n]);
        }
        let hyp = rec.finish().text;
        let (r_words, h_words) = (words(reference), words(&hyp));
        let e = edits(&r_words, &h_words);
        println!("{name}: {e}/{} | {reference} | {hyp}", r_words.len());
        errors += e;
        total += r_words.len();
    }
    let wer = errors as f64 / total as f64;
    println!(
        "SUMMARY WER {wer:.3} ({errors} errors / {total} words, {PROMPTS} prompts, general LM)"
    );
    assert!(wer < WER_MAX, "WER {wer}");
}

#[test]
fn edit_distance_counts_substitutions_insertions_deletions() {
    let w = |s: &str| words(s);
    assert_eq!(edits(&w("press one now"), &w("press one now")), 0);
    assert_eq!(edits(&w("press one now"), &w("press two now")), 1);
    assert_eq!(edits(&w("press one now"), &w("press now")), 1);
    assert_eq!(edits(&w("press one"), &w("please press one")), 1);
    assert_eq!(edits(&w("a b c"), &[]), 3);
    assert_eq!(w("Press 1, or * (a tone plays)"), w("press one or star"));
}
