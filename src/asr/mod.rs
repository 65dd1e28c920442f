//! Speech recognition: the [`Recognizer`] trait with two backends, what each dialog state lets a
//! recognizer hear, and endpointing.
//!
//! - [`vosk`]: the product's recognizer (libvosk), one model per language shared by all calls.
//! - [`sphinx`]: PocketSphinx, the English recognizer of the embedded default when no Vosk English
//!   model is configured.
//! - [`lm`]: grammars and the domain LM generated from the loaded phrase sets (pure).
//! - [`endpoint`]: VAD-driven endpointing with pre-roll, trailing silence, max length, no input.
//! - [`pipeline`]: per call, decoded PCM → model rate → endpointer; what the media task runs.
//!
//! Recognition itself runs on the shell's worker pool (`server::asr_pool`), never on the media
//! task. Backends wrap C libraries that read their model files at load; apart from that (and the
//! PocketSphinx LM written at load), nothing here does IO or reads the clock.

pub mod endpoint;
pub mod lm;
pub mod pipeline;
pub mod sphinx;
pub mod vosk;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::nlu::{Nlu, PhraseSet};
use crate::types::Lang;

pub use endpoint::{EndReason, EndpointConfig, EndpointEvent, Endpointer};
pub use pipeline::Pipeline;

/// Backends compute a partial result at most this often (in samples at 16 kHz, 0.5 s): a
/// partial is a search backtrace, too costly for every 20 ms frame, and nobody acts faster.
pub const PARTIAL_INTERVAL_SAMPLES: usize = 8000;

/// Words heard so far in an utterance; may change as more audio arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partial {
    pub text: String,
}

/// A recognized word with its time in the utterance (as fed) and confidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    pub word: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub confidence: f32,
}

/// The result of one utterance. Empty text means nothing in the grammar was heard.
#[derive(Clone, Debug, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// 0..=1; backends compute it differently (Vosk: mean word confidence, PocketSphinx:
    /// utterance posterior), so compare it only within one backend.
    pub confidence: f32,
    /// Word timings, when the backend gives them (Vosk).
    pub words: Vec<Word>,
    /// At or above this `confidence` the backend's transcript is reliable enough for a question
    /// to be answered without confirmation (calibrated per backend on spoken questions, see
    /// BENCHMARKING.md). A transcript with no evidence has 1.0: never sure.
    pub answer_floor: f32,
}

impl Default for Transcript {
    fn default() -> Transcript {
        Transcript {
            text: String::new(),
            confidence: 0.0,
            words: Vec::new(),
            answer_floor: 1.0,
        }
    }
}

impl Transcript {
    /// The recognizer's evidence, for the dialog's decision (`nlu::decide`).
    pub fn evidence(&self) -> crate::nlu::SpeechEvidence {
        crate::nlu::SpeechEvidence {
            asr_confidence: self.confidence,
            answer_floor: self.answer_floor,
        }
    }
}

/// One recognizer, fed one utterance at a time and reused for the next.
pub trait Recognizer: Send {
    /// The rate `accept` expects.
    fn sample_rate_hz(&self) -> u32;
    /// Feed audio of the current utterance; returns the partial result when there is one.
    fn accept(&mut self, pcm: &[i16]) -> Option<Partial>;
    /// End the utterance and return its transcript; the recognizer is ready for the next one.
    fn finish(&mut self) -> Transcript;
    /// Drop the current utterance without a result.
    fn reset(&mut self);
}

/// What a dialog state lets the caller say.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Exactly one of these phrases (yes/no, language, menu).
    Grammar(Vec<String>),
    /// The question state: the domain's vocabulary and phrases (Vosk phrase list; PocketSphinx
    /// bigram LM generated at load).
    Domain,
    /// One or more of these tokens, in any order: spelling an email address, a phone number
    /// digit by digit (PocketSphinx: a JSGF `<token>+` loop; Vosk grammars loop already).
    /// `len`: how many tokens a whole answer has, when that is fixed (a phone number: 10, or
    /// 11 with the country code); PocketSphinx then decodes exactly that many, which keeps it
    /// from inserting short words in the pauses. Vosk has no counted grammar and ignores it.
    Sequence {
        tokens: Vec<String>,
        len: Option<(u8, u8)>,
    },
}

impl Mode {
    /// The grammar of a closed state from the loaded grammars.
    pub fn closed(nlu: &Nlu, lang: Lang, set: PhraseSet) -> Mode {
        Mode::Grammar(nlu.phrases(lang, set))
    }

    /// Spelling an email address in `lang` (letters, digits, "at", "dot", domain words).
    pub fn spelling(lang: Lang) -> Mode {
        Mode::Sequence {
            tokens: crate::nlu::spell::email_tokens(lang),
            len: None,
        }
    }

