DROP INDEX refresh_tokens_session_id;
ALTER TABLE refresh_tokens DROP COLUMN access_expires_at;
ALTER TABLE refresh_tokens DROP COLUMN access_jti;
ALTER TABLE refresh_tokens DROP COLUMN session_id;
DROP TABLE sessions;
