//! The request id of the request being handled, for every log line it produces: each request
//! runs in a tracing span, and the id chosen for it (the caller's `X-Request-ID`, or a new one)
//! is kept here under that span's id until the request's last log line.

use std::sync::LazyLock;

use dashmap::DashMap;
use tracing::Span;

/// Longest `tracestate` header passed on (W3C: at most 32 entries of ~256 bytes).
const MAX_TRACESTATE_BYTES: usize = 8192;

static IDS: LazyLock<DashMap<u64, String>> = LazyLock::new(DashMap::new);

/// Paths polled by probes and scrapers: their spans are named [`PROBE_SPAN`] and not exported.
const PROBE_PATHS: [&str; 4] = ["/", "/health", "/ready", "/metrics"];
/// Span name of probe requests (the OpenTelemetry layer skips it).
pub const PROBE_SPAN: &str = "probe";

/// The span a request runs in; remembers its id. It continues the caller's W3C `traceparent`
/// (OpenTelemetry), and is named by method and path for the trace view.
pub fn span_for(info: &warp::trace::Info<'_>) -> Span {
    let rid = info
        .request_headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| super::valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(super::new_request_id);
    let (method, path) = (info.method().as_str(), info.path());
    let span = if PROBE_PATHS.contains(&path) {
        tracing::info_span!("probe", request_id = %rid)
    } else {
        tracing::info_span!("request", request_id = %rid,
            otel.name = %format!("{method} {path}"), otel.kind = "server",
            http.request.method = %method, url.path = %path,
            http.response.status_code = tracing::field::Empty)
    };
    let header = |name: &str| {
        info.request_headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_TRACESTATE_BYTES)
    };
    crate::telemetry::continue_trace(&span, header("traceparent"), header("tracestate"));
    if let Some(id) = span.id() {
        IDS.insert(id.into_u64(), rid);
    }
    span
}

/// The id of the request whose span is current, if any.
pub fn current() -> Option<String> {
    let id = Span::current().id()?;
    IDS.get(&id.into_u64()).map(|r| r.value().clone())
}

/// The id for a span id (used by the log formatter).
pub fn for_span(span_id: u64) -> Option<String> {
    IDS.get(&span_id).map(|r| r.value().clone())
}

/// Forgets the current request's id (after its last log line).
pub fn finish() {
    if let Some(id) = Span::current().id() {
        IDS.remove(&id.into_u64());
    }
}
