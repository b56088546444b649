//! Telling every serving process that cached state changed (PostgreSQL
//! `LISTEN/NOTIFY`), so that a revocation through one replica or the command
//! line is refused by all the others at once rather than within the cache's
//! TTL.
//!
//! Sending: each write that invalidates cached state calls one of the
//! functions below on its connection, inside the write's transaction, so the
//! notice is delivered if and only if the change commits. On SQLite they do
//! nothing (one process serves a SQLite file; the command line's changes are
//! seen within the TTL).
//!
//! Receiving: `listen` keeps one connection per serving process (outside the
//! pool) listening on the channel and hands each notice over. Missed notices
//! (the connection was lost) are made up for by a flush of the whole cache
//! once listening again; the TTL stays the bound if the listener cannot
//! connect at all.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::DbConnection;

/// The channel every process listens on.
pub const CHANNEL: &str = "tokend_cache";

/// The listener's `application_name`, to find it in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "tokend cache listener";

/// What changed. The text forms (`s:<user_id>:<sid>`, `u:<user_id>`,
/// `c:<client_id>`, `t:<client_id>:<jti>`) are the notices' payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// This session of this user was revoked.
    Session { user_id: i64, sid: String },
    /// Anything about this user: sessions revoked in bulk, disabled,
    /// enabled, deleted.
    User(i64),
    /// This client was disabled or deleted: all its tokens end.
    Client(String),
    /// This service token of this client was revoked.
    ClientToken { client_id: String, jti: String },
}

impl Notice {
    pub fn payload(&self) -> String {
        match self {
            Notice::Session { user_id, sid } => format!("s:{user_id}:{sid}"),
            Notice::User(id) => format!("u:{id}"),
            Notice::Client(id) => format!("c:{id}"),
            Notice::ClientToken { client_id, jti } => format!("t:{client_id}:{jti}"),
        }
    }

    /// `None` for a payload this version does not know (a newer replica's):
    /// the caller flushes rather than guess.
    pub fn parse(payload: &str) -> Option<Notice> {
        let (kind, rest) = payload.split_once(':')?;
        match kind {
            "s" => {
                let (user, sid) = rest.split_once(':')?;
                Some(Notice::Session {
                    user_id: user.parse().ok()?,
                    sid: sid.to_owned(),
                })
            }
            "u" => rest.parse().ok().map(Notice::User),
            "c" => Some(Notice::Client(rest.to_owned())),
            // Client ids never hold a colon (`auth::clients::new_client_id`).
            "t" => {
                let (client_id, jti) = rest.split_once(':')?;
                Some(Notice::ClientToken {
                    client_id: client_id.to_owned(),
                    jti: jti.to_owned(),
                })
            }
            _ => None,
        }
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Session { .. } => "session",
            Notice::User(_) => "user",
            Notice::Client(_) => "client",
            Notice::ClientToken { .. } => "client_token",
        }
    }
}

/// Queues `notice` in the connection's transaction (PostgreSQL: delivered at
/// commit, dropped on rollback; SQLite: nothing).
pub fn send(conn: &mut DbConnection, notice: &Notice) -> Result<(), diesel::result::Error> {
    if let DbConnection::Postgresql(pg) = conn {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(CHANNEL)
            .bind::<Text, _>(notice.payload())
            .execute(pg)?;
    }
    Ok(())
}

pub fn session(
    conn: &mut DbConnection,
    sid: &str,
    user_id: i64,
) -> Result<(), diesel::result::Error> {
    send(
        conn,
        &Notice::Session {
            user_id,
            sid: sid.to_owned(),
        },
    )
}

pub fn user(conn: &mut DbConnection, user_id: i64) -> Result<(), diesel::result::Error> {
    send(conn, &Notice::User(user_id))
}

pub fn client_token(
    conn: &mut DbConnection,
    client_id: &str,
    jti: &str,
) -> Result<(), diesel::result::Error> {
    send(
        conn,
        &Notice::ClientToken {
            client_id: client_id.to_owned(),
            jti: jti.to_owned(),
        },
    )
}

