//! Extra claims of access tokens: what `jwt.extra_claims` selects from the
//! user (Django's fields and groups), and the rules any other source of
//! claims (the claims hook) must follow.

use serde_json::{Map, Value};

/// Claims added to an access token, in the order they are written.
pub type ClaimMap = Map<String, Value>;

/// The user as the claims (and the claims hook) see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub id: i64,
    pub username: String,
    /// `None` when the user has none.
    pub email: Option<String>,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    /// Group names, sorted.
    pub groups: Vec<String>,
}

/// One of the claims `jwt.extra_claims` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraClaim {
    Username,
    Email,
    IsStaff,
    IsSuperuser,
    Groups,
}

impl ExtraClaim {
    pub const ALL: [ExtraClaim; 5] = [
        ExtraClaim::Username,
        ExtraClaim::Email,
        ExtraClaim::IsStaff,
        ExtraClaim::IsSuperuser,
        ExtraClaim::Groups,
    ];

    /// The claim's name in the token (and in `jwt.extra_claims`).
    pub fn name(self) -> &'static str {
        match self {
            ExtraClaim::Username => "username",
            ExtraClaim::Email => "email",
            ExtraClaim::IsStaff => "is_staff",
            ExtraClaim::IsSuperuser => "is_superuser",
            ExtraClaim::Groups => "groups",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    fn value(self, user: &UserProfile) -> Value {
        match self {
            ExtraClaim::Username => Value::from(user.username.as_str()),
            // Django's `user.email` is "" when there is none: a Django
            // `get_token` override writing it gives "" too.
            ExtraClaim::Email => Value::from(user.email.as_deref().unwrap_or("")),
            ExtraClaim::IsStaff => Value::from(user.is_staff),
            ExtraClaim::IsSuperuser => Value::from(user.is_superuser),
            ExtraClaim::Groups => Value::from(user.groups.clone()),
        }
    }
}

/// Why an access token is being issued (the claims hook's `event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimsEvent {
    Login,
    Refresh,
}

impl ClaimsEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimsEvent::Login => "login",
            ClaimsEvent::Refresh => "refresh",
        }
    }
}

/// The selected claims of `user`, in the configured order.
pub fn profile_claims(user: &UserProfile, selected: &[ExtraClaim]) -> ClaimMap {
    selected
        .iter()
        .map(|c| (c.name().to_owned(), c.value(user)))
        .collect()
}

/// The hook's payload shape of a user.
pub fn profile_json(user: &UserProfile) -> Value {
    serde_json::json!({
        "id": user.id,
        "username": user.username,
        "email": user.email.as_deref().unwrap_or(""),
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": user.groups,
    })
}

/// The first claim of `claims` that only tokend may write (the registered
/// claims it signs itself, and the user-id claim), if any.
pub fn reserved_claim<'a>(claims: &'a ClaimMap, user_id_claim: &str) -> Option<&'a str> {
    claims
        .keys()
        .map(String::as_str)
        .find(|k| super::jwt::RESERVED_CLAIMS.contains(k) || *k == user_id_claim)
}

/// Serialized size limit of an access token's extra claims: tokens travel
/// in headers (proxies commonly refuse headers above 8 KiB) and are stored
/// with each refresh token for replays.
pub const MAX_CLAIMS_BYTES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserProfile {
        UserProfile {
            id: 7,
            username: "alice".into(),
            email: None,
            is_active: true,
            is_staff: true,
            is_superuser: false,
            groups: vec!["editors".into(), "ops".into()],
        }
    }

    #[test]
    fn selected_claims_in_the_configured_order() {
        let claims = profile_claims(
            &alice(),
            &[ExtraClaim::Groups, ExtraClaim::Username, ExtraClaim::Email],
        );
        assert_eq!(
            serde_json::to_string(&claims).unwrap(),
            r#"{"groups":["editors","ops"],"username":"alice","email":""}"#
        );
        let flags = profile_claims(&alice(), &[ExtraClaim::IsStaff, ExtraClaim::IsSuperuser]);
        assert_eq!(
            Value::Object(flags),
            serde_json::json!({"is_staff": true, "is_superuser": false})
        );
        assert!(profile_claims(&alice(), &[]).is_empty());
    }

    #[test]
    fn names_parse_back() {
        for c in ExtraClaim::ALL {
            assert_eq!(ExtraClaim::parse(c.name()), Some(c));
        }
        assert_eq!(ExtraClaim::parse("Groups"), None);
        assert_eq!(ExtraClaim::parse("password"), None);
    }

    #[test]
    fn reserved_claims_are_found() {
        let mut claims = ClaimMap::new();
        claims.insert("tenant".into(), Value::from("acme"));
        assert_eq!(reserved_claim(&claims, "user_id"), None);
        claims.insert("sub".into(), Value::from("1"));
        assert_eq!(reserved_claim(&claims, "user_id"), None);
        assert_eq!(reserved_claim(&claims, "sub"), Some("sub"));
        for name in crate::auth::jwt::RESERVED_CLAIMS
            .into_iter()
            .chain(["user_id"])
        {
            let mut c = ClaimMap::new();
            c.insert(name.into(), Value::Null);
            assert_eq!(reserved_claim(&c, "user_id"), Some(name), "{name}");
        }
    }
}
