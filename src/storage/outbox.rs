//! The outbox table: messages queued in the transaction of the change that
//! caused them.

use diesel::prelude::*;

use super::schema::outbox;
use super::DbConnection;
use crate::mail::Mail;

/// Queues `mail`; call it inside the transaction of the change that causes
/// it, so that both commit or neither does.
pub fn enqueue_mail(
    conn: &mut DbConnection,
    mail: &Mail,
    now: i64,
) -> Result<(), diesel::result::Error> {
    let payload = serde_json::to_string(mail)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    diesel::insert_into(outbox::table)
        .values((
            outbox::kind.eq(crate::mail::KIND),
            outbox::payload.eq(payload),
            outbox::created_at.eq(now),
            outbox::next_attempt_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Queues an internal job of `kind` (e.g. an account mail request, which a
/// worker resolves later) with its JSON payload.
pub fn enqueue_job(
    conn: &mut DbConnection,
    kind: &str,
    payload: &serde_json::Value,
    now: i64,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(outbox::table)
        .values((
            outbox::kind.eq(kind),
            outbox::payload.eq(payload.to_string()),
            outbox::created_at.eq(now),
            outbox::next_attempt_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}
