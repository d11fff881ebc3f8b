//! Self-test of the mock OpenAI chat-completions server (`tests/common/mock_openai.rs`) used by
//! the Agno end-to-end tests, plus one run of the real Agno client process against it.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::{Duration, Instant};

use common::mock_openai::{history_count, SLOW_CHUNKS, SLOW_DELAY};
use common::MockOpenAi;
use serde_json::{json, Value};

async fn post(mock: &MockOpenAi, body: Value) -> reqwest::Response {
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&body)
        .send()
        .await
        .expect("POST to the mock");
    assert_eq!(resp.status(), 200);
    resp
}

/// The JSON objects of an SSE body's `data: ` lines; asserts the exact OpenAI framing and that
/// the stream ends with `data: [DONE]`.
fn sse_chunks(text: &str) -> Vec<Value> {
    let data: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a `data: ` event: {e:?}"))
        })
        .collect();
    assert_eq!(
        data.last(),
        Some(&"[DONE]"),
        "stream must end with [DONE]: {text}"
    );
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect()
}

fn deltas(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"][field].as_str())
        .collect()
}

async fn stream(mock: &MockOpenAi, messages: Value, tools: Value) -> Vec<Value> {
    let body = json!({"model": "mock-1", "stream": true, "messages": messages, "tools": tools,
                      "stream_options": {"include_usage": true}});
    let resp = post(mock, body).await;
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    sse_chunks(&resp.text().await.unwrap())
}

fn tool(name: &str) -> Value {
    json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}})
}

#[tokio::test]
async fn plain_reply_counts_history_and_records_requests() {
    let mock = MockOpenAi::start();
    assert!(mock.base_url().ends_with("/v1"));
    let msgs = json!([{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]);
    let chunks = stream(&mock, msgs, json!([])).await;
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let text = deltas(&chunks, "content");
    assert_eq!(text, "Hello from mock (history=2 msgs)");
    assert_eq!(history_count(&text), Some(2));
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 15);
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.requests()[0]["messages"][1]["content"], "hi");

    // Content given as parts, and non-streaming.
    let body = json!({"model": "m", "messages": [{"role": "user",
                      "content": [{"type": "text", "text": "hello"}]}]});
    let reply: Value = post(&mock, body).await.json().await.unwrap();
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "Hello from mock (history=1 msgs)"
    );
    assert_eq!(
        mock.wait_for_requests(2, Duration::from_secs(5))
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn tool_calls_tool_results_and_reasoning() {
    let mock = MockOpenAi::start();
    let user = |t: &str| json!([{"role": "user", "content": t}]);

    let chunks = stream(&mock, user("please TOOL"), json!([tool("mul")])).await;
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .expect("a tool_calls delta");
    assert_eq!(call["function"]["name"], "mul");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"a": 2, "b": 3}));
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));

    // A team leader delegates to "worker", passing the user text on.
    let tools = json!([tool("delegate_task_to_member"), tool("mul")]);
    let chunks = stream(&mock, user("TOOL now"), tools).await;
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .unwrap();
    assert_eq!(call["function"]["name"], "delegate_task_to_member");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["member_id"], "worker");
    assert_eq!(args["task_description"], "TOOL now");

    // TOOL without tools is plain text.
    let chunks = stream(&mock, user("TOOL"), json!([])).await;
    assert_eq!(
        deltas(&chunks, "content"),
        "Hello from mock (history=1 msgs)"
    );

    let msgs = json!([{"role": "user", "content": "TOOL"},
                      {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "mul", "arguments": "{}"}}]},
                      {"role": "tool", "tool_call_id": "c1", "content": "6"}]);
    let chunks = stream(&mock, msgs, json!([tool("mul")])).await;
    assert_eq!(deltas(&chunks, "content"), "Tool said: 6");

    let chunks = stream(&mock, user("THINK hard"), json!([])).await;
    assert_eq!(deltas(&chunks, "reasoning_content"), "Let me think...");
    let first_reasoning = chunks
        .iter()
        .position(|c| c["choices"][0]["delta"]["reasoning_content"].is_string());
    let first_content = chunks.iter().position(|c| {
        c["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    });
    assert!(first_reasoning < first_content, "reasoning comes first");
    assert_eq!(mock.request_count(), 5);
}

/// The cancel tests depend on this: SLOW chunks must reach the client one by one while the
/// stream is still running, not in one buffered body at the end.
#[tokio::test]
async fn slow_chunks_are_flushed_one_by_one() {
    let mock = MockOpenAi::start();
    let body = json!({"model": "m", "stream": true,
                      "messages": [{"role": "user", "content": "be SLOW"}]});
    let sent = Instant::now();
    let mut resp = post(&mock, body).await;
    let mut arrivals: Vec<(Duration, String)> = Vec::new(); // (when, content delta)
    let mut buf = String::new();
    const WANT: usize = 8;
    while arrivals.len() < WANT {
        let bytes = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .expect("a chunk within 5 s")
            .expect("read a chunk")
            .expect("the stream is still open");
        buf.push_str(std::str::from_utf8(&bytes).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data = event.trim().strip_prefix("data: ").unwrap().to_string();
            let v: Value = serde_json::from_str(&data).unwrap();
            if let Some(c) = v["choices"][0]["delta"]["content"]
                .as_str()
                .filter(|c| !c.is_empty())
            {
                arrivals.push((sent.elapsed(), c.to_string()));
            }
        }
    }
    // Hang up mid-stream (what a cancelled run does); the mock must keep serving.
    drop(resp);
    let expected: Vec<String> = (0..WANT).map(|i| format!("chunk{i} ")).collect();
    let got: Vec<String> = arrivals.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(got, expected);
    // Flushed one by one, not at the end: the first chunk comes long before the last (a
    // reader delayed on a loaded machine may still read two chunks at once, so no single gap
    // is checked, only that most are spread out).
    let whole = SLOW_DELAY * (WANT as u32 - 1);
    assert!(
        arrivals[0].0 < whole / 2,
        "first chunk came late: {arrivals:?}"
    );
    let spread = arrivals
        .windows(2)
        .filter(|pair| pair[1].0 - pair[0].0 >= SLOW_DELAY / 2)
        .count();
    assert!(
        spread * 2 >= WANT - 1,
        "chunks arrived bunched together (not flushed one by one): {arrivals:?}"
    );
    let span = arrivals[WANT - 1].0 - arrivals[0].0;
    assert!(
        span >= SLOW_DELAY * (WANT as u32 - 1) * 4 / 5,
        "{arrivals:?}"
    );
    const { assert!(SLOW_CHUNKS > WANT) };

    let msgs = json!([{"role": "user", "content": "hi"}]);
    let chunks = stream(&mock, msgs, json!([])).await;
    assert_eq!(
        deltas(&chunks, "content"),
        "Hello from mock (history=1 msgs)"
    );
}

/// Prints the Agno client's log (its stderr, kept in a file) when the test fails.
struct LogOnPanic(std::path::PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("--- agno client stderr ---\n{log}");
        }
    }
}

