//! RFC 7009 revocation: the token's whole session is revoked (a service
//! token: that token alone). Invalid or unknown tokens are no error, as the
//! RFC requires.

use std::time::Instant;

use super::audit::EventKind;
use super::origin::Origin;
use super::policy::{session_check, SessionCheck, TokenUse};
use super::Services;
use crate::error::ApiError;
use crate::storage::clients::{self as client_store, ClientTokenState};
use crate::storage::sessions::{self, RevokeReason};

/// `token`: an access or a refresh token. Fails only when the database does.
pub async fn revoke(svc: &Services, origin: &Origin, token: &str) -> Result<(), ApiError> {
    let now = svc.now();
    let Ok(verified) = svc.keys.verify(token, None, now) else {
        return Ok(());
    };
    if let Some(client) = verified.client {
        // Kept while the token would be accepted (its exp plus the leeway),
        // then purged: bounded, and only well-signed tokens get a row.
        let exp = verified.exp.saturating_add(svc.keys.leeway_secs());
        let (id, jti) = (client.client_id.clone(), verified.jti.clone());
        svc.db
            .write(move |conn| client_store::revoke_token(conn, &id, &jti, exp))
            .await?;
        svc.cache.put_client_token(
            &verified.jti,
            &client.client_id,
            ClientTokenState::Revoked,
            Instant::now(),
        );
        return Ok(());
    }
    let (Some(user_id), SessionCheck::Live(sid)) = (
        verified.user_id,
        session_check(svc, &verified, TokenUse::Session, now),
    ) else {
        return Ok(());
    };
    let (key, sid) = (sid.to_owned(), sid.to_owned());
    let revoked = svc
        .db
        .write(move |conn| sessions::revoke_session(conn, &key, user_id, RevokeReason::Logout, now))
        .await?;
    if revoked {
        svc.cache.session_revoked(&sid, user_id, Instant::now());
        svc.audit.record(
            svc.audit_event(EventKind::SessionRevoked)
                .origin(origin)
                .user(user_id)
                .session(&sid)
                .reason("revocation_endpoint"),
        );
    }
    Ok(())
}
