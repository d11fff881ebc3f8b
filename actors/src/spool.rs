//! The callback spool: every event waiting for delivery lives in an append-only file per task
//! under the spool directory, so nothing is lost when the executor crashes or restarts, and
//! memory stays flat however long the receiver is down (the relay keeps only file offsets).
//!
//! Files: `task-<id>.log` holds one JSON record per line (`{"seq", "subtask_id", "body"}`); it
//! is removed once everything in it was delivered (that is the compaction). `spool.journal`
//! ([`crate::spool_journal`]) holds the byte offset up to which each log was delivered, recorded
//! after every delivery (so a crash resends at most the event that was in flight), and the
//! accepted, unfinished subtasks (see [`crate::unfinished`]). One writer thread owns all writes,
//! so appends, acks, records and removals happen in the order they were asked for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

use crate::spool_journal::Journal;
use crate::spool_recovery::recover;
pub use crate::spool_recovery::{Recovered, Recovery};
use crate::unfinished::Unfinished;

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

/// Where an earlier version kept a log's delivery offset (read once at start-up, then removed).
pub(crate) fn legacy_ack_path(dir: &Path, task_id: i64) -> PathBuf {
    dir.join(format!("task-{task_id}.ack"))
}

impl Spool {
    /// Opens (creating) the spool directory and starts the writer thread; `appended(task_id,
    /// end)` is called after each append with the new end of that task's file.
    pub async fn open(
        dir: PathBuf,
        appended: impl Fn(i64, std::io::Result<u64>) + Send + 'static,
    ) -> std::io::Result<(Self, Recovery)> {
        tokio::fs::create_dir_all(&dir).await?;
        let rdir = dir.clone();
        let (recovery, journal) = tokio::task::spawn_blocking(move || recover(&rdir))
            .await
            .map_err(std::io::Error::other)??;
        let (tx, rx) = std::sync::mpsc::channel();
        let wdir = dir.clone();
        // A plain thread: every spool write is a small blocking syscall, cheaper done in place
        // than handed to tokio's blocking pool one by one.
        std::thread::Builder::new()
            .name("callback-spool".into())
            .spawn(move || Writer::new(wdir, journal).run(&rx, appended))?;
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

/// The writer thread's state: the open logs and the journal.
struct Writer {
    dir: PathBuf,
    logs: HashMap<i64, (std::fs::File, u64)>,
    journal: Journal,
    /// The cause of the journal's current failure, logged once until a write works again (a
    /// full disk must not log a line per callback).
    journal_failing: Option<String>,
}

impl Writer {
    fn new(dir: PathBuf, journal: Journal) -> Self {
        Self {
            dir,
            logs: HashMap::new(),
            journal,
            journal_failing: None,
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
                        // Before the line: a crash in between leaves a record and no events,
                        // which recovery ends with one FAILED.
                        let res = self.journal.open_subtask(u);
                        self.journal_result(res, "record an unfinished subtask");
                    }
                    let mut line = a.line;
                    line.push(b'\n');
                    let end = self.append(a.task_id, &line);
                    if let (Ok(_), Some(sub)) = (&end, a.closes) {
                        let res = self.journal.close_subtask(a.task_id, sub);
                        self.journal_result(res, "close a finished subtask");
                    }
                    appended(a.task_id, end);
                }
                Op::Ack { task_id, offset } => {
                    let res = self.journal.ack(task_id, offset);
                    self.journal_result(res, "record a delivery");
                }
                Op::Remove { task_id, open } => {
                    for (sub, seq) in open {
                        let res = self.journal.set_seq(task_id, sub, seq);
                        self.journal_result(res, "keep a sequence number");
                    }
                    self.logs.remove(&task_id);
                    let _ = std::fs::remove_file(log_path(&self.dir, task_id));
                    let res = self.journal.forget(task_id);
                    self.journal_result(res, "forget a delivered log");
                }
                Op::Close {
                    task_id,
                    subtask_id,
                } => {
                    let res = self.journal.close_subtask(task_id, subtask_id);
                    self.journal_result(res, "close a finished subtask");
                }
            }
        }
    }

    /// Reports a failed journal write (the log appends that go with it report the same cause to
    /// the relay, which degrades to memory).
    fn journal_result(&mut self, res: std::io::Result<()>, what: &str) {
        match res {
            Err(e) => {
                let cause = e.to_string();
                if self.journal_failing.as_deref() != Some(cause.as_str()) {
                    tracing::warn!(
                        "callback spool: cannot {what} in {}: {cause}",
                        self.dir.display()
                    );
                    self.journal_failing = Some(cause);
                }
            }
            Ok(()) => {
                if self.journal_failing.take().is_some() {
                    tracing::info!("callback spool journal is written again");
                }
            }
        }
    }

    /// Appends a line; a log whose directory vanished is retried once after re-creating it.
    fn append(&mut self, task_id: i64, line: &[u8]) -> std::io::Result<u64> {
        match self.try_append(task_id, line) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.logs.remove(&task_id);
                std::fs::create_dir_all(&self.dir)?;
                // The journal's open handle points into the removed directory: start it anew.
                let res = self.journal.rewrite();
                self.journal_result(res, "re-create the journal");
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
