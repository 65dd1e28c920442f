//! One call, sans-IO: [`CallCore`] holds the call's mode (voice, TTY, RTT) and its switches, the
//! voice flow, the TTY session (Baudot modem + text dialog) and the watch that hears Baudot on a
//! voice call, the RTT conversation, which dialog waits for a stored link, and the transfer
//! (REFER, then the B2BUA bridge). The shell (`server::call`, `ivr call`) feeds it inputs
//! (`handle`, `handle_audio`, `handle_text_datagram`, `handle_timeout`) and carries out its
//! [`Effect`]s (`poll_effect`), str0m/quinn style: every input is followed by draining
//! `poll_effect` until `None`.
//!
//! Invariants kept here:
//! - A link is said "sent" (voice prompt, TTY or RTT text) only after `LinkStored { ok: true }`
//!   came back for it: while a `StoreLink` is out no dialog is drained. On failure the dialog of
//!   the call's current mode says it could not be sent.
//! - A transfer's result goes to the dialog of the call's current mode (the TTY or RTT
//!   conversation when the call is in text, else the voice flow); a failed one brings the
//!   caller back to it and the call goes on.
//! - One conversation at a time: typed text (RTT) silences voice, keys and Baudot; Baudot tones
//!   switch a voice call to TTY (what the watch decoded is replayed); keys count in voice mode
//!   only.

pub mod rtt;
pub mod text_step;
pub mod transfer;
pub mod tty;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::flow::tty::{Channel, TtyConfig, TtyPrompts};
use crate::flow::{self, Action, CallMode, FlowConfig, Listen, PromptRef, TransferContext};
use crate::nlu::Nlu;
use crate::pii::Pii;
use crate::rtp::inbound::Playout;
use crate::sip::sdp::TextMedia;
use crate::types::{Codec, Lang};

use rtt::{ConversationParts, RttAction, RttConfig, RttCore};
use text_step::TextStep;
use transfer::{AgentEvent, BridgeConfig, Step, Transfer};
use tty::{TtyAction, TtySession, TtyWatch};

/// What a call is set up with.
#[derive(Clone)]
pub struct CallConfig {
    pub flow: FlowConfig,
    /// The call came in on the TTY line: a text conversation from the start.
    pub tty: bool,
    /// `[tty]`: the TTY conversation's timing (a voice call switched to TTY uses it too).
    pub tty_config: TtyConfig,
    /// The TTY texts of the call's prompts; `Err(missing ids)`: the call cannot go to TTY.
    pub tty_prompts: Result<Arc<TtyPrompts>, Vec<String>>,
    pub nlu: Arc<Nlu>,
    /// The caller's number, offered for text messages.
    pub caller_id: Option<Pii<String>>,
    /// Text callers: the intents the policy transfers right now, and the TTY agent queue.
    pub tty_transfers: Arc<HashSet<String>>,
    pub tty_queue_uri: String,
    /// `[transfer]`: bridge when the trunk refuses REFER.
    pub bridge: BridgeConfig,
    /// The caller's codec (the Baudot watch and the relay need G.711).
    pub codec: Codec,
    /// The RFC 4103 text stream, when the caller offered one.
    pub text: Option<TextConfig>,
}

/// A call's text stream: its media, `[rtt]` and our SSRC.
#[derive(Clone)]
pub struct TextConfig {
    pub media: TextMedia,
    pub config: RttConfig,
    pub ssrc: u32,
}

