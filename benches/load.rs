//! Load benchmark: starts the release `executor` with the project's fake `claude` (instant
//! replies) and a local callback receiver, then measures what a platform operator cares about.
//! Run with `cargo bench --workspace --bench load`; prints a table and writes
//! `target/bench-load.json`. Sizes can be changed with `BENCH_TASKS`, `BENCH_CLIENTS`,
//! `BENCH_SESSIONS`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn task(task_id: i64, sub: i64, content: &str) -> Value {
    json!({"task_id": task_id, "subtask_id": sub, "agent_type": "claude_code", "content": content})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn sorted_ms(mut v: Vec<Duration>) -> Vec<f64> {
    v.sort();
    v.into_iter().map(|d| d.as_secs_f64() * 1000.0).collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn tree_rss_kib(pid: u32) -> u64 {
    rss_kib(pid) + descendants_of(pid).into_iter().map(rss_kib).sum::<u64>()
}

async fn start(rx: &CallbackReceiver) -> Executor {
    let opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-bench")
        .env("LOG_LEVEL", "info")
        .env("SESSION_EOF_GRACE_MS", "200")
        .env("SESSION_TERM_GRACE_MS", "1000");
    Executor::start(opts).await
}

struct Row(&'static str, String);

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n_tasks = env_usize("BENCH_TASKS", 200);
    let clients = env_usize("BENCH_CLIENTS", 16);
    let n_sessions = env_usize("BENCH_SESSIONS", 100);
    let rx = Arc::new(CallbackReceiver::start());
    let exec = start(&rx).await;
    let mut rows = Vec::new();
    let mut out = serde_json::Map::new();

    // Idle memory.
    let idle = rss_kib(exec.pid());
    rows.push(Row("executor RSS idle", format!("{:.1} MiB", idle as f64 / 1024.0)));
    out.insert("rss_idle_kib".into(), json!(idle));

    // 1. Accept latency, sequential.
    let mut lat = Vec::new();
    for i in 0..n_tasks as i64 {
        let t0 = Instant::now();
        let (status, _) = exec.post_json("/api/tasks/execute", &task(1_000 + i, 1, "hi")).await;
        lat.push(t0.elapsed());
        assert!(status.is_success());
    }
    let lat = sorted_ms(lat);
    rows.push(Row("accept latency p50 / p99", format!("{:.2} / {:.2} ms", percentile(&lat, 0.5), percentile(&lat, 0.99))));
    out.insert("accept_ms".into(), json!({"p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99)}));
    rx.wait_for(Duration::from_secs(120), |cbs| cbs.iter().filter(|c| is_terminal(c)).count() >= n_tasks).await;
    exec.delete("/api/tasks/sessions/close").await;

    // 2. Throughput with concurrent clients, until every terminal callback arrived.
    let before = rx.callbacks().iter().filter(|c| is_terminal(c)).count();
    let t0 = Instant::now();
    let per_client = n_tasks.div_ceil(clients);
    let mut joins = Vec::new();
    for c in 0..clients {
        let client = exec.client();
        let url = exec.url("/api/tasks/execute");
        joins.push(tokio::spawn(async move {
            for i in 0..per_client {
                let id = 100_000 + (c * per_client + i) as i64;
                let _ = client.post(&url).json(&task(id, 1, "hi")).send().await;
            }
        }));
    }
    for j in joins {
        let _ = j.await;
    }
    let total = per_client * clients;
    let got = rx
        .wait_for(Duration::from_secs(300), |cbs| cbs.iter().filter(|c| is_terminal(c)).count() >= before + total)
        .await;
    let secs = t0.elapsed().as_secs_f64();
    let finished = got.iter().filter(|c| is_terminal(c)).count() - before;
    rows.push(Row("throughput (tasks/s, clients)", format!("{:.1} tasks/s with {clients} clients, {} unfinished", finished as f64 / secs, total - finished)));
    out.insert("throughput".into(), json!({"tasks_per_s": finished as f64 / secs, "clients": clients, "unfinished": total - finished}));
    exec.delete("/api/tasks/sessions/close").await;

    // 3. Cancel latency: request → CANCELLED callback.
    let mut cancel = Vec::new();
    for i in 0..20i64 {
        let id = 200_000 + i;
        exec.post_json("/api/tasks/execute", &task(id, 1, "FAKE:sleep:60000\nhold")).await;
        rx.wait_for(Duration::from_secs(30), |cbs| cbs.iter().any(|c| is_subtask(c, id, 1) && c["progress"] == 60)).await;
        let t0 = Instant::now();
        exec.post_json(&format!("/api/tasks/cancel?task_id={id}"), &json!({})).await;
        rx.wait_terminal(id, 1, Duration::from_secs(30)).await;
        cancel.push(t0.elapsed());
    }
    let cancel = sorted_ms(cancel);
    rows.push(Row("cancel → CANCELLED callback p50 / p99", format!("{:.2} / {:.2} ms", percentile(&cancel, 0.5), percentile(&cancel, 0.99))));
    out.insert("cancel_ms".into(), json!({"p50": percentile(&cancel, 0.5), "p99": percentile(&cancel, 0.99)}));
    exec.delete("/api/tasks/sessions/close").await;

    // 4./5. Memory with live sessions, and close-all.
    for i in 0..n_sessions as i64 {
        exec.post_json("/api/tasks/execute", &task(300_000 + i, 1, "hi")).await;
    }
    let live = n_sessions;
    rx.wait_for(Duration::from_secs(120), |cbs| {
        cbs.iter().filter(|c| is_terminal(c) && c["task_id"].as_i64().is_some_and(|t| t >= 300_000)).count() >= live
    })
    .await;
    let (exe_rss, tree_rss) = (rss_kib(exec.pid()), tree_rss_kib(exec.pid()));
    rows.push(Row("executor RSS with live sessions", format!("{:.1} MiB with {live} ({:.0} KiB/session over idle)", exe_rss as f64 / 1024.0, (exe_rss.saturating_sub(idle)) as f64 / live as f64)));
    rows.push(Row("process tree RSS with live sessions", format!("{:.1} MiB", tree_rss as f64 / 1024.0)));
    out.insert("rss_live".into(), json!({"sessions": live, "executor_kib": exe_rss, "tree_kib": tree_rss}));
    let t0 = Instant::now();
    let (_, body) = exec.delete("/api/tasks/sessions/close").await;
    let close = t0.elapsed();
    let left = processes_in(exec.workspace()).len();
    rows.push(Row("close-all", format!("{:.1} ms for {} sessions, {left} processes left", close.as_secs_f64() * 1000.0, body["closed"])));
    out.insert("close_all".into(), json!({"ms": close.as_secs_f64() * 1000.0, "sessions": body["closed"], "left": left}));

    println!("\n| metric | value |\n|---|---|");
    for Row(k, v) in &rows {
        println!("| {k} | {v} |");
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-load.json");
    let _ = std::fs::write(path, serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default());
    println!("\nJSON: {path}");
}
