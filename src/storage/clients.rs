//! OAuth 2 clients, in the database so that every replica sees them.

use diesel::prelude::*;

use super::invalidate::{changed_then, Notice};
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
    /// Tokens issued at or before this time are refused (set when the
    /// client is disabled).
    pub tokens_revoked_at: Option<i64>,
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

/// Disabling also ends every token issued so far: they stay refused when
/// the client is enabled again.
pub fn set_disabled(
    conn: &mut DbConnection,
    id: &str,
    disabled: bool,
    now: i64,
) -> Result<bool, StorageError> {
    let target = clients::table.filter(clients::id.eq(id));
    if !disabled {
        // Nothing cached changes: tokens from before the disable stay
        // ended, and none were issued since.
        return Ok(diesel::update(target)
            .set(clients::disabled.eq(false))
            .execute(conn)?
            == 1);
    }
    changed_then(conn, Notice::Client(id.to_owned()), |conn| {
        Ok(diesel::update(target)
            .set((
                clients::disabled.eq(true),
                clients::tokens_revoked_at.eq(Some(now)),
            ))
            .execute(conn)?
            == 1)
    })
}

/// Whether a service token may be honoured, as the database says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientTokenState {
    /// The client is enabled and the token was not revoked; what the
    /// client's tokens may say now.
    Live(LiveClient),
    /// Revoked by itself (RFC 7009), or ended when its client was disabled.
    Revoked,
    /// Its client is disabled now.
    Disabled,
    /// Its client was deleted (ids are never reused).
    Missing,
}

/// What an enabled client's tokens may carry: whoever holds the signing
/// key (a downstream service, in HS256 mode) could sign anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveClient {
    pub audience: Option<String>,
    /// Space-separated.
    pub scopes: String,
    pub ttl_secs: Option<i64>,
    pub created_at: i64,
}

/// The state of the token `jti` issued to `client_id` at `iat`.
pub fn token_state(
    conn: &mut DbConnection,
    client_id: &str,
    jti: &str,
    iat: i64,
) -> Result<ClientTokenState, StorageError> {
    use super::schema::revoked_client_tokens as rct;
    let client = clients::table
        .filter(clients::id.eq(client_id))
        .select((
            clients::disabled,
            clients::tokens_revoked_at,
            clients::audience,
            clients::scopes,
            clients::ttl_secs,
            clients::created_at,
        ))
        .first::<(bool, Option<i64>, Option<String>, String, Option<i64>, i64)>(conn)
        .optional()?;
    let Some((disabled, revoked_at, audience, scopes, ttl_secs, created_at)) = client else {
        return Ok(ClientTokenState::Missing);
    };
    if revoked_at.is_some_and(|at| iat <= at) {
        return Ok(ClientTokenState::Revoked);
    }
    if disabled {
        return Ok(ClientTokenState::Disabled);
    }
    let revoked = rct::table
        .filter(rct::client_id.eq(client_id))
        .filter(rct::jti.eq(jti))
        .count()
        .get_result::<i64>(conn)?
        > 0;
    Ok(if revoked {
        ClientTokenState::Revoked
    } else {
        ClientTokenState::Live(LiveClient {
            audience,
            scopes,
            ttl_secs,
            created_at,
        })
    })
}

/// Revokes one service token until it expires; true when newly revoked.
pub fn revoke_token(
    conn: &mut DbConnection,
    client_id: &str,
    jti: &str,
    expires_at: i64,
) -> Result<bool, StorageError> {
    use super::schema::revoked_client_tokens as rct;
    // A duplicate rolls the transaction (or its savepoint) back.
    match conn.transaction(|conn| {
        diesel::insert_into(rct::table)
            .values((
                rct::jti.eq(jti),
                rct::client_id.eq(client_id),
                rct::expires_at.eq(expires_at),
            ))
            .execute(conn)?;
        super::invalidate::client_token(conn, client_id, jti)
    }) {
        Ok(()) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Forgets at most `batch` revocations of tokens that have expired
/// anyway; the number removed.
pub fn purge_revoked_tokens(
    conn: &mut DbConnection,
    now: i64,
    batch: i64,
) -> Result<usize, StorageError> {
    use super::schema::revoked_client_tokens as rct;
    let expired: Vec<String> = rct::table
        .select(rct::jti)
        .filter(rct::expires_at.lt(now))
        .limit(batch)
        .load(conn)?;
    if expired.is_empty() {
        return Ok(0);
    }
    Ok(diesel::delete(
        rct::table
            .filter(rct::jti.eq_any(&expired))
            .filter(rct::expires_at.lt(now)),
    )
    .execute(conn)?)
}

/// Records a service token issued with the admin scope: the admin API
/// honours no other (`admin_token_issued`).
pub fn record_admin_token(
    conn: &mut DbConnection,
    jti: &str,
    client_id: &str,
    expires_at: i64,
) -> Result<(), StorageError> {
    diesel::sql_query("INSERT INTO admin_tokens (jti, client_id, expires_at) VALUES ($1, $2, $3)")
        .bind::<diesel::sql_types::Text, _>(jti)
        .bind::<diesel::sql_types::Text, _>(client_id)
        .bind::<diesel::sql_types::BigInt, _>(expires_at)
        .execute(conn)?;
    Ok(())
}

/// Whether tokend issued the admin token `jti` to `client_id`, expiring at
/// `expires_at` (a token re-signed with a later expiry is not the one
/// issued).
pub fn admin_token_issued(
    conn: &mut DbConnection,
    jti: &str,
    client_id: &str,
    expires_at: i64,
) -> Result<bool, StorageError> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let found = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM admin_tokens \
         WHERE jti = $1 AND client_id = $2 AND expires_at = $3",
    )
    .bind::<diesel::sql_types::Text, _>(jti)
    .bind::<diesel::sql_types::Text, _>(client_id)
    .bind::<diesel::sql_types::BigInt, _>(expires_at)
    .get_result::<Found>(conn)?;
    Ok(found.n > 0)
}

/// Deletes up to `batch` records of admin tokens expired before `now`.
pub fn purge_admin_tokens(
    conn: &mut DbConnection,
    now: i64,
    batch: i64,
) -> Result<usize, StorageError> {
    Ok(diesel::sql_query(
        "DELETE FROM admin_tokens WHERE jti IN \
         (SELECT jti FROM admin_tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
    )
    .bind::<diesel::sql_types::BigInt, _>(now)
    .bind::<diesel::sql_types::BigInt, _>(batch)
    .execute(conn)?)
}

/// Every distinct scope some client has, sorted (RFC 8414
/// `scopes_supported`).
pub fn all_scopes(conn: &mut DbConnection) -> Result<Vec<String>, StorageError> {
    let rows: Vec<String> = clients::table
        .filter(clients::disabled.eq(false))
        .select(clients::scopes)
        .distinct()
        .load(conn)?;
    let mut scopes: Vec<String> = rows
        .iter()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

pub fn delete(conn: &mut DbConnection, id: &str) -> Result<bool, StorageError> {
    changed_then(conn, Notice::Client(id.to_owned()), |conn| {
        Ok(diesel::delete(clients::table.filter(clients::id.eq(id))).execute(conn)? == 1)
    })
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
