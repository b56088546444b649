//! `tokend users import-django`: users from a Django `auth_user` table.

use anyhow::Context;
use tokend::auth::credentials::NewUsername;
use tokend::storage::users as user_store;
use tokend::storage::Database;

use tokend::clock::unix_now;

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

pub(super) fn import_django(db: &Database, from: &str, batch: i64) -> anyhow::Result<()> {
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
                    user.last_login,
                    unix_now(),
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
