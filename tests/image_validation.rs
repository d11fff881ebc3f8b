//! The image validator end to end (contract §5.6): a `type: "validation"` task, over HTTP and
//! in `TASK_INFO` at start-up, checks the machine's real tools; a too-old fake `python3` early in
//! `PATH` fails the python check; an unknown shell type fails the task. Every callback carries
//! `result.validation_id` (executor_manager drops validation callbacks without it) and each
//! subtask gets exactly one terminal callback. Expected versions come from running the same
//! commands here, so the test holds on any machine.
#![allow(clippy::disallowed_methods)] // a test process: it runs the tools it compares against

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn validation_task(task_id: i64, shell_type: &str, validation_id: &str) -> Value {
    json!({"task_id": task_id, "subtask_id": task_id * 10, "task_title": "validate",
           "subtask_title": "validate", "type": "validation",
           "validation_params": {"shell_type": shell_type, "image": "registry.example/custom:1",
                                 "shell_name": "my-shell", "validation_id": validation_id}})
}

/// A directory with executable scripts `name` printing `output`, for the front of `PATH`.
fn script_dir(scripts: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, output) in scripts {
        let p = dir.path().join(name);
        write_executable(&p, &format!("#!/bin/sh\necho '{output}'\n"));
    }
    dir
}

fn path_with(front: &Path) -> String {
    format!(
        "{}:{}",
        front.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// What the validator should find for `command` under `path`: `(version, passes)`, or `None`
/// when the tool is missing. Computed here from the tool itself.
fn expected(
    path: &str,
    command: &str,
    prefix: &str,
    min: Option<(u64, u64, u64)>,
) -> Option<(String, bool)> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PATH", path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() || text.to_lowercase().contains("not found") {
        return None;
    }
    let at = text.find(prefix)? + prefix.len();
    let v: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let nums: Vec<u64> = v
        .split('.')
        .take(3)
        .filter_map(|p| p.parse().ok())
        .collect();
    let found = (nums[0], nums[1], nums[2]);
    Some((
        format!("{}.{}.{}", found.0, found.1, found.2),
        min.is_none_or(|m| found >= m),
    ))
}

fn check<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["validation_result"]["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {result}"))
}

fn assert_check(result: &Value, name: &str, want: &Option<(String, bool)>) {
    let c = check(result, name);
    match want {
        Some((version, pass)) => {
            assert_eq!(c["version"], version.as_str(), "{name}: {c}");
            assert_eq!(
                c["status"],
                if *pass { "pass" } else { "fail" },
                "{name}: {c}"
            );
        }
        None => {
            assert_eq!(c["status"], "fail", "{name}: {c}");
            assert_eq!(c["message"], "Command failed or not found", "{name}: {c}");
        }
    }
}

/// Every callback of the subtask carries the validation id; exactly one is terminal; the
/// first is the RUNNING/50 `stage: running` one. Returns them.
fn assert_shape(rx: &CallbackReceiver, task_id: i64, validation_id: &str) -> Vec<Value> {
    let cbs = rx.for_subtask(task_id, task_id * 10);
    for cb in &cbs {
        assert_eq!(cb["result"]["validation_id"], validation_id, "{cb}");
        assert_eq!(cb["task_type"], "validation", "{cb}");
    }
    assert_eq!(cbs[0]["status"], "RUNNING", "{cbs:?}");
    assert_eq!(cbs[0]["progress"], 50, "{cbs:?}");
    assert_eq!(cbs[0]["result"]["stage"], "running", "{cbs:?}");
    let terminals = cbs.iter().filter(|c| is_terminal(c)).count();
    assert_eq!(terminals, 1, "exactly one terminal: {cbs:#?}");
    cbs
}

