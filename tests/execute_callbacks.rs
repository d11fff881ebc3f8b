//! `POST /api/tasks/execute` and the callbacks it produces (contract §2.3, §4): response shape,
//! payload keys, the progress sequence, conversation continuity, ordering, retries and the
//! start-up `TASK_INFO` path. The agent is the project's fake `claude`.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// Keys a callback may carry (contract §4.3).
const PAYLOAD_KEYS: &[&str] = &[
    "task_id",
    "subtask_id",
    "task_title",
    "subtask_title",
    "executor_name",
    "executor_namespace",
    "progress",
    "status",
    "error_message",
    "result",
    "task_type",
];

#[tokio::test]
async fn seed_body_runs_with_the_contract_sequence_and_payload() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("EXECUTOR_NAME", "exec-test")]).await;
    let mut titled = seed_task(1, 10, "hello");
    titled["task_title"] = json!("Task Title");
    titled["subtask_title"] = json!("Subtask Title");
    let (status, body) = exec.post_json("/api/tasks/execute", &titled).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"task_id": 1, "subtask_id": 10, "status": "RUNNING",
               "message": "Task execution status  : RUNNING", "progress": 50})
    );
    let done = rx.wait_terminal(1, 10, WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    assert_eq!(done["progress"], 100);
    assert_eq!(value_of(&done), "fake reply #1 to: hello");
    assert_eq!(done["error_message"], "fake reply #1 to: hello");
    assert!(done["result"]["thinking"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));

    let cbs = rx.for_subtask(1, 10);
    let seq: Vec<(i64, String, String)> = cbs
        .iter()
        .map(|c| {
            (
                c["progress"].as_i64().unwrap_or(-1),
                c["status"].as_str().unwrap_or("").to_string(),
                c["error_message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        seq[0],
        (50, "RUNNING".into(), "Task execution started".into()),
        "{seq:?}"
    );
    assert_eq!(
        seq[1],
        (
            55,
            "RUNNING".into(),
            "${{thinking.initialize_agent}}".into()
        ),
        "{seq:?}"
    );
    assert_eq!(
        seq[2],
        (
            60,
            "RUNNING".into(),
            "${{thinking.initialize_agent}}".into()
        ),
        "{seq:?}"
    );
    assert!(
        seq[3..seq.len() - 1]
            .iter()
            .all(|(p, s, m)| *p == 75 && s == "RUNNING" && m.starts_with("Thinking: ")),
        "{seq:?}"
    );
    assert!(
        seq.iter()
            .any(|(_, _, m)| m == "Thinking: thinking.assistant_message_received"),
        "{seq:?}"
    );
    assert_eq!(
        seq.iter().filter(|(_, s, _)| s != "RUNNING").count(),
        1,
        "exactly one terminal: {seq:?}"
    );

    for cb in &cbs {
        let keys: BTreeSet<&str> = cb.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(
            keys.iter().all(|k| PAYLOAD_KEYS.contains(k)),
            "unexpected key in {cb}"
        );
        for k in [
            "task_id",
            "subtask_id",
            "task_title",
            "subtask_title",
            "progress",
            "status",
            "executor_name",
        ] {
            assert!(keys.contains(k), "missing {k} in {cb}");
        }
        assert!(
            cb.as_object().unwrap().values().all(|v| !v.is_null()),
            "null value in {cb}"
        );
        assert!(
            !keys.contains("executor_namespace") && !keys.contains("task_type"),
            "unset keys must be omitted: {cb}"
        );
        assert_eq!(cb["executor_name"], "exec-test");
        assert_eq!(cb["task_title"], "Task Title");
        assert_eq!(cb["subtask_title"], "Subtask Title");
    }
}

#[tokio::test]
async fn wegent_body_maps_bot_settings_into_the_cli() {
    let rx = CallbackReceiver::start();
    let exec = Executor::start(ExecutorOptions::new().callback_url(rx.url())).await;
    let task = json!({
        "task_id": 2, "subtask_id": 20, "task_title": "T", "subtask_title": "S", "type": "online",
        "bot": [{"id": 11, "name": "coder", "shell_type": "ClaudeCode", "system_prompt": "You are a coder.",
                 "agent_config": {"env": {"model": "claude", "model_id": "model-x", "api_key": "sk-task-key",
                                          "base_url": "https://gw.example/v1"}}}],
        "user": {"id": 3, "name": "u"},
        "prompt": "FAKE:env:ANTHROPIC_MODEL\nFAKE:env:ANTHROPIC_BASE_URL\nFAKE:env:IS_SANDBOX\nFAKE:argv\nhi"
    });
    let (status, body) = exec.post_json("/api/tasks/execute", &task).await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("RUNNING"))
    );
    let done = rx.wait_terminal(2, 20, WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    let text = value_of(&done);
    assert!(text.contains("env ANTHROPIC_MODEL=model-x"), "{text}");
    assert!(
        text.contains("env ANTHROPIC_BASE_URL=https://gw.example;"),
        "{text}"
    );
    assert!(text.contains("env IS_SANDBOX=1"), "{text}");
    assert!(text.contains("--system-prompt=You are a coder."), "{text}");
    assert!(
        text.contains("bypassPermissions") && text.contains("stream-json"),
        "{text}"
    );
    assert!(
        !text.contains("sk-task-key"),
        "the key must not be on the command line: {text}"
    );
    assert!(rx
        .for_subtask(2, 20)
        .iter()
        .all(|c| c["task_type"] == "online"));
}

#[tokio::test]
async fn follow_ups_continue_in_the_same_process_and_new_session_starts_fresh() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let dir = exec.workspace().join("3");
    let mut pids = Vec::new();
    for (sub, extra, want) in [
        (1, json!({}), "#1"),
        (2, json!({}), "#2"),
        (3, json!({"new_session": true}), "#1"),
    ] {
        let mut t = seed_task(3, sub, &format!("message {sub}"));
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        exec.post_json("/api/tasks/execute", &t).await;
        let done = rx.wait_terminal(3, sub, WAIT).await;
        assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
        assert!(
            value_of(&done).starts_with(&format!("fake reply {want} to: message {sub}")),
            "{done}"
        );
        pids.push(processes_in(&dir));
    }
    assert_eq!(pids[0].len(), 1, "one CLI for the task: {pids:?}");
    assert_eq!(pids[0], pids[1], "the follow-up ran on the same process");
    assert!(
        wait_until(WAIT, || {
            let now = processes_in(&dir);
            now.len() == 1 && now != pids[0]
        })
        .await,
        "new_session started a new process and ended the old one: {pids:?} now {:?}",
        processes_in(&dir)
    );
    let sid = std::fs::read_to_string(exec.workspace().join("3/.claude_session_id"))
        .expect("session id file");
    assert!(!sid.trim().is_empty());
}

#[tokio::test]
async fn unknown_agent_type_fails_naming_the_supported_types() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let task =
        json!({"task_id": 5, "subtask_id": 6, "bot": [{"shell_type": "Nope"}], "prompt": "x"});
    let (status, body) = exec.post_json("/api/tasks/execute", &task).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"task_id": 5, "subtask_id": 6, "status": "FAILED",
               "message": "Task execution status  : FAILED", "progress": 0})
    );
    let done = rx.wait_terminal(5, 6, WAIT).await;
    let msg = done["error_message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("[task_id: 5.6] Unable to get or create agent"),
        "{msg}"
    );
    assert!(
        msg.contains("'Nope'") && msg.contains("ClaudeCode"),
        "{msg}"
    );
    let cbs = rx.for_subtask(5, 6);
    assert_eq!(cbs.len(), 2, "{}", rx.dump());
    assert_eq!(
        (cbs[0]["status"].as_str(), cbs[0]["progress"].as_i64()),
        (Some("RUNNING"), Some(50))
    );
    assert_eq!(exec.get("/api/tasks/sessions").await.1["total"], 0);
}

