//! The one way the executor starts a child process, and the reaper of the orphans it adopts.
//!
//! The executor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): processes an agent's tools
//! orphan are re-parented to it, and someone has to reap them or they stay zombies. The reaper
//! ([`start_reaper`]) may only ever take the exit status of such an *adopted* process: a child
//! the executor started itself (an agent, git, npm) has an owner waiting for its status, and a
//! stolen status turns into `No child processes (os error 10)` for that owner. So every child
//! is started by [`spawn`], which registers its pid once the spawn returns, and [`OwnedChild`]
//! unregisters it only after its status was collected — also when the owner drops it without
//! waiting (it is then killed and reaped in the background). A child can exit before its spawn
//! returns; so a spawn under way is registered too, with the boot-clock tick at which it began,
//! and an unregistered child counts as adopted only if it was born before every spawn under way
//! began (see [`adopted_among`]). The registry lock is never held across a spawn: agents are
//! spawned from threads at the agents' low CPU priority, and a lock such a thread held while
//! its child execs would make every HTTP worker that ends a task wait on it.
//! Anything else that starts a process is refused at compile time by clippy's
//! `disallowed-methods` (see `clippy.toml`); this module alone is allowed to.

use std::collections::HashMap;
use std::process::{ExitStatus, Output};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// The executor's own children and the spawns under way.
#[derive(Default)]
struct Registry {
    /// Pids whose exit status belongs to an [`OwnedChild`] (never reaped by the reaper), with
    /// what each one is.
    owned: HashMap<u32, ChildKind>,
    /// Spawns under way, by ticket: the boot-clock tick at which each began. A child a spawn
    /// creates is born at or after that tick.
    spawning: HashMap<u64, u64>,
    next_ticket: u64,
}

impl Registry {
    /// Records a spawn as under way from now; returns its ticket.
    fn begin_spawn(&mut self) -> u64 {
        self.next_ticket += 1;
        self.spawning.insert(self.next_ticket, boot_tick());
        self.next_ticket
    }

    /// The tick at which the oldest spawn under way began.
    fn oldest_spawn(&self) -> Option<u64> {
        self.spawning.values().copied().min()
    }
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

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

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `pid` is a child the executor started itself (so not an adopted orphan).
pub fn is_owned(pid: u32) -> bool {
    registry().owned.contains_key(&pid)
}

/// How many owned children of `kind` are alive (not yet reaped).
pub fn owned_count(kind: ChildKind) -> usize {
    registry().owned.values().filter(|k| **k == kind).count()
}

/// The boot clock in the ticks `/proc/<pid>/stat` gives a process's birth in (`starttime`).
fn boot_tick() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let ns = (ts.tv_sec.max(0) as u64) * 1_000_000_000 + ts.tv_nsec.max(0) as u64;
    ns / (1_000_000_000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    static HZ: LazyLock<u64> = LazyLock::new(|| {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100)
    });
    *HZ
}

/// The tick at which `pid` was born (`starttime` in its `stat`), `None` once it is gone.
fn birth_tick(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // After the command: state, ppid, ... starttime is the 20th field.
    crate::agent::family::stat_fields(&stat)?
        .nth(19)?
        .parse()
        .ok()
}

/// Of `children` (children of the executor), the ones it adopted rather than started: not
/// registered, and — while spawns are under way — born before the oldest of them began, so
/// that a child whose spawn has not yet returned is never taken for an orphan (a child born in
/// the same tick waits for the next look).
pub fn adopted_among(children: &[u32]) -> Vec<u32> {
    let unowned: Vec<u32> = {
        let r = registry();
        let unowned: Vec<u32> = children
            .iter()
            .copied()
            .filter(|p| !r.owned.contains_key(p))
            .collect();
        if r.spawning.is_empty() {
            return unowned; // the usual case: decided under the lock, nothing to read
        }
        unowned
    };
    // Birth ticks are read without the lock; the decision is taken under it.
    let born: Vec<(u32, Option<u64>)> = unowned.iter().map(|p| (*p, birth_tick(*p))).collect();
    let r = registry();
    let oldest = r.oldest_spawn();
    born.into_iter()
        .filter(|(pid, born)| {
            let before_every_spawn = match (oldest, born) {
                (None, _) => true,
                (Some(o), Some(b)) => *b < o,
                (Some(_), None) => false,
            };
            before_every_spawn && !r.owned.contains_key(pid)
        })
        .map(|(pid, _)| pid)
        .collect()
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
    // Under way from before the fork until registered: the reaper, which decides under the
    // lock, never takes this child for an orphan even if it exits before the spawn returns.
    let ticket = registry().begin_spawn();
    #[allow(clippy::disallowed_methods)] // the one sanctioned spawn
    let spawned = cmd.spawn();
    let mut r = registry();
    r.spawning.remove(&ticket);
    let child = spawned?;
    let pid = child.id();
    if let Some(pid) = pid {
        r.owned.insert(pid, kind);
    }
    drop(r);
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

    /// Waits for the child to exit, then collects its status on a reaper thread at
    /// `priority` (as [`wait`](Self::wait) otherwise).
    ///
    /// Reaping a process frees its `/proc` entries, and when an agent's last thread is still
    /// tearing down entries someone looked up, the reaper spins in the kernel until that thread
    /// has run. The agent runs at the lowest priority, so a reaper on an HTTP worker spun for
    /// milliseconds per agent (38% of the executor's CPU under load, measured, while its family
    /// walks still created such entries: see `family::children_into`); any other reader of
    /// `/proc` can bring it back, and a reaper at the agent's priority yields to the agent at
    /// once. The exit is awaited without reaping, on a pidfd.
    pub async fn wait_at(
        &mut self,
        priority: crate::agent::priority::AgentPriority,
    ) -> std::io::Result<ExitStatus> {
        let pidfd = match self.pid {
            Some(pid) if priority.nice > 0 && !self.reaped => pidfd_open(pid),
            _ => None,
        };
        let Some(pidfd) = pidfd else {
            return self.wait().await;
        };
        // Readable once the process has exited; it stays a zombie (and its pid ours) until the
        // status is collected below.
        // SAFETY: the pidfd is owned by the AsyncFd until it is dropped; nothing else closes
        // or replaces it.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        };
        if let Ok(fd) = registered {
            let _ = fd.readable().await;
        }
        let Some(child) = self.child.take() else {
            return Err(std::io::Error::other("the child was already reaped"));
        };
        let reaped =
            crate::agent::launcher::run(priority, crate::agent::launcher::Lane::Reap, move || {
                let mut child = child;
                let status = child.try_wait();
                (child, status)
            })
            .await;
        let Ok((child, status)) = reaped else {
            // The launcher is gone: the child was dropped with the job (and so reaped by
            // tokio's orphan queue); its pid is no longer ours to keep.
            self.reaped = true;
            self.release();
            return Err(std::io::Error::other("the agent launcher failed"));
        };
        self.child = Some(child);
        match status {
            Ok(Some(status)) => {
                self.reaped = true;
                self.release();
                Ok(status)
            }
            // Not exited after all (the pidfd wait failed): wait the usual way.
            Ok(None) => self.wait().await,
            Err(e) => Err(e),
        }
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
            registry().owned.remove(&pid);
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
                        registry().owned.remove(&pid);
                    }
                }
            });
        }
        // Without a runtime (process exit) tokio's own orphan queue reaps it; the pid stays
        // registered, which only makes the reaper skip it.
    }
}

