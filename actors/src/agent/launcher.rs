//! Where agent processes are started: a few threads that run at the agents' CPU priority
//! (`AGENT_NICE`, `AGENT_SCHED_POLICY`).
//!
//! A launch is the agent's work, not the control plane's: the task's files (config directory,
//! onboarding flags, MCP servers, ownership) and the spawn, whose exec of a large program
//! (node) is hundreds of microseconds of kernel time in the child before it runs a line of its
//! own. Run on tokio's blocking pool, dozens of launches of a burst ran at the executor's
//! priority and kept its HTTP workers waiting for a CPU for milliseconds at a time. Here they
//! queue for a few threads ([`Lane::threads`]) that lowered themselves once; Linux copies the spawning
//! thread's nice level and policy into the child, so the agent is born at its priority too,
//! with no moment at the executor's.
//!
//! Each job enters the caller's runtime (the pipes of a spawned process register with its
//! reactor), runs, and sends its result back; a job that panics fails its caller alone.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};

use super::priority::AgentPriority;

/// Which work a job is: each kind has its own threads, so that launches stuck on a slow disk
/// (a workspace handed over file by file, a hung network mount) never hold up the reaping of
/// agents that ended, whose live-process slots other tasks wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Preparing an agent's files and spawning it.
    Launch,
    /// Collecting an ended agent's exit status.
    Reap,
}

impl Lane {
    /// Threads per priority: launches are short (files, then posix_spawn waits for the exec),
    /// so a few keep up with hundreds of new tasks a second; a reap is one syscall.
    pub fn threads(self) -> usize {
        match self {
            Lane::Launch => 4,
            Lane::Reap => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lane::Launch => "agent-launch",
            Lane::Reap => "agent-reap",
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The queue of each priority's threads per lane (one priority per executor; tests use more).
type Queues = HashMap<(AgentPriority, Lane), mpsc::Sender<Job>>;

static QUEUES: LazyLock<Mutex<Queues>> = LazyLock::new(Mutex::default);

/// The launch could not run: its thread could not be started, or the job panicked.
#[derive(Debug, thiserror::Error)]
#[error("the agent launcher failed: {0}")]
pub struct LaunchFailed(String);

/// Runs `job` on a thread of `lane` at `priority` (inside the calling task's runtime) and
/// returns what it returned. Must be called from within a tokio runtime.
pub async fn run<T, F>(priority: AgentPriority, lane: Lane, job: F) -> Result<T, LaunchFailed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _in_runtime = handle.enter();
        let out = std::panic::catch_unwind(AssertUnwindSafe(job));
        let _ = tx.send(out.map_err(|_| LaunchFailed("the launch panicked".into())));
    });
    queue(priority, lane)?
        .send(job)
        .map_err(|_| LaunchFailed("the launcher threads are gone".into()))?;
    rx.await
        .map_err(|_| LaunchFailed("the launch was dropped".into()))?
}

/// Queues `job` for a thread of `lane` at `priority` and returns at once: an agent's file work
/// that nothing waits for (its conversation id). Unlike tokio's blocking pool, whose threads
/// run at the executor's priority, a launcher thread woken for it preempts no agent, and no
/// task is woken when it is done. A job that panics is dropped alone.
pub fn detach<F>(priority: AgentPriority, lane: Lane, job: F) -> Result<(), LaunchFailed>
where
    F: FnOnce() + Send + 'static,
{
    let job: Job = Box::new(move || {
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    });
    queue(priority, lane)?
        .send(job)
        .map_err(|_| LaunchFailed("the launcher threads are gone".into()))
}

