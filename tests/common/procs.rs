//! Linux `/proc` inspection, so tests can prove the executor leaves no agent processes or
//! zombies behind (cancel, timeout, shutdown, crash of the CLI…).

use std::path::{Path, PathBuf};

/// Every pid currently listed in `/proc` (processes only, not threads).
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// `(state, ppid, pgid)` from `/proc/<pid>/stat`; `None` if the process is gone.
/// State is the one-letter code: `R`, `S`, `D`, `Z` (zombie), `T`, …
pub fn proc_stat(pid: u32) -> Option<(char, u32, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((state, ppid, pgid))
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `/proc/<pid>/stat` and `/proc/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// CPU time (user + system) the process `pid` itself has used; `None` if it is gone.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // After the command: utime is the 12th field, stime the 13th.
    let ticks = f.get(11)? + f.get(12)?;
    Some(std::time::Duration::from_micros(
        ticks * 1_000_000 / clock_ticks_per_second(),
    ))
}

/// The one-letter state of `pid`, `None` if it no longer exists (reaped).
pub fn process_state(pid: u32) -> Option<char> {
    proc_stat(pid).map(|(state, _, _)| state)
}

/// True if `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Command line of `pid` (arguments joined by spaces), for readable panic messages.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// `(pid, command line)` of every process (arguments joined by spaces), e.g. to prove a secret
/// is on no command line of the machine.
pub fn all_cmdlines() -> Vec<(u32, String)> {
    all_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, cmdline(pid)?)))
        .collect()
}

/// Working directory of `pid` (`None` for zombies, gone or foreign processes).
pub fn cwd_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Pids whose working directory is `dir` or below it. The executor runs each task's agent
/// with cwd `<WORKSPACE_ROOT>/<task_id>`, so this finds a task's agent and its tools. Zombies
/// have no cwd and are not listed (see [`zombie_children_of`]). A cwd that was deleted reads
/// as `<path> (deleted)` and is still matched under `dir`.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            cwd_of(pid).is_some_and(|cwd| cwd.starts_with(&canonical) || cwd.starts_with(dir))
        })
        .collect()
}

/// Direct children of `pid` (any state).
pub fn children_of(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|(_, ppid, _)| ppid == pid))
        .collect()
}

/// Children of `pid` that are zombies (exited, not yet reaped by `pid`).
pub fn zombie_children_of(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|(state, ppid, _)| ppid == pid && state == 'Z'))
        .collect()
}

/// Children, grandchildren… of `pid` (only those still linked by parentage: an orphan that
/// was re-parented to init is not found here; use [`processes_in`] for those).
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let table: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| proc_stat(p).map(|(_, ppid, _)| (p, ppid)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, ppid) in &table {
            if ppid == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// Members of process group `pgid`.
pub fn process_group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|(_, _, g)| g == pgid))
        .collect()
}

/// `pid state cmdline` per line, for panic messages about unexpected processes.
pub fn describe(pids: &[u32]) -> String {
    if pids.is_empty() {
        return "  (none)".to_string();
    }
    pids.iter()
        .map(|&p| {
            format!(
                "  {p} [{}] cwd={} {}",
                process_state(p).unwrap_or('?'),
                cwd_of(p)
                    .map(|c| c.display().to_string())
                    .unwrap_or_default(),
                cmdline(p).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sends `signal` to `pid` (ignoring "no such process").
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}
