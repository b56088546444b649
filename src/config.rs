//! Settings: loaded once at start-up from layered sources, then validated.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use actix_web::http::header::HeaderName;
use serde::{Deserialize, Deserializer};

use crate::auth::claims::ExtraClaim;
use crate::auth::keys::SigningAlgorithm;

const DEFAULT_TOML: &str = include_str!("../config/default.toml");
const PRODUCTION_TOML: &str = include_str!("../config/production.toml");

/// Shortest signing key the production profile accepts (bytes). HS256 keys
/// shorter than the hash output weaken the MAC (RFC 7518 §3.2).
pub const MIN_PRODUCTION_KEY_BYTES: usize = 32;

/// Shortest introspection client secret the production profile accepts
/// (characters): 32 hex characters are 128 random bits, beyond guessing
/// even without a throttle.
pub const MIN_PRODUCTION_CLIENT_SECRET_CHARS: usize = 32;

/// Cheapest bcrypt cost the production profile accepts.
pub const MIN_PRODUCTION_BCRYPT_COST: u32 = 10;

/// How far ahead `jwt.accept_sessionless_until` may lie when the
/// configuration is loaded. The legacy window only has to cover a cut-over:
/// the old service stops issuing, its access tokens (minutes to hours) run
/// out, clients log in here. 30 days is ample for that, and bounds how long
/// tokens that nothing here can revoke stay usable; a restart cannot push
/// the end out either, the instant is absolute.
pub const MAX_SESSIONLESS_WINDOW_SECS: i64 = 30 * 86400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Production,
}

impl Profile {
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "dev" | "development" => Ok(Profile::Dev),
            "production" | "prod" => Ok(Profile::Production),
            other => Err(ConfigError::Invalid(format!(
                "TOKEND_PROFILE must be `dev` or `production`, not `{other}`"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Production => "production",
        }
    }
}

/// A string that never shows up in Debug output or logs.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    pub max_connections_per_ip: usize,
    pub admin_address: String,
}

impl ServerSettings {
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_timeout_ms)
    }

    /// The per-address connection cap in force (`None`: no cap). Behind a
    /// proxy (`rate_limit.client_ip_header` set) every connection comes
    /// from the proxy, so there is no cap: the proxy limits its clients.
    pub fn connection_cap(&self, client_ip_header: Option<&HeaderName>) -> Option<usize> {
        (self.max_connections_per_ip > 0 && client_ip_header.is_none())
            .then_some(self.max_connections_per_ip)
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_address(&self) -> Option<&str> {
        Some(self.admin_address.trim()).filter(|a| !a.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub pool_size: u32,
    pub pool_timeout_ms: u64,
    pub sqlite_busy_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JwtSettings {
    #[serde(deserialize_with = "signing_algorithm")]
    pub algorithm: SigningAlgorithm,
    pub signing_key: Secret,
    pub signing_key_file: String,
    /// Files of keys accepted besides the signing key (rotation).
    #[serde(deserialize_with = "path_list")]
    pub verification_key_files: Vec<PathBuf>,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    pub session_max_age_secs: i64,
    pub refresh_reuse_grace_secs: i64,
    /// false: a refresh returns a new access token only and the refresh
    /// token stays usable (simplejwt's default).
    pub rotate_refresh_tokens: bool,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: i64,
    /// The claim naming the user (simplejwt's `USER_ID_CLAIM`).
    pub user_id_claim: String,
    /// Unix seconds; 0 = never. See `MAX_SESSIONLESS_WINDOW_SECS`.
    pub accept_sessionless_until: i64,
    /// Record each login's instant in `users.last_login` (simplejwt's
    /// UPDATE_LAST_LOGIN).
    pub update_last_login: bool,
    /// User fields written into access tokens, in this order.
    #[serde(deserialize_with = "extra_claims")]
    pub extra_claims: Vec<ExtraClaim>,
}

/// The claims hook: an HTTP endpoint asked for extra access-token claims
/// at every login and refresh.
#[derive(Debug, Clone, Deserialize)]
pub struct ClaimsSettings {
    /// Empty: no hook.
    pub hook_url: String,
    /// `whsec_` + base64 (Standard Webhooks); required with a URL.
    pub hook_secret: Secret,
    pub hook_timeout_ms: u64,
    pub hook_failure: HookFailure,
}

/// Bounds of `claims.hook_timeout_ms`: a login waits this long at most.
pub const MAX_HOOK_TIMEOUT_MS: u64 = 10_000;

impl ClaimsSettings {
    /// The hook's URL, when one is configured.
    pub fn hook_url(&self) -> Option<&str> {
        Some(self.hook_url.trim()).filter(|u| !u.is_empty())
    }

    pub fn hook_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.hook_timeout_ms)
    }
}

/// What a login or refresh does when the claims hook fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFailure {
    /// Refuse it: 503.
    Closed,
    /// Issue the token with the computed claims only.
    Open,
}

impl HookFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            HookFailure::Closed => "closed",
            HookFailure::Open => "open",
        }
    }
}

