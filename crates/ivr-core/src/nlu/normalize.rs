//! Text normalization shared by the grammar compiler, the classifier and the slot parsers.
//!
//! Callers reach us through three very different channels: ASR transcripts (lowercase, no
//! punctuation, homophones), TTY typing (ALL CAPS, "GA"/"SK"/"Q" conventions, typos) and the
//! authors' own phrases. Everything is folded to the same shape before any model sees it, so
//! "¿CÓMO VA MI CASO Q GA" and "como va mi caso" produce the same features.

use crate::types::Lang;

/// Inputs longer than this are cut: no caller question needs more, and it bounds the work per
/// utterance whatever the TTY line or a fuzzer sends us.
pub const MAX_INPUT_CHARS: usize = 2000;

/// Lowercase and fold accents (a hand-written NFKD subset covering Spanish and the Latin-1
/// letters callers type). Anything not alphanumeric becomes a space except the characters slot
/// parsers need (`@ . _ - + #`), which `keep_symbols` preserves.
pub fn fold(text: &str, keep_symbols: bool) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_INPUT_CHARS * 2));
    for c in text.chars().take(MAX_INPUT_CHARS) {
        for l in c.to_lowercase() {
            let f = match l {
                'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => 'a',
                'é' | 'è' | 'ê' | 'ë' => 'e',
                'í' | 'ì' | 'î' | 'ï' => 'i',
                'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
                'ú' | 'ù' | 'û' | 'ü' => 'u',
                'ñ' => 'n',
                'ç' => 'c',
                'ý' | 'ÿ' => 'y',
                // Typographic apostrophes: "don’t" must match "don't".
                '\u{2019}' | '\u{2018}' | '`' | '\'' => '\'',
                c if c.is_ascii_alphanumeric() => c,
                '@' | '.' | '_' | '-' | '+' if keep_symbols => l,
                // Letters of other scripts stay (they are simply unknown words); symbols, emoji
                // and control characters become separators.
                c if c.is_alphabetic() => c,
                _ => ' ',
            };
            out.push(f);
        }
    }
    out
}

/// Words that carry no meaning in either language: hesitations and discourse fillers. Removed
/// before classification so "um uh my case" equals "my case".
fn is_filler(w: &str) -> bool {
    matches!(
        w,
        "um" | "umm"
            | "uh"
            | "uhh"
            | "uhm"
            | "er"
            | "erm"
            | "ah"
            | "eh"
            | "ehh"
            | "hmm"
            | "mm"
            | "mmm"
            | "like"
            | "este"
            | "pues"
            | "oye"
            | "mira"
            | "so"
            | "well"
            | "hi"
            | "hello"
            | "hey"
            | "hola"
            | "alo"
            | "please"
            | "pls"
            | "plz"
            | "porfa"
            | "favor"
            | "por"
    )
}

/// Multi-word fillers, removed as whole sequences.
const FILLER_SEQS: &[&[&str]] = &[
    &["you", "know"],
    &["i", "mean"],
    &["o", "sea"],
    &["por", "favor"],
    &["good", "morning"],
    &["good", "afternoon"],
    &["buenos", "dias"],
    &["buenas", "tardes"],
    &["buenas", "noches"],
];

/// TTY abbreviations, texting shorthand and common typos, mapped to the word authors write
/// (the Baudot line has no lowercase and callers save keystrokes). A `match` compiles to a
/// decision tree: this runs for every word of every utterance.
fn rewrite(word: &str) -> &str {
    match word {
        "u" => "you",
        "ur" => "your",
        "r" => "are",
        "ppl" => "people",
        "thx" => "thanks",
        "tnx" => "thanks",
        "cant" => "can't",
        "dont" => "don't",
        "didnt" => "didn't",
        "wont" => "won't",
        "im" => "i'm",
        "ive" => "i've",
        "whats" => "what's",
        "wats" => "what's",
        "wat" => "what",
        "wen" => "when",
        "hw" => "how",
        "recieve" => "receive",
        "recieved" => "received",
        "reciept" => "receipt",
        "reciet" => "receipt",
        "adress" => "address",
        "addres" => "address",
        "apointment" => "appointment",
        "appoinment" => "appointment",
        "appointmnet" => "appointment",
        "biometric" => "biometrics",
        "bio" => "biometrics",
        "pasword" => "password",
        "passwrd" => "password",
        "acount" => "account",
        "accnt" => "account",
        "acct" => "account",
        "greencard" => "green card",
        "gc" => "green card",
        "tarjetaverde" => "tarjeta verde",
        "q" => "",
        "ga" => "",
        "sk" => "",
        "gaga" => "",
        "sksk" => "",
        "xq" => "porque",
        "pq" => "porque",
        "k" => "que",
        "tb" => "tambien",
        "tmb" => "tambien",
        "d" => "de",
        "x" => "por",
        "nro" => "numero",
        "num" => "number",
        "info" => "information",
        "hrs" => "hours",
        "hr" => "hour",
        "appt" => "appointment",
        "appts" => "appointments",
        "apt" => "appointment",
        "msg" => "message",
        "ph" => "phone",
        "tel" => "telephone",
        "b4" => "before",
        "abt" => "about",
        "bc" => "because",
        "cuz" => "because",
        "wk" => "week",
        "wks" => "weeks",
        "mo" => "month",
        "mos" => "months",
        "yr" => "year",
        "yrs" => "years",
        "tmrw" => "tomorrow",
        "2day" => "today",
        "2morrow" => "tomorrow",
        "ppt" => "passport",
        "dir" => "direccion",
        _ => word,
    }
}

