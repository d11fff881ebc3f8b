//! Load benchmark: starts the release `executor` with the project's fake `claude` (instant
//! replies) and a local callback receiver, then measures what a platform operator cares about
//! (issue "Performance"): accept latency, throughput, `GET /` under load, event relay latency,
//! cancel latency, memory with live sessions and close-all. Run everything with
//! `cargo bench --workspace`; this part alone with `cargo bench --workspace --bench load`.
//! Prints a table and writes `target/bench-load.json`. Sizes: `BENCH_TASKS` (200 accept, 500
//! throughput), `BENCH_CLIENTS` (16), `BENCH_SESSIONS` ("100,500").
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::probe::{probe, stats};
use common::*;
use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn task(task_id: i64, sub: i64, content: &str) -> Value {
    json!({"task_id": task_id, "subtask_id": sub, "agent_type": "claude_code", "content": content})
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

fn terminals(rx: &CallbackReceiver, from_task: i64) -> usize {
    rx.callbacks()
        .iter()
        .filter(|c| is_terminal(c) && c["task_id"].as_i64().is_some_and(|t| t >= from_task))
        .count()
}

struct Bench {
    exec: Executor,
    rx: CallbackReceiver,
    rows: Vec<(String, String)>,
    json: serde_json::Map<String, Value>,
    /// Correctness figures that were violated (unfinished tasks, processes left behind…):
    /// any makes the run exit non-zero; timings are only reported.
    violations: Vec<String>,
}

impl Bench {
    fn row(&mut self, k: &str, v: String, j: Value) {
        self.rows.push((k.to_string(), v));
        self.json.insert(k.to_string(), j);
    }

    /// Ends the phase: closes its sessions and forgets its callbacks.
    async fn close_all(&self) {
        self.exec.delete("/api/tasks/sessions/close").await;
        self.rx.clear();
    }

    async fn accept(&mut self, n: usize) {
        let mut lat = Vec::new();
        for i in 0..n as i64 {
            let t0 = Instant::now();
            let (status, _) = self
                .exec
                .post_json("/api/tasks/execute", &task(1_000 + i, 1, "hi"))
                .await;
            lat.push(t0.elapsed());
            assert!(status.is_success());
        }
        let (p50, p99) = stats(lat);
        self.row(
            "accept latency, new tasks (each starts a CLI) p50 / p99",
            format!("{p50:.2} / {p99:.2} ms ({n} sequential POSTs)"),
            json!({"p50_ms": p50, "p99_ms": p99}),
        );
        self.rx
            .wait_for(Duration::from_secs(120), |_| {
                terminals(&self.rx, 1_000) >= n
            })
            .await;
        self.close_all().await;
    }

    /// Accept latency of follow-up subtasks on one live session (no process to start).
    async fn accept_follow_ups(&mut self, n: usize) {
        let id = 50_000i64;
        self.exec
            .post_json("/api/tasks/execute", &task(id, 0, "warm up"))
            .await;
        self.rx.wait_terminal(id, 0, Duration::from_secs(30)).await;
        let mut lat = Vec::new();
        for i in 1..=n as i64 {
            let t0 = Instant::now();
            self.exec
                .post_json("/api/tasks/execute", &task(id, i, "hi"))
                .await;
            lat.push(t0.elapsed());
        }
        self.rx
            .wait_terminal(id, n as i64, Duration::from_secs(120))
            .await;
        let (p50, p99) = stats(lat);
        self.row(
            "accept latency, follow-ups on a live session p50 / p99",
            format!("{p50:.2} / {p99:.2} ms ({n} sequential POSTs)"),
            json!({"p50_ms": p50, "p99_ms": p99}),
        );
        self.close_all().await;
    }

    async fn throughput(&mut self, n: usize, clients: usize) {
        let per_client = n.div_ceil(clients);
        let total = per_client * clients;
        let base = 100_000i64;
        let t0 = Instant::now();
        let mut joins = Vec::new();
        for c in 0..clients {
            let (client, url) = (self.exec.client(), self.exec.url("/api/tasks/execute"));
            joins.push(tokio::spawn(async move {
                for i in 0..per_client {
                    let _ = client
                        .post(&url)
                        .json(&task(base + (c * per_client + i) as i64, 1, "hi"))
                        .send()
                        .await;
                }
            }));
        }
        // `GET /` latency while the load runs.
        let (client, url) = (self.exec.client(), self.exec.url("/"));
        let prober = tokio::spawn(async move {
            let mut lat = Vec::new();
            let stop = Instant::now() + Duration::from_secs(120);
            while Instant::now() < stop {
                let t = Instant::now();
                if client.get(&url).send().await.is_err() {
                    break;
                }
                lat.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await; // pacing of the probe, not a sync
                if lat.len() >= 2_000 {
                    break;
                }
            }
            lat
        });
        for j in joins {
            let _ = j.await;
        }
        self.rx
            .wait_for(Duration::from_secs(300), |_| {
                terminals(&self.rx, base) >= total
            })
            .await;
        let secs = t0.elapsed().as_secs_f64();
        prober.abort();
        let done = terminals(&self.rx, base);
        if done != total {
            self.violations.push(format!(
                "throughput: {done} terminal callbacks for {total} tasks"
            ));
        }
        self.row(
            "throughput",
            format!("{:.0} tasks/s ({total} tasks, {clients} clients, {} unfinished)", done as f64 / secs, total - done),
            json!({"tasks_per_s": done as f64 / secs, "tasks": total, "clients": clients, "unfinished": total - done}),
        );
        self.close_all().await;
        let (client, url) = (self.exec.client(), self.exec.url("/"));
        let _ = client.get(&url).send().await;
    }

    async fn health_under_load(&mut self, n: usize, clients: usize) {
        let base = 150_000i64;
        let per_client = n.div_ceil(clients);
        let mut joins = Vec::new();
        for c in 0..clients {
            let (client, url) = (self.exec.client(), self.exec.url("/api/tasks/execute"));
            joins.push(tokio::spawn(async move {
                for i in 0..per_client {
                    let _ = client
                        .post(&url)
                        .json(&task(base + (c * per_client + i) as i64, 1, "hi"))
                        .send()
                        .await;
                }
            }));
        }
        // The probe runs on its own OS thread with a blocking keep-alive connection, so the
        // load generator's runtime does not sit in the measured path.
        let port = self.exec.port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = {
            let stop = stop.clone();
            std::thread::spawn(move || probe(port, "/", Duration::ZERO, &stop))
        };
        for j in joins {
            let _ = j.await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let lat = probe.join().unwrap_or_default();
        let total = per_client * clients;
        self.rx
            .wait_for(Duration::from_secs(300), |_| {
                terminals(&self.rx, base) >= total
            })
            .await;
        let (p50, p99) = stats(lat.clone());
        self.row(
            "GET / under load p50 / p99",
            format!("{p50:.2} / {p99:.2} ms ({} probes)", lat.len()),
            json!({"p50_ms": p50, "p99_ms": p99}),
        );
        self.close_all().await;
    }

    async fn relay(&mut self, n: i64) {
        let mut lat = Vec::new();
        for i in 0..n {
            let id = 180_000 + i;
            self.exec
                .post_json("/api/tasks/execute", &task(id, 1, "FAKE:stamp\nx"))
                .await;
            self.rx.wait_terminal(id, 1, Duration::from_secs(30)).await;
            let got = self.rx.received().into_iter().find(|r| {
                is_subtask(&r.body, id, 1)
                    && r.body["error_message"] == "Thinking: thinking.assistant_message_received"
            });
            let Some(cb) = got else { continue };
            let text = cb.body["result"]["thinking"]
                .as_array()
                .and_then(|t| t.last())
                .map(|s| s["details"]["message"]["content"][0]["text"].clone());
            let stamp = text.and_then(|t| t.as_str()?.strip_prefix("stamp ")?.parse::<u128>().ok());
            let recv = cb
                .wall
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0);
            if let Some(s) = stamp {
                lat.push(Duration::from_micros(recv.saturating_sub(s) as u64));
            }
        }
        let (p50, p99) = stats(lat.clone());
        self.row(
            "event relay (CLI line → callback) p50 / p99",
            format!("{p50:.2} / {p99:.2} ms ({} samples)", lat.len()),
            json!({"p50_ms": p50, "p99_ms": p99}),
        );
        self.close_all().await;
    }

    async fn cancel(&mut self, n: i64) {
        let mut lat = Vec::new();
        for i in 0..n {
            let id = 200_000 + i;
            self.exec
                .post_json("/api/tasks/execute", &task(id, 1, "FAKE:sleep:60000\nhold"))
                .await;
            self.rx
                .wait_for(Duration::from_secs(30), |cbs| {
                    cbs.iter()
                        .any(|c| is_subtask(c, id, 1) && c["progress"] == 60)
                })
                .await;
            let t0 = Instant::now();
            self.exec
                .post_json(&format!("/api/tasks/cancel?task_id={id}"), &json!({}))
                .await;
            self.rx.wait_terminal(id, 1, Duration::from_secs(30)).await;
            lat.push(t0.elapsed());
        }
        let (p50, p99) = stats(lat);
        self.row(
            "cancel → CANCELLED callback p50 / p99",
            format!("{p50:.2} / {p99:.2} ms"),
            json!({"p50_ms": p50, "p99_ms": p99}),
        );
        self.close_all().await;
    }

    async fn sessions(&mut self, n: usize, idle_kib: u64) {
        let base = 300_000 + n as i64 * 10;
        for i in 0..n as i64 {
            self.exec
                .post_json("/api/tasks/execute", &task(base + i, 1, "hi"))
                .await;
        }
        self.rx
            .wait_for(Duration::from_secs(300), |_| terminals(&self.rx, base) >= n)
            .await;
        let pid = self.exec.pid();
        let (exe, tree) = (rss_kib(pid), tree_rss_kib(pid));
        let per = exe.saturating_sub(idle_kib) as f64 / n as f64;
        self.row(
            &format!("RSS with {n} live sessions"),
            format!(
                "executor {:.1} MiB ({per:.0} KiB/session over idle), whole tree {:.0} MiB",
                exe as f64 / 1024.0,
                tree as f64 / 1024.0
            ),
            json!({"executor_kib": exe, "per_session_kib": per, "tree_kib": tree}),
        );
        let t0 = Instant::now();
        let (_, body) = self.exec.delete("/api/tasks/sessions/close").await;
        let returned = t0.elapsed();
        let ws = self.exec.workspace().to_path_buf();
        wait_until(Duration::from_secs(30), || processes_in(&ws).is_empty()).await;
        let gone = t0.elapsed();
        let left = processes_in(&ws).len();
        if left > 0 {
            self.violations
                .push(format!("close-all of {n} sessions left {left} processes"));
        }
        self.row(
            &format!("close-all, {n} sessions"),
            format!("returns in {:.0} ms, all processes gone in {:.0} ms, {left} left (closed {})", returned.as_secs_f64() * 1e3, gone.as_secs_f64() * 1e3, body["closed"]),
            json!({"return_ms": returned.as_secs_f64() * 1e3, "gone_ms": gone.as_secs_f64() * 1e3, "left": left}),
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let accept_n = env_usize("BENCH_TASKS", 200);
    let clients = env_usize("BENCH_CLIENTS", 16);
    let sizes: Vec<usize> = std::env::var("BENCH_SESSIONS")
        .unwrap_or_else(|_| "100,500".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rx = CallbackReceiver::start();
    let opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-bench")
        .env("LOG_LEVEL", "info")
        .env("MAX_LIVE_PROCESSES", "0")
        .env("SESSION_EOF_GRACE_MS", "500")
        .env("SESSION_TERM_GRACE_MS", "1000");
    let exec = Executor::start(opts).await;
    let started = SystemTime::now();
    let mut b = Bench {
        exec,
        rx,
        rows: Vec::new(),
        json: serde_json::Map::new(),
        violations: Vec::new(),
    };
    let idle = rss_kib(b.exec.pid());
    b.row(
        "executor RSS idle",
        format!("{:.1} MiB", idle as f64 / 1024.0),
        json!({"kib": idle}),
    );
    for n in sizes {
        b.sessions(n, idle).await;
    }
    b.accept(accept_n).await;
    b.accept_follow_ups(accept_n).await;
    b.throughput(accept_n.max(500), clients).await;
    b.health_under_load(accept_n.max(500), clients).await;
    b.relay(50).await;
    b.cancel(30).await;
    println!("\n| metric | value |\n|---|---|");
    for (k, v) in &b.rows {
        println!("| {k} | {v} |");
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-load.json");
    let _ = std::fs::write(
        path,
        serde_json::to_string_pretty(&Value::Object(std::mem::take(&mut b.json)))
            .unwrap_or_default(),
    );
    println!(
        "\nJSON: {path} (run took {:.0} s)",
        started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0)
    );
    let pid = b.exec.pid();
    let zombies = zombie_children_of(pid).len();
    if zombies > 0 {
        b.violations.push(format!("{zombies} zombie children"));
    }
    let mut once: std::collections::HashMap<(i64, i64), usize> = Default::default();
    for c in b.rx.callbacks().iter().filter(|c| is_terminal(c)) {
        if let (Some(t), Some(s)) = (json_i64(&c["task_id"]), json_i64(&c["subtask_id"])) {
            *once.entry((t, s)).or_default() += 1;
        }
    }
    let duplicated = once.values().filter(|n| **n > 1).count();
    if duplicated > 0 {
        b.violations.push(format!(
            "{duplicated} subtasks with more than one terminal callback"
        ));
    }
    if !b.violations.is_empty() {
        eprintln!("VIOLATED: {}", b.violations.join("; "));
        // `exit` runs no destructors: stop the executor (and its agents) first.
        drop(b);
        std::process::exit(1);
    }
}
