DROP INDEX outbox_dead_at;
DROP INDEX outbox_sent_at;
