DROP TABLE revoked_client_tokens;
ALTER TABLE clients DROP COLUMN tokens_revoked_at;
