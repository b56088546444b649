//! Builds the application: storage, key ring, hashing pool, HTTP server. Binds
//! before returning, so tests can ask for port 0 and learn the real port.

use std::net::TcpListener;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::auth::hashing::{HashingPolicy, HashingPool};
use crate::auth::throttle::{Throttle, ThrottleSettings};
use crate::config::{CorsSettings, Origins, Profile, Settings};
use crate::connections::{self, ConnectionLimits};
use crate::routes::fields::BodyTimeout;
use crate::routes::{self, AppState};
use crate::service::audit::{AuditWriter, EventKind, WriterSettings};
use crate::service::Services;
use crate::storage::cache::StateCache;
use crate::storage::invalidate::Heard;
use crate::storage::Database;
use crate::telemetry;

pub struct Application {
    port: u16,
    server: Server,
    /// The operational listener (`server.admin_address`), when configured.
    admin: Option<(u16, Server)>,
    /// Writes the audit trail; flushed once the servers have stopped.
    audit: Option<AuditWriter>,
}

/// How long a stopping server waits for the audit writer's last batch.
const AUDIT_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let state = web::Data::new(build_state(&settings)?);
        let db = state.db.clone();
        let applied = tokio::task::spawn_blocking(move || db.migrate_blocking())
            .await
            .context("migration task")??;
        if applied > 0 {
            tracing::info!(applied, "applied database migrations");
        }
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener =
            TcpListener::bind(&address).with_context(|| format!("cannot listen on {address}"))?;
        let port = listener.local_addr()?.port();
        let admin_listener = match settings.server.admin_address() {
            Some(admin) => {
                let listener = TcpListener::bind(admin)
                    .with_context(|| format!("cannot listen on {admin} (server.admin_address)"))?;
                Some(listener)
            }
            None => None,
        };
        let audit = AuditWriter::spawn(
            &state.audit,
            state.db.clone(),
            state.outbox.clone(),
            WriterSettings {
                batch: settings.audit.batch_size,
                interval: std::time::Duration::from_millis(settings.audit.flush_interval_ms),
                retry_delays: crate::service::audit::RETRY_DELAYS,
            },
        );
        state
            .audit
            .record(
                state
                    .audit_event(EventKind::KeySetAtStartup)
                    .detail(serde_json::json!({
                        "kid": state.keys.signing_kid(),
                        "algorithm": settings.jwt.algorithm.name(),
                    })),
            );
        if settings.purge.interval_secs > 0 {
            spawn_purge_task(state.db.clone(), &settings);
        }
        if let Ok(crate::config::DatabaseUrl::Postgres(url)) =
            crate::config::DatabaseUrl::parse(settings.database.url.expose())
        {
            listen_for_invalidations(url, state.clone());
        }
        spawn_limits_pruner(state.clone());
        // One sender per serving process; replicas share the outbox. It
        // also runs the account mail jobs, which need the services.
        let jobs_state = state.clone();
        let jobs = crate::mail::sender::Jobs {
            kinds: &crate::service::jobs::KINDS,
            run: std::sync::Arc::new(move |kind, payload| {
                let state = jobs_state.clone();
                Box::pin(async move { crate::service::jobs::run(&state, kind, &payload).await })
            }),
        };
        crate::mail::sender::Sender::new(
            state.db.clone(),
            state.outbox.clone(),
            state.metrics.clone(),
            &settings.email,
            &settings.webhooks,
        )?
        .with_jobs(jobs)
        .spawn();
        let cap = settings
            .server
            .connection_cap(settings.rate_limit.client_ip_header.as_ref());
        let server = serve(
            &settings,
            state.clone(),
            api_endpoints(&settings, admin_listener.is_some()),
            listener,
            settings.workers(),
            ConnectionLimits::new(cap, settings.server.request_timeout()),
        )?;
        let admin = match admin_listener {
            Some(listener) => {
                let admin_port = listener.local_addr()?.port();
                let endpoints = routes::Endpoints {
                    api: false,
                    metrics: true,
                    documents: true,
                };
                // Its own worker and connection count: scrapes get through
                // however busy the API is.
                let limits = ConnectionLimits::new(cap, settings.server.request_timeout());
                let server = serve(&settings, state.clone(), endpoints, listener, 1, limits)?;
                tracing::info!(port = admin_port, "operational endpoints listening");
                Some((admin_port, server))
            }
            None => None,
        };
        tracing::info!(
            host = %settings.server.host,
            port,
            backend = state_backend(&settings),
            "tokend listening"
        );
        Ok(Application {
            port,
            server,
            admin,
            audit,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin listener's port, when `server.admin_address` is set.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(port, _)| *port)
    }

    /// Serves until SIGINT/SIGTERM, then finishes in-flight requests. Both
    /// listeners handle the signal; either one ending stops the other.
    /// Then writes the queued audit events.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let ended = match self.admin {
            None => self.server.await,
            Some((_, admin)) => Self::both_until_stopped(self.server, admin).await,
        };
        if let Some(audit) = self.audit {
            audit.shutdown(AUDIT_FLUSH_TIMEOUT).await;
        }
        ended
    }

    async fn both_until_stopped(server: Server, admin: Server) -> std::io::Result<()> {
        let (api_handle, admin_handle) = (server.handle(), admin.handle());
        let api = async move {
            let ended = server.await;
            drop(admin_handle.stop(true));
            ended
        };
        let admin = async move {
            let ended = admin.await;
            drop(api_handle.stop(true));
            ended
        };
        let (api, admin) = tokio::join!(api, admin);
        api.and(admin)
    }
}

