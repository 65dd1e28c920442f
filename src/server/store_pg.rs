//! Call records in PostgreSQL (`[storage] url = "postgres://..."`), shared by every node: any
//! node's admin API reads any node's calls. Connections are opened lazily and reopened after an
//! error, so a database that is down at start or goes away mid-run only grows the store's
//! in-memory backlog (see `store`). The schema is `migrations/postgres/*.sql`, applied in order
//! on the first connection under an advisory lock (nodes starting together apply it once); the
//! outbox (`outbox::store_pg`) applies the same list.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use postgres::{Client, NoTls, Row};

use super::store::{Backend, CallRecord, IN_PROGRESS, INTERRUPTED};

/// The migrations, in order: (version, SQL).
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_outbox.sql")),
];

/// Any value, the same on every node: serialises schema changes.
const MIGRATION_LOCK: i64 = 0x0069_7672_5f6d_6967; // "ivr_mig"

pub struct Postgres {
    config: postgres::Config,
    /// host:port/db for logs (no password).
    target: String,
    writer: Mutex<Option<Client>>,
    reader: Mutex<Option<Client>>,
    migrated: AtomicBool,
}

impl Postgres {
    /// Parse the URL; nothing is connected yet (a database down at start is not an error).
    pub fn new(url: &str) -> anyhow::Result<Postgres> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("storage.url: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        config.application_name("ivr");
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let target = format!(
            "{}:{}/{}",
            hosts.join(","),
            ports.join(","),
            config.get_dbname().unwrap_or("")
        );
        Ok(Postgres {
            config,
            target,
            writer: Mutex::new(None),
            reader: Mutex::new(None),
            migrated: AtomicBool::new(false),
        })
    }

    /// A new connection, the schema migrated (once per process).
    pub fn connect(&self) -> anyhow::Result<Client> {
        let mut client = self
            .config
            .connect(NoTls)
            .map_err(|e| anyhow::anyhow!("postgres {}: {}", self.target, error_text(&e)))?;
        if !self.migrated.load(Relaxed) {
            migrate(&mut client)?;
            self.migrated.store(true, Relaxed);
        }
        Ok(client)
    }

    fn with<T>(
        &self,
        slot: &Mutex<Option<Client>>,
        f: impl FnOnce(&mut Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.connect()?);
        }
        let result = match guard.as_mut() {
            Some(client) => f(client),
            None => Err(anyhow::anyhow!("no connection")),
        };
        if result.is_err() {
            // The next use reconnects (the server may have restarted).
            *guard = None;
        }
        result
    }
}

/// A client error with the server's message ("db error" alone says nothing).
pub fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Apply the migrations not applied yet, under an advisory lock.
pub fn migrate(client: &mut Client) -> anyhow::Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = (|| -> anyhow::Result<()> {
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS ivr_schema_migrations (
                 version INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )?;
        for (version, sql) in MIGRATIONS {
            let done = client
                .query_opt(
                    "SELECT 1 FROM ivr_schema_migrations WHERE version = $1",
                    &[version],
                )?
                .is_some();
            if done {
                continue;
            }
            let mut tx = client.transaction()?;
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO ivr_schema_migrations (version) VALUES ($1)",
                &[version],
            )?;
            tx.commit()?;
            tracing::info!(version, "postgres migration applied");
        }
        Ok(())
    })();
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result?;
    unlocked?;
    Ok(())
}

const COLUMNS: &str = "call_id, started_at, answered_at, ended_at, caller, to_user, transport, \
     codec, lang, digits, intent, intents, prompts, outcome, end_reason, mode, actions, route, \
     route_reason, transfer, speech, node";

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn row_to_record(r: &Row) -> CallRecord {
    let list = |i: usize| serde_json::from_str(&r.get::<_, String>(i)).unwrap_or_default();
    CallRecord {
        call_id: r.get(0),
        started_at: r.get(1),
        answered_at: r.get(2),
        ended_at: r.get(3),
        caller: r.get(4),
        to: r.get(5),
        transport: r.get(6),
        codec: r.get(7),
        lang: r.get(8),
        digits: r.get(9),
        intent: r.get(10),
        intents: list(11),
        prompts: list(12),
        outcome: r.get(13),
        end_reason: r.get(14),
        mode: r.get(15),
        actions: list(16),
        route: r.get(17),
        route_reason: r.get(18),
        transfer: r.get(19),
        speech: r
            .get::<_, Option<String>>(20)
            .and_then(|s| serde_json::from_str(&s).ok()),
        node: r.get(21),
    }
}

impl Backend for Postgres {
    fn upsert(&self, records: &[CallRecord]) -> anyhow::Result<()> {
        self.with(&self.writer, |client| {
            let mut tx = client.transaction()?;
            let stmt = tx.prepare(&format!(
                "INSERT INTO calls ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                     $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
                 ON CONFLICT (call_id) DO UPDATE SET answered_at = excluded.answered_at,
                     ended_at = excluded.ended_at, codec = excluded.codec, lang = excluded.lang,
                     digits = excluded.digits, intent = excluded.intent, intents = excluded.intents,
                     prompts = excluded.prompts, outcome = excluded.outcome,
                     end_reason = excluded.end_reason, mode = excluded.mode,
                     actions = excluded.actions, route = excluded.route,
                     route_reason = excluded.route_reason, transfer = excluded.transfer,
                     speech = excluded.speech, node = excluded.node"
            ))?;
            for r in records {
                let speech = r.speech.as_ref().map(|v| v.to_string());
                tx.execute(
                    &stmt,
                    &[
                        &r.call_id,
                        &r.started_at,
                        &r.answered_at,
                        &r.ended_at,
                        &r.caller,
                        &r.to,
                        &r.transport,
                        &r.codec,
                        &r.lang,
                        &r.digits,
                        &r.intent,
                        &json_list(&r.intents),
                        &json_list(&r.prompts),
                        &r.outcome,
                        &r.end_reason,
                        &r.mode,
                        &json_list(&r.actions),
                        &r.route,
                        &r.route_reason,
                        &r.transfer,
                        &speech,
                        &r.node,
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn interrupt(&self, node: &str) -> anyhow::Result<u64> {
        self.with(&self.writer, |client| {
            Ok(client.execute(
                "UPDATE calls SET outcome = $1, end_reason = COALESCE(end_reason, $1)
                 WHERE node = $2 AND outcome = $3",
                &[&INTERRUPTED, &node, &IN_PROGRESS],
            )?)
        })
    }

    fn call(&self, call_id: &str) -> anyhow::Result<Option<CallRecord>> {
        self.with(&self.reader, |client| {
            Ok(client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM calls WHERE call_id = $1"),
                    &[&call_id],
                )?
                .as_ref()
                .map(row_to_record))
        })
    }

    fn recent(&self, limit: usize) -> anyhow::Result<Vec<CallRecord>> {
        self.with(&self.reader, |client| {
            let rows = client.query(
                &format!(
                    "SELECT {COLUMNS} FROM calls ORDER BY started_at DESC, call_id DESC LIMIT $1"
                ),
                &[&(limit as i64)],
            )?;
            Ok(rows.iter().map(row_to_record).collect())
        })
    }

    fn describe(&self) -> String {
        format!("postgres {}", self.target)
    }
}
