-- The outbox shared by every node: links to send by SMS or email, and consents. Same columns
-- and meaning as the SQLite outbox (src/outbox/store.rs). A worker claims due rows with
-- FOR UPDATE SKIP LOCKED and marks them 'sending' with next_attempt_at_ms = now + lease: a
-- node that dies mid-send leaves a row another node claims once the lease has expired.
CREATE TABLE IF NOT EXISTS outbox_messages (
    id                 BIGSERIAL PRIMARY KEY,
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
    next_attempt_at_ms BIGINT NOT NULL,
    last_error         TEXT,
    created_at_ms      BIGINT NOT NULL,
    delivered_at_ms    BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_messages_due ON outbox_messages (state, next_attempt_at_ms);
CREATE TABLE IF NOT EXISTS outbox_consents (
    id             BIGSERIAL PRIMARY KEY,
    call_id        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    given_at_ms    BIGINT NOT NULL,
    how            TEXT NOT NULL,
    phone_redacted TEXT,
    UNIQUE (call_id, kind)
);
