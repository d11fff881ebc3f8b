//! The callback spool: every event waiting for delivery lives in an append-only file per task
//! under the spool directory, so nothing is lost when the executor crashes or restarts, and
//! memory stays flat however long the receiver is down (the relay keeps only file offsets).
//!
//! Files: `task-<id>.log` holds one JSON record per line (`{"seq", "subtask_id", "body"}`),
//! `task-<id>.ack` the byte offset up to which records were delivered, rewritten in place after
//! every delivery (so a crash resends at most the event that was in flight). Both are removed
//! once everything in them was delivered (that is the compaction). `open-<task>-<subtask>.json`
//! records accepted, unfinished subtasks (see [`crate::unfinished`]). One writer thread owns
//! all writes, so appends, acks, records and removals happen in the order they were asked for.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

use crate::unfinished::{self, Unfinished};

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
    Append(Box<Append>),
    Ack { task_id: i64, offset: u64 },
    Remove { task_id: i64, open: Vec<(i64, u64)> },
    Close { task_id: i64, subtask_id: i64 },
}

/// One record to append, and what it does to the record of unfinished subtasks.
pub struct Append {
    /// Whose log.
    pub task_id: i64,
    /// The record line, without newline.
    pub line: Vec<u8>,
    /// Written before the line: the subtask is accepted and not finished.
    pub opens: Option<Unfinished>,
    /// Removed after the line was appended: the subtask's terminal is safe on disk.
    pub closes: Option<i64>,
}

/// Handle to the spool writer.
#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
    tx: std::sync::mpsc::Sender<Op>,
}

/// Why the spool directory cannot be used at start-up.
#[derive(Debug, thiserror::Error)]
#[error("the callback spool directory {} is not usable: {source}; fix it or set CALLBACK_SPOOL_DIR", path.display())]
pub struct SpoolDirError {
    /// The directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Creates the spool directory and proves a file can be written in it, so a broken one is a
/// clear error at start-up instead of lost callbacks later.
pub fn check_dir(dir: &Path) -> Result<(), SpoolDirError> {
    let err = |source| SpoolDirError {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".probe");
    std::fs::write(&probe, b"ok").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)
}

/// Path of a task's log file.
pub fn log_path(dir: &Path, task_id: i64) -> PathBuf {
    dir.join(format!("task-{task_id}.log"))
}

fn ack_path(dir: &Path, task_id: i64) -> PathBuf {
    dir.join(format!("task-{task_id}.ack"))
}

/// Width of the ack file's number: fixed, so it is rewritten in place with one `pwrite`.
const ACK_WIDTH: usize = 20;

impl Spool {
    /// Opens (creating) the spool directory and starts the writer thread; `appended(task_id,
    /// end)` is called after each append with the new end of that task's file.
    pub async fn open(
        dir: PathBuf,
        appended: impl Fn(i64, std::io::Result<u64>) + Send + 'static,
    ) -> std::io::Result<(Self, Recovery)> {
        tokio::fs::create_dir_all(&dir).await?;
        let rdir = dir.clone();
        let recovery = tokio::task::spawn_blocking(move || recover(&rdir))
            .await
            .map_err(std::io::Error::other)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let wdir = dir.clone();
        // A plain thread: every spool write is a small blocking syscall, cheaper done in place
        // than handed to tokio's blocking pool one by one.
        std::thread::Builder::new()
            .name("callback-spool".into())
            .spawn(move || Writer::new(wdir).run(&rx, appended))?;
        Ok((Self { dir, tx }, recovery))
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record (see [`Append`]).
    pub fn append(&self, a: Append) {
        let _ = self.tx.send(Op::Append(Box::new(a)));
    }

    /// Records that everything before `offset` was delivered.
    pub fn ack(&self, task_id: i64, offset: u64) {
        let _ = self.tx.send(Op::Ack { task_id, offset });
    }

    /// Deletes the task's files (everything in them was delivered); `open` lists the task's
    /// unfinished subtasks with their last sequence number, kept in their records.
    pub fn remove(&self, task_id: i64, open: Vec<(i64, u64)>) {
        let _ = self.tx.send(Op::Remove { task_id, open });
    }

    /// Removes a subtask's unfinished record (its terminal was delivered from memory).
    pub fn close(&self, task_id: i64, subtask_id: i64) {
        let _ = self.tx.send(Op::Close {
            task_id,
            subtask_id,
        });
    }
}

/// The writer thread's state: the open log and ack files.
struct Writer {
    dir: PathBuf,
    logs: HashMap<i64, (std::fs::File, u64)>,
    acks: HashMap<i64, std::fs::File>,
}

impl Writer {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            logs: HashMap::new(),
            acks: HashMap::new(),
        }
    }

    fn run(
        mut self,
        rx: &std::sync::mpsc::Receiver<Op>,
        appended: impl Fn(i64, std::io::Result<u64>),
    ) {
        while let Ok(op) = rx.recv() {
            match op {
                Op::Append(a) => {
                    let a = *a;
                    if let Some(u) = &a.opens {
                        self.record_unfinished(u);
                    }
                    let mut line = a.line;
                    line.push(b'\n');
                    let end = self.append(a.task_id, &line);
                    if let (Ok(_), Some(sub)) = (&end, a.closes) {
                        unfinished::remove(&self.dir, a.task_id, sub);
                    }
                    appended(a.task_id, end);
                }
                Op::Ack { task_id, offset } => self.ack(task_id, offset),
                Op::Remove { task_id, open } => {
                    for (sub, seq) in open {
                        unfinished::set_seq(&self.dir, task_id, sub, seq);
                    }
                    self.logs.remove(&task_id);
                    self.acks.remove(&task_id);
                    let _ = std::fs::remove_file(log_path(&self.dir, task_id));
                    let _ = std::fs::remove_file(ack_path(&self.dir, task_id));
                }
                Op::Close {
                    task_id,
                    subtask_id,
                } => unfinished::remove(&self.dir, task_id, subtask_id),
            }
        }
    }

    /// Writes a subtask's unfinished record, re-creating a vanished directory once.
    fn record_unfinished(&self, u: &Unfinished) {
        let mut res = unfinished::write(&self.dir, u);
        if matches!(&res, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            res = std::fs::create_dir_all(&self.dir).and_then(|()| unfinished::write(&self.dir, u));
        }
        if let Err(e) = res {
            // The append that follows fails the same way and reports it.
            tracing::debug!(
                "cannot record unfinished subtask {}.{}: {e}",
                u.task_id,
                u.subtask_id
            );
        }
    }

    /// Rewrites the task's ack file in place (one `pwrite` of a fixed-width number).
    fn ack(&mut self, task_id: i64, offset: u64) {
        use std::os::unix::fs::FileExt;
        let dir = &self.dir;
        let f = match self.acks.entry(task_id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                match std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(ack_path(dir, task_id))
                {
                    Ok(f) => v.insert(f),
                    Err(e) => {
                        tracing::warn!(
                            "callback spool: cannot record delivery for task {task_id}: {e}"
                        );
                        return;
                    }
                }
            }
        };
        let text = format!("{offset:0ACK_WIDTH$}");
        if let Err(e) = f.write_all_at(text.as_bytes(), 0) {
            tracing::warn!("callback spool: cannot record delivery for task {task_id}: {e}");
            self.acks.remove(&task_id);
        }
    }

    /// Appends a line; a log whose directory vanished is retried once after re-creating it.
    fn append(&mut self, task_id: i64, line: &[u8]) -> std::io::Result<u64> {
        match self.try_append(task_id, line) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.logs.remove(&task_id);
                std::fs::create_dir_all(&self.dir)?;
                self.try_append(task_id, line)
            }
            other => other,
        }
    }

    fn try_append(&mut self, task_id: i64, line: &[u8]) -> std::io::Result<u64> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = &self.dir;
        let (f, end) = match self.logs.entry(task_id) {
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
        if let Err(e) = f.write_all(line) {
            // Cut a partial line off again; if even that fails, forget the handle so the next
            // append starts from the file's real length.
            if f.set_len(*end).is_err() {
                self.logs.remove(&task_id);
            }
            return Err(e);
        }
        *end += line.len() as u64;
        Ok(*end)
    }
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

