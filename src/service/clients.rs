//! OAuth 2 clients (service identities): what `tokend clients …` and the
//! admin API share. A secret is shown once, at creation or rotation; only
//! its digest is kept. Every change is audited in its transaction.

use diesel::Connection;
use serde_json::{json, Value};

use crate::auth::clients::{
    new_client_id, new_secret, parse_scopes, ADMIN_SCOPE, INTROSPECT_SCOPE,
};
use crate::auth::keys::{self, KeyMaterial, SigningAlgorithm};
use crate::error::ApiError;
use crate::storage::clients::{self, ClientRecord, CreateClient, NewClient};
use crate::storage::{audit, Database};

use super::actor::{Acting, Subject};
use super::audit::{Event, EventKind};

/// The longest lifetime a client's tokens may be given.
pub const MAX_TTL_SECS: i64 = 86_400;

/// What a client is created with.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    pub name: String,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub ttl_secs: Option<i64>,
    /// PEM (public, or private: only its public half is kept).
    pub public_key: Option<String>,
}

/// A client's id and its secret, shown once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
}

/// Why a client cannot be created as asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A field of the spec (`name`, `scopes`, `audience`, `ttl_secs`,
    /// `public_key`, `overlap_secs`) and what is wrong with it.
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("a client named {0:?} already exists")]
    NameTaken(String),
    #[error("no client {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> ClientError {
    ClientError::Invalid(field, message.into())
}

fn check(spec: &ClientSpec) -> Result<(String, Option<String>), ClientError> {
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > 150 || name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            "a client name is 1-150 characters, no control characters",
        ));
    }
    if spec.scopes.is_empty() {
        return Err(invalid("scopes", "give the client at least one scope"));
    }
    let scopes = parse_scopes(&spec.scopes.join(" "))
        .filter(|s| s.len() == spec.scopes.len())
        .ok_or_else(|| {
            invalid(
                "scopes",
                "a scope is printable ASCII without spaces, quotes or backslashes",
            )
        })?;
    if let Some(ttl) = spec.ttl_secs {
        if !(1..=MAX_TTL_SECS).contains(&ttl) {
            return Err(invalid(
                "ttl_secs",
                format!("the token lifetime must be 1-{MAX_TTL_SECS} seconds"),
            ));
        }
    }
    if let Some(aud) = &spec.audience {
        if aud.trim().is_empty() || aud.chars().any(char::is_control) {
            return Err(invalid(
                "audience",
                "the audience must be a non-empty string",
            ));
        }
    }
    let public = match &spec.public_key {
        None => None,
        Some(pem) => {
            // EdDSA or RS256 only: never a shared secret.
            KeyMaterial::verification(pem, SigningAlgorithm::EdDsa)
                .map_err(|e| invalid("public_key", format!("public key: {e}")))?;
            Some(
                keys::public_pem(pem)
                    .map_err(|e| invalid("public_key", format!("public key: {e}")))?,
            )
        }
    };
    Ok((scopes.join(" "), public))
}

pub async fn create(
    db: &Database,
    by: &Acting,
    spec: ClientSpec,
    now: i64,
) -> Result<Credentials, ClientError> {
    let webhooks = db.webhooks();
    let (scopes, public) = check(&spec)?;
    let (id, (secret, digest)) = (new_client_id(), new_secret());
    let name = spec.name.trim().to_owned();
    let (client_id, taken) = (id.clone(), name.clone());
    let event = by.row(
        Event::new(EventKind::ClientCreated, now).client(&id),
        json!({ "name": name, "scopes": scopes }),
    );
    let created = db
        .write(move |conn| {
            conn.transaction(|conn| {
                let created = clients::create(
                    conn,
                    &NewClient {
                        id: &id,
                        name: &name,
                        secret_digest: &digest,
                        scopes: &scopes,
                        audience: spec.audience.as_deref(),
                        ttl_secs: spec.ttl_secs,
                        public_key_pem: public.as_deref(),
                        now,
                    },
                )?;
                if created == CreateClient::Created {
                    audit::insert_batch(conn, &webhooks, &[event])?;
                }
                Ok(created)
            })
        })
        .await
        .map_err(ApiError::from)?;
    match created {
        CreateClient::Created => Ok(Credentials {
            client_id,
            client_secret: secret,
        }),
        CreateClient::NameTaken => Err(ClientError::NameTaken(taken)),
    }
}

