//! A mock of Dify's app API for the Dify agent's end-to-end tests, speaking Dify's wire format:
//! - every route checks `Authorization: Bearer <key>` (else 401
//!   `{"code":"unauthorized","message":"Access token is invalid","status":401}`);
//! - `GET /v1/info` → `{"name","description","tags","mode"}` (mode set by [`MockDify::start`]);
//! - `POST /v1/chat-messages` (streaming) → SSE `data: {json}` lines: an `event: ping`, then
//!   `message` and `agent_message` events (each with `task_id`, `message_id`,
//!   `conversation_id`, `answer`), then `message_end`. The answer is
//!   `Echo: <query> (turn N)`, N = how many messages the conversation holds with this one (a
//!   request without `conversation_id` opens a new conversation `conv-<n>`). Queries with
//!   `FAIL500` get HTTP 500, `ERROREVENT` one message then an `error` event, `EMPTY` only
//!   `message_end`, `SLOW` [`SLOW_CHUNKS`] chunks [`SLOW_DELAY`] apart (ended early by stop);
//! - `POST /v1/workflows/run` (streaming) → `workflow_started`, `node_started`,
//!   `node_finished`, `workflow_finished` with `data.outputs = {"answer": "Workflow: <query>",
//!   "inputs": <inputs>}`;
//! - `POST /v1/chat-messages/{task_id}/stop`, `POST /v1/workflows/tasks/{task_id}/stop`
//!   → `{"result":"success"}`, recorded, and the stream of that task ends.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use warp::Filter;

use super::server::{response, wait_on_events, BackgroundServer, Handler};

/// Chunks of a `SLOW` answer.
pub const SLOW_CHUNKS: usize = 40;
/// Pause between two chunks of a `SLOW` answer.
pub const SLOW_DELAY: Duration = Duration::from_millis(250);

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct DifyRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The path (`/v1/chat-messages`, …).
    pub path: String,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// The JSON body (`Null` for none).
    pub body: Value,
}

#[derive(Default)]
struct State {
    key: String,
    mode: String,
    requests: Mutex<Vec<DifyRequest>>,
    /// conversation id → messages so far.
    conversations: Mutex<HashMap<String, usize>>,
    /// Dify task ids a stop request named.
    stopped: Mutex<HashSet<String>>,
    seq: Mutex<u64>,
    events: watch::Sender<u64>,
}

/// The mock server; dropping it stops it.
pub struct MockDify {
    state: Arc<State>,
    server: BackgroundServer,
}

impl MockDify {
    /// Starts a mock app of `mode` (`chat`, `agent-chat`, `workflow`, …) accepting `key`.
    pub fn start(mode: &str, key: &str) -> MockDify {
        let state = Arc::new(State {
            key: key.to_string(),
            mode: mode.to_string(),
            ..Default::default()
        });
        let server = BackgroundServer::start("mock-dify", 0, handler(state.clone()))
            .unwrap_or_else(|e| panic!("mock dify: cannot bind 127.0.0.1:0: {e}"));
        MockDify { state, server }
    }

