//! Where a request comes from: what sessions and the audit trail record.

use std::net::IpAddr;

/// Longest user agent kept (longer ones are cut, on a character boundary).
pub const MAX_USER_AGENT_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The client's address (behind trusted proxies: the forwarded one).
    pub ip: IpAddr,
    /// The `User-Agent` header, cut to `MAX_USER_AGENT_CHARS`.
    pub user_agent: Option<String>,
    /// The id this request is logged with (`X-Request-Id` of the answer).
    pub request_id: Option<String>,
}

impl Origin {
    /// A request from `ip` about which nothing else is known.
    pub fn from_ip(ip: IpAddr) -> Self {
        Origin {
            ip,
            user_agent: None,
            request_id: None,
        }
    }

    /// `user_agent` as received: control characters dropped, cut to
    /// `MAX_USER_AGENT_CHARS`; empty is none.
    pub fn with_user_agent(mut self, user_agent: Option<&str>) -> Self {
        self.user_agent = user_agent
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT_CHARS)
                    .collect::<String>()
            })
            .filter(|ua| !ua.trim().is_empty());
        self
    }

    /// What a session started by this request records of it: the address
    /// (none when unknown: no peer address), the user agent.
    pub fn device(&self) -> crate::storage::sessions::Device {
        crate::storage::sessions::Device {
            user_agent: self.user_agent.clone(),
            ip: (!self.ip.is_unspecified()).then(|| self.ip.to_string()),
        }
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_cleaned_and_cut() {
        let ip = IpAddr::from([192, 0, 2, 1]);
        let long = "x".repeat(1000);
        let o = Origin::from_ip(ip).with_user_agent(Some(&long));
        assert_eq!(o.user_agent.map(|s| s.len()), Some(MAX_USER_AGENT_CHARS));
        let o = Origin::from_ip(ip).with_user_agent(Some("a\u{7}b\nc"));
        assert_eq!(o.user_agent.as_deref(), Some("abc"));
        assert_eq!(
            Origin::from_ip(ip).with_user_agent(Some("  ")).user_agent,
            None
        );
    }
}
