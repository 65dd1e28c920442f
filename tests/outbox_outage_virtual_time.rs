//! The email provider is down for an hour, in virtual time: the real outbox store (SQLite) and
//! retry policy are driven by a clock the test advances from one due time to the next, and by a
//! provider that refuses every attempt until the hour is over. Every message is delivered
//! exactly once afterwards, none is given up, and the retries after the outage come back spread
//! out (jitter), not as one burst. The SMS provider's hour (503, then hanging) runs the real
//! worker pass and HTTP sender at each virtual due time. A mail server slow at every reply (30 s)
//! for the hour runs the real lettre sender the same way.

mod outbox_support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivr::outbox::retry::Outcome;
use ivr::outbox::store::now_ms;
use ivr::outbox::{Channel, NewMessage, OutboxConfig, RetryPolicy, State, Store, deliver_pass_at};
use ivr::pii::Pii;
use ivr::types::Lang;
use outbox_support::temp_dir;

const HOUR_MS: i64 = 3_600_000;
const TEN_MINUTES_MS: i64 = 600_000;
const MESSAGES: usize = 40;

/// `count` links of `prefix-N` calls for `channel`, to `to(N)`.
fn enqueue(
    store: &Store,
    count: usize,
    prefix: &str,
    channel: Channel,
    to: impl Fn(usize) -> String,
) {
    for n in 0..count {
        store
            .enqueue_blocking(&NewMessage {
                call_id: format!("{prefix}-{n}"),
                link_id: "case_status".into(),
                url: None,
                channel,
                to: Pii::new(to(n)),
                lang: Lang::En,
            })
            .unwrap();
    }
}

/// Real worker passes (real senders) in virtual time from `start`: the clock jumps from one due
/// time to the next until nothing is due. `before(now)` and `after(now)` run around each pass.
fn run_passes(
    store: &Arc<Store>,
    config: &OutboxConfig,
    start: i64,
    mut before: impl FnMut(i64),
    mut after: impl FnMut(i64),
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut now = start;
    rt.block_on(async {
        for _pass in 0..10_000 {
            before(now);
            let (claimed, next_due) = deliver_pass_at(store, config, now).await.unwrap();
            after(now);
            if claimed > 0 {
                continue; // more may be due at this instant
            }
            match next_due {
                Some(due) => now = due.max(now + 1),
                None => return,
            }
        }
        panic!("no progress");
    });
}

fn assert_all_delivered(store: &Store) {
    let states: Vec<State> = store
        .list(None, 1000)
        .unwrap()
        .into_iter()
        .map(|m| m.state)
        .collect();
    assert!(states.iter().all(|s| *s == State::Delivered), "{states:?}");
}

#[test]
fn an_hour_of_smtp_outage_delivers_every_message_exactly_once_afterwards() {
    let dir = temp_dir("outage");
    let store = Store::open(&dir).unwrap();
    enqueue(&store, MESSAGES, "outage-call", Channel::Email, |n| {
        format!("caller{n}@example.com")
    });
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
    assert_all_delivered(&store);
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

/// An SMS provider for the virtual hour: 503 for the first ten minutes, then hanging (no reply
/// within the sender's timeout) until the hour is over, then 200. It counts the messages it accepted
/// per `Idempotency-Key`.
struct HourProvider {
    port: u16,
    now: Arc<AtomicI64>,
    accepted: Arc<Mutex<HashMap<String, u32>>>,
    requests: Arc<AtomicU64>,
    /// Requests left without a reply (after the first ten minutes).
    hung: Arc<AtomicU64>,
}

impl HourProvider {
    fn start(start: i64, back_at: i64) -> HourProvider {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let now = Arc::new(AtomicI64::new(start));
        let accepted = Arc::new(Mutex::new(HashMap::new()));
        let requests = Arc::new(AtomicU64::new(0));
        let hung = Arc::new(AtomicU64::new(0));
        let (clock, books, count) = (now.clone(), accepted.clone(), requests.clone());
        let all_hangs = hung.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (clock, books, count) = (clock.clone(), books.clone(), count.clone());
                let hangs = all_hangs.clone();
                std::thread::spawn(move || {
                    let Some(key) = read_key(&mut conn) else {
                        return;
                    };
                    count.fetch_add(1, Relaxed);
                    let t = clock.load(Relaxed);
                    if t < start + TEN_MINUTES_MS {
                        let _ = conn.write_all(
                            b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    } else if t < back_at {
                        // A hung provider: the sender gives up first.
                        hangs.fetch_add(1, Relaxed);
                        std::thread::sleep(Duration::from_millis(800));
                    } else {
                        *books.lock().unwrap().entry(key).or_default() += 1;
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                        );
                    }
                });
            }
        });
        HourProvider {
            port,
            now,
            accepted,
            requests,
            hung,
        }
    }
}

