-- Call records shared by every node ([storage] url = "postgres://..."). Applied once by the
-- first node to start, under an advisory lock; the version is kept in ivr_schema_migrations.
-- JSON lists are stored as text, like the SQLite schema, so both backends map rows the same way.
CREATE TABLE IF NOT EXISTS calls (
    call_id      TEXT PRIMARY KEY,
    node         TEXT NOT NULL DEFAULT '',
    started_at   TEXT NOT NULL,
    answered_at  TEXT,
    ended_at     TEXT,
    caller       TEXT NOT NULL,
    to_user      TEXT NOT NULL,
    transport    TEXT NOT NULL,
    codec        TEXT,
    lang         TEXT,
    digits       TEXT NOT NULL,
    intent       TEXT,
    intents      TEXT NOT NULL,
    prompts      TEXT NOT NULL,
    outcome      TEXT,
    end_reason   TEXT,
    mode         TEXT NOT NULL DEFAULT 'voice',
    actions      TEXT NOT NULL DEFAULT '[]',
    route        TEXT,
    route_reason TEXT,
    transfer     TEXT,
    speech       TEXT
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at);
CREATE INDEX IF NOT EXISTS calls_node_outcome ON calls (node, outcome);
