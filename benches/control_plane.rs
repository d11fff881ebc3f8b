//! Control-plane benchmark: do the executor's own answers stay fast when the agents saturate
//! the CPU? Production's CLI is node (hundreds of ms of CPU per start), so besides the instant
//! fake CLI this runs a CPU-heavy one (`FAKE_CLAUDE_STARTUP_CPU_MS`, `FAKE_CLAUDE_LINE_CPU_US`;
//! defaults 15 ms and 200 µs), each with the agents' priority lowered (`AGENT_NICE=10` with
//! `AGENT_SCHED_POLICY` idle, then batch) and not (`AGENT_NICE=0`). Per scenario:
//! accept p50/p99 of 200 sequential new tasks; then 200 new tasks from 16 clients with `GET /`
//! and `/health` probed every 10 ms — accept p50/p99, probe p50/p99, POST → terminal callback
//! p50, tasks/s, and the executor's own CPU per task (utime + stime of its process). The fake
//! alone (started directly, same input, 16 at a time) gives the machine's ceiling for tasks/s.
//! So that the ratio is honest, two more columns say where the rest of the CPU went: the
//! bench's own (its HTTP clients, probes and callback receiver share the machine) and the whole
//! machine's per task (kernel included), next to the machine's per run of the fake alone.
//! Run with `cargo bench --bench control_plane`. Sizes: `BENCH_TASKS` (200), `BENCH_CLIENTS`
//! (16), `BENCH_CPU_START_MS` (15), `BENCH_CPU_LINE_US` (200); `BENCH_FAKES`
//! (`instant,cpu-heavy`) and `BENCH_PRIORITIES` (`idle:10,batch:10,off`) pick the scenarios;
//! `BENCH_ALONE_CLIENTS` (as `BENCH_CLIENTS`) runs the fake alone that many at a time;
//! `BENCH_LIVE_CAP` sets the executor's `MAX_LIVE_PROCESSES` (default 0: no cap);
//! `BENCH_EXECUTOR=/path` runs another build of the executor (before/after comparisons);
//! `BENCH_EXECUTOR_ENV=K=V,K=V` gives it extra environment; `BENCH_WORKSPACE_DIR` is where the
//! executors' workspaces go (default: the temp directory; all kept until the bench exits). Exits non-zero when a task is
//! left without its terminal callback. Targets (issue "control plane") are reported, not
//! asserted: timings depend on the machine.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::probe::{probe, stats};
use common::*;
use serde_json::{json, Value};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn task(task_id: i64) -> Value {
    json!({"task_id": task_id, "subtask_id": 1, "agent_type": "claude_code", "content": "hi"})
}

/// CPU time (user + system) the process `pid` itself has used.
fn cpu_of(pid: u32) -> Duration {
    common::procs::cpu_time(pid).unwrap_or_default()
}

/// CPU time the whole machine has spent busy (every CPU's user, nice, system, irq, softirq).
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let hz = common::procs::clock_ticks_per_second();
    let busy: u64 = [0, 1, 2, 5, 6]
        .iter()
        .map(|i| f.get(*i).copied().unwrap_or(0))
        .sum();
    Duration::from_micros(busy * 1_000_000 / hz)
}

/// One fake CLI run as the executor drives it (initialize, one user message, result), started
/// directly: what the machine sustains without the executor.
fn fake_alone_once(fake_env: &[(String, String)]) -> bool {
    let mut cmd = std::process::Command::new(fake_claude_path());
    cmd.args([
        "--output-format",
        "stream-json",
        "--input-format",
        "stream-json",
        "--verbose",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    for (k, v) in fake_env {
        cmd.env(k, v);
    }
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return false;
    };
    let init = json!({"type": "control_request", "request_id": "r1",
                      "request": {"subtype": "initialize"}});
    let user = json!({"type": "user", "message": {"role": "user", "content": "hi"}});
    let _ = writeln!(stdin, "{init}\n{user}");
    let mut ok = false;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.starts_with("{\"type\":\"result\"") {
            ok = true;
            break;
        }
    }
    drop(stdin);
    let _ = child.wait();
    ok
}

/// What the machine does without the executor.
#[derive(Clone, Copy)]
struct Alone {
    /// Tasks per second.
    rate: f64,
    /// Machine CPU (all processes, kernel included) per task.
    machine_ms: f64,
}

/// Tasks per second of `n` fake runs, `clients` at a time, and the machine's CPU per run.
fn fake_alone(n: usize, clients: usize, fake_env: &[(String, String)]) -> Alone {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let busy0 = machine_busy();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, env) = (next.clone(), fake_env.to_vec());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    assert!(fake_alone_once(&env), "a fake run did not finish");
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let busy = machine_busy().saturating_sub(busy0);
    Alone {
        rate: n as f64 / t0.elapsed().as_secs_f64(),
        machine_ms: busy.as_secs_f64() * 1000.0 / n as f64,
    }
}