#[tokio::test]
async fn missing_api_key_fails_the_task_clearly() {
    let rx = CallbackReceiver::start();
    let exec = Executor::start(ExecutorOptions::new().callback_url(rx.url())).await;
    exec.post_json("/api/tasks/execute", &seed_task(7, 1, "hi"))
        .await;
    let done = rx.wait_terminal(7, 1, WAIT).await;
    assert_eq!(done["status"], "FAILED");
    assert!(
        done["error_message"]
            .as_str()
            .unwrap_or("")
            .starts_with("API key not configured"),
        "{done}"
    );
}

#[tokio::test]
async fn without_callback_url_tasks_still_run_and_nothing_hangs() {
    let exec = Executor::start(ExecutorOptions::new().env("ANTHROPIC_API_KEY", "sk-test")).await;
    assert!(
        exec.logs()
            .iter()
            .any(|l| l.contains("CALLBACK_URL is not set")),
        "{}",
        exec.logs_tail(20)
    );
    let (status, body) = exec
        .post_json("/api/tasks/execute", &seed_task(8, 1, "hi"))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("RUNNING"))
    );
    let mut done = false;
    for _ in 0..300 {
        let (_, list) = exec.get("/api/tasks/sessions").await;
        if list["sessions"][0]["completed_subtasks"] == 1 {
            done = true;
            break;
        }
        wait_until(Duration::from_millis(50), || false).await;
    }
    assert!(done, "subtask never completed: {}", exec.logs_tail(30));
}

