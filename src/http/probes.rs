//! Probes that need no authentication: `GET /` (the original's health answer), `GET /health`
//! (liveness) and `GET /ready` (readiness: false while shutting down or at the session cap).
//! Each also answers `HEAD` (what load balancers and many probes send; hyper leaves the body
//! out) and `OPTIONS` (204 with `Allow`).

use actors::runtime::Runtime;
use serde_json::json;
use warp::http::{Method, StatusCode};
use warp::{Filter, Rejection, Reply};

/// `GET /health` in the OpenAPI document (documentation only: the route is in [`routes`]).
#[utoipa::path(get, path = "/health", responses((status = 200, description = "The process is alive", example = json!({"status": "ok"}))))]
#[allow(dead_code)] // only its generated `__path_…` type is used, by the OpenAPI derive
pub fn health_doc() {}

/// `GET /ready` in the OpenAPI document (documentation only: the route is in [`routes`]).
#[utoipa::path(get, path = "/ready", responses(
    (status = 200, description = "Ready for new tasks", example = json!({"ready": true, "reason": null, "sessions": 0})),
    (status = 503, description = "Shutting down, at the session cap or with a degraded callback spool", example = json!({"ready": false, "reason": "shutting down", "sessions": 0}))))]
#[allow(dead_code)] // only its generated `__path_…` type is used, by the OpenAPI derive
pub fn ready_doc() {}

/// The three probe routes.
pub fn routes(
    rt: Runtime,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let root = warp::path::end()
        .and(get_or_head())
        .map(|| warp::reply::json(&super::routes::health()).into_response());
    let health = warp::path!("health")
        .and(get_or_head())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());
    let ready = warp::path!("ready").and(get_or_head()).map(move || {
        let (ready, reason) = rt.readiness();
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = json!({"ready": ready, "reason": reason, "sessions": rt.index().len()});
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    });
    let options = warp::path::end()
        .or(warp::path!("health"))
        .unify()
        .or(warp::path!("ready"))
        .unify()
        .and(warp::method())
        .and_then(|method: Method| async move {
            if method == Method::OPTIONS {
                Ok(allow())
            } else {
                Err(warp::reject::not_found())
            }
        });
    root.or(health)
        .unify()
        .or(ready)
        .unify()
        .or(options)
        .unify()
}

/// `GET` or `HEAD`: a probe may send either.
fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// The `OPTIONS` answer of a probe route.
fn allow() -> warp::reply::Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        warp::http::header::ALLOW,
        warp::http::HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    r
}
