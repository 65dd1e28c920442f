//! What a recognizer is allowed to hear, generated from the loaded grammars (pure text in, text
//! out): the bigram ARPA LM and dictionary subset for PocketSphinx's question state, JSGF for its
//! closed states, and the JSON phrase list for Vosk.
//!
//! A small in-domain bigram LM is what makes PocketSphinx usable here: with its general 130k-word
//! LM it garbles natural questions; with one built from the authors' phrases it transcribes them
//! nearly exactly, while still accepting word orders the authors never wrote.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// Absolute discount taken from every seen bigram and given to the unigram backoff. Counts from
/// a few hundred phrases are mostly 1s and 2s, where 0.5 is the usual choice.
const DISCOUNT: f64 = 0.5;
/// Added to every unigram count, so rare domain words are not starved.
const UNIGRAM_PRIOR: f64 = 0.5;

const BOS: &str = "<s>";
const EOS: &str = "</s>";

/// Pronunciations by word (CMU dictionary format: `word PH ON ES`, variants as `word(2) ...`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lexicon {
    entries: HashMap<String, Vec<String>>,
}

impl Lexicon {
    /// Parse a dictionary; malformed lines are skipped (the file is the distro's, not ours).
    pub fn parse_cmudict(text: &str) -> Lexicon {
        let mut entries: HashMap<String, Vec<String>> = HashMap::new();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(head), phones) = (parts.next(), parts.collect::<Vec<_>>()) else {
                continue;
            };
            if phones.is_empty() || head.starts_with("#") {
                continue;
            }
            // "word(2)" is a variant of "word".
            let word = match head.find('(') {
                Some(i) if head.ends_with(')') && i > 0 => &head[..i],
                _ => head,
            };
            entries
                .entry(word.to_lowercase())
                .or_default()
                .push(phones.join(" "));
        }
        Lexicon { entries }
    }

    pub fn entries(&self) -> &HashMap<String, Vec<String>> {
        &self.entries
    }

    pub fn contains(&self, word: &str) -> bool {
        self.entries.contains_key(word)
    }

    /// The entries of `words` that this lexicon knows.
    pub fn subset<'a>(&self, words: impl IntoIterator<Item = &'a str>) -> Lexicon {
        let mut entries = HashMap::new();
        for w in words {
            if let Some(p) = self.entries.get(w) {
                entries.insert(w.to_string(), p.clone());
            }
        }
        Lexicon { entries }
    }

    /// Give `words` this lexicon lacks a pronunciation: a long word as two known words
    /// ("biometrics" = "bio" + "metrics", "passcode" = "pass" + "code"), a short one spelled
    /// letter by letter, as callers say acronyms ("uscis", "tty"). Returns the words still
    /// without one (digits, symbols).
    pub fn add_missing<'a>(&mut self, words: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut left = Vec::new();
        for w in words {
            if self.contains(w) {
                continue;
            }
            let pron = if w.chars().count() >= 7 {
                self.compound(w).or_else(|| spell(w))
            } else {
                spell(w)
            };
            match pron {
                Some(p) => {
                    self.entries.insert(w.to_string(), vec![p]);
                }
                None => left.push(w.to_string()),
            }
        }
        left
    }

    /// Two known words making up `w`, the longest first part first.
    fn compound(&self, w: &str) -> Option<String> {
        let cuts: Vec<usize> = w.char_indices().map(|(i, _)| i).skip(3).collect();
        for &i in cuts.iter().rev() {
            let (a, b) = w.split_at(i);
            if b.chars().count() < 3 {
                continue;
            }
            if let (Some(pa), Some(pb)) = (self.entries.get(a), self.entries.get(b)) {
                return Some(format!("{} {}", pa[0], pb[0]));
            }
        }
        None
    }

    /// The phrases with the words this lexicon lacks dropped (a decoder cannot say a word it
    /// cannot pronounce), and the dropped words, sorted and unique. Phrases left empty go.
    pub fn in_vocabulary(&self, phrases: &[String]) -> (Vec<String>, Vec<String>) {
        let mut kept = Vec::with_capacity(phrases.len());
        let mut dropped = std::collections::BTreeSet::new();
        for p in phrases {
            let words: Vec<&str> = p
                .split_whitespace()
                .filter(|w| {
                    let known = self.contains(w);
                    if !known {
                        dropped.insert(w.to_string());
                    }
                    known
                })
                .collect();
            if !words.is_empty() {
                kept.push(words.join(" "));
            }
        }
        (kept, dropped.into_iter().collect())
    }

    /// The dictionary file text, sorted for reproducible output.
    pub fn to_dict(&self) -> String {
        let sorted: BTreeMap<&String, &Vec<String>> = self.entries.iter().collect();
        let mut out = String::new();
        for (word, prons) in sorted {
            for (i, p) in prons.iter().enumerate() {
                // Writing to a String cannot fail.
                let _ = if i == 0 {
                    writeln!(out, "{word} {p}")
                } else {
                    writeln!(out, "{word}({}) {p}", i + 1)
                };
            }
        }
        out
    }
}

