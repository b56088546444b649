//! The admin API (`/api/admin/`): users, their sessions and groups, the
//! audit trail, OAuth 2 clients. Every handler authorises its caller with
//! `service::admin::authorize` first (401 without a valid Bearer token, 403
//! without the rights); the answers every admin route may give (401, 403,
//! 404 on paths with an id, 500, 503) are documented for all of them in
//! `openapi::add_admin_responses`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::bearer::bearer_token;
use super::bodies::{
    AdminSessionBody, AdminUserBody, AuditEventBody, AuditPageBody, ClientBody,
    ClientCredentialsBody, Empty, GroupBody, RevokedBody, UserPageBody,
};
use super::fields::Fields;
use super::AppState;
use crate::error::{ApiError, FieldErrors};
use crate::service::admin::{self, Admin, ClientChange, Params};
use crate::service::clients::ClientSpec;
use crate::service::register::Registration;
use crate::storage::users::Flag;

/// The caller, authorised.
async fn caller(state: &AppState, req: &HttpRequest) -> Result<Admin, ApiError> {
    let token = bearer_token(req)?;
    admin::authorize(state, &super::origin(state, req), &token).await
}

fn params(req: &HttpRequest) -> Params {
    Params(serde_urlencoded::from_str(req.query_string()).unwrap_or_default())
}

/// A user id of the path: anything else names no user.
fn user_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound)
}

fn ok(body: impl serde::Serialize) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(body))
}

/// GET /api/admin/users/?search=&limit=&cursor=
#[utoipa::path(get, path = "/api/admin/users/", tag = "admin", security(("bearer" = [])),
    params(
        ("search" = Option<String>, Query, description = "Part of the username or e-mail address, any case"),
        ("limit" = Option<i64>, Query, description = "Users per page: 1-200, default 50"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "Users by id", body = UserPageBody),
        (status = 400, description = "A bad `limit` or `cursor` (field errors); an origin the CORS settings refuse", body = super::openapi::BadRequest),
    ))]
pub async fn list_users(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller(&state, &req).await?;
    let page = admin::users(&state, &params(&req)).await?;
    ok(UserPageBody {
        results: page.results.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    })
}

/// POST /api/admin/users/ -> 201 the user
#[utoipa::path(post, path = "/api/admin/users/", tag = "admin", security(("bearer" = [])),
    request_body(content((super::openapi::AdminNewUser = "application/json"), (super::openapi::AdminNewUser = "application/x-www-form-urlencoded"))),
    responses(
        (status = 201, description = "Created (no verification mail is sent)", body = AdminUserBody),
        (status = 400, description = "Invalid fields, a name or address taken (field errors as registration's)", body = super::openapi::BadRequest),
    ))]
pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    let input = Registration {
        username: fields.char_field("username"),
        password: fields.char_field("password"),
        email: fields.optional_char_field("email"),
    };
    let flags = (
        fields.bool_field("is_staff").map(Option::unwrap_or_default),
        fields
            .bool_field("is_superuser")
            .map(Option::unwrap_or_default),
    );
    let user = admin::create_user(&state, &by, input, flags).await?;
    Ok(HttpResponse::Created().json(AdminUserBody::from(user)))
}

/// GET /api/admin/users/{id}/
#[utoipa::path(get, path = "/api/admin/users/{id}/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id")),
    responses((status = 200, description = "The user", body = AdminUserBody)))]
pub async fn get_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller(&state, &req).await?;
    ok(AdminUserBody::from(
        admin::user(&state, user_id(&id)?).await?,
    ))
}

/// DELETE /api/admin/users/{id}/ (superuser) -> {}
#[utoipa::path(delete, path = "/api/admin/users/{id}/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id")),
    responses((status = 200, description = "Deleted with all their sessions and tokens (superusers only)", body = Empty)))]
pub async fn delete_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    admin::delete_user(&state, &by, user_id(&id)?).await?;
    ok(Empty {})
}

/// POST /api/admin/users/{id}/disable/ -> the user
#[utoipa::path(post, path = "/api/admin/users/{id}/disable/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id")),
    responses((status = 200, description = "Disabled; every session of the user revoked", body = AdminUserBody)))]
