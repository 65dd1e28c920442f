//! SMS through an HTTP provider: a JSON POST built from the configured template, with the
//! idempotency key in an `Idempotency-Key` header (and `{key}` in the body) so a provider that
//! deduplicates turns our at-least-once retry after a crash into exactly once.

use std::time::Duration;

use tokio_rustls::TlsConnector;

use super::config::SmsConfig;
use super::http::{self, Target};
use super::retry::Outcome;
use super::{Message, template};

pub struct SmsSender {
    config: SmsConfig,
    target: Target,
    tls: Option<TlsConnector>,
    auth: Option<String>,
}

impl SmsSender {
    /// `None` when SMS is disabled. Errors name the bad setting.
    pub fn new(config: &SmsConfig) -> Result<Option<SmsSender>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let target = http::parse_url(&config.url)
            .map_err(|_| format!("outbox.sms.url {:?} is not an http(s) URL", config.url))?;
        let tls = if target.tls {
            Some(http::tls_connector().map_err(|e| e.to_string())?)
        } else {
            None
        };
        let auth = match config.auth.as_str() {
            "basic" => Some(format!(
                "Basic {}",
                template::base64(format!("{}:{}", config.user, config.password).as_bytes())
            )),
            "bearer" => Some(format!("Bearer {}", config.token)),
            _ => None,
        };
        Ok(Some(SmsSender {
            config: config.clone(),
            target,
            tls,
            auth,
        }))
    }

    pub async fn send(&self, msg: &Message) -> Outcome {
        let body = template::render_sms_body(
            &self.config.body_template,
            msg.to.expose(),
            &msg.body,
            &msg.idempotency_key,
        );
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Idempotency-Key", msg.idempotency_key.as_str()),
        ];
        if let Some(a) = &self.auth {
            headers.push(("Authorization", a.as_str()));
        }
        let timeout = Duration::from_millis(self.config.timeout_ms);
        match http::post(
            &self.target,
            self.tls.as_ref(),
            &headers,
            body.as_bytes(),
            timeout,
        )
        .await
        {
            Ok(status) => classify(status),
            Err(e) => Outcome::Transient(format!("sms provider: {e}")),
        }
    }
}

/// 2xx accepted; 408/425/429 and 5xx are worth retrying; any other answer will not change.
pub fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 425 | 429 | 500..=599 => Outcome::Transient(format!("sms provider: HTTP {status}")),
        _ => Outcome::Permanent(format!("sms provider: HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify() {
        assert_eq!(classify(202), Outcome::Delivered);
        assert!(matches!(classify(503), Outcome::Transient(_)));
        assert!(matches!(classify(429), Outcome::Transient(_)));
        assert!(matches!(classify(400), Outcome::Permanent(_)));
        assert!(matches!(classify(301), Outcome::Permanent(_)));
    }

    #[test]
    fn disabled_or_bad_config() {
        assert!(SmsSender::new(&SmsConfig::default()).unwrap().is_none());
        let bad = SmsConfig {
            enabled: true,
            url: "nope".into(),
            ..SmsConfig::default()
        };
        assert!(SmsSender::new(&bad).is_err());
        let basic = SmsConfig {
            enabled: true,
            url: "http://127.0.0.1:1/s".into(),
            auth: "basic".into(),
            user: "Aladdin".into(),
            password: "open sesame".into(),
            ..SmsConfig::default()
        };
        let s = SmsSender::new(&basic).unwrap().unwrap();
        assert_eq!(
            s.auth.as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
    }
}
