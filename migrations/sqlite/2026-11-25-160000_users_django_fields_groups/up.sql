-- Django's user fields (date_joined is created_at): email (NULL when none),
-- is_staff and is_superuser. They can go into access tokens
-- (jwt.extra_claims) and import-django brings them over.
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN is_staff BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN is_superuser BOOLEAN NOT NULL DEFAULT 0;

-- Groups, as Django's auth_group and auth_user_groups.
CREATE TABLE groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE user_groups (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    group_id BIGINT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_groups_group_id ON user_groups(group_id);

-- The extra claims (a JSON object) of the access token issued with this
-- refresh token, so that a replay inside the grace window re-creates that
-- exact token even if the user's groups or the claims hook changed since.
-- NULL: none.
ALTER TABLE refresh_tokens ADD COLUMN access_claims TEXT;
