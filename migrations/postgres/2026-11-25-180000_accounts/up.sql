-- Accounts: e-mail addresses (unique ignoring case: email_key is the
-- address lowercased, NULL without one), their verification, the name
-- fields of Django's user, and one-time tokens (password reset, address
-- verification) of which only a SHA-256 digest is stored.
ALTER TABLE users ADD COLUMN email_key TEXT;
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN first_name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN last_name TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX users_email_key ON users(email_key);

CREATE TABLE account_tokens (
    digest TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- 'reset' or 'verify'
    purpose TEXT NOT NULL,
    -- verify: the address it confirms (the user may have changed it since)
    email TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX account_tokens_user_id ON account_tokens(user_id);
CREATE INDEX account_tokens_expires_at ON account_tokens(expires_at);
