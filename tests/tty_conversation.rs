//! The TTY conversation, driven character by character on a virtual clock: a scripted caller
//! types, the IVR answers with the same knowledge as the voice line and keeps TTY etiquette (GA
//! or a pause before replying, never over the caller's carrier, its own echo ignored, SK to end),
//! offers the link and sends it by text or email.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ivr::flow::tty::{
    Channel, TransferPolicy, TtyConfig, TtyConversation, TtyOutput, TtyPrompts, prompt_ids,
};
use ivr::nlu::Nlu;
use ivr::pii::Pii;
use ivr::types::Lang;

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

/// Seconds per character at 45.45 baud with 2 stop bits (8 bits of 22 ms).
const CHAR: Duration = Duration::from_millis(176);

/// A caller and the line, on a virtual clock.
struct Line {
    conv: TtyConversation,
    now: Instant,
    /// Everything the IVR typed, in order.
    typed: Vec<String>,
    /// Every other output, in order.
    actions: Vec<TtyOutput>,
    /// What the shell answers when a link is to be stored (a full disk: `false`).
    store_ok: bool,
}

impl Line {
    fn new(lang: Lang, caller_id: Option<&str>) -> Line {
        Line::with(lang, caller_id, None)
    }

    fn with(lang: Lang, caller_id: Option<&str>, policy: Option<Arc<dyn TransferPolicy>>) -> Line {
        let (nlu, prompts) = deps();
        let mut conv = TtyConversation::new(
            nlu,
            prompts,
            TtyConfig::default(),
            lang,
            caller_id.map(|c| Pii::new(c.to_string())),
        );
        if let Some(p) = policy {
            conv = conv.with_transfer_policy(p);
        }
        let mut line = Line {
            conv,
            now: Instant::now(),
            typed: Vec::new(),
            actions: Vec::new(),
            store_ok: true,
        };
        line.finish_turn();
        line
    }

    /// Outputs so far, without sending anything.
    fn drain(&mut self) -> Vec<TtyOutput> {
        let mut out = Vec::new();
        while let Some(o) = self.conv.poll_output() {
            match &o {
                TtyOutput::Type(t) => self.typed.push(t.clone()),
                other => self.actions.push(other.clone()),
            }
            // As the shell does: the link is stored (or not) before anything more is typed.
            if matches!(o, TtyOutput::SendLink { .. }) {
                self.conv.handle_link_stored(self.store_ok);
            }
            out.push(o);
        }
        out
    }

    /// Lets the modulator type what the IVR output (6 characters a second plus lead-in and
    /// tail), then waits past the echo guard. Returns the text typed.
    fn finish_turn(&mut self) -> String {
        let mut text = String::new();
        for o in self.drain() {
            if let TtyOutput::Type(t) = o {
                text.push_str(&t);
            }
        }
        if !text.is_empty() {
            self.now += CHAR * text.chars().count() as u32 + Duration::from_millis(450);
            self.conv.handle_sent(self.now);
            self.drain();
            self.now += Duration::from_millis(500);
        }
        text
    }

    /// The caller types `text` with their carrier on; the carrier stays on afterwards.
    fn type_chars(&mut self, text: &str) {
        self.conv.handle_carrier(self.now, true);
        self.now += Duration::from_millis(150);
        for c in text.chars() {
            self.now += CHAR;
            self.conv.handle_char(self.now, c);
        }
    }

    fn carrier_off(&mut self) {
        self.now += Duration::from_millis(300);
        self.conv.handle_carrier(self.now, false);
    }

    /// The caller types a line and lets go of the line; returns the IVR's reply.
    fn say(&mut self, text: &str) -> String {
        self.type_chars(text);
        self.carrier_off();
        self.finish_turn()
    }

    /// Runs timeouts until `until` or until one produces output, which it returns.
    fn wait(&mut self, until: Instant) -> Vec<TtyOutput> {
        while let Some(t) = self.conv.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.conv.handle_timeout(self.now);
            let out = self.drain();
            if !out.is_empty() {
                return out;
            }
        }
        self.now = self.now.max(until);
        Vec::new()
    }
}

#[test]
fn greeting_is_tty_style() {
    let line = Line::new(Lang::En, None);
    assert_eq!(line.typed.len(), 1);
    let g = &line.typed[0];
    assert!(g.starts_with('\n'), "starts on a new line: {g:?}");
    assert!(g.ends_with(" GA"), "gives the turn: {g:?}");
    assert_eq!(*g, g.to_uppercase());
    assert!(
        g.lines().all(|l| l.chars().count() <= 40),
        "short lines: {g:?}"
    );
}

