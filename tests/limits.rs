//! Limits: the liveness watchdog tells a running tool from a hung CLI, the turn time limit, the
//! session cap (429 with Retry-After), and refusing new tasks while shutting down.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_cli_with_no_tool_running_is_declared_hung() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("WATCHDOG_SILENCE_SECS", "1")]).await;
    let done = run_task(&exec, &rx, 1, 1, "FAKE:sleep:30000\nsilence").await;
    assert_eq!(done["status"], "FAILED");
    let msg = done["error_message"].as_str().unwrap_or("");
    assert!(msg.contains("no output") && msg.contains("hung"), "{msg}");
    let dir = exec.workspace().join("1");
    assert!(
        wait_until(Duration::from_secs(5), || processes_in(&dir).is_empty()).await,
        "the hung CLI is ended"
    );
    // The task stays usable, and the hung subtask had exactly one terminal callback.
    assert_one_terminal_each(&exec, &rx, 1, &[1], 2).await;
}

/// Silence while a tool runs is normal up to `WATCHDOG_TOOL_SECS`, past it the tool counts as
/// hung. Both halves in one executor: the first alone would pass with the watchdog deleted.
#[tokio::test(flavor = "multi_thread")]
async fn silence_while_a_tool_runs_is_normal_until_the_tool_limit() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[("WATCHDOG_SILENCE_SECS", "1"), ("WATCHDOG_TOOL_SECS", "5")],
    )
    .await;
    // 2.5 s of silence with a tool open: well over the 1 s silence limit, well under the 5 s
    // tool limit (the margins are generous on purpose: a loaded machine only makes the
    // silence longer, never shorter).
    let done = run_task(
        &exec,
        &rx,
        2,
        1,
        "FAKE:open_tool\nFAKE:sleep:2500\nbusy tool",
    )
    .await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    let stuck = run_task(
        &exec,
        &rx,
        2,
        2,
        "FAKE:open_tool\nFAKE:sleep:60000\nstuck tool",
    )
    .await;
    assert_eq!(stuck["status"], "FAILED", "{}", rx.dump());
    let msg = stuck["error_message"].as_str().unwrap_or("");
    assert!(
        msg.contains("WATCHDOG_TOOL_SECS") && msg.contains("limit 5 s"),
        "{msg}"
    );
    let dir = exec.workspace().join("2");
    assert!(
        wait_until(Duration::from_secs(5), || processes_in(&dir).is_empty()).await,
        "the stuck CLI is ended: {}",
        describe(&processes_in(&dir))
    );
    assert_one_terminal_each(&exec, &rx, 2, &[1, 2], 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_over_its_time_limit_fails_with_that_reason() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("TURN_TIMEOUT_SECS", "1")]).await;
    let done = run_task(&exec, &rx, 3, 1, "FAKE:open_tool\nFAKE:sleep:30000\nlong").await;
    assert_eq!(done["status"], "FAILED");
    assert!(
        done["error_message"]
            .as_str()
            .unwrap_or("")
            .contains("time limit"),
        "{done}"
    );
    assert_one_terminal_each(&exec, &rx, 3, &[1], 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_session_cap_new_tasks_get_429_with_retry_after() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("MAX_SESSIONS", "2")]).await;
    post_task(&exec, 4, 1, "FAKE:sleep:30000\nbusy").await;
    post_task(&exec, 5, 1, "FAKE:sleep:30000\nbusy").await;
    let resp = exec
        .client()
        .post(exec.url("/api/tasks/execute"))
        .json(&seed_task(6, 1, "one too many"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: serde_json::Value = resp.json().await.expect("JSON");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("maximum of 2 sessions"),
        "{body}"
    );
    assert!(
        rx.for_task(6).is_empty(),
        "a refused task sends no callback"
    );
    // A follow-up for an existing session is still accepted.
    post_task(&exec, 4, 2, "queued").await;
    exec.delete("/api/tasks/session?task_id=5").await;
    post_task(&exec, 6, 1, "now there is room").await;
}

/// `CLAUDE_INIT_TIMEOUT_SECS`: a CLI that never answers `initialize` fails its subtask with a
/// clear message once the limit passes, is ended, and the task's next subtask gets a new CLI.
#[tokio::test(flavor = "multi_thread")]
async fn a_cli_that_never_answers_initialize_fails_after_the_init_timeout() {
    let rx = CallbackReceiver::start();
    let bin_dir = tempfile::tempdir().unwrap();
    let first = bin_dir.path().join("first-start-done");
    let wrapper = bin_dir.path().join("claude");
    // The first agent start hangs before reading stdin (the fake's FAKE_CLAUDE_STARTUP_MS);
    // `--version` probes and later starts are the plain fake.
    write_executable(
        &wrapper,
        &format!(
            "#!/bin/sh\nif [ \"$1\" != --version ] && [ ! -e '{mark}' ]; then\n  : > '{mark}'\n  \
             FAKE_CLAUDE_STARTUP_MS=600000 exec '{fake}' \"$@\"\nfi\nexec '{fake}' \"$@\"\n",
            mark = first.display(),
            fake = fake_claude_path().display()
        ),
    );
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("CLAUDE_INIT_TIMEOUT_SECS", "3")
            .claude_bin(&wrapper),
    )
    .await;
    let dir = exec.workspace().join("3");
    let asked = std::time::Instant::now();
    post_task(&exec, 3, 1, "hello?").await;
    assert!(
        wait_until(Duration::from_secs(20), || !processes_in(&dir).is_empty()).await,
        "the CLI was started"
    );
    let done = rx.wait_terminal(3, 1, Duration::from_secs(40)).await;
    let took = asked.elapsed();
    assert_eq!(done["status"], "FAILED", "{done}");
    let msg = done["error_message"].as_str().unwrap_or("");
    assert!(
        msg.contains("did not answer the initialize request within 3 s"),
        "{msg}"
    );
    // Lower bound: the CLI got its full 3 s. Upper bound (generous for a loaded machine): the
    // setting, not the 60 s default, decided.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(40),
        "FAILED after {took:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || processes_in(&dir).is_empty()).await,
        "the CLI that never answered is ended: {}",
        describe(&processes_in(&dir))
    );
    common::assert_reaped(exec.pid(), Duration::from_secs(10)).await;
    assert_one_terminal_each(&exec, &rx, 3, &[1], 2).await;
}
