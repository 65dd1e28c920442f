//! What a message says, per language. A message states only the link and what it is: no case
//! data, no name, nothing from the call beyond the link the caller asked for.

use crate::types::Lang;

/// A link the IVR can send, with what it is in each language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub id: &'static str,
    pub url: &'static str,
    pub what_en: &'static str,
    pub what_es: &'static str,
}

/// The links of `intents.md`, keyed by the intent (or tool) that offers them.
pub const LINKS: &[Link] = &[
    Link {
        id: "case_status",
        url: "https://uscis.gov/casestatus",
        what_en: "Check your case status",
        what_es: "Consulte el estado de su caso",
    },
    Link {
        id: "processing_times",
        url: "https://uscis.gov/processingtimes",
        what_en: "See case processing times",
        what_es: "Vea los tiempos de procesamiento",
    },
    Link {
        id: "e_request",
        url: "https://uscis.gov/e-request",
        what_en: "Submit a service request online",
        what_es: "Envíe una solicitud de servicio en línea",
    },
    Link {
        id: "change_of_address",
        url: "https://uscis.gov/addresschange",
        what_en: "Change your address",
        what_es: "Cambie su dirección",
    },
    Link {
        id: "online_account",
        url: "https://myaccount.uscis.gov",
        what_en: "Create or sign in to your USCIS online account",
        what_es: "Cree o acceda a su cuenta en línea de USCIS",
    },
    Link {
        id: "contact_info",
        url: "https://uscis.gov/tools",
        what_en: "Find USCIS self-help tools",
        what_es: "Encuentre las herramientas de autoayuda de USCIS",
    },
];

/// The catalog entry for `id`.
pub fn link(id: &str) -> Option<&'static Link> {
    LINKS.iter().find(|l| l.id == id)
}

/// What the link is, in `lang`: from the catalog, else a generic phrase.
pub fn what(link_id: &str, lang: Lang) -> &'static str {
    match (link(link_id), lang) {
        (Some(l), Lang::En) => l.what_en,
        (Some(l), Lang::Es) => l.what_es,
        (None, Lang::En) => "The link you asked for",
        (None, Lang::Es) => "El enlace que solicitó",
    }
}

/// The SMS text: one line, under one 160-character segment for the catalog links.
pub fn sms_text(what: &str, url: &str, lang: Lang) -> String {
    match lang {
        Lang::En => format!("USCIS: {what} at {url}"),
        Lang::Es => format!("USCIS: {what} en {url}"),
    }
}

/// Subject and plain-text body of the email.
pub fn email_text(what: &str, url: &str, lang: Lang) -> (String, String) {
    match lang {
        Lang::En => (
            format!("USCIS: {what}"),
            format!(
                "{what}: {url}\r\n\r\nYou asked for this link on a call to the USCIS Contact Center.\r\n"
            ),
        ),
        Lang::Es => (
            format!("USCIS: {what}"),
            format!(
                "{what}: {url}\r\n\r\nUsted pidió este enlace en una llamada al Centro de Contacto de USCIS.\r\n"
            ),
        ),
    }
}

/// A URL we are willing to put in a message: http(s), no whitespace or control characters (they
/// would end the link early or inject headers), bounded length.
pub fn valid_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 512
        && url.len() > "https://".len()
        && url.chars().all(|c| c.is_ascii_graphic())
}

