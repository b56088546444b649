use clap::{Parser, Subcommand};

use anyhow::{bail, Context};
use tokend::auth::credentials::{NewPassword, NewUsername};
use tokend::auth::password::hash_password;
use tokend::config::Settings;
use tokend::startup::Application;
use tokend::storage::sessions::{self, RevokeReason};
use tokend::storage::users::{self as user_store, CreateUser};
use tokend::storage::Database;

/// tokend: users and JWT access/refresh tokens, simplejwt-compatible.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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
    /// Delete expired refresh tokens and dead sessions now, in batches.
    Purge,
    /// Print the effective configuration (secrets masked) and exit 0 when it
    /// is valid.
    CheckConfig,
    /// Signing keys: generate, derive the public key, show the JWKS.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
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
enum UsersCommand {
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // Making or inspecting a key needs no configuration (e.g. generating
    // the key a production configuration still lacks).
    if let Command::Keys(
        keys_command @ (KeysCommand::Public { .. } | KeysCommand::Generate { .. }),
    ) = &command
    {
        return match offline_keys(keys_command) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tokend: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("tokend: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    tokend::telemetry::init(&settings.log, !matches!(command, Command::Serve));
    let result = match command {
        Command::Serve => serve(settings),
        Command::Migrate => migrate(&settings),
        Command::Healthcheck => healthcheck(&settings),
        Command::Users(command) => users(&settings, command),
        Command::Purge => purge(&settings),
        Command::CheckConfig => check_config(&settings),
        Command::Keys(command) => keys(&settings, command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tokend: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check_config(settings: &Settings) -> anyhow::Result<()> {
    println!("{settings:#?}");
    println!(
        "database: {}",
        tokend::config::redact_url(settings.database.url.expose())
    );
    // Load the keys when they exist (never generate one from here).
    if !settings.jwt.signing_key.is_empty() || settings.signing_key_path().exists() {
        let ring = tokend::startup::existing_keys(settings)?;
        println!(
            "signing key: {} kid={}",
            settings.signing_algorithm()?.name(),
            ring.signing_kid().unwrap_or("-")
        );
    } else {
        println!(
            "signing key: none yet ({} will be generated on first start)",
            settings.signing_key_path().display()
        );
    }
    println!("configuration is valid (profile {:?})", settings.profile);
    Ok(())
}

fn keys(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Jwks => {
            println!("{}", tokend::startup::existing_keys(settings)?.jwks_json());
        }
        other => offline_keys(&other)?,
    }
    Ok(())
}

fn generate_key(algorithm: tokend::auth::keys::SigningAlgorithm) -> anyhow::Result<()> {
    use tokend::auth::keys::{self, KeyMaterial};
    let key = keys::generate(algorithm)?;
    println!("{}", key.trim_end());
    if let Some(kid) = KeyMaterial::signing(algorithm, &key)?.kid() {
        eprintln!("kid: {kid}");
    }
    Ok(())
}

/// The key commands that need no configuration.
fn offline_keys(command: &KeysCommand) -> anyhow::Result<()> {
    use tokend::auth::keys::{self, KeyMaterial, SigningAlgorithm};
    match command {
        KeysCommand::Generate { algorithm } => {
            // Explicit, else the configured one (even when the rest of the
            // configuration is not valid yet), else HS256.
            let algorithm = match algorithm {
                Some(name) => SigningAlgorithm::parse(name)?,
                None => match Settings::load() {
                    Ok(settings) => settings.signing_algorithm()?,
                    Err(e) => anyhow::bail!(
                        "cannot read the configured algorithm ({e}); pass --algorithm HS256|EdDSA|RS256"
                    ),
                },
            };
            generate_key(algorithm)?;
        }
        KeysCommand::Public { file } => {
            let text = match file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                None => std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?,
            };
            let public = keys::public_pem(&text)?;
            print!("{public}");
            if let Some(kid) = KeyMaterial::verification(&public, SigningAlgorithm::EdDsa)?.kid() {
                eprintln!("kid: {kid}");
            }
        }
        KeysCommand::Jwks => anyhow::bail!("`keys jwks` needs the configuration"),
    }
    Ok(())
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await?;
        Ok(())
    })
}

fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = Database::new(&settings.database)?;
    let applied = db.migrate_blocking()?;
    println!("applied {applied} migration(s)");
    Ok(())
}

fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let host = match settings.server.host.as_str() {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" => "::1",
        other => other,
    };
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(host, settings.server.port))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {host}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        anyhow::bail!("unhealthy: {}", reply.lines().next().unwrap_or("no answer"))
    }
}

fn now() -> i64 {
    tokend::routes::unix_now()
}

/// The database, migrated, for command-line tools.
fn database(settings: &Settings) -> anyhow::Result<Database> {
    let db = Database::new(&settings.database)?;
    db.migrate_blocking()?;
    Ok(db)
}

fn read_password() -> anyhow::Result<NewPassword> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let value = line.trim();
    if value.is_empty() {
        bail!("no password on stdin (pipe it in: echo 'secret' | tokend users …)");
    }
    NewPassword::parse(value)
        .map_err(|problems| anyhow::anyhow!("password: {}", problems.join(" ")))
}

fn find_user(db: &Database, username: &str) -> anyhow::Result<user_store::UserRecord> {
    let name = username.to_owned();
    db.run_blocking(move |conn| user_store::find_by_username(conn, &name))?
        .with_context(|| format!("no user named {username:?}"))
}

