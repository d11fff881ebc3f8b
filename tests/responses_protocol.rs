//! Wegent's current protocol end to end: `POST /v1/responses` in, Responses-API events on
//! CALLBACK_URL out, through the real binary — with the real Claude Code CLI against the mock
//! Anthropic API (basic turn, follow-up on the same live CLI, tool use, cancel, API error), Agno,
//! both protocols at once on one executor, and the crash rule in the new encoding.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;
mod responses_common;

use std::time::Duration;

use common::agno_env::agno_python;
use common::*;
use reqwest::StatusCode;
use responses_common::*;
use serde_json::{json, Value};

/// The real CLI needs a few hundred ms per turn; the first run of a fresh machine more.
const WAIT: Duration = Duration::from_secs(60);

fn ids() -> Value {
    json!({"message_id": 3, "executor_name": "wegent-task-u-abc", "executor_namespace": "ns",
           "validation_params": {"validation_id": "v-1"}})
}

async fn submit(exec: &Executor, body: &Value) -> Value {
    let (status, answer) = post_fresh(exec, "/v1/responses", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", exec.logs_tail(40));
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_streams_deltas_ends_once_and_the_follow_up_continues_on_the_same_cli() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;

    let mut body = responses_body(
        101,
        1,
        json!([{"role": "user", "content": "an older message"},
               {"role": "assistant", "content": "an older answer"},
               {"role": "user", "content": [{"type": "input_text", "text": "first question"}]}]),
        ids(),
    );
    body["metadata"]["task_id"] = json!("101"); // upstream's Rust executor takes string ids too
    body["instructions"] = json!("You are a Responses test bot.");
    let answer = submit(&exec, &body).await;
    assert_eq!(
        answer,
        json!({"id": "resp_1", "status": "queued", "message": "Task execution status: RUNNING"})
    );
    let at_answer = rx.for_subtask(101, 1);
    assert_eq!(
        at_answer.first().and_then(event_type),
        Some("response.created"),
        "response.created is delivered before the HTTP answer: {at_answer:?}"
    );
    let events = wait_events(&rx, 101, 1, WAIT).await;
    assert_well_formed(&events, 101, 1);
    let created = &events[0];
    assert_eq!(created["data"]["shell_type"], "claudecode");
    assert_eq!(created["data"]["response"]["status"], "in_progress");
    assert_eq!(created["data"]["response"]["model"], "claude-sonnet-4");
    for e in &events {
        assert_eq!(e["message_id"], 3, "{e}");
        assert_eq!(e["executor_name"], "wegent-task-u-abc", "{e}");
        assert_eq!(e["executor_namespace"], "ns", "{e}");
        assert_eq!(e["validation_id"], "v-1", "{e}");
    }
    let terminal = events.last().unwrap();
    assert_eq!(
        terminal["event_type"],
        "response.completed",
        "{}",
        rx.dump()
    );
    let text = completed_text(terminal).to_string();
    assert!(
        text.starts_with("mock reply #") && text.contains("first question"),
        "{text}"
    );
    assert_eq!(
        streamed_text(&events),
        text,
        "the deltas add up to the answer"
    );
    let system = mock.requests().last().unwrap()["system"].to_string();
    assert!(system.contains("You are a Responses test bot."), "{system}");
    let pid = claude_pids(&exec);
    assert_eq!(pid.len(), 1, "one live CLI: {}", describe(&pid));

    let answer = submit(
        &exec,
        &responses_body(101, 2, json!("second question"), ids()),
    )
    .await;
    assert_eq!(answer["id"], "resp_2");
    let events = wait_events(&rx, 101, 2, WAIT).await;
    assert_well_formed(&events, 101, 2);
    let second = events.last().unwrap();
    assert_eq!(second["event_type"], "response.completed", "{}", rx.dump());
    assert!(
        completed_text(second).contains("second question"),
        "{second}"
    );
    assert_eq!(
        claude_pids(&exec),
        pid,
        "the follow-up ran on the same live CLI process (upstream starts one per turn)"
    );
    let history = message_texts(&mock.requests().last().unwrap().clone());
    assert!(
        history
            .iter()
            .any(|(role, t)| role == "assistant" && t == &text),
        "the follow-up carries the first answer: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_use_becomes_blocks_and_an_api_error_is_an_error_terminal() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;

    submit(
        &exec,
        &responses_body(
            102,
            1,
            json!("MOCK_TOOL:Bash:echo tool-output-42"),
            json!({}),
        ),
    )
    .await;
    let events = wait_events(&rx, 102, 1, WAIT).await;
    assert_well_formed(&events, 102, 1);
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| event_type(e) == Some("response.block.created"))
        .collect();
    assert_eq!(created.len(), 1, "{:?}", types(&events));
    let block = &created[0]["data"]["block"];
    assert_eq!(block["type"], "tool");
    assert_eq!(block["tool_name"], "Bash");
    assert_eq!(block["tool_input"]["command"], "echo tool-output-42");
    assert_eq!(block["status"], "pending");
    let updated: Vec<&Value> = events
        .iter()
        .filter(|e| event_type(e) == Some("response.block.updated"))
        .collect();
    assert_eq!(updated.len(), 1, "{:?}", types(&events));
    assert_eq!(updated[0]["data"]["block_id"], block["id"]);
    assert_eq!(updated[0]["data"]["updates"]["status"], "done");
    assert!(
        updated[0]["data"]["updates"]["tool_output"]
            .to_string()
            .contains("tool-output-42"),
        "{}",
        updated[0]
    );
    let t = types(&events);
    let pos = |name: &str| t.iter().position(|x| x == name).unwrap();
    assert!(pos("response.block.created") < pos("response.block.updated"));
    assert_eq!(events.last().unwrap()["event_type"], "response.completed");

    submit(
        &exec,
        &responses_body(102, 2, json!("MOCK_STATUS:401\nbad key"), json!({})),
    )
    .await;
    let events = wait_events(&rx, 102, 2, WAIT).await;
    assert_well_formed(&events, 102, 2);
    let err = events.last().unwrap();
    assert_eq!(err["event_type"], "error", "{}", rx.dump());
    assert_eq!(err["data"]["code"], "runtime_error");
    assert!(
        err["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("401")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_answers_as_upstream_and_ends_with_one_incomplete() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;

    mock.hold();
    submit(
        &exec,
        &responses_body(103, 7, json!("a question that hangs"), json!({})),
    )
    .await;
    mock.wait_for_held(1, WAIT).await;
    let (status, body) = post_fresh(
        &exec,
        "/api/tasks/cancel?task_id=103&subtask_id=7",
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"status": "success", "task_id": "103", "subtask_id": "7"})
    );
    let events = wait_events(&rx, 103, 7, WAIT).await;
    mock.release();
    assert_well_formed(&events, 103, 7);
    let end = events.last().unwrap();
    assert_eq!(end["event_type"], "response.incomplete", "{}", rx.dump());
    assert_eq!(end["data"]["response"]["status"], "cancelled");
    assert_eq!(end["data"]["response"]["error"]["code"], "cancelled");
    let (status, body) = post_fresh(
        &exec,
        "/api/tasks/cancel?task_id=103&subtask_id=7",
        &json!({}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"detail": "task 103 is not running"})
        )
    );
    // The conversation goes on after the cancel.
    submit(
        &exec,
        &responses_body(103, 8, json!("after the cancel"), json!({})),
    )
    .await;
    let events = wait_events(&rx, 103, 8, WAIT).await;
    assert_eq!(
        events.last().unwrap()["event_type"],
        "response.completed",
        "{}",
        rx.dump()
    );
    let incompletes = rx
        .for_subtask(103, 7)
        .iter()
        .filter(|e| is_terminal_event(e))
        .count();
    assert_eq!(incompletes, 1, "{}", rx.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn old_and_new_protocol_tasks_at_once_each_get_only_their_own_encoding() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;

    let old = json!({"task_id": 201, "subtask_id": 1, "task_title": "old", "subtask_title": "s",
                     "bot": [{"id": 1, "shell_type": "ClaudeCode"}], "prompt": "old protocol question"});
    let new = responses_body(202, 1, json!("new protocol question"), json!({}));
    let (a, b) = tokio::join!(
        post_fresh(&exec, "/api/tasks/execute", &old),
        post_fresh(&exec, "/v1/responses", &new)
    );
    assert_eq!(a.1["status"], "RUNNING", "{}", a.1);
    assert_eq!(a.1["message"], "Task execution status  : RUNNING");
    assert_eq!(b.1["id"], "resp_1", "{}", b.1);
    let legacy_end = rx.wait_terminal(201, 1, WAIT).await;
    let events = wait_events(&rx, 202, 1, WAIT).await;
    assert_eq!(legacy_end["status"], "COMPLETED", "{}", rx.dump());
    assert!(legacy_end["result"]["value"]
        .as_str()
        .is_some_and(|v| v.contains("old protocol question")));
    for cb in rx.for_task(201) {
        assert!(
            cb.get("event_type").is_none() && cb.get("status").is_some(),
            "{cb}"
        );
    }
    assert_well_formed(&events, 202, 1);
    assert!(completed_text(events.last().unwrap()).contains("new protocol question"));
    let legacy_terminals = rx.for_task(201).iter().filter(|c| is_terminal(c)).count();
    assert_eq!(legacy_terminals, 1);
    // Observability stays: /metrics counts both, the session listing shows both.
    let (status, _) = exec.get("/api/tasks/sessions").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = exec
        .client()
        .get(exec.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agno_runs_under_the_new_protocol() {
    let mock = MockOpenAi::start();
    let rx = CallbackReceiver::start();
    let python = agno_python().display().to_string();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("AGNO_PYTHON", python),
    )
    .await;
    let bot = json!({"name": "helper", "shell_type": "Agno", "system_prompt": "You are helper.",
        "agent_config": {"env": {"model": "openai", "model_id": "mock-1", "api_key": "sk-agno-test",
                                 "base_url": mock.base_url()}}});
    let body = responses_body(301, 1, json!("hello agno"), json!({"bot": [bot]}));
    let answer = submit(&exec, &body).await;
    assert_eq!(answer["message"], "Task execution status: RUNNING");
    let events = wait_events(&rx, 301, 1, Duration::from_secs(90)).await;
    assert_well_formed(&events, 301, 1);
    assert_eq!(events[0]["data"]["shell_type"], "agno");
    let end = events.last().unwrap();
    assert_eq!(
        end["event_type"],
        "response.completed",
        "upstream answers `unsupported agent kind: Agno`; we run it: {}\n{}",
        rx.dump(),
        exec.logs_tail(30)
    );
    let text = completed_text(end);
    assert!(text.contains("Hello from mock"), "{text}");
    assert_eq!(
        streamed_text(&events),
        text,
        "Agno's answer streams as deltas"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subtask_interrupted_by_a_crash_ends_with_one_error_in_its_protocol() {
    let rx = CallbackReceiver::start();
    let ws = tempfile::tempdir().unwrap();
    let options = || {
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("CALLBACK_INITIAL_BACKOFF_MS", "20")
            .env("CALLBACK_MAX_BACKOFF_MS", "100")
            .workspace(ws.path())
    };
    let mut exec = Executor::start(options()).await;
    let never = ws.path().join("never-created");
    let old = json!({"task_id": 402, "subtask_id": 1, "bot": [{"shell_type": "ClaudeCode"}],
        "prompt": format!("FAKE:wait_file:{}\nlong old work", never.display())});
    post_fresh(&exec, "/api/tasks/execute", &old).await;
    submit(
        &exec,
        &responses_body(
            401,
            1,
            json!(format!("FAKE:wait_file:{}\nlong work", never.display())),
            ids(),
        ),
    )
    .await;
    rx.wait_for(Duration::from_secs(30), |cbs| {
        cbs.iter()
            .filter(|c| {
                is_subtask(c, 401, 1) && event_type(c) == Some("response.output_text.delta")
            })
            .count()
            >= 3
            && cbs.iter().any(|c| is_subtask(c, 402, 1))
    })
    .await;
    exec.kill();
    for pid in processes_in(ws.path()) {
        common::procs::signal(pid, libc::SIGKILL);
    }
    let _exec = Executor::start(options()).await;
    let events = wait_events(&rx, 401, 1, Duration::from_secs(30)).await;
    let legacy = rx.wait_terminal(402, 1, Duration::from_secs(30)).await;
    assert_eq!(
        legacy["status"], "FAILED",
        "the old task keeps its encoding: {legacy}"
    );
    // A replay after the crash may resend the one event that was in flight; the terminal is one.
    let terminals: Vec<&Value> = events.iter().filter(|e| is_terminal_event(e)).collect();
    assert_eq!(terminals.len(), 1, "{}", rx.dump());
    let end = terminals[0];
    assert_eq!(end["event_type"], "error", "{}", rx.dump());
    assert_eq!(end["data"]["code"], "runtime_error");
    assert!(
        end["data"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("restarted"),
        "{end}"
    );
    assert_eq!(
        end["message_id"], 3,
        "the envelope keeps the subtask's identity: {end}"
    );
    assert_eq!(end["executor_name"], "wegent-task-u-abc");
    assert_eq!(end["validation_id"], "v-1");
    assert_eq!(events.last(), Some(end), "nothing after the terminal");
    assert_eq!(
        events
            .iter()
            .filter(|e| event_type(e) == Some("response.created"))
            .count(),
        1,
        "no second response.created after the restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dify_runs_under_the_new_protocol() {
    let dify = common::mock_dify::MockDify::start("chat", "app-key-1");
    let rx = CallbackReceiver::start();
    let exec = Executor::start(ExecutorOptions::new().callback_url(rx.url())).await;
    let bot = json!({"name": "dify", "shell_type": "Dify",
        "agent_config": {"env": {"DIFY_API_KEY": "app-key-1", "DIFY_BASE_URL": dify.base_url()}}});
    let answer = submit(
        &exec,
        &responses_body(501, 1, json!("hello dify"), json!({"bot": [bot]})),
    )
    .await;
    assert_eq!(answer["id"], "resp_1", "{answer}");
    let events = wait_events(&rx, 501, 1, WAIT).await;
    assert_well_formed(&events, 501, 1);
    assert_eq!(events[0]["data"]["shell_type"], "dify");
    let end = events.last().unwrap();
    assert_eq!(end["event_type"], "response.completed", "{}", rx.dump());
    let text = completed_text(end);
    assert!(text.contains("Echo: hello dify"), "{text}");
    assert_eq!(
        streamed_text(&events),
        text,
        "the answer also streams as a delta"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_validation_task_under_the_new_protocol_carries_its_validation_id_on_every_event() {
    let rx = CallbackReceiver::start();
    let exec = Executor::start(ExecutorOptions::new().callback_url(rx.url())).await;
    let body = json!({"model": "", "input": "", "background": true,
        "metadata": {"task_id": 601, "subtask_id": 6010, "type": "validation",
            "validation_params": {"shell_type": "ClaudeCode", "image": "registry.example/custom:1",
                                  "shell_name": "my-shell", "validation_id": "v-601"}}});
    let answer = submit(&exec, &body).await;
    assert_eq!(answer["id"], "resp_6010", "{answer}");
    let events = wait_events(&rx, 601, 6010, WAIT).await;
    assert_well_formed(&events, 601, 6010);
    assert_eq!(events[0]["data"]["shell_type"], "imagevalidator");
    for e in &events {
        assert_eq!(
            e["validation_id"], "v-601",
            "executor_manager needs it on every event: {e}"
        );
    }
}
