//! Password hashing: bcrypt over a SHA-256 pre-hash.
//!
//! bcrypt reads only the first 72 bytes of its input, and a 128-character
//! password can be 512 bytes of UTF-8. Rather than truncate silently or refuse
//! long passwords, every password is pre-hashed: bcrypt(hex(sha256(password))),
//! 64 ASCII bytes, so every character counts. The stored form is exactly
//! Django's `BCryptSHA256PasswordHasher` format (`bcrypt_sha256$$2b$12$…`),
//! so hashes move between tokend and Django unchanged.
//!
//! These functions are CPU-bound (~200-280 ms at cost 12): call them through
//! `HashingPool`, never on an async worker.

use sha2::{Digest, Sha256};

const PREFIX: &str = "bcrypt_sha256$";

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(#[from] bcrypt::BcryptError);

fn prehash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

pub fn hash_password(password: &str, cost: u32) -> Result<String, HashError> {
    let inner = bcrypt::hash(prehash(password), cost)?;
    Ok(format!("{PREFIX}{inner}"))
}

/// The most PBKDF2 iterations tokend will run for one check (Django 5.2
/// uses 1,000,000, 6.0 1,200,000); a stored hash asking for more never
/// matches, so a tampered row cannot pin a thread or raise every login's
/// padded time.
const MAX_PBKDF2_ITERATIONS: u32 = 3_000_000;

/// The costliest stored bcrypt hash tokend will check when configured with
/// `cost`: Django's default (12) or the configured cost, whichever is higher.
/// A costlier hash (imported, or a tampered row) never matches: it would pin
/// a hashing thread and stand out in login timing.
pub fn max_accepted_bcrypt_cost(cost: u32) -> u32 {
    cost.max(12)
}

/// The cost field of a bcrypt hash (`$2b$12$…`).
fn bcrypt_cost(inner: &str) -> Option<u32> {
    inner.split('$').nth(2).and_then(|c| c.parse().ok())
}

/// True when `password` matches `stored`: tokend's (and Django's)
/// `bcrypt_sha256$…`, or, for users imported from Django, `pbkdf2_sha256$…`
/// and `bcrypt$…`. An unknown or malformed stored hash never matches
/// (Django's unusable passwords, `!…`, included), nor does bcrypt costlier
/// than `max_cost`.
pub fn verify_password(password: &str, stored: &str, max_cost: u32) -> bool {
    let affordable = |inner: &str| bcrypt_cost(inner).is_some_and(|c| c <= max_cost);
    if let Some(inner) = stored.strip_prefix(PREFIX) {
        return affordable(inner) && bcrypt::verify(prehash(password), inner).unwrap_or(false);
    }
    if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        return verify_pbkdf2_sha256(password, rest);
    }
    if let Some(inner) = stored.strip_prefix("bcrypt$") {
        // Django's BCryptPasswordHasher: bcrypt of the raw password.
        return affordable(inner) && bcrypt::verify(password, inner).unwrap_or(false);
    }
    false
}

/// What a stored hash costs to check, as far as timing goes: login times
/// are padded to the costliest kind seen (see `TimingFloor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashKind {
    Bcrypt(u32),
    /// By iteration count: Django's default changed with every release.
    Pbkdf2(u32),
    /// Malformed or unusable: checked at no cost.
    Other,
}

pub fn hash_kind(stored: &str) -> HashKind {
    if let Some(inner) = stored
        .strip_prefix(PREFIX)
        .or_else(|| stored.strip_prefix("bcrypt$"))
    {
        return bcrypt_cost(inner).map_or(HashKind::Other, HashKind::Bcrypt);
    }
    if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        return rest
            .split('$')
            .next()
            .and_then(|n| n.parse().ok())
            .map_or(HashKind::Other, HashKind::Pbkdf2);
    }
    HashKind::Other
}

/// Django's `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>`.
fn verify_pbkdf2_sha256(password: &str, rest: &str) -> bool {
    use base64::Engine;
    use subtle::ConstantTimeEq;
    let mut parts = rest.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(expected)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(iterations) = iterations.parse::<u32>() else {
        return false;
    };
    if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
        return false;
    }
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(expected) else {
        return false;
    };
    if expected.len() != 32 {
        return false;
    }
    let mut derived = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(
        password.as_bytes(),
        salt.as_bytes(),
        iterations,
        &mut derived,
    );
    derived.ct_eq(&expected).into()
}

/// Whether `verify_password` can ever match this stored hash.
pub fn is_checkable_hash(stored: &str) -> bool {
    ["bcrypt_sha256$", "pbkdf2_sha256$", "bcrypt$"]
        .iter()
        .any(|prefix| stored.starts_with(prefix))
}

