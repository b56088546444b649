//! The admin API's use cases (`/api/admin/`): who may call it, and thin
//! wrappers over the administration use cases the command line runs too
//! (`accounts`, `groups`, `clients`), with the caller as the actor of their
//! audit rows.
//!
//! Rights, decided here only: a user access token of an active staff user
//! (`is_staff`), read from the database (never the cache: revoked staff
//! rights end at once), or a service token with the scope `tokend:admin`.
//! Destructive actions (deleting a user, setting a password, granting
//! `is_staff`/`is_superuser`, any change to a superuser, every client
//! change) need a superuser; a service token with the scope has every
//! right.

use std::time::Instant;

use serde_json::Value;

use super::actor::{Acting, Actor};
use super::audit::{Event, EventKind};
use super::origin::Origin;
use super::policy::client_token_error;
use super::register::{self, Registration};
use super::{accounts, bearer, clients, groups, Services};
use crate::auth::clients::{has_scope, ADMIN_SCOPE};
use crate::auth::credentials::GroupName;
use crate::auth::jwt::{TokenError, TokenType};
use crate::error::{ApiError, FieldErrors};
use crate::storage::audit::{self as audit_store, AuditPage, AuditQuery};
use crate::storage::clients::{self as client_store, ClientRecord};
use crate::storage::groups::{CreateGroup, Membership};
use crate::storage::sessions::{self, RevokeReason, SessionSummary};
use crate::storage::users::{self, AccountView, CreateUser, Flag};

/// Default and largest page of `GET /api/admin/users/`.
pub const USERS_PAGE: (i64, i64) = (50, 200);
/// Default and largest page of `GET /api/admin/audit/`.
pub const AUDIT_PAGE: (i64, i64) = (100, 1000);

/// An authorised caller of the admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The actor and origin its audit rows record.
    pub by: Acting,
    superuser: bool,
}

impl Admin {
    fn require_superuser(&self) -> Result<(), ApiError> {
        if self.superuser {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied)
        }
    }
}

/// The caller of the admin API, from its Bearer token: 401 as on every
/// Bearer route for a token that is not valid, 403 for a valid one without
/// the rights.
pub async fn authorize(svc: &Services, origin: &Origin, token: &str) -> Result<Admin, ApiError> {
    let now = svc.now();
    let verified = svc
        .keys
        .verify(token, Some(TokenType::Access), now)
        .map_err(ApiError::BearerToken)?;
    let acting = |actor| Acting {
        actor,
        origin: Some(origin.clone()),
    };
    if let Some(client) = &verified.client {
        // The database, not the cache: a disabled client loses the right now.
        let (id, jti, iat) = (client.client_id.clone(), verified.jti.clone(), verified.iat);
        let state = svc
            .db
            .run(move |conn| client_store::token_state(conn, &id, &jti, iat))
            .await?;
        if let Some(problem) = client_token_error(svc, &state, &verified, client, now) {
            return Err(ApiError::BearerToken(problem));
        }
        if !has_scope(&client.scope, ADMIN_SCOPE) {
            return Err(ApiError::PermissionDenied);
        }
        // Meant for tokend: a token the client got for another audience is
        // that service's to use, not to replay here.
        if client.audience.as_deref() != svc.keys.audience() {
            return Err(ApiError::PermissionDenied);
        }
        // Issued by tokend: every service that checks tokens with an HS256
        // key could sign one with the same claims.
        let (id, jti, exp) = (client.client_id.clone(), verified.jti.clone(), verified.exp);
        let issued = svc
            .db
            .run(move |conn| client_store::admin_token_issued(conn, &jti, &id, exp))
            .await?;
        if !issued {
            return Err(ApiError::BearerToken(TokenError::Invalid));
        }
        return Ok(Admin {
            by: acting(Actor::Client(client.client_id.clone())),
            superuser: true,
        });
    }
    // The user and their session from the database.
    let (user, verified) = bearer::authenticated(svc, token).await?;
    if !user.is_staff {
        return Err(ApiError::PermissionDenied);
    }
    // The very token tokend issued with the session's last pairs: with an
    // HS256 key any service that checks tokens could sign another for a
    // live session (a new id, a later expiry).
    let (sid, jti, exp, uid) = (
        verified.sid.clone().unwrap_or_default(),
        verified.jti.clone(),
        verified.exp,
        user.id,
    );
    let issued = svc
        .db
        .run(move |conn| sessions::access_token_issued(conn, &sid, uid, &jti, exp))
        .await?;
    if !issued {
        return Err(ApiError::BearerToken(TokenError::Invalid));
    }
    Ok(Admin {
        by: acting(Actor::User(user.id)),
        superuser: user.is_superuser,
    })
}

