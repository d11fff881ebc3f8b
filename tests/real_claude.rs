//! The real Claude Code CLI (npm @anthropic-ai/claude-code, pinned) driven by the executor
//! against a mock Anthropic Messages API served by this test: a task completes with the mock's
//! text, a follow-up subtask continues the same conversation, and cancel interrupts a turn
//! without killing the conversation.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The real CLI needs a few hundred ms per turn; the first run of a fresh machine more.
const WAIT: Duration = Duration::from_secs(60);

fn task(task_id: i64, subtask_id: i64, prompt: &str) -> Value {
    json!({"task_id": task_id, "subtask_id": subtask_id, "task_title": "real", "subtask_title": "cli",
           "bot": [{"id": 1, "shell_type": "ClaudeCode", "system_prompt": "You are a test bot."}],
           "prompt": prompt})
}

#[tokio::test(flavor = "multi_thread")]
async fn real_cli_completes_and_the_follow_up_sees_the_history() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;

    let (status, body) = exec
        .post_json("/api/tasks/execute", &task(1, 1, "first question"))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("RUNNING"))
    );
    let first = rx.wait_terminal(1, 1, WAIT).await;
    assert_eq!(
        first["status"],
        "COMPLETED",
        "{}\n{}",
        rx.dump(),
        exec.logs_tail(40)
    );
    let first_text = first["result"]["value"].as_str().unwrap_or("").to_string();
    assert!(
        first_text.starts_with("mock reply #") && first_text.contains("first question"),
        "{first_text}"
    );
    assert_eq!(first["error_message"].as_str(), Some(first_text.as_str()));
    let sid = std::fs::read_to_string(exec.workspace().join("1/.claude_session_id"))
        .expect("session id saved");
    assert_eq!(sid.trim().len(), 36, "a UUID: {sid}");

    exec.post_json("/api/tasks/execute", &task(1, 2, "second question"))
        .await;
    let second = rx.wait_terminal(1, 2, WAIT).await;
    assert_eq!(
        second["status"],
        "COMPLETED",
        "{}\n{}",
        rx.dump(),
        exec.logs_tail(40)
    );
    assert!(
        second["result"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("second question"),
        "{second}"
    );

    let last = mock
        .requests()
        .into_iter()
        .last()
        .expect("the mock saw requests");
    let history = message_texts(&last);
    assert!(
        history
            .iter()
            .any(|(role, text)| role == "assistant" && text == &first_text),
        "the second request must carry the first answer: {history:?}"
    );
    assert!(
        history
            .iter()
            .any(|(role, text)| role == "user" && text.contains("first question")),
        "{history:?}"
    );
    let system = last["system"].to_string();
    assert!(
        system.contains("You are a test bot."),
        "bot[0].system_prompt reaches the model: {system}"
    );

    let seq: Vec<i64> = rx
        .for_subtask(1, 2)
        .iter()
        .map(|c| c["progress"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(&seq[..3], &[50, 55, 60], "{seq:?}");
    assert_eq!(seq.last(), Some(&100));
}

#[tokio::test(flavor = "multi_thread")]
async fn real_cli_cancel_interrupts_the_turn_and_the_conversation_goes_on() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;

    mock.hold();
    exec.post_json("/api/tasks/execute", &task(2, 1, "a question that hangs"))
        .await;
    mock.wait_for_held(1, WAIT).await;
    let cli_before = processes_in(&exec.workspace().join("2"));
    assert!(
        !cli_before.is_empty(),
        "the CLI runs in the task's directory"
    );
    let (status, body) = exec
        .post_json("/api/tasks/cancel?task_id=2", &json!({}))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::OK, Some("[task_id: 2.-1] Task cancelled"))
    );
    let cancelled = rx.wait_terminal(2, 1, WAIT).await;
    assert_eq!(cancelled["status"], "CANCELLED", "{}", rx.dump());
    assert_eq!(cancelled["error_message"], "${{tasks.cancel_task}}");
    mock.release();

    exec.post_json("/api/tasks/execute", &task(2, 2, "after the cancel"))
        .await;
    let next = rx.wait_terminal(2, 2, WAIT).await;
    assert_eq!(
        next["status"],
        "COMPLETED",
        "{}\n{}",
        rx.dump(),
        exec.logs_tail(40)
    );
    assert!(
        next["result"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("after the cancel"),
        "{next}"
    );
    // The same process answered, and it still had the interrupted question in its history.
    let cli_after = processes_in(&exec.workspace().join("2"));
    assert!(
        cli_before.iter().all(|p| cli_after.contains(p)),
        "the CLI survived the cancel: before {cli_before:?}, after {cli_after:?}"
    );
    let last = mock.requests().into_iter().last().expect("a request");
    let users: Vec<String> = message_texts(&last)
        .into_iter()
        .filter(|(r, _)| r == "user")
        .map(|(_, t)| t)
        .collect();
    assert!(
        users.iter().any(|t| t.contains("a question that hangs"))
            && users.iter().any(|t| t.contains("after the cancel")),
        "the conversation went on in the same session: {users:?}"
    );
    rx.assert_one_terminal_now(2, &[1, 2]);
}
