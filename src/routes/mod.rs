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
use utoipa::openapi::path::{HttpMethod, Operation};

use crate::auth::hashing::HashingPool;
use crate::auth::jwt::{JwtKeys, TokenError, TokenType, VerifiedToken};
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
    /// Until this instant (unix seconds; 0: never), sessionless access
    /// tokens of the legacy service identify imported users (see
    /// `session_check`).
    pub accept_sessionless_until: i64,
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
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
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
    // Bytes, not strings: a line of the client's with a non-ASCII byte must
    // not make the proxy's own entry unreadable (the fallback, the proxy's
    // address, is a bucket every client shares).
    let entry = lines
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .nth(hops.checked_sub(1)?)?;
    let entry = std::str::from_utf8(entry).ok()?.trim();
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// What an endpoint does with the token it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenUse {
    /// Says who the bearer is (me, verify).
    Identify,
    /// Acts on or reports the token's session (logout-all, password
    /// change, introspection, revocation).
    Session,
}

/// What must hold before a well-signed token is honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionCheck<'a> {
    /// tokend's own token: its session must be live.
    Live(&'a str),
    /// A sessionless access token inside the legacy acceptance window: its
    /// user must be one imported with the legacy service's id.
    LegacyUser,
    /// Answered as an invalid token.
    Refused,
}

/// The policy for tokens with and without a session, in one place.
/// tokend's tokens always name their session (`sid`). A token without one
/// was minted elsewhere with the same key (the Django/simplejwt service
/// tokend replaces): no logout or revocation here can end it, and its
/// `user_id` is that service's numbering, not tokend's. Such tokens are
/// refused, except access tokens that only identify their bearer while
/// `jwt.accept_sessionless_until` is ahead (a migration window), and then
/// only for users imported with that service's id. Sessionless refresh
/// tokens are refused everywhere.
pub(crate) fn session_check<'a>(
    state: &AppState,
    token: &'a VerifiedToken,
    purpose: TokenUse,
    now: i64,
) -> SessionCheck<'a> {
    match token.sid.as_deref() {
        Some(sid) => SessionCheck::Live(sid),
        None if purpose == TokenUse::Identify
            && token.token_type == TokenType::Access
            && now < state.accept_sessionless_until =>
        {
            SessionCheck::LegacyUser
        }
        None => SessionCheck::Refused,
    }
}

/// Why a token is refused because of its session (revoked: logout, reuse,
/// password change…; ended; gone with its user; none: see
/// `session_check`), or `None` when it may be honoured.
pub(crate) async fn session_problem(
    state: &AppState,
    token: &VerifiedToken,
    purpose: TokenUse,
    now: i64,
) -> Result<Option<TokenError>, ApiError> {
    // A session belongs to a user: a token naming none is not tokend's.
    let Some(user_id) = token.user_id else {
        return Ok(Some(TokenError::Invalid));
    };
    match session_check(state, token, purpose, now) {
        SessionCheck::Live(sid) => Ok(session_error(
            cached_session_state(state, sid, user_id, now).await?,
        )),
        SessionCheck::LegacyUser => {
            let imported = cached_user(state, user_id)
                .await?
                .is_some_and(|user| user.kept_legacy_id);
            Ok((!imported).then_some(TokenError::Invalid))
        }
        SessionCheck::Refused => Ok(Some(TokenError::Invalid)),
    }
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
                kept_legacy_id: u.kept_legacy_id,
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

/// Which `Endpoints` switch serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Api,
    /// Served on every listener.
    Health,
    Metrics,
    Documents,
}

type Registration = Box<dyn Fn(actix_web::Resource) -> actix_web::Resource>;

/// One route of the table. Its path and method are those of its OpenAPI
/// operation (the handler's `#[utoipa::path]`): the route table, the
/// document and the metrics labels are all derived from `routes()` and
/// cannot disagree.
pub struct Route {
    path: String,
    group: Group,
    method: HttpMethod,
    operation: fn() -> Operation,
    handler: Registration,
    other_methods: Registration,
}

