//! Slot extraction from spoken (ASR) and typed (TTY) text, English and Spanish: receipt numbers,
//! US phone numbers, email addresses, yes/no, menu digits and a language choice.
//!
//! Every parser validates its result: a phone number that is not ten digits or an email without
//! a dotted domain is `None`, so the flow asks again instead of sending a link to a wrong place.

use serde::ser::{Serialize, Serializer};

use super::normalize::fold;
use crate::pii::Pii;
use crate::types::Lang;

/// What an utterance carries besides its intent. Personal values are [`Pii`]: serializing a
/// `Slots` (logs, call records) redacts them; [`Slots::to_json`] with `clear` shows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slots {
    /// Receipt number, canonical form: three uppercase letters and ten digits ("IOE0123456789").
    pub receipt: Option<Pii<String>>,
    /// US phone number, ten digits without country code ("2025550134").
    pub phone: Option<Pii<String>>,
    /// Email address, lowercase.
    pub email: Option<Pii<String>>,
    pub yes_no: Option<bool>,
    pub digit: Option<u8>,
    pub language: Option<Lang>,
}

impl Slots {
    /// The slots as a JSON object; personal values redacted unless `clear`.
    pub fn to_json(&self, clear: bool) -> serde_json::Value {
        let show = |p: &Option<Pii<String>>| match p {
            Some(v) if clear => serde_json::Value::String(v.expose().clone()),
            Some(v) => serde_json::Value::String(v.redacted()),
            None => serde_json::Value::Null,
        };
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            if !v.is_null() {
                m.insert(k.to_string(), v);
            }
        };
        put("receipt", show(&self.receipt));
        put("phone", show(&self.phone));
        put("email", show(&self.email));
        put(
            "yes_no",
            self.yes_no.map_or(serde_json::Value::Null, Into::into),
        );
        put(
            "digit",
            self.digit.map_or(serde_json::Value::Null, Into::into),
        );
        put(
            "language",
            self.language
                .map_or(serde_json::Value::Null, |l| l.code().into()),
        );
        serde_json::Value::Object(m)
    }
}

impl Serialize for Slots {
    /// Redacted: this is the form that reaches logs and call records.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json(false).serialize(s)
    }
}

/// Extract every slot kind from one utterance.
pub fn extract(lang: Lang, text: &str) -> Slots {
    let receipt = receipt(text);
    // A receipt's ten digits look like a phone number; only look for a phone elsewhere.
    let phone = if receipt.is_some() { None } else { phone(text) };
    Slots {
        receipt: receipt.map(Pii::new),
        phone: phone.map(Pii::new),
        email: email(text).map(Pii::new),
        yes_no: yes_no(lang, text),
        digit: menu_digit(lang, text),
        language: language(text),
    }
}

/// One digit word (either language) → its digit. "oh" is zero in spoken numbers.
pub(crate) fn digit_word(w: &str) -> Option<u8> {
    Some(match w {
        "zero" | "oh" | "cero" => 0,
        "one" | "uno" | "una" | "un" => 1,
        "two" | "dos" => 2,
        "three" | "tres" => 3,
        "four" | "cuatro" => 4,
        "five" | "cinco" => 5,
        "six" | "seis" => 6,
        "seven" | "siete" => 7,
        "eight" | "ocho" => 8,
        "nine" | "nueve" => 9,
        _ => return None,
    })
}

/// Two-digit words callers use in phone numbers ("five fifty five", "veinticinco").
fn tens_word(w: &str) -> Option<u8> {
    Some(match w {
        "ten" | "diez" => 10,
        "eleven" | "once" => 11,
        "twelve" | "doce" => 12,
        "thirteen" | "trece" => 13,
        "fourteen" | "catorce" => 14,
        "fifteen" | "quince" => 15,
        "sixteen" | "dieciseis" => 16,
        "seventeen" | "diecisiete" => 17,
        "eighteen" | "dieciocho" => 18,
        "nineteen" | "diecinueve" => 19,
        "twenty" | "veinte" => 20,
        "thirty" | "treinta" => 30,
        "forty" | "cuarenta" => 40,
        "fifty" | "cincuenta" => 50,
        "sixty" | "sesenta" => 60,
        "seventy" | "setenta" => 70,
        "eighty" | "ochenta" => 80,
        "ninety" | "noventa" => 90,
        "veintiuno" => 21,
        "veintidos" => 22,
        "veintitres" => 23,
        "veinticuatro" => 24,
        "veinticinco" => 25,
        "veintiseis" => 26,
        "veintisiete" => 27,
        "veintiocho" => 28,
        "veintinueve" => 29,
        _ => return None,
    })
}

