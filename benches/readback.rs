//! Dynamic read-back rendering: "You entered 2 0 2, 5 5 5, 0 1 2 3." and an email address
//! read back letter by letter ("You said J O H N 1 7 dot S M I T H at gmail dot com.") — the
//! part rendered during the call; the confirmation after it is a catalog prompt — on a cache
//! miss (synthesis + resampling + encoding into PCMU/PCMA/Opus frames) and on a hit, for each
//! espeak-ng engine. Target (issue #5): ≤ 50 ms p95 on a miss.
//!
//! `cargo bench --bench readback` (READBACK_BENCH_N iterations, default 60). Every miss renders
//! a different number, as calls would. Prints p50/p95/max per case.

use std::time::{Duration, Instant};

use ivr::speech::dynamic::{self, DynamicConfig, DynamicPrompts, EngineChoice};
use ivr::speech::markup;
use ivr::speech::tts::Voice;
use ivr::types::{Codec, Lang};

fn text(i: usize, lang: Lang) -> String {
    let n = format!("202555{:04}", i % 10_000);
    let phone = format!("{}-{}-{}", &n[..3], &n[3..6], &n[6..]);
    match lang {
        Lang::En => format!("You entered {{phone {phone}}}."),
        Lang::Es => format!("Usted marcó {{phone {phone}}}."),
    }
}

/// The address read-back as the flow builds it (catalog texts around `spell::spoken_email`).
fn email_text(i: usize, lang: Lang) -> String {
    let address = format!("john{}.smith@gmail.com", i % 10_000);
    let spoken = ivr::nlu::spell::spoken_email(lang, &address);
    match lang {
        Lang::En => format!("You said {spoken}."),
        Lang::Es => format!("Usted dijo {spoken}."),
    }
}

fn report(name: &str, mut t: Vec<Duration>) {
    t.sort();
    let q = |p: f64| t[((t.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<34} n={:<4} p50 {:>9.3} ms  p95 {:>9.3} ms  max {:>9.3} ms",
        t.len(),
        q(0.50).as_secs_f64() * 1e3,
        q(0.95).as_secs_f64() * 1e3,
        q(1.0).as_secs_f64() * 1e3
    );
}

fn main() {
    let n: usize = std::env::var("READBACK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let voice = |lang| Voice {
        name: match lang {
            Lang::En => "en-us".into(),
            Lang::Es => "es-419".into(),
        },
        speed: 160,
    };
    println!("engine auto = {}", dynamic::engine_name(EngineChoice::Auto));
    for engine in [EngineChoice::Library, EngineChoice::Process] {
        for codec in [Codec::Pcmu, Codec::Opus] {
            let d = DynamicPrompts::new(DynamicConfig {
                engine,
                ..DynamicConfig::default()
            });
            for (kind, text) in [
                ("phone", text as fn(usize, Lang) -> String),
                ("email", email_text),
            ] {
                for lang in [Lang::En, Lang::Es] {
                    let v = voice(lang);
                    // Warm-up: the library loads its voice data once.
                    d.render(lang, &v, &text(9999, lang), codec)
                        .expect("render");
                    let mut miss = Vec::with_capacity(n);
                    let mut synth = Vec::with_capacity(n);
                    for i in 0..n {
                        let t = text(i, lang);
                        let start = Instant::now();
                        let p = d.render(lang, &v, &t, codec).expect("render");
                        miss.push(start.elapsed());
                        assert!(p.frames() > 0);
                        let ssml = markup::render(&t, lang).unwrap().ssml;
                        let start = Instant::now();
                        dynamic::synthesize(engine, &ssml, &v).expect("synthesize");
                        synth.push(start.elapsed());
                    }
                    let mut hit = Vec::with_capacity(n);
                    for i in 0..n {
                        let t = text(i, lang);
                        let start = Instant::now();
                        let p = d.cached(lang, &v, &t, codec);
                        hit.push(start.elapsed());
                        assert!(p.is_some());
                    }
                    let tag = format!("{engine:?}/{codec:?}/{}/{kind}", lang.code()).to_lowercase();
                    report(&format!("{tag} miss"), miss);
                    if codec == Codec::Pcmu {
                        report(&format!("{tag} (synthesis only)"), synth);
                    }
                    report(&format!("{tag} hit"), hit);
                }
            }
        }
    }
}