pub async fn disable_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    _body: Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    ok(AdminUserBody::from(
        admin::disable_user(&state, &by, user_id(&id)?).await?,
    ))
}

/// POST /api/admin/users/{id}/enable/ -> the user
#[utoipa::path(post, path = "/api/admin/users/{id}/enable/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id")),
    responses((status = 200, description = "Enabled (revoked sessions stay revoked)", body = AdminUserBody)))]
pub async fn enable_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    _body: Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    ok(AdminUserBody::from(
        admin::enable_user(&state, &by, user_id(&id)?).await?,
    ))
}

/// POST /api/admin/users/{id}/password/ {password} (superuser) -> {}
#[utoipa::path(post, path = "/api/admin/users/{id}/password/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id")),
    request_body(content((super::openapi::AdminPassword = "application/json"), (super::openapi::AdminPassword = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Set (superusers only); every session of the user revoked", body = Empty),
        (status = 400, description = "A password the policy refuses (field errors)", body = super::openapi::BadRequest),
    ))]
pub async fn set_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    let id = user_id(&id)?;
    admin::set_password(&state, &by, id, fields.char_field("password")).await?;
    ok(Empty {})
}

/// POST /api/admin/users/{id}/flags/ {is_staff?, is_superuser?} (superuser) -> the user
#[utoipa::path(post, path = "/api/admin/users/{id}/flags/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id")),
    request_body(content((super::openapi::AdminFlags = "application/json"), (super::openapi::AdminFlags = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Set (superusers only); the claims change at the user's next refresh", body = AdminUserBody),
        (status = 400, description = "A value that is not a boolean (field errors)", body = super::openapi::BadRequest),
    ))]
pub async fn set_flags(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    let flags = [
        (Flag::Staff, fields.bool_field("is_staff")),
        (Flag::Superuser, fields.bool_field("is_superuser")),
    ];
    ok(AdminUserBody::from(
        admin::set_flags(&state, &by, user_id(&id)?, flags).await?,
    ))
}

/// GET /api/admin/users/{id}/sessions/ -> the user's live sessions
#[utoipa::path(get, path = "/api/admin/users/{id}/sessions/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id")),
    responses((status = 200, description = "The user's live sessions, newest first", body = Vec<AdminSessionBody>)))]
pub async fn list_sessions(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller(&state, &req).await?;
    let sessions = admin::sessions(&state, user_id(&id)?).await?;
    let body: Vec<AdminSessionBody> = sessions.into_iter().map(Into::into).collect();
    ok(body)
}

/// POST /api/admin/users/{id}/sessions/revoke-all/ -> {"revoked": N}
#[utoipa::path(post, path = "/api/admin/users/{id}/sessions/revoke-all/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id")),
    responses((status = 200, description = "Every live session of the user revoked; how many", body = RevokedBody)))]
pub async fn revoke_sessions(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    _body: Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    let revoked = admin::revoke_sessions(&state, &by, user_id(&id)?).await?;
    ok(RevokedBody { revoked })
}

/// DELETE /api/admin/users/{id}/sessions/{sid}/ -> {}
#[utoipa::path(delete, path = "/api/admin/users/{id}/sessions/{sid}/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id"), ("sid" = String, Path, description = "A live session of the user")),
    responses((status = 200, description = "Revoked: its tokens are refused from now on", body = Empty)))]
pub async fn revoke_session(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    let (id, sid) = path.into_inner();
    admin::revoke_session(&state, &by, user_id(&id)?, &sid).await?;
    ok(Empty {})
}

/// POST /api/admin/users/{id}/groups/ {group} -> the user
#[utoipa::path(post, path = "/api/admin/users/{id}/groups/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id")),
    request_body(content((super::openapi::AdminGroupRef = "application/json"), (super::openapi::AdminGroupRef = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "The user, now in the group", body = AdminUserBody),
        (status = 400, description = "No such group (field errors)", body = super::openapi::BadRequest),
    ))]
pub async fn add_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    let id = user_id(&id)?;
    let user = admin::add_to_group(&state, &by, id, fields.char_field("group")).await?;
    ok(AdminUserBody::from(user))
}

