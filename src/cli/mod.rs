//! The command line: `tokend <command>`. Each command is a thin shell over
//! the library; what it shares with the HTTP API (account administration)
//! goes through the same use cases (`tokend::service`).

mod audit;
mod clients;
mod email;
mod import;
mod keys;
mod ops;
mod users;

use clap::{Parser, Subcommand};
use tokend::config::Settings;
use tokend::storage::Database;

pub use keys::offline_keys;

/// tokend: users and JWT access/refresh tokens, simplejwt-compatible.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Exit 0 when the local server answers /healthz (for container
    /// HEALTHCHECKs; needs no curl in the image).
    Healthcheck,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Delete expired refresh tokens, dead sessions, old outbox messages
    /// and audit events now, in batches.
    Purge,
    /// Print the effective configuration (secrets masked) and exit 0 when it
    /// is valid.
    CheckConfig,
    /// Signing keys: generate, derive the public key, show the JWKS.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage groups (Django's auth groups; `groups` in access tokens).
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// OAuth 2 clients: services with identities of their own.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// The audit trail (security events), newest first: one line per
    /// event, or with --json one JSON object per line.
    Audit {
        /// A username or user id.
        #[arg(long)]
        user: Option<String>,
        /// An event name, e.g. login_failed.
        #[arg(long)]
        event: Option<String>,
        /// Only events at or after this time: RFC 3339 or unix seconds.
        #[arg(long)]
        since: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// E-mail delivery: queue a test message, show the outbox.
    #[command(subcommand)]
    Email(EmailCommand),
}

#[derive(Subcommand)]
pub enum EmailCommand {
    /// Queue a test message to ADDRESS in the outbox; a running `tokend
    /// serve` delivers it (within email.poll_interval_ms).
    Test { address: String },
    /// Print the outbox's e-mail counts: queued, sent, dead.
    Status,
}

#[derive(Subcommand)]
pub enum ClientsCommand {
    /// Create a client; prints {"client_id", "client_secret"} as one JSON
    /// line (the secret is shown once).
    Create {
        name: String,
        /// A scope it may ask for (repeat for more).
        #[arg(long, required = true)]
        scope: Vec<String>,
        /// The `aud` of its tokens.
        #[arg(long)]
        audience: Option<String>,
        /// Lifetime of its tokens, seconds (default: jwt.access_ttl_secs).
        #[arg(long)]
        ttl: Option<i64>,
        /// Its public key (PEM, EdDSA or RSA) for private_key_jwt.
        #[arg(long)]
        public_key_file: Option<std::path::PathBuf>,
    },
    /// List clients: id, name, scopes, state.
    List,
    /// A new secret (printed as at creation); the old one keeps working for
    /// --overlap seconds.
    RotateSecret {
        /// Client id or name.
        client: String,
        #[arg(long, default_value_t = 3600)]
        overlap: i64,
    },
    /// Refuse the client's token requests and its tokens.
    Disable {
        client: String,
    },
    Enable {
        client: String,
    },
    /// Delete the client; its tokens stop working.
    Delete {
        client: String,
    },
}

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// Create a group (at most 150 characters, no surrounding spaces).
    Create { name: String },
    /// List groups: name, number of members.
    List,
    /// Delete a group and its memberships.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Print a new signing key: HS256 a 256-bit key as 64 hex characters,
    /// EdDSA/RS256 a PKCS#8 PEM private key (its kid goes to stderr).
    Generate {
        /// HS256, EdDSA or RS256; default: the configured jwt.algorithm.
        #[arg(long)]
        algorithm: Option<String>,
    },
    /// Print the public key (PEM) of a private key read from FILE, or from
    /// stdin; its kid goes to stderr.
    Public { file: Option<std::path::PathBuf> },
    /// Print the JWK Set of the configured keys (what
    /// /.well-known/jwks.json serves).
    Jwks,
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from the first line of stdin.
    Create { username: String },
    /// List users: id, username, active.
    List,
    /// Deactivate a user and revoke all their sessions: every token fails.
    Disable { username: String },
    /// Reactivate a user (they log in again; old sessions stay revoked).
    Enable { username: String },
    /// Delete a user with all their sessions and tokens.
    Delete { username: String },
    /// Set a new password (first line of stdin) and revoke all sessions.
    SetPassword { username: String },
    /// Add a user to a group (shows in access tokens from their next
    /// refresh when jwt.extra_claims has `groups`).
    AddGroup { username: String, group: String },
    /// Remove a user from a group.
    RemoveGroup { username: String, group: String },
    /// Grant (true) or withdraw (false) Django's is_staff.
    SetStaff {
        username: String,
        #[arg(action = clap::ArgAction::Set)]
        value: bool,
    },
    /// Grant (true) or withdraw (false) Django's is_superuser.
    SetSuperuser {
        username: String,
        #[arg(action = clap::ArgAction::Set)]
        value: bool,
    },
    /// Import users from a Django `auth_user` table (SQLite path/URL or
    /// postgres:// URL), keeping ids and password hashes (pbkdf2_sha256,
    /// bcrypt_sha256, bcrypt); those users log in with their old passwords
    /// and are re-hashed on success. Existing usernames are skipped, so it
    /// can be re-run. Rows are refused, reported on stderr and counted in
    /// the summary, never renumbered: a Django id that belongs to a
    /// different user here (the old service's tokens for that id must never
    /// name someone else), and a username registration would refuse. Every
    /// other row is imported, and the exit status is non-zero when any row
    /// was refused.
    ImportDjango {
        /// The Django database URL (read only).
        #[arg(long = "from")]
        from: String,
        /// Users per batch (progress is printed after each).
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
}

/// Runs a command that needs the configuration.
pub fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => ops::serve(settings),
        Command::Migrate => ops::migrate(&settings),
        Command::Healthcheck => ops::healthcheck(&settings),
        Command::Users(command) => users::users(&settings, command),
        Command::Purge => ops::purge(&settings),
        Command::CheckConfig => keys::check_config(&settings),
        Command::Keys(command) => keys::keys(&settings, command),
        Command::Groups(command) => users::groups(&settings, command),
        Command::Clients(command) => clients::clients(&settings, command),
        Command::Email(command) => email::email(&settings, command),
        Command::Audit {
            user,
            event,
            since,
            limit,
            json,
        } => audit::audit(
            &settings,
            audit::Filters {
                user,
                event,
                since,
                limit,
                json,
            },
        ),
    }
}

/// The database, migrated, for command-line tools.
fn database(settings: &Settings) -> anyhow::Result<Database> {
    // Its audit rows queue their webhooks like the server's.
    let db = Database::new(&settings.database)?
        .with_webhooks(tokend::webhooks::Targets::from_settings(&settings.webhooks));
    db.migrate_blocking()?;
    Ok(db)
}
