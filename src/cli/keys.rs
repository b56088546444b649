//! `tokend check-config` and `tokend keys …`.

use anyhow::Context;
use tokend::config::Settings;

use super::KeysCommand;

pub(super) fn check_config(settings: &Settings) -> anyhow::Result<()> {
    println!("{settings:#?}");
    println!(
        "database: {}",
        tokend::config::redact_url(settings.database.url.expose())
    );
    // Load the keys when they exist (never generate one from here).
    if !settings.jwt.signing_key.is_empty() || settings.signing_key_path().exists() {
        let ring = tokend::keyfiles::existing_keys(settings)?;
        println!(
            "signing key: {} kid={}",
            settings.jwt.algorithm.name(),
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

pub(super) fn keys(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Jwks => {
            println!("{}", tokend::keyfiles::existing_keys(settings)?.jwks_json());
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
pub fn offline_keys(command: &KeysCommand) -> anyhow::Result<()> {
    use tokend::auth::keys::{self, KeyMaterial, SigningAlgorithm};
    match command {
        KeysCommand::Generate { algorithm } => {
            // Explicit, else the configured one (even when the rest of the
            // configuration is not valid yet), else HS256.
            let algorithm = match algorithm {
                Some(name) => SigningAlgorithm::parse(name)?,
                None => match Settings::load() {
                    Ok(settings) => settings.jwt.algorithm,
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
