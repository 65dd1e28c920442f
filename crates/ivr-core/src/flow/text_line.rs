//! The text lines under the text dialog ([`super::tty::TextDialog`]): how the caller's lines
//! arrive and how the dialog's structured turns are written, for each kind of text call.
//!
//! - [`BaudotLine`], a Baudot TTY: the caller's characters come one by one and a line ends with
//!   "GA" (or "SK") or a pause; TTYs are half-duplex, so we never type while the caller's
//!   carrier is on, and what the demodulator hears while (and just after) we type is the echo
//!   of our own carrier and is ignored. Our turns are upper case, Baudot characters only, end
//!   with "GA" ("SK" for the last one) and are wrapped at `line_chars`.
//! - [`RttLine`], real-time text (RFC 4103): the caller's lines come whole; our turns are the
//!   `rtt.*` texts as written (mixed case, "?", UTF-8), no GA/SK, no wrap.
//!
//! Both type one turn at a time: the next waits for `handle_sent`. Sans-IO, time passed in.

use std::time::{Duration, Instant};

use super::tty::{TextStyle, TtyConfig, TtyPrompts, TurnPart};
use crate::types::Lang;

/// Bound on one caller line: a stuck key or line noise must not grow memory without limit.
const LINE_CHARS_MAX: usize = 1000;

/// What a character or a carrier change from the caller's line amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// Our own echo (or nothing the caller did): ignored.
    Echo,
    /// The caller is typing (or the carrier changed); no line yet.
    Typing,
    /// A complete caller line, spaces collapsed, never empty.
    Line(String),
}

/// The Baudot TTY line: caller line assembly, carrier, pause, echo guard, and the Baudot form
/// of our turns.
#[derive(Clone, Debug)]
pub struct BaudotLine {
    pause: Duration,
    echo_guard: Duration,
    line_chars: usize,
    /// The caller's line so far.
    line: String,
    /// The caller's carrier, as last reported outside our own transmissions (or implied by a
    /// character: its CarrierOn may have fallen in our echo guard).
    carrier_on: bool,
    /// When the carrier was last seen on (event or character), to give up on a stuck one.
    carrier_seen_at: Option<Instant>,
    /// Last caller activity (a character or the carrier dropping): the pause counts from it.
    last_activity_at: Option<Instant>,
    transmitting: bool,
    echo_until: Option<Instant>,
}

impl BaudotLine {
    pub fn new(config: &TtyConfig) -> BaudotLine {
        BaudotLine {
            pause: Duration::from_millis(config.pause_ms),
            echo_guard: Duration::from_millis(config.echo_guard_ms),
            line_chars: config.line_chars,
            line: String::new(),
            carrier_on: false,
            carrier_seen_at: None,
            last_activity_at: None,
            transmitting: false,
            echo_until: None,
        }
    }

    /// A decoded character from the caller's TTY (`\r`, `\n` and BEL included).
    pub fn handle_char(&mut self, now: Instant, c: char) -> Heard {
        if self.is_echo(now) {
            return Heard::Echo;
        }
        self.last_activity_at = Some(now);
        self.carrier_on = true;
        self.carrier_seen_at = Some(now);
        match c {
            '\r' | '\n' => self.line.push(' '),
            '\u{7}' => {}
            c => self.line.push(c),
        }
        if (self.line.chars().count() >= LINE_CHARS_MAX || self.line_has_turn_end())
            && !self.carrier_on
        {
            // With the carrier still on, the line completes when it drops.
            return self.take_line();
        }
        Heard::Typing
    }

    /// A whole line (the caller's text handed over at once): anything typed before it on the
    /// same line comes first; no pause or "GA" needed.
    pub fn handle_line(&mut self, line: &str) -> Heard {
        for c in line.chars() {
            if self.line.chars().count() >= LINE_CHARS_MAX {
                break;
            }
            match c {
                '\r' | '\n' | '\u{2028}' | '\u{2029}' => self.line.push(' '),
                c if c.is_control() => {}
                c => self.line.push(c),
            }
        }
        self.take_line()
    }

    /// The caller's carrier came on or went off.
    pub fn handle_carrier(&mut self, now: Instant, on: bool) -> Heard {
        if self.is_echo(now) {
            return Heard::Echo;
        }
        self.carrier_on = on;
        if on {
            self.carrier_seen_at = Some(now);
            return Heard::Typing;
        }
        if !self.line.trim().is_empty() {
            self.last_activity_at = Some(now);
            if self.line_has_turn_end() || self.line.chars().count() >= LINE_CHARS_MAX {
                return self.take_line();
            }
        }
        Heard::Typing
    }

