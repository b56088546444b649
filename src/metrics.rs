//! Prometheus metrics (`GET /metrics`, text format 0.0.4): requests by route
//! and status, latency histograms by route, logins, refreshes, reuse
//! detections, rate-limited requests and the database pool.
//!
//! Labels are bounded: routes are the route table's patterns (unknown paths
//! are `unmatched`), outcomes a fixed list. No user data is ever a label.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    /// The route table's paths: the `route` label values.
    routes: Vec<String>,
    /// Each plain route's index in `routes`, by its path without the
    /// trailing slash: the lookup of every request.
    plain: std::collections::HashMap<String, usize>,
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    logins: IntCounterVec,
    refreshes: IntCounterVec,
    reuse_detections: IntCounter,
    rate_limited: IntCounter,
    pool_connections: IntGauge,
    pool_idle: IntGauge,
    claims_hook_failures: IntCounterVec,
    claims_hook_duration: prometheus::Histogram,
    outbox_messages: prometheus::IntGaugeVec,
    outbox_sent: IntCounterVec,
    outbox_failed_attempts: IntCounterVec,
    audit_written: IntCounter,
    audit_dropped: IntCounter,
    cache_notices: IntCounterVec,
    cache_listener_reconnects: IntCounter,
}

/// The `reason` labels of `tokend_claims_hook_failures_total`.
pub const CLAIMS_HOOK_FAILURE_REASONS: [&str; 5] = [
    "timeout",
    "unavailable",
    "busy",
    "bad_answer",
    "reserved_claim",
];

/// How a login ended.
#[derive(Debug, Clone, Copy)]
pub enum LoginOutcome {
    Ok,
    Failed,
}

/// How a refresh ended.
#[derive(Debug, Clone, Copy)]
pub enum RefreshOutcome {
    Rotated,
    Replayed,
    /// Without rotation: a new access token, the refresh token unchanged.
    Renewed,
    Refused,
}

