//! Users: lookup, creation (the unique index decides races), deletion.

use diesel::prelude::*;

use super::invalidate::{changed_then, Notice};
use super::schema::users;
use super::{is_unique_violation, DbConnection, StorageError};
use crate::auth::claims::UserProfile;
use crate::auth::email::Email;

#[derive(Clone, Queryable)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub is_active: bool,
    /// Imported with the id the legacy (Django) service gave this same
    /// user: that service's sessionless tokens name this user.
    pub kept_legacy_id: bool,
    pub email: Option<String>,
    pub email_verified: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
}

/// Never prints the password hash.
impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("is_active", &self.is_active)
            .field("kept_legacy_id", &self.kept_legacy_id)
            .field("email_verified", &self.email_verified)
            .field("is_staff", &self.is_staff)
            .field("is_superuser", &self.is_superuser)
            .finish_non_exhaustive()
    }
}

type UserColumns = (
    users::id,
    users::username,
    users::password_hash,
    users::is_active,
    users::kept_legacy_id,
    users::email,
    users::email_verified,
    users::is_staff,
    users::is_superuser,
);
const USER_COLUMNS: UserColumns = (
    users::id,
    users::username,
    users::password_hash,
    users::is_active,
    users::kept_legacy_id,
    users::email,
    users::email_verified,
    users::is_staff,
    users::is_superuser,
);

/// The user whose address has this uniqueness key, if any.
pub fn find_by_email_key(
    conn: &mut DbConnection,
    key: &str,
) -> Result<Option<UserRecord>, StorageError> {
    Ok(users::table
        .filter(users::email_key.eq(key))
        .select(USER_COLUMNS)
        .first(conn)
        .optional()?)
}

pub fn email_key_exists(conn: &mut DbConnection, key: &str) -> Result<bool, StorageError> {
    Ok(diesel::select(diesel::dsl::exists(
        users::table.filter(users::email_key.eq(key)),
    ))
    .get_result(conn)?)
}

/// dj-rest-auth's user details: (username, email, first_name, last_name).
pub type Details = (String, Option<String>, String, String);

pub fn details(conn: &mut DbConnection, id: i64) -> Result<Option<Details>, StorageError> {
    Ok(users::table
        .filter(users::id.eq(id))
        .select((
            users::username,
            users::email,
            users::first_name,
            users::last_name,
        ))
        .first(conn)
        .optional()?)
}

pub fn find_by_username(
    conn: &mut DbConnection,
    name: &str,
) -> Result<Option<UserRecord>, StorageError> {
    Ok(users::table
        .filter(users::username.eq(name))
        .select(USER_COLUMNS)
        .first(conn)
        .optional()?)
}

pub fn find_by_id(conn: &mut DbConnection, id: i64) -> Result<Option<UserRecord>, StorageError> {
    Ok(users::table
        .filter(users::id.eq(id))
        .select(USER_COLUMNS)
        .first(conn)
        .optional()?)
}

/// The user as claims see them (with their groups); `None` when there is
/// no such user.
pub fn profile(conn: &mut DbConnection, id: i64) -> Result<Option<UserProfile>, StorageError> {
    let row: Option<(String, Option<String>, bool, bool, bool)> = users::table
        .filter(users::id.eq(id))
        .select((
            users::username,
            users::email,
            users::is_active,
            users::is_staff,
            users::is_superuser,
        ))
        .first(conn)
        .optional()?;
    let Some((username, email, is_active, is_staff, is_superuser)) = row else {
        return Ok(None);
    };
    Ok(Some(UserProfile {
        id,
        username,
        email,
        is_active,
        is_staff,
        is_superuser,
        groups: super::groups::names_of(conn, id)?,
    }))
}

/// A flag of Django's user model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Staff,
    Superuser,
}

