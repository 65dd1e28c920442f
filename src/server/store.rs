//! Call records in SQLite (`<data_dir>/ivr.sqlite3`, WAL). One writer thread owns the write
//! connection so call tasks never block on disk; reads (admin API, CLI) use their own connection.
//! Caller numbers are stored redacted: there is no column for the clear value.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// What the shell knows about a call; written at start and again at the end.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CallRecord {
    pub call_id: String,
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

enum Write {
    Upsert(Box<CallRecord>),
    Flush(mpsc::Sender<()>),
}

/// Handle to the store; cheap to clone via `Arc`.
pub struct Store {
    tx: Mutex<mpsc::Sender<Write>>,
    reader: Mutex<Connection>,
    path: PathBuf,
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
    speech      TEXT
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

impl Store {
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
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
        ] {
            let _ = writer.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {column}"));
        }
        let reader = open_connection(&path)?;
        let (tx, rx) = mpsc::channel::<Write>();
        std::thread::Builder::new()
            .name("ivr-store".into())
            .spawn(move || writer_loop(writer, rx))?;
        Ok(Store {
            tx: Mutex::new(tx),
            reader: Mutex::new(reader),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue a write; never blocks on disk.
    pub fn save(&self, record: CallRecord) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(Write::Upsert(Box::new(record)));
        }
    }

    /// Wait until every queued write is on disk (shutdown, tests).
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(Write::Flush(done_tx));
        }
        let _ = done_rx.recv_timeout(std::time::Duration::from_secs(10));
    }

    pub fn call(&self, call_id: &str) -> anyhow::Result<Option<CallRecord>> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| anyhow::anyhow!("store reader poisoned"))?;
        read_call(&conn, call_id)
    }

    pub fn recent(&self, limit: usize) -> anyhow::Result<Vec<CallRecord>> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| anyhow::anyhow!("store reader poisoned"))?;
        recent_calls(&conn, limit)
    }
}

const COLUMNS: &str =
    "call_id, started_at, answered_at, ended_at, caller, to_user, transport, codec, lang,
                       digits, intent, intents, prompts, outcome, end_reason, mode, actions,
                       route, route_reason, transfer, speech";

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
    })
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        // Batch what is queued into one transaction: one fsync for many calls under load.
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut acks = Vec::new();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            for w in batch {
                match w {
                    Write::Upsert(r) => upsert(&tx, &r)?,
                    Write::Flush(ack) => acks.push(ack),
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write call records");
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

fn upsert(conn: &Connection, r: &CallRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO calls (call_id, started_at, answered_at, ended_at, caller, to_user, transport, codec,
                            lang, digits, intent, intents, prompts, outcome, end_reason, mode, actions,
                            route, route_reason, transfer, speech)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)
         ON CONFLICT(call_id) DO UPDATE SET answered_at = excluded.answered_at, ended_at = excluded.ended_at,
             codec = excluded.codec, lang = excluded.lang, digits = excluded.digits, intent = excluded.intent,
             intents = excluded.intents, prompts = excluded.prompts, outcome = excluded.outcome,
             end_reason = excluded.end_reason, mode = excluded.mode, actions = excluded.actions,
             route = excluded.route, route_reason = excluded.route_reason, transfer = excluded.transfer,
             speech = excluded.speech",
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
        let store = Store::open(&dir).unwrap();
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
        let store = Store::open(&dir).unwrap();
        let old = store.call("old@h").unwrap().unwrap();
        assert_eq!(
            (old.mode.as_str(), old.transfer.as_deref()),
            ("voice", None)
        );
        let mut r = old.clone();
        r.transfer = Some("bridged".into());
        r.route = Some("tier1".into());
        store.save(r.clone());
        store.flush();
        assert_eq!(store.call("old@h").unwrap(), Some(r));
        let _ = std::fs::remove_dir_all(dir);
    }
}
