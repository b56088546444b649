//! The `Authorization: Bearer <token>` header, parsed as simplejwt's
//! `JWTAuthentication` does.

use actix_web::http::header;
use actix_web::HttpRequest;

use crate::error::ApiError;

pub fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::NotAuthenticated)?;
    let parts: Vec<&[u8]> = value
        .as_bytes()
        .split(|b| b.is_ascii_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    match parts.as_slice() {
        [scheme, ..] if *scheme != b"Bearer" => Err(ApiError::NotAuthenticated),
        [] => Err(ApiError::NotAuthenticated),
        [_, token] => Ok(String::from_utf8_lossy(token).into_owned()),
        _ => Err(ApiError::BadAuthorizationHeader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn parse(value: Option<&str>) -> Result<String, ApiError> {
        let mut req = TestRequest::default();
        if let Some(v) = value {
            req = req.insert_header((header::AUTHORIZATION, v));
        }
        bearer_token(&req.to_http_request())
    }

    #[test]
    fn simplejwt_header_rules() {
        assert_eq!(parse(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(parse(Some("  Bearer   abc  ")).unwrap(), "abc");
        assert!(matches!(parse(None), Err(ApiError::NotAuthenticated)));
        assert!(matches!(parse(Some("")), Err(ApiError::NotAuthenticated)));
        assert!(matches!(
            parse(Some("bearer abc")),
            Err(ApiError::NotAuthenticated)
        ));
        assert!(matches!(
            parse(Some("Token abc")),
            Err(ApiError::NotAuthenticated)
        ));
        assert!(matches!(
            parse(Some("Bearer")),
            Err(ApiError::BadAuthorizationHeader)
        ));
        assert!(matches!(
            parse(Some("Bearer a b")),
            Err(ApiError::BadAuthorizationHeader)
        ));
    }
}
