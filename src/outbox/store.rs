//! The durable outbox: SQLite `<data_dir>/outbox.sqlite3` in WAL mode with `synchronous=FULL`,
//! so an enqueue (or a claim) is acknowledged only after its commit reached the disk.
//!
//! One writer thread owns the write connection and commits whatever requests are waiting in one
//! transaction (group commit): N concurrent callers share one fsync, which is how enqueue keeps
//! up with thousands of messages a second on a disk that does a few hundred fsyncs. Each request
//! gets its own reply after the commit. Reads use a separate connection.
//!
//! The clear recipient is stored only while it is needed to send: a message reaching
//! `Delivered` or `Failed` keeps only the redacted form. Consents keep the redacted number only:
//! the number to text is in the message row that the consent allows.

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::{Notify, oneshot};

use super::recipient::{self, RecipientError};
use super::retry::{RetryPolicy, Transition};
use super::{Channel, Message, OutboxMetrics, State, idempotency_key, template};
use crate::pii::Pii;
use crate::types::Lang;

/// What the flow asks to send.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub call_id: String,
    /// A [`template::LINKS`] id (`case_status`) or any id the caller names.
    pub link_id: String,
    /// The link; `None` takes the catalog's URL for `link_id`.
    pub url: Option<String>,
    pub channel: Channel,
    /// As the caller gave it; validated and normalized before anything is stored.
    pub to: Pii<String>,
    pub lang: Lang,
}

/// Why an enqueue or a store operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The recipient cannot receive this channel; nothing was stored.
    Recipient(RecipientError),
    /// No URL given and `link_id` is not in the catalog, or the URL is unusable.
    BadLink,
    /// `call_id` or `link_id` empty or too long (they form the idempotency key).
    BadKey,
    Sqlite(rusqlite::Error),
    /// The PostgreSQL outbox (`[storage] url`): unreachable, or a statement failed.
    Postgres(String),
    /// The transaction holding this request could not begin or commit.
    Commit(String),
    Io(std::io::Error),
    /// The writer thread is gone (the store is shutting down).
    Closed,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Recipient(e) => write!(f, "bad recipient: {e}"),
            StoreError::BadLink => f.write_str("unknown link id and no usable URL"),
            StoreError::BadKey => f.write_str("call id or link id empty or over 256 bytes"),
            StoreError::Sqlite(e) => write!(f, "outbox database: {e}"),
            StoreError::Postgres(e) => write!(f, "outbox database (postgres): {e}"),
            StoreError::Commit(e) => write!(f, "outbox database commit: {e}"),
            StoreError::Io(e) => write!(f, "outbox data dir: {e}"),
            StoreError::Closed => f.write_str("outbox writer stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// How the caller said yes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentHow {
    Speech,
    Dtmf,
    Tty,
}

impl ConsentHow {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentHow::Speech => "speech",
            ConsentHow::Dtmf => "dtmf",
            ConsentHow::Tty => "tty",
        }
    }
}

/// An explicit yes, kept as evidence: which call, when, how, and (redacted) to which number.
#[derive(Clone, Debug)]
pub struct Consent {
    pub call_id: String,
    /// `text_ahead` for the tier-2 notification.
    pub kind: String,
    pub given_at_ms: i64,
    pub how: ConsentHow,
    pub phone: Option<Pii<String>>,
}

/// A consent as stored (what `ivr outbox consents` prints).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConsentRecord {
    pub call_id: String,
    pub kind: String,
    pub given_at_ms: i64,
    /// `speech`, `dtmf` or `tty`.
    pub how: String,
    pub phone_redacted: Option<String>,
}

/// A message validated and rendered, ready to insert. Pure: [`prepare`] does no IO.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub key: String,
    pub call_id: String,
    pub channel: Channel,
    pub to: String,
    pub lang: Lang,
    pub link_id: String,
    pub url: String,
    pub subject: String,
    pub body: String,
}

