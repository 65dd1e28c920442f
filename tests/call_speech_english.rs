//! `ivr call FILE.wav` on the embedded default (PocketSphinx for English): spoken questions
//! (espeak-ng, phrased apart from the grammars) run through the whole offline pipeline — front
//! end, recognizer, grammars, flow, rendered prompts — and reach the right intent when wideband
//! (16 kHz, asserted); the same questions band-limited to 8 kHz through G.711 are measured and
//! printed. A caller who talks over the greeting stops it (barge-in) and gets the answer.
//!
//! Needs `espeak-ng`, `sox`, `libpocketsphinx-dev`, `pocketsphinx-en-us`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{offline_config, repo, temp_dir};

fn questions() -> Vec<(String, String)> {
    include_str!("data/spoken_questions_en.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('\t'))
        .map(|(q, i)| (q.to_string(), i.to_string()))
        .collect()
}

/// `text` spoken by espeak-ng, at 16 kHz, with half a second of silence before and after.
fn speak(dir: &Path, name: &str, text: &str) -> PathBuf {
    let raw = dir.join(format!("{name}-raw.wav"));
    let out = dir.join(format!("{name}.wav"));
    assert!(
        Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "-w"])
            .arg(&raw)
            .arg(text)
            .status()
            .expect("espeak-ng installed")
            .success()
    );
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

fn ivr_call(config: &Path, wav: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .arg("call")
        .arg("--config")
        .arg(config)
        .args(extra)
        .arg(wav)
        .current_dir(repo())
        .output()
        .expect("ivr runs");
    assert!(
        out.status.success(),
        "ivr call failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn spoken_questions_reach_the_right_intent_through_ivr_call() {
    let dir = temp_dir("call-speech-en");
    let cfg = offline_config(&dir);
    let qs = questions();
    let (mut wide, mut narrow) = (0usize, 0usize);
    let mut rtf = Vec::new();
    for (n, (q, intent)) in qs.iter().enumerate() {
        let wav = speak(&dir, &format!("q{n}"), q);
        let w = ivr_call(&cfg, &wav, &["--lang", "en"]);
        let nb = ivr_call(&cfg, &wav, &["--lang", "en", "--rate", "8000"]);
        // What the question was understood as, answered at once or confirmed first (the
        // recognizer's evidence decides which: `decision`).
        let got_w = w["understood"][0]["intent"].as_str().unwrap_or("-");
        let got_n = nb["understood"][0]["intent"].as_str().unwrap_or("-");
        println!(
            "{intent:24} 16k {got_w:24} {:?} | 8k {got_n:24} {:?}",
            w["transcripts"], nb["transcripts"]
        );
        wide += usize::from(got_w == intent);
        narrow += usize::from(got_n == intent);
        rtf.push(w["timings"]["rtf"].as_f64().unwrap_or(0.0));
        // Every run says what it heard and what it played, with timings.
        assert!(w["prompts"].as_array().is_some_and(|p| !p.is_empty()));
        assert!(w["timings"]["virtual_ms"].as_u64().unwrap_or(0) > 0);
        if got_w == intent {
            let said: Vec<&str> = w["prompts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["id"].as_str())
                .collect();
            // Answered at once only when the recognizer and the classifier both were sure;
            // otherwise confirmed first. Either way the prompt matches the decision.
            let expected = match w["understood"][0]["decision"].as_str() {
                Some("answer") => format!("answer.{intent}"),
                Some("confirm") => format!("confirm.{intent}"),
                other => panic!("{intent}: understood but decided {other:?}"),
            };
            assert!(said.contains(&expected.as_str()), "{expected}: {said:?}");
        }
    }
    rtf.sort_by(f64::total_cmp);
    println!(
        "SUMMARY ivr call intent accuracy: 16 kHz {wide}/{n} ({:.0}%), 8 kHz G.711 {narrow}/{n} ({:.0}%); median RTF {:.3}",
        100.0 * wide as f64 / qs.len() as f64,
        100.0 * narrow as f64 / qs.len() as f64,
        rtf[rtf.len() / 2],
        n = qs.len()
    );
    // Measured 17–18/20 wideband with the first grammars, 15–16/20 since the domain LM also
    // holds the real-caller phrasings, safety cues and outside keys (which the 126-line spoken
    // set, `call_spoken_eval`, shows are a net gain at 8 kHz); leave room for one more miss.
    assert!(wide * 10 >= qs.len() * 7, "wideband {wide}/{}", qs.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_question_over_the_greeting_stops_it_and_gets_the_answer() {
    let dir = temp_dir("call-speech-barge");
    let cfg = offline_config(&dir);
    let wav = speak(&dir, "status", "i want to check my case status");
    let r = ivr_call(&cfg, &wav, &[]);
    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    let ids: Vec<&str> = r["prompts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids[0], "greeting");
    // Answered, or confirmed first when the recognizer was unsure of its words.
    assert!(
        ids.contains(&"answer.case_status") || ids.contains(&"confirm.case_status"),
        "{ids:?}"
    );
    assert_eq!(r["understood"][0]["intent"], "case_status");
    assert_eq!(r["lang"], "en");
    // The greeting was cut by the caller's speech, within 200 ms of its onset (virtual time:
    // the VAD's reaction, the figure a live call adds its packet time to).
    let barge = r["timings"]["barge_in_ms"]
        .as_array()
        .and_then(|b| b.first())
        .and_then(serde_json::Value::as_u64)
        .expect("a barge-in");
    assert!(barge <= 200, "barge-in after {barge} ms");
    // Nothing the caller said is lost: one utterance, ended by silence.
    assert_eq!(r["utterances"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["utterances"][0]["end"], "silence");
    let _ = std::fs::remove_dir_all(&dir);
}
