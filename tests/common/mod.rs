//! Shared end-to-end test harness for the executor service.
//!
//! - [`CallbackReceiver`]: stands in for executor_manager's callback endpoint;
//! - [`MockAnthropic`]: a Messages API mock that the real Claude Code CLI talks to;
//! - [`Executor`]: runs the `executor` binary as a child process and talks HTTP to it;
//! - [`procs`]: `/proc` helpers to prove no process or zombie is left behind;
//! - [`raw_http`]: HTTP/1.1 over a plain socket (chunked, slow or oversized bodies);
//! - [`wait_until`]: the sanctioned way to wait for a condition (never a bare sleep).
//!
//! Use it from a test file with `mod common;` and `use common::*;`.
#![allow(dead_code)]
#![allow(unused_imports)]

pub mod agno_env;
pub mod callback_receiver;
pub mod executor_process;
pub mod mock_anthropic;
pub mod mock_dify;
pub mod mock_openai;
pub mod probe;
pub mod procs;
pub mod raw_http;
pub mod routes;
pub mod scripts;
mod server;
pub mod tasks;
pub mod test_backend;

pub use callback_receiver::{
    is_subtask, is_task, is_terminal, json_i64, value_of, CallbackReceiver, ReceivedCallback,
    TERMINAL_STATUSES,
};
pub use executor_process::{fake_claude_path, Executor, ExecutorOptions, StartFailure};
pub use mock_anthropic::{
    claude_cli_path, last_user_message, last_user_text, real_claude_env, MockAnthropic, MockRequest,
};
pub use mock_openai::MockOpenAi;
pub use procs::{
    all_cmdlines, children_of, descendants_of, describe, is_alive, process_state, processes_in,
    zombie_children_of,
};
pub use raw_http::{post_chunked, request_head, send_raw, Pace, RawResponse};
pub use routes::{assert_route_errors, route_error_cases, RouteCase};
pub use scripts::write_executable;
pub use tasks::{
    assert_one_terminal_each, assert_still_serves, message_texts, padded_task, post_task, run_task,
    seed_task, start_fake, start_real, FAKE_WAIT,
};

use std::time::Duration;

/// Polls `cond` every 20 ms until it returns true or `timeout` passes; returns whether it
/// became true. This is the replacement for sleeps in tests: use it for state that has no
/// event to wait on (process tables, files), and assert on the result with a helpful message.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return cond();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the process `pid` (an executor) has no zombie child left: a child that died is
/// reaped shortly after, off the HTTP workers, so "dead" and "reaped" are two moments. Panics
/// with the zombies if some are still there after `timeout`.
pub async fn assert_reaped(pid: u32, timeout: Duration) {
    let reaped = wait_until(timeout, || zombie_children_of(pid).is_empty()).await;
    assert!(
        reaped,
        "zombies left unreaped: {}",
        describe(&zombie_children_of(pid))
    );
}

/// Blocking twin of [`wait_until`] for code that is not async (e.g. `Drop`).
pub fn wait_until_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
