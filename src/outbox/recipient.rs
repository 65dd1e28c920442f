//! Recipients are checked and normalized before anything is queued: a message that can never be
//! delivered must not be promised to the caller. Pure functions, no IO.

use std::fmt;

/// Why a recipient was refused. Carries no part of the value: errors get logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecipientError {
    /// Not 10 digits (optionally after `+1` / `1`), or characters other than digits and
    /// `+ - . ( )` and spaces.
    PhoneFormat,
    /// Area code or exchange starts with 0 or 1: not a dialable NANP number.
    PhoneNotNanp,
    /// Not `local@domain` with one `@`.
    EmailFormat,
    /// Local part empty, too long, or with characters outside RFC 5322 atext / misplaced dots.
    EmailLocalPart,
    /// Domain not a dotted host name with an alphabetic top-level label.
    EmailDomain,
    /// Longer than 254 characters (RFC 5321 path limit).
    EmailTooLong,
}

impl fmt::Display for RecipientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecipientError::PhoneFormat => "not a 10-digit US phone number",
            RecipientError::PhoneNotNanp => "area code or exchange cannot start with 0 or 1",
            RecipientError::EmailFormat => "not an email address (local@domain)",
            RecipientError::EmailLocalPart => "invalid characters before the @",
            RecipientError::EmailDomain => "invalid domain after the @",
            RecipientError::EmailTooLong => "email address longer than 254 characters",
        })
    }
}

impl std::error::Error for RecipientError {}

/// A US (NANP) number in E.164: `+1NXXNXXXXXX`. SMS goes to US numbers only: the line is a US
/// toll-free number and the provider contract is domestic.
pub fn parse_phone(input: &str) -> Result<String, RecipientError> {
    // Longest sane written form: "+1 (202) 555-0134" is 17; anything far longer is not a number.
    if input.len() > 32 {
        return Err(RecipientError::PhoneFormat);
    }
    let mut digits = String::with_capacity(11);
    for (i, c) in input.trim().char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(RecipientError::PhoneFormat),
        }
    }
    if !(digits.len() == 10 || digits.len() == 11 && digits.starts_with('1')) {
        return Err(RecipientError::PhoneFormat);
    }
    // The one US number rule of every path (`types::UsPhone`): what the caller confirmed is
    // what the outbox takes.
    crate::types::UsPhone::from_digits(&digits)
        .map(|p| p.e164())
        .ok_or(RecipientError::PhoneNotNanp)
}

