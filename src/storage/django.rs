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
        is_active -> Bool,
    }
}

#[derive(Clone, Queryable)]
pub struct DjangoUser {
    pub id: i32,
    pub password: String,
    pub username: String,
    pub is_active: bool,
    /// Unix seconds; `None` when Django never recorded a login (or, on
    /// SQLite, the stored text is not a date SQLite reads).
    pub last_login: Option<i64>,
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
    // `last_login` is a timestamp with time zone on PostgreSQL and text
    // (UTC when Django's USE_TZ is on, its default) on SQLite: each
    // database converts it to unix seconds, truncated as tokend stores them.
    let last_login = match conn {
        DbConnection::Sqlite(_) => "CAST(strftime('%s', last_login) AS BIGINT)",
        DbConnection::Postgresql(_) => "CAST(FLOOR(EXTRACT(EPOCH FROM last_login)) AS BIGINT)",
    };
    Ok(auth_user::table
        .filter(auth_user::id.gt(after))
        .order(auth_user::id)
        .limit(limit)
        .select((
            auth_user::id,
            auth_user::password,
            auth_user::username,
            auth_user::is_active,
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(last_login),
        ))
        .load(conn)?)
}
