//! Proves the shared harness itself works, without the executor: the callback receiver's
//! recording, failure injection and wake-ups; the mock Anthropic API against the pinned real
//! Claude Code CLI; and the `/proc` helpers.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A plain client that never goes through a proxy.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let resp = http().post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn receiver_records_accepted_callbacks_and_injected_failures_separately() {
    let rx = CallbackReceiver::start();
    rx.fail_next(1, 500);

    let first = json!({"task_id": 1, "subtask_id": 2, "status": "RUNNING", "progress": 50});
    let (status, _) = post(&rx.url(), &first).await;
    assert_eq!(
        status, 500,
        "fail_next(1, 500) should fail the first request"
    );
    assert!(
        rx.callbacks().is_empty(),
        "a failed attempt must not count as a callback"
    );

    let (status, reply) = post(&rx.url(), &first).await;
    assert_eq!(status, 200);
    assert_eq!(reply["status"], "success");

    let attempts = rx.attempts();
    assert_eq!(
        attempts.len(),
        2,
        "both requests are attempts: {}",
        rx.dump()
    );
    assert_eq!(attempts[0].status, 500);
    assert_eq!(attempts[1].status, 200);
    assert_eq!(attempts[0].body, first);
    assert_eq!(
        attempts[1].header("content-type"),
        Some("application/json"),
        "headers are recorded"
    );
    assert_eq!(rx.failed_attempts().len(), 1);
    assert_eq!(rx.callbacks(), vec![first.clone()]);
    assert_eq!(rx.for_task(1).len(), 1);
    assert_eq!(rx.for_task(9).len(), 0);
    assert_eq!(rx.for_subtask(1, 2).len(), 1);
    assert_eq!(rx.for_subtask(1, 3).len(), 0);

    // 4xx injection, then a wrong path: neither is a callback.
    rx.fail_next(1, 400);
    assert_eq!(post(&rx.url(), &first).await.0, 400);
    let wrong = rx.url().replace("/callback", "/elsewhere");
    assert_eq!(post(&wrong, &first).await.0, 404);
    assert_eq!(rx.callbacks().len(), 1);
    assert_eq!(rx.attempts().len(), 4);
}

#[tokio::test]
async fn receiver_wait_for_wakes_on_a_later_callback() {
    let rx = CallbackReceiver::start();
    let url = rx.url();
    let started = Instant::now();
    // The waiter is polled first (and finds nothing), the posts come afterwards and wake it.
    let (seen, _) = tokio::join!(rx.wait_terminal(7, 70, Duration::from_secs(10)), async {
        post(
            &url,
            &json!({"task_id": 7, "subtask_id": 70, "status": "RUNNING"}),
        )
        .await;
        post(
            &url,
            &json!({"task_id": 7, "subtask_id": 71, "status": "COMPLETED"}),
        )
        .await;
        post(
            &url,
            &json!({"task_id": "7", "subtask_id": 70, "status": "COMPLETED", "progress": 100}),
        )
        .await;
    });
    assert_eq!(seen["status"], "COMPLETED");
    assert_eq!(
        seen["subtask_id"], 70,
        "the other subtask's terminal callback must not match"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "woken promptly");

    let all = rx
        .wait_for(Duration::from_secs(5), |cbs| cbs.len() == 3)
        .await;
    assert_eq!(all.len(), 3);
}

