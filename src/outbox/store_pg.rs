//! The outbox in PostgreSQL (`[storage] url = "postgres://..."`), shared by every node. The
//! same requests as the SQLite outbox (`store`), run by one writer thread per node that folds
//! what is waiting into one transaction; each request gets its reply after the commit, so an
//! enqueue is acknowledged only once it is durable. Claims take due rows with
//! `FOR UPDATE SKIP LOCKED` (two nodes never claim one row at once) and lease them (`sending`
//! until `next_attempt_at_ms`): a node that dies mid-send leaves rows another node claims when
//! the lease expires. `finish` closes an attempt only if the row is still that attempt's, and
//! the idempotency key (SMTP Message-ID, SMS Idempotency-Key) is the row's, whichever node sends.

use std::sync::{Arc, Mutex, mpsc};

use postgres::{Client, Row};

use super::retry::{RetryPolicy, Transition};
use super::store::{Claimed, Cmd, Consent, ConsentRecord, Done, Prepared, StoreError, fail_cmd};
use super::{Channel, Message, State};
use crate::pii::Pii;
use crate::types::Lang;

const COLUMNS: &str = "id, idempotency_key, call_id, channel, recipient, recipient_redacted, lang, \
    link_id, url, subject, body, state, attempts, next_attempt_at_ms, last_error, created_at_ms, \
    delivered_at_ms";

/// Most requests folded into one transaction.
const BATCH_MAX: usize = 256;

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Postgres(crate::server::store_pg::error_text(&e))
}

/// Connection settings shared by the writer and the reader.
#[derive(Clone)]
pub struct PgOutbox {
    inner: Arc<crate::server::store_pg::Postgres>,
}

impl PgOutbox {
    pub fn new(url: &str) -> Result<PgOutbox, StoreError> {
        Ok(PgOutbox {
            inner: Arc::new(
                crate::server::store_pg::Postgres::new(url)
                    .map_err(|e| StoreError::Postgres(e.to_string()))?,
            ),
        })
    }

    pub fn describe(&self) -> String {
        use crate::server::store::Backend;
        self.inner.describe()
    }

    /// A new connection, the schema migrated.
    fn connect(&self) -> Result<Client, StoreError> {
        self.inner
            .connect()
            .map_err(|e| StoreError::Postgres(e.to_string()))
    }
}

/// Reads (`ivr outbox`-style listing) over their own connection, reopened after an error.
pub struct PgReader {
    db: PgOutbox,
    conn: Mutex<Option<Client>>,
}

impl PgReader {
    pub fn new(db: PgOutbox) -> PgReader {
        PgReader {
            db,
            conn: Mutex::new(None),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.db.connect()?);
        }
        let result = match guard.as_mut() {
            Some(c) => f(c),
            None => Err(StoreError::Closed),
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }

    pub fn list(&self, state: Option<State>, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.with(|c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM outbox_messages WHERE $1::TEXT IS NULL OR state = $1 \
                         ORDER BY id DESC LIMIT $2"
                    ),
                    &[&state.map(State::as_str), &(limit as i64)],
                )
                .map_err(pg)?;
            rows.iter().map(row_to_message).collect()
        })
    }

    pub fn show(&self, id: i64) -> Result<Option<Message>, StoreError> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM outbox_messages WHERE id = $1"),
                &[&id],
            )
            .map_err(pg)?
            .as_ref()
            .map(row_to_message)
            .transpose()
        })
    }

    pub fn consents(&self, call_id: Option<&str>) -> Result<Vec<ConsentRecord>, StoreError> {
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT call_id, kind, given_at_ms, how, phone_redacted FROM outbox_consents \
                     WHERE $1::TEXT IS NULL OR call_id = $1 ORDER BY id",
                    &[&call_id],
                )
                .map_err(pg)?;
            Ok(rows
                .iter()
                .map(|r| ConsentRecord {
                    call_id: r.get(0),
                    kind: r.get(1),
                    given_at_ms: r.get(2),
                    how: r.get(3),
                    phone_redacted: r.get(4),
                })
                .collect())
        })
    }
}

