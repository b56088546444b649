//! `tokend users …`: account administration through the same use cases as
//! the HTTP API (`tokend::service::accounts`).

use anyhow::{bail, Context};
use tokend::auth::credentials::{GroupName, NewPassword, NewUsername};
use tokend::auth::hashing::{HashingPolicy, HashingPool};
use tokend::auth::password_policy::PasswordPolicy;
use tokend::config::Settings;
use tokend::service::accounts::{self, Accounts, LOCAL};
use tokend::service::actor::Acting;
use tokend::service::groups;
use tokend::storage::groups::{CreateGroup, Membership};
use tokend::storage::users::{CreateUser, Flag, UserRecord};

use tokend::clock::unix_now;

use super::{database, GroupsCommand, UsersCommand};

/// The first line of stdin, checked against the password policy.
fn read_password(policy: &PasswordPolicy, username: &str) -> anyhow::Result<NewPassword> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let value = line.trim();
    if value.is_empty() {
        bail!("no password on stdin (pipe it in: echo 'secret' | tokend users …)");
    }
    policy
        .parse(value, Some(username))
        .map_err(|problems| anyhow::anyhow!("password: {}", problems.join(" ")))
}

async fn find_user(acc: &Accounts<'_>, username: &str) -> anyhow::Result<UserRecord> {
    accounts::find(acc, username)
        .await?
        .with_context(|| format!("no user named {username:?}"))
}

pub(super) fn users(settings: &Settings, command: UsersCommand) -> anyhow::Result<()> {
    with_accounts(settings, Admin::Users(command))
}

pub(super) fn groups(settings: &Settings, command: GroupsCommand) -> anyhow::Result<()> {
    with_accounts(settings, Admin::Groups(command))
}

enum Admin {
    Users(UsersCommand),
    Groups(GroupsCommand),
}

fn with_accounts(settings: &Settings, command: Admin) -> anyhow::Result<()> {
    let db = database(settings)?;
    // One hashing thread: the command line hashes one password at most.
    let hashing = HashingPool::new(HashingPolicy {
        cost: settings.password.bcrypt_cost,
        threads: 1,
        nice: 0,
        queue: 1,
        per_client: None,
    });
    // No cache here: servers hear of these changes from the database
    // (PostgreSQL) or see them within their cache's TTL (SQLite).
    let acc = Accounts {
        db: &db,
        hashing: &hashing,
        cache: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            Admin::Users(command) => administer(&acc, &settings.password.policy(), command).await,
            Admin::Groups(command) => administer_groups(&acc, command).await,
        }
    })
}

fn group_name(name: &str) -> anyhow::Result<GroupName> {
    GroupName::parse(name).map_err(|problem| anyhow::anyhow!("group {name:?}: {problem}"))
}

async fn administer_groups(acc: &Accounts<'_>, command: GroupsCommand) -> anyhow::Result<()> {
    match command {
        GroupsCommand::Create { name } => {
            match groups::create(acc, &Acting::cli(), &group_name(&name)?).await? {
                CreateGroup::Created => println!("created group {name}"),
                CreateGroup::Exists => bail!("a group named {name:?} already exists"),
            }
        }
        GroupsCommand::List => {
            for (name, members) in groups::list(acc).await? {
                println!("{name}\t{members}");
            }
        }
        GroupsCommand::Delete { name } => {
            if !groups::delete(acc, &Acting::cli(), &name).await? {
                bail!("no group named {name:?}");
            }
            println!("deleted group {name}");
        }
    }
    Ok(())
}

/// The outcome of a membership change, as the command reports it.
fn membership(outcome: Membership, group: &str, done: &str, already: &str) -> anyhow::Result<()> {
    match outcome {
        Membership::Changed => println!("{done}"),
        Membership::Unchanged => println!("{already}"),
        Membership::NoSuchGroup => {
            bail!("no group named {group:?} (create it: tokend groups create)")
        }
    }
    Ok(())
}

