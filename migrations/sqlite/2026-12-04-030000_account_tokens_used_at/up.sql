-- The purge deletes used one-time tokens before they expire: by index.
CREATE INDEX account_tokens_used_at ON account_tokens(used_at) WHERE used_at IS NOT NULL;
