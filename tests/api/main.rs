//! HTTP-level tests: the real app on port 0, on SQLite and on PostgreSQL.

mod helpers;

mod accounts;
mod admin;
mod audit;
mod claims;
mod claims_hook;
mod cli;
mod client_tokens;
mod clients;
mod compat;
mod concurrency;
mod cookies;
mod devices;
mod downstream;
mod e2e;
mod faults;
mod files;
mod fuzz;
mod import;
mod keys;
mod last_login;
mod legacy;
mod network;
mod no_rotation;
mod oauth;
mod ops;
mod outbox;
mod password_policy;
mod process;
mod protocol;
mod register;
mod sessions;
mod throttle;
mod tokens;
