//! Upstream's wire-level contract tests (Wegent `executor/tests/*_contract.rs` at eebcf1035,
//! research/responses-protocol.md §6), ported as black-box cases against our binary with the
//! scriptable fake CLI. Each test names the upstream file and case it ports; where we chose to
//! differ the test says so and README "Responses protocol" lists it.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;
mod responses_common;

use common::*;
use reqwest::StatusCode;
use responses_common::*;
use serde_json::{json, Value};

async fn start(rx: &CallbackReceiver, extra: &[(&str, &str)]) -> Executor {
    start_fake(rx, extra).await
}

async fn submit(exec: &Executor, body: &Value) -> Value {
    let (status, answer) = post_fresh(exec, "/v1/responses", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", exec.logs_tail(40));
    answer
}

async fn run(
    exec: &Executor,
    rx: &CallbackReceiver,
    t: i64,
    s: i64,
    input: Value,
    meta: Value,
) -> Vec<Value> {
    submit(exec, &responses_body(t, s, input, meta)).await;
    let events = wait_events(rx, t, s, FAKE_WAIT).await;
    assert_well_formed(&events, t, s);
    events
}

/// http_contract `responses_endpoint_accepts_openai_background_requests` (+ id conversion),
/// and the 400s of §1.3 (`[ran@H]`).
#[tokio::test(flavor = "multi_thread")]
async fn http_the_background_answer_the_non_background_answer_and_bad_bodies() {
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[]).await;
    let body = json!({"model": "ignored", "input": "FAKE:prompt\nrun this task", "background": true,
        "model_config": {"model": "anthropic", "model_id": "claude-sonnet-4"},
        "metadata": {"task_id": 123, "subtask_id": 456, "bot": [{"shell_type": "ClaudeCode"}]}});
    let started = std::time::Instant::now();
    let answer = submit(&exec, &body).await;
    let answered = started.elapsed();
    assert_eq!(
        answer,
        json!({"id": "resp_456", "status": "queued", "message": "Task execution status: RUNNING"})
    );
    let events = wait_events(&rx, 123, 456, FAKE_WAIT).await;
    eprintln!(
        "[responses] answer after {:.1} ms (response.created delivered first), terminal after {:.1} ms",
        answered.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert!(
        completed_text(events.last().unwrap()).contains("run this task"),
        "the prompt reached the CLI"
    );

    let mut body = responses_body(124, 1, json!("hi"), json!({}));
    body["background"] = json!(false);
    let answer = submit(&exec, &body).await;
    assert_eq!(
        answer["status"], "RUNNING",
        "without background the status is the task's"
    );

    let (status, err) = exec
        .post_raw("/v1/responses", b"{1".to_vec(), Some("application/json"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["detail"].is_string(), "{err}");
    let (status, err) = post_fresh(&exec, "/v1/responses", &json!([1, 2])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["detail"]
            .as_str()
            .unwrap_or("")
            .contains("must be a JSON object"),
        "{err}"
    );
    // Differs: upstream accepts a non-numeric id and then drops every callback locally
    // ("callback task identity is not numeric"), so the backend never hears of the task. We refuse it.
    let (status, err) = post_fresh(
        &exec,
        "/v1/responses",
        &responses_body(0, 1, json!("x"), json!({"task_id": "abc"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    wait_events(&rx, 124, 1, FAKE_WAIT).await;
    let (_, spec) = exec.get("/openapi.json").await;
    assert!(
        spec["paths"]["/v1/responses"]["post"].is_object(),
        "documented: {}",
        spec["paths"]
    );
}

/// http_contract `cancel_endpoint_waits_for_runtime_cancellation_ack` and
/// docker_runtime_contract `docker_cancel_endpoint_stops_active_task_and_sends_cancelled_callback`.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_running_subtask_answers_success_and_sends_one_cancelled_incomplete() {
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[]).await;
    let never = exec.tmp_root().join("never");
    submit(
        &exec,
        &responses_body(
            282,
            536,
            json!(format!("FAKE:wait_file:{}\nwork", never.display())),
            json!({}),
        ),
    )
    .await;
    rx.wait_for(FAKE_WAIT, |cbs| {
        cbs.iter()
            .any(|c| is_subtask(c, 282, 536) && event_type(c) == Some("response.output_text.delta"))
    })
    .await;
    let (status, body) = post_fresh(
        &exec,
        "/api/tasks/cancel?task_id=282&subtask_id=536",
        &json!({}),
    )
    .await;
    assert_eq!(
        (status, body.clone()),
        (
            StatusCode::OK,
            json!({"status": "success", "task_id": "282", "subtask_id": "536"})
        )
    );
    let events = wait_events(&rx, 282, 536, FAKE_WAIT).await;
    assert_well_formed(&events, 282, 536);
    let end = &events.last().unwrap()["data"]["response"];
    assert_eq!(events.last().unwrap()["event_type"], "response.incomplete");
    assert_eq!(
        (end["status"].clone(), end["error"]["code"].clone()),
        (json!("cancelled"), json!("cancelled"))
    );
    assert_eq!(end["output"], json!([]));
    // Nothing running: 404 as upstream (the old protocol's cancel keeps its 400/200 bodies).
    let (status, body) = post_fresh(
        &exec,
        "/api/tasks/cancel?task_id=999&subtask_id=1",
        &json!({}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"detail": "task 999 is not running"})
        )
    );
}

/// emitter_contract `response_created_event_matches_callback_envelope_contract`,
/// `response_completed_event_contains_message_output`, `error_event_uses_openai_error_shape`;
/// docker_runtime_contract `default_docker_router_runs_claude_subprocess_and_sends_callbacks`
/// (executor name/namespace from the environment).
#[tokio::test(flavor = "multi_thread")]
async fn emitter_created_completed_and_error_shapes_with_the_env_identity() {
    let rx = CallbackReceiver::start();
    let exec = start(
        &rx,
        &[
            ("EXECUTOR_NAME", "executor-1"),
            ("EXECUTOR_NAMESPACE", "default"),
        ],
    )
    .await;
    let events = run(&exec, &rx, 123, 456, json!("hello"), json!({})).await;
    let created = &events[0];
    let keys: Vec<&String> = created.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "data",
            "event_type",
            "executor_name",
            "executor_namespace",
            "subtask_id",
            "task_id"
        ],
        "optional keys are omitted when absent: {created}"
    );
    assert_eq!(
        (
            created["executor_name"].clone(),
            created["executor_namespace"].clone()
        ),
        (json!("executor-1"), json!("default"))
    );
    let response = &created["data"]["response"];
    assert_eq!(
        created["data"],
        json!({"type": "response.created", "shell_type": "claudecode",
               "response": {"id": response["id"], "object": "response", "created_at": response["created_at"],
                            "model": "claude-sonnet-4", "status": "in_progress", "output": []}})
    );
    let id = response["id"].as_str().unwrap();
    assert!(
        id.starts_with("resp_") && id.len() == 29 && id[5..].chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(response["created_at"]
        .as_u64()
        .is_some_and(|t| t > 1_700_000_000));
    let types = types(&events);
    assert!(
        types.contains(&"response.output_text.delta".to_string()),
        "{types:?}"
    );
    let done = &events.last().unwrap()["data"]["response"];
    assert_eq!(done["id"], response["id"], "one response id per subtask");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["id"], "msg_456");
    assert_eq!(done["output"][0]["role"], "assistant");
    assert_eq!(done["output"][0]["content"][0]["type"], "output_text");
    assert!(done.get("usage").is_some_and(Value::is_null));

    let events = run(&exec, &rx, 123, 457, json!("FAKE:error:failed"), json!({})).await;
    assert_eq!(
        events.last().unwrap()["data"],
        json!({"type": "error", "code": "runtime_error", "message": "failed"})
    );
}