/// What the call core asks of its shell.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Play catalog prompts (or text said during the call only), replacing what plays; answer
    /// with `CallInput::PlaybackDone` when it ended (not when it was stopped).
    Play {
        prompts: Vec<PromptRef>,
    },
    /// A read-back rendered now, then catalog prompts; ends like `Play`.
    PlayText {
        lang: Lang,
        text: Pii<String>,
        then: Vec<PromptRef>,
    },
    /// TTY tones (8 kHz PCM) played like a prompt; ends like `Play`.
    PlayTones(Vec<i16>),
    StopPlayback,
    /// The call is in text now (`Tty` or `Rtt`): stop the voice playback and drop speech.
    EnterText(CallMode),
    Listen {
        lang: Lang,
        listen: Listen,
        trailing_silence_ms: u32,
    },
    StopListening,
    /// Store the caller's text-ahead consent.
    RecordConsent,
    /// Store the link of `intent` for `to` in the outbox; answer with `CallInput::LinkStored`
    /// before polling again.
    StoreLink {
        intent: String,
        channel: Channel,
        to: Pii<String>,
        lang: Lang,
    },
    /// Blind transfer: REFER the caller to `uri`; progress comes back as `ReferProgress`.
    Refer {
        uri: String,
        context: String,
    },
    /// The trunk will not transfer: call the agent queue ourselves (B2BUA).
    PlaceAgentCall {
        uri: String,
        context: String,
    },
    /// The agent answered: relay media between the legs; the IVR's own stream stops for good.
    Bridge,
    /// End the agent leg (CANCEL while it rings, BYE when up).
    DropAgent,
    /// Our BYE; `after_playback`: once what plays now (a TTY's last line) has been sent.
    Hangup {
        reason: &'static str,
        after_playback: bool,
    },
    /// Our leg is over now (transferred, or the bridged agent hung up): BYE and end the call.
    End {
        reason: &'static str,
    },
}

/// An input to the call core.
#[derive(Debug)]
pub enum CallInput {
    /// The caller's ACK: start the conversation.
    Start,
    /// A key (RFC 4733 or in-band); ignored outside voice mode.
    Digit(char),
    /// The speech front end's news for the voice flow (barge-in, heard, unavailable).
    Speech(flow::Event),
    /// The playback asked for last has ended.
    PlaybackDone,
    /// Whether the link of the last `StoreLink` is in the outbox.
    LinkStored { ok: bool },
    /// Our REFER's response, then each NOTIFY's sipfrag status.
    ReferProgress { status: u16, done: bool },
    /// The agent leg answered; `relayable`: the shell could set up the relay for it.
    AgentAnswered { relayable: bool },
    /// The agent leg failed or hung up.
    Agent(AgentEvent),
    /// The caller hung up or vanished.
    RemoteHangup,
    /// A re-INVITE changed the caller's codec.
    CallerCodec(Codec),
    /// The shell's own Baudot watch (`TtyWatch`, run where the audio is, the media thread)
    /// heard the caller type on a voice call: what it decoded so far. The same switch to TTY
    /// as a watch in `handle_audio` makes; ignored outside voice mode.
    BaudotHeard(Vec<(Instant, char)>),
}

/// Which dialog waits for the outcome of a `StoreLink`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkWaiter {
    Voice,
    Tty,
    Rtt,
}

pub struct CallCore {
    config: CallConfig,
    flow: flow::Call,
    tty: Option<TtySession>,
    watch: TtyWatch,
    rtt: Option<RttCore>,
    transfer: Transfer,
    started: bool,
    link: Option<LinkWaiter>,
    effects: VecDeque<Effect>,
    now: Instant,
}

impl CallCore {
    pub fn new(now: Instant, config: CallConfig) -> CallCore {
        let rtt = config.text.as_ref().and_then(|t| {
            let prompts = config.tty_prompts.as_ref().ok()?.clone();
            Some(RttCore::new(
                now,
                &t.media,
                t.config.clone(),
                t.ssrc,
                ConversationParts {
                    nlu: config.nlu.clone(),
                    prompts,
                    caller_id: config.caller_id.clone(),
                    transferable: config.tty_transfers.clone(),
                },
            ))
        });
        let mut core = CallCore {
            flow: flow::Call::new(config.flow.clone()),
            tty: None,
            watch: TtyWatch::default(),
            rtt,
            transfer: Transfer::new(config.bridge.clone(), config.codec),
            started: false,
            link: None,
            effects: VecDeque::new(),
            now,
            config,
        };
        if core.config.tty {
            // A TTY-line call starts in English unless the flow was given a language.
            let lang = core.config.flow.start_lang.unwrap_or(Lang::En);
            core.tty = core.tty_session(lang);
        }
        core
    }

    /// Start a TTY conversation in `lang`; None (logged) if the prompts lack the TTY texts.
    fn tty_session(&self, lang: Lang) -> Option<TtySession> {
        let c = &self.config;
        match &c.tty_prompts {
            Ok(prompts) => Some(TtySession::new(
                c.nlu.clone(),
                prompts.clone(),
                c.tty_config.clone(),
                lang,
                c.caller_id.clone(),
                c.tty_transfers.clone(),
            )),
            Err(missing) => {
                tracing::error!(?missing, "TTY prompts missing: the call stays a voice call");
                None
            }
        }
    }

