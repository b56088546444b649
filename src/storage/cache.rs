//! A per-process cache of session and user state for the hot read paths
//! (`/api/token/verify/` and `/api/user/me/`), so a token check costs no
//! database round trip in the common case.
//!
//! Correctness rules:
//! - Final states (revoked, expired, missing) never change back: cached for
//!   good. A live session or a user is reused for `ttl` at most.
//! - Revocations made through this process update the cache at once; made
//!   through another replica or the CLI, at once on PostgreSQL (a notice,
//!   `apply`; see `storage::invalidate`), and within `ttl` at worst (a
//!   missed notice, SQLite).
//! - Service tokens are cached by `jti` the same way: a token of a disabled,
//!   deleted or revoked client never comes back; "live" is reused for `ttl`.
//! - Introspection, refresh, logout and password change never use it: they
//!   read the database.
//! - When the database cannot be reached, the last known state is used
//!   if it is younger than `stale_if_error` (`Cached::Stale`), so tokens
//!   already seen keep verifying through a short outage.
//! - A bulk revocation (`forget_user`, `forget_client`, `flush`) sets a
//!   barrier: state read before it is never stored afterwards, so a read
//!   racing the revocation cannot put the old "live" back.
//!
//! Bounded: past `MAX_ENTRIES` a map is emptied (a cache may forget).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::clients::ClientTokenState;
use super::invalidate::Notice;
use super::sessions::SessionState;

const MAX_ENTRIES: usize = 100_000;

/// What `/api/user/me/` needs of a user (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub id: i64,
    pub username: String,
    pub is_active: bool,
    /// See `UserRecord::kept_legacy_id`.
    pub kept_legacy_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached<T> {
    /// Good to use without asking the database.
    Fresh(T),
    /// Older than the TTL: ask the database, fall back to this if it fails.
    Stale(T),
    Miss,
}

struct Entry<T> {
    value: T,
    at: Instant,
}

struct SessionEntry {
    user_id: i64,
    state: SessionState,
    at: Instant,
}

pub struct StateCache {
    ttl: Duration,
    stale_if_error: Duration,
    sessions: RwLock<HashMap<String, SessionEntry>>,
    users: RwLock<HashMap<i64, Entry<Option<UserSummary>>>>,
    /// When each user's sessions were last revoked in bulk here.
    barriers: RwLock<HashMap<i64, Instant>>,
    /// Service tokens by `jti`: (client id, state, read at).
    client_tokens: RwLock<HashMap<String, (String, ClientTokenState, Instant)>>,
    /// When each client's tokens were last ended in bulk.
    client_barriers: RwLock<HashMap<String, Instant>>,
    /// When everything was last forgotten (`flush`).
    flushed_at: RwLock<Option<Instant>>,
}

impl StateCache {
    /// `ttl` zero disables the cache; `stale_if_error` zero disables the
    /// outage fallback.
    pub fn new(ttl: Duration, stale_if_error: Duration) -> Self {
        StateCache {
            ttl,
            stale_if_error,
            sessions: RwLock::default(),
            users: RwLock::default(),
            barriers: RwLock::default(),
            client_tokens: RwLock::default(),
            client_barriers: RwLock::default(),
            flushed_at: RwLock::default(),
        }
    }

    /// True when state read at `read_at` predates the last flush.
    fn before_flush(&self, read_at: Instant) -> bool {
        self.flushed_at
            .read()
            .map(|f| f.is_some_and(|at| read_at <= at))
            .unwrap_or(true)
    }

    /// True when state of `user_id` read at `read_at` predates a bulk
    /// revocation and must not be stored.
    fn behind_barrier(&self, user_id: i64, read_at: Instant) -> bool {
        self.before_flush(read_at)
            || self
                .barriers
                .read()
                .map(|b| b.get(&user_id).is_some_and(|&at| read_at <= at))
                .unwrap_or(true)
    }