/// Letter names in ARPAbet, for spelling acronyms.
const LETTERS: [&str; 26] = [
    "EY",
    "B IY",
    "S IY",
    "D IY",
    "IY",
    "EH F",
    "JH IY",
    "EY CH",
    "AY",
    "JH EY",
    "K EY",
    "EH L",
    "EH M",
    "EH N",
    "OW",
    "P IY",
    "K Y UW",
    "AA R",
    "EH S",
    "T IY",
    "Y UW",
    "V IY",
    "D AH B AH L Y UW",
    "EH K S",
    "W AY",
    "Z IY",
];

/// `w` spelled out letter by letter, when it is all ASCII letters.
fn spell(w: &str) -> Option<String> {
    if w.is_empty() || !w.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let phones: Vec<&str> = w
        .chars()
        .map(|c| LETTERS[(c.to_ascii_lowercase() as u8 - b'a') as usize])
        .collect();
    Some(phones.join(" "))
}

/// A bigram LM in ARPA format from sentences (words separated by spaces), with absolute
/// discounting and backoff to smoothed unigrams. Every word of the sentences is in the LM.
pub fn bigram_arpa(sentences: &[String]) -> String {
    let mut uni: BTreeMap<&str, f64> = BTreeMap::new();
    let mut bi: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
    for s in sentences {
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let mut prev = BOS;
        for w in words.iter().copied().chain([EOS]) {
            *uni.entry(w).or_default() += 1.0;
            *bi.entry(prev).or_default().entry(w).or_default() += 1.0;
            prev = w;
        }
    }
    // An empty domain still yields a valid LM that only ends sentences.
    uni.entry(EOS).or_insert(0.0);
    let total: f64 = uni.values().sum();
    let types = uni.len() as f64;
    let p_uni: BTreeMap<&str, f64> = uni
        .iter()
        .map(|(w, c)| (*w, (c + UNIGRAM_PRIOR) / (total + UNIGRAM_PRIOR * types)))
        .collect();
    let mut backoff: BTreeMap<&str, f64> = BTreeMap::new();
    let mut n_bigrams = 0usize;
    for (h, next) in &bi {
        let count: f64 = next.values().sum();
        let held = DISCOUNT * next.len() as f64 / count;
        let seen: f64 = next
            .keys()
            .map(|w| p_uni.get(w).copied().unwrap_or(0.0))
            .sum();
        backoff.insert(h, held / (1.0 - seen).max(1e-6));
        n_bigrams += next.len();
    }
    let mut out = String::new();
    // Writing to a String cannot fail: the results below are ignored.
    let _ = writeln!(
        out,
        "\\data\\\nngram 1={}\nngram 2={n_bigrams}\n",
        uni.len() + 1
    );
    let _ = writeln!(out, "\\1-grams:");
    let _ = writeln!(
        out,
        "-99.0000 {BOS} {:.4}",
        backoff.get(BOS).copied().unwrap_or(1.0).log10()
    );
    for (w, p) in &p_uni {
        match backoff.get(w) {
            Some(b) => writeln!(out, "{:.4} {w} {:.4}", p.log10(), b.log10()),
            None => writeln!(out, "{:.4} {w}", p.log10()),
        }
        .ok();
    }
    let _ = writeln!(out, "\n\\2-grams:");
    for (h, next) in &bi {
        let count: f64 = next.values().sum();
        for (w, c) in next {
            let _ = writeln!(out, "{:.4} {h} {w}", ((c - DISCOUNT) / count).log10());
        }
    }
    let _ = writeln!(out, "\n\\end\\");
    out
}

