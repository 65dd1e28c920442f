//! The call core (`ivr::call::CallCore`) alone, on a virtual clock: no sockets, no tasks. A
//! scripted caller talks to it the way the call task does — keys, 20 ms frames of audio (Baudot
//! tones from a real modulator), T.140 datagrams — and every effect is carried out by a
//! stand-in shell: prompts "play" for a second, TTY tones are decoded by a real demodulator,
//! RTT packets by a real T.140 receiver, links are stored or not as the test says.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ivr::audio::tty::{TtyDemodulator, TtyModulator, TtyRxConfig, TtyTxConfig};
use ivr::call::rtt::RttConfig;
use ivr::call::transfer::{AgentEvent, BridgeConfig};
use ivr::call::tty::TtyWatch;
use ivr::call::{CallConfig, CallCore, CallInput, Effect, TextConfig};
use ivr::flow::tty::{TtyConfig, TtyPrompts};
use ivr::flow::{CallMode, FlowConfig};
use ivr::nlu::Nlu;
use ivr::pii::Pii;
use ivr::rtp::inbound::Playout;
use ivr::rtp::t140::{PACKET_BYTES_MAX, T140Receiver, T140Sender, T140SenderConfig};
use ivr::sip::sdp::TextMedia;
use ivr::types::{Codec, Lang};

const FRAME: Duration = Duration::from_millis(20);
const T140: u8 = 98;
const RED: u8 = 100;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deps() -> (Arc<Nlu>, Arc<TtyPrompts>) {
    static DEPS: OnceLock<(Arc<Nlu>, Arc<TtyPrompts>)> = OnceLock::new();
    DEPS.get_or_init(|| {
        let nlu = ivr::cli::call::load_nlu(&repo().join("grammars")).expect("grammars load");
        let prompts =
            ivr::cli::call::load_tty_prompts(&repo().join("prompts")).expect("prompts load");
        (Arc::new(nlu), Arc::new(prompts))
    })
    .clone()
}

fn tty_text(id: &str) -> String {
    words(deps().1.text(Lang::En, id).trim_end_matches(" GA"))
}

/// What an RTT caller reads for a prompt: its `rtt.*` text, as in `prompts/en/rtt.txt`.
fn rtt_text(id: &str) -> String {
    words(deps().1.text(Lang::En, id))
}

/// Text with its line breaks and runs of spaces as single spaces (a TTY's lines are wrapped).
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    Voice,
    /// A voice call with an RFC 4103 text stream.
    VoiceWithText,
    /// A call on the TTY line.
    TtyLine,
}

/// A voice call whose flow links case status by text and transfers expedite to tier 1; text
/// callers are transferred for "military".
fn config(start: Start) -> CallConfig {
    let (nlu, prompts) = deps();
    let mut transfers = HashMap::new();
    transfers.insert(
        (Lang::En, "expedite".to_string()),
        ivr::flow::Transfer {
            queue_uri: "sip:tier1@10.0.0.9".to_string(),
            ask_text_ahead: false,
        },
    );
    let text = (start == Start::VoiceWithText).then(|| TextConfig {
        media: TextMedia {
            payload_type: T140,
            red_payload_type: Some(RED),
            remote: None,
            local_port: 0,
        },
        config: RttConfig::default(),
        ssrc: 7,
    });
    CallConfig {
        flow: FlowConfig {
            sms_links: ["case_status".to_string()].into_iter().collect(),
            sms_to_caller: true,
            transfers,
            ..FlowConfig::default()
        },
        tty: start == Start::TtyLine,
        tty_config: TtyConfig::default(),
        tty_prompts: Ok(prompts),
        nlu,
        caller_id: Some(Pii::new("2025550134".into())),
        tty_transfers: Arc::new(HashSet::from(["military".to_string()])),
        tty_queue_uri: "sip:tty@10.0.0.9".into(),
        bridge: BridgeConfig::default(),
        codec: Codec::Pcmu,
        text,
    }
}

/// The call core, a stand-in shell and a caller, on a virtual clock.
struct Call {
    core: CallCore,
    now: Instant,
    /// Every effect, in order.
    effects: Vec<Effect>,
    /// Prompt ids played (voice).
    played: Vec<String>,
    /// What the IVR's TTY tones said, decoded.
    typed: String,
    /// What the IVR's text stream said, decoded.
    screen: String,
    /// When what plays now ends.
    playing_until: Option<Instant>,
    /// What the shell answers to `StoreLink`.
    store_ok: bool,
    /// The caller's Baudot tones, still to send.
    tape: Vec<i16>,
    modem: TtyDemodulator,
    caller_text: T140Sender,
    text_rx: T140Receiver,
    /// The shell's Baudot watch (as the media threads run it), when the test says so: a voice
    /// call's frames go to it instead of the core, and what it decoded arrives as
    /// `CallInput::BaudotHeard`.
    shell_watch: Option<TtyWatch>,
}

