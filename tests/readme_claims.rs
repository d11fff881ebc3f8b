//! README claims that had no test of their own: graceful shutdown on SIGINT (503 for new
//! tasks, `/ready` false, `SHUTDOWN_GRACE_SECS`, the rest left in the spool), secret masking
//! on the real callback path, `X-Callback-Sequence` 1..n on the normal path, a stalled
//! receiver never slowing the routes nor other tasks, `CLAUDE_INTERRUPT_TIMEOUT_SECS` with a
//! CLI that ignores the interrupt, and flags over environment for the callback fields.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// SIGINT is a graceful shutdown like SIGTERM: while the receiver cannot take the FAILED
/// callbacks, the routes keep answering (new tasks 503, `/ready` false), the executor waits
/// for the callbacks until `SHUTDOWN_GRACE_SECS` and no longer, exits 0, and what it could not
/// deliver waits in the spool for the next start, which delivers it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_refuses_new_tasks_reports_not_ready_and_leaves_the_rest_in_the_spool() {
    let rx = CallbackReceiver::start();
    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("ws");
    let opts = || {
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("SHUTDOWN_GRACE_SECS", "2")
            .workspace(&ws)
    };
    let mut exec = Executor::start(opts()).await;
    let never = root.path().join("never");
    post_task(
        &exec,
        1,
        1,
        &format!("FAKE:wait_file:{}\nlong", never.display()),
    )
    .await;
    rx.wait_for(WAIT, |cbs| cbs.iter().any(|c| c["progress"] == 60))
        .await;
    rx.hold();
    let signalled = Instant::now();
    exec.signal(libc::SIGINT);
    // The signal is handled asynchronously: wait until the executor says it is shutting down.
    exec.wait_for_log("Shutting down: closing sessions", WAIT)
        .await;

    let (status, body) = exec.get("/ready").await;
    assert_eq!(
        (status, body["ready"].as_bool()),
        (StatusCode::SERVICE_UNAVAILABLE, Some(false)),
        "{body}"
    );
    let (status, body) = exec
        .post_json("/api/tasks/execute", &seed_task(2, 1, "late"))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let exit = exec.wait_exit(Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "{}",
        exec.logs_tail(30)
    );
    // It waited for the blocked callbacks until the grace period (2 s) and not much longer
    // (generous upper bound for a loaded machine; docker stop's 10 s is the real limit).
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "exit {took:?} after SIGINT with SHUTDOWN_GRACE_SECS=2"
    );
    let spooled =
        std::fs::read_to_string(ws.join(".callback-spool/task-1.log")).unwrap_or_default();
    assert!(
        spooled.contains("executor shutting down"),
        "the undelivered FAILED is in the spool:\n{spooled}"
    );
    rx.release();

    let next = Executor::start(opts()).await;
    let done = rx.wait_terminal(1, 1, WAIT).await;
    assert_eq!(
        (done["status"].as_str(), done["error_message"].as_str()),
        (Some("FAILED"), Some("executor shutting down")),
        "{}",
        rx.dump()
    );
    assert_one_terminal_each(&next, &rx, 1, &[1], 2).await;
    assert!(rx.for_task(2).is_empty(), "a refused task sends nothing");
}

/// A secret the CLI prints reaches the receiver masked: the fake echoes the prompt's first
/// line in its reply, and a tool prints another secret.
#[tokio::test]
async fn secrets_the_cli_prints_are_masked_in_callbacks() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let key = "sk-ant-api03-SECRETMARKERabcdefghijkl0123";
    let url = "https://bob:PASSMARKER99@git.example.com/x.git";
    let done = run_task(
        &exec,
        &rx,
        1,
        1,
        &format!("FAKE:sh:echo {url}\nmy key is {key}"),
    )
    .await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    let value = done["result"]["value"].as_str().unwrap_or("");
    assert!(
        value.starts_with("fake reply #1 to: my key is ") && value.contains("***"),
        "the reply echoes the prompt, masked: {value}"
    );
    let all = rx.dump();
    for marker in ["SECRETMARKER", "PASSMARKER99"] {
        assert!(
            !all.contains(marker),
            "{marker} reached the receiver:\n{all}"
        );
    }
    assert!(
        all.contains("git.example.com"),
        "the tool's output (with the URL) was reported: {all}"
    );
}

