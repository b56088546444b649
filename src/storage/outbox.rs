//! The outbox table: messages queued in the transaction of the change that
//! caused them.

use diesel::prelude::*;

use super::schema::outbox;
use super::{DbConnection, StorageError};
use crate::mail::Mail;

/// Queues `mail`; call it inside the transaction of the change that causes
/// it, so that both commit or neither does.
pub fn enqueue_mail(
    conn: &mut DbConnection,
    mail: &Mail,
    now: i64,
) -> Result<(), diesel::result::Error> {
    insert_json(conn, crate::mail::KIND, mail, now)
}

/// Queues a webhook; call it inside the transaction that writes its audit
/// row.
pub fn enqueue_webhook(
    conn: &mut DbConnection,
    message: &crate::webhooks::Message,
    now: i64,
) -> Result<(), diesel::result::Error> {
    insert_json(conn, crate::webhooks::KIND, message, now)
}

fn insert_json(
    conn: &mut DbConnection,
    kind: &str,
    value: &impl serde::Serialize,
    now: i64,
) -> Result<(), diesel::result::Error> {
    let payload = serde_json::to_string(value)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    insert(conn, kind, payload, now)
}

/// Queues an internal job of `kind` (e.g. an account mail request, which a
/// worker resolves later) with its JSON payload.
pub fn enqueue_job(
    conn: &mut DbConnection,
    kind: &str,
    payload: &serde_json::Value,
    now: i64,
) -> Result<(), diesel::result::Error> {
    insert(conn, kind, payload.to_string(), now)
}

