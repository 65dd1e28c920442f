//! Personal data (phone numbers, email addresses, receipt numbers) never reaches logs or call
//! records in clear: it travels wrapped in [`Pii`], whose `Debug` and `Display` redact it.

use std::fmt;

/// A value that must not be logged. Use [`Pii::expose`] only where the clear value is needed
/// (sending the SMS, the SMTP envelope).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Pii<T>(T);

impl<T> Pii<T> {
    pub fn new(value: T) -> Self {
        Pii(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: AsRef<str>> Pii<T> {
    /// The redacted form used in logs and records.
    pub fn redacted(&self) -> String {
        redact(self.0.as_ref())
    }
}

impl<T: AsRef<str>> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pii({})", self.redacted())
    }
}

impl<T: AsRef<str>> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Redact a phone number, email address, receipt number or SIP user part.
///
/// Phone-like values keep only their last two digits (`***-***-**34`) so an operator can tell two
/// calls apart without learning the number; emails keep the first letter and the domain's top
/// level; anything else keeps its length only.
pub fn redact(value: &str) -> String {
    let value = value.trim();
    if value.is_empty() {
        return String::new();
    }
    if let Some(at) = value.find('@') {
        let first = value.chars().next().unwrap_or('*');
        let tld = value[at..].rsplit('.').next().unwrap_or("");
        return format!("{first}***@***.{tld}");
    }
    let digits: Vec<char> = value.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() >= 4 {
        let tail: String = digits[digits.len() - 2..].iter().collect();
        return format!("***{tail}");
    }
    "*".repeat(value.chars().count().min(8))
}

/// A caller's words with what may identify them hidden: tokens with digits or `@`, and runs of
/// three or more spoken digits ("nine one two" of a receipt or phone number), become `#`.
pub fn redact_words(text: &str) -> String {
    const DIGIT_WORDS: &[&str] = &[
        "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
        "cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
    ];
    let words: Vec<&str> = text.split_whitespace().collect();
    let digit_word = |w: &str| DIGIT_WORDS.contains(&w.to_lowercase().as_str());
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let run = words[i..].iter().take_while(|w| digit_word(w)).count();
        if run >= 3 {
            out.extend(std::iter::repeat_n("#", run));
            i += run;
            continue;
        }
        let w = words[i];
        out.push(if w.contains(|c: char| c.is_ascii_digit() || c == '@') {
            "#"
        } else {
            w
        });
        i += 1;
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn spoken_numbers_are_hidden_in_words() {
        assert_eq!(
            super::redact_words("my receipt is i o e nine one two three four please"),
            "my receipt is i o e # # # # # please"
        );
        assert_eq!(
            super::redact_words("mail bob@x.org or 555-1234"),
            "mail # or #"
        );
        assert_eq!(super::redact_words("press two"), "press two");
    }

    use super::*;

    #[test]
    fn phone_numbers_keep_two_digits() {
        assert_eq!(redact("+1 (202) 555-0134"), "***34");
        assert_eq!(format!("{}", Pii::new("2025550134")), "***34");
    }

    #[test]
    fn emails_and_receipts_are_hidden() {
        assert_eq!(redact("john.smith@gmail.com"), "j***@***.com");
        assert_eq!(redact("IOE0123456789"), "***89");
        assert!(!format!("{:?}", Pii::new("IOE0123456789")).contains("0123"));
        assert_eq!(redact("anonymous"), "********");
    }
}
