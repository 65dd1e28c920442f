//! The call flow: a sans-IO engine that turns caller events (digits, end of playback, timeouts)
//! into actions (play prompts, stop playback, hang up), with time passed in.
//!
//! The menus are data ([`script::Script`]): the engine interprets the table and never names a
//! particular menu, so adding or reordering options is a change of data, not of control flow.
//! Shape (STYLE.md §1): `handle_event(now, ..)` / `handle_timeout(now)` in,
//! `poll_action()` / `poll_timeout()` out.

pub mod context;
pub mod entry;
pub mod link;
pub mod script;
pub mod text_line;
pub mod tty;

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::nlu::{Decision, SpeechEvidence};
use crate::types::Lang;
pub use context::{CallMode, TransferContext};
pub use script::{Goto, Listen, MenuId, Script};

/// Every prompt id the flow can ask for, in every language: the catalog must have each one.
pub fn required_prompts() -> Vec<String> {
    let mut ids: Vec<String> = Script::standard()
        .prompt_ids()
        .into_iter()
        .map(String::from)
        .collect();
    ids.extend(
        crate::intents::INTENTS
            .iter()
            .flat_map(|i| [format!("answer.{i}"), format!("confirm.{i}")]),
    );
    ids
}

/// What the flow needs to know from the configuration.
#[derive(Clone, Debug)]
pub struct FlowConfig {
    /// Silence after a menu prompt before a no-input retry.
    pub no_input_timeout: Duration,
    /// No-input or no-match retries allowed in one menu before goodbye.
    pub max_retries: u32,
    /// Intents whose answer has a link the IVR can text; offered only when `sms_to_caller`.
    pub sms_links: HashSet<String>,
    /// The caller's number can receive a text message (a valid US number).
    pub sms_to_caller: bool,
    /// Intents a live agent can take right now, per language: the agent queue's SIP URI (the
    /// routing policy's decision at the call's start: tier, language, business hours).
    pub transfers: std::collections::HashMap<(Lang, String), Transfer>,
    /// Languages the caller can speak in (a recognizer serves them); the others use keys only.
    pub speech: HashSet<Lang>,
    /// Languages where an email address may be spelled aloud (the recognizer can spell); in
    /// the others it is spelled on the keypad.
    pub spelling: HashSet<Lang>,
    /// Trailing silence that ends a spoken answer: short for closed choices ("yes"), longer
    /// for an open question, where callers pause mid-sentence.
    pub choice_silence_ms: u32,
    pub question_silence_ms: u32,
    /// Keyed number entry (a number to text the link to).
    pub entry: entry::EntryConfig,
    /// The read-back texts per language (from the prompt catalog); without one, no entry.
    pub readbacks: Vec<(Lang, entry::Readback)>,
    /// The email address read-back texts per language; without one, no link by email.
    pub email_readbacks: Vec<(Lang, entry::Readback)>,
    /// Intents a live agent would take if the center were open (the policy's after-hours
    /// decision): their answer says when live help is available instead of offering it.
    pub after_hours: HashSet<(Lang, String)>,
    /// When live help opens next, per language, as the sentence to say (from the calendar);
    /// without it the `after_hours` prompt's general hours are said.
    pub next_open: Vec<(Lang, String)>,
    /// The caller's language is known before the call starts (`ivr call --lang`, a
    /// language-specific number): skip the language menu.
    pub start_lang: Option<Lang>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            no_input_timeout: Duration::from_secs(6),
            max_retries: 3,
            sms_links: HashSet::new(),
            sms_to_caller: false,
            transfers: std::collections::HashMap::new(),
            speech: HashSet::new(),
            spelling: HashSet::new(),
            choice_silence_ms: 500,
            question_silence_ms: 800,
            start_lang: None,
            after_hours: HashSet::new(),
            next_open: Vec::new(),
            entry: entry::EntryConfig::default(),
            readbacks: Vec::new(),
            email_readbacks: Vec::new(),
        }
    }
}

/// A transfer the policy offers for an intent right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The agent queue's SIP URI.
    pub queue_uri: String,
    /// Tier 2: ask for the text-ahead notification consent first (sent only after a yes).
    pub ask_text_ahead: bool,
}

/// A prompt to play: its id in the catalog of one language.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PromptRef {
    pub lang: Lang,
    pub id: String,
    /// Text rendered on demand instead of the catalog's (markup allowed; never personal data —
    /// read-backs of what the caller keyed go through `Action::PlayText`).
    #[serde(skip)]
    pub text: Option<String>,
}

impl PromptRef {
    pub fn new(lang: Lang, id: impl Into<String>) -> Self {
        PromptRef {
            lang,
            id: id.into(),
            text: None,
        }
    }

    /// A prompt made of text known only during the call (when live help opens next).
    pub fn dynamic(lang: Lang, id: impl Into<String>, text: String) -> Self {
        PromptRef {
            lang,
            id: id.into(),
            text: Some(text),
        }
    }
}

/// Inputs from the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The call is established (ACK received): start the conversation.
    Start,
    /// A DTMF key, from RFC 4733 or in-band detection.
    Digit(char),
    /// The playback requested by the last `Play` action has finished (not when it was stopped).
    PlaybackDone,
    /// The caller hung up or vanished; no more actions will be executed except bookkeeping.
    RemoteHangup,
    /// The shell stored the link durably in the outbox (`Ok`), or could not (`Err`).
    LinkQueued(bool),
    /// The transfer ended: the agent's side took the call (`true`) or it failed.
    TransferDone(bool),
    /// The caller started talking (the recognizer's endpointer heard speech): barge-in.
    SpeechStart,
    /// What the caller said, understood by the shell (see [`Heard`]).
    Heard(Heard),
    /// Recognition is unavailable (overloaded, no recognizer): keys only from now on.
    SpeechUnavailable,
}

/// One spoken answer: the transcript and what the grammars make of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Heard {
    pub text: String,
    /// A spoken menu choice ("two", "dos").
    pub digit: Option<char>,
    /// A dialog act ("yes", "repeat", "spanish").
    pub act: Option<String>,
    /// The question's intent and the classifier's calibrated confidence.
    pub intent: Option<String>,
    pub confidence: f32,
    /// The recognizer's confidence in the transcript, when it was spoken.
    pub asr_confidence: Option<f32>,
    /// What to do with it as a question: both the classifier and the recognizer must be sure
    /// for an answer without confirmation (`nlu::decide`).
    pub decision: Decision,
}

impl Eq for Heard {}

impl Heard {
    /// Understand a typed text (or a transcript without the recognizer's evidence).
    pub fn understand(nlu: &crate::nlu::Nlu, lang: Lang, text: &str) -> Heard {
        Heard::understand_with(nlu, lang, text, None)
    }

    /// Understand a transcript with the recognizer's evidence.
    pub fn understand_spoken(
        nlu: &crate::nlu::Nlu,
        lang: Lang,
        text: &str,
        evidence: SpeechEvidence,
    ) -> Heard {
        Heard::understand_with(nlu, lang, text, Some(evidence))
    }

    fn understand_with(
        nlu: &crate::nlu::Nlu,
        lang: Lang,
        text: &str,
        evidence: Option<SpeechEvidence>,
    ) -> Heard {
        let text = text.trim();
        if text.is_empty() {
            return Heard::default();
        }
        let digit = nlu
            .menu_digit(lang, text)
            .and_then(|d| char::from_digit(u32::from(d), 10));
        let act = nlu.act(lang, text).map(|(a, _)| a);
        let c = nlu.classify(lang, text);
        Heard {
            text: text.to_string(),
            digit,
            act,
            decision: crate::nlu::decide::decide(&c, evidence),
            intent: c.intent,
            confidence: c.confidence,
            asr_confidence: evidence.map(|e| e.asr_confidence),
        }
    }
}

/// Outputs to the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Play these prompts back to back, replacing whatever is playing. `barge_in`: a digit (and
    /// later speech) may interrupt it.
    Play {
        prompts: Vec<PromptRef>,
        barge_in: bool,
    },
    /// Stop the current playback at once (barge-in).
    StopPlayback,
    /// End the call (BYE) once the shell has flushed what it is sending.
    Hangup,
    /// Text the link of `intent`'s answer to `to` (the caller's number when `None`). The shell
    /// answers with `Event::LinkQueued` once the message is durably stored, before anything says
    /// "sent".
    SendSms {
        intent: String,
        to: Option<crate::pii::Pii<String>>,
    },
    /// Email the link of `intent`'s answer to the address the caller confirmed; answered with
    /// `Event::LinkQueued` like `SendSms`.
    SendEmail {
        intent: String,
        to: crate::pii::Pii<String>,
    },
    /// Play text rendered on demand (prompt markup: a read-back), then the catalog prompts
    /// `then`. It may hold personal data: never log it in clear. Ends with
    /// `Event::PlaybackDone` like `Play`.
    PlayText {
        lang: Lang,
        text: crate::pii::Pii<String>,
        then: Vec<PromptRef>,
        barge_in: bool,
    },
    /// Hand the call to a live agent (blind transfer by SIP REFER), once `transfer_start` has
    /// played. The shell answers with `Event::TransferDone`. `text_ahead`: the caller's answer
    /// to the text-ahead question (tier 2), `None` when not asked.
    Transfer {
        queue_uri: String,
        intent: String,
        lang: Lang,
        text_ahead: Option<bool>,
    },
    /// The caller said yes (key 1) to the text-ahead notification: store the consent.
    RecordConsent,
    /// Start listening for speech in `lang` (barge-in included, when the prompt allows it),
    /// replacing any listening in progress; the answer comes back as `Event::Heard`.
    Listen {
        lang: Lang,
        listen: Listen,
        trailing_silence_ms: u32,
    },
    /// Stop listening (a state with no spoken answer).
    StopListening,
}