async fn start(rx: &CallbackReceiver, path: Option<String>, extra: &[(&str, String)]) -> Executor {
    let mut opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("TASK_INFO_TERMINAL_REPEAT_SECS", "0");
    if let Some(p) = path {
        opts = opts.env("PATH", p);
    }
    for (k, v) in extra {
        opts = opts.env(*k, v.clone());
    }
    Executor::start(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_validation_over_http_reports_the_machines_tools() {
    // A `claude` on PATH (the image's CLI); node and python3 are the machine's own.
    let bin = script_dir(&[("claude", "2.0.31 (Claude Code)")]);
    let path = path_with(bin.path());
    let rx = CallbackReceiver::start();
    let exec = start(&rx, Some(path.clone()), &[]).await;
    let (status, reply) = exec
        .post_json(
            "/api/tasks/execute",
            &validation_task(61, "ClaudeCode", "val-61"),
        )
        .await;
    assert_eq!(status, 200, "{reply}\n{}", exec.logs_tail(40));
    // Synchronous agent: the answer is the final status.
    assert_eq!(reply["status"], "COMPLETED", "{reply}");
    assert_eq!(reply["progress"], 100, "{reply}");
    assert_eq!(reply["message"], "Task execution status  : COMPLETED");
    let done = rx.wait_terminal(61, 610, WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["error_message"], "Image validation completed");
    let result = &done["result"];
    assert_eq!(result["stage"], "completed", "{result}");
    let node = expected(&path, "node --version", "v", Some((20, 0, 0)));
    let claude = expected(
        &path,
        "claude --version 2>/dev/null || echo 'not found'",
        "",
        None,
    );
    let python = expected(&path, "python3 --version", "Python ", Some((3, 12, 0)));
    assert_check(result, "node", &node);
    assert_check(result, "claude-code", &claude);
    assert_check(result, "python", &python);
    let valid = [&node, &claude, &python]
        .iter()
        .all(|w| w.as_ref().is_some_and(|(_, pass)| *pass));
    let vr = &result["validation_result"];
    assert_eq!(vr["valid"], valid, "{vr}");
    assert_eq!(vr["checks"].as_array().map(Vec::len), Some(3), "{vr}");
    assert_eq!(vr["errors"], json!([]));
    assert_eq!(vr["shell_name"], "my-shell");
    assert_eq!(vr["shell_type"], "ClaudeCode");
    assert_eq!(vr["image"], "registry.example/custom:1");

    let cbs = assert_shape(&rx, 61, "val-61");
    let running: Vec<(i64, String, Value)> = cbs
        .iter()
        .filter(|c| c["result"]["stage"] == "running_checks")
        .map(|c| {
            (
                c["progress"].as_i64().unwrap_or(-1),
                c["error_message"].as_str().unwrap_or_default().to_string(),
                c["result"]["current_check"].clone(),
            )
        })
        .collect();
    assert_eq!(
        running,
        vec![
            (70, "Running dependency checks".into(), Value::Null),
            (70, "Checking node".into(), json!("node")),
            (78, "Checking claude-code".into(), json!("claude-code")),
            (86, "Checking python".into(), json!("python")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agno_validation_in_task_info_runs_at_start_up() {
    let rx = CallbackReceiver::start();
    let task = validation_task(62, "Agno", "val-62").to_string();
    let mut exec = start(&rx, None, &[("TASK_INFO", task)]).await;
    let done = rx.wait_terminal(62, 620, WAIT).await;
    assert!(
        exec.is_running(),
        "the executor keeps serving after TASK_INFO"
    );
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(40)
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let python = expected(&path, "python3 --version", "Python ", Some((3, 12, 0)));
    let sqlite = expected(&path, "sqlite3 --version", "", Some((3, 50, 0)));
    assert_check(&done["result"], "python", &python);
    assert_check(&done["result"], "sqlite", &sqlite);
    let valid = [&python, &sqlite]
        .iter()
        .all(|w| w.as_ref().is_some_and(|(_, pass)| *pass));
    assert_eq!(done["result"]["validation_result"]["valid"], valid);
    assert_shape(&rx, 62, "val-62");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_old_python3_first_on_path_fails_the_python_check() {
    let bin = script_dir(&[("python3", "Python 3.9.1")]);
    let rx = CallbackReceiver::start();
    let exec = start(&rx, Some(path_with(bin.path())), &[]).await;
    let (status, reply) = exec
        .post_json("/api/tasks/execute", &validation_task(63, "Agno", "val-63"))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "COMPLETED", "{reply}");
    let done = rx.wait_terminal(63, 630, WAIT).await;
    let py = check(&done["result"], "python");
    assert_eq!(
        py,
        &json!({"name": "python", "version": "3.9.1", "status": "fail",
                "message": "Version 3.9.1 < required 3.12.0"})
    );
    assert_eq!(done["result"]["validation_result"]["valid"], false);
    assert_shape(&rx, 63, "val-63");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_shell_type_fails_clearly_with_the_validation_id() {
    let rx = CallbackReceiver::start();
    let exec = start(&rx, None, &[]).await;
    let (status, reply) = exec
        .post_json("/api/tasks/execute", &validation_task(64, "Dify", "val-64"))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "FAILED", "{reply}");
    assert_eq!(reply["progress"], 0, "{reply}");
    let done = rx.wait_terminal(64, 640, WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let msg = done["error_message"].as_str().unwrap_or_default();
    assert!(msg.contains("unknown shell_type 'Dify'"), "{msg}");
    assert_eq!(done["result"]["stage"], "failed", "{done}");
    assert_eq!(done["result"]["validation_result"]["valid"], false);
    assert_shape(&rx, 64, "val-64");
    // No check ran: nothing between the first RUNNING and the terminal.
    assert_eq!(rx.for_subtask(64, 640).len(), 2, "{}", rx.dump());
}
