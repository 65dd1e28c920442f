//! The spoken evaluation set (`evals/spoken_en.tsv`: 42 questions, in domain, out of domain and
//! callers in danger) in three voices (espeak-ng en-us, espeak-ng en-us+f3, festival's HTS
//! voice cmu_us_slt), each through the whole 8 kHz path of `ivr call --rate 8000` (front end,
//! G.711 band, PocketSphinx on the embedded default, grammars, decision). The recognizer is weak
//! at 8 kHz; what must hold is that it never answers confidently what it did not understand:
//! confident errors (a wrong intent answered without confirmation) at most 1 in 20. Accuracy is
//! printed (`-- --nocapture`), not asserted.
//!
//! Needs `espeak-ng`, `sox`, `festival` with `festvox-us-slt-hts`, PocketSphinx en-us.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn questions() -> Vec<(String, String)> {
    std::fs::read_to_string(repo().join("evals/spoken_en.tsv"))
        .expect("spoken set")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(q, i)| (q.to_string(), i.to_string()))
        .collect()
}

const VOICES: [&str; 3] = ["espeak", "espeak_f3", "slt"];

/// `text` in `voice`, as 16 kHz mono with half a second of silence around it.
fn speak(dir: &Path, voice: &str, n: usize, text: &str) -> PathBuf {
    let raw = dir.join(format!("{voice}-{n}-raw.wav"));
    let out = dir.join(format!("{voice}-{n}.wav"));
    let ok = match voice {
        "slt" => {
            let mut child = Command::new("text2wave")
                .args(["-eval", "(voice_cmu_us_slt_arctic_hts)", "-o"])
                .arg(&raw)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("festival's text2wave installed");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
            child.wait().expect("text2wave").success()
        }
        v => {
            let (name, speed, pitch) = if v == "espeak" {
                ("en-us", "150", "50")
            } else {
                ("en-us+f3", "140", "60")
            };
            Command::new("espeak-ng")
                .args(["-v", name, "-s", speed, "-p", pitch, "-w"])
                .arg(&raw)
                .arg(text)
                .status()
                .expect("espeak-ng installed")
                .success()
        }
    };
    assert!(ok, "{voice} could not say {text:?}");
    assert!(
        Command::new("sox")
            .arg(&raw)
            .args(["-r", "16000", "-c", "1", "-b", "16"])
            .arg(&out)
            .args(["pad", "0.5", "0.5"])
            .status()
            .expect("sox installed")
            .success()
    );
    out
}

struct Outcome {
    expected: Option<String>,
    voice: &'static str,
    transcript: String,
    intent: Option<String>,
    decision: String,
}

#[test]
fn spoken_questions_at_8_khz_are_never_answered_wrongly_with_confidence() {
    require("espeak-ng");
    require("sox");
    require("text2wave");
    let dir = temp_dir("spoken-eval");
    let cfg = offline_config(&dir);
    let qs = questions();
    assert!(qs.len() >= 40, "at least 40 spoken questions");
    let mut jobs = Vec::new();
    for (n, (q, expected)) in qs.iter().enumerate() {
        for voice in VOICES {
            jobs.push((speak(&dir, voice, n, q), voice, expected.clone()));
        }
    }
    // Two at a time: one per core.
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let halves: Vec<_> = jobs
            .chunks(jobs.len().div_ceil(2))
            .map(|chunk| {
                let cfg = &cfg;
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|(wav, voice, expected)| {
                            let out = Command::new(env!("CARGO_BIN_EXE_ivr"))
                                .arg("call")
                                .arg("--config")
                                .arg(cfg)
                                .args(["--lang", "en", "--rate", "8000"])
                                .arg(wav)
                                .current_dir(repo())
                                .output()
                                .expect("ivr runs");
                            assert!(
                                out.status.success(),
                                "{}",
                                String::from_utf8_lossy(&out.stderr)
                            );
                            let j: serde_json::Value =
                                serde_json::from_slice(&out.stdout).expect("one JSON object");
                            let u = &j["understood"][0];
                            Outcome {
                                expected: (expected != "none").then(|| expected.clone()),
                                voice,
                                transcript: j["transcripts"][0].as_str().unwrap_or("").into(),
                                intent: u["intent"].as_str().map(String::from),
                                decision: u["decision"].as_str().unwrap_or("none").into(),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        halves
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    let mut confident_errors = 0;
    for voice in VOICES {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.voice == voice).collect();
        let right = of
            .iter()
            .filter(|o| match &o.expected {
                Some(e) => o.intent.as_deref() == Some(e.as_str()),
                None => o.decision != "answer",
            })
            .count();
        let answered = of.iter().filter(|o| o.decision == "answer").count();
        let wrong: Vec<&&Outcome> = of
            .iter()
            .filter(|o| o.decision == "answer" && o.intent != o.expected)
            .collect();
        confident_errors += wrong.len();
        println!(
            "SUMMARY {voice:10} understood {right}/{n}, answered without confirmation {answered}, confident errors {}",
            wrong.len(),
            n = of.len()
        );
        for o in wrong {
            println!(
                "  CONFIDENT ERROR expected {:?} answered {:?} from {:?}",
                o.expected, o.intent, o.transcript
            );
        }
    }
    let n = outcomes.len();
    println!("SUMMARY all voices: confident errors {confident_errors}/{n}");
    assert!(
        confident_errors * 20 <= n,
        "{confident_errors} confident errors in {n} spoken questions (at most 1 in 20)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