    /// A phone number said digit by digit in `lang`.
    pub fn digits(lang: Lang) -> Mode {
        Mode::Sequence {
            tokens: crate::nlu::spell::number_digit_tokens(lang),
            len: Some((10, 11)),
        }
    }

    /// What the recognizer listens for in a dialog state (`Keys` and `Choices` both get the
    /// closed grammar of acts and digits).
    pub fn for_listen(nlu: &Nlu, lang: Lang, listen: crate::flow::Listen) -> Mode {
        use crate::flow::Listen;
        match listen {
            Listen::Question => Mode::Domain,
            Listen::Digits => Mode::digits(lang),
            Listen::Spelling => Mode::spelling(lang),
            Listen::Keys | Listen::Choices => Mode::choices(nlu, lang),
        }
    }

    /// A menu's closed grammar: the dialog acts and the spoken digits.
    pub fn choices(nlu: &Nlu, lang: Lang) -> Mode {
        let mut phrases = nlu.phrases(lang, PhraseSet::Acts);
        phrases.extend(nlu.phrases(lang, PhraseSet::MenuDigits));
        phrases.sort();
        phrases.dedup();
        Mode::Grammar(phrases)
    }
}

/// A spelled address or a number said digit by digit may run this long (a caller spells
/// about two characters a second, with pauses).
pub const SPELLING_MAX_UTTERANCE_MS: u32 = 40_000;

/// The endpointing of one spoken answer: `trailing_silence_ms` ends it; spelling may run longer
/// than an answer; no-input is the flow's own timer (it starts when the prompt ends).
pub fn endpoint_for(
    base: EndpointConfig,
    listen: crate::flow::Listen,
    trailing_silence_ms: u32,
) -> EndpointConfig {
    use crate::flow::Listen;
    let max_utterance_ms = match listen {
        Listen::Digits | Listen::Spelling => base.max_utterance_ms.max(SPELLING_MAX_UTTERANCE_MS),
        _ => base.max_utterance_ms,
    };
    EndpointConfig {
        trailing_silence_ms,
        no_input_ms: u32::MAX,
        max_utterance_ms,
        ..base
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Vosk,
    Pocketsphinx,
    /// No speech recognition in this language: the flow uses DTMF.
    None,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Vosk => "vosk",
            Backend::Pocketsphinx => "pocketsphinx",
            Backend::None => "none",
        })
    }
}

#[derive(Debug)]
#[non_exhaustive]
pub enum AsrError {
    ModelMissing(PathBuf),
    Io(PathBuf, std::io::Error),
    /// The mode allows nothing this backend can say.
    EmptyGrammar,
    Backend(String),
    /// The language has no recognizer configured.
    NoEngine(Lang),
}

impl fmt::Display for AsrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsrError::ModelMissing(p) => write!(f, "speech model missing at {}", p.display()),
            AsrError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            AsrError::EmptyGrammar => f.write_str("grammar has no phrase the recognizer knows"),
            AsrError::Backend(s) => f.write_str(s),
            AsrError::NoEngine(l) => write!(f, "no speech recognizer for {l}"),
        }
    }
}

impl std::error::Error for AsrError {}

/// One language's recognizer choice.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LangAsrConfig {
    /// `vosk`, `pocketsphinx` or `none`; unset: Vosk when `model` is set, else PocketSphinx for
    /// English and none for Spanish.
    pub backend: Option<Backend>,
    /// Vosk: the model directory. PocketSphinx: the directory holding `en-us/` and
    /// `cmudict-en-us.dict` (default: Debian's `pocketsphinx-en-us`).
    pub model: Option<PathBuf>,
    /// Invite callers to spell an email address aloud (they may always use the keypad).
    /// Unset: yes with Vosk, no with PocketSphinx, which measured 0 of 10 addresses spelled
    /// right (BENCHMARKING.md).
    pub spelling: Option<bool>,
    /// PocketSphinx only: an MLLR mean transform adapting the acoustic model to the telephone
    /// band (`asr/en-us-8k.mllr`, made by `scripts/adapt-8k` from Debian's Asterisk recordings:
    /// 8 kHz spoken set 65 → 90 of 126 understood, BENCHMARKING.md). Unset: none. Not on by
    /// default: at 16 kHz (Opus callers, `ivr call` without `--rate 8000`) the same set drops
    /// from 99 to 80, and one decoder serves both bands.
    pub mllr: Option<PathBuf>,
}

