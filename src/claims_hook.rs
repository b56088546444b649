//! The claims hook's client: one signed POST per login or refresh to the
//! configured URL, whose answer adds claims to the access token. The rules
//! an answer must follow are in `auth::claims::merge_hook_answer`, the
//! signature in `auth::webhook`; what a failure does is the caller's
//! (`service::claims`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::auth::claims::UserProfile;
use crate::auth::claims::{
    merge_hook_answer, profile_json, ClaimMap, ClaimsEvent, HookAnswerError,
};
use crate::auth::webhook;
use crate::config::{ClaimsSettings, HookFailure};

/// Largest answer read, bytes; a longer one is refused unread.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Calls in flight at once. Beyond, a call fails at once: a slow hook then
/// costs a bounded number of waiting requests, never an unbounded pile.
pub const MAX_CONCURRENT_CALLS: usize = 256;

pub struct ClaimsHook {
    url: reqwest::Url,
    key: Vec<u8>,
    timeout: Duration,
    failure: HookFailure,
    /// Shared by every worker: reqwest keeps a connection pool per client.
    client: reqwest::Client,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for ClaimsHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimsHook")
            .field("url", &self.url.as_str())
            .field("key", &"***")
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .finish()
    }
}

/// Why a call of the hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{MAX_CONCURRENT_CALLS} calls already in flight")]
    Busy,
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unavailable(String),
    #[error("answered HTTP {0}, not 200")]
    Status(u16),
    #[error("answer over {MAX_ANSWER_BYTES} bytes")]
    TooLong,
    #[error("{0}")]
    Answer(HookAnswerError),
}

impl HookError {
    /// The `reason` label of `tokend_claims_hook_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            HookError::Busy => "busy",
            HookError::Timeout(_) => "timeout",
            HookError::Unavailable(_) => "unavailable",
            HookError::Answer(HookAnswerError::Reserved(_)) => "reserved_claim",
            HookError::Status(_) | HookError::TooLong | HookError::Answer(_) => "bad_answer",
        }
    }
}

impl ClaimsHook {
    /// The configured hook, or `None` when `claims.hook_url` is empty.
    /// Settings are validated at load; a failure here is a start-up error.
    pub fn from_settings(settings: &ClaimsSettings) -> anyhow::Result<Option<Self>> {
        let Some(url) = settings.hook_url() else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(url)
            .map_err(|_| anyhow::anyhow!("claims.hook_url is not a URL"))?;
        let key = webhook::parse_secret(settings.hook_secret.expose())
            .map_err(|e| anyhow::anyhow!("claims.hook_secret {e}"))?;
        let timeout = settings.hook_timeout();
        let client = crate::webhooks::http_client(timeout)?;
        Ok(Some(ClaimsHook {
            url,
            key,
            timeout,
            failure: settings.hook_failure,
            client,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)),
        }))
    }

    pub fn failure(&self) -> HookFailure {
        self.failure
    }

    /// Asks the hook for the claims of `user`'s new access token; `computed`
    /// are the claims so far. The answer's claims merged over them, or why
    /// not. Whole call, answer included, within the configured timeout.
    pub async fn call(
        &self,
        event: ClaimsEvent,
        user: &UserProfile,
        computed: &ClaimMap,
        user_id_claim: &str,
    ) -> Result<ClaimMap, HookError> {
        let _permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| HookError::Busy)?;
        let body = serde_json::to_vec(&serde_json::json!({
            "event": event.as_str(),
            "user": profile_json(user),
            "claims": computed,
        }))
        .map_err(|e| HookError::Unavailable(e.to_string()))?;
        let answer = tokio::time::timeout(self.timeout, self.post(body))
            .await
            .map_err(|_| HookError::Timeout(self.timeout))??;
        merge_hook_answer(computed, &answer, user_id_claim).map_err(HookError::Answer)
    }

    /// Sends the signed request; the answer's body, at most
    /// `MAX_ANSWER_BYTES`, when the status is 200.
    async fn post(&self, body: Vec<u8>) -> Result<Vec<u8>, HookError> {
        let id = webhook::new_message_id();
        let mut response =
            crate::webhooks::signed_post(&self.client, self.url.clone(), &self.key, &id, body)
                .send()
                .await
                .map_err(|e| self.transport(&e))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(HookError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(HookError::TooLong);
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(HookError::TooLong);
            }
            answer.extend_from_slice(&chunk);
        }
        Ok(answer)
    }

    fn transport(&self, e: &reqwest::Error) -> HookError {
        if e.is_timeout() {
            HookError::Timeout(self.timeout)
        } else {
            HookError::Unavailable(crate::error::Chain(e).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_metric_labels() {
        let errors = [
            HookError::Busy,
            HookError::Timeout(Duration::from_millis(1)),
            HookError::Unavailable("refused".into()),
            HookError::Status(302),
            HookError::TooLong,
            HookError::Answer(HookAnswerError::Shape),
            HookError::Answer(HookAnswerError::TooLarge(5000)),
            HookError::Answer(HookAnswerError::Reserved("exp".into())),
        ];
        let reasons: Vec<&str> = errors.iter().map(HookError::reason).collect();
        assert_eq!(
            reasons,
            [
                "busy",
                "timeout",
                "unavailable",
                "bad_answer",
                "bad_answer",
                "bad_answer",
                "bad_answer",
                "reserved_claim"
            ]
        );
        for reason in reasons {
            assert!(crate::metrics::CLAIMS_HOOK_FAILURE_REASONS.contains(&reason));
        }
        assert_eq!(
            HookError::Answer(HookAnswerError::Reserved("exp".into())).to_string(),
            "the answer sets `exp`, a claim only tokend writes"
        );
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let settings = ClaimsSettings {
            hook_url: "http://127.0.0.1:9/claims".into(),
            hook_secret: crate::config::Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            hook_timeout_ms: 500,
            hook_failure: HookFailure::Closed,
        };
        let hook = ClaimsHook::from_settings(&settings).unwrap().unwrap();
        let dump = format!("{hook:?}");
        assert!(
            dump.contains("http://127.0.0.1:9/claims") && dump.contains("***"),
            "{dump}"
        );
        assert!(!dump.contains("MfKQ"), "{dump}");
        let off = ClaimsSettings {
            hook_url: " ".into(),
            ..settings
        };
        assert!(ClaimsHook::from_settings(&off).unwrap().is_none());
    }
}
