//! Key files: the signing key and the verification keys read from disk,
//! and the development key generated on first start (written atomically,
//! owner-only, never through a planted link).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::auth::jwt::{ClaimPolicy, JwtKeys, TokenLifetimes};
use crate::auth::keys::{self, KeyMaterial, SigningAlgorithm};
use crate::config::{Profile, Settings, MIN_PRODUCTION_KEY_BYTES};

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
    let algorithm = settings.jwt.algorithm;
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
    for path in &settings.jwt.verification_key_files {
        let text = read_key_file(path)?.with_context(|| {
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
            user_id_claim: settings.jwt.user_id_claim.clone(),
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
    // The dev profile generates this file and trusts it from then on: one
    // that another user made or can replace is someone else's key.
    // (Production keys are provisioned, e.g. as root-owned mounted secrets.)
    let read = |path: &Path| {
        if settings.profile == Profile::Production {
            read_key_file(path)
        } else {
            read_own_key_file(path)
        }
    };
    if let Some(key) = read(&path)? {
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
    // The random name cannot be planted ahead (nor left behind by a crashed
    // start with the same pid, as pid 1 in a container).
    let temporary = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        crate::auth::sessions::new_session_id()
    ));
    write_new_key_file(&temporary, &key)?;
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
            read(&path)?.with_context(|| format!("{} is empty", path.display()))
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

/// Writes `key` to a new file at `path`, readable by its owner only. Never
/// opens an existing file or follows a symbolic link planted there.
fn write_new_key_file(path: &Path, key: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let written = file
        .write_all(key.trim_end().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all());
    if written.is_err() {
        // This call created the file: no half-written key stays behind.
        let _ = std::fs::remove_file(path);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}

/// `read_key_file` for a key file tokend trusts because it made it: the
/// file (and a link to it) must belong to this process's user, checked on
/// the opened file so that it cannot be swapped in between.
#[cfg(unix)]
fn read_own_key_file(path: &Path) -> anyhow::Result<Option<String>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let link = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let opened = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    for owner in [link.uid(), opened.uid()] {
        if owner != euid {
            anyhow::bail!(
                "signing key file {} belongs to uid {owner}, not to this process's user \
                 (uid {euid}): another user may know or replace that key. Remove it (a new \
                 key is generated) or chown it to uid {euid}",
                path.display()
            );
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
}

#[cfg(not(unix))]
fn read_own_key_file(path: &Path) -> anyhow::Result<Option<String>> {
    read_key_file(path)
}

fn read_key_file(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
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

    #[cfg(unix)]
    #[test]
    fn the_temporary_key_file_never_follows_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let dangling = dir.path().join("nowhere");
        for target in [&victim, &dangling] {
            let link = dir.path().join("tokend.tmp-planted");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).unwrap();
            let err = format!("{:#}", write_new_key_file(&link, "key").unwrap_err());
            assert!(err.contains("cannot create"), "{err}");
            assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!dangling.exists());
        // Where the temporary file used to be (named after the pid alone,
        // so it could be planted ahead): a link there is left alone too.
        let s = settings(dir.path(), None);
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        let old_name = s
            .signing_key_path()
            .with_extension(format!("tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_name).unwrap();
        let key = resolve_signing_key(&s, SigningAlgorithm::Hs256, true).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::read_to_string(s.signing_key_path())
                .unwrap()
                .trim(),
            key
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: only root can give a file to another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), None);
        let path = s.signing_key_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "k".repeat(64)).unwrap();
        std::os::unix::fs::chown(&path, Some(12345), None).unwrap();
        let err = format!(
            "{:#}",
            resolve_signing_key(&s, SigningAlgorithm::Hs256, true).unwrap_err()
        );
        assert!(err.contains("belongs to uid 12345"), "{err}");
        // Nor through a link of ours to it.
        let theirs = dir.path().join("theirs");
        std::fs::rename(&path, &theirs).unwrap();
        std::os::unix::fs::symlink(&theirs, &path).unwrap();
        let err = format!("{:#}", build_keys(&s).err().unwrap());
        assert!(err.contains("belongs to uid 12345"), "{err}");
        // Ours again: accepted.
        std::os::unix::fs::chown(&theirs, Some(0), None).unwrap();
        assert_eq!(
            resolve_signing_key(&s, SigningAlgorithm::Hs256, true).unwrap(),
            "k".repeat(64)
        );
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
