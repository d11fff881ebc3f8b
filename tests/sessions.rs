//! The session routes (contract §2.5–2.7) doing what the original meant: the listing shows
//! every live session and what it runs, deleting one or all sessions ends their processes (no
//! strays, no zombies) and fails what was running exactly once, and subtasks posted to a busy
//! task wait their turn in order on the same process.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// Waits for the callback that says the subtask's user message went to a live CLI process
/// (RUNNING, progress 60).
async fn wait_sent(rx: &CallbackReceiver, task_id: i64, subtask_id: i64) {
    rx.wait_for(WAIT, |cbs| {
        cbs.iter().any(|c| {
            is_subtask(c, task_id, subtask_id) && c["status"] == "RUNNING" && c["progress"] == 60
        })
    })
    .await;
}

async fn list(exec: &Executor) -> Value {
    let (status, body) = exec.get("/api/tasks/sessions").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "GET /api/tasks/sessions: {body}\n{}",
        exec.logs_tail(50)
    );
    body
}

fn row(listing: &Value, task_id: i64) -> Option<Value> {
    listing["sessions"]
        .as_array()?
        .iter()
        .find(|r| json_i64(&r["task_id"]) == Some(task_id))
        .cloned()
}

/// Polls the listing (every 20 ms, like `wait_until`) until `pred` holds; returns it.
async fn wait_listing(exec: &Executor, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listing = list(exec).await;
        if pred(&listing) {
            return listing;
        }
        if Instant::now() >= deadline {
            panic!(
                "listing never showed {what} within 10 s; last listing: {listing}\n{}",
                exec.logs_tail(50)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn listing_shows_every_session_with_its_fields() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let empty = list(&exec).await;
    assert_eq!(empty, json!({"total": 0, "sessions": []}));

    for t in [101, 102] {
        let done = run_task(&exec, &rx, t, 1, "hello").await;
        assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    }
    let listing = wait_listing(&exec, "two idle sessions", |l| {
        l["sessions"]
            .as_array()
            .is_some_and(|s| s.len() == 2 && s.iter().all(|r| r["status"] == "idle"))
    })
    .await;
    assert_eq!(listing["total"], 2, "{listing}");
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for t in [101, 102] {
        let r = row(&listing, t).unwrap_or_else(|| panic!("no row for task {t}: {listing}"));
        assert_eq!(r["agent_type"], "ClaudeCode", "{r}");
        assert!(
            matches!(r["status"].as_str(), Some("idle" | "running")),
            "{r}"
        );
        let created = r["created_at"]
            .as_f64()
            .unwrap_or_else(|| panic!("created_at must be a number: {r}"));
        assert!(
            created >= before - 1.0 && created <= after + 1.0,
            "created_at {created} is not between {before} and {after}: {r}"
        );
        assert!(
            r.get("current_subtask_id").is_some(),
            "current_subtask_id missing: {r}"
        );
        assert!(r["current_subtask_id"].is_null(), "idle session: {r}");
        assert_eq!(r["queued"], 0, "{r}");
        assert_eq!(r["completed_subtasks"], 1, "{r}");
    }
}

#[tokio::test]
async fn listing_shows_a_running_subtask_and_its_queue() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    post_task(&exec, 201, 7, "FAKE:sleep:30000").await;
    let listing = wait_listing(&exec, "task 201 running subtask 7", |l| {
        row(l, 201).is_some_and(|r| r["status"] == "running")
    })
    .await;
    let r = row(&listing, 201).unwrap();
    assert_eq!(r["current_subtask_id"], 7, "{r}");
    assert_eq!(r["agent_type"], "ClaudeCode", "{r}");
    assert_eq!(r["completed_subtasks"], 0, "{r}");

    post_task(&exec, 201, 8, "second").await;
    post_task(&exec, 201, 9, "third").await;
    let listing = wait_listing(&exec, "two subtasks queued behind 7", |l| {
        row(l, 201).is_some_and(|r| r["queued"] == 2)
    })
    .await;
    let r = row(&listing, 201).unwrap();
    assert_eq!(r["status"], "running", "{r}");
    assert_eq!(r["current_subtask_id"], 7, "{r}");
    assert_eq!(listing["total"], 1, "{listing}");
}

#[tokio::test]
async fn delete_session_ends_its_processes_and_forgets_it() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let dir101 = exec.workspace().join("101");
    let dir102 = exec.workspace().join("102");
    for t in [101, 102] {
        let done = run_task(&exec, &rx, t, 1, "hello").await;
        assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
        assert_eq!(value_of(&done), "fake reply #1 to: hello");
    }
    assert!(
        !processes_in(&dir101).is_empty(),
        "precondition: task 101's CLI should be alive between subtasks\n{}",
        exec.logs_tail(50)
    );

    let (status, body) = exec.delete("/api/tasks/session?task_id=101").await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", exec.logs_tail(50));
    assert_eq!(
        body["message"], "[task_id: 101.-1] Session deleted",
        "{body}"
    );
    assert_eq!(body["closed"], 1, "{body}");
    let left = processes_in(&dir101);
    assert!(
        left.is_empty(),
        "processes still running in {} after DELETE returned:\n{}",
        dir101.display(),
        describe(&left)
    );
    let zombies = zombie_children_of(exec.pid());
    assert!(
        zombies.is_empty(),
        "the executor left unreaped children:\n{}",
        describe(&zombies)
    );
    assert!(
        !processes_in(&dir102).is_empty(),
        "deleting 101 must not touch 102's process\n{}",
        exec.logs_tail(50)
    );

    let listing = list(&exec).await;
    assert!(row(&listing, 101).is_none(), "101 still listed: {listing}");
    assert!(row(&listing, 102).is_some(), "102 must stay: {listing}");
    assert_eq!(listing["total"], 1, "{listing}");

    let (status, body) = exec.delete("/api/tasks/session?task_id=101").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "second delete: {body}");
    assert_eq!(
        body,
        json!({"detail": "[task_id: 101.-1] No session found"})
    );

    // The task can be used again, on a fresh process.
    let done = run_task(&exec, &rx, 101, 2, "back again").await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    assert_eq!(
        value_of(&done),
        "fake reply #1 to: back again",
        "a new subtask after delete runs on a fresh process: {}",
        rx.dump()
    );
    let listing = list(&exec).await;
    assert!(row(&listing, 101).is_some(), "101 listed again: {listing}");
}