/// A page of a keyset listing: `next_cursor` names the last item when more
/// follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub results: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The query parameters of a listing, as received.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The last value of `name` (as Django's QueryDict), blank as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// `limit`: 1..=max, `default` when absent.
    fn limit(&self, (default, max): (i64, i64), errors: &mut FieldErrors) -> i64 {
        match self.get("limit").map(str::parse::<i64>) {
            None => default,
            Some(Ok(n)) if (1..=max).contains(&n) => n,
            Some(_) => {
                errors.add(
                    "limit",
                    vec![format!("A whole number from 1 to {max} is required.")],
                );
                default
            }
        }
    }

    /// `cursor`: the id of the last item of the previous page.
    fn cursor(&self, errors: &mut FieldErrors) -> Option<i64> {
        match self.get("cursor").map(str::parse::<i64>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                errors.add("cursor", vec!["Invalid cursor.".to_owned()]);
                None
            }
        }
    }
}

/// Users by id, `search` (username or address, any case) narrowing them.
pub async fn users(svc: &Services, params: &Params) -> Result<Page<AccountView>, ApiError> {
    let mut errors = FieldErrors::default();
    let limit = params.limit(USERS_PAGE, &mut errors);
    let after = params.cursor(&mut errors);
    errors.into_result()?;
    let search = params.get("search").map(str::to_owned);
    let (results, more) = svc
        .db
        .run(move |conn| users::account_page(conn, search.as_deref(), after, limit))
        .await?;
    let next_cursor = results.last().filter(|_| more).map(|u| u.id.to_string());
    Ok(Page {
        results,
        next_cursor,
    })
}

pub async fn user(svc: &Services, id: i64) -> Result<AccountView, ApiError> {
    svc.db
        .run(move |conn| users::account(conn, id))
        .await?
        .ok_or(ApiError::NotFound)
}

/// The target of a change: found, and a superuser only for a superuser.
async fn target(svc: &Services, admin: &Admin, id: i64) -> Result<AccountView, ApiError> {
    let user = user(svc, id).await?;
    if user.is_superuser {
        admin.require_superuser()?;
    }
    Ok(user)
}

/// A new account: registration's checks (username, address, password
/// policy); `flags` (is_staff, is_superuser) need a superuser when set.
pub async fn create_user(
    svc: &Services,
    admin: &Admin,
    input: Registration,
    flags: (Result<bool, Vec<String>>, Result<bool, Vec<String>>),
) -> Result<AccountView, ApiError> {
    let mut errors = FieldErrors::default();
    let mut flag = |name, value: Result<bool, Vec<String>>| {
        value.unwrap_or_else(|messages| {
            errors.add(name, messages);
            false
        })
    };
    let staff = (flag("is_staff", flags.0), flag("is_superuser", flags.1));
    errors.into_result()?;
    if staff.0 || staff.1 {
        admin.require_superuser()?;
    }
    let (username, password, email) = register::validate(svc, input).await?;
    let created = accounts::create(
        &svc.accounts(),
        Some(&admin.by),
        &username,
        &password,
        email,
        None,
        staff,
        admin.by.origin.as_ref().map_or(accounts::LOCAL, |o| o.ip),
        svc.now(),
    )
    .await?;
    match created {
        CreateUser::Created { id } => user(svc, id).await,
        CreateUser::UsernameTaken => Err(ApiError::Validation(FieldErrors::single(
            "username",
            register::MSG_USERNAME_TAKEN,
        ))),
        CreateUser::EmailTaken => Err(ApiError::Validation(FieldErrors::single(
            "email",
            register::MSG_EMAIL_TAKEN,
        ))),
    }
}

