//! Callbacks are never lost: while the receiver is down they wait in the on-disk spool; if the
//! executor is killed (SIGKILL) and restarted on the same workspace, they are replayed, each
//! exactly once per (subtask, sequence) and in order; a drained spool leaves no files behind.
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
    let events_spooled = spool_text(ws.path()).lines().count();
    exec.kill();
    for pid in processes_in(ws.path()) {
        common::procs::signal(pid, libc::SIGKILL);
    }

    rx.restart();
    let exec = Executor::start(opts()).await;
    for (t, s) in [(1, 1), (1, 2), (2, 1)] {
        let done = rx.wait_terminal(t, s, Duration::from_secs(15)).await;
        assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    }
    rx.wait_for(Duration::from_secs(15), |cbs| cbs.len() >= events_spooled)
        .await;
    let got = rx.received();
    assert!(
        got.iter().any(|c| c.body["task_id"] == 3),
        "the interrupted subtask's events are replayed too"
    );
    assert_eq!(
        got.len(),
        events_spooled,
        "each spooled event exactly once: {}",
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
    let drained = wait_until(Duration::from_secs(5), || spool_text(ws.path()).is_empty()).await;
    assert!(
        drained,
        "a drained spool is removed: {}",
        spool_text(ws.path())
    );
    drop(exec);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spool_is_empty_when_the_receiver_keeps_up() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    run_task(&exec, &rx, 3, 1, "hi").await;
    let ws = exec.workspace().to_path_buf();
    assert!(wait_until(Duration::from_secs(5), || spool_text(&ws).is_empty()).await);
}
