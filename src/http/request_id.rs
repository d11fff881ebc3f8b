//! The request id of the request being handled, for every log line it produces: each request
//! runs in a tracing span, and the id chosen for it (the caller's `X-Request-ID`, or a new one)
//! is kept here under that span's id until the request's last log line.

use std::sync::LazyLock;

use dashmap::DashMap;
use tracing::Span;

static IDS: LazyLock<DashMap<u64, String>> = LazyLock::new(DashMap::new);

/// The span a request runs in; remembers its id.
pub fn span_for(info: &warp::trace::Info<'_>) -> Span {
    let rid = info
        .request_headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| super::valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(super::new_request_id);
    let span = tracing::info_span!("request", request_id = %rid);
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