struct Scenario<'a> {
    fake: &'static str,
    /// `policy:nice`, or `off`.
    priority: &'a str,
    fake_env: Vec<(String, String)>,
    /// The executor's `WORKSPACE_ROOT`, kept until the bench exits (see [`Workspaces`]).
    workspace: std::path::PathBuf,
}

/// Where the scenarios' executors keep their workspaces: one directory for the whole bench,
/// removed when it exits, not after each scenario. On a file system without a journal (ext4
/// created without one, as on our CI machines) the kernel skips every inode freed in the last
/// 5 s, 300 s while its inode table block is dirty, when it allocates a new one, looking each
/// up (`recently_deleted` in `find_inode_bit`): measured with `perf`, the mkdir and create
/// calls of a scenario run within minutes of another run's deleted workspace were 22% of the
/// executor's CPU samples. Deleting between scenarios would make each scenario pay for the
/// previous one's clean-up. `BENCH_WORKSPACE_DIR` puts it elsewhere (e.g. `/dev/shm`).
struct Workspaces(tempfile::TempDir);

impl Workspaces {
    fn new() -> Self {
        let mut b = tempfile::Builder::new();
        b.prefix("control-plane-bench-");
        let dir = match std::env::var("BENCH_WORKSPACE_DIR") {
            Ok(base) => b.tempdir_in(base),
            Err(_) => b.tempdir(),
        };
        Self(dir.expect("create the bench's workspace directory"))
    }

    /// A fresh `WORKSPACE_ROOT` for one scenario.
    fn for_scenario(&self, fake: &str, priority: &str) -> std::path::PathBuf {
        let dir = self
            .0
            .path()
            .join(format!("{fake}-{}", priority.replace(':', "-")));
        std::fs::create_dir_all(&dir).expect("create a scenario's workspace");
        dir
    }
}

/// Results of one scenario, as table cells.
struct Row {
    cells: Vec<String>,
    unfinished: usize,
}

