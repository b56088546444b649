//! One-time account tokens (password reset, address verification): random,
//! handed out once in a mail, stored only as a SHA-256 digest; and the
//! `uid` of reset links, as Django's `urlsafe_base64_encode(force_bytes(pk))`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// 256 random bits, base64url (43 characters).
pub fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(super::random_bytes::<32>())
}

/// What is stored of a token: its SHA-256, hex. The tokens are random and
/// long, so no slow hash is needed; a database leak gives no usable link.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A user id as Django's reset links carry it ("MQ" for 1).
pub fn encode_uid(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_string())
}

/// The user id of a `uid`; `None` when it is not one (as Django, padding
/// is optional).
pub fn decode_uid(uid: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(uid.trim_end_matches('=')).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 18 {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_djangos() {
        assert_eq!(encode_uid(1), "MQ");
        assert_eq!(encode_uid(42), "NDI");
        assert_eq!(decode_uid("MQ"), Some(1));
        assert_eq!(decode_uid("MQ=="), Some(1));
        assert_eq!(decode_uid("NDI"), Some(42));
        for bad in ["", "!!", "LTE", "YQ", "MS4w"] {
            // "", invalid base64, "-1", "a", "1.0"
            assert_eq!(decode_uid(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_are_random_and_stored_as_digests() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(digest(&a).len(), 64);
        assert_eq!(digest(&a), digest(&a));
        assert_ne!(digest(&a), digest(&b));
    }
}