/// `[asr]`: recognizers per language, the worker pool and endpointing defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsrConfig {
    pub en: LangAsrConfig,
    pub es: LangAsrConfig,
    /// Recognition threads; 0 = one per core.
    pub workers: usize,
    /// Jobs waiting per worker before new utterances are refused (the flow falls back to DTMF).
    pub queue_jobs_max: usize,
    /// Recognizers (busy and idle) each worker holds at most: their memory stays bounded however
    /// many callers talk at once. An utterance that finds none free waits for one.
    pub recognizers_per_worker: usize,
    /// Utterances per worker that may wait for a recognizer; one more gets the keypad.
    pub waiting_per_worker: usize,
    /// How long an utterance that has ended may wait for a recognizer before the caller is
    /// moved to the keypad.
    pub wait_after_end_ms: u32,
    /// Admission: an utterance whose transcript the pool predicts later than this, at the
    /// recognizers' measured speed, is refused at its start (the caller gets the keypad at once,
    /// before any audio is queued). 0 turns admission off.
    pub admission_max_lag_ms: u32,
    pub trailing_silence_ms: u32,
    pub max_utterance_ms: u32,
    pub no_input_ms: u32,
}

impl Default for AsrConfig {
    /// English on PocketSphinx, Spanish off until a Vosk model is configured; one worker per
    /// core with 256 queued 20 ms jobs each (about 5 s of one caller's audio), 8 recognizers
    /// and 8 waiting utterances (3 s of grace after they end) each, admission at 1 s of predicted
    /// lateness; 700 ms trailing
    /// silence, 10 s utterances, 6 s of no input.
    fn default() -> Self {
        AsrConfig {
            en: LangAsrConfig::default(),
            es: LangAsrConfig::default(),
            workers: 0,
            queue_jobs_max: 256,
            recognizers_per_worker: 8,
            waiting_per_worker: 8,
            wait_after_end_ms: 3_000,
            admission_max_lag_ms: 1_000,
            trailing_silence_ms: 700,
            max_utterance_ms: 10_000,
            no_input_ms: 6_000,
        }
    }
}

impl AsrConfig {
    fn lang(&self, lang: Lang) -> &LangAsrConfig {
        match lang {
            Lang::En => &self.en,
            Lang::Es => &self.es,
        }
    }

    /// The backend serving `lang` and its model directory.
    pub fn resolve(&self, lang: Lang) -> (Backend, Option<PathBuf>) {
        let c = self.lang(lang);
        let backend = c.backend.unwrap_or(match (&c.model, lang) {
            (Some(_), _) => Backend::Vosk,
            (None, Lang::En) => Backend::Pocketsphinx,
            (None, Lang::Es) => Backend::None,
        });
        let model = match backend {
            Backend::Pocketsphinx => Some(
                c.model
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(sphinx::DEFAULT_MODEL_DIR)),
            ),
            Backend::Vosk => c.model.clone(),
            Backend::None => None,
        };
        (backend, model)
    }

    /// Whether callers in `lang` are invited to spell an address aloud.
    pub fn spelling(&self, lang: Lang) -> bool {
        let (backend, _) = self.resolve(lang);
        backend != Backend::None && self.lang(lang).spelling.unwrap_or(backend == Backend::Vosk)
    }

    /// Worker threads for `cores` available cores.
    pub fn worker_count(&self, cores: usize) -> usize {
        if self.workers == 0 {
            cores.max(1)
        } else {
            self.workers
        }
    }

    /// Endpointing for a dialog state that does not override it.
    pub fn endpoint(&self) -> EndpointConfig {
        EndpointConfig {
            trailing_silence_ms: self.trailing_silence_ms,
            max_utterance_ms: self.max_utterance_ms,
            no_input_ms: self.no_input_ms,
            ..EndpointConfig::default()
        }
    }
}

/// A loaded backend for one language, shared by every worker.
#[derive(Debug)]
pub enum Engine {
    Vosk(vosk::VoskEngine),
    Sphinx(sphinx::SphinxEngine),
}

impl Engine {
    pub fn backend(&self) -> Backend {
        match self {
            Engine::Vosk(_) => Backend::Vosk,
            Engine::Sphinx(_) => Backend::Pocketsphinx,
        }
    }

    pub fn sample_rate_hz(&self) -> u32 {
        match self {
            Engine::Vosk(_) => vosk::SAMPLE_RATE_HZ,
            Engine::Sphinx(_) => sphinx::SAMPLE_RATE_HZ,
        }
    }

    pub fn recognizer(&self, mode: &Mode) -> Result<Box<dyn Recognizer>, AsrError> {
        Ok(match self {
            Engine::Vosk(e) => Box::new(e.recognizer(mode)?),
            Engine::Sphinx(e) => Box::new(e.recognizer(mode)?),
        })
    }
}

/// The engines of all languages, built at load and rebuilt on grammar reload.
#[derive(Debug, Default)]
pub struct Engines {
    engines: BTreeMap<Lang, Arc<Engine>>,
}

