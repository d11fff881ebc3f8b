//! Soak run: 1,000 tasks (`SOAK_TASKS`) through the fake CLI, 16 at a time (`SOAK_CLIENTS`),
//! each task two subtasks on one session that is then deleted. Samples the executor's RSS, open
//! file descriptors and threads at start, middle and end, and checks that no process leaked and
//! no callback was lost. Run with `cargo bench --bench soak`; prints a table.
//!
//! Then the adversarial loads (issue 13): `SOAK_IDLE` (2,000) sockets that never send a byte,
//! SSE churn over `SOAK_SSE_IDS` (20,000) distinct task ids (negative ones included) opened
//! `SOAK_SSE_BATCH` (500) at a time and dropped, and `SOAK_BIG_PROMPTS` (8) concurrent prompts
//! of `SOAK_PROMPT_MB` (1) MiB. RSS and fds are sampled after each; the run exits non-zero
//! when fds, event-stream entries, processes or callbacks leak. `SOAK_EXECUTOR=/path` runs
//! another build of the executor (to compare before/after).
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Header timeout the soak's executor runs with, so idle sockets are closed within the run.
const HEADER_TIMEOUT_SECS: u64 = 2;
/// Open fds above the start sample still accepted after the adversarial loads (pooled
/// keep-alive sockets, spool files of live sessions).
const FD_SLACK: usize = 64;

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
        .env("SESSION_TERM_GRACE_MS", "500")
        .env("HTTP_HEADER_TIMEOUT_SECS", HEADER_TIMEOUT_SECS.to_string());
    let opts = match std::env::var("SOAK_EXECUTOR") {
        Ok(p) => opts.program(p),
        Err(_) => opts,
    };
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
    // A client that panicked (a terminal callback that never came) left its tasks unfinished.
    let mut failed_clients = 0;
    for j in joins {
        if j.await.is_err() {
            failed_clients += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    samples.push(("end", sample(pid)));
    // Idle blocking-pool threads and pooled connections time out after ~10 s.
    tokio::time::sleep(Duration::from_secs(12)).await; // letting idle timers expire, not a sync
    samples.push(("end + 12 s idle", sample(pid)));
    let adversarial = adversarial_loads(&exec, &rx, &mut samples).await;
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
    let terminal_cbs: Vec<serde_json::Value> =
        rx.callbacks().into_iter().filter(is_terminal).collect();
    let terminals = terminal_cbs.len();
    let total_ids = (per_client * clients) as i64;
    let not_completed = terminal_cbs
        .iter()
        .filter(|c| json_i64(&c["task_id"]).is_some_and(|t| (1..=total_ids).contains(&t)))
        .filter(|c| c["status"] != "COMPLETED")
        .count();
    println!("\n| point | RSS | open fds | threads |\n|---|---|---|---|");
    for (name, (rss, fds, threads)) in &samples {
        println!(
            "| {name} | {:.1} MiB | {fds} | {threads} |",
            *rss as f64 / 1024.0
        );
    }
    let total = per_client * clients;
    println!("\n{total} tasks ({} subtasks) in {secs:.1} s; leaked processes: {leaked}; zombie children: {zombies}", total * 2);
    let subtasks = total * 2 + adversarial.big_prompts;
    println!(
        "terminal callbacks: {terminals} of {subtasks} subtasks (lost: {})",
        subtasks.saturating_sub(terminals)
    );
    println!(
        "event-stream entries after {} SSE ids: {:?}",
        adversarial.sse_ids, adversarial.entries
    );
    let start_fds = samples[0].1 .1;
    let end_fds = samples.last().map_or(0, |s| s.1 .1);
    let mut leaks = Vec::new();
    if adversarial.idle_fds_after > start_fds + FD_SLACK {
        leaks.push(format!(
            "{} fds after the idle sockets (start {start_fds})",
            adversarial.idle_fds_after
        ));
    }
    if end_fds > start_fds + FD_SLACK {
        leaks.push(format!("{end_fds} fds at the end (start {start_fds})"));
    }
    if adversarial.entries != Some(0) {
        leaks.push(format!("event-stream entries: {:?}", adversarial.entries));
    }
    if leaked > 0 || zombies > 0 {
        leaks.push(format!(
            "{leaked} leaked processes, {zombies} zombie children"
        ));
    }
    if terminals != subtasks {
        leaks.push(format!(
            "{terminals} terminal callbacks for {subtasks} subtasks (lost or duplicated)"
        ));
    }
    if failed_clients > 0 || not_completed > 0 {
        leaks.push(format!(
            "unfinished: {failed_clients} clients gave up waiting, {not_completed} soak \
             subtasks did not complete"
        ));
    }
    if !leaks.is_empty() {
        eprintln!("VIOLATED: {}", leaks.join("; "));
        // `exit` runs no destructors: stop the executor (and its agents) first.
        drop(exec);
        std::process::exit(1);
    }
}

/// What the adversarial loads left behind.
struct Adversarial {
    idle_fds_after: usize,
    sse_ids: usize,
    entries: Option<u64>,
    big_prompts: usize,
}

/// Idle sockets, SSE churn and big prompts, one after the other, each sampled.
async fn adversarial_loads(
    exec: &Executor,
    rx: &CallbackReceiver,
    samples: &mut Vec<(&'static str, (u64, usize, u64))>,
) -> Adversarial {
    let pid = exec.pid();
    let idle = env_usize("SOAK_IDLE", 2_000);
    let mut socks = Vec::with_capacity(idle);
    for _ in 0..idle {
        match TcpStream::connect(("127.0.0.1", exec.port())).await {
            Ok(s) => socks.push(s),
            Err(e) => {
                println!("idle socket {}: {e}", socks.len());
                break;
            }
        }
    }
    let (status, _) = exec.get("/health").await;
    println!("GET /health beside {} idle sockets: {status}", socks.len());
    samples.push(("with idle sockets", sample(pid)));
    // Past the header timeout: the executor must have closed every one of them.
    let wait = Duration::from_secs(HEADER_TIMEOUT_SECS * 3);
    tokio::time::sleep(wait).await; // letting the header timeout expire, not a sync
                                    // Sampled while the clients still hold their sockets: only the executor can have closed them.
    let after_idle = sample(pid);
    samples.push(("idle sockets + 6 s", after_idle));
    drop(socks);

    let sse_ids = env_usize("SOAK_SSE_IDS", 20_000);
    let batch = env_usize("SOAK_SSE_BATCH", 500).max(1);
    let ids: Vec<i64> = (0..sse_ids as i64)
        .map(|i| i - sse_ids as i64 / 2)
        .collect();
    for chunk in ids.chunks(batch) {
        let open = chunk.iter().map(|id| open_stream(exec.port(), *id));
        drop(futures::future::join_all(open).await);
    }
    let entries = wait_metric(exec, "executor_event_streams", 0).await;
    samples.push(("after SSE churn", sample(pid)));

    let big = env_usize("SOAK_BIG_PROMPTS", 8);
    let prompt = "x".repeat(env_usize("SOAK_PROMPT_MB", 1) << 20);
    let posts = (0..big).map(|i| {
        let task = seed_task(900_000 + i as i64, 1, &prompt);
        async move { exec.post_json("/api/tasks/execute", &task).await }
    });
    futures::future::join_all(posts).await;
    for i in 0..big {
        let id = 900_000 + i as i64;
        rx.wait_terminal(id, 1, Duration::from_secs(120)).await;
        exec.delete(&format!("/api/tasks/session?task_id={id}"))
            .await;
    }
    samples.push(("after big prompts", sample(pid)));
    Adversarial {
        idle_fds_after: after_idle.1,
        sse_ids,
        entries,
        big_prompts: big,
    }
}

/// Opens `/api/tasks/{id}/events` and returns once the answer's head arrived (or failed).
async fn open_stream(port: u16, task_id: i64) -> Option<TcpStream> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let head = format!("GET /api/tasks/{task_id}/events HTTP/1.1\r\nHost: x\r\n\r\n");
    sock.write_all(head.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(sock)
}

/// Polls an unlabelled metric until it is `want` (or 30 s pass); the last value seen.
async fn wait_metric(exec: &Executor, name: &str, want: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = match exec.client().get(exec.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok());
        if v == Some(want) || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling cadence
    }
}
