//! The CPU priority of agent processes: lower than the executor's, so HTTP answers, probes and
//! callbacks never wait behind an agent's CPU work (`AGENT_NICE`, `AGENT_SCHED_POLICY`).
//!
//! An agent is born at its priority: it is spawned from a launcher thread that runs at it
//! ([`crate::agent::launcher`]), and Linux copies the spawning thread's nice level and policy
//! into the child, so everything the agent starts inherits both. No `pre_exec` hook is needed
//! (a hook forces fork+exec of the whole multi-threaded executor, milliseconds per spawn, while
//! without one std uses posix_spawn). [`AgentPriority::apply`] sets the same values on the
//! spawned process again, for a spawn made from any other thread.

use std::fmt;
use std::str::FromStr;

/// The scheduling policy agent processes run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SchedPolicy {
    /// `SCHED_IDLE`: runs only on CPU time no normal thread wants, and any waking normal
    /// thread (an executor's HTTP worker) preempts it at once. Agents still get all the idle
    /// CPU, so their throughput is unchanged while the executor is mostly idle.
    #[default]
    Idle,
    /// `SCHED_BATCH` with the nice increment: never preempts on wake-up, but a waking executor
    /// thread may still wait for the agent's time slice.
    Batch,
    /// `SCHED_OTHER` with the nice increment only.
    Normal,
}

impl SchedPolicy {
    /// The name `AGENT_SCHED_POLICY` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Batch => "batch",
            Self::Normal => "normal",
        }
    }

    fn libc_policy(self) -> libc::c_int {
        match self {
            Self::Idle => libc::SCHED_IDLE,
            Self::Batch => libc::SCHED_BATCH,
            Self::Normal => libc::SCHED_OTHER,
        }
    }
}

impl fmt::Display for SchedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `AGENT_SCHED_POLICY` is not one of `idle`, `batch`, `normal`.
#[derive(Debug, thiserror::Error)]
#[error("AGENT_SCHED_POLICY must be idle, batch or normal, not {0:?}")]
pub struct BadSchedPolicy(String);

impl FromStr for SchedPolicy {
    type Err = BadSchedPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "idle" => Ok(Self::Idle),
            "batch" => Ok(Self::Batch),
            "normal" | "other" => Ok(Self::Normal),
            _ => Err(BadSchedPolicy(s.to_string())),
        }
    }
}

/// How an agent process's priority is lowered: a nice increment relative to the executor's
/// and a scheduling policy. `nice == 0` turns both off (the agent runs as the executor does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AgentPriority {
    /// Nice increment, 0..=19; 0 = off.
    pub nice: i32,
    /// Scheduling policy, applied when `nice > 0`.
    pub policy: SchedPolicy,
}

/// The executor's own nice level, which the agents' is relative to: its main thread's, which
/// nothing lowers (launcher threads lower only themselves).
static EXECUTOR_NICE: std::sync::LazyLock<i32> = std::sync::LazyLock::new(|| {
    // SAFETY: getpriority has no preconditions; for a pid it reads that thread's nice level.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, std::process::id() as libc::id_t) }
});

impl AgentPriority {
    /// The nice level agents run at.
    fn target_nice(self) -> i32 {
        EXECUTOR_NICE.saturating_add(self.nice).clamp(-20, 19)
    }

    /// Lowers `pid`'s priority (a no-op when off). Failures are ignored: priority is best
    /// effort, and an agent that keeps the executor's priority still works.
    pub fn apply(self, pid: u32) {
        if self.nice <= 0 {
            return;
        }
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        if pid <= 0 {
            return;
        }
        set(pid, self.target_nice(), self.policy);
    }

