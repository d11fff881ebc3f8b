//! The spool's journal: one append-only file, `spool.journal`, for the small records that change
//! with every subtask and every delivery — which accepted subtasks are unfinished (see
//! [`crate::unfinished`]) and how far each task's log was delivered.
//!
//! They used to be a file per subtask (written atomically: a temporary file and a rename) and a
//! file per task. Creating and deleting three files per task was the largest part of the
//! executor's own CPU per task (ext4 inode allocation, measured with `perf` under
//! `cargo bench --bench control_plane`); appending a line to one open file costs a `write`.
//!
//! Each line is one [`Entry`]; replaying the lines in order gives the live state. A line cut
//! short by a crash is ignored (and cut off). The file is compacted by the writer thread that
//! owns it: emptied in place when nothing is live, rewritten (temporary file + rename) when
//! most of its lines are dead.
//!
//! Lines are collected in memory and written together by [`Journal::flush`], which the writer
//! calls before it touches any task log and whenever it has nothing more queued: the journal
//! and the logs reach the file system in the order they were asked for, and the lines recorded
//! between two log writes (a terminal's close, the acknowledgements of deliveries, the next
//! subtask's open) cost one `write` instead of one each. A flush that finds nothing live only
//! empties the file (nothing is written at all when it was empty already).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::unfinished::Unfinished;

/// Name of the journal in the spool directory.
pub const JOURNAL_FILE: &str = "spool.journal";

/// Lines below which the journal is never rewritten (a rewrite creates a file).
const COMPACT_MIN_LINES: u64 = 512;
/// The journal is rewritten when it holds this many times more lines than live entries.
const COMPACT_RATIO: u64 = 8;

/// One journal line.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Entry {
    /// A subtask was accepted and is not finished.
    Open(Box<Unfinished>),
    /// A subtask's terminal is safe (spooled, or delivered from memory).
    Close { task_id: i64, subtask_id: i64 },
    /// The last sequence number of an unfinished subtask whose task log was removed.
    Seq {
        task_id: i64,
        subtask_id: i64,
        seq: u64,
    },
    /// Everything before `offset` in the task's log was delivered.
    Ack { task_id: i64, offset: u64 },
    /// The task's log was removed: its delivery offset is void.
    Forget { task_id: i64 },
}

/// The live state the journal describes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JournalState {
    /// Unfinished subtasks by (task, subtask).
    pub open: HashMap<(i64, i64), Unfinished>,
    /// Delivery offset per task log.
    pub acks: HashMap<i64, u64>,
}

impl JournalState {
    fn apply(&mut self, e: Entry) {
        match e {
            Entry::Open(u) => {
                self.open.insert((u.task_id, u.subtask_id), *u);
            }
            Entry::Close {
                task_id,
                subtask_id,
            } => {
                self.open.remove(&(task_id, subtask_id));
            }
            Entry::Seq {
                task_id,
                subtask_id,
                seq,
            } => {
                if let Some(u) = self.open.get_mut(&(task_id, subtask_id)) {
                    u.seq = seq;
                }
            }
            Entry::Ack { task_id, offset } => {
                self.acks.insert(task_id, offset);
            }
            Entry::Forget { task_id } => {
                self.acks.remove(&task_id);
            }
        }
    }

    fn live(&self) -> u64 {
        (self.open.len() + self.acks.len()) as u64
    }
}

/// Most bytes of lines collected before they are written whatever else is queued.
const PENDING_MAX_BYTES: usize = 64 * 1024;
/// Most bytes of unwritten lines kept while writes fail (a full disk); beyond, they are
/// dropped and the file is rewritten from the state once it can be.
const PENDING_KEEP_BYTES: usize = 4 * 1024 * 1024;

/// The open journal, owned by the spool's writer thread.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Lines in the file, written or collected.
    lines: u64,
    state: JournalState,
    /// Lines recorded in `state` and not written yet.
    pending: Vec<u8>,
    /// The file may not say what `state` does (a write failed and could not be undone, or a
    /// rewrite did not finish): the next flush rewrites it.
    stale: bool,
    /// Bytes of whole lines in the file: where a failed write is cut back to.
    written: u64,
}

