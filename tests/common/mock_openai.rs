//! A mock of OpenAI's chat-completions API for the Agno end-to-end tests: the Agno client
//! process (`agno/agno_client.py`, agno's `OpenAIChat` model) talks to it offline and
//! deterministically.
//!
//! Port of `agno/mock_openai.py` (same script, see `shared/research/agno.md` §3.1).
//! `POST /v1/chat/completions` answers from the LAST message of the request:
//! - role `tool` → `Tool said: <its content>`;
//! - the last user text contains `THINK` → `reasoning_content` deltas first, then the answer below;
//! - it contains `TOOL` and the request offers tools → one `tool_calls` delta:
//!   `delegate_task_to_member {member_id:"worker", task_description:<user text>, expected_output}`
//!   if offered, else `delegate_task_to_members {task_description, expected_output}` if offered,
//!   else `mul` (or the first tool) with `{a:2, b:3}`;
//! - it contains `SLOW` → 40 content chunks, 0.25 s apart (each flushed on its own: cancel tests
//!   rely on the client seeing chunks while the stream is still running);
//! - otherwise `Hello from mock (history=N msgs)`, N = number of messages in the request.
//!
//! `stream: true` gets `chat.completion.chunk` SSE lines (`data: {...}`) then `data: [DONE]`;
//! otherwise one `chat.completion` JSON object.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
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

#[derive(Default)]
struct State {
    /// Bodies of every `POST .../chat/completions`, in arrival order.
    requests: Mutex<Vec<Value>>,
    /// Bumped on every request.
    events: watch::Sender<u64>,
}

/// The mock server. All methods take `&self`; dropping it stops the server.
pub struct MockOpenAi {
    state: Arc<State>,
    server: BackgroundServer,
}

impl MockOpenAi {
    /// Starts the mock on a free port of 127.0.0.1.
    pub fn start() -> MockOpenAi {
        let state = Arc::new(State::default());
        let server = BackgroundServer::start("mock-openai", 0, handler(state.clone()))
            .unwrap_or_else(|e| panic!("mock openai: cannot bind 127.0.0.1:0: {e}"));
        MockOpenAi { state, server }
    }

