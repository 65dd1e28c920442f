//! The text conversation of TTY (Baudot text telephone) and RTT (real-time text) calls: a deaf
//! or hard-of-hearing caller types, the IVR types back, with the same knowledge as the voice
//! line (`nlu` for understanding, the `tty.*` prompts of `prompts/<lang>/tty.txt` and their
//! `rtt.*` twins for the replies).
//!
//! Two layers. [`TextDialog`] is the one dialog: complete caller lines and the shell's results
//! ([`ShellResult`]: link queued or failed, transfer done or failed) in, structured [`Turn`]s
//! (prompt ids, read-back values, whether it is the last) out; it knows nothing of Baudot. The
//! line adapters of [`super::text_line`] ([`BaudotLine`]: characters, carrier, pause, echo
//! guard, GA/SK, upper case, wrap; [`RttLine`]: whole lines, mixed case) assemble the caller's
//! lines and write the turns. [`TtyConversation`] puts the two together for the drivers.
//!
//! Sans-IO, time passed in (STYLE.md §1). The shell feeds what the demodulator decoded
//! ([`TtyConversation::handle_char`], [`TtyConversation::handle_carrier`]) or the RTT lines
//! ([`TtyConversation::handle_line`]), fires [`TtyConversation::handle_timeout`] at
//! [`TtyConversation::poll_timeout`], drains [`TtyConversation::poll_output`], pushes each
//! [`TtyOutput::Type`] into the modulator (or the T.140 sender) and calls
//! [`TtyConversation::handle_sent`] when it is sent.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::link::{Answer, Awaiting, CallerId, LinkConfig, LinkOffer, Recipient, Step};
pub use super::text_line::baudot_text;
use super::text_line::{BaudotLine, Heard, RttLine};
use crate::audio::tty::TtyEvent;
use crate::intents::INTENTS;
use crate::nlu::{Decision, Nlu, REJECT_THRESHOLD, normalize, slots};
use crate::pii::Pii;
use crate::prompts::Catalog;
use crate::types::Lang;

/// The queue name a TTY caller is transferred to.
pub const TTY_QUEUE: &str = "tty";

/// `[tty]` settings. `Default` is tuned for US TTYs at 45.45 baud (about 6 characters per
/// second) and the etiquette of relay operators: 3 s of silence ends a line without "GA".
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtyConfig {
    /// Dialed numbers (Request-URI or To user part) of the TTY line: calls to them start in TTY
    /// mode. Compared on digits only, so "+1 800 767 1833" matches "8007671833". Default: none.
    pub numbers: Vec<String>,
    /// Silence (no character, no carrier) that ends a caller line without "GA". Default 3000.
    pub pause_ms: u64,
    /// How long after our own carrier stops what we hear is still our echo. Default 300.
    pub echo_guard_ms: u64,
    /// No typing for this long after our turn: ask "ARE YOU STILL THERE". Default 45.
    pub no_input_timeout_s: u64,
    /// Retries (not understood, no input, bad number or address) before giving up. Default 3.
    pub retries_max: u32,
    /// Our lines are wrapped at this many characters (TTY displays are narrow); 0: no wrap.
    /// Default 40.
    pub line_chars: usize,
}

impl Default for TtyConfig {
    fn default() -> Self {
        TtyConfig {
            numbers: Vec::new(),
            pause_ms: 3000,
            echo_guard_ms: 300,
            no_input_timeout_s: 45,
            retries_max: 3,
            line_chars: 40,
        }
    }
}

impl TtyConfig {
    /// Whether a dialed user part (Request-URI or To) is one of the TTY line's numbers.
    pub fn is_tty_number(&self, user: &str) -> bool {
        let digits = |s: &str| -> String {
            let d: String = s.chars().filter(char::is_ascii_digit).collect();
            // "+1 800..." and "800..." are the same North American number.
            match d.strip_prefix('1') {
                Some(rest) if d.len() == 11 => rest.to_string(),
                _ => d,
            }
        };
        let dialed = digits(user);
        !dialed.is_empty() && self.numbers.iter().any(|n| digits(n) == dialed)
    }
}

/// Whether a caller's question should go to a live TTY agent now. The routing module
/// implements it (business hours, tiers); closures `Fn(&str, Instant) -> bool` do too.
pub trait TransferPolicy: Send + Sync {
    fn should_transfer(&self, intent: &str, now: Instant) -> bool;
}

impl<F: Fn(&str, Instant) -> bool + Send + Sync> TransferPolicy for F {
    fn should_transfer(&self, intent: &str, now: Instant) -> bool {
        self(intent, now)
    }
}

/// The default policy: self-service only, nobody is transferred.
#[derive(Clone, Copy, Debug, Default)]
pub struct NeverTransfer;

impl TransferPolicy for NeverTransfer {
    fn should_transfer(&self, _intent: &str, _now: Instant) -> bool {
        false
    }
}

/// How the conversation's turns are written and how the caller's lines arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TextStyle {
    /// A Baudot TTY: the `tty.*` texts, upper case, Baudot characters only, "GA" at the end of
    /// every turn ("SK" at the last), wrapped at `line_chars`; the caller's characters come one
    /// by one and a line ends with "GA" or a pause; our own echo is ignored.
    #[default]
    Baudot,
    /// Real-time text (RFC 4103): the `rtt.*` texts as written (mixed case, "?", UTF-8, no
    /// GA/SK, no wrap); the caller's lines come whole ([`TtyConversation::handle_line`]).
    Rtt,
}

/// The `rtt.*` id that stands for a `tty.*` one in the RTT style.
fn rtt_id(id: &str) -> Option<String> {
    id.strip_prefix("tty.").map(|rest| format!("rtt.{rest}"))
}

/// Every prompt id the TTY and RTT conversations use, for `ivr check` (each must exist in every
/// language): the `tty.*` ids and their `rtt.*` twins.
pub fn prompt_ids() -> Vec<String> {
    let tty = tty_prompt_ids();
    let rtt: Vec<String> = tty.iter().filter_map(|id| rtt_id(id)).collect();
    tty.into_iter().chain(rtt).collect()
}

/// The `tty.*` ids the conversation names (the RTT style reads their `rtt.*` twins).
fn tty_prompt_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "tty.greeting",
        "tty.confirm_intent",
        "tty.yes_no",
        "tty.link_offer",
        "tty.ask_phone",
        "tty.ask_phone_caller_id",
        "tty.confirm_phone",
        "tty.ask_email",
        "tty.confirm_email",
        "tty.sent",
        "tty.not_sent",
        "tty.not_understood",
        "tty.out_of_domain",
        "tty.ask_question",
        "tty.no_input",
        "tty.anything_else",
        "tty.goodbye",
        "tty.transfer",
        "tty.transfer_failed",
        "tty.after_hours",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in INTENTS {
        ids.push(format!("tty.answer.{i}"));
        ids.push(format!("tty.topic.{i}"));
    }
    ids
}

