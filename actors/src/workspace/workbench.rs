//! The Claude `result.workbench` object (contract §4.3): what the task is, and what the agent
//! has changed in the repository so far (files since the subtask's first commit, staged,
//! unstaged and untracked; commits made since). A monitor task refreshes the git part at a fixed
//! interval while a subtask runs and hands it to the agent actor as a message; the next progress
//! callback carries it. Nothing here runs inside an actor handler.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::payload::prompt_for;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::git;

/// Longest any one git query of a refresh may take.
const GIT_QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Most commits and files listed (a huge refactor must not make every callback huge).
const MAX_ITEMS: usize = 200;

/// Where the repository is and what it looked like when the subtask started.
#[derive(Debug, Clone)]
pub struct RepoState {
    /// The working tree.
    pub path: PathBuf,
    /// `HEAD` when the subtask started (`None` for an empty repository).
    pub initial_commit: Option<String>,
    /// Its subject line.
    pub initial_message: String,
    /// The branch asked for, or the one checked out at start.
    pub source_branch: String,
}

/// Reads `HEAD` and the current branch of a repository.
pub async fn repo_state(
    path: &Path,
    branch: Option<&str>,
    cancel: &CancellationToken,
) -> RepoState {
    let q = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let cancel = cancel.clone();
        async move {
            git::run(&args, path, None, GIT_QUERY_TIMEOUT, &cancel, "query")
                .await
                .ok()
                .map(|s| s.trim().to_string())
        }
    };
    let head = q(&["rev-parse", "--verify", "-q", "HEAD"])
        .await
        .filter(|s| !s.is_empty());
    let message = match &head {
        Some(_) => q(&["log", "-1", "--format=%s"]).await.unwrap_or_default(),
        None => String::new(),
    };
    let current = q(&["rev-parse", "--abbrev-ref", "HEAD"])
        .await
        .unwrap_or_default();
    RepoState {
        path: path.to_path_buf(),
        initial_commit: head,
        initial_message: message,
        source_branch: branch.map(String::from).unwrap_or(current),
    }
}

/// The part of the workbench that changes while the agent works.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GitSnapshot {
    /// `file_changes`.
    pub file_changes: Vec<Value>,
    /// `git_info.task_commits`.
    pub task_commits: Vec<Value>,
    /// `git_info.target_branch`: the branch checked out now.
    pub target_branch: String,
}

/// Queries the repository for changes since `repo.initial_commit`.
pub async fn snapshot(repo: &RepoState, cancel: &CancellationToken) -> Option<GitSnapshot> {
    let run = |args: Vec<&str>| {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            git::run(&args, &repo.path, None, GIT_QUERY_TIMEOUT, cancel, "query")
                .await
                .ok()
        }
    };
    let target_branch = run(vec!["rev-parse", "--abbrev-ref", "HEAD"])
        .await?
        .trim()
        .to_string();
    let mut files: Vec<Value> = Vec::new();
    let mut commits: Vec<Value> = Vec::new();
    if let Some(base) = repo.initial_commit.as_deref() {
        let status = run(vec!["diff", "-M", "--name-status", "-z", base]).await?;
        let numstat = run(vec!["diff", "-M", "--numstat", "-z", base]).await?;
        files = file_changes(&status, &numstat);
        let range = format!("{base}..HEAD");
        let log = run(vec![
            "log",
            "--shortstat",
            "-n",
            "200",
            "--format=%x1e%H%x1f%h%x1f%s%x1f%an%x1f%ae%x1f%cI",
            &range,
        ])
        .await?;
        commits = parse_log(&log);
    }
    let untracked = run(vec!["ls-files", "--others", "--exclude-standard", "-z"]).await?;
    for path in untracked.split('\0').filter(|p| !p.is_empty()) {
        if files.len() >= MAX_ITEMS {
            break;
        }
        let lines = count_lines(&repo.path.join(path)).await;
        files.push(change(path, path, "A", lines, 0));
    }
    Some(GitSnapshot {
        file_changes: files,
        task_commits: commits,
        target_branch,
    })
}

