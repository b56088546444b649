-- The purge looks for sessions revoked long ago.
CREATE INDEX sessions_revoked_at ON sessions(revoked_at);
