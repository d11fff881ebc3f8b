//! The runtime as the frontend sees it: start the actor tree, talk to it, shut it down.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};

use crate::callback::{CallbackMsg, CallbackRelay};
use crate::config::RuntimeConfig;
use crate::error::SupervisorError;
use crate::events::EventBus;
use crate::index::SessionIndex;
use crate::supervisor::{
    CancelOutcome, CloseScope, ExecuteOutcome, Supervisor, SupervisorArgs, SupervisorMsg,
};
use crate::task::{AgentKind, TaskSpec};

/// How long the frontend waits for the supervisor to accept a subtask.
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Handles to the running actor tree. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    supervisor: ActorRef<SupervisorMsg>,
    agno_pool: Option<ActorRef<crate::agent::agno::pool::PoolMsg>>,
    callbacks: ActorRef<CallbackMsg>,
    index: SessionIndex,
    cfg: Arc<RuntimeConfig>,
    events: EventBus,
    shutting_down: Arc<std::sync::atomic::AtomicBool>,
}

impl Runtime {
    /// Starts the callback relay and the supervisor.
    pub async fn start(cfg: RuntimeConfig) -> Result<Self, SupervisorError> {
        let cfg = Arc::new(cfg);
        match crate::agent::family::become_subreaper() {
            Ok(()) => crate::child::start_reaper(),
            Err(e) => tracing::warn!(
                "cannot become a child subreaper ({e}); orphaned tool processes may escape"
            ),
        }
        // What an earlier instance left running (after a SIGKILL, say) is ended before
        // anything new starts.
        let root = cfg.workspace_root.clone();
        let left = tokio::task::spawn_blocking(move || crate::orphans::end_leftovers(&root))
            .await
            .unwrap_or(0);
        if left > 0 {
            tracing::warn!("ended {left} process(es) left running by an earlier executor");
        }
        let unavailable = |e: ractor::SpawnErr| SupervisorError::Unavailable(e.to_string());
        if cfg.callback.url.is_some() {
            let dir = cfg.callback.spool_dir.clone();
            tokio::task::spawn_blocking(move || crate::spool::check_dir(&dir))
                .await
                .map_err(|e| SupervisorError::Unavailable(e.to_string()))??;
        }
        let events = EventBus::default();
        let (callbacks, _) =
            Actor::spawn(None, CallbackRelay, (cfg.callback.clone(), events.clone()))
                .await
                .map_err(unavailable)?;
        let index = SessionIndex::default();
        if let Err(e) = crate::agent::agno::client::install_script(&cfg).await {
            tracing::warn!(
                "cannot write the agno client to {}: {e}; Agno tasks will fail",
                cfg.agno.client_script.display()
            );
        }
        let agno_ready = crate::agent::agno::pool::agno_installed(&cfg.agno.python).await;
        if !agno_ready {
            tracing::info!("{}", crate::agent::agno::pool::NOT_INSTALLED_NOTE);
        }
        let agno_pool = if cfg.agno.pool_size > 0 && agno_ready {
            let (pool, _) = Actor::spawn(None, crate::agent::agno::pool::AgnoPool, cfg.clone())
                .await
                .map_err(unavailable)?;
            Some(pool)
        } else {
            None
        };
        let args = SupervisorArgs {
            cfg: cfg.clone(),
            callbacks: callbacks.clone(),
            index: index.clone(),
            agents: Arc::new(crate::agent::Registry {
                agno_pool: agno_pool.clone(),
            }),
        };
        let (supervisor, _) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(unavailable)?;
        if let Some(hb) = cfg.heartbeat.clone() {
            Actor::spawn(None, crate::heartbeat::Heartbeat, hb)
                .await
                .map_err(unavailable)?;
        }
        Ok(Self {
            supervisor,
            agno_pool,
            callbacks,
            index,
            cfg,
            events,
            shutting_down: Arc::default(),
        })
    }

    /// From now on new tasks are refused (503): called when a shutdown signal arrives.
    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the executor should get new tasks, and why not: false while shutting down or
    /// at the session cap (for a readiness probe).
    pub fn readiness(&self) -> (bool, &'static str) {
        if self.is_shutting_down() {
            (false, "shutting down")
        } else if self
            .cfg
            .max_sessions
            .is_some_and(|cap| self.index.len() >= cap)
        {
            (false, "at the session cap")
        } else if crate::metrics::METRICS.spool_degraded() {
            (
                false,
                "the callback spool cannot be written; callbacks wait in memory",
            )
        } else {
            (true, "accepting tasks")
        }
    }