/// Deactivates the user and ends their sessions (as `tokend users
/// disable`).
pub async fn disable_user(svc: &Services, admin: &Admin, id: i64) -> Result<AccountView, ApiError> {
    target(svc, admin, id).await?;
    accounts::disable(&svc.accounts(), &admin.by, id, svc.now())
        .await?
        .ok_or(ApiError::NotFound)?;
    user(svc, id).await
}

pub async fn enable_user(svc: &Services, admin: &Admin, id: i64) -> Result<AccountView, ApiError> {
    target(svc, admin, id).await?;
    if !accounts::enable(&svc.accounts(), &admin.by, id, svc.now()).await? {
        return Err(ApiError::NotFound);
    }
    user(svc, id).await
}

pub async fn delete_user(svc: &Services, admin: &Admin, id: i64) -> Result<(), ApiError> {
    admin.require_superuser()?;
    target(svc, admin, id).await?;
    if !accounts::delete(&svc.accounts(), &admin.by, id, svc.now()).await? {
        return Err(ApiError::NotFound);
    }
    Ok(())
}

/// A new password (the password policy applies) and every session of the
/// user ended (as `tokend users set-password`).
pub async fn set_password(
    svc: &Services,
    admin: &Admin,
    id: i64,
    password: Result<String, Vec<String>>,
) -> Result<(), ApiError> {
    admin.require_superuser()?;
    let user = target(svc, admin, id).await?;
    let password = password
        .and_then(|p| svc.password_policy.parse(&p, Some(&user.username)))
        .map_err(|messages| {
            let mut errors = FieldErrors::default();
            errors.add("password", messages);
            ApiError::Validation(errors)
        })?;
    let client = admin.by.origin.as_ref().map_or(accounts::LOCAL, |o| o.ip);
    accounts::set_password(&svc.accounts(), &admin.by, id, &password, client, svc.now()).await?;
    Ok(())
}

/// A field as received: its value (absent: `None`) or its problems.
pub type Field<T> = Result<Option<T>, Vec<String>>;

/// Sets `is_staff` and/or `is_superuser` (superusers only); the user as it
/// is now. Claims change at the user's next refresh.
pub async fn set_flags(
    svc: &Services,
    admin: &Admin,
    id: i64,
    flags: [(Flag, Field<bool>); 2],
) -> Result<AccountView, ApiError> {
    let mut errors = FieldErrors::default();
    let mut changes = Vec::new();
    for (flag, value) in flags {
        let name = match flag {
            Flag::Staff => "is_staff",
            Flag::Superuser => "is_superuser",
        };
        match value {
            Ok(Some(value)) => changes.push((flag, value)),
            Ok(None) => {}
            Err(messages) => errors.add(name, messages),
        }
    }
    errors.into_result()?;
    admin.require_superuser()?;
    target(svc, admin, id).await?;
    for (flag, value) in changes {
        if !groups::set_flag(&svc.accounts(), &admin.by, id, flag, value).await? {
            return Err(ApiError::NotFound);
        }
    }
    user(svc, id).await
}

/// The user's live sessions, newest first.
pub async fn sessions(svc: &Services, id: i64) -> Result<Vec<SessionSummary>, ApiError> {
    user(svc, id).await?;
    let now = svc.now();
    Ok(svc
        .db
        .run(move |conn| sessions::live_for_user(conn, id, now))
        .await?)
}

