//! Standard Webhooks signatures (symmetric, `v1`): the secret's `whsec_`
//! form, message ids, and the HMAC-SHA256 signature over
//! `{msg_id}.{timestamp}.{body}`. Pure, so any webhook tokend sends can
//! reuse it.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

/// How the spec serializes a symmetric secret: this prefix, then base64.
pub const SECRET_PREFIX: &str = "whsec_";

/// The spec's bounds on a symmetric secret, bytes: at least 192 bits, at
/// most 512.
pub const MIN_SECRET_BYTES: usize = 24;
pub const MAX_SECRET_BYTES: usize = 64;

/// Standard base64 with or without its padding: the reference libraries
/// accept both.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a `whsec_…` secret was refused. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must start with `whsec_`")]
    Prefix,
    #[error("must be `whsec_` followed by base64")]
    Base64,
    #[error("must decode to {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, not {0}")]
    Length(usize),
}

/// The key bytes of a `whsec_<base64>` secret.
pub fn parse_secret(text: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = text
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::Prefix)?;
    let key = LENIENT.decode(encoded).map_err(|_| SecretError::Base64)?;
    if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
        return Err(SecretError::Length(key.len()));
    }
    Ok(key)
}

/// The `webhook-signature` header value: `v1,` and the base64 HMAC-SHA256
/// of `{msg_id}.{timestamp}.{body}` keyed with the secret's bytes.
pub fn sign(secret: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A fresh `webhook-id`: `msg_` and 24 random letters and digits (never a
/// `.`, which would make the signed content ambiguous).
pub fn new_message_id() -> String {
    let random: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("msg_{random}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks reference libraries' published test vector.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1614265330;
    const VECTOR_BODY: &str = r#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_published_test_vector() {
        let key = parse_secret(VECTOR_SECRET).unwrap();
        assert_eq!(key.len(), 24);
        assert_eq!(
            sign(&key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY.as_bytes()),
            VECTOR_SIGNATURE
        );
        // Any change to the id, the timestamp or the body changes it.
        for other in [
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJeK",
                VECTOR_TIMESTAMP,
                VECTOR_BODY.as_bytes(),
            ),
            sign(
                &key,
                VECTOR_ID,
                VECTOR_TIMESTAMP + 1,
                VECTOR_BODY.as_bytes(),
            ),
            sign(&key, VECTOR_ID, VECTOR_TIMESTAMP, br#"{"test":2432232314}"#),
        ] {
            assert_ne!(other, VECTOR_SIGNATURE);
        }
    }

    #[test]
    fn secrets_parse_with_or_without_padding() {
        // 25 bytes: base64 with one padding character.
        let padded = format!("{SECRET_PREFIX}{}", STANDARD.encode([7u8; 25]));
        assert!(padded.ends_with('='));
        assert_eq!(parse_secret(&padded).unwrap(), vec![7u8; 25]);
        assert_eq!(
            parse_secret(padded.trim_end_matches('=')).unwrap(),
            vec![7u8; 25]
        );
        let longest = format!("{SECRET_PREFIX}{}", STANDARD.encode([1u8; 64]));
        assert_eq!(parse_secret(&longest).unwrap().len(), 64);
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        let short = format!("{SECRET_PREFIX}{}", STANDARD.encode([1u8; 23]));
        let long = format!("{SECRET_PREFIX}{}", STANDARD.encode([1u8; 65]));
        for (text, error) in [
            ("", SecretError::Prefix),
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SecretError::Prefix),
            ("whsec_", SecretError::Length(0)),
            ("whsec_not base64!", SecretError::Base64),
            (short.as_str(), SecretError::Length(23)),
            (long.as_str(), SecretError::Length(65)),
        ] {
            let refused = parse_secret(text).unwrap_err();
            assert_eq!(refused, error, "{text}");
            if text.len() > 8 {
                assert!(!refused.to_string().contains(&text[6..]), "{refused}");
            }
        }
    }

    #[test]
    fn message_ids_are_unique_and_dotless() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert!(id.starts_with("msg_") && id.len() == 28, "{id}");
            assert!(id[4..].bytes().all(|c| c.is_ascii_alphanumeric()), "{id}");
        }
    }
}
