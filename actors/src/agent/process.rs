//! One agent subprocess in its own process group, with its pipes turned into messages.
//!
//! The stdout reader, the stderr collector, the stdin writer and the reaper each run as a tokio
//! task; the owning actor only sees messages (lines, EOF, exit) tagged with a generation number
//! so that events of a previous process are told apart. Dropping an [`AgentProcess`] (e.g. when
//! its actor is killed and skips `post_stop`) SIGKILLs the whole group; the reaper task still
//! reaps the leader, so no zombie is left.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::family;
use super::live_processes::LiveSlot;
use super::priority::AgentPriority;
use crate::config::StopConfig;

/// After SIGKILL, how long to wait for the killed processes to be gone (dead or zombie).
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// How many stderr lines are kept for error messages.
const STDERR_TAIL_LINES: usize = 20;

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, when it exited by itself.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// What the pipes and the reaper report to the owning actor.
#[derive(Debug)]
pub enum ProcessEvent {
    /// One stdout line (without the newline).
    Line(String),
    /// stdout broke: a line over the limit, or a read error.
    StdoutFailed(String),
    /// stdout reached EOF; every line has been sent before this.
    StdoutClosed,
    /// stderr reached EOF; its last lines are in the tail.
    StderrClosed,
    /// The process has exited and been reaped.
    Exited(ExitInfo),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Program.
    pub program: PathBuf,
    /// Arguments (never secrets: those go in `env`).
    pub args: Vec<String>,
    /// Complete environment of the child (nothing is inherited beyond this).
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Longest stdout line accepted.
    pub max_line_bytes: usize,
    /// Unique tag put in the environment of the process (and so of its descendants).
    pub marker: String,
    /// How much lower than the executor's the agent's CPU priority is, inherited by everything
    /// the agent starts.
    pub priority: AgentPriority,
    /// Run as this user id (`AGENT_UID`); `None` keeps the executor's.
    pub uid: Option<u32>,
    /// Run with this group id (`AGENT_GID`); supplementary groups are dropped with it.
    pub gid: Option<u32>,
}

/// A running agent subprocess; see the module docs.
pub struct AgentProcess {
    pid: u32,
    marker: String,
    stdin: Option<mpsc::UnboundedSender<String>>,
    exit: watch::Receiver<Option<ExitInfo>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The live-process slot it holds, released by the reaper once the leader is reaped.
    slot: Arc<Mutex<Option<LiveSlot>>>,
    /// [`AgentProcess::terminate`] ended the family (its last step is the same SIGKILL sweep
    /// that `Drop` makes), so dropping it need not scan `/proc` and signal again.
    swept: bool,
}

