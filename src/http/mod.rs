//! The warp frontend: turns HTTP requests into runtime calls and errors into JSON answers.

pub mod auth;
pub mod body;
pub mod conn;
pub mod docs;
pub mod error;
pub mod events;
pub mod metrics;
pub mod probes;
pub mod request_id;
pub mod responses_request;
pub mod responses_route;
pub mod routes;
pub mod server;

use actors::runtime::Runtime;
use warp::{Filter, Reply};

/// The whole HTTP surface: API routes, docs, error mapping and a log line per request.
pub fn service(
    rt: Runtime,
    limits: body::BodyLimits,
    token: Option<std::sync::Arc<actors::config::Secret>>,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let log = warp::log::custom(|info| {
        actors::metrics::METRICS
            .http
            .observe(info.elapsed().as_secs_f64());
        // The original's access line, one per request (not for `GET /`, as the original):
        // `response: {METHOD} {path} {request_id} {status} {ms:.2}ms`.
        tracing::Span::current().record("http.response.status_code", info.status().as_u16());
        if info.path() != "/" {
            tracing::info!(
                "response: {} {} {} {} {:.2}ms",
                info.method(),
                info.path(),
                request_id::current().as_deref().unwrap_or("-"),
                info.status().as_u16(),
                info.elapsed().as_secs_f64() * 1000.0
            );
        }
        request_id::finish();
    });
    let protected = auth::require(token).and(
        routes::api(rt.clone(), limits)
            .or(docs::routes())
            .unify()
            .or(metrics::route(rt.clone()))
            .unify()
            .or(events::route(rt.clone()))
            .unify(),
    );
    let routes = probes::routes(rt)
        .or(protected)
        .unify()
        .recover(error::recover)
        .unify();
    routes
        .map(|r: warp::reply::Response| {
            // X-Request-ID in and out: the request's id (the caller's, or a new one).
            let mut r = r.into_response();
            let id = request_id::current().unwrap_or_else(new_request_id);
            if let Ok(v) = warp::http::HeaderValue::from_str(&id) {
                r.headers_mut().insert("x-request-id", v);
            }
            r
        })
        .with(log)
        // Every log line of a request carries its id (see `request_id` and the log format).
        .with(warp::trace(|info| request_id::span_for(&info)))
}

/// Accepts caller ids that are short and printable (they are echoed and logged).
pub(crate) fn valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// An 8-hex-digit id, like the original's `uuid4()[:8]`.
pub(crate) fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{:08x}",
        (t ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & 0xffff_ffff
    )
}