    /// True once [`Runtime::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Live event streams per task (`GET /api/tasks/{id}/events`).
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The read-only session view.
    pub fn index(&self) -> &SessionIndex {
        &self.index
    }

    /// The settings the runtime runs with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// Hands a subtask to its session (contract: answers at once; the work goes on).
    pub async fn execute(&self, spec: TaskSpec) -> Result<ExecuteOutcome, SupervisorError> {
        let ms = EXECUTE_TIMEOUT.as_millis() as u64;
        ractor::call_t!(self.supervisor, SupervisorMsg::Execute, ms, Box::new(spec))
            .map_err(|e| SupervisorError::Unavailable(e.to_string()))
    }

    /// Runs the `TASK_INFO` subtask: like [`Runtime::execute`], and its terminal callback is
    /// repeated once after executor_manager's late report (see [`CallbackMsg::RepeatTerminal`]).
    pub async fn execute_task_info(
        &self,
        spec: TaskSpec,
    ) -> Result<ExecuteOutcome, SupervisorError> {
        if !self.cfg.callback.terminal_repeat_delay.is_zero() {
            let _ = self.callbacks.cast(CallbackMsg::RepeatTerminal {
                task_id: spec.task_id,
                subtask_id: spec.subtask_id,
            });
        }
        self.execute(spec).await
    }

    /// Cancels what a task is running.
    pub async fn cancel(&self, task_id: i64) -> Result<CancelOutcome, SupervisorError> {
        ractor::call_t!(self.supervisor, SupervisorMsg::Cancel, 10_000, task_id)
            .map_err(|e| SupervisorError::Unavailable(e.to_string()))
    }

    /// Ends sessions and returns how many; when it returns their processes are gone.
    pub async fn close(&self, scope: CloseScope, reason: &str) -> Result<usize, SupervisorError> {
        let ms = (self.cfg.stop.budget() + Duration::from_secs(5)).as_millis() as u64;
        let drain_pool = matches!(scope, CloseScope::All | CloseScope::Kind(AgentKind::Agno));
        let closed = ractor::call_t!(
            self.supervisor,
            SupervisorMsg::Close,
            ms,
            scope,
            reason.to_string()
        )
        .map_err(|e| SupervisorError::Unavailable(e.to_string()))?;
        if let (true, Some(pool)) = (drain_pool, &self.agno_pool) {
            // The warm pool's spare clients are processes too: none outlives a close-all.
            let _ = ractor::call_t!(pool, crate::agent::agno::pool::PoolMsg::Drain, ms);
        }
        Ok(closed)
    }

    /// Graceful stop, bounded by `deadline`: close every session (their running subtasks get
    /// `FAILED` with `reason`), end the warm pool, then deliver queued callbacks until the
    /// deadline. Whatever is not delivered by then stays in the spool and goes out at the next
    /// start, so the executor exits in time (docker stop SIGKILLs 10 s after its SIGTERM, and
    /// the receiver may be the very executor_manager blocked in that docker stop).
    pub async fn shutdown(&self, reason: &str, deadline: tokio::time::Instant) {
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left(), self.close(CloseScope::All, reason)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("closing sessions at shutdown: {e}"),
            Err(_) => tracing::warn!("closing sessions at shutdown: out of time"),
        }
        let budget = self.cfg.stop.budget().min(left());
        let _ = self.supervisor.stop_and_wait(None, Some(budget)).await;
        if let Some(pool) = &self.agno_pool {
            let budget = self.cfg.stop.budget().min(left());
            let _ = pool.stop_and_wait(None, Some(budget)).await;
        }
        let ms = left().as_millis() as u64;
        if ractor::call_t!(self.callbacks, CallbackMsg::Flush, ms.max(1)).is_err() {
            tracing::warn!(
                "shutdown deadline reached: undelivered callbacks stay in the spool for the next start"
            );
        }
        self.callbacks.stop(None);
    }
}