impl<'de> Deserialize<'de> for HookFailure {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.trim() {
            "closed" => Ok(HookFailure::Closed),
            "open" => Ok(HookFailure::Open),
            other => Err(serde::de::Error::custom(format!(
                "claims.hook_failure must be `closed` or `open`, not `{other}`"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PasswordSettings {
    pub bcrypt_cost: u32,
    pub max_concurrent_hashes: usize,
    pub hashing_nice: i32,
    pub hashing_queue: usize,
    pub hashing_queue_per_client: usize,
    /// The password policy (see `PasswordPolicy`).
    pub min_length: usize,
    pub min_strength: u8,
    pub reject_username: bool,
}

impl PasswordSettings {
    pub fn policy(&self) -> crate::auth::password_policy::PasswordPolicy {
        crate::auth::password_policy::PasswordPolicy {
            min_length: self.min_length,
            min_strength: self.min_strength,
            reject_username: self.reject_username,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AccountsSettings {
    pub email_verification: EmailVerification,
    pub reset_ttl_secs: i64,
    pub verify_ttl_secs: i64,
    /// Links in mails: `{uid}` and `{token}` / `{key}` are replaced.
    pub reset_url: String,
    pub verify_url: String,
    /// The service's name in mails.
    pub site_name: String,
    pub reset_subject: String,
    pub reset_text: String,
    pub reset_html: String,
    pub verify_subject: String,
    pub verify_text: String,
    pub verify_html: String,
}

/// `accounts.email_verification`, as django-allauth's ACCOUNT_EMAIL_VERIFICATION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailVerification {
    /// No verification mails.
    None,
    /// A verification mail at registration; login works unverified.
    Optional,
    /// Users with an address log in only once it is verified.
    Mandatory,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CorsSettings {
    #[serde(deserialize_with = "origins")]
    pub allowed_origins: Origins,
}

/// The origins allowed to call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// `*`: any origin, never with credentials.
    Any,
    List(Vec<Origin>),
}

/// `scheme://host[:port]`, as browsers send it in the Origin header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    pub fn parse(origin: &str) -> Result<Self, String> {
        if is_origin(origin) {
            Ok(Origin(origin.to_owned()))
        } else {
            Err(format!(
                "cors.allowed_origins: `{origin}` is not an origin; write scheme://host[:port], \
                 without path or trailing slash (e.g. https://app.example.com)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct IntrospectionSettings {
    #[serde(deserialize_with = "introspection_clients")]
    pub clients: Vec<IntrospectionClient>,
}

/// A service allowed to call introspection, with HTTP Basic credentials.
#[derive(Debug, Clone)]
pub struct IntrospectionClient {
    pub id: String,
    pub secret: Secret,
}

/// E-mail delivery: the outbox sender (see `crate::mail`).
#[derive(Debug, Clone, Deserialize)]
pub struct EmailSettings {
    /// `smtp://`, `smtp://…?tls=required|opportunistic` or `smtps://`
    /// (lettre's URL forms); empty: no SMTP. May carry a password.
    pub smtp_url: Secret,
    /// The From header: `addr` or `Name <addr>`; required with a URL.
    pub from: String,
    /// Without an SMTP URL: log each message at INFO (true) or give it up
    /// unsent (false; links in mails are credentials).
    pub log_instead: bool,
    pub poll_interval_ms: u64,
    pub retry_initial_secs: i64,
    pub retry_max_secs: i64,
    /// A message still undelivered this long after it was queued is given
    /// up (dead).
    pub give_up_after_secs: i64,
    /// One delivery (connection to QUIT) is abandoned after this long.
    pub smtp_timeout_ms: u64,
    /// Sent and dead messages are deleted by the purge after this many days.
    pub retention_days: i64,
}

impl EmailSettings {
    /// The SMTP URL, when one is configured.
    pub fn smtp_url(&self) -> Option<&str> {
        Some(self.smtp_url.expose().trim()).filter(|u| !u.is_empty())
    }

    /// The From mailbox, when one is configured.
    pub fn from(&self) -> Option<&str> {
        Some(self.from.trim()).filter(|f| !f.is_empty())
    }

    pub fn smtp_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.smtp_timeout_ms)
    }

    /// Outbox rows sent or given up before this instant are purged.
    pub fn purge_before(&self, now: i64) -> i64 {
        now.saturating_sub(self.retention_days.saturating_mul(86_400))
    }
}

/// Webhooks of the audit trail (docs/webhooks.md).
#[derive(Debug, Clone, Deserialize)]
pub struct WebhooksSettings {
    /// Where each event is POSTed; empty: no webhooks. A list in TOML, or
    /// comma-separated (the environment).
    #[serde(deserialize_with = "string_list")]
    pub url: Vec<String>,
    /// `whsec_` + base64 (Standard Webhooks); required with a URL.
    pub secret: Secret,
    /// Event names (docs/audit.md) to send; empty: every event.
    #[serde(deserialize_with = "string_list")]
    pub events: Vec<String>,
    /// A delivery still failing this long after its event is given up.
    pub give_up_after_secs: i64,
    pub retry_initial_secs: i64,
    pub retry_max_secs: i64,
    /// One attempt (connection to the answer's status) at most.
    pub timeout_ms: u64,
}

/// The shortest `webhooks.give_up_after_secs`: a receiver down for a day
/// loses nothing.
pub const MIN_WEBHOOK_GIVE_UP_SECS: i64 = 86_400;
/// The longest: undeliverable messages must not pile up in the outbox for
/// good.
pub const MAX_WEBHOOK_GIVE_UP_SECS: i64 = 30 * 86_400;

impl WebhooksSettings {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }
}

/// The audit trail (docs/audit.md).
#[derive(Debug, Clone, Deserialize)]
pub struct AuditSettings {
    /// Events older than this many days are deleted by the purge.
    pub retention_days: i64,
    /// Events waiting for the writer at most; beyond, they are dropped.
    pub queue_capacity: usize,
    /// Rows per INSERT at most.
    pub batch_size: usize,
    /// How long an event waits for others before its batch is written.
    pub flush_interval_ms: u64,
}

impl AuditSettings {
    /// Events before this instant (unix seconds) are purged.
    pub fn purge_before(&self, now: i64) -> i64 {
        now.saturating_sub(self.retention_days.saturating_mul(86_400))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PurgeSettings {
    pub interval_secs: u64,
    pub batch_size: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub login_per_ip_per_minute: u32,
    pub register_per_ip_per_minute: u32,
    pub free_failures: u32,
    pub max_backoff_secs: u64,
    /// `None`: the TCP peer is the client.
    #[serde(deserialize_with = "client_ip_header")]
    pub client_ip_header: Option<HeaderName>,
    pub trusted_hops: usize,
    /// Password-reset and verification mails requested per client address.
    pub account_mail_per_ip_per_minute: u32,
    /// … and per e-mail address, per hour.
    pub account_mail_per_address_per_hour: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CookieSettings {
    pub enabled: bool,
    pub name: String,
    pub secure: bool,
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    pub ttl_ms: u64,
    pub stale_if_error_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// `log.format`: lower case only, as the setting always was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(serde::de::Error::custom(format!(
                "log.format must be `text` or `json`, not `{other}`"
            ))),
        }
    }
}

// String settings parsed once, at load: the environment delivers every
// value as a string, so each of these reads a string. Messages name the
// setting, since the crate's own context may not.

fn signing_algorithm<'de, D: Deserializer<'de>>(d: D) -> Result<SigningAlgorithm, D::Error> {
    let name = String::deserialize(d)?;
    SigningAlgorithm::parse(&name).map_err(|_| {
        serde::de::Error::custom(format!(
            "jwt.algorithm: `{}` is not one of HS256, EdDSA, RS256",
            name.trim()
        ))
    })
}

/// A comma list; blank entries are skipped.
fn comma_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn path_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(comma_list(&String::deserialize(d)?)
        .map(PathBuf::from)
        .collect())
}

/// A list of strings: a TOML array, or one comma-separated string (how
/// the environment gives lists).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Text(String),
        Items(Vec<String>),
    }
    Ok(match List::deserialize(d)? {
        List::Text(text) => comma_list(&text).map(str::to_owned).collect(),
        List::Items(items) => items
            .iter()
            .map(|item| item.trim())
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Names among `ExtraClaim::ALL`, each at most once.
fn extra_claims<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ExtraClaim>, D::Error> {
    let text = String::deserialize(d)?;
    let mut claims = Vec::new();
    for name in comma_list(&text) {
        let claim = ExtraClaim::parse(name).ok_or_else(|| {
            let known: Vec<&str> = ExtraClaim::ALL.iter().map(|c| c.name()).collect();
            serde::de::Error::custom(format!(
                "jwt.extra_claims: `{name}` is not one of {}",
                known.join(", ")
            ))
        })?;
        if claims.contains(&claim) {
            return Err(serde::de::Error::custom(format!(
                "jwt.extra_claims: `{name}` is listed twice"
            )));
        }
        claims.push(claim);
    }
    Ok(claims)
}

/// `*` anywhere in the list allows any origin; otherwise every entry must
/// be an origin.
fn origins<'de, D: Deserializer<'de>>(d: D) -> Result<Origins, D::Error> {
    let text = String::deserialize(d)?;
    if comma_list(&text).any(|o| o == "*") {
        return Ok(Origins::Any);
    }
    comma_list(&text)
        .map(Origin::parse)
        .collect::<Result<_, _>>()
        .map(Origins::List)
        .map_err(serde::de::Error::custom)
}

/// `id:secret,id:secret`; a malformed entry is refused without echoing it
/// (it may hold a secret).
fn introspection_clients<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<IntrospectionClient>, D::Error> {
    let text = Secret::deserialize(d)?;
    comma_list(text.expose())
        .map(|pair| {
            let (id, secret) = pair.split_once(':')?;
            let (id, secret) = (id.trim(), secret.trim());
            (!id.is_empty() && !secret.is_empty()).then(|| IntrospectionClient {
                id: id.to_owned(),
                secret: Secret::new(secret),
            })
        })
        .collect::<Option<_>>()
        .ok_or_else(|| {
            serde::de::Error::custom(
                "introspection.clients must be a comma list of id:secret pairs",
            )
        })
}

fn client_ip_header<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderName>, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() {
        return Ok(None);
    }
    HeaderName::try_from(name.as_str()).map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "rate_limit.client_ip_header `{name}` is not a header name"
        ))
    })
}

