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

/// Why an answer of the claims hook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookAnswerError {
    #[error("the answer is not a JSON object with a `claims` object")]
    Shape,
    #[error("the answer sets `{0}`, a claim only tokend writes")]
    Reserved(String),
    #[error("the claims would take {0} bytes serialized, more than {MAX_CLAIMS_BYTES}")]
    TooLarge(usize),
}

/// The claims of an access token once the hook answered `body`: its
/// `claims` merged over the `computed` ones (the hook wins; computed claims
/// keep their place). Other members of the answer are ignored, so hooks can
/// add fields later. Refused when the hook sets a claim only tokend writes,
/// or when the result is over `MAX_CLAIMS_BYTES`.
pub fn merge_hook_answer(
    computed: &ClaimMap,
    body: &[u8],
    user_id_claim: &str,
) -> Result<ClaimMap, HookAnswerError> {
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else {
        return Err(HookAnswerError::Shape);
    };
    let Some(Value::Object(added)) = answer.remove("claims") else {
        return Err(HookAnswerError::Shape);
    };
    if let Some(name) = reserved_claim(&added, user_id_claim) {
        return Err(HookAnswerError::Reserved(name.to_owned()));
    }
    let mut merged = computed.clone();
    merged.extend(added);
    let size = serde_json::to_vec(&merged).map_or(usize::MAX, |v| v.len());
    if size > MAX_CLAIMS_BYTES {
        return Err(HookAnswerError::TooLarge(size));
    }
    Ok(merged)
}

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

    #[test]
    fn hook_answers_merge_over_the_computed_claims() {
        let computed = profile_claims(&alice(), &[ExtraClaim::Username, ExtraClaim::Groups]);
        let merged = merge_hook_answer(
            &computed,
            br#"{"claims": {"groups": ["admins"], "tenant": "acme"}, "later": 1}"#,
            "user_id",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&merged).unwrap(),
            r#"{"username":"alice","groups":["admins"],"tenant":"acme"}"#
        );
        let same = merge_hook_answer(&computed, br#"{"claims": {}}"#, "user_id").unwrap();
        assert_eq!(same, computed);
    }

    #[test]
    fn bad_hook_answers_are_refused() {
        let computed = ClaimMap::new();
        for body in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"claims": []}"#,
            br#"{"claims": "x"}"#,
            br#"{"claims": null}"#,
        ] {
            assert_eq!(
                merge_hook_answer(&computed, body, "user_id"),
                Err(HookAnswerError::Shape),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for (body, claim, user_id_claim) in [
            (r#"{"claims": {"tenant": 1, "exp": 1}}"#, "exp", "user_id"),
            (r#"{"claims": {"user_id": 2}}"#, "user_id", "user_id"),
            (r#"{"claims": {"sub": "2"}}"#, "sub", "sub"),
            (r#"{"claims": {"aud": "x"}}"#, "aud", "user_id"),
        ] {
            assert_eq!(
                merge_hook_answer(&computed, body.as_bytes(), user_id_claim),
                Err(HookAnswerError::Reserved(claim.into())),
                "{body}"
            );
        }
        // "sub" is the hook's to set unless it names the user.
        assert!(merge_hook_answer(&computed, br#"{"claims": {"sub": "2"}}"#, "user_id").is_ok());
        let fits = format!(
            r#"{{"claims": {{"x": "{}"}}}}"#,
            "a".repeat(MAX_CLAIMS_BYTES - 8)
        );
        assert!(merge_hook_answer(&computed, fits.as_bytes(), "user_id").is_ok());
        let over = format!(
            r#"{{"claims": {{"x": "{}"}}}}"#,
            "a".repeat(MAX_CLAIMS_BYTES - 7)
        );
        assert_eq!(
            merge_hook_answer(&computed, over.as_bytes(), "user_id"),
            Err(HookAnswerError::TooLarge(MAX_CLAIMS_BYTES + 1))
        );
    }
}
