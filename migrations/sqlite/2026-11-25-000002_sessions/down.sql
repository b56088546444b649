-- SQLite cannot drop a column that takes part in a foreign key: rebuild.
DROP INDEX refresh_tokens_session_id;
CREATE TABLE refresh_tokens_v1 (
    jti TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    replaced_by TEXT
);
INSERT INTO refresh_tokens_v1
    SELECT jti, user_id, issued_at, expires_at, revoked_at, replaced_by FROM refresh_tokens;
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_v1 RENAME TO refresh_tokens;
CREATE INDEX refresh_tokens_user_id ON refresh_tokens(user_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens(expires_at);
DROP TABLE sessions;
