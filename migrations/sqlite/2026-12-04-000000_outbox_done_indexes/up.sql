-- Sent and given-up messages, for the purge (sent_at or dead_at before the
-- retention) and the dead-message gauge: without these both read the whole
-- table, which grows with every delivered message until it is purged.
CREATE INDEX outbox_sent_at ON outbox(sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX outbox_dead_at ON outbox(dead_at) WHERE dead_at IS NOT NULL;