#[tokio::test]
async fn callbacks_are_retried_on_5xx_but_not_on_4xx() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[
            ("CALLBACK_INITIAL_BACKOFF_MS", "20"),
            ("CALLBACK_MAX_BACKOFF_MS", "50"),
        ],
    )
    .await;
    rx.fail_next(2, 500);
    exec.post_json("/api/tasks/execute", &seed_task(9, 1, "retry me"))
        .await;
    let done = rx.wait_terminal(9, 1, WAIT).await;
    assert_eq!(done["status"], "COMPLETED");
    let first = &rx.for_subtask(9, 1)[0];
    assert_eq!(
        first["error_message"],
        "Task execution started",
        "retried event kept its place: {}",
        rx.dump()
    );
    assert_eq!(
        rx.failed_attempts()
            .iter()
            .filter(|a| a.status == 500)
            .count(),
        2
    );

    rx.fail_next(1, 400);
    exec.post_json("/api/tasks/execute", &seed_task(9, 2, "reject me"))
        .await;
    let done = rx.wait_terminal(9, 2, WAIT).await;
    assert_eq!(done["status"], "COMPLETED");
    let got = rx.for_subtask(9, 2);
    assert!(
        got.iter()
            .all(|c| c["error_message"] != "Task execution started"),
        "a 4xx'd event must not be resent: {}",
        rx.dump()
    );
    let rejected: Vec<_> = rx
        .attempts()
        .into_iter()
        .filter(|a| a.status == 400)
        .collect();
    assert_eq!(rejected.len(), 1, "{}", rx.dump());
}

#[tokio::test]
async fn a_stalled_receiver_never_slows_the_http_routes() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    rx.hold();
    for sub in 1..=3 {
        let (status, body) = exec
            .post_json("/api/tasks/execute", &seed_task(10, sub, "held"))
            .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("RUNNING"))
        );
    }
    let (status, _) = exec.get("/").await;
    assert_eq!(status, StatusCode::OK);
    rx.release();
    for sub in 1..=3 {
        assert_eq!(
            rx.wait_terminal(10, sub, WAIT).await["status"],
            "COMPLETED",
            "{}",
            rx.dump()
        );
    }
}

#[tokio::test]
async fn callbacks_stay_in_order_per_task_while_tasks_run_concurrently() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    for task in 20..24 {
        for sub in 1..=3 {
            let (status, _) = exec
                .post_json(
                    "/api/tasks/execute",
                    &seed_task(task, sub, "FAKE:lines:5\ngo"),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
        }
    }
    for task in 20..24 {
        rx.wait_terminal(task, 3, WAIT).await;
        let cbs = rx.for_task(task);
        // Each subtask's events arrive in progress order; a queued subtask's "started" (50) is
        // sent on receipt, but its agent events (55+) only after the previous one ended.
        for sub in 1..=3 {
            let progress: Vec<i64> = cbs
                .iter()
                .filter(|c| c["subtask_id"] == sub)
                .map(|c| c["progress"].as_i64().unwrap())
                .collect();
            assert!(
                progress.windows(2).all(|w| w[0] <= w[1]),
                "task {task}.{sub} out of order: {progress:?}"
            );
        }
        let agent_events: Vec<i64> = cbs
            .iter()
            .filter(|c| c["progress"] != 50)
            .map(|c| c["subtask_id"].as_i64().unwrap())
            .collect();
        assert!(
            agent_events.windows(2).all(|w| w[0] <= w[1]),
            "task {task}: subtasks overlapped: {agent_events:?}"
        );
        for sub in 1..=3 {
            let last = cbs.iter().rfind(|c| c["subtask_id"] == sub).unwrap();
            assert_eq!(
                last["status"],
                "COMPLETED",
                "task {task}.{sub}: {}",
                rx.dump()
            );
            assert!(
                value_of(last).starts_with(&format!("fake reply #{sub} ")),
                "{last}"
            );
        }
    }
}

#[tokio::test]
async fn task_info_runs_once_at_start_up() {
    let rx = CallbackReceiver::start();
    let task = seed_task(30, 300, "from TASK_INFO").to_string();
    let exec = start_fake(&rx, &[("TASK_INFO", &task)]).await;
    let done = rx.wait_terminal(30, 300, WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    assert_eq!(value_of(&done), "fake reply #1 to: from TASK_INFO");
    let found = exec
        .logs()
        .iter()
        .filter(|l| l.contains("TASK_INFO environment variable found"))
        .count();
    assert_eq!(found, 1, "read once:\n{}", exec.logs_tail(40));
    // Counted when nothing can still arrive: a later subtask of the same task finished. It is
    // the process's second turn, so the TASK_INFO turn ran exactly once.
    let fence = assert_one_terminal_each(&exec, &rx, 30, &[300], 301).await;
    assert_eq!(
        value_of(&fence),
        "fake reply #2 to: fence: nothing left in flight"
    );
    let starts = rx
        .for_subtask(30, 300)
        .iter()
        .filter(|c| c["status"] == "RUNNING" && c["progress"] == 55)
        .count();
    assert_eq!(starts, 1, "started once: {}", rx.dump());
}

#[tokio::test]
async fn invalid_task_info_stops_start_up_with_a_clear_error() {
    let opts = ExecutorOptions::new().env("TASK_INFO", "{not json");
    let failure = Executor::try_start(opts)
        .await
        .err()
        .expect("start-up must fail");
    assert!(
        failure
            .logs
            .iter()
            .any(|l| l.contains("TASK_INFO is not valid JSON")),
        "{failure}"
    );
}
