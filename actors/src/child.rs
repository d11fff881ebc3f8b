//! The one way the executor starts a child process, and the reaper of the orphans it adopts.
//!
//! The executor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): processes an agent's tools
//! orphan are re-parented to it, and someone has to reap them or they stay zombies. The reaper
//! ([`start_reaper`]) may only ever take the exit status of such an *adopted* process: a child
//! the executor started itself (an agent, git, npm) has an owner waiting for its status, and a
//! stolen status turns into `No child processes (os error 10)` for that owner. So every child
//! is started by [`spawn`], which registers its pid before anyone can see it exit (the spawn
//! holds the registry lock across the fork), and [`OwnedChild`] unregisters it only after its
//! status was collected — also when the owner drops it without waiting (it is then killed and
//! reaped in the background). Anything else that starts a process is refused at compile time
//! by clippy's `disallowed-methods` (see `clippy.toml`); this module alone is allowed to.

use std::collections::{HashMap, HashSet};
use std::process::{ExitStatus, Output};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// Pids whose exit status belongs to an [`OwnedChild`] (never reaped by the reaper), with what
/// each one is.
static OWNED: LazyLock<Mutex<HashMap<u32, ChildKind>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// What a child is for (counted apart in `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// An agent process (the Claude Code CLI, an agno client).
    Agent,
    /// A short helper the executor runs itself (git, npm).
    Helper,
}

/// How often the reaper looks for adopted zombies even without a SIGCHLD (a backstop: signals
/// coalesce).
const REAP_BACKSTOP: Duration = Duration::from_secs(1);

fn owned() -> MutexGuard<'static, HashMap<u32, ChildKind>> {
    OWNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `pid` is a child the executor started itself (so not an adopted orphan).
pub fn is_owned(pid: u32) -> bool {
    owned().contains_key(&pid)
}

/// How many owned children of `kind` are alive (not yet reaped).
pub fn owned_count(kind: ChildKind) -> usize {
    owned().values().filter(|k| **k == kind).count()
}

/// A snapshot of the pids of the executor's own children (for process-tree walks that must
/// tell adopted processes from owned ones).
pub fn owned_pids() -> HashSet<u32> {
    owned().keys().copied().collect()
}

/// A child process started by [`spawn`]; its exit status is its owner's alone.
///
/// Dropping it without [`OwnedChild::wait`] kills it (SIGKILL to the process) and reaps it in
/// the background, so it never turns into a zombie nor lends its pid to the reaper.
#[derive(Debug)]
pub struct OwnedChild {
    child: Option<Child>,
    pid: Option<u32>,
    reaped: bool,
}

/// Starts `cmd` as an owned child: the only place in the executor that starts a process.
pub fn spawn(cmd: &mut Command, kind: ChildKind) -> std::io::Result<OwnedChild> {
    // The lock is held across the fork: the reaper (which takes it before deciding whose
    // zombie a pid is) cannot see this child exit before it is registered.
    let mut registry = owned();
    #[allow(clippy::disallowed_methods)] // the one sanctioned spawn
    let child = cmd.spawn()?;
    let pid = child.id();
    if let Some(pid) = pid {
        registry.insert(pid, kind);
    }
    Ok(OwnedChild {
        child: Some(child),
        pid,
        reaped: false,
    })
}

/// Runs `cmd` to its end through [`spawn`] with stdout and stderr captured (stdin closed):
/// the owned replacement for `Command::output`.
pub async fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = spawn(cmd, ChildKind::Helper)?;
    let (mut out, mut err) = (child.take_stdout(), child.take_stderr());
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    };
    let (stdout, stderr, status) = tokio::join!(read_out, read_err, child.wait());
    Ok(Output {
        status: status?,
        stdout,
        stderr,
    })
}

/// Runs `cmd` to its end through [`spawn`], inheriting stdout and stderr: the owned
/// replacement for `Command::status`.
pub async fn status(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    spawn(cmd, ChildKind::Helper)?.wait().await
}

impl OwnedChild {
    /// The child's pid (`None` once it was reaped, as tokio's `Child::id`).
    pub fn id(&self) -> Option<u32> {
        if self.reaped {
            None
        } else {
            self.pid
        }
    }

