//! Issue 17, as a hostile task author would probe the executor: its credentials stay its own,
//! the agent's environment is the operator's minus the executor's secrets, agents can run as
//! another user and cannot read the executor's memory, every outgoing text is masked, tasks
//! cannot clone local repositories, long attachment names are shortened, idle sessions expire.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::test_backend::{Backend, GitServer};
use common::*;
use serde_json::{json, Value};

/// The executor's own Anthropic key in these tests (no secret-looking shape on purpose: only
/// exact-value masking can hide it).
const EXEC_KEY: &str = "operator-owned-key-4711";
/// The executor's bearer token.
const EXEC_TOKEN: &str = "executor-bearer-token-0815";

/// POSTs a task with the executor's bearer token.
async fn post_auth(exec: &Executor, body: &Value) {
    let resp = exec
        .client()
        .post(exec.url("/api/tasks/execute"))
        .bearer_auth(EXEC_TOKEN)
        .json(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200, "{}", exec.logs_tail(30));
}

fn bot_task(task_id: i64, prompt: &str, env: Value) -> Value {
    json!({"task_id": task_id, "subtask_id": 1, "prompt": prompt,
           "bot": [{"shell_type": "ClaudeCode", "agent_config": {"env": env}}]})
}

/// Every header value of every request the mock saw.
fn all_header_values(mock: &MockAnthropic) -> Vec<String> {
    mock.all_requests()
        .into_iter()
        .flat_map(|r| r.headers.into_iter().map(|(k, v)| format!("{k}: {v}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_endpoint_never_receives_the_executors_key() {
    let (own, evil) = (MockAnthropic::start(), MockAnthropic::start());
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .real_claude(&own)
            .env("ANTHROPIC_API_KEY", EXEC_KEY)
            .env("EXECUTOR_AUTH_TOKEN", EXEC_TOKEN),
    )
    .await;
    // (a) its own key and its own endpoint: only the task key reaches the endpoint.
    let env = json!({"model": "claude", "model_id": "m", "api_key": "task-key-1",
                     "base_url": format!("{}/v1", evil.url())});
    post_auth(&exec, &bot_task(71, "hello", env)).await;
    let done = rx.wait_terminal(71, 1, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    // (b) an executor secret as a placeholder, (c) an endpoint and no key at all.
    let env = json!({"model": "claude", "model_id": "m", "api_key": "${EXECUTOR_AUTH_TOKEN}",
                     "base_url": evil.url()});
    post_auth(&exec, &bot_task(72, "placeholder", env)).await;
    let env = json!({"ANTHROPIC_BASE_URL": evil.url()});
    post_auth(&exec, &bot_task(73, "no key", env)).await;
    for t in [72, 73] {
        let done = rx.wait_terminal(t, 1, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "FAILED", "{t}: {done}");
        let msg = done["error_message"].as_str().unwrap_or("");
        assert!(msg.contains("API key not configured"), "{t}: {msg}");
    }
    let headers = all_header_values(&evil);
    assert!(!headers.is_empty(), "the task's endpoint was used");
    for h in &headers {
        assert!(
            !h.contains(EXEC_KEY) && !h.contains(EXEC_TOKEN),
            "a task endpoint saw the executor's secret: {h}"
        );
    }
    assert!(
        headers
            .iter()
            .any(|h| h == "authorization: Bearer task-key-1"),
        "{headers:?}"
    );
    // (d) no key, no endpoint: the executor's key serves the task, at the operator's endpoint.
    post_auth(&exec, &bot_task(74, "operator", json!({}))).await;
    let done = rx.wait_terminal(74, 1, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(all_header_values(&own)
        .iter()
        .any(|h| h == &format!("x-api-key: {EXEC_KEY}")));
}

/// The reply of a fake-CLI turn that reports `vars`.
async fn env_report(exec: &Executor, rx: &CallbackReceiver, task_id: i64, vars: &[&str]) -> String {
    let prompt: Vec<String> = vars.iter().map(|v| format!("FAKE:env:{v}")).collect();
    let done = run_task(exec, rx, task_id, 1, &prompt.join("\n")).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    done["result"]["value"].as_str().unwrap_or("").to_string()
}

const AES_KEY: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn the_agent_inherits_the_executor_environment_minus_the_deny_list() {
    let rx = CallbackReceiver::start();
    let extra = [
        ("JAVA_HOME", "/opt/jdk-21"),
        ("PIP_INDEX_URL", "http://mirror.local/simple"),
        ("GIT_TOKEN_AES_KEY", AES_KEY),
        ("GIT_TOKEN_AES_IV", "0123456789abcdef"),
        ("GIT_AUTHOR_NAME", "operator"),
    ];
    let exec = start_fake(&rx, &extra).await;
    let vars = [
        "JAVA_HOME",
        "PIP_INDEX_URL",
        "GIT_AUTHOR_NAME",
        "GIT_TOKEN_AES_KEY",
        "GIT_TOKEN_AES_IV",
        "CALLBACK_URL",
    ];
    let got = env_report(&exec, &rx, 81, &vars).await;
    for want in [
        "env JAVA_HOME=/opt/jdk-21",
        "env PIP_INDEX_URL=http://mirror.local/simple",
        "env GIT_AUTHOR_NAME=operator",
        "env GIT_TOKEN_AES_KEY=<unset>",
        "env GIT_TOKEN_AES_IV=<unset>",
        "env CALLBACK_URL=<unset>",
    ] {
        assert!(got.contains(want), "{want} in {got}");
    }
    drop(exec);
    let rx = CallbackReceiver::start();
    let mut strict = extra.to_vec();
    strict.push(("AGENT_ENV_MODE", "strict"));
    let exec = start_fake(&rx, &strict).await;
    let got = env_report(&exec, &rx, 82, &vars).await;
    for want in [
        "env JAVA_HOME=<unset>",
        "env GIT_AUTHOR_NAME=operator",
        "env GIT_TOKEN_AES_KEY=<unset>",
    ] {
        assert!(got.contains(want), "strict: {want} in {got}");
    }
}

/// A wrapper that runs the executor as `nobody` (its temporary directories handed over first).
fn as_nobody_wrapper(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("as-nobody.sh");
    let script = format!(
        "#!/bin/sh\nchown -R 65534:65534 \"$(dirname \"$WORKSPACE_ROOT\")\"\n\
         exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all {} \"$@\"\n",
        env!("CARGO_BIN_EXE_executor")
    );
    write_executable(&path, &script);
    path
}

#[tokio::test]
async fn a_process_of_the_executors_own_user_cannot_read_its_environment() {
    let scripts = tempfile::tempdir().unwrap();
    let exec = Executor::start(
        ExecutorOptions::new()
            .program(as_nobody_wrapper(scripts.path()))
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("EXECUTOR_AUTH_TOKEN", EXEC_TOKEN),
    )
    .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", exec.pid())).unwrap();
    assert!(status.contains("Uid:\t65534"), "{status}");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(format!("/proc/{}/environ", exec.pid()))
        .output()
        .expect("setpriv");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(EXEC_TOKEN),
        "a same-uid process read the executor's environment"
    );
}

#[tokio::test]
async fn agents_run_as_the_agent_user() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[
            ("EXECUTOR_AUTH_TOKEN", EXEC_TOKEN),
            ("AGENT_UID", "65534"),
            ("AGENT_GID", "65534"),
        ],
    )
    .await;
    // The temporary root above the workspace is 0700; an agent user must traverse it.
    let tmp = exec.tmp_root().to_path_buf();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o711)).unwrap();
    post_auth(&exec, &seed_task(91, 1, "FAKE:sleep:60000")).await;
    let ws = exec.workspace().join("91");
    let mut pid = None;
    wait_until(FAKE_WAIT, || {
        pid = processes_in(&ws).into_iter().next();
        pid.is_some()
    })
    .await;
    let pid = pid.unwrap_or_else(|| panic!("no agent in {}\n{}", ws.display(), exec.logs_tail(30)));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(groups.trim(), "Groups:", "supplementary groups dropped");
    let meta = std::fs::metadata(&ws).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
    // As that user, the executor's environment stays unreadable.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(format!("/proc/{}/environ", exec.pid()))
        .output()
        .expect("setpriv");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(EXEC_TOKEN));
}