/// The TTY and RTT texts of both languages, taken from the prompt catalog once (at load and
/// reload): the `tty.*` ones already in the form the modem sends, the `rtt.*` ones as written.
#[derive(Clone, Debug, Default)]
pub struct TtyPrompts {
    texts: HashMap<(Lang, String), String>,
}

impl TtyPrompts {
    /// Takes every `tty.*` and `rtt.*` prompt; `Err` lists the required ids missing, as
    /// `lang/id`.
    pub fn from_catalog(catalog: &Catalog) -> Result<TtyPrompts, Vec<String>> {
        let mut texts = HashMap::new();
        let mut missing = Vec::new();
        for lang in Lang::ALL {
            for id in prompt_ids() {
                match catalog.get(lang, &id) {
                    Some(p) => {
                        let text = if id.starts_with("tty.") {
                            baudot_text(&p.rendered.display, lang)
                        } else {
                            p.rendered.display.trim().to_string()
                        };
                        texts.insert((lang, id), text);
                    }
                    None => missing.push(format!("{}/{id}", lang.code())),
                }
            }
        }
        if missing.is_empty() {
            Ok(TtyPrompts { texts })
        } else {
            Err(missing)
        }
    }

    /// The text of a prompt, empty when absent (only possible for an id not in
    /// [`prompt_ids`], which `from_catalog` guarantees).
    pub fn text(&self, lang: Lang, id: &str) -> &str {
        self.texts
            .get(&(lang, id.to_string()))
            .map_or("", String::as_str)
    }

    /// The text of a `tty.*` prompt in `style`: itself (Baudot) or its `rtt.*` twin (RTT).
    pub fn styled(&self, style: TextStyle, lang: Lang, id: &str) -> &str {
        match (style, rtt_id(id)) {
            (TextStyle::Rtt, Some(rtt)) => self.text(lang, &rtt),
            _ => self.text(lang, id),
        }
    }

    /// The web address an answer gives (`USCIS.GOV/...`), if any: only those answers end with
    /// the link offer.
    pub fn link(&self, lang: Lang, intent: &str) -> Option<String> {
        let answer = self.text(lang, &format!("tty.answer.{intent}"));
        answer
            .split_whitespace()
            .map(|w| w.trim_end_matches([',', '.', ';', ':', ')']))
            .find(|w| w.contains(".GOV/") || w.contains(".COM/"))
            .map(|w| w.to_ascii_lowercase())
    }
}

/// Decides when a voice call is really a TTY caller: the demodulator reports characters only
/// for clean FSK in the TTY band (speech and DTMF fail its checks), and a few letters under one
/// carrier are not a coincidence. The characters seen are kept, to be replayed into the
/// [`TtyConversation`] so the caller's first words are not lost.
#[derive(Clone, Debug, Default)]
pub struct TtyDetector {
    carrier_on: bool,
    seen: Vec<(Instant, char)>,
    detected: bool,
}

impl TtyDetector {
    /// Letters or digits under one carrier that make a TTY call.
    pub const CHARS_MIN: usize = 3;
    /// Bound on the characters kept for replay.
    const SEEN_MAX: usize = 256;

    pub fn new() -> TtyDetector {
        TtyDetector::default()
    }

    /// One demodulator event; true once the call is a TTY call (and from then on).
    pub fn handle_event(&mut self, now: Instant, event: TtyEvent) -> bool {
        match event {
            TtyEvent::CarrierOn => self.carrier_on = true,
            TtyEvent::CarrierOff => {
                self.carrier_on = false;
                if !self.detected {
                    // Letters must come in one burst; stray ones across bursts are noise.
                    self.seen.clear();
                }
            }
            TtyEvent::Char(c) => {
                if self.seen.len() < Self::SEEN_MAX {
                    self.seen.push((now, c));
                }
                let letters = self
                    .seen
                    .iter()
                    .filter(|(_, c)| c.is_ascii_alphanumeric())
                    .count();
                if self.carrier_on && letters >= Self::CHARS_MIN {
                    self.detected = true;
                }
            }
        }
        self.detected
    }

    pub fn is_tty(&self) -> bool {
        self.detected
    }

    /// The characters heard so far, with when, for [`TtyConversation::handle_char`].
    pub fn take_chars(&mut self) -> Vec<(Instant, char)> {
        std::mem::take(&mut self.seen)
    }
}

pub use super::link::Channel;

/// Outputs to the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TtyOutput {
    /// Text to transmit, `\n` for a new line: upper case and Baudot characters only in the
    /// Baudot style, as written in the RTT style. The shell pushes it into the modulator (or
    /// the T.140 sender) and calls `handle_sent` when it is sent.
    Type(String),
    /// Send `link` (the answer of `intent`) to the caller. Emitted before "SENT" is typed, so
    /// the outbox stores it before the caller reads that it was sent.
    SendLink {
        channel: Channel,
        to: Pii<String>,
        intent: String,
        link: String,
    },
    /// Hand the call to the agent queue, once the last `Type` has been sent.
    Transfer { queue: &'static str },
    /// End the call, once the last `Type` has been sent.
    Hangup,
}

/// How the conversation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TtyOutcome {
    Completed,
    Transferred,
    NoInput,
    NotUnderstood,
}

/// A piece of text that may hold personal data: kept in clear for the line, redacted for the
/// record unless asked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RecordText {
    clear: String,
    redacted: String,
}

/// What happened in the conversation, for the call record and `ivr call --tty`.
#[derive(Clone, Debug, Default)]
pub struct TtyRecord {
    pub lang: Option<Lang>,
    caller_lines: Vec<RecordText>,
    /// Each question's intent and confidence, in order (`None`: not understood).
    pub intents: Vec<(Option<String>, f32)>,
    typed: Vec<RecordText>,
    /// What the conversation asked the shell to do: "send_link:sms:case_status", "transfer:tty",
    /// "hangup".
    pub actions: Vec<String>,
    pub outcome: Option<TtyOutcome>,
}

impl TtyRecord {
    /// The caller's lines as typed, personal values (phone, email, receipt) redacted unless
    /// `clear`.
    pub fn caller_lines(&self, clear: bool) -> Vec<&str> {
        self.caller_lines
            .iter()
            .map(|t| if clear { &t.clear } else { &t.redacted })
            .map(String::as_str)
            .collect()
    }

