//! `ivr say`: a prompt as callers hear it is a valid 8 kHz WAV of speech; a recorded WAV dropped
//! beside a prompt (any common rate) replaces the synthetic voice.

mod common;

use std::process::Command;

use common::*;

fn say(prompts: &std::path::Path, dir: &std::path::Path, args: &[&str], out: &std::path::Path) {
    let cfg = dir.join("say.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\ndata_dir = \"{}\"\nprompts_dir = \"{}\"\ntts_cache_dir = \"{}\"\n",
            dir.display(),
            prompts.display(),
            repo().join("target/tts-cache").display()
        ),
    )
    .unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .arg("say")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg("--config")
        .arg(&cfg)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn say_writes_speech_and_prefers_a_recording() {
    let dir = temp_dir("say");
    let prompts = dir.join("prompts");
    for lang in ["en", "es"] {
        std::fs::create_dir_all(prompts.join(lang)).unwrap();
        for e in std::fs::read_dir(repo().join("prompts").join(lang))
            .unwrap()
            .flatten()
        {
            if e.path().is_file() {
                std::fs::copy(e.path(), prompts.join(lang).join(e.file_name())).unwrap();
            }
        }
    }
    let tts = dir.join("tts.wav");
    say(
        &prompts,
        &dir,
        &["--lang", "es", "--prompt", "goodbye"],
        &tts,
    );
    let (rate, pcm) = read_wav(&tts);
    assert_eq!(rate, 8000);
    assert!(pcm.len() > 8000, "more than a second of speech");
    assert!(rms(&pcm) > 500.0, "not silent");

    // A recording at 44.1 kHz: a 440 Hz tone, easy to tell from speech.
    std::fs::create_dir_all(prompts.join("es/audio")).unwrap();
    let rec = prompts.join("es/audio/goodbye.wav");
    let st = Command::new("sox")
        .args(["-n", "-r", "44100", "-c", "1", "-b", "16"])
        .arg(&rec)
        .args(["synth", "1.5", "sine", "440"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = dir.join("rec.wav");
    say(
        &prompts,
        &dir,
        &["--lang", "es", "--prompt", "goodbye"],
        &out,
    );
    let (rate, pcm) = read_wav(&out);
    assert_eq!(rate, 8000);
    let secs = pcm.len() as f64 / 8000.0;
    assert!(
        (1.45..1.6).contains(&secs),
        "the recording's length, in whole frames: {secs}"
    );
    // Zero crossings of a 440 Hz tone: ~880 per second.
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64 / secs;
    assert!(
        (840.0..920.0).contains(&crossings),
        "the recording plays, not the voice: {crossings}/s"
    );
}
