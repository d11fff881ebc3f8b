//! The Claude Code agent actor: one long-lived `claude` process per session, driven over
//! stream-json (research/claude-code-cli.md §0–1). The same process serves every subtask of the
//! task, so the conversation continues. A process that dies, wedges or idles too long is
//! replaced by a new one started with `--resume=<saved id>`, so the conversation survives that
//! too (and an executor restart, since transcripts live in the task's own config directory).
//!
//! This file holds the messages, the state and the dispatch; `turn_flow` runs a turn (spawn,
//! prompt, stream-json, control requests, resume fallback, cancel) and `lifecycle` ends turns
//! and processes (failures, suspension, watchdog).

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub mod bot;
pub mod env;
mod lifecycle;
pub mod prompt;
pub mod protocol;
pub mod spawn;
pub mod turn;
mod turn_flow;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::process::{ProcessEvent, SpawnSpec};
use super::process_core::{Phase, PipeStep, ProcessCore, TurnOutcome, PIPE_DRAIN_TIMEOUT};
use super::seam::AgentCmd;
use super::timers::TimerKind;
use super::{AgentArgs, TurnRequest};
use crate::error::AgentError;
use crate::payload::{CallbackPayload, TaskStatus};
use crate::task::TaskSpec;
use env::claude_env;
use protocol::{CliRequest, CliResponse, Inbound};
use spawn::{launch, Launch, Resume, Started, CONFIG_DIR, SESSION_ID_FILE};
use turn::{Turn, INIT_MESSAGE};

/// Bounds of the watchdog's check interval (a quarter of the shortest limit).
const WATCHDOG_MIN_TICK: Duration = Duration::from_millis(100);
const WATCHDOG_MAX_TICK: Duration = Duration::from_secs(5);

/// What the CLI says when `--resume` names a conversation it does not have.
const NO_CONVERSATION: &str = "No conversation found";

/// What Claude Code needs from workspace preparation: everything the original prepares for it
/// (the clone, instruction files, sub-agents, skills in its config directory, attachments), and
/// its own files in the task directory kept clear of the clone.
pub const WORKSPACE_NEEDS: crate::workspace::WorkspaceNeeds = crate::workspace::WorkspaceNeeds {
    clone: true,
    instruction_files: true,
    sub_agents: true,
    skills_under: Some(CONFIG_DIR),
    attachments: true,
    reserved: &[CONFIG_DIR, SESSION_ID_FILE],
};

/// Messages of the [`ClaudeCodeAgent`].
pub enum AgentMsg {
    /// A command of the seam (turn, interrupt, suspend).
    Cmd(AgentCmd),
    /// The spawn task finished (generation `gen`).
    Spawned {
        /// Generation of the process this is about.
        gen: u64,
        /// The process, or why it could not start.
        result: Result<Started, AgentError>,
    },
    /// Something happened on process `gen`'s pipes.
    Process {
        /// Generation of the process this is about.
        gen: u64,
        /// What happened.
        event: ProcessEvent,
    },
    /// The initialize deadline of process `gen` passed.
    InitTimeout {
        /// Generation of the process this is about.
        gen: u64,
    },
    /// After process `gen` exited, the time its pipes had to drain passed.
    DrainDeadline {
        /// Generation of the process this is about.
        gen: u64,
    },
    /// The deadline for the interrupted turn's `result` passed.
    InterruptTimeout {
        /// Generation of the process this is about.
        gen: u64,
    },
    /// The throttled progress event of process `gen` may go out now.
    FlushProgress {
        /// Generation of the process this is about.
        gen: u64,
    },
    /// Time to check the running turn (`turn` = the process's turn count when armed).
    Watchdog {
        /// Generation of the process this is about.
        gen: u64,
        /// Which turn of that process.
        turn: u32,
    },
    /// A fresh workbench snapshot for turn number `turn` of this agent.
    Workbench {
        /// Which turn (counted over the agent's life) it is about.
        turn: u64,
        /// The repository's changes.
        snapshot: crate::workspace::workbench::GitSnapshot,
    },
    /// The idle time after turn number `turns` of process `gen` passed.
    IdleDeadline {
        /// Generation of the process this is about.
        gen: u64,
        /// Turns the process had served when the timer was set.
        turns: u32,
    },
}