/// emitter_contract `callback_events_include_validation_id`, runner_contract
/// `background_runner_propagates_validation_id_to_all_callbacks`,
/// `background_runner_emits_start_and_completed_events`, `..._error_event_for_failed_outcome`.
#[tokio::test(flavor = "multi_thread")]
async fn runner_created_then_one_terminal_and_the_identity_on_every_event() {
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[]).await;
    let meta = json!({"message_id": 77, "validation_params": {"validation_id": "validation-1"},
                      "executor_name": "from-metadata"});
    let events = run(&exec, &rx, 1, 2, json!("hello"), meta.clone()).await;
    assert_eq!(events.last().unwrap()["event_type"], "response.completed");
    let failed = run(&exec, &rx, 1, 3, json!("FAKE:error:clone failed"), meta).await;
    assert_eq!(failed.last().unwrap()["event_type"], "error");
    assert_eq!(failed.last().unwrap()["data"]["message"], "clone failed");
    for e in events.iter().chain(&failed) {
        assert_eq!(e["validation_id"], "validation-1", "{e}");
        assert_eq!(e["message_id"], 77, "{e}");
        assert_eq!(
            e["executor_name"], "from-metadata",
            "metadata wins over EXECUTOR_NAME: {e}"
        );
    }
}

/// callback_contract `callback_sink_posts_event_envelope_as_json`,
/// `callback_sink_retries_non_success_response_before_succeeding`, `callback_sink_skips_empty_url`;
/// and where we differ: a 4xx is not retried (upstream retries every non-2xx).
#[tokio::test(flavor = "multi_thread")]
async fn callbacks_are_json_envelopes_retried_on_5xx_not_on_4xx() {
    let rx = CallbackReceiver::start();
    let exec = start(
        &rx,
        &[
            ("CALLBACK_INITIAL_BACKOFF_MS", "20"),
            ("CALLBACK_MAX_BACKOFF_MS", "50"),
        ],
    )
    .await;
    rx.fail_next(1, 500);
    let events = run(&exec, &rx, 5, 1, json!("hello"), json!({})).await;
    let attempts: Vec<ReceivedCallback> = rx
        .attempts()
        .into_iter()
        .filter(|a| is_subtask(&a.body, 5, 1))
        .collect();
    assert_eq!(attempts[0].body["event_type"], "response.created");
    assert_eq!(attempts[0].header("content-type"), Some("application/json"));
    assert_eq!(
        attempts[1].body, attempts[0].body,
        "the 500 was retried with the same event"
    );
    assert_eq!(events[0]["event_type"], "response.created");

    rx.fail_next(1, 400);
    submit(
        &exec,
        &responses_body(5, 2, json!("hello again"), json!({})),
    )
    .await;
    rx.wait_for(FAKE_WAIT, |cbs| {
        cbs.iter()
            .any(|c| is_subtask(c, 5, 2) && is_terminal_event(c))
    })
    .await;
    let attempts: Vec<ReceivedCallback> = rx
        .attempts()
        .into_iter()
        .filter(|a| is_subtask(&a.body, 5, 2))
        .collect();
    let created = attempts
        .iter()
        .filter(|a| event_type(&a.body) == Some("response.created"))
        .count();
    assert_eq!(
        created, 1,
        "a 4xx is final, not retried (upstream retries it ~55 s)"
    );
    // Beats upstream: the refused first event does not leave the subtask without its terminal.
    let accepted = rx.for_subtask(5, 2);
    assert_eq!(
        accepted.iter().filter(|e| is_terminal_event(e)).count(),
        1,
        "{}",
        rx.dump()
    );

    // Empty CALLBACK_URL: the task still runs (upstream Era C skips silently; Era B failed it).
    let quiet = Executor::start(ExecutorOptions::new().env("ANTHROPIC_API_KEY", "sk-test")).await;
    let answer = submit(
        &quiet,
        &responses_body(6, 1, json!("no receiver"), json!({})),
    )
    .await;
    assert_eq!(answer["message"], "Task execution status: RUNNING");
    let deadline = tokio::time::Instant::now() + FAKE_WAIT;
    loop {
        let (_, list) = quiet.get("/api/tasks/sessions").await;
        let finished = list["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["task_id"] == 6 && s["completed_subtasks"].as_u64() >= Some(1));
        if finished {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subtask never finished: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // polling with a deadline
    }
}

/// protocol_contract `openai_request_conversion_preserves_executor_metadata_and_messages` and
/// agent_command_contract's system-prompt precedence: the last user message is the prompt,
/// `instructions` is the system prompt (over `bot[0].system_prompt`), `model_config.model_id`
/// the model, `metadata.new_session` a fresh conversation.
#[tokio::test(flavor = "multi_thread")]
async fn protocol_input_instructions_and_model_reach_the_cli() {
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[]).await;
    let input = json!([{"role": "user", "content": "first user message"},
                       {"role": "assistant", "content": "assistant message"},
                       {"role": "user", "content": "FAKE:prompt\nFAKE:argv\nsecond user message"}]);
    let mut body = responses_body(
        8,
        1,
        input,
        json!({"bot": [{"shell_type": "ClaudeCode", "system_prompt": "bot prompt"}]}),
    );
    body["instructions"] = json!("system prompt");
    submit(&exec, &body).await;
    let events = wait_events(&rx, 8, 1, FAKE_WAIT).await;
    let prompt = completed_text(events.last().unwrap());
    assert!(
        prompt.contains("second user message") && !prompt.contains("first user message"),
        "{prompt}"
    );
    assert!(
        prompt.contains("--system-prompt=system prompt"),
        "instructions win over bot[0].system_prompt: {prompt}"
    );
    let events = run(
        &exec,
        &rx,
        8,
        2,
        json!("FAKE:argv\nFAKE:env:ANTHROPIC_MODEL"),
        json!({"new_session": true}),
    )
    .await;
    let reply = completed_text(events.last().unwrap()).to_string();
    assert!(
        reply.contains("ANTHROPIC_MODEL=claude-sonnet-4"),
        "model_config.model_id is the model: {reply}"
    );
    assert!(
        !reply.contains("--resume"),
        "new_session starts fresh: {reply}"
    );
}

/// stream_process_engine_contract `..._sends_remaining_text_delta_before_success`,
/// `..._preserves_queued_non_text_events_before_success`, `..._fails_when_claude_stdout_ends_without_result`;
/// stream_parser_contract `ndjson_parser_skips_non_json_stdout_lines`; claude_stream_event_contract
/// `claude_tool_use_stream_blocks_do_not_leak_arguments_into_final_text`.
#[tokio::test(flavor = "multi_thread")]
async fn stream_long_text_tools_garbage_and_a_missing_result() {
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[]).await;
    let events = run(
        &exec,
        &rx,
        9,
        1,
        json!("FAKE:bigline:5000\nlong"),
        json!({}),
    )
    .await;
    let streamed = streamed_text(&events);
    assert!(
        streamed.contains(&"x".repeat(5000)),
        "the whole long line streams ({} chars)",
        streamed.len()
    );
    assert!(
        events
            .iter()
            .filter(|e| event_type(e) == Some("response.output_text.delta"))
            .all(|e| e["data"]["delta"].as_str().unwrap_or("").chars().count() <= 256),
        "deltas are chunked at 256 characters"
    );

    let events = run(&exec, &rx, 9, 2, json!("FAKE:tool\nuse a tool"), json!({})).await;
    let t = types(&events);
    let created = t
        .iter()
        .position(|x| x == "response.block.created")
        .expect("block created");
    let updated = t
        .iter()
        .position(|x| x == "response.block.updated")
        .expect("block updated");
    assert!(
        created < updated && updated < t.len() - 1,
        "tool events before the terminal: {t:?}"
    );
    let block = &events[created]["data"]["block"];
    assert_eq!(events[updated]["data"]["block_id"], block["tool_use_id"]);
    let text = completed_text(events.last().unwrap());
    assert!(
        !text.contains(&block["tool_input"].to_string()),
        "tool arguments are not answer text: {text}"
    );

    let events = run(
        &exec,
        &rx,
        9,
        3,
        json!("FAKE:garbage\nstill fine"),
        json!({}),
    )
    .await;
    assert_eq!(
        events.last().unwrap()["event_type"],
        "response.completed",
        "non-JSON lines are skipped"
    );

    let events = run(
        &exec,
        &rx,
        9,
        4,
        json!("FAKE:noresult\nno result"),
        json!({}),
    )
    .await;
    let end = events.last().unwrap();
    assert_eq!(end["event_type"], "error", "{end}");
    assert_eq!(end["data"]["code"], "runtime_error");
}

/// Not in upstream (it has no event stream): the SSE stream of a Responses task carries exactly
/// the Responses events its callbacks carry, in order.
#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_of_a_responses_task_carries_its_responses_events() {
    let rx = CallbackReceiver::start();
    let exec = start(&rx, &[]).await;
    let mut live = exec
        .client()
        .get(exec.url("/api/tasks/11/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let callbacks = run(&exec, &rx, 11, 1, json!("FAKE:tool\nstream me"), json!({})).await;
    let mut buf = String::new();
    let mut streamed: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + FAKE_WAIT;
    while !streamed.last().is_some_and(is_terminal_event) {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                streamed.push(serde_json::from_str(data.trim()).unwrap());
            }
        }
        if streamed.last().is_some_and(is_terminal_event) {
            break;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, live.chunk()).await {
            Ok(Ok(Some(bytes))) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("stream ended: {other:?}; got {streamed:?}"),
        }
    }
    assert_eq!(
        streamed, callbacks,
        "SSE and callbacks carry the same events"
    );
}
