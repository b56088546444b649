-- private_key_jwt (RFC 7523): the jti of every client assertion accepted,
-- until the assertion expires, so that none is accepted twice.
CREATE TABLE client_assertions (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertions_expires_at ON client_assertions(expires_at);