/// Ends the user's live sessions `only` (all when `None`), each audited
/// (`session_revoked`, reason `admin`) in the same transaction; answers
/// how many were ended.
async fn end_sessions(
    svc: &Services,
    admin: &Admin,
    id: i64,
    only: Option<String>,
) -> Result<usize, ApiError> {
    let webhooks = svc.db.webhooks();
    target(svc, admin, id).await?;
    let (now, by) = (svc.now(), admin.by.clone());
    let ended = svc
        .db
        .write(move |conn| {
            use diesel::Connection;
            conn.transaction(|conn| {
                let ended = match &only {
                    Some(sid) => {
                        match sessions::revoke_live_session(
                            conn,
                            sid,
                            id,
                            RevokeReason::Admin,
                            now,
                        )? {
                            true => vec![sid.clone()],
                            false => vec![],
                        }
                    }
                    // No session has the empty id: none is kept.
                    None => sessions::revoke_other_live_sessions(
                        conn,
                        id,
                        "",
                        RevokeReason::Admin,
                        now,
                    )?,
                };
                let rows: Vec<_> = ended
                    .iter()
                    .map(|sid| {
                        let event = Event::new(EventKind::SessionRevoked, now)
                            .user(id)
                            .session(sid);
                        by.row(event, serde_json::json!({ "reason": "admin" }))
                    })
                    .collect();
                audit_store::insert_batch(conn, &webhooks, &rows)?;
                Ok(ended)
            })
        })
        .await?;
    let at = Instant::now();
    for sid in &ended {
        svc.cache.session_revoked(sid, id, at);
    }
    Ok(ended.len())
}

pub async fn revoke_session(
    svc: &Services,
    admin: &Admin,
    id: i64,
    sid: &str,
) -> Result<(), ApiError> {
    match end_sessions(svc, admin, id, Some(sid.to_owned())).await? {
        0 => Err(ApiError::NotFound),
        _ => Ok(()),
    }
}

pub async fn revoke_sessions(svc: &Services, admin: &Admin, id: i64) -> Result<usize, ApiError> {
    end_sessions(svc, admin, id, None).await
}

/// Every group with its member count, by name.
pub async fn groups(svc: &Services) -> Result<Vec<(String, i64)>, ApiError> {
    groups::list(&svc.accounts()).await
}

fn group_name(field: &str, name: Result<String, Vec<String>>) -> Result<GroupName, ApiError> {
    name.and_then(|n| GroupName::parse(&n).map_err(|problem| vec![problem]))
        .map_err(|messages| {
            let mut errors = FieldErrors::default();
            errors.add(field, messages);
            ApiError::Validation(errors)
        })
}

pub async fn create_group(
    svc: &Services,
    admin: &Admin,
    name: Result<String, Vec<String>>,
) -> Result<String, ApiError> {
    // Groups become claims downstream services grant roles by: handing
    // them out is a superuser's right, or staff could give themselves any.
    admin.require_superuser()?;
    let name = group_name("name", name)?;
    match groups::create(&svc.accounts(), &admin.by, &name).await? {
        CreateGroup::Created => Ok(name.as_str().to_owned()),
        CreateGroup::Exists => Err(ApiError::Validation(FieldErrors::single(
            "name",
            "A group with that name already exists.",
        ))),
    }
}

pub async fn delete_group(svc: &Services, admin: &Admin, name: &str) -> Result<(), ApiError> {
    admin.require_superuser()?;
    match groups::delete(&svc.accounts(), &admin.by, name).await? {
        true => Ok(()),
        false => Err(ApiError::NotFound),
    }
}

/// Adds the user to a group; the user as it is now.
pub async fn add_to_group(
    svc: &Services,
    admin: &Admin,
    id: i64,
    group: Result<String, Vec<String>>,
) -> Result<AccountView, ApiError> {
    admin.require_superuser()?;
    let group = group_name("group", group)?;
    target(svc, admin, id).await?;
    match groups::set_member(&svc.accounts(), &admin.by, id, group.as_str(), true).await? {
        Membership::Changed | Membership::Unchanged => user(svc, id).await,
        Membership::NoSuchGroup => Err(ApiError::Validation(FieldErrors::single(
            "group",
            "No group with that name.",
        ))),
    }
}

/// Removes the user from a group: not found when the user is not in it.
pub async fn remove_from_group(
    svc: &Services,
    admin: &Admin,
    id: i64,
    group: &str,
) -> Result<(), ApiError> {
    admin.require_superuser()?;
    target(svc, admin, id).await?;
    match groups::set_member(&svc.accounts(), &admin.by, id, group, false).await? {
        Membership::Changed => Ok(()),
        Membership::Unchanged | Membership::NoSuchGroup => Err(ApiError::NotFound),
    }
}

