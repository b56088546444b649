//! The success bodies of the API, typed. Field order is the wire order
//! (simplejwt's, which differs between login and refresh): do not reorder.

use serde::Serialize;
use utoipa::ToSchema;

use crate::service::introspect::{ActiveClientToken, ActiveToken};
use crate::service::me::UserDetails;
use crate::service::register::Registered;
use crate::storage::cache::UserSummary;

/// A new session's pair: `refresh` then `access` (login), as simplejwt.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    pub refresh: String,
    pub access: String,
}

/// A rotated pair: `access` then `refresh`, as simplejwt. The presented
/// refresh token is spent.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedPair {
    pub access: String,
    pub refresh: String,
}

/// Cookie mode: the access token alone (the refresh token travels only in
/// the HttpOnly cookie).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessOnly {
    pub access: String,
}

/// A user: `{"id": 1, "username": "alice"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    #[schema(example = 1)]
    pub id: i64,
    #[schema(example = "alice")]
    pub username: String,
}

impl From<UserSummary> for UserBody {
    fn from(user: UserSummary) -> Self {
        UserBody {
            id: user.id,
            username: user.username,
        }
    }
}

impl From<Registered> for UserBody {
    fn from(user: Registered) -> Self {
        UserBody {
            id: user.id,
            username: user.username,
        }
    }
}

/// RFC 6749 §5.1: a client's access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientTokenBody {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    #[schema(example = 1800)]
    pub expires_in: i64,
    /// Space-separated.
    #[schema(example = "orders:read")]
    pub scope: String,
}

/// dj-rest-auth's answers: `{"detail": "…"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetailBody {
    #[schema(example = "Password reset e-mail has been sent.")]
    pub detail: &'static str,
}

/// dj-rest-auth's user details.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthUser {
    #[schema(example = 1)]
    pub pk: i64,
    #[schema(example = "alice")]
    pub username: String,
    /// "" when the user has none.
    #[schema(example = "alice@example.com")]
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

impl From<UserDetails> for AuthUser {
    fn from(u: UserDetails) -> Self {
        AuthUser {
            pk: u.pk,
            username: u.username,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
        }
    }
}

/// The health checks' answer: `{"status": "ok" | "ready" | "unavailable"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// An empty object: `{}`.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// RFC 7662: the claims of a live token.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntrospectionBody {
    /// Always true (see `Inactive`).
    pub active: bool,
    /// `access` or `refresh`.
    pub token_type: String,
    pub sub: String,
    pub user_id: String,
    pub username: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub sid: Option<String>,
}

impl From<ActiveToken> for IntrospectionBody {
    fn from(token: ActiveToken) -> Self {
        IntrospectionBody {
            active: true,
            token_type: token.token_type.as_str().to_owned(),
            sub: token.user_id.to_string(),
            user_id: token.user_id.to_string(),
            username: token.username,
            exp: token.exp,
            iat: token.iat,
            jti: token.jti,
            sid: token.sid,
        }
    }
}

/// RFC 7662: the claims of a live service (OAuth 2 client) token. No
/// `sub`: a service token has no user, and nothing should take the client
/// for one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientIntrospectionBody {
    /// Always true (see `Inactive`).
    pub active: bool,
    /// Always `access`.
    pub token_type: &'static str,
    pub client_id: String,
    /// Space-separated.
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
}

impl From<ActiveClientToken> for ClientIntrospectionBody {
    fn from(token: ActiveClientToken) -> Self {
        ClientIntrospectionBody {
            active: true,
            token_type: "access",
            client_id: token.client_id,
            scope: token.scope,
            aud: token.audience,
            exp: token.exp,
            iat: token.iat,
            jti: token.jti,
        }
    }
}

/// RFC 7662: `{"active": false}`, for anything not valid right now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Inactive {
    /// Always false.
    pub active: bool,
}

impl Inactive {
    pub const BODY: Inactive = Inactive { active: false };
}

/// A live session of the caller ("Your devices"). Times are RFC 3339 in
/// UTC (`2026-12-02T08:30:00Z`), as DRF renders datetimes with `USE_TZ`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "9f2c4e0b7a1d4c3e8b5a6f7e1d2c3b4a", "created": "2026-12-02T08:30:00Z",
    "last_used": "2026-12-02T09:10:12Z", "expires": "2026-12-16T08:30:00Z",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "ip": "192.0.2.10", "current": true}))]
pub struct SessionBody {
    /// The session's id: `DELETE /api/user/sessions/{id}/` ends it.
    pub id: String,
    /// When the session was started (the login).
    #[schema(format = DateTime)]
    pub created: String,
    /// The login, or the last refresh that rotated its tokens (not every
    /// request); null for sessions older than this field.
    #[schema(format = DateTime, required = true)]
    pub last_used: Option<String>,
    /// The session's absolute end.
    #[schema(format = DateTime)]
    pub expires: String,
    /// The `User-Agent` of the login; null when none was sent or not
    /// recorded.
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// The client address of the login; null when unknown.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// The session of the token this request presented.
    pub current: bool,
}

impl From<crate::service::devices::UserSession> for SessionBody {
    fn from(s: crate::service::devices::UserSession) -> Self {
        let session = s.session;
        SessionBody {
            id: session.id,
            created: rfc3339(session.created_at),
            last_used: session.last_used_at.map(rfc3339),
            expires: rfc3339(session.expires_at),
            user_agent: session.device.user_agent,
            ip: session.device.ip,
            current: s.current,
        }
    }
}

/// How many sessions `POST /api/user/sessions/revoke-others/` ended.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"revoked": 2}))]
pub struct RevokedBody {
    #[schema(minimum = 0)]
    pub revoked: usize,
}

pub use crate::clock::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: impl Serialize) -> String {
        serde_json::to_string(&value).unwrap_or_default()
    }

    #[test]
    fn bodies_keep_the_wire_order() {
        let (r, a) = (String::from("r"), String::from("a"));
        assert_eq!(
            json(TokenPair {
                refresh: r.clone(),
                access: a.clone()
            }),
            r#"{"refresh":"r","access":"a"}"#
        );
        assert_eq!(
            json(RotatedPair {
                access: a.clone(),
                refresh: r
            }),
            r#"{"access":"a","refresh":"r"}"#
        );
        assert_eq!(json(AccessOnly { access: a }), r#"{"access":"a"}"#);
        assert_eq!(json(Empty {}), "{}");
        assert_eq!(json(Inactive::BODY), r#"{"active":false}"#);
        assert_eq!(
            json(UserBody {
                id: 1,
                username: "alice".into()
            }),
            r#"{"id":1,"username":"alice"}"#
        );
        assert_eq!(
            json(IntrospectionBody::from(ActiveToken {
                token_type: crate::auth::jwt::TokenType::Refresh,
                user_id: 7,
                username: "bob".into(),
                exp: 20,
                iat: 10,
                jti: "j".into(),
                sid: Some("s".into()),
            })),
            r#"{"active":true,"token_type":"refresh","sub":"7","user_id":"7","username":"bob","exp":20,"iat":10,"jti":"j","sid":"s"}"#
        );
    }
}

#[cfg(test)]
mod rfc3339_tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_765_445), "2027-01-01T01:04:05Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
