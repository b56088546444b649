//! RFC 6749 §4.4: the client credentials grant. A client authenticates with
//! its secret (HTTP Basic or form fields) and gets an access token of its
//! own, with the scopes it asked for among those it has.

use std::net::IpAddr;
use std::time::Instant;

use super::Services;
use crate::auth::clients::{
    check_assertion, has_scope, parse_scopes, secret_matches, ADMIN_SCOPE, JWT_BEARER,
};
use crate::auth::jwt::{new_jti, ClientClaims};
use crate::error::ApiError;
use crate::storage::clients::{self, ClientRecord};

/// A token request's parameters, as received.
#[derive(Debug, Default)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub scope: Option<String>,
    /// `client_secret_basic`: (id, secret) of the Authorization header.
    pub basic: Option<(String, String)>,
    /// `client_secret_post`: the form's `client_id` and `client_secret`.
    pub form_id: Option<String>,
    pub form_secret: Option<String>,
    /// `private_key_jwt`: `client_assertion_type` and `client_assertion`.
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
    /// What an assertion's `aud` may be: this token endpoint's URL, the
    /// issuer.
    pub audiences: Vec<String>,
}

/// How the client proves who it is.
enum Proof {
    Secret(String),
    Assertion(String),
}

/// The `iss` of a JWT, unverified: only to find whose key checks it.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// RFC 6749 §5.1's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
}

/// The client's current secret, or its previous one during a rotation's
/// overlap (constant time).
pub fn client_secret_matches(client: &ClientRecord, secret: &str, now: i64) -> bool {
    secret_matches(
        secret,
        client.secret_digest.as_deref(),
        client.previous_secret_digest.as_deref(),
        client.previous_valid_until,
        now,
    )
}

/// Unknown ids share one back-off subject: made-up ids buy no guesses.
fn subject(known: bool, id: &str) -> String {
    if known {
        format!("\0oauth-client:{id}")
    } else {
        "\0oauth-client".to_owned()
    }
}

pub async fn client_credentials(
    svc: &Services,
    client_ip: IpAddr,
    req: TokenRequest,
) -> Result<IssuedToken, ApiError> {
    // One way of authenticating per request (RFC 6749 §2.3).
    let (id, proof) = match (
        req.basic,
        req.form_id,
        req.form_secret,
        req.assertion_type,
        req.assertion,
    ) {
        (Some(_), Some(_), _, _, _) | (Some(_), _, Some(_), _, _) | (Some(_), _, _, Some(_), _) => {
            return Err(ApiError::OAuthInvalidRequest)
        }
        (_, _, Some(_), Some(_), _) => return Err(ApiError::OAuthInvalidRequest),
        (Some((id, secret)), None, None, None, None) => (id, Proof::Secret(secret)),
        (None, id, None, Some(kind), Some(assertion)) => {
            if kind != JWT_BEARER {
                return Err(ApiError::OAuthInvalidRequest);
            }
            let issuer = unverified_issuer(&assertion).ok_or(ApiError::OAuthInvalidClient)?;
            if id.as_ref().is_some_and(|id| *id != issuer) {
                return Err(ApiError::OAuthInvalidClient);
            }
            (issuer, Proof::Assertion(assertion))
        }
        (None, Some(id), Some(secret), None, None) => (id, Proof::Secret(secret)),
        (None, _, None, Some(_), None) | (None, _, None, None, Some(_)) => {
            return Err(ApiError::OAuthInvalidRequest)
        }
        _ => return Err(ApiError::OAuthInvalidClient),
    };
    let lookup = id.clone();
    let client = svc
        .db
        .run(move |conn| clients::by_id(conn, &lookup))
        .await?;
    let guess = match &svc.throttle {
        Some(throttle) => Some(
            throttle
                .begin_guess(
                    &subject(client.is_some(), &id),
                    client_ip,
                    None,
                    Instant::now(),
                )
                .map_err(ApiError::Throttled)?,
        ),
        None => None,
    };
    let now = svc.now();
    // The guess is settled before an assertion's jti is recorded: a
    // well-signed assertion is no guess at the key (a replay is refused
    // below without counting as one), and concurrent grants must not hold
    // guesses open across a database write (the back-off caps guesses in
    // flight).
    let (proven, assertion) = match (&client, &proof) {
        (Some(c), Proof::Secret(secret)) => (client_secret_matches(c, secret, now), None),
        (Some(c), Proof::Assertion(assertion)) => match c
            .public_key_pem
            .as_deref()
            .and_then(|pem| check_assertion(assertion, &c.id, pem, &req.audiences, now))
        {
            Some(checked) => (true, Some(checked)),
            None => (false, None),
        },
        (None, _) => (false, None),
    };
    let client = client.filter(|_| proven);
    let Some(client) = client else {
        if let Some(guess) = guess {
            guess.failed(Instant::now());
        }
        return Err(ApiError::OAuthInvalidClient);
    };
    if let Some(guess) = guess {
        guess.succeeded();
    }
    // Single use: a replayed assertion proves nothing.
    if let Some(checked) = assertion {
        let cid = client.id.clone();
        let first_use = svc
            .db
            .write(move |conn| clients::use_assertion(conn, &cid, &checked.jti, checked.exp, now))
            .await?;
        if !first_use {
            return Err(ApiError::OAuthInvalidClient);
        }
    }
    if client.disabled {
        return Err(ApiError::OAuthInvalidClient);
    }
    match req.grant_type.as_deref() {
        None | Some("") => return Err(ApiError::OAuthInvalidRequest),
        Some("client_credentials") => {}
        Some(_) => return Err(ApiError::OAuthUnsupportedGrantType),
    }
    let allowed: Vec<&str> = client.scopes.split(' ').filter(|s| !s.is_empty()).collect();
    let scopes = match req.scope.as_deref() {
        None => allowed.iter().map(|s| (*s).to_owned()).collect(),
        Some(text) => {
            let asked = parse_scopes(text).ok_or(ApiError::OAuthInvalidScope)?;
            if asked.iter().any(|s| !allowed.contains(&s.as_str())) {
                return Err(ApiError::OAuthInvalidScope);
            }
            if asked.is_empty() {
                allowed.iter().map(|s| (*s).to_owned()).collect()
            } else {
                asked
            }
        }
    };
    let mut unique: Vec<String> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if !unique.contains(&scope) {
            unique.push(scope);
        }
    }
    let scope = unique.join(" ");
    let ttl = client
        .ttl_secs
        .unwrap_or_else(|| svc.keys.lifetimes().access_secs);
    let claims = ClientClaims {
        exp: now + ttl,
        iat: now,
        jti: new_jti(),
        client_id: client.id.clone(),
        scope: scope.clone(),
        audience: client.audience.clone(),
    };
    let access_token = svc.keys.sign_client(&claims)?;
    if has_scope(&scope, ADMIN_SCOPE) {
        // On record before it is handed out: the admin API honours only
        // tokens tokend issued, not ones signed by other holders of the key.
        let ClientClaims {
            jti,
            client_id,
            exp,
            ..
        } = claims;
        svc.db
            .write(move |conn| clients::record_admin_token(conn, &jti, &client_id, exp))
            .await?;
    }
    tracing::debug!(
        security_event = "client_token_issued",
        client_id = %client.id,
        scope = %scope,
        "client credentials grant"
    );
    Ok(IssuedToken {
        access_token,
        expires_in: ttl,
        scope,
    })
}