    /// The turns the IVR typed, read-backs redacted unless `clear`.
    pub fn typed(&self, clear: bool) -> Vec<&str> {
        self.typed
            .iter()
            .map(|t| if clear { &t.clear } else { &t.redacted })
            .map(String::as_str)
            .collect()
    }

    /// The record as a JSON object (what `ivr call --tty` prints).
    pub fn to_json(&self, clear: bool) -> serde_json::Value {
        let last = self.intents.iter().rev().find(|(i, _)| i.is_some());
        let last = last.or(self.intents.last());
        serde_json::json!({
            "mode": "tty",
            "lang": self.lang.map(Lang::code),
            "caller_text": self.caller_lines(clear).join("\n"),
            "caller_lines": self.caller_lines(clear),
            "intent": last.and_then(|(i, _)| i.clone()),
            "confidence": last.map_or(0.0, |(_, c)| *c),
            "intents": self.intents.iter().map(|(i, c)| serde_json::json!({"intent": i, "confidence": c})).collect::<Vec<_>>(),
            "typed": self.typed(clear),
            "actions": self.actions,
            "outcome": self.outcome,
        })
    }
}

/// A piece of a turn.
#[derive(Clone, Debug)]
pub enum TurnPart {
    /// A `tty.*` prompt id (the RTT line writes its `rtt.*` twin).
    Prompt(String),
    /// A personal value read back (phone number, email address).
    Value(Pii<String>),
    /// The end of a sentence that is not a prompt's own: "GA" (Baudot), "." (RTT).
    End,
}

/// One dialog turn, structured: prompt ids and dynamic parts, and what to do once it has been
/// typed (`Some` only for the last turn: transfer or hang up). The line adapter
/// ([`super::text_line`]) writes it.
#[derive(Clone, Debug)]
pub struct Turn {
    pub parts: Vec<TurnPart>,
    pub then: Option<TtyOutput>,
}

impl Turn {
    fn new(ids: &[&str]) -> Turn {
        Turn {
            parts: ids
                .iter()
                .map(|id| TurnPart::Prompt(id.to_string()))
                .collect(),
            then: None,
        }
    }

    /// The conversation ends (or is handed over) once this turn is typed.
    pub fn is_last(&self) -> bool {
        self.then.is_some()
    }
}

/// What the text dialog asks of its line and of the shell.
#[derive(Clone, Debug)]
pub enum DialogOutput {
    /// A turn to type, replacing one not yet typed.
    Say(Turn),
    /// Something for the shell now ([`TtyOutput::SendLink`]).
    Do(TtyOutput),
}

/// What the shell did with the dialog's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShellResult {
    /// The link of the last `SendLink` is stored: the caller may read "SENT".
    LinkQueued,
    /// It could not be stored (a full disk, the database down, a bad recipient).
    LinkFailed,
    /// The transfer reached an agent.
    TransferDone,
    /// The transfer failed (the queue busy, the trunk refusing, the agent never answering).
    TransferFailed,
}

/// What the conversation waits for from the caller. Each state holds what it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Question,
    ConfirmIntent {
        intent: String,
    },
    /// The link offer after an answer (`flow::link`): channel, number or address, read-back.
    Link(Box<LinkOffer>),
    /// The last turn is typed; its action follows `handle_sent`.
    Ending,
    Done,
}

/// The one text dialog of TTY and RTT calls: caller lines and the shell's results in,
/// structured turns ([`DialogOutput`]) out. It knows nothing of Baudot or RTT: the line
/// adapters of [`super::text_line`] assemble the lines and write the turns.
pub struct TextDialog {
    nlu: Arc<Nlu>,
    prompts: Arc<TtyPrompts>,
    policy: Arc<dyn TransferPolicy>,
    config: TtyConfig,
    lang: Lang,
    /// The caller's number (From), when it can take a text.
    caller_id: CallerId,
    state: State,
    no_input_at: Option<Instant>,
    /// Retries in the current state (not understood, no input, bad number).
    retries: u32,
    /// The last answer, for "repeat".
    last_answer: Option<Turn>,
    outputs: VecDeque<DialogOutput>,
    record: TtyRecord,
    /// The offer whose `SendLink` went out: "sent" waits for `ShellResult::LinkQueued`.
    sending: Option<LinkOffer>,
}

impl TextDialog {
    /// A dialog whose first output is the greeting.
    /// `caller_id`: the caller's number (From), offered for the text message.
    pub fn new(
        nlu: Arc<Nlu>,
        prompts: Arc<TtyPrompts>,
        config: TtyConfig,
        lang: Lang,
        caller_id: Option<Pii<String>>,
    ) -> TextDialog {
        // A caller ID that is not a US number cannot receive our text; do not offer it.
        let caller_id = CallerId::parse(caller_id.as_ref());
        let mut dialog = TextDialog {
            nlu,
            prompts,
            policy: Arc::new(NeverTransfer),
            config,
            lang,
            caller_id,
            state: State::Question,
            no_input_at: None,
            retries: 0,
            last_answer: None,
            outputs: VecDeque::new(),
            record: TtyRecord {
                lang: Some(lang),
                ..TtyRecord::default()
            },
            sending: None,
        };
        dialog.say(Turn::new(&["tty.greeting"]));
        dialog
    }

    /// Injects the routing decision (default: [`NeverTransfer`]).
    pub fn set_transfer_policy(&mut self, policy: Arc<dyn TransferPolicy>) {
        self.policy = policy;
    }

    pub fn config(&self) -> &TtyConfig {
        &self.config
    }

    pub fn lang(&self) -> Lang {
        self.lang
    }

    pub fn record(&self) -> &TtyRecord {
        &self.record
    }

