//! Supervision and fault handling: an agent process that crashes, ends without a result, writes
//! a line over the limit, reports an error, or cannot start gives its subtask one `FAILED`
//! callback saying why, and the task keeps working. Also graceful shutdown and secrets.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// Runs one subtask and returns its terminal callback. Counting terminals here would be too
/// early (a duplicate comes later): each test ends with [`assert_one_terminal_each`].
async fn run(
    exec: &Executor,
    rx: &CallbackReceiver,
    task_id: i64,
    sub: i64,
    content: &str,
) -> Value {
    let (status, _) = exec
        .post_json("/api/tasks/execute", &seed_task(task_id, sub, content))
        .await;
    assert_eq!(status, StatusCode::OK);
    rx.wait_terminal(task_id, sub, WAIT).await
}

/// [`run`] for a subtask that moves many megabytes through the debug build: a loaded 2-core
/// machine needs far more than [`WAIT`] for it.
async fn run_big(
    exec: &Executor,
    rx: &CallbackReceiver,
    task_id: i64,
    sub: i64,
    content: &str,
) -> Value {
    let (status, _) = exec
        .post_json("/api/tasks/execute", &seed_task(task_id, sub, content))
        .await;
    assert_eq!(status, StatusCode::OK);
    rx.wait_terminal(task_id, sub, Duration::from_secs(90))
        .await
}

/// Peak resident set (`VmHWM`) of `pid` in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no VmHWM for pid {pid}"))
}

fn message(cb: &Value) -> &str {
    cb["error_message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_crash_mid_turn_fails_the_subtask_with_exit_code_and_stderr_then_recovers() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    assert_eq!(run(&exec, &rx, 1, 1, "before").await["status"], "COMPLETED");
    let crashed = run(&exec, &rx, 1, 2, "FAKE:crash:7\ncrash now").await;
    assert_eq!(
        (crashed["status"].as_str(), crashed["progress"].as_i64()),
        (Some("FAILED"), Some(100))
    );
    let msg = message(&crashed);
    assert!(
        msg.contains("exit code 7") && msg.contains("simulated crash"),
        "{msg}"
    );
    let after = run(&exec, &rx, 1, 3, "after").await;
    assert_eq!(after["status"], "COMPLETED", "{}", rx.dump());
    assert_eq!(
        after["result"]["value"], "fake reply #1 to: after",
        "a fresh process serves the next subtask"
    );
    assert_eq!(
        exec.get("/api/tasks/sessions").await.1["total"],
        1,
        "the session survived"
    );
    assert_one_terminal_each(&exec, &rx, 1, &[1, 2, 3], 4).await;
}

#[tokio::test]
async fn a_turn_without_result_fails_instead_of_hanging() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let done = run(&exec, &rx, 2, 1, "FAKE:noresult\nhi").await;
    assert_eq!(done["status"], "FAILED");
    assert!(
        message(&done).contains("exited unexpectedly (exit code 0)"),
        "{done}"
    );
    assert_eq!(run(&exec, &rx, 2, 2, "again").await["status"], "COMPLETED");
    assert_one_terminal_each(&exec, &rx, 2, &[1, 2], 3).await;
}

#[tokio::test]
async fn error_results_fail_with_the_cli_message() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let api = run(
        &exec,
        &rx,
        3,
        1,
        "FAKE:error:API Error: 500 upstream broke\nhi",
    )
    .await;
    assert_eq!(
        (api["status"].as_str(), message(&api)),
        (Some("FAILED"), "API Error: 500 upstream broke")
    );
    let turns = run(&exec, &rx, 3, 2, "FAKE:error_subtype:error_max_turns\nhi").await;
    assert_eq!(
        (turns["status"].as_str(), message(&turns)),
        (Some("FAILED"), "Reached maximum number of turns (1)")
    );
    let ok = run(&exec, &rx, 3, 3, "fine").await;
    assert_eq!(
        ok["result"]["value"], "fake reply #3 to: fine",
        "error results do not end the process"
    );
    assert_one_terminal_each(&exec, &rx, 3, &[1, 2, 3], 4).await;
}