    /// The same for the tokens of `client_id`.
    fn behind_client_barrier(&self, client_id: &str, read_at: Instant) -> bool {
        self.before_flush(read_at)
            || self
                .client_barriers
                .read()
                .map(|b| b.get(client_id).is_some_and(|&at| read_at <= at))
                .unwrap_or(true)
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn freshness<T>(&self, value: T, at: Instant, final_state: bool, now: Instant) -> Cached<T> {
        let age = now.saturating_duration_since(at);
        if final_state || age < self.ttl {
            Cached::Fresh(value)
        } else if age < self.stale_if_error {
            Cached::Stale(value)
        } else {
            Cached::Miss
        }
    }

    pub fn session(&self, sid: &str, user_id: i64, now: Instant) -> Cached<SessionState> {
        if !self.enabled() {
            return Cached::Miss;
        }
        let Ok(map) = self.sessions.read() else {
            return Cached::Miss;
        };
        match map.get(sid) {
            Some(e) if e.user_id == user_id => {
                let final_state = !matches!(e.state, SessionState::Live { .. });
                self.freshness(e.state, e.at, final_state, now)
            }
            _ => Cached::Miss,
        }
    }

    /// Stores what the database said; `now` is when the read started.
    pub fn put_session(&self, sid: &str, user_id: i64, state: SessionState, now: Instant) {
        if !self.enabled() {
            return;
        }
        if matches!(state, SessionState::Live { .. }) && self.behind_barrier(user_id, now) {
            return;
        }
        let Ok(mut map) = self.sessions.write() else {
            return;
        };
        if let Some(existing) = map.get_mut(sid) {
            // A token naming another user must not overwrite (the entry is
            // keyed by session id; the state is per (session, user)).
            if existing.user_id == user_id {
                // Never resurrect: a final state stays final.
                if matches!(existing.state, SessionState::Live { .. }) {
                    existing.state = state;
                }
                existing.at = now;
            }
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            sid.to_owned(),
            SessionEntry {
                user_id,
                state,
                at: now,
            },
        );
    }

    /// This process revoked the session: every later check here sees it.
    pub fn session_revoked(&self, sid: &str, user_id: i64, now: Instant) {
        if let Ok(mut map) = self.sessions.write() {
            match map.get_mut(sid) {
                Some(e) if e.user_id == user_id => e.state = SessionState::Revoked,
                Some(_) => {}
                None => {
                    drop(map);
                    self.put_session(sid, user_id, SessionState::Revoked, now);
                }
            }
        }
    }

    pub fn user(&self, id: i64, now: Instant) -> Cached<Option<UserSummary>> {
        if !self.enabled() {
            return Cached::Miss;
        }
        let Ok(map) = self.users.read() else {
            return Cached::Miss;
        };
        match map.get(&id) {
            Some(e) => self.freshness(e.value.clone(), e.at, false, now),
            None => Cached::Miss,
        }
    }

    /// Stores what the database said; `now` is when the read started.
    pub fn put_user(&self, id: i64, user: Option<UserSummary>, now: Instant) {
        if !self.enabled() || self.behind_barrier(id, now) {
            return;
        }
        if let Ok(mut map) = self.users.write() {
            if map.len() >= MAX_ENTRIES && !map.contains_key(&id) {
                map.clear();
            }
            map.insert(
                id,
                Entry {
                    value: user,
                    at: now,
                },
            );
        }
    }

    pub fn client_token(
        &self,
        jti: &str,
        client_id: &str,
        now: Instant,
    ) -> Cached<ClientTokenState> {
        if !self.enabled() {
            return Cached::Miss;
        }
        let Ok(map) = self.client_tokens.read() else {
            return Cached::Miss;
        };
        match map.get(jti) {
            Some((id, state, at)) if id == client_id => {
                let final_state = !matches!(state, ClientTokenState::Live(_));
                self.freshness(state.clone(), *at, final_state, now)
            }
            _ => Cached::Miss,
        }
    }

    /// Stores what the database said; `now` is when the read started. A
    /// final state is never replaced by "live".
    pub fn put_client_token(
        &self,
        jti: &str,
        client_id: &str,
        state: ClientTokenState,
        now: Instant,
    ) {
        if !self.enabled() {
            return;
        }
        if matches!(state, ClientTokenState::Live(_)) && self.behind_client_barrier(client_id, now)
        {
            return;
        }
        let Ok(mut map) = self.client_tokens.write() else {
            return;
        };
        if let Some((id, existing, at)) = map.get_mut(jti) {
            if id == client_id && matches!(existing, ClientTokenState::Live(_)) {
                *existing = state;
                *at = now;
            }
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(jti.to_owned(), (client_id.to_owned(), state, now));
    }

    /// Forget everything about a user whose sessions this process just
    /// revoked in bulk (logout everywhere, password change): the next check
    /// reads the database.
    pub fn forget_user(&self, user_id: i64) {
        if let Ok(mut barriers) = self.barriers.write() {
            if barriers.len() >= MAX_ENTRIES {
                barriers.clear();
            }
            barriers.insert(user_id, Instant::now());
        }
        if let Ok(mut map) = self.sessions.write() {
            map.retain(|_, e| e.user_id != user_id);
        }
        if let Ok(mut map) = self.users.write() {
            map.remove(&user_id);
        }
    }

    /// Forget every token of a client that was disabled or deleted: the
    /// next check of each reads the database.
    pub fn forget_client(&self, client_id: &str) {
        if let Ok(mut barriers) = self.client_barriers.write() {
            if barriers.len() >= MAX_ENTRIES {
                barriers.clear();
            }
            barriers.insert(client_id.to_owned(), Instant::now());
        }
        if let Ok(mut map) = self.client_tokens.write() {
            map.retain(|_, (id, _, _)| id != client_id);
        }
    }

    /// Forget everything (changes may have been missed): every check reads
    /// the database again, and nothing read before now is stored.
    pub fn flush(&self) {
        if let Ok(mut at) = self.flushed_at.write() {
            *at = Some(Instant::now());
        }
        if let Ok(mut map) = self.sessions.write() {
            map.clear();
        }
        if let Ok(mut map) = self.users.write() {
            map.clear();
        }
        if let Ok(mut map) = self.client_tokens.write() {
            map.clear();
        }
    }

    /// A change made by any process (this one included: applying it again
    /// changes nothing).
    pub fn apply(&self, notice: &Notice) {
        match notice {
            Notice::Session { user_id, sid } => self.session_revoked(sid, *user_id, Instant::now()),
            Notice::User(id) => self.forget_user(*id),
            Notice::Client(id) => self.forget_client(id),
            Notice::ClientToken { client_id, jti } => {
                self.put_client_token(jti, client_id, ClientTokenState::Revoked, Instant::now())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: SessionState = SessionState::Live { expires_at: 100 };

    fn cache() -> StateCache {
        StateCache::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    #[test]
    fn live_sessions_are_fresh_for_the_ttl_then_stale() {
        let c = cache();
        let t0 = Instant::now();
        assert_eq!(c.session("s", 1, t0), Cached::Miss);
        c.put_session("s", 1, LIVE, t0);
        assert_eq!(
            c.session("s", 1, t0 + Duration::from_millis(999)),
            Cached::Fresh(LIVE)
        );
        assert_eq!(
            c.session("s", 1, t0 + Duration::from_secs(1)),
            Cached::Stale(LIVE)
        );
        // Too old even for an outage.
        assert_eq!(
            c.session("s", 1, t0 + Duration::from_secs(60)),
            Cached::Miss
        );
        // Another user naming the same session id learns nothing from it.
        assert_eq!(c.session("s", 2, t0), Cached::Miss);
        c.put_session("s", 2, SessionState::Missing, t0);
        assert_eq!(c.session("s", 1, t0), Cached::Fresh(LIVE));
    }

    #[test]
    fn final_states_stay_final_and_fresh() {
        let c = cache();
        let t0 = Instant::now();
        c.put_session("s", 1, LIVE, t0);
        c.session_revoked("s", 1, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            c.session("s", 1, later),
            Cached::Fresh(SessionState::Revoked)
        );
        // A slow reader that fetched "live" before the revocation cannot
        // resurrect it.
        c.put_session("s", 1, LIVE, later);
        assert_eq!(
            c.session("s", 1, later),
            Cached::Fresh(SessionState::Revoked)
        );
        // Revoking an unseen session records it.
        c.session_revoked("t", 1, t0);
        assert_eq!(c.session("t", 1, t0), Cached::Fresh(SessionState::Revoked));
    }

    #[test]
    fn forget_user_drops_their_sessions_and_summary() {
        let c = cache();
        let t0 = Instant::now();
        c.put_session("a", 1, LIVE, t0);
        c.put_session("b", 2, LIVE, t0);
        let alice = UserSummary {
            id: 1,
            username: "alice".into(),
            is_active: true,
            kept_legacy_id: false,
        };
        c.put_user(1, Some(alice.clone()), t0);
        assert_eq!(c.user(1, t0), Cached::Fresh(Some(alice)));
        c.forget_user(1);
        assert_eq!(c.session("a", 1, t0), Cached::Miss);
        assert_eq!(c.user(1, t0), Cached::Miss);
        assert_eq!(c.session("b", 2, t0), Cached::Fresh(LIVE));
        // A read that started before the bulk revocation cannot put "live"
        // back; one that started after can.
        c.put_session("a", 1, LIVE, t0);
        assert_eq!(c.session("a", 1, t0), Cached::Miss);
        let later = Instant::now() + Duration::from_millis(1);
        c.put_session("a", 1, LIVE, later);
        assert_eq!(c.session("a", 1, later), Cached::Fresh(LIVE));
    }

    fn live_client() -> ClientTokenState {
        ClientTokenState::Live(super::super::clients::LiveClient {
            audience: None,
            scopes: "read".into(),
            ttl_secs: None,
            created_at: 0,
        })
    }

    #[test]
    fn notices_revoke_and_forget() {
        let c = cache();
        let t0 = Instant::now();
        c.put_session("a", 1, LIVE, t0);
        c.put_session("b", 1, LIVE, t0);
        c.put_client_token("j1", "svc", live_client(), t0);
        c.put_client_token("j2", "svc", live_client(), t0);
        c.put_client_token("k1", "other", live_client(), t0);
        let session = Notice::Session {
            user_id: 1,
            sid: "a".into(),
        };
        c.apply(&session);
        // Again (a process hears its own notices): no change.
        c.apply(&session);
        assert_eq!(c.session("a", 1, t0), Cached::Fresh(SessionState::Revoked));
        assert_eq!(c.session("b", 1, t0), Cached::Fresh(LIVE));
        c.apply(&Notice::ClientToken {
            client_id: "svc".into(),
            jti: "j1".into(),
        });
        assert_eq!(
            c.client_token("j1", "svc", t0),
            Cached::Fresh(ClientTokenState::Revoked)
        );
        c.apply(&Notice::Client("svc".into()));
        assert_eq!(c.client_token("j2", "svc", t0), Cached::Miss);
        assert_eq!(
            c.client_token("k1", "other", t0),
            Cached::Fresh(live_client())
        );
        // A read that started before the client was ended cannot put
        // "live" back.
        c.put_client_token("j2", "svc", live_client(), t0);
        assert_eq!(c.client_token("j2", "svc", t0), Cached::Miss);
        c.apply(&Notice::User(1));
        assert_eq!(c.session("b", 1, t0), Cached::Miss);
    }

    #[test]
    fn a_flush_forgets_everything_read_before_it() {
        let c = cache();
        let t0 = Instant::now();
        c.put_session("a", 1, LIVE, t0);
        c.put_user(1, None, t0);
        c.put_client_token("j", "svc", live_client(), t0);
        c.flush();
        assert_eq!(c.session("a", 1, t0), Cached::Miss);
        assert_eq!(c.user(1, t0), Cached::Miss);
        assert_eq!(c.client_token("j", "svc", t0), Cached::Miss);
        c.put_session("a", 1, LIVE, t0);
        c.put_user(1, None, t0);
        c.put_client_token("j", "svc", live_client(), t0);
        assert_eq!(c.session("a", 1, t0), Cached::Miss);
        assert_eq!(c.user(1, t0), Cached::Miss);
        assert_eq!(c.client_token("j", "svc", t0), Cached::Miss);
        let later = Instant::now() + Duration::from_millis(1);
        c.put_session("a", 1, LIVE, later);
        assert_eq!(c.session("a", 1, later), Cached::Fresh(LIVE));
    }

    #[test]
    fn zero_ttl_disables_it() {
        let c = StateCache::new(Duration::ZERO, Duration::from_secs(60));
        let t0 = Instant::now();
        c.put_session("s", 1, LIVE, t0);
        c.put_user(1, None, t0);
        assert_eq!(c.session("s", 1, t0), Cached::Miss);
        assert_eq!(c.user(1, t0), Cached::Miss);
    }
}