/// What an earlier run left in the spool directory.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Tasks with undelivered events, by task id.
    pub tasks: Vec<Recovered>,
    /// Accepted subtasks that never got a terminal, with the sequence number their terminal
    /// must carry.
    pub unfinished: Vec<(Unfinished, u64)>,
}

/// Finds the undelivered events and unfinished subtasks left by an earlier run, and removes
/// fully delivered files. Blocking: run it off the async threads.
fn recover(dir: &Path) -> Recovery {
    let mut out = Recovery::default();
    let mut terminals: HashSet<(i64, i64)> = HashSet::new();
    let mut seqs: HashMap<(i64, i64), u64> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(task_id) = name
            .strip_prefix("task-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        let Ok(mut content) = std::fs::read(e.path()) else {
            continue;
        };
        cut_partial_line(&e.path(), &mut content);
        let mut last_seq = HashMap::new();
        for line in content.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(r) = serde_json::from_slice::<Record>(line) {
                let s = last_seq.entry(r.subtask_id).or_insert(0);
                *s = (*s).max(r.seq);
                let status = r.body.get("status").and_then(Value::as_str).unwrap_or("");
                if matches!(status, "COMPLETED" | "FAILED" | "CANCELLED") {
                    terminals.insert((task_id, r.subtask_id));
                }
            }
        }
        for (sub, seq) in &last_seq {
            seqs.insert((task_id, *sub), *seq);
        }
        let read = std::fs::read_to_string(ack_path(dir, task_id))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let write = content.len() as u64;
        if read >= write {
            let _ = std::fs::remove_file(e.path());
            let _ = std::fs::remove_file(ack_path(dir, task_id));
            continue;
        }
        out.tasks.push(Recovered {
            task_id,
            read,
            write,
            last_seq,
        });
    }
    out.tasks.sort_by_key(|r| r.task_id);
    for u in unfinished::list(dir) {
        let key = (u.task_id, u.subtask_id);
        if terminals.contains(&key) {
            // Crashed between spooling the terminal and removing the record: the terminal wins.
            unfinished::remove(dir, u.task_id, u.subtask_id);
            continue;
        }
        let seq = seqs.get(&key).copied().unwrap_or(0).max(u.seq) + 1;
        out.unfinished.push((u, seq));
    }
    out
}

/// A SIGKILL during a multi-page write can leave half a record at the end of a log; it is cut
/// off, so the next record starts on a line of its own.
fn cut_partial_line(path: &Path, content: &mut Vec<u8>) {
    if content.last().is_none_or(|b| *b == b'\n') {
        return;
    }
    let keep = content
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    tracing::warn!(
        "callback spool {}: cutting off a partly written record (the executor was killed while writing it)",
        path.display()
    );
    let cut = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(keep as u64));
    if let Err(e) = cut {
        tracing::error!("cannot cut {}: {e}", path.display());
    }
    content.truncate(keep);
}
