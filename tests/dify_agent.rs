//! The Dify agent end to end (contract §5.5): the real binary talks to a mock Dify app
//! (`common::mock_dify`, Dify's SSE wire format) with callbacks to a real receiver. Chat and
//! workflow apps, a follow-up continuing the conversation (also across an executor restart),
//! cancel mid-stream (the stop endpoint is called, one CANCELLED), errors (bad key, HTTP 500,
//! unreachable, an `error` event, no key, no answer, the time limit) ending FAILED once with a clear message and the key
//! nowhere, and the params precedence. The execute request is answered with the final status,
//! while other tasks and routes go on.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor

mod common;

use std::time::Duration;

use common::mock_dify::MockDify;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const KEY: &str = "app-dify-secret-key-1";
/// `dify-encrypted-key-7` AES-256-CBC encrypted with the original's default key and IV:
/// `printf dify-encrypted-key-7 | openssl enc -aes-256-cbc -K <hex 1234…9012> -iv <hex 1234…3456> -base64`.
const ENCRYPTED_KEY: &str = "M3CWrO3JoLiLEM1ef/JIm4gd2qzxbsmrLbsoao1KqSA=";
const PLAIN_OF_ENCRYPTED: &str = "dify-encrypted-key-7";
/// The executor's own credential: it must never reach a Dify server.
const EXECUTOR_KEY: &str = "sk-executor-own-secret-3";

fn dify_bot(base: &str, key: &str, extra_env: Value) -> Value {
    let mut env = json!({"DIFY_API_KEY": key, "DIFY_BASE_URL": base});
    if let (Some(e), Some(x)) = (env.as_object_mut(), extra_env.as_object()) {
        e.extend(x.clone());
    }
    json!({"id": 5, "name": "dify-bot", "shell_type": "Dify", "agent_config": {"env": env}})
}

fn task(task_id: i64, subtask_id: i64, bot: Value, prompt: &str) -> Value {
    json!({"task_id": task_id, "subtask_id": subtask_id, "task_title": "T", "subtask_title": "S",
           "bot": [bot], "prompt": prompt, "user": {"id": 1, "name": "u"}})
}

async fn start(rx: &CallbackReceiver, opts: ExecutorOptions) -> Executor {
    Executor::start(
        opts.callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", EXECUTOR_KEY)
            .env("TASK_INFO_TERMINAL_REPEAT_SECS", "0"),
    )
    .await
}

/// Posts a subtask and returns the execute answer (the final status, for Dify).
async fn execute(exec: &Executor, body: &Value) -> Value {
    let (status, reply) = exec.post_json("/api/tasks/execute", body).await;
    assert_eq!(status, 200, "{reply}\n{}", exec.logs_tail(40));
    reply
}

fn terminals(rx: &CallbackReceiver, task_id: i64, subtask_id: i64) -> Vec<Value> {
    rx.for_subtask(task_id, subtask_id)
        .into_iter()
        .filter(is_terminal)
        .collect()
}

