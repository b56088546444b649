-- Sessions (token families): every login starts one, rotations stay in it.
-- Revoking a session (reuse detected, logout everywhere, password change,
-- account disabled) makes all its access and refresh tokens fail.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    -- Absolute cap: no rotation extends a session past this instant.
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoke_reason TEXT
);
CREATE INDEX sessions_user_id ON sessions(user_id);
CREATE INDEX sessions_expires_at ON sessions(expires_at);

-- The session a refresh token belongs to, and the access token issued with
-- it: together with issued_at/expires_at these re-create the exact pair
-- (HS256 signatures are deterministic) when a rotation is replayed inside
-- the grace window.
ALTER TABLE refresh_tokens ADD COLUMN session_id TEXT REFERENCES sessions(id) ON DELETE CASCADE;
ALTER TABLE refresh_tokens ADD COLUMN access_jti TEXT;
ALTER TABLE refresh_tokens ADD COLUMN access_expires_at BIGINT;
CREATE INDEX refresh_tokens_session_id ON refresh_tokens(session_id);