    /// Its stdin, if piped (once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    /// Its stdout, if piped (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Its stderr, if piped (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.as_mut().and_then(|c| c.stderr.take())
    }

    /// Waits for the child to exit and collects its status (then forgets its pid).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other("the child was already reaped"));
        };
        let status = child.wait().await;
        if status.is_ok() {
            self.reaped = true;
            self.release();
        }
        status
    }

    /// Sends SIGKILL to the child (not its group); a no-op once it exited.
    pub fn start_kill(&mut self) -> std::io::Result<()> {
        match self.child.as_mut() {
            Some(c) if !self.reaped => c.start_kill(),
            _ => Ok(()),
        }
    }

    fn release(&mut self) {
        if let Some(pid) = self.pid.take() {
            owned().remove(&pid);
        }
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if self.reaped || self.pid.is_none() {
            return;
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.start_kill();
        let pid = self.pid.take();
        // Reaped in the background; the pid stays registered until then.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if child.wait().await.is_ok() {
                    if let Some(pid) = pid {
                        owned().remove(&pid);
                    }
                }
            });
        }
        // Without a runtime (process exit) tokio's own orphan queue reaps it; the pid stays
        // registered, which only makes the reaper skip it.
    }
}

/// Reaps zombie children of the executor that it did not start itself (adopted orphans).
/// Returns how many were reaped.
pub fn reap_adopted() -> usize {
    if !any_zombie_child() {
        return 0; // the usual SIGCHLD: an owned child, already reaped by its owner
    }
    let me = std::process::id();
    // Read without the lock (a /proc scan takes milliseconds): a pid spawned meanwhile is
    // registered by the time the lock is taken below, since spawning holds it across the fork.
    // With children files only the executor's own children are read, zombies among them, and
    // `waitpid(WNOHANG)` below leaves the living ones alone.
    let zombies: Vec<u32> = crate::agent::family::children(me).unwrap_or_else(|| {
        crate::agent::family::process_table()
            .into_iter()
            .filter(|(_, ppid, state)| *ppid == me && *state == 'Z')
            .map(|(pid, _, _)| pid)
            .collect()
    });
    if zombies.is_empty() {
        return 0;
    }
    let registry = owned();
    let mut n = 0;
    for pid in zombies {
        if registry.contains_key(&pid) {
            continue;
        }
        if let Ok(p) = i32::try_from(pid) {
            let mut status = 0;
            // SAFETY: waitpid on one specific child pid that no owner waits for (it is not
            // registered, and registration happens under this lock before a child can exit).
            if unsafe { libc::waitpid(p, &mut status, libc::WNOHANG) } == p {
                n += 1;
            }
        }
    }
    n
}

/// Whether any child of the executor is a zombie, without reaping it (`WNOWAIT`): spares the
/// `/proc` scan when there is nothing to reap.
fn any_zombie_child() -> bool {
    // SAFETY: waitid writes into the siginfo it is given; WNOWAIT leaves the child waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc == 0 && info.si_pid() != 0
    }
}

/// Runs [`reap_adopted`] on every SIGCHLD (and once a second as a backstop) for the life of
/// the runtime.
pub fn start_reaper() {
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigchld = signal(SignalKind::child()).ok();
        let mut tick = tokio::time::interval(REAP_BACKSTOP);
        loop {
            match sigchld.as_mut() {
                Some(s) => {
                    tokio::select! {
                        _ = s.recv() => {}
                        _ = tick.tick() => {}
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            if let Ok(n) = tokio::task::spawn_blocking(reap_adopted).await {
                if n > 0 {
                    tracing::debug!("reaped {n} adopted orphan process(es)");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_owned_child_is_registered_until_its_status_is_collected() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 7"]);
        let mut child = spawn(&mut cmd, ChildKind::Helper).unwrap();
        let pid = child.id().unwrap();
        assert!(is_owned(pid));
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(7));
        assert!(!is_owned(pid));
        assert_eq!(child.id(), None);
    }

    #[tokio::test]
    async fn the_reaper_never_takes_an_owned_childs_status() {
        let mut cmd = Command::new("true");
        let mut child = spawn(&mut cmd, ChildKind::Helper).unwrap();
        let pid = child.id().unwrap();
        // Wait until it is a zombie, then let the reaper run over it: it must leave it alone.
        let zombie = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()))
                == Some('Z')
        });
        assert!(zombie, "the child never became a zombie");
        reap_adopted();
        assert!(child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn output_collects_both_streams() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = output(&mut cmd).await.unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[tokio::test]
    async fn a_dropped_child_is_killed_and_reaped() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let child = spawn(&mut cmd, ChildKind::Helper).unwrap();
        let pid = child.id().unwrap();
        drop(child);
        let mut gone = false;
        for _ in 0..500 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if !is_owned(pid) {
                gone = true;
                break;
            }
        }
        assert!(gone, "the dropped child was never reaped");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
