//! `/.well-known/jwks.json`: the public keys that verify tokend's tokens
//! (RFC 7517), for downstream services using EdDSA or RS256. With HS256 the
//! set is empty: a shared key is never published.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::AppState;

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "Public verification keys", body = super::openapi::JwkSet)))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        // Public and safe to cache briefly; rotation publishes the next key
        // ahead, so a five-minute-old copy still knows every signing key.
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(state.keys.jwks_json().to_owned())
}
