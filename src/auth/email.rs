//! E-mail addresses as Django's `EmailField` accepts them (dot-atom local
//! part, a domain of hostname labels with a top-level label of 2+
//! characters), normalised as Django's `normalize_email` does (domain
//! lowercased), and compared ignoring case.

use super::credentials::max_length_message;

/// Django's `EmailField` max_length (RFC 5321's path limit).
pub const EMAIL_MAX_CHARS: usize = 254;
pub const MSG_INVALID_EMAIL: &str = "Enter a valid email address.";

/// A valid, normalised address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// `value` is the trimmed field value; every problem, in DRF's order.
    pub fn parse(value: &str) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        if value.chars().count() > EMAIL_MAX_CHARS {
            problems.push(max_length_message(EMAIL_MAX_CHARS));
        }
        let Some((local, domain)) = value.rsplit_once('@') else {
            problems.insert(0, MSG_INVALID_EMAIL.to_owned());
            return Err(problems);
        };
        if !valid_local(local) || !valid_domain(domain) {
            problems.insert(0, MSG_INVALID_EMAIL.to_owned());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Email(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The uniqueness key: the whole address lowercased.
    pub fn key(&self) -> String {
        key_of(&self.0)
    }
}

/// The uniqueness key of any address (lowercased), for look-ups.
pub fn key_of(address: &str) -> String {
    address.to_lowercase()
}

/// RFC 5322 dot-atom (Django's user regex without quoted strings).
fn valid_local(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c))
        })
}

/// Hostname labels (letters, also non-ASCII ones as Django accepts IDNs,
/// digits and inner hyphens), at least two, the last 2+ characters and not
/// all digits.
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |label: &&str| {
        let n = label.chars().count();
        (1..=63).contains(&n)
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let Some(tld) = labels.last() else {
        return false;
    };
    labels.len() >= 2
        && labels.iter().all(label_ok)
        && tld.chars().count() >= 2
        && !tld.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_addresses_are_normalised_as_django() {
        for (input, stored) in [
            ("alice@example.com", "alice@example.com"),
            ("Alice.Smith@Example.COM", "Alice.Smith@example.com"),
            ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
            ("o'brien@example.ie", "o'brien@example.ie"),
            ("user@bücher.de", "user@bücher.de"),
        ] {
            let email = Email::parse(input).unwrap();
            assert_eq!(email.as_str(), stored, "{input}");
        }
        assert_eq!(
            Email::parse("Alice@Example.com").unwrap().key(),
            "alice@example.com"
        );
    }

    #[test]
    fn invalid_addresses_get_djangos_message() {
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@example",
            "alice@example.c",
            "alice@1.2.3.4",
            "al ice@example.com",
            "alice..x@example.com",
            ".alice@example.com",
            "alice@-example.com",
            "alice@example..com",
            "a@b@example.com",
            "alice@exa_mple.com",
            "alice\n@example.com",
        ] {
            assert_eq!(
                Email::parse(bad).unwrap_err(),
                [MSG_INVALID_EMAIL],
                "{bad:?}"
            );
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(
            Email::parse(&long).unwrap_err(),
            [
                MSG_INVALID_EMAIL.to_owned(),
                max_length_message(EMAIL_MAX_CHARS)
            ]
        );
    }
}
