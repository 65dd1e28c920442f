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

#[cfg(test)]
mod tests {
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
