//! Builds the application: storage, keys, hashing pool, HTTP server. Binds
//! before returning, so tests can ask for port 0 and learn the real port.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::auth::hashing::{HashingPolicy, HashingPool};
use crate::auth::jwt::{ClaimPolicy, JwtKeys, TokenLifetimes};
use crate::auth::keys::{self, KeyMaterial, SigningAlgorithm};
use crate::auth::throttle::{Throttle, ThrottleSettings};
use crate::config::{CorsSettings, Profile, Settings, MIN_PRODUCTION_KEY_BYTES};
use crate::routes::{self, AppState};
use crate::storage::cache::StateCache;
use crate::storage::Database;
use crate::telemetry;

pub struct Application {
    port: u16,
    server: Server,
}

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
        if settings.purge.interval_secs > 0 {
            spawn_purge_task(state.db.clone(), &settings);
        }
        let body_limit = settings.server.body_limit_bytes;
        let cors = settings.cors.clone();
        let credentials = settings.cookie.enabled;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(body_limit))
                .wrap(security_headers())
                .wrap(cors_middleware(&cors, credentials))
                .wrap(from_fn(crate::error::json_error_bodies))
                .wrap(from_fn(telemetry::log_request))
                .configure(routes::configure)
        })
        .workers(settings.workers())
        .shutdown_timeout(10)
        .listen(listener)?
        .run();
        tracing::info!(
            host = %settings.server.host,
            port,
            backend = state_backend(&settings),
            "tokend listening"
        );
        Ok(Application { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then finishes in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
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

fn spawn_purge_task(db: Database, settings: &Settings) {
    let interval = std::time::Duration::from_secs(settings.purge.interval_secs);
    let batch = settings.purge.batch_size;
    let settings = settings.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.tick().await; // the first tick is immediate: skip it
        loop {
            ticks.tick().await;
            let now = routes::unix_now();
            match db
                .purge(now, purge_horizon(&settings, now), batch, |_| {})
                .await
            {
                Ok(purged) if purged.total() > 0 => tracing::info!(
                    refresh_tokens = purged.refresh_tokens,
                    sessions = purged.sessions,
                    "purged expired rows"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
            }
        }
    });
}

pub fn build_state(settings: &Settings) -> anyhow::Result<AppState> {
    let db = Database::new(&settings.database)?;
    let keys = build_keys(settings)?;
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
    Ok(AppState {
        db,
        keys,
        hashing,
        session_max_age_secs: settings.jwt.session_max_age_secs,
        reuse_grace_secs: settings.jwt.refresh_reuse_grace_secs,
        introspection_clients: settings.introspection.clients(),
        throttle: settings.rate_limit.enabled.then(|| {
            Throttle::new(ThrottleSettings {
                login_per_ip_per_minute: settings.rate_limit.login_per_ip_per_minute,
                register_per_ip_per_minute: settings.rate_limit.register_per_ip_per_minute,
                free_failures: settings.rate_limit.free_failures,
                max_backoff_secs: settings.rate_limit.max_backoff_secs,
            })
        }),
        metrics: crate::metrics::Metrics::new()?,
        refresh_cookie: settings
            .cookie
            .enabled
            .then(|| routes::cookie::RefreshCookie {
                name: settings.cookie.name.clone(),
                secure: settings.cookie.secure,
                path: settings.cookie.path.clone(),
                allowed_origins: settings.cors.origins().unwrap_or_default(),
            }),
        cache: StateCache::new(
            std::time::Duration::from_millis(settings.cache.ttl_ms),
            std::time::Duration::from_millis(settings.cache.stale_if_error_ms),
        ),
        client_ip_header: (!settings.rate_limit.client_ip_header.is_empty())
            .then(|| {
                header::HeaderName::try_from(settings.rate_limit.client_ip_header.as_str()).ok()
            })
            .flatten(),
        trusted_hops: settings.rate_limit.trusted_hops,
    })
}

/// The key ring: the signing key (see `resolve_signing_key`) and the keys
/// listed in `jwt.verification_key_files`.
pub fn build_keys(settings: &Settings) -> anyhow::Result<JwtKeys> {
    load_keys(settings, true)
}

/// The key ring as configured, never generating a key (for the CLI).
pub fn existing_keys(settings: &Settings) -> anyhow::Result<JwtKeys> {
    load_keys(settings, false)
}

fn load_keys(settings: &Settings, may_generate: bool) -> anyhow::Result<JwtKeys> {
    let algorithm = settings.signing_algorithm()?;
    let text = resolve_signing_key(settings, algorithm, may_generate)?;
    if settings.profile == Profile::Production
        && algorithm == SigningAlgorithm::Hs256
        && text.len() < MIN_PRODUCTION_KEY_BYTES
    {
        anyhow::bail!(
            "the HS256 signing key is too short for production: {} bytes, at least {MIN_PRODUCTION_KEY_BYTES} needed",
            text.len()
        );
    }
    let signing = KeyMaterial::signing(algorithm, &text).context("jwt signing key")?;
    let mut accepted = Vec::new();
    for path in settings.verification_key_paths() {
        let text = read_key_file(&path)?.with_context(|| {
            format!(
                "verification key file {} is missing or empty",
                path.display()
            )
        })?;
        let key = KeyMaterial::verification(&text, algorithm)
            .with_context(|| format!("verification key file {}", path.display()))?;
        if settings.profile == Profile::Production
            && key.algorithm() == SigningAlgorithm::Hs256
            && text.len() < MIN_PRODUCTION_KEY_BYTES
        {
            anyhow::bail!(
                "verification key file {}: a shared key shorter than {MIN_PRODUCTION_KEY_BYTES} bytes",
                path.display()
            );
        }
        accepted.push(key);
    }
    let optional = |value: &str| (!value.trim().is_empty()).then(|| value.trim().to_owned());
    let keys = JwtKeys::new(
        &signing,
        &accepted,
        TokenLifetimes {
            access_secs: settings.jwt.access_ttl_secs,
            refresh_secs: settings.jwt.refresh_ttl_secs,
        },
        ClaimPolicy {
            issuer: optional(&settings.jwt.issuer),
            audience: optional(&settings.jwt.audience),
            leeway_secs: settings.jwt.leeway_secs,
        },
    )?;
    tracing::info!(
        algorithm = algorithm.name(),
        kid = keys.signing_kid().unwrap_or("-"),
        accepted_keys = accepted.len(),
        "signing key loaded"
    );
    Ok(keys)
}

/// The configured key, or the key kept in the key file. Only the dev
/// profile generates the file on first start; production refuses.
pub fn resolve_signing_key(
    settings: &Settings,
    algorithm: SigningAlgorithm,
    may_generate: bool,
) -> anyhow::Result<String> {
    if !settings.jwt.signing_key.is_empty() {
        return Ok(settings.jwt.signing_key.expose().to_owned());
    }
    let path = settings.signing_key_path();
    if let Some(key) = read_key_file(&path)? {
        warn_if_readable_by_others(&path);
        return Ok(key);
    }
    if !may_generate {
        anyhow::bail!(
            "no signing key: TOKEND__JWT__SIGNING_KEY is empty and {} does not exist",
            path.display()
        );
    }
    if settings.profile == Profile::Production {
        anyhow::bail!(
            "signing key file {} is missing or empty (the production profile never generates keys; \
             create one with `tokend keys generate --algorithm {}`)",
            path.display(),
            algorithm.name()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = keys::generate(algorithm)?;
    // Written to a private temporary file, then linked into place: another
    // process starting at the same moment sees either no file or the whole
    // key, never a half-written one; if it won the race, its key is used.
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(key.trim_end().as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        })
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    let linked = std::fs::hard_link(&temporary, &path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            tracing::warn!(
                path = %path.display(),
                algorithm = algorithm.name(),
                "no signing key configured: generated a development key and kept it in this file; \
                 set TOKEND__JWT__SIGNING_KEY for production"
            );
            Ok(key.trim_end().to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key_file(&path)?.with_context(|| format!("{} is empty", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// A key file others can read is a leaked key waiting to happen: say so.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the signing key file is readable by other users; chmod 600 it"
            );
        }
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
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
        .allowed_methods(["GET", "HEAD", "POST", "OPTIONS"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([telemetry::REQUEST_ID_HEADER])
        .max_age(86400);
    match settings.origins() {
        None => base.allow_any_origin().send_wildcard(),
        Some(origins) => {
            let cors = origins
                .iter()
                .fold(base, |cors, origin| cors.allowed_origin(origin));
            if credentials {
                cors.supports_credentials()
            } else {
                cors
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(dir: &Path, key: Option<&str>) -> Settings {
        settings_with(dir, key, &[])
    }

    fn settings_with(dir: &Path, key: Option<&str>, extra: &[(&str, &str)]) -> Settings {
        let mut env = HashMap::from([(
            "TOKEND__DATABASE__URL".to_owned(),
            format!("sqlite://{}/sub/tokend.sqlite3", dir.display()),
        )]);
        if let Some(key) = key {
            env.insert("TOKEND__JWT__SIGNING_KEY".to_owned(), key.to_owned());
        }
        for (name, value) in extra {
            env.insert((*name).to_owned(), (*value).to_owned());
        }
        Settings::load_from(Path::new("/nonexistent"), &env).unwrap()
    }

    #[test]
    fn dev_key_is_generated_once_next_to_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), None);
        let path = dir.path().join("sub/tokend.signing_key");
        assert_eq!(s.signing_key_path(), path);
        let first = resolve_signing_key(&s, SigningAlgorithm::Hs256, true).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(
            resolve_signing_key(&s, SigningAlgorithm::Hs256, true).unwrap(),
            first,
            "kept, not regenerated"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_configured_key_wins_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), Some("configured-key"));
        assert_eq!(
            resolve_signing_key(&s, SigningAlgorithm::Hs256, true).unwrap(),
            "configured-key"
        );
        assert!(!dir.path().join("sub/tokend.signing_key").exists());
    }

    #[test]
    fn dev_key_pair_is_generated_per_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings_with(dir.path(), None, &[("TOKEND__JWT__ALGORITHM", "EdDSA")]);
        assert_eq!(
            s.signing_key_path(),
            dir.path().join("sub/tokend.eddsa.pem")
        );
        let first = build_keys(&s).unwrap();
        let kid = first.signing_kid().unwrap().to_owned();
        assert_eq!(build_keys(&s).unwrap().signing_kid(), Some(kid.as_str()));
        let jwks: serde_json::Value = serde_json::from_str(first.jwks_json()).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
        // Switching back to HS256 uses its own file, not the PEM.
        let hs = settings(dir.path(), None);
        assert_eq!(build_keys(&hs).unwrap().jwks_json(), r#"{"keys":[]}"#);
        assert!(dir.path().join("sub/tokend.signing_key").exists());
    }

    #[test]
    fn verification_keys_are_loaded_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let old = keys::generate(SigningAlgorithm::EdDsa).unwrap();
        let old_path = dir.path().join("old.pub.pem");
        std::fs::write(&old_path, keys::public_pem(&old).unwrap()).unwrap();
        let files = old_path.display().to_string();
        let s = settings_with(
            dir.path(),
            None,
            &[
                ("TOKEND__JWT__ALGORITHM", "EdDSA"),
                ("TOKEND__JWT__VERIFICATION_KEY_FILES", &files),
            ],
        );
        let ring = build_keys(&s).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(ring.jwks_json()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        let missing = dir.path().join("nope.pem").display().to_string();
        let s = settings_with(
            dir.path(),
            None,
            &[("TOKEND__JWT__VERIFICATION_KEY_FILES", &missing)],
        );
        let err = format!("{:#}", build_keys(&s).err().unwrap());
        assert!(err.contains("nope.pem"), "{err}");
    }

    #[test]
    fn production_never_generates_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prod.pem").display().to_string();
        let mut s = settings_with(
            dir.path(),
            None,
            &[
                ("TOKEND__JWT__ALGORITHM", "EdDSA"),
                ("TOKEND__JWT__SIGNING_KEY_FILE", &file),
            ],
        );
        s.profile = Profile::Production;
        let err = format!("{:#}", build_keys(&s).err().unwrap());
        assert!(err.contains("never generates keys"), "{err}");
        assert!(!dir.path().join("prod.pem").exists());
        std::fs::write(&file, keys::generate(SigningAlgorithm::EdDsa).unwrap()).unwrap();
        assert!(build_keys(&s).is_ok());
    }
}
