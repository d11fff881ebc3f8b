//! `POST /api/tasks/cancel` (contract §2.4): unknown tasks, cancelling a running subtask (one
//! `CANCELLED` callback, nothing after it, the process survives for the next subtask), an idle
//! session (no callback), and subtasks queued behind the running one (cancelled, never run).
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);
const CANCEL_MESSAGE: &str = "${{tasks.cancel_task}}";

async fn cancel(exec: &Executor, task_id: i64) -> (StatusCode, Value) {
    let client = exec.client();
    let resp = client
        .post(exec.url(&format!("/api/tasks/cancel?task_id={task_id}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("cancel {task_id}: {e}\n{}", exec.logs_tail(50)));
    let status = resp.status();
    let body = common::executor_process::parse_body(&resp.bytes().await.unwrap());
    (status, body)
}

/// Waits until the CLI has started working on the subtask (its `system` line was relayed as a
/// progress-75 callback), so a cancel reaches a turn that is really running.
async fn wait_working(rx: &CallbackReceiver, task_id: i64, subtask_id: i64) {
    rx.wait_for(WAIT, |cbs| {
        cbs.iter().any(|c| {
            is_subtask(c, task_id, subtask_id) && c["status"] == "RUNNING" && c["progress"] == 75
        })
    })
    .await;
}

fn statuses(rx: &CallbackReceiver, task_id: i64, subtask_id: i64) -> Vec<(String, i64)> {
    rx.for_subtask(task_id, subtask_id)
        .iter()
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["progress"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test]
async fn cancel_of_an_unknown_task_is_400() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let (status, body) = cancel(&exec, 987).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{body}\n{}",
        exec.logs_tail(50)
    );
    assert_eq!(
        body,
        json!({"detail": "[task_id: 987.-1] No session found"})
    );
    assert!(rx.callbacks().is_empty(), "{}", rx.dump());
}

#[tokio::test]
async fn cancel_of_a_running_subtask_sends_one_cancelled_and_keeps_the_process() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    post_task(&exec, 11, 1, "FAKE:sleep:30000").await;
    wait_working(&rx, 11, 1).await;

    let started = Instant::now();
    let (status, body) = cancel(&exec, 11).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}\n{}", exec.logs_tail(50));
    assert_eq!(body, json!({"message": "[task_id: 11.-1] Task cancelled"}));
    // Generous on purpose: it only rules out waiting for the 30 s turn to end or for the
    // 10 s interrupt timeout (CLAUDE_INTERRUPT_TIMEOUT_SECS) to kill the CLI.
    assert!(
        took < Duration::from_secs(5),
        "cancel answered after {took:?}"
    );

    let done = rx.wait_terminal(11, 1, WAIT).await;
    assert_eq!(done["status"], "CANCELLED", "{}", rx.dump());
    assert_eq!(done["progress"], 100, "{done}");
    assert_eq!(done["error_message"], CANCEL_MESSAGE, "{done}");

    // The next subtask runs on the same process (its second turn), and once it has finished
    // every callback queued for subtask 1 has been delivered (one task's callbacks are in order).
    let next = run_task(&exec, &rx, 11, 2, "after cancel").await;
    assert_eq!(next["status"], "COMPLETED", "{}", rx.dump());
    assert_eq!(
        value_of(&next),
        "fake reply #2 to: after cancel",
        "the CLI process must survive a cancel: {}",
        rx.dump()
    );

    let seq = statuses(&rx, 11, 1);
    assert!(
        !seq.iter().any(|(s, _)| s == "FAILED" || s == "COMPLETED"),
        "a cancelled subtask must not also fail or complete: {seq:?}\n{}",
        rx.dump()
    );
    assert_eq!(
        seq.iter().filter(|(s, _)| s == "CANCELLED").count(),
        1,
        "exactly one CANCELLED: {seq:?}"
    );
    assert_eq!(
        seq.last().map(|(s, _)| s.as_str()),
        Some("CANCELLED"),
        "nothing may follow CANCELLED: {seq:?}"
    );
}

#[tokio::test]
async fn cancel_of_an_idle_session_sends_nothing() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let done = run_task(&exec, &rx, 21, 1, "hello").await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    let before = rx.for_subtask(21, 1).len();

    let (status, body) = cancel(&exec, 21).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", exec.logs_tail(50));
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("[task_id: 21.-1]")),
        "{body}"
    );

    // Anything the cancel sent would arrive before the next subtask's callbacks.
    let next = run_task(&exec, &rx, 21, 2, "still here").await;
    assert_eq!(next["status"], "COMPLETED", "{}", rx.dump());
    assert_eq!(
        value_of(&next),
        "fake reply #2 to: still here",
        "{}",
        rx.dump()
    );
    assert_eq!(
        rx.for_subtask(21, 1).len(),
        before,
        "cancelling an idle session must send no callback: {}",
        rx.dump()
    );
    assert!(
        !rx.for_task(21).iter().any(|c| c["status"] == "CANCELLED"),
        "{}",
        rx.dump()
    );
}

#[tokio::test]
async fn cancel_also_cancels_queued_subtasks_which_never_run() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    post_task(&exec, 31, 1, "FAKE:sleep:30000").await;
    post_task(&exec, 31, 2, "two").await;
    post_task(&exec, 31, 3, "three").await;
    wait_working(&rx, 31, 1).await;

    let (status, body) = cancel(&exec, 31).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", exec.logs_tail(50));
    assert_eq!(body, json!({"message": "[task_id: 31.-1] Task cancelled"}));

    for sub in 1..=3 {
        let done = rx.wait_terminal(31, sub, WAIT).await;
        assert_eq!(done["status"], "CANCELLED", "subtask {sub}: {}", rx.dump());
        assert_eq!(done["progress"], 100, "{done}");
        assert_eq!(done["error_message"], CANCEL_MESSAGE, "{done}");
    }

    // A later subtask is the process's second turn: 2 and 3 never reached it.
    let next = run_task(&exec, &rx, 31, 4, "four").await;
    assert_eq!(next["status"], "COMPLETED", "{}", rx.dump());
    assert_eq!(
        value_of(&next),
        "fake reply #2 to: four",
        "queued subtasks must not have run: {}",
        rx.dump()
    );
    for sub in 2..=3 {
        assert_eq!(
            statuses(&rx, 31, sub),
            vec![("RUNNING".to_string(), 50), ("CANCELLED".to_string(), 100)],
            "queued subtask {sub} must only be accepted and cancelled: {}",
            rx.dump()
        );
    }
    let seq = statuses(&rx, 31, 1);
    assert_eq!(
        seq.iter().filter(|(s, _)| s != "RUNNING").count(),
        1,
        "one terminal callback for subtask 1: {seq:?}"
    );
}
