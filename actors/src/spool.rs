//! The callback spool: every event waiting for delivery lives in an append-only file per task
//! under the spool directory, so nothing is lost when the executor crashes or restarts, and
//! memory stays flat however long the receiver is down (the relay keeps only file offsets).
//!
//! Files: `task-<id>.log` holds one JSON record per line (`{"seq", "subtask_id", "body"}`),
//! `task-<id>.ack` the byte offset up to which records were delivered. Both are removed once
//! everything in them was delivered (that is the compaction). One writer task owns all writes,
//! so appends, acks and removals of a task happen in the order they were asked for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

/// One spooled event.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    /// Position of the event within its subtask (1, 2, ...), sent as `X-Callback-Sequence`.
    pub seq: u64,
    /// The subtask it belongs to.
    pub subtask_id: i64,
    /// `X-Request-ID` to send with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `traceparent` to send with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The callback payload.
    pub body: Value,
}

/// A task's spooled events found at start-up.
#[derive(Debug)]
pub struct Recovered {
    /// Whose events.
    pub task_id: i64,
    /// Offset of the first undelivered record.
    pub read: u64,
    /// End of the file.
    pub write: u64,
    /// Highest sequence number used per subtask.
    pub last_seq: HashMap<i64, u64>,
}

enum Op {
    Append { task_id: i64, line: Vec<u8> },
    Ack { task_id: i64, offset: u64 },
    Remove { task_id: i64 },
}

/// Handle to the spool writer.
#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
    tx: std::sync::mpsc::Sender<Op>,
}

/// Path of a task's log file.
pub fn log_path(dir: &Path, task_id: i64) -> PathBuf {
    dir.join(format!("task-{task_id}.log"))
}

fn ack_path(dir: &Path, task_id: i64) -> PathBuf {
    dir.join(format!("task-{task_id}.ack"))
}

impl Spool {
    /// Opens (creating) the spool directory and starts the writer thread; `appended(task_id,
    /// end)` is called after each append with the new end of that task's file.
    pub async fn open(
        dir: PathBuf,
        appended: impl Fn(i64, std::io::Result<u64>) + Send + 'static,
    ) -> std::io::Result<(Self, Vec<Recovered>)> {
        tokio::fs::create_dir_all(&dir).await?;
        let recovered = recover(&dir).await;
        let (tx, rx) = std::sync::mpsc::channel();
        let wdir = dir.clone();
        // A plain thread: every spool write is a small blocking syscall, cheaper done in place
        // than handed to tokio's blocking pool one by one.
        std::thread::Builder::new()
            .name("callback-spool".into())
            .spawn(move || writer(&wdir, &rx, appended))?;
        Ok((Self { dir, tx }, recovered))
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record line (without newline) to the task's log.
    pub fn append(&self, task_id: i64, line: Vec<u8>) {
        let _ = self.tx.send(Op::Append { task_id, line });
    }

    /// Records that everything before `offset` was delivered.
    pub fn ack(&self, task_id: i64, offset: u64) {
        let _ = self.tx.send(Op::Ack { task_id, offset });
    }

    /// Deletes the task's files (everything in them was delivered).
    pub fn remove(&self, task_id: i64) {
        let _ = self.tx.send(Op::Remove { task_id });
    }
}

fn writer(
    dir: &Path,
    rx: &std::sync::mpsc::Receiver<Op>,
    appended: impl Fn(i64, std::io::Result<u64>),
) {
    let mut open: HashMap<i64, (std::fs::File, u64)> = HashMap::new();
    while let Ok(op) = rx.recv() {
        match op {
            Op::Append { task_id, mut line } => {
                line.push(b'\n');
                appended(task_id, append(dir, &mut open, task_id, &line));
            }
            Op::Ack { task_id, offset } => {
                if let Err(e) = std::fs::write(ack_path(dir, task_id), offset.to_string()) {
                    tracing::warn!(
                        "callback spool: cannot record delivery for task {task_id}: {e}"
                    );
                }
            }
            Op::Remove { task_id } => {
                open.remove(&task_id);
                let _ = std::fs::remove_file(log_path(dir, task_id));
                let _ = std::fs::remove_file(ack_path(dir, task_id));
            }
        }
    }
}

fn append(
    dir: &Path,
    open: &mut HashMap<i64, (std::fs::File, u64)>,
    task_id: i64,
    line: &[u8],
) -> std::io::Result<u64> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (f, end) = match open.entry(task_id) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(log_path(dir, task_id))?;
            let len = f.metadata()?.len();
            v.insert((f, len))
        }
    };
    f.write_all(line)?;
    *end += line.len() as u64;
    Ok(*end)
}

/// Reads the record starting at `offset`; returns it (or `None` for a corrupt line) and the
/// offset of the next one. `Err` when the file cannot be read at all.
pub async fn read_record(
    dir: &Path,
    task_id: i64,
    offset: u64,
) -> std::io::Result<(Option<Record>, u64)> {
    let mut f = tokio::fs::File::open(log_path(dir, task_id)).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut line = Vec::new();
    let n = tokio::io::BufReader::new(f)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no record at offset",
        ));
    }
    Ok((serde_json::from_slice(&line).ok(), offset + n as u64))
}

/// Finds the undelivered events left by an earlier run and removes fully delivered files.
async fn recover(dir: &Path) -> Vec<Recovered> {
    let mut out = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return out;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(task_id) = name
            .strip_prefix("task-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        let Ok(content) = tokio::fs::read(e.path()).await else {
            continue;
        };
        let read = tokio::fs::read_to_string(ack_path(dir, task_id))
            .await
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let write = content.len() as u64;
        if read >= write {
            let _ = tokio::fs::remove_file(e.path()).await;
            let _ = tokio::fs::remove_file(ack_path(dir, task_id)).await;
            continue;
        }
        let mut last_seq = HashMap::new();
        for line in content.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(r) = serde_json::from_slice::<Record>(line) {
                let s = last_seq.entry(r.subtask_id).or_insert(0);
                *s = (*s).max(r.seq);
            }
        }
        out.push(Recovered {
            task_id,
            read,
            write,
            last_seq,
        });
    }
    out.sort_by_key(|r| r.task_id);
    out
}
