//! Accepted means finished once, also across a crash: when the executor is SIGKILLed while
//! subtasks run or wait, the next executor on the same workspace root ends each of them with
//! exactly one `FAILED` before any new work, the task stays usable, and the replay resends at
//! most the one event that was in flight (the acknowledgement is written after every delivery).
//!
//! `EXECUTOR_UNDER_TEST=<path>` runs these tests against another build (e.g. the previous
//! release) to watch them fail there.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

/// Fast retries, so a replay does not wait on backoff.
const ENV: &[(&str, &str)] = &[
    ("CALLBACK_INITIAL_BACKOFF_MS", "20"),
    ("CALLBACK_MAX_BACKOFF_MS", "100"),
    ("CALLBACK_MAX_RETRIES", "100000"),
];

fn options(rx: &CallbackReceiver, ws: &std::path::Path) -> ExecutorOptions {
    let mut o = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .workspace(ws);
    for (k, v) in ENV {
        o = o.env(*k, *v);
    }
    if let Some(p) = std::env::var_os("EXECUTOR_UNDER_TEST") {
        o = o.program(p);
    }
    o
}

fn key(cb: &ReceivedCallback) -> (i64, i64) {
    (
        json_i64(&cb.body["task_id"]).unwrap_or(-1),
        json_i64(&cb.body["subtask_id"]).unwrap_or(-1),
    )
}

fn seq(cb: &ReceivedCallback) -> u64 {
    cb.header("x-callback-sequence")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn subtasks_running_or_queued_at_a_crash_end_once_and_the_task_goes_on() {
    let rx = CallbackReceiver::start();
    let ws = tempfile::tempdir().unwrap();
    let mut exec = Executor::start(options(&rx, ws.path())).await;
    // 7.1 streams an assistant line every 100 ms until killed; 7.2 waits behind it.
    let never = ws.path().join("never-created");
    post_task(
        &exec,
        7,
        1,
        &format!("FAKE:wait_file:{}\nlong work", never.display()),
    )
    .await;
    post_task(&exec, 7, 2, "queued behind").await;
    let streamed = rx
        .wait_for(Duration::from_secs(30), |cbs| {
            cbs.iter().filter(|c| is_subtask(c, 7, 1)).count() >= 20
                && cbs.iter().any(|c| is_subtask(c, 7, 2))
        })
        .await;
    assert!(
        streamed.iter().filter(|c| is_subtask(c, 7, 1)).count() >= 20,
        "{}\n{}",
        rx.dump(),
        exec.logs_tail(30)
    );
    exec.kill();
    for pid in processes_in(ws.path()) {
        common::procs::signal(pid, libc::SIGKILL);
    }
    let before = rx.received().len();

    let exec = Executor::start(options(&rx, ws.path())).await;
    for sub in [1, 2] {
        let t = rx.wait_terminal(7, sub, Duration::from_secs(20)).await;
        assert_eq!(t["status"], "FAILED", "7.{sub}: {}", rx.dump());
        let msg = t["error_message"].as_str().unwrap_or_default();
        assert!(msg.contains("restarted"), "7.{sub}: {msg}");
    }
    let next = run_task(&exec, &rx, 7, 3, "FAKE:argv\ncarry on").await;
    assert_eq!(next["status"], "COMPLETED", "{}", rx.dump());
    let argv = next["result"]["value"].as_str().unwrap_or_default();
    assert!(
        argv.contains("--resume"),
        "the conversation is resumed: {argv}"
    );

    let got = rx.received();
    let mut terminals: HashMap<(i64, i64), usize> = HashMap::new();
    for cb in got.iter().filter(|c| is_terminal(&c.body)) {
        *terminals.entry(key(cb)).or_default() += 1;
    }
    for sub in [1, 2, 3] {
        assert_eq!(terminals.get(&(7, sub)), Some(&1), "7.{sub}: {}", rx.dump());
    }
    // Per task, in order: each subtask's terminal comes after all its other events, and the
    // interrupted subtasks end before the next one starts.
    let order: Vec<(i64, i64)> = got.iter().map(key).collect();
    for sub in [1, 2] {
        let last = order.iter().rposition(|k| *k == (7, sub)).unwrap();
        assert!(
            is_terminal(&got[last].body),
            "7.{sub} ends with its terminal"
        );
        let first3 = order.iter().position(|k| *k == (7, 3)).unwrap();
        assert!(last < first3, "7.{sub} ends before 7.3 starts");
    }
    // The replay window: events delivered before the crash and sent again after it.
    let mut seen: HashMap<((i64, i64), u64), usize> = HashMap::new();
    for cb in &got {
        *seen.entry((key(cb), seq(cb))).or_default() += 1;
    }
    let dups: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "[crash] {before} callbacks before the kill, {} after, {dups} duplicates",
        got.len() - before
    );
    assert!(dups <= 1, "at most the event in flight is resent: {dups}");
    // The FAILED of an interrupted subtask continues its sequence (a receiver deduplicating
    // by (subtask, sequence) must not drop it).
    for sub in [1, 2] {
        let seqs: Vec<u64> = got.iter().filter(|c| key(c) == (7, sub)).map(seq).collect();
        let last = *seqs.last().unwrap();
        assert!(
            seqs[..seqs.len() - 1].iter().all(|s| *s < last),
            "7.{sub}: {seqs:?}"
        );
    }
    let spool = ws.path().join(".callback-spool");
    let left = || -> Vec<String> {
        std::fs::read_dir(&spool)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Only the journal and emptied logs kept for reuse stay, and all are empty once nothing is
    // unfinished or undelivered.
    let journal = spool.join("spool.journal");
    let empty_free = |f: &str| {
        f.starts_with("free-") && std::fs::metadata(spool.join(f)).is_ok_and(|m| m.len() == 0)
    };
    let clean = wait_until(Duration::from_secs(5), || {
        left().iter().all(|f| f == "spool.journal" || empty_free(f))
            && std::fs::metadata(&journal).map_or(0, |m| m.len()) == 0
    })
    .await;
    assert!(
        clean,
        "nothing is left in the spool: {:?}, journal {:?}",
        left(),
        std::fs::read_to_string(&journal)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_task_info_subtask_running_at_a_crash_ends_once() {
    let rx = CallbackReceiver::start();
    let ws = tempfile::tempdir().unwrap();
    let never = ws.path().join("never-created");
    let task = seed_task(
        8,
        80,
        &format!("FAKE:wait_file:{}\nstarted by the manager", never.display()),
    )
    .to_string();
    let mut exec = Executor::start(options(&rx, ws.path()).env("TASK_INFO", task)).await;
    rx.wait_for(Duration::from_secs(30), |cbs| {
        cbs.iter().filter(|c| is_subtask(c, 8, 80)).count() >= 5
    })
    .await;
    exec.kill();
    for pid in processes_in(ws.path()) {
        common::procs::signal(pid, libc::SIGKILL);
    }
    // The container comes back without TASK_INFO (a plain restart of the service).
    let exec = Executor::start(options(&rx, ws.path())).await;
    let t = rx.wait_terminal(8, 80, Duration::from_secs(20)).await;
    assert_eq!(t["status"], "FAILED", "{}", rx.dump());
    let next = run_task(&exec, &rx, 8, 81, "next message").await;
    assert_eq!(next["status"], "COMPLETED", "{}", rx.dump());
    let terminals = rx
        .received()
        .iter()
        .filter(|c| is_subtask(&c.body, 8, 80) && is_terminal(&c.body))
        .count();
    assert_eq!(terminals, 1, "{}", rx.dump());
}
