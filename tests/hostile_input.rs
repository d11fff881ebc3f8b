//! Hostile input through the real HTTP stack: malformed and mistyped bodies, out-of-range ids,
//! odd Unicode and NUL bytes, deep nesting, oversized and slow bodies (unknown routes and bad
//! queries: the shared table in tests/common/routes.rs, run by tests/http_routes.rs). Every
//! rejection is an exact status with a `{"detail": "..."}` body, nothing runs for it, and
//! afterwards the service is healthy and still runs a task to COMPLETED.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The default `MAX_BODY_BYTES` is 10 MiB; this is twice that.
const HUGE: usize = 20 * 1024 * 1024;

/// Asserts the exact status and a JSON object body whose string `detail` names `field`.
fn check(case: &str, (status, body): (u16, Value), want: u16, field: &str, exec: &Executor) {
    assert_eq!(status, want, "{case}: {body}\n{}", exec.logs_tail(20));
    let d = body.get("detail").and_then(Value::as_str);
    let d = d.unwrap_or_else(|| panic!("{case}: error body without a string `detail`: {body}"));
    assert!(
        d.contains(field),
        "{case}: the detail should name `{field}`: {d:?}"
    );
}

/// POSTs `raw` as a JSON body to the execute route.
async fn post(exec: &Executor, raw: Vec<u8>) -> (u16, Value) {
    let (status, body) = exec
        .post_raw("/api/tasks/execute", raw, Some("application/json"))
        .await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn bad_bodies_are_rejected_with_exact_statuses_and_nothing_runs() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let nest = |open: &str, close: &str| format!("{}{}", open.repeat(10_000), close.repeat(10_000));
    let task = |extra: Value| {
        let mut t =
            json!({"task_id": 9100, "subtask_id": 1, "agent_type": "claude_code", "prompt": "x"});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        t.to_string()
    };
    let bot = |b: Value| task(json!({"bot": [b]}));
    // (case, raw body, status, what the detail must name)
    #[rustfmt::skip]
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("truncated", r#"{"task_id": 9001, "prompt": "x""#.into(), 400, ""),
        ("trailing garbage", r#"{"task_id": 9002, "prompt": "x"} }"#.into(), 400, ""),
        ("single quotes", "{'task_id': 9003, 'prompt': 'x'}".into(), 400, ""),
        ("empty body", String::new(), 400, ""),
        ("10,000 nested arrays", nest("[", "]"), 400, ""),
        ("10,000 nested objects", nest(r#"{"a":"#, "}").replace(":}", ":1}"), 400, ""),
        ("JSON array", json!([{"task_id": 9100, "prompt": "x"}]).to_string(), 422, ""),
        ("JSON number", "42".into(), 422, ""),
        ("JSON null", "null".into(), 422, ""),
        ("JSON string", json!(r#"{"task_id": 9100}"#).to_string(), 422, ""),
        ("JSON bool", "true".into(), 422, ""),
        ("task_id 1.5", task(json!({"task_id": 1.5})), 422, "task_id"),
        ("task_id as string", task(json!({"task_id": "9101"})), 422, "task_id"),
        ("task_id as bool", task(json!({"task_id": true})), 422, "task_id"),
        ("subtask_id as string", task(json!({"subtask_id": "1"})), 422, "subtask_id"),
        ("prompt as number", task(json!({"prompt": 5})), 422, "prompt"),
        ("new_session as string", task(json!({"new_session": "yes"})), 422, "new_session"),
        ("bot as number", task(json!({"bot": 7})), 422, "bot"),
        ("agent_config as list", bot(json!({"agent_config": [1]})), 422, "agent_config"),
        ("allowed_tools as number", bot(json!({"allowed_tools": 3})), 422, "allowed_tools"),
        ("negative task_id", task(json!({"task_id": -1})), 422, "task_id"),
        ("task_id as a path", task(json!({"task_id": "../../etc"})), 422, "task_id"),
        ("user as list", task(json!({"user": ["x"]})), 422, "user"),
        ("attachments as string", task(json!({"attachments": "a.txt"})), 422, "attachments"),
        ("skills as number", bot(json!({"skills": 5})), 422, "skills"),
        ("no task_id", json!({"subtask_id": 1, "agent_type": "claude_code", "content": "x"}).to_string(), 422, "task_id"),
        ("no prompt nor content", json!({"task_id": 9100, "subtask_id": 1, "agent_type": "claude_code"}).to_string(), 422, "prompt"),
        ("bot as a string", task(json!({"bot": "ClaudeCode"})), 422, "bot"),
        ("bot as a list of non-objects", task(json!({"bot": ["ClaudeCode"]})), 422, "bot"),
        ("task_id i64::MAX+1", r#"{"task_id": 9223372036854775808, "prompt": "x"}"#.into(), 422, "task_id"),
        ("task_id 10^20", r#"{"task_id": 100000000000000000000, "prompt": "x"}"#.into(), 422, "task_id"),
    ];
    for (case, raw, want, field) in cases {
        check(
            case,
            post(&exec, raw.into_bytes()).await,
            want,
            field,
            &exec,
        );
    }
    let raw = b"{\"task_id\": 9004, \"prompt\": \"\xff\xfe\"}".to_vec();
    check("invalid UTF-8", post(&exec, raw).await, 400, "", &exec);

    // 20 MB over the default 10 MiB limit, with a Content-Length and chunked (413).
    let big = padded_task(9200, HUGE);
    let len = big.len().to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", len.as_str()),
    ];
    let head = request_head("POST", "/api/tasks/execute", exec.port(), &headers);
    let resp = send_raw(
        exec.port(),
        &head,
        big.clone(),
        None,
        Duration::from_secs(30),
    )
    .await;
    check(
        "20 MB with Content-Length",
        (resp.status, resp.body),
        413,
        "limit",
        &exec,
    );
    let chunks: Vec<&[u8]> = big.chunks(64 * 1024).collect();
    let resp = post_chunked(exec.port(), "/api/tasks/execute", &chunks).await;
    check(
        "20 MB chunked",
        (resp.status, resp.body),
        413,
        "limit",
        &exec,
    );

    assert_still_serves(&exec, &rx, 9300).await;
    let stray: Vec<Value> = rx
        .callbacks()
        .into_iter()
        .filter(|c| !is_task(c, 9300))
        .collect();
    assert!(
        stray.is_empty(),
        "rejected requests must not run: {stray:?}"
    );
}

#[tokio::test]
async fn odd_but_valid_bodies_run_and_end_exactly_once() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;

    // Unicode everywhere: emoji (with ZWJ), RTL text and override, combining characters.
    let title = "🦀 مهمة ✓ שלום e\u{301} Z\u{324}\u{354}\u{367} \u{202E}abc\u{202C} 👩\u{200D}💻";
    let subtitle = "sous-tâche ñ \u{1F1EF}\u{1F1F5} ا\u{64B}";
    let body = json!({"task_id": 9400, "subtask_id": 1, "agent_type": "claude_code",
        "task_title": title, "subtask_title": subtitle, "prompt": format!("{title} / {subtitle}")});
    let (status, answer) = exec.post_json("/api/tasks/execute", &body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "unicode: {answer}\n{}",
        exec.logs_tail(20)
    );
    assert_eq!(answer["status"], "RUNNING", "unicode: {answer}");
    let done = rx.wait_terminal(9400, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "unicode: {}", rx.dump());
    assert!(
        done["result"]["value"]
            .as_str()
            .is_some_and(|v| v.contains("🦀 مهمة")),
        "unicode prompt must reach the CLI intact: {done}"
    );
    for cb in rx.for_subtask(9400, 1) {
        assert_eq!(
            (cb["task_title"].as_str(), cb["subtask_title"].as_str()),
            (Some(title), Some(subtitle)),
            "unicode titles must round-trip exactly: {cb}"
        );
    }

    // NUL inside the prompt: accepted and run.
    let body = json!({"task_id": 9401, "subtask_id": 1, "agent_type": "claude_code", "prompt": "before\u{0}after"});
    let (status, answer) = exec.post_json("/api/tasks/execute", &body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "NUL in prompt: {answer}\n{}",
        exec.logs_tail(20)
    );
    let done = rx.wait_terminal(9401, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "NUL in prompt: {}", rx.dump());

    // NUL inside the system prompt (a CLI argument, where NUL cannot go): 422 naming the field.
    let body = json!({"task_id": 9402, "subtask_id": 1, "prompt": "x",
        "bot": [{"shell_type": "ClaudeCode", "system_prompt": "be\u{0}nice"}]});
    let (status, answer) = exec.post_json("/api/tasks/execute", &body).await;
    check(
        "NUL in system_prompt",
        (status.as_u16(), answer),
        422,
        "system_prompt",
        &exec,
    );

    // An agent type this build does not have: 200 with FAILED, and a FAILED callback.
    let body = json!({"task_id": 9403, "subtask_id": 1, "agent_type": "gemini_cli", "prompt": "x"});
    let (status, answer) = exec.post_json("/api/tasks/execute", &body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "unknown agent_type: {answer}\n{}",
        exec.logs_tail(20)
    );
    assert_eq!(
        (answer["status"].as_str(), answer["progress"].as_i64()),
        (Some("FAILED"), Some(0)),
        "{answer}"
    );
    let done = rx.wait_terminal(9403, 1, FAKE_WAIT).await;
    assert_eq!(
        done["status"],
        "FAILED",
        "unknown agent_type: {}",
        rx.dump()
    );

    assert_still_serves(&exec, &rx, 9404).await;
    for (task_id, want) in [(9400, 1), (9401, 1), (9402, 0), (9403, 1)] {
        assert_eq!(
            rx.terminal_statuses(task_id, 1).len(),
            want,
            "task {task_id}: terminal callbacks\n{}",
            rx.dump()
        );
    }
}

#[tokio::test]
async fn slow_body_gets_408_without_blocking_other_clients() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("BODY_TIMEOUT_SECS", "3")]).await;
    let port = exec.port();
    let head = request_head(
        "POST",
        "/api/tasks/execute",
        port,
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", "100"),
        ],
    );
    let pace = Pace {
        piece: 1,
        every: Duration::from_millis(200),
    };
    let slow = tokio::spawn(async move {
        send_raw(
            port,
            &head,
            vec![b' '; 100],
            Some(pace),
            Duration::from_secs(10),
        )
        .await
    });

    // Other connections are served while the body trickles in: health checks every 100 ms
    // until the slow request ends; those answered before it ended must be prompt.
    let t0 = std::time::Instant::now();
    let mut answered = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !slow.is_finished() && t0.elapsed() < Duration::from_secs(10) {
        tick.tick().await;
        let asked = std::time::Instant::now();
        let (status, body) = exec.get("/").await;
        assert_eq!(status, StatusCode::OK, "health during a slow body: {body}");
        if !slow.is_finished() {
            answered.push((t0.elapsed(), asked.elapsed()));
        }
    }
    // Answered while the slow body was still pending is the evidence; the per-check bound is
    // generous (half the body timeout) and only rules out waiting for the slow request.
    assert!(
        answered
            .iter()
            .any(|(at, _)| *at >= Duration::from_millis(1500)),
        "no health check was answered while the slow body was pending: {answered:?}"
    );
    assert!(
        answered
            .iter()
            .all(|(_, took)| *took < Duration::from_millis(1500)),
        "health checks were slow during a slow body (at, took): {answered:?}"
    );

    let resp = slow.await.expect("the slow request task");
    check("slow body", (resp.status, resp.body), 408, "", &exec);
    // Not before BODY_TIMEOUT_SECS; the upper bound is generous (loaded machine).
    assert!(
        resp.elapsed >= Duration::from_millis(2900) && resp.elapsed < Duration::from_secs(10),
        "408 should come about 3 s after the headers, took {:?}",
        resp.elapsed
    );
    assert_still_serves(&exec, &rx, 9600).await;
}
