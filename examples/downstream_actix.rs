//! A downstream service that trusts tokend's access tokens: it checks them
//! itself, with the shared key or with tokend's published public keys, and
//! never calls tokend per request. Copy this file into your service.
//!
//! Dependencies: actix-web 4, jsonwebtoken 10+ (`rust_crypto` or `aws_lc_rs`
//! feature), serde, serde_json, reqwest (JWKS mode only), tokio.
//!
//! Configuration (environment):
//! - `TOKEND_SHARED_KEY`: tokend's HS256 key (`TOKEND__JWT__SIGNING_KEY`), or
//! - `TOKEND_JWKS_URL`: e.g. `http://tokend:8000/.well-known/jwks.json` when
//!   tokend signs with EdDSA or RS256 (`TOKEND__JWT__ALGORITHM`).
//! - `TOKEND_ISSUER` / `TOKEND_AUDIENCE`: set them when tokend's
//!   `jwt.issuer` / `jwt.audience` are set.
//! - `TOKEND_SERVICE_AUDIENCE`: this service's own name, the audience
//!   service tokens must carry (the client's `--audience`); without it
//!   `GET /orders` refuses every token.
//! - `TOKEND_USER_ID_CLAIM`: tokend's `jwt.user_id_claim` (default
//!   `user_id`), the claim holding the user id.
//! - `TOKEND_REQUIRED_GROUP`: the group `GET /editors` requires (default
//!   `editors`).
//! - `TOKEND_REQUIRED_SCOPE`: the scope `GET /orders` requires (default
//!   `orders:read`).
//! - `PORT` (default 8080; 0 picks a free port).
//!
//! `GET /hello` answers `{"user_id":"42"}` for a valid user access token
//! (`Authorization: Bearer <access>`) and 401 `{"detail": ...}` otherwise
//! (service tokens included: they have no user id).
//! `GET /editors` also needs the required group in the token's `groups`
//! claim (tokend's `TOKEND__JWT__EXTRA_CLAIMS=groups`):
//! `{"user_id":"42","group":"editors"}`, or 403 `{"detail": ...}`.
//! `GET /orders` is for services only: it needs a client credentials token
//! (`client_id`, no user id) for `TOKEND_SERVICE_AUDIENCE` (401 otherwise) whose
//! `scope` lists the required scope:
//! `{"client_id":"3f0c…","scope":"orders:read"}`; a user's token is 403, a
//! missing scope 403 with `WWW-Authenticate: Bearer
//! error="insufficient_scope", scope="orders:read"` (RFC 6750).
//!
//! Run: `TOKEND_SHARED_KEY=... cargo run --example downstream_actix`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, App, FromRequest, HttpRequest, HttpResponse, HttpServer, ResponseError};
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// The claims this service relies on. tokend (like simplejwt) writes the
/// user id as a string, under `user_id` unless `jwt.user_id_claim` names
/// another claim, so the rest is kept to look it up by name.
#[derive(Deserialize)]
struct AccessClaims {
    token_type: String,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

enum Keys {
    /// HS256 with the shared key.
    Shared(DecodingKey),
    /// Public keys fetched from tokend's JWKS, refreshed when a token names
    /// a kid not seen yet (tokend publishes the next key before using it).
    Jwks {
        url: String,
        client: reqwest::Client,
        /// The keys, and when a fetch was last attempted.
        set: RwLock<(JwkSet, Instant)>,
        /// One refetch at a time.
        fetching: Mutex<()>,
    },
}

struct Verifier {
    keys: Keys,
    issuer: Option<String>,
    /// Users' tokens: tokend's `jwt.audience`, if set.
    audience: Option<String>,
    /// Service tokens: this service's own name.
    service_audience: Option<String>,
    user_id_claim: String,
}

impl Verifier {
    fn validation(&self, algorithm: Algorithm, audience: Option<&str>) -> Validation {
        // The algorithm comes from our configuration (or the JWK), never
        // from the token: that is what defeats `alg` tricks (RFC 8725).
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.required_spec_claims = ["exp".to_owned()].into();
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        validation
    }

    /// The claims of a valid access token (signature, `exp`, `iss`/`aud`
    /// when configured, `token_type`), user's or service's.
    async fn access_claims(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<AccessClaims, &'static str> {
        let claims = match &self.keys {
            Keys::Shared(key) => decode(token, key, &self.validation(Algorithm::HS256, audience))?,
            Keys::Jwks { .. } => {
                let kid = jsonwebtoken::decode_header(token)
                    .map_err(|_| "malformed token")?
                    .kid
                    .ok_or("token has no kid")?;
                let (key, algorithm) = self.jwk(&kid).await?;
                decode(token, &key, &self.validation(algorithm, audience))?
            }
        };
        if claims.token_type != "access" {
            return Err("not an access token");
        }
        Ok(claims)
    }