impl Journal {
    /// Opens (creating) the journal in `dir` and replays it. A partial last line (a crash in
    /// the middle of a write) is cut off.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(JOURNAL_FILE);
        let content = match std::fs::read(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let whole = content
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let mut state = JournalState::default();
        let mut lines = 0;
        for line in content[..whole].split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            lines += 1;
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => state.apply(e),
                Err(e) => tracing::error!("callback spool journal: skipping a corrupt line ({e})"),
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        if whole < content.len() {
            tracing::warn!(
                "callback spool journal {}: cutting off a partly written line (the executor was killed while writing it)",
                path.display()
            );
            file.set_len(whole as u64)?;
        }
        Ok(Self {
            path,
            file,
            lines,
            state,
            pending: Vec::new(),
            stale: false,
            written: whole as u64,
        })
    }

    /// The live state (what start-up recovery reads).
    pub fn state(&self) -> &JournalState {
        &self.state
    }

    /// Records an accepted, unfinished subtask.
    pub fn open_subtask(&mut self, u: &Unfinished) -> std::io::Result<()> {
        self.append(Entry::Open(Box::new(u.clone())))
    }

    /// Records that a subtask's terminal is safe (no-op when it is not open).
    pub fn close_subtask(&mut self, task_id: i64, subtask_id: i64) -> std::io::Result<()> {
        if !self.state.open.contains_key(&(task_id, subtask_id)) {
            return Ok(());
        }
        self.append(Entry::Close {
            task_id,
            subtask_id,
        })
    }

    /// Keeps the last sequence number of an open subtask whose task log goes away.
    pub fn set_seq(&mut self, task_id: i64, subtask_id: i64, seq: u64) -> std::io::Result<()> {
        match self.state.open.get(&(task_id, subtask_id)) {
            Some(u) if u.seq != seq => self.append(Entry::Seq {
                task_id,
                subtask_id,
                seq,
            }),
            _ => Ok(()),
        }
    }

    /// Records a task log's delivery offset.
    pub fn ack(&mut self, task_id: i64, offset: u64) -> std::io::Result<()> {
        self.append(Entry::Ack { task_id, offset })
    }

    /// Forgets a removed task log's delivery offset.
    pub fn forget(&mut self, task_id: i64) -> std::io::Result<()> {
        if !self.state.acks.contains_key(&task_id) {
            return Ok(());
        }
        self.append(Entry::Forget { task_id })
    }

    /// Starts a new file holding only the live state, e.g. after the spool directory was
    /// removed under the executor (the open handle would write into a deleted file). Until it
    /// succeeds, every flush tries again.
    fn rewrite(&mut self) -> std::io::Result<()> {
        self.replace_file().map_err(|(_, e)| {
            self.stale = true;
            e
        })
    }

    /// The file at the path may not be the one this handle writes (its directory was removed
    /// or replaced): the next flush rewrites it.
    pub fn invalidate(&mut self) {
        self.stale = true;
    }

    /// Rewrites the journal now if the file this handle writes was deleted (its directory was
    /// removed and made again under the executor), before a log is created next to it.
    pub fn ensure_linked(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        if self.file.metadata()?.nlink() == 0 {
            self.invalidate();
        }
        self.flush()
    }

    /// Points the handle at `/dev/full` and blocks the temporary file's name, so that every
    /// write and rewrite fails (a full disk, for tests).
    #[cfg(test)]
    pub(crate) fn fail_writes_for_test(&mut self) {
        self.file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let _ = std::fs::create_dir(self.path.with_extension("journal.tmp"));
    }

