-- The audit trail: security events (logins, refresh token reuse, password
-- changes, revocations…), written in batches by a background task. No
-- foreign keys: events outlive the users, sessions and clients they name.
-- `at` is unix seconds; `detail` a JSON object (e.g. a failure's reason).
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    event TEXT NOT NULL,
    user_id BIGINT,
    username TEXT,
    session_id TEXT,
    client_id TEXT,
    ip TEXT,
    user_agent TEXT,
    request_id TEXT,
    detail TEXT
);
CREATE INDEX audit_events_at ON audit_events(at);
CREATE INDEX audit_events_user_at ON audit_events(user_id, at);
CREATE INDEX audit_events_event_at ON audit_events(event, at);
