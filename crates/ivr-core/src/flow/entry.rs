//! Number and address entry: the caller keys (or says, digit by digit) a 10-digit US phone
//! number, or spells an email address, hears it read back (a dynamic prompt: digits grouped
//! 3-3-4, an address letter by letter) and confirms with 1 or "yes", or re-enters with 2 or
//! "no".
//!
//! By voice the machine asks the shell to listen with a sequence grammar (`Listen::Digits`,
//! `Listen::Spelling`) while it collects, and for yes/no (`Listen::Choices`) at the read-back.
//! With the keypad an address is spelled two keys a character (`nlu::spell::keypad_email`),
//! so it works for every caller, and goes on if recognition becomes unavailable.
//!
//! A sans-IO sub-machine the call flow runs while it needs a number (for example "text the
//! link to another number"). Shape as `flow::Call`: `handle_digit(now, d)`,
//! `handle_playback_done(now)`, `handle_timeout(now)` in; `poll_output()` (drain it after every
//! input) and `poll_timeout()` out. Keys: digits collect, `#` ends early, `*` clears; the entry
//! ends by itself at the number's length (10 digits, or 11 starting with the country code 1).
//! An invalid number, a silence or a refused read-back costs one attempt; after
//! `max_attempts` the entry ends `Cancelled` and the parent flow decides what to say.
//!
//! In the link offer (`flow::link`), `Done` is the caller's yes at the read-back: the flow hands
//! the value to the offer, which decides what follows.
//!
//! The number is personal data: it leaves only wrapped in [`Pii`], in the read-back text and in
//! `Done`. The parent must not copy these keys into its record of digits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Heard, Listen, PromptRef};
use crate::pii::Pii;
use crate::prompts::Catalog;
use crate::types::Lang;
use crate::types::UsPhone;

/// Prompt ids this machine plays (`prompts/<lang>/entry.txt`).
pub const PROMPT_ASK: &str = "entry.ask";
pub const PROMPT_INVALID: &str = "entry.invalid";
pub const PROMPT_NO_INPUT: &str = "entry.no_input";
/// The read-back's two halves, around the number: "You entered" … "If that is right, press 1…".
/// The lead is said with the number (rendered on demand); the confirmation is a catalog prompt
/// played right after it ([`Readback`]).
pub const PROMPT_READBACK_LEAD: &str = "entry.readback_lead";
pub const PROMPT_READBACK_CONFIRM: &str = "entry.readback_confirm";
/// The request and the read-back's confirmation when the caller may also speak.
pub const PROMPT_ASK_SPEECH: &str = "entry.ask_speech";
pub const PROMPT_READBACK_CONFIRM_SPEECH: &str = "entry.readback_confirm_speech";
/// Email address entry (`prompts/<lang>/entry.txt`), always by voice.
pub const PROMPT_EMAIL_ASK: &str = "email.ask";
pub const PROMPT_EMAIL_ASK_KEYS: &str = "email.ask_keys";
pub const PROMPT_EMAIL_INVALID: &str = "email.invalid";
pub const PROMPT_EMAIL_NO_INPUT: &str = "email.no_input";
pub const PROMPT_EMAIL_READBACK_LEAD: &str = "email.readback_lead";
pub const PROMPT_EMAIL_READBACK_CONFIRM: &str = "email.readback_confirm";
pub const PROMPT_EMAIL_READBACK_CONFIRM_KEYS: &str = "email.readback_confirm_keys";
pub const PROMPT_IDS: [&str; 14] = [
    PROMPT_EMAIL_ASK_KEYS,
    PROMPT_EMAIL_READBACK_CONFIRM_KEYS,
    PROMPT_ASK,
    PROMPT_INVALID,
    PROMPT_NO_INPUT,
    PROMPT_READBACK_LEAD,
    PROMPT_READBACK_CONFIRM,
    PROMPT_ASK_SPEECH,
    PROMPT_READBACK_CONFIRM_SPEECH,
    PROMPT_EMAIL_ASK,
    PROMPT_EMAIL_INVALID,
    PROMPT_EMAIL_NO_INPUT,
    PROMPT_EMAIL_READBACK_LEAD,
    PROMPT_EMAIL_READBACK_CONFIRM,
];

/// What is being entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A US phone number, keyed or said digit by digit.
    Phone,
    /// An email address, spelled by voice.
    Email,
}

/// `*` presses allowed in one entry: clearing is the caller's choice, but not forever.
const MAX_CLEARS: u32 = 5;

