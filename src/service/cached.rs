//! The cache-then-database policy of the token-check paths (see
//! `storage::cache` for what may be cached and for how long).

use std::time::Instant;

use super::Services;
use crate::error::ApiError;
use crate::storage::cache::{Cached, UserSummary};
use crate::storage::clients::{self as client_store, ClientTokenState};
use crate::storage::sessions::{self, SessionState};
use crate::storage::{users as user_store, DbConnection, StorageError};

/// After a failed database call, how long cached-state readers skip the
/// database instead of waiting for a connection again.
const OUTAGE_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// A session's state from the cache when fresh, else from the database;
/// when the database cannot be reached, the last known state if it is
/// recent enough (`cache.stale_if_error_ms`).
pub async fn session_state(
    svc: &Services,
    sid: &str,
    user_id: i64,
    now: i64,
) -> Result<SessionState, ApiError> {
    let key = sid.to_owned();
    read_through(
        svc,
        svc.cache.session(sid, user_id, Instant::now()),
        move |conn| sessions::state(conn, &key, user_id, now),
        |session, read_at| svc.cache.put_session(sid, user_id, *session, read_at),
        "session",
    )
    .await
    // A cached "live" may have reached its end since.
    .map(|session| session.at(now))
}

/// A user's summary, from the cache when fresh, else from the database;
/// when the database cannot be reached, the last known summary if recent
/// enough.
pub async fn user(svc: &Services, user_id: i64) -> Result<Option<UserSummary>, ApiError> {
    read_through(
        svc,
        svc.cache.user(user_id, Instant::now()),
        move |conn| {
            Ok(user_store::find_by_id(conn, user_id)?.map(|u| UserSummary {
                id: u.id,
                username: u.username,
                is_active: u.is_active,
                kept_legacy_id: u.kept_legacy_id,
            }))
        },
        |user, read_at| svc.cache.put_user(user_id, user.clone(), read_at),
        "user",
    )
    .await
}

/// A service token's state, from the cache when fresh, else from the
/// database; when the database cannot be reached, the last known state if
/// recent enough.
pub async fn client_token_state(
    svc: &Services,
    client_id: &str,
    jti: &str,
    iat: i64,
) -> Result<ClientTokenState, ApiError> {
    let (id, key) = (client_id.to_owned(), jti.to_owned());
    read_through(
        svc,
        svc.cache.client_token(jti, client_id, Instant::now()),
        move |conn| client_store::token_state(conn, &id, &key, iat),
        |state, read_at| {
            svc.cache
                .put_client_token(jti, client_id, state.clone(), read_at)
        },
        "client",
    )
    .await
}

/// The cache-then-database policy, in one place: a fresh cached value is
/// the answer; otherwise the database is read and the result stored
/// (`store` gets the instant the read started). A stale value answers
/// instead when the database just failed (without waiting for a connection
/// again; one caller at a time probes it) or when this read finds it
/// unavailable.
async fn read_through<T, R>(
    svc: &Services,
    cached: Cached<T>,
    read: R,
    store: impl FnOnce(&T, Instant),
    what: &'static str,
) -> Result<T, ApiError>
where
    T: Clone + Send + 'static,
    R: FnOnce(&mut DbConnection) -> Result<T, StorageError> + Send + 'static,
{
    let stale = match cached {
        Cached::Fresh(value) => return Ok(value),
        Cached::Stale(value) => Some(value),
        Cached::Miss => None,
    };
    if let Some(value) = stale.clone().filter(|_| !svc.db.worth_trying(OUTAGE_PROBE)) {
        return Ok(value);
    }
    let read_at = Instant::now();
    match svc.db.run(read).await {
        Ok(value) => {
            store(&value, read_at);
            Ok(value)
        }
        Err(e) => match stale.filter(|_| e.is_unavailable()) {
            Some(value) => {
                tracing::warn!(error = %crate::error::Chain(&e), what, "database unavailable: using the last known state");
                Ok(value)
            }
            None => Err(e.into()),
        },
    }
}
