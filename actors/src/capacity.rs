//! How many agent processes this machine can hold: the default of `MAX_LIVE_PROCESSES`.
//!
//! An agent process is heavy — a real Claude Code CLI (node) idles at ~210 MiB RSS (2.1.331,
//! measured; 2.1.33 at ~360 MiB) — so a fixed cap is wrong on both a laptop and a 64 GiB node.
//! The default is the memory the executor may use — its cgroup's limit (`memory.max` in
//! cgroup v2, `memory.limit_in_bytes` in v1) when one is set, else the kernel's `MemAvailable`
//! — divided by [`CLI_MEMORY_ESTIMATE_BYTES`]. Beyond the cap, subtasks that need a new
//! process wait for a slot (visibly: see the session and the supervisor).

use std::path::Path;

/// Memory budgeted per agent process: a real CLI 2.1.331 idles at ~210 MiB RSS and grows
/// while it works; 256 MiB leaves it that headroom.
pub const CLI_MEMORY_ESTIMATE_BYTES: u64 = 256 * 1024 * 1024;

/// Used when no memory figure can be read at all.
pub const FALLBACK_LIVE_PROCESSES: usize = 64;

/// cgroup v1 reports "no limit" as a number near `i64::MAX`; anything above this is no limit.
const NO_LIMIT_ABOVE: u64 = 1 << 60;

/// The default cap on live agent processes for this machine (at least 1).
pub fn default_live_processes() -> usize {
    match memory_budget() {
        Some(bytes) => live_processes_for(bytes),
        None => FALLBACK_LIVE_PROCESSES,
    }
}

/// How many agent processes fit in `bytes`.
pub fn live_processes_for(bytes: u64) -> usize {
    usize::try_from(bytes / CLI_MEMORY_ESTIMATE_BYTES)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The memory the executor may use: its cgroup's limit, else `MemAvailable`.
pub fn memory_budget() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    cgroup_limit(&cgroups, Path::new("/sys/fs/cgroup")).or_else(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_available(&m))
    })
}

/// The memory limit of the cgroup named in `/proc/self/cgroup` text, read under `root`.
fn cgroup_limit(cgroups: &str, root: &Path) -> Option<u64> {
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let file = if id == "0" && controllers.is_empty() {
            // cgroup v2 (unified): mounted at the root, or at `unified` in hybrid setups.
            [
                root.join(rel).join("memory.max"),
                root.join("unified").join(rel).join("memory.max"),
            ]
            .into_iter()
            .find(|f| f.is_file())
        } else if controllers.split(',').any(|c| c == "memory") {
            Some(root.join("memory").join(rel).join("memory.limit_in_bytes"))
        } else {
            None
        };
        let limit = file
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|v| *v < NO_LIMIT_ABOVE);
        if limit.is_some() {
            return limit;
        }
    }
    None
}

/// `MemAvailable` of `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_divides_into_processes() {
        assert_eq!(live_processes_for(0), 1);
        assert_eq!(live_processes_for(CLI_MEMORY_ESTIMATE_BYTES * 3 + 1), 3);
        assert_eq!(live_processes_for(24 * 1024 * 1024 * 1024), 96);
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let m = "MemTotal:       24000000 kB\nMemAvailable:   1048576 kB\n";
        assert_eq!(mem_available(m), Some(1024 * 1024 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn cgroup_limits_v1_and_v2_and_no_limit() {
        let dir = tempfile_dir();
        let v2 = dir.join("kubepods/pod1");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.max"), "2147483648\n").unwrap();
        assert_eq!(cgroup_limit("0::/kubepods/pod1\n", &dir), Some(2 << 30));
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit("0::/kubepods/pod1\n", &dir), None);

        let v1 = dir.join("memory/docker/abc");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "536870912\n").unwrap();
        assert_eq!(
            cgroup_limit("5:cpu:/docker/abc\n4:memory:/docker/abc\n0::/\n", &dir),
            Some(512 << 20)
        );
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_limit("4:memory:/docker/abc\n", &dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "capacity-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