/// A JSGF grammar accepting exactly one of `phrases`, or `None` when there is none.
pub fn jsgf(phrases: &[String]) -> Option<String> {
    let alts: Vec<String> = phrases
        .iter()
        .map(|p| {
            p.split_whitespace()
                .map(jsgf_token)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|p| !p.is_empty())
        .collect();
    if alts.is_empty() {
        return None;
    }
    Some(format!(
        "#JSGF V1.0;\ngrammar ivr;\npublic <phrase> = {};\n",
        alts.join(" | ")
    ))
}

/// A JSGF grammar accepting one or more of `tokens` in any order (a token may be several
/// words) — exactly `min..=max` of them when `len` is given — or `None` when there is none.
pub fn jsgf_sequence(tokens: &[String], len: Option<(u8, u8)>) -> Option<String> {
    let one = jsgf(tokens)?;
    let alts = one
        .split_once("public <phrase> = ")?
        .1
        .trim_end()
        .strip_suffix(';')?
        .to_string();
    let body = match len {
        None => "<token>+".to_string(),
        Some((min, max)) => {
            let (min, max) = (usize::from(min.max(1)), usize::from(max.max(min.max(1))));
            let mut parts = vec!["<token>"; min];
            parts.extend(std::iter::repeat_n("[<token>]", max - min));
            parts.join(" ")
        }
    };
    Some(format!(
        "#JSGF V1.0;\ngrammar ivr;\n<token> = {alts};\npublic <sequence> = {body};\n"
    ))
}

/// A JSGF token: quoted when it holds a character the grammar syntax reserves.
fn jsgf_token(w: &str) -> String {
    const RESERVED: &[char] = &[
        ';', '=', '|', '*', '+', '<', '>', '(', ')', '[', ']', '{', '}', '/', '"', '\\',
    ];
    if w.contains(RESERVED) {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    } else {
        w.to_string()
    }
}

/// The phrases as Vosk wants its grammar: each phrase a JSON string, already escaped, because
/// the `vosk` crate wraps them in quotes without escaping. `[unk]` lets out-of-grammar speech
/// come back as "[unk]" instead of being forced onto the nearest phrase.
pub fn vosk_phrases(phrases: &[String], with_unk: bool) -> Vec<String> {
    let mut out: Vec<String> = phrases
        .iter()
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .map(|p| {
            let quoted = serde_json::Value::String(p).to_string();
            // The crate adds the outer quotes itself.
            quoted[1..quoted.len() - 1].to_string()
        })
        .collect();
    out.sort();
    out.dedup();
    if with_unk {
        out.push("[unk]".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// log10 probabilities of the bigrams leaving `h`, plus the backoff mass, sum to 1.
    #[test]
    fn bigram_lm_is_normalized() {
        let arpa = bigram_arpa(&s(&[
            "what is my case status",
            "what is the status",
            "my case",
        ]));
        let mut uni: HashMap<String, (f64, f64)> = HashMap::new();
        let mut bi: Vec<(String, String, f64)> = Vec::new();
        let mut section = 0;
        for line in arpa.lines() {
            match line {
                "\\1-grams:" => section = 1,
                "\\2-grams:" => section = 2,
                _ if line.is_empty() || line.starts_with('\\') || line.starts_with("ngram") => {}
                _ => {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if section == 1 {
                        let bo = f.get(2).map(|b| b.parse().unwrap()).unwrap_or(0.0);
                        uni.insert(f[1].into(), (f[0].parse().unwrap(), bo));
                    } else {
                        bi.push((f[1].into(), f[2].into(), f[0].parse().unwrap()));
                    }
                }
            }
        }
        let uni_sum: f64 = uni
            .iter()
            .filter(|(w, _)| *w != BOS)
            .map(|(_, (p, _))| 10f64.powf(*p))
            .sum();
        assert!((uni_sum - 1.0).abs() < 1e-3, "unigrams sum to {uni_sum}");
        for h in ["what", "is", "<s>", "case"] {
            let seen: Vec<&(String, String, f64)> = bi.iter().filter(|b| b.0 == h).collect();
            let mass: f64 = seen.iter().map(|b| 10f64.powf(b.2)).sum();
            let rest: f64 = uni
                .iter()
                .filter(|(w, _)| *w != BOS && !seen.iter().any(|b| &b.1 == *w))
                .map(|(_, (p, _))| 10f64.powf(*p))
                .sum();
            let total = mass + 10f64.powf(uni[h].1) * rest;
            assert!((total - 1.0).abs() < 1e-3, "{h}: {total}");
        }
        assert!(arpa.contains("ngram 1=8"), "{arpa}");
    }

    #[test]
    fn empty_domain_is_a_valid_lm() {
        let arpa = bigram_arpa(&[]);
        assert!(arpa.contains("ngram 1=2") && arpa.contains("ngram 2=0"));
        assert!(arpa.ends_with("\\end\\\n"));
    }

    #[test]
    fn lexicon_drops_unknown_words_and_keeps_variants() {
        let lex = Lexicon::parse_cmudict(
            "case K EY S\nstatus S T AE T AH S\nstatus(2) S T EY T AH S\n# x\nbad\n",
        );
        assert_eq!(lex.entries()["status"].len(), 2);
        assert!(!lex.contains("bad"));
        let (kept, dropped) = lex.in_vocabulary(&s(&["case uscis status", "uscis"]));
        assert_eq!(kept, s(&["case status"]));
        assert_eq!(dropped, s(&["uscis"]));
        assert_eq!(
            lex.subset(["status"]).to_dict(),
            "status S T AE T AH S\nstatus(2) S T EY T AH S\n"
        );
    }

    #[test]
    fn missing_words_are_split_or_spelled() {
        let mut lex = Lexicon::parse_cmudict("bio B AY OW\nmetrics M EH T R IH K S\n");
        let left = lex.add_missing(["biometrics", "tty", "n400", "bio"]);
        assert_eq!(left, s(&["n400"]));
        assert_eq!(lex.entries()["biometrics"], s(&["B AY OW M EH T R IH K S"]));
        assert_eq!(lex.entries()["tty"], s(&["T IY T IY W AY"]));
        // Long words with no known parts are spelled too.
        assert!(lex.add_missing(["xqzxqzxq"]).is_empty());
    }

    #[test]
    fn jsgf_and_vosk_phrases_escape() {
        assert_eq!(jsgf(&s(&["", "  "])), None);
        let g = jsgf(&s(&["yes", "no way"])).unwrap();
        assert!(g.contains("public <phrase> = yes | no way;"), "{g}");
        assert!(jsgf(&s(&["a;b"])).unwrap().contains("\"a;b\""));
        let v = vosk_phrases(&s(&["say \"hi\"", "b", "b"]), true);
        assert_eq!(v, s(&["b", "say \\\"hi\\\"", "[unk]"]));
    }

    #[test]
    fn sequence_grammars_loop_or_count() {
        let toks = s(&["one", "two", "double u"]);
        let open = jsgf_sequence(&toks, None).unwrap();
        assert!(open.contains("<token> = one | two | double u;"), "{open}");
        assert!(open.contains("public <sequence> = <token>+;"), "{open}");
        let counted = jsgf_sequence(&toks, Some((2, 3))).unwrap();
        assert!(
            counted.contains("public <sequence> = <token> <token> [<token>];"),
            "{counted}"
        );
        assert!(jsgf_sequence(&[], None).is_none());
    }
}
