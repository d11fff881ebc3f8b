//! Bounded resources at the HTTP edge (issue 13 item 5): event streams of unknown tasks cost
//! nothing once their clients leave; idle and dribbling connections are closed; beyond the
//! connection cap the executor keeps answering probes and finishing tasks, also under a low
//! file-descriptor limit.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);

/// The value of an unlabelled metric in `/metrics`, `None` when absent.
async fn metric(exec: &Executor, name: &str) -> Option<u64> {
    let resp = exec.client().get(exec.url("/metrics")).send().await.ok()?;
    let text = resp.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `name` until it equals `want`; returns the last value seen.
async fn wait_metric(exec: &Executor, name: &str, want: u64, timeout: Duration) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = metric(exec, name).await;
        if v == Some(want) || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling cadence
    }
}

/// RSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Opens the event stream of `task_id` and returns the socket once the answer's head arrived.
async fn open_stream(port: u16, task_id: i64) -> TcpStream {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!("GET /api/tasks/{task_id}/events HTTP/1.1\r\nHost: x\r\n\r\n");
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, sock.read(&mut buf))
            .await
            .expect("the stream's head within the deadline")
            .unwrap();
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    sock
}

/// Subscribes to `ids` (up to `batch` open at once), then closes all of them.
async fn churn(port: u16, ids: std::ops::Range<i64>, batch: usize) {
    let ids: Vec<i64> = ids.collect();
    for chunk in ids.chunks(batch) {
        let socks = futures::future::join_all(chunk.iter().map(|id| open_stream(port, *id))).await;
        drop(socks);
    }
}

#[tokio::test]
async fn event_streams_of_unknown_tasks_leave_nothing_behind() {
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("LOG_LEVEL", "info"),
    )
    .await;
    let pid = exec.pid();
    // Warm-up round as large as the measured one: the allocator keeps the high-water mark of
    // the connections alive at once (more of them when the machine is loaded and closes are
    // noticed later), which is not the bus's growth; a leak per id grows in both rounds.
    churn(exec.port(), -8_000..0, 500).await;
    let left = wait_metric(&exec, "executor_event_streams", 0, WAIT).await;
    assert_eq!(left, Some(0), "entries left after the first 8,000 ids");
    let before = rss_kib(pid);
    churn(exec.port(), 0..8_000, 500).await;
    let left = wait_metric(&exec, "executor_event_streams", 0, WAIT).await;
    assert_eq!(left, Some(0), "entries left after 8,000 more ids");
    assert_eq!(metric(&exec, "executor_event_subscribers").await, Some(0));
    let after = rss_kib(pid);
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 8,000 unknown ids"
    );
    // Still a live stream for a task that starts after its subscriber connected.
    let mut early = open_stream(exec.port(), 4242).await;
    let (status, _) = exec
        .post_json("/api/tasks/execute", &seed_task(4242, 1, "hello"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"progress\":100") {
        let n = tokio::time::timeout(WAIT, early.read(&mut buf))
            .await
            .expect("the early subscriber gets the task's events")
            .unwrap();
        assert!(
            n > 0,
            "stream closed early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("\"status\":\"COMPLETED\""), "{text}");
    let _ = fds(pid);
}

/// Reads until the server closes the socket; true if it did within `timeout`.
async fn closed_by_server(sock: &mut TcpStream, timeout: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Opens `n` connections that never send a byte.
async fn idle_sockets(port: u16, n: usize) -> Vec<TcpStream> {
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        socks.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    socks
}

fn fast_timeouts() -> ExecutorOptions {
    ExecutorOptions::new()
        .env("LOG_LEVEL", "info")
        .env("HTTP_HEADER_TIMEOUT_SECS", "2")
        .env("HTTP_KEEPALIVE_TIMEOUT_SECS", "1")
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_timeouts() {
    let exec = Executor::start(fast_timeouts()).await;
    let pid = exec.pid();
    let baseline = fds(pid);
    let mut silent = idle_sockets(exec.port(), 300).await;
    // One kept-alive connection that made a request and then idles.
    let mut kept = TcpStream::connect(("127.0.0.1", exec.port()))
        .await
        .unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    assert!(
        closed_by_server(&mut kept, WAIT).await,
        "an idle kept-alive connection is closed"
    );
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, WAIT).await,
            "silent connection {i} is closed after the header timeout"
        );
    }
    assert!(
        wait_until(WAIT, || fds(pid) <= baseline + 2).await,
        "fds back to {baseline}: {}",
        fds(pid)
    );
    assert!(metric(&exec, "executor_http_connections_idle_closed_total").await >= Some(301));
}

#[tokio::test]
async fn a_dribbling_client_is_cut_off_after_the_header_timeout() {
    let exec = Executor::start(fast_timeouts()).await;
    let mut sock = TcpStream::connect(("127.0.0.1", exec.port()))
        .await
        .unwrap();
    sock.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    // One header byte every 100 ms: it never finishes its head, but never stays silent long.
    let mut cut = false;
    while started.elapsed() < WAIT {
        if sock.write_all(b"X").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(n)) => panic!("an answer to an unfinished head: {:?}", &buf[..n]),
            Err(_) => {}
        }
    }
    assert!(cut, "a dribbling client is still connected after {WAIT:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "cut off before it had a chance: {:?}",
        started.elapsed()
    );
    assert_eq!(exec.get("/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn beyond_the_fd_limit_probes_answer_and_a_running_task_completes() {
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("LOG_LEVEL", "info")
            // Timeouts out of play: only the cap can keep room.
            .env("HTTP_HEADER_TIMEOUT_SECS", "600")
            .env("HTTP_KEEPALIVE_TIMEOUT_SECS", "600")
            .fd_limit(512),
    )
    .await;
    let (status, _) = exec
        .post_json(
            "/api/tasks/execute",
            &seed_task(31, 1, "FAKE:sleep:3000\nhello"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let _idle = idle_sockets(exec.port(), 700).await;
    let t0 = std::time::Instant::now();
    let (status, _) = exec.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{}", exec.logs_tail(20));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "/health took {:?} beside 700 idle connections",
        t0.elapsed()
    );
    let (status, _) = exec
        .post_json("/api/tasks/execute", &seed_task(32, 1, "hello"))
        .await;
    assert_eq!(status, StatusCode::OK);
    for task in [31, 32] {
        let last = rx.wait_terminal(task, 1, WAIT).await;
        assert_eq!(
            last["status"],
            "COMPLETED",
            "task {task}: {last}\n{}",
            exec.logs_tail(30)
        );
    }
    assert!(fds(exec.pid()) < 512);
}

#[tokio::test]
async fn open_event_streams_and_idle_sockets_do_not_hold_up_shutdown() {
    let mut exec = Executor::start(ExecutorOptions::new().env("LOG_LEVEL", "info")).await;
    let _streams = futures::future::join_all((1..=5).map(|id| open_stream(exec.port(), id))).await;
    let _idle = idle_sockets(exec.port(), 20).await;
    let t0 = std::time::Instant::now();
    let status = exec.terminate_within(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", exec.logs_tail(30));
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "shutdown took {:?} with open streams",
        t0.elapsed()
    );
}