/// `[entry]`: timings and patience of keyed number entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EntryConfig {
    /// Silence after the request before it counts as no input. Default 8000.
    pub first_digit_timeout_ms: u64,
    /// Silence after a key before the digits so far are taken as the whole number (people
    /// pause between groups, rarely for long). Default 5000.
    pub inter_digit_timeout_ms: u64,
    /// Silence after the read-back before it is asked again. Default 6000.
    pub confirm_timeout_ms: u64,
    /// Failed attempts (invalid number, no input, "re-enter", an unknown key at the read-back)
    /// before the entry gives up. Default 3.
    pub max_attempts: u32,
    /// Silence after a key while spelling an address with the keypad (two keys a character,
    /// and callers look for the letters) before what was keyed is taken. Default 10000.
    pub spell_key_timeout_ms: u64,
    /// Trailing silence that ends a spoken number or spelling: callers pause between letters
    /// and digit groups. Default 1500.
    pub spoken_silence_ms: u32,
}

impl Default for EntryConfig {
    fn default() -> Self {
        EntryConfig {
            first_digit_timeout_ms: 8000,
            inter_digit_timeout_ms: 5000,
            confirm_timeout_ms: 6000,
            max_attempts: 3,
            spell_key_timeout_ms: 10_000,
            spoken_silence_ms: 1500,
        }
    }
}

/// A read-back in one language: the catalog's lead ("You entered", "You said", markup kept)
/// said before the value, rendered on demand with it; then the confirmation, a catalog prompt
/// rendered ahead of time, so only the short part with the value is synthesized during the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readback {
    pub lead: String,
    /// The confirmation prompt's id ("If that is right, press 1 ...").
    pub confirm: &'static str,
    /// The confirmation when the caller may also answer by voice ("say yes or press 1").
    pub confirm_speech: Option<&'static str>,
}

impl Readback {
    /// The number read-back (`entry.readback_lead`, `entry.readback_confirm`, and
    /// `entry.readback_confirm_speech` when present); `None` if missing.
    pub fn from_catalog(catalog: &Catalog, lang: Lang) -> Option<Readback> {
        catalog.get(lang, PROMPT_READBACK_CONFIRM)?;
        Some(Readback {
            lead: catalog.get(lang, PROMPT_READBACK_LEAD)?.text.clone(),
            confirm: PROMPT_READBACK_CONFIRM,
            confirm_speech: catalog
                .get(lang, PROMPT_READBACK_CONFIRM_SPEECH)
                .map(|_| PROMPT_READBACK_CONFIRM_SPEECH),
        })
    }

    /// The address read-back (`email.readback_lead`, `email.readback_confirm_keys`,
    /// `email.readback_confirm` for a caller who may say yes).
    pub fn email_from_catalog(catalog: &Catalog, lang: Lang) -> Option<Readback> {
        catalog.get(lang, PROMPT_EMAIL_READBACK_CONFIRM)?;
        catalog.get(lang, PROMPT_EMAIL_READBACK_CONFIRM_KEYS)?;
        Some(Readback {
            lead: catalog.get(lang, PROMPT_EMAIL_READBACK_LEAD)?.text.clone(),
            confirm: PROMPT_EMAIL_READBACK_CONFIRM_KEYS,
            confirm_speech: Some(PROMPT_EMAIL_READBACK_CONFIRM),
        })
    }

    /// The dynamic text for a 10-digit number: "You entered {phone 202-555-0123}." (markup
    /// `phone` reads it as "2 0 2, 5 5 5, 0 1 2 3").
    pub fn text(&self, number: &str) -> String {
        let grouped = match (number.get(..3), number.get(3..6), number.get(6..)) {
            (Some(a), Some(b), Some(c)) if number.len() == 10 => format!("{a}-{b}-{c}"),
            // Only validated numbers reach here; anything else is still read digit by digit.
            _ => number.to_string(),
        };
        format!("{} {{phone {grouped}}}.", self.lead.trim())
    }

    /// The dynamic text of what `kind` entry heard: the lead and the value.
    pub fn text_for(&self, kind: Kind, lang: Lang, value: &str) -> String {
        match kind {
            Kind::Phone => self.text(value),
            Kind::Email => format!(
                "{} {}.",
                self.lead.trim(),
                crate::nlu::spell::spoken_email(lang, value)
            ),
        }
    }

    /// The confirmation prompt for a caller who may speak (`speech`) or only key.
    pub fn confirm_prompt(&self, speech: bool) -> &'static str {
        match (self.confirm_speech, speech) {
            (Some(id), true) => id,
            _ => self.confirm,
        }
    }
}