    /// The conversation that holds the call.
    pub fn mode(&self) -> CallMode {
        if self.tty.is_some() {
            CallMode::Tty
        } else if self.rtt.as_ref().is_some_and(RttCore::is_text_call) {
            CallMode::Rtt
        } else {
            CallMode::Voice
        }
    }

    /// The language chosen so far (the voice flow's).
    pub fn lang(&self) -> Lang {
        self.flow.lang()
    }

    pub fn handle(&mut self, now: Instant, input: CallInput) {
        self.now = now;
        let mode = self.mode();
        match input {
            CallInput::Start => {
                self.started = true;
                if mode == CallMode::Voice {
                    self.flow.handle_event(now, flow::Event::Start);
                }
            }
            CallInput::Digit(d) if mode == CallMode::Voice => {
                self.flow.handle_event(now, flow::Event::Digit(d));
            }
            CallInput::Digit(_) => {}
            CallInput::Speech(ev) if mode == CallMode::Voice => self.flow.handle_event(now, ev),
            CallInput::Speech(_) => {}
            CallInput::PlaybackDone => match (self.tty.as_mut(), mode) {
                (Some(t), _) => t.handle_sent(now),
                (None, CallMode::Rtt) => {}
                (None, _) => self.flow.handle_event(now, flow::Event::PlaybackDone),
            },
            CallInput::LinkStored { ok } => self.link_stored(ok),
            CallInput::ReferProgress { status, done } => {
                if done {
                    tracing::info!(status, "REFER finished");
                }
                let step = self.transfer.handle_refer_progress(now, status, done);
                self.step(step);
            }
            CallInput::AgentAnswered { relayable } => {
                let mut step = self.transfer.handle_agent(&AgentEvent::Answered(()));
                if step == Step::Bridged && !relayable {
                    tracing::error!("cannot relay: dropping the agent");
                    step = self.transfer.handle_relay_failed();
                }
                self.step(step);
            }
            CallInput::Agent(ev) => {
                let step = self.transfer.handle_agent(&ev);
                self.step(step);
            }
            CallInput::RemoteHangup => self.flow.handle_event(now, flow::Event::RemoteHangup),
            CallInput::CallerCodec(codec) => {
                self.config.codec = codec;
                self.transfer.handle_caller_codec(codec);
            }
            CallInput::BaudotHeard(chars) if mode == CallMode::Voice => {
                self.switch_to_tty(chars);
            }
            CallInput::BaudotHeard(_) => {}
        }
    }

    /// One frame of the caller's audio out of the jitter buffer (`pcm`: decoded, 8 kHz on G.711
    /// calls): the TTY modem's on a TTY call, the Baudot watch's on a narrowband voice call.
    pub fn handle_audio(&mut self, now: Instant, media: Playout, pcm: &[i16]) {
        self.now = now;
        match self.mode() {
            // Baudot is decoded on the sender's timeline: no concealment, no silence for a
            // late packet (see `TtySession::handle_playout`).
            CallMode::Tty => {
                if let Some(t) = self.tty.as_mut() {
                    t.handle_playout(now, media, pcm);
                }
            }
            // A text call (RFC 4103): the audio is no longer listened to.
            CallMode::Rtt => {}
            // The TTY detectors are tuned for 8 kHz audio (G.711 calls).
            CallMode::Voice if pcm.is_empty() || self.config.codec == Codec::Opus => {}
            CallMode::Voice => {
                // Concealment is not what the caller sent: it would look like Baudot tones in
                // the wrong place.
                let typing = match media {
                    Playout::Audio(_) => self.watch.handle_pcm(now, pcm),
                    _ => self.watch.handle_gap(now, pcm.len()),
                };
                if typing {
                    let chars = self.watch.take_chars();
                    self.switch_to_tty(chars);
                }
            }
        }
    }

    /// Baudot tones on a voice call: the caller types. Switch to the text conversation in the
    /// language chosen so far, replaying what the watch already decoded.
    fn switch_to_tty(&mut self, chars: Vec<(Instant, char)>) {
        tracing::info!("Baudot tones detected: TTY mode");
        self.effects.push_back(Effect::EnterText(CallMode::Tty));
        self.tty = self.tty_session(self.flow.lang());
        if let Some(t) = self.tty.as_mut() {
            t.replay(chars);
        }
    }

