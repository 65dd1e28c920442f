//! Server configuration: a documented default (the same values as `sip-configs/ivr.toml`),
//! parsed once by the binary into typed values the shell hands to the cores.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sip::guard::{Cidr, GuardConfig, Untrusted};
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
    pub security: SecurityConfig,
    pub paths: PathsConfig,
    /// This server's name in shared storage (`[node]`).
    pub node: NodeConfig,
    /// Where call records and the outbox live (`[storage]`).
    pub storage: StorageConfig,
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
    pub transfer: BridgeConfig,
    /// RFC 4103 real-time text callers (`[rtt]`).
    #[serde(skip_serializing)]
    pub rtt: RttConfig,
    /// Keyed number entry (`[entry]`).
    #[serde(skip_serializing)]
    pub entry: crate::flow::entry::EntryConfig,
    /// Baudot TTY callers: the line's extra numbers and the conversation's timing (`[tty]`).
    #[serde(skip_serializing)]
    pub tty: crate::flow::tty::TtyConfig,
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
    /// SIP over TLS (RFC 3261 §26, rustls): the listen address ("" = TLS off) and the PEM
    /// certificate chain and private key it presents. All three or none.
    pub tls_listen: String,
    pub tls_cert: String,
    pub tls_key: String,
}

impl SipConfig {
    /// `tls_listen` parsed: None when TLS is off; an error for a bad address or a listen
    /// address without its certificate and key (a TLS listener cannot start without them).
    pub fn tls_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.tls_listen.is_empty() {
            return Ok(None);
        }
        let addr = self
            .tls_listen
            .parse()
            .map_err(|e| ConfigError(format!("sip.tls_listen {:?}: {e}", self.tls_listen)))?;
        if self.tls_cert.is_empty() || self.tls_key.is_empty() {
            return Err(ConfigError(
                "sip.tls_listen is set: sip.tls_cert and sip.tls_key (PEM files) are needed".into(),
            ));
        }
        Ok(Some(addr))
    }
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
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
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
    /// SRTP with SDES keys (RFC 4568): `off`, `optional` (default) or `required`.
    pub srtp: crate::sip::sdp::SrtpMode,
    /// The media threads send through io_uring (one submission per tick for all their calls);
    /// false, or a kernel that refuses io_uring: one `sendto` per packet.
    pub io_uring: bool,
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
            srtp: crate::sip::sdp::SrtpMode::Optional,
            io_uring: true,
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
    /// Refuse new calls (503 with Retry-After) while the runtime that runs SIP and the call
    /// tasks lags more than this (`ivr_scheduling_lag_ms`, `server::lag`): an overloaded box
    /// keeps serving the calls it has. 0: no limit.
    pub max_scheduling_lag_ms: u64,
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
            max_scheduling_lag_ms: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// A file holding the bearer token every endpoint but `/healthz` then requires. Empty: no
    /// token (allowed only on a loopback address).
    pub token_file: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_file: PathBuf::new(),
        }
    }
}

impl AdminConfig {
    /// The admin API serves call records: off loopback it must have a token.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.token_file.as_os_str().is_empty() && !self.listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "admin.listen = {} is not a loopback address and admin.token_file is not set: \
                 anyone who reaches that port would read call records. Set [admin] token_file \
                 (a file holding a bearer token) or listen on 127.0.0.1",
                self.listen
            )));
        }
        Ok(())
    }

    /// The bearer token from `token_file`, trimmed; `None` when no file is configured.
    pub fn read_token(&self) -> Result<Option<String>, ConfigError> {
        if self.token_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.token_file).map_err(|e| {
            ConfigError(format!(
                "admin.token_file {}: {e}",
                self.token_file.display()
            ))
        })?;
        let token = text.trim();
        if token.len() < 16 {
            return Err(ConfigError(format!(
                "admin.token_file {}: the token must be at least 16 characters",
                self.token_file.display()
            )));
        }
        Ok(Some(token.to_string()))
    }
}