/// What the shell (through the parent flow) must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Play catalog prompts back to back, replacing whatever is playing.
    PlayPrompts {
        prompts: Vec<PromptRef>,
        barge_in: bool,
    },
    /// Play dynamic text (prompt markup; `speech::dynamic` renders it), then the catalog
    /// prompts `then`, replacing whatever is playing. It holds the number: never log it in clear.
    PlayText {
        lang: Lang,
        text: Pii<String>,
        then: Vec<PromptRef>,
        barge_in: bool,
    },
    /// Stop the current playback at once (a key barged in).
    StopPlayback,
    /// Listen for a spoken answer of this kind (replacing any listening in progress).
    Listen(Listen),
    /// The caller confirmed this number (ten digits, no country code) or address.
    Done(Pii<String>),
    /// No valid, confirmed number after `max_attempts` (or too many clears).
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Keys are being collected.
    Collecting { digits: String },
    /// The read-back asks the caller to confirm `number`.
    Confirming { number: Pii<String> },
    /// `Done` or `Cancelled` was emitted; inputs are ignored.
    Finished,
}

/// One number or address entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberEntry {
    config: EntryConfig,
    kind: Kind,
    /// The caller may answer by voice (at least yes or no at the read-back).
    speech: bool,
    /// An address may be spelled aloud (the recognizer can spell); else on the keypad.
    spell_aloud: bool,
    /// The caller is talking (between a speech start and what was heard): no timer runs.
    talking: bool,
    lang: Lang,
    readback: Readback,
    state: State,
    failures: u32,
    clears: u32,
    /// A prompt this machine started is playing (no timer runs meanwhile).
    playing: bool,
    /// The number ended by its length: a `#` right after it is the caller following the
    /// request's "then press pound", not a new answer.
    swallow_hash: bool,
    deadline: Option<Instant>,
    outputs: VecDeque<Output>,
}

impl NumberEntry {
    /// Start a keyed number entry: the request to key the number is queued at once.
    pub fn new(config: EntryConfig, lang: Lang, readback: Readback) -> NumberEntry {
        NumberEntry::start(Kind::Phone, config, lang, readback, false, false)
    }

    /// Start an entry of `kind`. With `speech` the caller may also answer by voice: say a
    /// number digit by digit, answer the read-back; an address is spelled aloud only with
    /// `spell_aloud` (the recognizer can spell), else on the keypad.
    pub fn start(
        kind: Kind,
        config: EntryConfig,
        lang: Lang,
        readback: Readback,
        speech: bool,
        spell_aloud: bool,
    ) -> NumberEntry {
        let mut entry = NumberEntry {
            config,
            kind,
            speech,
            spell_aloud,
            talking: false,
            lang,
            readback,
            state: State::Collecting {
                digits: String::new(),
            },
            failures: 0,
            clears: 0,
            playing: false,
            swallow_hash: false,
            deadline: None,
            outputs: VecDeque::new(),
        };
        entry.ask(None);
        entry
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// `Done` or `Cancelled` has been emitted.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The trailing silence that ends a spoken answer while collecting.
    pub fn spoken_silence_ms(&self) -> u32 {
        self.config.spoken_silence_ms
    }

    /// The caller started talking: barge-in, and no timer while they talk.
    pub fn handle_speech_start(&mut self, _now: Instant) {
        if !self.wants_speech() {
            return;
        }
        self.talking = true;
        self.deadline = None;
        if self.playing {
            self.playing = false;
            self.outputs.push_back(Output::StopPlayback);
        }
    }

    /// What the caller said (an empty text: noise, or nothing the grammar knows).
    pub fn handle_heard(&mut self, now: Instant, heard: &Heard) {
        if self.state == State::Finished || !self.speech {
            return;
        }
        let was_talking = std::mem::take(&mut self.talking);
        let text = heard.text.trim();
        if text.is_empty() && self.playing && !was_talking {
            // A noise that did not stop the prompt: keep listening.
            self.listen();
            return;
        }
        if !self.wants_speech() {
            // Keys are being pressed (or only keys are asked for): speech is ignored, and
            // the keys' timer runs on.
            if self.deadline.is_none() && !self.playing {
                self.arm(now);
            }
            self.listen();
            return;
        }
        if self.playing {
            self.playing = false;
            self.outputs.push_back(Output::StopPlayback);
        }
        self.deadline = None;
        match &self.state {
            State::Collecting { .. } => {
                let value = match self.kind {
                    Kind::Phone => crate::nlu::spell::phone(text).and_then(|n| nanp_number(&n)),
                    Kind::Email => crate::nlu::spell::email(text),
                };
                match value {
                    Some(v) => {
                        self.state = State::Confirming {
                            number: Pii::new(v),
                        };
                        self.read_back();
                    }
                    None => {
                        if self.fail() {
                            self.ask(Some(self.prompt_invalid()));
                        }
                    }
                }
            }
            State::Confirming { number } => {
                let act = heard.act.as_deref();
                if act == Some("yes") || heard.digit == Some('1') {
                    let number = number.clone();
                    self.finish(Output::Done(number));
                } else if act == Some("no") || heard.digit == Some('2') {
                    if self.fail() {
                        self.state = State::Collecting {
                            digits: String::new(),
                        };
                        self.ask(None);
                    }
                } else if self.fail() {
                    self.read_back();
                }
            }
            State::Finished => {}
        }
    }

    /// Recognition is unavailable: the entry goes on with keys. Nothing keyed yet: the request
    /// is said again in its keypad form, after `lead` (the shell's apology).
    pub fn handle_speech_unavailable(&mut self, now: Instant, lead: &str) {
        if self.state == State::Finished || !self.speech {
            return;
        }
        let by_voice = self.collect_by_voice();
        self.talking = false;
        self.speech = false;
        match &self.state {
            // The request asked for a spoken answer: say it again in its keypad form.
            State::Collecting { digits } if digits.is_empty() && by_voice => {
                self.ask(Some(lead));
            }
            State::Confirming { .. } => self.read_back(),
            // Keys were being pressed: their timer goes on (a talker may have stopped it).
            _ if !self.playing && self.deadline.is_none() => self.arm(now),
            _ => {}
        }
    }

    fn inter_key_timeout(&self) -> Duration {
        ms(match self.kind {
            Kind::Phone => self.config.inter_digit_timeout_ms,
            Kind::Email => self.config.spell_key_timeout_ms,
        })
    }

    /// The value itself may be given by voice (a number said, an address spelled aloud).
    fn collect_by_voice(&self) -> bool {
        self.speech && (self.kind == Kind::Phone || self.spell_aloud)
    }

    fn prompt_ask(&self) -> &'static str {
        match (self.kind, self.collect_by_voice()) {
            (Kind::Email, true) => PROMPT_EMAIL_ASK,
            (Kind::Email, false) => PROMPT_EMAIL_ASK_KEYS,
            (Kind::Phone, true) => PROMPT_ASK_SPEECH,
            (Kind::Phone, false) => PROMPT_ASK,
        }
    }

