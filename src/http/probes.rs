//! Probes that need no authentication: `GET /` (the original's health answer), `GET /health`
//! (liveness) and `GET /ready` (readiness: false while shutting down or at the session cap).

use actors::runtime::Runtime;
use serde_json::json;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// The three probe routes.
pub fn routes(
    rt: Runtime,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let root = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::json(&super::routes::health()).into_response());
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());
    let ready = warp::path!("ready").and(warp::get()).map(move || {
        let (ready, reason) = rt.readiness();
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = json!({"ready": ready, "reason": reason, "sessions": rt.index().len()});
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    });
    root.or(health).unify().or(ready).unify()
}