    /// A datagram from the text port; true when it was the caller's T.140 (the call is alive).
    pub fn handle_text_datagram(&mut self, now: Instant, data: &[u8]) -> bool {
        self.now = now;
        let lang = self.flow.lang();
        self.rtt
            .as_mut()
            .is_some_and(|r| r.handle_datagram(now, data, lang))
    }

    /// A re-INVITE may renumber the text payload types.
    pub fn handle_text_media(&mut self, media: &TextMedia) {
        if let Some(r) = self.rtt.as_mut() {
            r.handle_media(media);
        }
    }

    /// The next text packet due at `now`, written into `out` (at least
    /// `rtp::t140::PACKET_BYTES_MAX` long). Poll it until `None` after every input.
    pub fn poll_text_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        self.rtt.as_mut().and_then(|r| r.poll_transmit(now, out))
    }

    /// When to call `handle_timeout` next: the dialog's, the text stream's and the transfer's
    /// timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let dialog = match self.mode() {
            CallMode::Tty => self.tty.as_ref().and_then(TtySession::poll_timeout),
            // A text call's conversation keeps its own timers; the voice flow is frozen.
            CallMode::Rtt => None,
            CallMode::Voice => self.flow.poll_timeout(),
        };
        let text = self.rtt.as_ref().and_then(RttCore::poll_timeout);
        [dialog, text, self.transfer.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Early or duplicate timeouts are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        match self.mode() {
            CallMode::Tty => {
                if let Some(t) = self.tty.as_mut().filter(|t| due(t.poll_timeout())) {
                    t.handle_timeout(now);
                }
            }
            CallMode::Rtt => {}
            CallMode::Voice => {
                if due(self.flow.poll_timeout()) {
                    self.flow.handle_timeout(now);
                }
            }
        }
        if let Some(r) = self.rtt.as_mut().filter(|r| due(r.poll_timeout())) {
            r.handle_timeout(now);
        }
        if due(self.transfer.poll_timeout()) {
            let step = self.transfer.handle_timeout(now);
            self.step(step);
        }
    }

    /// What the shell must do next. While a `StoreLink` waits for `LinkStored`, no dialog is
    /// drained: nothing may say "sent" before the link is stored.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        loop {
            if let Some(e) = self.effects.pop_front() {
                return Some(e);
            }
            if self.link.is_some() || !self.drain_one() {
                return None;
            }
        }
    }

    /// Moves one dialog output into the effect queue; false when no dialog had any.
    fn drain_one(&mut self) -> bool {
        if !self.started {
            return false;
        }
        let now = self.now;
        if let Some(action) = self.tty.as_mut().and_then(TtySession::poll_action) {
            match action {
                TtyAction::Play(pcm) => self.effects.push_back(Effect::PlayTones(pcm)),
                TtyAction::Step(step) => self.text_step(step, LinkWaiter::Tty),
            }
            return true;
        }
        if let Some(action) = self.rtt.as_mut().and_then(|r| r.poll_action(now)) {
            match action {
                RttAction::TextCall => {
                    // Typed text wins over voice and Baudot tones: one conversation at a time.
                    self.tty = None;
                    self.effects.push_back(Effect::EnterText(CallMode::Rtt));
                }
                RttAction::Step(step) => self.text_step(step, LinkWaiter::Rtt),
            }
            return true;
        }
        match self.flow.poll_action() {
            Some(action) => {
                self.flow_action(action);
                true
            }
            None => false,
        }
    }

    /// What a text conversation (TTY or RTT; one at a time) asks of the call.
    fn text_step(&mut self, step: TextStep, waiter: LinkWaiter) {
        match step {
            TextStep::SendLink {
                channel,
                to,
                intent,
                lang,
            } => {
                tracing::info!(?channel, to = %to, %intent, "link to send (text call)");
                self.store_link(waiter, intent, channel, Some(to), lang);
            }
            TextStep::Transfer { context } => {
                tracing::info!(intent = %context.intent, mode = context.mode.as_str(), "text call transfer");
                let uri = self.config.tty_queue_uri.clone();
                self.refer(uri, &context);
            }
            TextStep::Hangup => self.effects.push_back(Effect::Hangup {
                reason: "ivr_hangup",
                // A TTY's last line (ending "SK") is tones still playing.
                after_playback: true,
            }),
        }
    }

    fn flow_action(&mut self, action: Action) {
        let effect = match action {
            Action::Play {
                prompts,
                barge_in: _,
            } => Effect::Play { prompts },
            Action::StopPlayback => Effect::StopPlayback,
            Action::Listen {
                lang,
                listen,
                trailing_silence_ms,
            } => Effect::Listen {
                lang,
                listen,
                trailing_silence_ms,
            },
            Action::StopListening => Effect::StopListening,
            Action::RecordConsent => Effect::RecordConsent,
            Action::PlayText {
                lang, text, then, ..
            } => Effect::PlayText { lang, text, then },
            Action::Transfer {
                queue_uri,
                intent,
                lang,
                text_ahead,
            } => {
                let context = TransferContext {
                    intent,
                    lang,
                    mode: CallMode::Voice,
                    consent: text_ahead,
                };
                return self.refer(queue_uri, &context);
            }
            Action::SendSms { intent, to } => {
                let to = to.or_else(|| self.config.caller_id.clone());
                let lang = self.flow.lang();
                return self.store_link(LinkWaiter::Voice, intent, Channel::Sms, to, lang);
            }
            Action::SendEmail { intent, to } => {
                let lang = self.flow.lang();
                return self.store_link(LinkWaiter::Voice, intent, Channel::Email, Some(to), lang);
            }
            Action::Hangup => Effect::Hangup {
                reason: "ivr_hangup",
                after_playback: false,
            },
        };
        self.effects.push_back(effect);
    }

    /// A link to store before the dialog `waiter` may say it was sent; no recipient: not
    /// stored.
    fn store_link(
        &mut self,
        waiter: LinkWaiter,
        intent: String,
        channel: Channel,
        to: Option<Pii<String>>,
        lang: Lang,
    ) {
        self.link = Some(waiter);
        match to {
            Some(to) => self.effects.push_back(Effect::StoreLink {
                intent,
                channel,
                to,
                lang,
            }),
            None => self.link_stored(false),
        }
    }

    fn link_stored(&mut self, ok: bool) {
        let now = self.now;
        match self.link.take() {
            Some(LinkWaiter::Voice) => self.flow.handle_event(now, flow::Event::LinkQueued(ok)),
            Some(LinkWaiter::Tty) => {
                if let Some(t) = self.tty.as_mut() {
                    t.handle_link_stored(ok);
                }
            }
            Some(LinkWaiter::Rtt) => {
                if let Some(r) = self.rtt.as_mut() {
                    r.handle_link_stored(ok);
                }
            }
            None => {}
        }
    }

    /// Blind transfer by REFER; the transfer machine follows its progress.
    fn refer(&mut self, uri: String, context: &TransferContext) {
        let context = context.to_string();
        self.transfer
            .handle_refer_sent(self.now, uri.clone(), context.clone());
        self.effects.push_back(Effect::Refer { uri, context });
    }

    /// Act on a transfer step.
    fn step(&mut self, step: Step) {
        match step {
            Step::Wait => {}
            Step::Referred => {
                // The agent has the caller: our leg ends.
                self.transfer_done(true);
                self.effects.push_back(Effect::End {
                    reason: "transferred",
                });
            }
            Step::PlaceCall { uri, context } => {
                tracing::info!("the trunk will not transfer: bridging");
                self.effects
                    .push_back(Effect::PlaceAgentCall { uri, context });
            }
            Step::Bridged => {
                // The agent talks now: the IVR's own stream stops for good.
                self.effects.push_back(Effect::Bridge);
                self.transfer_done(true);
            }
            Step::Failed => self.transfer_done(false),
            Step::CancelAgent => {
                self.effects.push_back(Effect::DropAgent);
                self.transfer_done(false);
            }
            Step::WithdrawAgent => self.effects.push_back(Effect::DropAgent),
            Step::ReferredWithdrawAgent => {
                // As `Referred`, after dropping our own call to the agent.
                self.effects.push_back(Effect::DropAgent);
                self.transfer_done(true);
                self.effects.push_back(Effect::End {
                    reason: "transferred",
                });
            }
            Step::AgentGone => self.effects.push_back(Effect::End {
                reason: "agent_bye",
            }),
        }
    }

    /// How the transfer ended, to the conversation of the call's current mode (a failed one
    /// brings the caller back to it).
    fn transfer_done(&mut self, ok: bool) {
        let now = self.now;
        match (self.mode(), self.tty.as_mut(), self.rtt.as_mut()) {
            (CallMode::Tty, Some(t), _) => t.handle_transfer_result(now, ok),
            (CallMode::Rtt, _, Some(r)) => r.handle_transfer_result(now, ok),
            _ => self.flow.handle_event(now, flow::Event::TransferDone(ok)),
        }
    }

    /// The voice flow (its record: keys, intents, prompts, outcome).
    pub fn flow(&self) -> &flow::Call {
        &self.flow
    }

    /// The TTY session, once the call is in TTY.
    pub fn tty(&self) -> Option<&TtySession> {
        self.tty.as_ref()
    }

    /// The text stream, when the caller offered one.
    pub fn rtt(&self) -> Option<&RttCore> {
        self.rtt.as_ref()
    }

    pub fn transfer(&self) -> &Transfer {
        &self.transfer
    }

    /// An agent leg is ringing or up: the shell relays media to it while bridged.
    pub fn is_bridged(&self) -> bool {
        self.transfer.is_bridged()
    }
}

