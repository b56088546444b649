//! Pure authentication logic: no web framework, no database.

pub mod account_tokens;
pub mod claims;
pub mod clients;
pub mod credentials;
pub mod email;
pub mod hashing;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod password_policy;
pub mod sessions;
pub mod throttle;
pub mod webhook;

use rand::RngCore;

/// `N` bytes from the thread's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// `N` random bytes as 2N lowercase hex characters.
pub fn random_hex<const N: usize>() -> String {
    hex::encode(random_bytes::<N>())
}