/// `[node]`: which server wrote a call record. Records this node left `in_progress` (a crash)
/// are marked `interrupted` when it starts again, so names must differ between nodes that share
/// a database.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Empty: the host name.
    pub name: String,
}

impl NodeConfig {
    /// The configured name, else the host name, else "ivr".
    pub fn resolved(&self) -> String {
        if !self.name.trim().is_empty() {
            return self.name.trim().to_string();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "ivr".into())
    }
}

/// `[storage]`: call records and the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Empty: SQLite files in `paths.data_dir` (the embedded default). `postgres://...`: call
    /// records and the outbox in that PostgreSQL database, shared by every node.
    pub url: String,
    /// Call records held in memory while storage cannot be written; past it the oldest are
    /// dropped (and counted in `ivr_store_dropped_records_total`).
    pub backlog_records_max: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: String::new(),
            backlog_records_max: 10_000,
        }
    }
}

/// Who may send SIP, and the defence against scanners and floods (`[security]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Networks that may send SIP (trunks, SBCs, the proxy), v4 and v6.
    pub trusted: Vec<Cidr>,
    /// SIP from elsewhere: `drop` (no reply) or `reject` (403).
    pub untrusted: Untrusted,
    /// Requests whose User-Agent contains one of these (any case) are dropped without a reply.
    pub scanner_user_agents: Vec<String>,
    /// Per source address: messages per second on average (0: no limit), at once, and how long
    /// a source that exceeds them is ignored.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    pub ban_secs: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        let g = GuardConfig::default();
        SecurityConfig {
            trusted: g.trusted,
            untrusted: g.untrusted,
            scanner_user_agents: g.scanner_user_agents,
            rate_limit_per_sec: g.rate_per_sec,
            rate_limit_burst: g.burst,
            ban_secs: g.ban.as_secs(),
        }
    }
}