/// The typed settings' own messages start with the setting's name: the
/// crate's "for key `…`" suffix would repeat it. Other errors keep it.
/// A URL signed calls go to (`name` is its setting): http(s), with a
/// host, without credentials. Messages never echo it.
fn signed_url(name: &str, url: &str, empty: &str) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
            // Settings are printed (check-config): nothing secret in them
            // but the masked secrets; the signature authenticates tokend.
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return invalid(format!(
                    "{name} must not carry credentials (user:password@): the webhook \
                     signature authenticates tokend to the receiver"
                ));
            }
            Ok(())
        }
        _ => invalid(format!("{name} must be an http:// or https:// URL {empty}")),
    }
}

/// The Standard Webhooks secret `name` (variable `variable`), required
/// because `url_name` is set.
fn signing_secret(
    url_name: &str,
    name: &str,
    variable: &str,
    secret: &Secret,
) -> Result<(), ConfigError> {
    if secret.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{url_name} is set: {variable} is required (whsec_ and base64 of 24-64 random \
             bytes, e.g. `echo whsec_$(openssl rand -base64 32)`)"
        )));
    }
    crate::auth::webhook::parse_secret(secret.expose())
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid(format!("{name} {e}")))
}

fn own_message(error: config::ConfigError) -> ConfigError {
    match error {
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } if matches!(&*error, config::ConfigError::Message(m) if m.starts_with(&key)) => {
            ConfigError::Invalid(error.to_string())
        }
        other => ConfigError::Load(other),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(skip, default = "dev_profile")]
    pub profile: Profile,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub jwt: JwtSettings,
    pub claims: ClaimsSettings,
    pub password: PasswordSettings,
    pub accounts: AccountsSettings,
    pub cors: CorsSettings,
    pub introspection: IntrospectionSettings,
    pub purge: PurgeSettings,
    pub audit: AuditSettings,
    pub rate_limit: RateLimitSettings,
    pub cache: CacheSettings,
    pub cookie: CookieSettings,
    pub log: LogSettings,
    pub email: EmailSettings,
    pub webhooks: WebhooksSettings,
}

