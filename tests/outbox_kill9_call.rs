//! Exactly once across kill -9 of the whole server, end to end: a caller keys their way to an
//! answer with a link and asks for it by text message; the moment the outbox holds the message
//! (the caller is hearing "sent") the server is killed with SIGKILL, while the SMS provider is
//! still down so nothing can have been delivered. Restarted on the same data directory (with
//! the provider back), the provider receives the message exactly once, and a second restart
//! sends nothing more. And without a kill: provider down, then back → delivered once.
//! Across nodes sharing PostgreSQL, by text (an HTTP SMS provider) and by email (a real SMTP
//! server, aiosmtpd): a link queued on a node killed with SIGKILL is delivered once by another.

mod common;
mod outbox_support;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// One HTTP request the provider received.
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

/// An SMS provider on a fixed port, answering each request with the next scripted status
/// (200 once used up) and recording everything. It does not deduplicate: two sends of one
/// message are two requests here.
struct Provider {
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Provider {
    fn start(port: u16, script: &[u16]) -> Provider {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("provider port still free");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let mut script: VecDeque<u16> = script.iter().copied().collect();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let request = loop {
                    let n = match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => n,
                    };
                    data.extend_from_slice(&buf[..n]);
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("content-length").then(|| v.trim())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if data.len() >= end + 4 + len {
                        let body = String::from_utf8_lossy(&data[end + 4..end + 4 + len]);
                        break Some(Request {
                            head,
                            body: body.to_string(),
                        });
                    }
                };
                let Some(request) = request else { continue };
                seen.lock().unwrap().push(request);
                let status = script.pop_front().unwrap_or(200);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
            }
        });
        Provider { requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Outbox settings for a test: fast retries and polling, the provider at `provider_port`.
fn outbox_toml(provider_port: u16) -> String {
    format!(
        "[outbox]\nretry_backoff_ms = [200]\nmax_attempts = 200\nlease_ms = 3000\npoll_ms = 50\n\
         [outbox.sms]\nenabled = true\nurl = \"http://127.0.0.1:{provider_port}/v1/messages\"\n\
         timeout_ms = 1500\n[outbox.smtp]\ntimeout_ms = 1500\n"
    )
}

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// English, case status (1, 1), the link (4) by text message (1), confirm (1): the keys of
/// tests/voice_link_by_sms.rs. The caller ID is the harness's valid US number. The audio is
/// sent from a thread so the test can watch (and kill) the server meanwhile.
fn caller_asks_for_the_link_by_sms(server: &Server) -> (String, std::thread::JoinHandle<()>) {
    let audio = sms_link_keys(4);
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let call_id = uac.call_id.clone();
    let sender = std::thread::spawn(move || {
        uac.send_pcmu(Uac::remote_rtp(&ok), &audio, 1, 0);
        // Unanswered when the server was killed: nothing to check here.
        uac.request("BYE", "", true);
        let _ = uac.recv(Duration::from_secs(2));
    });
    (call_id, sender)
}

fn state(rows: &[serde_json::Value]) -> String {
    rows.first()
        .and_then(|r| r["state"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn kill_9_after_sent_is_spoken_delivers_exactly_once_after_restart() {
    require("sox");
    // The provider's port is chosen now and nobody listens on it yet: the provider is down,
    // every delivery attempt before the kill is refused.
    let provider_port = free_port();
    let mut server = Server::start(ServerOptions {
        extra_toml: outbox_toml(provider_port),
        ..ServerOptions::default()
    });
    let (call_id, sender) = caller_asks_for_the_link_by_sms(&server);

    // The message is durable before the caller hears "sent": kill the moment it is there.
    let rows = wait_until("the message in the outbox", Duration::from_secs(30), || {
        let rows = outbox_list(&server.data_dir);
        (!rows.is_empty()).then_some(rows)
    });
    server.kill9();
    let _ = sender.join();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["call_id"], call_id.as_str());
    assert_eq!(rows[0]["channel"], "sms");
    let after_kill = outbox_list(&server.data_dir);
    assert_eq!(after_kill.len(), 1, "{after_kill:?}");
    assert_ne!(state(&after_kill), "delivered", "the provider was down");
    let log = server.log_text();
    assert!(
        !log.contains("2025550134"),
        "no caller number in the log:\n{log}"
    );

    // The provider comes back; the server restarts on the same data directory.
    let provider = Provider::start(provider_port, &[]);
    let mut server = server.restart();
    wait_until("delivery after restart", Duration::from_secs(30), || {
        (state(&outbox_list(&server.data_dir)) == "delivered").then_some(())
    });
    // Time for a duplicate to show up, if one were coming (many poll intervals).
    std::thread::sleep(Duration::from_millis(1500));
    let reqs = provider.requests();
    assert_eq!(reqs.len(), 1, "exactly one SMS request: {reqs:#?}");
    // The key the message was stored with before the kill (call id, link, channel).
    let key = rows[0]["idempotency_key"].as_str().unwrap_or("");
    assert!(key.starts_with(&call_id), "{key}");
    assert_eq!(reqs[0].header("Idempotency-Key").as_deref(), Some(key));
    let json: serde_json::Value = serde_json::from_str(&reqs[0].body).unwrap();
    assert_eq!(json["to"], "+12025550134");
    assert!(
        json["body"]
            .as_str()
            .unwrap_or("")
            .contains("https://uscis.gov/casestatus"),
        "{json}"
    );

    // A second kill and restart: the delivered message is final, nothing more is sent.
    server.kill9();
    let server = server.restart();
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(provider.requests().len(), 1, "a second restart sent again");
    let rows = outbox_list(&server.data_dir);
    assert_eq!((rows.len(), state(&rows)), (1, "delivered".to_string()));
}

#[test]
fn provider_down_then_back_delivers_once() {
    require("sox");
    let provider_port = free_port();
    let server = Server::start(ServerOptions {
        extra_toml: outbox_toml(provider_port),
        ..ServerOptions::default()
    });
    let (call_id, sender) = caller_asks_for_the_link_by_sms(&server);
    // Down: connections refused, retried with backoff (200 ms) while the call goes on.
    let rows = wait_until("two refused attempts", Duration::from_secs(40), || {
        let rows = outbox_list(&server.data_dir);
        let attempts = rows
            .first()
            .and_then(|r| r["attempts"].as_u64())
            .unwrap_or(0);
        (attempts >= 2).then_some(rows)
    });
    assert_ne!(state(&rows), "delivered");
    // Back, answering 503 once more before it accepts.
    let provider = Provider::start(provider_port, &[503]);
    wait_until("delivery", Duration::from_secs(30), || {
        (state(&outbox_list(&server.data_dir)) == "delivered").then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let reqs = provider.requests();
    assert_eq!(reqs.len(), 2, "one 503, then one accepted: {reqs:#?}");
    let key = rows[0]["idempotency_key"].as_str().unwrap_or("");
    assert!(key.starts_with(&call_id), "{key}");
    assert!(
        reqs.iter()
            .all(|r| r.header("Idempotency-Key").as_deref() == Some(key)),
        "every attempt carries the same key"
    );
    let _ = sender.join();
    let call = server.ended_call(&call_id, Duration::from_secs(30));
    let prompts = call["prompts"].to_string();
    assert!(prompts.contains("en:sms_sent"), "{prompts}");
}

/// Two nodes share the outbox in PostgreSQL. A caller on node A asks for the link by text while
/// the provider is down; node A is killed with SIGKILL the moment the message is stored (it may
/// hold the claim). When the provider comes back, node B delivers it, exactly once, with the key
/// node A stored; node A never comes back.
#[test]
fn a_link_queued_on_a_killed_node_is_delivered_once_by_another_node() {
    require("sox");
    let Some(pg) = common::pg::PgCluster::start() else {
        return;
    };
    let provider_port = free_port();
    let node = |name: &str| {
        Server::start(ServerOptions {
            extra_toml: format!(
                "{}[storage]\nurl = \"{}\"\n[node]\nname = \"{name}\"\n",
                outbox_toml(provider_port),
                pg.url
            ),
            ..ServerOptions::default()
        })
    };
    let mut a = node("node-a");
    let b = node("node-b");
    let (call_id, sender) = caller_asks_for_the_link_by_sms(&a);
    wait_until(
        "the message stored by node A",
        Duration::from_secs(30),
        || (a.metric("ivr_outbox_enqueued_total") >= 1).then_some(()),
    );
    a.kill9();
    let _ = sender.join();
    assert_eq!(
        b.metric("ivr_outbox_delivered_total"),
        0,
        "the provider was down"
    );

    let provider = Provider::start(provider_port, &[]);
    wait_until("delivery by node B", Duration::from_secs(30), || {
        (!provider.requests().is_empty()).then_some(())
    });
    // Time for a duplicate to show up, if one were coming (many polls, past the lease).
    std::thread::sleep(Duration::from_millis(4000));
    let reqs = provider.requests();
    assert_eq!(reqs.len(), 1, "exactly one SMS request: {reqs:#?}");
    let key = reqs[0].header("Idempotency-Key").unwrap_or_default();
    assert!(key.starts_with(&call_id), "{key}");
    assert_eq!(
        b.metric("ivr_outbox_delivered_total"),
        1,
        "node B delivered it"
    );
    // Node B's admin API has node A's call (shared records), left interrupted by the kill.
    let call = b.get(&format!("/calls/{call_id}"));
    assert_eq!(call.0, 200, "{}", call.1);
    let record: serde_json::Value = serde_json::from_str(&call.1).unwrap();
    assert_eq!(record["node"], "node-a");
}

/// English, case status, the link (4) by email (2), the address keyed two keys a character and
/// `#`, then 1 over the read-back: the keys of tests/voice_link_by_email.rs, in-band.
fn email_link_keys(address: &str) -> Vec<i16> {
    let dir = temp_dir("email-keys-kill9");
    let keys = ivr::nlu::spell::keypad_keys(address).expect("spellable");
    let gap = vec![0i16; 8000 * 7 / 10];
    let short = vec![0i16; 8000 * 3 / 10];
    let mut audio = gap.clone();
    for key in "1142".chars() {
        audio.extend(dtmf_tone(&dir, key));
        audio.extend(&gap);
    }
    for key in format!("{keys}#").chars() {
        audio.extend(dtmf_tone(&dir, key));
        audio.extend(&short);
    }
    // The read-back plays; 1 confirms it, then the caller listens to "sent".
    audio.extend(vec![0i16; 8000 * 2]);
    audio.extend(dtmf_tone(&dir, '1'));
    audio.extend(vec![0i16; 8000 * 3]);
    audio
}

/// The same across nodes by email, checked at a real SMTP server: a caller on node A keys an
/// address and confirms it while the mail server is down; node A is killed with SIGKILL the
/// moment the message is stored (it may hold the claim). When the SMTP server (aiosmtpd) comes
/// up, node B delivers the email, exactly once, with the Message-ID derived from the key node A
/// stored; node A never comes back.
#[test]
fn an_email_link_queued_on_a_killed_node_reaches_the_smtp_server_once_from_another_node() {
    require("sox");
    require("espeak-ng");
    let Some(pg) = common::pg::PgCluster::start() else {
        return;
    };
    // Nobody listens on the SMTP port yet: every attempt before aiosmtpd starts is refused.
    let smtp_port = free_port();
    let node = |name: &str| {
        Server::start(ServerOptions {
            extra_toml: format!(
                "[outbox]\nretry_backoff_ms = [200]\nmax_attempts = 200\nlease_ms = 3000\n\
                 poll_ms = 50\n[outbox.smtp]\nport = {smtp_port}\ntimeout_ms = 1500\n\
                 [storage]\nurl = \"{}\"\n[node]\nname = \"{name}\"\n",
                pg.url
            ),
            ..ServerOptions::default()
        })
    };
    let mut a = node("node-a");
    let b = node("node-b");
    let address = "jo.li7@ab.us";
    let audio = email_link_keys(address);
    let mut uac = Uac::new(a.sip);
    let ok = uac.call();
    let call_id = uac.call_id.clone();
    let sender = std::thread::spawn(move || {
        uac.send_pcmu(Uac::remote_rtp(&ok), &audio, 1, 0);
        uac.request("BYE", "", true);
        let _ = uac.recv(Duration::from_secs(2));
    });
    wait_until(
        "the email stored by node A",
        Duration::from_secs(60),
        || (a.metric("ivr_outbox_enqueued_total") >= 1).then_some(()),
    );
    a.kill9();
    assert_eq!(
        b.metric("ivr_outbox_delivered_total"),
        0,
        "the SMTP server was down"
    );
    // What node A stored in the shared outbox (what ops see with `ivr outbox list`).
    let shared = ivr::outbox::Store::open_postgres(&pg.url).expect("the shared outbox");
    let rows = shared.list(None, 10).unwrap();
    assert_eq!(
        rows.len(),
        1,
        "{:?}",
        rows.iter().map(|m| m.to_json()).collect::<Vec<_>>()
    );
    let stored = &rows[0];
    assert_eq!(stored.call_id, call_id);
    assert_eq!(stored.channel, ivr::outbox::Channel::Email);
    assert_ne!(stored.state, ivr::outbox::State::Delivered);
    assert!(
        stored.idempotency_key.starts_with(&call_id),
        "{}",
        stored.idempotency_key
    );

    let smtpd = outbox_support::Smtpd::start(smtp_port, &temp_dir("kill9-smtp").join("maildir"));
    let _ = sender.join();
    let raw = wait_until("the email from node B", Duration::from_secs(30), || {
        smtpd.messages().into_iter().next()
    });
    // Time for a duplicate to show up, if one were coming (many polls, past the lease).
    std::thread::sleep(Duration::from_millis(4000));
    assert_eq!(smtpd.messages().len(), 1, "exactly one email");
    assert_eq!(
        b.metric("ivr_outbox_delivered_total"),
        1,
        "node B delivered it"
    );
    assert_eq!(
        outbox_support::header(&raw, "Message-ID"),
        Some(ivr::outbox::template::message_id(
            &stored.idempotency_key,
            "ivr.localdomain"
        )),
        "the Message-ID of the key node A stored"
    );
    let rows = shared.list(None, 10).unwrap();
    assert_eq!(
        (rows.len(), rows[0].state),
        (1, ivr::outbox::State::Delivered)
    );
    let to = outbox_support::header(&raw, "To").unwrap_or_default();
    assert!(to.contains(address), "sent to the keyed address: {to}");
    assert!(
        outbox_support::body(&raw).contains("uscis.gov/casestatus"),
        "{raw}"
    );
    // Node B's admin API has node A's call (shared records), with the email action.
    let call = b.get(&format!("/calls/{call_id}"));
    assert_eq!(call.0, 200, "{}", call.1);
    let record: serde_json::Value = serde_json::from_str(&call.1).unwrap();
    assert_eq!(record["node"], "node-a");
    assert!(
        !call.1.contains("ab.us"),
        "no address in the record: {}",
        call.1
    );
}
