//! Pure authentication logic: no web framework, no database.

pub mod claims;
pub mod credentials;
pub mod hashing;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod password_policy;
pub mod sessions;
pub mod throttle;
pub mod webhook;
