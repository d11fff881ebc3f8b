//! The routes of the original executor (contract §2), doing what the original meant.

use actors::runtime::Runtime;
use actors::supervisor::{CancelOutcome, CloseScope, ExecuteOutcome};
use actors::task::{AgentKind, TaskSpec};
use serde::Serialize;
use serde_json::{json, Value};
use warp::{Filter, Rejection, Reply};

use super::body::{cancel_query, json_body, task_id_query, BodyLimits};
use super::error::ApiError;

/// Answer of `POST /api/tasks/execute` (contract §2.3).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskResponse {
    /// The task's id.
    pub task_id: i64,
    /// The subtask's id (-1 when the request had none).
    pub subtask_id: i64,
    /// `RUNNING` when accepted, `FAILED` when refused (see the callbacks for why).
    pub status: String,
    /// `Task execution status  : <status>` (two spaces, as the original).
    pub message: String,
    /// 50 for RUNNING, 100 for COMPLETED (synchronous agents), 0 otherwise.
    pub progress: u8,
}

/// Answer of the session and cancel routes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageResponse {
    /// What happened.
    pub message: String,
    /// How many sessions were closed (close routes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<usize>,
}

fn with_rt(
    rt: Runtime,
) -> impl Filter<Extract = (Runtime,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || rt.clone())
}

/// Every API route (paths first, then methods, so an unknown path is 404 and not 405).
pub fn api(
    rt: Runtime,
    limits: BodyLimits,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let responses = super::responses_route::route(rt.clone(), limits);
    let execute = warp::path!("api" / "tasks" / "execute")
        .and(warp::post())
        .and(json_body(limits))
        .and(warp::header::optional::<String>("x-request-id"))
        .and(warp::header::optional::<String>("traceparent"))
        .and(with_rt(rt.clone()))
        .and_then(execute);
    let cancel = warp::path!("api" / "tasks" / "cancel")
        .and(warp::post())
        .and(cancel_query())
        .and(with_rt(rt.clone()))
        .and_then(cancel);
    let list = warp::path!("api" / "tasks" / "sessions")
        .and(warp::get())
        .and(with_rt(rt.clone()))
        .map(list_sessions);
    let delete_one = warp::path!("api" / "tasks" / "session")
        .and(warp::delete())
        .and(task_id_query())
        .and(with_rt(rt.clone()))
        .and_then(delete_session);
    let close_claude = warp::path!("api" / "tasks" / "claude" / "sessions")
        .and(warp::delete())
        .and(with_rt(rt.clone()))
        .and_then(close_claude_sessions);
    let close_all = warp::path!("api" / "tasks" / "sessions" / "close")
        .and(warp::delete())
        .and(with_rt(rt))
        .and_then(close_all_sessions);
    execute
        .or(responses)
        .unify()
        .or(cancel)
        .unify()
        .or(list)
        .unify()
        .or(delete_one)
        .unify()
        .or(close_claude)
        .unify()
        .or(close_all)
        .unify()
}

/// Health check.
#[utoipa::path(get, path = "/", responses((status = 200, description = "Service is up", example = json!({"status": "healthy", "service": "task_executor"}))))]
pub fn health() -> Value {
    json!({"status": "healthy", "service": "task_executor"})
}

/// Run a subtask: Wegent's task dict or the seed guide's body. Answers at once; progress goes to CALLBACK_URL.
#[utoipa::path(post, path = "/api/tasks/execute", request_body(content = crate::http::docs::TaskRequest),
    responses((status = 200, body = TaskResponse), (status = 400, body = super::error::ErrorBody, description = "Not JSON"),
              (status = 413, body = super::error::ErrorBody, description = "Body over the limit"),
              (status = 422, body = super::error::ErrorBody, description = "Wrong shape or types"),
              (status = 429, body = super::error::ErrorBody, description = "Session cap reached; see Retry-After"),
              (status = 503, body = super::error::ErrorBody, description = "Shutting down")))]
pub async fn execute(
    body: Value,
    request_id: Option<String>,
    traceparent: Option<String>,
    rt: Runtime,
) -> Result<warp::reply::Response, Rejection> {
    if rt.is_shutting_down() {
        return Err(warp::reject::custom(ApiError::Unavailable(
            "the executor is shutting down; send the task to another executor".into(),
        )));
    }
    let spec = TaskSpec::from_value(&body)
        .map_err(|e| warp::reject::custom(ApiError::Unprocessable(e.to_string())))?;
    let mut spec = spec;
    let (task_id, subtask_id) = (spec.task_id, spec.subtask_id);
    let rid = attach_trace(&mut spec, request_id, traceparent);
    tracing::info!(
        "Received task {task_id}.{subtask_id} ({})",
        spec.agent.name()
    );
    // Dify and the validator answer with the final status (§13.1): only this request waits.
    let sync = spec
        .agent
        .is_synchronous()
        .then(|| rt.events().subscribe(task_id, u64::MAX).1);
    let outcome = rt
        .execute(spec)
        .await
        .map_err(|e| warp::reject::custom(ApiError::from(e)))?;
    let (status, progress) = match outcome {
        ExecuteOutcome::Running => match sync {
            Some(sub) => {
                let limit = actors::final_status::WAIT_LIMIT;
                match actors::final_status::wait_final(sub, subtask_id, limit).await {
                    Some(actors::payload::TaskStatus::Completed) => ("COMPLETED", 100),
                    Some(s) => (s.as_str(), 0),
                    None => ("RUNNING", 50),
                }
            }
            None => ("RUNNING", 50),
        },
        ExecuteOutcome::Failed(_) => ("FAILED", 0),
        ExecuteOutcome::AtCapacity(cap) => {
            return Err(warp::reject::custom(ApiError::AtCapacity(cap)));
        }
    };
    let resp = TaskResponse {
        task_id,
        subtask_id,
        status: status.into(),
        message: format!("Task execution status  : {status}"),
        progress,
    };
    let mut reply = warp::reply::json(&resp).into_response();
    if let Ok(v) = warp::http::HeaderValue::from_str(&rid) {
        reply.headers_mut().insert("x-request-id", v);
    }
    Ok(reply)
}