/// What the API listener serves besides the API: the operational endpoints
/// when there is no admin listener, except /metrics in production (it tells
/// anyone the traffic and failure rates).
fn api_endpoints(settings: &Settings, admin_listener: bool) -> routes::Endpoints {
    routes::Endpoints {
        api: true,
        metrics: !admin_listener && settings.profile != Profile::Production,
        documents: !admin_listener,
    }
}

/// One HTTP server on `listener` serving `endpoints`.
fn serve(
    settings: &Settings,
    state: web::Data<AppState>,
    endpoints: routes::Endpoints,
    listener: TcpListener,
    workers: usize,
    limits: ConnectionLimits,
) -> anyhow::Result<Server> {
    let body_limit = settings.server.body_limit_bytes;
    let request_timeout = settings.server.request_timeout();
    let cors = settings.cors.clone();
    let credentials = settings.cookie.enabled;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // The request log counts requests in the metrics.
            .app_data(web::Data::from(state.metrics.clone()))
            .app_data(web::PayloadConfig::new(body_limit))
            .app_data(BodyTimeout(request_timeout))
            .wrap(security_headers())
            .wrap(cors_middleware(&cors, credentials))
            .wrap(from_fn(crate::error::json_error_bodies))
            .wrap(from_fn(connections::track_requests))
            .wrap(from_fn(telemetry::log_request))
            .configure(routes::configure(endpoints))
    })
    .workers(workers)
    // The first request's head must arrive within the timeout (then 408);
    // connections::ConnectionLimits bounds the later ones.
    .client_request_timeout(request_timeout)
    .keep_alive(connections::KEEP_ALIVE)
    // A client that does not read the close of its connection.
    .client_disconnect_timeout(std::time::Duration::from_secs(1))
    .on_connect(move |io, extensions| limits.on_connect(io, extensions))
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Applies every change other processes (and this one) announce to this
/// process's cache (see `storage::invalidate`).
fn listen_for_invalidations(url: String, state: web::Data<AppState>) {
    crate::storage::invalidate::listen(url, move |heard| match heard {
        Heard::Notice(notice) => {
            state.metrics.cache_notice(notice.kind());
            state.cache.apply(&notice);
        }
        Heard::Listening { reconnected } => {
            if reconnected {
                state.metrics.cache_listener_reconnected();
            }
            state.cache.flush();
        }
        Heard::Unknown => state.cache.flush(),
    });
}

fn state_backend(settings: &Settings) -> &'static str {
    match crate::config::DatabaseUrl::parse(settings.database.url.expose()) {
        Ok(crate::config::DatabaseUrl::Postgres(_)) => "postgres",
        _ => "sqlite",
    }
}

/// Revoked sessions are kept this long for audit, then purged.
pub fn purge_horizon(settings: &Settings, now: i64) -> i64 {
    now - settings.jwt.refresh_ttl_secs
}

/// Every minute, shared brute-force state that no longer counts is deleted
/// (PostgreSQL with the limits on; a no-op otherwise): the tables stay as
/// small as the keys active recently.
fn spawn_limits_pruner(state: web::Data<AppState>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            ticks.tick().await;
            if let Err(e) = state.prune_limits().await {
                tracing::warn!(error = %crate::error::Chain(&e), "pruning brute-force state failed; will retry");
            }
        }
    });
}