/// A letter spoken as itself, by the NATO alphabet, or by its Spanish name.
pub(crate) fn letter_word(w: &str) -> Option<char> {
    let mut cs = w.chars();
    if let (Some(c), None) = (cs.next(), cs.next())
        && c.is_ascii_lowercase()
    {
        return Some(c);
    }
    Some(match w {
        "alpha" | "alfa" => 'a',
        "bravo" | "be" | "bee" => 'b',
        "charlie" | "ce" | "see" | "sea" => 'c',
        "delta" | "de" | "dee" => 'd',
        "echo" | "eco" => 'e',
        "foxtrot" | "efe" => 'f',
        "golf" | "ge" | "gee" => 'g',
        "hotel" | "hache" => 'h',
        "india" | "eye" => 'i',
        "juliet" | "juliett" | "jota" | "jay" => 'j',
        "kilo" | "ka" | "kay" => 'k',
        "lima" | "ele" => 'l',
        "mike" | "eme" => 'm',
        "november" | "ene" => 'n',
        "oscar" => 'o',
        "papa" | "pe" | "pee" => 'p',
        "quebec" | "cu" | "queue" => 'q',
        "romeo" | "erre" => 'r',
        "sierra" | "ese" => 's',
        "tango" | "te" | "tee" => 't',
        "uniform" | "you" => 'u',
        "victor" | "uve" | "ve" | "vee" => 'v',
        "whiskey" | "whisky" => 'w',
        "xray" | "equis" | "ex" => 'x',
        "yankee" | "ye" | "why" => 'y',
        "zulu" | "zeta" | "zed" | "zee" => 'z',
        _ => return None,
    })
}

/// One token of the symbol stream the number parsers scan.
#[derive(Clone, Debug, PartialEq)]
enum Sym {
    Digits(String),
    Letter(char),
    /// A word that is neither: it breaks runs.
    Word,
}

/// Turn text into letters and digit groups: "i o e zero one double five" →
/// `[i, o, e, "0", "1", "55"]`; "IOE0123456789" → `[i, o, e, "0123456789"]`.
fn symbols(text: &str) -> Vec<Sym> {
    let folded = fold(text, false);
    let words: Vec<&str> = folded.split_whitespace().collect();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        // "double five", "triple cero", "doble cinco".
        let repeat = match w {
            "double" | "doble" => 2,
            "triple" => 3,
            _ => 1,
        };
        if repeat > 1
            && let Some(d) = words.get(i + 1).and_then(|n| digit_word(n))
        {
            out.push(Sym::Digits(d.to_string().repeat(repeat)));
            i += 2;
            continue;
        }
        // "x ray" as two words.
        if w == "x" && words.get(i + 1) == Some(&"ray") {
            out.push(Sym::Letter('x'));
            i += 2;
            continue;
        }
        if let Some(d) = digit_word(w) {
            out.push(Sym::Digits(d.to_string()));
        } else if let Some(t) = tens_word(w) {
            // "fifty five" → 55; "fifty" alone → 50; Spanish "treinta y cinco" → 35.
            let (unit, used) = match (words.get(i + 1), words.get(i + 2)) {
                (Some(&"y"), Some(n)) if t >= 30 && t % 10 == 0 => (digit_word(n), 3),
                (Some(n), _) if t >= 20 && t % 10 == 0 => (digit_word(n).filter(|d| *d > 0), 2),
                _ => (None, 1),
            };
            match unit {
                Some(u) => {
                    out.push(Sym::Digits((t + u).to_string()));
                    i += used;
                }
                None => {
                    out.push(Sym::Digits(t.to_string()));
                    i += 1;
                }
            }
            continue;
        } else if w == "hundred" || w == "cientos" {
            // "eight hundred" → 800: append two zeros to the previous digit.
            if let Some(Sym::Digits(d)) = out.last_mut()
                && d.len() == 1
            {
                d.push_str("00");
            } else {
                out.push(Sym::Word);
            }
        } else if w == "ochocientos" {
            out.push(Sym::Digits("800".to_string()));
        } else if let Some(c) = letter_word(w) {
            out.push(Sym::Letter(c));
        } else if w.chars().all(|c| c.is_ascii_alphanumeric())
            && w.chars().any(|c| c.is_ascii_digit())
        {
            // Typed: "ioe0123456789", "555", "2025550134", "ioe123".
            let mut run = String::new();
            for c in w.chars() {
                if c.is_ascii_digit() {
                    run.push(c);
                } else {
                    if !run.is_empty() {
                        out.push(Sym::Digits(std::mem::take(&mut run)));
                    }
                    out.push(Sym::Letter(c));
                }
            }
            if !run.is_empty() {
                out.push(Sym::Digits(run));
            }
        } else if w.len() == 3 && w.chars().all(|c| c.is_ascii_lowercase()) && is_receipt_prefix(w)
        {
            out.extend(w.chars().map(Sym::Letter));
        } else {
            out.push(Sym::Word);
        }
        i += 1;
    }
    out
}

