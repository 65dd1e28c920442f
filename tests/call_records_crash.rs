//! Call records survive kill -9: a record exists from the answer and is updated as the call
//! goes. Twenty calls are up (nineteen SIPp callers listening, one caller who keyed their way to
//! a link and asked for it by text message while the SMS provider is down), the server is killed
//! with SIGKILL and restarted on the same data directory: `GET /calls` then holds exactly those
//! twenty calls, every one `interrupted`, with what was known (the prompts played, the link
//! queued), and the outbox holds the same one message, undelivered, under the same key.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const LISTENERS: usize = 19;

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn calls(server: &Server) -> Vec<serde_json::Value> {
    let (status, body) = server.get("/calls?limit=100");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The keys of tests/outbox_kill9_call.rs (English, case status, the link by text message,
/// confirm), then a long silence: the call is still up when the server is killed.
fn caller_asks_for_the_link_by_sms(server: &Server) -> (String, std::thread::JoinHandle<()>) {
    let audio = sms_link_keys(40);
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let call_id = uac.call_id.clone();
    // The server is killed long before this ends; the thread is left to finish on its own.
    let sender = std::thread::spawn(move || {
        uac.send_pcmu(Uac::remote_rtp(&ok), &audio, 1, 0);
    });
    (call_id, sender)
}

/// What must not change in an outbox row across the kill (attempts may grow: the provider is
/// down and the restarted worker retries).
fn outbox_identity(rows: &[serde_json::Value]) -> Vec<(String, String, String, String)> {
    rows.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (s("id"), s("idempotency_key"), s("call_id"), s("channel"))
        })
        .collect()
}

#[test]
fn twenty_calls_up_at_kill_9_are_interrupted_after_restart() {
    require("sipp");
    require("sox");
    let provider_port = free_port();
    let mut server = Server::start(ServerOptions {
        rtp_timeout_secs: 120,
        no_input_timeout_secs: 60,
        extra_toml: format!(
            "[node]\nname = \"node-k\"\n\
             [outbox]\nretry_backoff_ms = [200]\nmax_attempts = 200\nlease_ms = 3000\npoll_ms = 50\n\
             [outbox.sms]\nenabled = true\nurl = \"http://127.0.0.1:{provider_port}/v1/messages\"\n\
             timeout_ms = 1000\n[outbox.smtp]\ntimeout_ms = 1000\n"
        ),
        ..ServerOptions::default()
    });
    let (sms_call, _sender) = caller_asks_for_the_link_by_sms(&server);

    let dir = temp_dir("crash-sipp");
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(repo().join("sip-configs/sipp/uac_listen.xml"))
        .args(["-s", "ivr", "-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .args(["-m", &LISTENERS.to_string(), "-l", &LISTENERS.to_string()])
        .args(["-r", "10", "-d", "90000", "-timeout", "100s", "-bg"])
        .arg(server.sip.to_string())
        .current_dir(&dir)
        .output()
        .expect("run sipp");
    let sipp_pid: Option<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok());

    // All twenty up, each record already updated past the answer (prompts played), and the
    // link stored (the caller is hearing "sent").
    let before = wait_until("20 calls in progress", Duration::from_secs(40), || {
        let rows = calls(&server);
        let live = rows
            .iter()
            .filter(|r| {
                r["outcome"] == "in_progress"
                    && r["prompts"].as_array().is_some_and(|p| !p.is_empty())
            })
            .count();
        let link = rows.iter().any(|r| {
            r["call_id"] == sms_call.as_str() && r["actions"].to_string().contains("send_link:sms")
        });
        (live == 20 && link).then_some(rows)
    });
    assert_eq!(before.len(), 20, "{before:#?}");
    assert!(
        before
            .iter()
            .all(|r| r["node"] == "node-k" && r["ended_at"].is_null())
    );
    let outbox_before = outbox_list(&server.data_dir);
    assert_eq!(outbox_before.len(), 1, "{outbox_before:?}");

    server.kill9();
    if let Some(pid) = sipp_pid {
        unsafe_kill(pid, "KILL");
    }
    let server = server.restart();

    let after = wait_until("20 interrupted records", Duration::from_secs(20), || {
        let rows = calls(&server);
        (rows.iter().all(|r| r["outcome"] == "interrupted")).then_some(rows)
    });
    assert_eq!(after.len(), 20, "exactly the twenty calls: {after:#?}");
    let mut ids_before: Vec<&str> = before
        .iter()
        .filter_map(|r| r["call_id"].as_str())
        .collect();
    let mut ids_after: Vec<&str> = after.iter().filter_map(|r| r["call_id"].as_str()).collect();
    ids_before.sort();
    ids_after.sort();
    assert_eq!(ids_before, ids_after);
    for r in &after {
        assert_eq!(r["node"], "node-k");
        assert_eq!(r["end_reason"], "interrupted");
        let prompts = r["prompts"].to_string();
        assert!(
            prompts.contains("en:greeting") || prompts.contains("es:greeting"),
            "{r}"
        );
    }
    let sms = after
        .iter()
        .find(|r| r["call_id"] == sms_call.as_str())
        .expect("the SMS caller's record");
    assert!(
        sms["actions"].to_string().contains("send_link:sms"),
        "{sms}"
    );
    assert_eq!(sms["intent"], "case_status", "{sms}");

    // The outbox: the same one message under the same key, not delivered (provider down).
    let outbox_after = outbox_list(&server.data_dir);
    assert_eq!(
        outbox_identity(&outbox_after),
        outbox_identity(&outbox_before)
    );
    assert_ne!(outbox_after[0]["state"], "delivered");
    let log = server.log_text();
    assert!(
        log.contains("marked interrupted"),
        "the restart says what it did:\n{log}"
    );
}