    pub fn is_ended(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the caller's typing still counts (not once the last turn is under way).
    pub fn is_listening(&self) -> bool {
        !matches!(self.state, State::Done | State::Ending)
    }

    pub fn poll_output(&mut self) -> Option<DialogOutput> {
        self.outputs.pop_front()
    }

    /// When to call `handle_timeout` next (the caller's silence after our turn).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Done {
            return None;
        }
        self.no_input_at
    }

    /// The caller is typing: their silence no longer counts.
    pub fn handle_typing(&mut self) {
        self.no_input_at = None;
    }

    /// The line started typing our turn, as written (clear and redacted, for the record).
    pub fn handle_turn_typed(&mut self, clear: String, redacted: String) {
        self.no_input_at = None;
        self.record.typed.push(RecordText { clear, redacted });
    }

    /// The line finished typing our turn; `then` is that turn's action. Returns the action,
    /// now due (the conversation is over), or starts waiting for the caller.
    pub fn handle_turn_sent(&mut self, now: Instant, then: Option<TtyOutput>) -> Option<TtyOutput> {
        if let Some(action) = then {
            self.record.actions.push(action_name(&action));
            self.state = State::Done;
            return Some(action);
        }
        self.no_input_at = Some(now + Duration::from_secs(self.config.no_input_timeout_s));
        None
    }

    /// The caller's silence (at [`TextDialog::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Done || self.no_input_at.is_none_or(|t| now < t) {
            return;
        }
        self.no_input_at = None;
        match std::mem::replace(&mut self.state, State::Question) {
            // The offer counts its own tries.
            State::Link(mut offer) => {
                let step = offer.handle(Answer::NoInput);
                return self.link_step(*offer, step, true);
            }
            other => self.state = other,
        }
        self.retries += 1;
        if self.retries >= self.config.retries_max {
            self.goodbye(TtyOutcome::NoInput);
        } else {
            self.say(Turn::new(&["tty.no_input"]));
        }
    }

    /// A complete caller line (spaces collapsed, not empty), from the line adapter.
    pub fn handle_caller_line(&mut self, now: Instant, text: &str) {
        self.record_caller_line(text);
        if line_is_sk(text) {
            self.goodbye(TtyOutcome::Completed);
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Question);
        match state {
            State::Question => self.on_question(now, text),
            State::ConfirmIntent { intent } => self.on_confirm_intent(now, text, intent),
            State::Link(offer) => self.on_link(text, *offer),
            State::Ending | State::Done => self.state = state,
        }
    }

    /// What the shell did with the last `SendLink` or `Transfer`.
    pub fn handle_result(&mut self, now: Instant, result: ShellResult) {
        match result {
            ShellResult::LinkQueued => self.handle_link_stored(true),
            ShellResult::LinkFailed => self.handle_link_stored(false),
            ShellResult::TransferDone => self.handle_transfer_result(now, true),
            ShellResult::TransferFailed => self.handle_transfer_result(now, false),
        }
    }

    /// The shell stored the link of the last `SendLink` (`true`) or could not: the caller
    /// reads "SENT" only in the first case, and that it could not be sent in the second.
    pub fn handle_link_stored(&mut self, stored: bool) {
        let Some(mut offer) = self.sending.take() else {
            return;
        };
        match offer.handle_stored(stored) {
            Some(Step::Sent(_)) => self.say(Turn::new(&["tty.sent", "tty.anything_else"])),
            Some(Step::NotSent(_)) => {
                self.record.actions.push("send_link_failed".into());
                self.say(Turn::new(&["tty.not_sent", "tty.anything_else"]));
            }
            _ => {}
        }
    }

    /// How the transfer the last `Transfer` asked for ended. A failed one brings the caller
    /// back to the conversation: they read that no agent could be reached and may ask
    /// something else (without it the conversation stayed `Done` and the line went silent).
    pub fn handle_transfer_result(&mut self, now: Instant, ok: bool) {
        if self.record.outcome != Some(TtyOutcome::Transferred) || self.state != State::Done {
            return;
        }
        if ok {
            return;
        }
        self.record.outcome = None;
        self.record.actions.push("transfer_failed".into());
        self.retries = 0;
        self.state = State::Question;
        self.no_input_at = Some(now + Duration::from_secs(self.config.no_input_timeout_s));
        self.say(Turn::new(&["tty.transfer_failed", "tty.anything_else"]));
    }

    fn record_caller_line(&mut self, text: &str) {
        let s = slots::extract(self.lang, text);
        let personal = s.phone.is_some() || s.email.is_some() || s.receipt.is_some();
        let redacted = if personal {
            crate::pii::redact(text)
        } else {
            text.to_string()
        };
        self.record.caller_lines.push(RecordText {
            clear: text.to_string(),
            redacted,
        });
    }

    /// A dialog act, when the caller's line is an answer rather than a question.
    fn act(&self, text: &str) -> Option<String> {
        self.nlu.act(self.lang, text).map(|(a, _)| a)
    }

    fn on_question(&mut self, now: Instant, text: &str) {
        let mut c = self.nlu.classify(self.lang, text);
        // The TTY line has no language menu: a question the other language understands well
        // where ours does not switches the conversation to it.
        if c.intent.is_none() || c.confidence < REJECT_THRESHOLD {
            let other = match self.lang {
                Lang::En => Lang::Es,
                Lang::Es => Lang::En,
            };
            let o = self.nlu.classify(other, text);
            if o.intent.is_some() && o.decision() == Decision::Answer {
                self.lang = other;
                self.record.lang = Some(other);
                c = o;
            }
        }
        // An author's exact act phrase ("I NEED HELP", "GOODBYE") beats a question the
        // classifier only guesses from shared words.
        let act = self.nlu.act(self.lang, text);
        let exact_act = act.as_ref().is_some_and(|(_, conf)| *conf >= 1.0);
        let decision = c.decision();
        if let Some(intent) = c.intent.as_deref()
            && decision == Decision::Answer
            && !exact_act
        {
            self.record
                .intents
                .push((Some(intent.to_string()), c.confidence));
            let intent = intent.to_string();
            self.answer(now, &intent);
            return;
        }
        match act.map(|(a, _)| a).as_deref() {
            Some("goodbye") | Some("no") => return self.goodbye(TtyOutcome::Completed),
            Some("repeat") => {
                if let Some(turn) = self.last_answer.clone() {
                    return self.say(turn);
                }
            }
            Some("yes") | Some("help") => return self.say(Turn::new(&["tty.ask_question"])),
            Some("spanish") => return self.switch_lang(Lang::Es),
            Some("english") => return self.switch_lang(Lang::En),
            _ => {}
        }
        self.record.intents.push((c.intent.clone(), c.confidence));
        match (c.intent, decision) {
            (_, Decision::OutOfDomain) => self.not_understood_as(now, "tty.out_of_domain"),
            (Some(intent), Decision::Answer | Decision::Confirm) => {
                let topic = format!("tty.topic.{intent}");
                self.state = State::ConfirmIntent { intent };
                self.say(Turn::new(&["tty.confirm_intent", &topic, "tty.yes_no"]));
            }
            _ => self.not_understood(now),
        }
    }

    fn switch_lang(&mut self, lang: Lang) {
        self.lang = lang;
        self.record.lang = Some(lang);
        self.say(Turn::new(&["tty.greeting"]));
    }

    fn not_understood(&mut self, now: Instant) {
        self.not_understood_as(now, "tty.not_understood");
    }

    /// Ask again with `prompt` (why it was not understood), or give up after the retries.
    fn not_understood_as(&mut self, now: Instant, prompt: &str) {
        self.retries += 1;
        if self.retries < self.config.retries_max {
            self.say(Turn::new(&[prompt]));
        } else if self.policy.should_transfer("agent", now) {
            self.transfer(Turn::new(&["tty.transfer"]));
        } else {
            let mut turn = Turn::new(&["tty.after_hours", "tty.goodbye"]);
            turn.then = Some(TtyOutput::Hangup);
            self.record.outcome = Some(TtyOutcome::NotUnderstood);
            self.state = State::Ending;
            self.say(turn);
        }
    }

    fn on_confirm_intent(&mut self, now: Instant, text: &str, intent: String) {
        match self.act(text).as_deref() {
            Some("yes") => self.answer(now, &intent),
            Some("no") => self.say(Turn::new(&["tty.ask_question"])),
            // Anything else is taken as a new question.
            _ => self.on_question(now, text),
        }
    }

    /// The answer to a question, then the link offer, a transfer, or "anything else".
    fn answer(&mut self, now: Instant, intent: &str) {
        self.retries = 0;
        let answer = format!("tty.answer.{intent}");
        let answer_turn = Turn::new(&[answer.as_str()]);
        self.last_answer = Some(answer_turn);
        if self.policy.should_transfer(intent, now) {
            return self.transfer(Turn::new(&[answer.as_str(), "tty.transfer"]));
        }
        if let Some(link) = self.prompts.link(self.lang, intent) {
            let config = LinkConfig {
                caller_id: self.caller_id.clone(),
                phone_entry: true,
                email: true,
                retries_max: self.config.retries_max,
            };
            // Both channels can be taken: the first step is the channel question.
            let (offer, _) = LinkOffer::start(config, intent, Some(link));
            self.state = State::Link(Box::new(offer));
            return self.say(Turn::new(&[answer.as_str(), "tty.link_offer"]));
        }
        let turn = if intent == "agent" {
            Turn::new(&[answer.as_str(), "tty.after_hours", "tty.anything_else"])
        } else {
            Turn::new(&[answer.as_str(), "tty.anything_else"])
        };
        self.say(turn);
    }

    /// The caller's line during the link offer, read as the offer's answer.
    fn on_link(&mut self, text: &str, mut offer: LinkOffer) {
        let act = self.act(text);
        let phone = slots::phone(text).and_then(|p| Recipient::phone(&p));
        let email = slots::email(text).and_then(|e| Recipient::email(&e));
        let answer = match offer.awaiting() {
            Awaiting::Channel => {
                let folded = normalize::fold(text, false);
                let has = |words: &[&str]| folded.split_whitespace().any(|w| words.contains(&w));
                if let Some(r) = phone.or(email) {
                    Answer::Recipient(r)
                } else if has(&[
                    "text", "txt", "sms", "texto", "mensaje", "cell", "celular", "mobile", "phone",
                ]) {
                    Answer::Channel(Channel::Sms)
                } else if has(&["email", "mail", "correo", "emial", "emal"]) {
                    Answer::Channel(Channel::Email)
                } else if matches!(act.as_deref(), Some("no") | Some("goodbye")) {
                    Answer::Decline
                } else {
                    Answer::NotUnderstood
                }
            }
            Awaiting::Recipient { channel, .. } => {
                let given = match channel {
                    Channel::Sms => phone,
                    Channel::Email => email,
                };
                match (given, act.as_deref()) {
                    (Some(r), _) => Answer::Recipient(r),
                    (None, Some("yes")) => Answer::Yes,
                    (None, Some("no")) => Answer::Decline,
                    _ => Answer::NotUnderstood,
                }
            }
            Awaiting::Confirm(current) => {
                let given = match current.channel() {
                    Channel::Sms => phone,
                    Channel::Email => email,
                };
                // Another number or address replaces the one read back; the same one is no
                // answer by itself.
                match (given.filter(|r| *r != current), act.as_deref()) {
                    (Some(r), _) => Answer::Recipient(r),
                    (None, Some("yes")) => Answer::Yes,
                    (None, Some("no")) => Answer::No,
                    _ => Answer::NotUnderstood,
                }
            }
            Awaiting::Stored | Awaiting::Nothing => Answer::NotUnderstood,
        };
        let step = offer.handle(answer);
        self.link_step(offer, step, false);
    }

    /// Turns the link offer's step into the conversation's turn (`no_input`: the step answers
    /// a silence).
    fn link_step(&mut self, offer: LinkOffer, step: Step, no_input: bool) {
        let turn = match step {
            Step::AskChannel => Turn::new(&["tty.link_offer"]),
            Step::OfferCallerId(Some(id)) => Turn {
                parts: vec![
                    TurnPart::Prompt("tty.ask_phone_caller_id".into()),
                    TurnPart::Value(Pii::new(format_phone(id.expose()))),
                    TurnPart::End,
                ],
                then: None,
            },
            Step::OfferCallerId(None) | Step::AskRecipient(Channel::Sms) => {
                Turn::new(&["tty.ask_phone"])
            }
            Step::AskRecipient(Channel::Email) => Turn::new(&["tty.ask_email"]),
            Step::Confirm(r) => confirm_turn(&r),
            Step::StillWaiting => Turn::new(&["tty.no_input"]),
            Step::Send {
                recipient,
                intent,
                link,
            } => return self.send(offer, recipient, intent, link.unwrap_or_default()),
            Step::GaveUp if no_input => return self.goodbye(TtyOutcome::NoInput),
            Step::Declined | Step::GaveUp | Step::Sent(_) | Step::NotSent(_) => {
                return self.anything_else();
            }
        };
        self.state = State::Link(Box::new(offer));
        self.say(turn);
    }

    fn send(&mut self, offer: LinkOffer, recipient: Recipient, intent: String, link: String) {
        let (channel, to) = match recipient {
            Recipient::CallerId(Some(to)) | Recipient::Phone(to) => (Channel::Sms, to),
            Recipient::Email(to) => (Channel::Email, to),
            // The conversation always knows the caller's number it offers.
            Recipient::CallerId(None) => return self.anything_else(),
        };
        let action = TtyOutput::SendLink {
            channel,
            to,
            intent,
            link,
        };
        self.record.actions.push(action_name(&action));
        self.outputs.push_back(DialogOutput::Do(action));
        self.retries = 0;
        self.state = State::Question;
        // "SENT" only once the shell says the link is stored (`handle_link_stored`).
        self.sending = Some(offer);
    }

    fn anything_else(&mut self) {
        self.retries = 0;
        self.state = State::Question;
        self.say(Turn::new(&["tty.anything_else"]));
    }

    fn transfer(&mut self, mut turn: Turn) {
        turn.then = Some(TtyOutput::Transfer { queue: TTY_QUEUE });
        self.record.outcome = Some(TtyOutcome::Transferred);
        self.state = State::Ending;
        self.say(turn);
    }

    fn goodbye(&mut self, outcome: TtyOutcome) {
        let mut turn = Turn::new(&["tty.goodbye"]);
        turn.then = Some(TtyOutput::Hangup);
        self.record.outcome = Some(outcome);
        self.state = State::Ending;
        self.say(turn);
    }

    /// Queues a turn (the line types it when it is free, replacing one not yet typed).
    fn say(&mut self, turn: Turn) {
        self.outputs.push_back(DialogOutput::Say(turn));
    }
}

