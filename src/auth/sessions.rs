//! Sessions (token families) and the rules of rotation, as pure functions.
//!
//! A login starts a session; every rotation issues a pair inside it. A pair
//! is fully described by a `PairSpec` (ids, instants, session): storing the
//! spec of the latest pair lets a rotation be replayed exactly, because HS256
//! signing is deterministic.

use super::claims::ClaimMap;
use super::jwt::{Claims, JwtKeys, SigningError, TokenLifetimes, TokenType};

/// 32 lowercase hex characters, like a jti (time-ordered for the same
/// reason: a session's tokens are indexed by its id).
pub fn new_session_id() -> String {
    super::jwt::new_jti()
}

/// Everything that determines an access/refresh pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSpec {
    pub user_id: i64,
    pub session_id: String,
    pub issued_at: i64,
    pub refresh_jti: String,
    pub refresh_expires_at: i64,
    pub access_jti: String,
    pub access_expires_at: i64,
    /// The access token's extra claims (empty: simplejwt's exact claims).
    pub access_claims: ClaimMap,
}

impl PairSpec {
    /// A new pair issued `now`, neither token outliving the session.
    pub fn new(
        user_id: i64,
        session_id: &str,
        now: i64,
        lifetimes: TokenLifetimes,
        session_expires_at: i64,
    ) -> Self {
        PairSpec {
            user_id,
            session_id: session_id.to_owned(),
            issued_at: now,
            refresh_jti: super::jwt::new_jti(),
            refresh_expires_at: (now + lifetimes.refresh_secs).min(session_expires_at),
            access_jti: super::jwt::new_jti(),
            access_expires_at: (now + lifetimes.access_secs).min(session_expires_at),
            access_claims: ClaimMap::new(),
        }
    }

    /// The same pair, its access token carrying `claims`.
    pub fn with_access_claims(mut self, claims: ClaimMap) -> Self {
        self.access_claims = claims;
        self
    }

    /// The same pair, cut to end with the session.
    pub fn capped(mut self, session_expires_at: i64) -> Self {
        self.refresh_expires_at = self.refresh_expires_at.min(session_expires_at);
        self.access_expires_at = self.access_expires_at.min(session_expires_at);
        self
    }

    fn claims(&self, token_type: TokenType) -> Claims {
        let (jti, exp, extra) = match token_type {
            TokenType::Access => (
                &self.access_jti,
                self.access_expires_at,
                self.access_claims.clone(),
            ),
            TokenType::Refresh => (&self.refresh_jti, self.refresh_expires_at, ClaimMap::new()),
        };
        Claims {
            token_type: token_type.as_str(),
            exp,
            iat: self.issued_at,
            jti: jti.clone(),
            user_id: self.user_id.to_string(),
            sid: Some(self.session_id.clone()),
            extra,
        }
    }

    pub fn sign(&self, keys: &JwtKeys) -> Result<SignedPair, SigningError> {
        Ok(SignedPair {
            access: keys.sign(&self.claims(TokenType::Access))?,
            refresh: keys.sign(&self.claims(TokenType::Refresh))?,
        })
    }

    /// The access token of the pair alone (a refresh without rotation: the
    /// presented refresh token stays the session's).
    pub fn sign_access(&self, keys: &JwtKeys) -> Result<String, SigningError> {
        keys.sign(&self.claims(TokenType::Access))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPair {
    pub access: String,
    pub refresh: String,
}

/// What re-presenting an already spent refresh token means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// A benign race (two tabs, a retry): answer with the successor pair.
    Replay,
    /// Theft evidence: revoke the whole session.
    Theft,
}

/// `spent_at`: when the presented token was rotated. `successor_live`: its
/// successor has not been rotated or revoked itself, i.e. the presented
/// token is the parent of the session's current token.
/// A grace of 0 disables replays: every reuse is theft.
pub fn judge_reuse(now: i64, spent_at: i64, grace_secs: i64, successor_live: bool) -> Reuse {
    if grace_secs > 0 && successor_live && now - spent_at <= grace_secs {
        Reuse::Replay
    } else {
        Reuse::Theft
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const LIFETIMES: TokenLifetimes = TokenLifetimes {
        access_secs: 1800,
        refresh_secs: 86400,
    };

    fn keys() -> JwtKeys {
        JwtKeys::hs256("session-test-key", LIFETIMES)
    }

    #[test]
    fn pairs_are_capped_by_the_session() {
        let far = PairSpec::new(1, "s", NOW, LIFETIMES, NOW + 10 * 86400);
        assert_eq!(
            (far.access_expires_at, far.refresh_expires_at),
            (NOW + 1800, NOW + 86400)
        );
        let near = PairSpec::new(1, "s", NOW, LIFETIMES, NOW + 600);
        assert_eq!(
            (near.access_expires_at, near.refresh_expires_at),
            (NOW + 600, NOW + 600)
        );
        assert_eq!(far.clone().capped(NOW + 100).refresh_expires_at, NOW + 100);
        assert_ne!(far.access_jti, far.refresh_jti);
    }

    #[test]
    fn signing_a_spec_twice_gives_the_same_tokens() {
        let spec = PairSpec::new(7, &new_session_id(), NOW, LIFETIMES, NOW + 86400);
        let k = keys();
        assert_eq!(spec.sign(&k).unwrap(), spec.sign(&k).unwrap());
        let pair = spec.sign(&k).unwrap();
        let access = k
            .verify(&pair.access, Some(TokenType::Access), NOW)
            .unwrap();
        let refresh = k
            .verify(&pair.refresh, Some(TokenType::Refresh), NOW)
            .unwrap();
        assert_eq!(access.sid.as_deref(), Some(spec.session_id.as_str()));
        assert_eq!(refresh.jti, spec.refresh_jti);
        assert_eq!((access.user_id, refresh.exp), (Some(7), NOW + 86400));
    }

    #[test]
    fn reuse_is_a_replay_only_for_the_parent_inside_the_grace_window() {
        assert_eq!(judge_reuse(NOW, NOW, 10, true), Reuse::Replay);
        assert_eq!(judge_reuse(NOW + 10, NOW, 10, true), Reuse::Replay);
        assert_eq!(judge_reuse(NOW + 11, NOW, 10, true), Reuse::Theft);
        // An older ancestor: its successor was rotated already.
        assert_eq!(judge_reuse(NOW, NOW, 10, false), Reuse::Theft);
        assert_eq!(
            judge_reuse(NOW, NOW, 0, true),
            Reuse::Theft,
            "grace 0 disables replays"
        );
    }

    #[test]
    fn session_ids_look_like_jtis() {
        let sid = new_session_id();
        assert_eq!(sid.len(), 32);
        assert!(sid.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(sid, new_session_id());
    }
}
