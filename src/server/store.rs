//! Call records: one [`Store`] in front of a [`Backend`] (SQLite in `<data_dir>/ivr.sqlite3` by
//! default, PostgreSQL when `[storage] url` names one).
//!
//! A record is saved when the call is answered (outcome `in_progress`), again as the call goes
//! (the call task saves at most about once a second, only when something changed) and a last
//! time at the end. Saves never block: they land in an in-memory backlog keyed by call id (a
//! newer version of a call replaces the older, so many saves between two writes cost one row
//! write) that one writer thread flushes in a transaction. When the backend cannot write (disk
//! full, read-only, database down) the backlog is kept, bounded by `backlog_records_max` (the
//! oldest call dropped and counted past it), and retried with backoff; metrics and one log line
//! per state change say so. At start the records this node left `in_progress` (a crash) become
//! `interrupted`, keeping what was known.
//!
//! Caller numbers are stored redacted: there is no column for the clear value.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// The outcome of a call that has not ended yet.
pub const IN_PROGRESS: &str = "in_progress";
/// The outcome of a call its node stopped handling without an end (killed, crashed).
pub const INTERRUPTED: &str = "interrupted";

/// What the shell knows about a call; written at answer, as the call goes, and at the end.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CallRecord {
    pub call_id: String,
    /// The node (`[node] name`) that handled the call.
    #[serde(default)]
    pub node: String,
    pub started_at: String,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    /// Redacted caller number (`***34`).
    pub caller: String,
    pub to: String,
    pub transport: String,
    pub codec: Option<String>,
    pub lang: Option<String>,
    pub digits: String,
    pub intent: Option<String>,
    pub intents: Vec<String>,
    pub prompts: Vec<String>,
    pub outcome: Option<String>,
    pub end_reason: Option<String>,
    /// "voice" or "tty".
    pub mode: String,
    /// What the call did besides playing prompts: "send_link:sms:case_status", "transfer:tty"...
    pub actions: Vec<String>,
    /// Where the routing policy sent the caller's question: "self", "tier1", "tier2", "special".
    pub route: Option<String>,
    /// Why (the policy decision's reason).
    pub route_reason: Option<String>,
    /// How a transfer ended: "referred", "bridged", "failed:<status>", "no_answer".
    pub transfer: Option<String>,
    /// Spoken answers: `{"transcripts": [..] (numbers redacted), "confidence": ..,
    /// "reply_latency_ms": [..]}`; for a TTY call what was typed: `{"caller_lines": [..]
    /// (numbers redacted), "typed_lines": n}`; null for calls that did neither.
    #[serde(default)]
    pub speech: Option<serde_json::Value>,
}

/// Where call records are kept. Writes come from the store's writer thread only; reads from the
/// admin API (on the blocking pool) and the CLI.
pub trait Backend: Send + Sync + 'static {
    /// Insert or update these records, all or none.
    fn upsert(&self, records: &[CallRecord]) -> anyhow::Result<()>;
    /// Mark `node`'s records still `in_progress` as `interrupted`; how many were.
    fn interrupt(&self, node: &str) -> anyhow::Result<u64>;
    fn call(&self, call_id: &str) -> anyhow::Result<Option<CallRecord>>;
    /// The most recent calls, newest first.
    fn recent(&self, limit: usize) -> anyhow::Result<Vec<CallRecord>>;
    /// Where the records are, for logs (no secrets).
    fn describe(&self) -> String;
}

/// How the store runs: its node's name, the backlog bound, the retry backoff.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub node: String,
    pub backlog_max: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl StoreOptions {
    pub fn new(node: impl Into<String>) -> StoreOptions {
        StoreOptions {
            node: node.into(),
            backlog_max: 10_000,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// What `/metrics` and `/readyz` report about the store.
#[derive(Default)]
pub struct StoreStats {
    backlog: AtomicU64,
    write_errors: AtomicU64,
    dropped: AtomicU64,
    failing: AtomicBool,
}

impl StoreStats {
    /// Records waiting to be written (saved, not yet durable).
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Relaxed)
    }
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Relaxed)
    }
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
    /// The last write attempt failed.
    pub fn failing(&self) -> bool {
        self.failing.load(Relaxed)
    }
}