/// On the normal path (no retry, no restart) every subtask's callbacks carry
/// `X-Callback-Sequence` 1, 2, … n in arrival order.
#[tokio::test]
async fn callbacks_arrive_numbered_1_to_n_per_subtask() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    for sub in 1..=3 {
        run_task(&exec, &rx, 1, sub, "FAKE:tool\nFAKE:lines:5\nhello").await;
    }
    for sub in 1..=3 {
        let seqs: Vec<u64> = rx
            .received()
            .iter()
            .filter(|c| is_subtask(&c.body, 1, sub))
            .map(|c| {
                c.header("x-callback-sequence")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no sequence header: {c:?}"))
            })
            .collect();
        assert!(seqs.len() >= 3, "subtask {sub}: {seqs:?}");
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "subtask {sub}: {}", rx.dump());
    }
}

/// A receiver that does not answer never slows the routes, and other tasks run meanwhile:
/// first proven that a callback is parked, then the routes are timed and a second task runs to
/// its end (its own callbacks parked too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_never_slows_the_routes_or_other_tasks() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    rx.hold();
    post_task(&exec, 1, 1, "first").await;
    rx.wait_for_held(1, WAIT).await;
    for path in [
        "/",
        "/health",
        "/ready",
        "/metrics",
        "/api/tasks/sessions",
        "/openapi.json",
    ] {
        let asked = Instant::now();
        let (status, body) = exec.get(path).await;
        let took = asked.elapsed();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        // Generous on purpose (loaded machine): a route waiting for the parked callback
        // would wait for the 10 s callback timeout at least.
        assert!(
            took < Duration::from_secs(3),
            "GET {path} took {took:?} with a stalled receiver"
        );
    }
    post_task(&exec, 2, 1, "second").await;
    // Task 2 finishes although nothing was delivered: the listing counts its subtask done.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, listing) = exec.get("/api/tasks/sessions").await;
        let done = listing["sessions"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["task_id"] == 2 && r["completed_subtasks"] == 1)
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task 2 did not finish while task 1's callbacks were parked: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx.release();
    for t in [1, 2] {
        let done = rx.wait_terminal(t, 1, WAIT).await;
        assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    }
}

/// A cancelled turn whose CLI ignores the interrupt: after `CLAUDE_INTERRUPT_TIMEOUT_SECS`
/// (1 s here, 10 s by default) the CLI is killed, the subtask is CANCELLED once, and the next
/// subtask gets a new process.
#[tokio::test(flavor = "multi_thread")]
async fn a_cli_that_ignores_the_interrupt_is_killed_after_the_interrupt_timeout() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("CLAUDE_INTERRUPT_TIMEOUT_SECS", "1")]).await;
    post_task(
        &exec,
        1,
        1,
        "FAKE:ignore_interrupt\nFAKE:sleep:60000\nstubborn",
    )
    .await;
    rx.wait_for(WAIT, |cbs| cbs.iter().any(|c| c["progress"] == 60))
        .await;
    exec.wait_for_log("fake-claude: ignoring interrupts", WAIT)
        .await;
    let dir = exec.workspace().join("1");
    let cli = processes_in(&dir);
    assert_eq!(cli.len(), 1, "{}", describe(&cli));
    let (status, body) = exec
        .post_json("/api/tasks/cancel?task_id=1", &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = rx.wait_terminal(1, 1, WAIT).await;
    assert_eq!(done["status"], "CANCELLED", "{}", rx.dump());
    // Within a generous 6 s of the cancel: under the 10 s default, so only the 1 s setting
    // can have ended it (the turn itself would run for 60 s).
    assert!(
        wait_until(Duration::from_secs(6), || !is_alive(cli[0])).await,
        "the CLI ignoring the interrupt still runs: {}",
        describe(&cli)
    );
    let next = assert_one_terminal_each(&exec, &rx, 1, &[1], 2).await;
    assert_eq!(
        next["result"]["value"], "fake reply #1 to: fence: nothing left in flight",
        "a new process serves the next subtask"
    );
}

/// Flags beat the environment (the file is beaten by both: `tests/http_routes.rs`), and
/// `EXECUTOR_NAMESPACE` reaches every callback.
#[tokio::test]
async fn flags_beat_the_environment_and_callbacks_carry_name_and_namespace() {
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("EXECUTOR_NAME", "from-env")
            .env("EXECUTOR_NAMESPACE", "ns-from-env")
            .arg("--executor-name")
            .arg("from-flag"),
    )
    .await;
    run_task(&exec, &rx, 1, 1, "who").await;
    let cbs = rx.for_subtask(1, 1);
    assert!(!cbs.is_empty());
    for cb in &cbs {
        assert_eq!(
            (
                cb["executor_name"].as_str(),
                cb["executor_namespace"].as_str()
            ),
            (Some("from-flag"), Some("ns-from-env")),
            "{cb}"
        );
    }
}