impl Call {
    fn new(start: Start) -> Call {
        let now = Instant::now();
        let mut call = Call {
            core: CallCore::new(now, config(start)),
            now,
            effects: Vec::new(),
            played: Vec::new(),
            typed: String::new(),
            screen: String::new(),
            playing_until: None,
            store_ok: true,
            tape: Vec::new(),
            modem: TtyDemodulator::new(TtyRxConfig::default()),
            caller_text: T140Sender::new(
                now,
                T140SenderConfig {
                    ssrc: 99,
                    ..T140SenderConfig::default()
                },
            ),
            text_rx: T140Receiver::new(T140, Some(RED)),
            shell_watch: None,
        };
        call.drain();
        assert!(call.effects.is_empty(), "nothing before the ACK");
        call.core.handle(now, CallInput::Start);
        call.drain();
        call
    }

    /// Carries out every effect as the call task does.
    fn drain(&mut self) {
        loop {
            let mut buf = [0u8; PACKET_BYTES_MAX];
            while let Some(n) = self.core.poll_text_transmit(self.now, &mut buf) {
                self.text_rx.handle_datagram(&buf[..n]).expect("our T.140");
                while let Some(c) = self.text_rx.poll_char() {
                    // T.140's line separator.
                    self.screen.push(if c == '\u{2028}' { ' ' } else { c });
                }
            }
            let Some(effect) = self.core.poll_effect() else {
                break;
            };
            match &effect {
                Effect::Play { prompts } => {
                    self.played.extend(prompts.iter().map(|p| p.id.clone()));
                    self.playing_until = Some(self.now + Duration::from_secs(1));
                }
                Effect::PlayText { .. } => {
                    self.playing_until = Some(self.now + Duration::from_secs(1));
                }
                Effect::PlayTones(pcm) => {
                    // What the caller's TTY prints.
                    self.modem.handle_pcm(self.now, pcm);
                    self.modem.handle_pcm(self.now, &[0; 1600]);
                    while let Some(c) = self.modem.poll_char() {
                        self.typed.push(c);
                    }
                    self.typed = words(&self.typed);
                    let ms = pcm.len() as u64 / 8;
                    self.playing_until = Some(self.now + Duration::from_millis(ms));
                }
                Effect::StopPlayback | Effect::EnterText(_) => self.playing_until = None,
                Effect::StoreLink { .. } => {
                    let ok = self.store_ok;
                    self.core.handle(self.now, CallInput::LinkStored { ok });
                }
                _ => {}
            }
            self.effects.push(effect);
        }
    }

    /// One 20 ms tick: the playback's end, the core's timers, a frame of the caller's audio
    /// (the tape, else silence) and the caller's text.
    fn tick(&mut self) {
        self.now += FRAME;
        let now = self.now;
        if self.playing_until.is_some_and(|t| t <= now) {
            self.playing_until = None;
            self.core.handle(now, CallInput::PlaybackDone);
            self.drain();
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
            self.drain();
        }
        let n = self.tape.len().min(160);
        let mut frame: Vec<i16> = self.tape.drain(..n).collect();
        frame.resize(160, 0);
        match self.shell_watch.as_mut() {
            Some(w) if self.core.mode() == CallMode::Voice => {
                if w.handle_pcm(now, &frame) {
                    let chars = w.take_chars();
                    self.core.handle(now, CallInput::BaudotHeard(chars));
                }
            }
            _ => self.core.handle_audio(now, Playout::Audio(160), &frame),
        }
        self.drain();
        let mut buf = [0u8; PACKET_BYTES_MAX];
        while let Some(n) = self.caller_text.poll_transmit(now, &mut buf).unwrap() {
            self.core.handle_text_datagram(now, &buf[..n]);
        }
        self.drain();
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 20 {
            self.tick();
        }
    }

    /// Waits until the IVR is quiet, as a polite caller does.
    fn until_quiet(&mut self) {
        for _ in 0..3000 {
            if self.playing_until.is_none() {
                break;
            }
            self.tick();
        }
        self.run(600);
    }

    fn keys(&mut self, keys: &str) {
        for d in keys.chars() {
            self.core.handle(self.now, CallInput::Digit(d));
            self.drain();
        }
    }