/// Validate the recipient and link and render the text; any error means nothing is queued.
impl Prepared {
    /// The row as it is right after its insert with id `id` at `now_ms`: pending, no attempt.
    pub fn pending_message(&self, id: i64, now_ms: i64) -> Message {
        Message {
            id,
            idempotency_key: self.key.clone(),
            call_id: self.call_id.clone(),
            channel: self.channel,
            to: Pii::new(self.to.clone()),
            lang: self.lang,
            link_id: self.link_id.clone(),
            url: self.url.clone(),
            subject: self.subject.clone(),
            body: self.body.clone(),
            state: State::Pending,
            attempts: 0,
            next_attempt_at_ms: now_ms,
            last_error: None,
            created_at_ms: now_ms,
            delivered_at_ms: None,
        }
    }
}

pub fn prepare(m: &NewMessage) -> Result<Prepared, StoreError> {
    let key_ok = |s: &str| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control);
    if !key_ok(&m.call_id) || !key_ok(&m.link_id) {
        return Err(StoreError::BadKey);
    }
    let to = recipient::parse(m.channel, m.to.expose()).map_err(StoreError::Recipient)?;
    let url = match &m.url {
        Some(u) => u.clone(),
        None => template::link(&m.link_id)
            .ok_or(StoreError::BadLink)?
            .url
            .to_string(),
    };
    if !template::valid_url(&url) {
        return Err(StoreError::BadLink);
    }
    let what = template::what(&m.link_id, m.lang);
    let (subject, body) = match m.channel {
        Channel::Sms => (String::new(), template::sms_text(what, &url, m.lang)),
        Channel::Email => template::email_text(what, &url, m.lang),
    };
    Ok(Prepared {
        key: idempotency_key(&m.call_id, &m.link_id, m.channel),
        call_id: m.call_id.clone(),
        channel: m.channel,
        to,
        lang: m.lang,
        link_id: m.link_id.clone(),
        url,
        subject,
        body,
    })
}

/// What one worker pass claimed.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Now `Sending` under a lease, committed: send them.
    pub messages: Vec<Message>,
    /// Found with their attempts used up by a dead worker and marked `Failed`.
    pub failed: usize,
    /// Earliest `next_attempt_at_ms` of what is still pending or sending (after this claim).
    pub next_due_ms: Option<i64>,
    /// Messages pending or sending.
    pub queued: i64,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
type Pending<T> = oneshot::Receiver<Result<T, StoreError>>;

pub(crate) enum Cmd {
    Enqueue(Box<Prepared>, i64, Reply<(Message, bool)>),
    Claim(RetryPolicy, i64, usize, bool, Reply<Claimed>),
    Finish(i64, u32, Transition, Reply<bool>),
    Consent(Consent, Reply<i64>),
}

/// Where reads go: the SQLite file's read connection, or PostgreSQL.
enum Reader {
    Sqlite(Mutex<Connection>),
    Postgres(Box<super::store_pg::PgReader>),
}