fn row_to_message(r: &Row) -> Result<Message, StoreError> {
    let text = |i: usize| -> String { r.get(i) };
    let bad = |what: &str| StoreError::Postgres(format!("unknown {what} in outbox_messages"));
    let channel = Channel::parse(&text(3)).ok_or_else(|| bad("channel"))?;
    let lang = Lang::from_code(&text(6)).ok_or_else(|| bad("lang"))?;
    let state = State::parse(&text(11)).ok_or_else(|| bad("state"))?;
    let clear = text(4);
    // Final messages keep only the redacted recipient; show that rather than an empty one.
    let to = if clear.is_empty() { text(5) } else { clear };
    Ok(Message {
        id: r.get(0),
        idempotency_key: text(1),
        call_id: text(2),
        channel,
        to: Pii::new(to),
        lang,
        link_id: text(7),
        url: text(8),
        subject: text(9),
        body: text(10),
        state,
        attempts: r.get::<_, i32>(12).max(0) as u32,
        next_attempt_at_ms: r.get(13),
        last_error: r.get(14),
        created_at_ms: r.get(15),
        delivered_at_ms: r.get(16),
    })
}

/// The writer thread: batches requests into one transaction, replies after the commit. No
/// connection (database down): every request in the batch fails, and the next batch retries.
pub(crate) fn writer_loop(db: PgOutbox, rx: mpsc::Receiver<Cmd>) {
    let mut conn: Option<Client> = None;
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
        if conn.as_ref().is_none_or(Client::is_closed) {
            conn = match db.connect() {
                Ok(c) => Some(c),
                Err(e) => {
                    let msg = e.to_string();
                    for cmd in batch.drain(..) {
                        fail_cmd(cmd, &msg);
                    }
                    continue;
                }
            };
        }
        let Some(client) = conn.as_mut() else {
            continue;
        };
        let reset = match client.transaction() {
            Err(e) => {
                let msg = crate::server::store_pg::error_text(&e);
                for cmd in batch.drain(..) {
                    fail_cmd(cmd, &msg);
                }
                true
            }
            Ok(mut tx) => {
                // A failed statement aborts a PostgreSQL transaction: the rest of the batch and
                // the commit then fail too, and every request in it gets the error.
                for cmd in batch.drain(..) {
                    done.push(apply(&mut tx, cmd));
                }
                let commit_err = tx
                    .commit()
                    .err()
                    .map(|e| crate::server::store_pg::error_text(&e));
                for d in done.drain(..) {
                    d.send(commit_err.as_deref());
                }
                commit_err.is_some()
            }
        };
        if reset {
            conn = None;
        }
    }
}

fn apply(tx: &mut postgres::Transaction<'_>, cmd: Cmd) -> Done {
    match cmd {
        Cmd::Enqueue(p, now, r) => Done::Enqueue(r, insert(tx, &p, now)),
        Cmd::Claim(policy, now, limit, sms, r) => {
            Done::Claim(r, claim(tx, &policy, now, limit, sms))
        }
        Cmd::Finish(id, attempts, t, r) => Done::Finish(r, finish(tx, id, attempts, &t)),
        Cmd::Consent(c, r) => Done::Consent(r, consent(tx, &c)),
    }
}

fn insert(
    tx: &mut postgres::Transaction<'_>,
    p: &Prepared,
    now: i64,
) -> Result<(Message, bool), StoreError> {
    let inserted = tx
        .query_opt(
            "INSERT INTO outbox_messages (idempotency_key, call_id, channel, recipient, \
             recipient_redacted, lang, link_id, url, subject, body, state, attempts, \
             next_attempt_at_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 0, $11, $11) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            &[
                &p.key,
                &p.call_id,
                &p.channel.as_str(),
                &p.to,
                &crate::pii::redact(&p.to),
                &p.lang.code(),
                &p.link_id,
                &p.url,
                &p.subject,
                &p.body,
                &now,
            ],
        )
        .map_err(pg)?;
    if let Some(row) = inserted {
        let msg = p.pending_message(row.get(0), now);
        return Ok((msg, true));
    }
    let row = tx
        .query_one(
            &format!("SELECT {COLUMNS} FROM outbox_messages WHERE idempotency_key = $1"),
            &[&p.key],
        )
        .map_err(pg)?;
    Ok((row_to_message(&row)?, false))
}

