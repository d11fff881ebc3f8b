//! The read-only session view the HTTP side lists without a round trip to the supervisor.

use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;

use crate::payload::SubtaskContext;

/// What a session is doing, as the listing shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Alive, no subtask running.
    Idle,
    /// A subtask is running.
    Running,
    /// Idle, and its agent process was ended to free memory; the next subtask resumes.
    Suspended,
    /// A subtask is ready to run but waits for a free agent process slot
    /// (`MAX_LIVE_PROCESSES`); it starts as soon as one frees.
    Queued,
}

/// One row of `GET /api/tasks/sessions`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// The task the session serves.
    pub task_id: i64,
    /// `"ClaudeCode"`, as the original's `get_name()`.
    pub agent_type: String,
    /// See [`SessionStatus`].
    pub status: SessionStatus,
    /// Seconds since the Unix epoch, as the original's `time.time()`.
    pub created_at: f64,
    /// The subtask running now, if any.
    pub current_subtask_id: Option<i64>,
    /// Subtasks waiting behind the current one.
    pub queued: usize,
    /// Subtasks this session has finished.
    pub completed_subtasks: u64,
    /// Who to report on if the session dies mid-subtask (not listed).
    #[serde(skip)]
    pub current: Option<SubtaskContext>,
}

/// Shared map `task_id → SessionInfo`. Only the supervisor writes it.
#[derive(Debug, Clone, Default)]
pub struct SessionIndex(Arc<DashMap<i64, SessionInfo>>);

impl SessionIndex {
    /// A snapshot of every session, sorted by task id.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.0.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|s| s.task_id);
        v
    }

    /// One session, if it exists.
    pub fn get(&self, task_id: i64) -> Option<SessionInfo> {
        self.0.get(&task_id).map(|e| e.value().clone())
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no session is alive.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn insert(&self, info: SessionInfo) {
        self.0.insert(info.task_id, info);
    }

    pub(crate) fn update(&self, task_id: i64, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(mut e) = self.0.get_mut(&task_id) {
            f(e.value_mut());
        }
    }

    pub(crate) fn remove(&self, task_id: i64) -> Option<SessionInfo> {
        self.0.remove(&task_id).map(|(_, v)| v)
    }
}
