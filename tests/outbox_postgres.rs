//! The outbox shared in a real PostgreSQL (a throwaway cluster per test): two stores are two
//! nodes. Claiming concurrently they deliver each message exactly once (`FOR UPDATE SKIP
//! LOCKED` + leases); a message claimed by a node that then died is delivered by the other once
//! the lease expired, and the dead node's late finish is refused; an enqueue repeated on the
//! other node is the same message (idempotency key).

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::pg::PgCluster;
use ivr::outbox::retry::Outcome;
use ivr::outbox::store::now_ms;
use ivr::outbox::{Channel, NewMessage, RetryPolicy, State, Store, StoreError};
use ivr::pii::Pii;
use ivr::types::Lang;

fn message(call: &str, channel: Channel) -> NewMessage {
    NewMessage {
        call_id: call.into(),
        link_id: "case_status".into(),
        url: None,
        channel,
        to: Pii::new(match channel {
            Channel::Sms => "+12025550134".into(),
            Channel::Email => "caller@example.org".into(),
        }),
        lang: Lang::En,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn two_nodes_claiming_at_once_deliver_each_message_exactly_once() {
    let Some(pg) = PgCluster::start() else { return };
    let a = Arc::new(Store::open_postgres(&pg.url).unwrap());
    let b = Arc::new(Store::open_postgres(&pg.url).unwrap());
    const N: usize = 120;
    for i in 0..N {
        let channel = if i % 2 == 0 {
            Channel::Sms
        } else {
            Channel::Email
        };
        a.enqueue_blocking(&message(&format!("call-{i}"), channel))
            .unwrap();
    }
    let policy = RetryPolicy {
        lease_ms: 60_000,
        ..RetryPolicy::default()
    };
    let node = |store: Arc<Store>, policy: RetryPolicy| async move {
        let mut delivered = Vec::new();
        loop {
            let now = now_ms();
            let claimed = store.claim(&policy, now, 4, true).await.unwrap();
            if claimed.messages.is_empty() && claimed.queued == 0 {
                return delivered;
            }
            for m in claimed.messages {
                let t = policy.after_attempt(m.attempts, Outcome::Delivered, now_ms());
                assert!(store.finish(m.id, m.attempts, t).await.unwrap(), "ours");
                delivered.push(m.id);
            }
            tokio::task::yield_now().await;
        }
    };
    let rt = runtime();
    let (got_a, got_b) = rt.block_on(async {
        let ta = tokio::spawn(node(a.clone(), policy.clone()));
        let tb = tokio::spawn(node(b.clone(), policy.clone()));
        (ta.await.unwrap(), tb.await.unwrap())
    });
    println!(
        "node a delivered {}, node b delivered {}",
        got_a.len(),
        got_b.len()
    );
    let all: Vec<i64> = got_a.iter().chain(&got_b).copied().collect();
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), N, "each message delivered once, none twice");
    assert_eq!(unique.len(), N);
    let rows = b.list(None, 1000).unwrap();
    assert_eq!(rows.len(), N);
    assert!(
        rows.iter()
            .all(|m| m.state == State::Delivered && m.attempts == 1)
    );
    // Final rows keep only the redacted recipient.
    assert!(rows.iter().all(|m| !m.to.expose().contains("2025550134")));
}

#[test]
fn a_dead_nodes_claim_is_delivered_by_the_other_after_the_lease() {
    let Some(pg) = PgCluster::start() else { return };
    let a = Store::open_postgres(&pg.url).unwrap();
    let b = Store::open_postgres(&pg.url).unwrap();
    let queued = a
        .enqueue_blocking(&message("call-1", Channel::Sms))
        .unwrap();
    // The same link asked again on the other node is the same message.
    let again = b
        .enqueue_blocking(&message("call-1", Channel::Sms))
        .unwrap();
    assert_eq!(
        (again.id, &again.idempotency_key),
        (queued.id, &queued.idempotency_key)
    );
    let policy = RetryPolicy {
        lease_ms: 1_000,
        ..RetryPolicy::default()
    };
    let t0 = now_ms();
    let rt = runtime();
    rt.block_on(async {
        let mine = a.claim(&policy, t0, 10, true).await.unwrap();
        assert_eq!(mine.messages.len(), 1);
        assert_eq!(mine.messages[0].attempts, 1);
        // Node a dies here, mid-send. Within the lease node b leaves the row alone.
        let early = b.claim(&policy, t0 + 500, 10, true).await.unwrap();
        assert!(early.messages.is_empty(), "still leased to a");
        assert_eq!(early.queued, 1);
        // Past the lease: node b claims and delivers it, under the same key.
        let late = b.claim(&policy, t0 + 1_500, 10, true).await.unwrap();
        assert_eq!(late.messages.len(), 1);
        let m = &late.messages[0];
        assert_eq!((m.id, m.attempts), (queued.id, 2));
        assert_eq!(m.idempotency_key, queued.idempotency_key);
        let done = policy.after_attempt(2, Outcome::Delivered, t0 + 1_600);
        assert!(b.finish(m.id, 2, done).await.unwrap());
        // Node a's attempt, finishing late (it was not dead after all), is refused.
        let stale = policy.after_attempt(1, Outcome::Delivered, t0 + 1_700);
        assert!(!a.finish(m.id, 1, stale).await.unwrap());
    });
    let row = a.show(queued.id).unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (State::Delivered, 2));
    assert_eq!(a.list(None, 10).unwrap().len(), 1);
}

#[test]
fn an_enqueue_with_the_database_down_fails_instead_of_pretending() {
    let Some(pg) = PgCluster::start() else { return };
    let a = Store::open_postgres(&pg.url).unwrap();
    a.enqueue_blocking(&message("call-1", Channel::Email))
        .unwrap();
    pg.stop();
    let err = a
        .enqueue_blocking(&message("call-2", Channel::Email))
        .expect_err("nothing durable: the caller must not hear 'sent'");
    assert!(
        matches!(err, StoreError::Commit(_) | StoreError::Postgres(_)),
        "{err}"
    );
    pg.resume();
    let ok = a.enqueue_blocking(&message("call-2", Channel::Email));
    assert!(ok.is_ok(), "reconnects when the database is back: {ok:?}");
    assert_eq!(a.list(None, 10).unwrap().len(), 2);
}
