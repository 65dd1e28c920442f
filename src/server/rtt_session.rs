//! A call's RFC 4103 real-time text stream (`m=text`, T.140 with `red`): the text RTP socket,
//! the `rtp::t140` sender and receiver, and the TTY conversation (`flow::tty`) held over text
//! instead of Baudot tones.
//!
//! The stream sits idle until the caller types: then the call becomes a text call (the voice
//! prompts stop, the shell is told by [`RttAction::TextCall`]) and every line the caller ends
//! (Enter, U+2028, or a pause) goes to the conversation, whose turns are sent back as T.140.
//! RTT is full duplex and has no 6 cps limit: the TTY etiquette is kept only where it still
//! means something (the caller's line is read when it is ended); "GA" and "SK" are not sent,
//! "Q" becomes a question mark, and nothing typed while we answer is lost.
//!
//! [`RttCore`] is the sans-IO part (tested on a virtual clock); [`RttSession`] adds the socket.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::config::RttConfig;
use tokio::net::UdpSocket;

use super::store::CallRecord;
use super::text_step::TextStep;
use crate::flow::CallMode;
use crate::flow::tty::{TtyConfig, TtyConversation, TtyOutput, TtyPrompts};
use crate::nlu::Nlu;
use crate::pii::Pii;
use crate::rtp::t140::{
    LINE_SEPARATOR, LineBuffer, PACKET_BYTES_MAX, T140Receiver, T140Sender, T140SenderConfig,
};
use crate::sip::sdp::TextMedia;
use crate::types::Lang;

/// Longest caller line handed to the conversation (a stuck key is not a question).
const LINE_CHARS_MAX: usize = 1000;

/// What the sip task hands a call whose offer had a text stream we bound.
pub struct TextSetup {
    pub socket: UdpSocket,
    pub media: TextMedia,
    pub config: RttConfig,
}

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
        let config = TtyConfig {
            // Lines are ended here (Enter or our own pause), handed over whole: the
            // conversation reads each at once.
            pause_ms: 0,
            // A separate stream: no echo of our own text to ignore.
            echo_guard_ms: 0,
            no_input_timeout_s: self.config.no_input_timeout_s,
            retries_max: self.config.retries_max,
            // RTT displays wrap lines themselves.
            line_chars: 0,
            ..TtyConfig::default()
        };
        let conv = TtyConversation::new(
            p.nlu.clone(),
            p.prompts.clone(),
            config,
            lang,
            p.caller_id.clone(),
        )
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
        for c in line.chars() {
            conv.handle_char(now, c);
        }
        // No carrier on a text stream: the line is complete now (pause 0 has passed).
        conv.handle_carrier(now, false);
        conv.handle_timeout(now);
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

    /// The conversation's part of the call record, once the call became a text call.
    pub fn fill_record(&self, record: &mut CallRecord) {
        let Some(conv) = &self.conv else {
            return;
        };
        let r = conv.record();
        record.mode = "rtt".into();
        record.lang = r.lang.map(|l| l.code().to_string());
        record.intents = r.intents.iter().filter_map(|(i, _)| i.clone()).collect();
        record.intent = record.intents.last().cloned();
        record.actions = r.actions.clone();
        record.outcome = r
            .outcome
            .and_then(|o| serde_json::to_value(o).ok())
            .and_then(|v| v.as_str().map(String::from));
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

/// A conversation turn (TTY style: "\nTEXT Q TYPE YES OR NO GA") as RTT text: "Q" back to a
/// question mark, the closing "GA"/"SK" dropped (RTT is full duplex), new lines as U+2028
/// (T.140's line separator); the first turn does not start with an empty line.
pub fn rtt_text(turn: &str, first: bool) -> String {
    let body = turn.strip_prefix('\n').unwrap_or(turn);
    let mut out = String::with_capacity(body.len() + 3);
    if !first {
        out.push(LINE_SEPARATOR);
    }
    let lines: Vec<&str> = body.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(LINE_SEPARATOR);
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut kept: Vec<String> = Vec::with_capacity(words.len());
        for (k, w) in words.iter().enumerate() {
            let next = words.get(k + 1).copied();
            let turn_end = next.is_none() && i + 1 == lines.len();
            if turn_end && matches!(*w, "GA" | "SK") {
                continue;
            }
            // "Q" stands for "?" on a TTY; only where a question ends (a read-back value such
            // as "Q AT X.COM" keeps its letter).
            if *w == "Q"
                && matches!(next, None | Some("GA") | Some("TYPE"))
                && let Some(prev) = kept.last_mut()
            {
                prev.push('?');
                continue;
            }
            kept.push((*w).to_string());
        }
        out.push_str(&kept.join(" "));
    }
    out
}

