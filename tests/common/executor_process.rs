//! Runs the real `executor` binary as a child process, the way it runs in production, and gives
//! tests an HTTP client, its captured logs and control over its lifetime.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::watch;

use super::mock_anthropic::{claude_cli_path, real_claude_env, MockAnthropic};
use super::procs::{descendants_of, describe, is_alive, processes_in, signal, zombie_children_of};
use super::{wait_until, wait_until_blocking};

/// Default for [`ExecutorOptions::startup_timeout`].
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Executor::terminate`] waits for the process to exit after SIGTERM.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-request timeout of [`Executor::client`], so a hung route fails the test instead of
/// hanging it.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the scriptable fake CLI (`tests/fake-claude`), a sibling of the executor binary.
pub fn fake_claude_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fake-claude"))
}

/// How to start the executor. Build with [`ExecutorOptions::new`] and the chained setters.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// Extra environment, applied after the harness defaults (later entries win), so any
    /// default (`LOG_LEVEL`, `PORT`, …) can be overridden.
    pub env: Vec<(String, String)>,
    /// Variables to remove from the final environment (e.g. to test a missing `PATH`).
    pub env_remove: Vec<String>,
    /// `CALLBACK_URL`; unset when `None`.
    pub callback_url: Option<String>,
    /// `CLAUDE_BIN`; the fake CLI when `None`.
    pub claude_bin: Option<PathBuf>,
    /// Command-line arguments for the executor.
    pub args: Vec<String>,
    /// `WORKSPACE_ROOT`; `<tmp>/ws` when `None` (set it to keep a workspace across restarts;
    /// the caller then owns the directory).
    pub workspace: Option<PathBuf>,
    /// How long to wait for the `listening on http://…` log line.
    pub startup_timeout: Duration,
    /// Binary to run instead of the cargo-built `executor` (a stand-in, to check the harness
    /// itself, or a release build).
    pub program: Option<PathBuf>,
    /// RLIMIT_NOFILE (soft and hard) the executor starts under; inherited when `None`.
    pub fd_limit: Option<u64>,
    /// Whether each output line is echoed to the test's stderr (shown for failing tests);
    /// benchmarks turn it off, so that the echo is not counted as the load's CPU.
    pub echo: bool,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            env: Vec::new(),
            env_remove: Vec::new(),
            callback_url: None,
            claude_bin: None,
            args: Vec::new(),
            workspace: None,
            startup_timeout: STARTUP_TIMEOUT,
            program: None,
            fd_limit: None,
            echo: true,
        }
    }
}

impl ExecutorOptions {
    /// Defaults: fake CLI, no callback URL, no extra env.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the output lines (for [`Executor::logs`]) without echoing them to stderr.
    pub fn quiet(mut self) -> Self {
        self.echo = false;
        self
    }

    /// Adds one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds several environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Removes a variable (default or added) from the executor's environment.
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Sets `CALLBACK_URL` (usually `receiver.url()`).
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// Sets `CLAUDE_BIN`.
    pub fn claude_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.claude_bin = Some(path.into());
        self
    }

    /// Uses the pinned real Claude Code CLI, pointed at `mock`, offline and quiet.
    pub fn real_claude(self, mock: &MockAnthropic) -> Self {
        self.claude_bin(claude_cli_path())
            .envs(real_claude_env(mock))
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets `WORKSPACE_ROOT` to a directory the caller owns.
    pub fn workspace(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workspace = Some(dir.into());
        self
    }

    /// Runs `path` instead of the cargo-built executor.
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// Changes the startup deadline.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Starts the executor with at most `n` open files (soft and hard limit), as a container
    /// with a low `ulimit -n`.
    pub fn fd_limit(mut self, n: u64) -> Self {
        self.fd_limit = Some(n);
        self
    }
}

/// Why [`Executor::try_start`] failed, with everything needed to explain it.
pub struct StartFailure {
    /// What went wrong.
    pub reason: String,
    /// Exit status if the process exited by itself.
    pub status: Option<ExitStatus>,
    /// Everything it printed.
    pub logs: Vec<String>,
}

