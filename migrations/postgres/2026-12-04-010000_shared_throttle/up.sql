-- Brute-force state shared by the replicas (storage/throttle.rs). UNLOGGED:
-- cheap to write, emptied by a crash of PostgreSQL (counts forgiven, as a
-- restart of one process forgives its in-memory counts). Times in unix ms.
CREATE UNLOGGED TABLE throttle_quotas (
    key BYTEA PRIMARY KEY,
    -- GCRA: the theoretical arrival time of the next request.
    tat BIGINT NOT NULL
);
CREATE INDEX throttle_quotas_tat ON throttle_quotas(tat);

CREATE UNLOGGED TABLE throttle_guesses (
    -- SHA-256 of the subject, then the client address key.
    key BYTEA PRIMARY KEY,
    failures INTEGER NOT NULL,
    in_flight INTEGER NOT NULL,
    -- Guesses in flight stop counting after this (a replica died).
    flight_until BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    last_at BIGINT NOT NULL
);
CREATE INDEX throttle_guesses_last_at ON throttle_guesses(last_at);