#[tokio::test]
async fn deleting_a_session_fails_its_running_subtask_exactly_once() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[
            ("SESSION_TERM_GRACE_MS", "500"),
            ("SESSION_EOF_GRACE_MS", "200"),
        ],
    )
    .await;
    post_task(&exec, 301, 1, "FAKE:sleep:30000").await;
    wait_sent(&rx, 301, 1).await;

    let (status, body) = exec.delete("/api/tasks/session?task_id=301").await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", exec.logs_tail(50));
    let done = rx.wait_terminal(301, 1, WAIT).await;
    assert_eq!(
        done["status"],
        "FAILED",
        "a deleted running subtask fails: {}",
        rx.dump()
    );
    assert_eq!(done["progress"], 100, "{done}");
    assert!(
        processes_in(&exec.workspace().join("301")).is_empty(),
        "{}",
        describe(&processes_in(&exec.workspace().join("301")))
    );

    // Give any late callback for subtask 1 a chance: callbacks of one task are delivered in
    // order, so once subtask 2 has finished nothing queued before it can still be on its way.
    let next = run_task(&exec, &rx, 301, 2, "after delete").await;
    assert_eq!(next["status"], "COMPLETED", "{}", rx.dump());

    assert_eq!(
        rx.terminal_statuses(301, 1),
        vec!["FAILED".to_string()],
        "exactly one terminal callback for the deleted subtask: {}",
        rx.dump()
    );
    let cbs = rx.for_subtask(301, 1);
    let last = cbs.last().unwrap();
    assert!(
        is_terminal(last),
        "nothing may follow the terminal callback of subtask 1: {}",
        rx.dump()
    );
}