#[test]
fn typed_question_gets_the_answer_and_the_link_offer() {
    let mut line = Line::new(Lang::En, None);
    let reply = line.say("WHAT IS MY CASE STATUS Q GA");
    let flat = reply.replace('\n', " ");
    assert!(flat.contains("USCIS.GOV/CASESTATUS"), "{reply:?}");
    assert!(
        flat.contains("WANT THIS LINK BY TEXT OR EMAIL Q"),
        "{reply:?}"
    );
    assert!(flat.ends_with(" GA"));
    // Only one GA: the answer's own is dropped before the offer.
    assert_eq!(flat.matches(" GA").count(), 1, "{reply:?}");
    assert_eq!(
        line.conv
            .record()
            .intents
            .last()
            .and_then(|(i, _)| i.clone())
            .as_deref(),
        Some("case_status")
    );
}

#[test]
fn typos_and_abbreviations_are_understood() {
    for (text, intent) in [
        ("HOW LONG DOES PROCESING TAKE Q GA", "processing_times"),
        ("I MOVED NEED TO CHANGE MY ADDRESS GA", "change_of_address"),
        ("WHAT R UR HOURS Q GA", "hours"),
    ] {
        let mut line = Line::new(Lang::En, None);
        line.say(text);
        assert_eq!(
            line.conv
                .record()
                .intents
                .last()
                .and_then(|(i, _)| i.clone())
                .as_deref(),
            Some(intent),
            "{text}"
        );
    }
}

#[test]
fn no_reply_while_the_caller_carrier_is_on() {
    let mut line = Line::new(Lang::En, None);
    line.type_chars("WHAT IS MY CASE STATUS Q GA");
    // GA typed, carrier still on (the caller's TTY holds mark): nothing yet, however long.
    assert!(line.drain().is_empty());
    let later = line.now + Duration::from_secs(5);
    assert!(
        line.wait(later).is_empty(),
        "typed over the caller's carrier"
    );
    line.carrier_off();
    let out = line.drain();
    assert!(
        matches!(out.first(), Some(TtyOutput::Type(t)) if t.contains("CASESTATUS")),
        "answer once the carrier drops: {out:?}"
    );
}

#[test]
fn a_pause_ends_a_line_without_ga() {
    let mut line = Line::new(Lang::En, None);
    line.type_chars("HOW LONG IS PROCESSING");
    line.carrier_off();
    let off = line.now;
    assert!(line.drain().is_empty(), "no GA: wait for the pause");
    assert_eq!(line.conv.poll_timeout(), Some(off + Duration::from_secs(3)));
    line.conv.handle_timeout(off + Duration::from_millis(2900));
    assert!(line.drain().is_empty(), "2.9 s is not a pause yet");
    line.now = off + Duration::from_secs(3);
    line.conv.handle_timeout(line.now);
    let reply = line.finish_turn();
    assert!(reply.contains("PROCESSINGTIMES"), "{reply:?}");
}

#[test]
fn a_character_restarts_the_pause() {
    let mut line = Line::new(Lang::En, None);
    line.type_chars("HOW LONG IS");
    line.carrier_off();
    line.now += Duration::from_secs(2);
    // The caller resumes before the pause ends: the line goes on.
    line.say(" PROCESSING GA");
    assert_eq!(
        line.conv.record().caller_lines(true),
        vec!["HOW LONG IS PROCESSING GA"]
    );
}

#[test]
fn our_own_echo_is_ignored() {
    let mut line = Line::new(Lang::En, None);
    line.type_chars("WHAT IS MY CASE STATUS Q GA");
    line.carrier_off();
    let out = line.drain();
    assert!(matches!(out.first(), Some(TtyOutput::Type(_))));
    // While the IVR types, the demodulator hears its own carrier and text ("SK" would end the
    // call if it were believed).
    line.conv.handle_carrier(line.now, true);
    line.conv.handle_char(line.now + CHAR, 'S');
    line.conv.handle_char(line.now + CHAR * 2, 'K');
    line.conv.handle_carrier(line.now + CHAR * 3, false);
    line.now += Duration::from_secs(20);
    line.conv.handle_sent(line.now);
    // 200 ms after: still the echo tail.
    line.conv
        .handle_char(line.now + Duration::from_millis(200), 'X');
    line.now += Duration::from_millis(400);
    assert!(line.drain().is_empty());
    let reply = line.say("EMAIL GA");
    assert!(reply.contains("EMAIL ADDRESS"), "{reply:?}");
    assert_eq!(
        line.conv.record().caller_lines(true),
        vec!["WHAT IS MY CASE STATUS Q GA", "EMAIL GA"],
        "the echo is not the caller's text"
    );
}

