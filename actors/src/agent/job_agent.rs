//! Agents without a process: each turn is one async job (Dify's streaming HTTP call, the image
//! validator's checks) run in a task of its own, which sends its callbacks as it goes and
//! reports back with [`JobMsg::Done`]. The actor only starts jobs, cancels them and tells the
//! session when one ended; it never waits on one.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;

use super::{AgentArgs, TurnRequest};
use crate::callback::CallbackMsg;
use crate::payload::{CallbackPayload, TaskStatus};
use crate::session::SessionMsg;
use crate::task::AgentKind;

/// Messages of a [`JobAgent`].
pub enum JobMsg {
    /// Run one subtask; the session sends the next only after `TurnDone`.
    Turn(Box<TurnRequest>),
    /// Cancel the running subtask (its job ends CANCELLED).
    Interrupt,
    /// The job of subtask `subtask_id` ended with `status` (its terminal callback was sent).
    Done {
        /// Which subtask.
        subtask_id: i64,
        /// How it ended.
        status: TaskStatus,
    },
}

/// The actor; `kind` says which job a turn runs (Dify or the image validator).
pub struct JobAgent {
    /// Which agent this is.
    pub kind: AgentKind,
}

/// State of a [`JobAgent`].
pub struct JobState {
    args: AgentArgs,
    /// The running job: its subtask, its cancel token (the job ends CANCELLED) and its
    /// abandon token (the job ends silently: the session reports the subtask itself).
    running: Option<(i64, CancellationToken, CancellationToken)>,
}

impl Actor for JobAgent {
    type Msg = JobMsg;
    type State = JobState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<JobMsg>,
        args: AgentArgs,
    ) -> Result<JobState, ActorProcessingErr> {
        Ok(JobState {
            args,
            running: None,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<JobMsg>,
        msg: JobMsg,
        st: &mut JobState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobMsg::Turn(req) => {
                if st.running.is_some() {
                    // The session runs one subtask at a time; a second one is a bug upstream.
                    let p = req.ctx.payload(
                        100,
                        TaskStatus::Failed,
                        "another subtask of this task is still running",
                        None,
                    );
                    let _ = st.args.callbacks.cast(CallbackMsg::Send(Box::new(p)));
                    return Ok(());
                }
                let (cancel, abandon) = (CancellationToken::new(), CancellationToken::new());
                st.running = Some((req.ctx.subtask_id, cancel.clone(), abandon.clone()));
                spawn_job(&self.kind, &st.args, me, *req, cancel, abandon);
            }
            JobMsg::Interrupt => {
                if let Some((_, cancel, _)) = &st.running {
                    cancel.cancel();
                }
            }
            JobMsg::Done { subtask_id, status } => {
                if st
                    .running
                    .as_ref()
                    .is_some_and(|(s, _, _)| *s == subtask_id)
                {
                    st.running = None;
                    let _ = st
                        .args
                        .session
                        .cast(SessionMsg::TurnDone { subtask_id, status });
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<JobMsg>,
        st: &mut JobState,
    ) -> Result<(), ActorProcessingErr> {
        // The session fails what was running; the job must not send a second terminal.
        if let Some((_, _, abandon)) = st.running.take() {
            abandon.cancel();
        }
        Ok(())
    }
}

fn spawn_job(
    kind: &AgentKind,
    args: &AgentArgs,
    me: ActorRef<JobMsg>,
    req: TurnRequest,
    cancel: CancellationToken,
    abandon: CancellationToken,
) {
    let callbacks = args.callbacks.clone();
    let cfg = args.cfg.clone();
    let kind = kind.clone();
    let subtask_id = req.ctx.subtask_id;
    tokio::spawn(async move {
        let emit = move |p: CallbackPayload| {
            let _ = callbacks.cast(CallbackMsg::Send(Box::new(p)));
        };
        let work = async move {
            match kind {
                AgentKind::Dify => {
                    let run = super::dify::DifyRun {
                        ctx: req.ctx,
                        prompt: req.prepared.prompt.clone(),
                        task_dir: req.prepared.task_dir.clone(),
                        spec: req.spec,
                        cipher: cfg.workspace.cipher.clone(),
                        cancel,
                        timeout: super::dify::client::STREAM_TIMEOUT,
                    };
                    super::dify::run_dify(run, &emit).await
                }
                _ => {
                    let params = req.spec.validation.clone().unwrap_or_default();
                    tokio::select! {
                        s = super::validation::run_validation(
                            &req.ctx,
                            &params,
                            super::validation::checks::CHECK_TIMEOUT,
                            &emit,
                        ) => s,
                        _ = cancel.cancelled() => {
                            emit(req.ctx.payload(100, TaskStatus::Cancelled,
                                super::claude_turn::CANCEL_MESSAGE, None));
                            TaskStatus::Cancelled
                        }
                    }
                }
            }
        };
        let status = tokio::select! {
            s = work => s,
            _ = abandon.cancelled() => return,
        };
        let _ = me.cast(JobMsg::Done { subtask_id, status });
    });
}
