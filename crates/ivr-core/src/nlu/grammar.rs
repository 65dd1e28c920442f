//! The authors' grammar format: parsing and validation, with every problem reported as
//! `path:line: message`. The format is described for authors in `grammars/README.md`.
//!
//! ```text
//! # a comment
//! [intent case_status]
//! where is my case
//! key: case status
//! test: how is my case going => case_status
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::normalize;
use crate::intents::{ACTS, INTENTS};
use crate::types::Lang;

/// One grammar file's contents. The caller reads the file; `path` is only used in messages
/// (keep it relative, e.g. `grammars/en/case_status.txt`) and to tell the language.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// A problem in a grammar file, displayed as `path:line: message` (line 0: the whole file).
pub use crate::diag::Diagnostic;

/// What a section of a grammar file describes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A caller's question, one of [`INTENTS`].
    Intent,
    /// An answer to the IVR's own prompt, one of [`ACTS`].
    Act,
    /// A menu choice, 0–9.
    Digit(u8),
    /// Something callers ask that this office does not handle (taxes, driver's licenses,
    /// pets, ...): `[outside TOPIC]`, any lowercase topic name. A question most like one of
    /// these gets no intent and the out-of-domain reply, never an answer.
    Outside,
}

/// A place in a grammar file, for messages and test failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub path: PathBuf,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// One example phrase as the author wrote it.
#[derive(Clone, Debug)]
pub struct Phrase {
    pub text: String,
    /// A key phrase is a strong cue: its presence in an utterance boosts the section's id.
    pub key: bool,
    /// A safety phrase (`safety:`, intent sections only): a caller who says it gets this
    /// intent whatever else they say (a caller in danger is never given an ordinary answer).
    /// `*` in it stands for up to three words of any kind.
    pub safety: bool,
    pub loc: Loc,
}

/// One `[kind id]` section of one language (sections with the same id in several files of
/// one language are an error, so a section is the whole definition).
#[derive(Clone, Debug)]
pub struct Section {
    pub lang: Lang,
    pub kind: Kind,
    pub id: String,
    pub phrases: Vec<Phrase>,
    pub loc: Loc,
}

/// An author's test: this utterance must be understood as `expected` (`None`: as nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    pub lang: Lang,
    pub utterance: String,
    pub expected: Option<String>,
    pub loc: Loc,
}

/// Everything the grammar files say, validated.
#[derive(Clone, Debug, Default)]
pub struct Grammar {
    pub sections: Vec<Section>,
    pub tests: Vec<TestCase>,
}

/// Bounds so a runaway file cannot exhaust memory in the server's hot reload.
const MAX_LINE_CHARS: usize = 500;
const MAX_FILE_BYTES: usize = 2 * 1024 * 1024;

/// The language of a file from its path: the directory (or file stem) named `en` or `es`
/// nearest the file, so `/srv/en/grammars/es/x.txt` is Spanish.
pub(crate) fn lang_of(path: &Path) -> Option<Lang> {
    path.components()
        .filter_map(|c| c.as_os_str().to_str())
        .map(|c| c.strip_suffix(".txt").unwrap_or(c))
        .filter_map(|c| match c {
            "en" => Some(Lang::En),
            "es" => Some(Lang::Es),
            _ => None,
        })
        .next_back()
}

/// Parse and validate all grammar files. All problems are returned at once, so an author fixes
/// them in one pass.
pub fn parse(sources: &[Source]) -> Result<Grammar, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut grammar = Grammar::default();
    for src in sources {
        parse_file(src, &mut grammar, &mut diags);
    }
    check(&grammar, &mut diags);
    // File order, then line order: how an author walks through them.
    diags.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    if diags.is_empty() {
        Ok(grammar)
    } else {
        Err(diags)
    }
}

fn diag(loc: &Loc, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        path: loc.path.clone(),
        line: loc.line,
        message: message.into(),
    }
}

