//! `tokend clients …`: OAuth 2 clients (service identities), through the
//! same use cases as the admin API (`tokend::service::clients`).

use anyhow::Context;
use tokend::clock::unix_now;
use tokend::config::Settings;
use tokend::service::actor::Acting;
use tokend::service::clients::{self, ClientSpec, Credentials};

use super::{database, ClientsCommand};

/// The one JSON line a script reads: `{"client_id": …, "client_secret": …}`.
fn print_credentials(credentials: &Credentials) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(credentials)?);
    Ok(())
}

pub(super) fn clients(settings: &Settings, command: ClientsCommand) -> anyhow::Result<()> {
    let db = database(settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let by = Acting::cli();
    runtime.block_on(async {
        match command {
            ClientsCommand::Create {
                name,
                scope,
                audience,
                ttl,
                public_key_file,
            } => {
                let public_key = match public_key_file {
                    Some(path) => Some(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    ),
                    None => None,
                };
                let spec = ClientSpec {
                    name,
                    scopes: scope,
                    audience,
                    ttl_secs: ttl,
                    public_key,
                };
                print_credentials(&clients::create(&db, &by, spec, unix_now()).await?)?;
                eprintln!("the secret is shown once: store it now");
            }
            ClientsCommand::List => {
                for c in clients::list(&db).await? {
                    let state = if c.disabled { "disabled" } else { "enabled" };
                    println!("{}\t{}\t{}\t{state}", c.id, c.name, c.scopes);
                }
            }
            ClientsCommand::RotateSecret { client, overlap } => {
                let credentials =
                    clients::rotate_secret(&db, &by, &client, overlap, unix_now()).await?;
                print_credentials(&credentials)?;
                eprintln!("the previous secret keeps working for {overlap} s");
            }
            ClientsCommand::Disable { client } => {
                let c = clients::set_disabled(&db, &by, &client, true, unix_now()).await?;
                println!(
                    "disabled {} ({}); the tokens it holds are refused",
                    c.name, c.id
                );
            }
            ClientsCommand::Enable { client } => {
                let c = clients::set_disabled(&db, &by, &client, false, unix_now()).await?;
                println!("enabled {} ({})", c.name, c.id);
            }
            ClientsCommand::Delete { client } => {
                let c = clients::delete(&db, &by, &client, unix_now()).await?;
                println!("deleted {} ({})", c.name, c.id);
            }
        }
        Ok(())
    })
}