/// Whether a hash that just matched should be replaced by tokend's own
/// (`bcrypt_sha256` at the configured cost): imported Django formats, and
/// bcrypt cheaper than configured.
pub fn needs_rehash(stored: &str, cost: u32) -> bool {
    match stored.strip_prefix(PREFIX) {
        // "$2b$12$…": the cost is the third field.
        Some(inner) => bcrypt_cost(inner).is_none_or(|stored_cost| stored_cost < cost),
        None => true,
    }
}

/// A hash to verify against when the user does not exist, so that an unknown
/// username costs the same time as a wrong password.
pub fn dummy_hash(cost: u32) -> Result<String, HashError> {
    hash_password("tokend dummy password for unknown users", cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash_password("correct horse", 4).unwrap();
        assert!(h.starts_with("bcrypt_sha256$$2b$04$"), "{h}");
        assert!(verify_password("correct horse", &h, 12));
        assert!(!verify_password("correct horsf", &h, 12));
    }

    #[test]
    fn no_silent_truncation_past_72_bytes() {
        let base = "x".repeat(100);
        let h = hash_password(&format!("{base}a"), 4).unwrap();
        assert!(verify_password(&format!("{base}a"), &h, 12));
        assert!(!verify_password(&format!("{base}b"), &h, 12));
        let long = "é".repeat(128);
        let h = hash_password(&long, 4).unwrap();
        assert!(verify_password(&long, &h, 12));
        assert!(!verify_password(&"é".repeat(127), &h, 12));
    }

    #[test]
    fn verifies_django_bcrypt_sha256_hashes() {
        // Made the way Django 5.2 BCryptSHA256PasswordHasher does (python bcrypt 5, rounds=4) for "pw12345".
        let django = "bcrypt_sha256$$2b$04$1CCZOZ8ZvSlmYr.4/YDzxuBOlJAalKqa0DZOwqGsmwyvKVOJsHjGC";
        assert!(verify_password("pw12345", django, 12));
        assert!(!verify_password("pw1234", django, 12));
    }

    #[test]
    fn verifies_imported_django_hashes() {
        // Django 5.2 PBKDF2PasswordHasher, iterations lowered for the test:
        // make_password("pw12345", salt="saltsaltsalt", hasher) with 1000
        // iterations, computed with Python's hashlib.pbkdf2_hmac.
        let pbkdf2 = "pbkdf2_sha256$1000$saltsaltsalt$jFZmTjBke/LAa4mrcNNstA5/E3KdhUzArvjnnpK/f6c=";
        assert!(verify_password("pw12345", pbkdf2, 12), "pbkdf2");
        assert!(!verify_password("pw1234", pbkdf2, 12));
        assert!(needs_rehash(pbkdf2, 12));
        // Abuse: absurd iteration counts and malformed fields never match.
        for bad in [
            "pbkdf2_sha256$4000000000$salt$jFZmTjBke/LAa4mrcNNstA5/E3KdhUzArvjnnpK/f6c=",
            "pbkdf2_sha256$0$salt$x",
            "pbkdf2_sha256$1000$salt",
            "pbkdf2_sha256$1000$salt$not base64",
            "!unusable",
        ] {
            assert!(!verify_password("pw12345", bad, 12), "{bad}");
        }
        // Django's plain BCryptPasswordHasher.
        let plain = format!("bcrypt${}", bcrypt::hash("pw12345", 4).unwrap());
        assert!(verify_password("pw12345", &plain, 12));
        assert!(needs_rehash(&plain, 4));
        // tokend's own: only when cheaper than configured.
        let own = hash_password("pw12345", 5).unwrap();
        assert!(!needs_rehash(&own, 5));
        assert!(!needs_rehash(&own, 4));
        assert!(needs_rehash(&own, 6));
    }

    #[test]
    fn bcrypt_costlier_than_the_cap_never_matches() {
        assert_eq!(max_accepted_bcrypt_cost(4), 12);
        assert_eq!(max_accepted_bcrypt_cost(13), 13);
        let h = hash_password("pw", 6).unwrap();
        assert!(verify_password("pw", &h, 6));
        assert!(!verify_password("pw", &h, 5), "cost 6 above a cap of 5");
        let plain = format!("bcrypt${}", bcrypt::hash("pw", 6).unwrap());
        assert!(!verify_password("pw", &plain, 5));
        assert_eq!(hash_kind(&h), HashKind::Bcrypt(6));
        assert_eq!(hash_kind(&plain), HashKind::Bcrypt(6));
        assert_eq!(hash_kind("pbkdf2_sha256$1000$s$h"), HashKind::Pbkdf2(1000));
        assert_eq!(hash_kind("!unusable"), HashKind::Other);
    }

    #[test]
    fn malformed_hashes_never_match() {
        assert!(!verify_password("x", "", 12));
        assert!(!verify_password("x", "bcrypt_sha256$garbage", 12));
        assert!(!verify_password("x", "pbkdf2_sha256$1$salt$hash", 12));
    }
}
