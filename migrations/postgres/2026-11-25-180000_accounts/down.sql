DROP TABLE account_tokens;
DROP INDEX users_email_key;
ALTER TABLE users DROP COLUMN last_name;
ALTER TABLE users DROP COLUMN first_name;
ALTER TABLE users DROP COLUMN email_verified;
ALTER TABLE users DROP COLUMN email_key;