    /// A carrier without characters for three pauses is a stuck tone or a lost CarrierOff, not
    /// a typist: waiting on it would leave the caller with no answer. True if it was dropped
    /// (the line may be free for our turn now).
    pub fn drop_stale_carrier(&mut self, now: Instant) -> bool {
        if self.carrier_stale_at().is_some_and(|t| now >= t) {
            self.carrier_on = false;
            return true;
        }
        false
    }

    /// The caller's line, if a pause (with the carrier off) has ended it by `now`.
    pub fn take_paused_line(&mut self, now: Instant) -> Option<String> {
        if self.pause_at().is_some_and(|t| now >= t) {
            match self.take_line() {
                Heard::Line(line) => return Some(line),
                _ => return None,
            }
        }
        None
    }

    /// When the line needs `drop_stale_carrier` or `take_paused_line` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.pause_at(), self.carrier_stale_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Our turn is being typed.
    pub fn is_transmitting(&self) -> bool {
        self.transmitting
    }

    /// Whether our turn must wait: we are typing, or the caller is (do not type over them).
    pub fn is_busy(&self) -> bool {
        self.transmitting || self.carrier_on
    }

    pub fn start_typing(&mut self) {
        self.transmitting = true;
    }

    /// The modulator finished typing our turn: its echo tail starts.
    pub fn handle_sent(&mut self, now: Instant) {
        self.transmitting = false;
        self.echo_until = Some(now + self.echo_guard);
        // Anything the demodulator reported during our turn was our echo.
        self.carrier_on = false;
    }

    /// Within our own transmission or its echo tail.
    fn is_echo(&self, now: Instant) -> bool {
        self.transmitting || self.echo_until.is_some_and(|t| now < t)
    }

    /// When a line without "GA" is taken as complete: after a pause with the carrier off.
    fn pause_at(&self) -> Option<Instant> {
        if self.carrier_on || self.line.trim().is_empty() {
            return None;
        }
        self.last_activity_at.map(|t| t + self.pause)
    }

    /// When a carrier with no characters is taken to be gone: three pauses.
    fn carrier_stale_at(&self) -> Option<Instant> {
        if !self.carrier_on {
            return None;
        }
        self.carrier_seen_at
            .map(|t| t + self.pause.saturating_mul(3))
    }

    /// The line ends with "GA" or "SK" (the caller gives us the turn).
    fn line_has_turn_end(&self) -> bool {
        let upper = self.line.to_ascii_uppercase();
        let words: Vec<&str> = upper.split_whitespace().collect();
        words
            .last()
            .is_some_and(|w| matches!(*w, "GA" | "SK" | "SKSK" | "GASK"))
    }

    /// Ends the caller's line: spaces collapsed, nothing if it was blank.
    fn take_line(&mut self) -> Heard {
        let text = std::mem::take(&mut self.line);
        self.last_activity_at = None;
        collapse(&text).map_or(Heard::Typing, Heard::Line)
    }

    /// A turn's text, clear and with read-back values redacted, starting on a new line (the
    /// caller's own text is on the current one): the parts joined, a "GA" inside the turn
    /// removed, "GA" added at the end unless it ends in "GA" or "SK", wrapped. The `tty.*`
    /// texts of `prompts` are already in Baudot form.
    pub fn render(&self, parts: &[TurnPart], prompts: &TtyPrompts, lang: Lang) -> (String, String) {
        let mut clear: Vec<String> = Vec::new();
        let mut redacted: Vec<String> = Vec::new();
        for part in parts {
            let (c, r) = match part {
                TurnPart::End => ("GA".to_string(), "GA".to_string()),
                TurnPart::Prompt(id) => {
                    let t = prompts.text(lang, id).to_string();
                    (t.clone(), t)
                }
                TurnPart::Value(v) => (
                    baudot_text(v.expose(), lang),
                    baudot_text(&v.redacted().replace('*', "X"), lang),
                ),
            };
            clear.push(c);
            redacted.push(r);
        }
        let finish = |parts: &[String]| -> String {
            let mut words: Vec<String> = Vec::new();
            for (k, p) in parts.iter().enumerate() {
                let mut text = p.as_str();
                if k + 1 < parts.len()
                    && let Some(stripped) = text.strip_suffix(" GA")
                {
                    // The GA marked a sentence's end: keep the end, or two sentences run
                    // together ("...ONLINE ACCOUNT WANT THIS LINK").
                    text = stripped;
                    words.extend(text.split_whitespace().map(String::from));
                    if let Some(last) = words.last_mut()
                        && !last.ends_with(['.', '?', '!', ':'])
                    {
                        last.push('.');
                    }
                    continue;
                }
                words.extend(text.split_whitespace().map(String::from));
            }
            if !matches!(words.last().map(String::as_str), Some("GA") | Some("SK")) {
                words.push("GA".into());
            }
            format!("\n{}", wrap(&words.join(" "), self.line_chars))
        };
        (finish(&clear), finish(&redacted))
    }
}