/// "SK" (or "GA SK") from the caller: they are done.
fn line_is_sk(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    words
        .iter()
        .rev()
        .take(2)
        .any(|w| matches!(*w, "SK" | "SKSK" | "GASK"))
}

/// The line a conversation's turns go out on.
enum Line {
    Baudot(BaudotLine),
    Rtt(RttLine),
}

/// One TTY or RTT call's conversation: the [`TextDialog`] over its line adapter
/// ([`BaudotLine`] or [`RttLine`], by [`TextStyle`]). This is what the drivers
/// (`call::tty::TtySession`, `call::rtt::RttCore`) hold.
pub struct TtyConversation {
    dialog: TextDialog,
    prompts: Arc<TtyPrompts>,
    line: Line,
    /// A turn waiting for the line to be free.
    pending: Option<Turn>,
    /// The action to do once the turn being typed is sent.
    after_sent: Option<TtyOutput>,
    outputs: VecDeque<TtyOutput>,
}

impl TtyConversation {
    /// A conversation whose greeting is typed as soon as the line is free (at the first
    /// `poll_output` unless the caller is already typing).
    /// `caller_id`: the caller's number (From), offered for the text message.
    pub fn new(
        nlu: Arc<Nlu>,
        prompts: Arc<TtyPrompts>,
        config: TtyConfig,
        lang: Lang,
        caller_id: Option<Pii<String>>,
    ) -> TtyConversation {
        let line = Line::Baudot(BaudotLine::new(&config));
        let mut dialog = TextDialog::new(nlu, prompts.clone(), config, lang, caller_id);
        // Typed at the first `poll_output` if the line is free: a call switched from voice
        // replays the caller's first characters before that, and then gets its answer instead.
        let mut pending = None;
        while let Some(out) = dialog.poll_output() {
            if let DialogOutput::Say(turn) = out {
                pending = Some(turn);
            }
        }
        TtyConversation {
            dialog,
            prompts,
            line,
            pending,
            after_sent: None,
            outputs: VecDeque::new(),
        }
    }