/// Runs `change` (true: it changed a row) in a transaction that also sends
/// `notice` when it did.
pub fn changed_then(
    conn: &mut DbConnection,
    notice: Notice,
    change: impl FnOnce(&mut DbConnection) -> Result<bool, diesel::result::Error>,
) -> Result<bool, super::StorageError> {
    Ok(conn.transaction(|conn| {
        let changed = change(conn)?;
        if changed {
            send(conn, &notice)?;
        }
        Ok::<_, diesel::result::Error>(changed)
    })?)
}

/// What the listener reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A change made anywhere (this process included).
    Notice(Notice),
    /// Listening (again, when `reconnected`): notices sent before may have
    /// been missed, so everything cached must be read anew.
    Listening { reconnected: bool },
    /// A notice this version cannot read (from a newer replica): whatever
    /// it meant, everything cached must be read anew.
    Unknown,
}

/// How often the connection is checked for notices. diesel offers no way to
/// wait on the socket, only a non-blocking read of what has arrived: a
/// notice waits at most this long (plus a round of the runtime).
const POLL: Duration = Duration::from_millis(5);
/// How often the connection is proven alive with a query (a silently lost
/// connection gets no error from polling), and how long that may take.
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection back-off, doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

fn connect(url: &str) -> Result<PgConnection, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    conn.batch_execute(&format!(
        "SET application_name = '{APPLICATION_NAME}'; LISTEN {CHANNEL}"
    ))
    .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Runs `query` on the connection off the runtime, within `PROBE_TIMEOUT`;
/// gives the connection back when it answered.
async fn probe(mut conn: PgConnection) -> Option<PgConnection> {
    let task = tokio::task::spawn_blocking(move || conn.batch_execute("SELECT 1").map(|()| conn));
    match tokio::time::timeout(PROBE_TIMEOUT, task).await {
        Ok(Ok(Ok(conn))) => Some(conn),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "cache listener: the connection failed");
            None
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("cache listener: the connection stopped answering");
            None
        }
    }
}

/// Listens on `url` (PostgreSQL) for as long as the runtime runs, handing
/// every notice and every (re)start of listening to `heard`. Reconnects
/// with back-off after a lost connection.
pub fn listen(url: String, heard: impl Fn(Heard) + Send + Sync + 'static) {
    tokio::spawn(async move {
        let mut reconnected = false;
        let mut backoff = BACKOFF.0;
        loop {
            let target = url.clone();
            let conn = match tokio::task::spawn_blocking(move || connect(&target)).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cache listener cannot connect");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
                // The runtime is shutting down.
                Err(_) => return,
            };
            backoff = BACKOFF.0;
            if reconnected {
                tracing::info!("cache listener: listening again; the cache is flushed");
            }
            // After LISTEN: a change committed from now on is heard, so a
            // flush now misses nothing.
            heard(Heard::Listening { reconnected });
            reconnected = true;
            receive(conn, &heard).await;
        }
    });
}

/// Hands over notices until the connection is lost.
async fn receive(mut conn: PgConnection, heard: &impl Fn(Heard)) {
    let mut probed = tokio::time::Instant::now();
    loop {
        // Reads only what has arrived (libpq's socket is non-blocking).
        for item in conn.notifications_iter() {
            match item {
                Ok(n) => match Notice::parse(&n.payload) {
                    Some(notice) => heard(Heard::Notice(notice)),
                    None => {
                        tracing::warn!(payload = %n.payload, "cache listener: unknown notice; flushing");
                        heard(Heard::Unknown);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cache listener: the connection was lost");
                    return;
                }
            }
        }
        if probed.elapsed() >= PROBE_EVERY {
            match probe(conn).await {
                Some(back) => conn = back,
                None => return,
            }
            probed = tokio::time::Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for notice in [
            Notice::Session {
                user_id: 7,
                sid: "a:b".into(),
            },
            Notice::User(42),
            Notice::Client("svc_x".into()),
            Notice::ClientToken {
                client_id: "svc_x".into(),
                jti: "j:1".into(),
            },
        ] {
            assert_eq!(Notice::parse(&notice.payload()), Some(notice));
        }
        assert_eq!(Notice::parse("s:7:abc").map(|n| n.kind()), Some("session"));
        for unknown in ["", "u", "u:x", "s:7", "s:x:abc", "z:1", "t:svc"] {
            assert_eq!(Notice::parse(unknown), None, "{unknown}");
        }
    }
}