#[tokio::test]
async fn an_oversized_stdout_line_fails_the_turn_without_eating_memory() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("MAX_LINE_BYTES", "4096")]).await;
    // Warm up (first task, first callback client…) so the peak below is the line's doing.
    assert_eq!(
        run(&exec, &rx, 4, 0, "warm up").await["status"],
        "COMPLETED"
    );
    let before = peak_rss_kib(exec.pid());
    let done = run_big(&exec, &rx, 4, 1, "FAKE:bigline:32000000\nhi").await;
    assert_eq!(done["status"], "FAILED");
    assert!(message(&done).contains("longer than 4096 bytes"), "{done}");
    // A 32 MB line read into memory would raise the peak by at least 32 MB; the limit keeps
    // it far lower (16 MiB is a generous allowance for everything else).
    let grown = peak_rss_kib(exec.pid()).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "the executor's peak RSS grew by {grown} KiB for a 32 MB line over a 4 KiB limit"
    );
    assert_eq!(run(&exec, &rx, 4, 2, "small").await["status"], "COMPLETED");
    assert_one_terminal_each(&exec, &rx, 4, &[0, 1, 2], 3).await;
}

#[tokio::test]
async fn a_process_that_exits_after_its_result_is_replaced_for_the_next_subtask() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    assert_eq!(
        run(&exec, &rx, 5, 1, "FAKE:exit_after_result:0\nbye").await["status"],
        "COMPLETED"
    );
    let next = run(&exec, &rx, 5, 2, "hello again").await;
    assert_eq!(
        next["result"]["value"],
        "fake reply #1 to: hello again",
        "{}",
        rx.dump()
    );
    assert_one_terminal_each(&exec, &rx, 5, &[1, 2], 3).await;
}

#[tokio::test]
async fn a_missing_cli_fails_with_install_instructions() {
    let rx = CallbackReceiver::start();
    let opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .claude_bin("/nonexistent/claude");
    let exec = Executor::start(opts).await;
    assert!(
        exec.logs()
            .iter()
            .any(|l| l.contains("Claude Code CLI not found")),
        "{}",
        exec.logs_tail(10)
    );
    let done = run(&exec, &rx, 6, 1, "hi").await;
    assert_eq!(done["status"], "FAILED");
    let msg = message(&done);
    assert!(
        msg.contains("Failed to start Claude Code CLI") && msg.contains("npm install"),
        "{msg}"
    );
    // No fence can complete without a CLI; a later subtask that also ended still orders the
    // callbacks of the first before its own.
    assert_eq!(run(&exec, &rx, 6, 2, "again").await["status"], "FAILED");
    rx.assert_one_terminal_now(6, &[1, 2]);
}

/// executor_manager's delete runs `docker stop` (SIGTERM, SIGKILL 10 s later) while its own
/// event loop — the callback receiver — is blocked in that very call. The executor must exit
/// 0 well inside those 10 s with default settings (the bound is the point of this test), keep
/// what it could not deliver in its spool, and deliver it, once, at its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_blocked_receiver_exits_inside_docker_stops_10_s_and_delivers_later() {
    let rx = CallbackReceiver::start();
    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("ws");
    let opts = || {
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .workspace(&ws)
    };
    let mut exec = Executor::start(opts()).await;
    let never = root.path().join("never");
    post_task(
        &exec,
        81,
        1,
        &format!("FAKE:wait_file:{}\nlong", never.display()),
    )
    .await;
    rx.wait_for(WAIT, |cbs| cbs.iter().any(|c| c["progress"] == 60))
        .await;
    rx.hold();
    let status = exec.terminate_within(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", exec.logs_tail(30));
    assert!(
        rx.for_subtask(81, 1).iter().all(|c| !is_terminal(c)),
        "the receiver was blocked: nothing terminal can have been delivered"
    );
    let spooled =
        std::fs::read_to_string(ws.join(".callback-spool/task-81.log")).unwrap_or_default();
    assert!(
        spooled.contains("executor shutting down"),
        "the undelivered FAILED is not in the spool:\n{spooled}"
    );
    rx.release();

    let next = Executor::start(opts()).await;
    let done = rx.wait_terminal(81, 1, WAIT).await;
    assert_eq!(
        (done["status"].as_str(), message(&done)),
        (Some("FAILED"), "executor shutting down"),
        "{}",
        next.logs_tail(20)
    );
    assert_one_terminal_each(&next, &rx, 81, &[1], 2).await;
}