/// Starts five sessions sleeping and one sleeping while ignoring SIGTERM, all mid-turn.
async fn six_busy_sessions(exec: &Executor, rx: &CallbackReceiver) -> Vec<i64> {
    let ids: Vec<i64> = (501..=506).collect();
    for &t in &ids[..5] {
        post_task(exec, t, 1, "FAKE:sleep:30000").await;
    }
    post_task(exec, ids[5], 1, "FAKE:ignore_sigterm\nFAKE:sleep:30000").await;
    for &t in &ids {
        wait_sent(rx, t, 1).await;
    }
    // The directive is applied by the CLI itself: wait until it says so (stderr is logged).
    exec.wait_for_log("fake-claude: ignoring SIGTERM", WAIT)
        .await;
    wait_listing(exec, "six running sessions", |l| {
        l["sessions"]
            .as_array()
            .is_some_and(|s| s.len() == 6 && s.iter().all(|r| r["status"] == "running"))
    })
    .await;
    let procs = processes_in(exec.workspace());
    assert!(
        procs.len() >= 6,
        "precondition: six CLI processes should run in the workspace:\n{}",
        describe(&procs)
    );
    ids
}

async fn assert_all_closed(
    exec: &Executor,
    rx: &CallbackReceiver,
    route: &str,
    message: &str,
    ids: &[i64],
) {
    let started = Instant::now();
    let (status, body) = exec.delete(route).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}\n{}", exec.logs_tail(50));
    assert_eq!(body["message"], message, "{body}");
    assert_eq!(
        body["closed"],
        ids.len(),
        "`closed` must count the sessions: {body}"
    );
    let left = processes_in(exec.workspace());
    assert!(
        left.is_empty(),
        "processes still in the workspace after {route} returned (in {took:?}):\n{}\n{}",
        describe(&left),
        exec.logs_tail(50)
    );
    let zombies = zombie_children_of(exec.pid());
    assert!(
        zombies.is_empty(),
        "the executor has unreaped children after {route}:\n{}",
        describe(&zombies)
    );
    let listing = list(exec).await;
    assert_eq!(listing, json!({"total": 0, "sessions": []}));
    // A generous bound on purpose (a loaded 2-core machine): it only rules out waiting for
    // the 30 s turns to end; the processes being gone when the route returned is the check.
    assert!(
        took < Duration::from_secs(10),
        "{route} took {took:?} with 500 ms grace periods and 30 s turns"
    );
    for &t in ids {
        let done = rx.wait_terminal(t, 1, WAIT).await;
        assert_eq!(
            done["status"],
            "FAILED",
            "a subtask running when its session was closed fails: {}",
            rx.dump()
        );
    }
}

#[tokio::test]
async fn closing_all_claude_sessions_leaves_no_process_or_zombie() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[
            ("SESSION_TERM_GRACE_MS", "500"),
            ("SESSION_EOF_GRACE_MS", "200"),
        ],
    )
    .await;
    let ids = six_busy_sessions(&exec, &rx).await;
    assert_all_closed(
        &exec,
        &rx,
        "/api/tasks/claude/sessions",
        "All Claude sessions closed successfully",
        &ids,
    )
    .await;

    let (status, body) = exec.delete("/api/tasks/claude/sessions").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["closed"], 0, "nothing left to close: {body}");
}

#[tokio::test]
async fn closing_all_sessions_leaves_no_process_or_zombie() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[
            ("SESSION_TERM_GRACE_MS", "500"),
            ("SESSION_EOF_GRACE_MS", "200"),
        ],
    )
    .await;
    let ids = six_busy_sessions(&exec, &rx).await;
    assert_all_closed(
        &exec,
        &rx,
        "/api/tasks/sessions/close",
        "All agent sessions closed successfully",
        &ids,
    )
    .await;

    let (status, body) = exec.delete("/api/tasks/sessions/close").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["closed"], 0, "nothing left to close: {body}");
}

