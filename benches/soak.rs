//! Soak run: 1,000 tasks (`SOAK_TASKS`) through the fake CLI, 16 at a time (`SOAK_CLIENTS`),
//! each task two subtasks on one session that is then deleted. Samples the executor's RSS, open
//! file descriptors and threads at start, middle and end, and checks that no process leaked and
//! no callback was lost. Run with `cargo bench --bench soak`; prints a table.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (RSS KiB, open fds, threads) of a process.
fn sample(pid: u32) -> (u64, usize, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (field("VmRSS:"), fds, field("Threads:"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let tasks = env_usize("SOAK_TASKS", 1_000);
    let clients = env_usize("SOAK_CLIENTS", 16);
    let rx = Arc::new(CallbackReceiver::start());
    let opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-soak")
        .env("LOG_LEVEL", "info")
        .env("SESSION_EOF_GRACE_MS", "200")
        .env("SESSION_TERM_GRACE_MS", "500");
    let exec = Arc::new(Executor::start(opts).await);
    let pid = exec.pid();
    let mut samples = vec![("start", sample(pid))];
    let t0 = Instant::now();
    let per_client = tasks.div_ceil(clients);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut joins = Vec::new();
    for c in 0..clients {
        let (exec, rx, done) = (exec.clone(), rx.clone(), done.clone());
        joins.push(tokio::spawn(async move {
            for i in 0..per_client {
                let id = (c * per_client + i) as i64 + 1;
                for sub in 1..=2 {
                    exec.post_json("/api/tasks/execute", &seed_task(id, sub, "soak"))
                        .await;
                    rx.wait_terminal(id, sub, Duration::from_secs(60)).await;
                }
                exec.delete(&format!("/api/tasks/session?task_id={id}"))
                    .await;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    let mut took_middle = false;
    while !joins.iter().all(|j| j.is_finished()) {
        if !took_middle && done.load(std::sync::atomic::Ordering::Relaxed) >= tasks / 2 {
            samples.push(("middle", sample(pid)));
            took_middle = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // sampling cadence, not a sync
    }
    for j in joins {
        let _ = j.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    samples.push(("end", sample(pid)));
    // Idle blocking-pool threads and pooled connections time out after ~10 s.
    tokio::time::sleep(Duration::from_secs(12)).await; // letting idle timers expire, not a sync
    samples.push(("end + 12 s idle", sample(pid)));
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(e.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let kind = target.split(':').next().unwrap_or("?").to_string();
        let kind = if kind.starts_with('/') {
            format!("file {target}")
        } else {
            kind
        };
        *kinds.entry(kind).or_default() += 1;
    }
    println!("open fds at the end by kind: {kinds:?}");
    let leaked = processes_in(exec.workspace()).len();
    let zombies = zombie_children_of(pid).len();
    let terminals = rx.callbacks().iter().filter(|c| is_terminal(c)).count();
    println!("\n| point | RSS | open fds | threads |\n|---|---|---|---|");
    for (name, (rss, fds, threads)) in &samples {
        println!(
            "| {name} | {:.1} MiB | {fds} | {threads} |",
            *rss as f64 / 1024.0
        );
    }
    let total = per_client * clients;
    println!("\n{total} tasks ({} subtasks) in {secs:.1} s; leaked processes: {leaked}; zombie children: {zombies}", total * 2);
    println!(
        "terminal callbacks: {terminals} of {} subtasks (lost: {})",
        total * 2,
        total * 2 - terminals
    );
}