fn claim(
    tx: &mut postgres::Transaction<'_>,
    policy: &RetryPolicy,
    now: i64,
    limit: usize,
    sms_enabled: bool,
) -> Result<Claimed, StoreError> {
    // Rows another node's open transaction holds are skipped, not waited for; once it commits
    // they are `sending` under its lease and not due.
    let rows = tx
        .query(
            "SELECT id, attempts FROM outbox_messages WHERE state IN ('pending', 'sending') \
             AND next_attempt_at_ms <= $1 AND ($3 OR channel <> 'sms') \
             ORDER BY next_attempt_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now, &(limit as i64), &sms_enabled],
        )
        .map_err(pg)?;
    let mut out = Claimed::default();
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get(0);
        let attempts = row.get::<_, i32>(1).max(0) as u32;
        let (t, attempts) = policy.claim(attempts, now);
        set_state(tx, id, attempts, &t, None)?;
        if t.state == State::Sending {
            ids.push(id);
        } else {
            out.failed += 1;
        }
    }
    for id in ids {
        let row = tx
            .query_one(
                &format!("SELECT {COLUMNS} FROM outbox_messages WHERE id = $1"),
                &[&id],
            )
            .map_err(pg)?;
        out.messages.push(row_to_message(&row)?);
    }
    let stats = tx
        .query_one(
            "SELECT MIN(next_attempt_at_ms), COUNT(*) FROM outbox_messages \
             WHERE state IN ('pending', 'sending') AND ($1 OR channel <> 'sms')",
            &[&sms_enabled],
        )
        .map_err(pg)?;
    out.next_due_ms = stats.get(0);
    out.queued = stats.get(1);
    Ok(out)
}

/// Update a row's state; with `owner` (the attempt number) only if that attempt still holds
/// it. Whether a row changed.
fn set_state(
    tx: &mut postgres::Transaction<'_>,
    id: i64,
    attempts: u32,
    t: &Transition,
    owner: Option<u32>,
) -> Result<bool, StoreError> {
    let last = matches!(t.state, State::Delivered | State::Failed);
    let n = tx
        .execute(
            "UPDATE outbox_messages SET state = $2, attempts = $3, next_attempt_at_ms = $4, \
             last_error = COALESCE($5, last_error), delivered_at_ms = $6, \
             recipient = CASE WHEN $7 THEN '' ELSE recipient END \
             WHERE id = $1 AND ($8::INTEGER IS NULL OR (state = 'sending' AND attempts = $8))",
            &[
                &id,
                &t.state.as_str(),
                &(attempts as i32),
                &t.next_attempt_at_ms,
                &t.last_error,
                &t.delivered_at_ms,
                &last,
                &owner.map(|a| a as i32),
            ],
        )
        .map_err(pg)?;
    Ok(n == 1)
}

fn finish(
    tx: &mut postgres::Transaction<'_>,
    id: i64,
    attempts: u32,
    t: &Transition,
) -> Result<bool, StoreError> {
    // Only the worker holding the lease of this attempt may close it.
    set_state(tx, id, attempts, t, Some(attempts))
}

fn consent(tx: &mut postgres::Transaction<'_>, c: &Consent) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO outbox_consents (call_id, kind, given_at_ms, how, phone_redacted) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_id, kind) DO NOTHING",
        &[
            &c.call_id,
            &c.kind,
            &c.given_at_ms,
            &c.how.as_str(),
            &c.phone.as_ref().map(Pii::redacted),
        ],
    )
    .map_err(pg)?;
    let row = tx
        .query_one(
            "SELECT id FROM outbox_consents WHERE call_id = $1 AND kind = $2",
            &[&c.call_id, &c.kind],
        )
        .map_err(pg)?;
    Ok(row.get(0))
}
