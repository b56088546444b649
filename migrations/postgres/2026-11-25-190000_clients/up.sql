-- OAuth 2 clients (service identities). Secrets are 256 random bits, so
-- a SHA-256 digest is stored (no slow hash needed); during a rotation the
-- previous secret stays valid until previous_valid_until.
CREATE TABLE clients (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    secret_digest TEXT,
    previous_secret_digest TEXT,
    previous_valid_until BIGINT,
    -- space-separated, as the scope parameter
    scopes TEXT NOT NULL,
    audience TEXT,
    ttl_secs BIGINT,
    -- private_key_jwt: the client's public key (PEM)
    public_key_pem TEXT,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
