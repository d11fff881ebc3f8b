//! Every child is owned (issue: reliability II, item 1): the executor is a child subreaper and
//! reaps the orphans it adopts, but it must never take the exit status of a child someone in
//! the executor waits for (git, npm, the agents). Production's trigger is an agent tool that
//! leaves short-lived background processes behind while other tasks clone: every adopted
//! orphan's exit wakes the reaper, and a reaper that takes "any zombie it does not know" steals
//! git's status (`git config: No child processes (os error 10)`).
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::Duration;

use common::test_backend::GitServer;
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "churn-token-1";
/// Concurrent cloning tasks per round.
const CLONERS: i64 = 10;
/// Rounds of clones beside the churn (each round uses new task ids, so each clones anew).
const ROUNDS: i64 = 3;

fn clone_task(task_id: i64, url: &str) -> Value {
    json!({
        "task_id": task_id, "subtask_id": 1, "task_title": "T", "subtask_title": "S",
        "git_url": url, "branch_name": "feature", "git_domain": "127.0.0.1", "git_repo": "org/src",
        "user": {"id": 1, "name": "u", "user_name": "alice", "git_token": TOKEN,
                 "git_login": "octo", "git_id": "9"},
        "bot": [{"id": 11, "name": "coder", "shell_type": "ClaudeCode"}],
        "prompt": "FAKE:sh:git status --short >/dev/null\ncloned",
    })
}

/// A tool that starts short-lived background processes (each orphaned at once, so adopted by
/// the executor) until `stop` exists, at most `max` of them.
fn churn_prompt(started: &std::path::Path, stop: &std::path::Path, max: u32) -> String {
    format!(
        "FAKE:sh:touch {}; i=0; while [ ! -e {} ] && [ $i -lt {max} ]; do (sleep 0.01 &) ; (true &) ; i=$((i+1)); done; echo churned $i\nchurn",
        started.display(),
        stop.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clones_beside_orphan_churn_never_lose_their_exit_status() {
    let server = GitServer::start("alice", TOKEN);
    server.create_repo("src", &[("README.md", "hello\n")], &["feature"]);
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let stop = exec.tmp_root().join("stop-churn");
    let started = exec.tmp_root().join("churn-started");

    // The churn runs for the whole test (bounded by its count).
    post_task(&exec, 1, 1, &churn_prompt(&started, &stop, 20_000)).await;
    let churning = wait_until(Duration::from_secs(15), || started.exists()).await;
    assert!(churning, "the churn never started\n{}", exec.logs_tail(30));

    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let ids: Vec<i64> = (0..CLONERS).map(|i| 100 + round * CLONERS + i).collect();
        for id in &ids {
            let (status, reply) = exec
                .post_json("/api/tasks/execute", &clone_task(*id, &server.url("src")))
                .await;
            assert_eq!(status, 200, "{reply}");
        }
        for id in &ids {
            let done = rx.wait_terminal(*id, 1, Duration::from_secs(60)).await;
            if done["status"] != "COMPLETED" {
                failures.push(format!(
                    "task {id}: {} {}",
                    done["status"], done["error_message"]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} clones failed beside the orphan churn:\n{}\n{}",
        failures.len(),
        CLONERS * ROUNDS,
        failures.join("\n"),
        exec.logs_tail(20)
    );
    std::fs::write(&stop, "stop").unwrap();
    let churn = rx.wait_terminal(1, 1, Duration::from_secs(60)).await;
    assert_eq!(churn["status"], "COMPLETED", "{churn}");
    // Nothing adopted is left unreaped.
    common::assert_reaped(exec.pid(), Duration::from_secs(10)).await;
}
