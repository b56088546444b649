//! OAuth 2 clients (service identities), pure: ids, secrets, scopes.
//!
//! Secrets are 256 random bits: a SHA-256 digest is stored and compared in
//! constant time (a slow hash protects guessable secrets; these are not).

use subtle::ConstantTimeEq;

use super::account_tokens::{digest, new_token};

/// A new client id: 128 random bits, 32 lowercase hex characters.
pub fn new_client_id() -> String {
    super::random_hex::<16>()
}

/// A new secret and the digest to store.
pub fn new_secret() -> (String, String) {
    let secret = new_token();
    let stored = digest(&secret);
    (secret, stored)
}

/// Whether `presented` is the secret of `current`, or of `previous` while
/// the rotation overlap (`previous_until`) lasts.
pub fn secret_matches(
    presented: &str,
    current: Option<&str>,
    previous: Option<&str>,
    previous_until: Option<i64>,
    now: i64,
) -> bool {
    let presented = digest(presented);
    let same = |stored: Option<&str>| {
        stored.is_some_and(|s| bool::from(s.as_bytes().ct_eq(presented.as_bytes())))
    };
    // Both compared, whatever the first gives: no early exit to time.
    let current_ok = same(current);
    let previous_ok = same(previous) && previous_until.is_some_and(|until| now < until);
    current_ok | previous_ok
}

/// RFC 6749 §3.3 scope-token: printable ASCII but space, `"` and `\`.
pub fn valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= 128
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// The scopes of a `scope` parameter (space-separated); `None` when one is
/// not a scope-token.
pub fn parse_scopes(text: &str) -> Option<Vec<String>> {
    text.split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| valid_scope(s).then(|| s.to_owned()))
        .collect()
}

/// How far ahead a client assertion may expire: an hour, what common
/// client libraries (Authlib) sign by default.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;

/// How long after its `iat` an assertion is accepted (RFC 7523 §3 lets a
/// server refuse an `iat` unreasonably far in the past): the single-use
/// record of its `jti` is kept only that long, so the replay table stays
/// small whatever `exp` says. Without `iat`, `exp` must be this close.
pub const ASSERTION_FRESHNESS_SECS: i64 = 300;

/// How far ahead of this clock an assertion's `iat` may be.
const ASSERTION_CLOCK_SKEW_SECS: i64 = 60;

/// The scope that lets a client call the introspection endpoint.
pub const INTROSPECT_SCOPE: &str = "tokend:introspect";

/// The scope that lets a client's tokens call the admin API
/// (`/api/admin/`), with every right a superuser has there.
pub const ADMIN_SCOPE: &str = "tokend:admin";

/// True when the space-separated `scopes` include `scope`.
pub fn has_scope(scopes: &str, scope: &str) -> bool {
    scopes.split(' ').any(|s| s == scope)
}

/// RFC 7523's `client_assertion_type` for a JWT assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An assertion that passed every check; its `jti` must still be used once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAssertion {
    pub jti: String,
    /// Until when it would be accepted: its `jti` is remembered that long.
    pub exp: i64,
}

