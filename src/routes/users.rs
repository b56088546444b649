use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::bearer::bearer_token;
use super::fields::Fields;
use super::{unix_now, AppState};
use crate::auth::credentials::{NewPassword, NewUsername};
use crate::auth::jwt::TokenType;
use crate::error::{ApiError, FieldErrors};
use crate::storage::users::{self, CreateUser, UserRecord};

const MSG_USERNAME_TAKEN: &str = "A user with that username already exists.";

/// POST /api/user/register/ {username, password} -> 201 {id, username}
pub async fn register(
    state: web::Data<AppState>,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::default();
    let username = match fields
        .char_field("username")
        .map(|v| NewUsername::parse(&v))
    {
        Ok(Ok(name)) => Some(name),
        Ok(Err(messages)) | Err(messages) => {
            errors.add("username", messages);
            None
        }
    };
    // As DRF's UniqueValidator: reported with the other field errors, and
    // checked before paying for a hash. The insert below still decides races.
    if let Some(name) = &username {
        let name = name.as_str().to_owned();
        if state
            .db
            .run(move |conn| users::username_exists(conn, &name))
            .await?
        {
            errors.add("username", vec![MSG_USERNAME_TAKEN.to_owned()]);
        }
    }
    let password = match fields
        .char_field("password")
        .map(|v| NewPassword::parse(&v))
    {
        Ok(Ok(password)) => Some(password),
        Ok(Err(messages)) | Err(messages) => {
            errors.add("password", messages);
            None
        }
    };
    errors.into_result()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let hash = state
        .hashing
        .hash(password.expose().to_owned())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let name = username.as_str().to_owned();
    let created = state
        .db
        .run(move |conn| users::create(conn, &name, &hash, unix_now()))
        .await?;
    match created {
        CreateUser::Created { id } => {
            Ok(HttpResponse::Created().json(json!({ "id": id, "username": username.as_str() })))
        }
        CreateUser::UsernameTaken => Err(ApiError::Validation(FieldErrors::single(
            "username",
            MSG_USERNAME_TAKEN,
        ))),
    }
}

/// The user a Bearer access token names, checked as simplejwt's
/// `JWTAuthentication` does.
async fn authenticated_user(state: &AppState, req: &HttpRequest) -> Result<UserRecord, ApiError> {
    let token = bearer_token(req)?;
    let verified = state
        .keys
        .verify(&token, Some(TokenType::Access), unix_now())
        .map_err(ApiError::BearerToken)?;
    let user_id = verified.user_id.ok_or(ApiError::NoUserIdentification)?;
    let user = state
        .db
        .run(move |conn| users::find_by_id(conn, user_id))
        .await?
        .ok_or(ApiError::UserNotFound)?;
    if !user.is_active {
        return Err(ApiError::UserInactive);
    }
    Ok(user)
}

/// GET /api/user/me/ with `Authorization: Bearer <access>` -> {id, username}
pub async fn me(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let user = authenticated_user(&state, &req).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": user.id, "username": user.username })))
}

/// Other methods on /api/user/me/: as DRF, authentication comes first, so an
/// anonymous caller learns nothing but 401.
pub async fn me_other_method(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    authenticated_user(&state, &req).await?;
    super::other_method(req, super::ALLOW_GET).await
}
