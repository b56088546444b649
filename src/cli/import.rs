//! `tokend users import-django`: users from a Django `auth_user` table,
//! with their flags, dates and groups.

use anyhow::Context;
use tokend::auth::credentials::{GroupName, NewUsername};
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
    without_email: u64,
    groups: u64,
    bad_group: u64,
    memberships: u64,
}

/// Django's groups (created here when missing), then the memberships of
/// the users imported with their Django id (now or by an earlier run;
/// never a namesake registered here). Re-runs add what is missing and
/// remove nothing.
fn import_groups(
    db: &Database,
    source: &mut tokend::storage::DbConnection,
    batch: i64,
    counts: &mut ImportCounts,
) -> anyhow::Result<()> {
    use tokend::storage::{django, groups};
    let names = django::group_names(source).context("cannot read auth_group")?;
    let mut valid = std::collections::HashSet::new();
    for name in names {
        match GroupName::parse(&name) {
            Ok(group) => {
                if db.run_blocking(|conn| groups::create(conn, group.as_str()))?
                    == groups::CreateGroup::Created
                {
                    counts.groups += 1;
                }
                valid.insert(name);
            }
            Err(problem) => {
                counts.bad_group += 1;
                eprintln!(
                    "import-django: group \"{}\" refused: {problem}",
                    name.escape_debug().take(200).collect::<String>()
                );
            }
        }
    }
    let mut after = 0;
    loop {
        let page = django::memberships(source, after, batch.max(1))
            .context("cannot read auth_user_groups")?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (_, user_id, username, group) in page {
            if !valid.contains(&group) {
                continue;
            }
            if db.run_blocking(|conn| {
                user_store::import_membership(conn, i64::from(user_id), &username, &group)
            })? {
                counts.memberships += 1;
            }
        }
    }
    Ok(())
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
            // An address tokend would refuse (Django's field is free text
            // to the database) is left out and reported: it could never be
            // looked up by a reset.
            let email = match user.email.trim() {
                "" => None,
                text => match tokend::auth::email::Email::parse(text) {
                    Ok(email) => Some(email),
                    Err(_) => {
                        counts.without_email += 1;
                        eprintln!(
                            "import-django: id {} imported without its e-mail address: not a valid address",
                            user.id
                        );
                        None
                    }
                },
            };
            let imported = user_store::ImportedUser {
                id: i64::from(user.id),
                username: &user.username,
                password_hash: &user.password,
                email: email.as_ref().map(tokend::auth::email::Email::as_str),
                email_verified: user.email_verified,
                first_name: &user.first_name,
                last_name: &user.last_name,
                is_active: user.is_active,
                is_staff: user.is_staff,
                is_superuser: user.is_superuser,
                last_login: user.last_login,
                date_joined: user.date_joined.unwrap_or_else(unix_now),
            };
            let outcome = db.run_blocking(|conn| user_store::import(conn, &imported))?;
            if outcome == ImportUser::ImportedWithoutEmail {
                counts.without_email += 1;
                eprintln!(
                    "import-django: id {} imported without its e-mail address: another user here has it",
                    user.id
                );
            }
            match outcome {
                ImportUser::Imported | ImportUser::ImportedWithoutEmail => {
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
                ImportUser::UsernameTaken | ImportUser::AlreadyImported => counts.skipped += 1,
            }
        }
        eprintln!("import-django: {}/{total} read", counts.read);
    }
    // Django users created during the import may have larger ids.
    let highest = django_max.max(i64::from(after));
    db.run_blocking(|conn| user_store::advance_id_sequence(conn, highest))?;
    import_groups(db, &mut source, batch, &mut counts)?;
    let c = &counts;
    println!(
        "import-django done: {} read, {} imported with their ids, {} skipped (username exists), \
         {} refused (id belongs to another user), {} refused (invalid username)",
        c.read, c.imported, c.skipped, c.id_taken, c.bad_username
    );
    if c.without_email > 0 {
        println!(
            "{} user(s) imported without their e-mail address (invalid, or another user has it; see above)",
            c.without_email
        );
    }
    println!(
        "groups: {} created, {} refused (invalid name); {} memberships of imported users",
        c.groups, c.bad_group, c.memberships
    );
    if c.unusable > 0 {
        println!(
            "{} imported user(s) have a password hash tokend cannot check (unusable, \
             argon2, scrypt, ...): they need `tokend users set-password`",
            c.unusable
        );
    }
    let refused = c.id_taken + c.bad_username + c.bad_group;
    if refused > 0 {
        anyhow::bail!(
            "{refused} row(s) refused (see above): fix them in either database and re-run"
        );
    }
    Ok(())
}
