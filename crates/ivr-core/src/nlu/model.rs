//! A multinomial naive Bayes classifier over word unigrams, word bigrams and character 3–5-grams
//! of normalized text, with a softmax temperature fitted on held-back folds so its confidence
//! means something (a 0.8 is right about 80% of the time on unseen phrasings).
//!
//! Naive Bayes rather than a discriminative model: it trains by counting (the whole grammar set
//! builds in milliseconds, which hot reload wants), needs no iteration to converge, and with
//! character n-grams it tolerates ASR misspellings and TTY typos well.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::normalize::stem;
use crate::types::Lang;

/// Feature keys are already 64-bit hashes; hashing them again would only cost time.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type FeatureMap = HashMap<u64, u32, BuildHasherDefault<IdHasher>>;

/// Words that say nothing about the topic. They still count in bigrams ("my case" vs "case"),
/// but as unigrams they are down-weighted and they get no character n-grams.
fn is_stop(lang: Lang, w: &str) -> bool {
    match lang {
        Lang::En => matches!(
            w,
            "i" | "my"
                | "me"
                | "the"
                | "a"
                | "an"
                | "to"
                | "is"
                | "it"
                | "of"
                | "and"
                | "or"
                | "for"
                | "in"
                | "on"
                | "at"
                | "do"
                | "does"
                | "did"
                | "can"
                | "could"
                | "would"
                | "you"
                | "your"
                | "what"
                | "that"
                | "this"
                | "be"
                | "am"
                | "are"
                | "was"
                | "i'm"
                | "want"
                | "need"
                | "have"
                | "has"
                | "with"
                | "about"
                | "how"
                | "get"
                | "there"
                | "just"
                | "we"
                | "some"
                | "if"
                | "will"
                | "so"
                | "but"
                | "yes"
                | "thanks"
                | "thank"
                | "no"
        ),
        Lang::Es => matches!(
            w,
            "yo" | "mi"
                | "mis"
                | "me"
                | "el"
                | "la"
                | "los"
                | "las"
                | "un"
                | "una"
                | "de"
                | "del"
                | "a"
                | "al"
                | "y"
                | "o"
                | "que"
                | "en"
                | "es"
                | "con"
                | "para"
                | "lo"
                | "le"
                | "se"
                | "su"
                | "sus"
                | "por"
                | "como"
                | "quiero"
                | "necesito"
                | "puedo"
                | "tengo"
                | "hay"
                | "esta"
                | "estoy"
                | "usted"
                | "ustedes"
                | "si"
                | "pero"
                | "muy"
                | "gracias"
                | "ya"
                | "tiene"
                | "favor"
                | "no"
        ),
    }
}

/// Relative weights of the feature families. Words decide; character n-grams rescue typos and
/// unseen inflections without drowning the words (a word yields ~10 n-grams).
const W_UNIGRAM: f32 = 1.0;
const W_STOP_UNIGRAM: f32 = 0.15;
const W_BIGRAM: f32 = 0.7;
const W_CHAR: f32 = 0.12;

