//! What the relay sends and how often: the prompt goes out whole once per subtask (in its
//! terminal callback) and truncated in progress callbacks; the `TASK_INFO` subtask's terminal is
//! repeated once after executor_manager's late `RUNNING` report would have arrived, and no other
//! subtask's is.
//!
//! `EXECUTOR_UNDER_TEST=<path>` runs the tests against another build of the executor.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::Duration;

use common::*;

fn start(rx: &CallbackReceiver, extra: &[(&str, &str)]) -> ExecutorOptions {
    let mut o = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test");
    for (k, v) in extra {
        o = o.env(*k, *v);
    }
    match std::env::var_os("EXECUTOR_UNDER_TEST") {
        Some(p) => o.program(p),
        None => o,
    }
}

/// Size of a callback body as sent (compact JSON).
fn size(cb: &serde_json::Value) -> usize {
    serde_json::to_vec(cb).map(|v| v.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_megabyte_prompt_goes_out_once_per_subtask() {
    const PROMPT_BYTES: usize = 10 * 1024 * 1024;
    const MARK: &str = "END-OF-THE-BIG-PROMPT";
    let rx = CallbackReceiver::start();
    let exec = Executor::start(start(&rx, &[("MAX_BODY_BYTES", "16777216")])).await;
    let prompt = format!("big prompt\n{}{MARK}", "x".repeat(PROMPT_BYTES));
    let task = serde_json::json!({"task_id": 9, "subtask_id": 1, "agent_type": "claude_code",
                                  "prompt": prompt});
    let (status, body) = exec.post_json("/api/tasks/execute", &task).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let done = rx.wait_terminal(9, 1, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "COMPLETED");
    let cbs = rx.for_subtask(9, 1);
    let sizes: Vec<usize> = cbs.iter().map(size).collect();
    let total: usize = sizes.iter().sum();
    eprintln!(
        "[big prompt] {} callbacks, sizes {sizes:?}, total {total} bytes",
        cbs.len()
    );
    let marks = |cb: &serde_json::Value| cb.to_string().matches(MARK).count();
    assert_eq!(
        marks(&done),
        1,
        "the terminal carries the whole prompt once"
    );
    assert_eq!(
        done["result"]["workbench"]["originalPrompt"]
            .as_str()
            .map(str::len),
        Some(prompt.len())
    );
    for cb in cbs.iter().filter(|c| !is_terminal(c)) {
        assert_eq!(marks(cb), 0, "progress callbacks carry a truncated prompt");
        assert!(
            size(cb) < 64 * 1024,
            "progress callback of {} bytes",
            size(cb)
        );
    }
    assert!(
        total < PROMPT_BYTES + PROMPT_BYTES / 4,
        "{total} bytes of callbacks for one {PROMPT_BYTES}-byte prompt"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_task_info_terminal_is_repeated_once_after_the_managers_late_report() {
    const DELAY_SECS: u64 = 2;
    let rx = CallbackReceiver::start();
    let task = seed_task(40, 400, "from TASK_INFO").to_string();
    let delay = DELAY_SECS.to_string();
    let exec = Executor::start(start(
        &rx,
        &[
            ("TASK_INFO", &task),
            ("TASK_INFO_TERMINAL_REPEAT_SECS", &delay),
        ],
    ))
    .await;
    let first = rx.wait_terminal(40, 400, Duration::from_secs(30)).await;
    assert_eq!(first["status"], "COMPLETED");
    assert_eq!(
        run_task(&exec, &rx, 41, 1, "posted").await["status"],
        "COMPLETED"
    );
    let terminals_of = |t, s| -> Vec<ReceivedCallback> {
        rx.received()
            .into_iter()
            .filter(|c| is_subtask(&c.body, t, s) && is_terminal(&c.body))
            .collect()
    };
    let repeated = wait_until(Duration::from_secs(DELAY_SECS + 15), || {
        terminals_of(40, 400).len() >= 2
    })
    .await;
    assert!(repeated, "{}", rx.dump());
    let both = terminals_of(40, 400);
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].body, both[1].body, "the same payload");
    let gap = both[1].at.duration_since(both[0].at);
    assert!(
        gap >= Duration::from_millis(DELAY_SECS * 1000 - 200),
        "repeated after the delay: {gap:?}"
    );
    let seq = |c: &ReceivedCallback| -> u64 {
        c.header("x-callback-sequence")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        seq(&both[1]),
        seq(&both[0]) + 1,
        "the repeat is a new event"
    );
    // Nothing else is repeated: 41.1 ended after 40.400, so a repeat of it would come within
    // the same delay after its own terminal.
    let again = wait_until(Duration::from_secs(DELAY_SECS + 2), || {
        terminals_of(41, 1).len() > 1
    })
    .await;
    assert!(
        !again,
        "only the TASK_INFO subtask is repeated: {}",
        rx.dump()
    );
    let last_40 = rx
        .received()
        .into_iter()
        .rposition(|c| is_subtask(&c.body, 40, 400));
    assert_eq!(
        last_40.map(|i| is_terminal(&rx.received()[i].body)),
        Some(true),
        "nothing but the terminal after the terminal"
    );
}
