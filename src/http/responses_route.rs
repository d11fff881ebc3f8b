//! `POST /v1/responses`, Wegent's current front door (research/responses-protocol.md §1), and the
//! Responses-protocol answers of `POST /api/tasks/cancel` (§2.4). The request is decoded into
//! the same `TaskSpec` as `/api/tasks/execute` (see [`super::responses_request`]) and tagged with
//! its protocol, so the callback relay encodes the subtask's events as Responses-API events.

use std::time::Duration;

use actors::protocol::{CreatedAck, Protocol};
use actors::runtime::Runtime;
use actors::supervisor::{CancelOutcome, ExecuteOutcome};
use actors::task::TaskSpec;
use serde::Serialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::body::{json_body, BodyLimits};
use super::error::ApiError;

/// Longest the answer waits for the subtask's `response.created` to be delivered (upstream
/// answers only after it was posted). Below executor_manager's 10 s dispatch timeout, so a slow
/// receiver never makes the manager re-submit; the subtask runs and ends either way.
pub const CREATED_WAIT: Duration = Duration::from_secs(5);

/// Answer of `POST /v1/responses` (§1.3).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResponsesAnswer {
    /// `resp_<subtask_id>` (not the `response.id` of the events, as upstream).
    pub id: String,
    /// `queued` for a `background` request, else `RUNNING` / `FAILED`.
    pub status: String,
    /// `Task execution status: RUNNING` or `... FAILED` (one space, as upstream).
    pub message: String,
}

/// Answer of a Responses-protocol cancel (ids as strings, as upstream).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelAnswer {
    /// `success`.
    pub status: String,
    /// The task.
    pub task_id: String,
    /// The subtask that was running.
    pub subtask_id: String,
}

/// The `/v1/responses` route.
pub fn route(
    rt: Runtime,
    limits: BodyLimits,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "responses")
        .and(warp::post())
        .and(json_body(limits))
        .and(warp::header::optional::<String>("x-request-id"))
        .and(warp::header::optional::<String>("traceparent"))
        .and(warp::any().map(move || rt.clone()))
        .and_then(create)
}

/// Run a subtask sent in Wegent's current protocol; its events go to CALLBACK_URL as
/// Responses-API events.
#[utoipa::path(post, path = "/v1/responses", request_body(content = serde_json::Value,
        description = "OpenAI Responses request; the task dict rides in `metadata`"),
    responses((status = 200, body = ResponsesAnswer), (status = 400, body = super::error::ErrorBody, description = "Not JSON, or not an object"),
              (status = 413, body = super::error::ErrorBody, description = "Body over the limit"),
              (status = 422, body = super::error::ErrorBody, description = "Wrong shape or types"),
              (status = 429, body = super::error::ErrorBody, description = "Session cap reached; see Retry-After"),
              (status = 503, body = super::error::ErrorBody, description = "Shutting down")))]
pub async fn create(
    body: serde_json::Value,
    request_id: Option<String>,
    traceparent: Option<String>,
    rt: Runtime,
) -> Result<warp::reply::Response, Rejection> {
    let reject = |e: ApiError| warp::reject::custom(e);
    if rt.is_shutting_down() {
        return Err(reject(ApiError::Unavailable(
            "the executor is shutting down; send the task to another executor".into(),
        )));
    }
    let decoded = super::responses_request::decode(&body).map_err(reject)?;
    let mut spec = TaskSpec::from_value(&decoded.task)
        .map_err(|e| reject(ApiError::Unprocessable(e.to_string())))?;
    let (ack, created) = CreatedAck::channel();
    let mut identity = decoded.identity;
    identity.created_ack = ack;
    spec.protocol = Protocol::Responses(Box::new(identity));
    let rid = super::routes::attach_trace(&mut spec, request_id, traceparent);
    let (task_id, subtask_id) = (spec.task_id, spec.subtask_id);
    tracing::info!(
        "Received task {task_id}.{subtask_id} ({}, /v1/responses)",
        spec.agent.name()
    );
    let outcome = rt
        .execute(spec)
        .await
        .map_err(|e| reject(ApiError::from(e)))?;
    let status = match outcome {
        ExecuteOutcome::Running => "RUNNING",
        ExecuteOutcome::Failed(_) => "FAILED",
        ExecuteOutcome::AtCapacity(cap) => return Err(reject(ApiError::AtCapacity(cap))),
    };
    // `response.created` before the answer, as upstream, but bounded: a receiver that is down
    // delays the answer by CREATED_WAIT at most, and the subtask still gets its terminal.
    let _ = tokio::time::timeout(CREATED_WAIT, created).await;
    let answer = ResponsesAnswer {
        id: format!("resp_{subtask_id}"),
        status: if decoded.background { "queued" } else { status }.into(),
        message: format!("Task execution status: {status}"),
    };
    let mut reply = warp::reply::json(&answer).into_response();
    if let Ok(v) = warp::http::HeaderValue::from_str(&rid) {
        reply.headers_mut().insert("x-request-id", v);
    }
    Ok(reply)
}

/// True when a cancel is about a Responses-protocol subtask: the running subtask came in on
/// `/v1/responses`, or (nothing running) the caller named a subtask, which only Wegent's
/// current executor_manager does.
pub fn speaks_responses(rt: &Runtime, task_id: i64, subtask_id: Option<i64>) -> bool {
    match rt.index().get(task_id).and_then(|s| s.current) {
        Some(current) => current.protocol.responses().is_some(),
        None => subtask_id.is_some(),
    }
}

/// Cancels a Responses-protocol subtask: 200 `{"status":"success","task_id":"T","subtask_id":"S"}`
/// once the agent took the cancel (the subtask then ends with one `response.incomplete`), 404
/// `{"detail":"task T is not running"}` when nothing runs.
pub async fn cancel(
    task_id: i64,
    subtask_id: Option<i64>,
    rt: Runtime,
) -> Result<warp::reply::Response, Rejection> {
    let not_running = || {
        let body = warp::reply::json(&json!({"detail": format!("task {task_id} is not running")}));
        Ok(warp::reply::with_status(body, StatusCode::NOT_FOUND).into_response())
    };
    let Some(current) = rt.index().get(task_id).and_then(|s| s.current) else {
        return not_running();
    };
    let key = (task_id, current.subtask_id);
    if cancelled().contains(&key) {
        // Its `response.incomplete` is out; the session only drains the interrupted turn.
        return not_running();
    }
    match rt
        .cancel(task_id)
        .await
        .map_err(|e| warp::reject::custom(ApiError::from(e)))?
    {
        CancelOutcome::Cancelled { busy: true } => {
            remember_cancelled(key);
            Ok(warp::reply::json(&CancelAnswer {
                status: "success".into(),
                task_id: task_id.to_string(),
                subtask_id: subtask_id.unwrap_or(current.subtask_id).to_string(),
            })
            .into_response())
        }
        _ => not_running(),
    }
}

/// Most cancelled subtasks remembered (so a repeated cancel of one answers 404, as upstream).
const CANCELLED_MEMORY: usize = 1024;

static CANCELLED: std::sync::Mutex<std::collections::VecDeque<(i64, i64)>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

fn cancelled() -> std::sync::MutexGuard<'static, std::collections::VecDeque<(i64, i64)>> {
    CANCELLED.lock().unwrap_or_else(|e| e.into_inner())
}

fn remember_cancelled(key: (i64, i64)) {
    let mut c = cancelled();
    if c.len() == CANCELLED_MEMORY {
        c.pop_front();
    }
    c.push_back(key);
}