struct Entry {
    record: CallRecord,
    /// The save that put this version here.
    seq: u64,
    /// The save that first queued this call (its place in `order`).
    first: u64,
}

/// Saved records not yet written, one version per call.
#[derive(Default)]
struct Backlog {
    entries: HashMap<String, Entry>,
    /// First-queued save → call id: the oldest call first (what goes when the bound is hit).
    order: BTreeMap<u64, String>,
    /// The last save's number.
    seq: u64,
    /// Every save numbered up to this is written.
    durable: u64,
    /// Write attempts finished.
    attempts: u64,
    /// This node's `in_progress` records from before the start are still to be marked.
    interrupt_pending: bool,
    /// The "dropping" warning was logged in this bad spell.
    dropping_logged: bool,
    closed: bool,
}

/// Call records: saves queue in memory, a writer thread writes them to the backend.
pub struct Store {
    backend: Arc<dyn Backend>,
    node: String,
    backlog_max: usize,
    state: Arc<(Mutex<Backlog>, Condvar)>,
    stats: Arc<StoreStats>,
}

fn lock(state: &(Mutex<Backlog>, Condvar)) -> MutexGuard<'_, Backlog> {
    // The backlog is consistent after every statement: a panic elsewhere cannot tear it.
    state.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// The store `[storage]` names: PostgreSQL for a `postgres://` URL, else SQLite in
    /// `paths.data_dir`.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Store> {
        let mut opts = StoreOptions::new(config.node.resolved());
        opts.backlog_max = config.storage.backlog_records_max.max(1);
        let url = config.storage.url.trim();
        let backend: Arc<dyn Backend> = if url.is_empty() {
            Arc::new(Sqlite::open(&config.paths.data_dir)?)
        } else {
            Arc::new(super::store_pg::Postgres::new(url)?)
        };
        tracing::info!(node = %opts.node, storage = %backend.describe(), "call records");
        Ok(Store::start(backend, opts))
    }

    /// SQLite in `data_dir` with default options for `node` (tests, tools).
    pub fn open_sqlite(data_dir: &Path, node: &str) -> anyhow::Result<Store> {
        Ok(Store::start(
            Arc::new(Sqlite::open(data_dir)?),
            StoreOptions::new(node),
        ))
    }

    /// Start the writer thread over `backend`. Its first write marks this node's records left
    /// `in_progress` as `interrupted` (before any record of this run is written).
    pub fn start(backend: Arc<dyn Backend>, opts: StoreOptions) -> Store {
        let state = Arc::new((
            Mutex::new(Backlog {
                interrupt_pending: true,
                ..Backlog::default()
            }),
            Condvar::new(),
        ));
        let stats = Arc::new(StoreStats::default());
        let store = Store {
            backend: backend.clone(),
            node: opts.node.clone(),
            backlog_max: opts.backlog_max.max(1),
            state: state.clone(),
            stats: stats.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("ivr-store".into())
            .spawn(move || writer_loop(backend, state, stats, opts));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the call record writer");
        }
        store
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Queue a record (a newer version of a queued call replaces it); never blocks on storage.
    /// A record without `ended_at` is `in_progress`; one without a node is this node's.
    pub fn save(&self, mut record: CallRecord) {
        if record.node.is_empty() {
            record.node = self.node.clone();
        }
        if record.ended_at.is_none() {
            record.outcome = Some(IN_PROGRESS.into());
        }
        let mut b = lock(&self.state);
        b.seq += 1;
        let seq = b.seq;
        match b.entries.get_mut(&record.call_id) {
            Some(e) => {
                e.record = record;
                e.seq = seq;
            }
            None => {
                b.order.insert(seq, record.call_id.clone());
                b.entries.insert(
                    record.call_id.clone(),
                    Entry {
                        record,
                        seq,
                        first: seq,
                    },
                );
            }
        }
        while b.entries.len() > self.backlog_max {
            let Some((_, oldest)) = b.order.pop_first() else {
                break;
            };
            b.entries.remove(&oldest);
            self.stats.dropped.fetch_add(1, Relaxed);
            if !b.dropping_logged {
                b.dropping_logged = true;
                tracing::error!(
                    backlog_max = self.backlog_max,
                    "call record backlog full: the oldest records are dropped (counted in ivr_store_dropped_records_total)"
                );
            }
        }
        self.stats.backlog.store(b.entries.len() as u64, Relaxed);
        self.state.1.notify_all();
    }

    /// Wait (10 s at most) until every record saved so far is written, or a write attempt
    /// after this call failed (shutdown, tests).
    pub fn flush(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut b = lock(&self.state);
        let target = b.seq;
        let attempts = b.attempts;
        self.state.1.notify_all();
        loop {
            let done = b.durable >= target || (b.entries.is_empty() && !b.interrupt_pending);
            let failed = b.attempts > attempts && self.stats.failing();
            let now = Instant::now();
            if done || failed || now >= deadline {
                return;
            }
            b = self
                .state
                .1
                .wait_timeout(b, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A call's record: the queued version if it is not written yet, else the stored one.
    pub fn call(&self, call_id: &str) -> anyhow::Result<Option<CallRecord>> {
        let queued = lock(&self.state)
            .entries
            .get(call_id)
            .map(|e| e.record.clone());
        match queued {
            Some(r) => Ok(Some(r)),
            None => self.backend.call(call_id),
        }
    }

    /// The most recent calls, newest first, queued versions included.
    pub fn recent(&self, limit: usize) -> anyhow::Result<Vec<CallRecord>> {
        // The backlog first: a record leaves it only once written, so none falls between.
        let queued: HashMap<String, CallRecord> = lock(&self.state)
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.record.clone()))
            .collect();
        let mut rows = self.backend.recent(limit)?;
        rows.retain(|r| !queued.contains_key(&r.call_id));
        rows.extend(queued.into_values());
        // Stable: the backend's order stays for equal start times.
        rows.sort_by(|a, b| b.started_at.cmp(&a.started_at));
        rows.truncate(limit);
        Ok(rows)
    }

    /// Prometheus text for the store's state.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        for (name, kind, help, value) in [
            (
                "ivr_store_backlog_records",
                "gauge",
                "Call records saved and not yet written to storage.",
                s.backlog(),
            ),
            (
                "ivr_store_write_errors_total",
                "counter",
                "Failed attempts to write call records (each retried with backoff).",
                s.write_errors(),
            ),
            (
                "ivr_store_dropped_records_total",
                "counter",
                "Call records dropped because the backlog was full while storage failed.",
                s.dropped(),
            ),
            (
                "ivr_store_failing",
                "gauge",
                "1 while the last write of call records failed.",
                u64::from(s.failing()),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        lock(&self.state).closed = true;
        self.state.1.notify_all();
    }
}

fn writer_loop(
    backend: Arc<dyn Backend>,
    state: Arc<(Mutex<Backlog>, Condvar)>,
    stats: Arc<StoreStats>,
    opts: StoreOptions,
) {
    let mut backoff = opts.retry_min;
    let mut retry_at: Option<Instant> = None;
    loop {
        let (batch, upto, interrupt) = {
            let mut b = lock(&state);
            loop {
                let work = !b.entries.is_empty() || b.interrupt_pending;
                if b.closed && (!work || retry_at.is_some()) {
                    // Shutting down: what could not be written after a failure is lost.
                    return;
                }
                let now = Instant::now();
                match retry_at {
                    Some(t) if work && now < t => {
                        b = state
                            .1
                            .wait_timeout(b, t - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    _ if work => break,
                    _ => b = state.1.wait(b).unwrap_or_else(|e| e.into_inner()),
                }
            }
            let batch: Vec<CallRecord> = b.entries.values().map(|e| e.record.clone()).collect();
            (batch, b.seq, b.interrupt_pending)
        };
        let mut interrupted = false;
        let result = (|| -> anyhow::Result<()> {
            if interrupt {
                let n = backend.interrupt(&opts.node)?;
                interrupted = true;
                if n > 0 {
                    tracing::warn!(
                        calls = n,
                        node = %opts.node,
                        "calls left in progress by the previous run marked interrupted"
                    );
                }
            }
            if !batch.is_empty() {
                backend.upsert(&batch)?;
            }
            Ok(())
        })();
        let mut b = lock(&state);
        b.attempts += 1;
        if interrupted {
            b.interrupt_pending = false;
        }
        match result {
            Ok(()) => {
                let written: Vec<(String, u64)> = b
                    .entries
                    .iter()
                    .filter(|(_, e)| e.seq <= upto)
                    .map(|(k, e)| (k.clone(), e.first))
                    .collect();
                for (id, first) in written {
                    b.entries.remove(&id);
                    b.order.remove(&first);
                }
                b.durable = b.durable.max(upto);
                b.dropping_logged = false;
                if stats.failing.swap(false, Relaxed) {
                    tracing::info!(
                        records = batch.len(),
                        "call records written again: storage is back"
                    );
                }
                backoff = opts.retry_min;
                retry_at = None;
            }
            Err(e) => {
                stats.write_errors.fetch_add(1, Relaxed);
                if !stats.failing.swap(true, Relaxed) {
                    tracing::error!(
                        error = %e,
                        backlog = b.entries.len(),
                        "call records cannot be written: held in memory and retried"
                    );
                }
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(opts.retry_max);
            }
        }
        stats.backlog.store(b.entries.len() as u64, Relaxed);
        state.1.notify_all();
    }
}

/// The embedded default: `<data_dir>/ivr.sqlite3` in WAL mode. A connection that failed is
/// reopened on next use (one that saw an I/O error, e.g. a file system remounted read-only,
/// may not recover by itself).
pub struct Sqlite {
    path: PathBuf,
    writer: Mutex<Option<Connection>>,
    reader: Mutex<Option<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS calls (
    call_id     TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    answered_at TEXT,
    ended_at    TEXT,
    caller      TEXT NOT NULL,
    to_user     TEXT NOT NULL,
    transport   TEXT NOT NULL,
    codec       TEXT,
    lang        TEXT,
    digits      TEXT NOT NULL,
    intent      TEXT,
    intents     TEXT NOT NULL,
    prompts     TEXT NOT NULL,
    outcome     TEXT,
    end_reason  TEXT,
    mode        TEXT NOT NULL DEFAULT 'voice',
    actions     TEXT NOT NULL DEFAULT '[]',
    route       TEXT,
    route_reason TEXT,
    transfer    TEXT,
    speech      TEXT,
    node        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);
";

pub fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl Sqlite {
    pub fn open(data_dir: &Path) -> anyhow::Result<Sqlite> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", data_dir.display()))?;
        let path = data_dir.join("ivr.sqlite3");
        let writer = open_connection(&path)?;
        writer.execute_batch(SCHEMA)?;
        // Data directories from before these columns existed get them added (an error means
        // the column is there already).
        for column in [
            "mode TEXT NOT NULL DEFAULT 'voice'",
            "actions TEXT NOT NULL DEFAULT '[]'",
            "route TEXT",
            "route_reason TEXT",
            "transfer TEXT",
            "speech TEXT",
            "node TEXT NOT NULL DEFAULT ''",
        ] {
            let _ = writer.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {column}"));
        }
        writer.execute_batch(
            "CREATE INDEX IF NOT EXISTS calls_node_outcome ON calls(node, outcome);",
        )?;
        let reader = open_connection(&path)?;
        Ok(Sqlite {
            path,
            writer: Mutex::new(Some(writer)),
            reader: Mutex::new(Some(reader)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        slot: &Mutex<Option<Connection>>,
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(open_connection(&self.path)?);
        }
        let result = match guard.as_ref() {
            Some(conn) => f(conn),
            None => Err(anyhow::anyhow!("no connection")),
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }
}

impl Backend for Sqlite {
    fn upsert(&self, records: &[CallRecord]) -> anyhow::Result<()> {
        self.with(&self.writer, |conn| {
            // One transaction: one fsync for many calls under load.
            let tx = conn.unchecked_transaction()?;
            for r in records {
                upsert(&tx, r)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn interrupt(&self, node: &str) -> anyhow::Result<u64> {
        self.with(&self.writer, |conn| {
            Ok(conn.execute(
                "UPDATE calls SET outcome = ?1, end_reason = COALESCE(end_reason, ?1)
                 WHERE node = ?2 AND outcome = ?3",
                params![INTERRUPTED, node, IN_PROGRESS],
            )? as u64)
        })
    }

    fn call(&self, call_id: &str) -> anyhow::Result<Option<CallRecord>> {
        self.with(&self.reader, |conn| read_call(conn, call_id))
    }

    fn recent(&self, limit: usize) -> anyhow::Result<Vec<CallRecord>> {
        self.with(&self.reader, |conn| recent_calls(conn, limit))
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}

const COLUMNS: &str =
    "call_id, started_at, answered_at, ended_at, caller, to_user, transport, codec, lang,
                       digits, intent, intents, prompts, outcome, end_reason, mode, actions,
                       route, route_reason, transfer, speech, node";

pub fn read_call(conn: &Connection, call_id: &str) -> anyhow::Result<Option<CallRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM calls WHERE call_id = ?1");
    Ok(conn
        .query_row(&sql, params![call_id], row_to_record)
        .optional()?)
}

/// The most recent calls, newest first.
pub fn recent_calls(conn: &Connection, limit: usize) -> anyhow::Result<Vec<CallRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM calls ORDER BY started_at DESC, rowid DESC LIMIT ?1");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![limit as i64], row_to_record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallRecord> {
    Ok(CallRecord {
        call_id: r.get(0)?,
        started_at: r.get(1)?,
        answered_at: r.get(2)?,
        ended_at: r.get(3)?,
        caller: r.get(4)?,
        to: r.get(5)?,
        transport: r.get(6)?,
        codec: r.get(7)?,
        lang: r.get(8)?,
        digits: r.get(9)?,
        intent: r.get(10)?,
        intents: serde_json::from_str(&r.get::<_, String>(11)?).unwrap_or_default(),
        prompts: serde_json::from_str(&r.get::<_, String>(12)?).unwrap_or_default(),
        outcome: r.get(13)?,
        end_reason: r.get(14)?,
        mode: r.get(15)?,
        actions: serde_json::from_str(&r.get::<_, String>(16)?).unwrap_or_default(),
        route: r.get(17)?,
        route_reason: r.get(18)?,
        transfer: r.get(19)?,
        speech: r
            .get::<_, Option<String>>(20)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        node: r.get(21)?,
    })
}

fn upsert(conn: &Connection, r: &CallRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO calls (call_id, started_at, answered_at, ended_at, caller, to_user, transport, codec,
                            lang, digits, intent, intents, prompts, outcome, end_reason, mode, actions,
                            route, route_reason, transfer, speech, node)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
         ON CONFLICT(call_id) DO UPDATE SET answered_at = excluded.answered_at, ended_at = excluded.ended_at,
             codec = excluded.codec, lang = excluded.lang, digits = excluded.digits, intent = excluded.intent,
             intents = excluded.intents, prompts = excluded.prompts, outcome = excluded.outcome,
             end_reason = excluded.end_reason, mode = excluded.mode, actions = excluded.actions,
             route = excluded.route, route_reason = excluded.route_reason, transfer = excluded.transfer,
             speech = excluded.speech, node = excluded.node",
        params![
            r.call_id,
            r.started_at,
            r.answered_at,
            r.ended_at,
            r.caller,
            r.to,
            r.transport,
            r.codec,
            r.lang,
            r.digits,
            r.intent,
            serde_json::to_string(&r.intents).unwrap_or_else(|_| "[]".into()),
            serde_json::to_string(&r.prompts).unwrap_or_else(|_| "[]".into()),
            r.outcome,
            r.end_reason,
            r.mode,
            serde_json::to_string(&r.actions).unwrap_or_else(|_| "[]".into()),
            r.route,
            r.route_reason,
            r.transfer,
            r.speech.as_ref().map(|v| v.to_string()),
            r.node,
        ],
    )?;
    Ok(())
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Test hooks shared by the unit tests and the PostgreSQL integration tests: a backend whose
/// writes can be made to fail, and the behaviour every backend must have.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// Wraps a backend; while `fail` is set every write (and `interrupt`) errors like a full or
    /// read-only disk. Counts the rows it passed on.
    pub struct Faulty {
        pub inner: Arc<dyn Backend>,
        pub fail: AtomicBool,
        pub rows_written: AtomicU64,
    }

    impl Faulty {
        pub fn new(inner: Arc<dyn Backend>) -> Arc<Faulty> {
            Arc::new(Faulty {
                inner,
                fail: AtomicBool::new(false),
                rows_written: AtomicU64::new(0),
            })
        }
    }

    impl Backend for Faulty {
        fn upsert(&self, records: &[CallRecord]) -> anyhow::Result<()> {
            if self.fail.load(Relaxed) {
                anyhow::bail!("injected fault: disk full");
            }
            self.inner.upsert(records)?;
            self.rows_written.fetch_add(records.len() as u64, Relaxed);
            Ok(())
        }
        fn interrupt(&self, node: &str) -> anyhow::Result<u64> {
            if self.fail.load(Relaxed) {
                anyhow::bail!("injected fault: disk full");
            }
            self.inner.interrupt(node)
        }
        fn call(&self, call_id: &str) -> anyhow::Result<Option<CallRecord>> {
            self.inner.call(call_id)
        }
        fn recent(&self, limit: usize) -> anyhow::Result<Vec<CallRecord>> {
            self.inner.recent(limit)
        }
        fn describe(&self) -> String {
            format!("faulty {}", self.inner.describe())
        }
    }

    pub fn record(call_id: &str, started_at: &str) -> CallRecord {
        CallRecord {
            call_id: call_id.into(),
            started_at: started_at.into(),
            answered_at: Some(started_at.into()),
            caller: "***34".into(),
            to: "ivr".into(),
            transport: "udp".into(),
            mode: "voice".into(),
            ..Default::default()
        }
    }

    /// What every backend must do, run against a fresh, empty one: round trip, update in
    /// place, newest first, interrupted marking by node only.
    pub fn backend_contract(b: &dyn Backend) {
        let mut a = record("a@h", "2026-01-01T00:00:01.000Z");
        a.node = "n1".into();
        a.outcome = Some(IN_PROGRESS.into());
        a.prompts = vec!["en:greeting".into()];
        a.intents = vec!["case_status".into()];
        a.speech = Some(serde_json::json!({"transcripts": ["hi"]}));
        let mut c = record("c@h", "2026-01-01T00:00:03.000Z");
        c.node = "n2".into();
        c.outcome = Some(IN_PROGRESS.into());
        let mut d = record("d@h", "2026-01-01T00:00:02.000Z");
        d.node = "n1".into();
        d.ended_at = Some("2026-01-01T00:00:09.000Z".into());
        d.outcome = Some("completed".into());
        b.upsert(&[a.clone(), c.clone(), d.clone()]).unwrap();
        assert_eq!(b.call("a@h").unwrap(), Some(a.clone()));
        assert_eq!(b.call("nope").unwrap(), None);
        a.digits = "12".into();
        a.actions = vec!["send_link:sms:case_status".into()];
        b.upsert(std::slice::from_ref(&a)).unwrap();
        assert_eq!(b.call("a@h").unwrap(), Some(a.clone()));
        let ids: Vec<String> = b
            .recent(10)
            .unwrap()
            .into_iter()
            .map(|r| r.call_id)
            .collect();
        assert_eq!(ids, ["c@h", "d@h", "a@h"]);
        assert_eq!(b.recent(1).unwrap().len(), 1);
        // Node n1 restarts: its in-progress call is interrupted, what was known kept; n2's
        // call and n1's ended call are untouched.
        assert_eq!(b.interrupt("n1").unwrap(), 1);
        assert_eq!(b.interrupt("n1").unwrap(), 0);
        let got = b.call("a@h").unwrap().unwrap();
        assert_eq!(got.outcome.as_deref(), Some(INTERRUPTED));
        assert_eq!(got.end_reason.as_deref(), Some(INTERRUPTED));
        assert_eq!((got.prompts, got.actions), (a.prompts, a.actions));
        assert_eq!(b.call("c@h").unwrap(), Some(c));
        assert_eq!(b.call("d@h").unwrap(), Some(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_833_106_789);
        assert_eq!(rfc3339(t), "2026-11-28T02:31:46.789Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn records_round_trip_through_sqlite() {
        let dir = std::env::temp_dir().join(format!("ivr-store-{}", std::process::id()));
        let store = Store::open_sqlite(&dir, "node-a").unwrap();
        let mut r = CallRecord {
            call_id: "abc@host".into(),
            started_at: now_rfc3339(),
            caller: crate::pii::redact("2025550134"),
            to: "ivr".into(),
            transport: "udp".into(),
            digits: String::new(),
            ..Default::default()
        };
        store.save(r.clone());
        store.flush();
        let first = store.call("abc@host").unwrap().unwrap();
        assert_eq!(first.outcome.as_deref(), Some(IN_PROGRESS));
        assert_eq!(first.node, "node-a");
        r.node = "node-a".into();
        r.ended_at = Some(now_rfc3339());
        r.digits = "213".into();
        r.intents = vec!["case_status".into()];
        r.outcome = Some("completed".into());
        r.route = Some("tier1".into());
        r.route_reason = Some("expedite: tier 1 while open".into());
        r.transfer = Some("failed:486".into());
        store.save(r.clone());
        store.flush();
        assert_eq!(store.call("abc@host").unwrap(), Some(r));
        assert_eq!(store.call("missing").unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_old_database_gets_the_new_columns() {
        let dir = std::env::temp_dir().join(format!("ivr-store-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            // The schema before mode/actions/route/transfer existed, with one call in it.
            let conn = Connection::open(dir.join("ivr.sqlite3")).unwrap();
            conn.execute_batch(
                "CREATE TABLE calls (call_id TEXT PRIMARY KEY, started_at TEXT NOT NULL,
                 answered_at TEXT, ended_at TEXT, caller TEXT NOT NULL, to_user TEXT NOT NULL,
                 transport TEXT NOT NULL, codec TEXT, lang TEXT, digits TEXT NOT NULL,
                 intent TEXT, intents TEXT NOT NULL, prompts TEXT NOT NULL, outcome TEXT,
                 end_reason TEXT);
                 INSERT INTO calls VALUES ('old@h', '2026-01-01T00:00:00.000Z', NULL, NULL,
                 '***34', 'ivr', 'udp', NULL, NULL, '', NULL, '[]', '[]', NULL, NULL);",
            )
            .unwrap();
        }
        let store = Store::open_sqlite(&dir, "node-a").unwrap();
        let old = store.call("old@h").unwrap().unwrap();
        assert_eq!(
            (old.mode.as_str(), old.transfer.as_deref()),
            ("voice", None)
        );
        let mut r = old.clone();
        r.node = "node-a".into();
        r.ended_at = Some(now_rfc3339());
        r.transfer = Some("bridged".into());
        r.route = Some("tier1".into());
        store.save(r.clone());
        store.flush();
        assert_eq!(store.call("old@h").unwrap(), Some(r));
        let _ = std::fs::remove_dir_all(dir);
    }

    use testing::{Faulty, backend_contract, record};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ivr-store-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn quick(node: &str, backlog_max: usize) -> StoreOptions {
        StoreOptions {
            node: node.into(),
            backlog_max,
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(40),
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn sqlite_keeps_the_backend_contract() {
        let dir = temp("contract");
        backend_contract(&Sqlite::open(&dir).unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn records_wait_in_memory_while_storage_fails_and_are_written_when_it_returns() {
        let dir = temp("fault");
        let faulty = Faulty::new(Arc::new(Sqlite::open(&dir).unwrap()));
        let store = Store::start(faulty.clone(), quick("n1", 100));
        store.flush();
        faulty.fail.store(true, Relaxed);
        for i in 0..5 {
            store.save(record(
                &format!("c{i}@h"),
                &format!("2026-01-01T00:00:0{i}.000Z"),
            ));
        }
        wait_for("two failed attempts", || store.stats().write_errors() >= 2);
        assert!(store.stats().failing());
        assert_eq!(store.stats().backlog(), 5);
        // Reads see the queued versions meanwhile.
        assert_eq!(store.call("c3@h").unwrap().unwrap().node, "n1");
        assert_eq!(store.recent(10).unwrap().len(), 5);
        assert_eq!(
            faulty.inner.call("c3@h").unwrap(),
            None,
            "nothing reached storage"
        );
        let mut out = String::new();
        store.render_metrics(&mut out);
        assert!(out.contains("ivr_store_backlog_records 5\n"), "{out}");
        assert!(out.contains("ivr_store_failing 1\n"), "{out}");
        // Storage returns: the backlog is written (retried with backoff) without new saves.
        faulty.fail.store(false, Relaxed);
        wait_for("the backlog written", || store.stats().backlog() == 0);
        assert!(!store.stats().failing());
        for i in 0..5 {
            let r = faulty.inner.call(&format!("c{i}@h")).unwrap().unwrap();
            assert_eq!(r.outcome.as_deref(), Some(IN_PROGRESS));
        }
        assert_eq!(store.stats().dropped(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_backlog_drops_the_oldest_calls_and_counts_them() {
        let dir = temp("bound");
        let faulty = Faulty::new(Arc::new(Sqlite::open(&dir).unwrap()));
        let store = Store::start(faulty.clone(), quick("n1", 3));
        store.flush();
        faulty.fail.store(true, Relaxed);
        for i in 0..5 {
            store.save(record(
                &format!("c{i}@h"),
                &format!("2026-01-01T00:00:0{i}.000Z"),
            ));
        }
        // A newer version of a queued call replaces it: no growth, nothing more dropped.
        let mut again = record("c4@h", "2026-01-01T00:00:04.000Z");
        again.digits = "9".into();
        store.save(again);
        assert_eq!(store.stats().backlog(), 3);
        assert_eq!(store.stats().dropped(), 2);
        faulty.fail.store(false, Relaxed);
        wait_for("the backlog written", || store.stats().backlog() == 0);
        let ids: Vec<String> = faulty
            .inner
            .recent(10)
            .unwrap()
            .into_iter()
            .map(|r| r.call_id)
            .collect();
        assert_eq!(ids, ["c4@h", "c3@h", "c2@h"]);
        assert_eq!(faulty.inner.call("c4@h").unwrap().unwrap().digits, "9");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn saves_between_two_writes_cost_one_row_write() {
        let dir = temp("coalesce");
        let faulty = Faulty::new(Arc::new(Sqlite::open(&dir).unwrap()));
        let store = Store::start(faulty.clone(), quick("n1", 100));
        store.flush();
        faulty.fail.store(true, Relaxed);
        let mut r = record("c@h", "2026-01-01T00:00:00.000Z");
        for i in 0..200 {
            r.prompts.push(format!("en:p{i}"));
            store.save(r.clone());
        }
        faulty.fail.store(false, Relaxed);
        store.flush();
        wait_for("the backlog written", || store.stats().backlog() == 0);
        assert_eq!(faulty.rows_written.load(Relaxed), 1);
        assert_eq!(
            faulty.inner.call("c@h").unwrap().unwrap().prompts.len(),
            200
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_restart_marks_this_nodes_unfinished_calls_interrupted() {
        let dir = temp("restart");
        {
            let store = Store::open_sqlite(&dir, "n1").unwrap();
            let mut a = record("a@h", "2026-01-01T00:00:01.000Z");
            a.prompts = vec!["en:greeting".into()];
            store.save(a);
            let mut done = record("done@h", "2026-01-01T00:00:02.000Z");
            done.ended_at = Some("2026-01-01T00:00:05.000Z".into());
            done.outcome = Some("completed".into());
            store.save(done);
            let mut other = record("other@h", "2026-01-01T00:00:03.000Z");
            other.node = "n2".into();
            store.save(other);
            store.flush();
        }
        // The start's interrupt failing (storage down) is retried before any new write.
        let faulty = Faulty::new(Arc::new(Sqlite::open(&dir).unwrap()));
        faulty.fail.store(true, Relaxed);
        let store = Store::start(faulty.clone(), quick("n1", 100));
        store.save(record("new@h", "2026-01-01T00:00:04.000Z"));
        wait_for("a failed attempt", || store.stats().write_errors() >= 1);
        faulty.fail.store(false, Relaxed);
        wait_for("the backlog written", || store.stats().backlog() == 0);
        let a = store.call("a@h").unwrap().unwrap();
        assert_eq!(a.outcome.as_deref(), Some(INTERRUPTED));
        assert_eq!(a.prompts, ["en:greeting"]);
        let outcome = |id: &str| store.call(id).unwrap().unwrap().outcome;
        assert_eq!(outcome("done@h").as_deref(), Some("completed"));
        assert_eq!(outcome("other@h").as_deref(), Some(IN_PROGRESS));
        assert_eq!(outcome("new@h").as_deref(), Some(IN_PROGRESS));
        let _ = std::fs::remove_dir_all(dir);
    }
}