/// Spoken forms of immigration form numbers ("i ninety", "i seven fifty one") the ASR produces.
const FORM_WORDS: &[(&[&str], &str)] = &[
    (&["ninety"], "90"),
    (&["noventa"], "90"),
    (&["seven", "fifty", "one"], "751"),
    (&["siete", "cincuenta", "y", "uno"], "751"),
    (&["setecientos", "cincuenta", "y", "uno"], "751"),
    (&["seven", "sixty", "five"], "765"),
    (&["four", "eighty", "five"], "485"),
    (&["one", "thirty"], "130"),
    (&["eight", "sixty", "four"], "864"),
    (&["four", "hundred"], "400"),
    (&["cuatrocientos"], "400"),
    (&["cuatro", "ochenta", "y", "cinco"], "485"),
    (&["cuatrocientos", "ochenta", "y", "cinco"], "485"),
    (&["siete", "sesenta", "y", "cinco"], "765"),
    (&["setecientos", "sesenta", "y", "cinco"], "765"),
    (&["uno", "treinta"], "130"),
    (&["ciento", "treinta"], "130"),
];

/// The classifier's view of an utterance: folded, fillers and TTY markers removed, form numbers
/// joined ("I-90", "i 90", "i ninety" → "i90"), long digit runs collapsed to a placeholder so a
/// receipt number does not look like thirteen unknown words.
pub fn tokens(text: &str) -> Vec<String> {
    let folded = fold(text, false);
    let raw: Vec<&str> = folded.split_whitespace().collect();
    let mut words: Vec<String> = Vec::with_capacity(raw.len());
    for w in raw {
        let w = w.trim_matches('\'');
        if w.is_empty() {
            continue;
        }
        let r = rewrite(w);
        for part in r.split_whitespace() {
            words.push(part.to_string());
        }
    }
    // Multi-word fillers first, then single ones, so "por favor" goes as a pair.
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    'outer: while i < words.len() {
        for seq in FILLER_SEQS {
            if words.len() - i >= seq.len() && seq.iter().zip(&words[i..]).all(|(a, b)| a == b) {
                i += seq.len();
                continue 'outer;
            }
        }
        let w = &words[i];
        // "uh huh" is a yes, not a filler followed by a "huh?".
        if (w == "uh" || w == "mm") && words.get(i + 1).is_some_and(|n| n == "huh" || n == "hmm") {
            out.push("mhm".to_string());
            i += 2;
            continue;
        }
        if is_filler(w) {
            i += 1;
            continue;
        }
        // Form numbers: "i" followed by a number (typed "i-90" was split by the fold) or its
        // spoken form. "n 400" too.
        if (w == "i" || w == "n" || w == "g") && i + 1 < words.len() {
            let next = &words[i + 1];
            if next.chars().all(|c| c.is_ascii_digit()) && (2..=4).contains(&next.len()) {
                out.push(format!("{w}{next}"));
                i += 2;
                continue;
            }
        }
        // Spanish recognizers write the letter "i" as "y" ("la y noventa"); only a spoken form
        // number after it makes it a form name.
        if (w == "i" || w == "n" || w == "g" || w == "y")
            && let Some((seq, num)) = FORM_WORDS
                .iter()
                .filter(|(seq, _)| {
                    words.len() > i + seq.len()
                        && seq.iter().zip(&words[i + 1..]).all(|(a, b)| a == b)
                })
                // The longest reading wins: "cuatrocientos ochenta y cinco" is 485, not 400.
                .max_by_key(|(seq, _)| seq.len())
        {
            let letter = if w == "y" { "i" } else { w.as_str() };
            out.push(format!("{letter}{num}"));
            i += 1 + seq.len();
            continue;
        }
        if w.chars().all(|c| c.is_ascii_digit()) && w.len() >= 5 {
            out.push("#num".to_string());
        } else if w.len() > 40 {
            // A 40-letter "word" is noise (a pasted blob); it cannot match anything.
            out.push("#long".to_string());
        } else {
            out.push(w.clone());
        }
        i += 1;
    }
    collapse_spoken_numbers(out)
}

