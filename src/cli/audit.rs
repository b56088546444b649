//! `tokend audit`: the audit trail, newest first.

use tokend::config::Settings;
use tokend::service::audit::EventKind;
use tokend::storage::audit::{self, AuditQuery};

use super::database;

pub(super) struct Filters {
    pub user: Option<String>,
    pub event: Option<String>,
    pub since: Option<String>,
    pub limit: i64,
    pub json: bool,
}

pub(super) fn audit(settings: &Settings, f: Filters) -> anyhow::Result<()> {
    if f.limit < 1 {
        anyhow::bail!("--limit must be at least 1");
    }
    let event = match &f.event {
        Some(e) => Some(
            e.parse::<EventKind>()
                .map_err(anyhow::Error::msg)?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let since = f.since.as_deref().map(parse_time).transpose()?;
    let db = database(settings)?;
    let user = match f.user {
        None => None,
        Some(u) => Some(db.run_blocking(move |conn| audit::user_filter(conn, &u))?),
    };
    let query = AuditQuery {
        user,
        event,
        since,
        before_id: None,
        limit: f.limit,
    };
    let page = db.run_blocking(|conn| audit::list(conn, &query))?;
    for e in &page.events {
        if f.json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            println!(
                "{}  {:<22} user={} name={} ip={} session={} client={} request={} ua={:?} {}",
                format_time(e.at),
                e.event,
                e.user_id.map_or_else(|| "-".into(), |id| id.to_string()),
                opt(&e.username),
                opt(&e.ip),
                opt(&e.session_id),
                opt(&e.client_id),
                opt(&e.request_id),
                e.user_agent.as_deref().unwrap_or("-"),
                e.detail.as_deref().unwrap_or(""),
            );
        }
    }
    if !f.json && page.next_cursor.is_some() {
        eprintln!("(more: raise --limit or narrow with --since/--event/--user)");
    }
    Ok(())
}

/// A unix timestamp (seconds), or an RFC 3339 time (see
/// `service::audit::parse_time`).
pub(super) fn parse_time(text: &str) -> anyhow::Result<i64> {
    tokend::service::audit::parse_time(text).map_err(|e| anyhow::anyhow!("--since: {e}"))
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub(super) fn format_time(at: i64) -> String {
    let (days, secs) = (at.div_euclid(86_400), at.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// Howard Hinnant's algorithm for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_format() {
        assert_eq!(parse_time("1764669600").unwrap(), 1_764_669_600);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_time("2026-12-02T10:00:00Z").unwrap(), 1_796_205_600);
        assert_eq!(
            parse_time("2026-12-02T11:30:00.123+01:30").unwrap(),
            1_796_205_600
        );
        assert_eq!(
            parse_time("2000-02-29T00:00:00-00:00").unwrap(),
            951_782_400
        );
        for bad in [
            "yesterday",
            "2026-12-02",
            "2026-13-02T00:00:00Z",
            "2026-12-02T10:00:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_796_205_600), "2026-12-02T10:00:00Z");
        assert_eq!(format_time(951_782_400 + 86_399), "2000-02-29T23:59:59Z");
    }
}
