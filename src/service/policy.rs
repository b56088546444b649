//! Which well-signed tokens are honoured: the session policy, in one place.

use super::{cached, Services};
use crate::auth::clients::has_scope;
use crate::auth::jwt::{ClientToken, TokenError, TokenType, VerifiedToken};
use crate::error::ApiError;
use crate::storage::clients::ClientTokenState;
use crate::storage::sessions::SessionState;

/// What a use case does with the token it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// Says who the bearer is (me, verify).
    Identify,
    /// Acts on or reports the token's session (logout-all, password
    /// change, introspection, revocation).
    Session,
}

/// What must hold before a well-signed token is honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck<'a> {
    /// tokend's own token: its session must be live.
    Live(&'a str),
    /// A sessionless access token inside the legacy acceptance window: its
    /// user must be one imported with the legacy service's id.
    LegacyUser,
    /// Answered as an invalid token.
    Refused,
}

/// The policy for tokens with and without a session, in one place.
/// tokend's tokens always name their session (`sid`). A token without one
/// was minted elsewhere with the same key (the Django/simplejwt service
/// tokend replaces): no logout or revocation here can end it, and its
/// `user_id` is that service's numbering, not tokend's. Such tokens are
/// refused, except access tokens that only identify their bearer while
/// `jwt.accept_sessionless_until` is ahead (a migration window), and then
/// only for users imported with that service's id. Sessionless refresh
/// tokens are refused everywhere.
pub fn session_check<'a>(
    svc: &Services,
    token: &'a VerifiedToken,
    purpose: TokenUse,
    now: i64,
) -> SessionCheck<'a> {
    match token.sid.as_deref() {
        Some(sid) => SessionCheck::Live(sid),
        None if purpose == TokenUse::Identify
            && token.token_type == TokenType::Access
            && now < svc.accept_sessionless_until =>
        {
            SessionCheck::LegacyUser
        }
        None => SessionCheck::Refused,
    }
}

/// Why a token is refused because of its session (revoked: logout, reuse,
/// password change…; ended; gone with its user; none: see
/// `session_check`), or `None` when it may be honoured.
pub async fn session_problem(
    svc: &Services,
    token: &VerifiedToken,
    purpose: TokenUse,
    now: i64,
) -> Result<Option<TokenError>, ApiError> {
    // A session belongs to a user: a token naming none is not tokend's.
    let Some(user_id) = token.user_id else {
        return Ok(Some(TokenError::Invalid));
    };
    match session_check(svc, token, purpose, now) {
        SessionCheck::Live(sid) => Ok(session_error(
            cached::session_state(svc, sid, user_id, now).await?,
        )),
        SessionCheck::LegacyUser => {
            let imported = cached::user(svc, user_id)
                .await?
                .is_some_and(|user| user.kept_legacy_id);
            Ok((!imported).then_some(TokenError::Invalid))
        }
        SessionCheck::Refused => Ok(Some(TokenError::Invalid)),
    }
}

/// How far ahead of this clock a service token's `iat` may be (another
/// replica's clock).
const MAX_CLOCK_SKEW_SECS: i64 = 60;

/// Why a service token is refused given its client's state now, or `None`
/// when it may be honoured: its client enabled, the token not revoked, and
/// saying only what tokend would have issued to the client: its audience
/// (the client's own, else `svc`'s configured one), scopes among the
/// client's, a lifetime no longer than the client's, issued after the
/// client was created and not in the future. (Whoever holds an HS256 key
/// can sign anything; these bounds keep such a token to what the client
/// could get anyway.)
pub fn client_token_error(
    svc: &Services,
    state: &ClientTokenState,
    token: &VerifiedToken,
    client: &ClientToken,
    now: i64,
) -> Option<TokenError> {
    match state {
        ClientTokenState::Live(live) => {
            let expected = live.audience.as_deref().or(svc.keys.audience());
            let ttl = live
                .ttl_secs
                .unwrap_or_else(|| svc.keys.lifetimes().access_secs);
            let scopes_held = client
                .scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .all(|s| has_scope(&live.scopes, s));
            let honest = client.audience.as_deref() == expected
                && scopes_held
                && token.iat >= live.created_at
                && token.iat <= now + MAX_CLOCK_SKEW_SECS
                && token.exp.saturating_sub(token.iat) <= ttl;
            (!honest).then_some(TokenError::Invalid)
        }
        ClientTokenState::Revoked => Some(TokenError::Blacklisted),
        ClientTokenState::Disabled | ClientTokenState::Missing => Some(TokenError::Invalid),
    }
}

pub fn session_error(session: SessionState) -> Option<TokenError> {
    match session {
        SessionState::Live { .. } => None,
        SessionState::Revoked => Some(TokenError::Blacklisted),
        SessionState::Expired => Some(TokenError::Expired),
        SessionState::Missing => Some(TokenError::Invalid),
    }
}

/// A refresh token that passed the signature, expiry and type checks, with
/// the user and session it names.
pub struct PresentedRefresh {
    pub token: VerifiedToken,
    pub user_id: i64,
    pub session_id: String,
}

impl PresentedRefresh {
    /// What storage needs to find the token's row, owned for the blocking
    /// pool: (jti, session id, user id, signed expiry).
    pub fn row_key(&self) -> (String, String, i64, i64) {
        (
            self.token.jti.clone(),
            self.session_id.clone(),
            self.user_id,
            self.token.exp,
        )
    }
}

/// The refresh token presented to rotate or revoke it, checked.
pub fn presented_refresh(
    svc: &Services,
    refresh: &str,
    now: i64,
) -> Result<PresentedRefresh, ApiError> {
    let token = svc
        .keys
        .verify(refresh, Some(TokenType::Refresh), now)
        .map_err(ApiError::Token)?;
    let user_id = token.user_id.ok_or(ApiError::NoActiveAccountForToken)?;
    // tokend's refresh tokens always name their session; others were never
    // recorded here and cannot be spent or revoked.
    let SessionCheck::Live(sid) = session_check(svc, &token, TokenUse::Session, now) else {
        return Err(ApiError::Token(TokenError::Invalid));
    };
    let session_id = sid.to_owned();
    Ok(PresentedRefresh {
        token,
        user_id,
        session_id,
    })
}
