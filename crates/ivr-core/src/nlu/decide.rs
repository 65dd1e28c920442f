//! What the dialog does with an understood question: answer it, confirm it first, say what this
//! office handles (out of domain), or ask again. One rule for typed text and for speech, where
//! the recognizer's own evidence must agree with the classifier before anything is answered
//! without confirmation.
//!
//! The rule, in order:
//! 1. a safety phrase (a caller in danger) → [`Decision::Answer`] with the protected intent
//!    (spoken: when the recognizer is unsure, [`Decision::Confirm`] in plain words — a garbled
//!    transcript can hold "hit me" — never an ordinary answer either way);
//! 2. most like an `[outside TOPIC]` → [`Decision::OutOfDomain`];
//! 3. no intent → [`Decision::Reask`];
//! 4. classifier confidence ≥ [`CONFIRM_THRESHOLD`] and, for speech, the recognizer's confidence
//!    ≥ its backend's floor, enough known words and at least [`SPOKEN_MIN_WORDS`] content words
//!    → [`Decision::Answer`];
//! 5. otherwise → [`Decision::Confirm`] ("You want to change your address. Is that right?").

use super::{CONFIRM_THRESHOLD, Classification, REJECT_THRESHOLD};

/// What to do with a question.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Sure enough: answer at once.
    Answer,
    /// Plausible: confirm the intent first.
    Confirm,
    /// About something this office does not handle: say what it can help with.
    OutOfDomain,
    /// Nothing usable: ask again.
    #[default]
    Reask,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Answer => "answer",
            Decision::Confirm => "confirm",
            Decision::OutOfDomain => "out_of_domain",
            Decision::Reask => "reask",
        }
    }
}

/// The recognizer's evidence for a spoken question.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpeechEvidence {
    /// The recognizer's confidence in the transcript, 0..=1 (Vosk: mean word confidence;
    /// PocketSphinx: utterance posterior).
    pub asr_confidence: f32,
    /// At or above this, the backend's transcripts are reliable enough to answer without
    /// confirmation. Backends differ in scale, so each has its own (`asr::answer_floor`).
    pub answer_floor: f32,
}

/// Less than this share of a typed question's content words may be unknown to every grammar
/// for it to be answered without confirmation: a question mostly in words we never wrote is
/// likely about something else ("what time does walmart close tonight"). Only for questions of
/// at least [`TEXT_MIN_WORDS`] content words: in a short line one typo or one Baudot hit is
/// half the words, and the classifier's own confidence decides.
pub const TEXT_MAX_UNKNOWN: f32 = 0.5;
pub const TEXT_MIN_WORDS: usize = 3;
/// The same for a spoken question, stricter: a recognizer that strays outside the domain's
/// words heard something else.
pub const SPOKEN_MAX_UNKNOWN: f32 = 0.34;
/// A spoken question of fewer content words than this is confirmed, never answered outright:
/// one word is too little evidence from a recognizer that turns any sound into the domain's
/// words. Found by the soak: PocketSphinx heard a recorded "hello world" under load as "how long
/// will" (posterior 0.17, above the floor), and "long" alone was answered as processing times.
pub const SPOKEN_MIN_WORDS: usize = 2;

