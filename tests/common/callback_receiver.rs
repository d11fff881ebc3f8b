//! A real HTTP endpoint standing in for executor_manager's `POST /executor-manager/callback`.
//!
//! The executor reports progress by POSTing JSON to `CALLBACK_URL`; tests point that at
//! [`CallbackReceiver::url`] and assert on what arrived. The answer is programmable so that retry
//! behaviour (5xx retried, 4xx not) can be tested.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::watch;
use warp::Filter;

use super::server::{header_pairs, response, wait_on_events, BackgroundServer, Gate, Handler};

/// Statuses the executor sends when a subtask is over; [`CallbackReceiver::wait_terminal`] waits
/// for one of these.
pub const TERMINAL_STATUSES: [&str; 3] = ["COMPLETED", "FAILED", "CANCELLED"];

/// One request that reached the receiver, kept for assertions on payload, headers and timing.
#[derive(Clone, Debug)]
pub struct ReceivedCallback {
    /// HTTP method (normally `POST`).
    pub method: String,
    /// Request path (normally `/callback`).
    pub path: String,
    /// Parsed JSON body; a body that is not JSON is kept as `Value::String` of its text.
    pub body: Value,
    /// Request headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// When it arrived (for ordering / retry back-off checks).
    pub at: Instant,
    /// When it arrived, by the wall clock (to compare with times other processes wrote).
    pub wall: std::time::SystemTime,
    /// The HTTP status the receiver answered with.
    pub status: u16,
}

impl ReceivedCallback {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an id that should be an integer but may arrive as a string.
pub fn json_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// True if `cb` belongs to task `task_id`.
pub fn is_task(cb: &Value, task_id: i64) -> bool {
    json_i64(&cb["task_id"]) == Some(task_id)
}

/// True if `cb` belongs to subtask `subtask_id` of task `task_id`.
pub fn is_subtask(cb: &Value, task_id: i64, subtask_id: i64) -> bool {
    is_task(cb, task_id) && json_i64(&cb["subtask_id"]) == Some(subtask_id)
}

/// `result.value` of a callback (the agent's answer), `""` when absent.
pub fn value_of(cb: &Value) -> &str {
    cb["result"]["value"].as_str().unwrap_or("")
}

/// True if `cb` carries a terminal status (COMPLETED / FAILED / CANCELLED).
pub fn is_terminal(cb: &Value) -> bool {
    cb["status"]
        .as_str()
        .is_some_and(|s| TERMINAL_STATUSES.contains(&s))
}

#[derive(Default)]
struct Policy {
    /// Statuses for the next requests, consumed front first.
    next: VecDeque<u16>,
    /// Status for every request once `next` is empty; `None` = accept (200).
    always: Option<u16>,
}

#[derive(Default)]
struct State {
    attempts: Mutex<Vec<ReceivedCallback>>,
    /// First accepted terminal callback per (task, subtask), so waiting for one is O(1) even
    /// after tens of thousands of callbacks (soak runs).
    terminals: Mutex<std::collections::HashMap<(i64, i64), Value>>,
    policy: Mutex<Policy>,
    gate: Gate,
    /// Bumped on every recorded request and gate change; waiters re-check on each bump.
    events: watch::Sender<u64>,
}

/// The callback endpoint. All methods take `&self`, so one receiver can be shared by reference
/// (or in an `Arc`) while the executor runs.
pub struct CallbackReceiver {
    state: Arc<State>,
    server: Mutex<Option<BackgroundServer>>,
    port: u16,
}

impl CallbackReceiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub fn start() -> CallbackReceiver {
        Self::bind(0)
    }

    /// Starts a receiver on a given port (e.g. to bring one back on the port the executor was
    /// configured with, after a test simulated the manager being down).
    pub fn bind(port: u16) -> CallbackReceiver {
        let state = Arc::new(State::default());
        let server = BackgroundServer::start("callback-receiver", port, handler(state.clone()))
            .unwrap_or_else(|e| panic!("callback receiver: cannot bind 127.0.0.1:{port}: {e}"));
        let port = server.addr().port();
        CallbackReceiver {
            state,
            server: Mutex::new(Some(server)),
            port,
        }
    }

    /// Port the receiver listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Full URL of the callback endpoint, to pass as `CALLBACK_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// Closes the port: later callbacks get "connection refused" (manager down). Returns once
    /// the socket is closed.
    pub fn stop(&self) {
        if let Some(mut s) = self.server.lock().unwrap().take() {
            s.stop();
        }
    }