fn parse_file(src: &Source, grammar: &mut Grammar, diags: &mut Vec<Diagnostic>) {
    let whole = Loc {
        path: src.path.clone(),
        line: 0,
    };
    let Some(lang) = lang_of(&src.path) else {
        diags.push(diag(
            &whole,
            "cannot tell the language: put the file under grammars/en/ or grammars/es/",
        ));
        return;
    };
    if src.text.len() > MAX_FILE_BYTES {
        diags.push(diag(&whole, "file is larger than 2 MB"));
        return;
    }
    // Index into grammar.sections of the section lines currently belong to; lines under a
    // rejected header are skipped (its error was already reported once).
    let mut current: Option<usize> = None;
    let mut skipping = false;
    for (i, raw) in src.text.lines().enumerate() {
        let loc = Loc {
            path: src.path.clone(),
            line: i + 1,
        };
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.chars().count() > MAX_LINE_CHARS {
            diags.push(diag(&loc, "line is longer than 500 characters"));
            continue;
        }
        // A header switches the section even when the previous one was empty: the emptiness
        // is reported once, by `check`, with the header's line.
        if line.starts_with('[') {
            current = parse_header(line, lang, &loc, grammar, diags);
            skipping = current.is_none();
            continue;
        }
        if let Some(rest) = strip_label(line, "test") {
            parse_test(rest, lang, &loc, grammar, diags);
            continue;
        }
        let (text, key, safety) = match (strip_label(line, "key"), strip_label(line, "safety")) {
            (Some(rest), _) => (rest, true, false),
            (None, Some(rest)) => (rest, false, true),
            (None, None) => (line, false, false),
        };
        if let Some((label, _)) = line.split_once(':') {
            let label = label.trim();
            if !label.contains(' ') && !label.is_empty() && !key && !safety {
                diags.push(diag(
                    &loc,
                    format!(
                        "unknown label `{label}:` (use `key:`, `safety:` or `test:`, or drop the colon)"
                    ),
                ));
                continue;
            }
        }
        let Some(idx) = current else {
            if skipping {
                continue;
            }
            diags.push(diag(
                &loc,
                "phrase outside a section: start the file with a header such as `[intent case_status]`",
            ));
            continue;
        };
        if text.is_empty() {
            let label = if safety { "safety" } else { "key" };
            diags.push(diag(&loc, format!("`{label}:` needs a phrase after it")));
            continue;
        }
        if safety && grammar.sections[idx].kind != Kind::Intent {
            diags.push(diag(
                &loc,
                "`safety:` belongs in an `[intent ...]` section (it forces that intent)",
            ));
            continue;
        }
        if safety && text.split_whitespace().all(|w| w == "*") {
            diags.push(diag(&loc, "a `safety:` phrase needs a word besides `*`"));
            continue;
        }
        // "um please" would train on nothing and match everything after normalization.
        if normalize::normalized(text).is_empty() {
            diags.push(diag(
                &loc,
                format!("phrase `{text}` has no words left after removing fillers"),
            ));
            continue;
        }
        grammar.sections[idx].phrases.push(Phrase {
            text: text.to_string(),
            key,
            safety,
            loc,
        });
    }
}

/// `label: rest` with any spacing, case-insensitive label.
fn strip_label<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let (head, rest) = line.split_once(':')?;
    head.trim()
        .eq_ignore_ascii_case(label)
        .then_some(rest.trim())
}

fn parse_header(
    line: &str,
    lang: Lang,
    loc: &Loc,
    grammar: &mut Grammar,
    diags: &mut Vec<Diagnostic>,
) -> Option<usize> {
    let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
        diags.push(diag(loc, "a header must look like `[intent case_status]`"));
        return None;
    };
    let mut parts = inner.split_whitespace();
    let (Some(kind), Some(id), None) = (parts.next(), parts.next(), parts.next()) else {
        diags.push(diag(
            loc,
            "a header has two words: `[intent ID]`, `[act ID]`, `[digit N]` or `[outside TOPIC]`",
        ));
        return None;
    };
    let kind = match kind {
        "intent" if INTENTS.contains(&id) => Kind::Intent,
        "intent" => {
            diags.push(diag(
                loc,
                format!(
                    "unknown intent id `{id}`; known ids: {}",
                    INTENTS.join(", ")
                ),
            ));
            return None;
        }
        "act" if ACTS.contains(&id) => Kind::Act,
        "act" => {
            diags.push(diag(
                loc,
                format!("unknown act id `{id}`; known acts: {}", ACTS.join(", ")),
            ));
            return None;
        }
        "outside"
            if !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
        {
            Kind::Outside
        }
        "outside" => {
            diags.push(diag(
                loc,
                format!("`[outside {id}]`: a topic is lowercase letters, digits and `_`"),
            ));
            return None;
        }
        "digit" => match id.parse::<u8>() {
            Ok(d) if d <= 9 => Kind::Digit(d),
            _ => {
                diags.push(diag(loc, format!("`[digit {id}]`: a digit is 0 to 9")));
                return None;
            }
        },
        other => {
            diags.push(diag(
                loc,
                format!("unknown section kind `{other}` (use intent, act, digit or outside)"),
            ));
            return None;
        }
    };
    if let Some(first) = grammar
        .sections
        .iter()
        .find(|s| s.lang == lang && s.kind == kind && s.id == id)
    {
        diags.push(diag(
            loc,
            format!("duplicate section `{id}` (first declared at {})", first.loc),
        ));
        return None;
    }
    grammar.sections.push(Section {
        lang,
        kind,
        id: id.to_string(),
        phrases: Vec::new(),
        loc: loc.clone(),
    });
    Some(grammar.sections.len() - 1)
}

fn parse_test(
    rest: &str,
    lang: Lang,
    loc: &Loc,
    grammar: &mut Grammar,
    diags: &mut Vec<Diagnostic>,
) {
    let Some((utterance, expected)) = rest.rsplit_once("=>") else {
        diags.push(diag(
            loc,
            "a test looks like `test: where is my card => case_status`",
        ));
        return;
    };
    let (utterance, expected) = (utterance.trim(), expected.trim());
    if utterance.is_empty() {
        diags.push(diag(loc, "a test needs an utterance before `=>`"));
        return;
    }
    let expected = match expected {
        "none" => None,
        id if INTENTS.contains(&id) || ACTS.contains(&id) => Some(id.to_string()),
        id => {
            diags.push(diag(
                loc,
                format!("test names unknown intent `{id}` (an intent id, an act id, or none)"),
            ));
            return;
        }
    };
    // The utterance is kept as written: tests exercise normalization too.
    grammar.tests.push(TestCase {
        lang,
        utterance: utterance.to_string(),
        expected,
        loc: loc.clone(),
    });
}

