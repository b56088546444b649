//! The route table and the state handlers share. Handlers are thin: parse the
//! request, call a use case of `service`, shape the response.

mod accounts;
mod admin;
mod bearer;
pub mod bodies;
pub mod cookie;
mod devices;
pub mod fields;
mod health;
mod jwks;
mod oauth;
pub mod openapi;
mod tokens;
mod users;

use actix_web::{web, HttpRequest, HttpResponse};
use utoipa::openapi::path::{HttpMethod, Operation};

use crate::error::ApiError;
use crate::service::Services;

/// What the handlers share: the use cases' dependencies, and what only HTTP
/// needs (client addresses, the refresh cookie).
pub struct AppState {
    pub services: Services,
    /// Trusted proxy header carrying the client address, when configured.
    pub client_ip_header: Option<actix_web::http::header::HeaderName>,
    /// Proxies in front of tokend that append to that header.
    pub trusted_hops: usize,
    /// Browser mode: the refresh token as a cookie too (`cookie.enabled`).
    pub refresh_cookie: Option<cookie::RefreshCookie>,
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

/// The client address for rate limits and security logs: from the
/// configured proxy header when present, else the TCP peer.
/// Where the request comes from: address, user agent, request id.
pub(crate) fn origin(state: &AppState, req: &HttpRequest) -> crate::service::origin::Origin {
    use actix_web::HttpMessage;
    crate::service::origin::Origin::from_ip(client_ip(state, req))
        .with_user_agent(
            req.headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        )
        .with_request_id(
            req.extensions()
                .get::<crate::telemetry::RequestId>()
                .map(|id| id.0.clone()),
        )
}

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

pub(crate) const ALLOW_GET: &str = "GET, HEAD, OPTIONS";

/// The `Allow` header of a path serving these methods, in DRF's order
/// (get, post, delete, then head with get, options).
fn allow_header(get: bool, post: bool, delete: bool) -> &'static str {
    match (get, post, delete) {
        (true, false, false) => ALLOW_GET,
        (true, true, false) => "GET, POST, HEAD, OPTIONS",
        (true, false, true) => "GET, DELETE, HEAD, OPTIONS",
        (true, true, true) => "GET, POST, DELETE, HEAD, OPTIONS",
        (false, true, false) => "POST, OPTIONS",
        (false, true, true) => "POST, DELETE, OPTIONS",
        (false, false, true) => "DELETE, OPTIONS",
        (false, false, false) => "OPTIONS",
    }
}

