//! The durable record of accepted, unfinished subtasks, so every accepted subtask ends exactly
//! once even when the executor is killed while it runs (DESIGN: "accepted means finished once").
//!
//! A line in the spool's journal ([`crate::spool_journal`]) per subtask, appended by the spool
//! writer right before the subtask's first record (its "Task execution started", sent at
//! acceptance, so queued subtasks have one too) and closed right after its terminal record was
//! appended (or, when the spool was failing, after the terminal was delivered from memory).
//! At start-up a record whose subtask has no terminal in the replayed spool log means the
//! executor died while the subtask was accepted: the relay sends one `FAILED` for it before any
//! new work. A crash between the terminal's append and the record's close leaves both, and the
//! terminal found in the log wins, so no second terminal is ever produced.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::payload::{CallbackPayload, SubtaskContext, TraceContext};
use crate::protocol::{Protocol, ResponsesIdentity};

/// The message of the terminal sent for a subtask the executor was running when it died.
pub const RESTARTED_MESSAGE: &str =
    "the executor restarted while this subtask ran; its work was interrupted (send the next message to continue the conversation)";

/// What is needed to end an interrupted subtask: its identity as every payload repeats it, and
/// the last sequence number it used once its spool file was compacted away.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Unfinished {
    /// `task_id`.
    pub task_id: i64,
    /// `subtask_id`.
    pub subtask_id: i64,
    /// `task_title`.
    pub task_title: String,
    /// `subtask_title`.
    pub subtask_title: String,
    /// `type`.
    #[serde(default)]
    pub task_type: Option<String>,
    /// `EXECUTOR_NAME` at the time.
    #[serde(default)]
    pub executor_name: Option<String>,
    /// `EXECUTOR_NAMESPACE` at the time.
    #[serde(default)]
    pub executor_namespace: Option<String>,
    /// `X-Request-ID` of the execute request.
    #[serde(default)]
    pub request_id: Option<String>,
    /// `traceparent` of the execute request.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// Highest `X-Callback-Sequence` used, recorded when the task's spool file is removed.
    #[serde(default)]
    pub seq: u64,
    /// The Responses identity of a subtask that came in on `/v1/responses` (absent for the old
    /// protocol), so its crash terminal is an `error` event in its own encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<ResponsesIdentity>,
}

impl Unfinished {
    /// The record of the subtask a payload reports on.
    pub fn of(p: &CallbackPayload) -> Self {
        Self {
            task_id: p.task_id,
            subtask_id: p.subtask_id,
            task_title: p.task_title.clone(),
            subtask_title: p.subtask_title.clone(),
            task_type: p.task_type.clone(),
            executor_name: p.executor_name.clone(),
            executor_namespace: p.executor_namespace.clone(),
            request_id: p.trace.request_id.clone(),
            traceparent: p.trace.traceparent.clone(),
            seq: 0,
            responses: p.protocol.responses().cloned(),
        }
    }

    /// A record known only by its ids (its file was unreadable), with empty titles.
    pub fn unnamed(task_id: i64, subtask_id: i64) -> Self {
        Self {
            task_id,
            subtask_id,
            task_title: String::new(),
            subtask_title: String::new(),
            task_type: None,
            executor_name: None,
            executor_namespace: None,
            request_id: None,
            traceparent: None,
            seq: 0,
            responses: None,
        }
    }

    /// The context the terminal for this subtask is built from.
    pub fn context(&self) -> SubtaskContext {
        SubtaskContext {
            task_id: self.task_id,
            subtask_id: self.subtask_id,
            task_title: self.task_title.clone(),
            subtask_title: self.subtask_title.clone(),
            task_type: self.task_type.clone(),
            executor_name: self.executor_name.clone(),
            executor_namespace: self.executor_namespace.clone(),
            trace: TraceContext {
                request_id: self.request_id.clone(),
                traceparent: self.traceparent.clone(),
                ..Default::default()
            },
            protocol: match &self.responses {
                Some(id) => Protocol::Responses(Box::new(id.clone())),
                None => Protocol::Legacy,
            },
        }
    }
}

/// The ids in an earlier version's record file name `open-<task>-<subtask>.json`.
fn ids(name: &str) -> Option<(i64, i64)> {
    let inner = name.strip_prefix("open-")?.strip_suffix(".json")?;
    // Task ids may be negative: split at the last '-' that follows a digit.
    let cut = inner
        .char_indices()
        .skip(1)
        .filter(|(i, c)| *c == '-' && inner[..*i].ends_with(|d: char| d.is_ascii_digit()))
        .map(|(i, _)| i)
        .next()?;
    Some((inner[..cut].parse().ok()?, inner[cut + 1..].parse().ok()?))
}

/// Takes the records an earlier version kept in a file per subtask (`open-<task>-<subtask>.json`
/// in the spool directory) and removes the files; the caller moves them into the journal. An
/// unreadable one still ends its subtask, known from the file name, with empty titles.
pub fn take_legacy(dir: &Path) -> Vec<Unfinished> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("open-") {
            continue;
        }
        if name.ends_with(".json.tmp") {
            // A rewrite the previous run was killed in the middle of; the record itself is whole.
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        let parsed = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Unfinished>(&b).ok());
        match (parsed, ids(&name)) {
            (Some(u), _) => out.push(u),
            (None, Some((task_id, subtask_id))) => {
                tracing::error!(
                    "unreadable record of unfinished subtask {task_id}.{subtask_id}: {}",
                    e.path().display()
                );
                out.push(Unfinished::unnamed(task_id, subtask_id));
            }
            (None, None) => tracing::error!("removing a stray file {}", e.path().display()),
        }
        let _ = std::fs::remove_file(e.path());
    }
    out.sort_by_key(|u| (u.task_id, u.subtask_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_an_earlier_version_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let u = Unfinished {
            task_title: "t".into(),
            subtask_title: "s".into(),
            seq: 3,
            ..Unfinished::unnamed(7, 2)
        };
        std::fs::write(
            dir.path().join("open-7-2.json"),
            serde_json::to_vec(&u).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("open-8-1.json"), b"{garbage").unwrap();
        let got = take_legacy(dir.path());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], u);
        assert_eq!((got[1].task_id, got[1].subtask_id), (8, 1));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn ids_come_from_the_file_name_also_for_negative_task_ids() {
        assert_eq!(ids("open-7-2.json"), Some((7, 2)));
        assert_eq!(ids("open--7-2.json"), Some((-7, 2)));
        assert_eq!(ids("open-7--2.json"), Some((7, -2)));
        assert_eq!(ids("open-x-2.json"), None);
    }
}