pub async fn list(db: &Database) -> Result<Vec<ClientRecord>, ClientError> {
    Ok(db.run(clients::list).await.map_err(ApiError::from)?)
}

/// The client with this id or name.
pub async fn find(db: &Database, id_or_name: &str) -> Result<ClientRecord, ClientError> {
    let key = id_or_name.to_owned();
    db.run(move |conn| clients::find(conn, &key))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ClientError::NotFound(id_or_name.to_owned()))
}

/// A new secret; the old one keeps working for `overlap_secs`.
pub async fn rotate_secret(
    db: &Database,
    by: &Acting,
    id_or_name: &str,
    overlap_secs: i64,
    now: i64,
) -> Result<Credentials, ClientError> {
    let webhooks = db.webhooks();
    if !(0..=30 * 86_400).contains(&overlap_secs) {
        return Err(invalid(
            "overlap_secs",
            "the overlap must be 0-2592000 seconds",
        ));
    }
    let client = find(db, id_or_name).await?;
    let (secret, digest) = new_secret();
    let id = client.id.clone();
    let row = by.action(
        now,
        "client_secret_rotated",
        Subject::Client(&id),
        json!({ "overlap_secs": overlap_secs }),
    );
    db.write(move |conn| {
        conn.transaction(|conn| {
            clients::rotate_secret(conn, &id, &digest, now + overlap_secs)?;
            audit::insert_batch(conn, &webhooks, &[row])
        })
    })
    .await
    .map_err(ApiError::from)?;
    Ok(Credentials {
        client_id: client.id,
        client_secret: secret,
    })
}

pub async fn set_disabled(
    db: &Database,
    by: &Acting,
    id_or_name: &str,
    disabled: bool,
    now: i64,
) -> Result<ClientRecord, ClientError> {
    let webhooks = db.webhooks();
    let client = find(db, id_or_name).await?;
    let id = client.id.clone();
    let event = match disabled {
        true => by.row(
            Event::new(EventKind::ClientDisabled, now).client(&id),
            Value::Null,
        ),
        false => by.action(now, "client_enabled", Subject::Client(&id), Value::Null),
    };
    db.write(move |conn| {
        conn.transaction(|conn| {
            let changed = clients::set_disabled(conn, &id, disabled, now)?;
            audit::insert_batch(conn, &webhooks, &[event])?;
            Ok(changed)
        })
    })
    .await
    .map_err(ApiError::from)?;
    Ok(client)
}

pub async fn delete(
    db: &Database,
    by: &Acting,
    id_or_name: &str,
    now: i64,
) -> Result<ClientRecord, ClientError> {
    let webhooks = db.webhooks();
    let client = find(db, id_or_name).await?;
    let id = client.id.clone();
    let event = by.action(now, "client_deleted", Subject::Client(&id), Value::Null);
    db.write(move |conn| {
        conn.transaction(|conn| {
            let deleted = clients::delete(conn, &id)?;
            audit::insert_batch(conn, &webhooks, &[event])?;
            Ok(deleted)
        })
    })
    .await
    .map_err(ApiError::from)?;
    Ok(client)
}

/// RFC 8414 `scopes_supported`: every scope an enabled client has, and the
/// ones tokend itself knows (`tokend:introspect`, `tokend:admin`), sorted.
pub async fn scopes_supported(db: &Database) -> Result<Vec<String>, ApiError> {
    let mut scopes = db.run(clients::all_scopes).await?;
    for own in [INTROSPECT_SCOPE, ADMIN_SCOPE] {
        if !scopes.iter().any(|s| s == own) {
            scopes.push(own.to_owned());
        }
    }
    scopes.sort();
    Ok(scopes)
}
