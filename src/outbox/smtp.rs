//! Email over SMTP with lettre (tokio, rustls + ring). The `Message-ID` is derived from the
//! idempotency key, so the copy resent after a crash is recognisably the same message.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::SmtpConfig;
use super::retry::Outcome;
use super::{Message, template};

/// `Content-Language`: tells the reader's mail client (and the tests) which language we wrote.
#[derive(Clone)]
struct ContentLanguage(String);

impl Header for ContentLanguage {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ContentLanguage(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    message_id_domain: String,
    /// Bound on the whole exchange: lettre's timeout is per socket operation, and a send must
    /// end within the lease or a second worker may send it too.
    timeout: Duration,
}

impl SmtpSender {
    pub fn new(config: &SmtpConfig) -> Result<SmtpSender, String> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("outbox.smtp.from {:?}: {e}", config.from))?;
        let tls = match config.tls.as_str() {
            "none" => Tls::None,
            mode => {
                let params = TlsParameters::new(config.host.clone())
                    .map_err(|e| format!("outbox.smtp TLS: {e}"))?;
                if mode == "tls" {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
                .port(config.port)
                .tls(tls)
                .hello_name(ClientId::Domain(config.helo_name.clone()))
                .timeout(Some(Duration::from_millis(config.timeout_ms)));
        if !config.user.is_empty() {
            builder = builder.credentials(Credentials::new(
                config.user.clone(),
                config.password.clone(),
            ));
        }
        Ok(SmtpSender {
            transport: builder.build(),
            from,
            message_id_domain: config.message_id_domain.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
        })
    }

    /// The email for `msg`; `Err` is permanent (a recipient lettre refuses will not improve).
    pub fn build(&self, msg: &Message) -> Result<lettre::Message, String> {
        let to: Mailbox = msg
            .to
            .expose()
            .parse()
            .map_err(|e| format!("recipient: {e}"))?;
        lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(msg.subject.clone())
            .message_id(Some(template::message_id(
                &msg.idempotency_key,
                &self.message_id_domain,
            )))
            .header(ContentType::TEXT_PLAIN)
            .header(ContentLanguage(msg.lang.code().to_string()))
            .body(msg.body.clone())
            .map_err(|e| format!("building email: {e}"))
    }

    pub async fn send(&self, msg: &Message) -> Outcome {
        let email = match self.build(msg) {
            Ok(e) => e,
            Err(e) => return Outcome::Permanent(e),
        };
        let sent = tokio::time::timeout(self.timeout, self.transport.send(email)).await;
        let Ok(sent) = sent else {
            return Outcome::Transient(format!("smtp: no answer within {:?}", self.timeout));
        };
        match sent {
            Ok(_) => Outcome::Delivered,
            // 5xx: the server refused this message for good (no such mailbox, policy).
            Err(e) if e.is_permanent() => Outcome::Permanent(format!("smtp: {e}")),
            Err(e) => Outcome::Transient(format!("smtp: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Channel, State};
    use crate::pii::Pii;
    use crate::types::Lang;

    #[test]
    fn email_carries_key_language_and_link() {
        let s = SmtpSender::new(&SmtpConfig::default()).unwrap();
        let msg = Message {
            id: 1,
            idempotency_key: "call-9:case_status:email".into(),
            call_id: "call-9".into(),
            channel: Channel::Email,
            to: Pii::new("jane@example.org".into()),
            lang: Lang::Es,
            link_id: "case_status".into(),
            url: "https://uscis.gov/casestatus".into(),
            subject: "USCIS: Consulte el estado de su caso".into(),
            body: "Consulte el estado de su caso: https://uscis.gov/casestatus\r\n".into(),
            state: State::Sending,
            attempts: 1,
            next_attempt_at_ms: 0,
            last_error: None,
            created_at_ms: 0,
            delivered_at_ms: None,
        };
        let text = String::from_utf8(s.build(&msg).unwrap().formatted()).unwrap();
        let id = template::message_id(&msg.idempotency_key, "ivr.localdomain");
        assert!(text.contains(&format!("Message-ID: {id}\r\n")), "{text}");
        assert!(text.contains("Content-Language: es\r\n"));
        assert!(text.contains("To: jane@example.org\r\n"));
        assert!(text.contains("https://uscis.gov/casestatus"));
    }

    #[test]
    fn bad_from_is_a_config_error() {
        let c = SmtpConfig {
            from: "not an address".into(),
            ..SmtpConfig::default()
        };
        assert!(SmtpSender::new(&c).is_err());
    }
}
