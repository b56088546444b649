-- "Your devices": where each session was started, and when it was last
-- used. NULL when unknown (sessions started before these columns existed;
-- a login without a User-Agent header). last_used_at (unix seconds) is set
-- at login and at each refresh rotation, never per request.
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN ip TEXT;
ALTER TABLE sessions ADD COLUMN last_used_at BIGINT;
