//! Session, supervisor and slot behaviour in-process, against a scripted agent that implements
//! the agent seam (`actors::agent::seam`): queueing and order, cancel while a subtask is queued,
//! being prepared or running, the live-process cap, an agent that crashes, and an unknown kind.
//! The real supervisor and sessions run; only the agent and the callback relay are stand-ins
//! (the relay records every payload). The end-to-end tests in `tests/` cover the real agents.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::agent::registry::{StartError, Starting};
use actors::agent::seam::{AgentArgs, AgentCmd, AgentHandle, ProcessState, CANCEL_MESSAGE};
use actors::agent::{AgentKind, Registry, StartAgent};
use actors::callback::CallbackMsg;
use actors::config::RuntimeConfig;
use actors::index::SessionIndex;
use actors::payload::{CallbackPayload, TaskStatus};
use actors::session::QUEUED_MESSAGE;
use actors::supervisor::{
    CancelOutcome, ExecuteOutcome, Supervisor, SupervisorArgs, SupervisorMsg,
};
use actors::task::TaskSpec;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::mpsc;

/// Longest any expected callback may take to arrive.
const DEADLINE: Duration = Duration::from_secs(10);

/// What the scripted agents were told, in order (`"<task>/<subtask> turn"`, `"suspend"`, ...).
type Log = Arc<Mutex<Vec<String>>>;

/// The scripted agent: the prompt says what it does with a turn.
/// `done`: RUNNING then COMPLETED at once; `hold`: RUNNING, then CANCELLED on interrupt;
/// `crash`: the actor fails. It reports a live process from its first turn on.
struct ScriptedAgent;

struct ScriptedState {
    args: AgentArgs,
    log: Log,
    held: Option<actors::payload::SubtaskContext>,
    live: bool,
}

impl Actor for ScriptedAgent {
    type Msg = AgentCmd;
    type State = ScriptedState;
    type Arguments = (AgentArgs, Log);

    async fn pre_start(
        &self,
        _me: ActorRef<AgentCmd>,
        (args, log): (AgentArgs, Log),
    ) -> Result<ScriptedState, ActorProcessingErr> {
        Ok(ScriptedState {
            args,
            log,
            held: None,
            live: false,
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<AgentCmd>,
        cmd: AgentCmd,
        st: &mut ScriptedState,
    ) -> Result<(), ActorProcessingErr> {
        match cmd {
            AgentCmd::Turn(req) => {
                let ctx = req.ctx.clone();
                st.note(format!("{}/{} turn", ctx.task_id, ctx.subtask_id));
                if !st.live {
                    st.live = true;
                    st.args.session.process(ProcessState::Started);
                }
                st.emit(ctx.payload(60, TaskStatus::Running, "scripted", None));
                match req.spec.prompt.as_str() {
                    "crash" => return Err("scripted crash".into()),
                    "hold" => st.held = Some(ctx),
                    _ => {
                        st.emit(ctx.payload(100, TaskStatus::Completed, "done", None));
                        st.args
                            .session
                            .turn_done(ctx.subtask_id, TaskStatus::Completed);
                    }
                }
            }
            AgentCmd::Interrupt => {
                st.note("interrupt".into());
                if let Some(ctx) = st.held.take() {
                    st.emit(ctx.payload(100, TaskStatus::Cancelled, CANCEL_MESSAGE, None));
                    st.args
                        .session
                        .turn_done(ctx.subtask_id, TaskStatus::Cancelled);
                }
            }
            AgentCmd::Suspend => {
                st.note("suspend".into());
                if st.held.is_none() && st.live {
                    st.live = false;
                    st.args.session.process(ProcessState::Suspended);
                }
            }
        }
        Ok(())
    }
}

impl ScriptedState {
    fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }

    fn emit(&self, p: CallbackPayload) {
        let _ = self.args.callbacks.cast(CallbackMsg::Send(Box::new(p)));
    }
}

/// Starts a [`ScriptedAgent`] for any kind, counting the agents started.
struct Scripted {
    log: Log,
}

impl StartAgent for Scripted {
    fn start<'a>(
        &'a self,
        kind: &'a AgentKind,
        args: AgentArgs,
        parent: ActorCell,
    ) -> Starting<'a> {
        Box::pin(async move {
            self.log.lock().unwrap().push("start".into());
            let (a, _) =
                Actor::spawn_linked(None, ScriptedAgent, (args, self.log.clone()), parent).await?;
            Ok(AgentHandle::new(kind.clone(), &a))
        })
    }
}

/// Records every callback payload the runtime sends.
struct Recorder;

impl Actor for Recorder {
    type Msg = CallbackMsg;
    type State = mpsc::UnboundedSender<CallbackPayload>;
    type Arguments = mpsc::UnboundedSender<CallbackPayload>;