/// An address in the common RFC 5322 `dot-atom@dot-atom` form, domain lower-cased. Quoted local
/// parts, comments and IP-literal domains are refused: no caller dictates those, and every
/// accepted character is one that cannot break an SMTP command or a header (no CR/LF, no `<>`).
pub fn parse_email(input: &str) -> Result<String, RecipientError> {
    let s = input.trim();
    if s.len() > 254 {
        return Err(RecipientError::EmailTooLong);
    }
    let (local, domain) = s.split_once('@').ok_or(RecipientError::EmailFormat)?;
    if domain.contains('@') {
        return Err(RecipientError::EmailFormat);
    }
    if local.is_empty() || local.len() > 64 || !dot_atom(local, is_atext) {
        return Err(RecipientError::EmailLocalPart);
    }
    if domain.len() > 253 || !valid_domain(domain) {
        return Err(RecipientError::EmailDomain);
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// Parse a recipient for `channel`.
pub fn parse(channel: super::Channel, input: &str) -> Result<String, RecipientError> {
    match channel {
        super::Channel::Sms => parse_phone(input),
        super::Channel::Email => parse_email(input),
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// Non-empty atoms of `ok` characters joined by single dots.
fn dot_atom(s: &str, ok: fn(char) -> bool) -> bool {
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(ok))
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let tld = labels[labels.len() - 1];
    labels.iter().all(label_ok) && tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalize_to_e164() {
        for s in [
            "2025550134",
            "202-555-0134",
            "(202) 555-0134",
            "+1 202 555 0134",
            "1.202.555.0134",
            " +12025550134 ",
        ] {
            assert_eq!(parse_phone(s).as_deref(), Ok("+12025550134"), "{s}");
        }
    }

    #[test]
    fn bad_phones_are_refused() {
        use RecipientError::*;
        for (s, e) in [
            ("", PhoneFormat),
            ("555-0134", PhoneFormat),
            ("+44 20 7946 0958", PhoneFormat),
            ("22025550134", PhoneFormat),
            ("202555013x", PhoneFormat),
            ("202+5550134", PhoneFormat),
            ("1025550134", PhoneNotNanp),
            ("2021550134", PhoneNotNanp),
            ("2029110134", PhoneNotNanp),
            ("9115550134", PhoneNotNanp),
            ("2025550134\r\nX: y", PhoneFormat),
        ] {
            assert_eq!(parse_phone(s), Err(e), "{s:?}");
        }
        assert_eq!(parse_phone(&"2".repeat(100)), Err(PhoneFormat));
    }

    /// The keypad entry, the spoken/typed number (voice flow, TTY, RTT, caller ID) and the
    /// outbox take the same numbers (issue #13: three rules before; a number the TTY
    /// conversation confirmed, e.g. with an exchange starting with 1, was refused here).
    #[test]
    fn every_path_takes_the_same_us_numbers() {
        for n in [
            "2025550134",
            "12025550134",
            "2021550134",
            "2020550134",
            "2029110134",
            "9115550134",
            "4115550134",
            "8007671833",
            "1025550134",
            "3125551212",
        ] {
            let outbox = parse_phone(n).ok().map(|e| e[2..].to_string());
            assert_eq!(crate::flow::entry::nanp_number(n), outbox, "keys {n}");
            assert_eq!(crate::nlu::slots::phone(n), outbox, "said or typed {n}");
        }
    }

    #[test]
    fn emails_are_checked_and_domain_lowercased() {
        assert_eq!(
            parse_email(" Jane.Doe+uscis@Example.ORG ").as_deref(),
            Ok("Jane.Doe+uscis@example.org")
        );
        assert_eq!(parse_email("a@b.co").as_deref(), Ok("a@b.co"));
    }

    #[test]
    fn bad_emails_are_refused() {
        use RecipientError::*;
        for (s, e) in [
            ("", EmailFormat),
            ("jane.example.org", EmailFormat),
            ("a@b@c.org", EmailFormat),
            ("@example.org", EmailLocalPart),
            (".jane@example.org", EmailLocalPart),
            ("ja..ne@example.org", EmailLocalPart),
            ("ja ne@example.org", EmailLocalPart),
            ("\"jane\"@example.org", EmailLocalPart),
            ("jane@localhost", EmailDomain),
            ("jane@example.o", EmailDomain),
            ("jane@-example.org", EmailDomain),
            ("jane@example..org", EmailDomain),
            ("jane@[127.0.0.1]", EmailDomain),
            ("jane@example.org\r\nBcc: x@evil.org", EmailFormat),
            ("jane@exa mple.org", EmailDomain),
            ("jane@example.org>", EmailDomain),
        ] {
            assert_eq!(parse_email(s), Err(e), "{s:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert_eq!(parse_email(&long), Err(EmailTooLong));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every short string over a hostile alphabet.
        let alphabet = ['a', '1', '@', '.', '+', '-', ' ', '\n', 'é', '2', '('];
        let mut n: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            n ^= n << 13;
            n ^= n >> 7;
            n ^= n << 17;
            let len = (n % 20) as usize;
            let s: String = (0..len)
                .map(|i| alphabet[((n >> (i * 3)) % alphabet.len() as u64) as usize])
                .collect();
            let _ = parse_phone(&s);
            if let Ok(e) = parse_email(&s) {
                assert!(e.contains('@') && !e.contains(' ') && !e.contains('\n'));
            }
        }
    }
}
