//! A task's directories: created owner-only, and handed to the agent user when agents run as
//! another user. Both workspace preparation and the agents need them, so they live below both
//! layers (workspace must not reach up into `agent/`).

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::AgentUser;

/// Creates `dir` (and parents) with owner-only permissions.
pub async fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = tokio::fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b.create(dir).await
}

/// [`create_private_dir`] for code already on a blocking thread.
pub fn create_private_dir_blocking(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Hands `task_dir` and everything under it to `user` (symlinks themselves, never their
/// targets), and lets that user traverse its parent (the workspace root, mode `o+x`, no
/// listing). Blocking: run it off the async workers.
pub fn hand_over(task_dir: &Path, user: AgentUser) -> io::Result<()> {
    if let Some(root) = task_dir.parent() {
        let meta = std::fs::metadata(root)?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode | 0o001))?;
        }
    }
    let mut stack: Vec<PathBuf> = vec![task_dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.uid() != user.uid || meta.gid() != user.gid {
            std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}
