//! Username and password rules, as Django's `User` model and DRF's
//! `CharField` apply them (the wire contract in docs/api.md).

use unicode_normalization::UnicodeNormalization;

pub const USERNAME_MAX_CHARS: usize = 150;
pub const PASSWORD_MAX_CHARS: usize = 128;

pub const MSG_INVALID_USERNAME: &str =
    "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.";
pub const MSG_NULL_CHARACTERS: &str = "Null characters are not allowed.";
/// DRF's message for a missing required field.
pub const MSG_REQUIRED: &str = "This field is required.";

pub fn max_length_message(max: usize) -> String {
    format!("Ensure this field has no more than {max} characters.")
}

/// Checks shared by every DRF `CharField` (max length, then NUL characters),
/// in DRF's order. The value is already trimmed.
pub fn char_field_problems(value: &str, max_chars: Option<usize>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(max) = max_chars {
        if value.chars().count() > max {
            problems.push(max_length_message(max));
        }
    }
    if value.contains('\0') {
        problems.push(MSG_NULL_CHARACTERS.to_owned());
    }
    problems
}

/// Django's `UnicodeUsernameValidator`: `^[\w.@+-]+\Z` with Unicode `\w`.
fn is_username_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '@' | '+' | '-')
}

/// Django's `Group.name` limit.
pub const GROUP_NAME_MAX_CHARS: usize = 150;

/// A group name: as Django's (any text up to 150 characters), but never
/// empty, never padded with spaces and without control characters: names
/// go into tokens, listings and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupName(String);

impl GroupName {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.trim() != value {
            return Err("a group name must not be empty or start or end with spaces".into());
        }
        if value.chars().count() > GROUP_NAME_MAX_CHARS {
            return Err(max_length_message(GROUP_NAME_MAX_CHARS));
        }
        if value.chars().any(char::is_control) {
            return Err("a group name must not contain control characters".into());
        }
        Ok(GroupName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A username accepted at registration: valid characters, at most 150
/// characters, NFKC-normalised (as Django's `normalize_username`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUsername(String);

impl NewUsername {
    /// `value` is the trimmed field value. Returns every problem, in the
    /// order DRF reports them.
    pub fn parse(value: &str) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        if !value.chars().all(is_username_char) {
            problems.push(MSG_INVALID_USERNAME.to_owned());
        }
        problems.extend(char_field_problems(value, Some(USERNAME_MAX_CHARS)));
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(NewUsername(value.nfkc().collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password accepted at registration: at most 128 characters, no NUL.
/// Every character counts: see `password` for how more than bcrypt's 72
/// bytes are kept.
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(value: &str) -> Result<Self, Vec<String>> {
        let problems = char_field_problems(value, Some(PASSWORD_MAX_CHARS));
        if problems.is_empty() {
            Ok(NewPassword(value.to_owned()))
        } else {
            Err(problems)
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_django_usernames() {
        for name in ["alice", "a.b@c+d-e_f", "ünïcødé", "123", &"x".repeat(150)] {
            assert_eq!(NewUsername::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn normalises_to_nfkc() {
        assert_eq!(NewUsername::parse("ｆｏｏ").unwrap().as_str(), "foo");
    }

    #[test]
    fn reports_every_problem_in_drf_order() {
        let long_bad = format!("{}!", "x".repeat(150));
        assert_eq!(
            NewUsername::parse(&long_bad).unwrap_err(),
            vec![MSG_INVALID_USERNAME.to_owned(), max_length_message(150)]
        );
        assert_eq!(
            NewUsername::parse("a!b\0").unwrap_err(),
            vec![
                MSG_INVALID_USERNAME.to_owned(),
                MSG_NULL_CHARACTERS.to_owned()
            ]
        );
        assert_eq!(
            NewUsername::parse("a b").unwrap_err(),
            vec![MSG_INVALID_USERNAME.to_owned()]
        );
    }

    #[test]
    fn passwords_up_to_128_characters() {
        assert!(NewPassword::parse(&"é".repeat(128)).is_ok());
        assert_eq!(
            NewPassword::parse(&"p".repeat(129)).unwrap_err(),
            vec![max_length_message(128)]
        );
        assert_eq!(
            NewPassword::parse("a\0").unwrap_err(),
            vec![MSG_NULL_CHARACTERS.to_owned()]
        );
        assert_eq!(
            format!("{:?}", NewPassword::parse("hunter2").unwrap()),
            "NewPassword(***)"
        );
    }

    #[test]
    fn group_names_as_django_without_invisible_surprises() {
        for ok in [
            "editors",
            "Support team",
            "ops/eu-1",
            "été",
            &"g".repeat(150),
        ] {
            assert_eq!(GroupName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            " editors",
            "editors ",
            "a\nb",
            "a\u{0}b",
            &"g".repeat(151),
        ] {
            assert!(GroupName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