impl SecurityConfig {
    pub fn guard_config(&self) -> GuardConfig {
        GuardConfig {
            trusted: self.trusted.clone(),
            untrusted: self.untrusted,
            scanner_user_agents: self.scanner_user_agents.clone(),
            rate_per_sec: self.rate_limit_per_sec,
            burst: self.rate_limit_burst,
            ban: Duration::from_secs(self.ban_secs),
            ..GuardConfig::default()
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
    /// Prompts rendered when the package was built (`ivr cache-prompts`), read-only, looked up
    /// after `tts_cache_dir` and before rendering: a first start on a fresh data dir renders
    /// nothing the package already has. Empty: none.
    pub tts_seed_dir: PathBuf,
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
            tts_seed_dir: PathBuf::new(),
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
    /// The TTY conversation's settings, with `[sip] tty_number` among the line's numbers.
    pub fn tty_line(&self) -> crate::flow::tty::TtyConfig {
        let mut tty = self.tty.clone();
        if !self.sip.tty_number.is_empty() && !tty.numbers.contains(&self.sip.tty_number) {
            tty.numbers.push(self.sip.tty_number.clone());
        }
        tty
    }

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
        if self.security.rate_limit_per_sec > 0 && self.security.rate_limit_burst == 0 {
            return Err(ConfigError(
                "security.rate_limit_burst: must be at least 1 when rate_limit_per_sec is set"
                    .into(),
            ));
        }
        let url = self.storage.url.trim();
        if !url.is_empty() && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(ConfigError(
                "storage.url: empty (SQLite in paths.data_dir) or postgres://...".into(),
            ));
        }
        if self.storage.backlog_records_max == 0 {
            return Err(ConfigError(
                "storage.backlog_records_max: must be at least 1".into(),
            ));
        }
        self.sip.tls_listen_addr()?;
        // A bad outbox config would otherwise stop the delivery worker after start, with the
        // server looking healthy and never delivering.
        self.outbox.validate().map_err(ConfigError)?;
        Ok(())
    }
}
/// `[transfer]` and `[rtt]`: the call core's settings (`ivr-core`), read from the config here.
pub use ivr_core::call::{rtt::RttConfig, transfer::BridgeConfig};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_equals_embedded_default() {
        let text = include_str!("../sip-configs/ivr.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
    }

    /// `[tty]` is read (issue #13: it was never loaded; every TTY call ran on the defaults), and
    /// `sip.tty_number` stays one of the line's numbers.
    #[test]
    fn tty_settings_are_read_and_keep_the_sip_tty_number() {
        let cfg = Config::from_toml(
            "[tty]\npause_ms = 1500\nline_chars = 32\nnumbers = [\"+1 800 555 0100\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.tty.pause_ms, 1500);
        let line = cfg.tty_line();
        assert_eq!(line.line_chars, 32);
        assert!(line.is_tty_number("8005550100"));
        assert!(line.is_tty_number("8007671833"), "{:?}", line.numbers);
        assert!(!line.is_tty_number("8005550199"));
        assert!(
            Config::from_toml("[tty]\npause = 1\n").is_err(),
            "unknown keys are errors"
        );
    }

    #[test]
    fn tls_listen_needs_cert_and_key() {
        assert_eq!(Config::default().sip.tls_listen_addr().unwrap(), None);
        assert!(Config::from_toml("[sip]\ntls_listen = \"127.0.0.1:5061\"\n").is_err());
        assert!(
            Config::from_toml("[sip]\ntls_listen = \"nope\"\ntls_cert = \"c\"\ntls_key = \"k\"\n")
                .is_err()
        );
        let cfg = Config::from_toml(
            "[sip]\ntls_listen = \"127.0.0.1:5061\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            cfg.sip.tls_listen_addr().unwrap(),
            Some(SocketAddr::from(([127, 0, 0, 1], 5061)))
        );
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

    #[test]
    fn security_section_parses_cidrs_and_modes() {
        let cfg = Config::from_toml(
            "[security]\ntrusted = [\"192.0.2.0/24\", \"2001:db8::/32\", \"198.51.100.7\"]\n\
             untrusted = \"reject\"\nrate_limit_per_sec = 50\nrate_limit_burst = 100\nban_secs = 5\n",
        )
        .unwrap();
        let guard = cfg.security.guard_config();
        assert_eq!(guard.trusted.len(), 3);
        assert_eq!(guard.untrusted, Untrusted::Reject);
        assert_eq!((guard.rate_per_sec, guard.burst), (50, 100));
        assert_eq!(guard.ban, Duration::from_secs(5));
        assert!(guard.trusted[2].contains("198.51.100.7".parse().unwrap()));
        for bad in [
            "[security]\ntrusted = [\"10.0.0.0/33\"]\n",
            "[security]\ntrusted = [\"example.com\"]\n",
            "[security]\nuntrusted = \"ignore\"\n",
            "[security]\nrate_limit_burst = 0\n",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
        let err = Config::from_toml("[security]\ntrusted = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.0.contains("security.trusted"), "{err}");
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        let mut admin = AdminConfig::default();
        admin.check_exposure().unwrap();
        admin.listen = "0.0.0.0:8080".parse().unwrap();
        let err = admin.check_exposure().unwrap_err();
        assert!(err.0.contains("token_file"), "{err}");
        admin.listen = "[::]:8080".parse().unwrap();
        assert!(admin.check_exposure().is_err());
        admin.listen = "[::1]:8080".parse().unwrap();
        admin.check_exposure().unwrap();
        admin.listen = "0.0.0.0:8080".parse().unwrap();
        admin.token_file = "/etc/ivr/admin-token".into();
        admin.check_exposure().unwrap();
    }

    #[test]
    fn admin_tokens_are_read_trimmed_and_must_be_long() {
        let dir = std::env::temp_dir().join(format!("ivr-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let mut admin = AdminConfig::default();
        assert_eq!(admin.read_token().unwrap(), None);
        admin.token_file = path.clone();
        assert!(admin.read_token().is_err(), "a missing file is an error");
        std::fs::write(&path, "short\n").unwrap();
        assert!(admin.read_token().is_err());
        std::fs::write(&path, "  0123456789abcdef0123\n").unwrap();
        assert_eq!(
            admin.read_token().unwrap().as_deref(),
            Some("0123456789abcdef0123")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