/// The RTT line: whole caller lines in, our turns in mixed case out, one at a time.
#[derive(Clone, Debug, Default)]
pub struct RttLine {
    transmitting: bool,
}

impl RttLine {
    pub fn new() -> RttLine {
        RttLine::default()
    }

    /// A whole line from the caller (they pressed Enter or paused): line breaks become spaces,
    /// control characters are dropped, spaces collapsed, at most 1000 characters.
    pub fn handle_line(&mut self, line: &str) -> Heard {
        let mut text = String::new();
        let mut n = 0;
        for c in line.chars() {
            if n >= LINE_CHARS_MAX {
                break;
            }
            match c {
                '\r' | '\n' | '\u{2028}' | '\u{2029}' => text.push(' '),
                c if c.is_control() => continue,
                c => text.push(c),
            }
            n += 1;
        }
        collapse(&text).map_or(Heard::Typing, Heard::Line)
    }

    pub fn is_transmitting(&self) -> bool {
        self.transmitting
    }

    pub fn start_typing(&mut self) {
        self.transmitting = true;
    }

    /// The T.140 sender took our turn. A separate stream: nothing of ours comes back, so no
    /// echo guard.
    pub fn handle_sent(&mut self) {
        self.transmitting = false;
    }

    /// A turn's text, clear and with read-back values redacted, starting on a new line: the
    /// `rtt.*` texts and the values as they are, joined with a space (none before a part that
    /// starts with punctuation, as "?" after a read-back value).
    pub fn render(&self, parts: &[TurnPart], prompts: &TtyPrompts, lang: Lang) -> (String, String) {
        let mut clear = String::from("\n");
        let mut redacted = String::from("\n");
        for part in parts {
            let (c, r) = match part {
                TurnPart::End => (".".to_string(), ".".to_string()),
                TurnPart::Prompt(id) => {
                    let t = prompts.styled(TextStyle::Rtt, lang, id).to_string();
                    (t.clone(), t)
                }
                TurnPart::Value(v) => (v.expose().clone(), v.redacted()),
            };
            for (out, text) in [(&mut clear, c), (&mut redacted, r)] {
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                if out.len() > 1 && !text.starts_with(['?', '.', ',', '!', ':', ';']) {
                    out.push(' ');
                }
                out.push_str(text);
            }
        }
        (clear, redacted)
    }
}

/// Runs of whitespace collapsed to one space, ends trimmed; `None` if nothing is left.
fn collapse(text: &str) -> Option<String> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// Folds text to what a Baudot modem can send: upper case, Spanish accents dropped (Ñ → N),
/// `¿¡` removed, anything else outside ITA2 (letters, digits, and the US figures set) dropped,
/// runs of spaces collapsed. Newlines are kept (the modem sends CR LF).
pub fn baudot_text(text: &str, lang: Lang) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let folded: &str = match c {
            'á' | 'Á' | 'à' | 'À' | 'â' | 'ä' => "A",
            'é' | 'É' | 'è' | 'È' | 'ê' | 'ë' => "E",
            'í' | 'Í' | 'ì' | 'î' | 'ï' => "I",
            'ó' | 'Ó' | 'ò' | 'ô' | 'ö' => "O",
            'ú' | 'Ú' | 'ù' | 'û' | 'ü' | 'Ü' => "U",
            'ñ' | 'Ñ' => "N",
            'ç' | 'Ç' => "C",
            // Baudot has no @, _ or +: say them in words, as callers are told to type them.
            '@' => match lang {
                Lang::En => " AT ",
                Lang::Es => " ARROBA ",
            },
            '_' => match lang {
                Lang::En => " UNDERSCORE ",
                Lang::Es => " GUION BAJO ",
            },
            '+' => match lang {
                Lang::En => " PLUS ",
                Lang::Es => " MAS ",
            },
            '\t' | '\r' => " ",
            '\n' => "\n",
            _ => {
                let u = c.to_ascii_uppercase();
                if u.is_ascii_uppercase() || u.is_ascii_digit() || " -$'!:(\")#.,/;?&".contains(u) {
                    out.push(u);
                }
                continue;
            }
        };
        out.push_str(folded);
    }
    // Collapse spaces: every character costs the caller 150 ms.
    let mut collapsed = String::with_capacity(out.len());
    for c in out.chars() {
        if c == ' ' && (collapsed.ends_with(' ') || collapsed.ends_with('\n')) {
            continue;
        }
        collapsed.push(c);
    }
    collapsed.trim_matches(' ').to_string()
}