/// RFC 7523 §3 for `private_key_jwt`: signed with the client's registered
/// key (the algorithm comes from the key, never the header), `iss` and
/// `sub` the client id, `aud` one of `audiences` (the token endpoint or the
/// issuer), an `exp` not past and at most an hour ahead, a `jti`, and
/// fresh: an `iat` at most five minutes old (or, without `iat`, an `exp` at
/// most five minutes ahead).
pub fn check_assertion(
    assertion: &str,
    client_id: &str,
    public_pem: &str,
    audiences: &[String],
    now: i64,
) -> Option<CheckedAssertion> {
    #[derive(serde::Deserialize)]
    struct Claims {
        sub: String,
        jti: Option<String>,
        exp: i64,
        iat: Option<i64>,
    }
    let key =
        super::keys::KeyMaterial::verification(public_pem, super::keys::SigningAlgorithm::EdDsa)
            .ok()?;
    let mut validation = jsonwebtoken::Validation::new(key.algorithm().jwt_algorithm());
    validation.leeway = 0;
    validation.validate_exp = false; // checked below against `now`
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.set_issuer(&[client_id]);
    validation.set_audience(audiences);
    let claims = jsonwebtoken::decode::<Claims>(assertion, key.decoding(), &validation)
        .ok()?
        .claims;
    let jti = claims.jti.filter(|j| !j.is_empty() && j.len() <= 256)?;
    if claims.sub != client_id
        || claims.exp <= now
        || claims.exp > now + MAX_ASSERTION_LIFETIME_SECS
    {
        return None;
    }
    let usable_until = match claims.iat {
        Some(iat) if iat > now + ASSERTION_CLOCK_SKEW_SECS => return None,
        Some(iat) => claims.exp.min(iat + ASSERTION_FRESHNESS_SECS),
        None => claims.exp.min(now + ASSERTION_FRESHNESS_SECS),
    };
    // Without `iat`, an `exp` further ahead than the freshness window would
    // outlive the record of its `jti`.
    if claims.iat.is_none() && claims.exp > now + ASSERTION_FRESHNESS_SECS {
        return None;
    }
    (usable_until > now).then_some(CheckedAssertion {
        jti,
        exp: usable_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_their_digest_and_the_previous_one_during_the_overlap() {
        let (secret, stored) = new_secret();
        let (old, old_stored) = new_secret();
        assert_eq!(secret.len(), 43);
        assert!(secret_matches(&secret, Some(&stored), None, None, 0));
        assert!(!secret_matches("wrong", Some(&stored), None, None, 0));
        assert!(!secret_matches(&secret, None, None, None, 0));
        assert!(secret_matches(
            &old,
            Some(&stored),
            Some(&old_stored),
            Some(100),
            99
        ));
        assert!(!secret_matches(
            &old,
            Some(&stored),
            Some(&old_stored),
            Some(100),
            100
        ));
        assert!(!secret_matches(
            &old,
            Some(&stored),
            Some(&old_stored),
            None,
            0
        ));
        assert_ne!(new_client_id(), new_client_id());
    }

    #[test]
    fn scopes_are_rfc_6749_scope_tokens() {
        for ok in ["read", "tokend:introspect", "orders.write", "a!#[]~"] {
            assert!(valid_scope(ok), "{ok}");
        }
        for bad in ["", "a b", "a\"b", "a\\b", "é", "a\tb"] {
            assert!(!valid_scope(bad), "{bad:?}");
        }
        assert_eq!(
            parse_scopes(" read  write "),
            Some(vec!["read".to_owned(), "write".to_owned()])
        );
        assert_eq!(parse_scopes("read wr\"ite"), None);
        assert_eq!(parse_scopes(""), Some(vec![]));
    }

    fn assertion(private_pem: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &claims,
            crate::auth::keys::KeyMaterial::signing(
                crate::auth::keys::SigningAlgorithm::EdDsa,
                private_pem,
            )
            .unwrap()
            .encoding()
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn client_assertions_follow_rfc_7523() {
        use crate::auth::keys::{generate, public_pem, SigningAlgorithm};
        let private = generate(SigningAlgorithm::EdDsa).unwrap();
        let public = public_pem(&private).unwrap();
        let other = generate(SigningAlgorithm::EdDsa).unwrap();
        let aud = vec!["https://auth.example/api/oauth/token/".to_owned()];
        let now = 1_800_000_000;
        let good = serde_json::json!({"iss": "c1", "sub": "c1", "aud": aud[0], "exp": now + 60, "jti": "j1"});
        let check = |token: &str| check_assertion(token, "c1", &public, &aud, now);
        assert_eq!(
            check(&assertion(&private, good.clone())),
            Some(CheckedAssertion {
                jti: "j1".into(),
                exp: now + 60
            })
        );
        let with = |key: &str, value: serde_json::Value| {
            let mut c = good.clone();
            c[key] = value;
            c
        };
        for bad in [
            with("aud", "https://elsewhere.example/".into()),
            with("iss", "c2".into()),
            with("sub", "c2".into()),
            with("exp", (now - 1).into()),
            with("exp", (now + MAX_ASSERTION_LIFETIME_SECS + 1).into()),
            with("jti", "".into()),
            with("jti", serde_json::Value::Null),
            // Without iat, exp must be within the freshness window.
            with("exp", (now + ASSERTION_FRESHNESS_SECS + 1).into()),
        ] {
            assert_eq!(check(&assertion(&private, bad.clone())), None, "{bad}");
        }
        // An hour-long assertion (a library's default) is accepted while
        // fresh, and its jti is remembered only as long as it is.
        let hour = |iat: i64| {
            let mut c = with("exp", (now + 3600).into());
            c["iat"] = iat.into();
            check(&assertion(&private, c))
        };
        assert_eq!(
            hour(now - 10),
            Some(CheckedAssertion {
                jti: "j1".into(),
                exp: now - 10 + ASSERTION_FRESHNESS_SECS
            })
        );
        assert_eq!(hour(now - ASSERTION_FRESHNESS_SECS), None);
        assert_eq!(hour(now + 61), None);
        assert!(hour(now + 60).is_some());
        // Another key, or the public key used as an HMAC secret.
        assert_eq!(check(&assertion(&other, good.clone())), None);
        let confused = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &good,
            &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        assert_eq!(check(&confused), None);
    }
}
