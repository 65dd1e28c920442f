//! Exactly once across kill -9: `ivr outbox deliver` runs as a real process and is killed with
//! SIGKILL before the message is delivered; after a restart the SMTP server (aiosmtpd, which
//! does not deduplicate) receives exactly one copy. And with SMTP down, the message is retried
//! and delivered once the server is back.

mod outbox_support;

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ivr::outbox::{Message, State, Store, template};
use ivr::types::Lang;
use outbox_support::*;

/// `ivr outbox deliver` as a child process, its log appended to `<dir>/deliver.log`.
fn deliver(dir: &Path) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("deliver.log"))
        .unwrap();
    // IVR_TEST_BIN: a copy of the binary, for a target dir shared with other checkouts whose
    // builds may replace `CARGO_BIN_EXE_ivr` under a running test.
    let bin = std::env::var_os("IVR_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ivr").into());
    Command::new(bin)
        .args(["outbox", "deliver", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(dir.join("ivr.toml"))
        .env("IVR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run ivr outbox deliver")
}

fn kill9(mut child: Child) {
    // std's kill is SIGKILL on Unix: no destructor, no flush, no graceful stop.
    child.kill().unwrap();
    child.wait().unwrap();
}

fn setup(name: &str, port: u16) -> (std::path::PathBuf, Store, Message) {
    let dir = temp_dir(name);
    std::fs::write(dir.join("ivr.toml"), fast_config_toml(port)).unwrap();
    let store = Store::open(&dir.join("data")).unwrap();
    // The caller hears "sent" once this returns: the row is on disk.
    let m = store
        .enqueue_blocking(&email("call-crash", "jane@example.org", Lang::En))
        .unwrap();
    (dir, store, m)
}

fn show(store: &Store, id: i64) -> Message {
    store.show(id).unwrap().unwrap()
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("deliver.log")).unwrap_or_default()
}

/// Wait until delivered, then a little longer in case a duplicate is on its way, and check
/// the server holds exactly one copy with the key's Message-ID.
fn assert_delivered_once(dir: &Path, store: &Store, m: &Message, smtpd: &Smtpd) -> Message {
    let done = wait_for("delivery after restart", Duration::from_secs(30), || {
        let now = show(store, m.id);
        (now.state == State::Delivered).then_some(now)
    });
    std::thread::sleep(Duration::from_millis(800));
    let received = smtpd.messages();
    assert_eq!(received.len(), 1, "exactly one email\n{}", log(dir));
    assert_eq!(
        header(&received[0], "Message-ID"),
        Some(template::message_id(&m.idempotency_key, "ivr.localdomain"))
    );
    assert!(body(&received[0]).contains("https://uscis.gov/casestatus"));
    done
}

/// Killed in the middle of the attempt (the server accepted the TCP connection and said
/// nothing): the row stays `Sending`; after the lease the restarted worker sends it once.
#[test]
fn kill_during_attempt_then_restart_delivers_exactly_once() {
    let port = free_port();
    let (dir, store, m) = setup("outbox-crash-mid", port);
    // Accepts connections in the kernel backlog and never answers: the SMTP greeting never comes.
    let blackhole = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let first = deliver(&dir);
    let claimed = wait_for(
        "the worker to claim the message",
        Duration::from_secs(20),
        || {
            let now = show(&store, m.id);
            (now.state == State::Sending).then_some(now)
        },
    );
    kill9(first);
    let after_kill = show(&store, m.id);
    assert_eq!(
        after_kill.state,
        State::Sending,
        "the dead worker recorded nothing"
    );
    assert_eq!(after_kill.attempts, 1);
    assert_eq!(
        after_kill.next_attempt_at_ms, claimed.next_attempt_at_ms,
        "lease kept"
    );

    drop(blackhole);
    let smtpd = Smtpd::start(port, &dir.join("maildir"));
    let second = deliver(&dir);
    let done = assert_delivered_once(&dir, &store, &m, &smtpd);
    assert_eq!(done.attempts, 2, "the interrupted attempt counts");
    kill9(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SMTP down: the worker retries; killed between retries; SMTP back and a new worker: one copy.
#[test]
fn smtp_down_retries_survive_kill_and_deliver_once_back() {
    let port = free_port();
    let (dir, store, m) = setup("outbox-crash-down", port);
    let first = deliver(&dir);
    let retried = wait_for("two failed attempts", Duration::from_secs(20), || {
        let now = show(&store, m.id);
        (now.attempts >= 2 && now.state == State::Pending).then_some(now)
    });
    assert!(retried.last_error.is_some_and(|e| e.contains("smtp")));
    kill9(first);

    let smtpd = Smtpd::start(port, &dir.join("maildir"));
    assert!(smtpd.messages().is_empty());
    let second = deliver(&dir);
    let done = assert_delivered_once(&dir, &store, &m, &smtpd);
    assert!(done.attempts >= 3, "{}", done.attempts);
    kill9(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SMTP down then back while one worker keeps running: retried, then delivered once.
#[test]
fn smtp_down_is_retried_until_it_is_back() {
    let port = free_port();
    let (dir, store, m) = setup("outbox-down", port);
    let worker = deliver(&dir);
    wait_for("a retry", Duration::from_secs(20), || {
        (show(&store, m.id).attempts >= 2).then_some(())
    });
    let smtpd = Smtpd::start(port, &dir.join("maildir"));
    let done = assert_delivered_once(&dir, &store, &m, &smtpd);
    assert!(done.attempts >= 2);
    let worker_log = log(&dir);
    assert!(
        worker_log.contains("outbox attempt"),
        "attempts are logged: {worker_log}"
    );
    assert!(
        !worker_log.contains("jane@"),
        "recipient never logged in clear"
    );
    kill9(worker);

    // What ops see: the delivered message, recipient redacted.
    let ivr = |args: &[&str]| {
        let bin =
            std::env::var_os("IVR_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ivr").into());
        let out = Command::new(bin)
            .args(["outbox"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let list = ivr(&["list", "--state", "delivered"]);
    assert!(
        list.contains("delivered") && list.contains("j***@***.org"),
        "{list}"
    );
    assert!(!list.contains("jane@"), "{list}");
    let shown: serde_json::Value =
        serde_json::from_str(&ivr(&["show", &m.id.to_string()])).unwrap();
    assert_eq!(shown["state"], "delivered");
    assert_eq!(shown["to"], "j***@***.org");
    assert_eq!(shown["attempts"], done.attempts);
    assert_eq!(
        ivr(&["list", "--state", "pending"]).lines().count(),
        1,
        "header only"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
