//! Executable scripts written by a test, safe to run while other tests in the same process fork.
//!
//! A file written by this process with `std::fs::write` is open for writing for a moment; a
//! sibling test that forks in that moment hands the open descriptor to its child until the child
//! execs, and running the script then fails with `ETXTBSY` ("Text file busy"). Seen in CI on
//! `tests/security.rs`. Writing the script from a short-lived `sh` instead means no descriptor
//! of ours ever refers to it: only the pipe to `sh` is ours.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Writes `text` to `path` with mode 0755 from a child `sh`, so no fork of this process can hold
/// the file open for writing when it is executed.
pub fn write_executable(path: &Path, text: &str) {
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh to write a script");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write the script to sh");
    let status = child.wait().expect("wait for sh");
    assert!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
}
