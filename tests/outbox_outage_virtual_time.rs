//! The email provider is down for an hour, in virtual time: the real outbox store (SQLite) and
//! retry policy are driven by a clock the test advances from one due time to the next, and by a
//! provider that refuses every attempt until the hour is over. Every message is delivered
//! exactly once afterwards, none is given up, and the retries after the outage come back spread
//! out (jitter), not as one burst.

mod outbox_support;

use std::collections::HashMap;

use ivr::outbox::retry::Outcome;
use ivr::outbox::store::now_ms;
use ivr::outbox::{Channel, NewMessage, RetryPolicy, State, Store};
use ivr::pii::Pii;
use ivr::types::Lang;
use outbox_support::temp_dir;

const HOUR_MS: i64 = 3_600_000;
const MESSAGES: usize = 40;

#[test]
fn an_hour_of_smtp_outage_delivers_every_message_exactly_once_afterwards() {
    let dir = temp_dir("outage");
    let store = Store::open(&dir).unwrap();
    for n in 0..MESSAGES {
        store
            .enqueue_blocking(&NewMessage {
                call_id: format!("outage-call-{n}"),
                link_id: "case_status".into(),
                url: None,
                channel: Channel::Email,
                to: Pii::new(format!("caller{n}@example.com")),
                lang: Lang::En,
            })
            .unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policy = RetryPolicy::default();
    let start = now_ms() + 1;
    let back_at = start + HOUR_MS;
    let mut now = start;
    let mut delivered: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut attempts_during_outage = 0;
    let mut passes = 0;
    let backlog = rt.block_on(async {
        let mut backlog = Vec::new();
        loop {
            passes += 1;
            assert!(passes < 10_000, "no progress");
            let claimed = store.claim(&policy, now, 8, false).await.unwrap();
            backlog.push((now, claimed.queued));
            for m in &claimed.messages {
                // Each attempt takes the provider 30 s to refuse (a hung server, then timeout).
                let (outcome, done) = if now < back_at {
                    attempts_during_outage += 1;
                    (
                        Outcome::Transient("connection timed out".into()),
                        now + 30_000,
                    )
                } else {
                    delivered.entry(m.id).or_default().push(now);
                    (Outcome::Delivered, now + 200)
                };
                let t = policy.after_attempt_of(m.id, m.attempts, outcome, done);
                assert!(store.finish(m.id, m.attempts, t).await.unwrap());
            }
            if !claimed.messages.is_empty() {
                continue; // more may be due at this instant
            }
            match claimed.next_due_ms {
                Some(due) => now = due.max(now + 1),
                None => break,
            }
        }
        backlog
    });
    // Every message delivered exactly once, each after the provider came back.
    assert_eq!(delivered.len(), MESSAGES, "{delivered:?}");
    for (id, times) in &delivered {
        assert_eq!(times.len(), 1, "message {id} delivered {times:?}");
        assert!(times[0] >= back_at);
    }
    let states: Vec<State> = store
        .list(None, 1000)
        .unwrap()
        .into_iter()
        .map(|m| m.state)
        .collect();
    assert!(states.iter().all(|s| *s == State::Delivered), "{states:?}");
    // The schedule retried through the hour (5 s, 30 s, 2 min, 10 min, then the hourly one)
    // without giving up, and the backlog was visible the whole time.
    assert!(
        attempts_during_outage >= MESSAGES * 4,
        "{attempts_during_outage}"
    );
    assert!(
        backlog
            .iter()
            .filter(|(t, _)| *t < back_at)
            .all(|(_, q)| *q == MESSAGES as i64),
        "queued stays at {MESSAGES} during the outage"
    );
    // Jitter: the first deliveries after the outage are spread over minutes, not one instant.
    let mut firsts: Vec<i64> = delivered.values().map(|t| t[0]).collect();
    firsts.sort();
    let spread = firsts[firsts.len() - 1] - firsts[0];
    assert!(
        spread > 5 * 60_000,
        "deliveries spread over {spread} ms after the outage"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
