//! Every process an agent started — found and ended, whatever it did to escape.
//!
//! Claude Code's Bash tool starts commands in their own sessions and process groups, and a tool
//! may daemonise, so killing the CLI's process group is not enough. Three mechanisms cover it:
//! each agent process gets a unique marker in its environment (inherited by every descendant
//! that keeps its environment), the process tree below the agent is walked through `/proc`, and
//! the executor is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so orphans are re-parented to
//! it — where [`crate::child::reap_adopted`] collects them so that no zombie accumulates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

/// Environment variable carrying an agent process's marker to all its descendants.
pub const MARKER_ENV: &str = "EXECUTOR_AGENT_MARKER";

static NEXT_MARKER: AtomicU64 = AtomicU64::new(1);

/// A marker unique to this executor process and this agent process.
pub fn new_marker(task_id: i64) -> String {
    format!(
        "{}-{}-{}",
        std::process::id(),
        task_id,
        NEXT_MARKER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Set once the executor is a subreaper: escaped processes are then always below it.
static SUBREAPER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long a `/proc` scan is reused: closing 500 sessions at once must not scan 500 times.
const TABLE_TTL: std::time::Duration = std::time::Duration::from_millis(25);

type Table = std::sync::Arc<Vec<(u32, u32, char)>>;

static TABLE: LazyLock<Mutex<Option<(std::time::Instant, Table)>>> =
    LazyLock::new(|| Mutex::new(None));

/// Makes the executor adopt orphaned descendants instead of init (Linux only).
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        SUBREAPER.store(true, Ordering::Relaxed);
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A recent `(pid, ppid, state)` table (at most [`TABLE_TTL`] old).
pub(crate) fn recent_table() -> Table {
    let mut guard = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, t)) = guard.as_ref() {
        if at.elapsed() < TABLE_TTL {
            return t.clone();
        }
    }
    let t: Table = std::sync::Arc::new(process_table());
    *guard = Some((std::time::Instant::now(), t.clone()));
    t
}

/// `(pid, ppid, state)` of every process, from `/proc/<pid>/stat`. One path and one read
/// buffer serve the whole scan (it runs for every agent process that ends; allocating per
/// process showed in profiles).
pub(crate) fn process_table() -> Vec<(u32, u32, char)> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(256);
    let mut path = String::with_capacity(32);
    let mut buf = Vec::with_capacity(512);
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = std::str::from_utf8(name.as_bytes())
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        path.clear();
        path.push_str("/proc/");
        path.push_str(std::str::from_utf8(name.as_bytes()).unwrap_or_default());
        path.push_str("/stat");
        buf.clear();
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        if f.read_to_end(&mut buf).is_err() {
            continue;
        }
        if let Some((ppid, state)) = parse_stat(&buf) {
            out.push((pid, ppid, state));
        }
    }
    out
}

/// The fields of a `/proc/<pid>/stat` text after the command name, from the state on (the
/// command may hold any byte, so fields are read after its last `)`).
pub(crate) fn stat_fields(stat: &[u8]) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    Some(
        std::str::from_utf8(stat.get(close + 2..)?)
            .ok()?
            .split_ascii_whitespace(),
    )
}

