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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

use crate::spool_recovery::recover;
pub use crate::spool_recovery::{Recovered, Recovery};
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

pub(crate) fn ack_path(dir: &Path, task_id: i64) -> PathBuf {
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
