-- Users and refresh tokens. Instants are unix seconds (BIGINT) so that the
-- same queries work on SQLite and PostgreSQL.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    -- Access and refresh tokens issued before this instant are revoked
    -- (password change, logout everywhere).
    tokens_valid_after BIGINT NOT NULL DEFAULT 0
);

-- One row per issued refresh token, by its jti only: the token string itself
-- is never stored. revoked_at is set when it is spent by rotation or
-- blacklisted; replaced_by names the successor of a rotation.
CREATE TABLE refresh_tokens (
    jti TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    replaced_by TEXT
);
CREATE INDEX refresh_tokens_user_id ON refresh_tokens(user_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens(expires_at);
