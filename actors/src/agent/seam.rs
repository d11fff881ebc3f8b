//! The agent seam: what a session may tell any agent ([`AgentCmd`]), what any agent reports
//! back ([`AgentEvent`]), and the two handles that carry them ([`AgentHandle`] down,
//! [`AgentSink`] up). A session knows only these types; an agent knows only these types (never
//! `SessionMsg`), so the session and the agents do not import each other.
//!
//! Both handles are ractor [`DerivedActorRef`]s: an agent's own message enum stays private to
//! it and wraps [`AgentCmd`] (see [`crate::agent::registry`] for how to add an agent kind).

use std::sync::Arc;

use ractor::{ActorId, ActorRef, DerivedActorRef, Message};

use super::registry::AgentKind;
use crate::callback::CallbackMsg;
use crate::config::RuntimeConfig;
use crate::payload::{SubtaskContext, TaskStatus};
use crate::task::TaskSpec;

/// Message of the `CANCELLED` callback every agent sends for [`AgentCmd::Interrupt`] (contract
/// §2.4); the session sends it too for a subtask cancelled before it reached the agent.
pub const CANCEL_MESSAGE: &str = "${{tasks.cancel_task}}";

/// Thinking steps an agent keeps per turn; callbacks carry the whole list, so it must stay
/// bounded.
pub const MAX_THINKING_STEPS: usize = 200;

/// One subtask handed to an agent.
#[derive(Debug)]
pub struct TurnRequest {
    /// Who callbacks are about.
    pub ctx: SubtaskContext,
    /// The whole subtask as received.
    pub spec: TaskSpec,
    /// Its prepared workspace (working directory, rewritten prompt, repository, extra env).
    pub prepared: crate::workspace::Prepared,
}

/// The commands every agent takes. Closing an agent is stopping its actor
/// ([`AgentHandle::close`]); its `post_stop` ends whatever it owns.
#[derive(Debug)]
pub enum AgentCmd {
    /// Run one subtask. The session sends the next only after [`AgentEvent::TurnDone`]; an
    /// agent that gets a turn while another runs fails the new one (it never drops either).
    Turn(Box<TurnRequest>),
    /// Cancel the running subtask: the agent sends its `CANCELLED` callback and then
    /// [`AgentEvent::TurnDone`]. No-op when nothing runs.
    Interrupt,
    /// End the agent's process now if no turn runs (the live-process cap or idleness); the
    /// next turn resumes the conversation. Agents without a process ignore it.
    Suspend,
}

/// The agent process of a session, as the listing and the live-process cap see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Running.
    Started,
    /// Ended to free memory; the conversation resumes on the next subtask.
    Suspended,
    /// Not running (never started, exited or killed).
    Ended,
}

/// The events every agent reports to its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The running subtask ended; its terminal callback was already sent by the agent.
    TurnDone {
        /// Which subtask ended.
        subtask_id: i64,
        /// How it ended.
        status: TaskStatus,
    },
    /// The agent's process started, was suspended or ended (agents without a process never
    /// send it, and count as not live).
    Process(ProcessState),
}

/// Where an agent reports its [`AgentEvent`]s (its session, or a test's probe).
#[derive(Clone)]
pub struct AgentSink(DerivedActorRef<AgentEvent>);

impl AgentSink {
    /// A sink into any actor whose messages wrap [`AgentEvent`].
    pub fn new<M>(actor: &ActorRef<M>) -> Self
    where
        M: Message + From<AgentEvent>,
        AgentEvent: TryFrom<M>,
    {
        Self(actor.get_derived())
    }

    /// Reports that subtask `subtask_id` ended with `status` (lost when the session is gone,
    /// which then has nobody left to tell).
    pub fn turn_done(&self, subtask_id: i64, status: TaskStatus) {
        let _ = self
            .0
            .send_message(AgentEvent::TurnDone { subtask_id, status });
    }

    /// Reports the agent process's new state.
    pub fn process(&self, state: ProcessState) {
        let _ = self.0.send_message(AgentEvent::Process(state));
    }
}

/// What every agent actor is started with.
#[derive(Clone)]
pub struct AgentArgs {
    /// The task this agent serves.
    pub task_id: i64,
    /// Shared settings.
    pub cfg: Arc<RuntimeConfig>,
    /// Where status events go.
    pub callbacks: ActorRef<CallbackMsg>,
    /// The owning session, told when a turn ends and when the process changes.
    pub session: AgentSink,
    /// The live-process count each adopted process holds a slot in until it is reaped.
    pub live: super::live_processes::LiveProcesses,
}

/// Why a turn could not be handed to an agent.
#[derive(Debug, thiserror::Error)]
#[error("the agent is not running")]
pub struct AgentGone;

/// A running agent as its session sees it: its kind and the [`AgentCmd`]s it takes.
#[derive(Clone)]
pub struct AgentHandle {
    kind: AgentKind,
    actor: DerivedActorRef<AgentCmd>,
}

impl AgentHandle {
    /// The handle of a started agent actor of `kind` whose messages wrap [`AgentCmd`].
    pub fn new<M>(kind: AgentKind, actor: &ActorRef<M>) -> Self
    where
        M: Message + From<AgentCmd>,
        AgentCmd: TryFrom<M>,
    {
        Self {
            kind,
            actor: actor.get_derived(),
        }
    }

    /// Which kind of agent it is (a task that switches kinds gets a new agent).
    pub fn kind(&self) -> &AgentKind {
        &self.kind
    }

    /// The actor's id, to recognise its supervision events.
    pub fn id(&self) -> ActorId {
        self.actor.get_id()
    }

    /// Hands it a subtask.
    pub fn turn(&self, req: TurnRequest) -> Result<(), AgentGone> {
        self.actor
            .send_message(AgentCmd::Turn(Box::new(req)))
            .map_err(|_| AgentGone)
    }

    /// Cancels its running subtask.
    pub fn interrupt(&self) {
        let _ = self.actor.send_message(AgentCmd::Interrupt);
    }

    /// Asks it to end its idle process.
    pub fn suspend(&self) {
        let _ = self.actor.send_message(AgentCmd::Suspend);
    }

    /// Stops it; its `post_stop` ends its process.
    pub fn close(&self) {
        self.actor.stop(None);
    }
}

/// Implements the two conversions [`AgentHandle::new`] needs for an agent message enum with
/// a `Cmd(AgentCmd)` variant: `seam_message!(MyMsg);`.
#[macro_export]
macro_rules! seam_message {
    ($msg:ident) => {
        impl From<$crate::agent::seam::AgentCmd> for $msg {
            fn from(cmd: $crate::agent::seam::AgentCmd) -> Self {
                $msg::Cmd(cmd)
            }
        }
        impl TryFrom<$msg> for $crate::agent::seam::AgentCmd {
            type Error = $msg;
            fn try_from(msg: $msg) -> Result<Self, $msg> {
                match msg {
                    $msg::Cmd(cmd) => Ok(cmd),
                    other => Err(other),
                }
            }
        }
    };
}
