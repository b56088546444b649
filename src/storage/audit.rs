//! The audit trail's table: batched inserts, the filtered newest-first
//! listing (keyset pagination on `id`) and the retention purge.

use diesel::prelude::*;
use serde::Serialize;

use super::schema::audit_events;
use super::{outbox, DbConnection, StorageError};
use crate::webhooks::{Message, Targets};

/// A row to insert (`id` is the database's).
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = audit_events)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewAuditEvent {
    pub at: i64,
    pub event: String,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub session_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
}

/// A stored event; its JSON form is `tokend audit --json`'s line.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub event: String,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub session_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
}

/// Inserts `rows` in one statement (callers keep batches to a few hundred
/// rows: well within both backends' bind parameter limits) and, in the same
/// transaction, queues in the outbox one webhook per URL of `webhooks` for
/// each row whose event it wants: a webhook exists exactly when its row
/// does.
pub fn insert_batch(
    conn: &mut DbConnection,
    webhooks: &Targets,
    rows: &[NewAuditEvent],
) -> Result<usize, StorageError> {
    if rows.is_empty() {
        return Ok(0);
    }
    // diesel's MultiConnection has no multi-row INSERT: each backend's own.
    let insert = diesel::insert_into(audit_events::table).values(rows);
    if webhooks.is_empty() {
        return Ok(match conn {
            DbConnection::Sqlite(conn) => insert.execute(conn)?,
            DbConnection::Postgresql(conn) => insert.execute(conn)?,
        });
    }
    conn.transaction(|conn| {
        // The rows as written, ids included (in no guaranteed order).
        macro_rules! returning {
            () => {
                diesel::insert_into(audit_events::table)
                    .values(rows)
                    .returning(AuditEvent::as_returning())
            };
        }
        let mut written: Vec<AuditEvent> = match conn {
            DbConnection::Sqlite(conn) => returning!().get_results(conn)?,
            DbConnection::Postgresql(conn) => returning!().get_results(conn)?,
        };
        written.sort_by_key(|event| event.id);
        let now = crate::clock::unix_now();
        for event in &written {
            for url in webhooks.urls_for(&event.event) {
                outbox::enqueue_webhook(conn, &Message::new(url, event), now)?;
            }
        }
        Ok(written.len())
    })
}

/// Whose events to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserFilter {
    /// Events naming this user id.
    Id(i64),
    /// Events of the user with this id, and those naming the username
    /// without an id (e.g. failed logins before the user existed).
    IdOrName(i64, String),
    /// Only a username (no such user now: deleted, or never existed).
    Name(String),
}

/// The filter of `--user` / `?user=`: a number is an id; otherwise a
/// username (and, while that user exists, its id: events of a renamed user
/// still show).
pub fn user_filter(conn: &mut DbConnection, user: &str) -> Result<UserFilter, StorageError> {
    if let Ok(id) = user.parse::<i64>() {
        return Ok(UserFilter::Id(id));
    }
    Ok(match super::users::find_by_username(conn, user)? {
        Some(found) => UserFilter::IdOrName(found.id, user.to_owned()),
        None => UserFilter::Name(user.to_owned()),
    })
}

/// The filters of a listing; every one optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub user: Option<UserFilter>,
    pub event: Option<String>,
    /// Events at or after this instant (unix seconds).
    pub since: Option<i64>,
    /// Keyset cursor: only events with a smaller id (the last id of the
    /// previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// A page of events, newest first, and the cursor of the next page (`None`
/// when this one is the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<i64>,
}

/// Events matching `q`, newest (highest id) first, at most `q.limit`.
pub fn list(conn: &mut DbConnection, q: &AuditQuery) -> Result<AuditPage, StorageError> {
    let limit = q.limit.clamp(1, 10_000);
    let mut query = audit_events::table
        .select(AuditEvent::as_select())
        .order(audit_events::id.desc())
        // One more than asked tells whether another page follows.
        .limit(limit + 1)
        .into_boxed();
    match &q.user {
        Some(UserFilter::Id(id)) => query = query.filter(audit_events::user_id.eq(*id)),
        Some(UserFilter::IdOrName(id, name)) => {
            query = query.filter(
                audit_events::user_id.eq(*id).or(audit_events::user_id
                    .is_null()
                    .and(audit_events::username.eq(name.clone()))),
            )
        }
        Some(UserFilter::Name(name)) => {
            query = query.filter(audit_events::username.eq(name.clone()))
        }
        None => {}
    }
    if let Some(event) = &q.event {
        query = query.filter(audit_events::event.eq(event.clone()));
    }
    if let Some(since) = q.since {
        query = query.filter(audit_events::at.ge(since));
    }
    if let Some(before) = q.before_id {
        query = query.filter(audit_events::id.lt(before));
    }
    let mut events: Vec<AuditEvent> = query.load(conn)?;
    let next_cursor = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(AuditPage {
        events,
        next_cursor,
    })
}