impl Engines {
    /// Load every configured backend, restricting the question state to the phrases and
    /// vocabulary of `nlu`. `work_dir` holds PocketSphinx's generated LM and dictionary.
    pub fn load(config: &AsrConfig, nlu: &Nlu, work_dir: &Path) -> Result<Engines, AsrError> {
        let mut engines = BTreeMap::new();
        for lang in Lang::ALL {
            let (backend, model) = config.resolve(lang);
            // The question state's LM is the questions only: adding the short answers (acts,
            // digits) measured 16/20 instead of 18/20 on the spoken test questions.
            let phrases = nlu.phrases(lang, PhraseSet::Question);
            let vocabulary = nlu.vocabulary(lang);
            let engine = match (backend, model) {
                (Backend::None, _) => continue,
                (Backend::Vosk, None) => {
                    return Err(AsrError::ModelMissing(PathBuf::from("(asr model unset)")));
                }
                (Backend::Vosk, Some(dir)) => {
                    Engine::Vosk(vosk::VoskEngine::load(&dir, &phrases, &vocabulary)?)
                }
                (Backend::Pocketsphinx, dir) => {
                    let dir = dir.unwrap_or_else(|| PathBuf::from(sphinx::DEFAULT_MODEL_DIR));
                    let engine = sphinx::SphinxEngine::load(&dir, &phrases, &vocabulary, work_dir)?;
                    // The configured transform; `IVR_SPHINX_MLLR` overrides it for measuring
                    // (BENCHMARKING.md, "Narrowband adaptation").
                    let mllr = std::env::var_os("IVR_SPHINX_MLLR")
                        .map(PathBuf::from)
                        .or_else(|| config.lang(lang).mllr.clone());
                    match mllr {
                        Some(m) => Engine::Sphinx(engine.with_mllr(&m)?),
                        None => Engine::Sphinx(engine),
                    }
                }
            };
            engines.insert(lang, Arc::new(engine));
        }
        Ok(Engines { engines })
    }

    pub fn insert(&mut self, lang: Lang, engine: Engine) {
        self.engines.insert(lang, Arc::new(engine));
    }

    pub fn engine(&self, lang: Lang) -> Option<&Arc<Engine>> {
        self.engines.get(&lang)
    }

    /// The languages a recognizer serves (callers in the others use keys only).
    pub fn languages(&self) -> std::collections::HashSet<Lang> {
        self.engines.keys().copied().collect()
    }

    /// Which backend serves each language (for the startup log and `/readyz`).
    pub fn backends(&self) -> Vec<(Lang, Backend)> {
        Lang::ALL
            .iter()
            .map(|l| {
                (
                    *l,
                    self.engines.get(l).map_or(Backend::None, |e| e.backend()),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_put_english_on_sphinx_and_spanish_off() {
        let c = AsrConfig::default();
        assert_eq!(c.resolve(Lang::En).0, Backend::Pocketsphinx);
        assert_eq!(
            c.resolve(Lang::En).1.as_deref(),
            Some(Path::new(sphinx::DEFAULT_MODEL_DIR))
        );
        assert_eq!(c.resolve(Lang::Es), (Backend::None, None));
        assert_eq!(c.worker_count(2), 2);
        assert_eq!(c.endpoint().trailing_silence_ms, 700);
    }

    #[test]
    fn a_model_path_selects_vosk_and_explicit_backend_wins() {
        let c: AsrConfig = toml::from_str(
            "workers = 3\n[es]\nmodel = \"/m/es\"\n[en]\nbackend = \"none\"\nmodel = \"/m/en\"",
        )
        .unwrap();
        assert_eq!(
            c.resolve(Lang::Es),
            (Backend::Vosk, Some(PathBuf::from("/m/es")))
        );
        assert_eq!(c.resolve(Lang::En), (Backend::None, None));
        assert_eq!(c.worker_count(2), 3);
        assert!(toml::from_str::<AsrConfig>("wrkers = 1").is_err());
    }

    #[test]
    fn missing_models_are_typed_errors() {
        let c: AsrConfig = toml::from_str(
            "[en]\nbackend = \"pocketsphinx\"\nmodel = \"/nonexistent\"\n[es]\nmodel = \"/nonexistent\"",
        )
        .unwrap();
        let nlu = crate::nlu::build(&[]).unwrap();
        let err = Engines::load(&c, &nlu, &std::env::temp_dir()).unwrap_err();
        assert!(matches!(err, AsrError::ModelMissing(_)), "{err}");
        assert!(
            Engines::default()
                .backends()
                .iter()
                .all(|(_, b)| *b == Backend::None)
        );
    }
}
