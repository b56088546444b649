//! Reading users out of a Django database (`auth_user`, SQLite or
//! PostgreSQL) for `tokend users import-django`. The source is opened read
//! only and never modified.

use diesel::prelude::*;
use diesel::{Connection, PgConnection, SqliteConnection};

use super::{DbConnection, StorageError};
use crate::config::DatabaseUrl;

diesel::table! {
    auth_user (id) {
        id -> Integer,
        password -> Text,
        username -> Text,
        email -> Text,
        first_name -> Text,
        last_name -> Text,
        is_active -> Bool,
        is_staff -> Bool,
        is_superuser -> Bool,
    }
}

diesel::table! {
    auth_group (id) {
        id -> Integer,
        name -> Text,
    }
}

diesel::table! {
    auth_user_groups (id) {
        id -> Integer,
        user_id -> Integer,
        group_id -> Integer,
    }
}

diesel::joinable!(auth_user_groups -> auth_group (group_id));
diesel::joinable!(auth_user_groups -> auth_user (user_id));
diesel::allow_tables_to_appear_in_same_query!(auth_user, auth_group, auth_user_groups);

#[derive(Clone, Queryable)]
pub struct DjangoUser {
    pub id: i32,
    pub password: String,
    pub username: String,
    /// "" when none (Django's way).
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    /// Unix seconds; `None` when Django never recorded a login (or, on
    /// SQLite, the stored text is not a date SQLite reads).
    pub last_login: Option<i64>,
    /// Unix seconds; `None` only when SQLite cannot read the stored text.
    pub date_joined: Option<i64>,
    /// django-allauth verified this address (false without allauth).
    pub email_verified: bool,
}

/// Never prints the password hash.
impl std::fmt::Debug for DjangoUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Opens the Django database read only (SQLite: `mode=ro`, no pragma is
/// changed; PostgreSQL: a read-only transaction default).
pub fn open(url: &str) -> Result<DbConnection, StorageError> {
    let unavailable = |e: diesel::ConnectionError| {
        StorageError::unavailable("cannot connect to the Django database", e)
    };
    match DatabaseUrl::parse(url)
        .map_err(|e| StorageError::unavailable("bad Django database URL", e))?
    {
        DatabaseUrl::Sqlite(path) => {
            if !std::path::Path::new(&path).is_file() {
                return Err(StorageError::Unavailable {
                    context: format!("no such file: {path}").into(),
                    source: None,
                });
            }
            let conn = SqliteConnection::establish(&format!("file:{path}?mode=ro"))
                .map_err(unavailable)?;
            Ok(DbConnection::Sqlite(conn))
        }
        DatabaseUrl::Postgres(url) => {
            let mut conn = PgConnection::establish(&url).map_err(unavailable)?;
            diesel::sql_query("SET default_transaction_read_only = on").execute(&mut conn)?;
            Ok(DbConnection::Postgresql(conn))
        }
    }
}

/// The highest user id in the Django table (0 when empty).
pub fn max_id(conn: &mut DbConnection) -> Result<i64, StorageError> {
    let max: Option<i32> = auth_user::table
        .select(diesel::dsl::max(auth_user::id))
        .first(conn)?;
    Ok(max.map_or(0, i64::from))
}

pub fn count(conn: &mut DbConnection) -> Result<i64, StorageError> {
    Ok(auth_user::table.count().get_result(conn)?)
}

/// Up to `limit` users with ids above `after`, in id order (keyset pages:
/// bounded memory whatever the table size).
pub fn page(
    conn: &mut DbConnection,
    after: i32,
    limit: i64,
) -> Result<Vec<DjangoUser>, StorageError> {
    // Dates are timestamps with time zone on PostgreSQL and text (UTC when
    // Django's USE_TZ is on, its default) on SQLite: each database converts
    // them to unix seconds, truncated as tokend stores them.
    let seconds = |column: &str| -> diesel::expression::SqlLiteral<
        diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
    > {
        diesel::dsl::sql(&match conn {
            DbConnection::Sqlite(_) => format!("CAST(strftime('%s', {column}) AS BIGINT)"),
            DbConnection::Postgresql(_) => {
                format!("CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS BIGINT)")
            }
        })
    };
    let (last_login, date_joined) = (seconds("last_login"), seconds("date_joined"));
    // django-allauth keeps verified addresses in its own table, when it is
    // installed.
    let verified = if has_table(conn, "account_emailaddress")? {
        "EXISTS (SELECT 1 FROM account_emailaddress a WHERE a.user_id = auth_user.id \
         AND lower(a.email) = lower(auth_user.email) AND a.verified)"
    } else {
        "1 = 0"
    };
    let verified = diesel::dsl::sql::<diesel::sql_types::Bool>(verified);
    Ok(auth_user::table
        .filter(auth_user::id.gt(after))
        .order(auth_user::id)
        .limit(limit)
        .select((
            auth_user::id,
            auth_user::password,
            auth_user::username,
            auth_user::email,
            auth_user::first_name,
            auth_user::last_name,
            auth_user::is_active,
            auth_user::is_staff,
            auth_user::is_superuser,
            last_login,
            date_joined,
            verified,
        ))
        .load(conn)?)
}

/// Whether the source database has table `name`.
fn has_table(conn: &mut DbConnection, name: &str) -> Result<bool, StorageError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let query = match conn {
        DbConnection::Sqlite(_) => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?"
        }
        DbConnection::Postgresql(_) => {
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let found: Found = diesel::sql_query(query)
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result(conn)?;
    Ok(found.n > 0)
}

/// Every group name, by id.
pub fn group_names(conn: &mut DbConnection) -> Result<Vec<String>, StorageError> {
    Ok(auth_group::table
        .order(auth_group::id)
        .select(auth_group::name)
        .load(conn)?)
}

/// Up to `limit` memberships (row id, user id, username, group name) with
/// row ids above `after`, in row id order.
pub fn memberships(
    conn: &mut DbConnection,
    after: i32,
    limit: i64,
) -> Result<Vec<(i32, i32, String, String)>, StorageError> {
    Ok(auth_user_groups::table
        .inner_join(auth_user::table)
        .inner_join(auth_group::table)
        .filter(auth_user_groups::id.gt(after))
        .order(auth_user_groups::id)
        .limit(limit)
        .select((
            auth_user_groups::id,
            auth_user_groups::user_id,
            auth_user::username,
            auth_group::name,
        ))
        .load(conn)?)
}
