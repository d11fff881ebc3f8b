//! Callbacks are never lost: while the receiver is down they wait in the on-disk spool; if the
//! executor is killed (SIGKILL) and restarted on the same workspace, they are replayed, each
//! exactly once per (subtask, sequence) and in order; a drained spool leaves no files behind.
//! When the spool cannot be written, callbacks go out from memory (degraded, counted, `/ready`
//! false) and the spool is used again as soon as it works; an unusable spool directory at
//! start-up is a clear error naming it.
//!
//! `EXECUTOR_UNDER_TEST=<path>` runs the tests against another build of the executor.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const ENV: &[(&str, &str)] = &[
    ("CALLBACK_INITIAL_BACKOFF_MS", "20"),
    ("CALLBACK_MAX_BACKOFF_MS", "100"),
    ("CALLBACK_MAX_RETRIES", "100000"),
];

fn program(o: ExecutorOptions) -> ExecutorOptions {
    match std::env::var_os("EXECUTOR_UNDER_TEST") {
        Some(p) => o.program(p),
        None => o,
    }
}

async fn metric(exec: &Executor, name: &str) -> Option<u64> {
    let text = exec
        .client()
        .get(exec.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn spool_text(ws: &std::path::Path) -> String {
    let dir = ws.join(".callback-spool");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// Whether `e` is an emptied log kept for reuse (`free-<n>.log`, nothing in it).
fn is_empty_free_log(e: &std::fs::DirEntry) -> bool {
    e.file_name().to_string_lossy().starts_with("free-") && e.metadata().is_ok_and(|m| m.len() == 0)
}

/// The spool's `.log` files holding something (a drained spool has none: no task log, even an
/// empty one, and only empty logs kept for reuse).
fn spool_files(ws: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(ws.join(".callback-spool"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| !is_empty_free_log(e))
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_survive_a_down_receiver_and_an_executor_crash() {
    let rx = CallbackReceiver::start();
    let ws = tempfile::tempdir().unwrap();
    let opts = || {
        let mut o = ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .workspace(ws.path());
        for (k, v) in ENV {
            o = o.env(*k, *v);
        }
        o
    };
    rx.stop();
    let mut exec = Executor::start(opts()).await;
    post_task(&exec, 1, 1, "first").await;
    post_task(&exec, 1, 2, "second").await;
    post_task(&exec, 2, 1, "other task").await;
    // Task 3 is mid-turn when the executor dies.
    post_task(&exec, 3, 1, "FAKE:sleep:60000\nstill running").await;
    let task3 = ws.path().join(".callback-spool/task-3.log");
    let spooled = wait_until(Duration::from_secs(15), || {
        spool_text(ws.path()).matches("COMPLETED").count() == 3
            && std::fs::read_to_string(&task3).is_ok_and(|t| t.contains("\"progress\":60"))
    })
    .await;
    assert!(
        spooled,
        "spool: {}\n{}",
        spool_text(ws.path()),
        exec.logs_tail(30)
    );
    exec.kill();
    // Counted once the executor is dead: nothing can be appended any more.
    let events_spooled = spool_text(ws.path()).lines().count();
    for pid in processes_in(ws.path()) {
        common::procs::signal(pid, libc::SIGKILL);
    }

    rx.restart();
    let exec = Executor::start(opts()).await;
    for (t, s) in [(1, 1), (1, 2), (2, 1)] {
        let done = rx.wait_terminal(t, s, Duration::from_secs(15)).await;
        assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    }
    // The interrupted subtask's events are replayed too, then it ends with one FAILED.
    let ended = rx.wait_terminal(3, 1, Duration::from_secs(15)).await;
    assert_eq!(ended["status"], "FAILED", "{}", rx.dump());
    rx.wait_for(Duration::from_secs(15), |cbs| cbs.len() > events_spooled)
        .await;
    let got = rx.received();
    assert_eq!(
        got.len(),
        events_spooled + 1,
        "each spooled event exactly once, plus the interrupted subtask's FAILED: {}",
        rx.dump()
    );
    let mut seqs: HashMap<(i64, i64), Vec<u64>> = HashMap::new();
    for cb in &got {
        let key = (
            json_i64(&cb.body["task_id"]).unwrap(),
            json_i64(&cb.body["subtask_id"]).unwrap(),
        );
        let seq = cb
            .header("x-callback-sequence")
            .and_then(|s| s.parse().ok())
            .expect("sequence header");
        seqs.entry(key).or_default().push(seq);
    }
    for (key, s) in &seqs {
        let want: Vec<u64> = (1..=s.len() as u64).collect();
        assert_eq!(s, &want, "subtask {key:?}: in order, no gap, no duplicate");
    }
    let drained = wait_until(Duration::from_secs(5), || spool_files(ws.path()).is_empty()).await;
    assert!(
        drained,
        "a drained spool file is deleted, not left empty: {:?}",
        spool_files(ws.path())
    );
    drop(exec);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spool_is_empty_when_the_receiver_keeps_up() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let ws = exec.workspace().to_path_buf();
    // Proves the events go through the spool at all: while the receiver holds the first
    // callback, it is on disk.
    rx.hold();
    post_task(&exec, 3, 1, "hi").await;
    rx.wait_for_held(1, Duration::from_secs(15)).await;
    assert!(
        spool_text(&ws).contains("\"task_id\":3"),
        "an undelivered callback is in the spool: {:?}",
        spool_files(&ws)
    );
    rx.release();
    let done = rx.wait_terminal(3, 1, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    assert!(
        wait_until(Duration::from_secs(5), || spool_files(&ws).is_empty()).await,
        "once delivered, nothing is left: {:?}",
        spool_files(&ws)
    );
}

/// A drained log of a running subtask is kept for it, not emptied and renamed away between its
/// progress events (each retirement costs the spool writer a truncate, two renames and journal
/// lines); the gauge of tasks with waiting callbacks does not count it, and once the terminal
/// is delivered the log is retired as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_subtasks_drained_log_is_kept_until_its_terminal() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let ws = exec.workspace().to_path_buf();
    let log = ws.join(".callback-spool").join("task-4.log");
    let release = exec.tmp_root().join("release-4");
    post_task(
        &exec,
        4,
        1,
        &format!("FAKE:wait_file:{}\nheld", release.display()),
    )
    .await;
    let running = wait_until(Duration::from_secs(15), || {
        rx.callbacks()
            .iter()
            .any(|c| c["task_id"] == 4 && c["status"] == "RUNNING")
    })
    .await;
    assert!(running, "{}", rx.dump());
    // Everything so far delivered, and the log still holds all of it: never emptied.
    let journal = ws.join(".callback-spool").join("spool.journal");
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let delivered = || rx.callbacks().iter().filter(|c| c["task_id"] == 4).count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let gauge = metric(&exec, "executor_callback_queued_tasks").await;
        if gauge == Some(0) && lines(&log) == delivered() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the running subtask's log does not hold its {} delivered callbacks ({} lines), or \
             the gauge counts it ({gauge:?}): {:?}",
            delivered(),
            lines(&log),
            spool_files(&ws)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let forgets = std::fs::read_to_string(&journal)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("forget"))
        .count();
    assert_eq!(forgets, 0, "the log was retired while the subtask ran");
    std::fs::write(&release, "go").unwrap();
    let done = rx.wait_terminal(4, 1, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    assert!(
        wait_until(Duration::from_secs(5), || spool_files(&ws).is_empty()).await,
        "after the terminal the log is retired: {:?}",
        spool_files(&ws)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spool_that_cannot_be_written_degrades_to_memory_and_recovers() {
    let rx = CallbackReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("CALLBACK_SPOOL_DIR", spool.display().to_string());
    let exec = Executor::start(program(opts)).await;
    assert_eq!(
        run_task(&exec, &rx, 1, 1, "healthy").await["status"],
        "COMPLETED"
    );
    // Drained: nothing but the journal and logs kept for reuse, all empty.
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_dir(&spool)
            .is_ok_and(|d| d.flatten().all(|e| is_empty_free_log(&e)
                || (e.file_name() == "spool.journal"
                    && e.metadata().is_ok_and(|m| m.len() == 0)))))
        .await
    );

    // Appends now fail for root too: the directory is gone and a file sits at its path.
    std::fs::remove_dir_all(&spool).unwrap();
    std::fs::write(&spool, b"not a directory").unwrap();
    let done = run_task(&exec, &rx, 2, 1, "while the spool is broken").await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    let events = rx.for_subtask(2, 1);
    assert!(events.len() >= 3, "progress too: {}", rx.dump());
    assert_eq!(events.iter().filter(|c| is_terminal(c)).count(), 1);
    assert!(
        is_terminal(events.last().unwrap()),
        "in order: {}",
        rx.dump()
    );
    assert!(metric(&exec, "executor_callback_spool_failures_total").await >= Some(3));
    assert_eq!(
        metric(&exec, "executor_callback_spool_degraded").await,
        Some(1)
    );
    let (status, body) = exec.get("/ready").await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let errors = exec
        .logs()
        .iter()
        .filter(|l| l.contains("ERROR") && l.contains("cannot be written"))
        .count();
    assert_eq!(errors, 1, "logged once per cause:\n{}", exec.logs_tail(40));

    // The disk is fixed: the next events are spooled again and the executor is ready.
    std::fs::remove_file(&spool).unwrap();
    assert_eq!(
        run_task(&exec, &rx, 3, 1, "spool back").await["status"],
        "COMPLETED"
    );
    assert_eq!(
        metric(&exec, "executor_callback_spool_degraded").await,
        Some(0)
    );
    let (status, body) = exec.get("/ready").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert!(spool.is_dir());
}

#[tokio::test]
async fn an_unusable_spool_directory_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let spool = file.join("spool");
    let opts = ExecutorOptions::new()
        .callback_url("http://127.0.0.1:9/callback")
        .env("CALLBACK_SPOOL_DIR", spool.display().to_string());
    let failure = Executor::try_start(program(opts))
        .await
        .err()
        .expect("start-up must fail");
    let text = failure.logs.join("\n");
    assert!(
        text.contains(&spool.display().to_string()) && !text.contains("panicked"),
        "{failure}"
    );
    assert!(failure.status.is_some_and(|s| !s.success()), "{failure}");
}
