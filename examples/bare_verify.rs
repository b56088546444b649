//! The verify ceiling of `bench/run.py --ceilings`: actix-web parsing the
//! JSON body of `POST /api/token/verify/` and checking its HS256 token
//! (signature, `exp`, `token_type`), nothing else: no limits, metrics,
//! logging, revocation or session checks. What tokend's verify is measured
//! against, in the same run on the same cores.
//!
//! Environment: `PORT`, `TOKEND__JWT__SIGNING_KEY` (the HS256 key).
//! Answers 200 `{}` or 401 `{"detail":"Token is invalid"}`.

use actix_web::{web, App, HttpResponse, HttpServer};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

#[derive(serde::Deserialize)]
struct Body {
    token: String,
}

struct Checker {
    key: DecodingKey,
    validation: Validation,
}

async fn verify(checker: web::Data<Checker>, body: web::Json<Body>) -> HttpResponse {
    let claims =
        jsonwebtoken::decode::<serde_json::Value>(&body.token, &checker.key, &checker.validation)
            .map(|t| t.claims);
    match claims {
        Ok(c) if c.get("token_type").and_then(|t| t.as_str()) == Some("access") => {
            HttpResponse::Ok().json(serde_json::json!({}))
        }
        _ => HttpResponse::Unauthorized().json(serde_json::json!({"detail": "Token is invalid"})),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let key = std::env::var("TOKEND__JWT__SIGNING_KEY").unwrap_or_default();
    let checker = web::Data::new(Checker {
        key: DecodingKey::from_secret(key.as_bytes()),
        validation: Validation::new(Algorithm::HS256),
    });
    HttpServer::new(move || {
        App::new()
            .app_data(checker.clone())
            .route("/api/token/verify/", web::post().to(verify))
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
