//! Verify: is an access or refresh token valid, with its session live (or,
//! for a service token, its client enabled)?

use super::policy::{client_token_error, session_check, session_problem, SessionCheck, TokenUse};
use super::{cached, Services};
use crate::auth::jwt::{TokenError, TokenType};
use crate::error::ApiError;
use crate::storage::refresh_tokens::{self, TokenStatus};

/// `Ok(())` for a token that may be used now, else why not.
pub async fn verify(svc: &Services, token: &str) -> Result<(), ApiError> {
    let now = svc.now();
    let verified = svc.keys.verify(token, None, now).map_err(ApiError::Token)?;
    if let Some(client) = &verified.client {
        // A service token: its client's state, cached like a session's.
        let state =
            cached::client_token_state(svc, &client.client_id, &verified.jti, verified.iat).await?;
        return match client_token_error(svc, &state, &verified, client, now) {
            Some(problem) => Err(ApiError::Token(problem)),
            None => Ok(()),
        };
    }
    match verified.token_type {
        TokenType::Refresh => {
            let user_id = verified
                .user_id
                .ok_or(ApiError::Token(TokenError::Invalid))?;
            let SessionCheck::Live(sid) = session_check(svc, &verified, TokenUse::Identify, now)
            else {
                return Err(ApiError::Token(TokenError::Invalid));
            };
            let sid = sid.to_owned();
            let (jti, exp) = (verified.jti, verified.exp);
            let status = svc
                .db
                .run(move |conn| refresh_tokens::status(conn, &jti, &sid, user_id, exp, now))
                .await?;
            match status {
                TokenStatus::Live => Ok(()),
                TokenStatus::Revoked => Err(ApiError::Token(TokenError::Blacklisted)),
                TokenStatus::Expired => Err(ApiError::Token(TokenError::Expired)),
                TokenStatus::Unknown => Err(ApiError::Token(TokenError::Invalid)),
            }
        }
        TokenType::Access => {
            match session_problem(svc, &verified, TokenUse::Identify, now).await? {
                Some(problem) => Err(ApiError::Token(problem)),
                None => Ok(()),
            }
        }
    }
}