async fn count_lines(path: &Path) -> u64 {
    match tokio::fs::metadata(path).await {
        Ok(m) if m.is_file() && m.len() <= 1024 * 1024 => tokio::fs::read(path)
            .await
            .map(|b| {
                let n = b.iter().filter(|c| **c == b'\n').count() as u64;
                if !b.is_empty() && !b.ends_with(b"\n") {
                    n + 1
                } else {
                    n
                }
            })
            .unwrap_or(0),
        _ => 0,
    }
}

fn change(old: &str, new: &str, kind: &str, added: u64, removed: u64) -> Value {
    json!({
        "old_path": old, "new_path": new,
        "new_file": kind == "A", "renamed_file": kind == "R", "deleted_file": kind == "D",
        "added_lines": added, "removed_lines": removed,
        "diff_title": new.rsplit('/').next().unwrap_or(new),
    })
}

/// Joins `--name-status -z` (kind, paths) with `--numstat -z` (line counts).
fn file_changes(status: &str, numstat: &str) -> Vec<Value> {
    let mut counts = std::collections::HashMap::new();
    let mut it = numstat.split('\0').peekable();
    while let Some(head) = it.next() {
        if head.is_empty() {
            continue;
        }
        let mut parts = head.splitn(3, '\t');
        let added = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0u64);
        let removed = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0u64);
        let path = parts.next().unwrap_or("");
        let path = if path.is_empty() {
            // A rename: the old and new paths follow as their own fields.
            let _old = it.next();
            it.next().unwrap_or("").to_string()
        } else {
            path.to_string()
        };
        counts.insert(path, (added, removed));
    }
    let mut out = Vec::new();
    let mut it = status.split('\0');
    while let Some(kind) = it.next() {
        if kind.is_empty() || out.len() >= MAX_ITEMS {
            continue;
        }
        let k = &kind[..1];
        let (old, new) = if k == "R" || k == "C" {
            let old = it.next().unwrap_or("");
            (old.to_string(), it.next().unwrap_or("").to_string())
        } else {
            let p = it.next().unwrap_or("").to_string();
            (p.clone(), p)
        };
        let (a, r) = counts.get(&new).copied().unwrap_or((0, 0));
        out.push(change(&old, &new, k, a, r));
    }
    out
}

fn parse_log(log: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for record in log.split('\x1e').filter(|r| !r.trim().is_empty()) {
        let mut lines = record.lines();
        let head = lines.next().unwrap_or("");
        let f: Vec<&str> = head.split('\x1f').collect();
        if f.len() < 6 {
            continue;
        }
        let stat = lines.find(|l| l.contains("changed")).unwrap_or("");
        let num = |word: &str| {
            stat.split(',')
                .find(|p| p.contains(word))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.push(json!({
            "commit_id": f[0], "short_id": f[1], "message": f[2], "author": f[3],
            "author_email": f[4], "committed_date": f[5],
            "stats": {"files_changed": num("changed"), "insertions": num("insertion"),
                      "deletions": num("deletion")},
        }));
    }
    out
}

/// The whole workbench, built around the latest snapshot.
#[derive(Debug, Clone)]
pub struct Workbench {
    base: Value,
    repo: Option<RepoState>,
    snapshot: GitSnapshot,
    latest_text: String,
    /// Kept apart from `base`: in full only in the terminal callback (see [`prompt_for`]).
    prompt: String,
}

/// What a workbench is made from.
pub struct WorkbenchInfo<'a> {
    /// `task_title`.
    pub task_title: &'a str,
    /// `task_id`.
    pub task_id: i64,
    /// `subtask_title`.
    pub subtask_title: &'a str,
    /// `prompt`.
    pub prompt: &'a str,
    /// `git_repo` (or the URL).
    pub repository: &'a str,
    /// `branch_name`.
    pub branch: &'a str,
    /// `git_domain`.
    pub git_domain: &'a str,
}

