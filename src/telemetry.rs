//! Logging: a tracing subscriber and one line per request (method, path,
//! status, latency, request id). Paths are logged without their query string
//! and no header or body is ever logged, so tokens and passwords cannot leak
//! into logs.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;
use crate::metrics::Metrics;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Installs the global subscriber (once; later calls are ignored). RUST_LOG
/// wins over the configured level. The server logs to stdout; the other
/// commands log to stderr, keeping their stdout for their output.
pub fn init(settings: &LogSettings, to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(move || -> Box<dyn std::io::Write> {
            if to_stderr {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            }
        });
    let _ = if settings.format == crate::config::LogFormat::Json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The id of the request being served, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn new_request_id() -> String {
    crate::auth::random_hex::<8>()
}

pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = new_request_id();
    // Handlers read it to record it (see `routes::origin`).
    actix_web::HttpMessage::extensions_mut(&req).insert(RequestId(request_id.clone()));
    let mut res = next.call(req).await?;
    let status = res.status().as_u16();
    let (method, path) = (res.request().method(), res.request().path());
    if let Some(metrics) = res.request().app_data::<actix_web::web::Data<Metrics>>() {
        metrics.observe_request(
            metrics.route_label(path),
            method.as_str(),
            status,
            started.elapsed().as_secs_f64(),
        );
    }
    // Microsecond resolution is plenty; fewer digits keep lines short.
    let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    tracing::info!(
        request_id = %request_id,
        method = %method,
        path = %path,
        status,
        latency_ms,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(res)
}
