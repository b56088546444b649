-- Ending service tokens: disabling a client ends every token it holds
-- (those issued up to then stay refused after it is enabled again), and a
-- single token can be revoked by its jti until it expires.
ALTER TABLE clients ADD COLUMN tokens_revoked_at BIGINT;
CREATE TABLE revoked_client_tokens (
    jti TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_client_tokens_expires_at ON revoked_client_tokens(expires_at);
