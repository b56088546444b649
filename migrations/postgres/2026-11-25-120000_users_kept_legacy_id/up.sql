-- True when the user was imported with the id the legacy (Django) service
-- gave this same user: only then may a sessionless token of that service,
-- which names the user by that id alone, act as this user (and only while
-- jwt.accept_sessionless_until allows such tokens at all).
ALTER TABLE users ADD COLUMN kept_legacy_id BOOLEAN NOT NULL DEFAULT FALSE;