#[tokio::test]
async fn every_outgoing_text_is_masked() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[("ANTHROPIC_API_KEY", EXEC_KEY), ("LOG_LEVEL", "debug")],
    )
    .await;
    let task_key = "task-model-key-9931";
    let body = json!({"task_id": 95, "subtask_id": 1,
        "prompt": format!("keys {EXEC_KEY} {task_key} sk-ant-api03-abcdefghijklmnop ANTHROPIC_AUTH_TOKEN=abcd1234"),
        "bot": [{"shell_type": "ClaudeCode", "agent_config": {"env": {"api_key": task_key,
                 "model": "claude", "model_id": "m"}}}]});
    exec.post_json("/api/tasks/execute", &body).await;
    let done = rx.wait_terminal(95, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    // A token in the clone URL's query: the Cloning callback, the FAILED message, the log.
    let body = json!({"task_id": 96, "subtask_id": 1, "prompt": "x",
        "git_url": "http://127.0.0.1:9/org/r.git?private_token=glquery-secret-77",
        "bot": [{"shell_type": "ClaudeCode"}]});
    exec.post_json("/api/tasks/execute", &body).await;
    let failed = rx.wait_terminal(96, 1, FAKE_WAIT).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let all = serde_json::to_string(&rx.callbacks()).unwrap();
    for secret in [
        EXEC_KEY,
        task_key,
        "abcdefghijklmnop",
        "abcd1234",
        "glquery-secret-77",
    ] {
        assert!(!all.contains(secret), "{secret} in a callback: {all}");
        exec.assert_logs_exclude(secret);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn local_clone_sources_are_refused_unless_listed() {
    let server = GitServer::start("alice", "tok");
    server.create_repo("src", &[("README.md", "hi")], &[]);
    let bare = server.bare_path("src");
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let urls = [
        format!("file://{}", bare.display()),
        bare.display().to_string(),
    ];
    for (i, url) in urls.iter().enumerate() {
        let t = 100 + i as i64;
        let body = json!({"task_id": t, "subtask_id": 1, "prompt": "x", "git_url": url,
                          "bot": [{"shell_type": "ClaudeCode"}]});
        exec.post_json("/api/tasks/execute", &body).await;
        let done = rx.wait_terminal(t, 1, FAKE_WAIT).await;
        assert_eq!(done["status"], "FAILED", "{url}: {done}");
        let msg = done["error_message"].as_str().unwrap_or("");
        assert!(msg.contains("local clone sources"), "{msg}");
        assert!(!exec.workspace().join(format!("{t}/src")).exists());
    }
    drop(exec);
    let rx = CallbackReceiver::start();
    let dir = bare.parent().unwrap().display().to_string();
    let exec = start_fake(&rx, &[("ALLOW_LOCAL_CLONE_DIRS", dir.as_str())]).await;
    let body = json!({"task_id": 110, "subtask_id": 1, "prompt": "x", "git_url": urls[0],
                      "bot": [{"shell_type": "ClaudeCode"}]});
    exec.post_json("/api/tasks/execute", &body).await;
    let done = rx.wait_terminal(110, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(exec.workspace().join("110/src/README.md").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attachment_name_over_255_bytes_is_shortened() {
    let auth = "jwt-attach-auth";
    let backend = Backend::start(auth);
    backend.add_attachment("7", b"notes\n".to_vec());
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("TASK_API_DOMAIN", &backend.base_url())]).await;
    let name = format!("{}.txt", "n".repeat(300));
    let task = json!({"task_id": 120, "subtask_id": 1, "auth_token": auth,
        "bot": [{"shell_type": "ClaudeCode"}],
        "attachments": [{"id": 7, "original_filename": name, "file_size": 6, "mime_type": "text/plain"}],
        "prompt": "read [attachment:7]"});
    exec.post_json("/api/tasks/execute", &task).await;
    let done = rx.wait_terminal(120, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let dir = exec.workspace().join("120/120:executor:attachments/1");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].len() <= 255 && names[0].ends_with(".txt"),
        "{names:?}"
    );
    let prompt = done["result"]["value"].as_str().unwrap_or("");
    assert!(prompt.contains("Attachment downloaded to:"), "{prompt}");
}

#[tokio::test]
async fn an_idle_session_expires_and_its_conversation_resumes() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("SESSION_IDLE_EXPIRY_SECS", "1")]).await;
    let first = run_task(&exec, &rx, 130, 1, "remember me").await;
    assert_eq!(first["status"], "COMPLETED", "{first}");
    exec.wait_for_log("task 130: session idle longer", Duration::from_secs(20))
        .await;
    let (_, sessions) = exec.get("/api/tasks/sessions").await;
    assert_eq!(sessions["total"], 0, "{sessions}");
    let second = run_task(&exec, &rx, 130, 2, "FAKE:argv").await;
    assert_eq!(second["status"], "COMPLETED", "{second}");
    let argv = second["result"]["value"].as_str().unwrap_or("");
    assert!(
        argv.contains("--resume="),
        "the conversation resumes: {argv}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_user_keeps_working_in_its_clone_across_subtasks() {
    let server = GitServer::start("alice", "git-tok-agent-user");
    server.create_repo("src", &[("README.md", "hi\n")], &[]);
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("AGENT_UID", "65534")]).await;
    let tmp = exec.tmp_root().to_path_buf();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o711)).unwrap();
    for sub in [1, 2] {
        let body = json!({"task_id": 140, "subtask_id": sub, "prompt": format!("turn {sub}"),
            "git_url": server.url("src"), "git_domain": "127.0.0.1", "git_repo": "org/src",
            "user": {"user_name": "alice", "git_token": "git-tok-agent-user"},
            "bot": [{"shell_type": "ClaudeCode"}]});
        exec.post_json("/api/tasks/execute", &body).await;
        let done = rx.wait_terminal(140, sub, FAKE_WAIT).await;
        assert_eq!(done["status"], "COMPLETED", "subtask {sub}: {done}");
    }
    let clone = exec.workspace().join("140/src");
    let meta = std::fs::metadata(clone.join(".git")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
}

/// Logs go through the same masking pass as callbacks: a task secret echoed in any log line
/// (here, a branch name refused as option-like is logged with the error) shows as `***`.
#[tokio::test(flavor = "multi_thread")]
async fn task_secrets_echoed_into_log_lines_are_masked() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let token = "glpat-logline-secret-6612";
    let body = json!({"task_id": 98, "subtask_id": 1, "prompt": "x",
        "git_url": "http://127.0.0.1:9/org/r.git", "branch_name": format!("--upload-pack={token}"),
        "user": {"git_token": token, "git_login": "octo"},
        "bot": [{"shell_type": "ClaudeCode"}]});
    exec.post_json("/api/tasks/execute", &body).await;
    let done = rx.wait_terminal(98, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    exec.wait_for_log("invalid branch name", FAKE_WAIT).await;
    exec.assert_logs_exclude(token);
    assert!(!done.to_string().contains(token), "{done}");
}
