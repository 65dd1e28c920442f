//! `[outbox]` in the server config. Every field has a default; with none set, email goes to a
//! local MTA on 127.0.0.1:25 without TLS and SMS is disabled (messages to phones wait `Pending`
//! until an SMS provider is configured, and show so in `ivr outbox list`).

use serde::Deserialize;

use super::retry::RetryPolicy;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    pub smtp: SmtpConfig,
    pub sms: SmsConfig,
    /// Waits after the 1st, 2nd, … failed attempt, in ms; the last repeats.
    /// Default 5 s, 30 s, 2 min, 10 min, 1 h.
    pub retry_backoff_ms: Vec<u64>,
    /// Attempts before a message is `Failed`. Default 8 (about 5 hours).
    pub max_attempts: u32,
    /// A `Sending` message whose worker vanished is retried after this. Default 2 min; must
    /// exceed the send timeouts.
    pub lease_ms: u64,
    /// How often the worker looks for due messages when nothing wakes it. Default 1 s.
    pub poll_ms: u64,
    /// Messages sent concurrently by one worker. Default 8.
    pub concurrency: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        let retry = RetryPolicy::default();
        OutboxConfig {
            smtp: SmtpConfig::default(),
            sms: SmsConfig::default(),
            retry_backoff_ms: retry.backoff_ms,
            max_attempts: retry.max_attempts,
            lease_ms: retry.lease_ms,
            poll_ms: 1_000,
            concurrency: 8,
        }
    }
}

impl OutboxConfig {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            backoff_ms: self.retry_backoff_ms.clone(),
            max_attempts: self.max_attempts.max(1),
            lease_ms: self.lease_ms,
        }
    }

    /// Parse the `[outbox]` table's contents (a TOML document whose top level is the table).
    pub fn from_toml(text: &str) -> Result<OutboxConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// Settings that would make every send fail or duplicate, refused before starting.
    pub fn validate(&self) -> Result<(), String> {
        let sms_ms = if self.sms.enabled {
            self.sms.timeout_ms
        } else {
            0
        };
        let send_ms = self.smtp.timeout_ms.max(sms_ms);
        if self.lease_ms <= send_ms {
            return Err(format!(
                "outbox.lease_ms ({}) must exceed the send timeouts ({send_ms} ms), or a slow \
                 send is sent again by another worker",
                self.lease_ms
            ));
        }
        if self.concurrency == 0 {
            return Err("outbox.concurrency must be at least 1".into());
        }
        if self.sms.enabled && !super::template::valid_url(&self.sms.url) {
            return Err(format!(
                "outbox.sms.url {:?} is not an http(s) URL",
                self.sms.url
            ));
        }
        if !matches!(self.sms.auth.as_str(), "none" | "basic" | "bearer") {
            return Err(format!(
                "outbox.sms.auth {:?}: use none, basic or bearer",
                self.sms.auth
            ));
        }
        if !matches!(self.smtp.tls.as_str(), "none" | "starttls" | "tls") {
            return Err(format!(
                "outbox.smtp.tls {:?}: use none, starttls or tls",
                self.smtp.tls
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Default 127.0.0.1.
    pub host: String,
    /// Default 25.
    pub port: u16,
    /// "none" (default; a local MTA), "starttls" (required, port 587) or "tls" (implicit, 465).
    pub tls: String,
    /// AUTH user; empty (default) = no authentication.
    pub user: String,
    pub password: String,
    /// Envelope and header sender. Default `USCIS Contact Center <no-reply@localhost.localdomain>`.
    pub from: String,
    /// Right-hand side of the `Message-ID`. Default `ivr.localdomain`.
    pub message_id_domain: String,
    /// Name sent in EHLO. Default `localhost`.
    pub helo_name: String,
    /// Whole-send timeout. Default 30 s.
    pub timeout_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            tls: "none".into(),
            user: String::new(),
            password: String::new(),
            from: "USCIS Contact Center <no-reply@localhost.localdomain>".into(),
            message_id_domain: "ivr.localdomain".into(),
            helo_name: "localhost".into(),
            timeout_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// Off by default: there is no universal SMS provider.
    pub enabled: bool,
    /// The provider's send endpoint, http:// or https://.
    pub url: String,
    /// "none" (default), "basic" (user + password) or "bearer" (token).
    pub auth: String,
    pub user: String,
    pub password: String,
    pub token: String,
    /// JSON body; `{to}` (E.164), `{body}` (the text) and `{key}` (idempotency key) are
    /// replaced by JSON-escaped values. The key is also sent as the `Idempotency-Key` header.
    pub body_template: String,
    /// Whole-request timeout. Default 30 s.
    pub timeout_ms: u64,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            enabled: false,
            url: String::new(),
            auth: "none".into(),
            user: String::new(),
            password: String::new(),
            token: String::new(),
            body_template: r#"{"to":"{to}","body":"{body}","idempotency_key":"{key}"}"#.into(),
            timeout_ms: 30_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_documented_default() {
        let c = OutboxConfig::from_toml("").unwrap();
        assert_eq!(c, OutboxConfig::default());
        assert_eq!((c.smtp.host.as_str(), c.smtp.port), ("127.0.0.1", 25));
        assert!(!c.sms.enabled);
        assert_eq!(c.retry_policy(), RetryPolicy::default());
        c.validate().unwrap();
    }

    #[test]
    fn sections_parse_and_unknown_keys_are_refused() {
        let c = OutboxConfig::from_toml(
            "max_attempts = 3\nretry_backoff_ms = [100]\n[smtp]\nport = 2525\ntls = \"starttls\"\n\
             [sms]\nenabled = true\nurl = \"https://sms.example/v1\"\nauth = \"bearer\"\ntoken = \"t\"\n",
        )
        .unwrap();
        assert_eq!(c.smtp.port, 2525);
        assert_eq!(c.retry_policy().backoff_ms, vec![100]);
        c.validate().unwrap();
        assert!(OutboxConfig::from_toml("[smtp]\nhots = \"x\"\n").is_err());
    }

    #[test]
    fn dangerous_settings_are_refused() {
        let mut c = OutboxConfig {
            lease_ms: 1_000,
            ..OutboxConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("lease_ms"));
        c.lease_ms = 60_000;
        c.sms.enabled = true;
        c.sms.url = "http://127.0.0.1:9/send".into();
        c.sms.timeout_ms = 90_000;
        assert!(
            c.validate().unwrap_err().contains("lease_ms"),
            "sms timeout counts"
        );
        c.sms.url = "sms.example".into();
        assert!(c.validate().is_err());
        c.sms.url = "http://127.0.0.1:9/send".into();
        c.sms.timeout_ms = 1_000;
        c.smtp.timeout_ms = 1_000;
        c.validate().unwrap();
        c.smtp.tls = "ssl".into();
        assert!(c.validate().is_err());
    }
}