#[tokio::test]
async fn idle_sessions_are_closed_too() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    for t in [601, 602] {
        let done = run_task(&exec, &rx, t, 1, "hello").await;
        assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    }
    let (status, body) = exec.delete("/api/tasks/sessions/close").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["closed"], 2, "{body}");
    let left = processes_in(exec.workspace());
    assert!(left.is_empty(), "{}", describe(&left));
    assert!(
        zombie_children_of(exec.pid()).is_empty(),
        "{}",
        describe(&zombie_children_of(exec.pid()))
    );
    assert_eq!(list(&exec).await["total"], 0);
    for t in [601, 602] {
        assert_eq!(
            rx.terminal_statuses(t, 1),
            vec!["COMPLETED".to_string()],
            "closing an idle session sends nothing for finished subtasks: {}",
            rx.dump()
        );
    }
}

#[tokio::test]
async fn subtasks_of_a_busy_task_wait_in_order_on_the_same_process() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    // Subtask 1 stays busy until the test has queued 2 and 3 (no timing involved).
    let go = tempfile::tempdir().unwrap();
    let go_file = go.path().join("go");
    post_task(
        &exec,
        401,
        1,
        &format!("one\nFAKE:wait_file:{}", go_file.display()),
    )
    .await;
    rx.wait_for(WAIT, |cbs| {
        cbs.iter()
            .any(|c| is_subtask(c, 401, 1) && c["status"] == "RUNNING" && c["progress"] == 55)
    })
    .await;
    post_task(&exec, 401, 2, "two").await;
    post_task(&exec, 401, 3, "three").await;
    assert!(
        rx.for_subtask(401, 1).iter().all(|c| !is_terminal(c)),
        "subtask 1 is still running while 2 and 3 queue: {}",
        rx.dump()
    );
    std::fs::write(&go_file, b"").unwrap();
    rx.wait_terminal(401, 3, WAIT).await;

    let cbs = rx.for_task(401);
    let pos = |pred: &dyn Fn(&Value) -> bool| cbs.iter().position(pred);
    let completed = |sub: i64| {
        pos(&|c: &Value| is_subtask(c, 401, sub) && c["status"] == "COMPLETED")
            .unwrap_or_else(|| panic!("subtask {sub} did not complete: {}", rx.dump()))
    };
    let started = |sub: i64| {
        pos(&|c: &Value| is_subtask(c, 401, sub) && c["status"] == "RUNNING" && c["progress"] == 55)
            .unwrap_or_else(|| panic!("subtask {sub} never started (RUNNING 55): {}", rx.dump()))
    };
    assert!(
        completed(1) < started(2),
        "subtask 2 started before 1 completed: {}",
        rx.dump()
    );
    assert!(
        completed(2) < started(3),
        "subtask 3 started before 2 completed: {}",
        rx.dump()
    );
    let replies: Vec<String> = (1..=3)
        .map(|s| value_of(&terminal_of(&rx, 401, s)).to_string())
        .collect();
    assert_eq!(
        replies,
        vec![
            "fake reply #1 to: one".to_string(),
            "fake reply #2 to: two".to_string(),
            "fake reply #3 to: three".to_string()
        ],
        "the three subtasks run in order on one process: {}",
        rx.dump()
    );
    assert_one_terminal_each(&exec, &rx, 401, &[1, 2, 3], 4).await;
    for s in 1..=3 {
        assert_eq!(
            rx.terminal_statuses(401, s),
            vec!["COMPLETED".to_string()],
            "{}",
            rx.dump()
        );
    }
}

/// The terminal callback of a subtask that has already ended.
fn terminal_of(rx: &CallbackReceiver, task_id: i64, subtask_id: i64) -> Value {
    rx.for_subtask(task_id, subtask_id)
        .into_iter()
        .find(is_terminal)
        .unwrap_or_else(|| {
            panic!(
                "no terminal callback for {task_id}.{subtask_id}: {}",
                rx.dump()
            )
        })
}