/// Cross-file checks: empty sections and phrases claimed by two ids.
fn check(grammar: &Grammar, diags: &mut Vec<Diagnostic>) {
    // Intents and acts are separate models, but a phrase in both would make the flow's answer
    // depend on which model it asks first, so they share one namespace per language. Digits
    // legitimately overlap acts' words ("one" is no act) and are kept apart.
    let mut owner: HashMap<(Lang, bool, String), (&str, &Loc)> = HashMap::new();
    for s in &grammar.sections {
        if s.phrases.is_empty() {
            diags.push(diag(&s.loc, format!("`{}` has no example phrases", s.id)));
        }
        let is_digit = matches!(s.kind, Kind::Digit(_));
        for p in &s.phrases {
            let norm = normalize::normalized(&p.text);
            match owner.get(&(s.lang, is_digit, norm.clone())) {
                Some((id, loc)) if *id != s.id => diags.push(diag(
                    &p.loc,
                    format!(
                        "phrase `{}` is also an example of `{id}` at {loc}; keep it in one place",
                        p.text
                    ),
                )),
                Some(_) => {}
                None => {
                    owner.insert((s.lang, is_digit, norm), (&s.id, &p.loc));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: &str, text: &str) -> Source {
        Source {
            path: PathBuf::from(path),
            text: text.to_string(),
        }
    }

    fn messages(r: Result<Grammar, Vec<Diagnostic>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn parses_sections_keys_and_tests() {
        let g = parse(&[src(
            "grammars/en/case_status.txt",
            "# comment\n[intent case_status]\nwhere is my case\nkey: case status\n\ntest: how is my case => case_status\ntest: blah => none\n",
        )])
        .expect("valid grammar");
        assert_eq!(g.sections.len(), 1);
        assert_eq!(g.sections[0].lang, Lang::En);
        assert_eq!(g.sections[0].phrases.len(), 2);
        assert!(g.sections[0].phrases[1].key);
        assert_eq!(g.tests.len(), 2);
        assert_eq!(g.tests[0].loc.line, 6);
        assert_eq!(g.tests[1].expected, None);
    }

    #[test]
    fn reports_unknown_ids_with_file_and_line() {
        let m = messages(parse(&[src(
            "grammars/en/x.txt",
            "[intent case_statuz]\nwhere is my case\n",
        )]));
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with("grammars/en/x.txt:1: unknown intent id `case_statuz`"),
            "{m:?}"
        );
    }

    #[test]
    fn reports_duplicates_empty_and_shared_phrases() {
        let m = messages(parse(&[
            src(
                "grammars/en/a.txt",
                "[intent hours]\nwhen are you open\n[intent agent]\n",
            ),
            src(
                "grammars/en/b.txt",
                "[intent hours]\nx\n[intent contact_info]\nWhen are you OPEN?\n",
            ),
        ]));
        assert!(
            m.iter()
                .any(|s| s.starts_with("grammars/en/b.txt:1: duplicate section `hours`")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|s| s.starts_with("grammars/en/a.txt:3: `agent` has no example")),
            "{m:?}"
        );
        assert!(m.iter().any(|s| s.starts_with("grammars/en/b.txt:4: phrase `When are you OPEN?` is also an example of `hours` at grammars/en/a.txt:2")), "{m:?}");
    }

    #[test]
    fn reports_syntax_errors() {
        let m = messages(parse(&[src(
            "grammars/es/x.txt",
            "hola que tal\n[intent]\n[intent hours\n[widget hours]\n[intent hours]\ncuando abren\nfoo: bar\ntest: sin flecha\ntest: algo => nada_de_esto\n",
        )]));
        let lines: Vec<&str> = m
            .iter()
            .map(|s| s.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            lines,
            [
                "grammars/es/x.txt:1",
                "grammars/es/x.txt:2",
                "grammars/es/x.txt:3",
                "grammars/es/x.txt:4",
                "grammars/es/x.txt:7",
                "grammars/es/x.txt:8",
                "grammars/es/x.txt:9"
            ],
            "{m:?}"
        );
    }

    #[test]
    fn nearest_language_directory_wins() {
        assert_eq!(
            lang_of(Path::new("/srv/en/grammars/es/x.txt")),
            Some(Lang::Es)
        );
        assert_eq!(lang_of(Path::new("grammars/en.txt")), Some(Lang::En));
    }

    #[test]
    fn needs_a_language_directory() {
        let m = messages(parse(&[src(
            "grammars/hours.txt",
            "[intent hours]\nopen\n",
        )]));
        assert!(m[0].contains("cannot tell the language"));
    }
}
