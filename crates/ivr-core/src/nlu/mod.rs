//! Understanding the caller: the intent of a transcript or of typed TTY text, dialog acts
//! (yes, no, repeat, help, goodbye, language switch), menu digits and slots.
//!
//! Everything is built at load from the authors' grammar files (`grammars/<lang>/*.txt`, format
//! in `grammars/README.md`), which the caller reads and passes in: this module does no IO. The
//! intent classifier is statistical (naive Bayes over words, word pairs and character n-grams,
//! see [`model`]), so phrasings the authors never wrote still land on the right intent; key
//! phrases add a fixed boost for the strongest cues.

pub mod decide;
pub mod eval;
pub mod grammar;
pub mod model;
pub mod normalize;
pub mod slots;
pub mod spell;

/// The repository's grammars (`grammars/<lang>/*.txt`), read and built once for unit tests only
/// (the crate does no IO; the shell reads grammar directories and passes the text in).
#[cfg(test)]
pub(crate) mod test_grammars {
    use std::path::PathBuf;
    use std::sync::{Arc, OnceLock};

    use super::{Nlu, Source};
    use crate::types::Lang;

    pub(crate) fn test_nlu() -> Arc<Nlu> {
        static NLU: OnceLock<Arc<Nlu>> = OnceLock::new();
        NLU.get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../grammars");
            let mut sources = Vec::new();
            for lang in Lang::ALL {
                let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join(lang.code()))
                    .expect("grammars")
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                    .collect();
                paths.sort();
                for path in paths {
                    let text = std::fs::read_to_string(&path).expect("grammar file");
                    sources.push(Source { path, text });
                }
            }
            Arc::new(super::build(&sources).expect("grammars build"))
        })
        .clone()
    }
}

#[cfg(test)]
pub(crate) use test_grammars::test_nlu;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

pub use decide::{Decision, SpeechEvidence};
pub use grammar::{Diagnostic, Loc, Source, TestCase};
pub use slots::Slots;

use crate::types::Lang;
use grammar::{Grammar, Kind};
use model::{Example, Model};

/// At or above this confidence the flow acts on the intent without asking; between
/// [`REJECT_THRESHOLD`] and this it confirms first ("You want to check a case status?").
pub const CONFIRM_THRESHOLD: f32 = 0.6;
/// Below this confidence there is no intent: the flow asks the caller again.
pub const REJECT_THRESHOLD: f32 = 0.25;
/// An act (yes, no, ...) below this confidence is not reported.
const ACT_FLOOR: f32 = 0.5;
/// Log-odds added to an intent whose key phrase occurs in the utterance: strong, not absolute,
/// so "I want to talk to an agent about my case status" can still weigh both.
const KEY_BOOST: f32 = 1.0;
/// Training weight of a key phrase relative to an ordinary example.
const KEY_WEIGHT: f32 = 2.0;
/// A word whose letter 3–5-grams the model knows at least this much is a typo of a known word,
/// not a new one.
const TYPO_COVERAGE: f32 = 0.6;
/// Class ids of `[outside TOPIC]` sections in the intent model, apart from intent ids.
const OUTSIDE_PREFIX: &str = "outside:";
/// The act model's catch-all class: everything that is a question, not an answer.
const OTHER: &str = "other";

/// The result of classifying one utterance. Serializing it (call records) redacts the slots.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Classification {
    /// The intent id, or `None` when nothing is confident enough (see [`REJECT_THRESHOLD`]).
    pub intent: Option<String>,
    /// Calibrated probability of the best intent, 0 when the text says nothing we know.
    pub confidence: f32,
    /// The three best intents with their probabilities, best first.
    pub alternatives: Vec<(String, f32)>,
    pub slots: Slots,
    /// The question is about something this office does not handle: the `[outside TOPIC]`
    /// the text is most like. Then `intent` is `None`.
    pub out_of_domain: Option<String>,
    /// A caller-in-danger phrase (`safety:`) was found: the intent is forced to its section's.
    pub safety: bool,
    /// Another agency's or business's key phrase ("IRS", "Social Security") was found beside
    /// one of ours: the question may be about them, so it is confirmed, never answered at once.
    pub outside_cue: bool,
    /// The share of the text's content words that no grammar phrase has: how far it strays
    /// from anything the authors wrote (0 = all known).
    pub unknown_share: f32,
    /// How many content words (not stop words) the text has.
    pub content_words: usize,
}

