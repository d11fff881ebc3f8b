//! The warp frontend: turns HTTP requests into runtime calls and errors into JSON answers.

pub mod body;
pub mod docs;
pub mod error;
pub mod routes;

use actors::runtime::Runtime;
use warp::{Filter, Reply};

/// The whole HTTP surface: API routes, docs, error mapping and a log line per request.
pub fn service(
    rt: Runtime,
    limits: body::BodyLimits,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let log = warp::log::custom(|info| {
        if info.path() != "/" {
            tracing::info!(
                "response: {} {} {} {:.2}ms",
                info.method(),
                info.path(),
                info.status().as_u16(),
                info.elapsed().as_secs_f64() * 1000.0
            );
        }
    });
    routes::api(rt, limits)
        .or(docs::routes())
        .unify()
        .recover(error::recover)
        .unify()
        .map(|r: warp::reply::Response| r.into_response())
        .with(log)
}