/// Sets `flag` of user `id`; false when there is no such user.
pub fn set_flag(
    conn: &mut DbConnection,
    id: i64,
    flag: Flag,
    value: bool,
) -> Result<bool, StorageError> {
    let target = users::table.filter(users::id.eq(id));
    let changed = match flag {
        Flag::Staff => diesel::update(target)
            .set(users::is_staff.eq(value))
            .execute(conn)?,
        Flag::Superuser => diesel::update(target)
            .set(users::is_superuser.eq(value))
            .execute(conn)?,
    };
    Ok(changed == 1)
}

pub fn username_exists(conn: &mut DbConnection, name: &str) -> Result<bool, StorageError> {
    Ok(diesel::select(diesel::dsl::exists(
        users::table.filter(users::username.eq(name)),
    ))
    .get_result(conn)?)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateUser {
    Created { id: i64 },
    UsernameTaken,
    EmailTaken,
}

/// Inserts a user. Concurrent registrations of one name (or address) are
/// decided by the unique indexes: exactly one insert wins, the others see
/// `UsernameTaken` (or `EmailTaken`). `mailed` (a verification token and
/// its mail) is recorded in the same transaction.
pub fn create(
    conn: &mut DbConnection,
    name: &str,
    password_hash: &str,
    email: Option<&Email>,
    mailed: Option<&super::account_tokens::MailedToken>,
    now: i64,
) -> Result<CreateUser, StorageError> {
    let inserted = conn.transaction(|conn| {
        let id = diesel::insert_into(users::table)
            .values((
                users::username.eq(name),
                users::password_hash.eq(password_hash),
                users::is_active.eq(true),
                users::created_at.eq(now),
                users::email.eq(email.map(Email::as_str)),
                users::email_key.eq(email.map(Email::key)),
            ))
            .returning(users::id)
            .get_result::<i64>(conn)?;
        if let Some(token) = mailed {
            super::account_tokens::issue_mailed(conn, id, token, now)?;
        }
        Ok::<_, diesel::result::Error>(id)
    });
    match inserted {
        Ok(id) => Ok(CreateUser::Created { id }),
        Err(e) if is_unique_violation(&e) => Ok(if username_exists(conn, name)? {
            CreateUser::UsernameTaken
        } else {
            CreateUser::EmailTaken
        }),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a user; their refresh tokens go with them (ON DELETE CASCADE).
pub fn delete(conn: &mut DbConnection, id: i64) -> Result<bool, StorageError> {
    changed_then(conn, Notice::User(id), |conn| {
        Ok(diesel::delete(users::table.filter(users::id.eq(id))).execute(conn)? == 1)
    })
}

pub fn set_active(conn: &mut DbConnection, id: i64, active: bool) -> Result<bool, StorageError> {
    changed_then(conn, Notice::User(id), |conn| {
        Ok(diesel::update(users::table.filter(users::id.eq(id)))
            .set(users::is_active.eq(active))
            .execute(conn)?
            == 1)
    })
}

/// What a password change found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordChange {
    /// Changed; this many other sessions were revoked.
    Changed { revoked: usize },
    /// The password is no longer the one checked (changed or reset
    /// meanwhile): nothing changed.
    Superseded,
    /// The session to keep was revoked meanwhile (a reset, logout
    /// everywhere): nothing changed.
    SessionRevoked,
}

/// Replaces the password hash and revokes every session of the user except
/// `keep`, in one transaction. With `replaces` (the hash the old password
/// was checked against), only if the password is still that one and `keep`
/// is still live: a change checked before a concurrent reset must not undo
/// it.
pub fn change_password(
    conn: &mut DbConnection,
    id: i64,
    hash: &str,
    keep: Option<&str>,
    replaces: Option<&str>,
    now: i64,
) -> Result<PasswordChange, StorageError> {
    conn.transaction(|conn| {
        let target = users::table.filter(users::id.eq(id));
        let changed = match replaces {
            Some(old) => diesel::update(target.filter(users::password_hash.eq(old)))
                .set(users::password_hash.eq(hash))
                .execute(conn)?,
            None => diesel::update(target)
                .set(users::password_hash.eq(hash))
                .execute(conn)?,
        };
        if replaces.is_some() && changed == 0 {
            return Ok(PasswordChange::Superseded);
        }
        if let Some(sid) = keep.filter(|_| replaces.is_some()) {
            if !matches!(
                super::sessions::state_of(conn, sid, id, now)?,
                super::sessions::SessionState::Live { .. }
            ) {
                // Undo the update above: the transaction rolls back.
                return Err(StorageError::Query(
                    diesel::result::Error::RollbackTransaction,
                ));
            }
        }
        // A reset link mailed before must not undo this change.
        super::account_tokens::void_resets(conn, id)?;
        let revoked = super::sessions::revoke_all_for_user(
            conn,
            id,
            keep,
            super::sessions::RevokeReason::PasswordChange,
            now,
        )?;
        Ok(PasswordChange::Changed { revoked })
    })
    .or_else(|e| match e {
        StorageError::Query(diesel::result::Error::RollbackTransaction) => {
            Ok(PasswordChange::SessionRevoked)
        }
        e => Err(e),
    })
}

/// Replaces `old` by `new` (a re-hash after a successful login), unless the
/// password changed meanwhile. Sessions are untouched: same password.
pub fn upgrade_password_hash(
    conn: &mut DbConnection,
    id: i64,
    old: &str,
    new: &str,
) -> Result<bool, StorageError> {
    Ok(diesel::update(
        users::table
            .filter(users::id.eq(id))
            .filter(users::password_hash.eq(old)),
    )
    .set(users::password_hash.eq(new))
    .execute(conn)?
        == 1)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportUser {
    /// Imported with the same id.
    Imported,
    /// Imported with the same id but without its e-mail address, which
    /// another user here has (addresses are unique here, not in Django).
    ImportedWithoutEmail,
    /// This very user was imported before (same id and name): unchanged.
    AlreadyImported,
    /// The username exists here already (a namesake registered here):
    /// not imported.
    UsernameTaken,
    /// The id belongs to a different user here: refused. Renumbering would
    /// leave the legacy service's tokens for this id naming that other user.
    IdTaken,
}

/// A user as another service (Django) holds it.
#[derive(Clone)]
pub struct ImportedUser<'a> {
    pub id: i64,
    pub username: &'a str,
    pub password_hash: &'a str,
    pub email: Option<&'a str>,
    pub email_verified: bool,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub last_login: Option<i64>,
    /// Django's date_joined (tokend's created_at).
    pub date_joined: i64,
}

/// Inserts a user imported from elsewhere with its id (so that `user_id`
/// claims and other services' references name the same person), or
/// refuses when the id is someone else's here.
pub fn import(conn: &mut DbConnection, user: &ImportedUser) -> Result<ImportUser, StorageError> {
    conn.transaction(|conn| {
        let by_name: Option<(i64, String, bool)> = users::table
            .filter(users::username.eq(user.username))
            .select((users::id, users::password_hash, users::kept_legacy_id))
            .first(conn)
            .optional()?;
        if let Some((existing, hash, kept)) = by_name {
            if existing == user.id && kept {
                return Ok(ImportUser::AlreadyImported);
            }
            if existing == user.id && hash == user.password_hash {
                // This very row was imported before the marker existed
                // (same id, name and hash): the legacy service's tokens for
                // this id are this user's. Anything less (a namesake
                // registered here) proves nothing.
                diesel::update(users::table.filter(users::id.eq(user.id)))
                    .set(users::kept_legacy_id.eq(true))
                    .execute(conn)?;
                // Cached summaries carry the marker.
                super::invalidate::user(conn, user.id)?;
                return Ok(ImportUser::AlreadyImported);
            }
            return Ok(ImportUser::UsernameTaken);
        }
        let id_taken = diesel::select(diesel::dsl::exists(
            users::table.filter(users::id.eq(user.id)),
        ))
        .get_result::<bool>(conn)?;
        if id_taken {
            return Ok(ImportUser::IdTaken);
        }
        let key = user.email.map(crate::auth::email::key_of);
        let email_taken = match &key {
            Some(key) => diesel::select(diesel::dsl::exists(
                users::table.filter(users::email_key.eq(key)),
            ))
            .get_result::<bool>(conn)?,
            None => false,
        };
        let (email, key) = if email_taken {
            (None, None)
        } else {
            (user.email, key)
        };
        diesel::insert_into(users::table)
            .values((
                users::id.eq(user.id),
                users::username.eq(user.username),
                users::password_hash.eq(user.password_hash),
                users::email.eq(email),
                users::email_key.eq(key),
                users::email_verified.eq(user.email_verified && email.is_some()),
                users::first_name.eq(user.first_name),
                users::last_name.eq(user.last_name),
                users::is_active.eq(user.is_active),
                users::is_staff.eq(user.is_staff),
                users::is_superuser.eq(user.is_superuser),
                users::created_at.eq(user.date_joined),
                users::kept_legacy_id.eq(true),
                users::last_login.eq(user.last_login),
            ))
            .execute(conn)?;
        Ok(if email_taken {
            ImportUser::ImportedWithoutEmail
        } else {
            ImportUser::Imported
        })
    })
}

/// Adds an imported user to an (imported) group: only the user imported
/// with this id and name, never a namesake registered here. True when a
/// membership was added.
pub fn import_membership(
    conn: &mut DbConnection,
    id: i64,
    username: &str,
    group: &str,
) -> Result<bool, StorageError> {
    let imported = diesel::select(diesel::dsl::exists(
        users::table
            .filter(users::id.eq(id))
            .filter(users::username.eq(username))
            .filter(users::kept_legacy_id.eq(true)),
    ))
    .get_result::<bool>(conn)?;
    if !imported {
        return Ok(false);
    }
    Ok(super::groups::add_member(conn, id, group)? == super::groups::Membership::Changed)
}

/// Makes every id tokend hands out from now on larger than `at_least`, so
/// that imported users can keep their ids: no registration during the
/// import takes one of them.
pub fn reserve_ids(conn: &mut DbConnection, at_least: i64) -> Result<(), StorageError> {
    let at_least = at_least.max(0);
    match conn {
        DbConnection::Postgresql(pg) => {
            diesel::sql_query(format!(
                "SELECT setval(pg_get_serial_sequence('users', 'id'), \
                 GREATEST((SELECT COALESCE(MAX(id), 0) FROM users), {at_least}, 1))"
            ))
            .execute(pg)?;
        }
        DbConnection::Sqlite(lite) => {
            diesel::sql_query(format!(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'users', {at_least} \
                 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'users')"
            ))
            .execute(lite)?;
            diesel::sql_query(format!(
                "UPDATE sqlite_sequence SET seq = MAX(seq, {at_least}) WHERE name = 'users'"
            ))
            .execute(lite)?;
        }
    }
    Ok(())
}

/// After inserting explicit ids: PostgreSQL's identity sequence must move
/// past them (SQLite's AUTOINCREMENT does so by itself), and stay at or
/// above `at_least` (ids kept for refused or skipped imports are not handed
/// to new users either).
pub fn advance_id_sequence(conn: &mut DbConnection, at_least: i64) -> Result<(), StorageError> {
    if let DbConnection::Postgresql(pg) = conn {
        diesel::sql_query(format!(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), \
             GREATEST((SELECT COALESCE(MAX(id), 0) FROM users), {}, 1))",
            at_least.max(0)
        ))
        .execute(pg)?;
    }
    Ok(())
}

