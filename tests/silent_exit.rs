//! Silent exit (contract §5.7) end to end: a tool result carrying
//! `{"__silent_exit__": true, "reason": …}` ends the subtask COMPLETED with
//! `result.silent_exit: true` and `result.silent_exit_reason`, exactly once. The tool is a real
//! stdio MCP server (`agno/mcp_silent_exit.py`, as Wegent's system MCP server): Agno calls it
//! through agno's MCP client (the mock model asks for it) and the run stops there; the real
//! pinned Claude Code CLI calls it through `--mcp-config` (the mock Anthropic API asks for
//! `mcp__wegent__silent_exit`) and reports the result in a stream-json `user` `tool_result`
//! line; the fake CLI does the same through a one-shot MCP client run as its Bash tool.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::agno_env::agno_python;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn silent_server() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agno/mcp_silent_exit.py")
}

fn terminals(rx: &CallbackReceiver, task_id: i64, subtask_id: i64) -> Vec<Value> {
    rx.for_subtask(task_id, subtask_id)
        .into_iter()
        .filter(is_terminal)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_a_silent_exit_tool_result_marks_the_completed_result() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let call = format!(
        "FAKE:sh:{} {} --call 'all normal' 2>/dev/null",
        agno_python().display(),
        silent_server().display()
    );
    // Python starting an MCP client and server takes seconds on a loaded machine.
    post_task(&exec, 91, 1, &format!("check the status\n{call}")).await;
    let done = rx.wait_terminal(91, 1, WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(40)
    );
    assert_eq!(done["result"]["silent_exit"], true, "{}", done["result"]);
    assert_eq!(done["result"]["silent_exit_reason"], "all normal");
    assert_eq!(terminals(&rx, 91, 1).len(), 1, "{}", rx.dump());
    // The next subtask of the task is an ordinary one again.
    let next = run_task(&exec, &rx, 91, 2, "and now?").await;
    assert_eq!(next["status"], "COMPLETED", "{next}");
    assert!(
        next["result"].get("silent_exit").is_none(),
        "{}",
        next["result"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agno_a_silent_exit_mcp_tool_stops_the_run_and_marks_the_result() {
    let mock = MockOpenAi::start();
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("AGNO_PYTHON", agno_python().display().to_string()),
    )
    .await;
    let python = agno_python().display().to_string();
    let bot = json!({"name": "Watcher", "shell_type": "Agno", "system_prompt": "You watch.",
        "agent_config": {"env": {"model": "openai", "model_id": "mock-1", "api_key": "sk-agno-test",
                                 "base_url": mock.base_url()}},
        "mcp_servers": {"wegent": {"type": "stdio", "command": python,
                                   "args": [silent_server().display().to_string()]}}});
    let task = json!({"task_id": 92, "subtask_id": 1, "task_title": "T", "subtask_title": "S",
                      "type": "subscription", "bot": [bot], "prompt": "TOOL check the feed"});
    let (status, reply) = exec.post_json("/api/tasks/execute", &task).await;
    assert_eq!(status, 200, "{reply}");
    let done = rx.wait_terminal(92, 1, WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(60)
    );
    assert_eq!(done["result"]["silent_exit"], true, "{}", done["result"]);
    assert_eq!(done["result"]["silent_exit_reason"], "nothing to report");
    // The run stopped at the tool: the model was never asked to go on with its result.
    assert_eq!(mock.request_count(), 1, "{}", mock.dump());
    assert_eq!(terminals(&rx, 92, 1).len(), 1, "{}", rx.dump());
    // The client is ready for the next subtask.
    let task2 = json!({"task_id": 92, "subtask_id": 2, "bot": [task["bot"][0].clone()],
                       "prompt": "hello again"});
    let (status, _) = exec.post_json("/api/tasks/execute", &task2).await;
    assert_eq!(status, 200);
    let next = rx.wait_terminal(92, 2, WAIT).await;
    assert_eq!(
        next["status"],
        "COMPLETED",
        "{next}\n{}",
        exec.logs_tail(60)
    );
    assert!(
        next["result"].get("silent_exit").is_none(),
        "{}",
        next["result"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_cli_a_silent_exit_mcp_tool_marks_the_completed_result() {
    let mock = MockAnthropic::start();
    let rx = CallbackReceiver::start();
    let exec = start_real(&rx, &mock).await;
    let python = agno_python().display().to_string();
    let task = json!({"task_id": 93, "subtask_id": 1, "task_title": "T", "subtask_title": "S",
        "type": "subscription",
        "bot": [{"id": 1, "shell_type": "ClaudeCode", "system_prompt": "You watch.",
                 "mcp_servers": {"wegent": {"type": "stdio", "command": python,
                                            "args": [silent_server().display().to_string()]}}}],
        "prompt": "check the feed\nMOCK_TOOL:MCP:mcp__wegent__silent_exit:{\"reason\": \"feed is quiet\"}"});
    let (status, reply) = exec.post_json("/api/tasks/execute", &task).await;
    assert_eq!(status, 200, "{reply}");
    let done = rx.wait_terminal(93, 1, WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(60)
    );
    assert_eq!(
        done["result"]["silent_exit"],
        true,
        "{}\n{}",
        done["result"]["value"],
        exec.logs_tail(60)
    );
    assert_eq!(done["result"]["silent_exit_reason"], "feed is quiet");
    assert_eq!(terminals(&rx, 93, 1).len(), 1, "{}", rx.dump());
}
