//! A call's RFC 4103 real-time text stream (`m=text`, T.140 with `red`), sans-IO: the
//! `rtp::t140` sender and receiver and the TTY conversation (`flow::tty`) held over text
//! instead of Baudot tones. The shell (`server::rtt_session`) owns the socket.
//!
//! The stream sits idle until the caller types: then the call becomes a text call (the voice
//! prompts stop, the shell is told by [`RttAction::TextCall`]) and every line the caller ends
//! (Enter, U+2028, or a pause) goes to the conversation, whose turns are sent back as T.140.
//! RTT is full duplex and has no 6 cps limit: the conversation runs in its RTT style
//! ([`TextStyle::Rtt`]): the `rtt.*` texts as written (mixed case, "?", no "GA"/"SK"), each
//! line the caller ends handed over whole, and nothing typed while we answer is lost.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::text_step::TextStep;
use crate::flow::CallMode;
use crate::flow::tty::{TextStyle, TtyConfig, TtyConversation, TtyOutput, TtyPrompts, TtyRecord};
use crate::nlu::Nlu;
use crate::pii::Pii;
use crate::rtp::t140::{LINE_SEPARATOR, LineBuffer, T140Receiver, T140Sender, T140SenderConfig};
use crate::sip::sdp::TextMedia;
use crate::types::Lang;

/// `[rtt]` settings. `Default` follows RFC 4103 (300 ms buffering) and gives a typist on a
/// phone keyboard time to think before a line without Enter is taken as complete.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RttConfig {
    /// A line typed without Enter is read after this much silence. Default 4000.
    pub pause_ms: u64,
    /// Our text is collected this long between packets (RFC 4103 §4.1). Default 300.
    pub buffer_ms: u64,
    /// An idle text stream sends an empty packet this often; 0: never. Default 10000.
    pub keepalive_ms: u64,
    /// No typing for this long after our turn: "ARE YOU STILL THERE?". Default 45.
    pub no_input_timeout_s: u64,
    /// Retries (not understood, no input, bad number or address) before giving up. Default 3.
    pub retries_max: u32,
}

impl Default for RttConfig {
    fn default() -> Self {
        RttConfig {
            pause_ms: 4000,
            buffer_ms: 300,
            keepalive_ms: 10_000,
            no_input_timeout_s: 45,
            retries_max: 3,
        }
    }
}

/// Longest caller line handed to the conversation (a stuck key is not a question).
const LINE_CHARS_MAX: usize = 1000;

/// What the call task must do for the text stream.
#[derive(Debug, PartialEq, Eq)]
pub enum RttAction {
    /// The caller typed: this is a text call now. Stop the voice prompts and the voice flow.
    TextCall,
    /// What the conversation asks of the call. A `SendLink` is stored before the caller reads
    /// "SENT" (the text that says so is only released at the next `poll_action`); a `Transfer`
    /// or `Hangup` comes once our last text has been sent, with its redundancy.
    Step(TextStep),
}

/// What the conversation needs, kept until the caller types.
pub struct ConversationParts {
    pub nlu: Arc<Nlu>,
    pub prompts: Arc<TtyPrompts>,
    /// The caller's number, offered for the text message.
    pub caller_id: Option<Pii<String>>,
    /// The intents the routing policy sends to the TTY agent queue right now.
    pub transferable: Arc<HashSet<String>>,
}

/// The sans-IO text stream: datagrams and time in, datagrams and actions out.
pub struct RttCore {
    config: RttConfig,
    sender: T140Sender,
    receiver: T140Receiver,
    lines: LineBuffer,
    parts: ConversationParts,
    conv: Option<TtyConversation>,
    /// When the caller last typed, for a line ended by a pause.
    typed_at: Option<Instant>,
    /// A transfer or hang-up waiting for our last text to leave.
    deferred: Option<TtyOutput>,
    /// The conversation is paused after a `SendLink` until the shell has stored it.
    link_pending: bool,
    actions: VecDeque<RttAction>,
    sent_any: bool,
}

