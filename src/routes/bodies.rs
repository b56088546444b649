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
        let AdminSessionBody {
            id,
            created,
            last_used,
            expires,
            user_agent,
            ip,
        } = s.session.into();
        SessionBody {
            id,
            created,
            last_used,
            expires,
            user_agent,
            ip,
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

/// A user, as the admin API shows it. Times are RFC 3339 in UTC.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": 1, "username": "alice", "email": "alice@example.com",
    "first_name": "", "last_name": "", "is_active": true, "is_staff": false,
    "is_superuser": false, "date_joined": "2026-12-02T08:30:00Z", "last_login": null,
    "email_verified": false, "groups": ["support"]}))]
pub struct AdminUserBody {
    pub id: i64,
    pub username: String,
    #[schema(required = true)]
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    #[schema(format = DateTime)]
    pub date_joined: String,
    /// Null until the first login recorded (`jwt.update_last_login`).
    #[schema(format = DateTime, required = true)]
    pub last_login: Option<String>,
    pub email_verified: bool,
    /// Group names, sorted.
    pub groups: Vec<String>,
}

impl From<crate::storage::users::AccountView> for AdminUserBody {
    fn from(u: crate::storage::users::AccountView) -> Self {
        AdminUserBody {
            id: u.id,
            username: u.username,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            is_active: u.is_active,
            is_staff: u.is_staff,
            is_superuser: u.is_superuser,
            date_joined: rfc3339(u.date_joined),
            last_login: u.last_login.map(rfc3339),
            email_verified: u.email_verified,
            groups: u.groups,
        }
    }
}

/// A page of users by id; `next_cursor` (null on the last page) is the
/// `cursor` of the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPageBody {
    pub results: Vec<AdminUserBody>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A live session of a user, as the admin API lists it (`SessionBody`
/// without `current`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSessionBody {
    /// `DELETE /api/admin/users/{id}/sessions/{sid}/` ends it.
    pub id: String,
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime, required = true)]
    pub last_used: Option<String>,
    #[schema(format = DateTime)]
    pub expires: String,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    #[schema(required = true)]
    pub ip: Option<String>,
}

impl From<crate::storage::sessions::SessionSummary> for AdminSessionBody {
    fn from(session: crate::storage::sessions::SessionSummary) -> Self {
        AdminSessionBody {
            id: session.id,
            created: rfc3339(session.created_at),
            last_used: session.last_used_at.map(rfc3339),
            expires: rfc3339(session.expires_at),
            user_agent: session.device.user_agent,
            ip: session.device.ip,
        }
    }
}

/// A group and its member count.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "support", "members": 3}))]
pub struct GroupBody {
    pub name: String,
    #[schema(minimum = 0)]
    pub members: i64,
}

/// An audit event (docs/audit.md); `at` in RFC 3339, `detail` the JSON
/// object recorded (null when none).
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventBody {
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub event: String,
    #[schema(required = true)]
    pub user_id: Option<i64>,
    #[schema(required = true)]
    pub username: Option<String>,
    #[schema(required = true)]
    pub session_id: Option<String>,
    #[schema(required = true)]
    pub client_id: Option<String>,
    #[schema(required = true)]
    pub ip: Option<String>,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    #[schema(required = true)]
    pub request_id: Option<String>,
    #[schema(value_type = Option<Object>, required = true)]
    pub detail: serde_json::Value,
}

impl From<crate::storage::audit::AuditEvent> for AuditEventBody {
    fn from(e: crate::storage::audit::AuditEvent) -> Self {
        AuditEventBody {
            id: e.id,
            at: rfc3339(e.at),
            detail: crate::service::admin::detail_json(e.detail.as_deref()),
            event: e.event,
            user_id: e.user_id,
            username: e.username,
            session_id: e.session_id,
            client_id: e.client_id,
            ip: e.ip,
            user_agent: e.user_agent,
            request_id: e.request_id,
        }
    }
}

/// A page of audit events, newest first; `next_cursor` (null on the last
/// page) is the `cursor` of the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageBody {
    pub results: Vec<AuditEventBody>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// An OAuth 2 client; never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientBody {
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// The `aud` of its tokens; null: the configured `jwt.audience`.
    #[schema(required = true)]
    pub audience: Option<String>,
    /// Lifetime of its tokens; null: `jwt.access_token_lifetime_secs`.
    #[schema(required = true)]
    pub ttl_secs: Option<i64>,
    /// Authenticates with `private_key_jwt` (a public key is registered).
    pub private_key_jwt: bool,
    pub disabled: bool,
    #[schema(format = DateTime)]
    pub created: String,
}

impl From<crate::storage::clients::ClientRecord> for ClientBody {
    fn from(c: crate::storage::clients::ClientRecord) -> Self {
        ClientBody {
            scopes: c
                .scopes
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            client_id: c.id,
            name: c.name,
            audience: c.audience,
            ttl_secs: c.ttl_secs,
            private_key_jwt: c.public_key_pem.is_some(),
            disabled: c.disabled,
            created: rfc3339(c.created_at),
        }
    }
}

/// A client's id and its new secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentialsBody {
    pub client_id: String,
    pub client_secret: String,
}

impl From<crate::service::clients::Credentials> for ClientCredentialsBody {
    fn from(c: crate::service::clients::Credentials) -> Self {
        ClientCredentialsBody {
            client_id: c.client_id,
            client_secret: c.client_secret,
        }
    }
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
