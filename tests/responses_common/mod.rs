//! Helpers of the Responses-protocol tests (`POST /v1/responses` + Responses-API callbacks):
//! request bodies in upstream's shape and predicates over the received events.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use super::common::*;

/// The terminal event types (exactly one per subtask).
pub const TERMINALS: &[&str] = &["response.completed", "error", "response.incomplete"];

/// A `/v1/responses` body as Wegent's backend builds it (`OpenAIRequestConverter`): the task dict
/// in `metadata`, the prompt in `input`, `background: true`. `meta` is merged into `metadata`.
pub fn responses_body(task_id: i64, subtask_id: i64, input: Value, meta: Value) -> Value {
    let mut metadata = json!({"task_id": task_id, "subtask_id": subtask_id,
        "task_title": "T", "subtask_title": "S", "type": "online",
        "bot": [{"id": 1, "name": "coder", "shell_type": "ClaudeCode"}]});
    if let (Some(m), Some(extra)) = (metadata.as_object_mut(), meta.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    json!({"model": "claude-sonnet-4", "input": input, "stream": false, "background": true,
           "model_config": {"model": "claude", "model_id": "claude-sonnet-4"},
           "metadata": metadata})
}

/// The event type of a callback (`None` for an old-protocol status callback).
pub fn event_type(cb: &Value) -> Option<&str> {
    cb["event_type"].as_str()
}

/// True for a Responses terminal event.
pub fn is_terminal_event(cb: &Value) -> bool {
    event_type(cb).is_some_and(|t| TERMINALS.contains(&t))
}

/// The events of one subtask, in arrival order.
pub fn events_of(rx: &CallbackReceiver, task_id: i64, subtask_id: i64) -> Vec<Value> {
    rx.for_subtask(task_id, subtask_id)
}

/// Waits for the subtask's terminal event and returns all its events.
pub async fn wait_events(
    rx: &CallbackReceiver,
    task_id: i64,
    subtask_id: i64,
    timeout: Duration,
) -> Vec<Value> {
    rx.wait_for(timeout, |cbs| {
        cbs.iter()
            .any(|c| is_subtask(c, task_id, subtask_id) && is_terminal_event(c))
    })
    .await;
    events_of(rx, task_id, subtask_id)
}

/// The types of events, in order.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| event_type(e).unwrap_or("<status callback>").to_string())
        .collect()
}

/// The concatenated `delta`s of the text deltas.
pub fn streamed_text(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| event_type(e) == Some("response.output_text.delta"))
        .filter_map(|e| e["data"]["delta"].as_str())
        .collect()
}

/// Checks the stream rules every Responses subtask obeys: `response.created` first, every
/// `data.type` repeats `event_type`, ids are numbers, text offsets count the characters before
/// each delta, exactly one terminal and it is last, never `response.failed` nor a status key.
pub fn assert_well_formed(events: &[Value], task_id: i64, subtask_id: i64) {
    let t = types(events);
    assert_eq!(
        t.first().map(String::as_str),
        Some("response.created"),
        "{t:?}"
    );
    let terminals = events.iter().filter(|e| is_terminal_event(e)).count();
    assert_eq!(terminals, 1, "exactly one terminal: {t:?}");
    assert!(
        is_terminal_event(events.last().unwrap()),
        "the terminal is last: {t:?}"
    );
    let mut offset = 0u64;
    for e in events {
        assert_eq!(e["data"]["type"], e["event_type"], "{e}");
        assert_eq!(e["task_id"], json!(task_id), "numeric task_id: {e}");
        assert_eq!(
            e["subtask_id"],
            json!(subtask_id),
            "numeric subtask_id: {e}"
        );
        assert_ne!(e["event_type"], "response.failed", "{e}");
        assert!(e.get("status").is_none(), "no old-protocol keys: {e}");
        if event_type(e) == Some("response.output_text.delta") {
            assert_eq!(e["data"]["offset"], json!(offset), "{e}");
            assert_eq!(e["data"]["item_id"], format!("msg_{subtask_id}"), "{e}");
            offset += e["data"]["delta"].as_str().unwrap_or("").chars().count() as u64;
        }
    }
}

/// The answer text of a `response.completed`.
pub fn completed_text(terminal: &Value) -> &str {
    terminal["data"]["response"]["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

/// Pids of the `claude` processes under the executor.
pub fn claude_pids(exec: &Executor) -> Vec<u32> {
    descendants_of(exec.pid())
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("claude") && c.contains("stream-json")
            })
        })
        .collect()
}

/// POSTs JSON on a fresh connection. The harness client keeps idle connections longer than the
/// executor's keep-alive (5 s), so a request reusing one just as the server closes it fails
/// (seen once under load); these tests wait seconds between requests, so they never reuse one.
pub async fn post_fresh(exec: &Executor, path: &str, body: &Value) -> (reqwest::StatusCode, Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build the HTTP client");
    let resp = client
        .post(exec.url(path))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", exec.logs_tail(60)));
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}
