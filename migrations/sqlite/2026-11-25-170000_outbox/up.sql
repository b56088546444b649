-- The outbox: messages (e-mail now, webhooks later) written in the same
-- transaction as the change that caused them, delivered at least once by a
-- background sender that survives restarts. `payload` is the message as
-- JSON; `claimed_until` leases a row to one sender (one replica) at a time.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_until BIGINT,
    last_error TEXT,
    sent_at BIGINT,
    -- Given up after its retries: kept for the operator, never sent.
    dead_at BIGINT
);
CREATE INDEX outbox_due ON outbox(kind, next_attempt_at) WHERE sent_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_created_at ON outbox(created_at);
