//! The one table of routing and query errors (404 unknown route, 405 wrong method, 422 bad
//! `task_id` query) and the check that runs it; every error is a JSON `{"detail": ...}`.

use reqwest::Method;
use serde_json::Value;

use super::executor_process::parse_body;
use super::Executor;

/// One request and the answer it must get.
#[derive(Debug, Clone)]
pub struct RouteCase {
    /// Method (including a made-up one).
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Expected status.
    pub status: u16,
    /// Text the `detail` must contain (empty: any string).
    pub detail_names: &'static str,
}

/// Routes that must not exist, methods a known route does not take, and malformed `task_id`
/// queries on both query routes.
pub fn route_error_cases() -> Vec<RouteCase> {
    let brew = Method::from_bytes(b"BREW").unwrap();
    #[rustfmt::skip]
    let fixed: Vec<(Method, &str, u16)> = vec![
        (Method::GET, "/no/such/route", 404),
        (Method::POST, "/api/tasks/nope", 404),
        (Method::POST, "/api/tasks/executes", 404),
        (Method::GET, "/api/tasks", 404),
        (Method::GET, "/api/tasks/execute/extra", 404),
        (Method::GET, "/api/tasks/execute%00", 404),
        (Method::GET, "/docs/no-such-file.js", 404),
        (Method::GET, "/%F0%9F%A6%80/..%2F..%2Fetc%2Fpasswd", 404),
        (Method::GET, "/api/tasks/execute", 405),
        (Method::PATCH, "/api/tasks/execute", 405),
        (Method::PUT, "/api/tasks/sessions", 405),
        (brew, "/api/tasks/sessions", 405),
        (Method::GET, "/api/tasks/cancel?task_id=1", 405),
        (Method::POST, "/api/tasks/session?task_id=1", 405),
        (Method::GET, "/api/tasks/sessions/close", 405),
        (Method::PUT, "/", 405),
        (Method::DELETE, "/", 405),
    ];
    let mut cases: Vec<RouteCase> = fixed
        .into_iter()
        .map(|(method, path, status)| RouteCase {
            method,
            path: path.to_string(),
            status,
            detail_names: "",
        })
        .collect();
    let queries = [
        "",
        "?task_id",
        "?task_id=",
        "?task_id=abc",
        "?task_id=1.5",
        "?taskid=1",
        "?other=1",
        "?task_id=9223372036854775808",
    ];
    for (method, route) in [
        (Method::POST, "/api/tasks/cancel"),
        (Method::DELETE, "/api/tasks/session"),
    ] {
        for query in queries {
            cases.push(RouteCase {
                method: method.clone(),
                path: format!("{route}{query}"),
                status: 422,
                detail_names: "task_id",
            });
        }
    }
    cases
}

/// Sends every case of [`route_error_cases`] and asserts the exact status and a JSON object
/// body whose string `detail` names what it must.
pub async fn assert_route_errors(exec: &Executor) {
    let client = exec.client();
    for case in route_error_cases() {
        let what = format!("{} {}", case.method, case.path);
        let resp = client
            .request(case.method.clone(), exec.url(&case.path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status().as_u16();
        let body = parse_body(&resp.bytes().await.unwrap());
        assert_eq!(
            status,
            case.status,
            "{what}: {body}\n{}",
            exec.logs_tail(20)
        );
        let detail = body
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{what}: error body without a string `detail`: {body}"));
        assert!(
            detail.contains(case.detail_names),
            "{what}: the detail should name `{}`: {detail:?}",
            case.detail_names
        );
    }
}
