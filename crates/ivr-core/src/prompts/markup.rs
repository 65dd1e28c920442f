//! The light markup prompt authors write inside prompt text (documented in prompts/README.md):
//!
//! - `{pause 300}` — silence, in milliseconds (≤ 5000).
//! - `{digits 12345}` — read digit by digit.
//! - `{phone 800-375-5283}` — a telephone number, read in its groups, digit by digit.
//! - `{chars IOE}` — letters read one by one (receipt numbers, acronyms).
//! - `{url uscis.gov/casestatus | u s c i s dot gov slash case status}` — a web address: shown
//!   as written, spoken as the part after `|` (or, without it, with its punctuation read out).
//!
//! Rendering produces two texts: what the voice speaks (SSML for espeak-ng) and what a reader sees
//! (TTY, call records, `ivr call`).

use std::fmt::Write;

use crate::types::Lang;

/// Prompt text after markup: what to speak and what to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// SSML for espeak-ng (`-m`).
    pub ssml: String,
    /// Plain text as a reader sees it.
    pub display: String,
}

/// A markup mistake, with the byte column in the prompt text where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkupError {
    pub column: usize,
    pub message: String,
}

const MAX_PAUSE_MS: u32 = 5000;

/// Render prompt text. Errors name the column of the offending `{`.
pub fn render(text: &str, lang: Lang) -> Result<Rendered, MarkupError> {
    let mut ssml = String::from("<speak>");
    let mut display = String::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(open) = rest.find(['{', '}']) {
        let column = offset + open + 1;
        if rest.as_bytes()[open] == b'}' {
            return Err(MarkupError {
                column,
                message: "'}' without a matching '{'".into(),
            });
        }
        push_plain(&mut ssml, &mut display, &rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| MarkupError {
            column,
            message: "'{' is never closed with '}'".into(),
        })?;
        let inner = &after[..close];
        if inner.contains('{') {
            return Err(MarkupError {
                column,
                message: "markup cannot be nested".into(),
            });
        }
        tag(inner, lang, &mut ssml, &mut display)
            .map_err(|message| MarkupError { column, message })?;
        offset += open + 1 + close + 1;
        rest = &after[close + 1..];
    }
    push_plain(&mut ssml, &mut display, rest);
    ssml.push_str("</speak>");
    Ok(Rendered {
        ssml,
        display: display.trim().to_string(),
    })
}

fn push_plain(ssml: &mut String, display: &mut String, text: &str) {
    escape_into(ssml, text);
    display.push_str(text);
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            _ => out.push(c),
        }
    }
}

fn tag(inner: &str, lang: Lang, ssml: &mut String, display: &mut String) -> Result<(), String> {
    let inner = inner.trim();
    let (name, arg) = inner.split_once(char::is_whitespace).unwrap_or((inner, ""));
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(format!("{{{name}}} needs a value, e.g. {{pause 300}}"));
    }
    match name {
        "pause" => {
            let ms: u32 = arg
                .strip_suffix("ms")
                .unwrap_or(arg)
                .trim()
                .parse()
                .map_err(|_| format!("pause wants milliseconds, got {arg:?}"))?;
            if ms > MAX_PAUSE_MS {
                return Err(format!("pause of {ms} ms is longer than {MAX_PAUSE_MS} ms"));
            }
            let _ = write!(ssml, "<break time=\"{ms}ms\"/>");
            display.push(' ');
        }
        "digits" => {
            if !arg.chars().all(|c| c.is_ascii_digit() || c == ' ') {
                return Err(format!("digits takes only 0-9, got {arg:?}"));
            }
            ssml.push_str(&spell(arg.chars().filter(|c| c.is_ascii_digit())));
            display.push_str(arg);
        }
        "phone" => {
            if !arg
                .chars()
                .all(|c| c.is_ascii_digit() || "-. ()+".contains(c))
            {
                return Err(format!("phone takes digits and - . ( ) +, got {arg:?}"));
            }
            let digits = arg.chars().filter(char::is_ascii_digit).count();
            if !(7..=15).contains(&digits) {
                return Err(format!("phone {arg:?} has {digits} digits"));
            }
            // Groups are read with a short pause between them, as people read numbers.
            let groups: Vec<String> = arg
                .split(|c: char| !c.is_ascii_digit())
                .filter(|g| !g.is_empty())
                .map(|g| spell(g.chars()))
                .collect();
            ssml.push_str(&groups.join(", "));
            display.push_str(arg);
        }
        "chars" => {
            if !arg.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("chars takes letters and digits, got {arg:?}"));
            }
            ssml.push_str(&spell(arg.chars()));
            display.push_str(arg);
        }
        "url" => {
            let (url, spoken) = match arg.split_once('|') {
                Some((u, s)) => (u.trim(), s.trim().to_string()),
                None => (arg, speak_url(arg, lang)),
            };
            if url.is_empty() || url.contains(char::is_whitespace) || !url.contains('.') {
                return Err(format!("url {url:?} is not a web address"));
            }
            if spoken.is_empty() {
                return Err("url: the spoken form after '|' is empty".into());
            }
            escape_into(ssml, &spoken);
            display.push_str(url);
        }
        _ => {
            return Err(format!(
                "unknown markup {{{name} ...}}: use pause, digits, phone, chars or url"
            ));
        }
    }
    Ok(())
}

