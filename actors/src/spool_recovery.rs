//! Start-up recovery of the callback spool: what an earlier run left undelivered, and which
//! accepted subtasks it never finished (see [`crate::unfinished`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use crate::spool::{ack_path, Record};
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
/// fully delivered files. Blocking: run it off the async threads.
pub(crate) fn recover(dir: &Path) -> Recovery {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ResponsesIdentity;

    fn open_record(dir: &Path, task_id: i64, subtask_id: i64) {
        let u = Unfinished {
            task_id,
            subtask_id,
            task_title: String::new(),
            subtask_title: String::new(),
            task_type: None,
            executor_name: None,
            executor_namespace: None,
            request_id: None,
            traceparent: None,
            seq: 0,
            responses: Some(ResponsesIdentity {
                message_id: Some(3),
                ..Default::default()
            }),
        };
        unfinished::write(dir, &u).unwrap();
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
        open_record(dir.path(), 5, 1); // killed between the terminal's append and the removal
        open_record(dir.path(), 5, 2); // killed mid-turn
        let r = recover(dir.path());
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
        assert!(!unfinished::path(dir.path(), 5, 1).exists());
    }
}
