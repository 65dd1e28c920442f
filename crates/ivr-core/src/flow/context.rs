//! What the agent is told when a call is handed over: one format for voice, TTY and RTT calls,
//! carried in the REFER's (or the agent INVITE's) `User-to-User` header (RFC 7433). It names
//! the call's last understood intent, its language, its mode and whether the caller agreed to a
//! text ahead; never a number, an address or anything the caller typed or said.

use std::fmt;

use crate::types::Lang;

/// How the caller is talking to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallMode {
    Voice,
    /// A Baudot TTY (45.45 baud tones in the audio).
    Tty,
    /// Real-time text (RFC 4103 T.140).
    Rtt,
}

impl CallMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CallMode::Voice => "voice",
            CallMode::Tty => "tty",
            CallMode::Rtt => "rtt",
        }
    }
}

/// The transfer's context, rendered as `intent=…;lang=…;mode=…;consent=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferContext {
    /// The last intent understood (empty: none).
    pub intent: String,
    pub lang: Lang,
    pub mode: CallMode,
    /// The caller's answer to "shall we text you the link ahead" (`None`: not asked).
    pub consent: Option<bool>,
}

impl fmt::Display for TransferContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let consent = match self.consent {
            Some(true) => "yes",
            Some(false) => "no",
            None => "none",
        };
        // Intent ids are grammar file names ([a-z0-9_]); anything else is left out rather than
        // allowed to break the header's syntax.
        let intent: String = self
            .intent
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        write!(
            f,
            "intent={intent};lang={};mode={};consent={consent}",
            self.lang,
            self.mode.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_format_for_every_mode() {
        let mut c = TransferContext {
            intent: "expedite".into(),
            lang: Lang::En,
            mode: CallMode::Voice,
            consent: None,
        };
        assert_eq!(
            c.to_string(),
            "intent=expedite;lang=en;mode=voice;consent=none"
        );
        c.mode = CallMode::Tty;
        c.consent = Some(true);
        c.lang = Lang::Es;
        assert_eq!(
            c.to_string(),
            "intent=expedite;lang=es;mode=tty;consent=yes"
        );
        c.mode = CallMode::Rtt;
        c.consent = Some(false);
        c.intent = String::new();
        assert_eq!(c.to_string(), "intent=;lang=es;mode=rtt;consent=no");
        // Nothing but an intent id's characters gets into the header.
        c.intent = "x;consent=yes\r\nVia: evil".into();
        assert_eq!(
            c.to_string(),
            "intent=xconsentyesViaevil;lang=es;mode=rtt;consent=no"
        );
    }
}
