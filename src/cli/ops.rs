//! Serving and operating: `serve`, `migrate`, `healthcheck`, `purge`.

use tokend::config::Settings;
use tokend::startup::Application;
use tokend::storage::Database;

use tokend::clock::unix_now;

use super::database;

pub(super) fn serve(settings: Settings) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await?;
        Ok(())
    })
}

pub(super) fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = Database::new(&settings.database)?;
    let applied = db.migrate_blocking()?;
    println!("applied {applied} migration(s)");
    Ok(())
}

pub(super) fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
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

pub(super) fn purge(settings: &Settings) -> anyhow::Result<()> {
    let db = database(settings)?;
    let at = unix_now();
    let horizon = tokend::startup::purge_horizon(settings, at);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outbox_before = settings.email.purge_before(at);
    let audit_before = settings.audit.purge_before(at);
    let total = runtime.block_on(db.purge(
        at,
        horizon,
        outbox_before,
        audit_before,
        settings.purge.batch_size,
        |batch| println!("purged a batch: {batch}"),
    ))?;
    println!("purge done: {total} removed");
    Ok(())
}
