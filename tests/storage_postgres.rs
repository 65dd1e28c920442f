//! Call records in a real PostgreSQL (a throwaway cluster per test, `scripts/pg-throwaway`):
//! the backend keeps the contract the SQLite one keeps (the same test function); a database
//! that goes down mid-run only grows the in-memory backlog, written when it is back; and a
//! call answered by node A is read through node B's admin API.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::PgCluster;
use common::*;
use ivr::server::store::testing::{backend_contract, record};
use ivr::server::store::{Backend, IN_PROGRESS, Store, StoreOptions};
use ivr::server::store_pg::Postgres;

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn postgres_keeps_the_backend_contract() {
    let Some(pg) = PgCluster::start() else { return };
    let backend = Postgres::new(&pg.url).unwrap();
    backend_contract(&backend);
    // A second backend (another node starting) finds the schema applied: no error, same rows.
    let other = Postgres::new(&pg.url).unwrap();
    assert_eq!(other.recent(10).unwrap().len(), 3);
}

#[test]
fn records_wait_in_memory_while_the_database_is_down() {
    let Some(pg) = PgCluster::start() else { return };
    let backend = Arc::new(Postgres::new(&pg.url).unwrap());
    let store = Store::start(
        backend.clone(),
        StoreOptions {
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_millis(300),
            ..StoreOptions::new("node-a")
        },
    );
    store.save(record("before@h", "2026-01-01T00:00:00.000Z"));
    store.flush();
    assert_eq!(store.stats().backlog(), 0);

    pg.stop();
    for i in 0..3 {
        store.save(record(
            &format!("down{i}@h"),
            &format!("2026-01-01T00:00:0{}.000Z", i + 1),
        ));
    }
    wait_for("failed writes", Duration::from_secs(20), || {
        store.stats().write_errors() >= 2
    });
    assert!(store.stats().failing());
    assert_eq!(store.stats().backlog(), 3);
    // The node still answers for the queued records.
    assert_eq!(
        store.call("down1@h").unwrap().unwrap().outcome.as_deref(),
        Some(IN_PROGRESS)
    );

    pg.resume();
    wait_for("the backlog written", Duration::from_secs(20), || {
        store.stats().backlog() == 0
    });
    assert!(!store.stats().failing());
    let fresh = Postgres::new(&pg.url).unwrap();
    for i in 0..3 {
        let r = fresh.call(&format!("down{i}@h")).unwrap().expect("written");
        assert_eq!(r.node, "node-a");
    }
    assert_eq!(store.stats().dropped(), 0);
}

fn short_call(server: &Server) -> String {
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    assert_eq!(ok.status(), Some(200), "answered");
    uac.send_pcmu(Uac::remote_rtp(&ok), &vec![0i16; 8000], 1, 0);
    uac.request("BYE", "", true);
    let _ = uac.recv(Duration::from_secs(2));
    uac.call_id.clone()
}

#[test]
fn a_call_answered_by_node_a_is_read_through_node_b() {
    let Some(pg) = PgCluster::start() else { return };
    let node = |name: &str| {
        Server::start(ServerOptions {
            extra_toml: format!(
                "[node]\nname = \"{name}\"\n[storage]\nurl = \"{}\"\n",
                pg.url
            ),
            ..ServerOptions::default()
        })
    };
    let a = node("node-a");
    let b = node("node-b");
    let call_id = short_call(&a);
    a.ended_call(&call_id, Duration::from_secs(20));
    // Through B: B's backlog never held this call, so the row comes from the database.
    let record = b.ended_call(&call_id, Duration::from_secs(20));
    assert_eq!(record["node"], "node-a", "{record}");
    assert_eq!(record["end_reason"], "caller_bye", "{record}");
    assert!(
        record["prompts"].to_string().contains("greeting"),
        "{record}"
    );
    let (status, body) = b.get("/calls?limit=10");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["call_id"] == call_id.as_str()),
        "{list}"
    );
    assert_eq!(b.metric("ivr_store_backlog_records"), 0);
    assert_eq!(a.metric("ivr_store_write_errors_total"), 0);
}