#[cfg(test)]
mod tests {
    // The call core alone in virtual time: voice calls driven by keys (the TTY and RTT modes, with
    // real prompts and modems, are in the `ivr` crate's `tests/call_core.rs`).

    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::flow::Transfer as FlowTransfer;

    /// A voice call whose flow links case status by text and transfers expedite to tier 1.
    fn config() -> CallConfig {
        let mut transfers = HashMap::new();
        transfers.insert(
            (Lang::En, "expedite".to_string()),
            FlowTransfer {
                queue_uri: "sip:tier1@10.0.0.9".to_string(),
                ask_text_ahead: false,
            },
        );
        CallConfig {
            flow: FlowConfig {
                sms_links: ["case_status".to_string()].into_iter().collect(),
                sms_to_caller: true,
                transfers,
                ..FlowConfig::default()
            },
            tty: false,
            tty_config: TtyConfig::default(),
            tty_prompts: Err(vec!["tty.greeting".into()]),
            nlu: crate::nlu::test_nlu(),
            caller_id: Some(Pii::new("2025550134".into())),
            tty_transfers: Arc::new(HashSet::new()),
            tty_queue_uri: "sip:tty@10.0.0.9".into(),
            bridge: BridgeConfig::default(),
            codec: Codec::Pcmu,
            text: None,
        }
    }