impl Route {
    /// GET routes also answer HEAD; every other method is answered by
    /// `other_method` (405 with `Allow`, OPTIONS 200).
    fn new<P, F, Args>(group: Group, _operation: P, handler: F) -> Self
    where
        P: utoipa::Path,
        F: actix_web::Handler<Args> + Clone + 'static,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        let method = match P::methods().as_slice() {
            [method @ (HttpMethod::Get | HttpMethod::Post)] => method.clone(),
            // A programming error in the table, caught by every test.
            _ => panic!(
                "{}: only single GET or POST operations are served",
                P::path()
            ),
        };
        let allow = allow_header(&method);
        let get = method == HttpMethod::Get;
        Route {
            path: P::path(),
            group,
            method,
            operation: P::operation,
            handler: Box::new(move |resource| {
                if get {
                    resource
                        .route(web::get().to(handler.clone()))
                        .route(web::head().to(handler.clone()))
                } else {
                    resource.route(web::post().to(handler.clone()))
                }
            }),
            other_methods: Box::new(move |resource| {
                resource.default_service(web::to(move |req: HttpRequest| other_method(req, allow)))
            }),
        }
    }

    /// A handler of its own for the methods the route does not serve.
    fn other_methods<F, Args>(mut self, handler: F) -> Self
    where
        F: actix_web::Handler<Args> + Clone + 'static,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        self.other_methods =
            Box::new(move |resource| resource.default_service(web::to(handler.clone())));
        self
    }

    /// The forms the route is served at: API paths with and without their
    /// trailing slash (simplejwt clients use the slash; Django would
    /// redirect the other form), each its own static resource (one resource
    /// with two patterns would be matched with regexes on every request).
    fn forms(&self) -> Vec<&str> {
        match self.path.strip_suffix('/') {
            Some(bare) if !bare.is_empty() => vec![&self.path, bare],
            _ => vec![&self.path],
        }
    }

    fn register(&self, cfg: &mut web::ServiceConfig) {
        for form in self.forms() {
            let resource = (self.handler)(web::resource(form));
            cfg.service((self.other_methods)(resource));
        }
    }
}

fn allow_header(method: &HttpMethod) -> &'static str {
    if *method == HttpMethod::Get {
        ALLOW_GET
    } else {
        ALLOW_POST
    }
}

/// Every route, once: which listener switch serves it, its OpenAPI
/// operation (path and method) and its handler.
fn routes() -> Vec<Route> {
    use Group::{Api, Documents, Health, Metrics};
    vec![
        Route::new(Api, users::__path_register, users::register),
        Route::new(Api, tokens::__path_obtain_pair, tokens::obtain_pair),
        Route::new(Api, tokens::__path_refresh, tokens::refresh),
        Route::new(Api, tokens::__path_verify, tokens::verify),
        Route::new(Api, tokens::__path_blacklist, tokens::blacklist),
        Route::new(Api, users::__path_me, users::me).other_methods(users::me_other_method),
        Route::new(Api, oauth::__path_introspect, oauth::introspect),
        Route::new(Api, oauth::__path_revoke, oauth::revoke),
        Route::new(
            Api,
            users::__path_logout_everywhere,
            users::logout_everywhere,
        ),
        Route::new(Api, users::__path_change_password, users::change_password),
        Route::new(Api, jwks::__path_jwks, jwks::jwks),
        Route::new(Health, health::__path_healthz, health::healthz),
        Route::new(Health, health::__path_readyz, health::readyz),
        Route::new(Metrics, health::__path_metrics, health::metrics),
        Route::new(Documents, __path_openapi_json, openapi_json),
    ]
}

/// The path of every route (the metrics labels; tests use it too).
pub fn paths() -> Vec<String> {
    routes().into_iter().map(|route| route.path).collect()
}

/// The OpenAPI document: every route's operation.
pub fn document() -> utoipa::openapi::OpenApi {
    openapi::document(
        routes()
            .into_iter()
            .map(|route| (route.path, route.method, (route.operation)())),
    )
}

/// The OpenAPI 3.1 document of the API (this route included).
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", body = Object)))]
async fn openapi_json() -> HttpResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = DOCUMENT.get_or_init(|| serde_json::to_string(&document()).unwrap_or_default());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json.as_str())
}

/// What one listener serves: the API, the operational endpoints, or both.
/// Health checks are served everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The token and user API and the JWKS.
    pub api: bool,
    /// `/metrics`.
    pub metrics: bool,
    /// `/openapi.json` and the `/docs/` pages.
    pub documents: bool,
}

impl Endpoints {
    fn serves(&self, group: Group) -> bool {
        match group {
            Group::Api => self.api,
            Group::Health => true,
            Group::Metrics => self.metrics,
            Group::Documents => self.documents,
        }
    }
}

/// The route table of a listener. Anything it does not serve is a 404 as
/// any unknown path.
pub fn configure(endpoints: Endpoints) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        for route in routes().iter().filter(|r| endpoints.serves(r.group)) {
            route.register(cfg);
        }
        if endpoints.documents {
            configure_docs_pages(cfg);
        }
        cfg.default_service(web::to(not_found));
    }
}

/// The Swagger UI pages (assets bundled), reading `/openapi.json`.
fn configure_docs_pages(cfg: &mut web::ServiceConfig) {
    cfg.service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .config(utoipa_swagger_ui::Config::from("/openapi.json")),
    )
    .route(
        "/docs",
        web::get().to(|| async {
            HttpResponse::MovedPermanently()
                .insert_header(("Location", "/docs/"))
                .finish()
        }),
    );
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
        // A client's line with a non-ASCII byte before the proxy's.
        let values = [
            HeaderValue::from_bytes(b"10.0.0.1\xff").unwrap(),
            HeaderValue::from_static("198.51.100.7"),
        ];
        assert_eq!(
            forwarded_client(values.iter(), 1).map(|ip| ip.to_string()),
            Some("198.51.100.7".to_owned())
        );
    }
}
