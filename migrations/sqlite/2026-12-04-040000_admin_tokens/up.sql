-- Service tokens issued with the scope tokend:admin, by id: the admin API
-- honours only tokens on record here, so a token signed by anyone else who
-- holds an HS256 key (every service checking tokens with it) opens nothing.
CREATE TABLE admin_tokens (
    jti TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX admin_tokens_expires_at ON admin_tokens(expires_at);
