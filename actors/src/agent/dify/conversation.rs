//! The Dify conversation id of a task, kept on disk next to the task's workspace
//! (`<WORKSPACE_ROOT>/<task_id>/.dify_conversation_id`) so a follow-up continues the
//! conversation after an executor restart (the original kept it in memory only). Read and
//! written in the Dify run's own task, never in an actor handler.

use std::path::{Path, PathBuf};

/// File name of the conversation id in the task directory.
pub const FILE_NAME: &str = ".dify_conversation_id";

/// Where the conversation id of the task in `task_dir` lives.
pub fn path(task_dir: &Path) -> PathBuf {
    task_dir.join(FILE_NAME)
}

/// The stored conversation id, if any (an unreadable or odd file counts as none).
pub async fn load(task_dir: &Path) -> Option<String> {
    let raw = tokio::fs::read_to_string(path(task_dir)).await.ok()?;
    let id = raw.trim();
    (!id.is_empty() && id.len() <= 256 && id.chars().all(|c| c.is_ascii_graphic()))
        .then(|| id.to_string())
}

/// Stores `id` (atomically: written aside, then renamed).
pub async fn save(task_dir: &Path, id: &str) -> std::io::Result<()> {
    let tmp = task_dir.join(format!("{FILE_NAME}.tmp"));
    tokio::fs::write(&tmp, id.as_bytes()).await?;
    tokio::fs::rename(&tmp, path(task_dir)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).await, None);
        save(dir.path(), "conv-1").await.unwrap();
        assert_eq!(load(dir.path()).await.as_deref(), Some("conv-1"));
    }
}
