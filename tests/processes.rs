//! No leaked processes: closing a session ends every descendant of its agent — including tool
//! processes in their own sessions, daemons re-parented away from the CLI and processes that
//! ignore SIGTERM — and the executor (a child subreaper) leaves no zombie behind.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;

/// A CLI that leaves a setsid'd orphan and a double-forked daemon (both ignore SIGTERM), and
/// itself ignores SIGTERM, then keeps its turn running.
const ESCAPER: &str =
    "FAKE:spawn_orphan\nFAKE:spawn_daemon\nFAKE:ignore_sigterm\nFAKE:sleep:60000\nescape";

const GRACE: &[(&str, &str)] = &[
    ("SESSION_EOF_GRACE_MS", "100"),
    ("SESSION_TERM_GRACE_MS", "300"),
];

/// Starts escapers for `ids` and waits until each has its three processes.
async fn escapers(exec: &Executor, ids: &[i64]) {
    for id in ids {
        post_task(exec, *id, 1, ESCAPER).await;
    }
    for id in ids {
        let dir = exec.workspace().join(id.to_string());
        let ok = wait_until(Duration::from_secs(15), || processes_in(&dir).len() >= 3).await;
        assert!(
            ok,
            "task {id}: {}\n{}",
            describe(&processes_in(&dir)),
            exec.logs_tail(30)
        );
    }
}

async fn assert_clean(exec: &Executor) {
    let left = processes_in(exec.workspace());
    assert!(left.is_empty(), "left behind: {}", describe(&left));
    let pid = exec.pid();
    let no_zombies = wait_until(Duration::from_secs(5), || {
        zombie_children_of(pid).is_empty()
    })
    .await;
    assert!(no_zombies, "zombies: {:?}", zombie_children_of(pid));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_session_ends_escaped_and_daemonised_descendants() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, GRACE).await;
    escapers(&exec, &[1]).await;
    let (status, _) = exec.delete("/api/tasks/session?task_id=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_clean(&exec).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn close_claude_and_close_all_end_every_descendant() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, GRACE).await;
    escapers(&exec, &[2, 3]).await;
    let (status, body) = exec.delete("/api/tasks/claude/sessions").await;
    assert_eq!((status, body["closed"].as_i64()), (StatusCode::OK, Some(2)));
    assert_clean(&exec).await;
    escapers(&exec, &[4, 5]).await;
    let (status, body) = exec.delete("/api/tasks/sessions/close").await;
    assert_eq!((status, body["closed"].as_i64()), (StatusCode::OK, Some(2)));
    assert_clean(&exec).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_cli_takes_its_escaped_tools_with_it() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, GRACE).await;
    let done = run_task(
        &exec,
        &rx,
        6,
        1,
        "FAKE:spawn_orphan\nFAKE:spawn_daemon\nFAKE:crash:9\nboom",
    )
    .await;
    assert_eq!(done["status"], "FAILED");
    let dir = exec.workspace().join("6");
    let gone = wait_until(Duration::from_secs(10), || processes_in(&dir).is_empty()).await;
    assert!(gone, "left behind: {}", describe(&processes_in(&dir)));
    assert_clean(&exec).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_to_the_executor_ends_escaped_descendants_too() {
    let rx = CallbackReceiver::start();
    let mut exec = start_fake(&rx, GRACE).await;
    escapers(&exec, &[7]).await;
    let ws = exec.workspace().to_path_buf();
    assert_eq!(
        exec.terminate().await.code(),
        Some(0),
        "{}",
        exec.logs_tail(30)
    );
    let left = processes_in(&ws);
    assert!(left.is_empty(), "left behind: {}", describe(&left));
}