impl Workbench {
    /// A running workbench for a subtask.
    pub fn new(info: WorkbenchInfo<'_>, repo: Option<RepoState>) -> Self {
        let base = json!({
            "taskTitle": info.task_title, "taskNumber": info.task_id.to_string(),
            "repository": info.repository, "branch": info.branch, "sessions": 1,
            "premiumRequests": 0, "changes": [], "originalPrompt": "",
            "git_domain": info.git_domain,
            "git_type": if info.git_domain.contains("github.com") { "github" } else { "gitlab" },
            "summary": if info.subtask_title.is_empty() { prompt_for(info.prompt, false) } else { info.subtask_title },
        });
        Self {
            base,
            repo,
            snapshot: GitSnapshot::default(),
            latest_text: String::new(),
            prompt: info.prompt.to_string(),
        }
    }

    /// Takes a fresh git snapshot.
    pub fn update(&mut self, s: GitSnapshot) {
        self.snapshot = s;
    }

    /// The agent's latest text becomes the summary.
    pub fn set_text(&mut self, text: &str) {
        if !text.trim().is_empty() {
            self.latest_text = text.chars().take(4000).collect();
        }
    }

    /// The JSON object for a callback; `status` is `running`, `completed` or `failed`.
    pub fn to_value(&self, status: &str) -> Value {
        let now = chrono_now();
        let mut v = self.base.clone();
        v["status"] = json!(status);
        v["originalPrompt"] = json!(prompt_for(&self.prompt, status != "running"));
        v["lastUpdated"] = json!(now);
        v["completedTime"] = json!(if status == "running" {
            String::new()
        } else {
            now
        });
        let mut summary = if self.latest_text.is_empty() {
            v["summary"].as_str().unwrap_or_default().to_string()
        } else {
            self.latest_text.clone()
        };
        if !self.snapshot.task_commits.is_empty() {
            summary.push_str("\n\n");
            for c in &self.snapshot.task_commits {
                summary.push_str(&format!(
                    "- {} {}\n",
                    c["short_id"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                ));
            }
        }
        v["summary"] = json!(summary);
        v["file_changes"] = json!(self.snapshot.file_changes);
        let (initial, message, source) = match &self.repo {
            Some(r) => (
                r.initial_commit.clone().unwrap_or_default(),
                r.initial_message.clone(),
                r.source_branch.clone(),
            ),
            None => Default::default(),
        };
        v["git_info"] = json!({
            "initial_commit_id": initial, "initial_commit_message": message,
            "task_commits": self.snapshot.task_commits, "source_branch": source,
            "target_branch": self.snapshot.target_branch,
        });
        v
    }
}

/// Runs until `stop`: a snapshot every `interval`, handed to `sink` when it changed. Returns
/// when `sink` says the receiver is gone.
pub async fn monitor(
    repo: RepoState,
    interval: Duration,
    stop: CancellationToken,
    sink: impl Fn(GitSnapshot) -> bool,
) {
    let mut last: Option<GitSnapshot> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(s) = snapshot(&repo, &stop).await else {
            continue;
        };
        if last.as_ref() != Some(&s) {
            if !sink(s.clone()) {
                return;
            }
            last = Some(s);
        }
    }
}

fn chrono_now() -> String {
    // RFC 3339 in UTC from the system clock, without pulling a date crate into the runtime.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert!(chrono_now().ends_with('Z'));
    }

    #[test]
    fn diff_and_log_parse() {
        let status = "M\0src/a.rs\0R100\0old.txt\0new.txt\0D\0gone.md\0";
        let numstat = "3\t1\tsrc/a.rs\x000\t0\t\x00old.txt\x00new.txt\x000\t5\tgone.md\x00";
        let f = file_changes(status, numstat);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0]["added_lines"], 3);
        assert_eq!(f[1]["renamed_file"], true);
        assert_eq!(f[1]["old_path"], "old.txt");
        assert_eq!(f[2]["deleted_file"], true);
        assert_eq!(f[2]["removed_lines"], 5);
        let log = "\x1eabc123\x1fabc\x1fAdd x\x1fBob\x1fb@x\x1f2026-01-01T00:00:00+00:00\n\n 2 files changed, 4 insertions(+), 1 deletion(-)\n";
        let c = parse_log(log);
        assert_eq!(c[0]["message"], "Add x");
        assert_eq!(c[0]["stats"]["files_changed"], 2);
        assert_eq!(c[0]["stats"]["insertions"], 4);
        assert_eq!(c[0]["stats"]["deletions"], 1);
    }
}
