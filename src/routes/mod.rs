//! The route table and the state handlers share. Handlers are thin: parse the
//! request, call a use case of `service`, shape the response.

mod bearer;
pub mod bodies;
pub mod cookie;
pub mod fields;
mod health;
mod jwks;
mod oauth;
pub mod openapi;
mod tokens;
mod users;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;
pub use crate::service::unix_now;
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
            .json(bodies::Empty {}));
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

/// The route table of a listener. Anything it does not serve is a 404 as
/// any unknown path.
pub fn configure(endpoints: Endpoints) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        if endpoints.api {
            configure_api(cfg);
        }
        cfg.route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz));
        if endpoints.metrics {
            cfg.route("/metrics", web::get().to(health::metrics));
        }
        if endpoints.documents {
            configure_documents(cfg);
        }
        cfg.default_service(web::to(not_found));
    }
}

fn configure_api(cfg: &mut web::ServiceConfig) {
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
    cfg.route("/.well-known/jwks.json", web::get().to(jwks::jwks));
}

/// The OpenAPI document and the Swagger UI pages (assets bundled).
fn configure_documents(cfg: &mut web::ServiceConfig) {
    cfg.service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi::document()),
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
    }
}