    /// The user of a valid access token.
    async fn check(&self, token: &str) -> Result<Authenticated, &'static str> {
        let claims = self.access_claims(token, self.audience.as_deref()).await?;
        let user_id = match claims.other.get(&self.user_id_claim) {
            Some(serde_json::Value::String(id)) => id.clone(),
            _ => return Err("token has no user id"),
        };
        // Anything but an array of strings grants nothing (a string is not
        // a list of one group).
        let groups = match claims.other.get("groups") {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(Authenticated { user_id, groups })
    }

    /// The caller of a valid access token for this service's audience:
    /// unlike user tokens, service tokens are refused without one (a token
    /// tokend issued for another service must not work here).
    async fn check_service(&self, token: &str) -> Result<Caller, &'static str> {
        let Some(audience) = self.service_audience.as_deref() else {
            return Err("TOKEND_SERVICE_AUDIENCE is not set: service tokens are refused");
        };
        let claims = self.access_claims(token, Some(audience)).await?;
        let client_id = match claims.other.get("client_id") {
            // A user's token is never a service's, whatever else it holds.
            Some(serde_json::Value::String(id))
                if !claims.other.contains_key(&self.user_id_claim) =>
            {
                Some(id.clone())
            }
            _ => None,
        };
        // RFC 6749 §3.3: space-separated; anything but a string grants nothing.
        let scopes = match claims.other.get("scope") {
            Some(serde_json::Value::String(scope)) => scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Ok(Caller { client_id, scopes })
    }

    async fn jwk(&self, kid: &str) -> Result<(DecodingKey, Algorithm), &'static str> {
        let Keys::Jwks {
            url,
            client,
            set,
            fetching,
        } = &self.keys
        else {
            return Err("no JWKS configured");
        };
        let known = |set: &RwLock<(JwkSet, Instant)>| {
            let guard = set.read().unwrap_or_else(|e| e.into_inner());
            (guard.0.find(kid).cloned(), guard.1)
        };
        let (mut found, _) = known(set);
        if found.is_none() {
            // Unknown kid: refetch, one fetch at a time and at most every
            // 30 s, successful or not (an attacker's made-up kids must not
            // turn into a request flood against tokend).
            let _one = fetching.lock().await;
            let (again, attempted_at) = known(set);
            found = again;
            if found.is_none() && attempted_at.elapsed() > Duration::from_secs(30) {
                set.write().unwrap_or_else(|e| e.into_inner()).1 = Instant::now();
                if let Ok(fresh) = fetch_jwks(client, url).await {
                    found = fresh.find(kid).cloned();
                    set.write().unwrap_or_else(|e| e.into_inner()).0 = fresh;
                }
            }
        }
        let jwk = found.ok_or("unknown signing key")?;
        let algorithm = match jwk.common.key_algorithm {
            Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            _ => return Err("unsupported key algorithm"),
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| "unusable key")?;
        Ok((key, algorithm))
    }
}

fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<AccessClaims, &'static str> {
    jsonwebtoken::decode::<AccessClaims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired",
            jsonwebtoken::errors::ErrorKind::InvalidAudience => "token is for another audience",
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                "token is for another audience"
            }
            _ => "invalid token",
        })
}

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<JwkSet, reqwest::Error> {
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
}

/// Why a request is refused, as `{"detail": ...}`.
#[derive(Debug)]
enum Refusal {
    /// No valid access token: 401.
    Unauthorized(&'static str),
    /// A valid token without the rights: 403.
    Forbidden(String),
    /// A valid service token without the scope: 403, and says which
    /// scope in `WWW-Authenticate` (RFC 6750 §3).
    InsufficientScope(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unauthorized(detail) => f.write_str(detail),
            Refusal::Forbidden(detail) => f.write_str(detail),
            Refusal::InsufficientScope(scope) => write!(f, "Scope '{scope}' is required."),
        }
    }
}

impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        match self {
            Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden(_) | Refusal::InsufficientScope(_) => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Refusal::InsufficientScope(scope) = self {
            // Scope tokens never contain `"` or `\` (RFC 6749 §3.3).
            response.insert_header((
                "WWW-Authenticate",
                format!(r#"Bearer error="insufficient_scope", scope="{scope}""#),
            ));
        }
        response.json(serde_json::json!({ "detail": self.to_string() }))
    }
}

/// The user of the request's valid access token: taking it as a handler
/// argument is what protects a route (401 otherwise).
struct Authenticated {
    user_id: String,
    /// The token's `groups` claim: as of its issue, not of now.
    groups: Vec<String>,
}

impl Authenticated {
    fn require_group(&self, group: &str) -> Result<(), Refusal> {
        if self.groups.iter().any(|g| g == group) {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!(
                "Membership of group '{group}' is required."
            )))
        }
    }
}

/// The request's verifier and bearer token, for the extractors.
fn bearer(req: &HttpRequest) -> (Option<web::Data<Arc<Verifier>>>, Option<String>) {
    let verifier = req.app_data::<web::Data<Arc<Verifier>>>().cloned();
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    (verifier, token)
}

