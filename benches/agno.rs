//! Agno benchmark: how long a new Agno session waits for its first agent event (progress 75,
//! "run started") with a cold client (Python imports agno: `AGNO_POOL_SIZE=0`) and with a
//! pre-started one from the pool (`AGNO_POOL_SIZE=1`), plus a follow-up on a live session.
//! Real agno 2.1.5 against the mock OpenAI server. `cargo bench --bench agno`; rounds:
//! `BENCH_AGNO_ROUNDS` (5). Needs the agno venv (`bash agno/install.sh`; installed on first use).
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::agno_env::agno_python;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn task(task_id: i64, sub: i64, mock: &MockOpenAi) -> Value {
    json!({"task_id": task_id, "subtask_id": sub, "prompt": "hi",
           "bot": [{"name": "Solo", "shell_type": "Agno",
                    "agent_config": {"env": {"model": "openai", "model_id": "mock-1",
                                             "api_key": "sk-bench", "base_url": mock.base_url()}}}]})
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

async fn first_event(
    exec: &Executor,
    rx: &CallbackReceiver,
    mock: &MockOpenAi,
    t: i64,
    s: i64,
) -> Duration {
    let t0 = Instant::now();
    let (status, body) = exec
        .post_json("/api/tasks/execute", &task(t, s, mock))
        .await;
    assert_eq!(status, 200, "{body}");
    rx.wait_for(WAIT, |cbs| {
        cbs.iter()
            .any(|c| is_subtask(c, t, s) && c["progress"] == 75)
    })
    .await;
    let took = t0.elapsed();
    let done = rx.wait_terminal(t, s, WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    took
}

fn pool_ready_count(exec: &Executor) -> usize {
    exec.logs()
        .iter()
        .filter(|l| l.contains("agno pool: client") && l.contains("ready"))
        .count()
}

#[tokio::main]
async fn main() {
    let rounds: i64 = std::env::var("BENCH_AGNO_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let python = agno_python().display().to_string();
    let mock = MockOpenAi::start();
    let mut rows = Vec::new();
    for pool in [0usize, 1] {
        let rx = CallbackReceiver::start();
        let exec = Executor::start(
            ExecutorOptions::new()
                .callback_url(rx.url())
                .env("AGNO_PYTHON", python.clone())
                .env("AGNO_POOL_SIZE", pool.to_string())
                .env("LOG_LEVEL", "debug"),
        )
        .await;
        let mut news = Vec::new();
        let mut follow = Vec::new();
        for r in 0..rounds {
            if pool > 0 {
                let want = r as usize + 1;
                assert!(
                    wait_until(WAIT, || pool_ready_count(&exec) >= want).await,
                    "the pool did not refill"
                );
            }
            news.push(first_event(&exec, &rx, &mock, 100 + r, 1).await);
            follow.push(first_event(&exec, &rx, &mock, 100 + r, 2).await);
        }
        rows.push((pool, median(news), median(follow)));
    }
    println!("\nAgno first agent event (median of {rounds} new sessions; ms)\n");
    println!("| AGNO_POOL_SIZE | new session | follow-up on the live session |");
    println!("|---|---|---|");
    for (pool, new, follow) in rows {
        println!("| {pool} | {new:.1} | {follow:.1} |");
    }
}