#[tokio::test]
#[should_panic(expected = "no terminal callback")]
async fn receiver_wait_terminal_times_out_with_a_helpful_panic() {
    let rx = CallbackReceiver::start();
    post(
        &rx.url(),
        &json!({"task_id": 1, "subtask_id": 1, "status": "RUNNING"}),
    )
    .await;
    rx.wait_terminal(1, 1, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn receiver_hold_stop_and_restart() {
    let rx = CallbackReceiver::start();
    rx.hold();
    let url = rx.url();
    let pending =
        tokio::spawn(async move { post(&url, &json!({"task_id": 1, "subtask_id": 1})).await });
    rx.wait_for_held(1, Duration::from_secs(10)).await;
    assert!(
        rx.attempts().is_empty(),
        "a held request is answered (and recorded) only on release"
    );
    rx.release();
    assert_eq!(pending.await.unwrap().0, 200);
    assert_eq!(rx.callbacks().len(), 1);

    rx.stop();
    let refused = http()
        .post(rx.url())
        .json(&json!({"task_id": 1}))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a stopped receiver must refuse connections"
    );
    rx.restart();
    assert_eq!(
        post(&rx.url(), &json!({"task_id": 1, "subtask_id": 2}))
            .await
            .0,
        200
    );
    assert_eq!(rx.callbacks().len(), 2, "records survive a restart");
}

#[tokio::test]
async fn mock_answers_plain_http_requests_like_the_api() {
    let mock = MockAnthropic::start();
    let client = http();
    let body = json!({
        "model": "claude-test",
        "max_tokens": 10,
        "stream": false,
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>ignore me</system-reminder>"},
                {"type": "image", "source": {}},
                {"type": "text", "text": "first line\nsecond line"}
            ]},
            {"role": "system", "content": "environment info"}
        ]
    });
    let resp = client
        .post(format!("{}/v1/messages?beta=true", mock.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let msg: Value = resp.json().await.unwrap();
    assert_eq!(
        msg["content"][0]["text"],
        "mock reply #1 to: first line second line"
    );
    assert_eq!(msg["stop_reason"], "end_turn");

    let resp = client
        .post(format!("{}/v1/messages?beta=true", mock.url()))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let sse = resp.text().await.unwrap();
    let events: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        events,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(sse.contains("mock reply #2 to: hello"), "{sse}");

    let resp = client
        .post(format!("{}/v1/messages/count_tokens?beta=true", mock.url()))
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"input_tokens": 10})
    );

    let resp = client
        .head(format!("{}/anything", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(format!("{}/v1/models", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "not_found_error");

    mock.fail_with(529);
    let resp = client
        .post(format!("{}/v1/messages", mock.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 529);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "overloaded_error"
    );

    assert_eq!(
        mock.requests().len(),
        3,
        "only /v1/messages bodies: {}",
        mock.dump()
    );
    assert_eq!(mock.request_headers().len(), 3);
    assert_eq!(mock.messages_requests()[0].query, "beta=true");
    assert_eq!(mock.all_requests().len(), 6);
}

/// The real CLI, started directly, offline against the mock.
async fn run_real_cli(
    mock: &MockAnthropic,
    cwd: &Path,
    extra_args: &[&str],
    prompt: &str,
) -> (std::process::ExitStatus, Vec<Value>, String) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(claude_cli_path());
    cmd.arg("-p")
        .arg(prompt)
        .args(["--output-format", "stream-json", "--verbose"])
        .args(extra_args)
        .current_dir(cwd)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("HOME", home.path())
        .envs(real_claude_env(mock))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn the real claude CLI");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the real CLI did not finish within 60 s")
        .expect("wait for the real CLI");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        out.status,
        lines,
        format!(
            "stdout:\n{stdout}\nstderr:\n{stderr}\nmock:\n{}",
            mock.dump()
        ),
    )
}

fn result_line(lines: &[Value]) -> Option<&Value> {
    lines.iter().find(|l| l["type"] == "result")
}

#[tokio::test]
async fn real_cli_talks_to_the_mock() {
    let mock = MockAnthropic::start();
    let cwd = tempfile::tempdir().unwrap();
    let (status, lines, output) = run_real_cli(&mock, cwd.path(), &[], "say hi").await;
    assert!(status.success(), "real CLI failed ({status}):\n{output}");
    let result = result_line(&lines).unwrap_or_else(|| panic!("no result line:\n{output}"));
    let text = result["result"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("mock reply #1 to:") && text.contains("say hi"),
        "unexpected result {text:?}:\n{output}"
    );
    assert_eq!(result["is_error"], false);
    assert_eq!(mock.requests().len(), 1, "{output}");
    let req = &mock.messages_requests()[0];
    assert_eq!(req.query, "beta=true");
    assert_eq!(req.header("x-api-key"), Some("dummy-test-key"));
    assert_eq!(last_user_text(&req.body), "say hi");
}

#[tokio::test]
async fn real_cli_runs_a_tool_the_mock_asks_for() {
    let mock = MockAnthropic::start();
    let cwd = tempfile::tempdir().unwrap();
    let (status, lines, output) = run_real_cli(
        &mock,
        cwd.path(),
        &["--allowedTools", "Bash"],
        "MOCK_TOOL:Bash:echo hello-from-tool",
    )
    .await;
    assert!(status.success(), "real CLI failed ({status}):\n{output}");
    let result = result_line(&lines).unwrap_or_else(|| panic!("no result line:\n{output}"));
    assert_eq!(
        result["result"], "tool result seen: hello-from-tool",
        "{output}"
    );
    assert_eq!(mock.requests().len(), 2, "tool call + follow-up:\n{output}");
}

