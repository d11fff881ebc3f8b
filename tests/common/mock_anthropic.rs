//! A mock of the Anthropic Messages API that the *real* Claude Code CLI can talk to, so that
//! end-to-end tests run the pinned CLI offline and deterministically.
//!
//! Ported (simplified) from the proven Python mock in `shared/research/claude-code-cli.md`
//! (Appendix A). Behaviour of `POST /v1/messages` (query `?beta=true` is ignored):
//! - plain answer `mock reply #<n> to: <text>` where `<text>` is the last text block of the last
//!   `user` message (newlines → spaces, first 60 chars) and `n` counts `/v1/messages` requests;
//! - when the request carries `tools`, lines of that text block are directives:
//!   `MOCK_TOOL:Bash:<command>` / `MOCK_TOOL:Write:<path>:<text>` /
//!   `MOCK_TOOL:MCP:<mcp__server__tool>:<JSON input>` answer with a `tool_use` block
//!   (stop_reason `tool_use`), `MOCK_STATUS:<code>` answers that HTTP error;
//! - when the last user message holds a `tool_result`, the answer is
//!   `tool result seen: <its text, first 80 chars>`;
//! - `stream: true` gets the SSE event sequence in one body, `stream: false` one JSON message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::watch;
use warp::Filter;

use super::server::{header_pairs, response, wait_on_events, BackgroundServer, Gate, Handler};

/// Path of the pinned real Claude Code CLI: `$CLAUDE_CODE_CLI` if set, else
/// `<repo>/.tools/claude-code/node_modules/.bin/claude`. Panics (never skips) when missing,
/// because the end-to-end tests against the real CLI are part of the contract.
pub fn claude_cli_path() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = match std::env::var_os("CLAUDE_CODE_CLI") {
        Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => root.join(".tools/claude-code/node_modules/.bin/claude"),
    };
    if !path.exists() {
        install_pinned_cli(root);
    }
    if !path.exists() {
        panic!(
            "the pinned Claude Code CLI is missing: run `npm install --prefix .tools/claude-code \
             @anthropic-ai/claude-code@{PINNED_CLI}` (or .ci/run) (looked for {})",
            path.display()
        );
    }
    path
}

/// The CLI version the real-CLI tests run against.
pub const PINNED_CLI: &str = "2.1.331";

/// On a fresh machine the README's test command fetches the pinned CLI into `.tools/` itself,
/// once, under a file lock (test binaries run in parallel).
fn install_pinned_cli(root: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let dir = root.join(".tools/claude-code");
    let _ = std::fs::create_dir_all(&dir);
    let Ok(lock) = std::fs::File::create(root.join(".tools/claude-code.lock")) else {
        return;
    };
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    unsafe {
        libc::flock(lock.as_raw_fd(), libc::LOCK_EX);
    }
    if dir.join("node_modules/.bin/claude").exists() {
        return;
    }
    eprintln!(
        "installing @anthropic-ai/claude-code@{PINNED_CLI} into {} (npm)",
        dir.display()
    );
    let status = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg(format!("@anthropic-ai/claude-code@{PINNED_CLI}"))
        .stdin(std::process::Stdio::null())
        .status();
    eprintln!("npm install finished: {status:?}");
}