/// The next protocol line of the Agno client, as JSON (60 s deadline).
async fn next_event(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("an event within 60 s")
        .unwrap()
        .expect("the client's stdout is open");
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
}

/// The real Agno client (agno 2.1.5) against this mock: a run completes, history is counted,
/// and a SLOW run is cancelled mid-stream.
#[tokio::test]
async fn agno_client_runs_and_cancels_against_the_mock() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let python = common::agno_env::agno_python();
    let mock = MockOpenAi::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let _log = LogOnPanic(dir.path().join("stderr.log"));
    let stderr = std::fs::File::create(&_log.0).unwrap();
    let mut child = tokio::process::Command::new(python)
        .arg(root.join("agno/agno_client.py"))
        .env("AGNO_DB_FILE", dir.path().join("agno.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the agno client");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = next_event(&mut lines).await;
    assert_eq!(ready["type"], "ready", "{ready}");

    let bot = json!({"name": "Solo", "system_prompt": "You help.",
                     "agent_config": {"env": {"model": "openai", "model_id": "mock-1",
                                              "api_key": "sk-test", "base_url": mock.base_url()}}});
    let run = |seq: u64, prompt: &str| {
        format!(
            "{}\n",
            json!({"op": "run", "run_seq": seq, "session_id": "42", "user_id": "42",
                   "mode": "", "prompt": prompt, "bots": [bot]})
        )
    };
    stdin.write_all(run(1, "hello").as_bytes()).await.unwrap();
    let done = loop {
        let ev = next_event(&mut lines).await;
        if ev["type"] == "completed" || ev["type"] == "error" {
            break ev;
        }
    };
    assert_eq!(
        done["content"], "Hello from mock (history=2 msgs)",
        "{done}"
    );

    stdin.write_all(run(2, "be SLOW").as_bytes()).await.unwrap();
    while next_event(&mut lines).await["type"] != "content" {}
    let cancel_at = Instant::now();
    stdin.write_all(b"{\"op\":\"cancel\"}\n").await.unwrap();
    let end = loop {
        let ev = next_event(&mut lines).await;
        assert_ne!(ev["type"], "completed", "a cancelled run must not complete");
        if ev["type"] == "cancelled" || ev["type"] == "error" {
            break ev;
        }
    };
    assert_eq!(end["type"], "cancelled", "{end}");
    assert!(
        cancel_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        cancel_at.elapsed()
    );

    stdin.write_all(b"{\"op\":\"shutdown\"}\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exit after shutdown")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(mock.request_count(), 2, "{}", mock.dump());
}
