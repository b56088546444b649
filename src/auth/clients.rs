//! OAuth 2 clients (service identities), pure: ids, secrets, scopes.
//!
//! Secrets are 256 random bits: a SHA-256 digest is stored and compared in
//! constant time (a slow hash protects guessable secrets; these are not).

use subtle::ConstantTimeEq;

use super::account_tokens::{digest, new_token};

/// A new client id: 128 random bits, 32 lowercase hex characters.
pub fn new_client_id() -> String {
    super::sessions::new_session_id()
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
}
