//! Task bodies and the usual start/post/run steps the end-to-end tests share.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{CallbackReceiver, Executor, ExecutorOptions};

/// How long a subtask run by the fake CLI may take before a test gives up.
pub const FAKE_WAIT: Duration = Duration::from_secs(15);

/// A task in the seed guide's shape (`agent_type: "claude_code"`, `content`).
pub fn seed_task(task_id: i64, subtask_id: i64, content: &str) -> Value {
    json!({"task_id": task_id, "subtask_id": subtask_id, "agent_type": "claude_code", "content": content})
}

/// Starts the executor with the fake CLI, callbacks to `rx`, a test API key and `extra` env.
pub async fn start_fake(rx: &CallbackReceiver, extra: &[(&str, &str)]) -> Executor {
    let mut opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test");
    for (k, v) in extra {
        opts = opts.env(*k, *v);
    }
    Executor::start(opts).await
}

/// Starts the executor with the real pinned CLI talking to `mock`, callbacks to `rx`.
pub async fn start_real(rx: &CallbackReceiver, mock: &super::MockAnthropic) -> Executor {
    Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .real_claude(mock),
    )
    .await
}

/// Posts a seed-shaped subtask and checks it was accepted as RUNNING.
pub async fn post_task(exec: &Executor, task_id: i64, subtask_id: i64, content: &str) {
    let (status, body) = exec
        .post_json(
            "/api/tasks/execute",
            &seed_task(task_id, subtask_id, content),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "POST task {task_id}.{subtask_id}: {body}\n{}",
        exec.logs_tail(50)
    );
    assert_eq!(body["status"], "RUNNING", "{body}");
}

/// Runs one subtask to its end and returns its terminal callback.
pub async fn run_task(
    exec: &Executor,
    rx: &CallbackReceiver,
    task_id: i64,
    subtask_id: i64,
    content: &str,
) -> Value {
    post_task(exec, task_id, subtask_id, content).await;
    rx.wait_terminal(task_id, subtask_id, FAKE_WAIT).await
}

/// Proves "exactly one terminal callback" for each of `subtasks` of `task_id`, counted when a
/// duplicate could no longer be on its way: first runs one more subtask, `fence`, of the same
/// task to completion (callbacks of one task are delivered in order, so everything queued for
/// the earlier subtasks has arrived by then), then re-counts the earlier ones. Also checks the
/// task is still usable. Returns the fence's terminal callback.
pub async fn assert_one_terminal_each(
    exec: &Executor,
    rx: &CallbackReceiver,
    task_id: i64,
    subtasks: &[i64],
    fence: i64,
) -> Value {
    assert!(
        !subtasks.contains(&fence),
        "the fence subtask must be a new one"
    );
    let done = run_task(exec, rx, task_id, fence, "fence: nothing left in flight").await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "task {task_id}: the fence subtask {fence} runs after the others: {}",
        rx.dump()
    );
    rx.assert_one_terminal_now(task_id, subtasks);
    done
}

/// A seed-shaped task whose JSON is at least `size` bytes (the content is padded with `x`), for
/// body-limit tests.
pub fn padded_task(task_id: i64, size: usize) -> Vec<u8> {
    let overhead = seed_task(task_id, 1, "").to_string().len();
    let body = seed_task(task_id, 1, &"x".repeat(size.saturating_sub(overhead)));
    let bytes = body.to_string().into_bytes();
    assert!(bytes.len() >= size);
    bytes
}

/// Proves the executor still works after a test threw bad input at it: the health check
/// answers and a valid subtask (`task_id`.1) runs to COMPLETED.
pub async fn assert_still_serves(exec: &Executor, rx: &CallbackReceiver, task_id: i64) {
    let (status, body) = exec.get("/").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "health check after bad input: {body}\n{}",
        exec.logs_tail(50)
    );
    let done = run_task(exec, rx, task_id, 1, "still alive?").await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "a valid task after bad input must complete: {}\n{}",
        rx.dump(),
        exec.logs_tail(50)
    );
}

/// `(role, text)` of every message of a Messages API request body (text blocks joined).
pub fn message_texts(req: &Value) -> Vec<(String, String)> {
    req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let text = match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(b) => b
                    .iter()
                    .filter_map(|x| x["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            (m["role"].as_str().unwrap_or("").to_string(), text)
        })
        .collect()
}
