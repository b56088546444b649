//! tokend: users and the access/refresh token lifecycle, wire-compatible with
//! djangorestframework-simplejwt. See README.md and docs/architecture.md.

pub mod auth;
pub mod claims_hook;
pub mod clock;
pub mod config;
pub mod connections;
pub mod error;
pub mod keyfiles;
pub mod mail;
pub mod metrics;
pub mod routes;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod webhooks;