    /// The caller types `text` on a Baudot TTY, then the line is quiet until the IVR answered.
    fn baudot(&mut self, text: &str) {
        let mut tx = TtyModulator::new(TtyTxConfig::default());
        tx.push_text(text).unwrap();
        let mut frame = [0i16; 160];
        loop {
            let n = tx.fill(&mut frame);
            self.tape.extend_from_slice(&frame[..n]);
            if n < 160 {
                break;
            }
        }
        while !self.tape.is_empty() {
            self.tick();
        }
        self.run(3000);
        self.until_quiet();
    }

    /// The caller types `text` on an RTT terminal.
    fn rtt(&mut self, text: &str) {
        self.caller_text.push_text(text).unwrap();
        self.run(3000);
    }

    fn ended(&self) -> bool {
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::Hangup { .. } | Effect::End { .. }))
    }

    fn refers(&self) -> Vec<String> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Refer { context, .. } => Some(context.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_voice_call_that_types_baudot_over_the_greeting_turns_tty_and_is_answered() {
    let mut call = Call::new(Start::Voice);
    assert_eq!(call.played[0], "greeting");
    assert_eq!(call.core.mode(), CallMode::Voice);
    // The caller types over the greeting.
    call.baudot("HOW DO I CHECK MY CASE STATUS GA");
    assert!(
        call.effects.contains(&Effect::EnterText(CallMode::Tty)),
        "switched to TTY"
    );
    assert_eq!(call.core.mode(), CallMode::Tty);
    let answer = tty_text("tty.answer.case_status");
    assert!(call.typed.contains(&answer), "{:?}", call.typed);
    // Keys no longer reach the voice menus.
    let before = call.played.len();
    call.keys("1");
    call.run(2000);
    assert_eq!(call.played.len(), before, "{:?}", call.played);
}

#[test]
fn baudot_heard_by_the_shells_watch_turns_a_voice_call_tty_the_same_way() {
    // The media threads run the watch where the audio is and hand the core what it decoded.
    let mut call = Call::new(Start::Voice);
    call.shell_watch = Some(TtyWatch::default());
    call.baudot("HOW DO I CHECK MY CASE STATUS GA");
    assert!(
        call.effects.contains(&Effect::EnterText(CallMode::Tty)),
        "switched to TTY"
    );
    assert_eq!(call.core.mode(), CallMode::Tty);
    // Nothing the watch decoded before the switch was lost: the caller's line reads exactly as
    // when the core's own watch hears the audio, and is answered.
    let mut reference = Call::new(Start::Voice);
    reference.baudot("HOW DO I CHECK MY CASE STATUS GA");
    let lines = |c: &Call| -> Vec<String> {
        let t = c.core.tty().expect("a TTY session");
        t.record()
            .caller_lines(false)
            .into_iter()
            .map(String::from)
            .collect()
    };
    assert_eq!(lines(&call), lines(&reference));
    assert!(
        lines(&call)[0].contains("CHECK MY CASE STATUS"),
        "{:?}",
        lines(&call)
    );
    let answer = tty_text("tty.answer.case_status");
    assert!(call.typed.contains(&answer), "{:?}", call.typed);
    // Outside voice mode it is ignored (a second switch would restart the conversation).
    let effects = call.effects.len();
    call.core
        .handle(call.now, CallInput::BaudotHeard(vec![(call.now, 'X')]));
    call.drain();
    assert_eq!(call.effects.len(), effects);
}

#[test]
fn a_voice_call_whose_caller_types_rtt_turns_rtt_and_keys_are_ignored() {
    let mut call = Call::new(Start::VoiceWithText);
    assert_eq!(call.core.mode(), CallMode::Voice);
    call.run(1000);
    assert!(
        call.screen.is_empty(),
        "the text stream waits for the caller"
    );
    call.rtt("how do I check my case status\r\n");
    assert!(call.effects.contains(&Effect::EnterText(CallMode::Rtt)));
    assert_eq!(call.core.mode(), CallMode::Rtt);
    assert!(
        words(&call.screen).contains(&rtt_text("rtt.answer.case_status")),
        "{:?}",
        call.screen
    );
    let before = call.played.len();
    call.keys("11");
    call.run(2000);
    assert_eq!(call.played.len(), before, "{:?}", call.played);
}

#[test]
fn a_failed_transfer_is_told_in_the_calls_mode_and_the_call_goes_on() {
    // Voice: the transfer_failed prompt, the menu again.
    let mut call = Call::new(Start::Voice);
    call.keys("181");
    call.keys("0");
    call.until_quiet();
    assert_eq!(
        call.refers(),
        ["intent=expedite;lang=en;mode=voice;consent=none"]
    );
    let before = call.played.len();
    call.core.handle(
        call.now,
        CallInput::ReferProgress {
            status: 486,
            done: true,
        },
    );
    call.drain();
    assert_eq!(call.played[before], "transfer_failed");
    assert!(!call.ended());

    // TTY: typed on the caller's TTY.
    let mut call = Call::new(Start::TtyLine);
    call.until_quiet();
    call.baudot("I AM IN THE MILITARY AND NEED HELP GA");
    assert_eq!(
        call.refers(),
        ["intent=military;lang=en;mode=tty;consent=none"]
    );
    call.core.handle(
        call.now,
        CallInput::ReferProgress {
            status: 486,
            done: true,
        },
    );
    call.drain();
    call.until_quiet();
    assert!(
        call.typed.contains(&tty_text("tty.transfer_failed")),
        "{:?}",
        call.typed
    );
    assert!(!call.ended());

    // RTT: on the caller's screen.
    let mut call = Call::new(Start::VoiceWithText);
    call.rtt("I am in the military and need help\r\n");
    assert_eq!(
        call.refers(),
        ["intent=military;lang=en;mode=rtt;consent=none"]
    );
    call.core.handle(
        call.now,
        CallInput::ReferProgress {
            status: 486,
            done: true,
        },
    );
    call.drain();
    call.run(2000);
    assert!(
        words(&call.screen).contains(&rtt_text("rtt.transfer_failed")),
        "{:?}",
        call.screen
    );
    assert!(!call.ended());
}

#[test]
fn a_link_not_stored_is_never_said_sent_in_any_mode() {
    for ok in [false, true] {
        // Voice.
        let mut call = Call::new(Start::Voice);
        call.store_ok = ok;
        call.keys("1141");
        let said = &call.played;
        assert_eq!(said.contains(&"sms_sent".to_string()), ok, "{said:?}");
        assert_eq!(said.contains(&"sms_failed".to_string()), !ok, "{said:?}");

        // TTY.
        let mut call = Call::new(Start::TtyLine);
        call.store_ok = ok;
        call.until_quiet();
        call.baudot("HOW DO I CHECK MY CASE STATUS GA");
        call.baudot("TEXT GA");
        call.baudot("YES GA");
        assert!(
            call.effects
                .iter()
                .any(|e| matches!(e, Effect::StoreLink { .. })),
            "{:?}",
            call.typed
        );
        let sent = call.typed.contains(&tty_text("tty.sent"));
        assert_eq!(sent, ok, "{:?}", call.typed);
        assert_eq!(
            call.typed.contains(&tty_text("tty.not_sent")),
            !ok,
            "{:?}",
            call.typed
        );

        // RTT.
        let mut call = Call::new(Start::VoiceWithText);
        call.store_ok = ok;
        call.rtt("how do I check my case status\r\n");
        call.rtt("text\r\n");
        call.rtt("yes\r\n");
        assert!(
            call.effects
                .iter()
                .any(|e| matches!(e, Effect::StoreLink { .. })),
            "{:?}",
            call.screen
        );
        assert_eq!(
            words(&call.screen).contains(&rtt_text("rtt.sent")),
            ok,
            "{:?}",
            call.screen
        );
        assert_eq!(
            words(&call.screen).contains(&rtt_text("rtt.not_sent")),
            !ok,
            "{:?}",
            call.screen
        );
    }
}

#[test]
fn a_refused_refer_bridges_to_the_agent_whose_bye_ends_the_call() {
    let mut call = Call::new(Start::Voice);
    call.keys("181");
    call.keys("0");
    call.until_quiet();
    assert_eq!(call.refers().len(), 1);
    call.core.handle(
        call.now,
        CallInput::ReferProgress {
            status: 405,
            done: true,
        },
    );
    call.drain();
    assert!(matches!(
        call.effects.last(),
        Some(Effect::PlaceAgentCall { uri, .. }) if uri == "sip:tier1@10.0.0.9"
    ));
    call.run(3000);
    call.core
        .handle(call.now, CallInput::AgentAnswered { relayable: true });
    call.drain();
    assert_eq!(call.effects.last(), Some(&Effect::Bridge));
    assert!(call.core.is_bridged());
    assert!(!call.ended());
    call.run(3000);
    call.core
        .handle(call.now, CallInput::Agent(AgentEvent::Hangup));
    call.drain();
    assert_eq!(
        call.effects.last(),
        Some(&Effect::End {
            reason: "agent_bye"
        })
    );
}
