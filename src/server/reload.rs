//! Hot reload of `prompts/`: the directory is polled (cheap: one stat per file twice a second)
//! and a changed, valid prompt set replaces the old one. A broken edit is logged with file and
//! line and changes nothing served; calls in progress keep the set they started with.

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

pub async fn watch_prompts(shared: Arc<Shared>) {
    let dir = shared.config.paths.prompts_dir.clone();
    let mut last = fingerprint(&dir);
    loop {
        tokio::time::sleep(POLL).await;
        let now = fingerprint(&dir);
        if now == last {
            continue;
        }
        last = now;
        let config = shared.config.clone();
        let result = tokio::task::spawn_blocking(move || super::load_prompts(&config)).await;
        match result {
            Ok(Ok(set)) => {
                tracing::info!(prompts = set.len(), "prompts reloaded");
                shared.prompts.store(Arc::new(set));
                Metrics::inc(&shared.metrics.prompt_reloads_total);
            }
            Ok(Err(e)) => {
                tracing::error!(
                    "prompt reload rejected, the previous prompts keep serving:\n{e:#}"
                );
                Metrics::inc(&shared.metrics.prompt_reload_failures_total);
            }
            Err(e) => {
                tracing::error!(error = %e, "prompt reload crashed; the previous prompts keep serving");
                Metrics::inc(&shared.metrics.prompt_reload_failures_total);
            }
        }
    }
}