/// A set-up mistake, not the client's.
fn no_verifier() -> actix_web::Error {
    actix_web::error::ErrorInternalServerError("no Verifier in app data")
}

impl FromRequest for Authenticated {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (verifier, token) = bearer(req);
        Box::pin(async move {
            let verifier = verifier.ok_or_else(no_verifier)?;
            let token = token.ok_or(Refusal::Unauthorized("missing bearer token"))?;
            Ok(verifier
                .check(&token)
                .await
                .map_err(Refusal::Unauthorized)?)
        })
    }
}

/// The caller of a valid access token for this service's audience, as
/// `Verifier::check_service` found it.
struct Caller {
    /// `None` for a user's token.
    client_id: Option<String>,
    scopes: Vec<String>,
}

/// The service (OAuth 2 client) of the request's valid service token: taking
/// it as a handler argument makes a route for services only (401 without a
/// valid token for this audience, 403 for a user's token).
struct Service {
    client_id: String,
    /// The token's `scope`: as of its issue, not of now.
    scopes: Vec<String>,
}

impl Service {
    fn require_scope(&self, scope: &str) -> Result<(), Refusal> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(Refusal::InsufficientScope(scope.to_owned()))
        }
    }
}

impl FromRequest for Service {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (verifier, token) = bearer(req);
        Box::pin(async move {
            let verifier = verifier.ok_or_else(no_verifier)?;
            let token = token.ok_or(Refusal::Unauthorized("missing bearer token"))?;
            let caller = verifier
                .check_service(&token)
                .await
                .map_err(Refusal::Unauthorized)?;
            let client_id = caller
                .client_id
                .ok_or_else(|| Refusal::Forbidden("A service token is required.".to_owned()))?;
            Ok(Service {
                client_id,
                scopes: caller.scopes,
            })
        })
    }
}

/// The group `GET /editors` requires.
struct RequiredGroup(String);

async fn hello(user: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "user_id": user.user_id }))
}

/// A struct rather than `json!` keeps the fields in this order.
#[derive(Serialize)]
struct Member<'a> {
    user_id: &'a str,
    group: &'a str,
}

async fn editors(
    user: Authenticated,
    required: web::Data<RequiredGroup>,
) -> Result<HttpResponse, Refusal> {
    user.require_group(&required.0)?;
    Ok(HttpResponse::Ok().json(Member {
        user_id: &user.user_id,
        group: &required.0,
    }))
}

/// The scope `GET /orders` requires.
struct RequiredScope(String);

#[derive(Serialize)]
struct Client<'a> {
    client_id: &'a str,
    scope: &'a str,
}

async fn orders(
    service: Service,
    required: web::Data<RequiredScope>,
) -> Result<HttpResponse, Refusal> {
    service.require_scope(&required.0)?;
    Ok(HttpResponse::Ok().json(Client {
        client_id: &service.client_id,
        scope: &required.0,
    }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let keys = match (env("TOKEND_SHARED_KEY"), env("TOKEND_JWKS_URL")) {
        (Some(secret), _) => Keys::Shared(DecodingKey::from_secret(secret.as_bytes())),
        (None, Some(url)) => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(std::io::Error::other)?;
            let set = fetch_jwks(&client, &url)
                .await
                .map_err(|e| std::io::Error::other(format!("cannot fetch {url}: {e}")))?;
            Keys::Jwks {
                url,
                client,
                set: RwLock::new((set, Instant::now())),
                fetching: Mutex::new(()),
            }
        }
        (None, None) => {
            return Err(std::io::Error::other(
                "set TOKEND_SHARED_KEY or TOKEND_JWKS_URL",
            ));
        }
    };
    let verifier = Arc::new(Verifier {
        keys,
        issuer: env("TOKEND_ISSUER"),
        audience: env("TOKEND_AUDIENCE"),
        service_audience: env("TOKEND_SERVICE_AUDIENCE"),
        user_id_claim: env("TOKEND_USER_ID_CLAIM").unwrap_or_else(|| "user_id".to_owned()),
    });
    let required = web::Data::new(RequiredGroup(
        env("TOKEND_REQUIRED_GROUP").unwrap_or_else(|| "editors".to_owned()),
    ));
    let scope = web::Data::new(RequiredScope(
        env("TOKEND_REQUIRED_SCOPE").unwrap_or_else(|| "orders:read".to_owned()),
    ));
    let port: u16 = env("PORT").and_then(|p| p.parse().ok()).unwrap_or(8080);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(verifier.clone()))
            .app_data(required.clone())
            .app_data(scope.clone())
            .route("/hello", web::get().to(hello))
            .route("/editors", web::get().to(editors))
            .route("/orders", web::get().to(orders))
    })
    .workers(1)
    .bind(("127.0.0.1", port))?;
    for address in server.addrs() {
        println!("listening on http://{address}");
    }
    server.run().await
}
