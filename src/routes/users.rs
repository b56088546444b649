use actix_web::{web, HttpRequest, HttpResponse};

use super::bearer::bearer_token;
use super::bodies::{Empty, UserBody};
use super::fields::Fields;
use super::AppState;
use crate::error::ApiError;
use crate::service::change_password::PasswordChange;
use crate::service::register::Registration;
use crate::service::{change_password as password, logout_all, me as current, register as signup};

/// POST /api/user/register/ {username, password} -> 201 {id, username}
#[utoipa::path(post, path = "/api/user/register/", tag = "users",
    request_body(content((super::openapi::Registration = "application/json"), (super::openapi::Registration = "application/x-www-form-urlencoded"))),
    responses(
        (status = 201, description = "Created", body = super::openapi::User),
        (status = 400, description = "Invalid fields or a name already taken (DRF field errors), or a body that cannot be parsed", body = super::openapi::BadRequest),
        (status = 429, description = "Too many registrations from this address", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database or hashing unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let input = Registration {
        username: fields.char_field("username"),
        password: fields.char_field("password"),
        email: fields.optional_char_field("email"),
    };
    let user = signup::register(&state, &super::origin(&state, &req), input).await?;
    Ok(HttpResponse::Created().json(UserBody::from(user)))
}

/// GET /api/user/me/ with `Authorization: Bearer <access>` -> {id, username}
#[utoipa::path(get, path = "/api/user/me/", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "The user of the access token", body = super::openapi::User),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn me(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let user = current::current_user(&state, &bearer_token(&req)?).await?;
    Ok(HttpResponse::Ok().json(UserBody::from(user)))
}

/// Other methods on /api/user/me/: as DRF, authentication comes first, so an
/// anonymous caller learns nothing but 401.
pub async fn me_other_method(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    current::current_user(&state, &bearer_token(&req)?).await?;
    super::other_method(req, super::ALLOW_GET).await
}

/// POST /api/user/logout-all/ (Bearer) -> {}: every session of the user is
/// revoked, this one included; all their tokens stop working.
#[utoipa::path(post, path = "/api/user/logout-all/", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every session of the user revoked", body = super::openapi::Empty),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn logout_everywhere(
    state: web::Data<AppState>,
    req: HttpRequest,
    _body: Fields,
) -> Result<HttpResponse, ApiError> {
    logout_all::logout_all(&state, &super::origin(&state, &req), &bearer_token(&req)?).await?;
    Ok(HttpResponse::Ok().json(Empty {}))
}

/// POST /api/user/password/ (Bearer) {old_password, new_password} -> {}:
/// changes the password and revokes every other session of the user; the
/// calling session stays signed in.
#[utoipa::path(post, path = "/api/user/password/", tag = "users", security(("bearer" = [])),
    request_body(content((super::openapi::PasswordChange = "application/json"), (super::openapi::PasswordChange = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Changed; the user's other sessions are revoked", body = super::openapi::Empty),
        (status = 400, description = "Wrong old password or invalid new one, or a body that cannot be parsed", body = super::openapi::BadRequest),
        (status = 429, description = "Too many attempts, or a back-off after wrong old passwords", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database or hashing unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let token = bearer_token(&req)?;
    let input = PasswordChange {
        old_password: fields.char_field("old_password"),
        new_password: fields.char_field("new_password"),
    };
    password::change_password(&state, &super::origin(&state, &req), &token, input).await?;
    Ok(HttpResponse::Ok().json(Empty {}))
}