/// The request's `Idempotency-Key` once its head and body are in.
fn read_key(conn: &mut std::net::TcpStream) -> Option<String> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let len: usize = header("Content-Length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + len {
            return header("Idempotency-Key");
        }
    }
}

/// The SMS provider answers 503 for ten minutes, then hangs (every request times out) for the
/// rest of the hour, in virtual time (the retry schedule's attempts at 0, 5 s, 35 s and 2.6 min
/// get 503, the one at 12.6 min times out, the hourly one after it is accepted): the real worker pass and HTTP sender run at each due time. Every
/// message is accepted by the provider exactly once after the hour, each retry carried the same
/// idempotency key, and the backlog was visible throughout.
#[test]
fn an_hour_of_sms_provider_errors_then_hangs_delivers_every_message_exactly_once() {
    const SMS: usize = 12;
    let dir = temp_dir("sms-outage");
    let store = Arc::new(Store::open(&dir).unwrap());
    enqueue(&store, SMS, "sms-outage", Channel::Sms, |n| {
        format!("+1202555{:04}", 100 + n)
    });
    let start = now_ms() + 1;
    let back_at = start + HOUR_MS;
    let provider = HourProvider::start(start, back_at);
    let mut config = OutboxConfig::default();
    config.sms.enabled = true;
    config.sms.url = format!("http://127.0.0.1:{}/v1/messages", provider.port);
    config.sms.timeout_ms = 250;
    let mut backlog_during_outage = Vec::new();
    run_passes(
        &store,
        &config,
        start,
        |now| provider.now.store(now, Relaxed),
        |now| {
            if now < back_at {
                backlog_during_outage.push(store.metrics.queued.load(Relaxed));
            }
        },
    );
    let accepted = provider.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), SMS, "{accepted:?}");
    assert!(
        accepted.values().all(|n| *n == 1),
        "each key accepted once: {accepted:?}"
    );
    assert_all_delivered(&store);
    // Retried through the 503s and the timeouts, not given up.
    let requests = provider.requests.load(Relaxed) as usize;
    let hung = provider.hung.load(Relaxed) as usize;
    assert!(requests >= SMS * 5, "{requests} requests");
    assert!(
        hung >= SMS,
        "{hung} requests timed out after the first ten minutes"
    );
    assert!(
        !backlog_during_outage.is_empty() && backlog_during_outage.iter().all(|q| *q == SMS as i64),
        "queued stays at {SMS} during the outage: {backlog_during_outage:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An SMTP server for the virtual hour: until `back_at`, every reply (the greeting too) comes
/// `delay` late — "30 s per reply" against the sender's 30 s bound on the whole exchange, scaled
/// to real milliseconds — then it answers at once. It counts the messages it accepted per
/// `Message-ID`, and how many DATA commands it saw begin while slow (a message half-sent when
/// the sender gave up is the one that can arrive twice).
struct SlowSmtp {
    port: u16,
    now: Arc<AtomicI64>,
    accepted: Arc<Mutex<HashMap<String, u32>>>,
    connections: Arc<AtomicU64>,
    data_while_slow: Arc<AtomicU64>,
}

impl SlowSmtp {
    fn start(back_at: i64, delay: Duration) -> SlowSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = SlowSmtp {
            port: listener.local_addr().unwrap().port(),
            now: Arc::new(AtomicI64::new(0)),
            accepted: Arc::new(Mutex::new(HashMap::new())),
            connections: Arc::new(AtomicU64::new(0)),
            data_while_slow: Arc::new(AtomicU64::new(0)),
        };
        let (clock, books) = (server.now.clone(), server.accepted.clone());
        let (conns, half) = (server.connections.clone(), server.data_while_slow.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                conns.fetch_add(1, Relaxed);
                let slow = clock.load(Relaxed) < back_at;
                let (books, half) = (books.clone(), half.clone());
                std::thread::spawn(move || {
                    let _ = smtp_session(conn, slow.then_some(delay), &books, &half);
                });
            }
        });
        server
    }
}