/// A row of `kind`, due at once.
fn insert(
    conn: &mut DbConnection,
    kind: &str,
    payload: String,
    now: i64,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(outbox::table)
        .values((
            outbox::kind.eq(kind),
            outbox::payload.eq(payload),
            outbox::created_at.eq(now),
            outbox::next_attempt_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// A message leased to this sender until the lease it was claimed with.
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub payload: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub attempts: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub created_at: i64,
}

/// The rows of `kind` that are due and not leased, up to `limit`.
const DUE: &str = "kind = {kind} AND sent_at IS NULL AND dead_at IS NULL \
                   AND next_attempt_at <= {now} \
                   AND (claimed_until IS NULL OR claimed_until <= {now})";

/// Leases up to `limit` due messages of `kind` to the caller until
/// `lease_until`, oldest first. One statement: on PostgreSQL rows another
/// replica is claiming are skipped (`SKIP LOCKED`), and a row claimed by a
/// transaction that committed first is re-checked and left out, so each
/// message goes to exactly one sender; SQLite runs one writer at a time. A
/// sender that dies leaves its rows to be claimed again once the lease ends.
pub fn claim_due(
    conn: &mut DbConnection,
    kind: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<Claimed>, StorageError> {
    use diesel::sql_types::{BigInt, Text};
    let returning = "RETURNING id, payload, attempts, created_at";
    match conn {
        DbConnection::Postgresql(pg) => {
            let due = DUE.replace("{kind}", "$2").replace("{now}", "$3");
            Ok(diesel::sql_query(format!(
                "UPDATE outbox SET claimed_until = $1 WHERE id IN \
                 (SELECT id FROM outbox WHERE {due} ORDER BY id LIMIT $4 \
                 FOR UPDATE SKIP LOCKED) {returning}"
            ))
            .bind::<BigInt, _>(lease_until)
            .bind::<Text, _>(kind)
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(limit)
            .load(pg)?)
        }
        DbConnection::Sqlite(sqlite) => {
            let due = DUE.replace("{kind}", "?2").replace("{now}", "?3");
            Ok(diesel::sql_query(format!(
                "UPDATE outbox SET claimed_until = ?1 WHERE id IN \
                 (SELECT id FROM outbox WHERE {due} ORDER BY id LIMIT ?4) {returning}"
            ))
            .bind::<BigInt, _>(lease_until)
            .bind::<Text, _>(kind)
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(limit)
            .load(sqlite)?)
        }
    }
}

/// Records a delivery (releasing the lease).
pub fn mark_sent(conn: &mut DbConnection, id: i64, now: i64) -> Result<(), StorageError> {
    diesel::update(outbox::table.filter(outbox::id.eq(id)))
        .set((
            outbox::sent_at.eq(now),
            outbox::claimed_until.eq(None::<i64>),
        ))
        .execute(conn)?;
    redact(conn, id)
}

/// Drops the bodies of a mail that is done with (sent or given up): they
/// hold one-time links, which must not outlive their delivery in the table
/// (or its backups). Recipient and subject stay for the operator.
fn redact(conn: &mut DbConnection, id: i64) -> Result<(), StorageError> {
    let row: Option<String> = outbox::table
        .filter(outbox::id.eq(id))
        .filter(outbox::kind.eq(crate::mail::KIND))
        .select(outbox::payload)
        .first(conn)
        .optional()?;
    let Some(payload) = row else {
        return Ok(());
    };
    let redacted = match serde_json::from_str::<Mail>(&payload) {
        Ok(mail) => serde_json::json!({"to": mail.to, "subject": mail.subject, "redacted": true}),
        Err(_) => serde_json::json!({"redacted": true}),
    };
    diesel::update(outbox::table.filter(outbox::id.eq(id)))
        .set(outbox::payload.eq(redacted.to_string()))
        .execute(conn)?;
    Ok(())
}

/// Records a failed attempt: retried at `retry_at`, or given up (dead) now
/// when `None`. `error` is short and never holds the message.
pub fn mark_failed(
    conn: &mut DbConnection,
    id: i64,
    error: &str,
    retry_at: Option<i64>,
    now: i64,
) -> Result<(), StorageError> {
    // Never undoes a delivery recorded by a sender that took the message
    // over after this one's lease ran out.
    let row = outbox::table
        .filter(outbox::id.eq(id))
        .filter(outbox::sent_at.is_null());
    let attempts = outbox::attempts.eq(outbox::attempts + 1);
    let error = outbox::last_error.eq(Some(error));
    let released = outbox::claimed_until.eq(None::<i64>);
    match retry_at {
        Some(at) => diesel::update(row)
            .set((attempts, error, released, outbox::next_attempt_at.eq(at)))
            .execute(conn)?,
        None => {
            let dead = diesel::update(row)
                .set((attempts, error, released, outbox::dead_at.eq(Some(now))))
                .execute(conn)?;
            if dead == 1 {
                redact(conn, id)?;
            }
            dead
        }
    };
    Ok(())
}

/// Messages of `kind` by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Not yet sent nor given up (waiting, being sent, or to be retried).
    pub queued: i64,
    pub sent: i64,
    pub dead: i64,
}

/// Every count, for the operator (`tokend email status`): counting the sent
/// messages reads all of them.
pub fn counts(conn: &mut DbConnection, kind: &str) -> Result<Counts, StorageError> {
    let (queued, dead) = gauges(conn, kind)?;
    let sent = outbox::table
        .filter(outbox::kind.eq(kind.to_owned()))
        .filter(outbox::sent_at.is_not_null())
        .count()
        .get_result(conn)?;
    Ok(Counts { queued, sent, dead })
}

/// (queued, dead) messages of `kind`, for the gauges a sender refreshes
/// every few seconds: both read partial indexes of the few rows concerned,
/// never the sent ones.
pub fn gauges(conn: &mut DbConnection, kind: &str) -> Result<(i64, i64), StorageError> {
    let of_kind = || outbox::table.filter(outbox::kind.eq(kind.to_owned()));
    let queued = of_kind()
        .filter(outbox::sent_at.is_null())
        .filter(outbox::dead_at.is_null())
        .count()
        .get_result(conn)?;
    let dead = of_kind()
        .filter(outbox::dead_at.is_not_null())
        .count()
        .get_result(conn)?;
    Ok((queued, dead))
}

/// Deletes at most `batch` messages sent or given up before `before`; call
/// until it returns zero. Queued messages are never deleted.
pub fn purge_batch(
    conn: &mut DbConnection,
    before: i64,
    batch: i64,
) -> Result<usize, StorageError> {
    let done = outbox::sent_at.le(before).or(outbox::dead_at.le(before));
    let ids: Vec<i64> = outbox::table
        .select(outbox::id)
        .filter(done)
        .limit(batch)
        .load(conn)?;
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(diesel::delete(outbox::table.filter(outbox::id.eq_any(&ids)).filter(done)).execute(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::{Mail, KIND};

    fn mail(n: usize) -> Mail {
        Mail {
            to: format!("u{n}@example.com"),
            subject: "s".into(),
            text: "t".into(),
            html: None,
        }
    }

    #[test]
    fn a_claim_is_a_lease_taken_again_only_after_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::test_database(dir.path());
        db.run_blocking(|conn| {
            for n in 0..3 {
                enqueue_mail(conn, &mail(n), 100)?;
            }
            // Not due yet: never claimed before its time.
            enqueue_mail(conn, &mail(9), 500)?;
            let first = claim_due(conn, KIND, 100, 160, 2)?;
            assert_eq!(first.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2]);
            assert_eq!(first[0].created_at, 100);
            // Leased: the next claim gets the rest only.
            let second = claim_due(conn, KIND, 101, 161, 10)?;
            assert_eq!(second.iter().map(|c| c.id).collect::<Vec<_>>(), [3]);
            assert!(claim_due(conn, KIND, 159, 219, 10)?.is_empty());
            assert!(claim_due(conn, "webhook", 1_000, 1_060, 10)?.is_empty());
            // 1 is sent, 2 failed (retry at 170), the claimer of 3 died.
            mark_sent(conn, 1, 120)?;
            mark_failed(conn, 2, "refused", Some(170), 120)?;
            let after_lease = claim_due(conn, KIND, 162, 222, 10)?;
            assert_eq!(after_lease.iter().map(|c| c.id).collect::<Vec<_>>(), [3]);
            let retried = claim_due(conn, KIND, 170, 230, 10)?;
            assert_eq!(
                retried
                    .iter()
                    .map(|c| (c.id, c.attempts))
                    .collect::<Vec<_>>(),
                [(2, 1)]
            );
            mark_failed(conn, 2, "refused for good", None, 171)?;
            assert!(claim_due(conn, KIND, 10_000, 10_060, 10)?
                .iter()
                .all(|c| c.id == 3 || c.id == 4));
            assert_eq!(
                counts(conn, KIND)?,
                Counts {
                    queued: 2,
                    sent: 1,
                    dead: 1
                }
            );
            // Sent at 120 and dead at 171: only the first is older than 150.
            assert_eq!(purge_batch(conn, 150, 10)?, 1);
            assert_eq!(purge_batch(conn, 150, 10)?, 0);
            assert_eq!(purge_batch(conn, 10_000, 10)?, 1);
            assert_eq!(counts(conn, KIND)?.queued, 2);
            // Webhook rows are purged alike once delivered, and keep their
            // payload (no links in them).
            let event = crate::webhooks::tests::event();
            let message = crate::webhooks::Message::new("http://h/hook", &event);
            enqueue_webhook(conn, &message, 100)?;
            let hook = claim_due(conn, crate::webhooks::KIND, 100, 160, 10)?;
            assert_eq!(hook.len(), 1);
            assert_eq!(
                serde_json::from_str::<crate::webhooks::Message>(&hook[0].payload).unwrap(),
                message
            );
            mark_sent(conn, hook[0].id, 120)?;
            let kept: String = outbox::table
                .filter(outbox::id.eq(hook[0].id))
                .select(outbox::payload)
                .first(conn)?;
            assert_eq!(kept, hook[0].payload);
            assert_eq!(counts(conn, crate::webhooks::KIND)?.sent, 1);
            assert_eq!(purge_batch(conn, 10_000, 10)?, 1);
            assert_eq!(counts(conn, crate::webhooks::KIND)?.sent, 0);
            Ok(())
        })
        .unwrap();
    }
}