/// Render the provider's JSON body template: `{to}`, `{body}`, `{key}` are replaced by the
/// JSON-escaped values (without quotes: the template carries them), so a template is any JSON
/// document the provider wants.
pub fn render_sms_body(template: &str, to: &str, body: &str, key: &str) -> String {
    let mut out = String::with_capacity(template.len() + body.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let (value, len) = if tail.starts_with("{to}") {
            (Some(to), 4)
        } else if tail.starts_with("{body}") {
            (Some(body), 6)
        } else if tail.starts_with("{key}") {
            (Some(key), 5)
        } else {
            (None, 1)
        };
        match value {
            Some(v) => json_escape_into(&mut out, v),
            None => out.push('{'),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

fn json_escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// The SMTP `Message-ID` of a key: deterministic, so a resend after a crash carries the same id
/// and a receiving system that deduplicates on it keeps one copy. Two 64-bit FNV-1a hashes with
/// different bases: ids need uniqueness, not secrecy, and no crypto crate for 128 bits.
pub fn message_id(key: &str, domain: &str) -> String {
    format!(
        "<outbox.{:016x}{:016x}@{domain}>",
        fnv1a(key, 0xcbf2_9ce4_8422_2325),
        fnv1a(key, 0x6c62_272e_07bb_0142)
    )
}

fn fnv1a(s: &str, basis: u64) -> u64 {
    s.bytes().fold(basis, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Standard base64 with padding, for HTTP Basic auth (one call per send: not worth a crate).
pub fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_states_link_and_what_it_is_per_language() {
        let en = sms_text(
            what("case_status", Lang::En),
            "https://uscis.gov/casestatus",
            Lang::En,
        );
        assert_eq!(
            en,
            "USCIS: Check your case status at https://uscis.gov/casestatus"
        );
        let es = sms_text(
            what("case_status", Lang::Es),
            "https://uscis.gov/casestatus",
            Lang::Es,
        );
        assert_eq!(
            es,
            "USCIS: Consulte el estado de su caso en https://uscis.gov/casestatus"
        );
        for l in LINKS {
            for lang in Lang::ALL {
                let text = sms_text(what(l.id, lang), l.url, lang);
                assert!(text.chars().count() <= 160, "{text}");
                assert!(valid_url(l.url), "{}", l.url);
            }
        }
        assert_eq!(what("nope", Lang::Es), "El enlace que solicitó");
    }

    #[test]
    fn email_body_carries_the_link() {
        let (subject, body) = email_text("See case processing times", "https://x.gov/p", Lang::En);
        assert_eq!(subject, "USCIS: See case processing times");
        assert!(body.starts_with("See case processing times: https://x.gov/p\r\n"));
        let (_, body_es) = email_text("Vea", "https://x.gov/p", Lang::Es);
        assert!(body_es.contains("Usted pidió este enlace"));
    }

    #[test]
    fn urls_with_spaces_or_newlines_are_refused() {
        assert!(valid_url("https://uscis.gov/casestatus?x=1"));
        assert!(!valid_url("https://"));
        assert!(!valid_url("ftp://uscis.gov"));
        assert!(!valid_url("https://uscis.gov/a b"));
        assert!(!valid_url("https://uscis.gov/\r\nBcc: x"));
        assert!(!valid_url(&format!("https://{}", "a".repeat(600))));
    }

    #[test]
    fn sms_body_template_escapes_json() {
        let t = r#"{"to":"{to}","text":"{body}","ref":"{key}","x":"{other}"}"#;
        let out = render_sms_body(t, "+12025550134", "say \"hi\"\n\\", "c:1:sms");
        assert_eq!(
            out,
            r#"{"to":"+12025550134","text":"say \"hi\"\n\\","ref":"c:1:sms","x":"{other}"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "say \"hi\"\n\\");
        assert_eq!(render_sms_body("{", "a", "b", "c"), "{");
        assert_eq!(render_sms_body("x{to", "a", "b", "c"), "x{to");
    }

    #[test]
    fn message_id_is_stable_per_key() {
        let a = message_id("call-1:case_status:email", "ivr.example");
        assert_eq!(a, message_id("call-1:case_status:email", "ivr.example"));
        assert_ne!(a, message_id("call-2:case_status:email", "ivr.example"));
        assert!(a.starts_with("<outbox.") && a.ends_with("@ivr.example>"));
        assert_eq!(a.len(), "<outbox.@ivr.example>".len() + 32);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
