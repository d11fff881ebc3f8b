//! The Agno agent end to end: the real binary runs the real agno 2.1.5 library (in the client
//! process `agno/agno_client.py`) against a mock OpenAI chat-completions server, with callbacks
//! to a real receiver. Installs the pinned venv on first use (`agno/install.sh`); never skips.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::{Duration, Instant};

use common::agno_env::{agno_python, mcp_calc_script};
use common::*;
use serde_json::{json, Value};

/// Agno runs take longer than the fake CLI: Python imports agno (~3 s) on a cold start.
const AGNO_WAIT: Duration = Duration::from_secs(60);

fn bot(name: &str, mock: &MockOpenAi) -> Value {
    json!({"name": name, "shell_type": "Agno", "system_prompt": format!("You are {name}."),
           "agent_config": {"env": {"model": "openai", "model_id": "mock-1", "api_key": "sk-agno-test",
                                    "base_url": mock.base_url()}}})
}

fn task(task_id: i64, subtask_id: i64, bots: Vec<Value>, prompt: &str) -> Value {
    json!({"task_id": task_id, "subtask_id": subtask_id, "task_title": "T", "subtask_title": "S",
           "bot": bots, "prompt": prompt})
}

async fn start(rx: &CallbackReceiver, extra: &[(&str, &str)]) -> Executor {
    let python = agno_python().display().to_string();
    let mut opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("AGNO_PYTHON", python);
    for (k, v) in extra {
        opts = opts.env(*k, *v);
    }
    Executor::start(opts).await
}

async fn post(exec: &Executor, body: &Value) {
    let (status, reply) = exec.post_json("/api/tasks/execute", body).await;
    assert_eq!(status, 200, "{reply}\n{}", exec.logs_tail(40));
    assert_eq!(reply["status"], "RUNNING", "{reply}");
}

fn progress_of(cbs: &[Value]) -> Vec<i64> {
    cbs.iter().filter_map(|c| c["progress"].as_i64()).collect()
}

/// `N` of the mock's `Hello from mock (history=N msgs)`.
fn history_of(value: &Value) -> usize {
    let text = value.as_str().unwrap_or_default();
    common::mock_openai::history_count(text)
        .unwrap_or_else(|| panic!("no history count in {text:?}"))
}

