//! The callback spool: every event waiting for delivery lives in an append-only file per task
//! under the spool directory, so nothing is lost when the executor crashes or restarts, and
//! memory stays flat however long the receiver is down (the relay keeps only file offsets).
//!
//! Files: `task-<id>.log` holds one JSON record per line (`{"seq", "subtask_id", "body"}`); it
//! is emptied once everything in it was delivered (that is the compaction) and kept, renamed
//! `free-<n>.log`, for the next task's log: creating a file per task (an inode allocation) was
//! the largest part of the executor's own CPU per task, while truncating and renaming one
//! allocates nothing. At most [`FREE_LOGS`] are kept; recovery deletes those left by a crash.
//! `spool.journal` ([`crate::spool_journal`]) holds the byte offset up to which each log was
//! delivered, recorded after every delivery (so a crash resends at most the event that was in
//! flight), and the accepted, unfinished subtasks (see [`crate::unfinished`]). One writer thread
//! owns all writes, so appends, acks, records, reuses and removals happen in the order they were
//! asked for.

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

/// How many emptied log files are kept for reuse: as many as a busy executor has tasks with
/// events in flight at once (each is an empty file and an open descriptor), so that burst after
/// burst reuses the logs instead of deleting the surplus after one burst and creating it anew
/// in the next (an inode allocation each; see `FREE_LOGS` in the README's benchmarks).
pub const FREE_LOGS: usize = 256;

/// Path of an emptied log file kept for reuse.
pub(crate) fn free_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("free-{n}.log"))
}

