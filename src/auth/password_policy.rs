//! The password policy of registration, password change and reset: a
//! minimum length, a minimum zxcvbn strength score and no password equal to
//! or containing the username, with Django's validator messages where
//! Django has one.

use super::credentials::NewPassword;

/// zxcvbn's best score.
pub const MAX_STRENGTH: u8 = 4;

/// Usernames shorter than this are only refused as the whole password:
/// "ab" inside "crabcake" says nothing about the password.
const MIN_CONTAINED_USERNAME_CHARS: usize = 3;

pub const MSG_TOO_SIMILAR: &str = "The password is too similar to the username.";
pub const MSG_TOO_WEAK: &str =
    "This password is too easy to guess. Add more words or characters that are less common.";

/// Off in every respect by default, as simplejwt accepts any password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// In characters; 0: no minimum.
    pub min_length: usize,
    /// zxcvbn score 0-4 the password must reach; 0: no check.
    pub min_strength: u8,
    /// Refuse a password equal to or containing the username (ignoring case).
    pub reject_username: bool,
}

/// Django's MinimumLengthValidator message.
fn too_short(min: usize) -> String {
    let unit = if min == 1 { "character" } else { "characters" };
    format!("This password is too short. It must contain at least {min} {unit}.")
}

impl PasswordPolicy {
    /// A new password for the user named `username` (when known): the
    /// field's own checks first, then the policy's (DRF runs validators
    /// only on a well-formed value).
    pub fn parse(&self, value: &str, username: Option<&str>) -> Result<NewPassword, Vec<String>> {
        let password = NewPassword::parse(value)?;
        let problems = self.problems(password.expose(), username);
        if problems.is_empty() {
            Ok(password)
        } else {
            Err(problems)
        }
    }

    /// Every problem of `password` for the user named `username` (when
    /// known), in the order Django's validators report theirs.
    pub fn problems(&self, password: &str, username: Option<&str>) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = username.filter(|_| self.reject_username) {
            if contains_username(password, name) {
                problems.push(MSG_TOO_SIMILAR.to_owned());
            }
        }
        if password.chars().count() < self.min_length {
            problems.push(too_short(self.min_length));
        }
        if self.min_strength > 0 && !password.is_empty() {
            let inputs: Vec<&str> = username.into_iter().collect();
            let score = u8::from(zxcvbn::zxcvbn(password, &inputs).score());
            if score < self.min_strength {
                problems.push(MSG_TOO_WEAK.to_owned());
            }
        }
        problems
    }
}

fn contains_username(password: &str, username: &str) -> bool {
    let (password, name) = (password.to_lowercase(), username.to_lowercase());
    if name.is_empty() {
        return false;
    }
    password == name
        || (name.chars().count() >= MIN_CONTAINED_USERNAME_CHARS && password.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: PasswordPolicy = PasswordPolicy {
        min_length: 8,
        min_strength: 2,
        reject_username: true,
    };

    #[test]
    fn the_default_accepts_anything_as_simplejwt() {
        let open = PasswordPolicy::default();
        for password in ["", "a", "alice", "password", "12345678"] {
            assert!(
                open.problems(password, Some("alice")).is_empty(),
                "{password}"
            );
        }
    }

    #[test]
    fn short_passwords_get_djangos_message() {
        let p = PasswordPolicy {
            min_length: 8,
            ..Default::default()
        };
        assert_eq!(
            p.problems("short", None),
            ["This password is too short. It must contain at least 8 characters."]
        );
        // Characters, not bytes.
        assert!(p.problems("éééééééé", None).is_empty());
        let one = PasswordPolicy {
            min_length: 1,
            ..Default::default()
        };
        assert_eq!(
            one.problems("", None),
            ["This password is too short. It must contain at least 1 character."]
        );
    }

    #[test]
    fn the_username_may_not_be_or_be_in_the_password() {
        let p = PasswordPolicy {
            reject_username: true,
            ..Default::default()
        };
        for bad in ["alice", "ALICE", "my-Alice-2024"] {
            assert_eq!(p.problems(bad, Some("alice")), [MSG_TOO_SIMILAR], "{bad}");
        }
        assert!(p.problems("crabcake", Some("ab")).is_empty());
        assert_eq!(p.problems("ab", Some("ab")), [MSG_TOO_SIMILAR]);
        assert!(p.problems("alice", None).is_empty());
    }

    #[test]
    fn weak_passwords_fail_the_strength_score() {
        let p = PasswordPolicy {
            min_strength: 2,
            ..Default::default()
        };
        for weak in ["password", "12345678", "qwertyuiop", "aaaaaaaaaaaa"] {
            assert_eq!(p.problems(weak, None), [MSG_TOO_WEAK], "{weak}");
        }
        for strong in ["correct horse battery staple", "v8#Qm!2zL0p@"] {
            assert!(p.problems(strong, None).is_empty(), "{strong}");
        }
        // The username counts as known to an attacker.
        assert!(p.problems("zq7xv9kw3mtp", None).is_empty());
        assert_eq!(
            p.problems("zq7xv9kw3mtp", Some("zq7xv9kw3mtp")),
            [MSG_TOO_WEAK]
        );
    }

    #[test]
    fn every_problem_is_reported_in_djangos_order() {
        assert_eq!(
            STRICT.problems("alice1", Some("alice")),
            [
                MSG_TOO_SIMILAR.to_owned(),
                too_short(8),
                MSG_TOO_WEAK.to_owned()
            ]
        );
        assert!(STRICT
            .problems("correct horse battery staple", Some("alice"))
            .is_empty());
    }
}