fn users(settings: &Settings, command: UsersCommand) -> anyhow::Result<()> {
    let db = database(settings)?;
    match command {
        UsersCommand::Create { username } => {
            let name = NewUsername::parse(username.trim())
                .map_err(|problems| anyhow::anyhow!("username: {}", problems.join(" ")))?;
            let hash = hash_password(read_password()?.expose(), settings.password.bcrypt_cost)?;
            match db.run_blocking(|conn| user_store::create(conn, name.as_str(), &hash, now()))? {
                CreateUser::Created { id } => println!("created user {} (id {id})", name.as_str()),
                CreateUser::UsernameTaken => {
                    bail!("a user named {:?} already exists", name.as_str())
                }
            }
        }
        UsersCommand::List => {
            for user in db.run_blocking(user_store::list)? {
                let state = if user.is_active { "active" } else { "disabled" };
                println!("{}\t{}\t{state}", user.id, user.username);
            }
        }
        UsersCommand::Disable { username } => {
            let user = find_user(&db, &username)?;
            let revoked = db.run_blocking(|conn| {
                user_store::set_active(conn, user.id, false)?;
                sessions::revoke_all_for_user(
                    conn,
                    user.id,
                    None,
                    RevokeReason::AccountDisabled,
                    now(),
                )
            })?;
            println!("disabled {username}; {revoked} session(s) revoked");
        }
        UsersCommand::Enable { username } => {
            let user = find_user(&db, &username)?;
            db.run_blocking(|conn| user_store::set_active(conn, user.id, true))?;
            println!("enabled {username}");
        }
        UsersCommand::Delete { username } => {
            let user = find_user(&db, &username)?;
            db.run_blocking(|conn| user_store::delete(conn, user.id))?;
            println!("deleted {username} with all their sessions");
        }
        UsersCommand::ImportDjango { from, batch } => import_django(&db, &from, batch)?,
        UsersCommand::SetPassword { username } => {
            let user = find_user(&db, &username)?;
            let hash = hash_password(read_password()?.expose(), settings.password.bcrypt_cost)?;
            let revoked = db.run_blocking(|conn| {
                user_store::change_password(conn, user.id, &hash, None, now())
            })?;
            println!("password of {username} set; {revoked} session(s) revoked");
        }
    }
    Ok(())
}

/// Rows of an import: why a row was refused is reported per row; the
/// summary counts each outcome.
#[derive(Default)]
struct ImportCounts {
    read: u64,
    imported: u64,
    skipped: u64,
    id_taken: u64,
    bad_username: u64,
    unusable: u64,
}

fn import_django(db: &Database, from: &str, batch: i64) -> anyhow::Result<()> {
    use tokend::storage::django;
    use tokend::storage::users::ImportUser;
    let mut source = django::open(from).with_context(|| {
        format!(
            "cannot open the Django database {}",
            tokend::config::redact_url(from)
        )
    })?;
    let total = django::count(&mut source).context("cannot read auth_user")?;
    // Ids up to Django's highest are Django's: registrations during and
    // after the import get larger ones.
    let django_max = django::max_id(&mut source)?;
    db.run_blocking(|conn| user_store::reserve_ids(conn, django_max))?;
    let mut counts = ImportCounts::default();
    let mut after = 0;
    loop {
        let page = django::page(&mut source, after, batch.max(1))?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for user in page {
            counts.read += 1;
            // As registration: a name it would refuse (control characters,
            // spaces, too long, not NFKC) would reach listings and logs.
            match NewUsername::parse(&user.username) {
                Ok(name) if !name.as_str().is_empty() && name.as_str() == user.username => {}
                _ => {
                    counts.bad_username += 1;
                    eprintln!(
                        "import-django: id {} refused: invalid username \"{}\"",
                        user.id,
                        user.username.escape_debug().take(200).collect::<String>()
                    );
                    continue;
                }
            }
            let outcome = db.run_blocking(|conn| {
                user_store::import(
                    conn,
                    i64::from(user.id),
                    &user.username,
                    &user.password,
                    user.is_active,
                    now(),
                )
            })?;
            match outcome {
                ImportUser::Imported => {
                    counts.imported += 1;
                    if !tokend::auth::password::is_checkable_hash(&user.password) {
                        counts.unusable += 1;
                    }
                }
                ImportUser::IdTaken => {
                    counts.id_taken += 1;
                    eprintln!(
                        "import-django: id {} refused: it belongs to another user here; {:?} not imported",
                        user.id, user.username
                    );
                }
                ImportUser::UsernameTaken => counts.skipped += 1,
            }
        }
        eprintln!("import-django: {}/{total} read", counts.read);
    }
    // Django users created during the import may have larger ids.
    let highest = django_max.max(i64::from(after));
    db.run_blocking(|conn| user_store::advance_id_sequence(conn, highest))?;
    let c = &counts;
    println!(
        "import-django done: {} read, {} imported with their ids, {} skipped (username exists), \
         {} refused (id belongs to another user), {} refused (invalid username)",
        c.read, c.imported, c.skipped, c.id_taken, c.bad_username
    );
    if c.unusable > 0 {
        println!(
            "{} imported user(s) have a password hash tokend cannot check (unusable, \
             argon2, scrypt, ...): they need `tokend users set-password`",
            c.unusable
        );
    }
    if c.id_taken + c.bad_username > 0 {
        anyhow::bail!(
            "{} row(s) refused (see above): fix them in either database and re-run",
            c.id_taken + c.bad_username
        );
    }
    Ok(())
}

fn purge(settings: &Settings) -> anyhow::Result<()> {
    let db = database(settings)?;
    let at = now();
    let horizon = tokend::startup::purge_horizon(settings, at);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let total = runtime.block_on(db.purge(at, horizon, settings.purge.batch_size, |batch| {
        println!(
            "purged a batch: {} refresh token(s), {} session(s)",
            batch.refresh_tokens, batch.sessions
        );
    }))?;
    println!(
        "purge done: {} refresh token(s), {} session(s) removed",
        total.refresh_tokens, total.sessions
    );
    Ok(())
}