/// Renames `from` to `to` unless `to` exists (`renameat2(RENAME_NOREPLACE)`): a recovered log
/// with undelivered records must never be replaced by an empty one.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
            .spawn(move || {
                crate::agent::priority::mark_helper_thread();
                Writer::new(wdir, journal).run(&rx, appended)
            })?;
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
    /// Emptied logs kept for reuse: the open handle and the `n` of `free-<n>.log`.
    free: Vec<(std::fs::File, usize)>,
    /// The `n`s below `free_high` that no free log holds, for the next one retired.
    spare_numbers: Vec<usize>,
    /// One past the highest `n` handed out since the free logs were last forgotten.
    free_high: usize,
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
            free: Vec::new(),
            spare_numbers: Vec::new(),
            free_high: 0,
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
            self.handle(op, &appended);
            // Whatever queued up meanwhile goes in the same round, its journal lines with it.
            while let Ok(op) = rx.try_recv() {
                self.handle(op, &appended);
            }
            let _ = self.flush_journal();
        }
    }

    /// One operation. Journal lines are collected and written before the next log write (see
    /// [`crate::spool_journal`]), so the order on disk is the order asked for.
    fn handle(&mut self, op: Op, appended: &impl Fn(i64, std::io::Result<u64>)) {
        match op {
            Op::Append(a) => {
                let a = *a;
                if let Some(u) = &a.opens {
                    // Before the line: a crash in between leaves a record and no events, which
                    // recovery ends with one FAILED.
                    let res = self.journal.open_subtask(u);
                    self.op_failed(res, "record an unfinished subtask");
                }
                let mut line = a.line;
                line.push(b'\n');
                // A record never reaches a log ahead of the journal lines before it (its
                // subtask's record, a forgotten offset of the task's previous log): when they
                // cannot be written, neither is it, and the relay keeps it in memory.
                let end = match self.flush_journal() {
                    Ok(()) => self.append(a.task_id, &line),
                    Err(e) => Err(e),
                };
                if let (Ok(_), Some(sub)) = (&end, a.closes) {
                    let res = self.journal.close_subtask(a.task_id, sub);
                    self.op_failed(res, "close a finished subtask");
                }
                appended(a.task_id, end);
            }
            Op::Ack { task_id, offset } => {
                let res = self.journal.ack(task_id, offset);
                self.op_failed(res, "record a delivery");
            }
            Op::Remove { task_id, open } => {
                for (sub, seq) in open {
                    let res = self.journal.set_seq(task_id, sub, seq);
                    self.op_failed(res, "keep a sequence number");
                }
                // With its sequence numbers not written, the log stays: recovery reads them
                // from its records (and resends what is not acknowledged on disk).
                if self.flush_journal().is_ok() {
                    self.retire_log(task_id);
                    let res = self.journal.forget(task_id);
                    self.op_failed(res, "forget a delivered log");
                }
            }
            Op::Close {
                task_id,
                subtask_id,
            } => {
                let res = self.journal.close_subtask(task_id, subtask_id);
                self.op_failed(res, "close a finished subtask");
            }
        }
    }

    /// Reports a journal line that could not even be collected (the journal's write state is
    /// reported by [`Writer::flush_journal`] alone, so a full disk logs once).
    fn op_failed(&mut self, res: std::io::Result<()>, what: &str) {
        if res.is_err() {
            self.journal_result(&res, what);
        }
    }

    /// Writes the journal lines collected so far.
    fn flush_journal(&mut self) -> std::io::Result<()> {
        let mut res = self.journal.flush();
        if matches!(&res, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            // A rewrite could not create its file: the spool directory is gone.
            res = self.recreate_dir();
        }
        self.journal_result(&res, "write the journal");
        res
    }

    /// Makes the removed spool directory again, with the journal written into it (every
    /// handle into the old one writes into deleted files).
    fn recreate_dir(&mut self) -> std::io::Result<()> {
        self.forget_files();
        self.journal.invalidate();
        std::fs::create_dir_all(&self.dir)?;
        self.journal.flush()
    }

    /// Reports a failed journal write (the log appends that go with it report the same cause to
    /// the relay, which degrades to memory).
    fn journal_result(&mut self, res: &std::io::Result<()>, what: &str) {
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

    /// Empties a delivered log and keeps it for the next task, or deletes it when enough are
    /// kept (or it cannot be emptied).
    fn retire_log(&mut self, task_id: i64) {
        let path = log_path(&self.dir, task_id);
        if let Some((f, _)) = self.logs.remove(&task_id) {
            if self.free.len() < FREE_LOGS && f.set_len(0).is_ok() {
                let n = self.spare_numbers.pop().unwrap_or_else(|| {
                    self.free_high += 1;
                    self.free_high - 1
                });
                match rename_noreplace(&path, &free_path(&self.dir, n)) {
                    Ok(()) => {
                        self.free.push((f, n));
                        return;
                    }
                    // A stray file holds that name: the number is not handed out again.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(_) => self.spare_numbers.push(n),
                }
            }
        }
        let _ = std::fs::remove_file(path);
    }

    /// A task's new log: an emptied one renamed, else a new file. A task that already has a
    /// file (a recovered log) gets it opened and appended to, never replaced.
    fn new_log(&mut self, task_id: i64) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = log_path(&self.dir, task_id);
        if let Some((f, n)) = self.free.pop() {
            match rename_noreplace(&free_path(&self.dir, n), &path) {
                Ok(()) => {
                    self.spare_numbers.push(n);
                    return Ok(f);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    self.free.push((f, n));
                }
                Err(_) => self.spare_numbers.push(n), // the free file is gone: forget it
            }
        }
        // A new file (rare: emptied logs are reused): if the directory was replaced under the
        // executor, the journal is written into it first.
        self.journal.ensure_linked()?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
    }

    /// Forgets the open logs and the emptied ones kept for reuse: their directory was removed,
    /// so each handle writes into a deleted file (the next record of a task starts a new log).
    fn forget_files(&mut self) {
        self.logs.clear();
        self.free.clear();
        self.spare_numbers.clear();
        self.free_high = 0;
    }

    /// Appends a line; a log whose directory vanished is retried once after re-creating it.
    fn append(&mut self, task_id: i64, line: &[u8]) -> std::io::Result<u64> {
        match self.try_append(task_id, line) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Not before the journal is in the new directory (see `handle`).
                let res = self.recreate_dir();
                self.journal_result(&res, "re-create the journal");
                res?;
                self.try_append(task_id, line)
            }
            other => other,
        }
    }

    fn try_append(&mut self, task_id: i64, line: &[u8]) -> std::io::Result<u64> {
        use std::io::Write;
        if !self.logs.contains_key(&task_id) {
            let f = self.new_log(task_id)?;
            let len = f.metadata()?.len();
            self.logs.insert(task_id, (f, len));
        }
        let Some((f, end)) = self.logs.get_mut(&task_id) else {
            return Err(std::io::Error::other("log handle vanished"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::mpsc;

    /// A spool on `dir` whose appends report `(task_id, end)` on the returned channel.
    async fn spool_on(dir: &Path) -> (Spool, mpsc::Receiver<(i64, u64)>) {
        let (tx, rx) = mpsc::channel();
        let (spool, _) = Spool::open(dir.to_path_buf(), move |task, end| {
            let _ = tx.send((task, end.unwrap_or(u64::MAX)));
        })
        .await
        .unwrap();
        // Task -1's log is opened now, so that `settle` never takes a free log later.
        settle(&spool, &rx);
        (spool, rx)
    }

    fn append(spool: &Spool, rx: &mpsc::Receiver<(i64, u64)>, task_id: i64, line: &str) -> u64 {
        spool.append(Append {
            task_id,
            line: line.as_bytes().to_vec(),
            opens: None,
            closes: None,
        });
        let (task, end) = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(task, task_id);
        end
    }

    /// Waits until the writer handled everything sent before (an append is answered in order);
    /// appends to task -1, whose log is open from the start.
    fn settle(spool: &Spool, rx: &mpsc::Receiver<(i64, u64)>) {
        append(spool, rx, -1, "{}");
    }

    fn opening(task_id: i64) -> Append {
        Append {
            task_id,
            line: br#"{"seq":1}"#.to_vec(),
            opens: Some(Unfinished::unnamed(task_id, 1)),
            closes: None,
        }
    }

    /// A record is never in a log ahead of its subtask's record in the journal: when the
    /// journal cannot be written, the append reports the failure (the relay keeps the event in
    /// memory) and the log is not written.
    #[test]
    fn no_record_is_logged_when_the_journal_before_it_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let (_, journal) = crate::spool_recovery::recover(dir.path()).unwrap();
        let mut w = Writer::new(dir.path().to_path_buf(), journal);
        w.journal.fail_writes_for_test();
        let results = std::cell::RefCell::new(Vec::new());
        let appended =
            |task, end: std::io::Result<u64>| results.borrow_mut().push((task, end.is_ok()));
        w.handle(Op::Append(Box::new(opening(3))), &appended);
        assert_eq!(*results.borrow(), [(3, false)]);
        assert!(
            !log_path(dir.path(), 3).exists(),
            "logged without its record"
        );
    }

    /// The spool directory removed and made again under the executor: the next new log finds
    /// the journal's file gone and writes the journal into the new directory first.
    #[tokio::test]
    async fn a_replaced_spool_directory_gets_the_journal_before_a_new_log() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, rx) = spool_on(dir.path()).await;
        spool.append(opening(1));
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        std::fs::remove_dir_all(dir.path()).unwrap();
        std::fs::create_dir(dir.path()).unwrap();
        spool.append(opening(2));
        let (task, end) = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!((task, end), (2, 10));
        settle(&spool, &rx);
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.state().open.contains_key(&(2, 1)), "{:?}", j.state());
        assert!(j.state().open.contains_key(&(1, 1)), "{:?}", j.state());
    }

    #[tokio::test]
    async fn a_delivered_log_is_emptied_and_becomes_the_next_tasks_log() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, rx) = spool_on(dir.path()).await;
        assert_eq!(append(&spool, &rx, 1, r#"{"seq":1}"#), 10);
        let inode = std::fs::metadata(log_path(dir.path(), 1)).unwrap().ino();
        spool.remove(1, Vec::new());
        settle(&spool, &rx);
        assert!(!log_path(dir.path(), 1).exists());
        let free = std::fs::metadata(free_path(dir.path(), 0)).unwrap();
        assert_eq!((free.ino(), free.len()), (inode, 0));
        // The next task's log is that file, from offset 0, and the free one is gone.
        assert_eq!(append(&spool, &rx, 2, r#"{"seq":7}"#), 10);
        let reused = std::fs::metadata(log_path(dir.path(), 2)).unwrap();
        assert_eq!((reused.ino(), reused.len()), (inode, 10));
        assert_eq!(
            std::fs::read_to_string(log_path(dir.path(), 2)).unwrap(),
            "{\"seq\":7}\n"
        );
        assert!(!free_path(dir.path(), 0).exists());
    }

    #[tokio::test]
    async fn a_recovered_log_is_appended_to_never_replaced_by_a_free_one() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, rx) = spool_on(dir.path()).await;
        append(&spool, &rx, 1, r#"{"seq":1}"#);
        spool.remove(1, Vec::new());
        settle(&spool, &rx);
        assert!(free_path(dir.path(), 0).exists());
        // Task 5's undelivered log is on disk (as recovery leaves it) but not open yet.
        std::fs::write(log_path(dir.path(), 5), "{\"seq\":1}\n").unwrap();
        assert_eq!(append(&spool, &rx, 5, r#"{"seq":2}"#), 20);
        assert_eq!(
            std::fs::read_to_string(log_path(dir.path(), 5)).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n"
        );
        assert!(free_path(dir.path(), 0).exists(), "the free log is kept");
    }

    #[tokio::test]
    async fn a_reused_log_retired_again_takes_a_spare_number() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, rx) = spool_on(dir.path()).await;
        for task in 1..=3 {
            append(&spool, &rx, task, r#"{"seq":1}"#);
        }
        for task in 1..=3 {
            spool.remove(task, Vec::new());
        }
        append(&spool, &rx, 4, r#"{"seq":1}"#);
        spool.remove(4, Vec::new());
        settle(&spool, &rx);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("free-"))
            .collect();
        names.sort();
        // Task 4 reused free-2 and gave its number back: still three, numbered without gaps.
        assert_eq!(names, ["free-0.log", "free-1.log", "free-2.log"]);
    }

    #[tokio::test]
    async fn no_more_than_the_cap_of_free_logs_is_kept_and_recovery_deletes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, rx) = spool_on(dir.path()).await;
        let n = FREE_LOGS as i64 + 5;
        for task in 1..=n {
            append(&spool, &rx, task, r#"{"seq":1}"#);
        }
        for task in 1..=n {
            spool.remove(task, Vec::new());
        }
        settle(&spool, &rx);
        let free = |d: &Path| {
            std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("free-"))
                .count()
        };
        assert_eq!(free(dir.path()), FREE_LOGS);
        drop(spool);
        let (rec, _) = crate::spool_recovery::recover(dir.path()).unwrap();
        assert_eq!(free(dir.path()), 0);
        // Only the settle task's log holds something.
        assert_eq!(
            rec.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(),
            vec![-1]
        );
    }
}
