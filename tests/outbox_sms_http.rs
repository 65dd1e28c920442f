//! An HTTP server started by the test (the SMS provider) receives the SMS request: the JSON
//! body from the template, the idempotency key as a header, the configured auth. A 503 is
//! retried with the same key; a 400 is final.

mod outbox_support;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivr::outbox::{Channel, NewMessage, OutboxConfig, State, Store, run_worker};
use ivr::pii::Pii;
use ivr::types::Lang;
use outbox_support::*;

#[derive(Clone, Debug)]
struct Request {
    head: String,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// A one-thread HTTP/1.1 server answering each request with the next scripted status (200
/// once the script is used up) and recording what it received. It does not deduplicate.
struct Provider {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Provider {
    fn start(script: &[u16]) -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let mut script: VecDeque<u16> = script.iter().copied().collect();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let Ok(n) = conn.read(&mut buf) else {
                        break (None, None);
                    };
                    if n == 0 {
                        break (None, None);
                    }
                    data.extend_from_slice(&buf[..n]);
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if data.len() >= end + 4 + len {
                        let body = String::from_utf8_lossy(&data[end + 4..end + 4 + len]);
                        break (Some(head), Some(body.to_string()));
                    }
                };
                let (Some(head), Some(body)) = (head, body) else {
                    continue;
                };
                seen.lock().unwrap().push(Request { head, body });
                let status = script.pop_front().unwrap_or(200);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
            }
        });
        Provider { port, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn sms(call_id: &str, to: &str, lang: Lang) -> NewMessage {
    NewMessage {
        call_id: call_id.into(),
        link_id: "case_status".into(),
        url: None,
        channel: Channel::Sms,
        to: Pii::new(to.into()),
        lang,
    }
}

fn config(provider_port: u16) -> OutboxConfig {
    let mut c = fast_config(free_port());
    c.sms.enabled = true;
    c.sms.url = format!("http://127.0.0.1:{provider_port}/v1/messages");
    c.sms.auth = "bearer".into();
    c.sms.token = "test-token".into();
    c
}

/// Run a worker until every message is final, then stop it.
fn deliver_all(store: &Arc<Store>, config: OutboxConfig) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = rt.spawn(run_worker(store.clone(), config, stopped));
    wait_for("every message final", Duration::from_secs(20), || {
        let all = store.list(None, 100).unwrap();
        all.iter()
            .all(|m| matches!(m.state, State::Delivered | State::Failed))
            .then_some(())
    });
    stop.send(true).unwrap();
    rt.block_on(worker).unwrap().unwrap();
}

#[test]
fn provider_receives_the_sms_request() {
    let dir = temp_dir("outbox-sms");
    let provider = Provider::start(&[]);
    let store = Arc::new(Store::open(&dir).unwrap());
    let m = store
        .enqueue_blocking(&sms("call-7", "(202) 555-0134", Lang::Es))
        .unwrap();
    deliver_all(&store, config(provider.port));

    let reqs = provider.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let r = &reqs[0];
    assert!(
        r.head.starts_with("POST /v1/messages HTTP/1.1\r\n"),
        "{}",
        r.head
    );
    assert_eq!(
        r.header("Idempotency-Key").as_deref(),
        Some("call-7:case_status:sms")
    );
    assert_eq!(
        r.header("Authorization").as_deref(),
        Some("Bearer test-token")
    );
    assert_eq!(
        r.header("Content-Type").as_deref(),
        Some("application/json")
    );
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json["to"], "+12025550134");
    assert_eq!(
        json["body"],
        "USCIS: Consulte el estado de su caso en https://uscis.gov/casestatus"
    );
    assert_eq!(json["idempotency_key"], "call-7:case_status:sms");

    let done = store.show(m.id).unwrap().unwrap();
    assert_eq!((done.state, done.attempts), (State::Delivered, 1));
    assert!(done.delivered_at_ms.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn server_error_is_retried_with_the_same_key_and_client_error_is_final() {
    let dir = temp_dir("outbox-sms-retry");
    // The worker sends concurrently, so which message meets which status is not fixed: one
    // message only per provider.
    let flaky = Provider::start(&[503, 503]);
    let store = Arc::new(Store::open(&dir.join("a")).unwrap());
    let m = store
        .enqueue_blocking(&sms("call-8", "2025550177", Lang::En))
        .unwrap();
    deliver_all(&store, config(flaky.port));
    let reqs = flaky.requests();
    assert_eq!(reqs.len(), 3, "two 503s then 200: {reqs:#?}");
    assert!(
        reqs.iter()
            .all(|r| r.header("Idempotency-Key").as_deref() == Some("call-8:case_status:sms"))
    );
    let done = store.show(m.id).unwrap().unwrap();
    assert_eq!((done.state, done.attempts), (State::Delivered, 3));
    assert!(
        store
            .metrics
            .render()
            .contains("ivr_outbox_retries_total 2\n")
    );

    let refusing = Provider::start(&[400]);
    let store = Arc::new(Store::open(&dir.join("b")).unwrap());
    let m = store
        .enqueue_blocking(&sms("call-9", "2025550188", Lang::En))
        .unwrap();
    deliver_all(&store, config(refusing.port));
    assert_eq!(refusing.requests().len(), 1, "a 400 is not retried");
    let done = store.show(m.id).unwrap().unwrap();
    assert_eq!((done.state, done.attempts), (State::Failed, 1));
    assert!(done.last_error.unwrap().contains("HTTP 400"));
    let _ = std::fs::remove_dir_all(&dir);
}