/// The audit trail, newest first: `user` (an id or a username), `event`
/// (a known name), `since` (unix seconds or RFC 3339), `cursor`, `limit`.
pub async fn audit(
    svc: &Services,
    params: &Params,
) -> Result<Page<audit_store::AuditEvent>, ApiError> {
    let mut errors = FieldErrors::default();
    let limit = params.limit(AUDIT_PAGE, &mut errors);
    let before_id = params.cursor(&mut errors);
    let event = match params.get("event").map(str::parse::<EventKind>) {
        None => None,
        Some(Ok(kind)) => Some(kind.as_str().to_owned()),
        Some(Err(message)) => {
            errors.add("event", vec![message]);
            None
        }
    };
    let since = match params.get("since").map(super::audit::parse_time) {
        None => None,
        Some(Ok(at)) => Some(at),
        Some(Err(message)) => {
            errors.add("since", vec![message]);
            None
        }
    };
    errors.into_result()?;
    let user = params.get("user").map(str::to_owned);
    let page: AuditPage = svc
        .db
        .run(move |conn| {
            let user = user
                .map(|u| audit_store::user_filter(conn, &u))
                .transpose()?;
            let query = AuditQuery {
                user,
                event,
                since,
                before_id,
                limit,
            };
            audit_store::list(conn, &query)
        })
        .await?;
    Ok(Page {
        results: page.events,
        next_cursor: page.next_cursor.map(|id| id.to_string()),
    })
}

fn client_error(e: clients::ClientError) -> ApiError {
    match e {
        clients::ClientError::Invalid(field, message) => {
            ApiError::Validation(FieldErrors::single(field, message))
        }
        clients::ClientError::NameTaken(_) => ApiError::Validation(FieldErrors::single(
            "name",
            "A client with that name already exists.",
        )),
        clients::ClientError::NotFound(_) => ApiError::NotFound,
        clients::ClientError::Api(e) => e,
    }
}

pub async fn clients(svc: &Services) -> Result<Vec<ClientRecord>, ApiError> {
    clients::list(&svc.db).await.map_err(client_error)
}

pub async fn client(svc: &Services, id: &str) -> Result<ClientRecord, ApiError> {
    clients::find(&svc.db, id).await.map_err(client_error)
}

/// A new client; its secret is in the answer only.
pub async fn create_client(
    svc: &Services,
    admin: &Admin,
    spec: Result<clients::ClientSpec, FieldErrors>,
) -> Result<clients::Credentials, ApiError> {
    admin.require_superuser()?;
    let spec = spec.map_err(ApiError::Validation)?;
    clients::create(&svc.db, &admin.by, spec, svc.now())
        .await
        .map_err(client_error)
}

/// A change to a client (superusers and `tokend:admin` clients only).
pub enum ClientChange {
    Disable,
    Enable,
    /// A new secret; the old one keeps working this many seconds.
    RotateSecret(i64),
    Delete,
}

/// Applies `change`; a new secret for `RotateSecret`.
pub async fn change_client(
    svc: &Services,
    admin: &Admin,
    id: &str,
    change: ClientChange,
) -> Result<Option<clients::Credentials>, ApiError> {
    admin.require_superuser()?;
    let (db, by, now) = (&svc.db, &admin.by, svc.now());
    let done = match change {
        ClientChange::Disable => clients::set_disabled(db, by, id, true, now)
            .await
            .map(|_| None),
        ClientChange::Enable => clients::set_disabled(db, by, id, false, now)
            .await
            .map(|_| None),
        ClientChange::RotateSecret(overlap) => clients::rotate_secret(db, by, id, overlap, now)
            .await
            .map(Some),
        ClientChange::Delete => clients::delete(db, by, id, now).await.map(|_| None),
    };
    done.map_err(client_error)
}

/// The detail of an audit row as JSON (`null` when none).
pub fn detail_json(detail: Option<&str>) -> Value {
    detail
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null)
}