pub fn list(conn: &mut DbConnection) -> Result<Vec<UserRecord>, StorageError> {
    Ok(users::table
        .order(users::id)
        .select(USER_COLUMNS)
        .load(conn)?)
}

/// A user as the admin API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    /// Unix seconds (`created_at`).
    pub date_joined: i64,
    pub last_login: Option<i64>,
    pub email_verified: bool,
    /// Names, sorted.
    pub groups: Vec<String>,
}

type AccountRow = (
    i64,
    String,
    Option<String>,
    String,
    String,
    bool,
    bool,
    bool,
    i64,
    Option<i64>,
    bool,
);

impl From<AccountRow> for AccountView {
    fn from(r: AccountRow) -> Self {
        AccountView {
            id: r.0,
            username: r.1,
            email: r.2,
            first_name: r.3,
            last_name: r.4,
            is_active: r.5,
            is_staff: r.6,
            is_superuser: r.7,
            date_joined: r.8,
            last_login: r.9,
            email_verified: r.10,
            groups: Vec::new(),
        }
    }
}

const ACCOUNT_COLUMNS: (
    users::id,
    users::username,
    users::email,
    users::first_name,
    users::last_name,
    users::is_active,
    users::is_staff,
    users::is_superuser,
    users::created_at,
    users::last_login,
    users::email_verified,
) = (
    users::id,
    users::username,
    users::email,
    users::first_name,
    users::last_name,
    users::is_active,
    users::is_staff,
    users::is_superuser,
    users::created_at,
    users::last_login,
    users::email_verified,
);

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);
diesel::define_sql_function!(fn coalesce(x: diesel::sql_types::Nullable<diesel::sql_types::Text>, y: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// `LIKE` pattern of a case-insensitive substring: `%`, `_` and `\`
/// escaped (with `\`).
fn contains_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A page of users by id after `after_id`: those whose username or e-mail
/// address contains `search` (any case), at most `limit`, and whether more
/// follow.
pub fn account_page(
    conn: &mut DbConnection,
    search: Option<&str>,
    after_id: Option<i64>,
    limit: i64,
) -> Result<(Vec<AccountView>, bool), StorageError> {
    let mut query = users::table
        .select(ACCOUNT_COLUMNS)
        .order(users::id)
        .limit(limit + 1)
        .into_boxed();
    if let Some(search) = search {
        let pattern = contains_pattern(search);
        // email_key is the address lowercased.
        query = query.filter(
            lower(users::username)
                .like(pattern.clone())
                .escape('\\')
                .or(coalesce(users::email_key, "").like(pattern).escape('\\')),
        );
    }
    if let Some(after) = after_id {
        query = query.filter(users::id.gt(after));
    }
    let rows: Vec<AccountRow> = query.load(conn)?;
    let more = rows.len() as i64 > limit;
    let mut page: Vec<AccountView> = rows
        .into_iter()
        .take(limit.max(0) as usize)
        .map(AccountView::from)
        .collect();
    fill_groups(conn, &mut page)?;
    Ok((page, more))
}

/// User `id` as the admin API shows it.
pub fn account(conn: &mut DbConnection, id: i64) -> Result<Option<AccountView>, StorageError> {
    let found: Option<AccountRow> = users::table
        .filter(users::id.eq(id))
        .select(ACCOUNT_COLUMNS)
        .first(conn)
        .optional()?;
    let mut found: Vec<AccountView> = found.into_iter().map(AccountView::from).collect();
    fill_groups(conn, &mut found)?;
    Ok(found.pop())
}

/// The groups of every user of `page`, in one query.
fn fill_groups(conn: &mut DbConnection, page: &mut [AccountView]) -> Result<(), StorageError> {
    use super::schema::{groups, user_groups};
    let ids: Vec<i64> = page.iter().map(|u| u.id).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let rows: Vec<(i64, String)> = user_groups::table
        .inner_join(groups::table)
        .filter(user_groups::user_id.eq_any(&ids))
        .select((user_groups::user_id, groups::name))
        .order((user_groups::user_id, groups::name))
        .load(conn)?;
    for (user_id, name) in rows {
        if let Some(user) = page.iter_mut().find(|u| u.id == user_id) {
            user.groups.push(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn search_patterns_escape_like_wildcards() {
        assert_eq!(contains_pattern("Ali"), "%ali%");
        assert_eq!(contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