    fn drain(core: &mut CallCore) -> Vec<Effect> {
        std::iter::from_fn(|| core.poll_effect()).collect()
    }

    fn played(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .flat_map(|e| match e {
                Effect::Play { prompts } => prompts.iter().map(|p| p.id.clone()).collect(),
                _ => vec![],
            })
            .collect()
    }

    fn keys(core: &mut CallCore, now: Instant, keys: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        for d in keys.chars() {
            core.handle(now, CallInput::Digit(d));
            out.extend(drain(core));
        }
        out
    }

    fn started() -> (CallCore, Instant) {
        let now = Instant::now();
        let mut core = CallCore::new(now, config());
        assert!(drain(&mut core).is_empty(), "nothing before the ACK");
        core.handle(now, CallInput::Start);
        assert_eq!(played(&drain(&mut core))[0], "greeting");
        (core, now)
    }

    #[test]
    fn a_link_is_said_sent_only_once_stored_and_a_failure_says_so() {
        for ok in [false, true] {
            let (mut core, now) = started();
            let effects = keys(&mut core, now, "1141");
            let store = effects
                .iter()
                .position(|e| matches!(e, Effect::StoreLink { .. }))
                .expect("a link to store");
            assert!(
                matches!(&effects[store], Effect::StoreLink { intent, channel: Channel::Sms, to, lang: Lang::En }
                    if intent == "case_status" && to.expose() == "2025550134"),
                "{effects:?}"
            );
            assert_eq!(
                store,
                effects.len() - 1,
                "nothing after the link until stored"
            );
            // While it is stored, no dialog runs: keys wait.
            core.handle(now, CallInput::Digit('9'));
            assert!(drain(&mut core).is_empty());
            core.handle(now, CallInput::LinkStored { ok });
            let said = played(&drain(&mut core));
            let expected = if ok { "sms_sent" } else { "sms_failed" };
            assert_eq!(said[0], expected, "{said:?}");
            assert!(ok || !said.contains(&"sms_sent".to_string()));
        }
    }

