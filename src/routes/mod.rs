//! The route table and the state handlers share. Handlers are thin: parse the
//! request, call auth/ and storage/, shape the response.

mod bearer;
pub mod cookie;
pub mod fields;
mod health;
mod jwks;
mod oauth;
pub mod openapi;
mod tokens;
mod users;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::hashing::HashingPool;
use crate::auth::jwt::{JwtKeys, TokenError, VerifiedToken};
use crate::auth::throttle::Throttle;
use crate::error::ApiError;
use std::time::Instant;

use crate::storage::cache::{Cached, StateCache, UserSummary};
use crate::storage::sessions::{self, SessionState};
use crate::storage::{users as user_store, Database, StorageError};

pub struct AppState {
    pub db: Database,
    pub keys: JwtKeys,
    pub hashing: HashingPool,
    pub session_max_age_secs: i64,
    pub reuse_grace_secs: i64,
    /// (id, secret) of the services allowed to introspect.
    pub introspection_clients: Vec<(String, String)>,
    /// Brute-force limits; `None` when disabled.
    pub throttle: Option<Throttle>,
    /// Trusted proxy header carrying the client address, when configured.
    pub client_ip_header: Option<actix_web::http::header::HeaderName>,
    /// Proxies in front of tokend that append to that header.
    pub trusted_hops: usize,
    /// Session and user state for the token-check paths.
    pub cache: StateCache,
    pub metrics: crate::metrics::Metrics,
    /// Browser mode: the refresh token as a cookie too (`cookie.enabled`).
    pub refresh_cookie: Option<cookie::RefreshCookie>,
}

