//! OAuth 2 clients, in the database so that every replica sees them.

use diesel::prelude::*;

use super::schema::clients;
use super::{is_unique_violation, DbConnection, StorageError};

#[derive(Clone, Queryable)]
pub struct ClientRecord {
    pub id: String,
    pub name: String,
    pub secret_digest: Option<String>,
    pub previous_secret_digest: Option<String>,
    pub previous_valid_until: Option<i64>,
    /// Space-separated.
    pub scopes: String,
    pub audience: Option<String>,
    pub ttl_secs: Option<i64>,
    pub public_key_pem: Option<String>,
    pub disabled: bool,
    pub created_at: i64,
}

/// Never prints the secret digests.
impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A client to create.
#[derive(Debug, Clone)]
pub struct NewClient<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub secret_digest: &'a str,
    pub scopes: &'a str,
    pub audience: Option<&'a str>,
    pub ttl_secs: Option<i64>,
    pub public_key_pem: Option<&'a str>,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateClient {
    Created,
    NameTaken,
}

pub fn create(conn: &mut DbConnection, c: &NewClient) -> Result<CreateClient, StorageError> {
    let inserted = diesel::insert_into(clients::table)
        .values((
            clients::id.eq(c.id),
            clients::name.eq(c.name),
            clients::secret_digest.eq(Some(c.secret_digest)),
            clients::scopes.eq(c.scopes),
            clients::audience.eq(c.audience),
            clients::ttl_secs.eq(c.ttl_secs),
            clients::public_key_pem.eq(c.public_key_pem),
            clients::disabled.eq(false),
            clients::created_at.eq(c.now),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(CreateClient::Created),
        Err(e) if is_unique_violation(&e) => Ok(CreateClient::NameTaken),
        Err(e) => Err(e.into()),
    }
}

/// The client with this id, or else this name.
pub fn find(
    conn: &mut DbConnection,
    id_or_name: &str,
) -> Result<Option<ClientRecord>, StorageError> {
    let by_id = clients::table
        .filter(clients::id.eq(id_or_name))
        .first::<ClientRecord>(conn)
        .optional()?;
    if by_id.is_some() {
        return Ok(by_id);
    }
    Ok(clients::table
        .filter(clients::name.eq(id_or_name))
        .first::<ClientRecord>(conn)
        .optional()?)
}

/// The client with this id only (what a token request names).
pub fn by_id(conn: &mut DbConnection, id: &str) -> Result<Option<ClientRecord>, StorageError> {
    Ok(clients::table
        .filter(clients::id.eq(id))
        .first::<ClientRecord>(conn)
        .optional()?)
}

pub fn list(conn: &mut DbConnection) -> Result<Vec<ClientRecord>, StorageError> {
    Ok(clients::table.order(clients::name).load(conn)?)
}

/// A new secret; the current one stays valid until `previous_until`.
pub fn rotate_secret(
    conn: &mut DbConnection,
    id: &str,
    digest: &str,
    previous_until: i64,
) -> Result<bool, StorageError> {
    Ok(diesel::update(clients::table.filter(clients::id.eq(id)))
        .set((
            clients::previous_secret_digest.eq(clients::secret_digest),
            clients::previous_valid_until.eq(Some(previous_until)),
            clients::secret_digest.eq(Some(digest)),
        ))
        .execute(conn)?
        == 1)
}

pub fn set_disabled(
    conn: &mut DbConnection,
    id: &str,
    disabled: bool,
) -> Result<bool, StorageError> {
    Ok(diesel::update(clients::table.filter(clients::id.eq(id)))
        .set(clients::disabled.eq(disabled))
        .execute(conn)?
        == 1)
}

pub fn delete(conn: &mut DbConnection, id: &str) -> Result<bool, StorageError> {
    Ok(diesel::delete(clients::table.filter(clients::id.eq(id))).execute(conn)? == 1)
}

/// Records the `jti` of an accepted client assertion: false when it was
/// seen before (a replay). Expired ones are cleared first (the table holds
/// only assertions still valid: bounded by their short lifetime).
pub fn use_assertion(
    conn: &mut DbConnection,
    client_id: &str,
    jti: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, StorageError> {
    use super::schema::client_assertions as ca;
    diesel::delete(ca::table.filter(ca::expires_at.lt(now))).execute(conn)?;
    match diesel::insert_into(ca::table)
        .values((
            ca::client_id.eq(client_id),
            ca::jti.eq(jti),
            ca::expires_at.eq(expires_at),
        ))
        .execute(conn)
    {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