fn progress_and_messages(
    rx: &CallbackReceiver,
    task_id: i64,
    subtask_id: i64,
) -> Vec<(i64, String, String)> {
    rx.for_subtask(task_id, subtask_id)
        .iter()
        .map(|c| {
            (
                c["progress"].as_i64().unwrap_or(-1),
                c["status"].as_str().unwrap_or_default().to_string(),
                c["error_message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_app_answers_and_a_follow_up_continues_the_conversation() {
    let mock = MockDify::start("agent-chat", KEY);
    let rx = CallbackReceiver::start();
    let exec = start(&rx, ExecutorOptions::new()).await;
    let bot = dify_bot(&mock.base_url(), KEY, json!({}));

    let reply = execute(&exec, &task(71, 1, bot.clone(), "hello there")).await;
    assert_eq!(
        reply,
        json!({"task_id": 71, "subtask_id": 1, "status": "COMPLETED",
               "message": "Task execution status  : COMPLETED", "progress": 100})
    );
    let done = rx.wait_terminal(71, 1, WAIT).await;
    assert_eq!(
        done["result"],
        json!({"value": "Echo: hello there (turn 1)", "thinking": [], "blocks": []}),
        "{done}"
    );
    assert_eq!(
        progress_and_messages(&rx, 71, 1),
        vec![
            (50, "RUNNING".into(), "Task execution started".into()),
            (10, "RUNNING".into(), "Starting Dify Agent execution".into()),
            (
                30,
                "RUNNING".into(),
                "Sending message to Dify application".into()
            ),
            (
                100,
                "COMPLETED".into(),
                "Dify Agent execution completed".into()
            ),
        ]
    );
    let first = mock.requests_to("/v1/chat-messages");
    assert_eq!(first.len(), 1, "{}", mock.dump());
    let body = &first[0].body;
    assert_eq!(body["query"], "hello there");
    assert_eq!(body["user"], "task-71");
    assert_eq!(body["response_mode"], "streaming");
    assert_eq!(body["auto_generate_name"], true);
    assert!(body.get("conversation_id").is_none(), "{body}");
    assert_eq!(
        first[0].authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(
        mock.requests_to("/v1/info").len(),
        1,
        "the app mode is asked"
    );

    let reply = execute(&exec, &task(71, 2, bot, "and again")).await;
    assert_eq!(reply["status"], "COMPLETED", "{reply}");
    let done = rx.wait_terminal(71, 2, WAIT).await;
    assert_eq!(
        done["result"]["value"], "Echo: and again (turn 2)",
        "{done}"
    );
    let second = mock.requests_to("/v1/chat-messages");
    let conv = second[1].body["conversation_id"]
        .as_str()
        .unwrap_or_default();
    assert!(
        conv.starts_with("conv-"),
        "follow-up sends the conversation id: {}",
        second[1].body
    );
    for sub in [1, 2] {
        assert_eq!(terminals(&rx, 71, sub).len(), 1, "{}", rx.dump());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_app_returns_its_outputs_as_pretty_json() {
    let mock = MockDify::start("workflow", KEY);
    let rx = CallbackReceiver::start();
    let exec = start(&rx, ExecutorOptions::new()).await;
    let bot = dify_bot(
        &mock.base_url(),
        KEY,
        json!({"DIFY_PARAMS": {"lang": "en"}}),
    );
    let reply = execute(&exec, &task(72, 1, bot, "summarise")).await;
    assert_eq!(reply["status"], "COMPLETED", "{reply}");
    let done = rx.wait_terminal(72, 1, WAIT).await;
    let inputs = json!({"lang": "en", "query": "summarise"});
    let outputs = json!({"answer": "Workflow: summarise", "inputs": inputs});
    assert_eq!(
        done["result"]["value"],
        serde_json::to_string_pretty(&outputs).unwrap(),
        "{done}"
    );
    let runs = mock.requests_to("/v1/workflows/run");
    assert_eq!(runs.len(), 1, "{}", mock.dump());
    assert_eq!(
        runs[0].body,
        json!({"inputs": inputs, "response_mode": "streaming", "user": "task-72"})
    );
    assert!(mock.requests_to("/v1/chat-messages").is_empty());
    assert_eq!(terminals(&rx, 72, 1).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_stream_stops_the_dify_task_and_nothing_else_waits() {
    let mock = MockDify::start("chat", KEY);
    let rx = CallbackReceiver::start();
    let exec = start(&rx, ExecutorOptions::new()).await;
    let bot = dify_bot(&mock.base_url(), KEY, json!({}));
    let client = exec.client();
    let url = exec.url("/api/tasks/execute");
    let slow = task(73, 1, bot.clone(), "SLOW please");
    let pending = tokio::spawn(async move {
        let r = client.post(url).json(&slow).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    });
    mock.wait_for(WAIT, |r| r.iter().any(|r| r.path == "/v1/chat-messages"))
        .await;

    // While that request waits for its answer, the executor serves everything else.
    let t0 = std::time::Instant::now();
    let (status, _) = exec.get("/").await;
    assert_eq!(status, 200);
    let other = execute(&exec, &task(74, 1, bot, "meanwhile")).await;
    assert_eq!(other["status"], "COMPLETED", "{other}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(
        !pending.is_finished(),
        "the slow subtask is still streaming"
    );

    let (status, body) = exec
        .post_json("/api/tasks/cancel?task_id=73", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = rx.wait_terminal(73, 1, WAIT).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    let reply = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert_eq!(reply["status"], "CANCELLED", "{reply}");
    let stops = mock.stop_requests();
    assert_eq!(stops.len(), 1, "{}", mock.dump());
    assert!(
        stops[0].path.starts_with("/v1/chat-messages/dify-task-")
            && stops[0].path.ends_with("/stop"),
        "{}",
        stops[0].path
    );
    assert_eq!(stops[0].body, json!({"user": "task-73"}));
    // Exactly one terminal each.
    let (status, _) = exec.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(terminals(&rx, 73, 1).len(), 1, "{}", rx.dump());
    assert_eq!(terminals(&rx, 74, 1).len(), 1, "{}", rx.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_survives_an_executor_restart() {
    let mock = MockDify::start("chat", KEY);
    let rx = CallbackReceiver::start();
    let ws = tempfile::tempdir().unwrap();
    let bot = dify_bot(&mock.base_url(), KEY, json!({}));
    let mut exec = start(&rx, ExecutorOptions::new().workspace(ws.path())).await;
    let reply = execute(&exec, &task(75, 1, bot.clone(), "first")).await;
    assert_eq!(reply["status"], "COMPLETED", "{reply}");
    exec.terminate().await;

    let exec = start(&rx, ExecutorOptions::new().workspace(ws.path())).await;
    let reply = execute(&exec, &task(75, 2, bot, "second")).await;
    assert_eq!(reply["status"], "COMPLETED", "{reply}");
    let done = rx.wait_terminal(75, 2, WAIT).await;
    assert_eq!(done["result"]["value"], "Echo: second (turn 2)", "{done}");
    let chats = mock.requests_to("/v1/chat-messages");
    assert_eq!(chats.len(), 2, "{}", mock.dump());
    assert!(
        chats[1].body["conversation_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("conv-")),
        "{}",
        chats[1].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_end_failed_once_with_a_clear_message_and_never_show_the_key() {
    let mock = MockDify::start("chat", KEY);
    let rx = CallbackReceiver::start();
    // A short limit, so the slow stream below times out.
    let exec = start(&rx, ExecutorOptions::new().env("DIFY_TIMEOUT_SECS", "2")).await;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let wrong_key = "app-wrong-secret-key-9";
    let closed_addr = format!("127.0.0.1:{closed_port}");
    let cases: Vec<(i64, Value, &str, Vec<&str>)> = vec![
        (
            81,
            dify_bot(&mock.base_url(), wrong_key, json!({})),
            "hi",
            vec![
                "Dify Agent execution failed",
                "Access token is invalid",
                "HTTP 401",
            ],
        ),
        (
            82,
            dify_bot(&mock.base_url(), KEY, json!({})),
            "FAIL500",
            vec![
                "Dify Agent execution failed",
                "Dify Chat API error",
                "HTTP 500",
            ],
        ),
        (
            83,
            dify_bot(&format!("http://127.0.0.1:{closed_port}"), KEY, json!({})),
            "hi",
            vec!["Failed to connect to Dify Chat API", &closed_addr],
        ),
        (
            84,
            dify_bot(&mock.base_url(), KEY, json!({})),
            "ERROREVENT",
            vec!["Dify API error: mock error event"],
        ),
        (
            85,
            json!({"shell_type": "Dify", "agent_config": {"env": {"DIFY_BASE_URL": mock.base_url()}}}),
            "hi",
            vec![
                "Dify configuration is incomplete or invalid",
                "DIFY_API_KEY",
            ],
        ),
        (
            86,
            dify_bot(&mock.base_url(), KEY, json!({})),
            "EMPTY",
            vec!["No answer received from Dify application"],
        ),
        (
            87,
            dify_bot(&mock.base_url(), KEY, json!({})),
            "SLOW",
            vec!["Dify Agent execution failed", "did not finish within 2 s"],
        ),
    ];
    for (task_id, bot, prompt, wants) in &cases {
        let reply = execute(&exec, &task(*task_id, 1, bot.clone(), prompt)).await;
        assert_eq!(reply["status"], "FAILED", "{task_id}: {reply}");
        assert_eq!(reply["progress"], 0, "{task_id}: {reply}");
        let done = rx.wait_terminal(*task_id, 1, WAIT).await;
        assert_eq!(done["status"], "FAILED", "{task_id}: {done}");
        let msg = done["error_message"].as_str().unwrap_or_default();
        for want in wants {
            assert!(msg.contains(want), "{task_id}: {want:?} in {msg:?}");
        }
        assert_eq!(
            terminals(&rx, *task_id, 1).len(),
            1,
            "{task_id}: {}",
            rx.dump()
        );
    }
    let everything = rx.dump();
    for secret in [KEY, wrong_key, EXECUTOR_KEY] {
        assert!(!everything.contains(secret), "{secret} in callbacks");
        exec.assert_logs_exclude(secret);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_precedence_encrypted_key_and_no_executor_credential_sent() {
    let mock = MockDify::start("chat", PLAIN_OF_ENCRYPTED);
    let rx = CallbackReceiver::start();
    let exec = start(&rx, ExecutorOptions::new()).await;
    let bot = dify_bot(
        &mock.base_url(),
        ENCRYPTED_KEY,
        json!({"DIFY_PARAMS": r#"{"b": "env", "c": "env"}"#, "DIFY_APP_ID": "app-1"}),
    );
    let mut body = task(
        76,
        1,
        bot,
        "[EXTERNAL_API_PARAMS]{\"c\": \"prompt\"}[/EXTERNAL_API_PARAMS]\nthe question",
    );
    body["bot_prompt"] =
        json!(r#"{"difyAppId": "app-bp", "params": {"a": "bp", "b": "bp", "c": "bp"}}"#);
    let reply = execute(&exec, &body).await;
    assert_eq!(
        reply["status"],
        "COMPLETED",
        "{reply}\n{}",
        exec.logs_tail(30)
    );
    let chats = mock.requests_to("/v1/chat-messages");
    assert_eq!(
        chats[0].body["inputs"],
        json!({"a": "bp", "b": "env", "c": "prompt"})
    );
    assert_eq!(chats[0].body["query"], "the question");
    for r in mock.requests() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bearer {PLAIN_OF_ENCRYPTED}")),
            "{} {}",
            r.method,
            r.path
        );
        assert!(!r.body.to_string().contains(EXECUTOR_KEY), "{}", r.body);
    }
    let everything = rx.dump();
    assert!(
        !everything.contains(PLAIN_OF_ENCRYPTED),
        "decrypted key in callbacks"
    );
    exec.assert_logs_exclude(PLAIN_OF_ENCRYPTED);
}