/// Storage failed (a full disk, the database down): the caller never reads "SENT" for a link
/// that is not stored, but that it could not be sent, and the conversation goes on.
#[test]
fn a_link_that_could_not_be_stored_is_never_said_sent() {
    let mut line = Line::new(Lang::En, None);
    line.store_ok = false;
    line.say("WHAT IS MY CASE STATUS Q GA");
    line.say("TEXT GA");
    line.say("202 555 0134 GA");
    let reply = line.say("YES GA");
    assert!(!reply.contains("SENT."), "{reply:?}");
    assert!(
        reply.contains("COULD NOT BE SENT") && reply.contains("ANYTHING ELSE Q GA"),
        "{reply:?}"
    );
    assert!(matches!(line.actions[..], [TtyOutput::SendLink { .. }]));
}

#[test]
fn link_by_text_to_a_typed_number() {
    let mut line = Line::new(Lang::En, None);
    line.say("WHAT IS MY CASE STATUS Q GA");
    let ask = line.say("TEXT GA");
    assert!(ask.contains("MOBILE NUMBER"), "{ask:?}");
    let confirm = line.say("202 555 0134 GA");
    assert!(
        confirm
            .replace('\n', " ")
            .contains("SEND THE TEXT TO 202-555-0134 Q TYPE YES OR NO GA"),
        "{confirm:?}"
    );
    assert!(
        line.actions.is_empty(),
        "nothing sent before the caller confirms"
    );
    let sent = line.say("YES GA");
    assert!(
        sent.contains("SENT.") && sent.contains("ANYTHING ELSE Q GA"),
        "{sent:?}"
    );
    assert_eq!(
        line.actions,
        vec![TtyOutput::SendLink {
            channel: Channel::Sms,
            to: Pii::new("2025550134".to_string()),
            intent: "case_status".into(),
            link: "uscis.gov/casestatus".into(),
        }]
    );
    // The record keeps the number out of sight unless asked.
    let redacted = line.conv.record().to_json(false).to_string();
    assert!(
        !redacted.contains("555-0134") && !redacted.contains("5550134"),
        "{redacted}"
    );
    assert!(
        line.conv
            .record()
            .to_json(true)
            .to_string()
            .contains("202-555-0134")
    );
}

#[test]
fn link_by_text_to_the_caller_id() {
    let mut line = Line::new(Lang::En, Some("+1 (202) 555-0188"));
    line.say("HOW LONG IS PROCESSING GA");
    let ask = line.say("TXT GA");
    assert!(
        ask.replace('\n', " ")
            .contains("OR YES TO USE 202-555-0188 GA"),
        "{ask:?}"
    );
    line.say("YES GA");
    assert!(
        matches!(
            line.actions.as_slice(),
            [TtyOutput::SendLink { channel: Channel::Sms, to, link, .. }]
                if to.expose() == "2025550188" && link == "uscis.gov/processingtimes"
        ),
        "{:?}",
        line.actions
    );
}

#[test]
fn link_by_email_is_read_back_before_sending() {
    let mut line = Line::new(Lang::En, None);
    line.say("I NEED TO CHANGE MY ADDRESS GA");
    let ask = line.say("EMAIL GA");
    assert!(
        ask.replace('\n', " ").contains("AT FOR THE AT SIGN"),
        "{ask:?}"
    );
    let back = line.say("JOHN.SMITH AT GMAIL.COM GA");
    assert!(
        back.replace('\n', " ")
            .contains("SEND THE EMAIL TO JOHN.SMITH AT GMAIL.COM Q"),
        "{back:?}"
    );
    // A wrong address: the caller says no and types it again.
    let again = line.say("NO GA");
    assert!(again.contains("EMAIL ADDRESS"), "{again:?}");
    line.say("JANE.SMITH AT GMAIL.COM GA");
    line.say("YES GA");
    assert_eq!(
        line.actions,
        vec![TtyOutput::SendLink {
            channel: Channel::Email,
            to: Pii::new("jane.smith@gmail.com".to_string()),
            intent: "change_of_address".into(),
            link: "uscis.gov/addresschange".into(),
        }]
    );
}

