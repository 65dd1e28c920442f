//! Shared by the outbox behaviour tests: temp dirs, free ports, a real SMTP server (Debian's
//! aiosmtpd writing a Maildir), waiting with a deadline, and a quoted-printable decoder.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ivr::outbox::{Channel, NewMessage, OutboxConfig};
use ivr::pii::Pii;
use ivr::types::Lang;

pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let d = std::env::temp_dir().join(format!("ivr-{name}-{}-{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` every 20 ms until it returns `Some`, or panic after `timeout` saying `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// aiosmtpd on 127.0.0.1:`port`, storing every message it accepts in a Maildir. The Debian
/// interpreter on purpose: the pyenv `python3` on PATH has no aiosmtpd.
pub struct Smtpd {
    child: Child,
    pub maildir: PathBuf,
    pub port: u16,
}

impl Smtpd {
    pub fn start(port: u16, maildir: &Path) -> Smtpd {
        let python = "/usr/bin/python3";
        assert!(
            Path::new(python).exists(),
            "{python} missing: apt-get install python3-aiosmtpd"
        );
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd (apt-get install python3-aiosmtpd)");
        let mut s = Smtpd {
            child,
            maildir: maildir.to_path_buf(),
            port,
        };
        wait_for("aiosmtpd to listen", Duration::from_secs(15), || {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("aiosmtpd exited: {status} (is python3-aiosmtpd installed?)");
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        s
    }

    /// The raw messages received so far.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect();
        out.sort();
        out
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A header's value (first occurrence, unfolded) of a raw message.
pub fn header(raw: &str, name: &str) -> Option<String> {
    let raw = raw.replace("\r\n", "\n");
    let head = raw.split("\n\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The body of a raw message, decoded from quoted-printable when so labelled.
pub fn body(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let (_, body) = raw.split_once("\n\n").unwrap_or(("", ""));
    let qp = header(&raw, "Content-Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("quoted-printable"));
    if !qp {
        return body.to_string();
    }
    let mut bytes = Vec::new();
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 1 < b.len() && b[i + 1] == b'\n' {
            i += 2;
        } else if b[i] == b'=' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            bytes.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            bytes.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(bytes).unwrap()
}

/// Test timings: fast retries, a short lease, timeouts below the lease.
pub fn fast_config(smtp_port: u16) -> OutboxConfig {
    let mut c = OutboxConfig {
        retry_backoff_ms: vec![200],
        max_attempts: 50,
        lease_ms: 3_000,
        poll_ms: 50,
        ..OutboxConfig::default()
    };
    c.smtp.port = smtp_port;
    c.smtp.timeout_ms = 1_500;
    c.sms.timeout_ms = 1_500;
    c
}

/// The same settings as the `[outbox]` section of a config file, for `ivr outbox deliver`.
pub fn fast_config_toml(smtp_port: u16) -> String {
    format!(
        "[outbox]\nretry_backoff_ms = [200]\nmax_attempts = 50\nlease_ms = 3000\npoll_ms = 50\n\
         [outbox.smtp]\nport = {smtp_port}\ntimeout_ms = 1500\n"
    )
}

pub fn email(call_id: &str, to: &str, lang: Lang) -> NewMessage {
    NewMessage {
        call_id: call_id.into(),
        link_id: "case_status".into(),
        url: None,
        channel: Channel::Email,
        to: Pii::new(to.into()),
        lang,
    }
}
