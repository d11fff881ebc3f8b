//! Synchronous agents (Dify, the image validator) answer `POST /api/tasks/execute` with the
//! subtask's final status, as the original does (contract §13.1). The original blocks its event
//! loop for that; here only the one request waits, on the task's event bus
//! ([`crate::events`]), while every other task, route and callback goes on.

use std::time::Duration;

use serde_json::Value;

use crate::events::Subscription;
use crate::payload::TaskStatus;

/// How long an execute request waits for a synchronous agent's final status before it answers
/// `RUNNING` (the agent itself gives up after its own limits: Dify's 300 s, 30 s per check).
pub const WAIT_LIMIT: Duration = Duration::from_secs(330);

/// Waits for the terminal event of `subtask_id` on `sub`; `None` when the limit passes or the
/// stream ends first (the caller then answers `RUNNING`: the callbacks still tell the end).
pub async fn wait_final(
    mut sub: Subscription,
    subtask_id: i64,
    limit: Duration,
) -> Option<TaskStatus> {
    let wait = async {
        loop {
            match sub.recv().await {
                Ok((_, json)) => {
                    if let Some(status) = terminal_of(&json, subtask_id) {
                        return Some(status);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    };
    tokio::time::timeout(limit, wait).await.ok().flatten()
}

/// The terminal status of a callback event of `subtask_id`, if it is one.
fn terminal_of(json: &str, subtask_id: i64) -> Option<TaskStatus> {
    let v: Value = serde_json::from_str(json).ok()?;
    if v.get("subtask_id").and_then(Value::as_i64) != Some(subtask_id) {
        return None;
    }
    match v.get("status").and_then(Value::as_str)? {
        "COMPLETED" => Some(TaskStatus::Completed),
        "FAILED" => Some(TaskStatus::Failed),
        "CANCELLED" => Some(TaskStatus::Cancelled),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_subtasks_terminal_counts() {
        assert_eq!(
            terminal_of(r#"{"subtask_id":2,"status":"COMPLETED"}"#, 2),
            Some(TaskStatus::Completed)
        );
        assert_eq!(
            terminal_of(r#"{"subtask_id":1,"status":"FAILED"}"#, 2),
            None
        );
        assert_eq!(
            terminal_of(r#"{"subtask_id":2,"status":"RUNNING"}"#, 2),
            None
        );
    }
}