async fn run(s: &Scenario<'_>, n: usize, clients: usize, alone: Alone) -> Row {
    let rx = CallbackReceiver::start();
    // Quiet: echoing every line of the executor's to the terminal would count as load.
    let mut opts = ExecutorOptions::new()
        .quiet()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-bench")
        .env("LOG_LEVEL", "info") // as production runs (the harness default is DEBUG)
        .env(
            "MAX_LIVE_PROCESSES",
            std::env::var("BENCH_LIVE_CAP").unwrap_or_else(|_| "0".into()),
        )
        .env(
            "AGENT_NICE",
            s.priority.split_once(':').map_or("0", |p| p.1),
        )
        .env(
            "AGENT_SCHED_POLICY",
            s.priority.split_once(':').map_or("idle", |p| p.0),
        )
        .env("SESSION_EOF_GRACE_MS", "500")
        .env("SESSION_TERM_GRACE_MS", "1000")
        .workspace(&s.workspace);
    for (k, v) in &s.fake_env {
        opts = opts.env(k.clone(), v.clone());
    }
    // Extra settings for the executor under test (`K=V,K=V`), e.g. an allocator option.
    for kv in std::env::var("BENCH_EXECUTOR_ENV")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((k, v)) = kv.split_once('=') {
            opts = opts.env(k.trim().to_string(), v.trim().to_string());
        }
    }
    if let Ok(p) = std::env::var("BENCH_EXECUTOR") {
        opts = opts.program(p); // another build, for before/after comparisons
    }
    let exec = Executor::start(opts).await;

    // Sequential accepts.
    let mut seq = Vec::new();
    for i in 0..n as i64 {
        let t0 = Instant::now();
        let (status, _) = exec
            .post_json("/api/tasks/execute", &task(10_000 + i))
            .await;
        seq.push(t0.elapsed());
        assert!(status.is_success());
    }
    let deadline = Duration::from_secs(300);
    rx.wait_for_terminals(n, deadline).await;
    exec.delete("/api/tasks/sessions/close").await;
    rx.clear();

    // 16 clients, probes every 10 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let port = exec.port();
    let probes: Vec<_> = ["/", "/health"]
        .into_iter()
        .map(|path| {
            let stop = stop.clone();
            std::thread::spawn(move || probe(port, path, Duration::from_millis(10), &stop))
        })
        .collect();
    let cpu0 = cpu_of(exec.pid());
    let me0 = cpu_of(std::process::id());
    let busy0 = machine_busy();
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let posts: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, next) = (exec.client(), exec.url("/api/tasks/execute"), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n as i64 {
                        return out;
                    }
                    let t = Instant::now();
                    let r = client.post(&url).json(&task(20_000 + i)).send().await;
                    assert!(r.is_ok_and(|r| r.status().is_success()));
                    out.push((20_000 + i, t, t.elapsed()));
                }
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for p in posts {
        accepted.extend(p.await.unwrap_or_default());
    }
    rx.wait_for_terminals(n, deadline).await;
    let elapsed = t0.elapsed();
    let cpu = cpu_of(exec.pid()).saturating_sub(cpu0);
    let bench_cpu = cpu_of(std::process::id()).saturating_sub(me0);
    let busy = machine_busy().saturating_sub(busy0);
    stop.store(true, Ordering::Relaxed);
    let mut probe_lat = Vec::new();
    for p in probes {
        probe_lat.push(p.join().unwrap_or_default());
    }
    let received = rx.received();
    let to_terminal: Vec<Duration> = accepted
        .iter()
        .filter_map(|(id, sent, _)| {
            received
                .iter()
                .find(|r| r.body["task_id"] == *id && is_terminal(&r.body))
                .map(|r| r.at.saturating_duration_since(*sent))
        })
        .collect();
    let unfinished = n - to_terminal.len();
    let (a50, a99) = stats(accepted.iter().map(|a| a.2).collect());
    let (s50, s99) = stats(seq);
    let (g50, g99) = stats(probe_lat[0].clone());
    let (h50, h99) = stats(probe_lat[1].clone());
    let (t50, _) = stats(to_terminal);
    let rate = n as f64 / elapsed.as_secs_f64();
    exec.delete("/api/tasks/sessions/close").await;
    Row {
        cells: vec![
            s.fake.to_string(),
            s.priority.to_string(),
            format!("{s50:.2} / {s99:.2}"),
            format!("{a50:.2} / {a99:.2}"),
            format!("{g50:.2} / {g99:.2}"),
            format!("{h50:.2} / {h99:.2}"),
            format!("{t50:.1}"),
            format!(
                "{rate:.0} ({:.0}% of {:.0})",
                rate / alone.rate * 100.0,
                alone.rate
            ),
            format!("{:.2}", cpu.as_secs_f64() * 1000.0 / n as f64),
            format!("{:.2}", bench_cpu.as_secs_f64() * 1000.0 / n as f64),
            format!(
                "{:.1} ({:.1})",
                busy.as_secs_f64() * 1000.0 / n as f64,
                alone.machine_ms
            ),
        ],
        unfinished,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env_u64("BENCH_TASKS", 200) as usize;
    let clients = env_u64("BENCH_CLIENTS", 16) as usize;
    let heavy = vec![
        (
            "FAKE_CLAUDE_STARTUP_CPU_MS".to_string(),
            env_u64("BENCH_CPU_START_MS", 15).to_string(),
        ),
        (
            "FAKE_CLAUDE_LINE_CPU_US".to_string(),
            env_u64("BENCH_CPU_LINE_US", 200).to_string(),
        ),
    ];
    let mut rows = Vec::new();
    let mut unfinished = 0;
    let workspaces = Workspaces::new();
    let fakes = std::env::var("BENCH_FAKES").unwrap_or_else(|_| "instant,cpu-heavy".into());
    let priorities =
        std::env::var("BENCH_PRIORITIES").unwrap_or_else(|_| "idle:10,batch:10,off".into());
    for (fake, env) in [("instant", Vec::new()), ("cpu-heavy", heavy)] {
        if !fakes.split(',').any(|f| f == fake) {
            continue;
        }
        let alone = fake_alone(
            n,
            env_u64("BENCH_ALONE_CLIENTS", clients as u64) as usize,
            &env,
        );
        for priority in priorities.split(',') {
            let s = Scenario {
                fake,
                priority,
                fake_env: env.clone(),
                workspace: workspaces.for_scenario(fake, priority),
            };
            let row = run(&s, n, clients, alone).await;
            unfinished += row.unfinished;
            rows.push(row.cells);
        }
    }
    println!(
        "\n{n} new tasks; accept and probe latencies in ms (p50 / p99); probes every 10 ms\n\n\
         | fake CLI | agent priority | accept, sequential | accept, {clients} clients | GET / | /health | POST → terminal p50 | tasks/s (vs fake alone) | executor CPU ms/task | bench client CPU ms/task | machine CPU ms/task (fake alone) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
    if unfinished > 0 {
        eprintln!("{unfinished} task(s) never got their terminal callback");
        std::process::exit(1);
    }
}