/// The text stream of a call: [`RttCore`] on its socket.
pub struct RttSession {
    core: RttCore,
    socket: UdpSocket,
    /// The caller's text address: from the SDP, else learned from their first packet.
    remote: Option<SocketAddr>,
    inbuf: Box<[u8; 2048]>,
    outbuf: Box<[u8; PACKET_BYTES_MAX]>,
}

/// Why [`next_wake`] returned.
#[derive(Debug)]
pub enum Wake {
    Datagram { len: usize, from: SocketAddr },
    Timer,
}

impl RttSession {
    /// The text stream of a call whose setup has one; the TTY texts come from the call's
    /// prompts. None (logged) when the prompts lack them.
    pub fn from_setup(setup: &mut super::call::CallSetup) -> Option<RttSession> {
        let text = setup.text.take()?;
        let prompts = match TtyPrompts::from_catalog(&setup.prompts.catalog) {
            Ok(p) => Arc::new(p),
            Err(missing) => {
                tracing::error!(
                    ?missing,
                    "TTY prompts missing: the text stream stays unused"
                );
                return None;
            }
        };
        // Our own SSRC, distinct from the audio stream's; no clock is read for it.
        let ssrc = setup.record.call_id.bytes().fold(0x811C_9DC5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let core = RttCore::new(
            Instant::now(),
            &text.media,
            text.config,
            ssrc,
            ConversationParts {
                nlu: setup.nlu.clone(),
                prompts,
                caller_id: setup.caller_id.clone(),
                transferable: setup.tty_transfers.clone(),
            },
        );
        Some(RttSession {
            core,
            socket: text.socket,
            remote: text.media.remote,
            inbuf: Box::new([0; 2048]),
            outbuf: Box::new([0; PACKET_BYTES_MAX]),
        })
    }

    pub fn is_text_call(&self) -> bool {
        self.core.is_text_call()
    }

    /// A re-INVITE: the caller's text address and payload types may change.
    pub fn handle_media(&mut self, text: Option<&TextMedia>) {
        if let Some(t) = text {
            if t.remote.is_some() {
                self.remote = t.remote;
            }
            self.core.handle_media(t);
        }
    }

    /// Handles what woke [`next_wake`] and sends what is due. True when the caller's text
    /// arrived (the call is alive).
    pub fn handle_wake(&mut self, now: Instant, wake: Wake, lang: Lang) -> bool {
        let mut alive = false;
        match wake {
            Wake::Datagram { len, from } => {
                let data = &self.inbuf[..len.min(self.inbuf.len())];
                alive = self.core.handle_datagram(now, data, lang);
                if alive && self.remote.is_none() {
                    // No usable address in the SDP: answer where the text comes from.
                    self.remote = Some(from);
                }
            }
            Wake::Timer => self.core.handle_timeout(now),
        }
        self.flush(now);
        alive
    }

    /// See [`RttCore::handle_transfer_result`]; also sends the text it releases.
    pub fn handle_transfer_result(&mut self, now: Instant, ok: bool) {
        self.core.handle_transfer_result(now, ok);
        self.flush(now);
    }

    /// See [`RttCore::handle_link_stored`].
    pub fn handle_link_stored(&mut self, stored: bool) {
        self.core.handle_link_stored(stored);
    }

    /// See [`RttCore::poll_action`]; also sends text released by it.
    pub fn poll_action(&mut self, now: Instant) -> Option<RttAction> {
        let action = self.core.poll_action(now);
        self.flush(now);
        action
    }

    fn flush(&mut self, now: Instant) {
        while let Some(n) = self.core.poll_transmit(now, &mut self.outbuf[..]) {
            if let Some(remote) = self.remote {
                // UDP: a full socket buffer loses this packet; the redundancy covers it.
                let _ = self.socket.try_send_to(&self.outbuf[..n], remote);
            }
        }
    }

    pub fn fill_record(&self, record: &mut CallRecord) {
        self.core.fill_record(record);
    }

    pub fn log_stats(&self) {
        self.core.log_stats();
    }
}

/// Waits for the text stream's next datagram or timer; never returns without one (the
/// `select!` arm of a call without a text stream stays asleep).
pub async fn next_wake(session: Option<&mut RttSession>) -> Wake {
    let Some(s) = session else {
        return std::future::pending().await;
    };
    let at = s.core.poll_timeout();
    tokio::select! {
        r = s.socket.recv_from(&mut s.inbuf[..]) => match r {
            Ok((len, from)) => Wake::Datagram { len, from },
            // An ICMP error from an earlier send: nothing to read, check the timers.
            Err(_) => Wake::Timer,
        },
        _ = tokio::time::sleep_until(at.unwrap_or_else(Instant::now).into()), if at.is_some() => Wake::Timer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::t140::{MISSING_TEXT, T140SenderConfig};
    use std::path::PathBuf;
    use std::sync::OnceLock;

    const T140: u8 = 98;
    const RED: u8 = 100;

    fn deps() -> (Arc<Nlu>, Arc<TtyPrompts>) {
        static DEPS: OnceLock<(Arc<Nlu>, Arc<TtyPrompts>)> = OnceLock::new();
        DEPS.get_or_init(|| {
            let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let nlu = crate::server::load_grammars(&repo.join("grammars")).expect("grammars");
            let catalog = crate::server::load_catalog(&repo.join("prompts")).expect("prompts");
            let prompts = TtyPrompts::from_catalog(&catalog).expect("tty prompts");
            (Arc::new(nlu), Arc::new(prompts))
        })
        .clone()
    }

    fn media() -> TextMedia {
        TextMedia {
            payload_type: T140,
            red_payload_type: Some(RED),
            remote: None,
            local_port: 0,
        }
    }

    /// A caller with an RTT terminal and the IVR's text stream on a virtual clock, with a
    /// loss pattern on the IVR → caller direction.
    struct Pair {
        ivr: RttCore,
        caller: T140Sender,
        heard: T140Receiver,
        now: Instant,
        /// Everything the IVR sent, decoded.
        screen: String,
        actions: Vec<RttAction>,
        sent: usize,
        drop_every: usize,
    }

    impl Pair {
        fn new(transferable: &[&str]) -> Pair {
            let (nlu, prompts) = deps();
            let now = Instant::now();
            Pair {
                ivr: RttCore::new(
                    now,
                    &media(),
                    RttConfig::default(),
                    7,
                    ConversationParts {
                        nlu,
                        prompts,
                        caller_id: Some(Pii::new("2025550134".into())),
                        transferable: Arc::new(
                            transferable.iter().map(|s| s.to_string()).collect(),
                        ),
                    },
                ),
                caller: T140Sender::new(
                    now,
                    T140SenderConfig {
                        ssrc: 99,
                        ..T140SenderConfig::default()
                    },
                ),
                heard: T140Receiver::new(T140, Some(RED)),
                now,
                screen: String::new(),
                actions: Vec::new(),
                sent: 0,
                drop_every: 0,
            }
        }

        fn run(&mut self, ms: u64) {
            let mut buf = [0u8; PACKET_BYTES_MAX];
            let end = self.now + Duration::from_millis(ms);
            while self.now < end {
                self.now += Duration::from_millis(10);
                let now = self.now;
                while let Some(n) = self.caller.poll_transmit(now, &mut buf).unwrap() {
                    self.ivr.handle_datagram(now, &buf[..n], Lang::En);
                }
                if self.ivr.poll_timeout().is_some_and(|t| t <= now) {
                    self.ivr.handle_timeout(now);
                }
                while let Some(a) = self.ivr.poll_action(now) {
                    // As the shell does: the link is stored before the next poll.
                    if matches!(a, RttAction::Step(TextStep::SendLink { .. })) {
                        self.ivr.handle_link_stored(true);
                    }
                    self.actions.push(a);
                }
                while let Some(n) = self.ivr.poll_transmit(now, &mut buf) {
                    self.sent += 1;
                    if self.drop_every > 0 && self.sent % self.drop_every == 0 {
                        continue;
                    }
                    self.heard.handle_datagram(&buf[..n]).unwrap();
                }
                while let Some(c) = self.heard.poll_char() {
                    self.screen.push(c);
                }
            }
        }

        fn typed(&mut self, text: &str) {
            self.caller.push_text(text).unwrap();
            self.run(3000);
        }
    }

    fn answer(id: &str) -> String {
        let (_, prompts) = deps();
        prompts
            .text(Lang::En, id)
            .trim_end_matches(" GA")
            .to_string()
    }

    #[test]
    fn a_typed_question_gets_the_answer_and_the_link_by_text() {
        let mut p = Pair::new(&[]);
        p.drop_every = 3;
        p.run(2000);
        assert!(p.screen.is_empty(), "silent until the caller types");
        assert!(!p.ivr.is_text_call());
        p.typed("how do I chekc\u{8}\u{8}ck my case status\r\n");
        assert_eq!(p.actions, vec![RttAction::TextCall]);
        let expected = answer("tty.answer.case_status");
        assert!(!expected.is_empty());
        assert!(p.screen.contains(&expected), "{:?}", p.screen);
        assert!(
            p.screen
                .contains("WANT THIS LINK BY TEXT OR EMAIL? TYPE TEXT OR EMAIL OR NO"),
            "{:?}",
            p.screen
        );
        assert!(!p.screen.contains(" GA") && !p.screen.contains(MISSING_TEXT));
        assert!(!p.screen.starts_with(LINE_SEPARATOR));

        p.typed("text\r\n");
        p.typed("yes\u{2028}");
        assert!(
            matches!(&p.actions[1], RttAction::Step(TextStep::SendLink { channel: crate::outbox::Channel::Sms, to, intent, lang: Lang::En })
                if to.expose() == "2025550134" && intent == "case_status"),
            "{:?}",
            p.actions
        );
        assert!(p.screen.contains("SENT."), "{:?}", p.screen);
        assert!(p.screen.contains(&format!("{LINE_SEPARATOR}SENT.")));

        p.typed("no thanks bye\r\n");
        assert_eq!(p.actions.last(), Some(&RttAction::Step(TextStep::Hangup)));
        assert!(
            p.screen.ends_with("THANK YOU FOR CALLING USCIS. GOODBYE"),
            "{:?}",
            p.screen
        );
        let mut record = CallRecord::default();
        p.ivr.fill_record(&mut record);
        assert_eq!(record.mode, "rtt");
        assert_eq!(record.intent.as_deref(), Some("case_status"));
        assert_eq!(record.actions, ["send_link:sms:case_status", "hangup"]);
    }

    #[test]
    fn a_line_without_enter_is_read_after_the_pause_and_transfers_follow_the_policy() {
        let mut p = Pair::new(&["military"]);
        p.caller
            .push_text("I am in the military and need help")
            .unwrap();
        p.run(2000);
        assert!(p.ivr.is_text_call());
        // Only the greeting so far: the line is not read before the pause.
        assert!(p.screen.contains("TYPE YOUR QUESTION"), "{:?}", p.screen);
        assert!(!p.screen.contains("MILITARY"));
        p.run(4000);
        assert!(
            p.screen.contains(&answer("tty.answer.military")),
            "{:?}",
            p.screen
        );
        let transfer = p
            .actions
            .iter()
            .find_map(|a| match a {
                RttAction::Step(TextStep::Transfer { context }) => Some(context.to_string()),
                _ => None,
            })
            .expect("transferred");
        assert_eq!(transfer, "intent=military;lang=en;mode=rtt;consent=none");
    }

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
    fn rtt_text_drops_tty_etiquette() {
        assert_eq!(rtt_text("\nANYTHING ELSE Q GA", true), "ANYTHING ELSE?");
        assert_eq!(
            rtt_text("\nSEND THE EMAIL TO Q AT X.COM Q TYPE YES OR NO GA", false),
            "\u{2028}SEND THE EMAIL TO Q AT X.COM? TYPE YES OR NO"
        );
        assert_eq!(
            rtt_text("\nLINE ONE\nGOODBYE SK", false),
            "\u{2028}LINE ONE\u{2028}GOODBYE"
        );
        assert_eq!(rtt_text("", true), "");
    }
}
