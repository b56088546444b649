-- Ending service tokens: disabling a client ends every token it holds
-- (those issued up to then stay refused after it is enabled again), and a
-- single token can be revoked by its jti until it expires.
ALTER TABLE clients ADD COLUMN tokens_revoked_at BIGINT;
-- Clients disabled before this column existed: their tokens end now.
UPDATE clients SET tokens_revoked_at = CAST(strftime('%s', 'now') AS INTEGER) WHERE disabled;
CREATE TABLE revoked_client_tokens (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    -- the token's exp plus the configured leeway
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX revoked_client_tokens_expires_at ON revoked_client_tokens(expires_at);
