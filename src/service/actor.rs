//! Who performs an administrative action, and from where: what every
//! administration use case writes into its audit row (`detail.actor`, the
//! origin), whether it is called by the command line or the admin API.

use serde_json::{Map, Value};

use super::audit::Event;
use super::origin::Origin;
use crate::storage::audit::NewAuditEvent;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// `tokend users|groups|clients …` on the server's host.
    Cli,
    /// A staff user of the admin API.
    User(i64),
    /// A service token with the scope `tokend:admin`.
    Client(String),
}

impl Actor {
    /// `cli`, `user:<id>` or `client:<client_id>`.
    pub fn label(&self) -> String {
        match self {
            Actor::Cli => "cli".to_owned(),
            Actor::User(id) => format!("user:{id}"),
            Actor::Client(id) => format!("client:{id}"),
        }
    }
}

/// The actor and, for a request, its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    pub actor: Actor,
    pub origin: Option<Origin>,
}

impl Acting {
    /// The command line: no request, no address.
    pub fn cli() -> Self {
        Acting {
            actor: Actor::Cli,
            origin: None,
        }
    }

    /// The row of `event`, its detail being `detail` plus `actor`, with the
    /// request's origin.
    pub fn row(&self, event: Event, detail: Value) -> NewAuditEvent {
        let mut detail = match detail {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => Map::from_iter([("value".to_owned(), other)]),
        };
        detail.insert("actor".to_owned(), Value::from(self.actor.label()));
        let event = match &self.origin {
            Some(origin) => event.origin(origin),
            None => event,
        };
        event.detail(Value::Object(detail)).into_row()
    }

    /// An `admin_action` row: `{"action": action, …detail, "actor": …}`.
    pub fn action(&self, at: i64, action: &str, subject: Subject, detail: Value) -> NewAuditEvent {
        let mut map = Map::from_iter([("action".to_owned(), Value::from(action))]);
        if let Value::Object(detail) = detail {
            map.extend(detail);
        }
        let event = Event::new(super::audit::EventKind::AdminAction, at);
        let event = match subject {
            Subject::User(id) => event.user(id),
            Subject::Client(id) => event.client(id),
            Subject::None => event,
        };
        self.row(event, Value::Object(map))
    }
}

/// What an `admin_action` row is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    User(i64),
    Client(&'a str),
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_the_actor_and_the_origin() {
        let origin = Origin::from_ip([192, 0, 2, 1].into())
            .with_user_agent(Some("ua"))
            .with_request_id(Some("r1".into()));
        let by = Acting {
            actor: Actor::User(7),
            origin: Some(origin),
        };
        let row = by.action(5, "user_enabled", Subject::User(3), Value::Null);
        assert_eq!(row.event, "admin_action");
        assert_eq!(row.user_id, Some(3));
        assert_eq!(
            (row.ip.as_deref(), row.user_agent.as_deref()),
            (Some("192.0.2.1"), Some("ua"))
        );
        assert_eq!(row.request_id.as_deref(), Some("r1"));
        let detail: Value = serde_json::from_str(row.detail.as_deref().unwrap_or("")).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({"action": "user_enabled", "actor": "user:7"})
        );
        let cli = Acting::cli().row(
            Event::new(super::super::audit::EventKind::UserDeleted, 1).user(3),
            Value::Null,
        );
        assert_eq!(cli.detail.as_deref(), Some(r#"{"actor":"cli"}"#));
        assert_eq!(cli.ip, None);
        assert_eq!(Actor::Client("abc".into()).label(), "client:abc".to_owned());
    }
}