    /// Lowers the calling thread to the agents' priority (a no-op when off): what a launcher
    /// thread does once, so that every process it spawns is born at that priority.
    pub fn lower_current_thread(self) {
        if self.nice <= 0 {
            return;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        set(tid, self.target_nice(), self.policy);
    }
}

/// Whether the executor's helper threads (the callback spool's writer, the log writer) run
/// under `SCHED_IDLE`: set once at start-up by [`set_helper_policy`].
static HELPERS_IDLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Decides, once at start-up, how the executor's helper threads are scheduled, from how the
/// agents are. With `SCHED_IDLE` agents (the default) helpers run under `SCHED_IDLE` too: a
/// helper woken for a spool record or a log line then preempts nothing (neither an HTTP worker
/// nor an agent) and runs when the running agent's time slice ends, with whatever else was
/// queued for it meanwhile. Nothing answers an HTTP request from a helper (a route only
/// enqueues its callback), so the control plane never waits for one. Measured with the
/// CPU-heavy fake (`benches/control_plane.rs`): the spool writer's time slices per task fell
/// from about 8 to 3 and the log writer's from about 8 to 0.4, and the executor's CPU per task
/// by about a tenth. The price, only while the agents keep every CPU busy: a spool record
/// waits for the end of a time slice (a scheduler tick or two), and the helper's CPU is an
/// equal agent's share (all `SCHED_IDLE` threads weigh the same). A helper that slept is
/// eligible first, and it keeps up as long as it needs less CPU than one agent gets; since an
/// agent spends far more CPU on an event (a line of node's output) than the spool spends on
/// its record, that holds until hundreds of agents compete. With any other agent policy
/// helpers stay normal: an idle helper would then wait for every agent.
pub fn set_helper_policy(agents: AgentPriority) {
    let _ = HELPERS_IDLE.set(agents.nice > 0 && agents.policy == SchedPolicy::Idle);
}

/// Called first thing on a helper thread (see [`set_helper_policy`]); a no-op unless the
/// helpers run idle. Best effort, as the agents' priority is.
pub fn mark_helper_thread() {
    if HELPERS_IDLE.get().copied().unwrap_or(false) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        // SAFETY: a plain syscall on the calling thread; the param outlives it.
        unsafe {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param);
        }
    }
}

/// Runs `f` with the calling thread marked as a helper (see [`mark_helper_thread`]), then puts
/// its policy back: for a helper thread that a library creates, which inherits the policy of
/// the thread that creates it.
pub fn as_helper<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: reads the calling thread's policy; no preconditions.
    let before = unsafe { libc::sched_getscheduler(0) };
    mark_helper_thread();
    let out = f();
    if before >= 0 {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: restores the calling thread's own policy; the param outlives the call.
        unsafe { libc::sched_setscheduler(0, before, &param) };
    }
    out
}

/// Sets the nice level and policy of one thread or process (a pid is its main thread).
fn set(pid: i32, nice: i32, policy: SchedPolicy) {
    // SAFETY: plain syscalls on one thread or child process; no memory is shared.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice);
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(pid, policy.libc_policy(), &param);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_by_name_and_reject_the_rest() {
        for p in [SchedPolicy::Idle, SchedPolicy::Batch, SchedPolicy::Normal] {
            assert_eq!(p.as_str().parse::<SchedPolicy>().ok(), Some(p));
        }
        assert_eq!(
            " IDLE ".parse::<SchedPolicy>().ok(),
            Some(SchedPolicy::Idle)
        );
        assert!("fifo".parse::<SchedPolicy>().is_err());
    }

    #[tokio::test]
    async fn a_child_gets_the_policy_and_the_nice_level() {
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("5");
        let mut child =
            crate::child::spawn(&mut cmd, crate::child::ChildKind::Helper).expect("sleep");
        let pid = child.id().expect("a pid");
        AgentPriority {
            nice: 7,
            policy: SchedPolicy::Idle,
        }
        .apply(pid);
        // SAFETY: reading one child's scheduling attributes, and the test's own nice level.
        let (policy, nice, own) = unsafe {
            (
                libc::sched_getscheduler(pid as i32),
                libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t),
                libc::getpriority(libc::PRIO_PROCESS, 0),
            )
        };
        let _ = child.start_kill();
        let _ = child.wait().await;
        assert_eq!(policy, libc::SCHED_IDLE);
        assert_eq!(nice, (own + 7).min(19));
    }
}