/// One SMTP session: greeting, EHLO, MAIL, RCPT, DATA, the message, QUIT; each reply after
/// `delay` when slow. Ends quietly when the client hangs up.
fn smtp_session(
    conn: std::net::TcpStream,
    delay: Option<Duration>,
    books: &Mutex<HashMap<String, u32>>,
    data_while_slow: &AtomicU64,
) -> std::io::Result<()> {
    use std::io::BufRead;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = std::io::BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let mut reply = |text: &str| -> std::io::Result<()> {
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        out.write_all(text.as_bytes())
    };
    reply("220 slow.example ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => reply("250-slow.example\r\n250 8BITMIME\r\n")?,
            "MAIL" | "RCPT" | "RSET" | "NOOP" => reply("250 OK\r\n")?,
            "DATA" => {
                if delay.is_some() {
                    data_while_slow.fetch_add(1, Relaxed);
                }
                reply("354 go ahead\r\n")?;
                let mut id = None;
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("Message-ID") && id.is_none() {
                            id = Some(value.trim().to_string());
                        }
                    }
                }
                *books
                    .lock()
                    .unwrap()
                    .entry(id.unwrap_or_default())
                    .or_default() += 1;
                reply("250 queued\r\n")?;
            }
            "QUIT" => {
                reply("221 bye\r\n")?;
                return Ok(());
            }
            _ => reply("502 not implemented\r\n")?,
        }
    }
}

/// The mail server is slow for an hour, in virtual time: every reply 30 s late against the
/// sender's 30 s bound on a whole send (scaled: 250 ms each), so no attempt during the hour gets
/// past the greeting, and none is half-sent. The real worker pass and lettre sender run at each
/// due time. Every message is accepted exactly once after the hour, under the Message-ID its
/// idempotency key gives it; none was given up; the backlog was visible throughout.
#[test]
fn an_hour_of_a_mail_server_slow_at_every_reply_delivers_every_message_exactly_once() {
    const MAILS: usize = 10;
    let dir = temp_dir("smtp-slow");
    let store = Arc::new(Store::open(&dir).unwrap());
    enqueue(&store, MAILS, "smtp-slow", Channel::Email, |n| {
        format!("caller{n}@example.com")
    });
    let start = now_ms() + 1;
    let back_at = start + HOUR_MS;
    let bound = Duration::from_millis(250);
    let server = SlowSmtp::start(back_at, bound);
    let mut config = OutboxConfig::default();
    config.smtp.port = server.port;
    config.smtp.timeout_ms = bound.as_millis() as u64;
    let (mut backlog_during_slowness, mut attempts_during_slowness) = (Vec::new(), 0u64);
    let before = std::cell::Cell::new(0);
    run_passes(
        &store,
        &config,
        start,
        |now| {
            server.now.store(now, Relaxed);
            before.set(server.connections.load(Relaxed));
        },
        |now| {
            if now < back_at {
                attempts_during_slowness += server.connections.load(Relaxed) - before.get();
                backlog_during_slowness.push(store.metrics.queued.load(Relaxed));
            }
        },
    );
    let accepted = server.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), MAILS, "{accepted:?}");
    assert!(
        accepted.values().all(|n| *n == 1),
        "each Message-ID accepted once: {accepted:?}"
    );
    for n in 0..MAILS {
        let key =
            ivr::outbox::idempotency_key(&format!("smtp-slow-{n}"), "case_status", Channel::Email);
        let id = ivr::outbox::template::message_id(&key, &config.smtp.message_id_domain);
        assert!(
            accepted.contains_key(&id),
            "{id} (from its idempotency key) not in {accepted:?}"
        );
    }
    assert_eq!(
        server.data_while_slow.load(Relaxed),
        0,
        "a message was half-sent while the server was slow"
    );
    assert_all_delivered(&store);
    // Retried through the hour (5 s, 30 s, 2 min, 10 min, then hourly), each attempt a real
    // connection that timed out, none given up.
    assert!(
        attempts_during_slowness >= (MAILS * 4) as u64,
        "{attempts_during_slowness} attempts during the slow hour"
    );
    assert!(
        !backlog_during_slowness.is_empty()
            && backlog_during_slowness.iter().all(|q| *q == MAILS as i64),
        "queued stays at {MAILS} during the slow hour: {backlog_during_slowness:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