/// Receipt prefixes of the service centers and the online system, so a typed "IOE 0123456789"
/// is read as letters while an ordinary three-letter word is not.
fn is_receipt_prefix(w: &str) -> bool {
    matches!(
        w,
        "ioe"
            | "eac"
            | "wac"
            | "lin"
            | "src"
            | "nbc"
            | "msc"
            | "ysc"
            | "tsc"
            | "vsc"
            | "csc"
            | "nsc"
    )
}

/// A receipt number: three letters then exactly ten digits, canonical "IOE0123456789".
pub fn receipt(text: &str) -> Option<String> {
    // Scan every start rather than the first letters found: callers preface the number with
    // words that are also letter names ("de", "you", "see").
    let syms = symbols(text);
    for start in 0..syms.len() {
        // Three consecutive letters...
        let letters: Vec<char> = syms[start..]
            .iter()
            .take(3)
            .filter_map(|s| match s {
                Sym::Letter(c) => Some(*c),
                _ => None,
            })
            .collect();
        if letters.len() != 3 {
            continue;
        }
        // ...immediately followed by a digit run of exactly ten.
        let mut digits = String::new();
        for s in &syms[start + 3..] {
            match s {
                Sym::Digits(d) => digits.push_str(d),
                _ => break,
            }
            if digits.len() > 10 {
                break;
            }
        }
        // Eleven or more digits is a different number (or a misheard one): asking again is
        // cheaper than looking up the wrong case.
        if digits.len() == 10 {
            let mut r: String = letters.iter().collect::<String>().to_ascii_uppercase();
            r.push_str(&digits);
            return Some(r);
        }
    }
    None
}