impl std::fmt::Debug for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (exit status: {:?})\nexecutor output:\n{}",
            self.reason,
            self.status,
            indent(&self.logs)
        )
    }
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Captured stdout+stderr lines, shared with the reader threads.
#[derive(Default)]
struct LogSink {
    lines: Mutex<Vec<String>>,
    port: Mutex<Option<u16>>,
    /// Number of output streams that reached EOF (2 = all output captured).
    closed: AtomicUsize,
    /// Bumped on every line and every EOF.
    events: watch::Sender<u64>,
    /// While set, the readers stop reading (a log collector that stalls): see
    /// [`Executor::pause_output`].
    paused: Mutex<bool>,
    resumed: Condvar,
    /// The read end of the stdout pipe (for [`Executor::unread_output_bytes`]).
    stdout_fd: Mutex<Option<i32>>,
}

/// Extracts the port from a `… listening on http://<ip>:<port>` log line.
pub fn parse_listening_port(line: &str) -> Option<u16> {
    const MARK: &str = "listening on http://";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let host_port = rest
        .split(|c: char| c.is_whitespace() || c == '/' || c == '"')
        .next()?;
    let digits: String = host_port
        .rsplit(':')
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|p| *p != 0)
}

fn pump(stream: impl Read, name: &'static str, pid: u32, sink: Arc<LogSink>, echo: bool) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let mut paused = sink.paused.lock().unwrap();
        while *paused {
            paused = sink.resumed.wait(paused).unwrap();
        }
        drop(paused);
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                // Shown by the test runner for failing tests only (output capture is inherited).
                if echo {
                    eprintln!("[executor {pid} {name}] {line}");
                }
                if let Some(port) = parse_listening_port(&line) {
                    sink.port.lock().unwrap().get_or_insert(port);
                }
                sink.lines.lock().unwrap().push(line);
                sink.events.send_modify(|v| *v += 1);
            }
        }
    }
    if name == "stdout" {
        // Before the pipe is closed (its number may be reused).
        *sink.stdout_fd.lock().unwrap() = None;
    }
    drop(reader);
    sink.closed.fetch_add(1, Ordering::SeqCst);
    sink.events.send_modify(|v| *v += 1);
}