/// The queue for `priority` and `lane`, its threads started on first use.
fn queue(priority: AgentPriority, lane: Lane) -> Result<mpsc::Sender<Job>, LaunchFailed> {
    let mut queues = QUEUES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(q) = queues.get(&(priority, lane)) {
        return Ok(q.clone());
    }
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..lane.threads() {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("{}-{i}", lane.name()))
            .spawn(move || {
                priority.lower_current_thread();
                loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match next {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| LaunchFailed(format!("could not start a launcher thread: {e}")))?;
    }
    queues.insert((priority, lane), tx.clone());
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::priority::SchedPolicy;

    #[test]
    fn a_stuck_launch_does_not_hold_up_reaps() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let p = AgentPriority {
            nice: 2,
            policy: SchedPolicy::Normal,
        };
        rt.block_on(async move {
            // Every launch thread blocked (a hung mount), then a reap: it still runs.
            let (release, stuck) = std::sync::mpsc::channel::<()>();
            let stuck = Arc::new(Mutex::new(stuck));
            let mut blocked = Vec::new();
            for _ in 0..Lane::Launch.threads() {
                let stuck = stuck.clone();
                blocked.push(tokio::spawn(run(p, Lane::Launch, move || {
                    let _ = stuck.lock().map(|rx| rx.recv());
                })));
            }
            let reaped =
                tokio::time::timeout(std::time::Duration::from_secs(10), run(p, Lane::Reap, || 7))
                    .await;
            for _ in 0..Lane::Launch.threads() {
                let _ = release.send(());
            }
            for b in blocked {
                let _ = b.await;
            }
            assert_eq!(reaped.ok().and_then(|r| r.ok()), Some(7));
        });
    }

    /// The scheduling policy and nice level a process reports for itself (`/proc/self/stat`
    /// read by the process: what it was born with, before anyone could change it).
    fn own_priority_of_child(priority: AgentPriority) -> (i32, i32) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            use tokio::io::AsyncReadExt;
            let mut child = run(priority, Lane::Launch, || {
                let mut cmd = tokio::process::Command::new("sh");
                cmd.args(["-c", "cat /proc/self/stat"])
                    .stdout(std::process::Stdio::piped());
                crate::child::spawn(&mut cmd, crate::child::ChildKind::Helper)
            })
            .await
            .expect("launch")
            .expect("spawn");
            let mut out = Vec::new();
            let mut stdout = child.take_stdout().expect("stdout");
            stdout.read_to_end(&mut out).await.expect("read");
            child.wait().await.expect("wait");
            Some(out)
        })
        .map(|out| {
            let stat = String::from_utf8_lossy(&out).to_string();
            let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
            let f: Vec<i64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(-99))
                .collect();
            // Fields after the command: nice is the 17th, policy the 39th.
            (f[16] as i32, f[38] as i32)
        })
        .expect("the child's stat")
    }

    #[test]
    fn a_launched_process_is_born_at_the_agents_priority() {
        // SAFETY: reading this thread's nice level.
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let p = AgentPriority {
            nice: 6,
            policy: SchedPolicy::Idle,
        };
        let (nice, policy) = own_priority_of_child(p);
        assert_eq!(nice, (own + 6).min(19));
        assert_eq!(policy, libc::SCHED_IDLE);
        // Off: the executor's own priority.
        let (nice, policy) = own_priority_of_child(AgentPriority::default());
        assert_eq!((nice, policy), (own, libc::SCHED_OTHER));
        // The test thread itself was not lowered.
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, own);
    }

    #[test]
    fn a_panicking_launch_fails_alone() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let p = AgentPriority {
            nice: 3,
            policy: SchedPolicy::Batch,
        };
        rt.block_on(async move {
            let r: Result<(), _> = run(p, Lane::Launch, || panic!("boom")).await;
            assert!(r.is_err());
            for i in 0..Lane::Launch.threads() * 2 {
                assert_eq!(run(p, Lane::Launch, move || i).await.ok(), Some(i));
            }
        });
    }

    #[test]
    fn a_detached_job_runs_at_the_agents_priority_without_a_runtime_and_a_panic_stays_alone() {
        let p = AgentPriority {
            nice: 4,
            policy: SchedPolicy::Idle,
        };
        // As many panics as threads: a panic that took its thread with it would leave none.
        for _ in 0..Lane::Launch.threads() {
            detach(p, Lane::Launch, || panic!("boom")).expect("queued");
        }
        // No tokio runtime here: nothing awaits a detached job.
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..Lane::Launch.threads() * 2 {
            let tx = tx.clone();
            detach(p, Lane::Launch, move || {
                // SAFETY: reads the calling thread's own policy.
                let _ = tx.send(unsafe { libc::sched_getscheduler(0) });
            })
            .expect("queued");
        }
        for _ in 0..Lane::Launch.threads() * 2 {
            let policy = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the jobs after the panicking ones ran");
            assert_eq!(policy, libc::SCHED_IDLE);
        }
    }
}