/// How the call ended, as stored in the call record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The caller chose to end or the flow said goodbye after an answer.
    Completed,
    /// Too many no-input retries.
    NoInput,
    /// Too many invalid choices.
    NoMatch,
    /// The caller hung up first.
    CallerHangup,
    /// A live agent took the call.
    Transferred,
}

/// Where the conversation is. Each state holds only what it needs (STYLE.md §3).
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Not started yet.
    Idle,
    /// Playing a menu prompt or waiting for a key in it.
    Menu { menu: MenuId, waiting: bool },
    /// Waiting for the shell to store the link the offer (`Call::link`) sends.
    Sending,
    /// The caller gives the number to text the link to, or the address to email it to.
    Entry(Box<entry::NumberEntry>),
    /// Saying "please hold", then waiting for the transfer's outcome.
    Transferring { started: bool },
    /// Saying goodbye; hang up when the prompt ends.
    Goodbye,
    /// Hung up (by either side).
    Ended,
}

/// The record of what happened, for the call record and `ivr call`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Record {
    pub lang: Option<Lang>,
    /// Every key the caller pressed, in order.
    pub digits: String,
    /// Every prompt started, in order.
    pub prompts: Vec<PromptRef>,
    /// The intents answered, in order.
    pub intents: Vec<String>,
    /// The answer to the text-ahead question, when asked.
    pub text_ahead: Option<bool>,
    /// What the call did besides prompts: `send_link:sms:<intent>`.
    pub actions: Vec<String>,
    /// What the caller said, in order (as recognized).
    pub transcripts: Vec<String>,
    /// The confidence of the last question understood.
    pub confidence: Option<f32>,
    /// Every spoken or typed question and what was decided about it.
    pub understood: Vec<Understood>,
    pub outcome: Option<Outcome>,
}

/// One question as the call record keeps it: no text (the transcripts are kept apart,
/// redacted), only what was understood and how sure each side was.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Understood {
    pub intent: Option<String>,
    pub nlu_confidence: f32,
    pub asr_confidence: Option<f32>,
    pub decision: Decision,
}

/// One call's conversation.
pub struct Call {
    config: FlowConfig,
    script: &'static Script,
    state: State,
    lang: Lang,
    retries: u32,
    /// The answer last played, for "repeat".
    last_answer: Option<String>,
    /// Whether the current playback may be interrupted.
    barge_in: bool,
    playing: bool,
    no_input_at: Option<Instant>,
    /// Spoken answers are being listened for.
    listening: bool,
    /// The caller is talking (between `SpeechStart` and `Heard`).
    talking: bool,
    /// Recognition failed once: keys only for the rest of the call.
    speech_off: bool,
    /// The intent awaiting "did you ask about ...?".
    pending: Option<&'static str>,
    /// The link offer under way (`flow::link`): through the channel and caller-ID menus, the
    /// number or address entry, and the wait for the store.
    link: Option<link::LinkOffer>,
    actions: VecDeque<Action>,
    record: Record,
}

impl Call {
    pub fn new(config: FlowConfig) -> Call {
        Call {
            config,
            script: Script::standard(),
            state: State::Idle,
            lang: Lang::En,
            retries: 0,
            last_answer: None,
            barge_in: false,
            playing: false,
            no_input_at: None,
            listening: false,
            talking: false,
            speech_off: false,
            pending: None,
            link: None,
            actions: VecDeque::new(),
            record: Record::default(),
        }
    }

