//! Spelled input: what a caller may say while spelling an email address or saying a phone
//! number digit by digit, the recognizer vocabularies for it, and the parsers that turn a
//! transcript into the address (or number) — plus the address read back as prompt markup.
//!
//! A spelling is a sequence of tokens: letters (by name, "b", "bee", Spanish "be", or the NATO
//! alphabet, "bravo"), digits, "double"/"triple" before a letter or digit, the symbols of an
//! address ("at", "dot", "underscore", "dash", "plus"; "arroba", "punto", "guion bajo",
//! "guion", "más") and the common mail domains said as words ("gmail", "com"). The parsers
//! accept nothing else: a word they do not know makes the whole answer invalid, and the flow
//! asks again rather than sending a link to a guess.

use super::normalize::fold;
use super::slots::{digit_word, letter_word, valid_email};
use crate::types::Lang;

/// Domain words said whole ("gmail dot com"): recognized as words, read back as words.
const DOMAIN_WORDS: &[&str] = &[
    "gmail", "yahoo", "hotmail", "outlook", "icloud", "comcast", "aol", "com", "net", "org", "gov",
    "edu",
];

const LETTERS: &[&str] = &[
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z",
];

const NATO: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "x-ray", "yankee", "zulu",
];

const DIGITS_EN: &[&str] = &[
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];
const DIGITS_ES: &[&str] = &[
    "cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
];

const SYMBOLS_EN: &[&str] = &[
    "at",
    "dot",
    "period",
    "underscore",
    "dash",
    "hyphen",
    "plus",
    "double",
    "triple",
];
const SYMBOLS_ES: &[&str] = &[
    "arroba",
    "punto",
    "guion",
    "guion bajo",
    "mas",
    "doble",
    "triple",
];

/// Spanish letter names (the single letters are said by name in Spanish).
const LETTERS_ES: &[&str] = &[
    "a",
    "be",
    "ce",
    "de",
    "e",
    "efe",
    "ge",
    "hache",
    "i",
    "jota",
    "ka",
    "ele",
    "eme",
    "ene",
    "o",
    "pe",
    "cu",
    "erre",
    "ese",
    "te",
    "u",
    "uve",
    "ve",
    "doble ve",
    "uve doble",
    "equis",
    "i griega",
    "ye",
    "zeta",
];

