//! The warp frontend: turns HTTP requests into runtime calls and errors into JSON answers.

pub mod auth;
pub mod body;
pub mod docs;
pub mod error;
pub mod events;
pub mod metrics;
pub mod probes;
pub mod routes;

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
        if info.path() != "/" {
            let rid = info
                .request_headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| valid_request_id(v))
                .unwrap_or("-");
            tracing::info!(
                "[{rid}] response: {} {} {} {:.2}ms",
                info.method(),
                info.path(),
                info.status().as_u16(),
                info.elapsed().as_secs_f64() * 1000.0
            );
        }
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
    warp::header::optional::<String>("x-request-id")
        .or(warp::any().map(|| None))
        .unify()
        .and(routes)
        .map(|id: Option<String>, r: warp::reply::Response| {
            // X-Request-ID in and out: a caller's id is echoed, otherwise one is made up.
            let id = id
                .filter(|v| valid_request_id(v))
                .unwrap_or_else(new_request_id);
            let mut r = r.into_response();
            // A handler that already chose the id (execute: it travels on the callbacks) wins.
            if !r.headers().contains_key("x-request-id") {
                if let Ok(v) = warp::http::HeaderValue::from_str(&id) {
                    r.headers_mut().insert("x-request-id", v);
                }
            }
            r
        })
        .with(log)
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
