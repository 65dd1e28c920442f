//! The delivery worker: claims due messages (committing `Sending` with a lease before any byte
//! goes out), sends them concurrently, and records each outcome. Started by the server beside
//! the call tasks, or standalone by `ivr outbox deliver`; several workers (processes) may share
//! one database: a claim is a single IMMEDIATE transaction, so no message is claimed twice.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::OutboxConfig;
use super::retry::{Outcome, RetryPolicy};
use super::sms::SmsSender;
use super::smtp::SmtpSender;
use super::store::{Store, now_ms};
use super::{Channel, Message, State};

struct Senders {
    smtp: SmtpSender,
    sms: Option<SmsSender>,
}

impl Senders {
    fn new(config: &OutboxConfig) -> anyhow::Result<Senders> {
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(Senders {
            smtp: SmtpSender::new(&config.smtp).map_err(anyhow::Error::msg)?,
            sms: SmsSender::new(&config.sms).map_err(anyhow::Error::msg)?,
        })
    }

    async fn send(&self, msg: &Message) -> Outcome {
        match (msg.channel, &self.sms) {
            (Channel::Email, _) => self.smtp.send(msg).await,
            (Channel::Sms, Some(sms)) => sms.send(msg).await,
            // Not claimed while SMS is disabled; a race with a config change lands here.
            (Channel::Sms, None) => Outcome::Transient("sms disabled".into()),
        }
    }
}

/// Deliver until `shutdown` turns true, then finish the sends in flight and return. Errors only
/// on a bad config; database errors are logged and retried at the next poll.
pub async fn run_worker(
    store: Arc<Store>,
    config: OutboxConfig,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let senders = Arc::new(Senders::new(&config)?);
    let policy = config.retry_policy();
    let poll = Duration::from_millis(config.poll_ms.max(10));
    tracing::info!(db = %store.location(), sms = senders.sms.is_some(), "outbox worker started");
    while !*shutdown.borrow() {
        let wait = match pass(&store, &senders, &policy, config.concurrency, now_ms).await {
            // A full batch: more may be due right away.
            Ok(p) if p.claimed >= config.concurrency => Duration::ZERO,
            Ok(p) => p
                .next_due_ms
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64))
                .map_or(poll, |d| d.min(poll)),
            Err(e) => {
                tracing::warn!(error = %e, "outbox pass failed");
                poll
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = store.notify.notified() => {}
            changed = shutdown.changed() => {
                // The sender gone means nobody can ask us to stop any more: stop now rather
                // than spin on a channel that is always ready.
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    tracing::info!("outbox worker stopped");
    Ok(())
}

/// Deliver everything due now (retrying within this run only what comes due before the queue
/// is empty of due messages), then return how many were delivered. For `ivr outbox deliver
/// --once` and cron-style use.
pub async fn deliver_once(store: Arc<Store>, config: OutboxConfig) -> anyhow::Result<usize> {
    let senders = Arc::new(Senders::new(&config)?);
    let policy = config.retry_policy();
    let before = store.metrics.delivered_total.load(Relaxed);
    loop {
        let p = pass(&store, &senders, &policy, config.concurrency, now_ms).await?;
        if p.claimed == 0 {
            break;
        }
    }
    Ok((store.metrics.delivered_total.load(Relaxed) - before) as usize)
}

/// One delivery pass at `at_ms` (virtual time): claims what is due then, sends it with the real
/// senders, and schedules retries from `at_ms`. Returns how many were claimed and when the next
/// message comes due. For tests and simulations of long provider outages, where the clock is
/// advanced from one due time to the next instead of waited for.
pub async fn deliver_pass_at(
    store: &Arc<Store>,
    config: &OutboxConfig,
    at_ms: i64,
) -> anyhow::Result<(usize, Option<i64>)> {
    let senders = Arc::new(Senders::new(config)?);
    let policy = config.retry_policy();
    let clock = move || at_ms;
    let p = pass(store, &senders, &policy, config.concurrency, clock).await?;
    Ok((p.claimed, p.next_due_ms))
}

struct Pass {
    claimed: usize,
    next_due_ms: Option<i64>,
}

/// One claim and the sends it produced, all finished before returning. `now` is the clock the
/// claim and the retry schedule read (the wall clock, or a virtual one).
async fn pass(
    store: &Arc<Store>,
    senders: &Arc<Senders>,
    policy: &RetryPolicy,
    limit: usize,
    now: impl Fn() -> i64 + Copy + Send + 'static,
) -> anyhow::Result<Pass> {
    let claimed = store
        .claim(policy, now(), limit, senders.sms.is_some())
        .await?;
    let m = &store.metrics;
    m.queued.store(claimed.queued, Relaxed);
    m.failed_total.fetch_add(claimed.failed as u64, Relaxed);
    let n = claimed.messages.len();
    let mut sends = JoinSet::new();
    for msg in claimed.messages {
        let (store, senders, policy) = (store.clone(), senders.clone(), policy.clone());
        sends.spawn(async move {
            let outcome = senders.send(&msg).await;
            let t = policy.after_attempt_of(msg.id, msg.attempts, outcome, now());
            let m = &store.metrics;
            match t.state {
                State::Delivered => m.delivered_total.fetch_add(1, Relaxed),
                State::Failed => m.failed_total.fetch_add(1, Relaxed),
                _ => m.retries_total.fetch_add(1, Relaxed),
            };
            tracing::info!(
                id = msg.id,
                channel = %msg.channel,
                to = %msg.to,
                attempt = msg.attempts,
                state = %t.state,
                error = t.last_error.as_deref().unwrap_or(""),
                "outbox attempt"
            );
            match store.finish(msg.id, msg.attempts, t).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    id = msg.id,
                    "outbox lease lost before the outcome was recorded"
                ),
                Err(e) => tracing::warn!(id = msg.id, error = %e, "outbox outcome not recorded"),
            }
        });
    }
    while sends.join_next().await.is_some() {}
    Ok(Pass {
        claimed: n,
        next_due_ms: claimed.next_due_ms,
    })
}
