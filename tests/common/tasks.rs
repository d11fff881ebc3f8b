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