/// `(ppid, state)` from the text of `/proc/<pid>/stat`.
fn parse_stat(stat: &[u8]) -> Option<(u32, char)> {
    let mut fields = stat_fields(stat)?;
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Every living descendant of `root` (children, grandchildren, ...).
pub fn descendants(root: u32) -> Vec<u32> {
    descendants_of(&[root])
}

/// Whether this kernel lists each thread's children in `/proc/<pid>/task/<tid>/children`
/// (`CONFIG_PROC_CHILDREN`). Then a family is found by reading its own entries, a few files,
/// instead of the `stat` of every process on the host: with hundreds of agents, the scan per
/// ending agent was the executor's costliest part of ending a task.
static CHILDREN_FILES: LazyLock<bool> =
    LazyLock::new(|| std::path::Path::new("/proc/thread-self/children").exists());

/// Appends the children of `pid`'s main thread (zombies included) to `out`.
///
/// Only the main thread's file is read: the processes a CLI starts (node's `child_process`,
/// Python's `subprocess` from the main thread) are its children, and looking up the entries of
/// the other threads creates `/proc` dentries that each of those threads must tear down as it
/// exits, while the executor reaping the process tears down the same ones: at the agents' low
/// priority, that contention had the reaper spin in the kernel for milliseconds per agent
/// (measured: a quarter of the executor's CPU). A process started by another thread is still
/// ended: it is in the agent's process group, or, once orphaned, it is adopted by the executor
/// and found by its marker or working directory.
fn children_into(pid: u32, out: &mut Vec<u32>) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else {
        return; // gone
    };
    out.extend(
        text.split_ascii_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
}

/// The children the executor has adopted or may have (zombies included; `None` without
/// `CONFIG_PROC_CHILDREN`): those of its main thread alone. An orphan is re-parented to the
/// subreaper's first living thread (the kernel's `find_alive_thread`), which is the main thread
/// while the process lives, whereas the processes the executor starts are children of the
/// threads that spawned them (launcher threads, workers). Reading one file instead of one per
/// executor thread (dozens) made it cheap enough for every ending agent.
pub(crate) fn orphan_candidates() -> Option<Vec<u32>> {
    if !*CHILDREN_FILES {
        return None;
    }
    let mut out = Vec::new();
    children_into(std::process::id(), &mut out);
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Whether `pid` is a zombie (or already gone).
fn is_zombie_or_gone(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
        .is_none_or(|(_, state)| state == 'Z' || state == 'X')
}

/// Living descendants of `roots`: walked through their children files where the kernel has
/// them, else found in a recent process table.
pub(crate) fn descendants_of(roots: &[u32]) -> Vec<u32> {
    if !*CHILDREN_FILES {
        return descendants_in(&recent_table(), roots);
    }
    let mut out: Vec<u32> = Vec::new();
    let mut generation: Vec<u32> = roots.to_vec();
    // A family is a few levels deep; the bound only guards against a pid loop through reuse.
    for _ in 0..64 {
        if generation.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for pid in &generation {
            children_into(*pid, &mut next);
        }
        next.sort_unstable();
        next.dedup();
        next.retain(|p| !roots.contains(p) && out.binary_search(p).is_err());
        for p in &next {
            if let Err(i) = out.binary_search(p) {
                out.insert(i, *p);
            }
        }
        generation = next;
    }
    out.retain(|p| !is_zombie_or_gone(*p));
    out
}

/// Living children of the executor it did not start itself (adopted orphans).
pub(crate) fn adopted_children() -> Vec<u32> {
    let me = std::process::id();
    let kids: Vec<u32> = match orphan_candidates() {
        Some(kids) => kids,
        None => recent_table()
            .iter()
            .filter(|(_, ppid, state)| *ppid == me && *state != 'Z')
            .map(|(pid, _, _)| *pid)
            .collect(),
    };
    crate::child::adopted_among(&kids)
        .into_iter()
        .filter(|p| !is_zombie_or_gone(*p))
        .collect()
}

/// Living descendants of `roots` in `table`, found generation by generation (a family is a few
/// levels deep; no map of the whole table is built).
pub(crate) fn descendants_in(table: &[(u32, u32, char)], roots: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut generation: Vec<u32> = roots.to_vec();
    while !generation.is_empty() {
        generation.sort_unstable();
        generation.dedup();
        let next: Vec<u32> = table
            .iter()
            .filter(|(_, ppid, state)| *state != 'Z' && generation.binary_search(ppid).is_ok())
            .map(|(pid, _, _)| *pid)
            .collect();
        out.extend_from_slice(&next);
        generation = next;
    }
    // Roots that descend from other roots would be counted twice.
    out.sort_unstable();
    out.dedup();
    out
}

/// Living processes whose environment carries `marker`. As a subreaper, a process that left
/// the agent's tree was adopted by the executor, so only adopted processes and their
/// descendants need their environment read; otherwise every process is checked.
pub fn marked(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER_ENV}={marker}\0");
    let candidates: Vec<u32> = if SUBREAPER.load(Ordering::Relaxed) {
        let adopted = adopted_children();
        if adopted.is_empty() {
            return Vec::new(); // the usual case: nothing left the agents' trees
        }
        let mut all = descendants_of(&adopted);
        all.extend(adopted);
        all
    } else {
        recent_table()
            .iter()
            .filter(|(_, _, s)| *s != 'Z')
            .map(|(pid, _, _)| *pid)
            .collect()
    };
    candidates
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Sends `sig` to each pid (errors such as "already gone" are ignored).
pub fn signal_all(pids: &[u32], sig: i32) {
    for pid in pids {
        if let Ok(p) = i32::try_from(*pid) {
            if p > 1 && p != std::process::id() as i32 {
                // SAFETY: kill(2) on a pid; no memory is shared.
                unsafe {
                    libc::kill(p, sig);
                }
            }
        }
    }
}

/// Whether `pid` is alive (neither gone nor a zombie).
fn alive(pid: &u32) -> bool {
    !is_zombie_or_gone(*pid)
}

/// Waits (polling `/proc`) until none of `pids` is alive — gone or a zombie — or `limit` passes.
pub fn wait_gone(pids: &[u32], limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while pids.iter().any(alive) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// [`wait_gone`] without holding a thread while it waits: a killed family that takes its time
/// to die must not keep one of the blocking pool's (capped) threads from starting agents.
pub async fn wait_gone_async(pids: Vec<u32>, limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    // Each check reads one small `/proc` file per pid (microseconds; no disk).
    while pids.iter().any(alive) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