    /// Serves again on the same port, keeping everything recorded so far.
    pub fn restart(&self) {
        let mut guard = self.server.lock().unwrap();
        if guard.is_some() {
            return;
        }
        let server =
            BackgroundServer::start("callback-receiver", self.port, handler(self.state.clone()))
                .unwrap_or_else(|e| {
                    panic!(
                        "callback receiver: cannot re-bind 127.0.0.1:{}: {e}",
                        self.port
                    )
                });
        *guard = Some(server);
    }

    /// The next `n` requests are answered with `status` (e.g. 500 to test retries, 400 to test
    /// that 4xx is not retried). They are recorded in [`attempts`](Self::attempts) only.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut p = self.state.policy.lock().unwrap();
        p.next.extend(std::iter::repeat_n(status, n));
    }

    /// Every request (after those queued by `fail_next`) is answered with `status` until
    /// [`accept_all`](Self::accept_all).
    pub fn fail_always(&self, status: u16) {
        self.state.policy.lock().unwrap().always = Some(status);
    }

    /// Back to the default: answer 200 `{"status":"success"}` (also drops queued failures).
    pub fn accept_all(&self) {
        let mut p = self.state.policy.lock().unwrap();
        p.next.clear();
        p.always = None;
    }

    /// Parks every incoming callback unanswered until [`release`](Self::release) ("the
    /// manager is slow"), e.g. to check that the executor's HTTP API stays responsive.
    pub fn hold(&self) {
        self.state.gate.close();
    }

    /// Answers parked callbacks and stops parking.
    pub fn release(&self) {
        self.state.gate.open();
    }

    /// Waits until at least `n` callbacks are parked by [`hold`](Self::hold).
    pub async fn wait_for_held(&self, n: usize, timeout: Duration) {
        let st = &self.state;
        if wait_on_events(&st.events, timeout, || {
            (st.gate.parked() >= n).then_some(())
        })
        .await
        .is_none()
        {
            panic!(
                "callback receiver: expected {n} parked callback(s) within {timeout:?}, have {}; \
                 attempts so far:\n{}",
                st.gate.parked(),
                self.dump()
            );
        }
    }

    /// Forgets everything received so far (benchmarks use it between phases so that each
    /// wait scans only the current phase's callbacks).
    pub fn clear(&self) {
        self.state.attempts.lock().unwrap().clear();
        self.state.terminals.lock().unwrap().clear();
    }

    /// Every request received, in order, accepted or not (see `ReceivedCallback::status`).
    pub fn attempts(&self) -> Vec<ReceivedCallback> {
        self.state.attempts.lock().unwrap().clone()
    }

    /// Requests that were answered with an error status (injected failures, bad paths…).
    pub fn failed_attempts(&self) -> Vec<ReceivedCallback> {
        self.attempts()
            .into_iter()
            .filter(|a| a.status != 200)
            .collect()
    }

    /// Accepted callbacks with headers and arrival time.
    pub fn received(&self) -> Vec<ReceivedCallback> {
        self.attempts()
            .into_iter()
            .filter(|a| a.status == 200)
            .collect()
    }

    /// Bodies of the accepted callbacks, in arrival order.
    pub fn callbacks(&self) -> Vec<Value> {
        self.received().into_iter().map(|a| a.body).collect()
    }

    /// Accepted callbacks of one task.
    pub fn for_task(&self, task_id: i64) -> Vec<Value> {
        self.callbacks()
            .into_iter()
            .filter(|c| is_task(c, task_id))
            .collect()
    }

    /// Accepted callbacks of one subtask.
    pub fn for_subtask(&self, task_id: i64, subtask_id: i64) -> Vec<Value> {
        self.callbacks()
            .into_iter()
            .filter(|c| is_subtask(c, task_id, subtask_id))
            .collect()
    }

    /// Statuses of the accepted terminal callbacks of one subtask, in arrival order (one
    /// element when all is well).
    pub fn terminal_statuses(&self, task_id: i64, subtask_id: i64) -> Vec<String> {
        self.for_subtask(task_id, subtask_id)
            .iter()
            .filter(|c| is_terminal(c))
            .map(|c| c["status"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Panics unless each of `subtasks` of `task_id` has exactly one accepted terminal
    /// callback. On its own this only proves "no duplicate yet": call it once nothing more can
    /// arrive — after a later subtask of the same task finished (callbacks are delivered in
    /// order per task; [`super::tasks::assert_one_terminal_each`] does that) or after the
    /// executor exited and delivered everything.
    pub fn assert_one_terminal_now(&self, task_id: i64, subtasks: &[i64]) {
        for &sub in subtasks {
            let statuses = self.terminal_statuses(task_id, sub);
            assert_eq!(
                statuses.len(),
                1,
                "task {task_id} subtask {sub}: exactly one terminal callback expected, got \
                 {statuses:?}; all requests:\n{}",
                self.dump()
            );
        }
    }

    /// Waits (woken by each new callback, no polling) until `pred` holds for the accepted
    /// callbacks and returns them; panics with everything received if `timeout` passes.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let found = wait_on_events(&self.state.events, timeout, || {
            let cbs = self.callbacks();
            pred(&cbs).then_some(cbs)
        })
        .await;
        match found {
            Some(cbs) => cbs,
            None => panic!(
                "callback receiver: condition not met within {timeout:?}; all requests received \
                 (status answered, body):\n{}",
                self.dump()
            ),
        }
    }

    /// Waits until terminal callbacks of at least `n` distinct subtasks were accepted; the
    /// check is a count, so a load test with thousands of callbacks does not copy them all on
    /// each arrival (as [`wait_for`](Self::wait_for) does). Panics if `timeout` passes.
    pub async fn wait_for_terminals(&self, n: usize, timeout: Duration) {
        let found = wait_on_events(&self.state.events, timeout, || {
            (self.state.terminals.lock().unwrap().len() >= n).then_some(())
        })
        .await;
        if found.is_none() {
            panic!(
                "callback receiver: {n} terminal callbacks expected within {timeout:?}, have                  {}; all requests received:\n{}",
                self.state.terminals.lock().unwrap().len(),
                self.dump()
            );
        }
    }

    /// Waits for the first callback of subtask (`task_id`, `subtask_id`) whose `status` is
    /// COMPLETED, FAILED or CANCELLED and returns it.
    pub async fn wait_terminal(&self, task_id: i64, subtask_id: i64, timeout: Duration) -> Value {
        let found = wait_on_events(&self.state.events, timeout, || {
            self.state
                .terminals
                .lock()
                .unwrap()
                .get(&(task_id, subtask_id))
                .cloned()
        })
        .await;
        match found {
            Some(cb) => cb,
            None => panic!(
                "callback receiver: no terminal callback (COMPLETED/FAILED/CANCELLED) for task \
                 {task_id} subtask {subtask_id} within {timeout:?}; all requests received:\n{}",
                self.dump()
            ),
        }
    }

    /// Waits until at least `n` requests (accepted or not) arrived; for retry tests.
    pub async fn wait_for_attempts(&self, n: usize, timeout: Duration) -> Vec<ReceivedCallback> {
        let found = wait_on_events(&self.state.events, timeout, || {
            let a = self.attempts();
            (a.len() >= n).then_some(a)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "callback receiver: expected {n} request(s) within {timeout:?}; got:\n{}",
                self.dump()
            )
        })
    }

    /// Human-readable list of every request, for panic messages.
    pub fn dump(&self) -> String {
        let attempts = self.attempts();
        if attempts.is_empty() {
            return "  (none)".to_string();
        }
        let first = attempts[0].at;
        attempts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "  #{i} +{:?} {} {} -> {}: {}",
                    a.at.duration_since(first),
                    a.method,
                    a.path,
                    a.status,
                    a.body
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn handler(state: Arc<State>) -> Handler {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  headers: warp::http::HeaderMap,
                  body: Bytes| {
                let state = state.clone();
                async move { handle(&state, method, path.as_str().to_string(), headers, body).await }
            },
        )
        .boxed()
}