/// Digit words of both languages, as callers spell receipt and phone numbers.
fn is_digit_word(w: &str) -> bool {
    matches!(
        w,
        "zero"
            | "oh"
            | "one"
            | "two"
            | "three"
            | "four"
            | "five"
            | "six"
            | "seven"
            | "eight"
            | "nine"
            | "double"
            | "triple"
            | "cero"
            | "uno"
            | "dos"
            | "tres"
            | "cuatro"
            | "cinco"
            | "seis"
            | "siete"
            | "ocho"
            | "nueve"
            | "doble"
    ) || (!w.is_empty() && w.chars().all(|c| c.is_ascii_digit()))
}

/// A run of three or more spoken digits is a number being dictated, not words with meaning:
/// it becomes the same placeholder as a typed long number.
fn collapse_spoken_numbers(tokens: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let run = tokens[i..].iter().take_while(|t| is_digit_word(t)).count();
        if run >= 3 {
            out.push("#num".to_string());
            i += run;
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    out
}

/// The normalized phrase as one string: what duplicate detection and exact matching compare.
pub fn normalized(text: &str) -> String {
    tokens(text).join(" ")
}

/// Light suffix stripping: enough to merge "appointments"/"appointment", "rescheduling"/
/// "reschedule", "citas"/"cita", "cambiar"/"cambio". Character n-grams cover what it misses.
pub fn stem(lang: Lang, word: &str) -> String {
    let n = word.chars().count();
    if n <= 3 || !word.is_ascii() {
        return word.to_string();
    }
    let suffixes: &[&str] = match lang {
        Lang::En => &[
            "ations", "ation", "ments", "ment", "ings", "ing", "ied", "ies", "ed", "es", "ly", "s",
            "e",
        ],
        Lang::Es => &[
            "aciones", "acion", "iciones", "imientos", "imiento", "amente", "mente", "ando",
            "iendo", "ados", "adas", "idos", "idas", "ado", "ada", "ido", "ida", "ar", "er", "ir",
            "os", "as", "es", "o", "a", "e", "s",
        ],
    };
    for s in suffixes {
        if word.len() >= s.len() + 3 && word.ends_with(s) {
            return word[..word.len() - s.len()].to_string();
        }
    }
    word.to_string()
}

/// A number as callers say it in a form name: "90" → "ninety", "751" → "seven fifty one"
/// ("siete cincuenta y uno"), "400" → "four hundred" ("cuatrocientos"); long numbers digit by
/// digit.
pub fn spoken_number(lang: Lang, digits: &str) -> String {
    const EN_ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const EN_TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    const ES_ONES: [&str; 30] = [
        "cero",
        "uno",
        "dos",
        "tres",
        "cuatro",
        "cinco",
        "seis",
        "siete",
        "ocho",
        "nueve",
        "diez",
        "once",
        "doce",
        "trece",
        "catorce",
        "quince",
        "dieciséis",
        "diecisiete",
        "dieciocho",
        "diecinueve",
        "veinte",
        "veintiuno",
        "veintidós",
        "veintitrés",
        "veinticuatro",
        "veinticinco",
        "veintiséis",
        "veintisiete",
        "veintiocho",
        "veintinueve",
    ];
    const ES_TENS: [&str; 10] = [
        "",
        "",
        "veinte",
        "treinta",
        "cuarenta",
        "cincuenta",
        "sesenta",
        "setenta",
        "ochenta",
        "noventa",
    ];
    const ES_HUNDREDS: [&str; 10] = [
        "",
        "cien",
        "doscientos",
        "trescientos",
        "cuatrocientos",
        "quinientos",
        "seiscientos",
        "setecientos",
        "ochocientos",
        "novecientos",
    ];
    let d: Vec<usize> = digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| usize::from(b - b'0'))
        .collect();
    let two = |n: usize| -> String {
        match lang {
            Lang::En if n < 20 => EN_ONES[n].to_string(),
            Lang::En if n % 10 == 0 => EN_TENS[n / 10].to_string(),
            Lang::En => format!("{} {}", EN_TENS[n / 10], EN_ONES[n % 10]),
            Lang::Es if n < 30 => ES_ONES[n].to_string(),
            Lang::Es if n % 10 == 0 => ES_TENS[n / 10].to_string(),
            Lang::Es => format!("{} y {}", ES_TENS[n / 10], ES_ONES[n % 10]),
        }
    };
    let one = |n: usize| match lang {
        Lang::En => EN_ONES[n],
        Lang::Es => ES_ONES[n],
    };
    match d.as_slice() {
        [] => String::new(),
        [a] => two(*a),
        [0, b] => format!("{} {}", one(0), one(*b)),
        [a, b] => two(a * 10 + b),
        [a, 0, 0] if *a > 0 => match lang {
            Lang::En => format!("{} hundred", one(*a)),
            Lang::Es => ES_HUNDREDS[*a].to_string(),
        },
        // Form numbers are read as a digit and a pair: "seven fifty one", "one thirty".
        [a, 0, c] => format!("{} {} {}", one(*a), one(0), one(*c)),
        [a, b, c] => format!("{} {}", one(*a), two(b * 10 + c)),
        [a, b, c, e] if *a > 0 && *c > 0 => format!("{} {}", two(a * 10 + b), two(c * 10 + e)),
        _ => d.iter().map(|x| one(*x)).collect::<Vec<_>>().join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_accents_case_and_punctuation() {
        assert_eq!(normalized("¿CÓMO VA MI CASO?"), "como va mi caso");
        assert_eq!(fold("Ñandú", false), "nandu");
    }

    #[test]
    fn removes_fillers_and_tty_markers() {
        assert_eq!(
            normalized("um uh where is my case you know"),
            "where is my case"
        );
        assert_eq!(normalized("WHERE IS MY CARD Q GA"), "where is my card");
        assert_eq!(normalized("uh huh"), "mhm");
        assert_eq!(
            normalized("este pues quiero mi cita por favor"),
            "quiero mi cita"
        );
    }

    #[test]
    fn joins_form_numbers_and_collapses_long_numbers() {
        assert_eq!(normalized("I-90 pending"), "i90 pending");
        assert_eq!(normalized("the i ninety form"), "the i90 form");
        assert_eq!(normalized("i seven fifty one"), "i751");
        assert_eq!(normalized("la y noventa"), "la i90");
        assert_eq!(normalized("n four hundred"), "n400");
        assert_eq!(normalized("la n cuatrocientos"), "la n400");
        assert_eq!(normalized("i cuatrocientos ochenta y cinco"), "i485");
        assert_eq!(normalized("receipt 0123456789"), "receipt #num");
        assert_eq!(normalized("i o e zero one two three four"), "i o e #num");
        assert_eq!(normalized("one more time"), "one more time");
    }

    #[test]
    fn fixes_common_typos() {
        assert_eq!(
            normalized("i didnt recieve my gc"),
            "i didn't receive my green card"
        );
    }

    #[test]
    fn speaks_form_numbers() {
        assert_eq!(spoken_number(Lang::En, "90"), "ninety");
        assert_eq!(spoken_number(Lang::En, "751"), "seven fifty one");
        assert_eq!(spoken_number(Lang::En, "130"), "one thirty");
        assert_eq!(spoken_number(Lang::En, "400"), "four hundred");
        assert_eq!(spoken_number(Lang::En, "9"), "nine");
        assert_eq!(spoken_number(Lang::Es, "485"), "cuatro ochenta y cinco");
        assert_eq!(spoken_number(Lang::Es, "21"), "veintiuno");
        assert_eq!(
            spoken_number(Lang::En, "2025550134"),
            "two zero two five five five zero one three four"
        );
    }

    #[test]
    fn stems_lightly() {
        assert_eq!(stem(Lang::En, "appointments"), "appoint");
        assert_eq!(stem(Lang::En, "appointment"), "appoint");
        assert_eq!(stem(Lang::Es, "citas"), stem(Lang::Es, "cita"));
        assert_eq!(stem(Lang::Es, "cambiar"), "cambi");
        assert_eq!(stem(Lang::Es, "cambio"), "cambi");
    }

    #[test]
    fn caps_huge_input() {
        let big = "a".repeat(100_000);
        assert!(fold(&big, false).len() <= MAX_INPUT_CHARS);
        assert_eq!(tokens(&big), vec!["#long".to_string()]);
    }
}