    /// The `base_url` for an OpenAI client: `http://127.0.0.1:<port>/v1` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.server.addr().port())
    }

    /// Port the mock listens on.
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// Bodies of every chat-completions request so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Number of chat-completions requests so far.
    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Waits (woken per request) until at least `n` requests arrived; returns their bodies.
    /// Panics with the request log on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let found = wait_on_events(&self.state.events, timeout, || {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "mock openai: expected {n} request(s) within {timeout:?}; requests:\n{}",
                self.dump()
            )
        })
    }

    /// One line per request, for panic messages.
    pub fn dump(&self) -> String {
        let reqs = self.requests();
        if reqs.is_empty() {
            return "  (none)".to_string();
        }
        reqs.iter()
            .enumerate()
            .map(|(i, b)| {
                let msgs = b["messages"].as_array().map_or(0, Vec::len);
                format!(
                    "  #{i} {msgs} msg(s), last user text: {:?}",
                    last_user_text(b)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Text of a message `content`: a string, or the `text` of its parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Text of the last `user` message of a chat-completions request body.
pub fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default()
}

/// The `N` of a `Hello from mock (history=N msgs)` answer, if `text` holds one.
pub fn history_count(text: &str) -> Option<usize> {
    let rest = text.split("history=").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// What to answer a request with.
struct Script {
    reasoning: Vec<String>,
    chunks: Vec<String>,
    tool_call: Option<(String, Value)>,
    delay: Duration,
}

fn script(body: &Value) -> Script {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let tools: Vec<String> = body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut s = Script {
        reasoning: Vec::new(),
        chunks: Vec::new(),
        tool_call: None,
        delay: Duration::ZERO,
    };
    if last["role"] == "tool" {
        s.chunks = vec!["Tool said: ".into(), content_text(&last["content"])];
        return s;
    }
    let user = last_user_text(body);
    if user.contains("THINK") {
        s.reasoning = vec!["Let me ".into(), "think...".into()];
    }
    if user.contains("TOOL") && !tools.is_empty() {
        let has = |name: &str| tools.iter().any(|t| t == name);
        s.tool_call = Some(if has("delegate_task_to_member") {
            (
                "delegate_task_to_member".into(),
                json!({"member_id": "worker", "task_description": user,
                       "expected_output": "the result"}),
            )
        } else if has("delegate_task_to_members") {
            (
                "delegate_task_to_members".into(),
                json!({"task_description": user, "expected_output": "the result"}),
            )
        } else {
            let name = if has("mul") { "mul" } else { tools[0].as_str() };
            (name.to_string(), json!({"a": 2, "b": 3}))
        });
        return s;
    }
    if user.contains("SLOW") {
        s.chunks = (0..SLOW_CHUNKS).map(|i| format!("chunk{i} ")).collect();
        s.delay = SLOW_DELAY;
        return s;
    }
    let text = format!("Hello from mock (history={} msgs)", messages.len());
    let words: Vec<&str> = text.split(' ').collect();
    s.chunks = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i + 1 < words.len() {
                format!("{w} ")
            } else {
                w.to_string()
            }
        })
        .collect();
    s
}

fn unique_hex() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{:012x}{:04x}",
        nanos & 0xffff_ffff_ffff,
        SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn handler(state: Arc<State>) -> Handler {
    warp::method()
        .and(warp::path::full())
        .and(warp::body::bytes())
        .map(
            move |method: warp::http::Method, path: warp::path::FullPath, body: Bytes| {
                handle(&state, method, path.as_str(), &body)
            },
        )
        .boxed()
}

fn error_json(status: u16, message: String) -> warp::reply::Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
    response(status, "application/json", body.to_string(), &[])
}

fn handle(
    state: &State,
    method: warp::http::Method,
    path: &str,
    raw: &Bytes,
) -> warp::reply::Response {
    if method != warp::http::Method::POST
        || !path.trim_end_matches('/').ends_with("/chat/completions")
    {
        return error_json(404, format!("mock openai: no route for {method} {path}"));
    }
    let Some(body) = serde_json::from_slice::<Value>(raw)
        .ok()
        .filter(Value::is_object)
    else {
        return error_json(400, "mock openai: body is not a JSON object".into());
    };
    state.requests.lock().unwrap().push(body.clone());
    state.events.send_modify(|v| *v += 1);

    let s = script(&body);
    let model = body["model"].as_str().unwrap_or("mock-1").to_string();
    let id = format!("chatcmpl-{}", unique_hex());
    let tool_calls = s.tool_call.as_ref().map(|(name, args)| {
        json!([{"index": 0, "id": format!("call_{}", unique_hex()), "type": "function",
                "function": {"name": name, "arguments": args.to_string()}}])
    });
    let finish = if tool_calls.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});

    if body["stream"] != Value::Bool(true) {
        let content = s.chunks.concat();
        let mut msg = json!({"role": "assistant",
                             "content": if content.is_empty() { Value::Null } else { content.into() }});
        if !s.reasoning.is_empty() {
            msg["reasoning_content"] = s.reasoning.concat().into();
        }
        if let Some(Value::Array(calls)) = &tool_calls {
            let calls: Vec<Value> = calls
                .iter()
                .map(|c| json!({"id": c["id"], "type": "function", "function": c["function"]}))
                .collect();
            msg["tool_calls"] = calls.into();
        }
        let reply = json!({"id": id, "object": "chat.completion", "created": now_secs(),
                           "model": model, "usage": usage,
                           "choices": [{"index": 0, "message": msg, "finish_reason": finish}]});
        return response(200, "application/json", reply.to_string(), &[]);
    }

    // (delay before, data line) pairs, sent by a task so that each chunk leaves on its own.
    let chunk = |delta: Value, finish_reason: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": now_secs(), "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
        .to_string()
    };
    let mut lines: Vec<(Duration, String)> = vec![(
        Duration::ZERO,
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
    )];
    for r in &s.reasoning {
        lines.push((
            Duration::ZERO,
            chunk(json!({"reasoning_content": r}), Value::Null),
        ));
    }
    for (i, c) in s.chunks.iter().enumerate() {
        let delay = if i == 0 { Duration::ZERO } else { s.delay };
        lines.push((delay, chunk(json!({"content": c}), Value::Null)));
    }
    if let Some(calls) = tool_calls {
        lines.push((
            Duration::ZERO,
            chunk(json!({"tool_calls": calls}), Value::Null),
        ));
    }
    lines.push((Duration::ZERO, chunk(json!({}), finish.into())));
    if body["stream_options"]["include_usage"] == Value::Bool(true) {
        let tail = json!({"id": id, "object": "chat.completion.chunk", "created": now_secs(),
                          "model": model, "choices": [], "usage": usage});
        lines.push((Duration::ZERO, tail.to_string()));
    }
    lines.push((Duration::ZERO, "[DONE]".to_string()));

    let (tx, rx) = mpsc::channel::<warp::sse::Event>(1);
    tokio::spawn(async move {
        for (delay, data) in lines {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // warp writes `data:<text>`; the leading space gives OpenAI's exact `data: <json>`.
            if tx
                .send(warp::sse::Event::default().data(format!(" {data}")))
                .await
                .is_err()
            {
                return; // the client hung up (a cancelled run)
            }
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok::<_, Infallible>(ev), rx))
    });
    let mut resp = warp::Reply::into_response(warp::sse::reply(events));
    resp.headers_mut().insert(
        "x-request-id",
        warp::http::HeaderValue::from_str(&format!("req_mock_{}", unique_hex()))
            .expect("a valid header value"),
    );
    resp
}