/// Deletes at most `batch` events older than `before` (unix seconds); call
/// until it returns zero.
pub fn purge_batch(
    conn: &mut DbConnection,
    before: i64,
    batch: i64,
) -> Result<usize, StorageError> {
    let ids: Vec<i64> = audit_events::table
        .select(audit_events::id)
        .filter(audit_events::at.lt(before))
        .order(audit_events::id.asc())
        .limit(batch)
        .load(conn)?;
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(diesel::delete(
        audit_events::table
            .filter(audit_events::id.eq_any(&ids))
            .filter(audit_events::at.lt(before)),
    )
    .execute(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: i64, event: &str, user_id: Option<i64>, username: Option<&str>) -> NewAuditEvent {
        NewAuditEvent {
            at,
            event: event.to_owned(),
            user_id,
            username: username.map(str::to_owned),
            session_id: None,
            client_id: None,
            ip: Some("192.0.2.1".into()),
            user_agent: None,
            request_id: None,
            detail: None,
        }
    }

    #[test]
    fn rows_queue_their_webhooks_per_url_and_filter_in_the_same_insert() {
        use crate::storage::schema::outbox;
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::test_database(dir.path());
        let urls = vec!["http://a/h".to_owned(), "http://b/h".to_owned()];
        let targets = Targets::new(urls, vec!["login_failed".into(), "logout".into()]);
        db.run_blocking(move |conn| {
            let rows = vec![
                row(100, "login_failed", None, Some("alice")),
                row(110, "login_succeeded", Some(1), Some("alice")),
                row(120, "logout", Some(1), None),
            ];
            assert_eq!(insert_batch(conn, &targets, &rows)?, 3);
            let queued: Vec<(String, String)> = outbox::table
                .select((outbox::kind, outbox::payload))
                .order(outbox::id)
                .load(conn)?;
            let messages: Vec<Message> = queued
                .iter()
                .map(|(kind, payload)| {
                    assert_eq!(kind, crate::webhooks::KIND);
                    serde_json::from_str(payload).unwrap()
                })
                .collect();
            let summary: Vec<(&str, i64, String)> = messages
                .iter()
                .map(|m| {
                    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
                    let id = body["data"]["id"].as_i64().unwrap();
                    (
                        m.url.as_str(),
                        id,
                        body["type"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            // In the order of the rows, each event once per URL.
            assert_eq!(
                summary,
                [
                    ("http://a/h", 1, "login_failed".to_owned()),
                    ("http://b/h", 1, "login_failed".to_owned()),
                    ("http://a/h", 3, "logout".to_owned()),
                    ("http://b/h", 3, "logout".to_owned()),
                ]
            );
            let ids: std::collections::HashSet<&str> =
                messages.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids.len(), 4);
            // Nowhere to send: the rows only.
            assert_eq!(insert_batch(conn, &Targets::none(), &rows)?, 3);
            let count: i64 = outbox::table.count().get_result(conn)?;
            assert_eq!(count, 4);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn lists_newest_first_with_filters_and_a_cursor_and_purges_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::test_database(dir.path());
        db.run_blocking(|conn| {
            let rows = vec![
                row(100, "login_failed", None, Some("alice")),
                row(110, "login_failed", Some(1), Some("alice")),
                row(120, "login_succeeded", Some(1), Some("alice")),
                row(130, "login_succeeded", Some(2), Some("bob")),
                row(140, "logout", Some(1), None),
            ];
            assert_eq!(insert_batch(conn, &Targets::none(), &rows)?, 5);
            let all = list(
                conn,
                &AuditQuery {
                    limit: 10,
                    ..Default::default()
                },
            )?;
            let ats: Vec<i64> = all.events.iter().map(|e| e.at).collect();
            assert_eq!(ats, [140, 130, 120, 110, 100]);
            assert_eq!(all.next_cursor, None);
            assert_eq!(all.events[4].ip.as_deref(), Some("192.0.2.1"));

            let q = AuditQuery {
                user: Some(UserFilter::IdOrName(1, "alice".into())),
                limit: 2,
                ..Default::default()
            };
            let first = list(conn, &q)?;
            assert_eq!(
                first.events.iter().map(|e| e.at).collect::<Vec<_>>(),
                [140, 120]
            );
            let second = list(
                conn,
                &AuditQuery {
                    before_id: first.next_cursor,
                    ..q.clone()
                },
            )?;
            assert_eq!(
                second.events.iter().map(|e| e.at).collect::<Vec<_>>(),
                [110, 100]
            );
            assert_eq!(second.next_cursor, None);

            let q = AuditQuery {
                user: Some(UserFilter::Id(1)),
                event: Some("login_failed".into()),
                since: Some(105),
                limit: 10,
                ..Default::default()
            };
            assert_eq!(list(conn, &q)?.events.len(), 1);

            assert_eq!(purge_batch(conn, 125, 2)?, 2);
            assert_eq!(purge_batch(conn, 125, 2)?, 1);
            assert_eq!(purge_batch(conn, 125, 2)?, 0);
            let left = list(
                conn,
                &AuditQuery {
                    limit: 10,
                    ..Default::default()
                },
            )?;
            assert_eq!(
                left.events.iter().map(|e| e.at).collect::<Vec<_>>(),
                [140, 130]
            );
            Ok(())
        })
        .unwrap();
    }
}