    /// Keys to the expedite answer, its transfer offer, "please hold", and the REFER.
    fn referred() -> (CallCore, Instant) {
        let (mut core, now) = started();
        keys(&mut core, now, "181");
        assert_eq!(played(&keys(&mut core, now, "0")), ["transfer_start"]);
        core.handle(now, CallInput::PlaybackDone);
        assert_eq!(
            drain(&mut core),
            [Effect::Refer {
                uri: "sip:tier1@10.0.0.9".into(),
                context: "intent=expedite;lang=en;mode=voice;consent=none".into()
            }]
        );
        (core, now)
    }

    #[test]
    fn a_failed_transfer_brings_the_voice_caller_back() {
        let (mut core, now) = referred();
        core.handle(
            now,
            CallInput::ReferProgress {
                status: 202,
                done: false,
            },
        );
        assert!(drain(&mut core).is_empty());
        core.handle(
            now,
            CallInput::ReferProgress {
                status: 486,
                done: true,
            },
        );
        let effects = drain(&mut core);
        assert_eq!(played(&effects)[0], "transfer_failed");
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::Hangup { .. } | Effect::End { .. })),
            "{effects:?}"
        );
        assert!(!core.flow().is_ended());
    }

    #[test]
    fn a_refused_refer_bridges_and_the_agents_bye_ends_the_call() {
        let (mut core, now) = referred();
        core.handle(
            now,
            CallInput::ReferProgress {
                status: 405,
                done: true,
            },
        );
        assert_eq!(
            drain(&mut core),
            [Effect::PlaceAgentCall {
                uri: "sip:tier1@10.0.0.9".into(),
                context: "intent=expedite;lang=en;mode=voice;consent=none".into()
            }]
        );
        core.handle(now, CallInput::AgentAnswered { relayable: true });
        assert_eq!(drain(&mut core), [Effect::Bridge]);
        assert!(core.is_bridged() && core.flow().is_ended());
        core.handle(now, CallInput::Agent(AgentEvent::Hangup));
        assert_eq!(
            drain(&mut core),
            [Effect::End {
                reason: "agent_bye"
            }]
        );

        // An answer that cannot be relayed drops the agent; the caller hears the failure.
        let (mut core, now) = referred();
        core.handle(
            now,
            CallInput::ReferProgress {
                status: 405,
                done: true,
            },
        );
        drain(&mut core);
        core.handle(now, CallInput::AgentAnswered { relayable: false });
        let effects = drain(&mut core);
        assert_eq!(effects[0], Effect::DropAgent);
        assert_eq!(played(&effects)[0], "transfer_failed");
    }

    #[test]
    fn the_transfer_timers_are_the_cores() {
        let (mut core, now) = referred();
        let at = core.poll_timeout().expect("the REFER's timer");
        assert_eq!(at, now + Duration::from_secs(8));
        core.handle_timeout(at - Duration::from_millis(1));
        assert!(drain(&mut core).is_empty(), "an early timeout is a no-op");
        core.handle_timeout(at);
        assert!(matches!(
            drain(&mut core).as_slice(),
            [Effect::PlaceAgentCall { .. }]
        ));
        let ring = core.poll_timeout().expect("the ring timer");
        core.handle_timeout(ring);
        let effects = drain(&mut core);
        assert_eq!(effects[0], Effect::DropAgent);
        assert_eq!(played(&effects)[0], "transfer_failed");
    }

    #[test]
    fn a_successful_refer_ends_our_leg() {
        let (mut core, now) = referred();
        core.handle(
            now,
            CallInput::ReferProgress {
                status: 200,
                done: true,
            },
        );
        assert_eq!(
            drain(&mut core),
            [Effect::End {
                reason: "transferred"
            }]
        );
        assert_eq!(core.transfer().outcome(), Some(transfer::Outcome::Referred));
    }
}
