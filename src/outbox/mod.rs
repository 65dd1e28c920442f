//! The outbox: links sent by SMS or email, written durably before the caller hears "sent",
//! delivered with retries, exactly once across crashes.
//!
//! Split like the rest of the product, a pure core and a thin shell:
//! - pure (no IO, time passed in as unix milliseconds): [`recipient`] validation, [`template`]
//!   texts per language, [`retry`] backoff schedule and state transitions, [`config`];
//! - shell: [`store`] (SQLite `<data_dir>/outbox.sqlite3`, WAL, `synchronous=FULL`, one writer
//!   thread with group commit), [`worker`] (the tokio delivery task), senders [`smtp`] (lettre)
//!   and [`sms`] (HTTP POST over a minimal HTTP/1.1 client, [`http`]).
//!
//! Time in the core is unix milliseconds, not `Instant`: a retry time must survive a restart,
//! and an `Instant` means nothing to the next process.
//!
//! Exactly once on the wire: before an attempt the worker commits `Sending` with a lease; a
//! crash leaves the row `Sending`, and once the lease expires another worker retries it. The
//! only window that can send twice is between the provider's acceptance and the `Delivered`
//! commit (one fsync); for it the provider receives the idempotency key (SMTP `Message-ID`
//! derived from it, SMS `Idempotency-Key` header and `{key}` in the body) so a provider that
//! deduplicates closes it entirely.

pub mod config;
pub mod http;
pub mod metrics;
pub mod recipient;
pub mod retry;
pub mod sms;
pub mod smtp;
pub mod store;
pub mod store_pg;
pub mod template;
pub mod worker;

use std::fmt;

use serde::Serialize;

use crate::pii::Pii;
use crate::types::Lang;

pub use config::OutboxConfig;
pub use metrics::OutboxMetrics;
pub use recipient::RecipientError;
pub use retry::RetryPolicy;
pub use store::{Consent, ConsentHow, ConsentRecord, NewMessage, Store, StoreError};
pub use worker::{deliver_pass_at, run_worker};

/// How a link reaches the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "sms" => Some(Channel::Sms),
            "email" => Some(Channel::Email),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a message is in its life. `Delivered` and `Failed` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for `next_attempt_at_ms`.
    Pending,
    /// Claimed by a worker until its lease (`next_attempt_at_ms`) expires.
    Sending,
    Delivered,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Sending => "sending",
            State::Delivered => "delivered",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        match s {
            "pending" => Some(State::Pending),
            "sending" => Some(State::Sending),
            "delivered" => Some(State::Delivered),
            "failed" => Some(State::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One queued link, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub id: i64,
    /// `call_id:link_id:channel`; UNIQUE in the store, handed to the provider.
    pub idempotency_key: String,
    pub call_id: String,
    pub channel: Channel,
    /// Normalized recipient (`+12025550134` or `name@example.org`).
    pub to: Pii<String>,
    pub lang: Lang,
    pub link_id: String,
    pub url: String,
    pub subject: String,
    pub body: String,
    pub state: State,
    pub attempts: u32,
    /// When `Pending`: the earliest next attempt. When `Sending`: the lease expiry.
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

impl Message {
    /// The message as `ivr outbox list|show` prints it: recipient redacted.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "call_id": self.call_id,
            "channel": self.channel,
            "to": self.to.redacted(),
            "lang": self.lang,
            "link_id": self.link_id,
            "url": self.url,
            "subject": self.subject,
            "body": self.body,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at_ms": self.next_attempt_at_ms,
            "last_error": self.last_error,
            "created_at_ms": self.created_at_ms,
            "delivered_at_ms": self.delivered_at_ms,
        })
    }
}

/// The idempotency key of a (call, link, channel): one message per triple, ever.
pub fn idempotency_key(call_id: &str, link_id: &str, channel: Channel) -> String {
    format!("{call_id}:{link_id}:{channel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [Channel::Sms, Channel::Email] {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        for s in [
            State::Pending,
            State::Sending,
            State::Delivered,
            State::Failed,
        ] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("sent"), None);
        assert_eq!(Channel::parse("fax"), None);
    }

    #[test]
    fn key_names_call_link_and_channel() {
        let a = idempotency_key("c1", "case_status", Channel::Sms);
        let b = idempotency_key("c1", "case_status", Channel::Email);
        assert_ne!(a, b);
        assert_eq!(a, "c1:case_status:sms");
    }
}