#[test]
fn no_link_then_no_more_questions_ends_with_sk() {
    let mut line = Line::new(Lang::En, None);
    line.say("WHAT IS MY CASE STATUS Q GA");
    let more = line.say("NO THANKS GA");
    assert!(more.contains("ANYTHING ELSE Q GA"), "{more:?}");
    let bye = line.say("NO GA");
    assert!(bye.ends_with(" SK"), "{bye:?}");
    assert_eq!(line.actions, vec![TtyOutput::Hangup]);
    assert!(line.conv.is_ended());
}

#[test]
fn caller_sk_gets_goodbye_with_sk_then_hangup() {
    for text in ["SK", "THANK YOU GA SK", "BYE SKSK"] {
        let mut line = Line::new(Lang::En, None);
        line.type_chars(text);
        line.carrier_off();
        let out = line.drain();
        assert!(
            matches!(out.as_slice(), [TtyOutput::Type(t)] if t.ends_with("GOODBYE SK")),
            "{text}: {out:?}"
        );
        assert!(
            line.actions.is_empty(),
            "hang up only after the goodbye is typed"
        );
        line.now += Duration::from_secs(10);
        line.conv.handle_sent(line.now);
        line.drain();
        assert_eq!(line.actions, vec![TtyOutput::Hangup], "{text}");
    }
}

#[test]
fn three_misunderstandings_end_the_call_or_transfer() {
    let mut line = Line::new(Lang::En, None);
    let first = line.say("ZZZ QQQ GA");
    assert!(first.contains("DID NOT UNDERSTAND"), "{first:?}");
    line.say("XYZZY PLUGH GA");
    let last = line.say("FROBNICATE GA");
    assert!(last.ends_with(" SK"), "{last:?}");
    assert_eq!(line.actions, vec![TtyOutput::Hangup]);

    let policy: Arc<dyn TransferPolicy> = Arc::new(|intent: &str, _| intent == "agent");
    let mut line = Line::with(Lang::En, None, Some(policy));
    line.say("ZZZ QQQ GA");
    line.say("XYZZY PLUGH GA");
    let last = line.say("FROBNICATE GA");
    assert!(last.contains("TTY AGENT"), "{last:?}");
    assert_eq!(line.actions, vec![TtyOutput::Transfer { queue: "tty" }]);
}

#[test]
fn routing_policy_transfers_after_the_answer() {
    let policy: Arc<dyn TransferPolicy> = Arc::new(|intent: &str, _| intent == "military");
    let mut line = Line::with(Lang::En, None, Some(policy));
    let reply = line.say("I AM IN THE MILITARY AND NEED HELP GA");
    assert!(
        reply.contains("MILITARY MEMBERS") && reply.contains("TTY AGENT"),
        "{reply:?}"
    );
    assert_eq!(line.actions, vec![TtyOutput::Transfer { queue: "tty" }]);

    // The same policy keeps a self-service question in self-service.
    let policy: Arc<dyn TransferPolicy> = Arc::new(|intent: &str, _| intent == "military");
    let mut line = Line::with(Lang::En, None, Some(policy));
    line.say("WHAT IS MY CASE STATUS Q GA");
    assert!(line.actions.is_empty());
}