impl Classification {
    fn nothing(slots: Slots) -> Classification {
        Classification {
            intent: None,
            confidence: 0.0,
            alternatives: Vec::new(),
            slots,
            out_of_domain: None,
            safety: false,
            outside_cue: false,
            unknown_share: 1.0,
            content_words: 0,
        }
    }

    /// What the flow should do with this text question (typed, or a transcript without the
    /// recognizer's evidence): see [`decide::decide`].
    pub fn decision(&self) -> Decision {
        decide::decide(self, None)
    }
}

/// Phrase sets for grammar-restricted recognition, one per kind of prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PhraseSet {
    YesNo,
    Language,
    MenuDigits,
    /// All intent phrases: the open question.
    Question,
    /// All dialog-act phrases.
    Acts,
}

/// The outcome of the authors' own test cases.
#[derive(Clone, Debug, Default)]
pub struct TestReport {
    pub total: usize,
    pub passed: usize,
    /// Per expected id: (cases, passed).
    pub per_intent: BTreeMap<String, (usize, usize)>,
    /// (expected, got, count), most frequent first; "none" stands for no result.
    pub confusions: Vec<(String, String, usize)>,
    pub failures: Vec<TestFailure>,
}

impl TestReport {
    pub fn accuracy(&self) -> f32 {
        if self.total == 0 {
            1.0
        } else {
            self.passed as f32 / self.total as f32
        }
    }
}

/// One failed author test, with where it is written.
#[derive(Clone, Debug)]
pub struct TestFailure {
    pub case: TestCase,
    pub got: Option<String>,
    pub confidence: f32,
}