crate::seam_message!(AgentMsg);

/// The actor; see the module docs.
pub struct ClaudeCodeAgent;

/// State of the [`ClaudeCodeAgent`].
pub struct ClaudeState {
    /// The process, its turn, throttle and timers (shared with every process agent).
    core: ProcessCore<Turn, AgentMsg>,
    /// `<workspace_root>/<task_id>`: session id file and the task's Claude config.
    task_dir: PathBuf,
    /// Where the current process runs (the clone, or the task directory).
    cwd: PathBuf,
    /// The current subtask's prepared workspace.
    prepared: Option<crate::workspace::Prepared>,
    /// Counts turns over the agent's life (tags workbench snapshots).
    turn_seq: u64,
    /// Stops the current turn's workbench monitor.
    monitor: Option<tokio_util::sync::CancellationToken>,
    /// Working directory and extra environment the current process was started with (a
    /// digest): when a subtask needs others (a rotated token), the process is replaced.
    started_with: Option<u64>,
    turns_in_process: u32,
    spec: Option<TaskSpec>,
    claude_session: Option<String>,
    resumed_with: Option<String>,
    next_resume: Resume,
    last_output: Instant,
    turn_started: Instant,
}

impl Actor for ClaudeCodeAgent {
    type Msg = AgentMsg;
    type State = ClaudeState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<ClaudeState, ActorProcessingErr> {
        let task_dir = args.cfg.workspace_root.join(args.task_id.to_string());
        Ok(ClaudeState {
            core: ProcessCore::new(args, "Claude Code process"),
            cwd: task_dir.clone(),
            task_dir,
            prepared: None,
            turn_seq: 0,
            monitor: None,
            started_with: None,
            turns_in_process: 0,
            spec: None,
            claude_session: None,
            resumed_with: None,
            next_resume: Resume::FromFile,
            last_output: Instant::now(),
            turn_started: Instant::now(),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<AgentMsg>,
        msg: AgentMsg,
        st: &mut ClaudeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Cmd(AgentCmd::Turn(req)) => st.on_turn(&me, *req),
            AgentMsg::Cmd(AgentCmd::Interrupt) => st.on_interrupt(&me),
            AgentMsg::Spawned { gen, result } if gen == st.core.gen => st.on_spawned(&me, result),
            AgentMsg::Process { gen, event } if gen == st.core.gen => st.on_event(&me, event),
            AgentMsg::DrainDeadline { gen } if gen == st.core.gen => st.on_process_gone(&me),
            AgentMsg::InitTimeout { gen }
                if gen == st.core.gen && st.core.phase == Phase::Warming =>
            {
                let secs = st.core.args.cfg.claude.init_timeout.as_secs();
                st.fail_turn(&format!(
                    "Claude Code CLI did not answer the initialize request within {secs} s"
                ));
                st.discard_process();
            }
            AgentMsg::InterruptTimeout { gen }
                if gen == st.core.gen && st.core.turn.as_ref().is_some_and(|t| t.cancelled) =>
            {
                tracing::warn!(
                    "task {}: interrupted turn did not end in time; killing the CLI",
                    st.core.args.task_id
                );
                st.discard_process();
                st.end_turn(TaskStatus::Cancelled);
            }
            AgentMsg::IdleDeadline { gen, turns }
                if gen == st.core.gen && turns == st.turns_in_process =>
            {
                st.suspend("idle")
            }
            AgentMsg::Cmd(AgentCmd::Suspend) => st.suspend("over the live-process cap"),
            AgentMsg::Workbench { turn, snapshot } if turn == st.turn_seq => {
                if let Some(wb) = st.core.turn.as_mut().and_then(|t| t.workbench.as_mut()) {
                    wb.update(snapshot);
                }
            }
            AgentMsg::FlushProgress { .. } => st.core.flush(),
            AgentMsg::Watchdog { gen, turn }
                if gen == st.core.gen && turn == st.turns_in_process =>
            {
                st.watchdog(&me)
            }
            _ => {} // events of a retired process, or deadlines that no longer apply
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<AgentMsg>,
        st: &mut ClaudeState,
    ) -> Result<(), ActorProcessingErr> {
        st.stop_monitor();
        st.core.stop().await;
        Ok(())
    }
}