fn dev_profile() -> Profile {
    Profile::Dev
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads from `$TOKEND_CONFIG_DIR` (default `config/`) and the process
    /// environment.
    pub fn load() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let dir = env
            .get("TOKEND_CONFIG_DIR")
            .cloned()
            .unwrap_or_else(|| "config".to_owned());
        Self::load_from(Path::new(&dir), &env)
    }

    /// Loads from explicit sources: a config directory (missing files fall
    /// back to the copies built into the binary) and an environment map.
    pub fn load_from(dir: &Path, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let profile = Profile::parse(env.get("TOKEND_PROFILE").map_or("", String::as_str))?;
        let file_or = |name: &str, embedded: Option<&'static str>| {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Some(text),
                Err(_) => embedded.map(str::to_owned),
            }
        };
        let mut builder = config::Config::builder();
        if let Some(text) = file_or("default.toml", Some(DEFAULT_TOML)) {
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let embedded_profile = (profile == Profile::Production).then_some(PRODUCTION_TOML);
        if let Some(text) = file_or(&format!("{}.toml", profile.name()), embedded_profile) {
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        // Conventional variables sit below the TOKEND__ ones.
        if !env.contains_key("TOKEND__DATABASE__URL") {
            builder =
                builder.set_override_option("database.url", env.get("DATABASE_URL").cloned())?;
        }
        if !env.contains_key("TOKEND__SERVER__PORT") {
            builder = builder.set_override_option("server.port", env.get("PORT").cloned())?;
        }
        builder = builder.add_source(
            config::Environment::with_prefix("TOKEND")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env.clone())),
        );
        let mut settings: Settings = builder.build()?.try_deserialize().map_err(own_message)?;
        settings.profile = profile;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(4..=31).contains(&self.password.bcrypt_cost) {
            return invalid(format!(
                "password.bcrypt_cost must be between 4 and 31, not {}",
                self.password.bcrypt_cost
            ));
        }
        if self.jwt.access_ttl_secs <= 0
            || self.jwt.refresh_ttl_secs <= 0
            || self.jwt.session_max_age_secs <= 0
        {
            return invalid(
                "jwt.access_ttl_secs, jwt.refresh_ttl_secs and jwt.session_max_age_secs must be positive"
                    .into(),
            );
        }
        const TEN_YEARS: i64 = 10 * 365 * 86400;
        if [
            self.jwt.access_ttl_secs,
            self.jwt.refresh_ttl_secs,
            self.jwt.session_max_age_secs,
            self.jwt.refresh_reuse_grace_secs,
        ]
        .iter()
        .any(|&secs| secs > TEN_YEARS)
        {
            return invalid("jwt lifetimes must not exceed ten years".into());
        }
        if !(0..=300).contains(&self.jwt.leeway_secs) {
            return invalid("jwt.leeway_secs must be between 0 and 300".into());
        }
        if !crate::auth::jwt::valid_user_id_claim(&self.jwt.user_id_claim) {
            return invalid(format!(
                "jwt.user_id_claim: `{}` must be 1-64 letters, digits or `_`, and not one of \
                 the claims tokend writes itself ({})",
                self.jwt.user_id_claim,
                crate::auth::jwt::RESERVED_CLAIMS.join(", ")
            ));
        }
        if let Some(clash) = self
            .jwt
            .extra_claims
            .iter()
            .find(|c| c.name() == self.jwt.user_id_claim)
        {
            return invalid(format!(
                "jwt.extra_claims: `{}` is the user id claim (jwt.user_id_claim)",
                clash.name()
            ));
        }
        if self.password.min_length > crate::auth::credentials::PASSWORD_MAX_CHARS {
            return invalid(format!(
                "password.min_length must be at most {} (the longest password accepted)",
                crate::auth::credentials::PASSWORD_MAX_CHARS
            ));
        }
        if self.password.min_strength > crate::auth::password_policy::MAX_STRENGTH {
            return invalid("password.min_strength must be a zxcvbn score, 0-4".into());
        }
        let a = &self.accounts;
        if a.reset_ttl_secs <= 0 || a.verify_ttl_secs <= 0 {
            return invalid(
                "accounts.reset_ttl_secs and accounts.verify_ttl_secs must be positive".into(),
            );
        }
        for (name, url, placeholders) in [
            (
                "accounts.reset_url",
                &a.reset_url,
                &["{uid}", "{token}"][..],
            ),
            ("accounts.verify_url", &a.verify_url, &["{key}"][..]),
        ] {
            if url.is_empty() {
                continue;
            }
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return invalid(format!("{name}: `{url}` must be an http(s) URL"));
            }
            if let Some(missing) = placeholders.iter().find(|p| !url.contains(*p)) {
                return invalid(format!("{name}: `{url}` must contain {missing}"));
            }
        }
        if self.jwt.refresh_reuse_grace_secs < 0 {
            return invalid("jwt.refresh_reuse_grace_secs must not be negative".into());
        }
        // A replay hands out the pair issued at the rotation, up to the grace
        // later: its access token must still be valid then, or the client
        // that retried gets a pair it cannot use.
        // Without rotation nothing is ever replayed.
        let grace = self.jwt.refresh_reuse_grace_secs;
        if self.jwt.rotate_refresh_tokens && grace > 0 && self.jwt.access_ttl_secs <= grace {
            return invalid(format!(
                "TOKEND__JWT__ACCESS_TTL_SECS ({}) must be longer than \
                 TOKEND__JWT__REFRESH_REUSE_GRACE_SECS ({grace}): a refresh replayed inside the \
                 grace window returns the access token issued at the rotation, which would \
                 already have expired; lower the grace below the access lifetime, or set it \
                 to 0 (no replays)",
                self.jwt.access_ttl_secs
            ));
        }
        let until = self.jwt.accept_sessionless_until;
        let latest = crate::clock::unix_now().saturating_add(MAX_SESSIONLESS_WINDOW_SECS);
        if until < 0 || until > latest {
            return invalid(format!(
                "jwt.accept_sessionless_until must be 0 (never) or a unix time in seconds at most \
                 {} days ahead (at most {latest}), not {until}",
                MAX_SESSIONLESS_WINDOW_SECS / 86400
            ));
        }
        self.validate_claims_hook()?;
        self.validate_webhooks()?;
        self.validate_email()?;
        self.validate_audit()?;
        if self.rate_limit.login_per_ip_per_minute == 0
            || self.rate_limit.register_per_ip_per_minute == 0
        {
            return invalid("rate_limit quotas must be at least 1 per minute (or set rate_limit.enabled = false)".into());
        }
        if !(0..=19).contains(&self.password.hashing_nice) {
            return invalid("password.hashing_nice must be between 0 and 19".into());
        }
        if self.password.hashing_queue < 1 {
            return invalid("password.hashing_queue must be at least 1".into());
        }
        if !(1..=self.password.hashing_queue).contains(&self.password.hashing_queue_per_client) {
            return invalid(
                "password.hashing_queue_per_client must be between 1 and password.hashing_queue"
                    .into(),
            );
        }
        if !(1..=16).contains(&self.rate_limit.trusted_hops) {
            return invalid("rate_limit.trusted_hops must be between 1 and 16".into());
        }
        if self.cookie.enabled {
            if self.cors.allowed_origins == Origins::Any {
                return invalid(
                    "cookie mode (TOKEND__COOKIE__ENABLED) needs an explicit origin list in \
                     TOKEND__CORS__ALLOWED_ORIGINS: browsers never send credentials to `*`, \
                     and tokend never allows credentials for any origin"
                        .into(),
                );
            }
            let name_ok = !self.cookie.name.is_empty()
                && self
                    .cookie
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !name_ok {
                return invalid("cookie.name must be letters, digits, `_` or `-`".into());
            }
            if !self.cookie.path.starts_with('/') {
                return invalid("cookie.path must start with `/`".into());
            }
            if self.profile == Profile::Production && !self.cookie.secure {
                return invalid(
                    "the production profile refuses cookie.secure = false (HTTPS only)".into(),
                );
            }
        }
        if self.cache.ttl_ms > 60_000 {
            return invalid("cache.ttl_ms must be at most 60000 (one minute)".into());
        }
        if self.purge.batch_size < 1 {
            return invalid("purge.batch_size must be at least 1".into());
        }
        if !(100..=600_000).contains(&self.server.request_timeout_ms) {
            return invalid(
                "server.request_timeout_ms must be between 100 and 600000 (ten minutes)".into(),
            );
        }
        if let Some(admin) = self.server.admin_address() {
            if admin.parse::<std::net::SocketAddr>().is_err() {
                return invalid(format!(
                    "server.admin_address `{admin}` is not an address; write ip:port, e.g. 127.0.0.1:9000"
                ));
            }
        }
        if self.server.body_limit_bytes < 1024 {
            return invalid("server.body_limit_bytes must be at least 1024".into());
        }
        let algorithm = self.jwt.algorithm;
        if self.profile == Profile::Production {
            let key = self.jwt.signing_key.expose();
            if key.is_empty() && self.jwt.signing_key_file.trim().is_empty() {
                return invalid(
                    "the production profile needs a signing key: set TOKEND__JWT__SIGNING_KEY \
                     (or TOKEND__JWT__SIGNING_KEY_FILE)"
                        .into(),
                );
            }
            if self.password.bcrypt_cost < MIN_PRODUCTION_BCRYPT_COST {
                return invalid(format!(
                    "TOKEND__PASSWORD__BCRYPT_COST={} is too cheap for production: at least {MIN_PRODUCTION_BCRYPT_COST}",
                    self.password.bcrypt_cost
                ));
            }
            if let Some(IntrospectionClient { id, .. }) =
                self.introspection.clients.iter().find(|client| {
                    client.secret.expose().chars().count() < MIN_PRODUCTION_CLIENT_SECRET_CHARS
                })
            {
                return invalid(format!(
                    "introspection client `{id}`: its secret is too short for production, at least \
                     {MIN_PRODUCTION_CLIENT_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)"
                ));
            }
            if algorithm == SigningAlgorithm::Hs256
                && !key.is_empty()
                && key.len() < MIN_PRODUCTION_KEY_BYTES
            {
                return invalid(format!(
                    "TOKEND__JWT__SIGNING_KEY is too short for production: {} bytes, at least {MIN_PRODUCTION_KEY_BYTES} needed",
                    key.len()
                ));
            }
        }
        DatabaseUrl::parse(self.database.url.expose())?;
        Ok(())
    }

    fn validate_audit(&self) -> Result<(), ConfigError> {
        let audit = &self.audit;
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if audit.retention_days < 1 {
            return invalid("audit.retention_days must be at least 1");
        }
        if !(1..=1_000_000).contains(&audit.queue_capacity) {
            return invalid("audit.queue_capacity must be between 1 and 1000000");
        }
        // Eleven columns a row: 1000 rows stay within SQLite's bind limit.
        if !(1..=1000).contains(&audit.batch_size) {
            return invalid("audit.batch_size must be between 1 and 1000");
        }
        if !(1..=60_000).contains(&audit.flush_interval_ms) {
            return invalid("audit.flush_interval_ms must be between 1 and 60000");
        }
        Ok(())
    }

    fn validate_email(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let email = &self.email;
        if let Some(from) = email.from() {
            if from.parse::<lettre::message::Mailbox>().is_err() {
                return invalid(format!(
                    "email.from: `{from}` is not an address; write addr@example.com or \
                     Name <addr@example.com>"
                ));
            }
        }
        if !(10..=600_000).contains(&email.poll_interval_ms) {
            return invalid("email.poll_interval_ms must be between 10 and 600000".into());
        }
        if email.retry_initial_secs < 1 || email.retry_max_secs < email.retry_initial_secs {
            return invalid(
                "email.retry_initial_secs must be at least 1, and email.retry_max_secs at \
                 least email.retry_initial_secs"
                    .into(),
            );
        }
        if email.give_up_after_secs < 1 {
            return invalid("email.give_up_after_secs must be at least 1".into());
        }
        if !(1_000..=300_000).contains(&email.smtp_timeout_ms) {
            return invalid("email.smtp_timeout_ms must be between 1000 and 300000".into());
        }
        if email.retention_days < 1 {
            return invalid("email.retention_days must be at least 1".into());
        }
        let Some(url) = email.smtp_url() else {
            return Ok(());
        };
        // Messages never echo the URL: it may carry a password.
        let parsed =
            match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "smtp" | "smtps") && parsed.has_host() => {
                    parsed
                }
                _ => return invalid(
                    "email.smtp_url must be smtp://host[:port], smtp://host[:port]?tls=required, \
                     smtp://host[:port]?tls=opportunistic or smtps://host[:port] (or empty: no \
                     SMTP)"
                        .into(),
                ),
            };
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let encrypted = parsed.scheme() == "smtps" || tls.as_deref() == Some("required");
        if parsed.password().is_some() && !encrypted {
            return invalid(
                "email.smtp_url carries a password but no required encryption: use \
                 smtp://…?tls=required (STARTTLS) or smtps:// (implicit TLS), so the password \
                 never crosses the network in clear"
                    .into(),
            );
        }
        if let Err(e) = crate::mail::sender::transport(url, self.email.smtp_timeout()) {
            return invalid(format!("email.smtp_url: {e}"));
        }
        if email.from().is_none() {
            return invalid(
                "email.smtp_url is set: TOKEND__EMAIL__FROM is required (e.g. \
                 `tokend <noreply@example.com>`)"
                    .into(),
            );
        }
        Ok(())
    }

    fn validate_claims_hook(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let claims = &self.claims;
        if !(1..=MAX_HOOK_TIMEOUT_MS).contains(&claims.hook_timeout_ms) {
            return invalid(format!(
                "claims.hook_timeout_ms must be between 1 and {MAX_HOOK_TIMEOUT_MS}, not {}",
                claims.hook_timeout_ms
            ));
        }
        let Some(url) = claims.hook_url() else {
            return Ok(());
        };
        signed_url("claims.hook_url", url, "(or empty: no hook)")?;
        signing_secret(
            "claims.hook_url",
            "claims.hook_secret",
            "TOKEND__CLAIMS__HOOK_SECRET",
            &claims.hook_secret,
        )
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let hooks = &self.webhooks;
        for event in &hooks.events {
            if let Err(e) = event.parse::<crate::service::audit::EventKind>() {
                return invalid(format!("webhooks.events: {e}"));
            }
        }
        if !(MIN_WEBHOOK_GIVE_UP_SECS..=MAX_WEBHOOK_GIVE_UP_SECS)
            .contains(&hooks.give_up_after_secs)
        {
            return invalid(format!(
                "webhooks.give_up_after_secs must be from {MIN_WEBHOOK_GIVE_UP_SECS} (a day) to \
                 {MAX_WEBHOOK_GIVE_UP_SECS} (30 days), not {}",
                hooks.give_up_after_secs
            ));
        }
        if hooks.retry_initial_secs < 1 || hooks.retry_max_secs < hooks.retry_initial_secs {
            return invalid(
                "webhooks.retry_initial_secs must be at least 1, and webhooks.retry_max_secs at \
                 least webhooks.retry_initial_secs"
                    .into(),
            );
        }
        if !(1_000..=60_000).contains(&hooks.timeout_ms) {
            return invalid("webhooks.timeout_ms must be between 1000 and 60000".into());
        }
        if hooks.url.is_empty() {
            return Ok(());
        }
        for (n, url) in hooks.url.iter().enumerate() {
            signed_url("webhooks.url", url, "(or empty: no webhooks)")?;
            if hooks.url[..n].contains(url) {
                return invalid("webhooks.url lists a URL twice".into());
            }
        }
        signing_secret(
            "webhooks.url",
            "webhooks.secret",
            "TOKEND__WEBHOOKS__SECRET",
            &hooks.secret,
        )
    }

    /// Where the signing key is read from when `jwt.signing_key` is empty
    /// (and, in the dev profile, generated on first start): the configured
    /// file, else a file named after the algorithm next to the SQLite
    /// database (`data/` for PostgreSQL).
    pub fn signing_key_path(&self) -> PathBuf {
        if !self.jwt.signing_key_file.trim().is_empty() {
            return PathBuf::from(self.jwt.signing_key_file.trim());
        }
        let name = self.jwt.algorithm.dev_key_file_name();
        match DatabaseUrl::parse(self.database.url.expose()) {
            Ok(DatabaseUrl::Sqlite(path)) => match Path::new(&path).parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
                _ => PathBuf::from(name),
            },
            _ => Path::new("data").join(name),
        }
    }

    pub fn workers(&self) -> usize {
        if self.server.workers == 0 {
            cpu_count()
        } else {
            self.server.workers
        }
    }

    pub fn max_concurrent_hashes(&self) -> usize {
        if self.password.max_concurrent_hashes == 0 {
            cpu_count()
        } else {
            self.password.max_concurrent_hashes
        }
    }
}

fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let host_ok = |host: &str| {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
    };
    matches!(scheme, "http" | "https") && host_ok(rest)
}

pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The database URL, resolved to a backend before anything connects (SQLite
/// would accept almost any string as a file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(String),
}

/// The URL with any password replaced by `***`, for display.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(ConfigError::Invalid("database.url is empty".into()));
        }
        if path.contains("://") {
            return Err(ConfigError::Invalid(
                "database.url must be sqlite://path, a file path, or postgres://…".into(),
            ));
        }
        if path == ":memory:" || path.contains("mode=memory") {
            // Every connection (the pool's, the writing one) would open a
            // database of its own.
            return Err(ConfigError::Invalid(
                "database.url: an in-memory SQLite database is not supported; give a file path"
                    .into(),
            ));
        }
        Ok(DatabaseUrl::Sqlite(path.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(Path::new("/nonexistent"), &env)
    }

    #[test]
    fn audit_settings_are_bounded() {
        let s = load(&[("TOKEND__AUDIT__RETENTION_DAYS", "30")]).unwrap();
        assert_eq!(s.audit.retention_days, 30);
        assert_eq!(
            (
                s.audit.queue_capacity,
                s.audit.batch_size,
                s.audit.flush_interval_ms
            ),
            (10_000, 500, 200)
        );
        for (key, value, message) in [
            (
                "TOKEND__AUDIT__RETENTION_DAYS",
                "0",
                "audit.retention_days must be at least 1",
            ),
            (
                "TOKEND__AUDIT__BATCH_SIZE",
                "5000",
                "audit.batch_size must be between 1 and 1000",
            ),
            (
                "TOKEND__AUDIT__QUEUE_CAPACITY",
                "0",
                "audit.queue_capacity must be between 1 and 1000000",
            ),
            (
                "TOKEND__AUDIT__FLUSH_INTERVAL_MS",
                "0",
                "audit.flush_interval_ms must be between 1 and 60000",
            ),
        ] {
            match load(&[(key, value)]) {
                Err(ConfigError::Invalid(m)) => assert_eq!(m, message),
                other => panic!("{key}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let s = load(&[]).unwrap();
        assert_eq!(s.profile, Profile::Dev);
        assert_eq!(s.server.host, "127.0.0.1");
        assert_eq!(s.server.port, 8000);
        assert_eq!(s.database.url.expose(), "sqlite://data/tokend.sqlite3");
        assert_eq!(s.jwt.access_ttl_secs, 1800);
        assert_eq!(s.jwt.refresh_ttl_secs, 86400);
        assert_eq!(s.jwt.session_max_age_secs, 30 * 86400);
        assert_eq!(s.jwt.refresh_reuse_grace_secs, 10);
        assert!(s.jwt.rotate_refresh_tokens);
        assert_eq!(s.password.bcrypt_cost, 12);
        assert_eq!(s.cors.allowed_origins, Origins::Any);
        assert!(s.rate_limit.enabled);
        assert_eq!(
            s.signing_key_path(),
            PathBuf::from("data/tokend.signing_key")
        );
    }

    #[test]
    fn environment_overrides_with_fixed_names() {
        let s = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("PORT", "9000"),
            ("TOKEND__JWT__ACCESS_TTL_SECS", "60"),
            ("TOKEND__PASSWORD__BCRYPT_COST", "10"),
            (
                "TOKEND__CORS__ALLOWED_ORIGINS",
                "https://a.example, https://b.example",
            ),
        ])
        .unwrap();
        assert_eq!(s.database.url.expose(), "postgres://u@h/db");
        assert_eq!(s.server.port, 9000);
        assert_eq!(s.jwt.access_ttl_secs, 60);
        assert_eq!(s.password.bcrypt_cost, 10);
        assert_eq!(
            s.cors.allowed_origins,
            Origins::List(vec![
                Origin::parse("https://a.example").unwrap(),
                Origin::parse("https://b.example").unwrap()
            ])
        );
    }

    #[test]
    fn user_id_claim_defaults_to_simplejwts_and_is_validated() {
        assert_eq!(load(&[]).unwrap().jwt.user_id_claim, "user_id");
        let s = load(&[("TOKEND__JWT__USER_ID_CLAIM", "sub")]).unwrap();
        assert_eq!(s.jwt.user_id_claim, "sub");
        for bad in ["", "user-id", "a b", "jti", "sid", "aud", &"x".repeat(65)] {
            let err = load(&[("TOKEND__JWT__USER_ID_CLAIM", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("jwt.user_id_claim"), "{bad}: {err}");
        }
    }

    #[test]
    fn tokend_variables_win_over_conventional_ones() {
        let s = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("TOKEND__DATABASE__URL", "sqlite://x.db"),
            ("PORT", "9000"),
            ("TOKEND__SERVER__PORT", "9001"),
        ])
        .unwrap();
        assert_eq!(s.database.url.expose(), "sqlite://x.db");
        assert_eq!(s.server.port, 9001);
    }

    #[test]
    fn production_needs_long_introspection_secrets() {
        let key = "k".repeat(MIN_PRODUCTION_KEY_BYTES);
        let long = format!("svc:{}", "s".repeat(MIN_PRODUCTION_CLIENT_SECRET_CHARS));
        for (clients, ok) in [("svc:a", false), (long.as_str(), true)] {
            let loaded = load(&[
                ("TOKEND_PROFILE", "production"),
                ("TOKEND__JWT__SIGNING_KEY", &key),
                ("TOKEND__INTROSPECTION__CLIENTS", clients),
            ]);
            match loaded {
                Ok(_) => assert!(ok, "{clients} accepted"),
                Err(e) => {
                    assert!(!ok, "{clients}: {e}");
                    assert!(
                        e.to_string().contains("`svc`: its secret is too short"),
                        "{e}"
                    );
                    assert!(
                        !e.to_string().contains(":a"),
                        "the secret is not shown: {e}"
                    );
                }
            }
        }
        assert!(
            load(&[("TOKEND__INTROSPECTION__CLIENTS", "svc:a")]).is_ok(),
            "dev allows it"
        );
    }

    #[test]
    fn the_password_policy_is_on_in_production_only() {
        let dev = load(&[]).unwrap();
        assert_eq!(
            dev.password.policy(),
            crate::auth::password_policy::PasswordPolicy::default()
        );
        let key = "k".repeat(MIN_PRODUCTION_KEY_BYTES);
        let prod = load(&[
            ("TOKEND_PROFILE", "production"),
            ("TOKEND__JWT__SIGNING_KEY", key.as_str()),
        ])
        .unwrap();
        assert_eq!(
            prod.password.policy(),
            crate::auth::password_policy::PasswordPolicy {
                min_length: 8,
                min_strength: 2,
                reject_username: true,
            }
        );
        for (name, value, message) in [
            ("TOKEND__PASSWORD__MIN_STRENGTH", "5", "0-4"),
            ("TOKEND__PASSWORD__MIN_LENGTH", "129", "at most 128"),
        ] {
            let err = load(&[(name, value)]).unwrap_err();
            assert!(err.to_string().contains(message), "{name}: {err}");
        }
    }

    #[test]
    fn production_needs_a_strong_key() {
        let err = load(&[("TOKEND_PROFILE", "production")]).unwrap_err();
        assert!(
            err.to_string().contains("TOKEND__JWT__SIGNING_KEY"),
            "{err}"
        );
        let err = load(&[
            ("TOKEND_PROFILE", "production"),
            ("TOKEND__JWT__SIGNING_KEY", "short"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
        let key = "k".repeat(MIN_PRODUCTION_KEY_BYTES);
        let err = load(&[
            ("TOKEND_PROFILE", "production"),
            ("TOKEND__JWT__SIGNING_KEY", &key),
            ("TOKEND__PASSWORD__BCRYPT_COST", "9"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("too cheap"), "{err}");
        let s = load(&[
            ("TOKEND_PROFILE", "production"),
            ("TOKEND__JWT__SIGNING_KEY", &key),
        ])
        .unwrap();
        assert_eq!(s.profile, Profile::Production);
        assert_eq!(s.server.host, "0.0.0.0");
        assert_eq!(s.log.format, LogFormat::Json);
    }

    #[test]
    fn the_sessionless_window_is_off_by_default_and_must_end_soon() {
        assert_eq!(load(&[]).unwrap().jwt.accept_sessionless_until, 0);
        let key = "TOKEND__JWT__ACCEPT_SESSIONLESS_UNTIL";
        let now = crate::clock::unix_now();
        for ok in [now - 1, now + 3600, now + MAX_SESSIONLESS_WINDOW_SECS - 60] {
            let s = load(&[(key, &ok.to_string())]).unwrap();
            assert_eq!(s.jwt.accept_sessionless_until, ok);
        }
        for bad in [
            (now + MAX_SESSIONLESS_WINDOW_SECS + 60).to_string(),
            i64::MAX.to_string(),
            "-1".to_owned(),
        ] {
            let err = load(&[(key, &bad)]).unwrap_err().to_string();
            assert!(err.contains("jwt.accept_sessionless_until"), "{err}");
        }
    }

    const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn the_claims_hook_is_off_by_default() {
        let s = load(&[]).unwrap();
        assert_eq!(s.claims.hook_url(), None);
        assert!(s.claims.hook_secret.is_empty());
        assert_eq!(s.claims.hook_timeout_ms, 500);
        assert_eq!(s.claims.hook_failure, HookFailure::Closed);
        // Whitespace only is no URL.
        let s = load(&[("TOKEND__CLAIMS__HOOK_URL", "  ")]).unwrap();
        assert_eq!(s.claims.hook_url(), None);
    }

    #[test]
    fn email_is_logged_in_dev_and_never_in_production_without_smtp() {
        let s = load(&[]).unwrap();
        assert_eq!(s.email.smtp_url(), None);
        assert_eq!(s.email.from(), None);
        assert!(s.email.log_instead);
        assert_eq!(s.email.poll_interval_ms, 1000);
        assert_eq!(
            (s.email.retry_initial_secs, s.email.retry_max_secs),
            (5, 3600)
        );
        assert_eq!(s.email.give_up_after_secs, 86_400);
        assert_eq!(s.email.retention_days, 7);
        assert_eq!(s.email.purge_before(10 * 86_400), 3 * 86_400);
        assert_eq!(s.audit.retention_days, 90);
        assert_eq!(s.audit.purge_before(100 * 86_400), 10 * 86_400);
        let s = load(&[
            ("TOKEND_PROFILE", "production"),
            ("TOKEND__JWT__SIGNING_KEY", &"k".repeat(32)),
        ])
        .unwrap();
        assert!(!s.email.log_instead);
    }

    #[test]
    fn smtp_urls_take_lettres_forms_and_never_show_the_password() {
        let from = ("TOKEND__EMAIL__FROM", "tokend <noreply@example.com>");
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://relay.internal",
            "smtp://user:pwZq7%40x@relay.example.com:587?tls=required",
            "smtp://relay.example.com?tls=opportunistic",
            "smtps://user:pwZq7@smtp.example.com",
        ] {
            let s = load(&[("TOKEND__EMAIL__SMTP_URL", url), from]).unwrap();
            assert_eq!(s.email.smtp_url(), Some(url));
            assert!(!format!("{s:?}").contains("pwZq7"), "{url}");
        }
        for (url, message) in [
            ("http://relay:25", "email.smtp_url must be smtp://"),
            ("relay:25", "email.smtp_url must be smtp://"),
            ("smtp://relay?tls=sometimes", "email.smtp_url: "),
            (
                "smtp://user:secretpw@relay:25",
                "email.smtp_url carries a password but no required encryption",
            ),
            (
                "smtp://user:secretpw@relay:587?tls=opportunistic",
                "email.smtp_url carries a password but no required encryption",
            ),
        ] {
            let err = load(&[("TOKEND__EMAIL__SMTP_URL", url), from])
                .unwrap_err()
                .to_string();
            assert!(err.contains(message), "{url}: {err}");
            assert!(!err.contains("secretpw"), "{err}");
        }
        let err = load(&[("TOKEND__EMAIL__SMTP_URL", "smtp://127.0.0.1:2525")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOKEND__EMAIL__FROM is required"), "{err}");
    }

    #[test]
    fn the_from_address_is_checked_at_load() {
        for from in [
            "noreply@example.com",
            "Tokend Accounts <noreply@example.com>",
        ] {
            let s = load(&[("TOKEND__EMAIL__FROM", from)]).unwrap();
            assert_eq!(s.email.from(), Some(from));
        }
        for from in ["noreply", "Tokend <noreply>", "a@b@c"] {
            let err = load(&[("TOKEND__EMAIL__FROM", from)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("email.from: `"), "{from}: {err}");
        }
        for (key, value) in [
            ("TOKEND__EMAIL__POLL_INTERVAL_MS", "0"),
            ("TOKEND__EMAIL__RETRY_INITIAL_SECS", "0"),
            ("TOKEND__EMAIL__RETRY_MAX_SECS", "1"),
            ("TOKEND__EMAIL__GIVE_UP_AFTER_SECS", "0"),
            ("TOKEND__EMAIL__SMTP_TIMEOUT_MS", "10"),
            ("TOKEND__EMAIL__RETENTION_DAYS", "0"),
        ] {
            let err = load(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains("email."), "{key}: {err}");
        }
    }

    #[test]
    fn a_claims_hook_needs_a_valid_secret_never_shown() {
        let url = ("TOKEND__CLAIMS__HOOK_URL", "https://hooks.internal/claims");
        let s = load(&[
            url,
            ("TOKEND__CLAIMS__HOOK_SECRET", HOOK_SECRET),
            ("TOKEND__CLAIMS__HOOK_TIMEOUT_MS", "250"),
            ("TOKEND__CLAIMS__HOOK_FAILURE", "open"),
        ])
        .unwrap();
        assert_eq!(s.claims.hook_url(), Some("https://hooks.internal/claims"));
        assert_eq!(
            s.claims.hook_timeout(),
            std::time::Duration::from_millis(250)
        );
        assert_eq!(s.claims.hook_failure, HookFailure::Open);
        let dump = format!("{s:?}");
        assert!(!dump.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{dump}");
        let err = load(&[url]).unwrap_err().to_string();
        assert!(
            err.contains("TOKEND__CLAIMS__HOOK_SECRET is required"),
            "{err}"
        );
        for (bad, message) in [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "must start with `whsec_`",
            ),
            ("whsec_c2hvcnQ=", "must decode to 24-64 bytes, not 5"),
            ("whsec_!!notbase64-secret-value!!", "followed by base64"),
        ] {
            let err = load(&[url, ("TOKEND__CLAIMS__HOOK_SECRET", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("claims.hook_secret") && err.contains(message),
                "{err}"
            );
            assert!(!err.contains(&bad[6..]), "the secret is not shown: {err}");
        }
        // Without a URL the secret is not needed (nor checked).
        assert!(load(&[("TOKEND__CLAIMS__HOOK_SECRET", "x")]).is_ok());
    }

    #[test]
    fn webhooks_take_a_url_list_from_toml_or_a_comma_list_from_the_environment() {
        let s = load(&[]).unwrap();
        assert!(s.webhooks.url.is_empty() && s.webhooks.events.is_empty());
        assert_eq!(
            (
                s.webhooks.give_up_after_secs,
                s.webhooks.retry_initial_secs,
                s.webhooks.retry_max_secs,
                s.webhooks.timeout_ms
            ),
            (259_200, 5, 3600, 10_000)
        );
        let s = load(&[
            (
                "TOKEND__WEBHOOKS__URL",
                "http://a.internal/hook, https://b.internal/hook",
            ),
            ("TOKEND__WEBHOOKS__SECRET", HOOK_SECRET),
            (
                "TOKEND__WEBHOOKS__EVENTS",
                "login_failed,refresh_reuse_detected",
            ),
        ])
        .unwrap();
        assert_eq!(
            s.webhooks.url,
            ["http://a.internal/hook", "https://b.internal/hook"]
        );
        assert_eq!(
            s.webhooks.events,
            ["login_failed", "refresh_reuse_detected"]
        );
        assert!(!format!("{s:?}").contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.toml"),
            DEFAULT_TOML.replace(
                "url = []\n",
                "url = [\"http://a.internal/hook\", \"http://b.internal/hook\"]\n",
            ),
        )
        .unwrap();
        let env = [("TOKEND__WEBHOOKS__SECRET", HOOK_SECRET)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s = Settings::load_from(dir.path(), &env).unwrap();
        assert_eq!(
            s.webhooks.url,
            ["http://a.internal/hook", "http://b.internal/hook"]
        );
    }

    #[test]
    fn bad_webhook_settings_are_refused_at_load() {
        let url = ("TOKEND__WEBHOOKS__URL", "https://hooks.internal/audit");
        let secret = ("TOKEND__WEBHOOKS__SECRET", HOOK_SECRET);
        for (env, message) in [
            (
                vec![url],
                "webhooks.url is set: TOKEND__WEBHOOKS__SECRET is required",
            ),
            (
                vec![url, ("TOKEND__WEBHOOKS__SECRET", "whsec_c2hvcnQ=")],
                "webhooks.secret must decode to 24-64 bytes, not 5",
            ),
            (
                vec![("TOKEND__WEBHOOKS__URL", "ftp://hooks.internal/"), secret],
                "webhooks.url must be an http:// or https:// URL",
            ),
            (
                vec![
                    ("TOKEND__WEBHOOKS__URL", "https://a.internal/,hooks.internal"),
                    secret,
                ],
                "webhooks.url must be an http:// or https:// URL",
            ),
            (
                vec![
                    ("TOKEND__WEBHOOKS__URL", "https://u:pw@hooks.internal/"),
                    secret,
                ],
                "webhooks.url must not carry credentials",
            ),
            (
                vec![
                    ("TOKEND__WEBHOOKS__URL", "https://a.internal/h,https://a.internal/h"),
                    secret,
                ],
                "webhooks.url lists a URL twice",
            ),
            (
                vec![("TOKEND__WEBHOOKS__EVENTS", "login_failed,login_faild")],
                "webhooks.events: unknown event `login_faild`; one of: login_succeeded, login_failed,",
            ),
            (
                vec![("TOKEND__WEBHOOKS__GIVE_UP_AFTER_SECS", "86399")],
                "webhooks.give_up_after_secs must be from 86400 (a day) to 2592000 (30 days), not 86399",
            ),
            (
                vec![("TOKEND__WEBHOOKS__RETRY_INITIAL_SECS", "0")],
                "webhooks.retry_initial_secs must be at least 1",
            ),
            (
                vec![("TOKEND__WEBHOOKS__TIMEOUT_MS", "999")],
                "webhooks.timeout_ms must be between 1000 and 60000",
            ),
        ] {
            let err = load(&env).unwrap_err().to_string();
            assert!(err.contains(message), "{env:?}: {err}");
        }
    }

    #[test]
    fn bad_claims_hook_settings_name_the_setting() {
        let secret = ("TOKEND__CLAIMS__HOOK_SECRET", HOOK_SECRET);
        for (name, value, message) in [
            (
                "TOKEND__CLAIMS__HOOK_URL",
                "hooks.internal/claims",
                "claims.hook_url must be",
            ),
            (
                "TOKEND__CLAIMS__HOOK_URL",
                "ftp://hooks.internal/",
                "claims.hook_url must be",
            ),
            (
                "TOKEND__CLAIMS__HOOK_URL",
                "https://u:pw@hooks.internal/",
                "claims.hook_url must not carry credentials",
            ),
            (
                "TOKEND__CLAIMS__HOOK_TIMEOUT_MS",
                "0",
                "claims.hook_timeout_ms must be",
            ),
            (
                "TOKEND__CLAIMS__HOOK_TIMEOUT_MS",
                "10001",
                "claims.hook_timeout_ms must be",
            ),
            (
                "TOKEND__CLAIMS__HOOK_FAILURE",
                "Open",
                "claims.hook_failure must be `closed` or `open`, not `Open`",
            ),
        ] {
            let err = load(&[secret, (name, value)]).unwrap_err().to_string();
            assert!(err.contains(message), "{name}={value}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
        for ok in ["1", "10000"] {
            assert!(
                load(&[("TOKEND__CLAIMS__HOOK_TIMEOUT_MS", ok)]).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn secrets_are_masked_in_debug_output() {
        let s = load(&[("TOKEND__JWT__SIGNING_KEY", "super-secret-key-value")]).unwrap();
        let dump = format!("{s:?}");
        assert!(!dump.contains("super-secret-key-value"));
        assert!(dump.contains("***"));
    }

    #[test]
    fn database_urls_pick_the_backend_by_scheme() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db").unwrap(),
            DatabaseUrl::Sqlite("data/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///abs/x.db").unwrap(),
            DatabaseUrl::Sqlite("/abs/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("plain.db").unwrap(),
            DatabaseUrl::Sqlite("plain.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgresql://h/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!(DatabaseUrl::parse("mysql://h/db").is_err());
        assert!(DatabaseUrl::parse("").is_err());
        assert!(DatabaseUrl::parse("sqlite://:memory:").is_err());
        assert!(DatabaseUrl::parse("file:x?mode=memory&cache=shared").is_err());
    }

    #[test]
    fn cors_origins_must_be_origins() {
        let ok = load(&[(
            "TOKEND__CORS__ALLOWED_ORIGINS",
            "https://a.example:8443,http://localhost:5173",
        )]);
        assert!(ok.is_ok());
        for bad in [
            "https://a.example/",
            "a.example",
            "https://a.example/login",
            "ftp://a.example",
        ] {
            let err = load(&[("TOKEND__CORS__ALLOWED_ORIGINS", bad)]).unwrap_err();
            assert!(err.to_string().contains("not an origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn urls_are_redacted_for_display() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn connection_settings() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.request_timeout_ms, 10_000);
        assert_eq!(s.server.admin_address(), None);
        assert_eq!(s.server.connection_cap(None), Some(256));
        // Behind a proxy every connection is the proxy's: no cap.
        let proxy = HeaderName::from_static("x-forwarded-for");
        assert_eq!(s.server.connection_cap(Some(&proxy)), None);
        let s = load(&[
            ("TOKEND__SERVER__MAX_CONNECTIONS_PER_IP", "0"),
            ("TOKEND__SERVER__ADMIN_ADDRESS", " 127.0.0.1:9000 "),
        ])
        .unwrap();
        assert_eq!(s.server.connection_cap(None), None);
        assert_eq!(s.server.admin_address(), Some("127.0.0.1:9000"));
        for (name, bad) in [
            ("TOKEND__SERVER__REQUEST_TIMEOUT_MS", "0"),
            ("TOKEND__SERVER__REQUEST_TIMEOUT_MS", "600001"),
            ("TOKEND__SERVER__ADMIN_ADDRESS", "localhost"),
            ("TOKEND__SERVER__ADMIN_ADDRESS", ":9000"),
        ] {
            assert!(load(&[(name, bad)]).is_err(), "{name}={bad}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(load(&[("TOKEND__PASSWORD__BCRYPT_COST", "3")]).is_err());
        assert!(load(&[("TOKEND_PROFILE", "staging")]).is_err());
        assert!(load(&[("TOKEND__JWT__ACCESS_TTL_SECS", "0")]).is_err());
        assert!(load(&[("TOKEND__JWT__SESSION_MAX_AGE_SECS", "9223372036854775807")]).is_err());
    }

    #[test]
    fn access_tokens_must_outlive_the_replay_grace() {
        for (access, grace) in [("5", "10"), ("10", "10"), ("1", "1")] {
            let err = load(&[
                ("TOKEND__JWT__ACCESS_TTL_SECS", access),
                ("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", grace),
            ])
            .expect_err("refused");
            let message = err.to_string();
            assert!(
                message.contains(&format!(
                    "TOKEND__JWT__ACCESS_TTL_SECS ({access}) must be longer than \
                     TOKEND__JWT__REFRESH_REUSE_GRACE_SECS ({grace})"
                )) && message.contains("or set it to 0"),
                "{message}"
            );
        }
        // Longer than the grace, or no replays at all: accepted.
        for (access, grace) in [("11", "10"), ("2", "1"), ("1", "0"), ("5", "0")] {
            let s = load(&[
                ("TOKEND__JWT__ACCESS_TTL_SECS", access),
                ("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", grace),
            ])
            .unwrap_or_else(|e| panic!("{access}/{grace}: {e}"));
            assert_eq!(s.jwt.access_ttl_secs.to_string(), access);
        }
        // Without rotation there are no replays: the grace does not matter.
        let s = load(&[
            ("TOKEND__JWT__ACCESS_TTL_SECS", "5"),
            ("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", "10"),
            ("TOKEND__JWT__ROTATE_REFRESH_TOKENS", "false"),
        ])
        .unwrap_or_else(|e| panic!("rotation off: {e}"));
        assert!(!s.jwt.rotate_refresh_tokens);
    }

    #[test]
    fn string_settings_are_typed_at_load() {
        let s = load(&[
            ("TOKEND__JWT__ALGORITHM", "eddsa"),
            ("TOKEND__JWT__VERIFICATION_KEY_FILES", " a.pem, ,b.pem "),
            ("TOKEND__INTROSPECTION__CLIENTS", "billing:s1, orders:s2"),
            ("TOKEND__RATE_LIMIT__CLIENT_IP_HEADER", "X-Forwarded-For"),
            ("TOKEND__LOG__FORMAT", "json"),
            ("TOKEND__CORS__ALLOWED_ORIGINS", "https://a.example,*"),
        ])
        .unwrap();
        assert_eq!(s.jwt.algorithm, SigningAlgorithm::EdDsa);
        assert_eq!(
            s.jwt.verification_key_files,
            vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        let clients: Vec<_> = s
            .introspection
            .clients
            .iter()
            .map(|c| (c.id.as_str(), c.secret.expose()))
            .collect();
        assert_eq!(clients, [("billing", "s1"), ("orders", "s2")]);
        assert_eq!(
            s.rate_limit.client_ip_header,
            Some(HeaderName::from_static("x-forwarded-for"))
        );
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.cors.allowed_origins, Origins::Any);
        let dump = format!("{s:?}");
        assert!(!dump.contains("s1") && !dump.contains("s2"), "{dump}");
        let s = load(&[]).unwrap();
        assert_eq!(s.jwt.algorithm, SigningAlgorithm::Hs256);
        assert!(s.jwt.verification_key_files.is_empty());
        assert!(s.introspection.clients.is_empty());
        assert_eq!(s.rate_limit.client_ip_header, None);
        assert_eq!(s.log.format, LogFormat::Text);
    }

    #[test]
    fn bad_string_settings_name_the_setting() {
        for (name, value, message) in [
            (
                "TOKEND__JWT__ALGORITHM",
                "HS512",
                "jwt.algorithm: `HS512` is not one of HS256, EdDSA, RS256",
            ),
            (
                "TOKEND__LOG__FORMAT",
                "JSON",
                "log.format must be `text` or `json`, not `JSON`",
            ),
            (
                "TOKEND__INTROSPECTION__CLIENTS",
                "billing:s1,orders",
                "introspection.clients must be a comma list of id:secret pairs",
            ),
            (
                "TOKEND__RATE_LIMIT__CLIENT_IP_HEADER",
                "X Forwarded",
                "rate_limit.client_ip_header `X Forwarded` is not a header name",
            ),
            (
                "TOKEND__CORS__ALLOWED_ORIGINS",
                "https://a.example,a.example",
                "cors.allowed_origins: `a.example` is not an origin",
            ),
        ] {
            let err = load(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(message), "{name}={value}: {err}");
        }
        // A malformed client entry is not echoed: it may hold a secret.
        let err = load(&[("TOKEND__INTROSPECTION__CLIENTS", "billing-secret-xyz")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret-xyz"), "{err}");
    }
}
