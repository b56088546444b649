//! Browser mode (`cookie.enabled`): the refresh token also travels as an
//! `HttpOnly; Secure; SameSite=Strict` cookie limited to the token paths, so
//! page scripts never need to hold it.

use actix_web::cookie::{time::Duration, Cookie, SameSite};
use actix_web::HttpRequest;

#[derive(Debug, Clone)]
pub struct RefreshCookie {
    pub name: String,
    pub secure: bool,
    pub path: String,
    /// The origins whose pages may use the cookie (`cors.allowed_origins`).
    pub allowed_origins: Vec<crate::config::Origin>,
}

impl RefreshCookie {
    /// The cookie carrying `token`, kept `max_age_secs`.
    pub fn set(&self, token: &str, max_age_secs: i64) -> Cookie<'static> {
        self.build(token.to_owned(), Duration::seconds(max_age_secs.max(0)))
    }

    /// A cookie that makes the browser forget it (logout).
    pub fn clear(&self) -> Cookie<'static> {
        self.build(String::new(), Duration::ZERO)
    }

    fn build(&self, value: String, max_age: Duration) -> Cookie<'static> {
        Cookie::build(self.name.clone(), value)
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Strict)
            .path(self.path.clone())
            .max_age(max_age)
            .finish()
    }

    /// Cookie mode's forgery check for the token endpoints: a request that
    /// names an origin must come from an allowed one, and never from another
    /// site. CORS only hides responses from other origins; a form post would
    /// still act (log a victim into an attacker's account, spend or revoke
    /// the cookie's token). Requests without `Origin` (not from a browser
    /// page) pass.
    pub fn check_origin(&self, req: &HttpRequest) -> Result<(), String> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(origin) = header("origin") {
            if !self.allowed_origins.iter().any(|o| o.as_str() == origin) {
                return Err(origin);
            }
        }
        if header("sec-fetch-site").as_deref() == Some("cross-site") {
            return Err(header("origin").unwrap_or_else(|| "a cross-site page".to_owned()));
        }
        Ok(())
    }

    /// The token the browser sent, if any.
    pub fn read(&self, req: &HttpRequest) -> Option<String> {
        req.cookie(&self.name)
            .map(|c| c.value().trim().to_owned())
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_strict() {
        let c = RefreshCookie {
            name: "tokend_refresh".into(),
            secure: true,
            path: "/api/token".into(),
            allowed_origins: vec![],
        };
        assert_eq!(
            c.set("abc", 86400).to_string(),
            "tokend_refresh=abc; HttpOnly; SameSite=Strict; Secure; Path=/api/token; Max-Age=86400"
        );
        assert_eq!(
            c.clear().to_string(),
            "tokend_refresh=; HttpOnly; SameSite=Strict; Secure; Path=/api/token; Max-Age=0"
        );
    }
}