fn indent(lines: &[String]) -> String {
    if lines.is_empty() {
        return "  (no output)".to_string();
    }
    lines
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long leftovers may take to disappear by themselves (a child being reaped, a process
/// group dying after its SIGKILL) before they count as left behind.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// A running executor process.
///
/// Dropping it checks that the executor leaves nothing behind, then cleans up: if it still
/// runs, it must have no zombie children and must stop on SIGTERM, and once it exited no
/// process may still work in its directories. Any of these fails the test (unless the test is
/// already failing, or it simulated a crash with [`Executor::kill`], or it called
/// [`Executor::allow_leftovers`]). Whatever is left is SIGKILLed either way. Tests that want
/// the check at a precise moment call [`Executor::assert_no_leftovers`].
pub struct Executor {
    child: Child,
    exit: Option<ExitStatus>,
    /// Set by [`Executor::kill`] (a simulated crash leaves the agents running on purpose) and
    /// by [`Executor::allow_leftovers`]: `Drop` then cleans up without failing the test.
    leftovers_expected: bool,
    port: u16,
    client: reqwest::Client,
    sink: Arc<LogSink>,
    workspace: PathBuf,
    home: PathBuf,
    /// Declared last: removed only after `Drop` has killed everything that used it.
    tmp: tempfile::TempDir,
}

impl Executor {
    /// Starts the executor and waits until it listens; panics with its output if it does not.
    pub async fn start(opts: ExecutorOptions) -> Executor {
        match Self::try_start(opts).await {
            Ok(e) => e,
            Err(f) => panic!("executor failed to start: {f}"),
        }
    }

    /// Starts the executor; `Err` if it exits or stays silent past the startup deadline
    /// (for tests of startup errors, e.g. bad configuration).
    pub async fn try_start(opts: ExecutorOptions) -> Result<Executor, StartFailure> {
        let tmp = tempfile::Builder::new()
            .prefix("executor-e2e-")
            .tempdir()
            .expect("create a temporary directory for the executor");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).expect("create HOME for the executor");
        let workspace = opts
            .workspace
            .clone()
            .unwrap_or_else(|| tmp.path().join("ws"));
        std::fs::create_dir_all(&workspace).expect("create WORKSPACE_ROOT for the executor");
        let claude_bin = opts.claude_bin.clone().unwrap_or_else(fake_claude_path);

        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
            ("HOME".into(), home.display().to_string()),
            ("WORKSPACE_ROOT".into(), workspace.display().to_string()),
            ("PORT".into(), "0".into()),
            ("BIND_ADDRESS".into(), "127.0.0.1".into()),
            ("LOG_LEVEL".into(), "DEBUG".into()),
            ("CLAUDE_BIN".into(), claude_bin.display().to_string()),
            // No pre-started agno client unless a test asks for one (process-count checks).
            ("AGNO_POOL_SIZE".into(), "0".into()),
        ];
        if let Some(url) = &opts.callback_url {
            env.push(("CALLBACK_URL".into(), url.clone()));
        }
        env.extend(opts.env.iter().cloned());

        let program = opts
            .program
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_executor")));
        let mut cmd = Command::new(&program);
        cmd.env_clear()
            .args(&opts.args)
            .current_dir(tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: Drop can kill everything the executor spawned that stayed in it.
            .process_group(0);
        if let Some(n) = opts.fd_limit {
            let lim = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe; the closure touches only its copy.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        for (k, v) in &env {
            if !opts.env_remove.contains(k) {
                cmd.env(k, v);
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", program.display()));
        let pid = child.id();
        let sink = Arc::new(LogSink::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            use std::os::fd::AsRawFd;
            *sink.stdout_fd.lock().unwrap() = Some(stdout.as_raw_fd());
        }
        let echo = opts.echo;
        for (name, stream) in [
            ("stdout", Box::new(stdout) as Box<dyn Read + Send>),
            ("stderr", Box::new(stderr)),
        ] {
            let sink = sink.clone();
            std::thread::Builder::new()
                .name(format!("executor-{pid}-{name}"))
                .spawn(move || pump(stream, name, pid, sink, echo))
                .expect("spawn a log reader thread");
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("build the HTTP client");
        let mut exec = Executor {
            child,
            exit: None,
            leftovers_expected: false,
            port: 0,
            client,
            sink,
            workspace,
            home,
            tmp,
        };

        let deadline = tokio::time::Instant::now() + opts.startup_timeout;
        let mut events = exec.sink.events.subscribe();
        loop {
            events.borrow_and_update();
            let port = *exec.sink.port.lock().unwrap();
            if let Some(port) = port {
                exec.port = port;
                return Ok(exec);
            }
            if exec.try_reap() {
                exec.drain_logs(Duration::from_secs(2)).await;
                return Err(StartFailure {
                    reason: "the executor exited before logging `listening on http://…`".into(),
                    status: exec.exit,
                    logs: exec.logs(),
                });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                exec.kill();
                exec.drain_logs(Duration::from_secs(2)).await;
                return Err(StartFailure {
                    reason: format!(
                        "the executor did not log `listening on http://…` within {:?} \
                         (killed it)",
                        opts.startup_timeout
                    ),
                    status: None,
                    logs: exec.logs(),
                });
            }
            // Wake on new output; re-check the process every 100 ms in case it died silently.
            let wake = (deadline - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(wake, events.changed()).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `base_url() + path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// The port parsed from the `listening on` line.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `WORKSPACE_ROOT` (task `N` works in `workspace().join("N")`).
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// `HOME` given to the executor.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The temporary directory holding `home/` and `ws/` (kept alive by this struct).
    pub fn tmp_root(&self) -> &Path {
        self.tmp.path()
    }

    /// Process id of the executor.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops reading the executor's output, as a log collector that stalls: once the pipe is
    /// full, the executor's writes to stdout would block. [`Executor::resume_output`] (and
    /// `Drop`) read again.
    pub fn pause_output(&self) {
        *self.sink.paused.lock().unwrap() = true;
    }

    /// Reads the executor's output again after [`Executor::pause_output`].
    pub fn resume_output(&self) {
        *self.sink.paused.lock().unwrap() = false;
        self.sink.resumed.notify_all();
    }

    /// Capacity of the stdout pipe in bytes (`F_GETPIPE_SZ`; 0 once it is closed).
    pub fn output_pipe_size(&self) -> usize {
        let fd = self.sink.stdout_fd.lock().unwrap();
        let Some(fd) = *fd else { return 0 };
        // SAFETY: F_GETPIPE_SZ only reads the pipe's size; it stays open while the lock is held.
        let n = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
        n.max(0) as usize
    }

    /// Bytes written to stdout and not read yet (what fills the pipe while output is paused).
    pub fn unread_output_bytes(&self) -> usize {
        let fd = self.sink.stdout_fd.lock().unwrap();
        let Some(fd) = *fd else { return 0 };
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; the pipe stays open while the lock is held.
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        if rc == 0 {
            n.max(0) as usize
        } else {
            0
        }
    }

    /// HTTP client (no proxy, 30 s timeout) for requests the helpers do not cover.
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: String) -> (StatusCode, Value) {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => panic!(
                "{what}: request failed: {e}\nexecutor output (last 100 lines):\n{}",
                self.logs_tail(100)
            ),
        };
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_else(|e| {
            panic!(
                "{what}: reading the response body failed: {e}\nexecutor output:\n{}",
                self.logs_tail(100)
            )
        });
        (status, parse_body(&bytes))
    }

    /// `GET path` → (status, JSON body or `Value::String` of a non-JSON body).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path)), format!("GET {path}"))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.client.post(self.url(path)).json(body),
            format!("POST {path}"),
        )
        .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(self.url(path)), format!("DELETE {path}"))
            .await
    }

    /// `POST path` with raw bytes (malformed JSON, wrong content type, huge bodies…).
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path)).body(body.into());
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.send(req, format!("POST {path} (raw)")).await
    }

    /// Every line printed so far (stdout and stderr interleaved in arrival order).
    pub fn logs(&self) -> Vec<String> {
        self.sink.lines.lock().unwrap().clone()
    }

    /// The last `n` lines, indented, for panic messages.
    pub fn logs_tail(&self, n: usize) -> String {
        let logs = self.logs();
        indent(&logs[logs.len().saturating_sub(n)..])
    }

    /// Panics (listing the lines) if any log line contains `needle` — e.g. a secret.
    pub fn assert_logs_exclude(&self, needle: &str) {
        let hits: Vec<String> = self
            .logs()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect();
        assert!(
            hits.is_empty(),
            "the executor logged {needle:?} in {} line(s):\n{}",
            hits.len(),
            indent(&hits)
        );
    }

    /// Waits (woken per line) for a log line satisfying `pred`; returns it. Panics with the
    /// output on timeout.
    pub async fn wait_for_log_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = self.sink.events.subscribe();
        loop {
            events.borrow_and_update();
            if let Some(line) = self.logs().into_iter().find(|l| pred(l)) {
                return line;
            }
            if tokio::time::timeout_at(deadline, events.changed())
                .await
                .is_err()
            {
                if let Some(line) = self.logs().into_iter().find(|l| pred(l)) {
                    return line;
                }
                panic!(
                    "no matching executor log line within {timeout:?}; output:\n{}",
                    self.logs_tail(200)
                );
            }
        }
    }

    /// Waits for a log line containing `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let n = needle.to_string();
        self.wait_for_log_line(timeout, move |l| l.contains(&n))
            .await
    }

    /// Reaps the process if it exited; true if it has.
    fn try_reap(&mut self) -> bool {
        if self.exit.is_some() {
            return true;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                true
            }
            _ => false,
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        !self.try_reap()
    }

    /// Waits up to `timeout` for the process to exit by itself; its status, or `None`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_reap()).await;
        if self.exit.is_some() {
            self.drain_logs(Duration::from_secs(5)).await;
        }
        self.exit
    }

    /// Waits until both output pipes closed, so `logs()` is complete (best effort: a leaked
    /// grandchild may keep a pipe open).
    async fn drain_logs(&self, timeout: Duration) {
        let sink = &self.sink;
        wait_until(timeout, || sink.closed.load(Ordering::SeqCst) >= 2).await;
    }

    /// SIGTERM, then waits up to 20 s for the exit; returns the status. Panics (after
    /// SIGKILL) with the output if it does not exit in time.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(TERMINATE_TIMEOUT).await
    }

    /// [`terminate`](Self::terminate) with a chosen deadline.
    pub async fn terminate_within(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        signal(self.pid(), libc::SIGTERM);
        if !wait_until(timeout, || self.try_reap()).await {
            self.kill();
            panic!(
                "the executor did not exit within {timeout:?} after SIGTERM (killed it); \
                 output:\n{}",
                self.logs_tail(200)
            );
        }
        self.drain_logs(Duration::from_secs(5)).await;
        self.exit.expect("reaped")
    }

    /// Sends `sig` to the executor only (e.g. `libc::SIGINT`).
    pub fn signal(&self, sig: libc::c_int) {
        if self.exit.is_none() {
            signal(self.pid(), sig);
        }
    }

    /// SIGKILL (simulated crash) and reap; returns the status. Children are not touched, so
    /// `Drop` no longer counts them as leaked (the next instance or `Drop` ends them).
    pub fn kill(&mut self) -> ExitStatus {
        self.leftovers_expected = true;
        self.sigkill()
    }

    /// Says this test leaves processes behind on purpose (e.g. a daemon outside any task
    /// directory): `Drop` still ends them, but does not fail the test.
    pub fn allow_leftovers(&mut self) {
        self.leftovers_expected = true;
    }

    /// What the executor should have ended or reaped by now. While it runs: zombie children
    /// (it is a subreaper: it must reap what it adopts) and processes in its directories that
    /// are not below it (escaped its supervision). Once it exited: every process still
    /// working in its directories.
    pub fn leftovers(&self) -> Vec<u32> {
        let pid = self.pid();
        let mut in_dirs = processes_in(self.tmp.path());
        if !self.workspace.starts_with(self.tmp.path()) {
            in_dirs.extend(processes_in(&self.workspace));
        }
        in_dirs.retain(|&p| p != pid);
        if self.exit.is_some() {
            return in_dirs;
        }
        let below = descendants_of(pid);
        let mut out = zombie_children_of(pid);
        out.extend(in_dirs.into_iter().filter(|p| !below.contains(p)));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Panics unless [`leftovers`](Self::leftovers) becomes empty within [`LEFTOVER_GRACE`]:
    /// the explicit form of the check `Drop` makes, for a chosen moment of a test.
    pub async fn assert_no_leftovers(&self) {
        let clean = wait_until(LEFTOVER_GRACE, || self.leftovers().is_empty()).await;
        assert!(
            clean,
            "executor {} left processes behind (zombie children, or processes in its \
             directories outside its supervision):\n{}\nexecutor output:\n{}",
            self.pid(),
            describe(&self.leftovers()),
            self.logs_tail(40)
        );
    }

    /// SIGKILL and reap (no-op once exited).
    fn sigkill(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        signal(self.pid(), libc::SIGKILL);
        let status = self.child.wait().expect("wait for the killed executor");
        self.exit = Some(status);
        status
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Output is read again, so that nothing the shutdown logs can hold the executor up.
        self.resume_output();
        let pid = self.pid();
        // Never panic while already panicking (that aborts the test binary); a simulated crash
        // leaves its agents running on purpose.
        let check = !std::thread::panicking() && !self.leftovers_expected;
        let mut problems: Vec<String> = Vec::new();
        if check && self.exit.is_none() {
            let settled =
                wait_until_blocking(LEFTOVER_GRACE, || zombie_children_of(pid).is_empty());
            if !settled {
                problems.push(format!(
                    "unreaped (zombie) children of the executor:\n{}",
                    describe(&zombie_children_of(pid))
                ));
            }
            // The executor's own shutdown must end everything it started.
            signal(pid, libc::SIGTERM);
            if !wait_until_blocking(TERMINATE_TIMEOUT, || self.try_reap()) {
                problems.push(format!(
                    "the executor did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM"
                ));
            }
        }
        self.sigkill();
        // Everything still in its process group, then anything else running in its dirs.
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
        if check && problems.is_empty() {
            // Whatever shutdown signalled gets a moment to die before it counts as leaked.
            wait_until_blocking(LEFTOVER_GRACE, || self.leftovers().is_empty());
        }
        let strays = self.leftovers();
        if !strays.is_empty() {
            if check {
                problems.push(format!(
                    "processes still working in the executor's directories after it exited:\n{}",
                    describe(&strays)
                ));
            } else {
                eprintln!(
                    "[harness] killing processes left behind by executor {pid}:\n{}",
                    describe(&strays)
                );
            }
            for p in &strays {
                signal(*p, libc::SIGKILL);
            }
            // Give the kernel a moment to tear them down before the directory is removed.
            wait_until_blocking(Duration::from_secs(2), || {
                strays.iter().all(|p| !is_alive(*p))
            });
        }
        if !problems.is_empty() {
            panic!(
                "executor {pid} left work behind (call `allow_leftovers()` only if the test \
                 means it):\n{}\nexecutor output:\n{}",
                problems.join("\n"),
                self.logs_tail(60)
            );
        }
    }
}

/// JSON if the body parses, `Null` if empty, else `Value::String` of the text.
pub fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
