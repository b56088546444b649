ALTER TABLE refresh_tokens DROP COLUMN access_claims;
DROP TABLE user_groups;
DROP TABLE groups;
ALTER TABLE users DROP COLUMN is_superuser;
ALTER TABLE users DROP COLUMN is_staff;
ALTER TABLE users DROP COLUMN email;