/// Other methods on a route: 405 as DRF words it; OPTIONS: 200 with `Allow`.
pub(crate) async fn other_method(
    req: HttpRequest,
    allow: &'static str,
) -> Result<HttpResponse, ApiError> {
    if req.method() == actix_web::http::Method::OPTIONS {
        return Ok(HttpResponse::Ok()
            .insert_header(("Allow", allow))
            .json(bodies::Empty {}));
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

/// One method of a path: its OpenAPI operation and its handler.
struct Served {
    method: HttpMethod,
    operation: fn() -> Operation,
    handler: Registration,
}

/// One path of the table with the methods it serves (at most one
/// operation per method). Its path and methods are those of its OpenAPI
/// operations (the handlers' `#[utoipa::path]`): the route table, the
/// document and the metrics labels are all derived from `routes()` and
/// cannot disagree.
pub struct Route {
    path: String,
    group: Group,
    served: Vec<Served>,
    /// A handler of its own for the other methods; else `other_method`.
    other_methods: Option<Registration>,
}

impl Route {
    /// A path serving one operation. GET also answers HEAD; every other
    /// method is answered by `other_method` (405 with `Allow`, OPTIONS 200).
    fn new<P, F, Args>(group: Group, operation: P, handler: F) -> Self
    where
        P: utoipa::Path,
        F: actix_web::Handler<Args> + Clone + 'static,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        Route {
            path: P::path(),
            group,
            served: Vec::new(),
            other_methods: None,
        }
        .and(operation, handler)
    }

    /// Another operation on the same path (another method).
    fn and<P, F, Args>(mut self, _operation: P, handler: F) -> Self
    where
        P: utoipa::Path,
        F: actix_web::Handler<Args> + Clone + 'static,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        let method = match P::methods().as_slice() {
            [method @ (HttpMethod::Get | HttpMethod::Post | HttpMethod::Delete)] => method.clone(),
            // Programming errors in the table, caught by every test.
            _ => panic!(
                "{}: only single GET, POST or DELETE operations are served",
                P::path()
            ),
        };
        assert_eq!(P::path(), self.path, "one path per route");
        assert!(
            self.served.iter().all(|s| s.method != method),
            "{}: one operation per method",
            self.path
        );
        let served = method.clone();
        self.served.push(Served {
            method,
            operation: P::operation,
            handler: Box::new(move |resource| match served {
                HttpMethod::Get => resource
                    .route(web::get().to(handler.clone()))
                    .route(web::head().to(handler.clone())),
                HttpMethod::Delete => resource.route(web::delete().to(handler.clone())),
                _ => resource.route(web::post().to(handler.clone())),
            }),
        });
        self
    }

    /// A handler of its own for the methods the route does not serve.
    fn other_methods<F, Args>(mut self, handler: F) -> Self
    where
        F: actix_web::Handler<Args> + Clone + 'static,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        self.other_methods = Some(Box::new(move |resource| {
            resource.default_service(web::to(handler.clone()))
        }));
        self
    }

    /// The `Allow` header: every method served.
    fn allow(&self) -> &'static str {
        let serves = |m: HttpMethod| self.served.iter().any(|s| s.method == m);
        allow_header(
            serves(HttpMethod::Get),
            serves(HttpMethod::Post),
            serves(HttpMethod::Delete),
        )
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

    /// One resource per form, with a route per method served.
    fn register(&self, cfg: &mut web::ServiceConfig) {
        let allow = self.allow();
        for form in self.forms() {
            let resource = self
                .served
                .iter()
                .fold(web::resource(form), |resource, s| (s.handler)(resource));
            cfg.service(match &self.other_methods {
                Some(other) => other(resource),
                None => resource
                    .default_service(web::to(move |req: HttpRequest| other_method(req, allow))),
            });
        }
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
        Route::new(Api, oauth::__path_token, oauth::token),
        Route::new(Api, oauth::__path_metadata, oauth::metadata),
        Route::new(
            Api,
            users::__path_logout_everywhere,
            users::logout_everywhere,
        ),
        Route::new(Api, users::__path_change_password, users::change_password),
        Route::new(Api, devices::__path_list, devices::list),
        // Before `{id}`: resources match in registration order, and
        // "revoke-others" would otherwise be taken for a session id.
        Route::new(Api, devices::__path_revoke_others, devices::revoke_others),
        Route::new(Api, devices::__path_revoke, devices::revoke),
        Route::new(Api, accounts::__path_user, accounts::user),
        Route::new(
            Api,
            accounts::__path_password_reset,
            accounts::password_reset,
        ),
        Route::new(
            Api,
            accounts::__path_password_reset_confirm,
            accounts::password_reset_confirm,
        ),
        Route::new(Api, accounts::__path_verify_email, accounts::verify_email),
        Route::new(Api, accounts::__path_resend_email, accounts::resend_email),
        Route::new(Api, admin::__path_list_users, admin::list_users)
            .and(admin::__path_create_user, admin::create_user),
        Route::new(Api, admin::__path_get_user, admin::get_user)
            .and(admin::__path_delete_user, admin::delete_user),
        Route::new(Api, admin::__path_disable_user, admin::disable_user),
        Route::new(Api, admin::__path_enable_user, admin::enable_user),
        Route::new(Api, admin::__path_set_password, admin::set_password),
        Route::new(Api, admin::__path_set_flags, admin::set_flags),
        Route::new(Api, admin::__path_list_sessions, admin::list_sessions),
        // Before `{sid}` (see the devices routes).
        Route::new(Api, admin::__path_revoke_sessions, admin::revoke_sessions),
        Route::new(Api, admin::__path_revoke_session, admin::revoke_session),
        Route::new(Api, admin::__path_add_group, admin::add_group),
        Route::new(Api, admin::__path_remove_group, admin::remove_group),
        Route::new(Api, admin::__path_list_groups, admin::list_groups)
            .and(admin::__path_create_group, admin::create_group),
        Route::new(Api, admin::__path_delete_group, admin::delete_group),
        Route::new(Api, admin::__path_audit, admin::audit),
        Route::new(Api, admin::__path_list_clients, admin::list_clients)
            .and(admin::__path_create_client, admin::create_client),
        Route::new(Api, admin::__path_get_client, admin::get_client)
            .and(admin::__path_delete_client, admin::delete_client),
        Route::new(Api, admin::__path_disable_client, admin::disable_client),
        Route::new(Api, admin::__path_enable_client, admin::enable_client),
        Route::new(Api, admin::__path_rotate_secret, admin::rotate_secret),
        Route::new(Api, jwks::__path_jwks, jwks::jwks),
        Route::new(Health, health::__path_healthz, health::healthz),
        Route::new(Health, health::__path_readyz, health::readyz),
        Route::new(Metrics, health::__path_metrics, health::metrics),
        Route::new(Documents, __path_openapi_json, openapi_json),
    ]
}

/// The path of every route, once (the metrics labels; tests use it too).
pub fn paths() -> Vec<String> {
    routes().into_iter().map(|route| route.path).collect()
}

/// The OpenAPI document: every route's operations.
pub fn document() -> utoipa::openapi::OpenApi {
    openapi::document(routes().into_iter().flat_map(|route| {
        let path = route.path;
        route
            .served
            .into_iter()
            .map(move |s| (path.clone(), s.method, (s.operation)()))
    }))
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