/// Handle to the outbox; share it with `Arc`.
pub struct Store {
    tx: mpsc::Sender<Cmd>,
    reader: Reader,
    /// Wakes the delivery worker when a message is enqueued.
    pub notify: Notify,
    /// Enqueue and delivery counters (the worker updates the delivery ones).
    pub metrics: Arc<OutboxMetrics>,
    location: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id                 INTEGER PRIMARY KEY,
    idempotency_key    TEXT NOT NULL UNIQUE,
    call_id            TEXT NOT NULL,
    channel            TEXT NOT NULL,
    recipient          TEXT NOT NULL,
    recipient_redacted TEXT NOT NULL,
    lang               TEXT NOT NULL,
    link_id            TEXT NOT NULL,
    url                TEXT NOT NULL,
    subject            TEXT NOT NULL,
    body               TEXT NOT NULL,
    state              TEXT NOT NULL,
    attempts           INTEGER NOT NULL,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error         TEXT,
    created_at_ms      INTEGER NOT NULL,
    delivered_at_ms    INTEGER
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(state, next_attempt_at_ms);
CREATE TABLE IF NOT EXISTS consents (
    id             INTEGER PRIMARY KEY,
    call_id        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    given_at_ms    INTEGER NOT NULL,
    how            TEXT NOT NULL,
    phone_redacted TEXT,
    UNIQUE(call_id, kind)
);
";

const COLUMNS: &str = "id, idempotency_key, call_id, channel, recipient, recipient_redacted, lang, \
    link_id, url, subject, body, state, attempts, next_attempt_at_ms, last_error, created_at_ms, \
    delivered_at_ms";

/// Most requests folded into one transaction: bounds the latency one commit adds to the first.
const BATCH_MAX: usize = 1024;

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // Another process (`ivr outbox deliver` beside `ivr serve`) may hold the write lock briefly.
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk when it returns, so "sent" is never said about a lost row.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Wall-clock unix milliseconds: the shell's clock for the pure core's schedule.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Open (creating) `<data_dir>/outbox.sqlite3` and start the writer thread.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(StoreError::Io)?;
        let path = data_dir.join("outbox.sqlite3");
        let writer = open_connection(&path)?;
        writer.execute_batch(SCHEMA)?;
        let reader = open_connection(&path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(StoreError::Io)?;
        Ok(Store {
            tx,
            reader: Reader::Sqlite(Mutex::new(reader)),
            notify: Notify::new(),
            metrics: Arc::new(OutboxMetrics::default()),
            location: path.display().to_string(),
        })
    }

    /// The outbox `[storage]` names: PostgreSQL (shared by the nodes) for a `postgres://` URL,
    /// else `<data_dir>/outbox.sqlite3`.
    pub fn from_config(config: &crate::config::Config) -> Result<Store, StoreError> {
        let url = config.storage.url.trim();
        if url.is_empty() {
            Store::open(&config.paths.data_dir)
        } else {
            Store::open_postgres(url)
        }
    }

