//! The Claude Code agent against the real CLI (pinned) and a mock Anthropic API: tool use in the
//! task's workspace, conversations that survive an executor restart, `new_session`, per-task
//! model settings, resume fallback, idle suspension (fake CLI) and MCP/tool flags.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn task(task_id: i64, subtask_id: i64, prompt: &str) -> Value {
    json!({"task_id": task_id, "subtask_id": subtask_id,
           "bot": [{"id": 1, "shell_type": "ClaudeCode"}], "prompt": prompt})
}

async fn completed(rx: &CallbackReceiver, exec: &Executor, t: i64, s: i64) -> Value {
    let done = rx.wait_terminal(t, s, WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{}\n{}",
        rx.dump(),
        exec.logs_tail(40)
    );
    done
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_use_round_trip_runs_bash_in_the_task_workspace() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;
    let prompt = "MOCK_TOOL:Bash:echo hello-from-tool > tool_out.txt; cat tool_out.txt";
    exec.post_json("/api/tasks/execute", &task(1, 1, prompt))
        .await;
    let done = completed(&rx, &exec, 1, 1).await;
    assert!(
        done["result"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("hello-from-tool"),
        "{done}"
    );
    let written = std::fs::read_to_string(exec.workspace().join("1/tool_out.txt"))
        .expect("the tool wrote in the workspace");
    assert_eq!(written.trim(), "hello-from-tool");
    let titles: Vec<String> = done["result"]["thinking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        titles.iter().any(|t| t == "thinking.user_message_received"),
        "the tool result is reported: {titles:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_conversation_survives_an_executor_restart() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let ws = tempfile::tempdir().unwrap();
    let opts = || {
        ExecutorOptions::new()
            .callback_url(rx.url())
            .real_claude(&mock)
            .workspace(ws.path())
    };
    let mut exec = Executor::start(opts()).await;
    exec.post_json(
        "/api/tasks/execute",
        &task(2, 1, "remember the word tangerine"),
    )
    .await;
    let first = completed(&rx, &exec, 2, 1).await;
    let first_text = first["result"]["value"].as_str().unwrap().to_string();
    exec.kill();
    for pid in processes_in(ws.path()) {
        common::procs::signal(pid, libc::SIGKILL);
    }
    assert!(
        wait_until(Duration::from_secs(10), || processes_in(ws.path())
            .is_empty())
        .await
    );

    let exec = Executor::start(opts()).await;
    exec.post_json("/api/tasks/execute", &task(2, 2, "what was the word?"))
        .await;
    completed(&rx, &exec, 2, 2).await;
    let last = mock.requests().into_iter().last().unwrap();
    let history = message_texts(&last);
    assert!(
        history
            .iter()
            .any(|(r, t)| r == "assistant" && *t == first_text),
        "resumed history: {history:?}"
    );
    assert!(
        exec.logs().iter().any(|l| l.contains("resuming")),
        "{}",
        exec.logs_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_session_starts_without_history() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;
    exec.post_json("/api/tasks/execute", &task(3, 1, "first"))
        .await;
    completed(&rx, &exec, 3, 1).await;
    let mut fresh = task(3, 2, "a new stage");
    fresh["new_session"] = json!(true);
    exec.post_json("/api/tasks/execute", &fresh).await;
    completed(&rx, &exec, 3, 2).await;
    let last = mock.requests().into_iter().last().unwrap();
    let history = message_texts(&last);
    assert!(
        history.iter().all(|(r, _)| r != "assistant"),
        "no earlier answers: {history:?}"
    );
    let users: Vec<&String> = history
        .iter()
        .filter(|(r, _)| r == "user")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(users.len(), 1, "only the new prompt: {users:?}");
    assert!(users[0].contains("a new stage"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_tasks_use_their_own_model_endpoints_and_keys() {
    let (a, b) = (MockAnthropic::start(), MockAnthropic::start());
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &a).await;
    for (id, mock, model) in [(4, &a, "model-a"), (5, &b, "model-b")] {
        let body = json!({"task_id": id, "subtask_id": 1, "prompt": format!("hello {id}"),
            "bot": [{"shell_type": "ClaudeCode", "agent_config": {"env": {"model": "claude", "model_id": model,
                     "api_key": format!("key-{id}"), "base_url": format!("{}/v1", mock.url())}}}]});
        exec.post_json("/api/tasks/execute", &body).await;
    }
    completed(&rx, &exec, 4, 1).await;
    completed(&rx, &exec, 5, 1).await;
    for (mock, model, other, key) in [
        (&a, "model-a", "model-b", "Bearer key-4"),
        (&b, "model-b", "model-a", "Bearer key-5"),
    ] {
        let reqs = mock.messages_requests();
        assert!(!reqs.is_empty());
        assert!(
            reqs.iter().any(|r| r.body["model"] == model),
            "{}",
            mock.dump()
        );
        assert!(
            reqs.iter().all(|r| r.body["model"] != other),
            "{}",
            mock.dump()
        );
        // Each endpoint sees its own task's key and never the other one.
        for r in &reqs {
            assert_eq!(r.header("authorization"), Some(key), "{}", mock.dump());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_saved_conversation_falls_back_to_a_fresh_one() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;
    let dir = exec.workspace().join("6");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(".claude_session_id"),
        "3f1c9a52-0000-4000-8000-000000000000",
    )
    .unwrap();
    exec.post_json(
        "/api/tasks/execute",
        &task(6, 1, "hello after a lost transcript"),
    )
    .await;
    let done = completed(&rx, &exec, 6, 1).await;
    let titles = done["result"]["thinking"].to_string();
    assert!(
        titles.contains("thinking.resume_failed_new_session"),
        "{titles}"
    );
    let saved = std::fs::read_to_string(dir.join(".claude_session_id")).unwrap();
    assert_ne!(
        saved.trim(),
        "3f1c9a52-0000-4000-8000-000000000000",
        "the new conversation id is saved"
    );
}

#[tokio::test]
async fn an_idle_process_is_suspended_and_the_next_subtask_resumes() {
    let rx = CallbackReceiver::start();
    let opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("CLAUDE_IDLE_TIMEOUT_SECS", "1");
    let exec = Executor::start(opts).await;
    let seed = |s: i64, c: &str| json!({"task_id": 7, "subtask_id": s, "agent_type": "claude_code", "content": c});
    exec.post_json("/api/tasks/execute", &seed(1, "hi")).await;
    let first = rx.wait_terminal(7, 1, WAIT).await;
    assert_eq!(first["status"], "COMPLETED");
    let ws = exec.workspace().join("7");
    let mut suspended = false;
    for _ in 0..200 {
        let (_, list) = exec.get("/api/tasks/sessions").await;
        if list["sessions"][0]["status"] == "suspended" && processes_in(&ws).is_empty() {
            suspended = true;
            break;
        }
        wait_until(Duration::from_millis(25), || false).await;
    }
    assert!(suspended, "{}", exec.logs_tail(20));
    let saved = std::fs::read_to_string(ws.join(".claude_session_id")).unwrap();
    exec.post_json("/api/tasks/execute", &seed(2, "FAKE:argv\nback"))
        .await;
    let next = rx.wait_terminal(7, 2, WAIT).await;
    let argv = next["result"]["value"].as_str().unwrap_or("");
    assert!(
        argv.contains(&format!("--resume={}", saved.trim())),
        "{argv}"
    );
}

#[tokio::test]
async fn bot_tool_options_and_mcp_servers_reach_the_cli_without_secrets_in_argv() {
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test"),
    )
    .await;
    let body = json!({"task_id": 8, "subtask_id": 1, "prompt": "FAKE:argv\nflags",
        "user": {"git_token": "ghp_SECRETMARKER1234567890"},
        "bot": [{"shell_type": "ClaudeCode", "allowed_tools": ["Bash", "Read"], "disallowed_tools": "WebFetch",
                 "max_turns": 7, "model": "claude-x",
                 "mcp_servers": {"mcpServers": {"github": {"command": "gh-mcp", "env": {"TOKEN": "${{user.git_token}}"}}}}}]});
    exec.post_json("/api/tasks/execute", &body).await;
    let done = rx.wait_terminal(8, 1, WAIT).await;
    let argv: Vec<String> =
        serde_json::from_str(done["result"]["value"].as_str().unwrap()).unwrap();
    for want in [
        "--allowedTools=Bash,Read",
        "--disallowedTools=WebFetch",
        "--max-turns=7",
        "--model=claude-x",
    ] {
        assert!(
            argv.iter().any(|a| a == want),
            "{want} missing from {argv:?}"
        );
    }
    let mcp = argv
        .iter()
        .find_map(|a| a.strip_prefix("--mcp-config="))
        .expect("--mcp-config");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(mcp).unwrap()).unwrap();
    assert_eq!(
        written["mcpServers"]["github"]["env"]["TOKEN"],
        "ghp_SECRETMARKER1234567890"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(mcp).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(argv.iter().all(|a| !a.contains("SECRETMARKER")));
    assert!(
        !rx.dump().contains("SECRETMARKER") && !exec.logs().join("\n").contains("SECRETMARKER")
    );
}

#[tokio::test]
async fn over_the_live_process_cap_the_least_recently_used_idle_session_is_suspended() {
    let rx = CallbackReceiver::start();
    let opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("MAX_LIVE_PROCESSES", "2");
    let exec = Executor::start(opts).await;
    for id in [11, 12, 13] {
        let body =
            json!({"task_id": id, "subtask_id": 1, "agent_type": "claude_code", "content": "hi"});
        exec.post_json("/api/tasks/execute", &body).await;
        assert_eq!(rx.wait_terminal(id, 1, WAIT).await["status"], "COMPLETED");
    }
    let ws = exec.workspace().to_path_buf();
    let oldest_gone = wait_until(Duration::from_secs(10), || {
        processes_in(&ws.join("11")).is_empty()
    })
    .await;
    assert!(
        oldest_gone,
        "task 11's process should be suspended: {}",
        exec.logs_tail(20)
    );
    assert!(!processes_in(&ws.join("12")).is_empty() && !processes_in(&ws.join("13")).is_empty());
    let (_, list) = exec.get("/api/tasks/sessions").await;
    let status = |id: i64| {
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["task_id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status(11), "suspended", "{list}");
    assert_eq!(status(13), "idle", "{list}");
}

/// A suspended process holds its slot until it is gone, not only until it is asked to end: a
/// CLI that is slow to exit (here: it ignores stdin EOF and SIGTERM, so it lasts until the
/// SIGKILL after SESSION_EOF_GRACE_MS + SESSION_TERM_GRACE_MS) must not run beside the process
/// that takes its slot, or the cap's memory bound is a fiction. Sampled every 20 ms: any
/// moment with both tasks' processes alive fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_is_free_only_once_the_suspended_process_is_gone() {
    let rx = CallbackReceiver::start();
    let opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("MAX_LIVE_PROCESSES", "1")
        .env("SESSION_EOF_GRACE_MS", "1000")
        .env("SESSION_TERM_GRACE_MS", "1500");
    let exec = Executor::start(opts).await;
    let ws = exec.workspace().to_path_buf();
    let body = json!({"task_id": 41, "subtask_id": 1, "agent_type": "claude_code",
                      "content": "FAKE:ignore_eof\nFAKE:ignore_sigterm\nslow to exit"});
    exec.post_json("/api/tasks/execute", &body).await;
    assert_eq!(rx.wait_terminal(41, 1, WAIT).await["status"], "COMPLETED");
    assert!(!processes_in(&ws.join("41")).is_empty());

    let body = json!({"task_id": 42, "subtask_id": 1, "agent_type": "claude_code",
                      "content": "takes the slot"});
    exec.post_json("/api/tasks/execute", &body).await;
    let (mut overlap, mut second_seen) = (None, false);
    let done = wait_until(WAIT, || {
        let (first, second) = (processes_in(&ws.join("41")), processes_in(&ws.join("42")));
        second_seen |= !second.is_empty();
        if !first.is_empty() && !second.is_empty() && overlap.is_none() {
            overlap = Some((first, second));
        }
        !rx.terminal_statuses(42, 1).is_empty()
    })
    .await;
    assert!(done, "task 42 never finished: {}", exec.logs_tail(30));
    assert_eq!(rx.terminal_statuses(42, 1), ["COMPLETED"]);
    assert!(
        overlap.is_none(),
        "task 42's process ran while task 41's suspended one was still alive (cap 1): {overlap:?}"
    );
    // The overlap check means something only if it saw task 42's process (it stays alive,
    // idle, after its turn).
    assert!(second_seen, "task 42's process was never seen");
}

/// With every slot busy with a running turn, a new subtask waits — visibly: a RUNNING callback
/// says so, the listing shows it queued, `/metrics` counts it — and starts as soon as a slot
/// frees (here: a turn ends, its idle process is suspended for the waiter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_live_process_cap_a_new_subtask_waits_visibly_and_starts_when_a_slot_frees() {
    let rx = CallbackReceiver::start();
    let opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("MAX_LIVE_PROCESSES", "2");
    let exec = Executor::start(opts).await;
    let ws = exec.workspace().to_path_buf();
    let release = |id: i64| ws.join(format!("release-{id}"));
    let hold = |id: i64| format!("FAKE:wait_file:{}\nhold {id}", release(id).display());
    for id in [21, 22] {
        let body = json!({"task_id": id, "subtask_id": 1, "agent_type": "claude_code",
                          "content": hold(id)});
        exec.post_json("/api/tasks/execute", &body).await;
    }
    let running = wait_until(WAIT, || {
        [21, 22]
            .iter()
            .all(|id| !processes_in(&ws.join(id.to_string())).is_empty())
    })
    .await;
    assert!(running, "{}", exec.logs_tail(20));

    let body = json!({"task_id": 23, "subtask_id": 1, "agent_type": "claude_code",
                      "content": hold(23)});
    let (status, reply) = exec.post_json("/api/tasks/execute", &body).await;
    assert_eq!(
        (status.as_u16(), reply["status"].as_str()),
        (200, Some("RUNNING"))
    );
    let cbs = rx
        .wait_for(WAIT, |cbs| {
            cbs.iter().any(|c| {
                c["task_id"] == 23
                    && c["status"] == "RUNNING"
                    && c["error_message"]
                        .as_str()
                        .or(c["message"].as_str())
                        .is_some_and(|m| m.contains("waiting for a free agent process slot"))
            })
        })
        .await;
    assert!(!cbs.is_empty());
    let (_, list) = exec.get("/api/tasks/sessions").await;
    let row = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["task_id"] == 23)
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["status"], "queued", "{list}");
    let metrics = exec
        .client()
        .get(exec.url("/metrics"))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l == "executor_sessions{state=\"queued\"} 1"),
        "{text}"
    );
    assert!(
        processes_in(&ws.join("23")).is_empty(),
        "task 23 started a third process over the cap"
    );

    // A turn ends: its idle process is suspended for the waiter, which then runs.
    std::fs::write(release(21), "go").unwrap();
    assert_eq!(rx.wait_terminal(21, 1, WAIT).await["status"], "COMPLETED");
    let started = wait_until(WAIT, || !processes_in(&ws.join("23")).is_empty()).await;
    assert!(started, "the waiter never started\n{}", exec.logs_tail(30));
    // The slot is handed over only once the suspended process is gone.
    assert!(
        processes_in(&ws.join("21")).is_empty(),
        "task 21's process still runs beside the waiter's"
    );
    std::fs::write(release(23), "go").unwrap();
    std::fs::write(release(22), "go").unwrap();
    assert_eq!(rx.wait_terminal(23, 1, WAIT).await["status"], "COMPLETED");
    assert_eq!(rx.wait_terminal(22, 1, WAIT).await["status"], "COMPLETED");
}
