//! Stdin reading on a background thread, so a turn can keep serving control
//! requests (notably interrupts) while it "works".

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};

use serde_json::Value;

/// What the stdin reader reports.
#[derive(Debug)]
pub enum Event {
    /// One non-empty line (without its line terminator).
    Line(String),
    /// Stdin reached end of file (or failed); nothing more will come.
    Eof,
}

/// Starts the reader thread. If `log` is set, every received line is
/// appended to that file.
pub fn spawn_reader(log: Option<PathBuf>) -> Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    let log = log.and_then(|path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| eprintln!("fake-claude: cannot open log {}: {e}", path.display()))
            .ok()
    });
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_loop(&tx, log));
    if let Err(e) = spawned {
        eprintln!("fake-claude: cannot start stdin reader: {e}");
    }
    rx
}

/// Forwards stdin lines to `tx` until EOF or until the receiver is gone.
fn read_loop(tx: &Sender<Event>, mut log: Option<File>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stdin.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("fake-claude: stdin: {e}");
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if let Some(file) = log.as_mut() {
            if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                eprintln!("fake-claude: log write failed: {e}");
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        if tx.send(Event::Line(line.to_string())).is_err() {
            return;
        }
    }
    let _ = tx.send(Event::Eof);
}

/// The text of a `user` message: its string content, or its `text` blocks
/// joined with newlines (so directives in separate blocks stay on their own
/// lines). `None` if the message has no usable content.
pub fn user_text(line: &Value) -> Option<String> {
    match line.get("message")?.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_text_from_string_and_blocks() {
        let s = json!({"type": "user", "message": {"role": "user", "content": "hi"}});
        assert_eq!(user_text(&s).as_deref(), Some("hi"));
        let b = json!({"type": "user", "message": {"role": "user", "content": [
            {"type": "text", "text": "a"},
            {"type": "image", "source": {}},
            {"type": "text", "text": "FAKE:tool"}
        ]}});
        assert_eq!(user_text(&b).as_deref(), Some("a\nFAKE:tool"));
        assert_eq!(user_text(&json!({"type": "user"})), None);
    }
}