/// A transfer that fails (the queue busy, the trunk refusing) brings the caller back: they read
/// that no agent could be reached and may type another question, which is answered. Before the
/// conversation heard of the failure, it stayed `Done` and the TTY went silent (issue #13).
#[test]
fn a_failed_transfer_is_typed_and_the_conversation_goes_on() {
    let policy: Arc<dyn TransferPolicy> = Arc::new(|intent: &str, _| intent == "military");
    let mut line = Line::with(Lang::En, None, Some(policy));
    line.say("I AM IN THE MILITARY AND NEED HELP GA");
    assert_eq!(line.actions, vec![TtyOutput::Transfer { queue: "tty" }]);
    assert!(line.conv.is_ended());

    line.conv.handle_transfer_result(line.now, false);
    assert!(!line.conv.is_ended(), "back in the conversation");
    let reply = line.finish_turn();
    assert!(
        reply.contains("COULD NOT REACH AN AGENT") && reply.contains("ANYTHING ELSE"),
        "{reply:?}"
    );
    assert!(
        line.conv
            .record()
            .actions
            .contains(&"transfer_failed".to_string()),
        "{:?}",
        line.conv.record().actions
    );
    assert_eq!(line.conv.record().outcome, None);
    let reply = line.say("WHAT IS MY CASE STATUS Q GA");
    assert!(reply.contains("USCIS.GOV/CASESTATUS"), "{reply:?}");

    // A transfer that worked changes nothing; a result nobody asked for is ignored.
    let policy: Arc<dyn TransferPolicy> = Arc::new(|intent: &str, _| intent == "military");
    let mut line = Line::with(Lang::En, None, Some(policy));
    line.conv.handle_transfer_result(line.now, false);
    assert!(line.finish_turn().is_empty(), "no transfer was asked for");
    line.say("I AM IN THE MILITARY AND NEED HELP GA");
    line.conv.handle_transfer_result(line.now, true);
    assert!(line.conv.is_ended());
    assert!(line.finish_turn().is_empty());
}

#[test]
fn spanish_caller_gets_spanish_text_without_accents() {
    let mut line = Line::new(Lang::Es, None);
    assert!(
        line.typed[0]
            .replace('\n', " ")
            .contains("ESCRIBA SU PREGUNTA")
    );
    let reply = line.say("CUAL ES EL ESTATUS DE MI CASO Q GA");
    assert!(reply.contains("USCIS.GOV/CASESTATUS"), "{reply:?}");
    assert!(
        reply.replace('\n', " ").contains("POR TEXTO O EMAIL Q"),
        "{reply:?}"
    );
    let ask = line.say("CORREO GA");
    assert!(ask.contains("ARROBA"), "{ask:?}");
    let back = line.say("JUAN.PEREZ ARROBA GMAIL.COM GA");
    assert!(
        back.replace('\n', " ")
            .contains("JUAN.PEREZ ARROBA GMAIL.COM"),
        "{back:?}"
    );
}

#[test]
fn a_spanish_question_on_the_english_line_switches_language() {
    let mut line = Line::new(Lang::En, None);
    let reply = line.say("CUAL ES EL ESTATUS DE MI CASO Q GA");
    assert!(reply.contains("VEA EL ESTATUS DE SU CASO"), "{reply:?}");
    assert_eq!(line.conv.lang(), Lang::Es);
}

#[test]
fn a_voice_call_switched_to_tty_answers_the_question_already_typed() {
    use ivr::audio::tty::TtyEvent;
    use ivr::flow::tty::TtyDetector;
    let (nlu, prompts) = deps();
    let mut now = Instant::now();
    let mut detector = TtyDetector::new();
    assert!(!detector.handle_event(now, TtyEvent::CarrierOn));
    let mut switched = false;
    for c in "HOW LONG IS PROCESSING".chars() {
        now += CHAR;
        switched |= detector.handle_event(now, TtyEvent::Char(c));
    }
    assert!(switched && detector.is_tty());
    let mut conv = TtyConversation::new(nlu, prompts, TtyConfig::default(), Lang::En, None);
    for (at, c) in detector.take_chars() {
        conv.handle_char(at, c);
    }
    // The caller is still typing: no greeting over them.
    assert_eq!(conv.poll_output(), None);
    for c in " GA".chars() {
        now += CHAR;
        conv.handle_char(now, c);
    }
    assert_eq!(conv.poll_output(), None);
    conv.handle_carrier(now + Duration::from_millis(300), false);
    match conv.poll_output() {
        Some(TtyOutput::Type(t)) => {
            assert!(t.contains("PROCESSINGTIMES"), "{t:?}");
            assert!(
                !t.contains("TYPE YOUR QUESTION"),
                "the greeting is skipped: {t:?}"
            );
        }
        other => panic!("expected the answer, got {other:?}"),
    }
    assert_eq!(
        conv.record().caller_lines(true),
        vec!["HOW LONG IS PROCESSING GA"]
    );
}