/// Breaks text into lines of at most `width` characters at spaces (a word longer than the line
/// gets a line of its own). `width` 0: one line.
fn wrap(text: &str, width: usize) -> String {
    if width == 0 {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + text.len() / width.max(1) + 1);
    let mut line_len = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let n = word.chars().count();
        if line_len > 0 && line_len + 1 + n > width {
            out.push('\n');
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pii::Pii;
    use crate::prompts::Catalog;

    #[test]
    fn baudot_text_folds_spanish_and_symbols() {
        assert_eq!(
            baudot_text("¿Cómo está? Añada juan_p@x.com", Lang::Es),
            "COMO ESTA? ANADA JUAN GUION BAJO P ARROBA X.COM"
        );
        assert_eq!(baudot_text("a+b @ c\t{d}", Lang::En), "A PLUS B AT C D");
    }

    #[test]
    fn wrap_keeps_lines_short() {
        let w = wrap("CHECK YOUR CASE STATUS AT USCIS.GOV/CASESTATUS GA", 20);
        assert_eq!(w, "CHECK YOUR CASE\nSTATUS AT\nUSCIS.GOV/CASESTATUS\nGA");
        assert!(w.lines().all(|l| l.chars().count() <= 20));
        assert_eq!(wrap("A B", 0), "A B");
        // A word longer than the line is not cut.
        assert_eq!(wrap("ABCDEFGHIJ K", 4), "ABCDEFGHIJ\nK");
    }

    fn prompts() -> TtyPrompts {
        let (_, sources) = crate::prompts::test_files::shipped_sources();
        let catalog = Catalog::parse(&sources).expect("prompts parse");
        TtyPrompts::from_catalog(&catalog).expect("tty and rtt prompts")
    }

    fn typed(line: &mut BaudotLine, now: Instant, text: &str) -> Vec<Heard> {
        text.chars().map(|c| line.handle_char(now, c)).collect()
    }

    #[test]
    fn baudot_line_ends_at_ga_when_the_carrier_drops() {
        let t = Instant::now();
        let mut line = BaudotLine::new(&TtyConfig::default());
        assert!(!line.is_busy());
        assert_eq!(line.handle_carrier(t, true), Heard::Typing);
        let heard = typed(&mut line, t, "HOW  DO I\r\nAPPLY GA");
        assert!(heard.iter().all(|h| *h == Heard::Typing), "{heard:?}");
        // Do not type over the caller.
        assert!(line.is_busy());
        assert_eq!(
            line.handle_carrier(t, false),
            Heard::Line("HOW DO I APPLY GA".into())
        );
        assert!(!line.is_busy());
        assert_eq!(line.poll_timeout(), None, "nothing left to wait for");
    }

    #[test]
    fn baudot_line_ends_at_a_pause() {
        let t = Instant::now();
        let config = TtyConfig::default();
        let pause = Duration::from_millis(config.pause_ms);
        let mut line = BaudotLine::new(&config);
        line.handle_carrier(t, true);
        typed(&mut line, t, "HOURS");
        assert_eq!(line.handle_carrier(t, false), Heard::Typing, "no GA yet");
        assert_eq!(line.poll_timeout(), Some(t + pause));
        assert_eq!(line.take_paused_line(t + pause / 2), None);
        assert_eq!(line.take_paused_line(t + pause), Some("HOURS".into()));
        assert_eq!(line.take_paused_line(t + pause * 2), None, "taken once");
    }

    #[test]
    fn baudot_line_ignores_its_echo() {
        let t = Instant::now();
        let config = TtyConfig::default();
        let guard = Duration::from_millis(config.echo_guard_ms);
        let mut line = BaudotLine::new(&config);
        line.start_typing();
        assert!(line.is_transmitting() && line.is_busy());
        assert_eq!(line.handle_carrier(t, true), Heard::Echo);
        assert_eq!(line.handle_char(t, 'G'), Heard::Echo);
        let sent = t + Duration::from_secs(2);
        line.handle_sent(sent);
        assert!(!line.is_busy(), "the echo's carrier is not the caller's");
        assert_eq!(line.handle_char(sent + guard / 2, 'A'), Heard::Echo);
        assert_eq!(line.handle_char(sent + guard, 'A'), Heard::Typing);
    }

    #[test]
    fn baudot_line_gives_up_on_a_stuck_carrier() {
        let t = Instant::now();
        let config = TtyConfig::default();
        let mut line = BaudotLine::new(&config);
        line.handle_carrier(t, true);
        let stale = t + Duration::from_millis(config.pause_ms * 3);
        assert_eq!(line.poll_timeout(), Some(stale));
        assert!(!line.drop_stale_carrier(stale - Duration::from_millis(1)));
        assert!(line.is_busy());
        assert!(line.drop_stale_carrier(stale));
        assert!(!line.is_busy());
    }

    #[test]
    fn baudot_line_bounds_a_line() {
        let t = Instant::now();
        let mut line = BaudotLine::new(&TtyConfig::default());
        let long = "A".repeat(3 * LINE_CHARS_MAX);
        let Heard::Line(text) = line.handle_line(&long) else {
            panic!("a whole line ends at once");
        };
        assert_eq!(text.len(), LINE_CHARS_MAX);
        // Typed characters come before a whole line.
        typed(&mut line, t, "CASE");
        assert_eq!(
            line.handle_line(" STATUS"),
            Heard::Line("CASE STATUS".into())
        );
        assert_eq!(line.handle_line(" \u{7} "), Heard::Typing, "blank");
    }

    #[test]
    fn baudot_turns_end_with_ga_or_sk_in_upper_case() {
        let prompts = prompts();
        let line = BaudotLine::new(&TtyConfig::default());
        let (clear, redacted) = line.render(
            &[
                TurnPart::Prompt("tty.confirm_email".into()),
                TurnPart::Value(Pii::new("juan_p@example.com".into())),
                TurnPart::Prompt("tty.yes_no".into()),
            ],
            &prompts,
            Lang::En,
        );
        assert!(clear.starts_with('\n'), "{clear:?}");
        let one_line = clear.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            one_line.contains("JUAN UNDERSCORE P AT EXAMPLE.COM Q TYPE YES OR NO GA"),
            "{clear:?}"
        );
        assert!(!redacted.contains("JUAN"), "{redacted:?}");
        assert_eq!(clear.to_ascii_uppercase(), clear);
        assert!(clear.ends_with("GA"), "{clear:?}");
        assert!(clear.lines().all(|l| l.chars().count() <= 40), "{clear:?}");
        let (bye, _) = line.render(
            &[TurnPart::Prompt("tty.goodbye".into())],
            &prompts,
            Lang::En,
        );
        assert!(bye.ends_with("SK"), "{bye:?}");
        assert!(!bye.ends_with("GA"), "{bye:?}");
        // A "GA" inside a turn is dropped, its sentence keeps an end.
        let (two, _) = line.render(
            &[TurnPart::Prompt("tty.answer.hours".into()), TurnPart::End],
            &prompts,
            Lang::En,
        );
        assert_eq!(
            two.split_whitespace().filter(|w| *w == "GA").count(),
            1,
            "{two:?}"
        );
    }

    #[test]
    fn rtt_line_takes_whole_lines_and_writes_mixed_case() {
        let prompts = prompts();
        let mut line = RttLine::new();
        assert_eq!(
            line.handle_line("how do i\r\n check\u{7}  my case "),
            Heard::Line("how do i check my case".into())
        );
        assert_eq!(line.handle_line(" \n "), Heard::Typing, "blank");
        let Heard::Line(long) = line.handle_line(&"a".repeat(3 * LINE_CHARS_MAX)) else {
            panic!("a line");
        };
        assert_eq!(long.len(), LINE_CHARS_MAX);
        assert!(!line.is_transmitting());
        line.start_typing();
        assert!(line.is_transmitting());
        line.handle_sent();
        assert!(!line.is_transmitting());
        let (clear, redacted) = line.render(
            &[
                TurnPart::Prompt("tty.confirm_email".into()),
                TurnPart::Value(Pii::new("juan_p@example.com".into())),
                TurnPart::Prompt("tty.yes_no".into()),
            ],
            &prompts,
            Lang::En,
        );
        assert!(
            clear.contains("juan_p@example.com? Type yes or no."),
            "{clear:?}"
        );
        assert!(!redacted.contains("juan_p"), "{redacted:?}");
        let words: Vec<&str> = clear.split_whitespace().collect();
        assert!(
            !words.contains(&"GA") && !words.contains(&"SK"),
            "{clear:?}"
        );
        let (end, _) = line.render(
            &[
                TurnPart::Value(Pii::new("202-555-0134".into())),
                TurnPart::End,
            ],
            &prompts,
            Lang::En,
        );
        assert_eq!(end, "\n202-555-0134.");
    }
}
