//! A call's RFC 4103 real-time text stream on its socket: [`TextPort`] is the text RTP socket
//! and the caller's address; the stream and its conversation ([`RttCore`]) are the call
//! core's (`ivr_core::call`).

use std::net::SocketAddr;
use std::time::Instant;

pub use ivr_core::call::rtt::{ConversationParts, RttAction, RttConfig, RttCore, rtt_text};
use ivr_core::call::{CallCore, TextConfig};
use tokio::net::UdpSocket;

use super::store::CallRecord;
use crate::rtp::t140::PACKET_BYTES_MAX;
use crate::sip::sdp::TextMedia;

/// What the sip task hands a call whose offer had a text stream we bound.
pub struct TextSetup {
    pub socket: UdpSocket,
    pub media: TextMedia,
    pub config: RttConfig,
}

/// The conversation's part of the call record, once the call became a text call.
pub fn fill_record(core: &RttCore, record: &mut CallRecord) {
    let Some(r) = core.record() else {
        return;
    };
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

/// The text stream's socket: the caller's text address and the buffers; the stream itself
/// (T.140, its conversation) is the call core's.
pub struct TextPort {
    socket: UdpSocket,
    /// The caller's text address: from the SDP, else learned from their first packet.
    remote: Option<SocketAddr>,
    inbuf: Box<[u8; 2048]>,
    outbuf: Box<[u8; PACKET_BYTES_MAX]>,
}

impl TextPort {
    /// The text stream of a call whose setup has one, and the core's part of it. None (logged)
    /// when the prompts lack the TTY texts.
    pub fn from_setup(setup: &mut super::call::CallSetup) -> Option<(TextPort, TextConfig)> {
        let text = setup.text.take()?;
        if let Err(missing) = &setup.prompts.tty {
            tracing::error!(
                ?missing,
                "TTY prompts missing: the text stream stays unused"
            );
            return None;
        }
        // Our own SSRC, distinct from the audio stream's; no clock is read for it.
        let ssrc = setup.record.call_id.bytes().fold(0x811C_9DC5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let port = TextPort {
            socket: text.socket,
            remote: text.media.remote,
            inbuf: Box::new([0; 2048]),
            outbuf: Box::new([0; PACKET_BYTES_MAX]),
        };
        let config = TextConfig {
            media: text.media,
            config: text.config,
            ssrc,
        };
        Some((port, config))
    }

    /// A re-INVITE: the caller's text address may change.
    pub fn handle_media(&mut self, text: &TextMedia) {
        if text.remote.is_some() {
            self.remote = text.remote;
        }
    }

    /// The datagram `recv` received, `len` bytes.
    pub fn datagram(&self, len: usize) -> &[u8] {
        &self.inbuf[..len.min(self.inbuf.len())]
    }

    /// The caller's text came from `from`: with no usable address in the SDP, answer there.
    pub fn learn_remote(&mut self, from: SocketAddr) {
        self.remote.get_or_insert(from);
    }

    /// Sends the text packets the core has due.
    pub fn flush(&mut self, core: &mut CallCore, now: Instant) {
        while let Some(n) = core.poll_text_transmit(now, &mut self.outbuf[..]) {
            if let Some(remote) = self.remote {
                // UDP: a full socket buffer loses this packet; the redundancy covers it.
                let _ = self.socket.try_send_to(&self.outbuf[..n], remote);
            }
        }
    }
}

/// Waits for the text stream's next datagram (its length and sender); None on an ICMP error
/// from an earlier send. Never returns without a port (the `select!` arm of a call without a
/// text stream stays asleep).
pub async fn recv(port: Option<&mut TextPort>) -> Option<(usize, SocketAddr)> {
    let Some(p) = port else {
        return std::future::pending().await;
    };
    p.socket.recv_from(&mut p.inbuf[..]).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tty::TtyPrompts;
    use crate::nlu::Nlu;
    use crate::pii::Pii;
    use crate::rtp::t140::{LINE_SEPARATOR, T140Receiver, T140Sender};
    use crate::rtp::t140::{MISSING_TEXT, T140SenderConfig};
    use crate::types::Lang;
    use ivr_core::call::text_step::TextStep;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::OnceLock;
    use std::time::Duration;

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

    /// The RTT text of a prompt, as in `prompts/en/rtt.txt`.
    fn answer(id: &str) -> String {
        let (_, prompts) = deps();
        prompts.text(Lang::En, id).to_string()
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
        let expected = answer("rtt.answer.case_status");
        assert!(!expected.is_empty());
        assert!(p.screen.contains(&expected), "{:?}", p.screen);
        let offer = answer("rtt.link_offer");
        assert!(offer.contains("email? Type"), "{offer:?}");
        assert!(p.screen.contains(&offer), "{:?}", p.screen);
        assert!(!p.screen.contains(" GA") && !p.screen.contains(MISSING_TEXT));
        assert!(!p.screen.contains(" SK"));
        assert!(!p.screen.starts_with(LINE_SEPARATOR));

        p.typed("text\r\n");
        p.typed("yes\u{2028}");
        assert!(
            matches!(&p.actions[1], RttAction::Step(TextStep::SendLink { channel: crate::flow::tty::Channel::Sms, to, intent, lang: Lang::En })
                if to.expose() == "2025550134" && intent == "case_status"),
            "{:?}",
            p.actions
        );
        let sent = answer("rtt.sent");
        assert!(p.screen.contains(&sent), "{:?}", p.screen);
        assert!(p.screen.contains(&format!("{LINE_SEPARATOR}{sent}")));

        p.typed("no thanks bye\r\n");
        assert_eq!(p.actions.last(), Some(&RttAction::Step(TextStep::Hangup)));
        assert!(p.screen.ends_with(&answer("rtt.goodbye")), "{:?}", p.screen);
        let mut record = CallRecord::default();
        fill_record(&p.ivr, &mut record);
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
        assert_eq!(p.screen, answer("rtt.greeting"));
        assert!(!p.screen.contains("Military"));
        p.run(4000);
        assert!(
            p.screen.contains(&answer("rtt.answer.military")),
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
}