/// Gives a subtask its request id (the caller's, or a new one) and W3C trace context, which
/// travel with every callback of it; returns the request id.
pub(crate) fn attach_trace(
    spec: &mut TaskSpec,
    request_id: Option<String>,
    traceparent: Option<String>,
) -> String {
    let rid = super::request_id::current()
        .or(request_id.filter(|v| super::valid_request_id(v)))
        .unwrap_or_else(super::new_request_id);
    spec.trace = actors::payload::TraceContext {
        request_id: Some(rid.clone()),
        traceparent: traceparent.filter(|t| super::valid_request_id(t)),
        // A child of this request's span (which continues the caller's `traceparent`).
        span: crate::telemetry::child_of_current(actors::trace::subtask_span(
            spec.task_id,
            spec.subtask_id,
            spec.agent.name(),
        )),
    };
    rid
}

/// Cancel the running subtask of a task (the next subtask still works).
/// A subtask that came in on `/v1/responses` is answered as upstream's current executor does
/// (200 `{status, task_id, subtask_id}` / 404), and ends with one `response.incomplete`.
#[utoipa::path(post, path = "/api/tasks/cancel", params(("task_id" = i64, Query, description = "Task to cancel"),
        ("subtask_id" = Option<i64>, Query, description = "Subtask to cancel (Responses protocol)")),
    responses((status = 200, body = MessageResponse), (status = 400, body = super::error::ErrorBody, description = "No session for that task"),
              (status = 404, body = super::error::ErrorBody, description = "Responses protocol: nothing running"),
              (status = 422, body = super::error::ErrorBody, description = "task_id missing or not an integer")))]
pub async fn cancel(
    (task_id, subtask_id): (i64, Option<i64>),
    rt: Runtime,
) -> Result<warp::reply::Response, Rejection> {
    if super::responses_route::speaks_responses(&rt, task_id, subtask_id) {
        return super::responses_route::cancel(task_id, subtask_id, rt).await;
    }
    let label = format!("[task_id: {task_id}.-1]");
    match rt
        .cancel(task_id)
        .await
        .map_err(|e| warp::reject::custom(ApiError::from(e)))?
    {
        CancelOutcome::NoSession => Err(warp::reject::custom(ApiError::NoSessionToCancel(
            format!("{label} No session found"),
        ))),
        CancelOutcome::Cancelled { busy } => {
            let message = if busy {
                format!("{label} Task cancelled")
            } else {
                format!("{label} Task cancelled (nothing was running)")
            };
            Ok(warp::reply::json(&MessageResponse {
                message,
                closed: None,
            })
            .into_response())
        }
    }
}

/// List live sessions.
#[utoipa::path(get, path = "/api/tasks/sessions", responses((status = 200, body = crate::http::docs::SessionList)))]
pub fn list_sessions(rt: Runtime) -> warp::reply::Response {
    let sessions = rt.index().list();
    warp::reply::json(&json!({"total": sessions.len(), "sessions": sessions})).into_response()
}

/// End one task's session and its processes.
#[utoipa::path(delete, path = "/api/tasks/session", params(("task_id" = i64, Query, description = "Task whose session to end")),
    responses((status = 200, body = MessageResponse), (status = 404, body = super::error::ErrorBody, description = "No session for that task"),
              (status = 422, body = super::error::ErrorBody, description = "task_id missing or not an integer")))]
pub async fn delete_session(task_id: i64, rt: Runtime) -> Result<warp::reply::Response, Rejection> {
    let label = format!("[task_id: {task_id}.-1]");
    let n = rt
        .close(CloseScope::Task(task_id), "session deleted")
        .await
        .map_err(|e| warp::reject::custom(ApiError::from(e)))?;
    if n == 0 {
        return Err(warp::reject::custom(ApiError::NotFound(format!(
            "{label} No session found"
        ))));
    }
    Ok(warp::reply::json(&MessageResponse {
        message: format!("{label} Session deleted"),
        closed: Some(n),
    })
    .into_response())
}

/// End every Claude Code session.
#[utoipa::path(delete, path = "/api/tasks/claude/sessions", responses((status = 200, body = MessageResponse)))]
pub async fn close_claude_sessions(rt: Runtime) -> Result<warp::reply::Response, Rejection> {
    let n = rt
        .close(
            CloseScope::Kind(AgentKind::ClaudeCode),
            "all Claude sessions closed",
        )
        .await
        .map_err(|e| warp::reject::custom(ApiError::from(e)))?;
    let message = "All Claude sessions closed successfully".to_string();
    Ok(warp::reply::json(&MessageResponse {
        message,
        closed: Some(n),
    })
    .into_response())
}

/// End every session.
#[utoipa::path(delete, path = "/api/tasks/sessions/close", responses((status = 200, body = MessageResponse)))]
pub async fn close_all_sessions(rt: Runtime) -> Result<warp::reply::Response, Rejection> {
    let n = rt
        .close(CloseScope::All, "all agent sessions closed")
        .await
        .map_err(|e| warp::reject::custom(ApiError::from(e)))?;
    let message = "All agent sessions closed successfully".to_string();
    Ok(warp::reply::json(&MessageResponse {
        message,
        closed: Some(n),
    })
    .into_response())
}