    /// The language chosen so far (English until the caller picks).
    pub fn lang(&self) -> Lang {
        self.lang
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Entry(e) => e.poll_timeout(),
            _ => self.no_input_at,
        }
    }

    fn in_entry(&self) -> bool {
        matches!(self.state, State::Entry(_))
    }

    /// Turn the number entry's outputs into the call's actions.
    fn pump_entry(&mut self) {
        loop {
            let State::Entry(e) = &mut self.state else {
                return;
            };
            let Some(out) = e.poll_output() else { return };
            let (kind, spoken_silence_ms) = (e.kind(), e.spoken_silence_ms());
            match out {
                entry::Output::PlayPrompts { prompts, barge_in } => self.play(prompts, barge_in),
                entry::Output::PlayText {
                    lang,
                    text,
                    then,
                    barge_in,
                } => {
                    // The record names the read-back, not the number in it.
                    self.record
                        .prompts
                        .push(PromptRef::new(lang, "entry.readback"));
                    self.record.prompts.extend(then.iter().cloned());
                    self.playing = true;
                    self.barge_in = barge_in;
                    self.actions.push_back(Action::PlayText {
                        lang,
                        text,
                        then,
                        barge_in,
                    });
                }
                entry::Output::StopPlayback => {
                    self.playing = false;
                    self.actions.push_back(Action::StopPlayback);
                }
                entry::Output::Listen(listen) => {
                    if self.speech_on() {
                        let trailing_silence_ms = match listen {
                            Listen::Digits | Listen::Spelling => spoken_silence_ms,
                            Listen::Question => self.config.question_silence_ms,
                            _ => self.config.choice_silence_ms,
                        };
                        self.listening = true;
                        self.talking = false;
                        self.actions.push_back(Action::Listen {
                            lang: self.lang,
                            listen,
                            trailing_silence_ms,
                        });
                    }
                }
                entry::Output::Done(value) => {
                    self.stop_listening();
                    let recipient = match kind {
                        entry::Kind::Phone => link::Recipient::phone(value.expose()),
                        entry::Kind::Email => link::Recipient::email(value.expose()),
                    };
                    let Some(mut offer) = self.link.take() else {
                        self.enter_menu(self.script.main, &[]);
                        continue;
                    };
                    let step = match recipient {
                        // The entry read the value back and the caller confirmed it: that is
                        // the offer's read-back, answered yes.
                        Some(r) => match offer.handle(link::Answer::Recipient(r)) {
                            link::Step::Confirm(_) => offer.handle(link::Answer::Yes),
                            step => step,
                        },
                        None => link::Step::GaveUp,
                    };
                    self.link = Some(offer);
                    self.link_step(step);
                }
                entry::Output::Cancelled => {
                    self.record.actions.push("entry_cancelled".into());
                    self.link = None;
                    self.enter_menu(self.after_answer_menu(), &[]);
                }
            }
        }
    }

    pub fn handle_event(&mut self, now: Instant, event: Event) {
        if self.state == State::Ended {
            return;
        }
        match event {
            Event::Start => {
                if self.state == State::Idle {
                    match self.config.start_lang {
                        Some(lang) => self.follow(Goto::Language(lang, self.script.main)),
                        None => self.enter_menu(self.script.start, &[]),
                    }
                }
            }
            Event::Digit(d) if self.in_entry() => {
                // The keys are the phone number: not in the record.
                if let State::Entry(e) = &mut self.state {
                    e.handle_digit(now, d);
                }
                self.pump_entry();
            }
            Event::PlaybackDone if self.in_entry() => {
                self.playing = false;
                if let State::Entry(e) = &mut self.state {
                    e.handle_playback_done(now);
                }
                self.pump_entry();
            }
            Event::SpeechStart if self.in_entry() => {
                if let State::Entry(e) = &mut self.state
                    && self.listening
                {
                    e.handle_speech_start(now);
                }
                self.pump_entry();
            }
            Event::Heard(h) if self.in_entry() => {
                // A spelled address or a spoken number is personal data: not in the record.
                self.listening = false;
                if let State::Entry(e) = &mut self.state {
                    e.handle_heard(now, &h);
                }
                self.pump_entry();
            }
            Event::SpeechUnavailable if self.in_entry() => {
                self.on_speech_unavailable();
                if let State::Entry(e) = &mut self.state {
                    e.handle_speech_unavailable(now, "speech_fallback");
                }
                self.pump_entry();
            }
            Event::Digit(d) => self.on_digit(now, d),
            Event::PlaybackDone => self.on_playback_done(now),
            Event::TransferDone(ok) => {
                if matches!(self.state, State::Transferring { .. }) {
                    if ok {
                        self.record.outcome.get_or_insert(Outcome::Transferred);
                        self.state = State::Ended;
                        self.no_input_at = None;
                    } else {
                        let lead = [PromptRef::new(self.lang, "transfer_failed")];
                        self.enter_menu(self.after_answer_menu(), &lead);
                    }
                }
            }
            Event::LinkQueued(ok) => {
                if self.state == State::Sending
                    && let Some(step) = self.link.as_mut().and_then(|l| l.handle_stored(ok))
                {
                    self.link = None;
                    self.link_step(step);
                }
            }
            Event::RemoteHangup => {
                self.record.outcome.get_or_insert(Outcome::CallerHangup);
                self.state = State::Ended;
                self.no_input_at = None;
            }
            Event::SpeechStart => self.on_speech_start(),
            Event::Heard(h) => self.on_heard(h),
            Event::SpeechUnavailable => self.on_speech_unavailable(),
        }
    }

    /// Whether the caller can answer by voice in the current language.
    fn speech_on(&self) -> bool {
        !self.speech_off && self.config.speech.contains(&self.lang)
    }

    fn on_speech_start(&mut self) {
        if !self.listening || !matches!(self.state, State::Menu { .. }) {
            return;
        }
        self.talking = true;
        // The caller is talking: no "I didn't hear you" while they do.
        self.no_input_at = None;
        if self.playing && self.barge_in {
            self.actions.push_back(Action::StopPlayback);
            self.playing = false;
        }
    }

    fn on_heard(&mut self, heard: Heard) {
        let was_talking = std::mem::take(&mut self.talking);
        let State::Menu { menu, .. } = self.state else {
            return;
        };
        if !self.listening {
            return;
        }
        if heard.text.is_empty() {
            // Noise or nothing the grammar knows. While the prompt still plays (a cough that
            // did not stop it) just keep listening; otherwise ask again.
            if self.playing && !was_talking {
                self.listen_for(menu);
            } else {
                self.retry(menu, "not_understood", Outcome::NoMatch);
            }
            return;
        }
        self.record.transcripts.push(heard.text.clone());
        if self.playing {
            self.actions.push_back(Action::StopPlayback);
            self.playing = false;
        }
        self.no_input_at = None;
        let m = self.script.menu(menu);
        let goto = heard
            .digit
            .and_then(|d| {
                self.record.digits.push(d);
                m.choice(d)
            })
            .or_else(|| {
                let act = heard.act.as_deref()?;
                m.acts
                    .iter()
                    .find(|(a, _)| *a == act)
                    .map(|(_, g)| *g)
                    .or(match act {
                        "goodbye" => Some(Goto::Goodbye),
                        "repeat" | "help" => Some(Goto::Menu(menu)),
                        _ => None,
                    })
            });
        if let Some(goto) = goto {
            self.retries = 0;
            self.follow(goto);
            return;
        }
        // Asking for the same thing again where we asked only once ("a person, please").
        if let Some(give_up) = self.give_up(menu)
            && heard.intent.is_some()
            && heard.intent == self.last_answer
        {
            self.follow(give_up);
            return;
        }
        let question = m.listen == Listen::Question;
        if question {
            self.record.understood.push(Understood {
                intent: heard.intent.clone(),
                nlu_confidence: heard.confidence,
                asr_confidence: heard.asr_confidence,
                decision: heard.decision,
            });
        }
        let intent = heard
            .intent
            .as_deref()
            .filter(|_| question)
            .and_then(|i| crate::intents::INTENTS.iter().copied().find(|k| *k == i));
        match (intent, heard.decision) {
            (_, Decision::OutOfDomain) if question => {
                self.retry(menu, "out_of_domain", Outcome::NoMatch)
            }
            (Some(intent), Decision::Answer | Decision::Confirm) => {
                self.retries = 0;
                self.record.confidence = Some(heard.confidence);
                if menu == self.script.start {
                    // A question over the greeting: the caller speaks the language we listened in.
                    self.record.lang = Some(self.lang);
                }
                if heard.decision == Decision::Answer {
                    self.follow(Goto::Answer(intent));
                } else {
                    self.pending = Some(intent);
                    let lead = [PromptRef::new(self.lang, format!("confirm.{intent}"))];
                    self.enter_menu(self.script.confirm, &lead);
                }
            }
            _ => self.retry(menu, "not_understood", Outcome::NoMatch),
        }
    }

    fn on_speech_unavailable(&mut self) {
        if self.speech_off {
            return;
        }
        self.speech_off = true;
        self.talking = false;
        let was_listening = std::mem::take(&mut self.listening);
        self.record.actions.push("speech_fallback".into());
        if let (&State::Menu { menu, .. }, true) = (&self.state, was_listening) {
            // Say so once and replay the menu with its key choices.
            let lead = [PromptRef::new(self.lang, "speech_fallback")];
            self.enter_menu(menu, &lead);
        }
    }

    /// Listen for a spoken answer to `menu`, if the caller can speak here.
    fn listen_for(&mut self, menu: MenuId) {
        let m = self.script.menu(menu);
        self.talking = false;
        if self.speech_on() && m.listen != Listen::Keys {
            self.listening = true;
            self.actions.push_back(Action::Listen {
                lang: self.lang,
                listen: m.listen,
                trailing_silence_ms: match m.listen {
                    Listen::Question => self.config.question_silence_ms,
                    _ => self.config.choice_silence_ms,
                },
            });
        } else if std::mem::take(&mut self.listening) {
            self.actions.push_back(Action::StopListening);
        }
    }

    fn stop_listening(&mut self) {
        self.talking = false;
        if std::mem::take(&mut self.listening) {
            self.actions.push_back(Action::StopListening);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Entry(e) = &mut self.state {
            e.handle_timeout(now);
            self.pump_entry();
            return;
        }
        // Early or stale timeouts are harmless: only an expired deadline in a waiting menu counts.
        let Some(at) = self.no_input_at else { return };
        if now < at {
            return;
        }
        self.no_input_at = None;
        if let State::Menu {
            menu,
            waiting: true,
        } = self.state
        {
            self.retry(menu, "no_input", Outcome::NoInput);
        }
    }

    fn on_digit(&mut self, _now: Instant, digit: char) {
        let State::Menu { menu, .. } = self.state else {
            // Keys during goodbye are ignored: the call is ending.
            return;
        };
        if self.playing && !self.barge_in {
            // Not interruptible: the key is dropped, as callers are told to wait for the menu.
            return;
        }
        self.record.digits.push(digit);
        if self.playing {
            self.actions.push_back(Action::StopPlayback);
            self.playing = false;
        }
        self.no_input_at = None;
        match self.script.menu(menu).choice(digit) {
            Some(goto) => {
                self.retries = 0;
                self.follow(goto);
            }
            None => self.retry(menu, "no_match", Outcome::NoMatch),
        }
    }

    fn on_playback_done(&mut self, now: Instant) {
        self.playing = false;
        match self.state {
            State::Menu {
                menu,
                waiting: false,
            } => {
                self.state = State::Menu {
                    menu,
                    waiting: true,
                };
                self.no_input_at = Some(now + self.config.no_input_timeout);
            }
            State::Goodbye => {
                self.state = State::Ended;
                self.actions.push_back(Action::Hangup);
            }
            State::Transferring { started: false } => {
                self.state = State::Transferring { started: true };
                if let Some((t, intent)) = self.transfer_target() {
                    self.record.actions.push(format!("transfer:{intent}"));
                    let text_ahead = t
                        .ask_text_ahead
                        .then(|| self.record.text_ahead == Some(true));
                    self.actions.push_back(Action::Transfer {
                        queue_uri: t.queue_uri,
                        intent,
                        lang: self.lang,
                        text_ahead,
                    });
                }
            }
            _ => {}
        }
    }

    fn follow(&mut self, goto: Goto) {
        match goto {
            Goto::Menu(next) => self.enter_menu(next, &[]),
            Goto::Language(lang, next) => {
                self.lang = lang;
                self.record.lang = Some(lang);
                self.enter_menu(next, &[]);
            }
            Goto::Answer(intent) => {
                self.last_answer = Some(intent.to_string());
                self.record.intents.push(intent.to_string());
                let answer = PromptRef::new(self.lang, format!("answer.{intent}"));
                let menu = self
                    .script
                    .answer_menus
                    .iter()
                    .find(|(i, _)| *i == intent)
                    .map(|(_, m)| *m)
                    .unwrap_or_else(|| self.after_answer_menu());
                self.enter_menu(menu, &[answer]);
            }
            Goto::RepeatAnswer => {
                let lead: Vec<PromptRef> = self
                    .last_answer
                    .iter()
                    .map(|intent| PromptRef::new(self.lang, format!("answer.{intent}")))
                    .collect();
                self.enter_menu(self.after_answer_menu(), &lead);
            }
            Goto::AfterAnswer => {
                // Leaving the channel or caller-ID menu: no link after all (the offer's
                // `Declined`, which leads here too).
                self.link = None;
                self.enter_menu(self.after_answer_menu(), &[]);
            }
            Goto::TextAhead(yes) => {
                // Only an explicit yes (key 1) is consent; the shell stores it before the transfer.
                self.record.text_ahead = Some(yes);
                if yes {
                    self.record.actions.push("consent:text_ahead".into());
                    self.actions.push_back(Action::RecordConsent);
                }
                self.follow(Goto::Transfer);
            }
            Goto::Transfer => match self.transfer_target() {
                // Tier 2: the text-ahead question first, once.
                Some((t, _)) if t.ask_text_ahead && self.record.text_ahead.is_none() => {
                    self.enter_menu(self.script.text_ahead, &[]);
                }
                Some(_) => {
                    self.stop_listening();
                    self.state = State::Transferring { started: false };
                    self.no_input_at = None;
                    self.play(vec![PromptRef::new(self.lang, "transfer_start")], false);
                }
                // Closed now: say when live help is available, then the after-answer menu.
                None if self.after_hours_now() => {
                    let lead = [self.after_hours_prompt()];
                    self.enter_menu(self.after_answer_menu(), &lead);
                }
                // Nobody to transfer to for this question: an invalid choice.
                None => self.retry(self.after_answer_menu(), "no_match", Outcome::NoMatch),
            },
            Goto::LinkOffer => match self.start_link() {
                Some(step) => self.link_step(step),
                None => self.enter_menu(self.script.after_answer, &[]),
            },
            Goto::SmsOffer => self.link_channel(link::Channel::Sms),
            Goto::EmailEntry => self.link_channel(link::Channel::Email),
            Goto::SendSms => self.link_answer(link::Answer::UseCallerId),
            // "Another number" at the caller-ID offer.
            Goto::EnterNumber => self.link_answer(link::Answer::No),
            Goto::Confirm(yes) => match (yes, self.pending.take()) {
                (true, Some(intent)) => self.follow(Goto::Answer(intent)),
                // "No": ask again from the main menu.
                _ => {
                    let lead = [PromptRef::new(self.lang, "not_understood")];
                    self.enter_menu(self.script.main, &lead);
                }
            },
            Goto::Goodbye => {
                self.record.outcome.get_or_insert(Outcome::Completed);
                self.goodbye();
            }
        }
    }

    /// A new link offer for the last answer, and its first step.
    fn start_link(&mut self) -> Option<link::Step> {
        let intent = self.last_answer.clone()?;
        let config = link::LinkConfig {
            caller_id: if self.config.sms_to_caller {
                link::CallerId::Usable
            } else {
                link::CallerId::Unusable
            },
            phone_entry: self.config.readbacks.iter().any(|(l, _)| *l == self.lang),
            email: self.can_email(),
            retries_max: self.config.max_retries,
        };
        let (offer, step) = link::LinkOffer::start(config, &intent, None);
        self.link = Some(offer);
        Some(step)
    }

    /// The caller chose the link's channel (at the channel menu, or said it right after the
    /// answer).
    fn link_channel(&mut self, channel: link::Channel) {
        match self.start_link() {
            Some(link::Step::AskChannel) => self.link_answer(link::Answer::Channel(channel)),
            // Only the text message can be taken: its question is the first step.
            Some(step) => self.link_step(step),
            None => self.enter_menu(self.script.after_answer, &[]),
        }
    }

    /// An answer to the link offer's menu.
    fn link_answer(&mut self, answer: link::Answer) {
        let Some(offer) = self.link.as_mut() else {
            return self.enter_menu(self.script.after_answer, &[]);
        };
        let step = offer.handle(answer);
        self.link_step(step);
    }

    /// Turns the link offer's step into the call's menus, entry and actions.
    fn link_step(&mut self, step: link::Step) {
        match step {
            link::Step::AskChannel => self.enter_menu(self.script.link_channel, &[]),
            link::Step::OfferCallerId(_) => self.enter_menu(self.script.sms_confirm, &[]),
            link::Step::AskRecipient(channel) => {
                let kind = match channel {
                    link::Channel::Sms => entry::Kind::Phone,
                    link::Channel::Email => entry::Kind::Email,
                };
                if !self.start_entry(kind) {
                    self.link = None;
                    self.enter_menu(self.after_answer_menu(), &[]);
                }
            }
            // The entry reads back what it took itself; a read-back asked again by the offer
            // has no menu here.
            link::Step::Confirm(_) | link::Step::StillWaiting => {}
            link::Step::Send {
                recipient, intent, ..
            } => {
                let channel = match recipient.channel() {
                    link::Channel::Sms => "sms",
                    link::Channel::Email => "email",
                };
                self.record
                    .actions
                    .push(format!("send_link:{channel}:{intent}"));
                let action = match recipient {
                    link::Recipient::CallerId(_) => Action::SendSms { intent, to: None },
                    link::Recipient::Phone(to) => Action::SendSms {
                        intent,
                        to: Some(to),
                    },
                    link::Recipient::Email(to) => Action::SendEmail { intent, to },
                };
                self.stop_listening();
                self.state = State::Sending;
                self.actions.push_back(action);
            }
            link::Step::Sent(channel) | link::Step::NotSent(channel) => {
                let id = match (channel, matches!(step, link::Step::Sent(_))) {
                    (link::Channel::Sms, true) => "sms_sent",
                    (link::Channel::Sms, false) => "sms_failed",
                    (link::Channel::Email, true) => "email_sent",
                    (link::Channel::Email, false) => "email_failed",
                };
                self.link = None;
                let lead = [PromptRef::new(self.lang, id)];
                self.enter_menu(self.after_answer_menu(), &lead);
            }
            link::Step::Declined | link::Step::GaveUp => {
                self.link = None;
                self.enter_menu(self.after_answer_menu(), &[]);
            }
        }
    }

    /// Whether a link can go by email in the caller's language (the read-back texts exist).
    fn can_email(&self) -> bool {
        self.config
            .email_readbacks
            .iter()
            .any(|(l, _)| *l == self.lang)
    }

    /// Start a number or address entry; false when this language has no read-back texts.
    fn start_entry(&mut self, kind: entry::Kind) -> bool {
        let readbacks = match kind {
            entry::Kind::Phone => &self.config.readbacks,
            entry::Kind::Email => &self.config.email_readbacks,
        };
        let Some(r) = readbacks
            .iter()
            .find(|(l, _)| *l == self.lang)
            .map(|(_, r)| r.clone())
        else {
            return false;
        };
        self.stop_listening();
        self.no_input_at = None;
        let speech = self.speech_on();
        let spell_aloud = self.config.spelling.contains(&self.lang);
        let e = entry::NumberEntry::start(
            kind,
            self.config.entry.clone(),
            self.lang,
            r,
            speech,
            spell_aloud,
        );
        self.state = State::Entry(Box::new(e));
        self.pump_entry();
        true
    }

    /// Where a menu that asks only once goes instead of a retry.
    fn give_up(&self, menu: MenuId) -> Option<Goto> {
        self.script
            .give_up
            .iter()
            .find(|(m, _)| *m == menu)
            .map(|(_, g)| *g)
    }

    /// What to say when a person is not available now: the next opening, or the general hours.
    fn after_hours_prompt(&self) -> PromptRef {
        match self.config.next_open.iter().find(|(l, _)| *l == self.lang) {
            Some((_, text)) => PromptRef::dynamic(self.lang, "after_hours_next", text.clone()),
            None => PromptRef::new(self.lang, "after_hours"),
        }
    }

    /// The last answer's question needs a person, and the center is closed now.
    fn after_hours_now(&self) -> bool {
        self.last_answer
            .as_ref()
            .is_some_and(|i| self.config.after_hours.contains(&(self.lang, i.clone())))
    }

    /// The agent queue for the last answer, if the policy offers a transfer now.
    fn transfer_target(&self) -> Option<(Transfer, String)> {
        let intent = self.last_answer.clone()?;
        let uri = self
            .config
            .transfers
            .get(&(self.lang, intent.clone()))?
            .clone();
        Some((uri, intent))
    }

    /// The menu after an answer: with the text-message option when its link can be sent.
    fn after_answer_menu(&self) -> MenuId {
        let sendable = self
            .last_answer
            .as_ref()
            .is_some_and(|i| self.config.sms_links.contains(i));
        let can_enter = self.config.readbacks.iter().any(|(l, _)| *l == self.lang);
        if sendable && (self.config.sms_to_caller || can_enter || self.can_email()) {
            self.script.after_answer_link
        } else {
            self.script.after_answer
        }
    }

    /// Play `lead` (an answer, an apology) then the menu's own prompt, and wait for a key.
    fn enter_menu(&mut self, menu: MenuId, lead: &[PromptRef]) {
        let m = self.script.menu(menu);
        let mut prompts = lead.to_vec();
        let speech = self.speech_on() && m.listen != Listen::Keys;
        let own = if speech && !m.speech_prompts.is_empty() {
            m.speech_prompts
        } else {
            m.prompts
        };
        prompts.extend(own.iter().map(|p| self.prompt_for(p)));
        let after_answer =
            menu == self.script.after_answer || menu == self.script.after_answer_link;
        if after_answer && self.transfer_target().is_some() {
            let offer = self
                .last_answer
                .as_deref()
                .and_then(|i| self.script.offer_prompts.iter().find(|(k, _)| *k == i))
                .map_or("offer_transfer", |(_, p)| *p);
            prompts.push(PromptRef::new(self.lang, offer));
        } else if after_answer
            && self.after_hours_now()
            && lead.first().is_some_and(|p| p.id.starts_with("answer."))
        {
            // Right after the answer (not on a repeat of the menu alone).
            prompts.push(self.after_hours_prompt());
        }
        self.state = State::Menu {
            menu,
            waiting: false,
        };
        self.play(prompts, m.barge_in);
        self.listen_for(menu);
    }

    fn retry(&mut self, menu: MenuId, apology: &str, outcome: Outcome) {
        if let Some(goto) = self.give_up(menu) {
            self.follow(goto);
            return;
        }
        self.retries += 1;
        if self.retries >= self.config.max_retries {
            self.record.outcome.get_or_insert(outcome);
            self.goodbye();
            return;
        }
        let lead = [PromptRef::new(self.lang, apology)];
        self.enter_menu(menu, &lead);
    }

    fn goodbye(&mut self) {
        self.stop_listening();
        self.state = State::Goodbye;
        self.no_input_at = None;
        self.play(vec![PromptRef::new(self.lang, "goodbye")], false);
    }

    fn play(&mut self, prompts: Vec<PromptRef>, barge_in: bool) {
        self.record.prompts.extend(prompts.iter().cloned());
        self.playing = true;
        self.barge_in = barge_in;
        self.actions.push_back(Action::Play { prompts, barge_in });
    }

    /// Menu prompts may be pinned to a language (the bilingual language menu) or follow the
    /// caller's.
    fn prompt_for(&self, p: &script::MenuPrompt) -> PromptRef {
        PromptRef::new(p.lang.unwrap_or(self.lang), p.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(call: &mut Call) -> Vec<Action> {
        std::iter::from_fn(|| call.poll_action()).collect()
    }

    fn played(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .flat_map(|a| match a {
                Action::Play { prompts, .. } => prompts
                    .iter()
                    .map(|p| format!("{}:{}", p.lang, p.id))
                    .collect(),
                _ => vec![],
            })
            .collect()
    }

    fn started() -> (Call, Instant) {
        let now = Instant::now();
        let mut call = Call::new(FlowConfig::default());
        call.handle_event(now, Event::Start);
        (call, now)
    }

    #[test]
    fn greeting_then_language_menu() {
        let (mut call, _) = started();
        let p = played(&drain(&mut call));
        assert_eq!(p, ["en:greeting", "en:language_menu", "es:language_menu"]);
    }

    #[test]
    fn spanish_caller_reaches_an_answer_and_hangs_up_by_choice() {
        let (mut call, now) = started();
        drain(&mut call);
        call.handle_event(now, Event::PlaybackDone);
        call.handle_event(now, Event::Digit('2'));
        assert_eq!(call.lang(), Lang::Es);
        assert_eq!(played(&drain(&mut call)), ["es:main_menu"]);
        call.handle_event(now, Event::Digit('1'));
        let actions = drain(&mut call);
        assert_eq!(actions[0], Action::StopPlayback);
        assert_eq!(
            played(&actions),
            ["es:answer.case_status", "es:after_answer"]
        );
        call.handle_event(now, Event::PlaybackDone);
        call.handle_event(now, Event::Digit('3'));
        assert_eq!(played(&drain(&mut call)), ["es:goodbye"]);
        call.handle_event(now, Event::PlaybackDone);
        assert_eq!(drain(&mut call), [Action::Hangup]);
        assert!(call.is_ended());
        assert_eq!(call.record().digits, "213");
        assert_eq!(call.record().intents, ["case_status"]);
        assert_eq!(call.record().outcome, Some(Outcome::Completed));
    }

    #[test]
    fn three_silences_end_the_call() {
        let (mut call, mut now) = started();
        drain(&mut call);
        for round in 0..3 {
            call.handle_event(now, Event::PlaybackDone);
            let at = call.poll_timeout().expect("waiting for a key");
            // An early timeout changes nothing.
            call.handle_timeout(at - Duration::from_millis(1));
            assert!(drain(&mut call).is_empty());
            now = at;
            call.handle_timeout(now);
            let p = played(&drain(&mut call));
            if round < 2 {
                assert_eq!(p[0], "en:no_input", "round {round}: {p:?}");
            } else {
                assert_eq!(p, ["en:goodbye"]);
            }
        }
        call.handle_event(now, Event::PlaybackDone);
        assert_eq!(drain(&mut call), [Action::Hangup]);
        assert_eq!(call.record().outcome, Some(Outcome::NoInput));
    }

    #[test]
    fn invalid_keys_retry_then_goodbye() {
        let (mut call, now) = started();
        drain(&mut call);
        call.handle_event(now, Event::Digit('1'));
        drain(&mut call);
        for _ in 0..2 {
            call.handle_event(now, Event::Digit('#'));
            assert_eq!(played(&drain(&mut call))[0], "en:no_match");
        }
        call.handle_event(now, Event::Digit('#'));
        assert_eq!(played(&drain(&mut call)), ["en:goodbye"]);
        assert_eq!(call.record().outcome, Some(Outcome::NoMatch));
    }

    #[test]
    fn repeat_and_submenus() {
        let (mut call, now) = started();
        drain(&mut call);
        for d in ['1', '8'] {
            call.handle_event(now, Event::Digit(d));
        }
        assert_eq!(played(&drain(&mut call)).last().unwrap(), "en:menu.more");
        call.handle_event(now, Event::Digit('5'));
        assert_eq!(played(&drain(&mut call))[0], "en:answer.hours");
        call.handle_event(now, Event::Digit('1'));
        assert_eq!(
            played(&drain(&mut call)),
            ["en:answer.hours", "en:after_answer"]
        );
        call.handle_event(now, Event::Digit('2'));
        assert_eq!(played(&drain(&mut call)), ["en:main_menu"]);
    }

    #[test]
    fn goodbye_is_not_interruptible_and_hangup_stops_everything() {
        let (mut call, now) = started();
        drain(&mut call);
        call.handle_event(now, Event::RemoteHangup);
        call.handle_event(now, Event::Digit('1'));
        call.handle_timeout(now + Duration::from_secs(60));
        assert!(drain(&mut call).is_empty());
        assert_eq!(call.record().outcome, Some(Outcome::CallerHangup));
    }

    #[test]
    fn a_link_that_could_not_be_stored_is_never_announced_as_sent() {
        let now = Instant::now();
        let config = FlowConfig {
            sms_links: ["case_status".to_string()].into_iter().collect(),
            sms_to_caller: true,
            ..FlowConfig::default()
        };
        let mut call = Call::new(config);
        call.handle_event(now, Event::Start);
        for d in ['1', '1', '4', '1'] {
            call.handle_event(now, Event::Digit(d));
        }
        let before = drain(&mut call);
        assert!(before.iter().any(|a| matches!(a, Action::SendSms { .. })));
        // The shell could not store it (disk full, database down).
        call.handle_event(now, Event::LinkQueued(false));
        let said = played(&drain(&mut call));
        assert_eq!(said, ["en:sms_failed", "en:after_answer_link"]);
        assert!(!played(&before).contains(&"en:sms_sent".to_string()));
    }

    #[test]
    fn a_link_is_texted_only_after_it_is_stored() {
        let now = Instant::now();
        let config = FlowConfig {
            sms_links: ["case_status".to_string()].into_iter().collect(),
            sms_to_caller: true,
            ..FlowConfig::default()
        };
        let mut call = Call::new(config);
        call.handle_event(now, Event::Start);
        for d in ['1', '1'] {
            call.handle_event(now, Event::Digit(d));
        }
        assert_eq!(
            played(&drain(&mut call)).last().unwrap(),
            "en:after_answer_link"
        );
        call.handle_event(now, Event::Digit('4'));
        assert_eq!(played(&drain(&mut call)), ["en:sms_confirm"]);
        call.handle_event(now, Event::Digit('1'));
        // Nothing is said until the shell has stored the message.
        assert_eq!(
            drain(&mut call),
            [
                Action::StopPlayback,
                Action::SendSms {
                    intent: "case_status".into(),
                    to: None
                }
            ]
        );
        call.handle_event(now, Event::Digit('9'));
        assert!(
            drain(&mut call).is_empty(),
            "keys wait while the link is stored"
        );
        call.handle_event(now, Event::LinkQueued(true));
        assert_eq!(
            played(&drain(&mut call)),
            ["en:sms_sent", "en:after_answer_link"]
        );
        assert_eq!(call.record().actions, ["send_link:sms:case_status"]);
        // An intent without a sendable link gets the plain menu; so does a caller whose number
        // cannot take a text.
        call.handle_event(now, Event::Digit('2'));
        drain(&mut call);
        call.handle_event(now, Event::Digit('8'));
        call.handle_event(now, Event::Digit('5'));
        assert_eq!(played(&drain(&mut call)).last().unwrap(), "en:after_answer");
        let mut no_sms = Call::new(FlowConfig {
            sms_to_caller: false,
            ..FlowConfig::default()
        });
        no_sms.handle_event(now, Event::Start);
        no_sms.handle_event(now, Event::Digit('1'));
        no_sms.handle_event(now, Event::Digit('1'));
        assert_eq!(
            played(&drain(&mut no_sms)).last().unwrap(),
            "en:after_answer"
        );
    }

    #[test]
    fn transfer_is_offered_only_where_the_policy_allows_and_failure_is_said() {
        let now = Instant::now();
        let mut transfers = std::collections::HashMap::new();
        transfers.insert(
            (Lang::En, "military".to_string()),
            Transfer {
                queue_uri: "sip:tier2@agents".to_string(),
                ask_text_ahead: true,
            },
        );
        transfers.insert(
            (Lang::En, "expedite".to_string()),
            Transfer {
                queue_uri: "sip:tier1@agents".to_string(),
                ask_text_ahead: false,
            },
        );
        let mut call = Call::new(FlowConfig {
            transfers,
            ..FlowConfig::default()
        });
        call.handle_event(now, Event::Start);
        for d in ['1', '8', '1'] {
            call.handle_event(now, Event::Digit(d));
        }
        let p = played(&drain(&mut call));
        assert_eq!(&p[p.len() - 2..], ["en:after_answer", "en:offer_transfer"]);
        call.handle_event(now, Event::Digit('0'));
        assert_eq!(played(&drain(&mut call)), ["en:transfer_start"]);
        // The REFER goes out once "please hold" has been said.
        call.handle_event(now, Event::PlaybackDone);
        assert_eq!(
            drain(&mut call),
            [Action::Transfer {
                queue_uri: "sip:tier1@agents".into(),
                intent: "expedite".into(),
                lang: Lang::En,
                text_ahead: None
            }]
        );
        call.handle_event(now, Event::TransferDone(false));
        assert_eq!(played(&drain(&mut call))[0], "en:transfer_failed");
        call.handle_event(now, Event::Digit('0'));
        call.handle_event(now, Event::PlaybackDone);
        drain(&mut call);
        call.handle_event(now, Event::TransferDone(true));
        assert!(call.is_ended());
        assert_eq!(call.record().outcome, Some(Outcome::Transferred));
        // Case status is never offered a transfer: 0 is an invalid choice there.
        let mut cs = Call::new(FlowConfig::default());
        cs.handle_event(now, Event::Start);
        cs.handle_event(now, Event::Digit('1'));
        cs.handle_event(now, Event::Digit('1'));
        assert!(!played(&drain(&mut cs)).contains(&"en:offer_transfer".to_string()));
        cs.handle_event(now, Event::Digit('0'));
        assert_eq!(played(&drain(&mut cs))[0], "en:no_match");
    }

    #[test]
    fn tier_two_asks_for_text_ahead_consent_and_only_a_yes_counts() {
        let now = Instant::now();
        let mut transfers = std::collections::HashMap::new();
        transfers.insert(
            (Lang::En, "military".to_string()),
            Transfer {
                queue_uri: "sip:tier2@agents".to_string(),
                ask_text_ahead: true,
            },
        );
        for (key, consent) in [('1', true), ('2', false)] {
            let mut call = Call::new(FlowConfig {
                transfers: transfers.clone(),
                ..FlowConfig::default()
            });
            call.handle_event(now, Event::Start);
            for d in ['1', '8', '3', '0'] {
                call.handle_event(now, Event::Digit(d));
            }
            assert_eq!(played(&drain(&mut call)).last().unwrap(), "en:text_ahead");
            call.handle_event(now, Event::Digit(key));
            let actions = drain(&mut call);
            assert_eq!(
                actions.contains(&Action::RecordConsent),
                consent,
                "{actions:?}"
            );
            assert_eq!(played(&actions), ["en:transfer_start"]);
            call.handle_event(now, Event::PlaybackDone);
            assert_eq!(
                drain(&mut call),
                [Action::Transfer {
                    queue_uri: "sip:tier2@agents".into(),
                    intent: "military".into(),
                    lang: Lang::En,
                    text_ahead: Some(consent),
                }]
            );
            assert_eq!(call.record().text_ahead, Some(consent));
        }
    }

    #[test]
    fn every_menu_option_leads_somewhere_known() {
        let script = Script::standard();
        for menu in script.menus {
            for goto in menu
                .options
                .iter()
                .map(|(_, g)| g)
                .chain(menu.acts.iter().map(|(_, g)| g))
            {
                match goto {
                    Goto::Answer(intent) => assert!(crate::intents::is_intent(intent), "{intent}"),
                    Goto::Menu(m) | Goto::Language(_, m) => assert!(m.0 < script.menus.len()),
                    Goto::RepeatAnswer
                    | Goto::Goodbye
                    | Goto::SendSms
                    | Goto::SmsOffer
                    | Goto::EnterNumber
                    | Goto::LinkOffer
                    | Goto::EmailEntry
                    | Goto::AfterAnswer
                    | Goto::Transfer
                    | Goto::Confirm(_)
                    | Goto::TextAhead(_) => {}
                }
            }
        }
        // Every intent is reachable by keys alone.
        for intent in crate::intents::INTENTS {
            assert!(
                script
                    .menus
                    .iter()
                    .any(|m| m.options.iter().any(|(_, g)| *g == Goto::Answer(intent))),
                "{intent} has no menu key"
            );
        }
    }

    fn speaking() -> (Call, Instant) {
        let now = Instant::now();
        let mut call = Call::new(FlowConfig {
            speech: [Lang::En].into_iter().collect(),
            ..FlowConfig::default()
        });
        call.handle_event(now, Event::Start);
        (call, now)
    }

    /// A short answer the grammars understood as dialog act `act`.
    fn said_act(text: &str, act: &str) -> Event {
        Event::Heard(Heard {
            text: text.into(),
            act: Some(act.into()),
            ..Heard::default()
        })
    }

    /// A typed-style question: the decision follows the classifier's confidence alone.
    fn heard(text: &str, intent: Option<&str>, confidence: f32) -> Event {
        let decision = match intent {
            None => Decision::Reask,
            Some(_) if confidence >= crate::nlu::CONFIRM_THRESHOLD => Decision::Answer,
            Some(_) if confidence >= crate::nlu::REJECT_THRESHOLD => Decision::Confirm,
            Some(_) => Decision::Reask,
        };
        Event::Heard(Heard {
            text: text.into(),
            intent: intent.map(String::from),
            confidence,
            decision,
            ..Heard::default()
        })
    }

    #[test]
    fn a_question_over_the_greeting_stops_it_and_gets_the_answer() {
        let (mut call, now) = speaking();
        let actions = drain(&mut call);
        assert_eq!(
            played(&actions),
            [
                "en:greeting",
                "en:ask_question",
                "en:language_menu",
                "es:language_menu"
            ]
        );
        assert!(actions.contains(&Action::Listen {
            lang: Lang::En,
            listen: Listen::Question,
            trailing_silence_ms: 800
        }));
        call.handle_event(now, Event::SpeechStart);
        assert_eq!(drain(&mut call), [Action::StopPlayback]);
        call.handle_event(now, heard("check my case status", Some("case_status"), 0.9));
        let actions = drain(&mut call);
        assert_eq!(
            played(&actions),
            ["en:answer.case_status", "en:after_answer"]
        );
        assert_eq!(call.record().intents, ["case_status"]);
        assert_eq!(call.record().transcripts, ["check my case status"]);
        assert_eq!(call.record().lang, Some(Lang::En));
        // The after-answer menu listens too.
        assert!(actions.iter().any(|a| matches!(a, Action::Listen { .. })));
    }

    #[test]
    fn a_middling_question_is_confirmed_first() {
        let (mut call, now) = speaking();
        drain(&mut call);
        call.handle_event(now, Event::PlaybackDone);
        call.handle_event(now, heard("change address", Some("change_of_address"), 0.4));
        let actions = drain(&mut call);
        assert_eq!(
            played(&actions),
            ["en:confirm.change_of_address", "en:confirm_menu"]
        );
        assert!(actions.contains(&Action::Listen {
            lang: Lang::En,
            listen: Listen::Choices,
            trailing_silence_ms: 500
        }));
        call.handle_event(now, said_act("yes", "yes"));
        assert_eq!(
            played(&drain(&mut call)),
            ["en:answer.change_of_address", "en:after_answer"]
        );
        // "No" goes back to the main menu and asks again.
        let (mut call, now) = speaking();
        drain(&mut call);
        call.handle_event(now, heard("change address", Some("change_of_address"), 0.4));
        drain(&mut call);
        call.handle_event(now, Event::Digit('2'));
        assert_eq!(
            played(&drain(&mut call)),
            ["en:not_understood", "en:ask_question", "en:main_menu"]
        );
        assert!(call.record().intents.is_empty());
    }

    #[test]
    fn spoken_choices_and_acts_follow_the_menu() {
        let (mut call, now) = speaking();
        drain(&mut call);
        call.handle_event(now, said_act("espanol", "spanish"));
        assert_eq!(call.lang(), Lang::Es);
        // No recognizer for Spanish here: the keypad menu, and listening stops.
        let actions = drain(&mut call);
        assert_eq!(played(&actions), ["es:main_menu"]);
        assert!(actions.contains(&Action::StopListening));
        // A spoken digit is a key.
        let (mut call, now) = speaking();
        drain(&mut call);
        call.handle_event(
            now,
            Event::Heard(Heard {
                text: "one".into(),
                digit: Some('1'),
                ..Heard::default()
            }),
        );
        assert_eq!(
            played(&drain(&mut call)),
            ["en:ask_question", "en:main_menu"]
        );
        assert_eq!(call.record().digits, "1");
    }

    #[test]
    fn not_understood_asks_again_and_noise_while_playing_is_ignored() {
        let (mut call, now) = speaking();
        drain(&mut call);
        // A result with nothing in it while the prompt still plays (no speech start): keep
        // listening, say nothing.
        call.handle_event(now, heard("", None, 0.0));
        let actions = drain(&mut call);
        assert!(played(&actions).is_empty());
        assert!(matches!(actions[..], [Action::Listen { .. }]));
        // Talking, then nothing understood: ask again.
        call.handle_event(now, Event::SpeechStart);
        drain(&mut call);
        call.handle_event(now, heard("purple monkey", None, 0.1));
        let p = played(&drain(&mut call));
        assert_eq!(p[0], "en:not_understood");
        // Three strikes end the call like keys do.
        for _ in 0..2 {
            call.handle_event(now, Event::SpeechStart);
            call.handle_event(now, heard("purple monkey", None, 0.1));
        }
        assert!(played(&drain(&mut call)).contains(&"en:goodbye".to_string()));
        assert_eq!(call.record().outcome, Some(Outcome::NoMatch));
    }

    #[test]
    fn speech_unavailable_falls_back_to_keys_once() {
        let (mut call, now) = speaking();
        drain(&mut call);
        call.handle_event(now, Event::SpeechUnavailable);
        let actions = drain(&mut call);
        assert_eq!(
            played(&actions),
            [
                "en:speech_fallback",
                "en:greeting",
                "en:language_menu",
                "es:language_menu"
            ]
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Listen { .. })));
        call.handle_event(now, Event::SpeechUnavailable);
        assert!(drain(&mut call).is_empty());
        call.handle_event(now, Event::Digit('1'));
        assert_eq!(played(&drain(&mut call)), ["en:main_menu"]);
        assert_eq!(call.record().actions, ["speech_fallback"]);
    }

    #[test]
    fn speech_does_not_stop_a_prompt_that_cannot_be_interrupted() {
        let (mut call, now) = speaking();
        drain(&mut call);
        call.handle_event(now, heard("goodbye", None, 0.0));
        drain(&mut call);
        call.handle_event(now, said_act("goodbye", "goodbye"));
        let actions = drain(&mut call);
        assert!(played(&actions).contains(&"en:goodbye".to_string()));
        assert!(actions.contains(&Action::StopListening));
        call.handle_event(now, Event::SpeechStart);
        assert!(drain(&mut call).is_empty());
    }

    fn tier1(intents: &[&str]) -> std::collections::HashMap<(Lang, String), Transfer> {
        intents
            .iter()
            .map(|i| {
                (
                    (Lang::En, i.to_string()),
                    Transfer {
                        queue_uri: "sip:tier1@agents".into(),
                        ask_text_ahead: false,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn agent_flow_tries_self_service_once_then_transfers() {
        let now = Instant::now();
        let mut call = Call::new(FlowConfig {
            transfers: tier1(&["agent"]),
            speech: [Lang::En].into_iter().collect(),
            ..FlowConfig::default()
        });
        call.handle_event(now, Event::Start);
        drain(&mut call);
        call.handle_event(now, heard("i want to talk to a person", Some("agent"), 0.9));
        assert_eq!(
            played(&drain(&mut call)),
            ["en:answer.agent", "en:agent_question_speech"]
        );
        // The one try finds a question self-service answers: answered, no transfer.
        call.handle_event(now, heard("i moved", Some("change_of_address"), 0.9));
        let p = played(&drain(&mut call));
        assert_eq!(p[0], "en:answer.change_of_address");
        assert_eq!(call.record().intents, ["agent", "change_of_address"]);

        // Asking for a person again (or saying nothing) is the transfer.
        let mut call = Call::new(FlowConfig {
            transfers: tier1(&["agent"]),
            speech: [Lang::En].into_iter().collect(),
            ..FlowConfig::default()
        });
        call.handle_event(now, Event::Start);
        drain(&mut call);
        call.handle_event(now, heard("agent", Some("agent"), 0.9));
        drain(&mut call);
        call.handle_event(now, heard("a real person please", Some("agent"), 0.9));
        assert_eq!(played(&drain(&mut call)), ["en:transfer_start"]);
        // Keys: 0 in the main menu is the agent flow; silence there gives up and transfers.
        let mut call = Call::new(FlowConfig {
            transfers: tier1(&["agent"]),
            ..FlowConfig::default()
        });
        call.handle_event(now, Event::Start);
        call.handle_event(now, Event::Digit('1'));
        call.handle_event(now, Event::Digit('0'));
        let p = played(&drain(&mut call));
        assert_eq!(p[p.len() - 2..], ["en:answer.agent", "en:agent_question"]);
        call.handle_event(now, Event::PlaybackDone);
        call.handle_event(now + Duration::from_secs(7), Event::Digit('#'));
        assert_eq!(played(&drain(&mut call)), ["en:transfer_start"]);
    }

    #[test]
    fn protected_case_offers_a_person_only_for_identity_verification() {
        let now = Instant::now();
        let mut call = Call::new(FlowConfig {
            transfers: tier1(&["protected_case"]),
            ..FlowConfig::default()
        });
        call.handle_event(now, Event::Start);
        for d in ['1', '8', '4'] {
            call.handle_event(now, Event::Digit(d));
        }
        let p = played(&drain(&mut call));
        assert_eq!(
            p[p.len() - 3..],
            [
                "en:answer.protected_case",
                "en:after_answer",
                "en:offer_verification"
            ]
        );
    }

    #[test]
    fn after_hours_the_answer_says_when_live_help_is_available() {
        let now = Instant::now();
        let mut call = Call::new(FlowConfig {
            after_hours: [(Lang::En, "expedite".to_string())].into_iter().collect(),
            ..FlowConfig::default()
        });
        call.handle_event(now, Event::Start);
        for d in ['1', '8', '1'] {
            call.handle_event(now, Event::Digit(d));
        }
        let p = played(&drain(&mut call));
        assert_eq!(
            p[p.len() - 3..],
            ["en:answer.expedite", "en:after_answer", "en:after_hours"]
        );
        // 0 for a person: not now, and why.
        call.handle_event(now, Event::Digit('0'));
        assert_eq!(
            played(&drain(&mut call)),
            ["en:after_hours", "en:after_answer"]
        );
        assert!(call.record().actions.is_empty());
        // With the calendar's next opening, that is what is said.
        let mut call = Call::new(FlowConfig {
            after_hours: [(Lang::En, "expedite".to_string())].into_iter().collect(),
            next_open: vec![(Lang::En, "Back Monday at 8 a.m.".into())],
            ..FlowConfig::default()
        });
        call.handle_event(now, Event::Start);
        for d in ['1', '8', '1'] {
            call.handle_event(now, Event::Digit(d));
        }
        let actions = drain(&mut call);
        let last = actions
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::Play { prompts, .. } => prompts.last().cloned(),
                _ => None,
            })
            .unwrap();
        assert_eq!(last.id, "after_hours_next");
        assert_eq!(last.text.as_deref(), Some("Back Monday at 8 a.m."));
    }

    #[test]
    fn a_caller_without_a_textable_number_keys_one_and_confirms_the_read_back() {
        let now = Instant::now();
        let readback = entry::Readback {
            lead: "You entered".into(),
            confirm: entry::PROMPT_READBACK_CONFIRM,
            confirm_speech: None,
        };
        let mut call = Call::new(FlowConfig {
            sms_links: ["case_status".to_string()].into_iter().collect(),
            sms_to_caller: false,
            readbacks: vec![(Lang::En, readback)],
            ..FlowConfig::default()
        });
        call.handle_event(now, Event::Start);
        for d in ['1', '1'] {
            call.handle_event(now, Event::Digit(d));
        }
        let p = played(&drain(&mut call));
        assert_eq!(p[p.len() - 1], "en:after_answer_link");
        call.handle_event(now, Event::Digit('4'));
        assert_eq!(played(&drain(&mut call)), ["en:entry.ask"]);
        for d in "2025550134".chars() {
            call.handle_event(now, Event::Digit(d));
        }
        let actions = drain(&mut call);
        let text = actions
            .iter()
            .find_map(|a| match a {
                Action::PlayText { text, .. } => Some(text.expose().clone()),
                _ => None,
            })
            .expect("a read-back");
        assert!(text.contains("{phone 202-555-0134}"), "{text}");
        call.handle_event(now, Event::PlaybackDone);
        call.handle_event(now, Event::Digit('1'));
        let actions = drain(&mut call);
        assert_eq!(
            actions,
            [Action::SendSms {
                intent: "case_status".into(),
                to: Some(crate::pii::Pii::new("2025550134".to_string())),
            }]
        );
        // The number is not in the record: keys in the entry are not recorded.
        assert_eq!(call.record().digits, "114");
        assert!(
            call.record()
                .prompts
                .iter()
                .any(|p| p.id == "entry.readback")
        );
        call.handle_event(now, Event::LinkQueued(true));
        assert_eq!(played(&drain(&mut call))[0], "en:sms_sent");
    }

    fn link_config(speech: bool) -> FlowConfig {
        FlowConfig {
            sms_links: ["case_status".to_string()].into_iter().collect(),
            sms_to_caller: false,
            speech: if speech {
                [Lang::En].into_iter().collect()
            } else {
                HashSet::new()
            },
            spelling: if speech {
                [Lang::En].into_iter().collect()
            } else {
                HashSet::new()
            },
            start_lang: Some(Lang::En),
            readbacks: vec![(
                Lang::En,
                entry::Readback {
                    lead: "You entered".into(),
                    confirm: entry::PROMPT_READBACK_CONFIRM,
                    confirm_speech: Some(entry::PROMPT_READBACK_CONFIRM_SPEECH),
                },
            )],
            email_readbacks: vec![(
                Lang::En,
                entry::Readback {
                    lead: "You said".into(),
                    confirm: entry::PROMPT_EMAIL_READBACK_CONFIRM_KEYS,
                    confirm_speech: Some(entry::PROMPT_EMAIL_READBACK_CONFIRM),
                },
            )],
            ..FlowConfig::default()
        }
    }

    fn read_back_text(actions: &[Action]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            Action::PlayText { text, .. } => Some(text.expose().clone()),
            _ => None,
        })
    }

    fn listens(actions: &[Action]) -> Vec<Listen> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Listen { listen, .. } => Some(*listen),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_email_address_spelled_with_the_keypad_is_read_back_and_sent() {
        let now = Instant::now();
        let mut call = Call::new(link_config(false));
        call.handle_event(now, Event::Start);
        call.handle_event(now, Event::Digit('1'));
        assert_eq!(
            played(&drain(&mut call)).last().unwrap(),
            "en:after_answer_link"
        );
        call.handle_event(now, Event::Digit('4'));
        assert_eq!(played(&drain(&mut call)), ["en:link_channel"]);
        call.handle_event(now, Event::Digit('2'));
        assert_eq!(played(&drain(&mut call)), ["en:email.ask_keys"]);
        let keys = crate::nlu::spell::keypad_keys("ann.lee@gmail.com").unwrap();
        for k in keys.chars().chain(['#']) {
            call.handle_event(now, Event::Digit(k));
        }
        let actions = drain(&mut call);
        let text = read_back_text(&actions).expect("a read-back");
        assert_eq!(
            text,
            "You said {chars ann} dot {chars lee} at gmail dot com."
        );
        // No recognizer: the confirmation after it asks for a key, not a spoken yes.
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::PlayText { then, .. }
                if then == &[PromptRef::new(Lang::En, entry::PROMPT_EMAIL_READBACK_CONFIRM_KEYS)]
        )));
        call.handle_event(now, Event::PlaybackDone);
        call.handle_event(now, Event::Digit('1'));
        assert_eq!(
            drain(&mut call),
            [Action::SendEmail {
                intent: "case_status".into(),
                to: crate::pii::Pii::new("ann.lee@gmail.com".to_string()),
            }]
        );
        // The keys spelling the address are not in the record.
        assert_eq!(call.record().digits, "142");
        assert_eq!(call.record().actions, ["send_link:email:case_status"]);
        call.handle_event(now, Event::LinkQueued(true));
        assert_eq!(
            played(&drain(&mut call)),
            ["en:email_sent", "en:after_answer_link"]
        );
    }

    #[test]
    fn an_email_address_spelled_aloud_is_confirmed_by_voice() {
        let now = Instant::now();
        let mut call = Call::new(link_config(true));
        call.handle_event(now, Event::Start);
        call.handle_event(now, heard("my case status", Some("case_status"), 0.95));
        let actions = drain(&mut call);
        assert_eq!(played(&actions).last().unwrap(), "en:after_answer_link");
        // "email" at the after-answer menu goes straight to spelling.
        call.handle_event(now, Event::SpeechStart);
        call.handle_event(now, said_act("email", "email"));
        let actions = drain(&mut call);
        assert_eq!(played(&actions), ["en:email.ask"]);
        assert_eq!(listens(&actions), [Listen::Spelling]);
        assert!(actions.contains(&Action::Listen {
            lang: Lang::En,
            listen: Listen::Spelling,
            trailing_silence_ms: 1500
        }));
        // Talking over the request stops it; a spelling that is no address is asked again.
        call.handle_event(now, Event::SpeechStart);
        assert_eq!(drain(&mut call), [Action::StopPlayback]);
        call.handle_event(now, heard("j o h n at gmail", None, 0.0));
        let actions = drain(&mut call);
        assert_eq!(played(&actions), ["en:email.invalid", "en:email.ask"]);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::SendEmail { .. }))
        );
        call.handle_event(now, Event::SpeechStart);
        call.handle_event(
            now,
            heard("j o h n dot s m i t h at gmail dot com", None, 0.0),
        );
        let actions = drain(&mut call);
        assert_eq!(
            read_back_text(&actions).unwrap(),
            "You said {chars john} dot {chars smith} at gmail dot com."
        );
        assert_eq!(listens(&actions), [Listen::Choices]);
        call.handle_event(now, Event::SpeechStart);
        call.handle_event(now, said_act("yes", "yes"));
        let actions = drain(&mut call);
        assert!(actions.contains(&Action::SendEmail {
            intent: "case_status".into(),
            to: crate::pii::Pii::new("john.smith@gmail.com".to_string()),
        }));
        // The spelling is not in the record's transcripts.
        assert_eq!(call.record().transcripts, ["my case status", "email"]);
    }

    #[test]
    fn a_number_said_aloud_is_read_back_and_texted() {
        let now = Instant::now();
        let mut call = Call::new(link_config(true));
        call.handle_event(now, Event::Start);
        call.handle_event(now, Event::Digit('1'));
        drain(&mut call);
        call.handle_event(now, Event::Digit('4'));
        drain(&mut call);
        call.handle_event(now, said_act("text message", "text"));
        let actions = drain(&mut call);
        assert_eq!(played(&actions), ["en:entry.ask_speech"]);
        assert_eq!(listens(&actions), [Listen::Digits]);
        call.handle_event(now, Event::PlaybackDone);
        call.handle_event(now, Event::SpeechStart);
        call.handle_event(
            now,
            heard("two oh two five five five zero one three four", None, 0.0),
        );
        let actions = drain(&mut call);
        assert_eq!(
            read_back_text(&actions).unwrap(),
            "You entered {phone 202-555-0134}."
        );
        // "No" re-asks; a key answers the read-back as well as a word.
        call.handle_event(now, said_act("no", "no"));
        assert_eq!(played(&drain(&mut call)), ["en:entry.ask_speech"]);
        call.handle_event(
            now,
            heard("three one two five five five zero one nine nine", None, 0.0),
        );
        drain(&mut call);
        call.handle_event(now, Event::Digit('1'));
        let actions = drain(&mut call);
        assert!(actions.contains(&Action::SendSms {
            intent: "case_status".into(),
            to: Some(crate::pii::Pii::new("3125550199".to_string())),
        }));
    }

    #[test]
    fn spelling_ends_when_speech_goes_away_and_keys_only_callers_keep_the_keypad() {
        let now = Instant::now();
        let mut call = Call::new(link_config(true));
        call.handle_event(now, Event::Start);
        call.handle_event(now, Event::Digit('1'));
        call.handle_event(now, Event::Digit('4'));
        call.handle_event(now, Event::Digit('2'));
        drain(&mut call);
        // Recognition lost mid-entry: the keypad spelling goes on (it needs no recognizer).
        call.handle_event(now, Event::SpeechUnavailable);
        let actions = drain(&mut call);
        assert_eq!(
            played(&actions),
            ["en:speech_fallback", "en:email.ask_keys"]
        );
        let keys = crate::nlu::spell::keypad_keys("al@aol.com").unwrap();
        for k in keys.chars().chain(['#']) {
            call.handle_event(now, Event::Digit(k));
        }
        assert!(read_back_text(&drain(&mut call)).is_some());
        // A language without email texts: the offer goes straight to the text message.
        let mut es = Call::new(FlowConfig {
            start_lang: Some(Lang::Es),
            readbacks: vec![(Lang::Es, link_config(false).readbacks[0].1.clone())],
            ..link_config(false)
        });
        es.handle_event(now, Event::Start);
        es.handle_event(now, Event::Digit('1'));
        es.handle_event(now, Event::Digit('4'));
        assert_eq!(played(&drain(&mut es)).last().unwrap(), "es:entry.ask");
    }

    #[test]
    fn a_recognizer_that_cannot_spell_gets_the_keypad_request() {
        let now = Instant::now();
        let mut call = Call::new(FlowConfig {
            spelling: HashSet::new(),
            ..link_config(true)
        });
        call.handle_event(now, Event::Start);
        call.handle_event(now, Event::Digit('1'));
        call.handle_event(now, Event::Digit('4'));
        drain(&mut call);
        call.handle_event(now, Event::Digit('2'));
        let actions = drain(&mut call);
        assert_eq!(played(&actions), ["en:email.ask_keys"]);
        assert!(listens(&actions).is_empty(), "{actions:?}");
        // The read-back may still be answered by voice.
        let keys = crate::nlu::spell::keypad_keys("al@aol.com").unwrap();
        for k in keys.chars().chain(['#']) {
            call.handle_event(now, Event::Digit(k));
        }
        let actions = drain(&mut call);
        assert!(read_back_text(&actions).is_some());
        assert_eq!(listens(&actions), [Listen::Choices]);
        call.handle_event(now, Event::SpeechStart);
        call.handle_event(now, said_act("yes", "yes"));
        assert!(
            drain(&mut call)
                .iter()
                .any(|a| matches!(a, Action::SendEmail { .. }))
        );
        // A number is still taken by voice there (digits, not spelling).
        let mut sms = Call::new(FlowConfig {
            spelling: HashSet::new(),
            ..link_config(true)
        });
        sms.handle_event(now, Event::Start);
        for d in ['1', '4', '1'] {
            sms.handle_event(now, Event::Digit(d));
        }
        let actions = drain(&mut sms);
        assert_eq!(played(&actions).last().unwrap(), "en:entry.ask_speech");
        assert_eq!(listens(&actions).last(), Some(&Listen::Digits));
    }
}