    fn prompt_invalid(&self) -> &'static str {
        match self.kind {
            Kind::Email => PROMPT_EMAIL_INVALID,
            Kind::Phone => PROMPT_INVALID,
        }
    }

    fn prompt_no_input(&self) -> &'static str {
        match self.kind {
            Kind::Email => PROMPT_EMAIL_NO_INPUT,
            Kind::Phone => PROMPT_NO_INPUT,
        }
    }

    /// Listen for what the current state expects, when the caller may speak.
    fn listen(&mut self) {
        if !self.speech {
            return;
        }
        let listen = match (&self.state, self.kind) {
            (State::Collecting { .. }, _) if !self.collect_by_voice() => return,
            (State::Collecting { .. }, Kind::Phone) => Listen::Digits,
            (State::Collecting { .. }, Kind::Email) => Listen::Spelling,
            (State::Confirming { .. }, _) => Listen::Choices,
            (State::Finished, _) => return,
        };
        self.outputs.push_back(Output::Listen(listen));
    }

    /// A DTMF key (`0`-`9`, `*`, `#`; others are ignored).
    pub fn handle_digit(&mut self, now: Instant, key: char) {
        if self.state == State::Finished || !matches!(key, '0'..='9' | '*' | '#') {
            return;
        }
        let swallow = std::mem::take(&mut self.swallow_hash);
        // At the read-back `#` means nothing: ignored rather than counted as a wrong key.
        if key == '#' && (swallow || matches!(self.state, State::Confirming { .. })) {
            return;
        }
        if self.playing {
            self.playing = false;
            self.outputs.push_back(Output::StopPlayback);
        }
        self.deadline = None;
        match &mut self.state {
            State::Collecting { digits } => match key {
                '*' => {
                    self.clears += 1;
                    if self.clears > MAX_CLEARS {
                        self.finish(Output::Cancelled);
                    } else {
                        self.state = State::Collecting {
                            digits: String::new(),
                        };
                        self.ask(None);
                    }
                }
                '#' => self.submit(),
                d => {
                    digits.push(d);
                    let whole = match self.kind {
                        Kind::Phone => digits.len() >= expected_len(digits),
                        // Two keys per character; no address is longer than 254.
                        Kind::Email => digits.len() >= 2 * 254,
                    };
                    if whole {
                        self.swallow_hash = self.kind == Kind::Phone;
                        self.submit();
                    } else {
                        self.deadline = Some(now + self.inter_key_timeout());
                    }
                }
            },
            State::Confirming { number } => match key {
                '1' => {
                    let number = number.clone();
                    self.finish(Output::Done(number));
                }
                '2' | '*' => {
                    if self.fail() {
                        self.state = State::Collecting {
                            digits: String::new(),
                        };
                        self.ask(None);
                    }
                }
                _ => {
                    if self.fail() {
                        self.read_back();
                    }
                }
            },
            State::Finished => {}
        }
    }

    /// The prompt this machine last asked for has finished (not when it was stopped).
    pub fn handle_playback_done(&mut self, now: Instant) {
        if !self.playing {
            return;
        }
        self.playing = false;
        self.arm(now);
    }

    /// Start the wait for the caller's next input, as the state has it (nothing playing).
    fn arm(&mut self, now: Instant) {
        self.deadline = match &self.state {
            State::Collecting { digits } if digits.is_empty() => {
                Some(now + ms(self.config.first_digit_timeout_ms))
            }
            State::Collecting { .. } => Some(now + self.inter_key_timeout()),
            State::Confirming { .. } => Some(now + ms(self.config.confirm_timeout_ms)),
            State::Finished => None,
        };
    }

    /// A spoken answer is what the current state waits for.
    fn wants_speech(&self) -> bool {
        self.speech
            && match &self.state {
                State::Collecting { digits } => digits.is_empty() && self.collect_by_voice(),
                State::Confirming { .. } => true,
                State::Finished => false,
            }
    }

    /// Early or stale calls are harmless: only an expired deadline counts.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(at) if now >= at => self.deadline = None,
            _ => return,
        }
        match &self.state {
            // Keys then silence: what was keyed is the whole answer.
            State::Collecting { digits } if !digits.is_empty() => self.submit(),
            State::Collecting { .. } => {
                if self.fail() {
                    self.ask(Some(self.prompt_no_input()));
                }
            }
            State::Confirming { .. } => {
                if self.fail() {
                    self.read_back();
                }
            }
            State::Finished => {}
        }
    }

    /// The keys collected so far end here: validate, then read back or ask again.
    fn submit(&mut self) {
        let State::Collecting { digits } = &self.state else {
            return;
        };
        if digits.is_empty() {
            // `#` alone: nothing entered.
            if self.fail() {
                self.ask(Some(self.prompt_no_input()));
            }
            return;
        }
        let value = match self.kind {
            Kind::Phone => nanp_number(digits),
            Kind::Email => crate::nlu::spell::keypad_email(digits),
        };
        match value {
            Some(number) => {
                self.state = State::Confirming {
                    number: Pii::new(number),
                };
                self.read_back();
            }
            None => {
                if self.fail() {
                    self.state = State::Collecting {
                        digits: String::new(),
                    };
                    self.ask(Some(self.prompt_invalid()));
                }
            }
        }
    }

    /// Count a failed attempt; false (and `Cancelled` emitted) when none are left.
    fn fail(&mut self) -> bool {
        self.failures += 1;
        if self.failures >= self.config.max_attempts {
            self.finish(Output::Cancelled);
            false
        } else {
            true
        }
    }

    fn ask(&mut self, before: Option<&str>) {
        let prompts = before
            .into_iter()
            .chain([self.prompt_ask()])
            .map(|id| PromptRef::new(self.lang, id))
            .collect();
        self.play(Output::PlayPrompts {
            prompts,
            barge_in: true,
        });
        self.listen();
    }

    fn read_back(&mut self) {
        let State::Confirming { number } = &self.state else {
            return;
        };
        let text = Pii::new(
            self.readback
                .text_for(self.kind, self.lang, number.expose()),
        );
        let then = vec![PromptRef::new(
            self.lang,
            self.readback.confirm_prompt(self.speech),
        )];
        self.play(Output::PlayText {
            lang: self.lang,
            text,
            then,
            barge_in: true,
        });
        self.listen();
    }

    fn play(&mut self, output: Output) {
        self.playing = true;
        self.deadline = None;
        self.outputs.push_back(output);
    }

    fn finish(&mut self, output: Output) {
        self.state = State::Finished;
        self.talking = false;
        self.playing = false;
        self.deadline = None;
        self.outputs.push_back(output);
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Keys that make a whole number: 11 with the country code 1 (no area code starts with 1),
/// else 10.
fn expected_len(digits: &str) -> usize {
    if digits.starts_with('1') { 11 } else { 10 }
}

/// A North American number a text message can reach: ten digits (after an optional leading
/// 1), area code and exchange both `[2-9]XX` and neither an `N11` service code (911, 411).
pub fn nanp_number(keys: &str) -> Option<String> {
    UsPhone::from_digits(keys).map(|p| p.national().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readback() -> Readback {
        Readback {
            lead: "You entered".into(),
            confirm: PROMPT_READBACK_CONFIRM,
            confirm_speech: Some(PROMPT_READBACK_CONFIRM_SPEECH),
        }
    }

    fn entry(config: EntryConfig) -> (NumberEntry, Instant) {
        (
            NumberEntry::new(config, Lang::En, readback()),
            Instant::now(),
        )
    }

    fn drain(e: &mut NumberEntry) -> Vec<Output> {
        std::iter::from_fn(|| e.poll_output()).collect()
    }

    fn ids(out: &[Output]) -> Vec<String> {
        out.iter()
            .flat_map(|o| match o {
                Output::PlayPrompts { prompts, .. } => {
                    prompts.iter().map(|p| p.id.clone()).collect()
                }
                Output::PlayText { .. } => vec!["<text>".to_string()],
                Output::StopPlayback => vec!["<stop>".to_string()],
                Output::Listen(l) => vec![format!("<listen {l:?}>")],
                Output::Done(n) => vec![format!("done:{}", n.expose())],
                Output::Cancelled => vec!["cancelled".to_string()],
            })
            .collect()
    }

    fn keys(e: &mut NumberEntry, now: Instant, s: &str) {
        for k in s.chars() {
            e.handle_digit(now, k);
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_valid_number_is_read_back_grouped_and_confirmed_with_1() {
        let (mut e, t) = entry(EntryConfig::default());
        assert_eq!(ids(&drain(&mut e)), ["entry.ask"]);
        assert_eq!(e.poll_timeout(), None, "no timer while the request plays");
        e.handle_playback_done(t);
        assert_eq!(e.poll_timeout(), Some(t + 8 * S));
        keys(&mut e, t + S, "20255");
        assert!(
            drain(&mut e).is_empty(),
            "nothing until the number is whole"
        );
        assert_eq!(e.poll_timeout(), Some(t + 6 * S), "inter-digit timer");
        keys(&mut e, t + 2 * S, "50123");
        let out = drain(&mut e);
        let Some(Output::PlayText {
            lang,
            text,
            then,
            barge_in,
        }) = out.first()
        else {
            panic!("{out:?}")
        };
        assert_eq!(*lang, Lang::En);
        assert!(*barge_in);
        // The confirmation is the keypad one (no speech here), played after the number.
        assert_eq!(then, &[PromptRef::new(Lang::En, PROMPT_READBACK_CONFIRM)]);
        assert_eq!(text.expose(), "You entered {phone 202-555-0123}.");
        assert!(
            !format!("{text:?}").contains("555-0123"),
            "redacted in logs"
        );
        // The text is valid markup and reads the digits in 3-3-4 groups.
        let r = crate::prompts::markup::render(text.expose(), Lang::En).unwrap();
        assert!(r.ssml.contains("2 0 2, 5 5 5, 0 1 2 3"), "{}", r.ssml);
        e.handle_playback_done(t + 8 * S);
        assert_eq!(e.poll_timeout(), Some(t + 14 * S));
        e.handle_digit(t + 9 * S, '1');
        assert_eq!(ids(&drain(&mut e)), ["done:2025550123"]);
        assert!(e.is_finished());
        assert_eq!(e.poll_timeout(), None);
        e.handle_digit(t + 10 * S, '2');
        e.handle_timeout(t + 60 * S);
        assert!(drain(&mut e).is_empty(), "inputs after the end are ignored");
    }

    #[test]
    fn country_code_hash_and_barge_in() {
        let (mut e, t) = entry(EntryConfig::default());
        drain(&mut e);
        // Keys during the request stop it; 1 + ten digits is whole at eleven.
        keys(&mut e, t, "12025550123");
        let out = ids(&drain(&mut e));
        assert_eq!(out, ["<stop>", "<text>"]);
        keys(&mut e, t, "1");
        assert_eq!(ids(&drain(&mut e)), ["<stop>", "done:2025550123"]);

        // Ten digits then `#` (as the request says): the `#` is not a wrong key at the
        // read-back, and `#` there never costs an attempt.
        let (mut e, t) = entry(EntryConfig {
            max_attempts: 1,
            ..EntryConfig::default()
        });
        drain(&mut e);
        e.handle_playback_done(t);
        keys(&mut e, t, "2025550123#");
        assert_eq!(ids(&drain(&mut e)), ["<text>"]);
        keys(&mut e, t, "##");
        assert!(drain(&mut e).is_empty());
        keys(&mut e, t, "1");
        assert_eq!(ids(&drain(&mut e)), ["<stop>", "done:2025550123"]);

        // `#` ends early: nine digits then # is an invalid number.
        let (mut e, t) = entry(EntryConfig::default());
        drain(&mut e);
        e.handle_playback_done(t);
        keys(&mut e, t, "202555012");
        keys(&mut e, t, "#");
        assert_eq!(
            ids(&drain(&mut e)),
            ["entry.invalid", "entry.ask"],
            "nine digits"
        );
    }

    #[test]
    fn an_invalid_number_is_asked_again_and_nothing_is_done() {
        for bad in [
            "1115550123",
            "0125550123",
            "9115550123",
            "2021110123",
            "2020550123",
            "20255501",
        ] {
            let (mut e, t) = entry(EntryConfig::default());
            drain(&mut e);
            e.handle_playback_done(t);
            keys(&mut e, t, bad);
            keys(&mut e, t, "#");
            let out = drain(&mut e);
            assert_eq!(ids(&out), ["entry.invalid", "entry.ask"], "{bad}");
            assert!(out.iter().all(|o| !matches!(o, Output::Done(_))), "{bad}");
            // The next try starts from nothing.
            e.handle_playback_done(t + S);
            keys(&mut e, t + 2 * S, "2025550123");
            assert_eq!(ids(&drain(&mut e)), ["<text>"], "{bad}");
        }
    }

    #[test]
    fn star_clears_what_was_keyed() {
        let (mut e, t) = entry(EntryConfig::default());
        drain(&mut e);
        e.handle_playback_done(t);
        keys(&mut e, t, "9999*");
        assert_eq!(ids(&drain(&mut e)), ["entry.ask"]);
        assert_eq!(e.poll_timeout(), None, "the request plays again, no timer");
        e.handle_playback_done(t + S);
        keys(&mut e, t + S, "2025550123");
        let out = drain(&mut e);
        let Some(Output::PlayText { text, .. }) = out.first() else {
            panic!("{out:?}")
        };
        assert!(text.expose().contains("{phone 202-555-0123}"));
        // `*` at the read-back re-enters (and costs an attempt).
        e.handle_digit(t + 2 * S, '*');
        assert_eq!(ids(&drain(&mut e)), ["<stop>", "entry.ask"]);
        // Clearing is not a loop without end (one clear was used above).
        for _ in 1..MAX_CLEARS {
            e.handle_digit(t + 3 * S, '*');
        }
        assert!(!e.is_finished());
        e.handle_digit(t + 3 * S, '*');
        assert_eq!(
            ids(&drain(&mut e)).last().map(String::as_str),
            Some("cancelled")
        );
    }

    #[test]
    fn silence_asks_again_then_gives_up() {
        let (mut e, t) = entry(EntryConfig::default());
        drain(&mut e);
        e.handle_playback_done(t);
        e.handle_timeout(t + 7 * S);
        assert!(drain(&mut e).is_empty(), "early timeouts do nothing");
        e.handle_timeout(t + 8 * S);
        assert_eq!(ids(&drain(&mut e)), ["entry.no_input", "entry.ask"]);
        e.handle_playback_done(t + 10 * S);
        e.handle_timeout(t + 18 * S);
        assert_eq!(ids(&drain(&mut e)), ["entry.no_input", "entry.ask"]);
        e.handle_playback_done(t + 20 * S);
        e.handle_timeout(t + 28 * S);
        assert_eq!(
            ids(&drain(&mut e)),
            ["cancelled"],
            "three attempts by default"
        );
        assert!(e.is_finished());
    }

    #[test]
    fn an_inter_digit_pause_takes_what_was_keyed() {
        let (mut e, t) = entry(EntryConfig::default());
        drain(&mut e);
        e.handle_playback_done(t);
        keys(&mut e, t + S, "202");
        e.handle_timeout(t + 5 * S);
        assert!(drain(&mut e).iter().all(|o| *o == Output::StopPlayback));
        e.handle_timeout(t + 6 * S);
        assert_eq!(ids(&drain(&mut e)), ["entry.invalid", "entry.ask"]);
    }

    #[test]
    fn the_read_back_repeats_on_silence_or_a_wrong_key_and_2_re_enters() {
        let (mut e, t) = entry(EntryConfig {
            max_attempts: 4,
            ..EntryConfig::default()
        });
        drain(&mut e);
        keys(&mut e, t, "2025550123");
        drain(&mut e);
        e.handle_playback_done(t + 5 * S);
        e.handle_timeout(t + 11 * S);
        assert_eq!(ids(&drain(&mut e)), ["<text>"], "silence: read back again");
        e.handle_digit(t + 12 * S, '7');
        assert_eq!(
            ids(&drain(&mut e)),
            ["<stop>", "<text>"],
            "wrong key: again"
        );
        e.handle_digit(t + 13 * S, '2');
        assert_eq!(ids(&drain(&mut e)), ["<stop>", "entry.ask"]);
        e.handle_playback_done(t + 14 * S);
        keys(&mut e, t + 15 * S, "3125550199");
        let out = drain(&mut e);
        let Some(Output::PlayText { text, .. }) = out.first() else {
            panic!("{out:?}")
        };
        assert!(text.expose().contains("312-555-0199"), "the new number");
        e.handle_digit(t + 16 * S, '2');
        assert_eq!(
            ids(&drain(&mut e)),
            ["<stop>", "cancelled"],
            "fourth failure"
        );
    }

    #[test]
    fn the_readback_texts_come_from_the_catalog() {
        let (_, sources) = crate::prompts::test_files::shipped_sources();
        let catalog = Catalog::parse(&sources).unwrap();
        for lang in Lang::ALL {
            for id in PROMPT_IDS {
                assert!(catalog.get(lang, id).is_some(), "{lang:?} {id}");
            }
            let r = Readback::from_catalog(&catalog, lang).unwrap();
            let text = r.text("2025550123");
            let rendered = crate::prompts::markup::render(&text, lang).unwrap();
            assert!(
                rendered.display.contains("202-555-0123"),
                "{}",
                rendered.display
            );
        }
        assert!(Readback::from_catalog(&Catalog::default(), Lang::En).is_none());
    }

    #[test]
    fn nanp_agrees_with_the_slot_parser_on_valid_numbers() {
        for n in ["2025550134", "12025550134", "8003755283", "3125550199"] {
            let ours = nanp_number(n).unwrap();
            assert_eq!(Some(ours), crate::nlu::slots::phone(n), "{n}");
        }
        for n in [
            "",
            "202555013",
            "202555013x",
            "22025550134",
            "02025550134",
            "+2025550134",
        ] {
            assert_eq!(nanp_number(n), None, "{n}");
        }
    }

    #[test]
    fn random_inputs_never_panic_and_only_valid_numbers_are_done() {
        // A small xorshift: deterministic "fuzz" over keys, speech, silences and playback ends,
        // for numbers and addresses, keys only and by voice.
        let said = [
            "",
            "yes",
            "no",
            "two oh two five five five zero one two three",
            "j o h n at gmail dot com",
            "j o h n at gmail",
            "[unk]",
            "one",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..600 {
            let kind = if round % 2 == 0 {
                Kind::Phone
            } else {
                Kind::Email
            };
            let speech = round % 3 != 0;
            let mut e = NumberEntry::start(
                kind,
                EntryConfig::default(),
                Lang::En,
                readback(),
                speech,
                round % 4 == 1,
            );
            let mut t = Instant::now();
            for _ in 0..400 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t += Duration::from_millis(x % 9000);
                match x % 9 {
                    0 => e.handle_playback_done(t),
                    1 => e.handle_timeout(t),
                    2 => e.handle_speech_start(t),
                    3 => {
                        let text = said[(x >> 8) as usize % said.len()];
                        let heard = Heard {
                            text: text.into(),
                            act: matches!(text, "yes" | "no").then(|| text.to_string()),
                            digit: (text == "one").then_some('1'),
                            ..Heard::default()
                        };
                        e.handle_heard(t, &heard);
                    }
                    4 if x % 7 == 0 => e.handle_speech_unavailable(t, "speech_fallback"),
                    _ => e.handle_digit(t, b"0123456789*#A"[(x >> 8) as usize % 13] as char),
                }
                for o in drain(&mut e) {
                    if let Output::Done(n) = o {
                        match kind {
                            Kind::Phone => assert!(nanp_number(n.expose()).is_some()),
                            Kind::Email => assert!(n.expose().contains('@')),
                        }
                    }
                }
                if e.is_finished() {
                    break;
                }
                // A waiting entry always has a way on: a timer, or a prompt whose end it awaits.
                assert!(e.poll_timeout().is_some() || e.playing || e.talking);
            }
        }
    }

    #[test]
    fn speech_heard_while_keys_are_pressed_leaves_the_keys_timer_running() {
        let (mut e, t) = (
            NumberEntry::start(
                Kind::Phone,
                EntryConfig::default(),
                Lang::En,
                readback(),
                true,
                false,
            ),
            Instant::now(),
        );
        drain(&mut e);
        e.handle_playback_done(t);
        keys(&mut e, t, "202");
        let timer = e.poll_timeout();
        assert!(timer.is_some());
        e.handle_heard(
            t,
            &Heard {
                text: "two oh two".into(),
                ..Heard::default()
            },
        );
        assert_eq!(e.poll_timeout(), timer, "the inter-digit timer survives");
        keys(&mut e, t, "5550123");
        // The speech was ignored (listening goes on); the keys complete the number.
        assert_eq!(
            ids(&drain(&mut e)),
            ["<listen Digits>", "<text>", "<listen Choices>"]
        );
    }
}
