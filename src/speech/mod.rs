//! What the IVR says: the prompt catalog (`prompts/`), text-to-speech with espeak-ng, and the
//! cache of prompts already encoded into 20 ms frames per codec, so that playing a prompt costs a
//! copy per packet.
//!
//! `catalog` and `markup` are pure (they live in `ivr_core::prompts`). `tts` runs the espeak-ng program and reads the disk cache —
//! the only IO here, done at load time and on reload, never on the media path.

pub mod cache;
pub mod dynamic;
pub mod tts;

// The pure parts live in the core crate; these paths are the ones the shell has always used.
pub use ivr_core::flow::required_prompts;
pub use ivr_core::prompts::{catalog, markup};

use std::path::Path;

pub use ivr_core::prompts::{Catalog, Prompt, Source};

use crate::types::Lang;

/// Read every `prompts/<lang>/*.txt` file under `dir`, sorted by path for stable diagnostics.
pub fn read_sources(dir: &Path) -> std::io::Result<Vec<Source>> {
    let mut sources = Vec::new();
    for lang in Lang::ALL {
        let sub = dir.join(lang.code());
        let mut paths: Vec<_> = std::fs::read_dir(&sub)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)?;
            sources.push(Source { path, lang, text });
        }
    }
    Ok(sources)
}