    async fn pre_start(
        &self,
        _me: ActorRef<CallbackMsg>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _me: ActorRef<CallbackMsg>,
        msg: CallbackMsg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CallbackMsg::Send(p) => {
                let _ = tx.send(*p);
            }
            CallbackMsg::Flush(reply) => {
                let _ = reply.send(());
            }
            _ => {}
        }
        Ok(())
    }
}

/// The runtime under test: a real supervisor with scripted agents and a recording relay.
struct Rig {
    supervisor: ActorRef<SupervisorMsg>,
    callbacks: mpsc::UnboundedReceiver<CallbackPayload>,
    log: Log,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(tune: impl FnOnce(&mut RuntimeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RuntimeConfig::for_tests(dir.path().to_path_buf());
        tune(&mut cfg);
        let (tx, callbacks) = mpsc::unbounded_channel();
        let (relay, _) = Actor::spawn(None, Recorder, tx).await.unwrap();
        let log = Log::default();
        let args = SupervisorArgs {
            cfg: Arc::new(cfg),
            callbacks: relay,
            index: SessionIndex::default(),
            agents: Arc::new(Scripted { log: log.clone() }),
        };
        let (supervisor, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
        Self {
            supervisor,
            callbacks,
            log,
            _dir: dir,
        }
    }

    async fn execute(&self, task: serde_json::Value) -> ExecuteOutcome {
        let spec = TaskSpec::from_value(&task).unwrap();
        ractor::call!(self.supervisor, SupervisorMsg::Execute, Box::new(spec)).unwrap()
    }

    async fn cancel(&self, task_id: i64) -> CancelOutcome {
        ractor::call!(self.supervisor, SupervisorMsg::Cancel, task_id).unwrap()
    }

    /// The next callback that matches, failing the test after [`DEADLINE`].
    async fn until(
        &mut self,
        what: &str,
        hit: impl Fn(&CallbackPayload) -> bool,
    ) -> CallbackPayload {
        let wait = async {
            while let Some(p) = self.callbacks.recv().await {
                if hit(&p) {
                    return p;
                }
            }
            panic!("the callback channel closed while waiting for {what}");
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("no callback {what} within {DEADLINE:?}"))
    }

    /// The terminal callback of the next subtask to end.
    async fn terminal(&mut self) -> CallbackPayload {
        self.until("terminal", |p| p.progress == 100).await
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn task(task_id: i64, subtask_id: i64, prompt: &str) -> serde_json::Value {
    json!({"task_id": task_id, "subtask_id": subtask_id, "prompt": prompt,
           "bot": [{"shell_type": "ClaudeCode"}]})
}

#[tokio::test]
async fn subtasks_of_one_task_run_one_at_a_time_in_arrival_order_on_one_agent() {
    let mut rig = Rig::start(|_| {}).await;
    assert_eq!(
        rig.execute(task(1, 1, "hold")).await,
        ExecuteOutcome::Running
    );
    for sub in 2..=4 {
        assert_eq!(
            rig.execute(task(1, sub, "done")).await,
            ExecuteOutcome::Running
        );
    }
    rig.until("subtask 1 running at the agent", |p| {
        p.subtask_id == 1 && p.error_message.as_deref() == Some("scripted")
    })
    .await;
    assert_eq!(
        rig.log(),
        ["start", "1/1 turn"],
        "the others wait in the session"
    );
    // Only the running one is interrupted; the queued ones are dropped with it.
    assert_eq!(rig.cancel(1).await, CancelOutcome::Cancelled { busy: true });
    let mut ended = Vec::new();
    for _ in 0..4 {
        let p = rig.terminal().await;
        ended.push((p.subtask_id, p.status));
    }
    ended.sort_by_key(|(s, _)| *s);
    assert_eq!(
        ended,
        (1..=4)
            .map(|s| (s, TaskStatus::Cancelled))
            .collect::<Vec<_>>()
    );
    // The task stays usable, on the same agent, and keeps order.
    for sub in 5..=7 {
        rig.execute(task(1, sub, "done")).await;
    }
    for sub in 5..=7 {
        let p = rig.terminal().await;
        assert_eq!((p.subtask_id, p.status), (sub, TaskStatus::Completed));
    }
    assert_eq!(
        rig.log(),
        [
            "start",
            "1/1 turn",
            "interrupt",
            "1/5 turn",
            "1/6 turn",
            "1/7 turn"
        ]
    );
}

#[tokio::test]
async fn a_cancel_during_workspace_preparation_ends_the_subtask_before_it_reaches_the_agent() {
    // A backend that accepts the attachment download and never answers: preparation hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let mut rig =
        Rig::start(|cfg| cfg.workspace.api_base = format!("http://127.0.0.1:{port}")).await;
    let mut slow = task(2, 1, "done");
    slow["auth_token"] = json!("t");
    slow["attachments"] = json!([{"id": 9, "original_filename": "a.txt"}]);
    rig.execute(slow).await;
    rig.until("the download to start", |p| {
        p.error_message.as_deref() == Some("Downloading attachments")
    })
    .await;
    assert_eq!(rig.cancel(2).await, CancelOutcome::Cancelled { busy: true });
    let p = rig.terminal().await;
    assert_eq!((p.subtask_id, p.status), (1, TaskStatus::Cancelled));
    assert_eq!(p.error_message.as_deref(), Some(CANCEL_MESSAGE));
    rig.execute(task(2, 2, "done")).await;
    let p = rig.terminal().await;
    assert_eq!((p.subtask_id, p.status), (2, TaskStatus::Completed));
    assert_eq!(
        rig.log(),
        ["start", "2/2 turn"],
        "the cancelled one never reached it"
    );
    hold.abort();
}

#[tokio::test]
async fn over_the_live_process_cap_a_subtask_waits_for_a_slot_and_the_idle_process_is_suspended() {
    let mut rig = Rig::start(|cfg| cfg.max_live_processes = Some(1)).await;
    rig.execute(task(10, 1, "hold")).await;
    rig.until("task 10 running", |p| {
        p.task_id == 10 && p.error_message.as_deref() == Some("scripted")
    })
    .await;
    rig.execute(task(11, 1, "done")).await;
    let queued = rig
        .until("task 11 queued", |p| {
            p.task_id == 11
                && p.progress < 100
                && p.error_message
                    .as_deref()
                    .is_some_and(|m| m.starts_with(QUEUED_MESSAGE))
        })
        .await;
    assert_eq!(queued.status, TaskStatus::Running);
    assert!(
        !rig.log().contains(&"11/1 turn".to_string()),
        "task 11 must wait while task 10 holds the only slot"
    );
    rig.cancel(10).await;
    let p = rig.terminal().await;
    assert_eq!((p.task_id, p.status), (10, TaskStatus::Cancelled));
    // Task 10's process is idle now: it is suspended and task 11 gets the slot.
    let p = rig.terminal().await;
    assert_eq!((p.task_id, p.status), (11, TaskStatus::Completed));
    let log = rig.log();
    let suspend = log
        .iter()
        .position(|l| l == "suspend")
        .expect("task 10 suspended");
    let turn = log.iter().position(|l| l == "11/1 turn").unwrap();
    assert!(
        suspend < turn,
        "the slot is freed before task 11 runs: {log:?}"
    );
}

#[tokio::test]
async fn an_agent_that_crashes_fails_its_subtask_and_the_next_gets_a_new_agent() {
    let mut rig = Rig::start(|_| {}).await;
    rig.execute(task(3, 1, "crash")).await;
    rig.execute(task(3, 2, "done")).await;
    let p = rig.terminal().await;
    assert_eq!((p.subtask_id, p.status), (1, TaskStatus::Failed));
    assert!(
        p.error_message
            .as_deref()
            .unwrap_or("")
            .contains("the agent failed"),
        "{:?}",
        p.error_message
    );
    let p = rig.terminal().await;
    assert_eq!((p.subtask_id, p.status), (2, TaskStatus::Completed));
    assert_eq!(rig.log(), ["start", "3/1 turn", "start", "3/2 turn"]);
}

#[tokio::test]
async fn the_registry_refuses_an_unknown_kind_instead_of_running_another_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let (relay, _) = Actor::spawn(None, Recorder, tx).await.unwrap();
    let (sink, _) = Actor::spawn(None, Recorder, mpsc::unbounded_channel().0)
        .await
        .unwrap();
    // Any actor taking AgentEvents will do as the session here; a recorder of its own kind.
    let (session, _) = Actor::spawn(None, EventProbe, ()).await.unwrap();
    let args = AgentArgs {
        task_id: 1,
        cfg: Arc::new(RuntimeConfig::for_tests(dir.path().to_path_buf())),
        callbacks: relay,
        session: actors::agent::AgentSink::new(&session),
        live: actors::agent::live_processes::LiveProcesses::default(),
    };
    let kind = AgentKind::parse("Nope");
    let err = match Registry::default()
        .start(&kind, args, sink.get_cell())
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("an unknown kind started an agent"),
    };
    assert!(matches!(err, StartError::Unsupported(ref n) if n == "Nope"));
    assert_eq!(
        err.to_string(),
        "unsupported agent type 'Nope'; supported types: ClaudeCode, Agno, Dify"
    );
}

/// Takes agent events and drops them.
struct EventProbe;

impl Actor for EventProbe {
    type Msg = actors::agent::AgentEvent;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}