fn agno_clients(exec: &Executor) -> Vec<u32> {
    descendants_of(exec.pid())
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("agno_client.py"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_agent_runs_keeps_history_and_new_session_starts_fresh() {
    let mock = MockOpenAi::start();
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[]).await;
    post(&exec, &task(51, 1, vec![bot("Solo", &mock)], "hi")).await;
    let done = rx.wait_terminal(51, 1, AGNO_WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(60)
    );
    assert_eq!(
        done["error_message"],
        "${{thinking.execution_completed}} agent streaming execution"
    );
    let first = history_of(&done["result"]["value"]);
    let progress = progress_of(&rx.for_subtask(51, 1));
    for p in [50, 55, 60, 70, 75, 85, 100] {
        assert!(
            progress.contains(&p),
            "progress {p} missing from {progress:?}"
        );
    }
    let mut sorted = progress.clone();
    sorted.sort();
    assert_eq!(progress, sorted, "progress never goes back");
    assert_eq!(done["result"]["blocks"], json!([]));

    // A follow-up sees the earlier run; the key never reaches a callback.
    post(&exec, &task(51, 2, vec![bot("Solo", &mock)], "again")).await;
    let done = rx.wait_terminal(51, 2, AGNO_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let second = history_of(&done["result"]["value"]);
    assert!(
        second > first,
        "the follow-up sees history: {first} then {second}"
    );

    // new_session: no history.
    let mut fresh = task(51, 3, vec![bot("Solo", &mock)], "fresh start");
    fresh["new_session"] = json!(true);
    post(&exec, &fresh).await;
    let done = rx.wait_terminal(51, 3, AGNO_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        history_of(&done["result"]["value"]),
        first,
        "a new session starts empty"
    );

    let (_, sessions) = exec.get("/api/tasks/sessions").await;
    assert_eq!(sessions["sessions"][0]["agent_type"], "Agno", "{sessions}");
    assert!(!serde_json::to_string(&rx.callbacks())
        .unwrap()
        .contains("sk-agno-test"));
    assert!(!exec.logs().join("\n").contains("sk-agno-test"));

    // Close-all ends the client (and its MCP servers) and leaves nothing behind.
    assert!(!agno_clients(&exec).is_empty());
    let (status, _) = exec.delete("/api/tasks/sessions/close").await;
    assert_eq!(status, 200);
    assert!(
        agno_clients(&exec).is_empty(),
        "agno client still running after close-all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_goes_through_a_stdio_mcp_server_and_a_route_team_delegates() {
    let mock = MockOpenAi::start();
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[]).await;
    let python = agno_python().display().to_string();
    let calc = json!({"calc": {"type": "stdio", "command": python,
                               "args": [mcp_calc_script().display().to_string()]}});
    let mut solo = bot("Solo", &mock);
    solo["mcp_servers"] = calc.clone();
    post(&exec, &task(52, 1, vec![solo], "please TOOL multiply")).await;
    let done = rx.wait_terminal(52, 1, AGNO_WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(60)
    );
    assert_eq!(done["result"]["value"], "Tool said: 6");
    let steps = done["result"]["thinking"].as_array().unwrap();
    let used = steps
        .iter()
        .find(|s| s["title"] == "thinking.tool_use")
        .unwrap_or_else(|| panic!("no tool_use step in {steps:?}"));
    let call = &used["details"]["message"]["content"][0];
    assert_eq!(call["name"], "mul");
    let id = call["id"].as_str().unwrap();
    assert!(!id.is_empty(), "real tool call ids");
    let result = steps
        .iter()
        .find(|s| s["title"] == "thinking.tool_result")
        .unwrap();
    assert_eq!(result["details"]["tool_use_id"], id);
    assert_eq!(result["details"]["content"], "6");
    assert!(
        progress_of(&rx.for_subtask(52, 1)).contains(&80),
        "using-tool progress"
    );

    // A route team: the leader delegates to the worker, whose tool answers.
    let mut lead = bot("Lead", &mock);
    lead["role"] = json!("leader");
    let mut worker = bot("Worker", &mock);
    worker["mcp_servers"] = calc;
    let mut team = task(53, 1, vec![lead, worker], "TOOL multiply please");
    team["mode"] = json!("route");
    post(&exec, &team).await;
    let done = rx.wait_terminal(53, 1, AGNO_WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(60)
    );
    assert_eq!(
        done["error_message"],
        "${{thinking.execution_completed}} team streaming execution"
    );
    let steps = done["result"]["thinking"].as_array().unwrap();
    let delegated = steps.iter().any(|s| {
        s["title"] == "thinking.tool_use"
            && s["details"]["message"]["content"][0]["name"] == "delegate_task_to_member"
            && s["details"]["message"]["content"][0]["input"]["member_id"] == "worker"
    });
    assert!(delegated, "the leader delegated to the worker: {steps:#?}");
    let progress = progress_of(&rx.for_subtask(53, 1));
    assert!(
        progress.contains(&70) && progress.contains(&75),
        "{progress:?}"
    );

    // Closing the sessions closes the MCP connections: no MCP server process is left.
    let mcp_servers = || {
        descendants_of(exec.pid())
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("mcp_calc.py"))
            })
            .count()
    };
    assert!(
        mcp_servers() > 0,
        "the MCP servers run while the sessions live"
    );
    let (status, _) = exec.delete("/api/tasks/sessions/close").await;
    assert_eq!(status, 200);
    assert_eq!(
        mcp_servers(),
        0,
        "MCP server processes left after close-all"
    );
    assert!(agno_clients(&exec).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_slow_stream_and_a_crashed_client_leave_the_task_usable() {
    let mock = MockOpenAi::start();
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[]).await;
    post(&exec, &task(54, 1, vec![bot("Solo", &mock)], "SLOW please")).await;
    rx.wait_for(AGNO_WAIT, |cbs| {
        cbs.iter()
            .any(|c| is_subtask(c, 54, 1) && c["progress"] == 85)
    })
    .await;
    let before_cancel = agno_clients(&exec);
    assert_eq!(before_cancel.len(), 1, "{before_cancel:?}");
    let asked = Instant::now();
    let (status, body) = exec
        .post_json("/api/tasks/cancel?task_id=54", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = rx.wait_terminal(54, 1, AGNO_WAIT).await;
    let took = asked.elapsed();
    assert_eq!(done["status"], "CANCELLED", "{done}");
    // The bound is the point: the cancel must not wait for the 10 s stream to end. Half of
    // it is generous on a loaded machine and still proves that.
    let stream = common::mock_openai::SLOW_DELAY * common::mock_openai::SLOW_CHUNKS as u32;
    assert!(
        took < stream / 2,
        "CANCELLED after {took:?} (the stream lasts {stream:?})"
    );

    // The next subtask runs on the same session; the cancelled one never completes.
    post(
        &exec,
        &task(54, 2, vec![bot("Solo", &mock)], "after cancel"),
    )
    .await;
    let done = rx.wait_terminal(54, 2, AGNO_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let before_crash = history_of(&done["result"]["value"]);
    assert_eq!(
        agno_clients(&exec),
        before_cancel,
        "the cancel kept the client process: the same pid served the next subtask"
    );
    let terminals: Vec<Value> = rx
        .for_subtask(54, 1)
        .into_iter()
        .filter(is_terminal)
        .collect();
    assert_eq!(
        terminals.len(),
        1,
        "exactly one terminal event: {terminals:?}"
    );

    // The client dies mid-run: FAILED, and the next subtask gets a new client.
    post(&exec, &task(54, 3, vec![bot("Solo", &mock)], "SLOW again")).await;
    rx.wait_for(AGNO_WAIT, |cbs| {
        cbs.iter()
            .any(|c| is_subtask(c, 54, 3) && c["progress"] == 85)
    })
    .await;
    let clients = agno_clients(&exec);
    assert_eq!(clients.len(), 1, "{clients:?}");
    // SAFETY: killing a process of this test's executor.
    unsafe {
        libc::kill(clients[0] as i32, libc::SIGKILL);
    }
    let done = rx.wait_terminal(54, 3, AGNO_WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let msg = done["error_message"].as_str().unwrap();
    assert!(msg.contains("agno client exited unexpectedly"), "{msg}");
    post(
        &exec,
        &task(54, 4, vec![bot("Solo", &mock)], "still there?"),
    )
    .await;
    let done = rx.wait_terminal(54, 4, AGNO_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let after_crash = history_of(&done["result"]["value"]);
    assert!(
        after_crash > before_crash,
        "history survived the crash: {after_crash} messages now, {before_crash} before it \
         (a new session would start over)"
    );
    assert_ne!(
        agno_clients(&exec),
        before_cancel,
        "a new client replaced the killed one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_an_executor_restart() {
    let mock = MockOpenAi::start();
    let rx = CallbackReceiver::start();
    let ws = tempfile::tempdir().unwrap();
    let python = agno_python().display().to_string();
    let opts = || {
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("AGNO_PYTHON", python.clone())
            .workspace(ws.path())
    };
    let mut exec = Executor::start(opts()).await;
    post(&exec, &task(55, 1, vec![bot("Solo", &mock)], "remember me")).await;
    let done = rx.wait_terminal(55, 1, AGNO_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let first = history_of(&done["result"]["value"]);
    exec.kill();
    let exec = Executor::start(opts()).await;
    post(&exec, &task(55, 2, vec![bot("Solo", &mock)], "do you?")).await;
    let done = rx.wait_terminal(55, 2, AGNO_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(
        history_of(&done["result"]["value"]) > first,
        "the restarted executor's client read the stored history"
    );
}

/// The pool: a claimed client gives the first event much sooner than a cold start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_client_answers_faster_than_a_cold_one() {
    let mock = MockOpenAi::start();
    let mut timings = Vec::new();
    for pool in ["0", "1"] {
        let rx = CallbackReceiver::start();
        let exec = start(&rx, &[("AGNO_POOL_SIZE", pool)]).await;
        if pool == "1" {
            let warmed = wait_until(AGNO_WAIT, || {
                exec.logs()
                    .iter()
                    .any(|l| l.contains("agno pool: client") && l.contains("ready"))
            })
            .await;
            assert!(warmed, "the pool never warmed up\n{}", exec.logs_tail(40));
        }
        let t0 = Instant::now();
        post(&exec, &task(56, 1, vec![bot("Solo", &mock)], "hi")).await;
        rx.wait_for(AGNO_WAIT, |cbs| {
            cbs.iter()
                .any(|c| is_subtask(c, 56, 1) && c["progress"] == 75)
        })
        .await;
        let first_event = t0.elapsed();
        let done = rx.wait_terminal(56, 1, AGNO_WAIT).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        eprintln!("AGNO_POOL_SIZE={pool}: first agent event after {first_event:?}");
        timings.push(first_event);
    }
    assert!(
        timings[1] < timings[0],
        "pooled {:?} is not faster than cold {:?}",
        timings[1],
        timings[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_interpreter_fails_at_once_with_what_to_install() {
    let mock = MockOpenAi::start();
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("AGNO_PYTHON", "/nonexistent/agno-venv/bin/python"),
    )
    .await;
    post(&exec, &task(57, 1, vec![bot("Solo", &mock)], "hi")).await;
    let done = rx.wait_terminal(57, 1, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let msg = done["error_message"].as_str().unwrap();
    assert!(
        msg.contains("agno/install.sh") && msg.contains("AGNO_PYTHON"),
        "{msg}"
    );

    // An interpreter without agno: the client says what to install.
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("AGNO_PYTHON", "python3"),
    )
    .await;
    post(&exec, &task(58, 1, vec![bot("Solo", &mock)], "hi")).await;
    let done = rx.wait_terminal(58, 1, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let msg = done["error_message"].as_str().unwrap();
    assert!(msg.contains("install"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_all_ends_the_pools_spare_client_and_the_pool_refills_on_demand() {
    let mock = MockOpenAi::start();
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[("AGNO_POOL_SIZE", "1")]).await;
    let warmed = wait_until(AGNO_WAIT, || !agno_clients(&exec).is_empty()).await;
    assert!(
        warmed,
        "the pool never started a spare\n{}",
        exec.logs_tail(30)
    );
    let (status, _) = exec.delete("/api/tasks/sessions/close").await;
    assert_eq!(status, 200);
    let left = children_of(exec.pid());
    assert!(
        left.iter().all(|p| !is_alive(*p)),
        "close-all left processes running: {}",
        describe(&left)
    );

    // An Agno task still runs (its claim misses once), and the pool refills behind it.
    post(&exec, &task(71, 1, vec![bot("Solo", &mock)], "hi")).await;
    let done = rx.wait_terminal(71, 1, AGNO_WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(40)
    );
    let refilled = wait_until(AGNO_WAIT, || agno_clients(&exec).len() >= 2).await;
    assert!(
        refilled,
        "the pool did not refill: {:?}",
        agno_clients(&exec)
    );
}

/// `DELETE /api/tasks/claude/sessions` ends the Claude Code sessions only: an Agno session
/// beside them keeps its client process and its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_claude_sessions_leaves_agno_sessions_alone() {
    let mock = MockOpenAi::start();
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[("ANTHROPIC_API_KEY", "sk-test")]).await;
    post(&exec, &seed_task(60, 1, "claude here")).await;
    post(&exec, &task(61, 1, vec![bot("Solo", &mock)], "agno here")).await;
    for t in [60, 61] {
        let done = rx.wait_terminal(t, 1, AGNO_WAIT).await;
        assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    }
    let first = history_of(&rx.wait_terminal(61, 1, AGNO_WAIT).await["result"]["value"]);
    let clients = agno_clients(&exec);
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert!(!processes_in(&exec.workspace().join("60")).is_empty());

    let (status, body) = exec.delete("/api/tasks/claude/sessions").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["closed"], 1, "only the Claude session: {body}");
    let dir = exec.workspace().join("60");
    assert!(
        wait_until(Duration::from_secs(10), || processes_in(&dir).is_empty()).await,
        "the Claude CLI is ended: {}",
        describe(&processes_in(&dir))
    );
    let (_, listing) = exec.get("/api/tasks/sessions").await;
    let rows = listing["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{listing}");
    assert_eq!(
        (rows[0]["task_id"].as_i64(), rows[0]["agent_type"].as_str()),
        (Some(61), Some("Agno")),
        "{listing}"
    );
    assert_eq!(agno_clients(&exec), clients, "the Agno client kept running");

    post(
        &exec,
        &task(61, 2, vec![bot("Solo", &mock)], "still there?"),
    )
    .await;
    let done = rx.wait_terminal(61, 2, AGNO_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(
        history_of(&done["result"]["value"]) > first,
        "the Agno conversation went on: {done}"
    );
}

/// A stand-in agno client (run as `$AGNO_PYTHON <client script>`) that speaks the protocol but
/// ignores cancel requests and SIGTERM, as a run stuck in a blocking call would.
const STUBBORN_CLIENT: &str = r#"#!/usr/bin/env python3
import json, os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def emit(o):
    sys.stdout.write(json.dumps(o) + "\n")
    sys.stdout.flush()
emit({"type": "ready", "agno_version": "2.1.5", "pid": os.getpid()})
for line in sys.stdin:
    op = json.loads(line)
    if op.get("op") == "run":
        seq = op.get("run_seq")
        emit({"type": "run_started", "run_seq": seq, "scope": "agent"})
        if "HANG" in line:
            emit({"type": "content", "run_seq": seq, "delta": "working"})
        else:
            emit({"type": "content", "run_seq": seq, "delta": "done"})
            emit({"type": "completed", "run_seq": seq, "content": "done"})
    elif op.get("op") == "cancel":
        sys.stderr.write("stubborn client: ignoring cancel\n")
        sys.stderr.flush()
"#;

/// The agno cancel grace (`AgnoConfig::cancel_timeout` in `actors/src/config.rs`; the README says
/// 5 s): a client that ignores the cancel is killed after it, the subtask ends CANCELLED, no
/// process is left, and the next subtask gets a new client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_cancel_is_killed_after_the_grace() {
    let grace = actors::config::AgnoConfig::under(std::path::Path::new("/")).cancel_timeout;
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("stubborn-python");
    write_executable(&python, STUBBORN_CLIENT);
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("AGNO_PYTHON", python.display().to_string()),
    )
    .await;
    let mock = MockOpenAi::start();
    post(&exec, &task(57, 1, vec![bot("Solo", &mock)], "HANG please")).await;
    rx.wait_for(AGNO_WAIT, |cbs| {
        cbs.iter()
            .any(|c| is_subtask(c, 57, 1) && c["progress"] == 85)
    })
    .await;
    let stubborn = |exec: &Executor| {
        descendants_of(exec.pid())
            .into_iter()
            .filter(|p| common::procs::cmdline(*p).is_some_and(|c| c.contains("stubborn-python")))
            .collect::<Vec<u32>>()
    };
    let before = stubborn(&exec);
    assert_eq!(before.len(), 1, "{}", exec.logs_tail(40));
    let asked = Instant::now();
    let (status, body) = exec
        .post_json("/api/tasks/cancel?task_id=57", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    exec.wait_for_log("stubborn client: ignoring cancel", AGNO_WAIT)
        .await;
    // CANCELLED is reported at once (README: "CANCELLED at once"); the client is killed later.
    let done = rx.wait_terminal(57, 1, AGNO_WAIT).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert!(
        wait_until(grace + Duration::from_secs(20), || !is_alive(before[0])).await,
        "the stubborn client is still there after its grace: {}",
        describe(&before)
    );
    let took = asked.elapsed();
    // A lower bound does not flake: the client had its whole grace before the kill.
    assert!(
        took >= grace,
        "the client was gone {took:?} after the cancel, before the {grace:?} grace"
    );
    common::assert_reaped(exec.pid(), Duration::from_secs(10)).await;
    assert!(
        exec.logs()
            .iter()
            .any(|l| l.contains("did not end in time; killing the client")),
        "{}",
        exec.logs_tail(30)
    );
    post(
        &exec,
        &task(57, 2, vec![bot("Solo", &mock)], "after the kill"),
    )
    .await;
    let done = rx.wait_terminal(57, 2, AGNO_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let after = stubborn(&exec);
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new client serves the next subtask");
    rx.assert_one_terminal_now(57, &[1, 2]);
}