#[tokio::test]
async fn sigterm_fails_running_subtasks_ends_all_processes_and_exits_zero() {
    let rx = CallbackReceiver::start();
    let mut exec = start_fake(
        &rx,
        &[
            ("SESSION_EOF_GRACE_MS", "200"),
            ("SESSION_TERM_GRACE_MS", "500"),
        ],
    )
    .await;
    for t in 10..13 {
        exec.post_json(
            "/api/tasks/execute",
            &seed_task(t, 1, "FAKE:sleep:60000\nlong"),
        )
        .await;
    }
    let ws = exec.workspace().to_path_buf();
    rx.wait_for(WAIT, |cbs| {
        cbs.iter().filter(|c| c["progress"] == 60).count() == 3
    })
    .await;
    assert_eq!(
        processes_in(&ws).len(),
        3,
        "{}",
        describe(&processes_in(&ws))
    );
    let status = exec.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", exec.logs_tail(30));
    for t in 10..13 {
        let done = rx.wait_terminal(t, 1, WAIT).await;
        assert_eq!(
            (done["status"].as_str(), message(&done)),
            (Some("FAILED"), "executor shutting down")
        );
    }
    assert!(
        processes_in(&ws).is_empty(),
        "left behind: {}",
        describe(&processes_in(&ws))
    );
    // The executor has exited: nothing more can arrive, so the count is final.
    for t in 10..13 {
        rx.assert_one_terminal_now(t, &[1]);
    }
}

#[tokio::test]
async fn secrets_never_reach_logs_callbacks_listings_or_command_lines() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("ANTHROPIC_API_KEY", "sk-ant-EXECMARKER-123")]).await;
    let body = json!({"task_id": 40, "subtask_id": 1, "prompt": "FAKE:sleep:400\nhi",
        "bot": [{"shell_type": "ClaudeCode", "agent_config": {"env": {"model": "claude", "model_id": "m",
                 "api_key": "sk-ant-TASKMARKER-456"}}}]});
    exec.post_json("/api/tasks/execute", &body).await;
    rx.wait_for(WAIT, |cbs| cbs.iter().any(|c| c["progress"] == 60))
        .await;
    let cmdlines: Vec<String> = processes_in(exec.workspace())
        .into_iter()
        .filter_map(common::procs::cmdline)
        .collect();
    assert!(!cmdlines.is_empty());
    let (_, listing) = exec.get("/api/tasks/sessions").await;
    let done = rx.wait_terminal(40, 1, WAIT).await;
    assert_eq!(done["status"], "COMPLETED");
    let haystacks = [
        exec.logs().join("\n"),
        rx.dump(),
        listing.to_string(),
        cmdlines.join("\n"),
    ];
    for marker in ["EXECMARKER", "TASKMARKER"] {
        for h in &haystacks {
            assert!(!h.contains(marker), "secret {marker} leaked into: {h}");
        }
    }
    assert_one_terminal_each(&exec, &rx, 40, &[1], 2).await;
}

#[tokio::test]
async fn garbage_lines_and_a_10_mb_line_within_the_limit_are_survived() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let noisy = run(&exec, &rx, 50, 1, "FAKE:garbage\nstill fine").await;
    assert_eq!(noisy["status"], "COMPLETED", "{}", rx.dump());
    assert_eq!(noisy["result"]["value"], "fake reply #1 to: still fine");
    let big = run_big(&exec, &rx, 50, 2, "FAKE:bigline:10000000\nbig").await;
    assert_eq!(big["status"], "COMPLETED");
    assert_eq!(big["result"]["value"], "fake reply #2 to: big");
    assert_eq!(run(&exec, &rx, 50, 3, "after").await["status"], "COMPLETED");
    assert_one_terminal_each(&exec, &rx, 50, &[1, 2, 3], 4).await;
}

#[tokio::test]
async fn a_flood_of_100000_messages_ends_once_with_few_callbacks() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    post_task(&exec, 60, 1, "FAKE:lines:100000\nflood").await;
    let done = rx.wait_terminal(60, 1, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "COMPLETED", "{}", exec.logs_tail(20));
    assert_eq!(done["result"]["value"], "fake reply #1 to: flood");
    let sent = rx.for_subtask(60, 1).len();
    assert!(
        sent < 1_000,
        "progress is coalesced, not one callback per line: {sent}"
    );
    let thinking = done["result"]["thinking"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert!(
        thinking <= 200,
        "the thinking list stays bounded: {thinking}"
    );
    assert_eq!(run(&exec, &rx, 60, 2, "after").await["status"], "COMPLETED");
    assert_one_terminal_each(&exec, &rx, 60, &[1, 2], 3).await;
}
