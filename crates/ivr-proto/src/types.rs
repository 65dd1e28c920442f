//! Small shared vocabulary types used by several cores.

use std::fmt;

/// The two languages a voice caller can be served in.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    En,
    Es,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Es];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
        }
    }

    pub fn from_code(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" | "english" | "en-us" => Some(Lang::En),
            "es" | "spanish" | "es-us" | "es-mx" | "español" => Some(Lang::Es),
            _ => None,
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Audio codecs the media path can carry. The RTP payload type is negotiated separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// G.711 µ-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
    /// Opus, RTP clock 48 kHz; decoded to 16 kHz mono for the pipeline.
    Opus,
}

impl Codec {
    /// Sample rate of the PCM the pipeline exchanges with this codec.
    pub fn pcm_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 16000,
        }
    }

    /// RTP timestamp clock rate.
    pub fn rtp_clock(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// SDP media direction (RFC 3264), from our point of view once negotiated.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
    /// The direction we answer with when the peer offers `self` (RFC 3264 §6.1).
    pub fn answer_to(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }
    pub fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// A US telephone number (NANP: NXX-NXX-XXXX, N in 2..=9), the one rule every path uses: the
/// keypad entry, the spoken or typed number of the voice flow and the TTY/RTT conversation,
/// the caller ID offered for a text, and the outbox's recipient check. Neither the area code
/// nor the exchange may be an N11 service code (911, 411, ...). Before this type each of those
/// had its own rule, so a number the TTY conversation accepted could be refused by the outbox
/// after the caller confirmed it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UsPhone([u8; 10]);

impl UsPhone {
    /// From digits only: ten, or eleven with the country code 1 first.
    pub fn from_digits(digits: &str) -> Option<UsPhone> {
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let ten = match digits.len() {
            10 => digits,
            11 => digits.strip_prefix('1')?,
            _ => return None,
        };
        let b = ten.as_bytes();
        let plausible = |at: usize| b[at] >= b'2' && !(b[at + 1] == b'1' && b[at + 2] == b'1');
        if !(plausible(0) && plausible(3)) {
            return None;
        }
        let mut out = [0u8; 10];
        out.copy_from_slice(b);
        Some(UsPhone(out))
    }

    /// The ten national digits ("2025550123").
    pub fn national(&self) -> &str {
        // Only ASCII digits are ever stored (`from_digits`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// E.164 ("+12025550123"), as SMS providers take it.
    pub fn e164(&self) -> String {
        format!("+1{}", self.national())
    }
}

/// Redacted: a phone number is personal data.
impl fmt::Debug for UsPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UsPhone(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn us_phone_is_nanp_without_service_codes() {
        let p = UsPhone::from_digits("12025550123").unwrap();
        assert_eq!(p.national(), "2025550123");
        assert_eq!(p.e164(), "+12025550123");
        assert_eq!(UsPhone::from_digits("2025550123"), Some(p));
        for bad in [
            "",
            "202555012",
            "202555012345",
            "22025550123",
            "0205550123",
            "1205550123",
            "2020550123",
            "2021550123",
            "9115550123",
            "2024110123",
            "20255501a3",
        ] {
            assert_eq!(UsPhone::from_digits(bad), None, "{bad}");
        }
        assert_eq!(format!("{p:?}"), "UsPhone(<redacted>)");
    }
}
