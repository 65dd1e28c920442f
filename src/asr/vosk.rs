//! Vosk backend (the product's recognizer): one `vosk::Model` per language, loaded once and
//! shared by every call; a recognizer per worker and mode, reused across utterances.

use std::path::Path;
use std::sync::Arc;

use super::lm;
use super::{AsrError, Mode, Partial, Recognizer, Transcript, Word};

/// Vosk models are trained at 16 kHz; narrowband audio is upsampled before it gets here.
pub const SAMPLE_RATE_HZ: u32 = 16_000;

/// Mean word confidence at or above which a Vosk transcript may be answered without
/// confirmation. Vosk's word confidences are posteriors from the lattice: correct words of a
/// matched model sit near 1, guesses well below. Not calibrated on English here (no English
/// model can be had on this machine); set from the Korean model's spoken digits.
pub const ANSWER_FLOOR: f32 = 0.75;

/// A loaded model with the domain's phrase list (the question state's restriction).
pub struct VoskEngine {
    model: Arc<vosk::Model>,
    /// Question-state phrases and single vocabulary words, escaped for the crate.
    domain: Vec<String>,
}

impl std::fmt::Debug for VoskEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoskEngine")
            .field("domain_phrases", &self.domain.len())
            .finish()
    }
}

impl VoskEngine {
    /// Load the model at `model_dir` (the C library reads it). `phrases` and `vocabulary` build
    /// the question state's phrase list: whole phrases bias toward what the authors wrote, single
    /// words let callers say them in other orders.
    pub fn load(
        model_dir: &Path,
        phrases: &[String],
        vocabulary: &[String],
    ) -> Result<VoskEngine, AsrError> {
        if !model_dir.is_dir() {
            return Err(AsrError::ModelMissing(model_dir.into()));
        }
        vosk::set_log_level(vosk::LogLevel::Error);
        let model = vosk::Model::new(model_dir.to_string_lossy())
            .ok_or_else(|| AsrError::ModelMissing(model_dir.into()))?;
        let mut all: Vec<String> = phrases.to_vec();
        all.extend(vocabulary.iter().cloned());
        Ok(VoskEngine {
            model: Arc::new(model),
            domain: lm::vosk_phrases(&all, true),
        })
    }

    pub fn recognizer(&self, mode: &Mode) -> Result<VoskRecognizer, AsrError> {
        let rec = match mode {
            // Vosk's grammar is a loop over its phrases: a sequence needs nothing more.
            Mode::Grammar(p) | Mode::Sequence { tokens: p, .. } => {
                let phrases = lm::vosk_phrases(p, true);
                // Only "[unk]" left: nothing to recognize.
                if phrases.len() <= 1 {
                    return Err(AsrError::EmptyGrammar);
                }
                vosk::Recognizer::new_with_grammar(&self.model, SAMPLE_RATE_HZ as f32, &phrases)
            }
            // A language with no domain phrases gets the model's open vocabulary.
            Mode::Domain if self.domain.len() <= 1 => {
                vosk::Recognizer::new(&self.model, SAMPLE_RATE_HZ as f32)
            }
            Mode::Domain => {
                vosk::Recognizer::new_with_grammar(&self.model, SAMPLE_RATE_HZ as f32, &self.domain)
            }
        };
        let mut rec =
            rec.ok_or_else(|| AsrError::Backend("vosk: recognizer rejected the grammar".into()))?;
        rec.set_words(true);
        Ok(VoskRecognizer {
            rec,
            fed: false,
            since_partial: 0,
            done: Transcript::default(),
            _model: self.model.clone(),
        })
    }
}

pub struct VoskRecognizer {
    rec: vosk::Recognizer,
    fed: bool,
    /// Samples fed since the last partial result.
    since_partial: usize,
    /// Segments Vosk already finalized inside this utterance (it endpoints on its own pauses;
    /// a finalized segment is only returned once, by `result()`).
    done: Transcript,
    /// The recognizer points into the model: keep it alive as long as the recognizer.
    _model: Arc<vosk::Model>,
}

impl std::fmt::Debug for VoskRecognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoskRecognizer").finish_non_exhaustive()
    }
}

/// Vosk reports out-of-grammar speech as "[unk]": that is no words, not a word.
fn clean(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| *w != "[unk]")
        .collect::<Vec<_>>()
        .join(" ")
}

impl Recognizer for VoskRecognizer {
    fn sample_rate_hz(&self) -> u32 {
        SAMPLE_RATE_HZ
    }

    fn accept(&mut self, pcm: &[i16]) -> Option<Partial> {
        if pcm.is_empty() {
            return None;
        }
        self.fed = true;
        // Only a buffer over i32::MAX samples is refused: treat it as nothing heard.
        let state = self.rec.accept_waveform(pcm).ok()?;
        if state == vosk::DecodingState::Finalized {
            let segment = segment(self.rec.result());
            append(&mut self.done, segment);
            let text = self.done.text.clone();
            return (!text.is_empty()).then_some(Partial { text });
        }
        self.since_partial += pcm.len();
        if self.since_partial < super::PARTIAL_INTERVAL_SAMPLES {
            return None;
        }
        self.since_partial = 0;
        let tail = clean(self.rec.partial_result().partial);
        let text = [self.done.text.as_str(), tail.as_str()]
            .iter()
            .filter(|t| !t.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        (!text.is_empty()).then_some(Partial { text })
    }

    fn finish(&mut self) -> Transcript {
        if !self.fed {
            return Transcript::default();
        }
        let mut out = std::mem::take(&mut self.done);
        out.answer_floor = ANSWER_FLOOR;
        self.fed = false;
        self.since_partial = 0;
        // final_result flushes and resets the recognizer for the next utterance.
        let last = segment(self.rec.final_result());
        append(&mut out, last);
        out
    }

    fn reset(&mut self) {
        // vosk_recognizer_reset alone leaves the audio already fed in the decoder (measured: a
        // half utterance leaked a word into the next one); finishing the utterance clears it.
        if self.fed {
            let _ = self.rec.final_result();
        }
        self.rec.reset();
        self.fed = false;
        self.since_partial = 0;
        self.done = Transcript::default();
    }
}

/// The words of one finalized segment, without "[unk]".
fn segment(result: vosk::CompleteResult) -> Transcript {
    let Some(single) = result.single() else {
        return Transcript::default();
    };
    let words: Vec<Word> = single
        .result
        .iter()
        .filter(|w| w.word != "[unk]")
        .map(|w| Word {
            word: w.word.to_string(),
            start_ms: (w.start.max(0.0) * 1000.0) as u64,
            end_ms: (w.end.max(0.0) * 1000.0) as u64,
            confidence: w.conf,
        })
        .collect();
    Transcript {
        text: clean(single.text),
        confidence: 0.0,
        words,
        answer_floor: ANSWER_FLOOR,
    }
}

/// Append a segment; confidence is the mean word confidence of the whole utterance.
fn append(acc: &mut Transcript, seg: Transcript) {
    if !seg.text.is_empty() {
        if !acc.text.is_empty() {
            acc.text.push(' ');
        }
        acc.text.push_str(&seg.text);
    }
    acc.words.extend(seg.words);
    acc.confidence = if acc.words.is_empty() {
        0.0
    } else {
        acc.words.iter().map(|w| w.confidence).sum::<f32>() / acc.words.len() as f32
    };
}