/// A US phone number: ten digits, or eleven starting with the country code 1.
pub fn phone(text: &str) -> Option<String> {
    // "area code", "código de área", "plus", "más" are glue inside a number, not breaks.
    let folded = fold(text, false);
    let glue = [
        "area", "code", "codigo", "de", "plus", "mas", "number", "numero", "is", "es",
    ];
    let cleaned: String = folded
        .split_whitespace()
        .filter(|w| !glue.contains(w))
        .collect::<Vec<_>>()
        .join(" ");
    let syms = symbols(&cleaned);
    let mut runs: Vec<String> = Vec::new();
    let mut cur = String::new();
    for s in &syms {
        match s {
            Sym::Digits(d) => cur.push_str(d),
            _ => {
                if !cur.is_empty() {
                    runs.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    // A spoken "oh, my number is..." prepends a zero no phone number can start with.
    let runs = runs.into_iter().map(|r| {
        if r.len() == 11 && r.starts_with('0') {
            r[1..].to_string()
        } else {
            r
        }
    });
    // One rule for a US number everywhere (`UsPhone`): it also keeps a receipt's or a form's
    // digits from passing as a phone number.
    runs.into_iter()
        .find_map(|r| crate::types::UsPhone::from_digits(&r).map(|p| p.national().to_string()))
}

/// An email address typed ("john.smith@gmail.com") or spoken ("john dot smith at gmail dot
/// com", "juan punto perez arroba gmail punto com", "guion bajo", "underscore", "dash").
pub fn email(text: &str) -> Option<String> {
    let folded = fold(text, true);
    // Typed: a token that already contains '@'.
    for w in folded.split_whitespace() {
        if w.contains('@') {
            let w = w.trim_matches(|c: char| c == '.' || c == '-' || c == '_');
            return valid_email(w);
        }
    }
    // Spoken: rewrite the symbol words, then join the pieces around the single '@'.
    let words: Vec<&str> = folded.split_whitespace().collect();
    let mut toks: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let two = words.get(i + 1).copied();
        let (tok, used) = match (words[i], two) {
            ("guion", Some("bajo")) | ("under", Some("score")) => ("_".to_string(), 2),
            ("g", Some("mail")) => ("gmail".to_string(), 2),
            ("at", _) | ("arroba", _) | ("@", _) => ("@".to_string(), 1),
            ("dot", _) | ("punto", _) | ("period", _) => (".".to_string(), 1),
            ("underscore", _) => ("_".to_string(), 1),
            ("dash", _) | ("hyphen", _) | ("guion", _) | ("minus", _) => ("-".to_string(), 1),
            (w, _) => (w.to_string(), 1),
        };
        toks.push(tok);
        i += used;
    }
    // "at" is also an ordinary word ("I'm at work"); two of them leave it unclear which one
    // is the address's, and the validation below rejects an "at" without a dotted domain.
    let at = toks.iter().position(|t| t == "@")?;
    if toks.iter().filter(|t| *t == "@").count() != 1 {
        return None;
    }
    let is_sym = |t: &str| t == "." || t == "_" || t == "-";
    // Local part: the word before '@', extended left across symbol joins and spelled letters.
    let mut start = at;
    while start > 0 {
        let prev = &toks[start - 1];
        let joined_by_symbol = start < at && is_sym(&toks[start]);
        let single = prev.chars().count() == 1 && prev.chars().all(|c| c.is_ascii_alphanumeric());
        let cur_single = start < at && toks[start].chars().count() == 1;
        if start == at || is_sym(prev) || joined_by_symbol || (single && cur_single) {
            start -= 1;
        } else {
            break;
        }
    }
    // Domain: a word, then (dot word)*. Stops at the first word not joined by "dot", so a
    // trailing "please" or "thanks" is not swallowed.
    let mut end = at + 1;
    while end < toks.len() {
        let t = &toks[end];
        let expect_word = (end - at) % 2 == 1;
        if expect_word && !is_sym(t) || !expect_word && t == "." {
            end += 1;
        } else {
            break;
        }
    }
    let local: String = toks[start..at].concat();
    let domain: String = toks[at + 1..end].concat();
    valid_email(&format!("{local}@{domain}"))
}

/// The structural checks a mail server would fail on first; no deliverability guess beyond
/// that (the flow reads the address back before sending).
pub(crate) fn valid_email(s: &str) -> Option<String> {
    let (local, domain) = s.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic()));
    (local_ok && domain_ok).then(|| s.to_string())
}

/// Yes or no from a short answer. Leading words decide ("no, thanks" is no, "sí claro" is yes);
/// "not sure" or "I don't know" decide nothing. Words of both languages count whatever the
/// call's language: callers mix them ("yes, claro").
pub fn yes_no(_lang: Lang, text: &str) -> Option<bool> {
    let folded = fold(text, false);
    let words: Vec<&str> = folded.split_whitespace().collect();
    const UNSURE: &[&str] = &[
        "not sure",
        "don't know",
        "dont know",
        "no se",
        "no estoy seguro",
        "no estoy segura",
        "maybe",
        "tal vez",
        "quizas",
        "a lo mejor",
    ];
    if (0..words.len()).any(|i| UNSURE.iter().any(|u| starts_with_words(&words[i..], u))) {
        return None;
    }
    const YES: &[&str] = &[
        "yes",
        "yeah",
        "yep",
        "yup",
        "ya",
        "sure",
        "correct",
        "right",
        "affirmative",
        "absolutely",
        "definitely",
        "okay",
        "ok",
        "alright",
        "please",
        "si",
        "claro",
        "correcto",
        "exacto",
        "dale",
        "vale",
        "afirmativo",
        "bueno",
        "perfecto",
        "seguro",
        "sip",
        "of course",
        "por supuesto",
        "go ahead",
        "that's right",
        "thats right",
        "eso es",
        "de acuerdo",
        "i do",
        "sounds good",
        "esta bien",
    ];
    const NO: &[&str] = &[
        "no",
        "nope",
        "nah",
        "negative",
        "not",
        "don't",
        "dont",
        "never",
        "wrong",
        "incorrect",
        "nel",
        "nunca",
        "negativo",
        "tampoco",
        "incorrecto",
        "no thanks",
        "no gracias",
        "para nada",
        "no way",
    ];
    // The first word of the answer that starts a yes or no expression decides.
    for i in 0..words.len() {
        let rest = &words[i..];
        if NO.iter().any(|p| starts_with_words(rest, p)) {
            return Some(false);
        }
        if YES.iter().any(|p| starts_with_words(rest, p)) {
            return Some(true);
        }
    }
    None
}

/// Whether `words` begins with the space-separated words of `phrase`.
fn starts_with_words(words: &[&str], phrase: &str) -> bool {
    phrase
        .split(' ')
        .enumerate()
        .all(|(n, p)| words.get(n) == Some(&p))
}

/// A menu choice: "two", "dos", "2", "press 2", "option number three", "la opción uno",
/// "the first one", "el segundo". Only an answer made of a number and the words around menu
/// choices counts: "one more time" is no menu choice. Both languages' words count.
pub fn menu_digit(_lang: Lang, text: &str) -> Option<u8> {
    let folded = fold(text, false);
    let words: Vec<&str> = folded.split_whitespace().collect();
    if words.is_empty() || words.len() > 8 {
        return None;
    }
    let mut found: Option<u8> = None;
    let mut after_ordinal = false;
    for w in &words {
        let ordinal = match *w {
            "first" | "primero" | "primera" | "primer" => Some(1),
            "second" | "segundo" | "segunda" => Some(2),
            "third" | "tercero" | "tercera" | "tercer" => Some(3),
            "fourth" | "cuarto" | "cuarta" => Some(4),
            "fifth" | "quinto" | "quinta" => Some(5),
            _ => None,
        };
        // "the second one", "la segunda opción": the "one" is not a digit.
        if after_ordinal && matches!(*w, "one" | "uno" | "una") {
            continue;
        }
        after_ordinal = ordinal.is_some();
        let d = match *w {
            w if w.len() == 1 && w.as_bytes()[0].is_ascii_digit() => Some(w.as_bytes()[0] - b'0'),
            _ if ordinal.is_some() => ordinal,
            // "oh" is zero only inside a number.
            "oh" => None,
            w => digit_word(w),
        };
        match d {
            Some(d) if found.is_some_and(|f| f != d) => return None,
            Some(d) => found = Some(d),
            None if is_menu_carrier(w) => {}
            // Any other word ("more", "time", "22", "cita") makes this not a menu answer.
            None => return None,
        }
    }
    found
}

/// Words that surround a menu choice without changing it.
fn is_menu_carrier(w: &str) -> bool {
    matches!(
        w,
        "press"
            | "option"
            | "number"
            | "the"
            | "please"
            | "i"
            | "want"
            | "choose"
            | "select"
            | "pick"
            | "take"
            | "go"
            | "with"
            | "to"
            | "a"
            | "it's"
            | "its"
            | "is"
            | "um"
            | "uh"
            | "eh"
            | "ok"
            | "okay"
            | "let"
            | "me"
            | "say"
            | "dial"
            | "key"
            | "button"
            | "marque"
            | "marco"
            | "oprima"
            | "oprimo"
            | "presione"
            | "opcion"
            | "numero"
            | "el"
            | "la"
            | "quiero"
            | "por"
            | "favor"
            | "este"
            | "pues"
            | "es"
            | "de"
            | "digo"
            | "escojo"
            | "elijo"
            | "tecla"
    )
}

/// A language choice: "Spanish", "en español", "inglés", "English please".
pub fn language(text: &str) -> Option<Lang> {
    // Both named ("English o español") means the caller is reading the menu back: no choice.
    let folded = fold(text, false);
    let mut found = None;
    for w in folded.split_whitespace() {
        let l = match w {
            "spanish" | "espanol" | "castellano" | "espanish" => Some(Lang::Es),
            "english" | "ingles" | "inglish" => Some(Lang::En),
            _ => None,
        };
        if let Some(l) = l {
            if found.is_some_and(|f| f != l) {
                return None;
            }
            found = Some(l);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_typed_and_spoken() {
        assert_eq!(
            receipt("my receipt is IOE0123456789").as_deref(),
            Some("IOE0123456789")
        );
        assert_eq!(
            receipt("IOE 012-345-6789").as_deref(),
            Some("IOE0123456789")
        );
        assert_eq!(
            receipt("i o e zero one two three four five six seven eight nine").as_deref(),
            Some("IOE0123456789")
        );
        assert_eq!(
            receipt("india oscar echo oh one two three double four five six seven eight")
                .as_deref(),
            Some("IOE0123445678")
        );
        assert_eq!(
            receipt("e a c cero uno dos tres doble cinco seis siete ocho nueve").as_deref(),
            Some("EAC0123556789")
        );
        assert_eq!(receipt("IOE012345678"), None, "nine digits");
        assert_eq!(receipt("IOE01234567890"), None, "eleven digits");
    }

    #[test]
    fn phone_typed_and_spoken() {
        assert_eq!(phone("+1 (202) 555-0134").as_deref(), Some("2025550134"));
        assert_eq!(
            phone("area code two oh two five five five oh one three four").as_deref(),
            Some("2025550134")
        );
        assert_eq!(
            phone("dos cero dos cinco cinco cinco cero uno tres cuatro").as_deref(),
            Some("2025550134")
        );
        assert_eq!(
            phone("eight hundred three seven five five two eight three").as_deref(),
            Some("8003755283")
        );
        assert_eq!(phone("555 0134"), None);
    }

    #[test]
    fn email_typed_and_spoken() {
        assert_eq!(
            email("it's John.Smith@Gmail.com.").as_deref(),
            Some("john.smith@gmail.com")
        );
        assert_eq!(
            email("john dot smith at gmail dot com").as_deref(),
            Some("john.smith@gmail.com")
        );
        assert_eq!(
            email("juan guion bajo perez arroba hotmail punto com").as_deref(),
            Some("juan_perez@hotmail.com")
        );
        assert_eq!(
            email("j o h n at yahoo dot com").as_deref(),
            Some("john@yahoo.com")
        );
        assert_eq!(email("i am at home"), None);
        assert_eq!(email("john at gmail"), None);
    }

    #[test]
    fn yes_no_variants() {
        assert_eq!(yes_no(Lang::En, "yeah sure"), Some(true));
        assert_eq!(yes_no(Lang::En, "nope"), Some(false));
        assert_eq!(yes_no(Lang::Es, "sí claro"), Some(true));
        assert_eq!(yes_no(Lang::Es, "no gracias"), Some(false));
        assert_eq!(yes_no(Lang::En, "I'm not sure"), None);
    }

    #[test]
    fn digits_and_language() {
        assert_eq!(menu_digit(Lang::En, "press 2"), Some(2));
        assert_eq!(menu_digit(Lang::Es, "la opción dos"), Some(2));
        assert_eq!(menu_digit(Lang::En, "two or three"), None);
        assert_eq!(menu_digit(Lang::En, "say that one more time"), None);
        assert_eq!(menu_digit(Lang::En, "the second one"), Some(2));
        assert_eq!(menu_digit(Lang::Es, "la segunda opción"), Some(2));
        assert_eq!(menu_digit(Lang::Es, "quiero una cita"), None);
        assert_eq!(language("en español por favor"), Some(Lang::Es));
        assert_eq!(language("English"), Some(Lang::En));
    }

    #[test]
    fn serialization_redacts() {
        let s = extract(Lang::En, "IOE0123456789");
        let json = serde_json::to_string(&s).expect("plain json");
        assert!(!json.contains("0123456789"), "{json}");
        assert_eq!(s.to_json(true)["receipt"], "IOE0123456789");
    }
}