fn spawn_purge_task(db: Database, settings: &Settings) {
    let interval = std::time::Duration::from_secs(settings.purge.interval_secs);
    let batch = settings.purge.batch_size;
    let settings = settings.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.tick().await; // the first tick is immediate: skip it
        loop {
            ticks.tick().await;
            let now = crate::clock::unix_now();
            let outbox_before = settings.email.purge_before(now);
            let audit_before = settings.audit.purge_before(now);
            match db
                .purge(
                    now,
                    purge_horizon(&settings, now),
                    outbox_before,
                    audit_before,
                    batch,
                    |_| {},
                )
                .await
            {
                Ok(purged) if purged.total() > 0 => tracing::info!(
                    refresh_tokens = purged.refresh_tokens,
                    sessions = purged.sessions,
                    outbox = purged.outbox,
                    account_tokens = purged.account_tokens,
                    client_tokens = purged.client_tokens,
                    audit_events = purged.audit_events,
                    "purged expired rows"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::error::Chain(&e), "purge failed; will retry")
                }
            }
        }
    });
}

pub fn build_state(settings: &Settings) -> anyhow::Result<AppState> {
    let db = Database::new(&settings.database)?
        .with_webhooks(crate::webhooks::Targets::from_settings(&settings.webhooks));
    let keys = crate::keyfiles::build_keys(settings)?;
    let hashing = HashingPool::new(HashingPolicy {
        cost: settings.password.bcrypt_cost,
        threads: settings.max_concurrent_hashes(),
        nice: settings.password.hashing_nice,
        queue: settings.password.hashing_queue,
        per_client: settings
            .rate_limit
            .enabled
            .then_some(settings.password.hashing_queue_per_client),
    });
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(routes::paths())?);
    let services = Services {
        db,
        keys,
        hashing,
        session_max_age_secs: settings.jwt.session_max_age_secs,
        reuse_grace_secs: settings.jwt.refresh_reuse_grace_secs,
        rotate_refresh_tokens: settings.jwt.rotate_refresh_tokens,
        accept_sessionless_until: settings.jwt.accept_sessionless_until,
        update_last_login: settings.jwt.update_last_login,
        extra_claims: settings.jwt.extra_claims.clone(),
        password_policy: settings.password.policy(),
        account_mails: crate::service::account_mails::AccountMails::new(settings.accounts.clone()),
        claims_hook: crate::claims_hook::ClaimsHook::from_settings(&settings.claims)?,
        introspection_clients: settings.introspection.clients.clone(),
        throttle: settings.rate_limit.enabled.then(|| {
            Throttle::new(ThrottleSettings {
                login_per_ip_per_minute: settings.rate_limit.login_per_ip_per_minute,
                register_per_ip_per_minute: settings.rate_limit.register_per_ip_per_minute,
                free_failures: settings.rate_limit.free_failures,
                max_backoff_secs: settings.rate_limit.max_backoff_secs,
                account_mail_per_ip_per_minute: settings.rate_limit.account_mail_per_ip_per_minute,
                account_mail_per_address_per_hour: settings
                    .rate_limit
                    .account_mail_per_address_per_hour,
            })
        }),
        metrics: metrics.clone(),
        audit: crate::service::audit::Audit::new(settings.audit.queue_capacity, metrics),
        cache: StateCache::new(
            std::time::Duration::from_millis(settings.cache.ttl_ms),
            std::time::Duration::from_millis(settings.cache.stale_if_error_ms),
        ),
        outbox: crate::mail::Outbox::new(),
        clock: crate::clock::unix_now,
    };
    Ok(AppState {
        services,
        refresh_cookie: settings
            .cookie
            .enabled
            .then(|| routes::cookie::RefreshCookie {
                name: settings.cookie.name.clone(),
                secure: settings.cookie.secure,
                path: settings.cookie.path.clone(),
                allowed_origins: match &settings.cors.allowed_origins {
                    Origins::Any => vec![],
                    Origins::List(origins) => origins.clone(),
                },
            }),
        client_ip_header: settings.rate_limit.client_ip_header.clone(),
        trusted_hops: settings.rate_limit.trusted_hops,
    })
}

fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "same-origin"))
        // Token responses must not be cached (RFC 6749 §5.1).
        .add((header::CACHE_CONTROL, "no-store"))
}

/// CORS: any origin without credentials (the seed's allow-all), or the
/// configured origins, with credentials in cookie mode (validation refuses
/// cookie mode with `*`).
fn cors_middleware(settings: &CorsSettings, credentials: bool) -> Cors {
    let base = Cors::default()
        // DELETE: ending a session from the list of one's sessions.
        .allowed_methods(["GET", "HEAD", "POST", "DELETE", "OPTIONS"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([telemetry::REQUEST_ID_HEADER])
        .max_age(86400);
    match &settings.allowed_origins {
        Origins::Any => base.allow_any_origin().send_wildcard(),
        Origins::List(origins) => {
            let cors = origins
                .iter()
                .fold(base, |cors, origin| cors.allowed_origin(origin.as_str()));
            if credentials {
                cors.supports_credentials()
            } else {
                cors
            }
        }
    }
}