impl RttCore {
    pub fn new(
        now: Instant,
        media: &TextMedia,
        config: RttConfig,
        ssrc: u32,
        parts: ConversationParts,
    ) -> RttCore {
        let sender = T140Sender::new(
            now,
            T140SenderConfig {
                payload_type: media.payload_type,
                red_payload_type: media.red_payload_type,
                buffer_ms: config.buffer_ms,
                keepalive_ms: config.keepalive_ms,
                ssrc,
                seq: (ssrc >> 16) as u16,
                timestamp: ssrc.rotate_left(11),
            },
        );
        RttCore {
            sender,
            receiver: T140Receiver::new(media.payload_type, media.red_payload_type),
            lines: LineBuffer::new(LINE_CHARS_MAX),
            parts,
            config,
            conv: None,
            typed_at: None,
            deferred: None,
            link_pending: false,
            actions: VecDeque::new(),
            sent_any: false,
        }
    }

    /// The caller has typed: a text conversation is running.
    pub fn is_text_call(&self) -> bool {
        self.conv.is_some()
    }

    /// A re-INVITE may renumber the text payload types.
    pub fn handle_media(&mut self, media: &TextMedia) {
        self.receiver
            .set_payload_types(media.payload_type, media.red_payload_type);
    }

    /// A datagram from the text port. `lang`: the call's language so far, for a conversation
    /// this starts. True when it was T.140 from the caller.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8], lang: Lang) -> bool {
        if let Err(e) = self.receiver.handle_datagram(data) {
            tracing::debug!(error = %e, "text datagram ignored");
            return false;
        }
        while let Some(c) = self.receiver.poll_char() {
            if self.conv.is_none() && !c.is_whitespace() && !c.is_control() {
                self.start(lang);
            }
            self.typed_at = Some(now);
            if let Some(line) = self.lines.handle_char(c) {
                self.handle_line(now, &line);
            }
        }
        self.pump(now);
        true
    }

    fn start(&mut self, lang: Lang) {
        let p = &self.parts;
        let transferable = p.transferable.clone();
        let policy = move |intent: &str, _now: Instant| transferable.contains(intent);
        // The RTT style has no pause, echo guard or wrap: lines are ended here (Enter or our
        // own pause) and handed over whole, and RTT displays wrap lines themselves.
        let config = TtyConfig {
            no_input_timeout_s: self.config.no_input_timeout_s,
            retries_max: self.config.retries_max,
            ..TtyConfig::default()
        };
        let conv = TtyConversation::new(
            p.nlu.clone(),
            p.prompts.clone(),
            config,
            lang,
            p.caller_id.clone(),
        )
        .with_style(TextStyle::Rtt)
        .with_transfer_policy(Arc::new(policy));
        tracing::info!("the caller types on the text stream: RTT mode");
        self.conv = Some(conv);
        self.actions.push_back(RttAction::TextCall);
    }

    fn handle_line(&mut self, now: Instant, line: &str) {
        self.typed_at = None;
        let Some(conv) = self.conv.as_mut() else {
            return;
        };
        conv.handle_line(now, line);
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pause = self
            .typed_at
            .filter(|_| !self.lines.partial().trim().is_empty())
            .map(|t| t + Duration::from_millis(self.config.pause_ms));
        let conv = self.conv.as_ref().and_then(TtyConversation::poll_timeout);
        [self.sender.poll_timeout(), pause, conv]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .typed_at
            .is_some_and(|t| now >= t + Duration::from_millis(self.config.pause_ms))
        {
            self.typed_at = None;
            if let Some(line) = self.lines.take_partial() {
                self.handle_line(now, &line);
            }
        }
        if let Some(conv) = self.conv.as_mut()
            && conv.poll_timeout().is_some_and(|t| now >= t)
        {
            conv.handle_timeout(now);
        }
        self.pump(now);
    }

    /// The next packet due at `now`, written into `out` (at least `PACKET_BYTES_MAX` long).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let n = match self.sender.poll_transmit(now, out) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "text packet not written");
                None
            }
        };
        if self.sender.is_drained()
            && let Some(after) = self.deferred.take()
            && let Some(step) = self
                .conv
                .as_ref()
                .and_then(|c| TextStep::of(after, c, CallMode::Rtt))
        {
            self.actions.push_back(RttAction::Step(step));
        }
        n
    }

    /// Whether the link of the last `SendLink` was stored: the conversation then types "SENT",
    /// or that it could not be sent. Call it before polling again.
    pub fn handle_link_stored(&mut self, stored: bool) {
        if let Some(conv) = self.conv.as_mut() {
            conv.handle_link_stored(stored);
        }
    }

    /// How the transfer of the last `Transfer` action ended: a failed one brings the caller
    /// back to the text conversation (told no agent could be reached).
    pub fn handle_transfer_result(&mut self, now: Instant, ok: bool) {
        if let Some(conv) = self.conv.as_mut() {
            conv.handle_transfer_result(now, ok);
        }
        self.pump(now);
    }

    /// The next thing for the shell to do. Polling again means the previous action is done
    /// (a `SendLink` stored), which releases the text that follows it.
    pub fn poll_action(&mut self, now: Instant) -> Option<RttAction> {
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        if self.link_pending {
            self.link_pending = false;
            self.pump(now);
        }
        self.actions.pop_front()
    }

    /// Moves the conversation's outputs into the sender and the action queue; stops after a
    /// `SendLink` so the link is stored before the text saying "sent" can leave.
    fn pump(&mut self, now: Instant) {
        let Some(conv) = self.conv.as_mut() else {
            return;
        };
        if self.link_pending {
            return;
        }
        while let Some(out) = conv.poll_output() {
            match out {
                TtyOutput::Type(text) => {
                    let text = rtt_text(&text, !self.sent_any);
                    if let Err(e) = self.sender.push_text(&text) {
                        tracing::warn!(error = %e, "RTT reply dropped");
                    }
                    self.sent_any = true;
                    // The sender takes the whole turn at once; the caller may type meanwhile.
                    conv.handle_sent(now);
                }
                link @ TtyOutput::SendLink { .. } => {
                    if let Some(step) = TextStep::of(link, conv, CallMode::Rtt) {
                        self.actions.push_back(RttAction::Step(step));
                    }
                    self.link_pending = true;
                    return;
                }
                after @ (TtyOutput::Transfer { .. } | TtyOutput::Hangup) => {
                    self.deferred = Some(after);
                }
            }
        }
    }

    /// The conversation's record, once the call became a text call.
    pub fn record(&self) -> Option<&TtyRecord> {
        self.conv.as_ref().map(TtyConversation::record)
    }

    /// What the text stream received, for the log at the call's end.
    pub fn log_stats(&self) {
        if self.conv.is_none() {
            return;
        }
        let stats = self.receiver.stats();
        tracing::info!(
            packets = stats.packets,
            recovered = stats.recovered,
            lost = stats.lost,
            "text stream"
        );
    }
}