fn fnv(tag: u8, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(tag);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x20;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// The hash `fnv(b'c', ..)` would give the window as a string, without building the string.
fn fnv_chars(win: &[char]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(b'c');
    let mut buf = [0u8; 4];
    for c in win {
        for b in c.encode_utf8(&mut buf).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// Weighted features of one normalized token sequence. Duplicates are summed later.
pub fn features(lang: Lang, tokens: &[String]) -> Vec<(u64, f32)> {
    let mut out = Vec::with_capacity(tokens.len() * 14);
    let stems: Vec<String> = tokens.iter().map(|t| stem(lang, t)).collect();
    for (i, t) in tokens.iter().enumerate() {
        let stop = is_stop(lang, t);
        out.push((
            fnv(b'w', &[&stems[i]]),
            if stop { W_STOP_UNIGRAM } else { W_UNIGRAM },
        ));
        if i + 1 < tokens.len() {
            out.push((fnv(b'b', &[&stems[i], &stems[i + 1]]), W_BIGRAM));
        }
        if stop || t.starts_with('#') {
            continue;
        }
        let padded: Vec<char> = std::iter::once('<')
            .chain(t.chars())
            .chain(std::iter::once('>'))
            .collect();
        for n in 3..=5 {
            if padded.len() < n {
                break;
            }
            for win in padded.windows(n) {
                out.push((fnv_chars(win), W_CHAR));
            }
        }
    }
    out
}

/// Whether a token is a content word the model has seen: used to tell "no idea" from "unsure".
pub fn content_word_hash(lang: Lang, token: &str) -> Option<u64> {
    (!is_stop(lang, token) && !token.starts_with('#')).then(|| fnv(b'w', &[&stem(lang, token)]))
}

/// One training example: class index, its features, and a weight (key phrases count more).
pub struct Example {
    pub class: usize,
    pub features: Vec<(u64, f32)>,
    pub weight: f32,
}

/// A trained model: per-feature, per-class log likelihoods in one dense row-major table.
#[derive(Clone, Debug)]
pub struct Model {
    index: FeatureMap,
    classes: usize,
    /// `loglik[f * classes + c]`.
    loglik: Vec<f32>,
    /// Softmax temperature over per-weight average scores, fitted on held-back folds.
    pub temperature: f32,
}

/// Pseudo-weight of "no evidence" added to every score's denominator: an utterance with one
/// known word gets a softer score than one with ten, so a lone "no" or "what" cannot reach the
/// confidence of a full question.
const EVIDENCE_PRIOR: f32 = 1.5;

/// Additive smoothing: small, because unseen words are common in real speech and a large alpha
/// flattens every decision toward the classes with few phrases.
const ALPHA: f32 = 0.05;

impl Model {
    /// Train on all examples and fit the temperature by k-fold cross-validation.
    pub fn train(classes: usize, examples: &[Example]) -> Model {
        let mut index = FeatureMap::default();
        // Examples as (feature index, weight) lists, so folds never hash again.
        let indexed: Vec<Vec<(u32, f32)>> = examples
            .iter()
            .map(|e| {
                e.features
                    .iter()
                    .map(|(h, w)| {
                        let next = index.len() as u32;
                        (*index.entry(*h).or_insert(next), *w)
                    })
                    .collect()
            })
            .collect();
        let v = index.len();
        let (loglik, _) = table(v, classes, examples, &indexed, |_| true);
        let temperature = fit_temperature(v, classes, examples, &indexed);
        Model {
            index,
            classes,
            loglik,
            temperature,
        }
    }

    /// Per-class scores: the weighted mean log likelihood of the known features (a mean, so
    /// long and short utterances get comparable margins). `None` when no feature is known.
    pub fn scores(&self, feats: &[(u64, f32)]) -> Option<Vec<f32>> {
        // Unknown features are skipped rather than scored as "unseen in every class": they
        // carry no information about which class, only about how new the wording is.
        let mut s = vec![0f32; self.classes];
        let mut weight = 0f32;
        for (h, w) in feats {
            if let Some(&f) = self.index.get(h) {
                let row = &self.loglik[f as usize * self.classes..(f as usize + 1) * self.classes];
                for (acc, l) in s.iter_mut().zip(row) {
                    *acc += w * l;
                }
                weight += w;
            }
        }
        if weight == 0.0 {
            return None;
        }
        for x in &mut s {
            *x /= weight + EVIDENCE_PRIOR;
        }
        Some(s)
    }

    /// The share (by weight) of an utterance's features the model has seen.
    pub fn coverage(&self, feats: &[(u64, f32)]) -> f32 {
        let total: f32 = feats.iter().map(|(_, w)| w).sum();
        let known: f32 = feats
            .iter()
            .filter(|(h, _)| self.index.contains_key(h))
            .map(|(_, w)| w)
            .sum();
        if total == 0.0 { 0.0 } else { known / total }
    }

    pub fn knows(&self, h: u64) -> bool {
        self.index.contains_key(&h)
    }

    /// The share of a word's letter 3–5-grams the model has seen (0 for words too short to
    /// have any).
    pub fn char_coverage(&self, token: &str) -> f32 {
        let padded: Vec<char> = std::iter::once('<')
            .chain(token.chars())
            .chain(std::iter::once('>'))
            .collect();
        let (mut total, mut seen) = (0usize, 0usize);
        for n in 3..=5 {
            for win in padded.windows(n) {
                total += 1;
                seen += usize::from(self.index.contains_key(&fnv_chars(win)));
            }
        }
        if total == 0 {
            0.0
        } else {
            seen as f32 / total as f32
        }
    }

    /// Softmax of scores at the fitted temperature.
    pub fn probabilities(&self, scores: &[f32]) -> Vec<f32> {
        softmax(scores, self.temperature)
    }
}

/// The log-likelihood table `[f * classes + c]` from the examples `keep` selects, and which
/// features those examples contain. Most (feature, class) pairs are never seen: they share one
/// value per class, so only the seen pairs cost a logarithm.
fn table(
    v: usize,
    classes: usize,
    examples: &[Example],
    indexed: &[Vec<(u32, f32)>],
    keep: impl Fn(usize) -> bool,
) -> (Vec<f32>, Vec<bool>) {
    // Dense rather than sparse: ~25k features × 20 classes is a few MB and makes scoring a
    // handful of contiguous row reads per utterance.
    let mut counts = vec![0f32; v * classes];
    let mut seen = vec![false; v];
    let mut totals = vec![0f32; classes];
    for (i, (e, feats)) in examples.iter().zip(indexed).enumerate() {
        if !keep(i) {
            continue;
        }
        for (f, w) in feats {
            counts[*f as usize * classes + e.class] += w * e.weight;
            seen[*f as usize] = true;
            totals[e.class] += w * e.weight;
        }
    }
    let denoms: Vec<f32> = totals.iter().map(|t| t + ALPHA * v as f32).collect();
    let unseen: Vec<f32> = denoms.iter().map(|d| (ALPHA / d).ln()).collect();
    for row in counts.chunks_exact_mut(classes) {
        for ((x, d), u) in row.iter_mut().zip(&denoms).zip(&unseen) {
            *x = if *x == 0.0 {
                *u
            } else {
                ((*x + ALPHA) / d).ln()
            };
        }
    }
    (counts, seen)
}

/// Mean log likelihood per class of the features `seen` in training, as [`Model::scores`]
/// computes it for a new utterance.
fn mean_scores(
    loglik: &[f32],
    seen: &[bool],
    classes: usize,
    feats: &[(u32, f32)],
) -> Option<Vec<f32>> {
    let mut s = vec![0f32; classes];
    let mut weight = 0f32;
    for (f, w) in feats {
        if !seen[*f as usize] {
            continue;
        }
        let row = &loglik[*f as usize * classes..(*f as usize + 1) * classes];
        for (acc, l) in s.iter_mut().zip(row) {
            *acc += w * l;
        }
        weight += w;
    }
    if weight == 0.0 {
        return None;
    }
    for x in &mut s {
        *x /= weight + EVIDENCE_PRIOR;
    }
    Some(s)
}

/// Five folds: train on four, score the fifth, choose the temperature that minimizes the
/// negative log likelihood of the right class. Features unseen in the four training folds are
/// skipped, exactly as unknown features of a new utterance are.
fn fit_temperature(
    v: usize,
    classes: usize,
    examples: &[Example],
    indexed: &[Vec<(u32, f32)>],
) -> f32 {
    const FOLDS: usize = 5;
    let mut held: Vec<(Vec<f32>, usize)> = Vec::new();
    for k in 0..FOLDS {
        let (t, seen) = table(v, classes, examples, indexed, |i| i % FOLDS != k);
        for (i, (e, feats)) in examples.iter().zip(indexed).enumerate() {
            if i % FOLDS == k
                && let Some(s) = mean_scores(&t, &seen, classes, feats)
            {
                held.push((s, e.class));
            }
        }
    }
    if held.is_empty() {
        return 1.0;
    }
    // The negative log likelihood is convex in the inverse temperature (a log-sum-exp of
    // linear functions), hence unimodal in its logarithm: a golden-section search finds the
    // optimum in a few dozen evaluations.
    let nll = |log_beta: f32| -> f32 {
        let beta = log_beta.exp();
        held.iter()
            .map(|(s, c)| {
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = s.iter().map(|x| ((x - max) * beta).exp()).sum();
                sum.ln() - (s[*c] - max) * beta
            })
            .sum()
    };
    const PHI: f32 = 0.618_034;
    let (mut lo, mut hi) = (0f32, 8f32); // 1/T from 1 to ~3000
    let mut a = hi - PHI * (hi - lo);
    let mut b = lo + PHI * (hi - lo);
    let (mut fa, mut fb) = (nll(a), nll(b));
    for _ in 0..24 {
        if fa < fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - PHI * (hi - lo);
            fa = nll(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + PHI * (hi - lo);
            fb = nll(b);
        }
    }
    (-(lo + hi) / 2.0).exp()
}

pub fn softmax(scores: &[f32], temperature: f32) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores
        .iter()
        .map(|s| ((s - max) / temperature).exp())
        .collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nlu::normalize::tokens;

    fn ex(class: usize, text: &str) -> Example {
        Example {
            class,
            features: features(Lang::En, &tokens(text)),
            weight: 1.0,
        }
    }

    #[test]
    fn learns_and_generalizes_to_typos() {
        let data = [
            ex(0, "where is my case"),
            ex(0, "status of my case"),
            ex(0, "check my case status"),
            ex(1, "what are your hours"),
            ex(1, "when are you open"),
            ex(1, "what time do you close"),
        ];
        let m = Model::train(2, &data);
        let s = m
            .scores(&features(Lang::En, &tokens("case statsu")))
            .expect("known");
        let p = m.probabilities(&s);
        assert!(p[0] > p[1], "{p:?}");
        let s = m
            .scores(&features(Lang::En, &tokens("what hours r u open")))
            .expect("known");
        let p = m.probabilities(&s);
        assert!(p[1] > 0.5, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }

    #[test]
    fn unknown_text_has_no_scores() {
        let m = Model::train(1, &[ex(0, "where is my case")]);
        assert!(m.scores(&features(Lang::En, &tokens("zzqx"))).is_none());
    }
}
