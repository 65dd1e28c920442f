//! The prompt catalog (`prompts/<lang>/*.txt`, parsed from text the shell reads) and the prompt
//! markup (`{digits:…}`, `{say-as:…}`, pauses) the synthesizer and the TTY line render.

pub mod catalog;
pub mod markup;

pub use catalog::{Catalog, Prompt, Source};

/// The repository's shipped prompt files, read for unit tests only (the crate does no IO; the
/// shell reads prompt directories and passes the text in).
#[cfg(test)]
pub(crate) mod test_files {
    use super::Source;

    pub(crate) fn shipped_sources() -> (std::path::PathBuf, Vec<Source>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts");
        let mut sources = Vec::new();
        for lang in crate::types::Lang::ALL {
            let mut paths: Vec<_> = std::fs::read_dir(dir.join(lang.code()))
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path).unwrap();
                sources.push(Source { path, lang, text });
            }
        }
        (dir, sources)
    }
}
