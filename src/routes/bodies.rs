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