async fn handle(
    state: &State,
    method: warp::http::Method,
    path: String,
    headers: warp::http::HeaderMap,
    body: Bytes,
) -> warp::reply::Response {
    state.gate.pass(&state.events).await;
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let status = if method != warp::http::Method::POST || path != "/callback" {
        404
    } else if parsed.is_none() {
        400
    } else {
        let mut p = state.policy.lock().unwrap();
        p.next.pop_front().or(p.always).unwrap_or(200)
    };
    let record = ReceivedCallback {
        method: method.to_string(),
        path,
        body: parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
        headers: header_pairs(&headers),
        at: Instant::now(),
        wall: std::time::SystemTime::now(),
        status,
    };
    let terminal = (status == 200 && is_terminal(&record.body)).then(|| record.body.clone());
    state.attempts.lock().unwrap().push(record);
    // Indexed after the push: whoever sees the terminal also sees everything before it.
    if let Some(body) = terminal {
        if let (Some(t), Some(s)) = (json_i64(&body["task_id"]), json_i64(&body["subtask_id"])) {
            state
                .terminals
                .lock()
                .unwrap()
                .entry((t, s))
                .or_insert(body);
        }
    }
    state.events.send_modify(|v| *v += 1);
    let reply = match status {
        200 => json!({"status": "success", "message": "Successfully processed callback"}),
        404 => json!({"detail": "Not Found"}),
        400 => json!({"detail": "body is not JSON"}),
        s => json!({"detail": format!("injected failure {s}")}),
    };
    response(status, "application/json", reply.to_string(), &[])
}