    /// The outbox in PostgreSQL; nothing is connected yet (a database down at start makes
    /// enqueues fail, and the caller hears that the link could not be sent).
    pub fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let db = super::store_pg::PgOutbox::new(url)?;
        let location = db.describe();
        let reader = super::store_pg::PgReader::new(db.clone());
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || super::store_pg::writer_loop(db, rx))
            .map_err(StoreError::Io)?;
        Ok(Store {
            tx,
            reader: Reader::Postgres(Box::new(reader)),
            notify: Notify::new(),
            metrics: Arc::new(OutboxMetrics::default()),
            location,
        })
    }

    /// Where the outbox is (a file, or `postgres host:port/db`), for logs.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn request<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Cmd,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    fn submit_enqueue(&self, m: &NewMessage) -> Result<Pending<(Message, bool)>, StoreError> {
        let p = prepare(m).inspect_err(|_| {
            self.metrics.rejected_total.fetch_add(1, Relaxed);
        })?;
        self.request(|r| Cmd::Enqueue(Box::new(p), now_ms(), r))
    }

    fn enqueued(&self, r: Result<(Message, bool), StoreError>) -> Result<Message, StoreError> {
        let (msg, new) = r?;
        if new {
            self.metrics.enqueued_total.fetch_add(1, Relaxed);
        }
        self.notify.notify_one();
        Ok(msg)
    }

    /// Validate, render and durably queue a message; returns once it is on disk. The same
    /// (call, link, channel) again returns the message already queued, unchanged.
    pub async fn enqueue(&self, m: &NewMessage) -> Result<Message, StoreError> {
        let rx = self.submit_enqueue(m)?;
        let r = rx.await.map_err(|_| StoreError::Closed)?;
        self.enqueued(r)
    }

    /// [`Store::enqueue`] for threads outside the async runtime (CLI, tests, benches). Panics
    /// if called from inside a tokio runtime (tokio's `blocking_recv` rule).
    pub fn enqueue_blocking(&self, m: &NewMessage) -> Result<Message, StoreError> {
        let rx = self.submit_enqueue(m)?;
        let r = rx.blocking_recv().map_err(|_| StoreError::Closed)?;
        self.enqueued(r)
    }

    /// Claim up to `limit` due messages at `now_ms`, committed as `Sending` before returning.
    /// SMS messages are left alone (pending) unless `sms_enabled`.
    pub async fn claim(
        &self,
        policy: &RetryPolicy,
        now_ms: i64,
        limit: usize,
        sms_enabled: bool,
    ) -> Result<Claimed, StoreError> {
        let rx = self.request(|r| Cmd::Claim(policy.clone(), now_ms, limit, sms_enabled, r))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Record the end of attempt `attempts` of message `id`. Returns false when the row was no
    /// longer ours (its lease expired and another worker claimed it).
    pub async fn finish(&self, id: i64, attempts: u32, t: Transition) -> Result<bool, StoreError> {
        let rx = self.request(|r| Cmd::Finish(id, attempts, t, r))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Store a consent; the first one per (call, kind) is kept. Returns its row id.
    pub fn record_consent_blocking(&self, c: Consent) -> Result<i64, StoreError> {
        let rx = self.request(|r| Cmd::Consent(c, r))?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    pub async fn record_consent(&self, c: Consent) -> Result<i64, StoreError> {
        let rx = self.request(|r| Cmd::Consent(c, r))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Messages, newest first, optionally in one state. Blocking (a short read).
    pub fn list(&self, state: Option<State>, limit: usize) -> Result<Vec<Message>, StoreError> {
        let conn = match &self.reader {
            Reader::Postgres(pg) => return pg.list(state, limit),
            // A poisoned lock still holds a usable connection: SQLite state is not half-written.
            Reader::Sqlite(m) => m.lock().unwrap_or_else(|e| e.into_inner()),
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messages WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            params![state.map(State::as_str), limit as i64],
            row_to_message,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn show(&self, id: i64) -> Result<Option<Message>, StoreError> {
        let conn = match &self.reader {
            Reader::Postgres(pg) => return pg.show(id),
            // A poisoned lock still holds a usable connection: SQLite state is not half-written.
            Reader::Sqlite(m) => m.lock().unwrap_or_else(|e| e.into_inner()),
        };
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE id = ?1"))?;
        Ok(stmt.query_row([id], row_to_message).optional()?)
    }

    /// Stored consents, oldest first, all or one call's.
    pub fn consents(&self, call_id: Option<&str>) -> Result<Vec<ConsentRecord>, StoreError> {
        let conn = match &self.reader {
            Reader::Postgres(pg) => return pg.consents(call_id),
            // A poisoned lock still holds a usable connection: SQLite state is not half-written.
            Reader::Sqlite(m) => m.lock().unwrap_or_else(|e| e.into_inner()),
        };
        let mut stmt = conn.prepare_cached(
            "SELECT call_id, kind, given_at_ms, how, phone_redacted FROM consents \
             WHERE ?1 IS NULL OR call_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([call_id], |r| {
            Ok(ConsentRecord {
                call_id: r.get(0)?,
                kind: r.get(1)?,
                given_at_ms: r.get(2)?,
                how: r.get(3)?,
                phone_redacted: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn row_to_message(r: &Row<'_>) -> rusqlite::Result<Message> {
    let text = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown {what}").into(),
        )
    };
    let channel = Channel::parse(&text(3)?).ok_or_else(|| bad(3, "channel"))?;
    let lang = Lang::from_code(&text(6)?).ok_or_else(|| bad(6, "lang"))?;
    let state = State::parse(&text(11)?).ok_or_else(|| bad(11, "state"))?;
    let clear = text(4)?;
    // Final messages keep only the redacted recipient; show that rather than an empty one.
    let to = if clear.is_empty() { text(5)? } else { clear };
    Ok(Message {
        id: r.get(0)?,
        idempotency_key: text(1)?,
        call_id: text(2)?,
        channel,
        to: Pii::new(to),
        lang,
        link_id: text(7)?,
        url: text(8)?,
        subject: text(9)?,
        body: text(10)?,
        state,
        attempts: r.get(12)?,
        next_attempt_at_ms: r.get(13)?,
        last_error: r.get(14)?,
        created_at_ms: r.get(15)?,
        delivered_at_ms: r.get(16)?,
    })
}

/// A request's result, held until the transaction that produced it commits.
pub(crate) enum Done {
    Enqueue(Reply<(Message, bool)>, Result<(Message, bool), StoreError>),
    Claim(Reply<Claimed>, Result<Claimed, StoreError>),
    Finish(Reply<bool>, Result<bool, StoreError>),
    Consent(Reply<i64>, Result<i64, StoreError>),
}

impl Done {
    /// Send the result, or `err` instead when the commit failed.
    pub(crate) fn send(self, commit_err: Option<&str>) {
        fn fail<T>(r: Result<T, StoreError>, commit_err: Option<&str>) -> Result<T, StoreError> {
            match commit_err {
                Some(e) => Err(StoreError::Commit(e.to_string())),
                None => r,
            }
        }
        // A dropped receiver (caller gave up) is not the writer's problem: ignore send errors.
        match self {
            Done::Enqueue(tx, r) => drop(tx.send(fail(r, commit_err))),
            Done::Claim(tx, r) => drop(tx.send(fail(r, commit_err))),
            Done::Finish(tx, r) => drop(tx.send(fail(r, commit_err))),
            Done::Consent(tx, r) => drop(tx.send(fail(r, commit_err))),
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Cmd>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let mut done = Vec::with_capacity(BATCH_MAX);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                for cmd in batch.drain(..) {
                    fail_cmd(cmd, &msg);
                }
                continue;
            }
        };
        for cmd in batch.drain(..) {
            done.push(apply(&tx, cmd));
        }
        let commit_err = tx.commit().err().map(|e| e.to_string());
        for d in done.drain(..) {
            d.send(commit_err.as_deref());
        }
    }
}

pub(crate) fn fail_cmd(cmd: Cmd, msg: &str) {
    fn e<T>(msg: &str) -> Result<T, StoreError> {
        Err(StoreError::Commit(msg.to_string()))
    }
    match cmd {
        Cmd::Enqueue(_, _, r) => drop(r.send(e(msg))),
        Cmd::Claim(_, _, _, _, r) => drop(r.send(e(msg))),
        Cmd::Finish(_, _, _, r) => drop(r.send(e(msg))),
        Cmd::Consent(_, r) => drop(r.send(e(msg))),
    }
}

fn apply(conn: &Connection, cmd: Cmd) -> Done {
    match cmd {
        Cmd::Enqueue(p, now, r) => Done::Enqueue(r, insert(conn, &p, now)),
        Cmd::Claim(policy, now, limit, sms, r) => {
            Done::Claim(r, claim(conn, &policy, now, limit, sms))
        }
        Cmd::Finish(id, attempts, t, r) => Done::Finish(r, finish(conn, id, attempts, &t)),
        Cmd::Consent(c, r) => Done::Consent(r, consent(conn, &c)),
    }
}

fn insert(conn: &Connection, p: &Prepared, now: i64) -> Result<(Message, bool), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO messages (idempotency_key, call_id, channel, recipient, recipient_redacted, \
         lang, link_id, url, subject, body, state, attempts, next_attempt_at_ms, created_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', 0, ?11, ?11) \
         ON CONFLICT(idempotency_key) DO NOTHING",
    )?;
    let n = stmt.execute(params![
        p.key,
        p.call_id,
        p.channel.as_str(),
        p.to,
        crate::pii::redact(&p.to),
        p.lang.code(),
        p.link_id,
        p.url,
        p.subject,
        p.body,
        now,
    ])?;
    if n == 1 {
        let msg = p.pending_message(conn.last_insert_rowid(), now);
        return Ok((msg, true));
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE idempotency_key = ?1"
    ))?;
    Ok((stmt.query_row([&p.key], row_to_message)?, false))
}

fn claim(
    conn: &Connection,
    policy: &RetryPolicy,
    now: i64,
    limit: usize,
    sms_enabled: bool,
) -> Result<Claimed, StoreError> {
    let mut due = conn.prepare_cached(
        "SELECT id, attempts FROM messages WHERE state IN ('pending', 'sending') \
         AND next_attempt_at_ms <= ?1 AND (?3 OR channel != 'sms') \
         ORDER BY next_attempt_at_ms LIMIT ?2",
    )?;
    let rows: Vec<(i64, u32)> = due
        .query_map(params![now, limit as i64, sms_enabled], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Claimed::default();
    let mut ids = Vec::with_capacity(rows.len());
    for (id, attempts) in rows {
        let (t, attempts) = policy.claim(attempts, now);
        set_state(conn, id, attempts, &t)?;
        if t.state == State::Sending {
            ids.push(id);
        } else {
            out.failed += 1;
        }
    }
    let mut one = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE id = ?1"))?;
    for id in ids {
        out.messages.push(one.query_row([id], row_to_message)?);
    }
    let mut stats = conn.prepare_cached(
        "SELECT MIN(next_attempt_at_ms), COUNT(*) FROM messages \
         WHERE state IN ('pending', 'sending') AND (?1 OR channel != 'sms')",
    )?;
    (out.next_due_ms, out.queued) =
        stats.query_row([sms_enabled], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(out)
}

fn set_state(conn: &Connection, id: i64, attempts: u32, t: &Transition) -> Result<(), StoreError> {
    let last = matches!(t.state, State::Delivered | State::Failed);
    let mut stmt = conn.prepare_cached(
        "UPDATE messages SET state = ?2, attempts = ?3, next_attempt_at_ms = ?4, \
         last_error = COALESCE(?5, last_error), delivered_at_ms = ?6, \
         recipient = CASE WHEN ?7 THEN '' ELSE recipient END WHERE id = ?1",
    )?;
    stmt.execute(params![
        id,
        t.state.as_str(),
        attempts,
        t.next_attempt_at_ms,
        t.last_error,
        t.delivered_at_ms,
        last
    ])?;
    Ok(())
}

fn finish(conn: &Connection, id: i64, attempts: u32, t: &Transition) -> Result<bool, StoreError> {
    // Only the worker holding the lease of this attempt may close it.
    let mut owned = conn.prepare_cached(
        "SELECT 1 FROM messages WHERE id = ?1 AND state = 'sending' AND attempts = ?2",
    )?;
    if owned
        .query_row(params![id, attempts], |_| Ok(()))
        .optional()?
        .is_none()
    {
        return Ok(false);
    }
    set_state(conn, id, attempts, t)?;
    Ok(true)
}

fn consent(conn: &Connection, c: &Consent) -> Result<i64, StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO consents (call_id, kind, given_at_ms, how, phone_redacted) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(call_id, kind) DO NOTHING",
    )?;
    stmt.execute(params![
        c.call_id,
        c.kind,
        c.given_at_ms,
        c.how.as_str(),
        c.phone.as_ref().map(Pii::redacted)
    ])?;
    let mut id = conn.prepare_cached("SELECT id FROM consents WHERE call_id = ?1 AND kind = ?2")?;
    Ok(id.query_row(params![c.call_id, c.kind], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn new(call: &str, channel: Channel, to: &str) -> NewMessage {
        NewMessage {
            call_id: call.into(),
            link_id: "case_status".into(),
            url: None,
            channel,
            to: Pii::new(to.into()),
            lang: Lang::Es,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ivr-outbox-unit-{name}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn prepare_validates_and_renders() {
        let p = prepare(&new("c1", Channel::Sms, "(202) 555-0134")).unwrap();
        assert_eq!(p.to, "+12025550134");
        assert_eq!(p.key, "c1:case_status:sms");
        assert_eq!(
            p.body,
            "USCIS: Consulte el estado de su caso en https://uscis.gov/casestatus"
        );
        assert!(matches!(
            prepare(&new("c1", Channel::Sms, "555-0134")),
            Err(StoreError::Recipient(RecipientError::PhoneFormat))
        ));
        let mut unknown = new("c1", Channel::Email, "a@b.org");
        unknown.link_id = "nope".into();
        assert!(matches!(prepare(&unknown), Err(StoreError::BadLink)));
        unknown.url = Some("https://ok.gov/x".into());
        assert!(prepare(&unknown).is_ok());
        unknown.call_id = String::new();
        assert!(matches!(prepare(&unknown), Err(StoreError::BadKey)));
    }

    #[test]
    fn enqueue_is_durable_and_idempotent() {
        let dir = temp_dir("idem");
        let store = Store::open(&dir).unwrap();
        let a = store
            .enqueue_blocking(&new("c1", Channel::Email, "Jane@Example.org"))
            .unwrap();
        let again = store
            .enqueue_blocking(&new("c1", Channel::Email, "other@example.org"))
            .unwrap();
        assert_eq!(a.id, again.id);
        assert_eq!(again.to.expose(), "Jane@example.org", "first one kept");
        let sms = store
            .enqueue_blocking(&new("c1", Channel::Sms, "2025550134"))
            .unwrap();
        assert_ne!(sms.id, a.id);
        drop(store);
        // A fresh process sees both rows.
        let store = Store::open(&dir).unwrap();
        let all = store.list(None, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(store.show(a.id).unwrap().unwrap(), a);
        assert!(store.show(999).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn claim_finish_and_recipient_purge() {
        let dir = temp_dir("claim");
        let store = Store::open(&dir).unwrap();
        let m = store
            .enqueue_blocking(&new("c2", Channel::Email, "a@example.org"))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let policy = RetryPolicy::default();
        rt.block_on(async {
            let now = m.created_at_ms;
            let c = store.claim(&policy, now, 10, true).await.unwrap();
            assert_eq!(c.messages.len(), 1);
            assert_eq!(c.messages[0].state, State::Sending);
            assert_eq!(c.messages[0].attempts, 1);
            assert_eq!(c.queued, 1);
            assert_eq!(c.next_due_ms, Some(now + policy.lease_ms as i64));
            // Leased: a second worker gets nothing.
            assert!(
                store
                    .claim(&policy, now + 1, 10, true)
                    .await
                    .unwrap()
                    .messages
                    .is_empty()
            );
            // A stale attempt number cannot close it.
            let done = policy.after_attempt(1, super::super::retry::Outcome::Delivered, now + 5);
            assert!(!store.finish(m.id, 2, done.clone()).await.unwrap());
            assert!(store.finish(m.id, 1, done).await.unwrap());
        });
        let got = store.show(m.id).unwrap().unwrap();
        assert_eq!(got.state, State::Delivered);
        assert_eq!(got.to.expose(), "a***@***.org", "clear recipient purged");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn consent_is_kept_once_with_redacted_phone() {
        let dir = temp_dir("consent");
        let store = Store::open(&dir).unwrap();
        let c = Consent {
            call_id: "c3".into(),
            kind: "text_ahead".into(),
            given_at_ms: 1_000,
            how: ConsentHow::Dtmf,
            phone: Some(Pii::new("2025550134".into())),
        };
        let id = store.record_consent_blocking(c.clone()).unwrap();
        let again = Consent {
            given_at_ms: 2_000,
            ..c
        };
        assert_eq!(store.record_consent_blocking(again).unwrap(), id);
        let rows = store.consents(Some("c3")).unwrap();
        assert_eq!(
            rows,
            vec![ConsentRecord {
                call_id: "c3".into(),
                kind: "text_ahead".into(),
                given_at_ms: 1_000,
                how: "dtmf".into(),
                phone_redacted: Some("***34".into()),
            }]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