#[tokio::test]
async fn real_cli_reports_a_mock_error_without_retrying() {
    let mock = MockAnthropic::start();
    mock.fail_with(500);
    let cwd = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (status, lines, output) = run_real_cli(&mock, cwd.path(), &[], "say hi").await;
    assert!(
        !status.success(),
        "an API error must fail the CLI:\n{output}"
    );
    let result = result_line(&lines).unwrap_or_else(|| panic!("no result line:\n{output}"));
    assert_eq!(result["is_error"], true, "{output}");
    assert_eq!(result["api_error_status"], 500, "{output}");
    assert_eq!(mock.requests().len(), 1, "no retries:\n{output}");
    assert!(started.elapsed() < Duration::from_secs(30), "{output}");
}

#[tokio::test]
async fn process_helpers_see_children_cwds_and_zombies() {
    let dir = tempfile::tempdir().unwrap();
    // A long-lived process to inspect (killed below; the test never waits on a timer).
    let mut child = std::process::Command::new("sleep")
        .arg("300")
        .current_dir(dir.path())
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    let me = std::process::id();
    assert!(
        processes_in(dir.path()).contains(&pid),
        "{}",
        describe(&processes_in(dir.path()))
    );
    assert!(children_of(me).contains(&pid));
    assert!(descendants_of(me).contains(&pid));
    assert!(is_alive(pid));

    child.kill().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || zombie_children_of(me)
            .contains(&pid))
        .await,
        "the killed, unreaped child should be a zombie: {:?}",
        process_state(pid)
    );
    assert!(!is_alive(pid));
    assert!(processes_in(dir.path()).is_empty(), "zombies have no cwd");
    child.wait().unwrap();
    assert_eq!(process_state(pid), None, "reaped");
}

#[tokio::test]
async fn wait_until_reports_false_at_the_deadline() {
    let started = Instant::now();
    assert!(!wait_until(Duration::from_millis(100), || false).await);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(wait_until(Duration::from_secs(1), || true).await);
}

#[test]
fn listening_port_is_parsed_from_the_log_line() {
    use common::executor_process::parse_listening_port;
    assert_eq!(
        parse_listening_port(
            "2025-01-10 10:30:00 - task_executor - INFO - listening on http://127.0.0.1:43121"
        ),
        Some(43121)
    );
    assert_eq!(
        parse_listening_port("listening on http://[::1]:8080/ now"),
        Some(8080)
    );
    assert_eq!(
        parse_listening_port("listening on http://127.0.0.1:0"),
        None
    );
    assert_eq!(parse_listening_port("starting up"), None);
}

/// A stand-in "executor": logs the listening line, starts `sleep` in its working directory
/// (detached into its own session when `leak`), and exits on SIGTERM without ending it.
fn stand_in(dir: &std::path::Path, leak: bool) -> std::path::PathBuf {
    let path = dir.join("stand-in.sh");
    let spawn = if leak {
        "setsid sleep 600 </dev/null >/dev/null 2>&1 &"
    } else {
        ":"
    };
    write_executable(
        &path,
        &format!(
            "#!/bin/sh\n{spawn}\necho 'listening on http://127.0.0.1:9'\n\
             trap 'exit 0' TERM\nwhile :; do sleep 0.1; done\n"
        ),
    );
    path
}

/// The harness's own leak check must be able to fail: a process left in the executor's
/// directories after it exited fails the test in `Drop`, a clean exit does not.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_an_executor_that_leaked_a_process_fails_the_test() {
    let scripts = tempfile::tempdir().unwrap();
    let clean =
        Executor::start(ExecutorOptions::new().program(stand_in(scripts.path(), false))).await;
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(clean)));
    assert!(
        dropped.is_ok(),
        "a clean stand-in must not fail the drop check"
    );

    let leaky =
        Executor::start(ExecutorOptions::new().program(stand_in(scripts.path(), true))).await;
    let tmp = leaky.tmp_root().to_path_buf();
    assert!(
        wait_until(Duration::from_secs(5), || !processes_in(&tmp).is_empty()).await,
        "the stand-in's sleep runs in the executor's directory"
    );
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(leaky)));
    let message = match dropped {
        Ok(()) => panic!("dropping an executor that leaked a process must fail the test"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(message.contains("sleep 600"), "{message}");
    assert!(
        processes_in(&tmp).is_empty(),
        "the leaked process is still killed"
    );
}