/// The client address for rate limits and security logs: from the
/// configured proxy header when present, else the TCP peer.
pub(crate) fn client_ip(state: &AppState, req: &HttpRequest) -> std::net::IpAddr {
    let peer = || req.peer_addr().map(|addr| addr.ip());
    state
        .client_ip_header
        .as_ref()
        .and_then(|name| forwarded_client(req.headers().get_all(name), state.trusted_hops))
        .or_else(peer)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// The client a trusted proxy header names: every line of the header is one
/// comma list (a client may send its own lines before the proxy's), and the
/// `hops`-th entry from the right is the one the nearest trusted proxy saw.
/// Entries further left are the client's to forge. `None` when that entry is
/// missing or not an address (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`).
fn forwarded_client<'a>(
    lines: impl Iterator<Item = &'a actix_web::http::header::HeaderValue>,
    hops: usize,
) -> Option<std::net::IpAddr> {
    let values: Vec<&str> = lines.map(|v| v.to_str().ok()).collect::<Option<Vec<_>>>()?;
    let entry = values
        .iter()
        .flat_map(|v| v.split(','))
        .rev()
        .nth(hops.checked_sub(1)?)?
        .trim();
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Why a token is refused because of its session (revoked: logout, reuse,
/// password change…; ended; gone with its user), or `None` when the session
/// is live. Tokens without a session (minted elsewhere with the shared key)
/// have nothing to check.
pub(crate) async fn session_problem(
    state: &AppState,
    token: &VerifiedToken,
    now: i64,
) -> Result<Option<TokenError>, ApiError> {
    let (Some(user_id), Some(sid)) = (token.user_id, token.sid.as_deref()) else {
        return Ok(None);
    };
    Ok(session_error(
        cached_session_state(state, sid, user_id, now).await?,
    ))
}

/// After a failed database call, how long cached-state readers skip the
/// database instead of waiting for a connection again.
const OUTAGE_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// A session's state from the cache when fresh, else from the database;
/// when the database cannot be reached, the last known state if it is
/// recent enough (`cache.stale_if_error_ms`).
pub(crate) async fn cached_session_state(
    state: &AppState,
    sid: &str,
    user_id: i64,
    now: i64,
) -> Result<SessionState, ApiError> {
    let key = sid.to_owned();
    read_through(
        state,
        state.cache.session(sid, user_id, Instant::now()),
        move |conn| sessions::state(conn, &key, user_id, now),
        |session, read_at| state.cache.put_session(sid, user_id, *session, read_at),
        "session",
    )
    .await
    // A cached "live" may have reached its end since.
    .map(|session| session.at(now))
}

/// A user's summary, from the cache when fresh, else from the database;
/// when the database cannot be reached, the last known summary if recent
/// enough.
pub(crate) async fn cached_user(
    state: &AppState,
    user_id: i64,
) -> Result<Option<UserSummary>, ApiError> {
    read_through(
        state,
        state.cache.user(user_id, Instant::now()),
        move |conn| {
            Ok(user_store::find_by_id(conn, user_id)?.map(|u| UserSummary {
                id: u.id,
                username: u.username,
                is_active: u.is_active,
            }))
        },
        |user, read_at| state.cache.put_user(user_id, user.clone(), read_at),
        "user",
    )
    .await
}

/// The cache-then-database policy of the token-check paths, in one place:
/// a fresh cached value is the answer; otherwise the database is read and
/// the result stored (`store` gets the instant the read started). A stale
/// value answers instead when the database just failed (without waiting for
/// a connection again; one caller at a time probes it) or when this read
/// finds it unavailable.
async fn read_through<T, R>(
    state: &AppState,
    cached: Cached<T>,
    read: R,
    store: impl FnOnce(&T, Instant),
    what: &'static str,
) -> Result<T, ApiError>
where
    T: Clone + Send + 'static,
    R: FnOnce(&mut crate::storage::DbConnection) -> Result<T, StorageError> + Send + 'static,
{
    let stale = match cached {
        Cached::Fresh(value) => return Ok(value),
        Cached::Stale(value) => Some(value),
        Cached::Miss => None,
    };
    if let Some(value) = stale
        .clone()
        .filter(|_| !state.db.worth_trying(OUTAGE_PROBE))
    {
        return Ok(value);
    }
    let read_at = Instant::now();
    match state.db.run(read).await {
        Ok(value) => {
            store(&value, read_at);
            Ok(value)
        }
        Err(e) => match stale.filter(|_| matches!(e, StorageError::Unavailable(_))) {
            Some(value) => {
                tracing::warn!(error = %e, what, "database unavailable: using the last known state");
                Ok(value)
            }
            None => Err(e.into()),
        },
    }
}

pub(crate) fn session_error(session: SessionState) -> Option<TokenError> {
    match session {
        SessionState::Live { .. } => None,
        SessionState::Revoked => Some(TokenError::Blacklisted),
        SessionState::Expired => Some(TokenError::Expired),
        SessionState::Missing => Some(TokenError::Invalid),
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

const ALLOW_POST: &str = "POST, OPTIONS";
pub(crate) const ALLOW_GET: &str = "GET, HEAD, OPTIONS";

/// Every API path answers with and without its trailing slash (simplejwt
/// clients use the slash; Django would redirect the other form).
fn both_forms(path: &'static str) -> [&'static str; 2] {
    [path, path.trim_end_matches('/')]
}

/// Other methods on a route: 405 as DRF words it; OPTIONS: 200 with `Allow`.
pub(crate) async fn other_method(
    req: HttpRequest,
    allow: &'static str,
) -> Result<HttpResponse, ApiError> {
    if req.method() == actix_web::http::Method::OPTIONS {
        return Ok(HttpResponse::Ok()
            .insert_header(("Allow", allow))
            .json(serde_json::json!({})));
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().as_str().to_owned(),
        allow,
    })
}

/// A POST route, served with and without its trailing slash: two static
/// resources (one resource with two patterns would be matched with regexes
/// on every request).
fn post_routes<F, Args>(cfg: &mut web::ServiceConfig, path: &'static str, handler: F)
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    for form in both_forms(path) {
        cfg.service(
            web::resource(form)
                .route(web::post().to(handler.clone()))
                .default_service(web::to(|req: HttpRequest| other_method(req, ALLOW_POST))),
        );
    }
}

/// The API's routes, as metrics label them.
const ROUTES: &[&str] = &[
    "/api/user/register/",
    "/api/token/",
    "/api/token/refresh/",
    "/api/token/verify/",
    "/api/token/blacklist/",
    "/api/user/me/",
    "/api/token/introspect/",
    "/api/token/revoke/",
    "/api/user/logout-all/",
    "/api/user/password/",
    "/healthz",
    "/readyz",
    "/.well-known/jwks.json",
    "/metrics",
    "/openapi.json",
];

/// A bounded label for a request path: its route (both slash forms map to
/// the route), `/docs/` for the docs pages, or `unmatched`. Plain string
/// comparisons: actix's `match_pattern` re-runs the router's regexes.
pub fn route_label(path: &str) -> &'static str {
    let bare = path.trim_end_matches('/');
    if let Some(route) = ROUTES.iter().find(|r| r.trim_end_matches('/') == bare) {
        return route;
    }
    if bare == "/docs" || path.starts_with("/docs/") {
        return "/docs/";
    }
    "unmatched"
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    post_routes(cfg, "/api/user/register/", users::register);
    post_routes(cfg, "/api/token/", tokens::obtain_pair);
    post_routes(cfg, "/api/token/refresh/", tokens::refresh);
    post_routes(cfg, "/api/token/verify/", tokens::verify);
    post_routes(cfg, "/api/token/blacklist/", tokens::blacklist);
    for form in both_forms("/api/user/me/") {
        cfg.service(
            web::resource(form)
                .route(web::get().to(users::me))
                .route(web::head().to(users::me))
                .default_service(web::to(users::me_other_method)),
        );
    }
    post_routes(cfg, "/api/token/introspect/", oauth::introspect);
    post_routes(cfg, "/api/token/revoke/", oauth::revoke);
    post_routes(cfg, "/api/user/logout-all/", users::logout_everywhere);
    post_routes(cfg, "/api/user/password/", users::change_password);
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/.well-known/jwks.json", web::get().to(jwks::jwks))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
                .url("/openapi.json", openapi::document()),
        )
        .route(
            "/docs",
            web::get().to(|| async {
                HttpResponse::MovedPermanently()
                    .insert_header(("Location", "/docs/"))
                    .finish()
            }),
        )
        .default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;
    use actix_web::http::header::HeaderValue;

    fn client(lines: &[&'static str], hops: usize) -> Option<String> {
        let values: Vec<HeaderValue> = lines.iter().map(|l| HeaderValue::from_static(l)).collect();
        forwarded_client(values.iter(), hops).map(|ip| ip.to_string())
    }

    #[test]
    fn every_header_line_counts_and_the_right_most_entry_wins() {
        assert_eq!(
            client(&["198.51.100.7"], 1).as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(
            client(&["1.1.1.1, 198.51.100.7"], 1).as_deref(),
            Some("198.51.100.7")
        );
        // A client's own line before the proxy's does not choose the address.
        assert_eq!(
            client(&["10.9.9.9", "198.51.100.7"], 1).as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(
            client(&["10.9.9.9", "198.51.100.7, 192.0.2.1"], 2).as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(
            client(&["[2001:db8::1]:443"], 1).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(client(&["192.0.2.1:8080"], 1).as_deref(), Some("192.0.2.1"));
        assert_eq!(
            client(&["198.51.100.7"], 2),
            None,
            "fewer entries than hops"
        );
        assert_eq!(client(&["unknown"], 1), None);
    }
}