#[test]
fn an_unsure_guess_is_confirmed_first() {
    let mut line = Line::new(Lang::En, None);
    let ask = line.say("CASE GA");
    assert_eq!(
        ask.replace('\n', " "),
        " DID YOU MEAN CASE STATUS Q TYPE YES OR NO GA"
    );
    let answer = line.say("YES GA");
    assert!(answer.contains("USCIS.GOV/CASESTATUS"), "{answer:?}");

    let mut line = Line::new(Lang::En, None);
    line.say("CASE GA");
    let again = line.say("NO GA");
    assert!(again.contains("PLEASE TYPE YOUR QUESTION"), "{again:?}");
    let answer = line.say("HOW LONG IS PROCESSING GA");
    assert!(answer.contains("PROCESSINGTIMES"), "{answer:?}");
}

#[test]
fn no_input_asks_then_says_goodbye() {
    let mut line = Line::new(Lang::En, None);
    let mut sent_at = line.now;
    for _ in 0..2 {
        let t = line
            .conv
            .poll_timeout()
            .expect("a no-input timer runs after each turn");
        // 45 s from the end of our turn (which `finish_turn` left 0.5 s behind).
        assert_eq!(t - sent_at, Duration::from_millis(44_500));
        let sent_next = t;
        line.now = t;
        line.conv.handle_timeout(t);
        let ask = line.finish_turn();
        assert!(ask.contains("ARE YOU STILL THERE"), "{ask:?}");
        assert!(line.now > sent_next);
        sent_at = line.now;
    }
    let t = line.conv.poll_timeout().expect("timer again");
    line.now = t;
    line.conv.handle_timeout(t);
    let last = line.finish_turn();
    assert!(last.ends_with("SK"), "{last:?}");
    assert_eq!(line.actions, vec![TtyOutput::Hangup]);
}

#[test]
fn every_tty_prompt_exists_in_both_languages_and_fits_baudot() {
    let sources = ivr::speech::read_sources(&repo().join("prompts")).expect("prompts read");
    let catalog = ivr::speech::Catalog::parse(&sources).expect("prompts parse");
    let problems = catalog.check_complete(&prompt_ids(), &repo().join("prompts"));
    assert!(problems.is_empty(), "{problems:?}");
    let baudot =
        |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || " -$'!:(\")#.,/;?&".contains(c);
    for p in catalog.iter().filter(|p| p.id.starts_with("tty.")) {
        let bad: Vec<char> = p
            .rendered
            .display
            .to_uppercase()
            .chars()
            .filter(|&c| !baudot(c))
            .collect();
        assert!(
            bad.is_empty(),
            "{}:{} {}: {bad:?}",
            p.path.display(),
            p.line,
            p.id
        );
    }
}

#[test]
fn random_input_never_panics_nor_types_over_the_carrier() {
    let (nlu, prompts) = deps();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789-.,?'\r\n\u{7}GASK"
        .chars()
        .collect();
    for _ in 0..40 {
        let mut conv = TtyConversation::new(
            nlu.clone(),
            prompts.clone(),
            TtyConfig::default(),
            if rand() % 2 == 0 { Lang::En } else { Lang::Es },
            Some(Pii::new("2025550134".into())),
        );
        let mut now = Instant::now();
        let mut carrier = false;
        // The greeting is typed at once.
        let mut sending = matches!(conv.poll_output(), Some(TtyOutput::Type(_)));
        assert!(sending);
        for _ in 0..2000 {
            now += Duration::from_millis(rand() % 400);
            // Characters and a carrier coming on mean the caller is typing: no reply may follow
            // from them directly.
            let mut caller_busy = false;
            match rand() % 10 {
                0 => {
                    carrier = !carrier;
                    caller_busy = carrier;
                    conv.handle_carrier(now, carrier);
                }
                1 => conv.handle_timeout(now),
                2 if sending => {
                    sending = false;
                    conv.handle_sent(now);
                }
                _ => {
                    let c = alphabet[(rand() % alphabet.len() as u64) as usize];
                    caller_busy = true;
                    conv.handle_char(now, c);
                }
            }
            while let Some(o) = conv.poll_output() {
                if let TtyOutput::Type(t) = o {
                    assert!(!caller_busy, "typed over the caller: {t:?}");
                    assert!(!sending, "typed while still typing");
                    sending = true;
                    assert!(t.chars().all(|c| c == '\n'
                        || c.is_ascii_uppercase()
                        || c.is_ascii_digit()
                        || " -$'!:(\")#.,/;?&".contains(c)));
                }
            }
        }
    }
}