    /// How turns are written and lines arrive (default: [`TextStyle::Baudot`]). Set it when
    /// the conversation is made, before the first `poll_output`.
    pub fn with_style(mut self, style: TextStyle) -> Self {
        self.line = match style {
            TextStyle::Baudot => Line::Baudot(BaudotLine::new(self.dialog.config())),
            TextStyle::Rtt => Line::Rtt(RttLine::new()),
        };
        self
    }

    pub fn style(&self) -> TextStyle {
        match self.line {
            Line::Baudot(_) => TextStyle::Baudot,
            Line::Rtt(_) => TextStyle::Rtt,
        }
    }

    /// Injects the routing decision (default: [`NeverTransfer`]).
    pub fn with_transfer_policy(mut self, policy: Arc<dyn TransferPolicy>) -> Self {
        self.dialog.set_transfer_policy(policy);
        self
    }

    pub fn lang(&self) -> Lang {
        self.dialog.lang()
    }

    pub fn record(&self) -> &TtyRecord {
        self.dialog.record()
    }

    pub fn is_ended(&self) -> bool {
        self.dialog.is_ended()
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<TtyOutput> {
        if self.outputs.is_empty() {
            self.flush();
        }
        self.outputs.pop_front()
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_transmitting() || self.dialog.is_ended() {
            return None;
        }
        let line = match &self.line {
            Line::Baudot(b) => b.poll_timeout(),
            Line::Rtt(_) => None,
        };
        [line, self.dialog.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// A decoded character from the caller's TTY (`\r`, `\n` and BEL included). Baudot only:
    /// an RTT line comes whole ([`TtyConversation::handle_line`]).
    pub fn handle_char(&mut self, now: Instant, c: char) {
        if !self.dialog.is_listening() {
            return;
        }
        let Line::Baudot(line) = &mut self.line else {
            return;
        };
        match line.handle_char(now, c) {
            Heard::Echo => {}
            Heard::Typing => self.dialog.handle_typing(),
            Heard::Line(text) => {
                self.dialog.handle_typing();
                self.dialog.handle_caller_line(now, &text);
                self.pump();
            }
        }
    }

    /// A whole line from the caller (RTT: the caller pressed Enter or paused; the line is read
    /// at once, no pause or "GA" needed). Anything typed before it on the same line comes
    /// first.
    pub fn handle_line(&mut self, now: Instant, text: &str) {
        if !self.dialog.is_listening() {
            return;
        }
        self.dialog.handle_typing();
        let heard = match &mut self.line {
            Line::Baudot(line) => line.handle_line(text),
            Line::Rtt(line) => line.handle_line(text),
        };
        if let Heard::Line(text) = heard {
            self.dialog.handle_caller_line(now, &text);
            self.pump();
        }
        self.flush();
    }

    /// The caller's carrier came on or went off (Baudot only).
    pub fn handle_carrier(&mut self, now: Instant, on: bool) {
        let Line::Baudot(line) = &mut self.line else {
            return;
        };
        match line.handle_carrier(now, on) {
            Heard::Echo => return,
            Heard::Typing => {}
            Heard::Line(text) => {
                self.dialog.handle_caller_line(now, &text);
                self.pump();
            }
        }
        self.flush();
    }

    /// The modulator (or the T.140 sender) finished typing the last `Type`.
    pub fn handle_sent(&mut self, now: Instant) {
        if !self.is_transmitting() {
            return;
        }
        match &mut self.line {
            Line::Baudot(line) => line.handle_sent(now),
            Line::Rtt(line) => line.handle_sent(),
        }
        if let Some(action) = self.dialog.handle_turn_sent(now, self.after_sent.take()) {
            self.outputs.push_back(action);
            return;
        }
        self.flush();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_transmitting() || self.dialog.is_ended() {
            return;
        }
        let stale = match &mut self.line {
            Line::Baudot(line) => line.drop_stale_carrier(now),
            Line::Rtt(_) => false,
        };
        if stale {
            self.flush();
        }
        let paused = match &mut self.line {
            Line::Baudot(line) => line.take_paused_line(now),
            Line::Rtt(_) => None,
        };
        match paused {
            Some(text) => self.dialog.handle_caller_line(now, &text),
            None => self.dialog.handle_timeout(now),
        }
        self.pump();
    }

    /// The shell stored the link of the last `SendLink` (`true`) or could not (a full disk, the
    /// database down, a bad recipient): the caller reads "SENT" only in the first case, and that
    /// it could not be sent in the second.
    pub fn handle_link_stored(&mut self, stored: bool) {
        self.dialog.handle_link_stored(stored);
        self.pump();
    }

    /// How the transfer the last `Transfer` asked for ended. A failed one (the queue busy, the
    /// trunk refusing, the agent never answering) brings the caller back to the conversation:
    /// they read that no agent could be reached and may ask something else.
    pub fn handle_transfer_result(&mut self, now: Instant, ok: bool) {
        self.dialog.handle_transfer_result(now, ok);
        self.pump();
    }

    /// What the shell did with the last `SendLink` or `Transfer`.
    pub fn handle_result(&mut self, now: Instant, result: ShellResult) {
        self.dialog.handle_result(now, result);
        self.pump();
    }

    fn is_transmitting(&self) -> bool {
        match &self.line {
            Line::Baudot(line) => line.is_transmitting(),
            Line::Rtt(line) => line.is_transmitting(),
        }
    }

    /// Takes the dialog's outputs in order: a turn waits for the line, an action goes out.
    fn pump(&mut self) {
        while let Some(out) = self.dialog.poll_output() {
            match out {
                DialogOutput::Say(turn) => {
                    self.pending = Some(turn);
                    self.flush();
                }
                DialogOutput::Do(action) => self.outputs.push_back(action),
            }
        }
    }

    /// Types the pending turn unless we are typing or the caller's carrier is on.
    fn flush(&mut self) {
        let busy = match &self.line {
            Line::Baudot(line) => line.is_busy(),
            Line::Rtt(line) => line.is_transmitting(),
        };
        if busy {
            return;
        }
        let Some(turn) = self.pending.take() else {
            return;
        };
        let lang = self.dialog.lang();
        let (clear, redacted) = match &mut self.line {
            Line::Baudot(line) => {
                line.start_typing();
                line.render(&turn.parts, &self.prompts, lang)
            }
            Line::Rtt(line) => {
                line.start_typing();
                line.render(&turn.parts, &self.prompts, lang)
            }
        };
        self.after_sent = turn.then;
        self.dialog.handle_turn_typed(clear.clone(), redacted);
        self.outputs.push_back(TtyOutput::Type(clear));
    }
}

/// The read-back of a number or address with its yes/no question.
fn confirm_turn(r: &Recipient) -> Turn {
    let (id, shown) = match r {
        Recipient::CallerId(Some(v)) | Recipient::Phone(v) => {
            ("tty.confirm_phone", format_phone(v.expose()))
        }
        Recipient::Email(v) => ("tty.confirm_email", v.expose().clone()),
        Recipient::CallerId(None) => ("tty.confirm_phone", String::new()),
    };
    Turn {
        parts: vec![
            TurnPart::Prompt(id.into()),
            TurnPart::Value(Pii::new(shown)),
            TurnPart::Prompt("tty.yes_no".into()),
        ],
        then: None,
    }
}

/// "2025550134" → "202-555-0134", as callers read numbers.
fn format_phone(digits: &str) -> String {
    if digits.len() == 10 && digits.chars().all(|c| c.is_ascii_digit()) {
        format!("{}-{}-{}", &digits[..3], &digits[3..6], &digits[6..])
    } else {
        digits.to_string()
    }
}

fn action_name(action: &TtyOutput) -> String {
    match action {
        TtyOutput::Type(_) => "type".into(),
        TtyOutput::SendLink {
            channel, intent, ..
        } => format!(
            "send_link:{}:{intent}",
            match channel {
                Channel::Sms => "sms",
                Channel::Email => "email",
            }
        ),
        TtyOutput::Transfer { queue } => format!("transfer:{queue}"),
        TtyOutput::Hangup => "hangup".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_numbers_match_on_digits() {
        let config = TtyConfig {
            numbers: vec!["+1 800-767-1833".into()],
            ..TtyConfig::default()
        };
        assert!(config.is_tty_number("8007671833"));
        assert!(config.is_tty_number("18007671833"));
        assert!(!config.is_tty_number("8003755283"));
        assert!(!config.is_tty_number("ivr"));
    }

    #[test]
    fn phone_is_formatted_in_groups() {
        assert_eq!(format_phone("2025550134"), "202-555-0134");
        assert_eq!(format_phone("12345"), "12345");
    }

    #[test]
    fn detector_needs_letters_under_one_carrier() {
        let t = Instant::now();
        let mut d = TtyDetector::new();
        // Two stray characters, then the carrier drops: not a TTY.
        for e in [
            TtyEvent::CarrierOn,
            TtyEvent::Char('E'),
            TtyEvent::Char('T'),
        ] {
            assert!(!d.handle_event(t, e));
        }
        assert!(!d.handle_event(t, TtyEvent::CarrierOff));
        assert!(!d.handle_event(t, TtyEvent::Char('A')), "no carrier");
        assert!(!d.handle_event(t, TtyEvent::CarrierOff));
        assert!(!d.handle_event(t, TtyEvent::CarrierOn));
        assert!(!d.handle_event(t, TtyEvent::Char('H')));
        assert!(!d.handle_event(t, TtyEvent::Char(' ')));
        assert!(!d.handle_event(t, TtyEvent::Char('I')));
        assert!(d.handle_event(t, TtyEvent::Char('S')));
        assert!(d.handle_event(t, TtyEvent::CarrierOff), "stays a TTY call");
        let text: String = d.take_chars().into_iter().map(|(_, c)| c).collect();
        assert_eq!(text, "H IS");
    }

    /// The turns typed for `lines`, in `style`, each line handed over whole.
    fn turns(
        nlu: &Arc<Nlu>,
        prompts: &Arc<TtyPrompts>,
        style: TextStyle,
        lines: &[&str],
    ) -> Vec<String> {
        let t = Instant::now();
        let mut conv = TtyConversation::new(
            nlu.clone(),
            prompts.clone(),
            TtyConfig::default(),
            Lang::En,
            None,
        )
        .with_style(style);
        let mut typed = Vec::new();
        let drain = |conv: &mut TtyConversation, typed: &mut Vec<String>| {
            while let Some(out) = conv.poll_output() {
                if let TtyOutput::Type(text) = out {
                    typed.push(text);
                    conv.handle_sent(t);
                }
            }
        };
        drain(&mut conv, &mut typed);
        for line in lines {
            // Past the Baudot echo guard.
            conv.handle_line(t + Duration::from_secs(1), line);
            drain(&mut conv, &mut typed);
        }
        typed
    }

    #[test]
    fn one_dialog_two_styles() {
        let (_, sources) = crate::prompts::test_files::shipped_sources();
        let catalog = Catalog::parse(&sources).expect("prompts parse");
        let prompts = Arc::new(TtyPrompts::from_catalog(&catalog).expect("tty and rtt prompts"));
        let nlu = crate::nlu::test_nlu();
        let lines = ["how do i check my case status", "no", "no"];
        let baudot = turns(&nlu, &prompts, TextStyle::Baudot, &lines);
        let rtt = turns(&nlu, &prompts, TextStyle::Rtt, &lines);
        assert_eq!(baudot.len(), rtt.len(), "{baudot:?}\n{rtt:?}");
        assert_eq!(
            rtt.len(),
            4,
            "greeting, answer, anything else, goodbye: {rtt:?}"
        );
        // The answer with the link offer: " Q " in Baudot, a real "?" in RTT.
        assert!(baudot[1].contains(" Q "), "{:?}", baudot[1]);
        assert!(baudot[1].ends_with("GA"), "{:?}", baudot[1]);
        assert!(baudot[3].ends_with("SK"), "{:?}", baudot[3]);
        let text = |id: &str| prompts.text(Lang::En, id).to_string();
        assert_eq!(
            rtt[1],
            format!(
                "\n{} {}",
                text("rtt.answer.case_status"),
                text("rtt.link_offer")
            )
        );
        assert!(rtt[1].contains("email? Type"), "{:?}", rtt[1]);
        assert_eq!(rtt[0], format!("\n{}", text("rtt.greeting")));
        assert_eq!(rtt[3], format!("\n{}", text("rtt.goodbye")));
        for turn in &rtt {
            let words: Vec<&str> = turn.split_whitespace().collect();
            assert!(
                !words.contains(&"GA") && !words.contains(&"SK") && !words.contains(&"Q"),
                "{turn:?}"
            );
            assert_ne!(turn.to_uppercase(), *turn, "mixed case: {turn:?}");
        }
        // The same link in both styles.
        assert!(rtt[1].contains("uscis.gov/casestatus"), "{:?}", rtt[1]);
        assert_eq!(
            prompts.link(Lang::En, "case_status").as_deref(),
            Some("uscis.gov/casestatus")
        );
    }

    #[test]
    fn rtt_reads_back_values_as_typed() {
        let (_, sources) = crate::prompts::test_files::shipped_sources();
        let catalog = Catalog::parse(&sources).expect("prompts parse");
        let prompts = Arc::new(TtyPrompts::from_catalog(&catalog).expect("tty and rtt prompts"));
        let nlu = crate::nlu::test_nlu();
        let rtt = turns(
            &nlu,
            &prompts,
            TextStyle::Rtt,
            &[
                "how do i check my case status",
                "email",
                "juan_p@example.com",
            ],
        );
        let last = rtt.last().unwrap();
        assert!(
            last.contains("juan_p@example.com? Type yes or no."),
            "{last:?}"
        );
    }

    /// The prompt ids of a turn.
    fn ids(turn: &Turn) -> Vec<&str> {
        turn.parts
            .iter()
            .filter_map(|p| match p {
                TurnPart::Prompt(id) => Some(id.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_dialog_speaks_in_structured_turns() {
        let (_, sources) = crate::prompts::test_files::shipped_sources();
        let catalog = Catalog::parse(&sources).expect("prompts parse");
        let prompts = Arc::new(TtyPrompts::from_catalog(&catalog).expect("tty and rtt prompts"));
        let t = Instant::now();
        let mut dialog = TextDialog::new(
            crate::nlu::test_nlu(),
            prompts,
            TtyConfig::default(),
            Lang::En,
            None,
        );
        let Some(DialogOutput::Say(greeting)) = dialog.poll_output() else {
            panic!("the greeting first");
        };
        assert_eq!(ids(&greeting), ["tty.greeting"]);
        assert!(!greeting.is_last());
        assert!(dialog.poll_output().is_none());
        // Its silence timer starts once the line has typed the turn.
        dialog.handle_turn_typed("\nHELLO GA".into(), "\nHELLO GA".into());
        assert_eq!(dialog.handle_turn_sent(t, None), None);
        let no_input = t + Duration::from_secs(TtyConfig::default().no_input_timeout_s);
        assert_eq!(dialog.poll_timeout(), Some(no_input));
        dialog.handle_typing();
        assert_eq!(dialog.poll_timeout(), None);
        // "SK": the last turn, the hang-up after it.
        dialog.handle_caller_line(t, "THANKS SK");
        let Some(DialogOutput::Say(bye)) = dialog.poll_output() else {
            panic!("goodbye");
        };
        assert_eq!(ids(&bye), ["tty.goodbye"]);
        assert!(bye.is_last());
        assert!(!dialog.is_listening() && !dialog.is_ended());
        assert_eq!(
            dialog.handle_turn_sent(t, bye.then.clone()),
            Some(TtyOutput::Hangup)
        );
        assert!(dialog.is_ended());
        assert_eq!(dialog.record().actions, ["hangup"]);
        assert_eq!(dialog.record().typed(true), ["\nHELLO GA"]);
        // A transfer result it did not ask for changes nothing.
        dialog.handle_result(t, ShellResult::TransferFailed);
        assert!(dialog.poll_output().is_none() && dialog.is_ended());
    }

    #[test]
    fn every_tty_id_has_an_rtt_twin() {
        let ids = prompt_ids();
        let tty: Vec<&String> = ids.iter().filter(|i| i.starts_with("tty.")).collect();
        let rtt: Vec<&String> = ids.iter().filter(|i| i.starts_with("rtt.")).collect();
        assert_eq!(tty.len(), 60);
        assert_eq!(rtt.len(), tty.len());
        for id in tty {
            assert!(ids.contains(&rtt_id(id).unwrap()), "{id}");
        }
    }

    #[test]
    fn closures_are_transfer_policies() {
        let p: Arc<dyn TransferPolicy> = Arc::new(|i: &str, _| i == "military");
        let now = Instant::now();
        assert!(p.should_transfer("military", now));
        assert!(!p.should_transfer("hours", now));
        assert!(!NeverTransfer.should_transfer("agent", now));
    }
}
