//! Start-up recovery of the callback spool: what an earlier run left undelivered, and which
//! accepted subtasks it never finished (see [`crate::unfinished`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use crate::spool::{legacy_ack_path, Record};
use crate::spool_journal::Journal;
use crate::unfinished::{self, Unfinished};

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
/// fully delivered files; returns the opened journal for the writer. Records an earlier version
/// kept in files of their own (`task-<id>.ack`, `open-<task>-<subtask>.json`) are moved into
/// the journal. Blocking: run it off the async threads.
pub(crate) fn recover(dir: &Path) -> std::io::Result<(Recovery, Journal)> {
    let mut out = Recovery::default();
    let mut journal = Journal::open(dir)?;
    for u in unfinished::take_legacy(dir) {
        journal.open_subtask(&u)?;
    }
    // The legacy files are gone: their records are written before anything else is removed.
    journal.flush()?;
    let mut terminals: HashSet<(i64, i64)> = HashSet::new();
    let mut seqs: HashMap<(i64, i64), u64> = HashMap::new();
    let entries = std::fs::read_dir(dir)?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("free-") && name.ends_with(".log") {
            // An emptied log kept for reuse by the earlier run: nothing in it.
            let _ = std::fs::remove_file(e.path());
            continue;
        }
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
                if matches!(status, "COMPLETED" | "FAILED" | "CANCELLED")
                    || crate::protocol::responses_events::is_terminal_body(&r.body)
                {
                    terminals.insert((task_id, r.subtask_id));
                }
            }
        }
        for (sub, seq) in &last_seq {
            seqs.insert((task_id, *sub), *seq);
        }
        let legacy = legacy_ack_path(dir, task_id);
        if let Some(read) = std::fs::read_to_string(&legacy)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            journal.ack(task_id, read)?;
            // In the journal before the file that held it goes.
            journal.flush()?;
            let _ = std::fs::remove_file(&legacy);
        }
        let read = journal.state().acks.get(&task_id).copied().unwrap_or(0);
        let write = content.len() as u64;
        if read >= write {
            let _ = std::fs::remove_file(e.path());
            journal.forget(task_id)?;
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
    // Acknowledgements of logs that are gone (removed before the journal said so).
    let live: HashSet<i64> = out.tasks.iter().map(|r| r.task_id).collect();
    let stale: Vec<i64> = journal
        .state()
        .acks
        .keys()
        .filter(|t| !live.contains(t))
        .copied()
        .collect();
    for t in stale {
        journal.forget(t)?;
    }
    let mut open: Vec<Unfinished> = journal.state().open.values().cloned().collect();
    open.sort_by_key(|u| (u.task_id, u.subtask_id));
    for u in open {
        let key = (u.task_id, u.subtask_id);
        if terminals.contains(&key) {
            // Crashed between spooling the terminal and closing the record: the terminal wins.
            journal.close_subtask(u.task_id, u.subtask_id)?;
            continue;
        }
        let seq = seqs.get(&key).copied().unwrap_or(0).max(u.seq) + 1;
        out.unfinished.push((u, seq));
    }
    journal.flush()?;
    Ok((out, journal))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ResponsesIdentity;

    fn record(task_id: i64, subtask_id: i64) -> Unfinished {
        Unfinished::unnamed(task_id, subtask_id)
    }

    #[test]
    fn an_earlier_versions_files_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = br#"{"seq":1,"subtask_id":1,"body":{"status":"COMPLETED"}}"#;
        let second = br#"{"seq":1,"subtask_id":2,"body":{"status":"RUNNING"}}"#;
        let log = [&first[..], b"\n", &second[..], b"\n"].concat();
        std::fs::write(dir.path().join("task-5.log"), &log).unwrap();
        let acked = first.len() + 1;
        std::fs::write(dir.path().join("task-5.ack"), format!("{acked:020}")).unwrap();
        let u = record(5, 2);
        std::fs::write(
            dir.path().join("open-5-2.json"),
            serde_json::to_vec(&u).unwrap(),
        )
        .unwrap();
        let (rec, journal) = recover(dir.path()).unwrap();
        assert_eq!(rec.tasks.len(), 1);
        assert_eq!(
            (rec.tasks[0].read, rec.tasks[0].write),
            (acked as u64, log.len() as u64)
        );
        assert_eq!(rec.unfinished, vec![(u, 2)]);
        assert!(!dir.path().join("task-5.ack").exists());
        assert!(!dir.path().join("open-5-2.json").exists());
        drop(journal);
        // The journal now holds both: a second start-up finds the same.
        let (again, _) = recover(dir.path()).unwrap();
        assert_eq!(again.tasks[0].read, acked as u64);
        assert_eq!(again.unfinished.len(), 1);
    }

    #[test]
    fn a_spooled_responses_terminal_closes_its_subtask_and_an_open_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let line = |seq: u64, sub: i64, event: &str| {
            format!(
                r#"{{"seq":{seq},"subtask_id":{sub},"body":{{"event_type":"{event}","task_id":5,"subtask_id":{sub},"data":{{}}}}}}"#
            )
        };
        let log = [
            line(1, 1, "response.created"),
            line(2, 1, "response.completed"),
            line(1, 2, "response.created"),
            line(2, 2, "response.output_text.delta"),
        ]
        .join("\n")
            + "\n";
        std::fs::write(crate::spool::log_path(dir.path(), 5), log).unwrap();
        {
            let mut j = Journal::open(dir.path()).unwrap();
            for sub in [1, 2] {
                // 5.1: killed between the terminal's append and the close; 5.2: mid-turn.
                let mut u = record(5, sub);
                u.responses = Some(ResponsesIdentity {
                    message_id: Some(3),
                    ..Default::default()
                });
                j.open_subtask(&u).unwrap();
            }
        }
        let (r, journal) = recover(dir.path()).unwrap();
        let open: Vec<(i64, u64)> = r
            .unfinished
            .iter()
            .map(|(u, s)| (u.subtask_id, *s))
            .collect();
        assert_eq!(
            open,
            [(2, 3)],
            "only 5.2 needs a terminal, with the next sequence number"
        );
        assert_eq!(
            r.unfinished[0]
                .0
                .responses
                .as_ref()
                .and_then(|i| i.message_id),
            Some(3)
        );
        assert!(!journal.state().open.contains_key(&(5, 1)));
    }
}