impl Metrics {
    /// `routes`: the paths of the route table, the only `route` labels
    /// besides `/docs/` and `unmatched`.
    pub fn new(routes: Vec<String>) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tokend".to_owned()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )?;
        let logins = IntCounterVec::new(
            Opts::new("logins_total", "Password logins by outcome"),
            &["outcome"],
        )?;
        let refreshes = IntCounterVec::new(
            Opts::new("refreshes_total", "Refresh token rotations by outcome"),
            &["outcome"],
        )?;
        let reuse_detections = IntCounter::new(
            "refresh_reuse_detections_total",
            "Spent refresh tokens presented again (sessions revoked as stolen)",
        )?;
        let rate_limited = IntCounter::new(
            "rate_limited_requests_total",
            "Requests refused with 429 by the brute-force limits",
        )?;
        let pool_connections = IntGauge::new(
            "db_pool_connections",
            "Database connections open in the pool",
        )?;
        let pool_idle = IntGauge::new("db_pool_idle_connections", "Idle database connections")?;
        let claims_hook_failures = IntCounterVec::new(
            Opts::new(
                "claims_hook_failures_total",
                "Failed claims hook calls by failure policy and reason",
            ),
            &["failure", "reason"],
        )?;
        let claims_hook_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "claims_hook_duration_seconds",
                "Claims hook calls, request to whole answer (or failure)",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let outbox_messages = prometheus::IntGaugeVec::new(
            Opts::new(
                "outbox_messages",
                "Outbox messages by kind and state (queued: not yet sent nor given up; \
                 dead: given up), as last counted by the sender",
            ),
            &["kind", "state"],
        )?;
        let outbox_sent = IntCounterVec::new(
            Opts::new(
                "outbox_sent_total",
                "Outbox messages delivered (e-mail without SMTP in dev: logged) by this process",
            ),
            &["kind"],
        )?;
        let outbox_failed_attempts = IntCounterVec::new(
            Opts::new(
                "outbox_failed_attempts_total",
                "Failed outbox delivery attempts (retried or given up) by this process",
            ),
            &["kind"],
        )?;
        let audit_written = IntCounter::new(
            "audit_written_total",
            "Audit events written to the database by this process",
        )?;
        let audit_dropped = IntCounter::new(
            "audit_dropped_total",
            "Audit events lost by this process: its queue was full or the database \
             refused their batch",
        )?;
        registry.register(Box::new(audit_written.clone()))?;
        registry.register(Box::new(audit_dropped.clone()))?;
        let cache_notices = IntCounterVec::new(
            Opts::new(
                "cache_notices_total",
                "Cache invalidation notices this process heard (PostgreSQL), by kind",
            ),
            &["kind"],
        )?;
        let cache_listener_reconnects = IntCounter::new(
            "cache_listener_reconnects_total",
            "Times this process listened for cache invalidation notices again after \
             losing its connection (each flushed its cache)",
        )?;
        registry.register(Box::new(cache_notices.clone()))?;
        registry.register(Box::new(cache_listener_reconnects.clone()))?;
        registry.register(Box::new(outbox_messages.clone()))?;
        registry.register(Box::new(outbox_sent.clone()))?;
        registry.register(Box::new(outbox_failed_attempts.clone()))?;
        for kind in [crate::mail::KIND, crate::webhooks::KIND] {
            for state in ["queued", "dead"] {
                outbox_messages.with_label_values(&[kind, state]);
            }
            outbox_sent.with_label_values(&[kind]);
            outbox_failed_attempts.with_label_values(&[kind]);
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(refreshes.clone()))?;
        registry.register(Box::new(reuse_detections.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(pool_connections.clone()))?;
        registry.register(Box::new(pool_idle.clone()))?;
        registry.register(Box::new(claims_hook_failures.clone()))?;
        registry.register(Box::new(claims_hook_duration.clone()))?;
        // Series that exist from the start, so a dashboard sees zeros.
        for outcome in ["ok", "failed"] {
            logins.with_label_values(&[outcome]);
        }
        for outcome in ["rotated", "replayed", "renewed", "refused"] {
            refreshes.with_label_values(&[outcome]);
        }
        for failure in ["closed", "open"] {
            for reason in CLAIMS_HOOK_FAILURE_REASONS {
                claims_hook_failures.with_label_values(&[failure, reason]);
            }
        }
        Ok(Metrics {
            plain: routes
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.contains('{'))
                .map(|(i, r)| (r.trim_end_matches('/').to_owned(), i))
                .collect(),
            routes,
            registry,
            requests,
            latency,
            logins,
            refreshes,
            reuse_detections,
            rate_limited,
            pool_connections,
            pool_idle,
            claims_hook_failures,
            claims_hook_duration,
            outbox_messages,
            outbox_sent,
            outbox_failed_attempts,
            audit_written,
            audit_dropped,
            cache_notices,
            cache_listener_reconnects,
        })
    }

    /// A bounded label for a request path: its route (both slash forms map
    /// to the route), `/docs/` for the docs pages, or `unmatched`. Plain
    /// string comparisons: actix's `match_pattern` re-runs the router's
    /// regexes.
    pub fn route_label(&self, path: &str) -> &str {
        let bare = path.trim_end_matches('/');
        if let Some(&i) = self.plain.get(bare) {
            return &self.routes[i];
        }
        // Routes with path parameters (`/api/user/sessions/{id}/`), after
        // the plain ones: a parameter stands for any one non-empty segment.
        if let Some(route) = self
            .routes
            .iter()
            .find(|r| r.contains('{') && template_matches(r.trim_end_matches('/'), bare))
        {
            return route;
        }
        if bare == "/docs" || path.starts_with("/docs/") {
            return "/docs/";
        }
        "unmatched"
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        // Clients can invent methods: anything else is one label value.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" => method,
            _ => "other",
        };
        let digits = itoa_status(status);
        let status = std::str::from_utf8(&digits).unwrap_or("000");
        self.requests
            .with_label_values(&[route, method, status])
            .inc();
        self.latency.with_label_values(&[route]).observe(seconds);
        if status == "429" {
            self.rate_limited.inc();
        }
    }

    pub fn login(&self, outcome: LoginOutcome) {
        let label = match outcome {
            LoginOutcome::Ok => "ok",
            LoginOutcome::Failed => "failed",
        };
        self.logins.with_label_values(&[label]).inc();
    }

    pub fn refresh(&self, outcome: RefreshOutcome) {
        let label = match outcome {
            RefreshOutcome::Rotated => "rotated",
            RefreshOutcome::Replayed => "replayed",
            RefreshOutcome::Renewed => "renewed",
            RefreshOutcome::Refused => "refused",
        };
        self.refreshes.with_label_values(&[label]).inc();
    }

    pub fn reuse_detected(&self) {
        self.reuse_detections.inc();
    }

    /// A failed claims hook call: `failure` is the policy applied
    /// (`closed`, `open`), `reason` one of `CLAIMS_HOOK_FAILURE_REASONS`.
    pub fn claims_hook_failure(&self, failure: &str, reason: &str) {
        self.claims_hook_failures
            .with_label_values(&[failure, reason])
            .inc();
    }

    /// How long a claims hook call took (answered or failed).
    pub fn claims_hook_call(&self, seconds: f64) {
        self.claims_hook_duration.observe(seconds);
    }

    /// The outbox's counts of `kind` (`queued`, `dead`).
    pub fn outbox_counts(&self, kind: &str, queued: i64, dead: i64) {
        self.outbox_messages
            .with_label_values(&[kind, "queued"])
            .set(queued);
        self.outbox_messages
            .with_label_values(&[kind, "dead"])
            .set(dead);
    }

    pub fn outbox_sent(&self, kind: &str) {
        self.outbox_sent.with_label_values(&[kind]).inc();
    }

    pub fn outbox_failed_attempt(&self, kind: &str) {
        self.outbox_failed_attempts.with_label_values(&[kind]).inc();
    }

    pub fn audit_written(&self, n: usize) {
        self.audit_written.inc_by(n as u64);
    }

    pub fn audit_dropped(&self, n: usize) {
        self.audit_dropped.inc_by(n as u64);
    }

    pub fn cache_notice(&self, kind: &str) {
        self.cache_notices.with_label_values(&[kind]).inc();
    }

    pub fn cache_listener_reconnected(&self) {
        self.cache_listener_reconnects.inc();
    }

    /// The text exposition, with the pool gauges read now.
    pub fn render(&self, pool: (u32, u32)) -> String {
        self.pool_connections.set(i64::from(pool.0));
        self.pool_idle.set(i64::from(pool.1));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A status code as three ASCII digits, without allocating.
fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

/// Whether `path` (no trailing slash) is a path of route `template` (no
/// trailing slash either), whose `{name}` segments match any one segment.
fn template_matches(template: &str, path: &str) -> bool {
    let mut wanted = template.split('/');
    let mut given = path.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {}
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_bounded_labels() {
        let m = Metrics::new(vec!["/api/token/".into()]).unwrap();
        m.observe_request("/api/token/", "POST", 200, 0.2);
        m.observe_request("/api/token/", "POST", 429, 0.001);
        m.observe_request("unmatched", "FOO1", 405, 0.001);
        m.observe_request("unmatched", "FOO2", 405, 0.001);
        m.login(LoginOutcome::Ok);
        m.refresh(RefreshOutcome::Replayed);
        m.reuse_detected();
        m.claims_hook_failure("open", "timeout");
        m.claims_hook_call(0.03);
        m.outbox_counts("email", 3, 1);
        m.outbox_sent("email");
        m.outbox_failed_attempt("email");
        m.outbox_failed_attempt("email");
        m.audit_written(500);
        m.audit_dropped(2);
        let text = m.render((3, 2));
        for line in [
            r#"tokend_http_requests_total{method="POST",route="/api/token/",status="200"} 1"#,
            r#"tokend_http_requests_total{method="POST",route="/api/token/",status="429"} 1"#,
            r#"tokend_http_requests_total{method="other",route="unmatched",status="405"} 2"#,
            r#"tokend_http_request_duration_seconds_bucket{route="/api/token/",le="0.25"} 2"#,
            r#"tokend_logins_total{outcome="ok"} 1"#,
            r#"tokend_logins_total{outcome="failed"} 0"#,
            r#"tokend_refreshes_total{outcome="replayed"} 1"#,
            "tokend_refresh_reuse_detections_total 1",
            "tokend_rate_limited_requests_total 1",
            "tokend_db_pool_connections 3",
            "tokend_db_pool_idle_connections 2",
            r#"tokend_claims_hook_failures_total{failure="open",reason="timeout"} 1"#,
            // Every series exists from the start.
            r#"tokend_claims_hook_failures_total{failure="closed",reason="reserved_claim"} 0"#,
            r#"tokend_claims_hook_duration_seconds_bucket{le="0.05"} 1"#,
            r#"tokend_outbox_messages{kind="email",state="queued"} 3"#,
            r#"tokend_outbox_messages{kind="email",state="dead"} 1"#,
            r#"tokend_outbox_sent_total{kind="email"} 1"#,
            r#"tokend_outbox_failed_attempts_total{kind="email"} 2"#,
            "tokend_audit_written_total 500",
            "tokend_audit_dropped_total 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains("# TYPE tokend_http_request_duration_seconds histogram"));
    }

    #[test]
    fn route_labels_are_the_routes() {
        let m = Metrics::new(vec!["/api/token/".into(), "/healthz".into()]).unwrap();
        assert_eq!(m.route_label("/api/token/"), "/api/token/");
        assert_eq!(m.route_label("/api/token"), "/api/token/");
        assert_eq!(m.route_label("/healthz"), "/healthz");
        assert_eq!(m.route_label("/docs"), "/docs/");
        assert_eq!(m.route_label("/docs/swagger-ui.css"), "/docs/");
        assert_eq!(m.route_label("/api/token/x/"), "unmatched");
        assert_eq!(m.route_label("/alice"), "unmatched");
        let m = Metrics::new(vec![
            "/api/user/sessions/revoke-others/".into(),
            "/api/user/sessions/{id}/".into(),
        ])
        .unwrap();
        assert_eq!(
            m.route_label("/api/user/sessions/abc"),
            "/api/user/sessions/{id}/"
        );
        assert_eq!(
            m.route_label("/api/user/sessions/revoke-others/"),
            "/api/user/sessions/revoke-others/"
        );
        assert_eq!(m.route_label("/api/user/sessions//"), "unmatched");
        assert_eq!(m.route_label("/api/user/sessions/a/b/"), "unmatched");
    }

    #[test]
    fn status_digits() {
        assert_eq!(&itoa_status(200), b"200");
        assert_eq!(&itoa_status(5), b"005");
    }
}
