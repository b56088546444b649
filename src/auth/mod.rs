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
