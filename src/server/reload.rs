//! Hot reload of `prompts/` and `grammars/`: both directories are polled (one stat per file,
//! four times a second) and a changed, valid set replaces the old one. A broken edit is logged with
//! file and line and changes nothing served; calls in progress keep the snapshot they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Shared;
use super::metrics::Metrics;

const POLL: Duration = Duration::from_millis(250);

/// (path, modified, length) of every file under `dir`, sorted: any edit, addition or removal
/// changes it.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else {
                out.push((path, meta.modified().ok(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

pub async fn watch(shared: Arc<Shared>) {
    let prompts_dir = shared.config.paths.prompts_dir.clone();
    let grammars_dir = shared.config.paths.grammars_dir.clone();
    let mut prompts_seen = fingerprint(&prompts_dir);
    let mut grammars_seen = fingerprint(&grammars_dir);
    loop {
        tokio::time::sleep(POLL).await;
        let now = fingerprint(&grammars_dir);
        if now != grammars_seen {
            grammars_seen = now;
            reload_grammars(&shared).await;
        }
        let now = fingerprint(&prompts_dir);
        if now != prompts_seen {
            prompts_seen = now;
            reload_prompts(&shared).await;
        }
    }
}

async fn reload_grammars(shared: &Arc<Shared>) {
    let dir = shared.config.paths.grammars_dir.clone();
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || super::load_grammars(&dir)).await {
        Ok(Ok(nlu)) => {
            let nlu = Arc::new(nlu);
            shared.nlu.store(nlu.clone());
            Metrics::inc(&shared.metrics.grammar_reloads_total);
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "grammars reloaded"
            );
            // The recognizers' grammars and PocketSphinx's LM follow the new phrases.
            if let Some(pool) = shared.asr.get().cloned() {
                let config = shared.config.clone();
                match tokio::task::spawn_blocking(move || super::load_engines(&config, &nlu)).await
                {
                    Ok(Ok(engines)) => pool.set_engines(Arc::new(engines)),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "recognizers not rebuilt; the previous ones keep serving")
                    }
                    Err(e) => tracing::error!(error = %e, "recognizer rebuild crashed"),
                }
            }
        }
        Ok(Err(e)) => {
            Metrics::inc(&shared.metrics.grammar_reload_failures_total);
            tracing::error!("grammar reload rejected, the previous grammars keep serving:\n{e:#}");
        }
        Err(e) => {
            Metrics::inc(&shared.metrics.grammar_reload_failures_total);
            tracing::error!(error = %e, "grammar reload crashed; the previous grammars keep serving");
        }
    }
}

async fn reload_prompts(shared: &Arc<Shared>) {
    let config = shared.config.clone();
    let previous = shared.prompts.load();
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || super::load_prompts(&config, Some(&previous))).await {
        Ok(Ok(set)) => {
            tracing::info!(
                prompts = set.len(),
                ms = started.elapsed().as_millis() as u64,
                "prompts reloaded"
            );
            shared.prompts.store(Arc::new(set));
            Metrics::inc(&shared.metrics.prompt_reloads_total);
        }
        Ok(Err(e)) => {
            tracing::error!("prompt reload rejected, the previous prompts keep serving:\n{e:#}");
            Metrics::inc(&shared.metrics.prompt_reload_failures_total);
        }
        Err(e) => {
            tracing::error!(error = %e, "prompt reload crashed; the previous prompts keep serving");
            Metrics::inc(&shared.metrics.prompt_reload_failures_total);
        }
    }
}