/// A conversation turn (RTT style, "\nText? Type yes or no.") as T.140 text: new lines as
/// U+2028 (T.140's line separator); the first turn does not start with an empty line.
pub fn rtt_text(turn: &str, first: bool) -> String {
    let body = turn.strip_prefix('\n').unwrap_or(turn);
    let mut out = String::with_capacity(body.len() + 3);
    if !first {
        out.push(LINE_SEPARATOR);
    }
    out.extend(
        body.chars()
            .map(|c| if c == '\n' { LINE_SEPARATOR } else { c }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: RttConfig = toml::from_str("pause_ms = 2500").unwrap();
        assert_eq!(
            c,
            RttConfig {
                pause_ms: 2500,
                ..RttConfig::default()
            }
        );
        assert_eq!(RttConfig::default().buffer_ms, 300);
        assert!(toml::from_str::<RttConfig>("pause = 1").is_err());
    }

    #[test]
    fn rtt_text_keeps_the_text_and_separates_lines() {
        assert_eq!(rtt_text("\nAnything else?", true), "Anything else?");
        assert_eq!(
            rtt_text("\nSend the email to q@x.com? Type yes or no.", false),
            "\u{2028}Send the email to q@x.com? Type yes or no."
        );
        assert_eq!(
            rtt_text("\nLine one\n¿Algo más?", false),
            "\u{2028}Line one\u{2028}¿Algo más?"
        );
        assert_eq!(rtt_text("", true), "");
    }
}
