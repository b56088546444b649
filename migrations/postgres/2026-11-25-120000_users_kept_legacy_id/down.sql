ALTER TABLE users DROP COLUMN kept_legacy_id;