/// Environment that keeps a real CLI (started directly or by the executor) offline, quiet and
/// fast-failing: it talks only to `mock`, sends no telemetry and never retries API errors.
pub fn real_claude_env(mock: &MockAnthropic) -> Vec<(String, String)> {
    [
        ("ANTHROPIC_BASE_URL", mock.url()),
        ("ANTHROPIC_API_KEY", "dummy-test-key".to_string()),
        ("DISABLE_TELEMETRY", "1".to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ("DISABLE_AUTOUPDATER", "1".to_string()),
        ("DISABLE_ERROR_REPORTING", "1".to_string()),
        ("DISABLE_BUG_COMMAND", "1".to_string()),
        ("CLAUDE_CODE_MAX_RETRIES", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// One request the mock saw (any path), for assertions on what the CLI sent.
#[derive(Clone, Debug)]
pub struct MockRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query (e.g. `/v1/messages`).
    pub path: String,
    /// Raw query string without `?` (e.g. `beta=true`), empty if none.
    pub query: String,
    /// Request headers, names lower-case (values unredacted: the key is a dummy in tests).
    pub headers: Vec<(String, String)>,
    /// JSON body; `Value::Null` when empty, `Value::String` when not JSON.
    pub body: Value,
    /// Arrival time.
    pub at: Instant,
}

impl MockRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// True for `POST /v1/messages` (the only requests counted as model calls).
    pub fn is_messages(&self) -> bool {
        self.method == "POST" && self.path == "/v1/messages"
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<MockRequest>>,
    /// Number of `/v1/messages` requests so far (the `#<n>` of the reply).
    messages_count: Mutex<u64>,
    /// `Some(status)`: every `/v1/messages` gets this error.
    fail_status: Mutex<Option<u16>>,
    gate: Gate,
    /// Bumped on every request and gate change.
    events: watch::Sender<u64>,
}

/// The mock server. All methods take `&self`.
pub struct MockAnthropic {
    state: Arc<State>,
    server: BackgroundServer,
}

impl MockAnthropic {
    /// Starts the mock on a free port of 127.0.0.1.
    pub fn start() -> MockAnthropic {
        let state = Arc::new(State::default());
        let server = BackgroundServer::start("mock-anthropic", 0, handler(state.clone()))
            .unwrap_or_else(|e| panic!("mock anthropic: cannot bind 127.0.0.1:0: {e}"));
        MockAnthropic { state, server }
    }

    /// Base URL for `ANTHROPIC_BASE_URL` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.addr().port())
    }

    /// Port the mock listens on.
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// Bodies of every `POST /v1/messages` request, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.messages_requests()
            .into_iter()
            .map(|r| r.body)
            .collect()
    }

    /// Headers of every `POST /v1/messages` request, in order (parallel to `requests()`).
    pub fn request_headers(&self) -> Vec<Vec<(String, String)>> {
        self.messages_requests()
            .into_iter()
            .map(|r| r.headers)
            .collect()
    }

    /// Full records of the `POST /v1/messages` requests.
    pub fn messages_requests(&self) -> Vec<MockRequest> {
        self.all_requests()
            .into_iter()
            .filter(MockRequest::is_messages)
            .collect()
    }

    /// Every request on any path (count_tokens, HEAD probes, unknown paths…).
    pub fn all_requests(&self) -> Vec<MockRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Answers every `/v1/messages` with HTTP `status`, an Anthropic-style error body and
    /// `x-should-retry: false` (so the CLI gives up at once) until [`succeed`](Self::succeed).
    pub fn fail_with(&self, status: u16) {
        *self.state.fail_status.lock().unwrap() = Some(status);
    }

    /// Back to normal answers.
    pub fn succeed(&self) {
        *self.state.fail_status.lock().unwrap() = None;
    }

    /// Parks `/v1/messages` requests unanswered (after recording them) until
    /// [`release`](Self::release): keeps the CLI "mid-turn", e.g. for cancel tests.
    pub fn hold(&self) {
        self.state.gate.close();
    }

    /// Answers the parked requests and stops parking.
    pub fn release(&self) {
        self.state.gate.open();
    }

    /// Waits until at least `n` `/v1/messages` requests are parked by [`hold`](Self::hold).
    pub async fn wait_for_held(&self, n: usize, timeout: Duration) {
        let st = &self.state;
        if wait_on_events(&st.events, timeout, || {
            (st.gate.parked() >= n).then_some(())
        })
        .await
        .is_none()
        {
            panic!(
                "mock anthropic: expected {n} parked request(s) within {timeout:?}, have {}; \
                 requests:\n{}",
                st.gate.parked(),
                self.dump()
            );
        }
    }

    /// Waits (woken per request) until at least `n` `/v1/messages` requests arrived; returns
    /// their bodies. Panics with the request log on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let found = wait_on_events(&self.state.events, timeout, || {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "mock anthropic: expected {n} /v1/messages request(s) within {timeout:?}; \
                 requests:\n{}",
                self.dump()
            )
        })
    }

    /// One line per request, for panic messages.
    pub fn dump(&self) -> String {
        let reqs = self.all_requests();
        if reqs.is_empty() {
            return "  (none)".to_string();
        }
        reqs.iter()
            .enumerate()
            .map(|(i, r)| {
                let text = if r.is_messages() {
                    format!(" last user text: {:?}", last_user_text(&r.body))
                } else {
                    String::new()
                };
                format!("  #{i} {} {}?{}{text}", r.method, r.path, r.query)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The last user-role message of a Messages API request body (messages may include role
/// `system`, which the real CLI sends).
pub fn last_user_message(body: &Value) -> Option<&Value> {
    body["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
}

/// Text of the last `text` block of the last user message: the user's own words (earlier
/// blocks are CLI-injected `<system-reminder>`s or earlier queued prompts).
pub fn last_user_text(body: &Value) -> String {
    let Some(msg) = last_user_message(body) else {
        return String::new();
    };
    match &msg["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .rev()
            .find(|b| b["type"] == "text")
            .and_then(|b| b["text"].as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// Text of the `tool_result` blocks of the last user message, or `None` if it has none.
fn tool_result_text(body: &Value) -> Option<String> {
    let blocks = last_user_message(body)?["content"].as_array()?;
    let results: Vec<String> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| match &b["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        })
        .collect();
    (!results.is_empty()).then(|| results.join("\n"))
}

fn error_body(status: u16) -> Value {
    let etype = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": etype, "message": format!("mock error {status}")}})
}

fn unique_hex() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{:016x}{:04x}",
        nanos,
        SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

fn first_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn handler(state: Arc<State>) -> Handler {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: warp::http::HeaderMap,
                  body: Bytes| {
                let state = state.clone();
                async move {
                    handle(
                        &state,
                        method,
                        path.as_str().to_string(),
                        query,
                        headers,
                        body,
                    )
                    .await
                }
            },
        )
        .boxed()
}

fn json_response(status: u16, v: &Value, extra: &[(&str, String)]) -> warp::reply::Response {
    let mut headers = vec![("request-id", format!("req_mock_{}", unique_hex()))];
    headers.extend(extra.iter().cloned());
    response(status, "application/json", v.to_string(), &headers)
}

async fn handle(
    state: &State,
    method: warp::http::Method,
    path: String,
    query: String,
    headers: warp::http::HeaderMap,
    raw: Bytes,
) -> warp::reply::Response {
    let parsed: Option<Value> = serde_json::from_slice(&raw).ok();
    let body = match (&parsed, raw.is_empty()) {
        (Some(v), _) => v.clone(),
        (None, true) => Value::Null,
        (None, false) => Value::String(String::from_utf8_lossy(&raw).into_owned()),
    };
    let record = MockRequest {
        method: method.to_string(),
        path: path.clone(),
        query,
        headers: header_pairs(&headers),
        body,
        at: Instant::now(),
    };
    let is_messages = record.is_messages();
    // Record and number under one lock so that `#<n>` follows arrival order.
    let nreq = {
        let mut reqs = state.requests.lock().unwrap();
        reqs.push(record);
        let mut count = state.messages_count.lock().unwrap();
        if is_messages {
            *count += 1;
        }
        *count
    };
    state.events.send_modify(|v| *v += 1);

    if method == warp::http::Method::HEAD {
        return response(200, "text/plain", Vec::new(), &[]);
    }
    if method == warp::http::Method::POST && path == "/v1/messages/count_tokens" {
        return json_response(200, &json!({"input_tokens": 10}), &[]);
    }
    if !is_messages {
        return json_response(
            404,
            &json!({"type": "error", "error": {"type": "not_found_error",
                "message": format!("mock anthropic: no route for {method} {path}")}}),
            &[],
        );
    }
    let Some(body) = parsed.filter(Value::is_object) else {
        return json_response(
            400,
            &json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": "mock anthropic: body is not a JSON object"}}),
            &[],
        );
    };

    state.gate.pass(&state.events).await;
    messages_reply(state, &body, nreq)
}

fn messages_reply(state: &State, body: &Value, nreq: u64) -> warp::reply::Response {
    let mut status = *state.fail_status.lock().unwrap();
    let user_text = last_user_text(body);
    let tool_result = tool_result_text(body);
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());

    // (name, input) of a tool the prompt asked the mock to call.
    let mut tool: Option<(String, Value)> = None;
    if has_tools && tool_result.is_none() {
        for line in user_text.lines().map(str::trim) {
            if let Some(code) = line.strip_prefix("MOCK_STATUS:") {
                status = code.trim().parse().ok().or(status);
            } else if let Some(cmd) = line.strip_prefix("MOCK_TOOL:Bash:") {
                tool = Some((
                    "Bash".into(),
                    json!({"command": cmd, "description": "mock-requested command"}),
                ));
            } else if let Some(rest) = line.strip_prefix("MOCK_TOOL:Write:") {
                let (path, text) = rest.split_once(':').unwrap_or((rest, ""));
                tool = Some(("Write".into(), json!({"file_path": path, "content": text})));
            } else if let Some(rest) = line.strip_prefix("MOCK_TOOL:MCP:") {
                // `MOCK_TOOL:MCP:<tool name, e.g. mcp__srv__tool>:<JSON input>`.
                let (name, input) = rest.split_once(':').unwrap_or((rest, "{}"));
                let input = serde_json::from_str(input).unwrap_or_else(|_| json!({}));
                tool = Some((name.to_string(), input));
            }
        }
    }
    if let Some(status) = status {
        return json_response(
            status,
            &error_body(status),
            &[("x-should-retry", "false".to_string())],
        );
    }

    let model = body["model"].as_str().unwrap_or("claude-mock").to_string();
    let (blocks, stop_reason) = match tool {
        Some((name, input)) => (
            vec![
                json!({"type": "text", "text": "Running a tool for you."}),
                json!({"type": "tool_use", "id": format!("toolu_mock_{}", unique_hex()),
                       "name": name, "input": input}),
            ],
            "tool_use",
        ),
        None => {
            let text = match &tool_result {
                Some(t) => format!(
                    "tool result seen: {}",
                    first_chars(&t.replace('\n', " "), 80)
                ),
                None => format!(
                    "mock reply #{nreq} to: {}",
                    first_chars(&user_text.replace('\n', " "), 60)
                ),
            };
            (vec![json!({"type": "text", "text": text})], "end_turn")
        }
    };
    let in_tok = (body["messages"].to_string().len() / 4).max(1);
    let out_tok = 5 + blocks
        .iter()
        .map(|b| b.to_string().len() / 4)
        .sum::<usize>();
    let usage = json!({"input_tokens": in_tok, "output_tokens": out_tok,
                       "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    let msg_id = format!("msg_mock_{}", unique_hex());

    if body["stream"] != Value::Bool(true) {
        return json_response(
            200,
            &json!({"id": msg_id, "type": "message", "role": "assistant", "model": model,
                    "content": blocks, "stop_reason": stop_reason, "stop_sequence": null,
                    "usage": usage}),
            &[],
        );
    }

    let mut sse = String::new();
    let mut event = |name: &str, data: Value| {
        sse.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    event(
        "message_start",
        json!({"type": "message_start", "message": {"id": msg_id, "type": "message",
               "role": "assistant", "model": model, "content": [], "stop_reason": null,
               "stop_sequence": null, "usage": start_usage}}),
    );
    event("ping", json!({"type": "ping"}));
    for (i, b) in blocks.iter().enumerate() {
        if b["type"] == "text" {
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": i,
                       "content_block": {"type": "text", "text": ""}}),
            );
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i,
                       "delta": {"type": "text_delta", "text": b["text"]}}),
            );
        } else {
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": i,
                       "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"],
                                         "input": {}}}),
            );
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i,
                       "delta": {"type": "input_json_delta",
                                 "partial_json": b["input"].to_string()}}),
            );
        }
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        );
    }
    event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": out_tok}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    response(
        200,
        "text/event-stream",
        sse,
        &[
            ("cache-control", "no-cache".to_string()),
            ("request-id", format!("req_mock_{}", unique_hex())),
        ],
    )
}
