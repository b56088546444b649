//! Groups and memberships (Django's auth_group and auth_user_groups).

use diesel::prelude::*;

use super::schema::{groups, user_groups};
use super::{is_unique_violation, DbConnection, StorageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateGroup {
    Created,
    Exists,
}

/// Creates group `name`; the unique index decides concurrent creations.
pub fn create(conn: &mut DbConnection, name: &str) -> Result<CreateGroup, StorageError> {
    match diesel::insert_into(groups::table)
        .values(groups::name.eq(name))
        .execute(conn)
    {
        Ok(_) => Ok(CreateGroup::Created),
        Err(e) if is_unique_violation(&e) => Ok(CreateGroup::Exists),
        Err(e) => Err(e.into()),
    }
}

/// Deletes group `name` and its memberships; false when there is none.
pub fn delete(conn: &mut DbConnection, name: &str) -> Result<bool, StorageError> {
    Ok(diesel::delete(groups::table.filter(groups::name.eq(name))).execute(conn)? == 1)
}

/// Every group with its member count, by name.
pub fn list(conn: &mut DbConnection) -> Result<Vec<(String, i64)>, StorageError> {
    Ok(groups::table
        .left_join(user_groups::table)
        .group_by((groups::id, groups::name))
        .select((
            groups::name,
            diesel::dsl::count(user_groups::user_id.nullable()),
        ))
        .order(groups::name)
        .load(conn)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Changed,
    Unchanged,
    NoSuchGroup,
}

fn group_id(conn: &mut DbConnection, name: &str) -> Result<Option<i64>, diesel::result::Error> {
    groups::table
        .filter(groups::name.eq(name))
        .select(groups::id)
        .first(conn)
        .optional()
}

/// Adds user `user_id` to group `name` (idempotent).
pub fn add_member(
    conn: &mut DbConnection,
    user_id: i64,
    name: &str,
) -> Result<Membership, StorageError> {
    let Some(group) = group_id(conn, name)? else {
        return Ok(Membership::NoSuchGroup);
    };
    // ON CONFLICT: a unique violation would abort an enclosing transaction
    // on PostgreSQL. diesel's MultiConnection has no upsert: each backend's.
    let insert = diesel::insert_into(user_groups::table)
        .values((
            user_groups::user_id.eq(user_id),
            user_groups::group_id.eq(group),
        ))
        .on_conflict_do_nothing();
    let added = match conn {
        DbConnection::Sqlite(conn) => insert.execute(conn)?,
        DbConnection::Postgresql(conn) => insert.execute(conn)?,
    };
    Ok(if added == 1 {
        Membership::Changed
    } else {
        Membership::Unchanged
    })
}

/// Removes user `user_id` from group `name`.
pub fn remove_member(
    conn: &mut DbConnection,
    user_id: i64,
    name: &str,
) -> Result<Membership, StorageError> {
    let Some(group) = group_id(conn, name)? else {
        return Ok(Membership::NoSuchGroup);
    };
    let removed = diesel::delete(
        user_groups::table
            .filter(user_groups::user_id.eq(user_id))
            .filter(user_groups::group_id.eq(group)),
    )
    .execute(conn)?;
    Ok(if removed == 1 {
        Membership::Changed
    } else {
        Membership::Unchanged
    })
}

/// The names of the groups of user `user_id`, sorted.
pub fn names_of(
    conn: &mut DbConnection,
    user_id: i64,
) -> Result<Vec<String>, diesel::result::Error> {
    groups::table
        .inner_join(user_groups::table)
        .filter(user_groups::user_id.eq(user_id))
        .select(groups::name)
        .order(groups::name)
        .load(conn)
}