/// DELETE /api/admin/users/{id}/groups/{name}/ -> {}
#[utoipa::path(delete, path = "/api/admin/users/{id}/groups/{name}/", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A user id"), ("name" = String, Path, description = "A group of the user")),
    responses((status = 200, description = "Removed from the group", body = Empty)))]
pub async fn remove_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    let (id, name) = path.into_inner();
    admin::remove_from_group(&state, &by, user_id(&id)?, &name).await?;
    ok(Empty {})
}

/// GET /api/admin/groups/
#[utoipa::path(get, path = "/api/admin/groups/", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every group, by name", body = Vec<GroupBody>)))]
pub async fn list_groups(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller(&state, &req).await?;
    let body: Vec<GroupBody> = admin::groups(&state)
        .await?
        .into_iter()
        .map(|(name, members)| GroupBody { name, members })
        .collect();
    ok(body)
}

/// POST /api/admin/groups/ {name} -> 201 the group
#[utoipa::path(post, path = "/api/admin/groups/", tag = "admin", security(("bearer" = [])),
    request_body(content((super::openapi::AdminGroup = "application/json"), (super::openapi::AdminGroup = "application/x-www-form-urlencoded"))),
    responses(
        (status = 201, description = "Created", body = GroupBody),
        (status = 400, description = "An invalid or taken name (field errors)", body = super::openapi::BadRequest),
    ))]
pub async fn create_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    let name = admin::create_group(&state, &by, fields.char_field("name")).await?;
    Ok(HttpResponse::Created().json(GroupBody { name, members: 0 }))
}

/// DELETE /api/admin/groups/{name}/ -> {}
#[utoipa::path(delete, path = "/api/admin/groups/{name}/", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "A group")),
    responses((status = 200, description = "Deleted with its memberships", body = Empty)))]
pub async fn delete_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    admin::delete_group(&state, &by, &name).await?;
    ok(Empty {})
}

/// GET /api/admin/audit/?user=&event=&since=&cursor=&limit=
#[utoipa::path(get, path = "/api/admin/audit/", tag = "admin", security(("bearer" = [])),
    params(
        ("user" = Option<String>, Query, description = "A user id, or a username (then also events naming it without an id)"),
        ("event" = Option<String>, Query, description = "An event name (docs/audit.md)"),
        ("since" = Option<String>, Query, description = "Unix seconds or an RFC 3339 time: events at or after it"),
        ("limit" = Option<i64>, Query, description = "Events per page: 1-1000, default 100"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "Events, newest first", body = AuditPageBody),
        (status = 400, description = "An unknown event, a bad time, limit or cursor (field errors); an origin the CORS settings refuse", body = super::openapi::BadRequest),
    ))]
pub async fn audit(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller(&state, &req).await?;
    let page = admin::audit(&state, &params(&req)).await?;
    ok(AuditPageBody {
        results: page.results.into_iter().map(AuditEventBody::from).collect(),
        next_cursor: page.next_cursor,
    })
}

/// GET /api/admin/clients/
#[utoipa::path(get, path = "/api/admin/clients/", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every client, by name (never a secret)", body = Vec<ClientBody>)))]
pub async fn list_clients(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller(&state, &req).await?;
    let body: Vec<ClientBody> = admin::clients(&state)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    ok(body)
}

/// The fields of `tokend clients create`.
fn client_spec(fields: &Fields) -> Result<ClientSpec, FieldErrors> {
    fn take<T>(errors: &mut FieldErrors, name: &str, value: Result<T, Vec<String>>) -> Option<T> {
        value.map_err(|messages| errors.add(name, messages)).ok()
    }
    let mut errors = FieldErrors::default();
    let name = take(&mut errors, "name", fields.char_field("name"));
    let scopes = take(&mut errors, "scopes", fields.string_list("scopes"));
    let audience = take(
        &mut errors,
        "audience",
        fields.optional_char_field("audience"),
    );
    let ttl_secs = take(&mut errors, "ttl_secs", fields.integer_field("ttl_secs"));
    let public_key = take(
        &mut errors,
        "public_key",
        fields.optional_char_field("public_key"),
    );
    match (name, scopes, audience, ttl_secs, public_key) {
        (Some(name), Some(scopes), Some(audience), Some(ttl_secs), Some(public_key)) => {
            Ok(ClientSpec {
                name,
                scopes,
                audience,
                ttl_secs,
                public_key,
            })
        }
        _ => Err(errors),
    }
}

