//! Account flows at dj-rest-auth's paths and with its bodies, so existing
//! frontends work: password reset by mail, address verification, the
//! user's details.

use actix_web::{web, HttpRequest, HttpResponse};

use super::bearer::bearer_token;
use super::bodies::{AuthUser, DetailBody};
use super::fields::Fields;
use super::AppState;
use crate::error::ApiError;
use crate::service::password_reset::Confirmation;
use crate::service::{email_verification, me, password_reset};

/// POST /api/auth/password/reset/ {email} -> 200, whether or not the
/// address is known.
#[utoipa::path(post, path = "/api/auth/password/reset/", tag = "accounts",
    request_body(content((super::openapi::EmailRequest = "application/json"), (super::openapi::EmailRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Always the same answer, in the same time: a mail with a reset link goes to the address if an active user has it", body = super::openapi::DetailBody,
            example = json!({"detail": "Password reset e-mail has been sent."})),
        (status = 400, description = "Missing or invalid e-mail address, or a body that cannot be parsed", body = super::openapi::BadRequest),
        (status = 429, description = "Too many mail requests from this client or for this address", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn password_reset(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let client = super::client_ip(&state, &req);
    password_reset::request(&state, client, fields.char_field("email")).await?;
    Ok(HttpResponse::Ok().json(DetailBody {
        detail: "Password reset e-mail has been sent.",
    }))
}

/// POST /api/auth/password/reset/confirm/ {new_password1, new_password2,
/// uid, token} -> 200; every session of the user is revoked.
#[utoipa::path(post, path = "/api/auth/password/reset/confirm/", tag = "accounts",
    request_body(content((super::openapi::ResetConfirmation = "application/json"), (super::openapi::ResetConfirmation = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "The password is reset; every session of the user is revoked", body = super::openapi::DetailBody,
            example = json!({"detail": "Password has been reset with the new password."})),
        (status = 400, description = "Missing fields; `{\"uid\": [\"Invalid value\"]}` or `{\"token\": [\"Invalid value\"]}` for an unknown, expired, used or voided link; `new_password2` for a mismatch or a password the policy refuses", body = super::openapi::BadRequest),
        (status = 429, description = "The hashing queue holds this client's share", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database or hashing unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn password_reset_confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let input = Confirmation {
        new_password1: fields.char_field("new_password1"),
        new_password2: fields.char_field("new_password2"),
        uid: fields.char_field("uid"),
        token: fields.char_field("token"),
    };
    password_reset::confirm(&state, &super::origin(&state, &req), input).await?;
    Ok(HttpResponse::Ok().json(DetailBody {
        detail: "Password has been reset with the new password.",
    }))
}

/// POST /api/auth/registration/verify-email/ {key} -> 200 {"detail": "ok"}.
#[utoipa::path(post, path = "/api/auth/registration/verify-email/", tag = "accounts",
    request_body(content((super::openapi::KeyRequest = "application/json"), (super::openapi::KeyRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "The address is verified", body = super::openapi::DetailBody,
            example = json!({"detail": "ok"})),
        (status = 400, description = "No key, or a body that cannot be parsed", body = super::openapi::BadRequest),
        (status = 404, description = "Unknown, expired or used key, or the user's address changed since", body = super::openapi::Detail),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn verify_email(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    email_verification::verify(
        &state,
        &super::origin(&state, &req),
        fields.char_field("key"),
    )
    .await?;
    Ok(HttpResponse::Ok().json(DetailBody { detail: "ok" }))
}

/// POST /api/auth/registration/resend-email/ {email} -> 200 {"detail": "ok"}
/// always.
#[utoipa::path(post, path = "/api/auth/registration/resend-email/", tag = "accounts",
    request_body(content((super::openapi::EmailRequest = "application/json"), (super::openapi::EmailRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Always the same answer: a new verification mail goes to the address if an active user has it unverified (and verification is on)", body = super::openapi::DetailBody,
            example = json!({"detail": "ok"})),
        (status = 400, description = "Missing or invalid e-mail address, or a body that cannot be parsed", body = super::openapi::BadRequest),
        (status = 429, description = "Too many mail requests from this client or for this address", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn resend_email(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let client = super::client_ip(&state, &req);
    email_verification::resend(&state, client, fields.char_field("email")).await?;
    Ok(HttpResponse::Ok().json(DetailBody { detail: "ok" }))
}

/// GET /api/auth/user/ (Bearer) -> dj-rest-auth's user details.
#[utoipa::path(get, path = "/api/auth/user/", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, description = "The user of the access token", body = super::openapi::AuthUser),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn user(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let details = me::details(&state, &bearer_token(&req)?).await?;
    Ok(HttpResponse::Ok().json(AuthUser::from(details)))
}