/// A pidfd for `pid` (`None` where the kernel has none, before 5.3).
fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Reaps zombie children of the executor that it did not start itself (adopted orphans).
/// Returns how many were reaped.
pub fn reap_adopted() -> usize {
    if !any_zombie_child() {
        return 0; // the usual SIGCHLD: an owned child, already reaped by its owner
    }
    let me = std::process::id();
    // With children files only the children orphans are re-parented to are read, zombies
    // among them, and `waitpid(WNOHANG)` below leaves the living ones alone.
    let zombies: Vec<u32> = crate::agent::family::orphan_candidates().unwrap_or_else(|| {
        crate::agent::family::process_table()
            .into_iter()
            .filter(|(_, ppid, state)| *ppid == me && *state == 'Z')
            .map(|(pid, _, _)| pid)
            .collect()
    });
    let mut n = 0;
    for pid in adopted_among(&zombies) {
        if let Ok(p) = i32::try_from(pid) {
            let mut status = 0;
            // SAFETY: waitpid on one specific child pid that no owner waits for: it is not
            // registered and no spawn under way can have made it (`adopted_among`); a zombie's
            // pid cannot be handed to a new process before it is reaped.
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

    /// A living child the registry does not know, as an adopted orphan is (alive, so that
    /// no other test's reaper pass can take it away).
    #[allow(clippy::disallowed_methods)] // an unregistered child, on purpose
    fn unregistered_child() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep")
    }

    fn end(mut child: std::process::Child) {
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_child_born_while_a_spawn_is_under_way_is_not_taken_for_an_orphan() {
        let ticket = registry().begin_spawn();
        // Born after the spawn began: it could be that spawn's child, whose pid is not
        // registered yet.
        let child = unregistered_child();
        let pid = child.id();
        assert!(adopted_among(&[pid]).is_empty());
        registry().spawning.remove(&ticket);
        // Once no spawn that began before its birth is under way, it is an orphan (other
        // tests may be spawning: wait for a look without one).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while adopted_among(&[pid]) != vec![pid] {
            assert!(std::time::Instant::now() < deadline, "never judged adopted");
            std::thread::yield_now();
        }
        end(child);
    }

    #[test]
    fn an_orphan_born_before_every_spawn_under_way_is_reapable_during_them() {
        let child = unregistered_child();
        let pid = child.id();
        let born = birth_tick(pid).expect("birth tick");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while boot_tick() <= born {
            assert!(
                std::time::Instant::now() < deadline,
                "the boot clock stood still"
            );
            std::thread::yield_now();
        }
        let ticket = registry().begin_spawn();
        assert_eq!(adopted_among(&[pid]), vec![pid]);
        registry().spawning.remove(&ticket);
        end(child);
    }

    #[tokio::test]
    async fn a_child_waited_at_a_low_priority_is_reaped_with_its_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 5"]);
        let mut child = spawn(&mut cmd, ChildKind::Agent).unwrap();
        let pid = child.id().unwrap();
        let low = crate::agent::priority::AgentPriority {
            nice: 5,
            policy: crate::agent::priority::SchedPolicy::Idle,
        };
        let status = child.wait_at(low).await.unwrap();
        assert_eq!(status.code(), Some(5));
        assert!(!is_owned(pid));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
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