/// POST /api/admin/clients/ -> 201 {client_id, client_secret}
#[utoipa::path(post, path = "/api/admin/clients/", tag = "admin", security(("bearer" = [])),
    request_body(content((super::openapi::AdminNewClient = "application/json"), (super::openapi::AdminNewClient = "application/x-www-form-urlencoded"))),
    responses(
        (status = 201, description = "Created (superusers and `tokend:admin` clients only); the secret is shown this once", body = ClientCredentialsBody),
        (status = 400, description = "Invalid fields or a name taken (field errors)", body = super::openapi::BadRequest),
    ))]
pub async fn create_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    let credentials = admin::create_client(&state, &by, client_spec(&fields)).await?;
    Ok(HttpResponse::Created().json(ClientCredentialsBody::from(credentials)))
}

/// GET /api/admin/clients/{id}/
#[utoipa::path(get, path = "/api/admin/clients/{id}/", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A client id (or name)")),
    responses((status = 200, description = "The client (never its secret)", body = ClientBody)))]
pub async fn get_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller(&state, &req).await?;
    ok(ClientBody::from(admin::client(&state, &id).await?))
}

async fn change_client(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    change: impl FnOnce(&Fields) -> Result<ClientChange, ApiError>,
    fields: &Fields,
) -> Result<HttpResponse, ApiError> {
    let by = caller(state, req).await?;
    match admin::change_client(state, &by, id, change(fields)?).await? {
        Some(credentials) => ok(ClientCredentialsBody::from(credentials)),
        None => ok(ClientBody::from(admin::client(state, id).await?)),
    }
}

/// DELETE /api/admin/clients/{id}/ -> {}
#[utoipa::path(delete, path = "/api/admin/clients/{id}/", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A client id (or name)")),
    responses((status = 200, description = "Deleted (superusers and `tokend:admin` clients only); its tokens are refused", body = Empty)))]
pub async fn delete_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&state, &req).await?;
    admin::change_client(&state, &by, &id, ClientChange::Delete).await?;
    ok(Empty {})
}

/// POST /api/admin/clients/{id}/disable/ -> the client
#[utoipa::path(post, path = "/api/admin/clients/{id}/disable/", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A client id (or name)")),
    responses((status = 200, description = "Disabled (superusers and `tokend:admin` clients only): the tokens it holds are refused", body = ClientBody)))]
pub async fn disable_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    change_client(&state, &req, &id, |_| Ok(ClientChange::Disable), &fields).await
}

/// POST /api/admin/clients/{id}/enable/ -> the client
#[utoipa::path(post, path = "/api/admin/clients/{id}/enable/", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A client id (or name)")),
    responses((status = 200, description = "Enabled (superusers and `tokend:admin` clients only)", body = ClientBody)))]
pub async fn enable_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    change_client(&state, &req, &id, |_| Ok(ClientChange::Enable), &fields).await
}

/// POST /api/admin/clients/{id}/rotate-secret/ {overlap_secs?} -> {client_id, client_secret}
#[utoipa::path(post, path = "/api/admin/clients/{id}/rotate-secret/", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A client id (or name)")),
    request_body(content((super::openapi::AdminRotateSecret = "application/json"), (super::openapi::AdminRotateSecret = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "A new secret, shown this once (superusers and `tokend:admin` clients only); the old one keeps working `overlap_secs`", body = ClientCredentialsBody),
        (status = 400, description = "A bad `overlap_secs` (field errors)", body = super::openapi::BadRequest),
    ))]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let overlap = |fields: &Fields| match fields.integer_field("overlap_secs") {
        Ok(secs) => Ok(ClientChange::RotateSecret(secs.unwrap_or(0))),
        Err(messages) => {
            let mut errors = FieldErrors::default();
            errors.add("overlap_secs", messages);
            Err(ApiError::Validation(errors))
        }
    };
    change_client(&state, &req, &id, overlap, &fields).await
}
