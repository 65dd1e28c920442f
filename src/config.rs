//! Server configuration: a documented default (the same values as `sip-configs/ivr.toml`),
//! parsed once by the binary into typed values the shell hands to the cores.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::Codec;

/// Everything `ivr serve` needs. `Config::default()` is the embedded default: it works on a fresh
/// checkout with no file at all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub calls: CallsConfig,
    pub admin: AdminConfig,
    pub paths: PathsConfig,
    pub tts: TtsConfig,
    pub routing: crate::routing::RoutingConfig,
    /// Links by SMS and email (`[outbox]`, `[outbox.smtp]`, `[outbox.sms]`).
    #[serde(skip_serializing)]
    pub outbox: crate::outbox::OutboxConfig,
    /// Speech recognition: recognizers per language, the worker pool, endpointing (`[asr]`).
    #[serde(skip_serializing)]
    pub asr: crate::asr::AsrConfig,
    /// Transfers when the trunk refuses REFER: the B2BUA bridge (`[transfer]`).
    #[serde(skip_serializing)]
    pub transfer: crate::server::bridge::BridgeConfig,
    /// RFC 4103 real-time text callers (`[rtt]`).
    #[serde(skip_serializing)]
    pub rtt: crate::server::rtt_session::RttConfig,
    /// Keyed number entry (`[entry]`).
    #[serde(skip_serializing)]
    pub entry: crate::flow::entry::EntryConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    pub listen: SocketAddr,
    pub public_ip: String,
    pub user_agent: String,
    pub max_message_bytes: usize,
    pub max_headers: usize,
    pub tty_number: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            public_ip: String::new(),
            user_agent: "ivr/0.1".into(),
            max_message_bytes: 65_535,
            max_headers: 128,
            tty_number: "8007671833".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    pub rtp_ports: PortRange,
    pub codecs: Vec<String>,
    pub ptime_ms: u32,
    pub rtp_timeout_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: PortRange {
                lo: 20000,
                hi: 29999,
            },
            codecs: vec!["PCMU".into(), "PCMA".into(), "opus".into()],
            ptime_ms: 20,
            rtp_timeout_secs: 30,
        }
    }
}

impl MediaConfig {
    /// The configured codecs, in preference order; unknown names are a config error.
    pub fn codec_list(&self) -> Result<Vec<Codec>, ConfigError> {
        self.codecs
            .iter()
            .map(|name| match name.to_ascii_lowercase().as_str() {
                "pcmu" => Ok(Codec::Pcmu),
                "pcma" => Ok(Codec::Pcma),
                "opus" => Ok(Codec::Opus),
                _ => Err(ConfigError(format!(
                    "media.codecs: unknown codec {name:?} (PCMU, PCMA, opus)"
                ))),
            })
            .collect()
    }

    pub fn rtp_timeout(&self) -> Duration {
        Duration::from_secs(self.rtp_timeout_secs)
    }
}

/// An inclusive UDP port range written `LO-HI`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn range(self) -> RangeInclusive<u16> {
        self.lo..=self.hi
    }
}

impl std::str::FromStr for PortRange {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || {
            ConfigError(format!(
                "port range {s:?}: expected LO-HI, e.g. 20000-29999"
            ))
        };
        let (lo, hi) = s.trim().split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        // RTP takes even ports and RTCP the odd one above, so a range needs two ports at least.
        if lo == 0 || hi <= lo {
            return Err(bad());
        }
        Ok(PortRange { lo, hi })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    pub max_concurrent: usize,
    pub retry_after_secs: u32,
    pub drain_timeout_secs: u64,
    pub no_input_timeout_secs: u64,
    pub max_retries: u32,
    /// Ring (180) this long before answering; 0 answers at once.
    pub answer_delay_ms: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            max_concurrent: 1200,
            retry_after_secs: 30,
            drain_timeout_secs: 60,
            no_input_timeout_secs: 6,
            max_retries: 3,
            answer_delay_ms: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    pub data_dir: PathBuf,
    pub prompts_dir: PathBuf,
    pub grammars_dir: PathBuf,
    /// Rendered speech (WAV per text+voice). Empty: `<data_dir>/tts-cache`.
    pub tts_cache_dir: PathBuf,
}

impl PathsConfig {
    pub fn tts_cache(&self) -> PathBuf {
        if self.tts_cache_dir.as_os_str().is_empty() {
            self.data_dir.join("tts-cache")
        } else {
            self.tts_cache_dir.clone()
        }
    }
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            data_dir: "data".into(),
            prompts_dir: "prompts".into(),
            grammars_dir: "grammars".into(),
            tts_cache_dir: PathBuf::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsConfig {
    pub voice_en: String,
    pub voice_es: String,
    pub speed: u32,
    /// Read-backs rendered on demand (`[tts.dynamic]`).
    #[serde(skip_serializing)]
    pub dynamic: crate::speech::dynamic::DynamicConfig,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            voice_en: "en-us".into(),
            voice_es: "es-419".into(),
            speed: 160,
            dynamic: Default::default(),
        }
    }
}

/// A configuration value that cannot be used, with the key it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parse a TOML config; missing keys take their defaults, unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.media.codec_list()?.is_empty() {
            return Err(ConfigError(
                "media.codecs: at least one codec is needed".into(),
            ));
        }
        if !(10..=60).contains(&self.media.ptime_ms) || self.media.ptime_ms % 10 != 0 {
            return Err(ConfigError(
                "media.ptime_ms: 10, 20, 30, 40, 50 or 60".into(),
            ));
        }
        if self.calls.max_concurrent == 0 {
            return Err(ConfigError(
                "calls.max_concurrent: must be at least 1".into(),
            ));
        }
        // A bad outbox config would otherwise stop the delivery worker after start, with the
        // server looking healthy and never delivering.
        self.outbox.validate().map_err(ConfigError)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_equals_embedded_default() {
        let text = include_str!("../sip-configs/ivr.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
    }

    #[test]
    fn port_ranges_parse_and_reject_nonsense() {
        assert_eq!(
            "20000-29999".parse::<PortRange>().unwrap(),
            PortRange {
                lo: 20000,
                hi: 29999
            }
        );
        assert!("29999-20000".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("abc".parse::<PortRange>().is_err());
    }

    #[test]
    fn unknown_keys_and_codecs_are_errors() {
        assert!(Config::from_toml("[sip]\nlisten_typo = \"1.2.3.4:5\"\n").is_err());
        let err = Config::from_toml("[media]\ncodecs = [\"G729\"]\n").unwrap_err();
        assert!(err.0.contains("G729"), "{err}");
    }
}
