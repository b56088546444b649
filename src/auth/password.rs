//! Password hashing: bcrypt over a SHA-256 pre-hash.
//!
//! bcrypt reads only the first 72 bytes of its input, and a 128-character
//! password can be 512 bytes of UTF-8. Rather than truncate silently or refuse
//! long passwords, every password is pre-hashed: bcrypt(hex(sha256(password))),
//! 64 ASCII bytes, so every character counts. The stored form is exactly
//! Django's `BCryptSHA256PasswordHasher` format (`bcrypt_sha256$$2b$12$…`),
//! so hashes move between tokend and Django unchanged.
//!
//! These functions are CPU-bound (~280 ms at cost 12): call them on the
//! blocking pool, never on an async worker.

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

/// True when `password` matches `stored`. An unknown or malformed stored hash
/// never matches.
pub fn verify_password(password: &str, stored: &str) -> bool {
    match stored.strip_prefix(PREFIX) {
        Some(inner) => bcrypt::verify(prehash(password), inner).unwrap_or(false),
        None => false,
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
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
    }

    #[test]
    fn no_silent_truncation_past_72_bytes() {
        let base = "x".repeat(100);
        let h = hash_password(&format!("{base}a"), 4).unwrap();
        assert!(verify_password(&format!("{base}a"), &h));
        assert!(!verify_password(&format!("{base}b"), &h));
        let long = "é".repeat(128);
        let h = hash_password(&long, 4).unwrap();
        assert!(verify_password(&long, &h));
        assert!(!verify_password(&"é".repeat(127), &h));
    }

    #[test]
    fn verifies_django_bcrypt_sha256_hashes() {
        // Made the way Django 5.2 BCryptSHA256PasswordHasher does (python bcrypt 5, rounds=4) for "pw12345".
        let django = "bcrypt_sha256$$2b$04$1CCZOZ8ZvSlmYr.4/YDzxuBOlJAalKqa0DZOwqGsmwyvKVOJsHjGC";
        assert!(verify_password("pw12345", django));
        assert!(!verify_password("pw1234", django));
    }

    #[test]
    fn malformed_hashes_never_match() {
        assert!(!verify_password("x", ""));
        assert!(!verify_password("x", "bcrypt_sha256$garbage"));
        assert!(!verify_password("x", "pbkdf2_sha256$1$salt$hash"));
    }
}

/// Runs bcrypt on the blocking thread pool, at most `permits` at a time, so
/// a login storm queues here instead of starving the async workers and the
/// token checks they serve.
pub struct HashingPool {
    cost: u32,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    dummy: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl HashingPool {
    pub fn new(cost: u32, permits: usize) -> Self {
        let dummy = std::sync::Arc::new(std::sync::OnceLock::new());
        // Prepared in the background so that neither start-up nor the first
        // unknown-user login pays for it.
        let preparing = dummy.clone();
        std::thread::spawn(move || {
            preparing.get_or_init(|| dummy_hash(cost).unwrap_or_default());
        });
        HashingPool {
            cost,
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(permits.max(1))),
            dummy,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|_| PoolError)
    }

    pub async fn hash(&self, password: String) -> Result<String, PoolError> {
        let cost = self.cost;
        self.run(move || hash_password(&password, cost))
            .await?
            .map_err(|_| PoolError)
    }

    /// Verifies against `stored`, or against a dummy hash of the same cost
    /// when there is no user, so both cases take the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PoolError> {
        let cost = self.cost;
        let dummy = self.dummy.clone();
        self.run(move || match stored {
            Some(hash) => verify_password(&password, &hash),
            None => {
                let hash = dummy.get_or_init(|| dummy_hash(cost).unwrap_or_default());
                verify_password(&password, hash);
                false
            }
        })
        .await
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the password hashing pool failed")]
pub struct PoolError;