/// What may be said while spelling an email address in `lang`: the tokens of the recognizer's
/// sequence grammar.
pub fn email_tokens(lang: Lang) -> Vec<String> {
    let parts: [&[&str]; 4] = match lang {
        Lang::En => [LETTERS, NATO, DIGITS_EN, SYMBOLS_EN],
        Lang::Es => [LETTERS_ES, NATO, DIGITS_ES, SYMBOLS_ES],
    };
    let mut out: Vec<String> = parts
        .iter()
        .flat_map(|p| p.iter())
        .chain(DOMAIN_WORDS)
        .map(|s| s.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What may be said while giving a phone number digit by digit in `lang`.
pub fn digit_tokens(lang: Lang) -> Vec<String> {
    let (digits, repeat): (&[&str], &[&str]) = match lang {
        Lang::En => (DIGITS_EN, &["double", "triple"]),
        Lang::Es => (DIGITS_ES, &["doble", "triple"]),
    };
    digits.iter().chain(repeat).map(|s| s.to_string()).collect()
}

/// The digit words alone, for a grammar that counts them (a phone number is ten or eleven
/// digits; "double five" would make the count vary).
pub fn number_digit_tokens(lang: Lang) -> Vec<String> {
    match lang {
        Lang::En => DIGITS_EN,
        Lang::Es => DIGITS_ES,
    }
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One spelled unit: what it adds to the address.
fn unit(words: &[&str]) -> Option<(String, usize)> {
    let w = *words.first()?;
    let next = words.get(1).copied();
    // Two-word units first.
    let two = match (w, next) {
        ("double", Some("u" | "you")) | ("doble", Some("ve" | "u" | "uve")) => Some("w"),
        ("uve", Some("doble")) => Some("w"),
        ("i", Some("griega")) => Some("y"),
        ("x", Some("ray")) => Some("x"),
        ("guion", Some("bajo")) | ("under", Some("score")) => Some("_"),
        ("g", Some("mail")) => Some("gmail"),
        _ => None,
    };
    if let Some(t) = two {
        return Some((t.to_string(), 2));
    }
    let one = match w {
        "at" | "arroba" | "@" => "@".to_string(),
        "dot" | "period" | "punto" | "." => ".".to_string(),
        "underscore" | "_" => "_".to_string(),
        "dash" | "hyphen" | "guion" | "minus" | "-" => "-".to_string(),
        "plus" | "mas" | "+" => "+".to_string(),
        "x-ray" => "x".to_string(),
        // Spelling an address, "oh" is the letter (a phone number reads it as zero).
        "oh" => "o".to_string(),
        w if DOMAIN_WORDS.contains(&w) => w.to_string(),
        w => {
            if let Some(d) = digit_word(w).filter(|_| !matches!(w, "un" | "una")) {
                char::from(b'0' + d).to_string()
            } else if let Some(c) = letter_word(w) {
                c.to_string()
            } else if w.len() == 1 && w.bytes().all(|b| b.is_ascii_digit()) {
                w.to_string()
            } else {
                return None;
            }
        }
    };
    Some((one, 1))
}

/// An email address spelled by the caller ("j o h n dot s m i t h at gmail dot com", "juan
/// punto pe e erre zeta arroba yahoo punto com"); `None` unless every word is part of the
/// spelling and the result is a well-formed address.
pub fn email(text: &str) -> Option<String> {
    if text.contains("[unk]") {
        return None;
    }
    let folded = fold(text, true);
    let words: Vec<&str> = folded.split_whitespace().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        // Case words carry nothing: addresses are lowercase.
        if matches!(
            w,
            "capital" | "lowercase" | "uppercase" | "small" | "mayuscula" | "minuscula"
        ) {
            i += 1;
            continue;
        }
        // "b as in boy": the example word is not part of the address.
        if w == "as" && words.get(i + 1) == Some(&"in") && words.get(i + 2).is_some() {
            i += 3;
            continue;
        }
        // "double l", "triple seven": the next single character repeated.
        let times = match w {
            "double" | "doble" => 2,
            "triple" => 3,
            _ => 1,
        };
        if times > 1 {
            // "double u" is the letter w (a two-word unit of its own).
            if let Some((u, 2)) = unit(&words[i..]) {
                out.push_str(&u);
                i += 2;
                continue;
            }
            let (u, used) = unit(&words[i + 1..])
                .filter(|(u, _)| u.len() == 1 && u.bytes().all(|b| b.is_ascii_alphanumeric()))?;
            out.push_str(&u.repeat(times));
            i += 1 + used;
            continue;
        }
        let (u, used) = unit(&words[i..])?;
        out.push_str(&u);
        i += used;
    }
    if out.matches('@').count() != 1 {
        return None;
    }
    valid_email(&out)
}

/// The letters on each telephone key (ITU E.161), `2` to `9`.
const KEY_LETTERS: [&str; 8] = ["abc", "def", "ghi", "jkl", "mno", "pqrs", "tuv", "wxyz"];
/// The symbols of an address on key 1: 1-1 dot, 1-2 at, 1-3 underscore, 1-4 dash.
const KEY_ONE: [char; 4] = ['.', '@', '_', '-'];

/// An email address spelled with the keypad, two keys a character: the key, then the letter's
/// place on it (`5 1` = j, `6 3` = o, `7 4` = s); a digit is its key then `0` (`7 0` = 7); key
/// `1` then 1–4 is `.`, `@`, `_`, `-`. `None` unless every pair means something and the
/// result is a well-formed address.
pub fn keypad_email(keys: &str) -> Option<String> {
    let b = keys.as_bytes();
    if b.is_empty() || b.len() % 2 != 0 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut out = String::with_capacity(b.len() / 2);
    for pair in b.chunks(2) {
        let (key, place) = (pair[0] - b'0', pair[1] - b'0');
        let c = match (key, place) {
            (k, 0) => char::from(b'0' + k),
            (1, p) => *KEY_ONE.get(usize::from(p) - 1)?,
            (0, _) => return None,
            (k, p) => KEY_LETTERS[usize::from(k) - 2]
                .chars()
                .nth(usize::from(p) - 1)?,
        };
        out.push(c);
    }
    if out.matches('@').count() != 1 {
        return None;
    }
    valid_email(&out)
}

/// The keys that spell `address` with [`keypad_email`] (for tests and the authors' examples).
pub fn keypad_keys(address: &str) -> Option<String> {
    let mut keys = String::new();
    for c in address.chars() {
        if c.is_ascii_digit() {
            keys.push(c);
            keys.push('0');
        } else if let Some(i) = KEY_ONE.iter().position(|k| *k == c) {
            keys.push('1');
            keys.push(char::from(b'1' + i as u8));
        } else {
            let c = c.to_ascii_lowercase();
            let (k, p) = KEY_LETTERS
                .iter()
                .enumerate()
                .find_map(|(k, l)| l.find(c).map(|p| (k, p)))?;
            keys.push(char::from(b'2' + k as u8));
            keys.push(char::from(b'1' + p as u8));
        }
    }
    Some(keys)
}

/// A phone number said digit by digit ("two oh two five five five ..."): ten digits, or eleven
/// with the country code; the same checks as a keyed number.
pub fn phone(text: &str) -> Option<String> {
    super::slots::phone(text)
}

/// The address as prompt markup to read back: letters and digits one by one, symbols and the
/// common domain words as words ("{chars JOHN} dot {chars SMITH} at gmail dot com").
pub fn spoken_email(lang: Lang, address: &str) -> String {
    let (at, dot, under, dash, plus) = match lang {
        Lang::En => ("at", "dot", "underscore", "dash", "plus"),
        Lang::Es => ("arroba", "punto", "guion bajo", "guion", "más"),
    };
    let mut parts: Vec<String> = Vec::new();
    let (local, domain) = address.split_once('@').unwrap_or((address, ""));
    let push_run = |run: &str, parts: &mut Vec<String>, in_domain: bool| {
        if run.is_empty() {
            return;
        }
        if in_domain && DOMAIN_WORDS.contains(&run) {
            parts.push(run.to_string());
        } else {
            parts.push(format!("{{chars {run}}}"));
        }
    };
    for (text, in_domain) in [(local, false), (domain, true)] {
        if in_domain {
            parts.push(at.to_string());
        }
        let mut run = String::new();
        for c in text.chars() {
            let word = match c {
                '.' => dot,
                '_' => under,
                '-' => dash,
                '+' => plus,
                c if c.is_ascii_alphanumeric() => {
                    run.push(c);
                    continue;
                }
                _ => continue,
            };
            push_run(&run, &mut parts, in_domain);
            run.clear();
            parts.push(word.to_string());
        }
        push_run(&run, &mut parts, in_domain);
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_spellings() {
        let cases = [
            (
                "j o h n dot s m i t h at gmail dot com",
                Some("john.smith@gmail.com"),
            ),
            ("m a r i a seven at yahoo dot com", Some("maria7@yahoo.com")),
            (
                "b as in bravo o b b y underscore two zero at outlook dot com",
                Some("bobby_20@outlook.com"),
            ),
            ("double l o y d at g mail dot com", Some("lloyd@gmail.com")),
            ("double u a n g at icloud dot com", Some("wang@icloud.com")),
            ("kilo oscar at x-ray y z dot org", Some("ko@xyz.org")),
            (
                "a n n dash l e e at u s c i s dot gov",
                Some("ann-lee@uscis.gov"),
            ),
            ("capital a l at aol dot com", Some("al@aol.com")),
            ("triple seven at net dot net", Some("777@net.net")),
            // No "at", two "at"s, no dotted domain, a word that is not spelling.
            ("j o h n dot com", None),
            ("j at o at gmail dot com", None),
            ("j o h n at gmail", None),
            ("j o h n at gmail dot com please", None),
            ("[unk] at gmail dot com", None),
            ("", None),
        ];
        for (said, want) in cases {
            assert_eq!(email(said).as_deref(), want, "{said:?}");
        }
    }

    #[test]
    fn spanish_spellings() {
        let cases = [
            (
                "jota u a ene punto pe e erre e zeta arroba gmail punto com",
                Some("juan.perez@gmail.com"),
            ),
            (
                "doble ve i griega arroba hotmail punto com",
                Some("wy@hotmail.com"),
            ),
            (
                "eme a erre i a guion bajo dos arroba yahoo punto com",
                Some("maria_2@yahoo.com"),
            ),
            ("ana arroba", None),
        ];
        for (said, want) in cases {
            assert_eq!(email(said).as_deref(), want, "{said:?}");
        }
    }

    #[test]
    fn every_token_parses_alone_or_as_glue() {
        // Each token of the grammar means something to the parser: none is rejected outright.
        for lang in Lang::ALL {
            for t in email_tokens(lang) {
                let said = format!("a {t} b at gmail dot com");
                let words: Vec<&str> = t.split_whitespace().collect();
                assert!(
                    unit(&words).is_some() || matches!(t.as_str(), "double" | "doble" | "triple"),
                    "{lang}: {t:?} is not understood ({said})"
                );
            }
        }
    }

    #[test]
    fn keypad_spelling() {
        // j=51 o=63 h=42 n=62 .=11 s=74 m=61 i=43 t=81 h=42 @=12 g=41 m=61 a=21 i=43 l=53
        // .=11 c=23 o=63 m=61
        let keys = "51634262117461438142124161214353112363 61".replace(' ', "");
        assert_eq!(keypad_email(&keys).as_deref(), Some("john.smith@gmail.com"));
        for a in ["maria_7@yahoo.com", "ann-lee2@uscis.gov", "w.xyz@qq.com"] {
            let k = keypad_keys(a).unwrap();
            assert_eq!(keypad_email(&k).as_deref(), Some(a), "{k}");
        }
        for bad in [
            "",
            "5",
            "516",
            "5163424212412161214353",        // no dot in the domain
            "0163",                          // 0 is no letter key
            "2512",                          // c? no: 2 has three letters, place 5
            "2141",                          // no @
            "12121",                         // odd
            "21122112412161214353112363 61", // two @
            "15",                            // key 1 place 5
        ] {
            let bad = bad.replace(' ', "");
            assert_eq!(keypad_email(&bad), None, "{bad}");
        }
        assert_eq!(keypad_keys("a b"), None);
    }

    #[test]
    fn spoken_phone_numbers() {
        assert_eq!(
            phone("two oh two five five five zero one two three").as_deref(),
            Some("2025550123")
        );
        assert_eq!(
            phone("one eight hundred double five five one two three four").as_deref(),
            Some("8005551234")
        );
        assert_eq!(phone("two oh two five five five").as_deref(), None);
    }

    #[test]
    fn read_back_markup_spells_what_was_heard() {
        assert_eq!(
            spoken_email(Lang::En, "john.smith7@gmail.com"),
            "{chars john} dot {chars smith7} at gmail dot com"
        );
        assert_eq!(
            spoken_email(Lang::Es, "ana_lee-2@mi-sitio.org"),
            "{chars ana} guion bajo {chars lee} guion {chars 2} arroba {chars mi} guion {chars sitio} punto org"
        );
        // The markup renders (the speech layer accepts it).
        for lang in Lang::ALL {
            let text = spoken_email(lang, "a.b_c-d+e@x-y.example.com");
            crate::prompts::markup::render(&text, lang).expect("valid markup");
        }
    }
}