/// Decide what to do with a classified question; `speech` is the recognizer's evidence when
/// the text is a transcript.
pub fn decide(c: &Classification, speech: Option<SpeechEvidence>) -> Decision {
    let asr_sure = speech.is_none_or(|s| s.asr_confidence >= s.answer_floor);
    if c.safety {
        return if asr_sure {
            Decision::Answer
        } else {
            Decision::Confirm
        };
    }
    if c.out_of_domain.is_some() {
        return Decision::OutOfDomain;
    }
    if c.intent.is_none() || c.confidence < REJECT_THRESHOLD {
        return Decision::Reask;
    }
    let nlu_sure = c.confidence >= CONFIRM_THRESHOLD;
    let words_known = match speech {
        None => c.content_words < TEXT_MIN_WORDS || c.unknown_share < TEXT_MAX_UNKNOWN,
        Some(_) => c.unknown_share <= SPOKEN_MAX_UNKNOWN && c.content_words >= SPOKEN_MIN_WORDS,
    };
    if nlu_sure && asr_sure && words_known && !c.outside_cue {
        Decision::Answer
    } else {
        Decision::Confirm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nlu::Slots;

    fn c(intent: Option<&str>, confidence: f32) -> Classification {
        Classification {
            intent: intent.map(str::to_string),
            confidence,
            alternatives: Vec::new(),
            slots: Slots::default(),
            out_of_domain: None,
            safety: false,
            outside_cue: false,
            unknown_share: 0.0,
            content_words: 4,
        }
    }

    const SURE: SpeechEvidence = SpeechEvidence {
        asr_confidence: 0.9,
        answer_floor: 0.5,
    };
    const UNSURE: SpeechEvidence = SpeechEvidence {
        asr_confidence: 0.2,
        answer_floor: 0.5,
    };

    #[test]
    fn text_follows_the_classifier() {
        assert_eq!(decide(&c(Some("hours"), 0.9), None), Decision::Answer);
        assert_eq!(decide(&c(Some("hours"), 0.4), None), Decision::Confirm);
        assert_eq!(decide(&c(Some("hours"), 0.1), None), Decision::Reask);
        assert_eq!(decide(&c(None, 0.0), None), Decision::Reask);
    }

    #[test]
    fn one_spoken_content_word_is_confirmed_not_answered() {
        // "how long will": the classifier is sure (processing times), the recognizer above its
        // floor, every word known; but one content word is all the evidence there is.
        let mut thin = c(Some("processing_times"), 0.999);
        thin.content_words = 1;
        assert_eq!(decide(&thin, Some(SURE)), Decision::Confirm);
        // Typed, the same line is answered: a typist's words are what they meant.
        assert_eq!(decide(&thin, None), Decision::Answer);
        thin.content_words = 2;
        assert_eq!(decide(&thin, Some(SURE)), Decision::Answer);
        // A caller in danger is never held back by it.
        let mut danger = c(Some("vawa"), 1.0);
        danger.safety = true;
        danger.content_words = 1;
        assert_eq!(decide(&danger, Some(SURE)), Decision::Answer);
    }

    #[test]
    fn speech_needs_both_to_agree() {
        assert_eq!(decide(&c(Some("hours"), 0.9), Some(SURE)), Decision::Answer);
        assert_eq!(
            decide(&c(Some("hours"), 0.98), Some(UNSURE)),
            Decision::Confirm
        );
        let mut strange = c(Some("hours"), 0.98);
        strange.unknown_share = 0.5;
        assert_eq!(decide(&strange, Some(SURE)), Decision::Confirm);
        // Typed text tolerates more words no grammar has, not a majority.
        strange.unknown_share = 0.4;
        assert_eq!(decide(&strange, None), Decision::Answer);
        assert_eq!(decide(&strange, Some(SURE)), Decision::Confirm);
        strange.unknown_share = 0.5;
        assert_eq!(decide(&strange, None), Decision::Confirm);
    }

    #[test]
    fn safety_and_outside_come_first() {
        let mut danger = c(Some("protected_case"), 1.0);
        danger.safety = true;
        assert_eq!(decide(&danger, Some(SURE)), Decision::Answer);
        assert_eq!(decide(&danger, None), Decision::Answer);
        // A garbled transcript can hold "hit me": asked in plain words, never answered with
        // anything else.
        assert_eq!(decide(&danger, Some(UNSURE)), Decision::Confirm);
        let mut taxes = c(None, 0.9);
        taxes.out_of_domain = Some("taxes".into());
        assert_eq!(decide(&taxes, None), Decision::OutOfDomain);
        assert_eq!(decide(&taxes, Some(SURE)), Decision::OutOfDomain);
        let mut ssa_phone = c(Some("contact_info"), 0.9);
        ssa_phone.outside_cue = true;
        assert_eq!(decide(&ssa_phone, None), Decision::Confirm);
    }
}
