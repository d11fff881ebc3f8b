//! What the executor adopted, or an earlier instance of it left behind, is its own to end.
//!
//! The marker and tree sweeps of [`crate::agent::family`] find what an agent started as long as
//! it kept the marker in its environment or stayed below the agent. A tool can shed both
//! (`setsid env -i sh -c '…' &`): it then has no marker, and once its parent exits the
//! executor — a child subreaper — adopts it. Adopted processes have no owner inside the
//! executor, so closing a task's session ends the adopted processes working in that task's
//! directory, and close-all and shutdown end every adopted process. After a SIGKILL of the
//! executor, its agents and their tools live on under init; the next instance ends them at
//! start-up, before it serves: processes carrying the marker of an executor that is no longer
//! alive and working under `WORKSPACE_ROOT`, and orphans (parent: init) working in a task's
//! directory under it. Another executor's processes on the same host (another root) are never
//! touched, dead owner or not.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::family::{self, MARKER_ENV};

/// How long to wait for SIGKILLed processes to be gone.
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// The working directory of `pid`, if readable.
fn cwd_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// `dir` made absolute and free of symlinks, as the kernel reports working directories.
fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// The executor's ancestors (never to be signalled, whatever they carry).
fn ancestors(table: &[(u32, u32, char)]) -> HashSet<u32> {
    let mut out = HashSet::new();
    let mut pid = std::process::id();
    while let Some((_, ppid, _)) = table.iter().find(|(p, _, _)| *p == pid) {
        if *ppid == 0 || !out.insert(*ppid) {
            break;
        }
        pid = *ppid;
    }
    out
}

/// SIGKILLs `roots` and their descendants (found in `table`, else walked) and waits until they
/// are gone; returns how many.
fn kill_families(table: Option<&[(u32, u32, char)]>, roots: Vec<u32>) -> usize {
    if roots.is_empty() {
        return 0;
    }
    let mut all = match table {
        Some(table) => family::descendants_in(table, &roots),
        None => family::descendants_of(&roots),
    };
    all.extend(roots);
    all.sort_unstable();
    all.dedup();
    family::signal_all(&all, libc::SIGKILL);
    family::wait_gone(&all, KILL_SETTLE);
    all.len()
}

/// Ends adopted processes — direct children of the executor it did not start itself — and
/// their descendants: those working under one of `dirs`, or all of them when `dirs` is
/// `None`. Blocking (reads `/proc`); returns how many processes were killed. Their zombies
/// are collected by the reaper ([`crate::child::start_reaper`]).
pub fn end_adopted(dirs: Option<&[PathBuf]>) -> usize {
    // The adopted children are read from the executor's own children files (no scan of every
    // process: closing one task's session must not cost a scan of the host).
    let dirs: Option<Vec<PathBuf>> = dirs.map(|d| d.iter().map(|p| canonical(p)).collect());
    let roots: Vec<u32> = family::adopted_children()
        .into_iter()
        .filter(|pid| match &dirs {
            None => true,
            Some(dirs) => cwd_of(*pid).is_some_and(|cwd| dirs.iter().any(|d| cwd.starts_with(d))),
        })
        .collect();
    kill_families(None, roots)
}

/// Whether `cwd` is inside a task's directory (`<root>/<task_id>/…`): only those orphans are
/// the executor's, never a daemon that merely works somewhere under a broad `WORKSPACE_ROOT`.
fn in_task_dir(cwd: &Path, root: &Path) -> bool {
    cwd.strip_prefix(root)
        .ok()
        .and_then(|rest| rest.components().next())
        .and_then(|first| first.as_os_str().to_str())
        .is_some_and(|name| name.parse::<i64>().is_ok())
}

/// The executor pid inside a marker value (`<executor pid>-<task>-<n>`).
fn marker_owner(environ: &[u8]) -> Option<u32> {
    let needle = format!("{MARKER_ENV}=");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(needle.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.split('-').next())
        .and_then(|pid| pid.parse().ok())
}

/// Ends what earlier executor instances left behind (see the module docs). Run at start-up,
/// before anything is served; blocking. Returns how many processes were killed.
pub fn end_leftovers(workspace_root: &Path) -> usize {
    let me = std::process::id();
    let root = canonical(workspace_root);
    let table = family::process_table();
    let spared = ancestors(&table);
    let alive = |pid: u32| table.iter().any(|(p, _, s)| *p == pid && *s != 'Z');
    let roots: Vec<u32> = table
        .iter()
        .filter(|(pid, _, state)| *pid != me && *pid > 1 && *state != 'Z' && !spared.contains(pid))
        .filter(|(pid, ppid, _)| {
            // A dead executor's process counts only when it works under this executor's
            // workspace root: another executor on the host (its own root) is not ours to end.
            let dead_owner = std::fs::read(format!("/proc/{pid}/environ"))
                .ok()
                .and_then(|env| marker_owner(&env))
                .is_some_and(|owner| owner != me && !alive(owner))
                && cwd_of(*pid).is_some_and(|cwd| cwd.starts_with(&root));
            let orphan_in_root =
                *ppid == 1 && cwd_of(*pid).is_some_and(|cwd| in_task_dir(&cwd, &root));
            dead_owner || orphan_in_root
        })
        .map(|(pid, _, _)| *pid)
        .collect();
    kill_families(Some(&table), roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_its_executor() {
        let env = format!("A=1\0{MARKER_ENV}=4242-7-3\0B=2\0");
        assert_eq!(marker_owner(env.as_bytes()), Some(4242));
        assert_eq!(marker_owner(b"A=1\0B=2\0"), None);
        assert_eq!(marker_owner(format!("{MARKER_ENV}=x-1").as_bytes()), None);
    }

    #[test]
    fn only_task_directories_count() {
        let root = Path::new("/ws");
        assert!(in_task_dir(Path::new("/ws/41"), root));
        assert!(in_task_dir(Path::new("/ws/-7/src/deep"), root));
        assert!(!in_task_dir(Path::new("/ws"), root));
        assert!(!in_task_dir(Path::new("/ws/.agno"), root));
        assert!(!in_task_dir(Path::new("/elsewhere/41"), root));
    }

    #[test]
    fn the_executor_never_counts_its_ancestors_as_leftovers() {
        let table = family::process_table();
        let a = ancestors(&table);
        let parent = std::os::unix::process::parent_id();
        assert!(a.contains(&parent), "{parent} not in {a:?}");
        assert!(!a.contains(&std::process::id()));
    }
}