impl fmt::Display for TestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}` expected {} got {} ({:.2})",
            self.case.loc,
            self.case.utterance,
            self.case.expected.as_deref().unwrap_or("none"),
            self.got.as_deref().unwrap_or("none"),
            self.confidence
        )
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}/{} author tests pass ({:.1}%)",
            self.passed,
            self.total,
            self.accuracy() * 100.0
        )?;
        for fail in &self.failures {
            writeln!(f, "{fail}")?;
        }
        Ok(())
    }
}

/// Everything compiled for one language.
#[derive(Clone, Debug)]
struct LangModel {
    /// Class ids of the intent model: intents, then `[outside TOPIC]` classes from
    /// `first_outside` on (their topic names).
    intent_ids: Vec<String>,
    first_outside: usize,
    intents: Model,
    /// Key phrases as stemmed token sequences, with their intent index.
    keys: Vec<(Vec<String>, usize)>,
    /// Safety phrases as stemmed token patterns (`*`: up to three words), with their intent.
    safety: Vec<(Vec<String>, usize)>,
    /// Act ids, the last one being [`OTHER`].
    act_ids: Vec<String>,
    acts: Model,
    /// Exact normalized act phrases: a grammar-restricted recognizer returns them verbatim.
    act_exact: HashMap<String, usize>,
    digit_exact: HashMap<String, u8>,
    /// Phrases per set, in the recognizer's form.
    sets: HashMap<PhraseSet, Vec<String>>,
}

/// The compiled understanding of both languages.
#[derive(Clone, Debug)]
pub struct Nlu {
    langs: HashMap<Lang, LangModel>,
    tests: Vec<TestCase>,
}

/// Parse, validate and train. Every problem in every file is reported, as `path:line: message`.
pub fn build(sources: &[Source]) -> Result<Nlu, Vec<Diagnostic>> {
    let grammar = grammar::parse(sources)?;
    let mut langs = HashMap::new();
    for lang in Lang::ALL {
        if grammar.sections.iter().any(|s| s.lang == lang) {
            langs.insert(lang, LangModel::train(&grammar, lang));
        }
    }
    Ok(Nlu {
        langs,
        tests: grammar.tests,
    })
}

/// A phrase as a recognizer's grammar wants it: lowercase words, accents kept (ASR vocabularies
/// spell "está"), punctuation gone, and numbers as they are spoken ("i-90" → "i ninety",
/// "n400" → "n four hundred"): a recognizer's vocabulary has no "i90".
fn asr_form(lang: Lang, text: &str) -> String {
    let lower = text.to_lowercase();
    let mut words: Vec<String> = Vec::new();
    for raw in lower.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        // Split letter/digit boundaries: "i90" → "i", "90".
        let mut cur = String::new();
        for c in raw.chars() {
            let boundary = cur
                .chars()
                .last()
                .is_some_and(|p| p.is_ascii_digit() != c.is_ascii_digit());
            if boundary {
                words.push(std::mem::take(&mut cur));
            }
            cur.push(c);
        }
        if !cur.is_empty() {
            words.push(cur);
        }
    }
    words
        .iter()
        .map(|w| {
            if w.chars().all(|c| c.is_ascii_digit()) {
                normalize::spoken_number(lang, w)
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl LangModel {
    fn train(g: &Grammar, lang: Lang) -> LangModel {
        // Intents first, outside topics after them: class indices below `first_outside` are
        // intents.
        let mut sections: Vec<_> = g.sections.iter().filter(|s| s.lang == lang).collect();
        sections.sort_by_key(|s| s.kind == Kind::Outside);
        let mut intent_ids = Vec::new();
        let mut first_outside = None;
        let mut safety = Vec::new();
        let mut intent_ex = Vec::new();
        let mut keys = Vec::new();
        let mut act_ids: Vec<String> = Vec::new();
        let mut act_ex = Vec::new();
        let mut act_exact = HashMap::new();
        let mut digit_exact = HashMap::new();
        let mut other_ex: Vec<Vec<(u64, f32)>> = Vec::new();
        let mut sets: HashMap<PhraseSet, Vec<String>> = HashMap::new();
        for s in &sections {
            for p in &s.phrases {
                let toks = normalize::tokens(&p.text);
                let feats = model::features(lang, &toks);
                let weight = if p.key { KEY_WEIGHT } else { 1.0 };
                let form = asr_form(lang, &p.text);
                match s.kind {
                    Kind::Intent | Kind::Outside => {
                        let c = if s.kind == Kind::Outside {
                            index_of(&mut intent_ids, &format!("{OUTSIDE_PREFIX}{}", s.id))
                        } else {
                            index_of(&mut intent_ids, &s.id)
                        };
                        if s.kind == Kind::Outside {
                            first_outside.get_or_insert(c);
                        }
                        if p.key {
                            let stems = toks.iter().map(|t| normalize::stem(lang, t)).collect();
                            keys.push((stems, c));
                        }
                        if p.safety {
                            safety.push((safety_pattern(lang, &p.text), c));
                        }
                        other_ex.push(feats.clone());
                        let weight = if p.safety { KEY_WEIGHT } else { weight };
                        intent_ex.push(Example {
                            class: c,
                            features: feats,
                            weight,
                        });
                        // The recognizer's question LM learns what we answer, the words of
                        // callers in danger, and the key phrases of what we do not answer (so
                        // "weather" is heard as weather, not as the nearest question of ours).
                        // Whole outside topics in the LM made the recognizer hear them
                        // everywhere (spoken set at 8 kHz: 66/126 understood with them, 68
                        // with keys only, 69 with none: but none hears no outside question).
                        if (s.kind == Kind::Intent || p.key) && !p.text.contains('*') {
                            sets.entry(PhraseSet::Question).or_default().push(form);
                        }
                    }
                    Kind::Act => {
                        let c = index_of(&mut act_ids, &s.id);
                        act_exact.insert(toks.join(" "), c);
                        act_ex.push(Example {
                            class: c,
                            features: feats,
                            weight,
                        });
                        let set = match s.id.as_str() {
                            "yes" | "no" => Some(PhraseSet::YesNo),
                            "spanish" | "english" => Some(PhraseSet::Language),
                            _ => None,
                        };
                        if let Some(set) = set {
                            sets.entry(set).or_default().push(form.clone());
                        }
                        sets.entry(PhraseSet::Acts).or_default().push(form);
                    }
                    Kind::Digit(d) => {
                        digit_exact.insert(toks.join(" "), d);
                        other_ex.push(feats);
                        sets.entry(PhraseSet::MenuDigits).or_default().push(form);
                    }
                }
            }
        }
        // Acts get a catch-all class trained on every question and menu phrase, so "no I never
        // got my card" is recognized as a question rather than forced into the nearest act.
        let other = act_ids.len();
        act_ids.push(OTHER.to_string());
        act_ex.extend(other_ex.into_iter().map(|features| Example {
            class: other,
            features,
            weight: 1.0,
        }));
        for v in sets.values_mut() {
            v.sort();
            v.dedup();
        }
        LangModel {
            intents: Model::train(intent_ids.len(), &intent_ex),
            first_outside: first_outside.unwrap_or(intent_ids.len()),
            intent_ids,
            keys,
            safety,
            acts: Model::train(act_ids.len(), &act_ex),
            act_ids,
            act_exact,
            digit_exact,
            sets,
        }
    }
}

fn index_of(ids: &mut Vec<String>, id: &str) -> usize {
    match ids.iter().position(|x| x == id) {
        Some(i) => i,
        None => {
            ids.push(id.to_string());
            ids.len() - 1
        }
    }
}

/// Whether `needle` occurs in `hay` as a contiguous run (both already stemmed).
fn contains_run(hay: &[String], needle: &[String]) -> bool {
    !needle.is_empty()
        && needle.len() <= hay.len()
        && hay.windows(needle.len()).any(|w| w == needle)
}

/// How many words a `*` in a safety phrase may stand for.
const SAFETY_GAP: usize = 3;

/// A safety phrase as stems, `*` kept as a gap; a word ending in `*` (`maltrat*`) matches any
/// word it begins, kept as `>` + the folded prefix.
fn safety_pattern(lang: Lang, text: &str) -> Vec<String> {
    text.split_whitespace()
        .flat_map(|w| {
            if w == "*" {
                vec!["*".to_string()]
            } else if let Some(prefix) = w.strip_suffix('*') {
                normalize::tokens(prefix)
                    .into_iter()
                    .map(|t| format!(">{t}"))
                    .collect()
            } else {
                normalize::tokens(w)
                    .iter()
                    .map(|t| normalize::stem(lang, t))
                    .collect()
            }
        })
        .collect()
}

/// Whether the pattern (stems, `*` gaps of up to [`SAFETY_GAP`] words, `>prefix` words) occurs
/// in the utterance (its stems and its folded tokens, in step).
fn matches_pattern(stems: &[String], toks: &[String], pat: &[String]) -> bool {
    fn word(p: &str, stem: &str, tok: &str) -> bool {
        match p.strip_prefix('>') {
            Some(prefix) => tok.starts_with(prefix),
            None => p == stem,
        }
    }
    fn at(stems: &[String], toks: &[String], pat: &[String]) -> bool {
        match pat.split_first() {
            None => true,
            Some((p, rest)) if p == "*" => (0..=SAFETY_GAP.min(stems.len()))
                .any(|skip| at(&stems[skip..], &toks[skip..], rest)),
            Some((p, rest)) => {
                !stems.is_empty()
                    && word(p, &stems[0], &toks[0])
                    && at(&stems[1..], &toks[1..], rest)
            }
        }
    }
    // Leading and trailing gaps say nothing.
    let start = pat.iter().position(|p| p != "*").unwrap_or(pat.len());
    let end = pat.iter().rposition(|p| p != "*").map_or(start, |e| e + 1);
    let pat = &pat[start..end];
    !pat.is_empty() && (0..stems.len()).any(|i| at(&stems[i..], &toks[i..], pat))
}

impl Nlu {
    /// The intent of one utterance, with calibrated confidence, alternatives and slots.
    pub fn classify(&self, lang: Lang, text: &str) -> Classification {
        let slots = slots::extract(lang, text);
        let Some(m) = self.langs.get(&lang) else {
            return Classification::nothing(slots);
        };
        let toks = normalize::tokens(text);
        if toks.is_empty() {
            return Classification::nothing(slots);
        }
        let stems: Vec<String> = toks.iter().map(|t| normalize::stem(lang, t)).collect();
        // Safety first: a caller in danger gets the protected path whatever else they say,
        // however the statistics come out.
        if let Some((_, c)) = m
            .safety
            .iter()
            .find(|(p, _)| matches_pattern(&stems, &toks, p))
        {
            let id = m.intent_ids[*c].clone();
            return Classification {
                intent: Some(id.clone()),
                confidence: 1.0,
                alternatives: vec![(id, 1.0)],
                slots,
                out_of_domain: None,
                safety: true,
                outside_cue: false,
                unknown_share: 0.0,
                content_words: stems.len(),
            };
        }
        // Text with no content word we know and mostly unknown character shapes is not a
        // question we can answer, however the probabilities come out.
        let feats = model::features(lang, &toks);
        let (mut content, mut known) = (0usize, 0usize);
        // A word no grammar has may still be a typo of one that does ("statsu", "adress"): it
        // counts as known for the unknown share when most of its letter shapes are.
        let mut near = 0usize;
        for t in &toks {
            if let Some(h) = model::content_word_hash(lang, t) {
                content += 1;
                let exact = m.intents.knows(h);
                known += usize::from(exact);
                near += usize::from(exact || m.intents.char_coverage(t) >= TYPO_COVERAGE);
            }
        }
        let unknown_share = if content == 0 {
            1.0
        } else {
            (content - near) as f32 / content as f32
        };
        // One known word among many unknown ones ("lorem ipsum dolor sit amet" knows "sit",
        // the stem of "site") is a coincidence, not a question in our domain.
        // Only stop words ("yes", "what", "sí") is an answer, not a question.
        let enough_words = known > 0 && known * 3 >= content;
        if content == 0 || !enough_words && m.intents.coverage(&feats) < 0.5 {
            return Classification {
                unknown_share,
                content_words: content,
                ..Classification::nothing(slots)
            };
        }
        let Some(mut scores) = m.intents.scores(&feats) else {
            return Classification {
                unknown_share,
                content_words: content,
                ..Classification::nothing(slots)
            };
        };
        let (mut intent_key, mut outside_key) = (false, None);
        for (key, c) in &m.keys {
            if contains_run(&stems, key) {
                scores[*c] += KEY_BOOST * m.intents.temperature;
                if *c < m.first_outside {
                    intent_key = true;
                } else {
                    outside_key.get_or_insert(*c);
                }
            }
        }
        // Another agency's or another business's own words ("IRS", "DMV", "Social Security")
        // with none of ours: whatever else matches ("fax number", "open on Saturday") is about
        // them, not us.
        if let (Some(c), false) = (outside_key, intent_key) {
            let topic = m.intent_ids[c].trim_start_matches(OUTSIDE_PREFIX);
            return Classification {
                out_of_domain: Some(topic.to_string()),
                confidence: 1.0,
                unknown_share,
                content_words: content,
                ..Classification::nothing(slots)
            };
        }
        // The boost is in logit units (scaled by the temperature), so its effect on the final
        // probability does not depend on how the temperature fit came out.
        let probs = m.intents.probabilities(&scores);
        let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (best, top) = ranked.first().copied().unwrap_or((0, 0.0));
        if best >= m.first_outside {
            // Most like something we do not handle: no intent, whatever came second.
            return Classification {
                out_of_domain: Some(
                    m.intent_ids[best]
                        .trim_start_matches(OUTSIDE_PREFIX)
                        .to_string(),
                ),
                confidence: top,
                unknown_share,
                content_words: content,
                ..Classification::nothing(slots)
            };
        }
        // Outside topics compete in the same softmax, so their share is already taken from the
        // intent's probability. How much of the text no grammar knows ("I lost my dog": only
        // "lost" is ours) is reported beside it for the decision (`decide`).
        let alternatives: Vec<(String, f32)> = ranked
            .iter()
            .filter(|(c, _)| *c < m.first_outside)
            .take(3)
            .map(|(c, p)| (m.intent_ids[*c].clone(), *p))
            .collect();
        let confidence = top;
        Classification {
            intent: (confidence >= REJECT_THRESHOLD).then(|| m.intent_ids[best].clone()),
            confidence,
            alternatives,
            slots,
            out_of_domain: None,
            safety: false,
            outside_cue: outside_key.is_some(),
            unknown_share,
            content_words: content,
        }
    }

    /// The dialog act of a short answer ("yeah", "no gracias", "say that again", "en español"),
    /// or `None` when the text is a question or nothing recognizable.
    pub fn act(&self, lang: Lang, text: &str) -> Option<(String, f32)> {
        let m = self.langs.get(&lang)?;
        let toks = normalize::tokens(text);
        let norm = toks.join(" ");
        if let Some(&c) = m.act_exact.get(&norm) {
            return Some((m.act_ids[c].clone(), 1.0));
        }
        // A menu choice ("one", "dos") is not an act, whatever words it shares with one.
        if m.digit_exact.contains_key(&norm) {
            return None;
        }
        let from_model = (!toks.is_empty())
            .then(|| m.acts.scores(&model::features(lang, &toks)))
            .flatten()
            .and_then(|s| {
                let p = m.acts.probabilities(&s);
                let (c, conf) = p
                    .iter()
                    .copied()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))?;
                (m.act_ids[c] != OTHER && conf >= ACT_FLOOR).then(|| (m.act_ids[c].clone(), conf))
            });
        if from_model.is_some() {
            return from_model;
        }
        // Lexicon fallback for short answers the model has not seen ("yup", "nel", "sí claro").
        let words = normalize::fold(text, false).split_whitespace().count();
        if words <= 4 {
            if let Some(l) = slots::language(text) {
                let id = match l {
                    Lang::En => "english",
                    Lang::Es => "spanish",
                };
                return Some((id.to_string(), ACT_FLOOR));
            }
            if let Some(yes) = slots::yes_no(lang, text) {
                return Some((if yes { "yes" } else { "no" }.to_string(), ACT_FLOOR));
            }
        }
        None
    }

    /// A menu choice: the authors' digit phrases first, then any single spoken or typed digit.
    pub fn menu_digit(&self, lang: Lang, text: &str) -> Option<u8> {
        if let Some(m) = self.langs.get(&lang)
            && let Some(&d) = m.digit_exact.get(&normalize::normalized(text))
        {
            return Some(d);
        }
        slots::menu_digit(lang, text)
    }

    /// The phrases of one set, lowercase, for a grammar-restricted recognizer.
    pub fn phrases(&self, lang: Lang, set: PhraseSet) -> Vec<String> {
        let Some(m) = self.langs.get(&lang) else {
            return Vec::new();
        };
        m.sets.get(&set).cloned().unwrap_or_default()
    }

    /// Every word of every phrase of the language, sorted: the recognizer's vocabulary.
    pub fn vocabulary(&self, lang: Lang) -> Vec<String> {
        let Some(m) = self.langs.get(&lang) else {
            return Vec::new();
        };
        let words: BTreeSet<String> = m
            .sets
            .values()
            .flatten()
            .flat_map(|p| p.split_whitespace().map(str::to_string))
            .collect();
        words.into_iter().collect()
    }

    /// Intents with no grammar section in `lang`: `ivr check` can warn that callers asking
    /// these questions in that language will not be understood.
    pub fn missing_intents(&self, lang: Lang) -> Vec<&'static str> {
        let have = self
            .langs
            .get(&lang)
            .map(|m| &m.intent_ids[..m.first_outside])
            .unwrap_or(&[]);
        crate::intents::INTENTS
            .iter()
            .copied()
            .filter(|id| !have.iter().any(|h| h == id))
            .collect()
    }

    /// The authors' test cases, with language and `file:line`.
    pub fn test_cases(&self) -> &[TestCase] {
        &self.tests
    }

    /// Run the authors' test cases: an expected act is checked with [`Nlu::act`], an intent
    /// (or `none`) with [`Nlu::classify`].
    pub fn run_tests(&self) -> TestReport {
        let mut report = TestReport::default();
        let mut confusions: BTreeMap<(String, String), usize> = BTreeMap::new();
        for case in &self.tests {
            let expects_act = case
                .expected
                .as_deref()
                .is_some_and(|e| crate::intents::ACTS.contains(&e));
            let (got, confidence) = if expects_act {
                match self.act(case.lang, &case.utterance) {
                    Some((a, c)) => (Some(a), c),
                    None => (None, 0.0),
                }
            } else {
                let c = self.classify(case.lang, &case.utterance);
                (c.intent, c.confidence)
            };
            let name = case.expected.clone().unwrap_or_else(|| "none".to_string());
            let entry = report.per_intent.entry(name.clone()).or_default();
            entry.0 += 1;
            report.total += 1;
            if got == case.expected {
                entry.1 += 1;
                report.passed += 1;
            } else {
                let got_name = got.clone().unwrap_or_else(|| "none".to_string());
                *confusions.entry((name, got_name)).or_default() += 1;
                report.failures.push(TestFailure {
                    case: case.clone(),
                    got,
                    confidence,
                });
            }
        }
        report.confusions = confusions
            .into_iter()
            .map(|((e, g), n)| (e, g, n))
            .collect();
        report.confusions.sort_by_key(|c| std::cmp::Reverse(c.2));
        report
    }

    /// The JSON `{"text","intent","confidence","slots"}`, slots in clear (the caller typed them
    /// on their own terminal).
    pub fn classify_json(&self, lang: Lang, text: &str) -> serde_json::Value {
        self.classify_json_with(lang, text, true)
    }

    /// As [`Nlu::classify_json`], choosing whether slots are in clear or redacted.
    pub fn classify_json_with(&self, lang: Lang, text: &str, clear: bool) -> serde_json::Value {
        let c = self.classify(lang, text);
        serde_json::json!({
            "text": text,
            "intent": c.intent,
            "confidence": rounded(c.confidence),
            "slots": c.slots.to_json(clear),
        })
    }

    /// The line `ivr classify` prints, keys in the documented order, which a
    /// `serde_json::Value` does not keep: `text`, `intent`, `confidence`, `decision` (what the
    /// dialog does with it as typed text: answer, confirm, out_of_domain, reask),
    /// `out_of_domain` (the outside topic, when it is one), `unknown_share` (the share of
    /// content words no grammar has), `slots`.
    pub fn classify_line(&self, lang: Lang, text: &str, clear: bool) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            text: &'a str,
            intent: Option<String>,
            confidence: f64,
            decision: Decision,
            #[serde(skip_serializing_if = "Option::is_none")]
            out_of_domain: Option<String>,
            unknown_share: f64,
            slots: serde_json::Value,
        }
        let c = self.classify(lang, text);
        let line = Line {
            text,
            decision: c.decision(),
            intent: c.intent,
            confidence: rounded(c.confidence),
            out_of_domain: c.out_of_domain,
            unknown_share: rounded(c.unknown_share),
            slots: c.slots.to_json(clear),
        };
        // A struct of strings, numbers and a JSON value always serializes.
        serde_json::to_string(&line).unwrap_or_default()
    }
}

/// Three decimals, rounded in f64 so the JSON shows 0.958 rather than 0.9580000042915344.
fn rounded(confidence: f32) -> f64 {
    (f64::from(confidence) * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tiny() -> Nlu {
        let en = "[intent case_status]\nwhere is my case\nstatus of my case\ncheck my case\nkey: case status\n\
                  [intent hours]\nwhen are you open\nwhat are your hours\nwhat time do you close\n\
                  [act yes]\nyes\nyeah\n[act no]\nno\nnope\n[digit 2]\ntwo\noption two\n\
                  test: is my case approved => case_status\ntest: yeah => yes\n";
        build(&[Source {
            path: PathBuf::from("grammars/en/all.txt"),
            text: en.to_string(),
        }])
        .expect("valid")
    }

    #[test]
    fn classifies_with_calibrated_alternatives() {
        let nlu = tiny();
        let c = nlu.classify(Lang::En, "what's the status of my case");
        assert_eq!(c.intent.as_deref(), Some("case_status"));
        assert!(c.confidence > 0.5 && c.confidence <= 1.0);
        assert_eq!(c.alternatives.len(), 2);
        assert!(c.alternatives[0].1 >= c.alternatives[1].1);
    }

    #[test]
    fn nothing_for_empty_unknown_or_missing_language() {
        let nlu = tiny();
        assert_eq!(nlu.classify(Lang::En, "   ").intent, None);
        assert_eq!(nlu.classify(Lang::En, "🙂🙂").intent, None);
        assert_eq!(nlu.classify(Lang::En, "zxqv wvvb").intent, None);
        assert_eq!(nlu.classify(Lang::Es, "donde esta mi caso").intent, None);
    }

    #[test]
    fn acts_digits_and_sets() {
        let nlu = tiny();
        assert_eq!(
            nlu.act(Lang::En, "Yeah!").map(|a| a.0),
            Some("yes".to_string())
        );
        assert_eq!(
            nlu.act(Lang::En, "nope").map(|a| a.0),
            Some("no".to_string())
        );
        assert_eq!(nlu.act(Lang::En, "where is my case"), None);
        assert_eq!(nlu.menu_digit(Lang::En, "option two"), Some(2));
        assert_eq!(nlu.phrases(Lang::En, PhraseSet::YesNo).len(), 4);
        assert_eq!(
            nlu.missing_intents(Lang::En).len(),
            crate::intents::INTENTS.len() - 2
        );
        assert!(!nlu.missing_intents(Lang::En).contains(&"hours"));
        assert_eq!(
            nlu.missing_intents(Lang::Es).len(),
            crate::intents::INTENTS.len()
        );
        assert!(nlu.vocabulary(Lang::En).contains(&"open".to_string()));
        let r = nlu.run_tests();
        assert_eq!((r.total, r.passed), (2, 2), "{r}");
    }

    #[test]
    fn recognizer_phrases_spell_numbers() {
        assert_eq!(
            asr_form(Lang::En, "File the I-90, ok?"),
            "file the i ninety ok"
        );
        assert_eq!(asr_form(Lang::En, "my i751"), "my i seven fifty one");
        assert_eq!(
            asr_form(Lang::Es, "¿Presenté la N400?"),
            "presenté la n cuatrocientos"
        );
        assert_eq!(asr_form(Lang::Es, "la i-751"), "la i siete cincuenta y uno");
    }

    #[test]
    fn recognizer_phrases_classify_like_the_written_ones() {
        let text = "[intent green_card_expired]\nmy I-90 is pending\nmy card expired\n\
                    [intent online_filing]\nfile the N-400 online\ncan i apply online\n";
        let nlu = build(&[Source {
            path: PathBuf::from("grammars/en/x.txt"),
            text: text.to_string(),
        }])
        .expect("valid");
        let phrases = nlu.phrases(Lang::En, PhraseSet::Question);
        assert!(
            phrases.contains(&"my i ninety is pending".to_string()),
            "{phrases:?}"
        );
        assert!(
            phrases.contains(&"file the n four hundred online".to_string()),
            "{phrases:?}"
        );
        for (p, want) in [
            ("my i ninety is pending", "green_card_expired"),
            ("file the n four hundred online", "online_filing"),
        ] {
            assert_eq!(
                nlu.classify(Lang::En, p).intent.as_deref(),
                Some(want),
                "{p}"
            );
        }
        assert!(
            !nlu.vocabulary(Lang::En)
                .iter()
                .any(|w| w.chars().any(|c| c.is_ascii_digit()))
        );
    }

    #[test]
    fn shareable_across_server_tasks() {
        // The server swaps an `Arc<Nlu>` on hot reload and classifies from many tasks.
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Nlu>();
        send_sync::<Classification>();
    }

    #[test]
    fn builds_are_deterministic() {
        // Hot reload rebuilds from the same files: callers must get the same answers.
        let (a, b) = (tiny(), tiny());
        for t in ["where is my case", "when do you close", "case hours", "zzz"] {
            let (x, y) = (a.classify(Lang::En, t), b.classify(Lang::En, t));
            assert_eq!(x.intent, y.intent);
            assert_eq!(x.confidence.to_bits(), y.confidence.to_bits(), "{t}");
        }
    }

    #[test]
    fn json_line_shape() {
        let nlu = tiny();
        let v = nlu.classify_json(Lang::En, "case status for IOE0123456789");
        assert_eq!(v["intent"], "case_status");
        assert_eq!(v["slots"]["receipt"], "IOE0123456789");
        let v = nlu.classify_json_with(Lang::En, "case status for IOE0123456789", false);
        assert_eq!(v["slots"]["receipt"], "***89");
        let line = nlu.classify_line(Lang::En, "case status", false);
        assert!(
            line.starts_with(r#"{"text":"case status","intent":"case_status","confidence":"#),
            "{line}"
        );
        assert!(line.ends_with(r#","slots":{}}"#), "{line}");
        let conf = v["confidence"].to_string();
        assert!(conf.len() <= 5, "{conf}");
    }
}