async fn set_flag(
    acc: &Accounts<'_>,
    username: &str,
    flag: Flag,
    value: bool,
) -> anyhow::Result<()> {
    let user = find_user(acc, username).await?;
    if !groups::set_flag(acc, &Acting::cli(), user.id, flag, value).await? {
        bail!("no user named {username:?}");
    }
    let name = match flag {
        Flag::Staff => "is_staff",
        Flag::Superuser => "is_superuser",
    };
    println!("{name} of {username} set to {value}");
    Ok(())
}

async fn administer(
    acc: &Accounts<'_>,
    policy: &PasswordPolicy,
    command: UsersCommand,
) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create { username } => {
            let name = NewUsername::parse(username.trim())
                .map_err(|problems| anyhow::anyhow!("username: {}", problems.join(" ")))?;
            let password = read_password(policy, name.as_str())?;
            let by = Acting::cli();
            let created = accounts::create(
                acc,
                Some(&by),
                &name,
                &password,
                None,
                None,
                (false, false),
                LOCAL,
                unix_now(),
            );
            match created.await? {
                CreateUser::Created { id } => println!("created user {} (id {id})", name.as_str()),
                CreateUser::UsernameTaken | CreateUser::EmailTaken => {
                    bail!("a user named {:?} already exists", name.as_str())
                }
            }
        }
        UsersCommand::List => {
            for user in accounts::list(acc).await? {
                let state = if user.is_active { "active" } else { "disabled" };
                println!("{}\t{}\t{state}", user.id, user.username);
            }
        }
        UsersCommand::Disable { username } => {
            let user = find_user(acc, &username).await?;
            let revoked = accounts::disable(acc, &Acting::cli(), user.id, unix_now())
                .await?
                .with_context(|| format!("no user named {username:?}"))?;
            println!("disabled {username}; {revoked} session(s) revoked");
        }
        UsersCommand::Enable { username } => {
            let user = find_user(acc, &username).await?;
            if !accounts::enable(acc, &Acting::cli(), user.id, unix_now()).await? {
                bail!("no user named {username:?}");
            }
            println!("enabled {username}");
        }
        UsersCommand::Delete { username } => {
            let user = find_user(acc, &username).await?;
            if !accounts::delete(acc, &Acting::cli(), user.id, unix_now()).await? {
                bail!("no user named {username:?}");
            }
            println!("deleted {username} with all their sessions");
        }
        UsersCommand::SetPassword { username } => {
            let user = find_user(acc, &username).await?;
            let password = read_password(policy, &user.username)?;
            let revoked =
                accounts::set_password(acc, &Acting::cli(), user.id, &password, LOCAL, unix_now())
                    .await?;
            println!("password of {username} set; {revoked} session(s) revoked");
        }
        UsersCommand::AddGroup { username, group } => {
            let user = find_user(acc, &username).await?;
            let outcome = groups::set_member(acc, &Acting::cli(), user.id, &group, true).await?;
            membership(
                outcome,
                &group,
                &format!("added {username} to {group}"),
                &format!("{username} is already in {group}"),
            )?;
        }
        UsersCommand::RemoveGroup { username, group } => {
            let user = find_user(acc, &username).await?;
            let outcome = groups::set_member(acc, &Acting::cli(), user.id, &group, false).await?;
            membership(
                outcome,
                &group,
                &format!("removed {username} from {group}"),
                &format!("{username} is not in {group}"),
            )?;
        }
        UsersCommand::SetStaff { username, value } => {
            set_flag(acc, &username, Flag::Staff, value).await?
        }
        UsersCommand::SetSuperuser { username, value } => {
            set_flag(acc, &username, Flag::Superuser, value).await?
        }
        // Blocking calls: nothing else runs on the command line's runtime.
        UsersCommand::ImportDjango { from, batch } => {
            super::import::import_django(acc.db, &from, batch)?
        }
    }
    Ok(())
}
