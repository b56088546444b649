-- The instant (unix seconds) of the user's last login, recorded only when
-- jwt.update_last_login is on (simplejwt's UPDATE_LAST_LOGIN); NULL: never
-- recorded. import-django brings Django's auth_user.last_login over.
ALTER TABLE users ADD COLUMN last_login BIGINT;