impl AgentProcess {
    /// Starts the program in a new process group; `sink` receives its events.
    pub fn spawn(
        spec: &SpawnSpec,
        sink: impl Fn(ProcessEvent) -> bool + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .env(family::MARKER_ENV, &spec.marker)
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(gid) = spec.gid {
            cmd.gid(gid);
        }
        if let Some(uid) = spec.uid {
            // std drops the supplementary groups too when root changes the uid.
            cmd.uid(uid);
        }
        let mut child = crate::child::spawn(&mut cmd, crate::child::ChildKind::Agent)?;
        let pid = child.id().unwrap_or(0);
        spec.priority.apply(pid);
        let (stdout, stderr, stdin) =
            (child.take_stdout(), child.take_stderr(), child.take_stdin());
        let sink = Arc::new(sink);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (exit_tx, exit) = watch::channel(None);
        let mut tasks = Vec::new();
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        if let Some(stdin) = stdin {
            tasks.push(tokio::spawn(write_stdin(stdin, stdin_rx)));
        }
        if let Some(out) = stdout {
            tasks.push(tokio::spawn(read_stdout(
                out,
                spec.max_line_bytes,
                sink.clone(),
            )));
        }
        if let Some(err) = stderr {
            tasks.push(tokio::spawn(collect_stderr(
                err,
                pid,
                stderr_tail.clone(),
                sink.clone(),
            )));
        }
        // The reaper is not kept in `tasks`: it must outlive a dropped AgentProcess to reap.
        let reaper_sink = sink.clone();
        let slot: Arc<Mutex<Option<LiveSlot>>> = Arc::default();
        let reaper_slot = slot.clone();
        let priority = spec.priority;
        tokio::spawn(async move {
            let info = match child.wait_at(priority).await {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    ExitInfo {
                        code: status.code(),
                        signal: status.signal(),
                    }
                }
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                },
            };
            let _ = exit_tx.send(Some(info));
            drop(reaper_slot.lock().map(|mut s| s.take()));
            reaper_sink(ProcessEvent::Exited(info));
        });
        Ok(Self {
            pid,
            marker: spec.marker.clone(),
            stdin: Some(stdin_tx),
            exit,
            stderr_tail,
            tasks,
            slot,
            swept: false,
        })
    }

    /// Makes this process hold `slot` until its leader is reaped (at once if it already was),
    /// however it ends: by itself, retired in the background, or killed on drop.
    pub fn hold(&self, slot: LiveSlot) {
        if let Ok(mut held) = self.slot.lock() {
            *held = Some(slot);
        }
        if self.has_exited() {
            drop(self.slot.lock().map(|mut s| s.take()));
        }
    }

    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues one line for stdin (a newline is added). False when stdin is closed.
    pub fn send_line(&self, line: String) -> bool {
        self.stdin.as_ref().is_some_and(|tx| tx.send(line).is_ok())
    }

    /// The last stderr lines, for error messages.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// True once the leader has exited.
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Ends the process and every descendant: close stdin, wait `eof_grace`, SIGTERM the
    /// family, wait `term_grace`, SIGKILL the family (group, process tree, marked processes),
    /// and wait for the reaper. Returns how the agent process ended.
    pub async fn terminate(&mut self, stop: StopConfig) -> Option<ExitInfo> {
        let tree = self.family_snapshot().await;
        self.stdin = None;
        let exited = match self.wait_exit(stop.eof_grace).await {
            Some(info) => Some(info),
            None => {
                self.kill_family(libc::SIGTERM, tree.clone()).await;
                self.wait_exit(stop.term_grace).await
            }
        };
        // Survivors (tools that ignore SIGTERM, daemons) are killed whatever the CLI did.
        self.kill_family(libc::SIGKILL, tree).await;
        self.swept = true;
        match exited {
            Some(info) => Some(info),
            None => self.wait_exit(Duration::from_secs(5)).await,
        }
    }

    /// The agent's process tree now (a tool's parent may exit later, orphaning it).
    async fn family_snapshot(&self) -> Vec<u32> {
        let pid = self.pid;
        tokio::task::spawn_blocking(move || family::descendants(pid))
            .await
            .unwrap_or_default()
    }

    /// Signals the group, the known tree and every process carrying this agent's marker.
    async fn kill_family(&self, sig: i32, tree: Vec<u32>) {
        self.kill_group(sig);
        let (pid, marker) = (self.pid, self.marker.clone());
        let signalled = tokio::task::spawn_blocking(move || {
            let mut all = tree;
            all.extend(family::descendants(pid));
            all.extend(family::marked(&marker));
            family::signal_all(&all, sig);
            all
        })
        .await
        .unwrap_or_default();
        if sig == libc::SIGKILL && !signalled.is_empty() {
            family::wait_gone_async(signalled, KILL_SETTLE).await;
        }
    }

    /// Sends `sig` to the whole process group (a no-op for an unknown pid).
    pub fn kill_group(&self, sig: i32) {
        if let Ok(pgid) = i32::try_from(self.pid) {
            if pgid > 0 {
                // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
                unsafe {
                    libc::kill(-pgid, sig);
                }
            }
        }
    }

    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitInfo> {
        let waited = tokio::time::timeout(limit, self.exit.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|v| *v));
        waited.or_else(|| *self.exit.borrow())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if !self.swept {
            self.sweep_family();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl AgentProcess {
    /// SIGKILLs the group, the tree and the marked processes, off the caller's thread.
    /// Processes that left the group (own sessions, daemons, MCP servers) are found by their
    /// marker and by the process tree. The tree must be read *before* the leader dies (its
    /// children are re-parented then), so the scan and the kill run together.
    fn sweep_family(&mut self) {
        let (pid, marker) = (self.pid, std::mem::take(&mut self.marker));
        let sweep = move || {
            let mut all = family::descendants(pid);
            all.extend(family::marked(&marker));
            if let Ok(leader) = i32::try_from(pid).map(|p| p.max(0)) {
                if leader > 0 {
                    // SAFETY: signalling the process group this process leads.
                    unsafe {
                        libc::killpg(leader, libc::SIGKILL);
                    }
                }
            }
            family::signal_all(&all, libc::SIGKILL);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(sweep);
            }
            Err(_) => sweep(),
        }
    }
}

async fn write_stdin(mut stdin: ChildStdin, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(mut line) = rx.recv().await {
        line.push('\n');
        if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            break;
        }
    }
}

async fn read_stdout(
    out: ChildStdout,
    max_line_bytes: usize,
    sink: Arc<impl Fn(ProcessEvent) -> bool + Send + Sync + 'static>,
) {
    let mut lines = FramedRead::new(out, LinesCodec::new_with_max_length(max_line_bytes));
    while let Some(item) = lines.next().await {
        let ev = match item {
            Ok(line) => ProcessEvent::Line(line),
            Err(LinesCodecError::MaxLineLengthExceeded) => ProcessEvent::StdoutFailed(format!(
                "the agent wrote a stdout line longer than {max_line_bytes} bytes"
            )),
            Err(LinesCodecError::Io(e)) => {
                ProcessEvent::StdoutFailed(format!("reading agent stdout failed: {e}"))
            }
        };
        let failed = matches!(ev, ProcessEvent::StdoutFailed(_));
        if !sink(ev) || failed {
            return;
        }
    }
    sink(ProcessEvent::StdoutClosed);
}

async fn collect_stderr(
    err: ChildStderr,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
    sink: Arc<impl Fn(ProcessEvent) -> bool + Send + Sync + 'static>,
) {
    let mut lines = BufReader::new(err).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!("agent[{pid}] stderr: {}", crate::mask::mask_text(&line));
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
    sink(ProcessEvent::StderrClosed);
}

pub use crate::task_dir::create_private_dir;