    /// `DIFY_BASE_URL` for this mock (`http://127.0.0.1:<port>`, no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.addr().port())
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<DifyRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests to `path`, in order.
    pub fn requests_to(&self, path: &str) -> Vec<DifyRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Stop requests so far (`(path, body)`).
    pub fn stop_requests(&self) -> Vec<DifyRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/stop"))
            .collect()
    }

    /// Waits (woken per request) until `pred` holds for the request log; panics on timeout.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[DifyRequest]) -> bool,
    ) -> Vec<DifyRequest> {
        wait_on_events(&self.state.events, timeout, || {
            let r = self.requests();
            pred(&r).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("mock dify: condition not met; requests:\n{}", self.dump()))
    }

    /// One line per request, for panic messages.
    pub fn dump(&self) -> String {
        self.requests()
            .iter()
            .map(|r| format!("  {} {} {}", r.method, r.path, r.body))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn handler(state: Arc<State>) -> Handler {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::bytes())
        .map(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  auth: Option<String>,
                  body: Bytes| handle(&state, method, path.as_str(), auth, &body),
        )
        .boxed()
}

fn dify_error(status: u16, code: &str, message: &str) -> warp::reply::Response {
    let body = json!({"code": code, "message": message, "status": status});
    response(status, "application/json", body.to_string(), &[])
}

fn next(state: &State) -> u64 {
    let mut s = state.seq.lock().unwrap();
    *s += 1;
    *s
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn handle(
    state: &Arc<State>,
    method: warp::http::Method,
    path: &str,
    auth: Option<String>,
    raw: &Bytes,
) -> warp::reply::Response {
    let body = serde_json::from_slice::<Value>(raw).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(DifyRequest {
        method: method.to_string(),
        path: path.to_string(),
        authorization: auth.clone(),
        body: body.clone(),
    });
    state.events.send_modify(|v| *v += 1);
    if auth.as_deref() != Some(&format!("Bearer {}", state.key)) {
        return dify_error(401, "unauthorized", "Access token is invalid");
    }
    let get = method == warp::http::Method::GET;
    match path {
        "/v1/info" if get => {
            let info =
                json!({"name": "mock app", "description": "", "tags": [], "mode": state.mode});
            response(200, "application/json", info.to_string(), &[])
        }
        "/v1/chat-messages" if !get => chat(state, &body),
        "/v1/workflows/run" if !get => workflow(state, &body),
        p if !get && p.ends_with("/stop") => {
            let id = p
                .trim_end_matches("/stop")
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            state.stopped.lock().unwrap().insert(id);
            state.events.send_modify(|v| *v += 1);
            response(
                200,
                "application/json",
                json!({"result": "success"}).to_string(),
                &[],
            )
        }
        _ => dify_error(404, "not_found", &format!("no route {method} {path}")),
    }
}

/// A stream of `(delay before, data)` lines as SSE; ends early once `task_id` is stopped.
fn sse(
    state: &Arc<State>,
    task_id: String,
    lines: Vec<(Duration, Value)>,
) -> warp::reply::Response {
    let (tx, rx) = mpsc::channel::<warp::sse::Event>(1);
    let state = state.clone();
    tokio::spawn(async move {
        let _ = tx.send(warp::sse::Event::default().event("ping")).await;
        for (delay, data) in lines {
            if !delay.is_zero() {
                let mut events = state.events.subscribe();
                let stopped = async {
                    while !state.stopped.lock().unwrap().contains(&task_id) {
                        if events.changed().await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped => return,
                }
            }
            if state.stopped.lock().unwrap().contains(&task_id) {
                return;
            }
            // warp writes `data:<text>`; the leading space gives Dify's `data: {json}`.
            if tx
                .send(warp::sse::Event::default().data(format!(" {data}")))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok::<_, Infallible>(ev), rx))
    });
    warp::Reply::into_response(warp::sse::reply(events))
}

fn chat(state: &Arc<State>, body: &Value) -> warp::reply::Response {
    let query = body["query"].as_str().unwrap_or_default().to_string();
    if body["response_mode"] != "streaming" {
        return dify_error(
            400,
            "invalid_param",
            "mock dify: only streaming is scripted",
        );
    }
    if query.contains("FAIL500") {
        return dify_error(
            500,
            "internal_server_error",
            "The server encountered an internal error",
        );
    }
    let n = next(state);
    let task_id = format!("dify-task-{n}");
    let message_id = format!("msg-{n}");
    let conv = match body["conversation_id"].as_str().filter(|c| !c.is_empty()) {
        Some(c) if state.conversations.lock().unwrap().contains_key(c) => c.to_string(),
        Some(_) => return dify_error(404, "not_found", "Conversation Not Exists."),
        None => format!("conv-{n}"),
    };
    let turn = {
        let mut convs = state.conversations.lock().unwrap();
        let count = convs.entry(conv.clone()).or_insert(0);
        *count += 1;
        *count
    };
    let ev = |event: &str, answer: Option<&str>| {
        let mut v = json!({"event": event, "task_id": task_id, "id": message_id,
            "message_id": message_id, "conversation_id": conv, "created_at": now()});
        if let Some(a) = answer {
            v["answer"] = json!(a);
        }
        v
    };
    let end = {
        let mut e = ev("message_end", None);
        e["metadata"] =
            json!({"usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}});
        e
    };
    let mut lines = Vec::new();
    if query.contains("ERROREVENT") {
        lines.push((Duration::ZERO, ev("message", Some("partial "))));
        lines.push((
            Duration::ZERO,
            json!({"event": "error", "task_id": task_id, "message_id": message_id,
                   "status": 400, "code": "invalid_param", "message": "mock error event"}),
        ));
    } else if query.contains("EMPTY") {
        lines.push((Duration::ZERO, end));
    } else if query.contains("SLOW") {
        for i in 0..SLOW_CHUNKS {
            let delay = if i == 0 { Duration::ZERO } else { SLOW_DELAY };
            lines.push((delay, ev("message", Some(&format!("chunk{i} ")))));
        }
        lines.push((Duration::ZERO, end));
    } else {
        let text = format!("Echo: {query} (turn {turn})");
        let (a, b) = text.split_at(text.len() / 2);
        lines.push((Duration::ZERO, ev("message", Some(a))));
        lines.push((Duration::ZERO, ev("agent_message", Some(b))));
        lines.push((Duration::ZERO, end));
    }
    sse(state, task_id, lines)
}

fn workflow(state: &Arc<State>, body: &Value) -> warp::reply::Response {
    let inputs = body["inputs"].clone();
    let query = inputs["query"]
        .as_str()
        .or(inputs["user_query"].as_str())
        .unwrap_or_default()
        .to_string();
    let n = next(state);
    let task_id = format!("dify-wf-task-{n}");
    let run_id = format!("wf-run-{n}");
    let ev = |event: &str, data: Value| json!({"event": event, "task_id": task_id, "workflow_run_id": run_id, "data": data});
    let lines = vec![
        (
            Duration::ZERO,
            ev(
                "workflow_started",
                json!({"id": run_id, "workflow_id": "wf-1", "created_at": now()}),
            ),
        ),
        (
            Duration::ZERO,
            ev(
                "node_started",
                json!({"id": "n1", "node_id": "llm", "title": "LLM", "index": 1}),
            ),
        ),
        (
            Duration::ZERO,
            ev(
                "node_finished",
                json!({"id": "n1", "node_id": "llm", "title": "LLM", "status": "succeeded"}),
            ),
        ),
        (
            Duration::ZERO,
            ev(
                "workflow_finished",
                json!({"id": run_id, "workflow_id": "wf-1", "status": "succeeded",
                "outputs": {"answer": format!("Workflow: {query}"), "inputs": inputs},
                "elapsed_time": 0.1, "total_tokens": 10, "total_steps": 2, "created_at": now()}),
            ),
        ),
    ];
    sse(state, task_id, lines)
}