    /// Writes the live state to a temporary file and renames it over the journal. The error
    /// says whether the journal had been replaced already (then the open handle is not the
    /// file at the path any more); before that, the old file stands as it was.
    fn replace_file(&mut self) -> Result<(), (bool, std::io::Error)> {
        let tmp = self.path.with_extension("journal.tmp");
        let mut body = Vec::new();
        let mut lines = 0;
        for u in self.state.open.values() {
            push_line(&mut body, &Entry::Open(Box::new(u.clone()))).map_err(|e| (false, e))?;
            lines += 1;
        }
        for (task_id, offset) in &self.state.acks {
            push_line(
                &mut body,
                &Entry::Ack {
                    task_id: *task_id,
                    offset: *offset,
                },
            )
            .map_err(|e| (false, e))?;
            lines += 1;
        }
        // Written through the handle kept afterwards (a rename keeps the file), so nothing
        // needs opening once the old file is replaced.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| (false, e))?;
        if let Err(e) = file
            .write_all(&body)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
        {
            let _ = std::fs::remove_file(&tmp);
            return Err((false, e));
        }
        self.file = file;
        self.lines = lines;
        self.written = body.len() as u64;
        self.pending.clear();
        self.stale = false;
        Ok(())
    }

    /// Writes the lines collected since the last flush (see the module docs). Lines a failed
    /// write did not take are cut off the file again and kept for the next flush (up to
    /// [`PENDING_KEEP_BYTES`]); when even that fails, the next flush rewrites the file from
    /// the state.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.stale {
            return self.rewrite();
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let live = self.state.live();
        if live == 0 {
            // Nothing is live: empty the file in place (no new file), if it is not empty yet.
            self.pending.clear();
            self.lines = 0;
            if self.written > 0 {
                if let Err(e) = self.file.set_len(0) {
                    self.stale = true;
                    return Err(e);
                }
                self.written = 0;
            }
            return Ok(());
        }
        if self.lines >= COMPACT_MIN_LINES && self.lines > COMPACT_RATIO * live {
            match self.replace_file() {
                Ok(()) => return Ok(()),
                Err((true, e)) => {
                    self.stale = true;
                    return Err(e);
                }
                // No new file (no descriptor or inode to spare): the lines go to the end of
                // the old one, which still says everything, and compaction waits.
                Err((false, _)) => {}
            }
        }
        match self.file.write_all(&self.pending) {
            Ok(()) => {
                self.written += self.pending.len() as u64;
                self.pending.clear();
                Ok(())
            }
            Err(e) => {
                if self.file.set_len(self.written).is_err()
                    || self.pending.len() > PENDING_KEEP_BYTES
                {
                    self.pending.clear();
                    self.stale = true;
                }
                Err(e)
            }
        }
    }

    fn append(&mut self, e: Entry) -> std::io::Result<()> {
        let at = self.pending.len();
        if let Err(err) = push_line(&mut self.pending, &e) {
            self.pending.truncate(at);
            return Err(err);
        }
        self.state.apply(e);
        self.lines += 1;
        if self.pending.len() >= PENDING_MAX_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn push_line(buf: &mut Vec<u8>, e: &Entry) -> std::io::Result<()> {
    serde_json::to_writer(&mut *buf, e).map_err(std::io::Error::other)?;
    buf.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(task_id: i64, subtask_id: i64) -> Unfinished {
        Unfinished {
            task_title: "t".into(),
            subtask_title: "s".into(),
            ..Unfinished::unnamed(task_id, subtask_id)
        }
    }

    #[test]
    fn replay_gives_the_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.open_subtask(&u(1, 1)).unwrap();
        j.open_subtask(&u(1, 2)).unwrap();
        j.ack(1, 40).unwrap();
        j.close_subtask(1, 1).unwrap();
        j.set_seq(1, 2, 7).unwrap();
        j.ack(2, 10).unwrap();
        j.forget(2).unwrap();
        let want = j.state().clone();
        drop(j);
        let again = Journal::open(dir.path()).unwrap();
        assert_eq!(again.state(), &want);
        assert_eq!(want.open.len(), 1);
        assert_eq!(want.open[&(1, 2)].seq, 7);
        assert_eq!(want.acks, HashMap::from([(1, 40)]));
    }

    #[test]
    fn a_partial_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.open_subtask(&u(3, 1)).unwrap();
        drop(j);
        let path = dir.path().join(JOURNAL_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"open":{"task_id":4,"#).unwrap();
        drop(f);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.state().open.len(), 1);
        assert!(std::fs::read(&path).unwrap().ends_with(b"\n"));
    }

    #[test]
    fn the_file_stays_small_with_churn_and_empties_when_nothing_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let mut j = Journal::open(dir.path()).unwrap();
        j.open_subtask(&u(0, 0)).unwrap(); // one long-lived subtask keeps the file non-empty
        for t in 1..5_000 {
            j.open_subtask(&u(t, 1)).unwrap();
            for off in [100, 200, 300] {
                j.ack(t, off).unwrap();
            }
            j.close_subtask(t, 1).unwrap();
            j.forget(t).unwrap();
        }
        j.flush().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 200 * 1024, "compacted: {len} bytes");
        assert_eq!(Journal::open(dir.path()).unwrap().state().open.len(), 1);
        j.close_subtask(0, 0).unwrap();
        j.flush().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn lines_are_written_together_at_a_flush_and_not_at_all_when_they_cancel_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let mut j = Journal::open(dir.path()).unwrap();
        j.open_subtask(&u(1, 1)).unwrap();
        j.ack(1, 10).unwrap();
        j.ack(1, 20).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "collected, not written"
        );
        j.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(Journal::open(dir.path()).unwrap().state(), j.state());
        // A subtask opened and closed between two flushes, with nothing else live: the file is
        // emptied once and nothing of it is written.
        j.close_subtask(1, 1).unwrap();
        j.forget(1).unwrap();
        j.flush().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        j.open_subtask(&u(2, 1)).unwrap();
        j.ack(2, 5).unwrap();
        j.close_subtask(2, 1).unwrap();
        j.forget(2).unwrap();
        j.flush().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(Journal::open(dir.path()).unwrap().state().live(), 0);
    }

    /// A full disk must not lose an accepted subtask's record: once writing works again, the
    /// journal says everything that was recorded meanwhile (else a crash after it would leave
    /// the subtask without its terminal).
    #[test]
    fn records_made_while_writes_fail_are_written_once_they_work() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.open_subtask(&u(1, 1)).unwrap();
        j.flush().unwrap();
        // The open file stops taking writes (as on a full disk); its directory still works.
        j.file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        j.open_subtask(&u(2, 1)).unwrap();
        j.ack(1, 30).unwrap();
        assert!(j.flush().is_err(), "/dev/full takes nothing");
        // The next flush, with nothing new to write, rewrites the file from the state.
        j.flush().unwrap();
        let again = Journal::open(dir.path()).unwrap();
        assert_eq!(again.state(), j.state());
        assert!(again.state().open.contains_key(&(2, 1)));
        assert_eq!(again.state().acks.get(&1), Some(&30));
    }

    /// Compaction needs a new file; when none can be created (no descriptor or inode to spare)
    /// the lines still go to the old file, so the journal never falls behind the logs.
    #[test]
    fn a_compaction_that_cannot_create_its_file_appends_to_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.open_subtask(&u(0, 0)).unwrap();
        j.flush().unwrap();
        // The temporary file cannot be created: a directory holds its name.
        std::fs::create_dir(dir.path().join("spool.journal.tmp")).unwrap();
        for t in 1..600 {
            j.ack(t, 1).unwrap();
            j.forget(t).unwrap();
            j.flush().unwrap();
        }
        assert!(
            j.lines >= COMPACT_MIN_LINES,
            "compaction was due: {}",
            j.lines
        );
        j.open_subtask(&u(9, 1)).unwrap();
        j.flush().unwrap();
        let again = Journal::open(dir.path()).unwrap();
        assert_eq!(again.state(), j.state());
        assert!(again.state().open.contains_key(&(9, 1)));
        // Once a new file can be made, the next flush compacts.
        std::fs::remove_dir(dir.path().join("spool.journal.tmp")).unwrap();
        j.ack(9, 3).unwrap();
        j.flush().unwrap();
        assert_eq!(j.lines, 3, "rewritten with the live lines only");
        assert_eq!(Journal::open(dir.path()).unwrap().state(), j.state());
    }

    #[test]
    fn a_rewrite_keeps_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.open_subtask(&u(5, 1)).unwrap();
        j.ack(5, 12).unwrap();
        std::fs::remove_file(dir.path().join(JOURNAL_FILE)).unwrap();
        j.rewrite().unwrap();
        let again = Journal::open(dir.path()).unwrap();
        assert_eq!(again.state(), j.state());
    }
}
