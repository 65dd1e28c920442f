//! The prompt catalog: what the IVR says, per language, parsed from `prompts/<lang>/*.txt`.
//!
//! Format (prompts/README.md): `id [options]: text`, continued on indented lines; `#` starts a
//! comment line. Option `no-barge`: the caller cannot interrupt the prompt. Parsing is pure: the
//! caller passes file contents, so a broken edit can be rejected before anything changes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::markup::{self, Rendered};
use crate::diag::Diagnostic;
use crate::types::Lang;

/// One prompt file's contents.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub lang: Lang,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub id: String,
    pub lang: Lang,
    /// The text as written, markup included.
    pub text: String,
    pub rendered: Rendered,
    pub barge_in: bool,
    pub path: PathBuf,
    pub line: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    prompts: BTreeMap<(Lang, String), Prompt>,
}

const MAX_PROMPT_CHARS: usize = 4000;

impl Catalog {
    /// Parse every source; any error rejects the whole set (the old catalog keeps serving).
    pub fn parse(sources: &[Source]) -> Result<Catalog, Vec<Diagnostic>> {
        let mut catalog = Catalog::default();
        let mut errors = Vec::new();
        for source in sources {
            parse_file(source, &mut catalog, &mut errors);
        }
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, lang: Lang, id: &str) -> Option<&Prompt> {
        self.prompts.get(&(lang, id.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Prompt> {
        self.prompts.values()
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Every `required` id must exist in every language; every prompt should exist in both
    /// languages (a prompt only one language has is a translation someone forgot).
    pub fn check_complete(&self, required: &[String], dir: &std::path::Path) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        for lang in Lang::ALL {
            for id in required {
                if self.get(lang, id).is_none() {
                    problems.push(Diagnostic::new(
                        dir.join(lang.code()),
                        0,
                        format!("prompt {id:?} is missing in {lang}"),
                    ));
                }
            }
        }
        for p in self.prompts.values() {
            for other in Lang::ALL {
                if other != p.lang && self.get(other, &p.id).is_none() {
                    problems.push(Diagnostic::new(
                        &p.path,
                        p.line,
                        format!("prompt {:?} has no {other} version", p.id),
                    ));
                }
            }
        }
        problems
    }
}

fn parse_file(source: &Source, catalog: &mut Catalog, errors: &mut Vec<Diagnostic>) {
    let mut current: Option<(String, bool, usize, String)> = None;
    let mut finish = |current: &mut Option<(String, bool, usize, String)>,
                      errors: &mut Vec<Diagnostic>| {
        let Some((id, barge_in, line, text)) = current.take() else {
            return;
        };
        let err = |m: String| Diagnostic::new(&source.path, line, m);
        if text.trim().is_empty() {
            errors.push(err(format!("prompt {id:?} has no text")));
            return;
        }
        if text.chars().count() > MAX_PROMPT_CHARS {
            errors.push(err(format!(
                "prompt {id:?} is longer than {MAX_PROMPT_CHARS} characters"
            )));
            return;
        }
        let rendered = match markup::render(&text, source.lang) {
            Ok(r) => r,
            Err(e) => {
                errors.push(err(format!(
                    "prompt {id:?}, column {}: {}",
                    e.column, e.message
                )));
                return;
            }
        };
        let key = (source.lang, id.clone());
        if let Some(prev) = catalog.prompts.get(&key) {
            errors.push(err(format!(
                "prompt {id:?} is defined twice (first at {}:{})",
                prev.path.display(),
                prev.line
            )));
            return;
        }
        let prompt = Prompt {
            id,
            lang: source.lang,
            text,
            rendered,
            barge_in,
            path: source.path.clone(),
            line,
        };
        catalog.prompts.insert(key, prompt);
    };

    for (i, raw) in source.text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match current.as_mut() {
                Some((_, _, _, text)) => {
                    text.push(' ');
                    text.push_str(line.trim());
                }
                None => errors.push(Diagnostic::new(
                    &source.path,
                    line_no,
                    "indented text must continue a prompt (write `id: text` first)",
                )),
            }
            continue;
        }
        finish(&mut current, errors);
        match parse_head(line) {
            Ok((id, barge_in, text)) => current = Some((id, barge_in, line_no, text)),
            Err(m) => errors.push(Diagnostic::new(&source.path, line_no, m)),
        }
    }
    finish(&mut current, errors);
}

/// `id [options]: text` → (id, barge_in, text).
fn parse_head(line: &str) -> Result<(String, bool, String), String> {
    let (head, text) = line.split_once(':').ok_or_else(|| {
        "expected `id: text` (a prompt id, a colon, then what to say)".to_string()
    })?;
    let head = head.trim();
    let (id, options) = match head.split_once('[') {
        Some((id, opts)) => {
            let opts = opts
                .strip_suffix(']')
                .ok_or("options must be written [like-this]")?;
            (id.trim(), Some(opts))
        }
        None => (head, None),
    };
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    {
        return Err(format!(
            "prompt id {id:?} may use only a-z, 0-9, '_' and '.'"
        ));
    }
    let mut barge_in = true;
    for opt in options
        .into_iter()
        .flat_map(|o| o.split(','))
        .map(str::trim)
    {
        match opt {
            "no-barge" => barge_in = false,
            "barge" => barge_in = true,
            other => return Err(format!("unknown option {other:?} (known: no-barge)")),
        }
    }
    Ok((id.to_string(), barge_in, text.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(lang: Lang, text: &str) -> Source {
        Source {
            path: format!("prompts/{lang}/x.txt").into(),
            lang,
            text: text.into(),
        }
    }

    #[test]
    fn parses_ids_options_and_continuations() {
        let c = Catalog::parse(&[src(
            Lang::En,
            "# hi\ngreeting [no-barge]: Hello\n  and welcome.\n\nmenu: Press {digits 1}.\n",
        )])
        .unwrap();
        let g = c.get(Lang::En, "greeting").unwrap();
        assert_eq!(g.text, "Hello and welcome.");
        assert!(!g.barge_in);
        assert_eq!(g.line, 2);
        assert!(c.get(Lang::En, "menu").unwrap().barge_in);
    }

    #[test]
    fn errors_name_file_and_line() {
        let errs = Catalog::parse(&[src(
            Lang::En,
            "ok: fine\nBad Id: x\nmenu: {pause}\n  \ncont\n",
        )])
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("prompts/en/x.txt:2: prompt id")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("prompts/en/x.txt:3: prompt \"menu\", column 1")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("prompts/en/x.txt:5: expected")),
            "{text:?}"
        );
    }

    #[test]
    fn duplicates_and_missing_translations_are_reported() {
        let errs = Catalog::parse(&[src(Lang::En, "a: one\na: two\n")]).unwrap_err();
        assert!(errs[0].message.contains("defined twice"));
        let c = Catalog::parse(&[src(Lang::En, "a: one\nb: two\n"), src(Lang::Es, "a: uno\n")])
            .unwrap();
        let problems = c.check_complete(&["a".into(), "c".into()], std::path::Path::new("prompts"));
        let text: Vec<String> = problems.iter().map(|d| d.to_string()).collect();
        assert!(
            text.contains(&"prompts/en: prompt \"c\" is missing in en".to_string()),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("\"b\" has no es version")),
            "{text:?}"
        );
    }

    #[test]
    fn shipped_prompts_are_complete_and_valid() {
        let (dir, sources) = super::super::test_files::shipped_sources();
        let catalog = Catalog::parse(&sources).unwrap_or_else(|e| panic!("{e:?}"));
        let problems = catalog.check_complete(&crate::flow::required_prompts(), &dir);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