/// Characters separated by spaces, so the voice names each one.
fn spell(chars: impl Iterator<Item = char>) -> String {
    let mut out = String::new();
    for c in chars {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A web address read aloud: punctuation as words, the first label spelled when short.
fn speak_url(url: &str, lang: Lang) -> String {
    let (dot, slash, dash) = match lang {
        Lang::En => ("dot", "slash", "dash"),
        Lang::Es => ("punto", "barra", "guion"),
    };
    let mut words = Vec::new();
    let mut token = String::new();
    let mut first = true;
    let flush = |token: &mut String, words: &mut Vec<String>, first: &mut bool| {
        if token.is_empty() {
            return;
        }
        if *first && token.len() <= 5 {
            words.push(spell(token.chars()).to_lowercase());
        } else {
            words.push(token.clone());
        }
        *first = false;
        token.clear();
    };
    for c in url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .chars()
    {
        match c {
            '.' => {
                flush(&mut token, &mut words, &mut first);
                words.push(dot.into());
            }
            '/' => {
                flush(&mut token, &mut words, &mut first);
                words.push(slash.into());
            }
            '-' => {
                flush(&mut token, &mut words, &mut first);
                words.push(dash.into());
            }
            _ => token.push(c),
        }
    }
    flush(&mut token, &mut words, &mut first);
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_escaped_and_shown_as_is() {
        let r = render("Press 1 <now> & wait.", Lang::En).unwrap();
        assert_eq!(r.ssml, "<speak>Press 1 &lt;now&gt; &amp; wait.</speak>");
        assert_eq!(r.display, "Press 1 <now> & wait.");
    }

    #[test]
    fn phone_numbers_are_read_digit_by_digit_in_groups() {
        let r = render("Call {phone 800-375-5283}.", Lang::En).unwrap();
        assert_eq!(r.ssml, "<speak>Call 8 0 0, 3 7 5, 5 2 8 3.</speak>");
        assert_eq!(r.display, "Call 800-375-5283.");
    }

    #[test]
    fn urls_show_the_address_and_speak_the_words() {
        let r = render(
            "Visit {url uscis.gov/casestatus | u s c i s dot gov slash case status}",
            Lang::En,
        )
        .unwrap();
        assert_eq!(r.display, "Visit uscis.gov/casestatus");
        assert!(r.ssml.contains("u s c i s dot gov slash case status"));
        let auto = render("{url uscis.gov/e-request}", Lang::Es).unwrap();
        assert_eq!(
            auto.ssml,
            "<speak>u s c i s punto gov barra e guion request</speak>"
        );
    }

    #[test]
    fn pauses_chars_and_digits() {
        let r = render("A{pause 250}B {chars ioe} {digits 0123}", Lang::En).unwrap();
        assert_eq!(
            r.ssml,
            "<speak>A<break time=\"250ms\"/>B I O E 0 1 2 3</speak>"
        );
    }

    #[test]
    fn mistakes_name_their_column() {
        let e = render("Hello {pause}", Lang::En).unwrap_err();
        assert_eq!(e.column, 7);
        assert!(render("x {pause 9000}", Lang::En).is_err());
        assert!(
            render("x {bogus 1}", Lang::En)
                .unwrap_err()
                .message
                .contains("unknown markup")
        );
        assert!(
            render("x {pause 10", Lang::En)
                .unwrap_err()
                .message
                .contains("never closed")
        );
        assert_eq!(render("x } y", Lang::En).unwrap_err().column, 3);
        assert!(render("{phone 12}", Lang::En).is_err());
        assert!(render("{url not a url}", Lang::En).is_err());
    }
}
