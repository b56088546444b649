//! RFC 7662 introspection, for services authenticated as introspection
//! clients: configured ones (`introspection.clients`) or OAuth 2 clients
//! with the scope `tokend:introspect`.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::oauth_token::client_secret_matches;
use super::policy::{client_token_error, session_check, SessionCheck, TokenUse};
use super::Services;
use crate::auth::clients::{has_scope, INTROSPECT_SCOPE};
use crate::auth::jwt::TokenType;
use crate::error::ApiError;
use crate::storage::clients as client_store;
use crate::storage::refresh_tokens::{self, TokenStatus};
use crate::storage::{sessions, users};

/// Failed introspection credentials back off per client id and address, as
/// failed logins do per username: one client's misconfigured replica (or a
/// guesser of its secret) does not lock out another client behind the same
/// address. Ids that are not known share one subject, so made-up ids are no
/// way around it.
fn introspection_subject(id: Option<&str>, known: bool) -> String {
    match id {
        Some(id) if known => format!("\0introspection:{id}"),
        _ => "\0introspection".to_owned(),
    }
}

/// What a live token is, as RFC 7662 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveToken {
    pub token_type: TokenType,
    pub user_id: i64,
    pub username: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub sid: Option<String>,
}

/// What a live service token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveClientToken {
    pub client_id: String,
    /// Space-separated.
    pub scope: String,
    pub audience: Option<String>,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Active {
    User(ActiveToken),
    Client(ActiveClientToken),
}

/// The answer: `None` is `{"active": false}`.
pub type Introspection = Option<Active>;

/// `credentials`: the caller's (client id, secret), if it sent any;
/// `token`: the token to introspect, if the request named one (checked only
/// once the caller is authenticated).
pub async fn introspect(
    svc: &Services,
    client: IpAddr,
    credentials: Option<(&str, &str)>,
    token: Option<String>,
) -> Result<Introspection, ApiError> {
    let id = credentials.map(|(id, _)| id);
    let configured = id.is_some_and(|id| svc.introspection_clients.iter().any(|c| c.id == id));
    // Not a configured id: perhaps an OAuth 2 client's.
    let registered = match id {
        Some(id) if !configured => {
            let id = id.to_owned();
            svc.db
                .run(move |conn| client_store::by_id(conn, &id))
                .await?
        }
        _ => None,
    };
    // Reserved before the check (a back-off refuses right credentials too,
    // or it would tell them apart); a right one clears the count.
    let guess = svc
        .begin_secret_guess(
            &introspection_subject(id, configured || registered.is_some()),
            client,
        )
        .await?;
    let valid = match (credentials, &registered) {
        (Some((_, secret)), Some(c)) => client_secret_matches(c, secret, svc.now()),
        (Some((id, secret)), None) => is_introspection_client(svc, id, secret),
        (None, _) => false,
    };
    match guess {
        Some(guess) if valid => guess.succeeded().await,
        Some(guess) => {
            guess.failure().await?;
        }
        None => {}
    }
    if !valid {
        return Err(ApiError::OAuthInvalidClient);
    }
    // A registered client must be enabled and allowed to introspect.
    if let Some(c) = registered {
        if c.disabled || !has_scope(&c.scopes, INTROSPECT_SCOPE) {
            tracing::info!(client_id = %c.id, "introspection refused: client disabled or without the scope {INTROSPECT_SCOPE}");
            return Err(ApiError::OAuthInvalidClient);
        }
    }
    let token = token.ok_or(ApiError::OAuthInvalidRequest)?;
    active_token(svc, &token).await
}

/// True for the credentials of a configured introspection client. Compared
/// as SHA-256 digests in constant time, every configured client every time:
/// neither the length of a secret nor which id exists shows in the timing.
fn is_introspection_client(svc: &Services, id: &str, secret: &str) -> bool {
    let (id, secret) = (Sha256::digest(id), Sha256::digest(secret));
    svc.introspection_clients
        .iter()
        .fold(false, |found, client| {
            let matches = Sha256::digest(&client.id).ct_eq(&id)
                & Sha256::digest(client.secret.expose()).ct_eq(&secret);
            found | bool::from(matches)
        })
}

async fn active_token(svc: &Services, token: &str) -> Result<Introspection, ApiError> {
    let now = svc.now();
    let Ok(verified) = svc.keys.verify(token, None, now) else {
        return Ok(None);
    };
    if let Some(client) = verified.client.clone() {
        // A service token: its client's state now, from the database.
        let (id, jti, iat) = (client.client_id.clone(), verified.jti.clone(), verified.iat);
        let state = svc
            .db
            .run(move |conn| client_store::token_state(conn, &id, &jti, iat))
            .await?;
        if client_token_error(svc, &state, &verified, &client, now).is_some() {
            return Ok(None);
        }
        return Ok(Some(Active::Client(ActiveClientToken {
            client_id: client.client_id,
            scope: client.scope,
            audience: client.audience,
            exp: verified.exp,
            iat: verified.iat,
            jti: verified.jti,
        })));
    }
    let Some(user_id) = verified.user_id else {
        return Ok(None);
    };
    let SessionCheck::Live(sid) = session_check(svc, &verified, TokenUse::Session, now) else {
        return Ok(None);
    };
    let sid = sid.to_owned();
    let (jti, token_type, exp) = (verified.jti.clone(), verified.token_type, verified.exp);
    let found = svc
        .db
        .run(move |conn| match token_type {
            TokenType::Refresh => {
                if refresh_tokens::status(conn, &jti, &sid, user_id, exp, now)? != TokenStatus::Live
                {
                    return Ok(None);
                }
                Ok(users::find_by_id(conn, user_id)?.map(|u| (u.username, u.is_active)))
            }
            // The most frequent question: one statement.
            TokenType::Access => sessions::live_session_user(conn, &sid, user_id, now),
        })
        .await?;
    Ok(found
        .filter(|(_, is_active)| *is_active)
        .map(|(username, _)| {
            Active::User(ActiveToken {
                token_type: verified.token_type,
                user_id,
                username,
                exp: verified.exp,
                iat: verified.iat,
                jti: verified.jti,
                sid: verified.sid,
            })
        }))
}
