//! NLU timing with plain std: full grammar build time, and classification latency per utterance
//! (p50/p99 over the held-out sets, repeated). Run with `cargo bench --bench nlu` (release).
//! Targets: build ≤ 100 ms, classify p99 ≤ 1 ms.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ivr::nlu::{self, Source};
use ivr::types::Lang;

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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = sources(root);

    let mut builds = Vec::new();
    let mut nlu = None;
    for _ in 0..20 {
        let t = Instant::now();
        let n = nlu::build(&src).expect("valid grammars");
        builds.push(t.elapsed());
        nlu = Some(n);
    }
    let nlu = nlu.expect("built at least once");
    builds.sort();
    println!(
        "build (all grammars, en+es): p50 {:?}  max {:?}  (target ≤ 100 ms)",
        percentile(&builds, 0.5),
        builds[builds.len() - 1]
    );

    let mut utterances = Vec::new();
    for (lang, file) in [(Lang::En, "heldout_en.tsv"), (Lang::Es, "heldout_es.tsv")] {
        let text = std::fs::read_to_string(root.join("tests/data").join(file)).expect("held-out");
        for l in text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains('\t'))
        {
            if let Some((_, u)) = l.split_once('\t') {
                utterances.push((lang, u.to_string()));
            }
        }
    }
    let mut times = Vec::with_capacity(utterances.len() * 20);
    let mut found = 0usize;
    for _ in 0..20 {
        for (lang, u) in &utterances {
            let t = Instant::now();
            let c = nlu.classify(*lang, u);
            times.push(t.elapsed());
            found += usize::from(c.intent.is_some());
        }
    }
    times.sort();
    println!(
        "classify ({} calls): p50 {:?}  p99 {:?}  max {:?}  (target p99 ≤ 1 ms; {found} with an intent)",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
}
